"""Push: an image of the store sent to a registry as an OCI image.

The reverse of oci.py's mapping (docs/oci.md): the appc manifest becomes an OCI image
config, and each ACI of the image's dependency chain becomes one layer, in the order a
render applies them (dependencies first). appc layering never deletes, so the layers need
no whiteouts and a pull of the pushed image gives the tree a render gives.

A layer is made from the ACI blob as the store keeps it, not from the rendered tree: the
blob is the image ID's content (the tree's mtimes drift with overlay copy-ups and tools),
so the same image gives the same layer, config and manifest digests on every push, which
is what makes a second push a no-op. Members under ``rootfs/`` are re-emitted without the
prefix (numeric owners, whole-second mtimes, modes, allowed xattrs), the manifest and the
``rootfs`` directory entry are left out, and the tar is gzip-compressed with a fixed header.

Uploading goes through registry_client (R1's wire): a blob the repository already has is
not sent again, and a manifest whose digest the tag already names is not put again.
Standard library (and registry_client's requests) only; never imports ansible.
"""
from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile

from . import schema
from .errors import ImageError, NotFoundError

TYPE_CHECKING = False  # typing costs milliseconds at start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, BinaryIO, Dict, List, Optional, Tuple

    from .store import Store

# Bumped whenever the export would give other bytes for the same image (the digests of
# what was pushed before would no longer match, and a push would send it again).
EXPORTER_VERSION = "1"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
# manifest annotations: the appc image pushed, and export_key (what its bytes depend on)
ANN_IMAGE = "appc.rocket/image-id"
ANN_EXPORT = "appc.rocket/export"

GZIP_LEVEL = 6
_CHUNK = 1 << 20

# appc arch label (linux) -> (OCI architecture, variant): the inverse of oci.map_arch.
_ARCH = {"amd64": ("amd64", ""), "aarch64": ("arm64", ""), "i386": ("386", ""),
         "ppc64le": ("ppc64le", ""), "ppc64": ("ppc64", ""), "s390x": ("s390x", ""),
         "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6")}

# appc annotations that become config fields rather than Labels, and those whose meaning
# is the source's, not this image's (the config digest it was imported from).
_ANN_FIELDS = ("created", "authors", "appc.rocket/oci/stop-signal")
_ANN_DROPPED = ("appc.rocket/oci/config",)
_ANN_LABELS = {"homepage": "org.opencontainers.image.url",
               "documentation": "org.opencontainers.image.documentation"}


# --------------------------------------------------------------------------- mapping

def parse_platform(text: str) -> "Tuple[str, str, str]":
    """``os/arch[/variant]`` -> (os, arch, variant); only linux images exist here."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts) or parts[0] != "linux":
        raise ImageError("platform %r: give linux/ARCH or linux/ARCH/VARIANT (linux/arm64, linux/arm/v7)" % text)
    return parts[0], parts[1], parts[2] if len(parts) == 3 else ""


def image_platform(labels: "Dict[str, str]", platform: "Optional[str]" = None) -> "Tuple[str, str, str]":
    """The OCI platform of an image: ``platform`` when given, else its os/arch labels, else this host's."""
    if platform:
        return parse_platform(platform)
    os_name = labels.get("os", "linux")
    if os_name != "linux":
        raise ImageError("label os=%s: only linux images can be pushed as OCI images here" % os_name)
    arch = labels.get("arch")
    if arch is None:
        from .oci_layout import host_platform

        return host_platform()
    if arch not in _ARCH:
        raise ImageError("label arch=%s has no OCI architecture; give platform (linux/ARCH[/VARIANT])" % arch)
    return ("linux",) + _ARCH[arch]


def oci_config(manifest: "Dict[str, Any]", diff_ids: "List[str]", platform: "Tuple[str, str, str]",
               history: "List[str]") -> "Tuple[Dict[str, Any], List[str]]":
    """An appc image manifest -> (OCI image config, what has no OCI equivalent).

    The inverse of oci.image_manifest: ``app.exec`` is the Entrypoint (Cmd stays empty, so
    an import gives the same exec back), user and group become ``User`` ``user:group``,
    ports become ``ExposedPorts`` (a ``count`` a range), mount points ``Volumes``.
    """
    dropped: "List[str]" = []
    app = manifest.get("app") or {}
    c: "Dict[str, Any]" = {}
    if app.get("exec"):
        c["Entrypoint"] = list(app["exec"])
    if app:
        c["User"] = "%s:%s" % (app.get("user", "0"), app.get("group", "0"))
    if app.get("workingDirectory"):
        c["WorkingDir"] = app["workingDirectory"]
    env = app.get("environment") or []
    if env:
        c["Env"] = ["%s=%s" % (e["name"], e["value"]) for e in env]
    ports: "Dict[str, Any]" = {}
    for p in app.get("ports") or []:
        count = int(p.get("count") or 1)
        key = "%d/%s" % (p["port"], p["protocol"]) if count == 1 else \
            "%d-%d/%s" % (p["port"], p["port"] + count - 1, p["protocol"])
        if p["protocol"] not in ("tcp", "udp", "sctp"):
            dropped.append("app.ports %s: OCI has no protocol %s" % (p["name"], p["protocol"]))
            continue
        ports[key] = {}
        if p.get("socketActivated"):
            dropped.append("app.ports %s: socketActivated has no OCI equivalent" % p["name"])
    if ports:
        c["ExposedPorts"] = ports
    volumes: "Dict[str, Any]" = {m["path"]: {} for m in app.get("mountPoints") or []}
    if volumes:
        c["Volumes"] = volumes
    for m in app.get("mountPoints") or []:
        if m.get("readOnly"):
            dropped.append("app.mountPoints %s: readOnly has no OCI equivalent" % m["name"])
    for key in ("isolators", "eventHandlers", "supplementaryGIDs", "userAnnotations", "userLabels"):
        if app.get(key):
            dropped.append("app.%s: no OCI equivalent" % key)

    labels = schema.labels_to_dict(manifest.get("labels") or [])
    oci_labels: "Dict[str, str]" = {"org.opencontainers.image.title": manifest["name"]}
    if labels.get("version"):
        oci_labels["org.opencontainers.image.version"] = labels["version"]
    for k, v in labels.items():
        if k not in ("version", "os", "arch"):
            dropped.append("label %s: an OCI image has no labels besides its platform" % k)
    config: "Dict[str, Any]" = {}
    for a in manifest.get("annotations") or []:
        k, v = a["name"], a["value"]
        if k == "created":
            config["created"] = v
        elif k == "authors":
            config["author"] = v
        elif k == "appc.rocket/oci/stop-signal":
            c["StopSignal"] = v
        elif k in _ANN_DROPPED:
            dropped.append("annotation %s: it names the image this one was imported from" % k)
        else:
            oci_labels[_ANN_LABELS.get(k, k)] = v
    c["Labels"] = oci_labels
    if manifest.get("pathWhitelist"):
        raise ImageError("image %s has a pathWhitelist: OCI layers cannot express one; push an image without it"
                         % manifest["name"])

    os_name, arch, variant = platform
    config.update({"architecture": arch, "os": os_name})
    if variant:
        config["variant"] = variant
    config["config"] = c
    config["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    config["history"] = [{"created_by": h} for h in history]
    return config, dropped


def canonical_json(doc: "Any") -> bytes:
    """Bytes of a registry document: sorted keys, compact, so equal documents have equal digests."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


# --------------------------------------------------------------------------- layers

class _Sink:
    """Counts and sha256-hashes the bytes written through it (then passes them on)."""

    def __init__(self, out: "Any") -> None:
        self.out = out
        self.h = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        if self.out is not None:
            self.out.write(data)
        return len(data)

    def flush(self) -> None:
        if self.out is not None:
            self.out.flush()


class Layer:
    """One gzip layer in a work file: its descriptor and where its bytes are."""

    __slots__ = ("path", "digest", "size", "diff_id", "image_id")

    def __init__(self, path: str, digest: str, size: int, diff_id: str, image_id: str) -> None:
        self.path, self.digest, self.size, self.diff_id, self.image_id = path, digest, size, diff_id, image_id

    def descriptor(self) -> "Dict[str, Any]":
        return {"mediaType": OCI_LAYER_GZIP, "digest": self.digest, "size": self.size}


def _strip(name: str) -> "Optional[str]":
    """An ACI member name -> the layer's name; None for members that are not in rootfs/."""
    if name.startswith("./"):
        name = name[2:]
    if not name.startswith("rootfs/"):
        return None
    rest = name[len("rootfs/"):].strip("/")
    return rest or None


def layer_from_aci(src: "BinaryIO", out: "BinaryIO", what: str) -> "Tuple[str, int, str]":
    """Write the rootfs of an ACI (any compression) to ``out`` as a gzip OCI layer.

    Returns (digest, size, diff_id). The ACI was checked when it was imported; a member
    this cannot map (a hard link to something outside rootfs/) is an error all the same.
    """
    from . import aci_scan

    blob = _Sink(out)
    gz = gzip.GzipFile(filename="", mode="wb", fileobj=blob, mtime=0, compresslevel=GZIP_LEVEL)
    plain = _Sink(gz)
    try:
        tin = tarfile.open(fileobj=src, mode="r|*", encoding="utf-8", errors="surrogateescape")
    except tarfile.TarError as e:
        raise ImageError("%s: not a readable ACI: %s" % (what, e)) from None
    # A stream ("w|") only writes: typeshed's file protocol also asks for read and seek.
    tout = tarfile.open(fileobj=plain, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                        encoding="utf-8", errors="surrogateescape")
    try:
        for ti in tin:
            name = _strip(ti.name)
            if name is None:
                continue
            if ti.type not in (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                               tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
                raise ImageError("%s: member %s of type %r cannot go into a layer" % (what, ti.name, ti.type))
            no = tarfile.TarInfo(name)
            no.type = tarfile.REGTYPE if ti.type == tarfile.AREGTYPE else ti.type
            no.mode, no.uid, no.gid, no.mtime = ti.mode & 0o7777, ti.uid, ti.gid, int(ti.mtime)
            no.uname = no.gname = ""
            if ti.type == tarfile.SYMTYPE:
                no.linkname = ti.linkname
            elif ti.type == tarfile.LNKTYPE:
                target = _strip(ti.linkname)
                if target is None:
                    raise ImageError("%s: hard link %s points outside rootfs/ (%s)" % (what, ti.name, ti.linkname))
                no.linkname = target
            elif ti.type in (tarfile.CHRTYPE, tarfile.BLKTYPE):
                no.devmajor, no.devminor = ti.devmajor, ti.devminor
            xattrs = {k: v for k, v in sorted(ti.pax_headers.items())
                      if k.startswith("SCHILY.xattr.") and aci_scan.xattr_allowed(k[len("SCHILY.xattr."):])}
            if xattrs:
                no.pax_headers = xattrs
            if no.type == tarfile.REGTYPE:
                no.size = ti.size
                tout.addfile(no, tin.extractfile(ti))
            else:
                tout.addfile(no)
        tout.close()
        gz.close()
    except (tarfile.TarError, EOFError, OSError, ValueError) as e:
        if isinstance(e, OSError) and e.errno is not None:
            raise
        raise ImageError("%s: cannot read the ACI: %s" % (what, e)) from None
    finally:
        tin.close()
    blob.flush()
    return "sha256:" + blob.h.hexdigest(), blob.size, "sha256:" + plain.h.hexdigest()


# --------------------------------------------------------------------------- export

class Export:
    """An image of the store as an OCI image, its blobs in a work directory."""

    def __init__(self, image_id: str, name: str, layers: "List[Layer]", config: bytes, manifest: bytes,
                 platform: "Tuple[str, str, str]", dropped: "List[str]") -> None:
        self.image_id = image_id
        self.name = name
        self.layers = layers
        self.config = config
        self.config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        self.manifest = manifest
        self.manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        self.platform = platform
        self.dropped = dropped

    def platform_text(self) -> str:
        return "/".join(p for p in self.platform if p)


def export_key(image_id: str, chain: "List[str]", platform: "Tuple[str, str, str]") -> str:
    """What an export's bytes depend on, as one digest: exporter version, platform, the ACIs.

    The manifest carries it as an annotation, so a later push finds out from the manifest
    alone (one GET) that the destination already holds this export, without compressing
    anything again.
    """
    h = hashlib.sha256()
    for part in [EXPORTER_VERSION, "/".join(platform)] + list(chain) + [image_id]:
        h.update(part.encode("utf-8") + b"\n")
    return "sha256:" + h.hexdigest()


def plan(store: "Store", image_id: str, platform: "Optional[str]" = None) -> "Dict[str, Any]":
    """What a push of the image would declare, without reading a blob: manifest, platform,
    dependency chain, export key, and what the OCI image cannot say."""
    manifest = store.manifest(image_id)
    labels = schema.labels_to_dict(manifest.get("labels") or [])
    plat = image_platform(labels, platform)
    if manifest.get("pathWhitelist"):
        raise ImageError("image %s has a pathWhitelist: OCI layers cannot express one; push an image without it"
                         % manifest["name"])
    chain = store.dependency_chain(image_id)
    dummy, dropped = oci_config(manifest, [], plat, [])
    if chain:
        dropped.append("dependencies: flattened into %d layer(s) below the image's own" % len(chain))
    return {"manifest": manifest, "platform": plat, "chain": chain, "key": export_key(image_id, chain, plat),
            "dropped": dropped}


def export_image(store: "Store", image_id: str, work: str, platform: "Optional[str]" = None) -> "Export":
    """The OCI image of a stored image: config, manifest and layers (files in ``work``).

    Holds the store lock shared while it reads blobs, so gc cannot delete them meanwhile.
    """
    layers: "List[Layer]" = []
    history: "List[str]" = []
    with store.store_lock(exclusive=False):
        pl = plan(store, image_id, platform)
        manifest, plat, chain = pl["manifest"], pl["platform"], pl["chain"]
        for i, lid in enumerate(chain + [image_id]):
            rec = store.get(lid)
            path = os.path.join(work, "layer-%d" % i)
            what = "image %s (%s)" % (rec["name"], lid)
            try:
                src = open(store.dd.blob_path(lid), "rb")
            except FileNotFoundError:
                raise NotFoundError("%s: its archive is missing from the store (run the store check)" % what) from None
            with src, open(path, "wb") as out:
                digest, size, diff_id = layer_from_aci(src, out, what)
            layers.append(Layer(path, digest, size, diff_id, lid))
            history.append("appc.rocket export %s of %s %s" % (EXPORTER_VERSION, rec["name"], lid))
    config_doc, dummy = oci_config(manifest, [la.diff_id for la in layers], plat, history)
    config = canonical_json(config_doc)
    doc = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
           "config": {"mediaType": OCI_CONFIG, "digest": "sha256:" + hashlib.sha256(config).hexdigest(),
                      "size": len(config)},
           "layers": [la.descriptor() for la in layers],
           "annotations": {ANN_IMAGE: image_id, ANN_EXPORT: pl["key"]}}
    return Export(image_id, manifest["name"], layers, config, canonical_json(doc), plat, pl["dropped"])


# --------------------------------------------------------------------------- push

def destination(text: str) -> "Any":
    """The ``push_to`` reference: ``docker://`` and a registry are required (a push is never guessed)."""
    from . import registry_ref

    ref = registry_ref.parse_reference(text, "push_to")
    if ref.short:
        raise ImageError("push_to %s: name the registry (docker://HOST[:PORT]/REPOSITORY[:TAG]); "
                         "a push never guesses one" % text)
    return ref


def push(store: "Store", image_id: str, push_to: str, *, check: bool = False, platform: "Optional[str]" = None,
         insecure: bool = False, client_options: "Optional[Dict[str, Any]]" = None) -> "Tuple[bool, Dict[str, Any]]":
    """Push a stored image to ``push_to``; returns (changed, what was done).

    When the manifest the destination names carries this image's export key, nothing is
    exported or sent and ``changed`` is False (one GET). Otherwise the image is exported,
    a blob the repository has is not sent again, and the manifest is put last (a pull never
    sees a manifest whose blobs are missing). In check mode nothing is uploaded.
    """
    from . import registry_client

    ref = destination(push_to)
    pl = plan(store, image_id, platform)
    info: "Dict[str, Any]" = {
        "push_to": ref.uri(), "platform": "/".join(p for p in pl["platform"] if p), "media_type": OCI_MANIFEST,
        "dropped": pl["dropped"], "blobs": [], "blobs_uploaded": 0, "bytes_uploaded": 0, "blobs_present": 0}
    with registry_client.client_for(ref, insecure, **(client_options or {})) as client:
        info["previous_digest"], current = _current(client, ref)
        doc = _our_export(current, pl["key"])
        if doc is not None and current is not None:
            info.update(manifest_digest=current.digest, config_digest=doc["config"]["digest"], action="unchanged")
            for d, kind in [(la, "layer") for la in doc["layers"]] + [(doc["config"], "config")]:
                info["blobs"].append({"digest": d["digest"], "size": d["size"], "kind": kind, "action": "exists"})
            info["blobs_present"] = len(info["blobs"])
            return False, info
        from .store import Work

        work = Work(store.dd.tmp, "push")
        try:
            exp = export_image(store, image_id, work.path, platform)
            if ref.digest and ref.digest != exp.manifest_digest:
                raise ImageError("push_to %s: pinned to %s, but image %s exports as %s"
                                 % (push_to, ref.digest, image_id, exp.manifest_digest))
            info.update(manifest_digest=exp.manifest_digest, config_digest=exp.config_digest)
            _send_blobs(client, ref, exp, check, info)
            if check:
                info["action"] = "would-push"
                return True, info
            got = client.put_manifest(ref, OCI_MANIFEST, exp.manifest)
            if got != exp.manifest_digest:
                from .registry_ref import RegistryError

                raise RegistryError("%s stored the manifest as %s, not %s" % (ref.registry, got, exp.manifest_digest),
                                    ref.registry, ref.repository)
            info["action"] = "pushed"
            return True, info
        finally:
            work.cleanup()


def _current(client: "Any", ref: "Any") -> "Tuple[Optional[str], Any]":
    """(digest, manifest) the destination names now: (None, None) when nothing is there.

    HEAD first, so that a registry that cannot be reached, refuses us, or has nothing there
    is told apart from one whose manifest we cannot read (a schema 1 manifest, a media type
    we do not know): that one is (digest, None), and is replaced like any other.
    """
    from .registry_ref import RegistryError

    try:
        digest = client.head_manifest(ref)
    except RegistryError as e:
        if e.status == 404:
            return None, None
        raise
    try:
        return digest, client.get_manifest(ref)
    except RegistryError as e:
        if e.status is None:
            return digest, None
        raise


def _our_export(current: "Any", key: str) -> "Optional[Dict[str, Any]]":
    """The manifest document when it is an export with ``key`` (this very image, chain,
    platform and exporter), else None."""
    if current is None or current.is_index or current.media_type != OCI_MANIFEST:
        return None
    try:
        doc = current.json()
    except ValueError:
        return None
    ann = doc.get("annotations")
    if not isinstance(ann, dict) or ann.get(ANN_EXPORT) != key:
        return None
    config, layers = doc.get("config"), doc.get("layers")
    if not isinstance(config, dict) or not isinstance(layers, list) or \
            not all(isinstance(d, dict) and "digest" in d and "size" in d for d in layers + [config]):
        return None
    return doc


def _send_blobs(client: "Any", ref: "Any", exp: "Export", check: bool, info: "Dict[str, Any]") -> None:
    """Each layer, then the config: uploaded unless the repository has it (check mode: only asked)."""
    import io

    blobs: "List[Tuple[str, int, Optional[str], str]]" = [(la.digest, la.size, la.path, "layer") for la in exp.layers]
    blobs.append((exp.config_digest, len(exp.config), None, "config"))
    for digest, size, path, kind in blobs:
        if check:
            action = "exists" if client.blob_exists(ref, digest) else "would-upload"
        elif path is None:
            action = client.upload_blob(ref, digest, size, io.BytesIO(exp.config))
        else:
            with open(path, "rb") as f:
                action = client.upload_blob(ref, digest, size, f)
        info["blobs"].append({"digest": digest, "size": size, "kind": kind, "action": action})
        if action in ("exists", "mounted"):
            info["blobs_present"] += 1
        elif action == "uploaded":
            info["blobs_uploaded"] += 1
            info["bytes_uploaded"] += size


def push_task(store: "Optional[Store]", p: "Dict[str, Any]", check: bool,
              data_dir: str) -> "Tuple[bool, Dict[str, Any], Dict[str, Any]]":
    """image_push's options -> (changed, image entry, push details); the image must be in the store."""
    from .registry_auth import Credentials

    if p["id"]:
        what = p["id"]
    else:
        name, labels = schema.parse_image_reference(p["name"])
        labels.update({str(k): str(v) for k, v in (p.get("labels") or {}).items()})
        what = schema.format_image_reference(name, labels)
    if store is None:
        raise NotFoundError("image %s is not in the store %s (there is no data directory)" % (what, data_dir))
    rec = store.get(p["id"]) if p["id"] else store.find(name, labels)
    ref = destination(p["push_to"])
    insecure = bool(p.get("insecure"))
    if not insecure:
        from . import registries_conf

        insecure = registries_conf.load_registries_conf(p.get("registries_conf")).is_insecure(ref.registry)
    options: "Dict[str, Any]" = {"ca_path": p.get("ca_path"), "auth_file": p.get("auth_file"),
                                 "timeout": p.get("timeout") or 30, "retries": p.get("retries", 3)}
    if p.get("username"):
        options["credentials"] = Credentials(p["username"], p.get("password") or "", "module")
    changed, info = push(store, rec["id"], p["push_to"], check=check, platform=p.get("platform"),
                         insecure=insecure, client_options=options)
    image = {"id": rec["id"], "name": rec["name"], "labels": rec["labels"]}
    return changed, image, info
