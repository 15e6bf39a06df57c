"""Reading OCI image layouts and ``docker save`` archives: find one image, check its blobs.

An OCI image layout (a directory, or a tar of one) or a ``docker save`` archive (the legacy
layout with ``<id>/layer.tar`` and the newer one whose layers are ``blobs/sha256/...``) is
opened in place, the image asked for is chosen (by reference and platform), and its config
and layers are handed to the converter (oci) as an ``Image``. Nothing here knows appc.

Every blob is checked while it is streamed, never loaded whole: its size and digest against
its descriptor (or, for the legacy docker layout, its file name), and each layer's
uncompressed stream against the config's ``rootfs.diff_ids``. Manifest JSON documents are
bounded and read whole. An archive is indexed with the ACI scanner's bounds on extended
headers (aci_scan). Standard library only; never imports ansible.
"""
import hashlib
import json
import os
import platform as _platform
import posixpath
import re
import stat
import tarfile
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple, Union

from . import aci_scan
from .aci_scan import CHUNK
from .errors import AmbiguousError, ImageError, NotFoundError

_MAX_JSON = 4 << 20           # index, manifest, config, manifest.json
_MAX_MEMBERS = 1 << 20        # members of an outer archive we index
_MAX_LINK_HOPS = 16
_DIGEST_RE = re.compile(r"\A(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")
_HEX_NAME_RE = re.compile(r"\A(?:blobs/(sha256|sha512)/)?([0-9a-f]{64}|[0-9a-f]{128})(?:\.json)?\Z")

INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"

# platform.machine() -> (OCI architecture, variant)
_HOST = {"x86_64": ("amd64", ""), "amd64": ("amd64", ""), "aarch64": ("arm64", ""),
         "arm64": ("arm64", ""), "armv7l": ("arm", "v7"), "armv6l": ("arm", "v6"),
         "i386": ("386", ""), "i686": ("386", ""), "ppc64le": ("ppc64le", ""),
         "s390x": ("s390x", "")}


# --------------------------------------------------------------------------- references

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


def is_full_reference(text: str) -> bool:
    """A ref.name may be a whole reference or only a tag ("latest", "3.19")."""
    return not _DIGEST_RE.match(text) and ("/" in text or ":" in text or "@" in text)


def _pick_ref(names: List[str], ref: Optional[str]) -> Optional[str]:
    """The reference to name the image after: the one asked for, else a full one, else a tag."""
    if ref is not None and is_full_reference(ref):
        return ref
    full = [n for n in names if is_full_reference(n)]
    if full:
        return full[0]
    if ref is not None and ref in names:
        return ref
    return names[0] if names else None


def host_platform() -> Tuple[str, str, str]:
    """(os, OCI architecture, variant) of this machine."""
    arch, variant = _HOST.get(_platform.machine(), (_platform.machine(), ""))
    return "linux", arch, variant


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

    def __exit__(self, *exc: Any) -> None:
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

    def _index(self, f: BinaryIO) -> None:
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
                if not 0 <= ti.size <= aci_scan.MAX_EXT:
                    raise ImageError("%s: extended header at byte %d is too big" % (self.what, pos - 512))
                data = f.read(ti.size)
                pos += aci_scan.padded_size(ti.size)
                if t in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                    value = aci_scan.tar_text(data.split(b"\0", 1)[0])
                    if t == tarfile.GNUTYPE_LONGNAME:
                        long_name = value
                    else:
                        long_link = value
                else:
                    recs = aci_scan.parse_pax(data, "%s: pax header" % self.what)
                    (glob if t == tarfile.XGLTYPE else pax).update(recs)
                continue
            eff = dict(glob)
            eff.update(pax)
            name = long_name if long_name is not None else (
                aci_scan.tar_text(eff[b"path"]) if b"path" in eff else ti.name)
            link = long_link if long_link is not None else (
                aci_scan.tar_text(eff[b"linkpath"]) if b"linkpath" in eff else ti.linkname)
            size = ti.size
            if b"size" in eff:
                if not eff[b"size"].isdigit():
                    raise ImageError("%s: bad pax size for %s" % (self.what, name))
                size = int(eff[b"size"])
            pax, long_name, long_link = {}, None, None
            data_size = size if t in aci_scan.REGULAR else 0
            n = _norm(name)
            if n and n not in self.members:
                self.members[n] = (t, pos, data_size, link)
                if len(self.members) > _MAX_MEMBERS:
                    raise ImageError("%s: more than %d members" % (self.what, _MAX_MEMBERS))
            pos += aci_scan.padded_size(data_size)

    def _resolve(self, name: str) -> Tuple[int, int]:
        n = _norm(name)
        for dummy in range(_MAX_LINK_HOPS):
            if not n or n not in self.members:
                raise ImageError("%s: %s is missing" % (self.what, name))
            t, offset, size, link = self.members[n]
            if t in aci_scan.REGULAR:
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


Source = Union[_DirSource, _TarSource]


# --------------------------------------------------------------------------- verified reads

def _check_digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise ImageError("%s: %r is not a sha256/sha512 digest" % (what, value))
    return value


class VerifiedStream:
    """The uncompressed stream of a blob, checked as it is read.

    Hashes the stored bytes (``digest``, ``size``) and the decompressed ones (``diff_id``);
    a mismatch, a blob longer than announced or a truncated compressed stream raises
    ImageError naming the blob, at the latest when its end is read.
    """

    def __init__(self, f: aci_scan.Readable, what: str, digest: Optional[str], size: Optional[int],
                 diff_id: Optional[str], max_size: int) -> None:
        self.f, self.what, self.digest, self.size, self.diff_id = f, what, digest, size, diff_id
        self.max_size = max_size
        self.raw_h = hashlib.new(digest.split(":")[0]) if digest else None
        self.diff_h = hashlib.new(diff_id.split(":")[0]) if diff_id else None
        self.raw_size = self.out_size = 0
        self.inflater: Optional[aci_scan.Inflater] = None
        self.gen: Optional[Iterator[bytes]] = None
        self.buf = memoryview(b"")
        self.eof = False
        self.done = False

    def _raw(self) -> bytes:
        data = self.f.read(CHUNK)
        if data:
            self.raw_size += len(data)
            if self.size is not None and self.raw_size > self.size:
                raise ImageError("blob %s: longer than the %d bytes its descriptor says"
                                 % (self.what, self.size))
            if self.raw_h is not None:
                self.raw_h.update(data)
        return data

    def _start(self) -> Tuple[bytes, aci_scan.Inflater]:
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
            kind = aci_scan.sniff_compression(head)
        except ImageError:
            raise ImageError("blob %s: not a tar archive, nor gzip/bzip2/xz data" % self.what) from None
        return head, aci_scan.Inflater(kind)

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
        if self.raw_h is not None and self.digest:     # raw_h is made when there is a digest
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
            if self.inflater is None:
                raw, self.inflater = self._start()
            else:
                raw = self._raw()
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
        if self.diff_h is not None and self.diff_id:   # diff_h is made when there is a diff_id
            got = self.diff_id.split(":")[0] + ":" + self.diff_h.hexdigest()
            if got != self.diff_id:
                raise ImageError("blob %s: uncompressed content does not match the config's "
                                 "diff_id %s (it is %s)" % (self.what, self.diff_id, got))

    def drain(self) -> None:
        """Read to the end (checking everything) whatever the consumer left unread."""
        while self.read(CHUNK):
            pass
        self._finish()


def _read_json(src: Source, name: str, what: str, digest: Optional[str] = None,
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
        if not is_full_reference(ref):
            return False
        want = parse_reference(ref)
        want = (want[0], want[1] or "latest", want[2])
        for n in self.names:
            if is_full_reference(n):
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


# A layer to stream: (path in the source, digest, size, diff_id); docker's legacy layout
# gives no size, and a digest only when the file is named by one.
Layer = Tuple[str, Optional[str], Optional[int], str]


class Image:
    """What conversion needs: the config (verified) and the layers to stream, in order."""

    def __init__(self, config: Dict[str, Any], config_digest: str, layers: List[Layer], ref: Optional[str],
                 manifest_digest: Optional[str], kind: str) -> None:
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


def _resolve_oci(src: Source, ref: Optional[str], want: Tuple[str, str, str], what: str) -> Image:
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
        out: List[Layer] = []
        for ld, diff in zip(layers, diffs):
            ldigest = _check_digest(ld.get("digest") if isinstance(ld, dict) else None, "%s: layer" % what)
            size = ld.get("size")
            if not isinstance(size, int) or size < 0:
                raise ImageError("%s: layer %s has no size" % (what, ldigest))
            out.append((_blob_path(ldigest), ldigest, size, diff))
        return Image(config, cdigest, out, _pick_ref(chosen.names, ref), digest, "oci")
    raise ImageError("%s: image indexes nested too deeply" % what)


def _resolve_docker(src: Source, ref: Optional[str], what: str) -> Image:
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
    out: List[Layer] = []
    for path, diff in zip(layers, diffs):
        m = _HEX_NAME_RE.match(path)
        digest = "%s:%s" % (m.group(1), m.group(2)) if m and m.group(1) else None
        out.append((path, digest, None, diff))
    if ref is not None and not is_full_reference(ref):
        ref = None        # a digest: name the image after its tags
    names = [n for n in chosen.names if ref is None or _Candidate([n], None).matches(ref)]
    return Image(config, chosen.digest, out, _pick_ref(names or chosen.names, ref), None, "docker")


def directory_source(root: str, what: str) -> Source:
    """Files below ``root`` (``blobs/<alg>/<hex>``) as a Source: registry_pull's blobs."""
    src = _DirSource(root)
    src.what = what
    return src


def open_source(path: str, work: str, max_size: int) -> Source:
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
            kind = aci_scan.sniff_compression(head)
        except ImageError:
            raise ImageError("%s: neither a directory nor a tar archive (or gzip/bzip2/xz of one)" % path) from None
        if kind == "tar":
            return _TarSource(path, path)
        plain = os.path.join(work, "archive.tar")
        inflater = aci_scan.Inflater(kind)
        size = 0
        with open(plain, "wb") as out:
            chunk = head
            while chunk:
                for piece in inflater.feed(chunk):
                    size += len(piece)
                    if size > max_size:
                        raise ImageError("%s: uncompressed size exceeds %d bytes (max_size)" % (path, max_size))
                    out.write(piece)
                chunk = f.read(CHUNK)
            inflater.finish()
    return _TarSource(plain, path)


def resolve(src: Source, ref: Optional[str], want: Tuple[str, str, str], what: str) -> Image:
    """The image ``ref`` names (or the only one) in a layout or a docker archive.

    ``want`` (os, architecture, variant) picks from a multi-platform index.
    """
    if src.exists("manifest.json"):
        return _resolve_docker(src, ref, what)
    if src.exists("index.json") and src.exists("oci-layout"):
        return _resolve_oci(src, ref, want, what)
    raise ImageError("%s is neither an OCI image layout (oci-layout, index.json) nor a "
                     "docker save archive (manifest.json)" % what)
