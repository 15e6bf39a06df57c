"""OCI image layouts and ``docker save`` archives, converted into the store as ACIs.

What users have today are OCI images; appc is a finished spec. ``import_oci`` reads an OCI
image layout (a directory or a tar of one) or a ``docker save`` archive (the legacy layout
with ``<id>/layer.tar`` and the newer one whose layers are ``blobs/sha256/...``), picks one
image, and imports it as ONE flattened ACI, the way docker2aci's squashed mode did.

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
the same ACI, and the same image ID, on every host.

Every blob is checked while it is streamed, never loaded whole: its size and digest against
its descriptor (or, for the legacy docker layout, its file name), and each layer's
uncompressed stream against the config's ``rootfs.diff_ids``. Manifest JSON documents are
bounded and read whole. Standard library only; never imports ansible. The mapping from the
image config to the appc manifest is described in docs/oci.md.
"""
import hashlib
import json
import os
import platform as _platform
import posixpath
import re
import stat
import tarfile
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Tuple

from . import aci, schema
from .errors import AmbiguousError, ImageError, NotFoundError, ValidationError
from .fsutil import remove_tree

DEFAULT_MAX_SIZE = aci.DEFAULT_MAX_SIZE
# Bumped whenever the conversion would give another ACI for the same input: the store's
# source cache keys on it, so an upgraded converter does not reuse an old result.
CONVERTER_VERSION = "1"

_MAX_JSON = 4 << 20           # index, manifest, config, manifest.json
_MAX_MEMBERS = 1 << 20        # members of an outer archive we index
_MAX_LINK_HOPS = 16
_CHUNK = 1 << 20
_DIGEST_RE = re.compile(r"\A(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")
_HEX_NAME_RE = re.compile(r"\A(?:blobs/(sha256|sha512)/)?([0-9a-f]{64}|[0-9a-f]{128})(?:\.json)?\Z")

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

# OCI (GOARCH) architecture [+ variant] -> appc arch label (linux).
_ARCH = {"amd64": "amd64", "arm64": "aarch64", "386": "i386", "ppc64le": "ppc64le",
         "ppc64": "ppc64", "s390x": "s390x"}
_ARM = {"": "armv7l", "v7": "armv7l", "v6": "armv6l"}
# platform.machine() -> (OCI architecture, variant)
_HOST = {"x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""),
         "arm64": ("arm64", ""), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
         "i386": ("386", ""), "i686": ("386", ""), "ppc64le": ("ppc64le", ""),
         "s390x": ("s390x", "")}


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


def parse_reference(ref: str) -> Tuple[str, Optional[str], Optional[str]]:
    """``[registry/]repo[:tag][@digest]`` -> (repository, tag, digest), Docker-normalised.

    A repository without a registry is Docker Hub's (``alpine`` is
    ``docker.io/library/alpine``), as docker itself reads it.
    """
    rest, dummy_sep, digest = ref.partition("@")
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
    first, sep, more = rest.partition("/")
    if not sep or ("." not in first and ":" not in first and first != "localhost"):
        domain, path = "docker.io", rest
    else:
        domain, path = first, more
    if domain in ("index.docker.io", "registry-1.docker.io"):
        domain = "docker.io"
    if domain == "docker.io" and "/" not in path:
        path = "library/" + path
    return domain + "/" + path, tag or None, digest or None


def _is_full_reference(text: str) -> bool:
    """A ref.name may be a whole reference or only a tag ("latest", "3.19")."""
    return not _DIGEST_RE.match(text) and ("/" in text or ":" in text or "@" in text)


def _pick_ref(names: List[str], ref: Optional[str]) -> Optional[str]:
    """The reference to name the image after: the one asked for, else a full one, else a tag."""
    if ref is not None and _is_full_reference(ref):
        return ref
    full = [n for n in names if _is_full_reference(n)]
    if full:
        return full[0]
    if ref is not None and ref in names:
        return ref
    return names[0] if names else None


def name_from_reference(ref: str) -> Tuple[str, str]:
    """(AC Identifier name, version label) from a reference; version ``latest`` when untagged."""
    repo, tag, dummy_digest = parse_reference(ref)
    name = sanitize_identifier(repo)
    if not schema.AC_IDENTIFIER_RE.match(name):
        raise ImageError("cannot make an AC Identifier of the image reference %r; give name" % ref)
    return name, tag or "latest"


def map_arch(arch: str, variant: Optional[str] = None) -> Optional[str]:
    """OCI architecture (and variant) -> appc arch label, or None when appc has none."""
    if arch == "arm":
        return _ARM.get(variant or "")
    return _ARCH.get(arch)


def host_platform() -> Tuple[str, str, str]:
    """(os, OCI architecture, variant) of this machine."""
    arch, variant = _HOST.get(_platform.machine(), (_platform.machine(), ""))
    return "linux", arch, variant


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
    oci_labels = c.get("Labels") if isinstance(c.get("Labels"), dict) else {}
    if "org.opencontainers.image.url" in oci_labels:
        add("homepage", oci_labels["org.opencontainers.image.url"])
    if "org.opencontainers.image.documentation" in oci_labels:
        add("documentation", oci_labels["org.opencontainers.image.documentation"])
    for k in sorted(oci_labels):
        add(k, oci_labels[k], "Labels %s: not an AC Identifier or not a valid annotation" % k)
    if config_digest:
        add("appc.rocket/oci/config", config_digest)
    if isinstance(c.get("StopSignal"), str) and c["StopSignal"]:
        add("appc.rocket/oci/stop-signal", c["StopSignal"])
        dropped.append("StopSignal: no appc equivalent (kept as annotation appc.rocket/oci/stop-signal)")
    for key in ("Healthcheck", "OnBuild", "Shell", "ArgsEscaped", "Memory", "MemorySwap",
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


# --------------------------------------------------------------------------- sources

class _Section:
    """A read-only window [offset, offset+size) of a file, read sequentially."""

    def __init__(self, path: str, offset: int, size: int) -> None:
        self.f = open(path, "rb")
        self.f.seek(offset)
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        if not data:
            raise ImageError("%s: archive truncated" % self.f.name)
        self.left -= len(data)
        return data

    def close(self) -> None:
        self.f.close()

    def __enter__(self) -> "_Section":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _norm(name: str) -> Optional[str]:
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts or "\0" in name:
        return None
    return "/".join(parts)


class _DirSource:
    """An unpacked layout: files below ``root``; names from the documents stay inside it."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.what = root

    def exists(self, name: str) -> bool:
        n = _norm(name)
        return n is not None and os.path.isfile(os.path.join(self.root, n))

    def open(self, name: str) -> BinaryIO:
        n = _norm(name)
        if not n:
            raise ImageError("%s: bad path %r in the image's documents" % (self.what, name))
        path = os.path.join(self.root, n)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            raise ImageError("%s: %s is missing" % (self.what, n)) from None
        except OSError as e:
            raise ImageError("%s: cannot read %s: %s" % (self.what, n, e.strerror or e)) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageError("%s: %s is not a regular file" % (self.what, n))
        return os.fdopen(fd, "rb")


class _TarSource:
    """An archive (OCI layout tar or docker save), read in place through a header index.

    The index is built by walking headers and seeking over data, with the ACI scanner's
    bounds on extended headers, so a hostile archive can neither blow up memory nor make
    us read the whole file twice. Symlinks and hard links between members (docker's
    legacy layout links shared ``layer.tar`` files) are followed inside the archive only.
    """

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what
        self.members: Dict[str, Tuple[bytes, int, int, str]] = {}
        with open(path, "rb") as f:
            self._index(f)

    def _index(self, f) -> None:
        pax: Dict[bytes, bytes] = {}
        glob: Dict[bytes, bytes] = {}
        long_name = long_link = None
        pos = 0
        while True:
            f.seek(pos)
            block = f.read(512)
            if len(block) < 512:
                raise ImageError("%s: truncated tar archive" % self.what)
            if block.count(0) == 512:
                return
            try:
                ti = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as e:
                raise ImageError("%s: bad tar header at byte %d: %s" % (self.what, pos, e)) from None
            pos += 512
            t = ti.type
            if t in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                if not 0 <= ti.size <= aci._MAX_EXT:
                    raise ImageError("%s: extended header at byte %d is too big" % (self.what, pos - 512))
                data = f.read(ti.size)
                pos += aci._blocks(ti.size)
                if t in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                    value = aci._text(data.split(b"\0", 1)[0])
                    if t == tarfile.GNUTYPE_LONGNAME:
                        long_name = value
                    else:
                        long_link = value
                else:
                    recs = aci._parse_pax(data, "%s: pax header" % self.what)
                    (glob if t == tarfile.XGLTYPE else pax).update(recs)
                continue
            eff = dict(glob)
            eff.update(pax)
            name = long_name if long_name is not None else (
                aci._text(eff[b"path"]) if b"path" in eff else ti.name)
            link = long_link if long_link is not None else (
                aci._text(eff[b"linkpath"]) if b"linkpath" in eff else ti.linkname)
            size = ti.size
            if b"size" in eff:
                if not eff[b"size"].isdigit():
                    raise ImageError("%s: bad pax size for %s" % (self.what, name))
                size = int(eff[b"size"])
            pax, long_name, long_link = {}, None, None
            data_size = size if t in aci._REGULAR else 0
            n = _norm(name)
            if n and n not in self.members:
                self.members[n] = (t, pos, data_size, link)
                if len(self.members) > _MAX_MEMBERS:
                    raise ImageError("%s: more than %d members" % (self.what, _MAX_MEMBERS))
            pos += aci._blocks(data_size)

    def _resolve(self, name: str) -> Tuple[int, int]:
        n = _norm(name)
        for dummy in range(_MAX_LINK_HOPS):
            if not n or n not in self.members:
                raise ImageError("%s: %s is missing" % (self.what, name))
            t, offset, size, link = self.members[n]
            if t in aci._REGULAR:
                return offset, size
            if t == tarfile.SYMTYPE and not link.startswith("/"):
                n = _norm(posixpath.normpath(posixpath.join(posixpath.dirname(n), link)))
            elif t == tarfile.LNKTYPE:
                n = _norm(link)
            else:
                raise ImageError("%s: %s is not a regular file" % (self.what, name))
        raise ImageError("%s: %s: too many links" % (self.what, name))

    def exists(self, name: str) -> bool:
        try:
            self._resolve(name)
            return True
        except ImageError:
            return False

    def open(self, name: str) -> _Section:
        offset, size = self._resolve(name)
        return _Section(self.path, offset, size)


# --------------------------------------------------------------------------- verified reads

def _check_digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise ImageError("%s: %r is not a sha256/sha512 digest" % (what, value))
    return value


class _VerifiedStream:
    """The uncompressed stream of a blob, checked as it is read.

    Hashes the stored bytes (``digest``, ``size``) and the decompressed ones (``diff_id``);
    a mismatch, a blob longer than announced or a truncated compressed stream raises
    ImageError naming the blob, at the latest when its end is read.
    """

    def __init__(self, f, what: str, digest: Optional[str], size: Optional[int],
                 diff_id: Optional[str], max_size: int) -> None:
        self.f, self.what, self.digest, self.size, self.diff_id = f, what, digest, size, diff_id
        self.max_size = max_size
        self.raw_h = hashlib.new(digest.split(":")[0]) if digest else None
        self.diff_h = hashlib.new(diff_id.split(":")[0]) if diff_id else None
        self.raw_size = self.out_size = 0
        self.inflater: Optional[aci._Inflater] = None
        self.gen = None
        self.buf = memoryview(b"")
        self.eof = False
        self.done = False

    def _raw(self) -> bytes:
        data = self.f.read(_CHUNK)
        if data:
            self.raw_size += len(data)
            if self.size is not None and self.raw_size > self.size:
                raise ImageError("blob %s: longer than the %d bytes its descriptor says"
                                 % (self.what, self.size))
            if self.raw_h is not None:
                self.raw_h.update(data)
        return data

    def _start(self) -> bytes:
        head = b""
        while len(head) < 512:
            b = self._raw()
            if not b:
                break
            head += b
        if head[:4] == b"\x28\xb5\x2f\xfd":
            raise ImageError("blob %s: zstd-compressed layers are not supported (the Python "
                             "standard library has no zstd); re-save the image with gzip layers"
                             % self.what)
        try:
            kind = aci.sniff_compression(head)
        except ImageError:
            raise ImageError("blob %s: not a tar archive, nor gzip/bzip2/xz data" % self.what) from None
        self.inflater = aci._Inflater(kind)
        return head

    def read(self, n: int = -1) -> bytes:
        try:
            return self._read(n)
        except ImageError as e:
            if self.done or str(e).startswith("blob "):
                raise
            # Corrupt compressed data: a changed blob is the likelier cause; say so if it is.
            self._check_raw_rest()
            raise ImageError("blob %s: %s" % (self.what, e)) from None

    def _check_raw_rest(self) -> None:
        self.done = True
        while self._raw():
            pass
        self._check_raw()

    def _check_raw(self) -> None:
        if self.size is not None and self.raw_size != self.size:
            raise ImageError("blob %s: %d bytes, its descriptor says %d" % (self.what, self.raw_size, self.size))
        if self.raw_h is not None:
            got = self.digest.split(":")[0] + ":" + self.raw_h.hexdigest()
            if got != self.digest:
                raise ImageError("blob %s: digest mismatch (content is %s)" % (self.what, got))

    def _read(self, n: int) -> bytes:
        while not self.buf:
            if self.eof:
                return b""
            if self.gen is not None:
                piece = next(self.gen, None)
                if piece is not None:
                    self.out_size += len(piece)
                    if self.out_size > self.max_size:
                        raise ImageError("blob %s: uncompressed size exceeds %d bytes (max_size)"
                                         % (self.what, self.max_size))
                    if self.diff_h is not None:
                        self.diff_h.update(piece)
                    self.buf = memoryview(piece)
                    break
                self.gen = None
            raw = self._start() if self.inflater is None else self._raw()
            if not raw:
                self.eof = True
                self._finish()
                return b""
            self.gen = self.inflater.feed(raw)
        if n is None or n < 0 or n >= len(self.buf):
            out, self.buf = bytes(self.buf), memoryview(b"")
        else:
            out, self.buf = bytes(self.buf[:n]), self.buf[n:]
        return out

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        self._check_raw()
        if self.inflater is None:
            raise ImageError("blob %s: empty" % self.what)
        try:
            self.inflater.finish()
        except ImageError as e:
            raise ImageError("blob %s: %s" % (self.what, e)) from None
        if self.diff_h is not None:
            got = self.diff_id.split(":")[0] + ":" + self.diff_h.hexdigest()
            if got != self.diff_id:
                raise ImageError("blob %s: uncompressed content does not match the config's "
                                 "diff_id %s (it is %s)" % (self.what, self.diff_id, got))

    def drain(self) -> None:
        """Read to the end (checking everything) whatever the consumer left unread."""
        while self.read(_CHUNK):
            pass
        self._finish()


def _read_json(src, name: str, what: str, digest: Optional[str] = None,
               size: Optional[int] = None) -> Any:
    """A small JSON document, verified when its digest is known."""
    if size is not None and not 0 <= size <= _MAX_JSON:
        raise ImageError("%s (%s): %s bytes is more than %d" % (what, name, size, _MAX_JSON))
    with src.open(name) as f:
        data = f.read(_MAX_JSON + 1)
    if len(data) > _MAX_JSON:
        raise ImageError("%s (%s): more than %d bytes" % (what, name, _MAX_JSON))
    if size is not None and len(data) != size:
        raise ImageError("blob %s (%s): %d bytes, its descriptor says %d" % (digest or name, what, len(data), size))
    if digest is not None:
        alg, dummy_sep, hexd = digest.partition(":")
        if hashlib.new(alg, data).hexdigest() != hexd:
            raise ImageError("blob %s (%s): digest mismatch" % (digest, what))
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ImageError("%s (%s): not valid JSON: %s" % (what, name, e)) from None


def _blob_path(digest: str) -> str:
    alg, dummy_sep, hexd = digest.partition(":")
    return "blobs/%s/%s" % (alg, hexd)


# --------------------------------------------------------------------------- selection

class _Candidate:
    """One image an archive offers: the names it can be asked by, and how to reach it."""

    def __init__(self, names: List[str], data: Any, digest: Optional[str] = None) -> None:
        self.names = names
        self.data = data
        self.digest = digest

    def show(self) -> str:
        return ", ".join(self.names) if self.names else (self.digest or "an untagged image")

    def matches(self, ref: str) -> bool:
        if ref in self.names or ref == self.digest:
            return True
        if not _is_full_reference(ref):
            return False
        want = parse_reference(ref)
        want = (want[0], want[1] or "latest", want[2])
        for n in self.names:
            if _is_full_reference(n):
                have = parse_reference(n)
                if (have[0], have[1] or "latest") == want[:2] and want[2] in (None, self.digest):
                    return True
        return False


def _select(cands: List[_Candidate], ref: Optional[str], what: str) -> _Candidate:
    if not cands:
        raise ImageError("%s holds no image" % what)
    if ref is None:
        if len(cands) == 1:
            return cands[0]
        shown = [c.show() for c in cands]
        raise AmbiguousError("%s holds %d images; choose one with ref: %s"
                             % (what, len(cands), "; ".join(shown)), shown)
    found = [c for c in cands if c.matches(ref)]
    if len(found) == 1:
        return found[0]
    shown = [c.show() for c in (found or cands)]
    if not found:
        raise NotFoundError("%s has no image %s; it holds: %s" % (what, ref, "; ".join(shown)))
    raise AmbiguousError("%s: %s matches %d images: %s" % (what, ref, len(found), "; ".join(shown)), shown)


def _pick_platform(index: Dict[str, Any], want: Tuple[str, str, str], what: str) -> Dict[str, Any]:
    """The entry of an image index for platform ``want`` (os, architecture, variant)."""
    os_name, arch, variant = want
    entries, offered = [], []
    for d in index.get("manifests") or []:
        if not isinstance(d, dict):
            continue
        p = d.get("platform") or {}
        ann = d.get("annotations") or {}
        if ann.get("vnd.docker.reference.type") or p.get("os") in (None, "unknown"):
            continue      # attestations and other non-images
        offered.append("%s/%s%s" % (p.get("os"), p.get("architecture"),
                                    "/" + p["variant"] if p.get("variant") else ""))
        if p.get("os") == os_name and p.get("architecture") == arch:
            v = p.get("variant") or ""
            entries.append((0 if v == variant else 1 if not v else 2, d))
    entries = [e for e in entries if e[0] < 2 or not variant]
    if not entries:
        raise ImageError("%s has no image for %s/%s%s (it has: %s)" % (
            what, os_name, arch, "/" + variant if variant else "", ", ".join(offered) or "none"))
    entries.sort(key=lambda e: e[0])
    return entries[0][1]


class _Image:
    """What conversion needs: the config (verified) and the layers to stream, in order."""

    def __init__(self, config: Dict[str, Any], config_digest: str, layers: List[Tuple[str, Optional[str],
                 Optional[int], str]], ref: Optional[str], manifest_digest: Optional[str], kind: str) -> None:
        self.config = config
        self.config_digest = config_digest
        self.layers = layers      # (path in the source, digest, size, diff_id)
        self.ref = ref
        self.manifest_digest = manifest_digest
        self.kind = kind


def _diff_ids(config: Dict[str, Any], n: int, what: str) -> List[str]:
    rootfs = config.get("rootfs") or {}
    ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(ids, list) or len(ids) != n:
        raise ImageError("%s: the config lists %s diff_ids for %d layers"
                         % (what, len(ids) if isinstance(ids, list) else "no", n))
    return [_check_digest(d, "%s: rootfs.diff_ids" % what) for d in ids]


def _resolve_oci(src, ref: Optional[str], want: Tuple[str, str, str], what: str) -> _Image:
    layout = _read_json(src, "oci-layout", "oci-layout")
    if not isinstance(layout, dict) or not str(layout.get("imageLayoutVersion", "")).startswith("1."):
        raise ImageError("%s: unsupported oci-layout %r" % (what, layout))
    index = _read_json(src, "index.json", "index.json")
    cands = []
    for d in (index.get("manifests") if isinstance(index, dict) else None) or []:
        if not isinstance(d, dict):
            continue
        ann = d.get("annotations") or {}
        names = [ann[k] for k in (REF_NAME, CONTAINERD_NAME) if isinstance(ann.get(k), str) and ann[k]]
        cands.append(_Candidate(names, d, d.get("digest")))
    chosen = _select(cands, ref, what)
    desc = chosen.data
    for dummy in range(4):    # index -> (nested index ->) manifest
        digest = _check_digest(desc.get("digest"), "%s: descriptor" % what)
        doc = _read_json(src, _blob_path(digest), "manifest", digest, desc.get("size"))
        if not isinstance(doc, dict):
            raise ImageError("%s: manifest %s is not an object" % (what, digest))
        mt = desc.get("mediaType") or doc.get("mediaType")
        if mt in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
            desc = _pick_platform(doc, want, "%s (%s)" % (what, digest))
            continue
        if mt not in MANIFEST_TYPES and "layers" not in doc:
            raise ImageError("%s: %s is neither an image manifest nor an index (%s)" % (what, digest, mt))
        cdesc = doc.get("config") or {}
        cdigest = _check_digest(cdesc.get("digest"), "%s: config descriptor" % what)
        config = _read_json(src, _blob_path(cdigest), "image config", cdigest, cdesc.get("size"))
        if not isinstance(config, dict):
            raise ImageError("%s: config %s is not an object" % (what, cdigest))
        layers = doc.get("layers") or []
        diffs = _diff_ids(config, len(layers), what)
        out = []
        for ld, diff in zip(layers, diffs):
            ldigest = _check_digest(ld.get("digest") if isinstance(ld, dict) else None, "%s: layer" % what)
            size = ld.get("size")
            if not isinstance(size, int) or size < 0:
                raise ImageError("%s: layer %s has no size" % (what, ldigest))
            out.append((_blob_path(ldigest), ldigest, size, diff))
        return _Image(config, cdigest, out, _pick_ref(chosen.names, ref), digest, "oci")
    raise ImageError("%s: image indexes nested too deeply" % what)


def _resolve_docker(src, ref: Optional[str], what: str) -> _Image:
    entries = _read_json(src, "manifest.json", "manifest.json")
    if not isinstance(entries, list):
        raise ImageError("%s: manifest.json is not a list" % what)
    cands = []
    for e in entries:
        if not isinstance(e, dict):
            continue
        tags = [t for t in e.get("RepoTags") or [] if isinstance(t, str)]
        m = _HEX_NAME_RE.match(str(e.get("Config", "")))
        digest = "%s:%s" % (m.group(1) or "sha256", m.group(2)) if m else None
        cands.append(_Candidate(tags, e, digest))
    chosen = _select(cands, ref, what)
    e = chosen.data
    if chosen.digest is None:
        raise ImageError("%s: the config %r is not named by its digest" % (what, e.get("Config")))
    config = _read_json(src, e["Config"], "image config", chosen.digest)
    if not isinstance(config, dict):
        raise ImageError("%s: config is not an object" % what)
    layers = [str(p) for p in e.get("Layers") or []]
    diffs = _diff_ids(config, len(layers), what)
    out = []
    for path, diff in zip(layers, diffs):
        m = _HEX_NAME_RE.match(path)
        digest = "%s:%s" % (m.group(1), m.group(2)) if m and m.group(1) else None
        out.append((path, digest, None, diff))
    if ref is not None and not _is_full_reference(ref):
        ref = None        # a digest: name the image after its tags
    names = [n for n in chosen.names if ref is None or _Candidate([n], None).matches(ref)]
    return _Image(config, chosen.digest, out, _pick_ref(names or chosen.names, ref), None, "docker")


def _open_source(path: str, work: str, max_size: int):
    """A directory as is; an archive in place, or decompressed into ``work`` first."""
    if os.path.isdir(path):
        return _DirSource(path)
    try:
        f = open(path, "rb")
    except OSError as e:
        raise ImageError("cannot read %s: %s" % (path, e.strerror or e)) from None
    with f:
        head = f.read(512)
        try:
            kind = aci.sniff_compression(head)
        except ImageError:
            raise ImageError("%s: neither a directory nor a tar archive (or gzip/bzip2/xz of one)" % path) from None
        if kind == "tar":
            return _TarSource(path, path)
        plain = os.path.join(work, "archive.tar")
        inflater = aci._Inflater(kind)
        size = 0
        with open(plain, "wb") as out:
            chunk = head
            while chunk:
                for piece in inflater.feed(chunk):
                    size += len(piece)
                    if size > max_size:
                        raise ImageError("%s: uncompressed size exceeds %d bytes (max_size)" % (path, max_size))
                    out.write(piece)
                chunk = f.read(_CHUNK)
            inflater.finish()
    return _TarSource(plain, path)


# --------------------------------------------------------------------------- import

def _passwd_lookup(rootfs: str) -> Callable[[str], Optional[int]]:
    """user name or uid -> primary gid from the flattened tree's /etc/passwd (confined to the tree)."""
    from ..stage1 import users

    try:
        entries = users.read_db_in(rootfs, "/etc/passwd")
    except (OSError, ValueError):
        entries = []
    return lambda user: users.primary_gid(entries, user)


def _source_key(image: _Image) -> str:
    # The config digest names the content: its diff_ids pin every layer's uncompressed
    # bytes, so the same image saved another way (gzip or not, OCI or docker) converts alike.
    return "oci-config:" + image.config_digest


class _Plan:
    """An image chosen and named, before any layer is read."""

    __slots__ = ("src", "image", "name", "labels", "dropped", "info", "stat_key", "known")


def _plan(store, path: str, work: str, name: Optional[str], labels: Optional[Dict[str, str]],
          ref: Optional[str], platform: Optional[str], max_size: int, allow_devices: bool) -> _Plan:
    if platform:
        bits = platform.split("/")
        if len(bits) not in (2, 3) or not all(bits):
            raise ValidationError("platform", platform, "is not os/architecture[/variant]")
        want = (bits[0], bits[1], bits[2] if len(bits) == 3 else "")
    else:
        want = host_platform()
    if labels is not None:
        schema.dict_to_labels(labels, "labels")
    if name is not None:
        schema.validate_ac_identifier(name, "name")
    if not os.path.exists(path):
        raise ImageError("cannot read %s: no such file or directory" % path)
    src = _open_source(path, work, max_size)
    if src.exists("manifest.json"):
        image = _resolve_docker(src, ref, path)
    elif src.exists("index.json") and src.exists("oci-layout"):
        image = _resolve_oci(src, ref, want, path)
    else:
        raise ImageError("%s is neither an OCI image layout (oci-layout, index.json) nor a "
                         "docker save archive (manifest.json)" % path)
    version = "latest"
    img_name = name
    full = image.ref if image.ref and _is_full_reference(image.ref) else None
    if image.ref and not full:
        version = image.ref            # an index ref.name that is only a tag
    if full:
        ref_name, version = name_from_reference(full)
        img_name = img_name or ref_name
    if img_name is None:
        raise ImageError("%s: the image has no repository name (%s); give name"
                         % (path, image.ref or "untagged"))
    plan = _Plan()
    plan.src, plan.image, plan.name = src, image, img_name
    plan.labels, plan.dropped = image_labels(image.config, version, labels)
    plan.info = {"config": image.config_digest, "manifest": image.manifest_digest, "ref": image.ref,
                 "format": image.kind}
    plan.stat_key = hashlib.sha256(json.dumps([CONVERTER_VERSION, img_name, plan.labels, bool(allow_devices)],
                                              sort_keys=True).encode()).hexdigest()
    have_store = store is not None and store.dd.exists()
    known = store.index.source_image(_source_key(image), plan.stat_key) if have_store else None
    plan.known = store.index.get_image(known) if known else None
    return plan


def inspect_oci(store, path: str, *, name: Optional[str] = None, labels: Optional[Dict[str, str]] = None,
                ref: Optional[str] = None, platform: Optional[str] = None,
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
        kind = aci.sniff_compression(head)
        f.seek(0)
        limited = _Limited(f, kind)
        try:
            with tarfile.open(fileobj=limited, mode="r|") as tf:
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

    def __init__(self, f, kind: str) -> None:
        self.f = f
        self.inflater = aci._Inflater(kind) if kind != "tar" else None
        self.buf = b""
        self.total = 0

    def read(self, n: int = -1) -> bytes:
        while (n < 0 or len(self.buf) < n) and self.total < DETECT_LIMIT:
            chunk = self.f.read(_CHUNK)
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


def import_oci(store, path: str, *, name: Optional[str] = None, labels: Optional[Dict[str, str]] = None,
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
        src, image, img_name, final_labels = plan.src, plan.image, plan.name, plan.labels
        dropped, info, stat_key = plan.dropped, plan.info, plan.stat_key
        if plan.known is not None:
            dummy_manifest, more = image_manifest(image.config, img_name, final_labels, image.config_digest)
            return dict(plan.known, dropped=dropped + more, oci=info), False

        rootfs = os.path.join(work.path, "rootfs")
        os.mkdir(rootfs, 0o755)
        os.utime(rootfs, ns=(0, 0))
        skipped: List[Tuple[str, str]] = []
        for i, (lpath, digest, size, diff_id) in enumerate(image.layers):
            shown = "%s (layer %d of %d)" % (digest or lpath, i + 1, len(image.layers))
            with src.open(lpath) as f:
                stream = _VerifiedStream(f, shown, digest, size, diff_id, max_size)
                res = aci.extract_oci_layer(stream, rootfs, compression="tar", max_size=max_size,
                                            allow_devices=allow_devices)
                stream.drain()
            skipped += [(shown + ": " + n, k) for n, k in res.skipped]
        manifest, more = image_manifest(image.config, img_name, final_labels, image.config_digest,
                                        _passwd_lookup(rootfs))
        out = os.path.join(work.path, "image.aci")
        aci.build_aci(rootfs, manifest, out, mtime=None, owner=None)
        remove_tree(rootfs)       # the import renders its own tree: do not hold two
        source = "%s:%s" % ("docker-archive" if image.kind == "docker" else "oci", path)
        with open(out, "rb") as f:
            rec, changed = store.import_stream(f, source=source, allow_devices=allow_devices, max_size=max_size)
        with store.index.transaction():
            store.index.set_source(_source_key(image), stat_key, rec["id"])
        rec = dict(rec, dropped=dropped + more, oci=info)
        rec["skipped"] = [list(s) for s in skipped] + list(rec.get("skipped") or [])
        return rec, changed
    finally:
        work.cleanup()
