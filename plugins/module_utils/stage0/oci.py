"""OCI images converted into the store as ACIs: the image config mapped to appc, layers flattened.

What users have today are OCI images; appc is a finished spec. ``import_oci`` takes an OCI
image layout (a directory or a tar of one) or a ``docker save`` archive, has oci_layout pick
one image and check its blobs, and imports it as ONE flattened ACI, the way docker2aci's
squashed mode did. This file holds what is appc about it: the mapping from the image config
to the appc manifest (described in docs/oci.md) and the flattening.

How the layers are flattened, and why: each layer is applied in order over a work tree in
the store's ``cas/tmp`` by the ACI importer's own confined child (``aci.extract_oci_layer``:
the same tar scanner, chroot and member rules as an ACI import, plus whiteouts), then the
tree is packed with ``aci.build_aci`` (owners, modes, mtimes and allowed xattrs kept) and
imported with ``Store.import_stream``, so the final tar passes every ACI defence again and
the image ID is the SHA-512 of that tar. Extracting to a real tree rather than merging tar
streams means there is one extractor to trust, whiteouts and opaque directories act on a
real file system (no in-memory index of every path of every layer), and hard links keep
working when a later layer deletes one of their names (docker2aci's squash got that wrong).
Directory mtimes a layer did not describe are put back after it, so the same image gives
the same ACI, and the same image ID, on every host. Standard library only; never imports
ansible.
"""
import hashlib
import json
import os
import posixpath
import re
from typing import TYPE_CHECKING, Any, BinaryIO, Callable, Dict, List, Optional, Tuple

from . import aci, aci_scan, healthcheck, oci_layout, schema
from .aci_scan import CHUNK
from .errors import ImageError, ValidationError
from .fsutil import remove_tree

if TYPE_CHECKING:  # pragma: no cover - only the type: store imports the importers
    from .store import Store

DEFAULT_MAX_SIZE = aci.DEFAULT_MAX_SIZE
# Bumped whenever the conversion would give another ACI for the same input: the store's
# source cache keys on it, so an upgraded converter does not reuse an old result.
CONVERTER_VERSION = "1"

# OCI (GOARCH) architecture [+ variant] -> appc arch label (linux).
_ARCH = {"amd64": "amd64", "arm64": "aarch64", "386": "i386", "ppc64le": "ppc64le",
         "ppc64": "ppc64", "s390x": "s390x"}
_ARM = {"": "armv7l", "v7": "armv7l", "v6": "armv6l"}


# --------------------------------------------------------------------------- mapping helpers

def sanitize_identifier(text: str) -> str:
    """Lowercase ``text`` and squeeze it into an AC Identifier ('' if nothing is left).

    Characters outside [a-z0-9._~-] become '-', runs of separators become their first one,
    and each '/'-separated component is trimmed of separators (``localhost:5000/My__App``
    -> ``localhost-5000/my_app``).
    """
    out = []
    for comp in text.lower().split("/"):
        comp = re.sub(r"[^a-z0-9._~-]+", "-", comp)
        comp = re.sub(r"[-._~]{2,}", lambda m: m.group(0)[0], comp).strip("-._~")
        if comp:
            out.append(comp)
    return "/".join(out)


def ac_name(text: str) -> str:
    """``text`` as an AC Name: lowercase letters and digits joined by single '-'."""
    return "-".join(p for p in re.split(r"[^a-z0-9]+", text.lower()) if p)


def name_from_reference(ref: str) -> Tuple[str, str]:
    """(AC Identifier name, version label) from a reference; version ``latest`` when untagged."""
    repo, tag, dummy_digest = oci_layout.parse_reference(ref)
    name = sanitize_identifier(repo)
    if not schema.AC_IDENTIFIER_RE.match(name):
        raise ImageError("cannot make an AC Identifier of the image reference %r; give name" % ref)
    return name, tag or "latest"


def map_arch(arch: str, variant: Optional[str] = None) -> Optional[str]:
    """OCI architecture (and variant) -> appc arch label, or None when appc has none."""
    if arch == "arm":
        return _ARM.get(variant or "")
    return _ARCH.get(arch)


def map_user(spec: Optional[str], passwd: Optional[Callable[[str], Optional[int]]] = None) -> Tuple[str, str]:
    """The config's ``User`` -> appc (user, group).

    "" -> ("0", "0"); "uid:gid" and "name:group" split; a lone user gets its primary group
    from the image's /etc/passwd (``passwd``: user -> gid or None) as docker does, else 0.
    """
    spec = (spec or "").strip()
    if not spec:
        return "0", "0"
    user, sep, group = spec.partition(":")
    user = user or "0"
    if sep and group:
        return user, group
    gid = passwd(user) if passwd is not None else None
    return user, str(gid if gid is not None else 0)


def map_ports(exposed: Any) -> Tuple[List[Dict[str, Any]], List[str]]:
    """``ExposedPorts`` keys ("80/tcp", "53/udp", "8000-8010/tcp") -> appc ports, dropped."""
    ports, dropped, seen = [], [], set()
    items = []
    for key in exposed or {}:
        number, dummy_sep, proto = str(key).partition("/")
        proto = (proto or "tcp").lower()
        lo, dash, hi = number.partition("-")
        try:
            start = int(lo)
            end = int(hi) if dash else start
        except ValueError:
            dropped.append("ExposedPorts %s: not a port number" % key)
            continue
        if proto not in ("tcp", "udp", "sctp") or not 1 <= start <= end <= 65535:
            dropped.append("ExposedPorts %s: appc has no such port" % key)
            continue
        items.append((start, proto, end))
    for start, proto, end in sorted(items):
        name = "%s-%d" % (proto, start) + ("-%d" % end if end != start else "")
        if name in seen:
            continue
        seen.add(name)
        port = {"name": name, "protocol": proto, "port": start}
        if end != start:
            port["count"] = end - start + 1
        ports.append(port)
    return ports, dropped


def map_volumes(volumes: Any) -> List[Dict[str, Any]]:
    """``Volumes`` paths -> appc mountPoints named after the path ("/var/lib/db" -> var-lib-db)."""
    out, seen = [], set()
    paths = sorted({posixpath.normpath("/" + str(p).lstrip("/")) for p in volumes or {}})
    for path in paths:
        base = ac_name(path) or "root"
        name, n = base, 2
        while name in seen:
            name, n = "%s-%d" % (base, n), n + 1
        seen.add(name)
        out.append({"name": name, "path": path, "readOnly": False})
    return out


def map_env(env: Any) -> Tuple[List[Dict[str, str]], List[str]]:
    """``Env`` ("K=V", split on the first '=') -> appc environment (later wins), dropped."""
    values: Dict[str, str] = {}
    dropped = []
    for item in env or []:
        if not isinstance(item, str) or "=" not in item:
            dropped.append("Env %r: not NAME=value" % (item,))
            continue
        k, v = item.split("=", 1)
        if not schema.ENV_NAME_RE.match(k) or "\0" in v:
            dropped.append("Env %s: not a valid appc environment name or value" % k)
            continue
        values.pop(k, None)
        values[k] = v
    return [{"name": k, "value": v} for k, v in values.items()], dropped


def _annotation_ok(name: str, value: Any) -> bool:
    try:
        schema.validate_annotations([{"name": name, "value": value}])
        return True
    except ValidationError:
        return False


def image_manifest(config: Dict[str, Any], name: str, labels: Dict[str, str],
                   config_digest: Optional[str] = None,
                   passwd: Optional[Callable[[str], Optional[int]]] = None) -> Tuple[Dict[str, Any], List[str]]:
    """An OCI image config -> (appc image manifest, what had no appc equivalent).

    ``labels`` are the final appc labels (version/os/arch included). The manifest is
    validated with schema.parse_image_manifest.
    """
    c = config.get("config") or {}
    if not isinstance(c, dict):
        raise ImageError("image config: 'config' is not an object")
    dropped: List[str] = []
    entry, cmd = c.get("Entrypoint") or [], c.get("Cmd") or []
    for what, v in (("Entrypoint", entry), ("Cmd", cmd)):
        if not isinstance(v, list) or not all(isinstance(a, str) for a in v):
            raise ImageError("image config: %s must be a list of strings" % what)
    user, group = map_user(c.get("User") if isinstance(c.get("User"), str) else "", passwd)
    app: Dict[str, Any] = {}
    argv = list(entry) + list(cmd)
    if argv and argv[0]:
        app["exec"] = argv
    elif argv:
        dropped.append("Entrypoint/Cmd: the command is an empty string")
    app["user"], app["group"] = user, group
    wd = c.get("WorkingDir")
    if isinstance(wd, str) and wd:
        app["workingDirectory"] = posixpath.normpath("/" + wd.lstrip("/"))
    env, d = map_env(c.get("Env"))
    dropped += d
    if env:
        app["environment"] = env
    mounts = map_volumes(c.get("Volumes") if isinstance(c.get("Volumes"), dict) else {})
    if mounts:
        app["mountPoints"] = mounts
    ports, d = map_ports(c.get("ExposedPorts") if isinstance(c.get("ExposedPorts"), dict) else {})
    dropped += d
    if ports:
        app["ports"] = ports

    ann: List[Dict[str, str]] = []
    have = set()

    def add(k: str, v: Any, why: str = "") -> None:
        if k in have:
            return
        if isinstance(v, str) and _annotation_ok(k, v):
            ann.append({"name": k, "value": v})
            have.add(k)
        elif why:
            dropped.append(why)

    if config.get("created"):
        add("created", config["created"], "created %r: not an RFC 3339 time" % (config["created"],))
    if isinstance(config.get("author"), str) and config["author"]:
        add("authors", config["author"])
    given = c.get("Labels")
    oci_labels: Dict[str, Any] = given if isinstance(given, dict) else {}
    if "org.opencontainers.image.url" in oci_labels:
        add("homepage", oci_labels["org.opencontainers.image.url"])
    if "org.opencontainers.image.documentation" in oci_labels:
        add("documentation", oci_labels["org.opencontainers.image.documentation"])
    for k in sorted(oci_labels):
        add(k, oci_labels[k], "Labels %s: not an AC Identifier or not a valid annotation" % k)
    if config_digest:
        add("appc.rocket/oci/config", config_digest)
    if isinstance(c.get("StopSignal"), str) and c["StopSignal"]:
        # appc has no stop signal: kept as an annotation, the default of the app's stop_signal
        # (stage0/stopping.py), so it is not dropped.
        add("appc.rocket/oci/stop-signal", c["StopSignal"], "StopSignal %r: not a valid annotation" % c["StopSignal"])
    check, why = healthcheck.from_oci(c.get("Healthcheck"))
    if check is not None:
        add(healthcheck.ANNOTATION, check, "Healthcheck: too long for an annotation, dropped")
    elif why:
        dropped.append(why)
    for key in ("OnBuild", "Shell", "ArgsEscaped", "Memory", "MemorySwap",
                "CpuShares", "Domainname", "Hostname", "StdinOnce", "Tty", "OpenStdin"):
        if c.get(key):
            dropped.append("%s: no appc equivalent" % key)
    for key in ("os.version", "os.features", "variant"):
        if config.get(key) and not (key == "variant" and config.get("architecture") == "arm"):
            dropped.append("%s: no appc label" % key)

    manifest: Dict[str, Any] = {"acKind": "ImageManifest", "acVersion": schema.AC_VERSION,
                                "name": name, "labels": schema.dict_to_labels(labels)}
    manifest["app"] = app
    if ann:
        manifest["annotations"] = ann
    try:
        schema.parse_image_manifest(manifest)
    except ValidationError as e:
        raise ImageError("the converted manifest is not valid: %s" % e) from None
    return manifest, dropped


def image_labels(config: Dict[str, Any], version: str,
                 extra: Optional[Dict[str, str]] = None) -> Tuple[Dict[str, str], List[str]]:
    """appc labels: version, os, arch (mapped) from the config, then ``extra`` on top."""
    labels: Dict[str, str] = {"version": version}
    dropped = []
    os_name = config.get("os") if isinstance(config.get("os"), str) else ""
    if os_name in schema.OS_ARCH:
        labels["os"] = os_name
        arch = map_arch(str(config.get("architecture") or ""), config.get("variant"))
        if arch is not None and arch in schema.OS_ARCH[os_name]:
            labels["arch"] = arch
        elif config.get("architecture"):
            dropped.append("architecture %s%s: no appc arch" % (
                config["architecture"], "/" + config["variant"] if config.get("variant") else ""))
    elif os_name:
        raise ImageError("the image is for os %s; appc.rocket runs linux images" % os_name)
    labels.update(extra or {})
    return labels, dropped


# --------------------------------------------------------------------------- import

def _passwd_lookup(rootfs: str) -> Callable[[str], Optional[int]]:
    """user name or uid -> primary gid from the flattened tree's /etc/passwd (confined to the tree)."""
    from ..stage1 import users

    try:
        entries = users.read_db_in(rootfs, "/etc/passwd")
    except (OSError, ValueError):
        entries = []
    return lambda user: users.primary_gid(entries, user)


def _source_key(image: oci_layout.Image) -> str:
    # The config digest names the content: its diff_ids pin every layer's uncompressed
    # bytes, so the same image saved another way (gzip or not, OCI or docker) converts alike.
    return "oci-config:" + image.config_digest


class _Plan:
    """An image chosen and named, before any layer is read."""

    __slots__ = ("src", "image", "name", "labels", "dropped", "info", "stat_key", "known")
    src: oci_layout.Source
    image: oci_layout.Image
    name: str
    labels: Dict[str, str]
    dropped: List[str]
    info: Dict[str, Any]
    stat_key: str                      # the conversion's inputs, for the store's source cache
    known: Optional[Dict[str, Any]]    # the image record when this conversion was done before


def _plan(store: "Optional[Store]", path: str, work: str, name: Optional[str], labels: Optional[Dict[str, str]],
          ref: Optional[str], platform: Optional[str], max_size: int, allow_devices: bool) -> _Plan:
    if platform:
        bits = platform.split("/")
        if len(bits) not in (2, 3) or not all(bits):
            raise ValidationError("platform", platform, "is not os/architecture[/variant]")
        want = (bits[0], bits[1], bits[2] if len(bits) == 3 else "")
    else:
        want = oci_layout.host_platform()
    if labels is not None:
        schema.dict_to_labels(labels, "labels")
    if name is not None:
        schema.validate_ac_identifier(name, "name")
    if not os.path.exists(path):
        raise ImageError("cannot read %s: no such file or directory" % path)
    src = oci_layout.open_source(path, work, max_size)
    image = oci_layout.resolve(src, ref, want, path)
    return plan_image(store, src, image, name, labels, allow_devices, path)


def plan_image(store: "Optional[Store]", src: oci_layout.Source, image: oci_layout.Image, name: Optional[str],
               labels: Optional[Dict[str, str]], allow_devices: bool, what: str) -> _Plan:
    """Name and label an image already chosen, and find an earlier conversion of it.

    Shared by the file importers and registry_pull (whose blobs are a Source of their own).
    """
    version = "latest"
    img_name = name
    full = image.ref if image.ref and oci_layout.is_full_reference(image.ref) else None
    if image.ref and not full:
        version = image.ref            # an index ref.name that is only a tag
    if full:
        ref_name, version = name_from_reference(full)
        img_name = img_name or ref_name
    if img_name is None:
        raise ImageError("%s: the image has no repository name (%s); give name"
                         % (what, image.ref or "untagged"))
    plan = _Plan()
    plan.src, plan.image, plan.name = src, image, img_name
    plan.labels, plan.dropped = image_labels(image.config, version, labels)
    plan.info = {"config": image.config_digest, "manifest": image.manifest_digest, "ref": image.ref,
                 "format": image.kind}
    plan.stat_key = hashlib.sha256(json.dumps([CONVERTER_VERSION, img_name, plan.labels, bool(allow_devices)],
                                              sort_keys=True).encode()).hexdigest()
    known = None
    if store is not None and store.dd.exists():
        known_id = store.index.source_image(_source_key(image), plan.stat_key)
        known = store.index.get_image(known_id) if known_id else None
    plan.known = known
    return plan


def inspect_oci(store: "Optional[Store]", path: str, *, name: Optional[str] = None,
                labels: Optional[Dict[str, str]] = None, ref: Optional[str] = None, platform: Optional[str] = None,
                max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> Dict[str, Any]:
    """What import_oci would do, reading only the small documents (check mode).

    ``{"present", "id" (when present), "name", "labels", "dropped", "oci"}``; the image
    ID of an image not imported yet is unknown until its layers are flattened. A
    compressed archive is decompressed into a private temporary directory (and removed):
    check mode writes nothing under the data directory. ``store`` may be None.
    """
    import shutil
    import tempfile

    path = os.path.abspath(path)
    work = tempfile.mkdtemp(prefix="rocket-oci-inspect-")
    try:
        plan = _plan(store, path, work, name, labels, ref, platform, max_size, allow_devices)
        dummy_manifest, more = image_manifest(plan.image.config, plan.name, plan.labels, plan.image.config_digest)
        out = {"present": plan.known is not None, "name": plan.name, "labels": plan.labels,
               "dropped": plan.dropped + more, "oci": plan.info}
        if plan.known is not None:
            out["id"] = plan.known["id"]
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


DETECT_LIMIT = 64 << 20


def detect_format(path: str) -> str:
    """"aci", "oci" or "docker": what a source is, from its first tar members.

    Only names are read (at most DETECT_LIMIT uncompressed bytes); the importer that
    follows checks everything again.
    """
    if os.path.isdir(path):
        if os.path.exists(os.path.join(path, "manifest.json")):
            return "docker"
        return "oci"
    import tarfile

    with open(path, "rb") as f:
        head = f.read(512)
        kind = aci_scan.sniff_compression(head)
        f.seek(0)
        limited = _Limited(f, kind)
        try:
            # A stream ("r|") only reads: typeshed's file protocol also asks for write and seek.
            with tarfile.open(fileobj=limited, mode="r|") as tf:  # type: ignore[call-overload]
                for i, ti in enumerate(tf):
                    n = ti.name.lstrip("./") if ti.name not in (".", "./") else ""
                    top = n.split("/", 1)[0]
                    if n == "manifest" or top == "rootfs":
                        return "aci"
                    if n in ("oci-layout", "index.json"):
                        return "oci"
                    if n in ("manifest.json", "repositories"):
                        return "docker"
                    if i > 64:
                        break
        except (tarfile.TarError, EOFError, ImageError, OSError):
            pass
    return "aci"


class _Limited:
    """A decompressed, size-bounded read-only stream for detect_format."""

    def __init__(self, f: BinaryIO, kind: str) -> None:
        self.f = f
        self.inflater = aci_scan.Inflater(kind) if kind != "tar" else None
        self.buf = b""
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) < n) and self.total < DETECT_LIMIT:
            chunk = self.f.read(CHUNK)
            if not chunk:
                break
            pieces = list(self.inflater.feed(chunk)) if self.inflater else [chunk]
            for p in pieces:
                self.total += len(p)
                self.buf += p
        if n < 0:
            n = len(self.buf)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def import_oci(store: "Store", path: str, *, name: Optional[str] = None, labels: Optional[Dict[str, str]] = None,
               ref: Optional[str] = None, platform: Optional[str] = None,
               max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> Tuple[Dict[str, Any], bool]:
    """Import an OCI image layout (directory or tar) or a ``docker save`` archive.

    ``ref`` picks the image when the source holds several (an index's ref.name /
    containerd name, a docker RepoTag, or a manifest/config digest); ``platform``
    ("linux/arm64", "linux/arm/v7") picks from a multi-platform index, default this host.
    ``name`` and ``labels`` override what the reference gives. Returns (record, changed)
    like Store.import_file; the record also has ``dropped`` (config fields with no appc
    equivalent) and ``oci`` (``{"config", "manifest", "ref", "format"}``). Needs root.
    """
    from .store import Work, clean_tmp

    path = os.path.abspath(path)
    clean_tmp(store.dd.tmp)
    work = Work(store.dd.tmp, "oci")
    try:
        plan = _plan(store, path, work.path, name, labels, ref, platform, max_size, allow_devices)
        source = "%s:%s" % ("docker-archive" if plan.image.kind == "docker" else "oci", path)
        return convert(store, plan, work.path, source, max_size, allow_devices)
    finally:
        work.cleanup()


def convert(store: "Store", plan: _Plan, work: str, source: str, max_size: int = DEFAULT_MAX_SIZE,
            allow_devices: bool = False, compression: str = "gzip") -> Tuple[Dict[str, Any], bool]:
    """Flatten a planned image in ``work`` (a directory of the store's cas/tmp) and import it.

    ``compression`` of the ACI the store keeps: registry_pull says "none", its compressed
    copy being the layers in the blob cache (gzip would cost it half its time).
    """
    src, image, img_name, final_labels = plan.src, plan.image, plan.name, plan.labels
    dropped, info, stat_key = plan.dropped, plan.info, plan.stat_key
    if plan.known is not None:
        dummy_manifest, more = image_manifest(image.config, img_name, final_labels, image.config_digest)
        return dict(plan.known, dropped=dropped + more, oci=info), False
    rootfs = os.path.join(work, "rootfs")
    os.mkdir(rootfs, 0o755)
    os.utime(rootfs, ns=(0, 0))
    skipped: List[Tuple[str, str]] = []
    for i, (lpath, digest, size, diff_id) in enumerate(image.layers):
        shown = "%s (layer %d of %d)" % (digest or lpath, i + 1, len(image.layers))
        with src.open(lpath) as f:
            stream = oci_layout.VerifiedStream(f, shown, digest, size, diff_id, max_size)
            res = aci.extract_oci_layer(stream, rootfs, compression="tar", max_size=max_size,
                                        allow_devices=allow_devices)
            stream.drain()
        skipped += [(shown + ": " + n, k) for n, k in res.skipped]
    manifest, more = image_manifest(image.config, img_name, final_labels, image.config_digest,
                                    _passwd_lookup(rootfs))
    out = os.path.join(work, "image.aci")
    aci.build_aci(rootfs, manifest, out, compression=compression, mtime=None, owner=None)
    remove_tree(rootfs)       # the import renders its own tree: do not hold two
    with open(out, "rb") as f:
        rec, changed = store.import_stream(f, source=source, allow_devices=allow_devices, max_size=max_size)
    with store.index.transaction():
        store.index.set_source(_source_key(image), stat_key, rec["id"])
    rec = dict(rec, dropped=dropped + more, oci=info)
    rec["skipped"] = [list(s) for s in skipped] + list(rec.get("skipped") or [])
    return rec, changed
