"""The default stage1 image: built on the target from the stage1 package, deterministically.

Every pod module carries the stage1 package (Ansiballz ships what a module imports), so a
fresh host needs no earlier step: the image is built from those sources with fixed owners
and mtimes, which gives the same image ID on every host, and imported once. A newer
collection yields a new ID; existing pods keep the stage1 they were prepared with.
"""
from __future__ import annotations

import os
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional

from ..stage1 import contract
from .errors import NotFoundError, RocketError
from .store import Store, Work


def build_default(out_dir: str) -> str:
    """Write the default stage1 ACI into ``out_dir``; returns its path."""
    from . import aci
    from ..stage1 import image

    rootfs = os.path.join(out_dir, "rootfs")
    os.makedirs(rootfs, 0o755)
    for rel, data in sorted(image.files().items()):
        path = os.path.join(rootfs, rel)
        os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o644)
    out = os.path.join(out_dir, "stage1.aci")
    aci.build_aci(rootfs, image.manifest(), out, compression="none")
    return out


def ensure(store: Store, ref: Optional[str] = None) -> Dict[str, Any]:
    """The stage1 image record: ``ref`` from the store, or the default one (imported once)."""
    if ref:
        rec = store.resolve(ref)
        entrypoints(store.manifest(rec["id"]))
        return rec
    # The sources' digest names the image already built from them: no rebuild per prepare.
    key = _sources_key()
    known = known_default_id(store, key)
    built = store.index.get_image(known) if known else None
    if built is not None:
        return built
    work = Work(store.dd.tmp, "stage1")
    try:
        path = build_default(work.path)
        with open(path, "rb") as f:
            rec, dummy_created = store.import_stream(f, source="appc.rocket default stage1")
    finally:
        work.cleanup()
    with store.index.transaction():
        store.index.set_source("appc.rocket:stage1", key, rec["id"])
    return rec


_KEY: Dict[str, str] = {}  # one digest per process: pod_set converges many pods in one run


def _sources_key() -> str:
    if "key" not in _KEY:
        _KEY["key"] = _compute_sources_key()
    return _KEY["key"]


def _compute_sources_key() -> str:
    import hashlib

    from ..stage1 import image

    import sys

    h = hashlib.sha256()
    h.update(str(sys.implementation.cache_tag).encode() + b"\0")  # the image carries bytecode for it
    for rel, data in sorted(image.sources().items()):
        h.update(rel.encode() + b"\0" + data + b"\0")
    h.update(repr(sorted(image.manifest().items())).encode())
    return "sources:" + h.hexdigest()


def known_default_id(store: Store, key: Optional[str] = None) -> Optional[str]:
    """The ID of the default stage1 built from these sources, if this store has it."""
    if not store.dd.exists():
        return None
    known = store.index.source_image("appc.rocket:stage1", key or _sources_key())
    if known and store.index.get_image(known) is not None:
        return known
    return None


def entrypoints(manifest: Dict[str, Any]) -> Dict[str, str]:
    """The entrypoints a stage1 image names; refuses an image that is not a stage1."""
    ann = {a["name"]: a["value"] for a in manifest.get("annotations") or []}
    version = ann.get(contract.INTERFACE_ANNOTATION)
    if version != contract.INTERFACE_VERSION:
        raise RocketError("image %s is not a stage1 of interface version %s (annotation %s is %r)"
                          % (manifest.get("name"), contract.INTERFACE_VERSION, contract.INTERFACE_ANNOTATION, version))
    out = {}
    for key, name in contract.ENTRYPOINT_ANNOTATIONS.items():
        if name in ann:
            out[key] = ann[name]
    if "run" not in out:
        raise RocketError("stage1 image %s names no run entrypoint (%s)"
                          % (manifest.get("name"), contract.ENTRYPOINT_ANNOTATIONS["run"]))
    return out


__all__ = ["ensure", "entrypoints", "build_default", "NotFoundError"]
