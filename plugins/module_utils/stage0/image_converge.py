"""Image converge: keep one image present in, or absent from, the store.

The image counterpart of converge.py: cas_image and each image of pod_set declare an image
by the same options (image_task maps them to and from Ansible), and this decides what to
do and does it. In check mode it only plans: archives are hashed and manifests read, a
remote image is looked up but not downloaded, and nothing is written to the store.

Every outcome is ``(changed, before, after, extra)``: the image entry before and after
(``entry``) and what else the result carries (skipped members, fetch details, dropped
OCI fields). A failure is a RocketError whose message the task shows as it is.
"""
import os

from . import schema
from .errors import ImageError, NotFoundError

TYPE_CHECKING = False  # typing costs milliseconds at start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional, Tuple

    from .store import Store

    Entry = Dict[str, Any]
    Outcome = Tuple[bool, Entry, Entry, Dict[str, Any]]

ENTRY_KEYS = ("id", "name", "labels", "size", "import_time")


def converge(store: "Optional[Store]", params: "Dict[str, Any]", check: bool, data_dir: str) -> "Outcome":
    """Converge one image as ``params`` (cas_image's options) declare.

    ``store`` is None when the data directory does not exist and must not be created
    (check mode, or removing from nothing).
    """
    if params["state"] == "present":
        return present(store, params, check, data_dir)
    return absent(store, params, check)


def entry(rec: "Optional[Dict[str, Any]]", manifest: "Any" = None) -> "Entry":
    """The public image entry, the same shape for results and diffs."""
    if not rec:
        return {}
    out = {k: rec.get(k) for k in ENTRY_KEYS if rec.get(k) is not None}
    if manifest is not None:
        out["manifest"] = manifest
    return out


def find_referenced(store: "Optional[Store]", params: "Dict[str, Any]") -> "Optional[Dict[str, Any]]":
    """The stored image that id/name/labels refer to, or None."""
    if store is None:
        return None
    try:
        if params["id"]:
            return store.get(params["id"])
        name, labels = _ref(params)
        return store.find(name, labels)
    except NotFoundError:
        return None


def build_manifest(params: "Dict[str, Any]") -> "Dict[str, Any]":
    m = dict(params["manifest"])
    m.setdefault("acKind", "ImageManifest")
    m.setdefault("acVersion", schema.AC_VERSION)
    return schema.parse_image_manifest(m)


def default_stage1(store: "Optional[Store]", params: "Dict[str, Any]", check: bool, state: str) -> "Outcome":
    """The collection's default stage1 image, built on the host and imported (or removed)."""
    from ..stage1 import image
    from . import stage1_image

    known = stage1_image.known_default_id(store) if store is not None else None
    rec = store.get(known) if (store is not None and known) else None
    if state == "absent":
        if rec is None or store is None:
            return False, {}, {}, {}
        if not check:
            store.remove(rec["id"], force=params["force"])
        return True, entry(rec), {}, {}
    if rec is not None and store is not None:
        return False, entry(rec), entry(rec, store.manifest(rec["id"])), {}
    if check or store is None:
        m = image.manifest()
        return True, {}, entry({"name": m["name"], "labels": schema.labels_to_dict(m["labels"])}), {}
    rec = stage1_image.ensure(store)
    return True, {}, entry(rec, store.manifest(rec["id"])), {}


def present(store: "Optional[Store]", params: "Dict[str, Any]", check: bool, data_dir: str) -> "Outcome":
    p = params
    if p.get("default_stage1"):
        return default_stage1(store, p, check, "present")
    if p["src"] and p["src"].startswith("docker://"):
        return present_registry(store, p, check, p["src"])
    if p["src"] and "://" in p["src"]:
        name, labels = _ref(p) if p["name"] else (None, None)
        changed, before, after, extra = present_remote(store, p, check, p["src"], None, None)
        if name and (after.get("name") != name or any((after.get("labels") or {}).get(k) != v
                                                      for k, v in (labels or {}).items())):
            raise ImageError("%s holds image %s, not %s" % (p["src"], after.get("name"),
                                                            schema.format_image_reference(name, labels)))
        return changed, before, after, extra
    if p["src"]:
        return present_file(store, p, check, _abspath(p["src"]))
    if p["rootfs"]:
        return present_build(store, p, check)
    if p["name"] and p["pull"] != "never":
        name, labels = _ref(p)
        return present_remote(store, p, check, None, name, labels)
    rec = find_referenced(store, p)
    if rec is None or store is None:
        what = p["id"] or schema.format_image_reference(*_ref(p))
        raise NotFoundError("image %s is not in the store %s (pull=never)" % (what, data_dir))
    return False, entry(rec), entry(rec, store.manifest(rec["id"])), {}


def present_file(store: "Optional[Store]", p: "Dict[str, Any]", check: bool, src: str) -> "Outcome":
    """A local ACI file, OCI layout or docker archive."""
    kind = p["format"]
    if kind != "oci" and store is not None:  # the no-op path: an ACI file imported before
        rec = store.known_source(src)
        if rec is not None and _names(p, rec):
            return False, entry(rec), entry(rec, store.manifest(rec["id"])), \
                ({} if check else {"skipped_members": rec.get("skipped", [])})
    if kind == "auto":
        from . import oci

        kind = "aci" if oci.detect_format(src) == "aci" else "oci"
    if kind == "oci":
        return present_oci(store, p, check, src)
    if store is None:
        from . import aci

        with open(src, "rb") as f:
            image_id, size, manifest = aci.inspect_aci(f)
        predicted = {"id": image_id, "name": manifest["name"],
                     "labels": schema.labels_to_dict(manifest.get("labels") or []), "size": size}
        return True, {}, entry(predicted, manifest), {}
    if check:
        info = store.inspect_file(src)
        if info["present"]:
            return False, entry(info), entry(info, store.manifest(info["id"])), {}
        return True, {}, entry(info, info["manifest"]), {}
    if p["name"]:
        info = store.inspect_file(src)
        want, labels = _ref(p)
        if info["name"] != want or any(info["labels"].get(k) != v for k, v in labels.items()):
            raise ImageError("%s holds image %s, not %s" % (
                src, schema.format_image_reference(info["name"], info["labels"]),
                schema.format_image_reference(want, labels)))
    rec, changed = store.import_file(src, allow_devices=p["allow_devices"], max_size=p["max_size"])
    return changed, ({} if changed else entry(rec)), entry(rec, store.manifest(rec["id"])), \
        {"skipped_members": rec.get("skipped", [])}


def present_build(store: "Optional[Store]", p: "Dict[str, Any]", check: bool) -> "Outcome":
    """An image built from a directory and a manifest (deterministic: the ID tells whether it is new).

    It is built in the store's ``cas/tmp``; only without a data directory (check mode, which
    must not create one) in the system's temporary directory.
    """
    from . import aci

    manifest = build_manifest(p)
    rootfs = _abspath(p["rootfs"])
    if store is not None:
        from .store import Work

        work = Work(store.dd.tmp, "build")
        where, cleanup = work.path, work.cleanup
    else:
        import shutil
        import tempfile

        where = tempfile.mkdtemp(prefix="rocket-build-")

        def cleanup() -> None:
            shutil.rmtree(where, ignore_errors=True)
    try:
        out = os.path.join(where, "image.aci")
        image_id = aci.build_aci(rootfs, manifest, out)
        have = None
        if store is not None:
            try:
                have = store.get(image_id)
            except NotFoundError:
                have = None
        if have is not None and store is not None:
            return False, entry(have), entry(have, store.manifest(image_id)), {}
        if check or store is None:
            predicted = {"id": image_id, "name": manifest["name"],
                         "labels": schema.labels_to_dict(manifest.get("labels") or []),
                         "size": os.path.getsize(out)}
            return True, {}, entry(predicted, manifest), {}
        with open(out, "rb") as f:
            rec, changed = store.import_stream(f, source="build:" + rootfs)
        return changed, {}, entry(rec, store.manifest(rec["id"])), {"skipped_members": rec.get("skipped", [])}
    finally:
        cleanup()


def present_remote(store: "Optional[Store]", p: "Dict[str, Any]", check: bool, src: "Optional[str]",
                   name: "Optional[str]", labels: "Optional[Dict[str, str]]") -> "Outcome":
    """An image from an https URL or found by discovery, signature checked."""
    from .fetch import fetch_with_dependencies

    rec, changed, info = fetch_with_dependencies(
        store, src=src, name=name, labels=labels, pull=p["pull"], insecure=p["insecure"] or (),
        ca_path=p["ca_path"], client_cert=p["client_cert"], client_key=p["client_key"], username=p["username"],
        password=p["password"], credentials_file=p["credentials_file"], timeout=p["timeout"], retries=p["retries"],
        max_size=p["max_size"], discovery_overrides=p["discovery_overrides"], allow_devices=p["allow_devices"],
        check=check)
    keys = ("url", "signature_url", "signer", "verified", "signature", "action", "dependencies")
    extra: "Dict[str, Any]" = {"fetch": {k: info.get(k) for k in keys}}
    if rec.get("id") is None:  # check mode: would download
        return True, {}, entry(rec), extra
    before = {} if changed else entry(rec)
    after = entry(rec, store.manifest(rec["id"])) if store is not None else entry(rec)
    extra["skipped_members"] = rec.get("skipped", [])
    return changed, before, after, extra


def registry_options(p: "Dict[str, Any]", pull: "Optional[str]" = None) -> "Any":
    """registry_pull.Options from cas_image's options (or a pod module's ``registry`` dict)."""
    from . import registry_pull

    name, labels = (None, None)
    if p.get("name"):
        name, labels = _ref(p)
    insecure = p.get("insecure") or ()
    cert_dir = p.get("cert_dir")
    return registry_pull.Options(
        pull=pull or p.get("pull") or "new", platform=p.get("platform"), digest=p.get("digest"),
        require_digest=p.get("require_digest") or (), registries_conf=p.get("registries_conf"),
        auth_file=p.get("auth_file"), username=p.get("username"), password=p.get("password"),
        ca_path=p.get("ca_path"), cert_dirs=[cert_dir] if cert_dir else None,
        insecure=bool({"tls", "http", "all-fetch"} & set(insecure)),
        timeout=p.get("timeout") or 30, retries=p["retries"] if p.get("retries") is not None else 3,
        max_size=p.get("max_size") or 8 << 30, allow_devices=bool(p.get("allow_devices")),
        name=name, labels=labels or None)


def present_registry(store: "Optional[Store]", p: "Dict[str, Any]", check: bool, src: str) -> "Outcome":
    """An image from a registry (``docker://``): pulled by the pull policy, then converted."""
    from . import registry_pull

    opts = registry_options(p)
    old = registry_pull.stored(store, src) if store is not None else None
    rec, changed, info = registry_pull.pull(store, src, opts, check=check)
    extra: "Dict[str, Any]" = {"registry": info}
    before = entry(old) if changed else entry(rec)
    if rec.get("id") is None or store is None or not store.dd.exists():
        return changed, before if old else {}, entry(rec), extra
    extra["skipped_members"] = rec.get("skipped", [])
    extra["dropped"] = rec.get("dropped", [])
    return changed, before, entry(rec, store.manifest(rec["id"])), extra


def present_oci(store: "Optional[Store]", p: "Dict[str, Any]", check: bool, src: str) -> "Outcome":
    """An OCI layout or docker archive, converted; check mode reads only its documents."""
    from . import oci

    name, labels = (None, None)
    if p["name"]:
        name, labels = _ref(p)
    kw = dict(name=name, labels=labels or None, ref=p["ref"], platform=p["platform"], max_size=p["max_size"],
              allow_devices=p["allow_devices"])
    if check or store is None:
        info = oci.inspect_oci(store, src, **kw)
        if info["present"] and store is not None:
            rec = store.get(info["id"])
            return False, entry(rec), entry(rec, store.manifest(rec["id"])), {"dropped": info["dropped"]}
        predicted = {"name": info["name"], "labels": info["labels"]}
        return True, {}, entry(predicted), {"dropped": info["dropped"]}
    rec, changed = oci.import_oci(store, src, **kw)
    return changed, ({} if changed else entry(rec)), entry(rec, store.manifest(rec["id"])), \
        {"skipped_members": rec.get("skipped", []), "dropped": rec.get("dropped", [])}


def absent(store: "Optional[Store]", params: "Dict[str, Any]", check: bool) -> "Outcome":
    p = params
    if store is None:
        return False, {}, {}, {}
    if p.get("default_stage1"):
        return default_stage1(store, p, check, "absent")
    rec: "Optional[Dict[str, Any]]"
    if p["src"] and p["src"].startswith("docker://"):
        from . import registry_pull

        rec = registry_pull.stored(store, p["src"])
    elif p["src"]:
        from . import oci

        src = _abspath(p["src"])
        if p["format"] == "oci" or (p["format"] == "auto" and oci.detect_format(src) != "aci"):
            info = oci.inspect_oci(store, src, ref=p["ref"], platform=p["platform"])
            rec = store.get(info["id"]) if info.get("present") else None
        else:
            info = store.inspect_file(src)
            rec = info if info.get("present") else None
    else:
        rec = find_referenced(store, p)
    if rec is None:
        return False, {}, {}, {}
    before = entry(rec)
    if not check:
        store.remove(rec["id"], force=p["force"])
    return True, before, {}, {}


def _names(p: "Dict[str, Any]", rec: "Dict[str, Any]") -> bool:
    """Whether a stored image is the one O(name) and O(labels) ask for (no name: any)."""
    if not p["name"]:
        return True
    want, labels = _ref(p)
    return rec.get("name") == want and all((rec.get("labels") or {}).get(k) == v for k, v in labels.items())


def _ref(p: "Dict[str, Any]") -> "Tuple[str, Dict[str, str]]":
    name, labels = schema.parse_image_reference(p["name"])
    labels.update({str(k): str(v) for k, v in (p["labels"] or {}).items()})
    return name, labels


def _abspath(path: str) -> str:
    return os.path.abspath(os.path.expanduser(path))
