"""ACI archives: sniff, hash, extract safely, build deterministically.

An image is untrusted input. Importing it is one streaming pass over the archive, split in two
processes so decompression+hashing and extraction use both cores:

- the parent reads the raw bytes (copying them to the blob if asked), decompresses them
  incrementally with a bounded output size, hashes the uncompressed tar stream (the image ID),
  and runs a small tar-header state machine over it. That scanner refuses what could make the
  extractor buffer a lot (pax / GNU long-name headers over 1 MiB, absurd sizes) or make it
  disagree with us about member boundaries (bad checksums, malformed pax records, sparse
  members, unknown types) *before* the bytes reach the child;
- a forked child chroots into the destination and extracts the stream it reads from a pipe
  with its own member-writing code (numeric owners only, no name lookups, never following a
  symlink, directories opened component by component with O_NOFOLLOW). It reports through a
  second pipe as one JSON line and leaves only through ``os._exit`` (a SystemExit in a child
  of an Ansible module would run the module's clean-up and delete its payload).

The chroot is the kernel's safety net; every rule is also checked explicitly so the error
names the member and the cause. Standard library only; never imports ansible.
"""
import errno
import fcntl
import hashlib
import io
import json
import os
import queue
import stat
import struct
import tarfile
import threading
from typing import BinaryIO, Dict, List, Optional, Tuple

from . import errors, schema
from .errors import ImageError
from .tree import tree_digest

# 8 GiB: larger than any real image we know of (base OS images are a few hundred MiB, fat
# ML images a few GiB), small enough that a decompression bomb or a runaway stream stops
# long before it fills a data disk. Callers can raise it per import.
DEFAULT_MAX_SIZE = 8 << 30

_CHUNK = 1 << 20          # read / decompress-output / write granularity
_MAX_EXT = 1 << 20        # largest pax or GNU long-name header we accept
_MAX_MANIFEST = 1 << 20   # largest manifest we accept
_MAX_EXT_CHAIN = 4        # extended headers allowed in front of one member
_PIPE_SIZE = 1 << 20      # ask the kernel for a big pipe: fewer context switches
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)   # Python < 3.10 lacks the name

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_COMPRESSIONS = ("gzip", "bzip2", "xz", "tar")

# xattrs an image may carry. security.capability is how images ship file capabilities
# (ping, ...). trusted.* is refused: trusted.overlay.* changes how overlayfs reads our trees
# (opaque dirs, redirects, metacopy); other security.* (selinux, ima, evm) are host policy.
_XATTR_KEEP_EXACT = ("security.capability", "system.posix_acl_access", "system.posix_acl_default")


def _xattr_allowed(name: str) -> bool:
    return name.startswith("user.") or name in _XATTR_KEEP_EXACT


def sniff_compression(head: bytes) -> str:
    """'gzip' | 'bzip2' | 'xz' | 'tar' from the first bytes (>= 262 for a plain tar)."""
    for magic, kind in _MAGIC:
        if head[:len(magic)] == magic:
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    raise ImageError("not an ACI: neither a tar archive nor gzip/bzip2/xz data")


class ImportResult:
    """What an import produced; ``id`` names the uncompressed tar stream."""

    __slots__ = ("id", "size", "compressed_size", "compression", "manifest", "manifest_bytes",
                 "skipped", "tree_digest")

    def __init__(self, id: str, size: int, compressed_size: int, compression: str,
                 manifest: Optional[dict], manifest_bytes: bytes,
                 skipped: List[Tuple[str, str]]) -> None:
        self.id = id
        self.size = size
        self.compressed_size = compressed_size
        self.compression = compression
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.skipped = skipped
        # tree.tree_digest of dest/rootfs as the extractor computed it (import only), or None
        self.tree_digest: Optional[str] = None

    def __repr__(self) -> str:
        return "ImportResult(id=%r, size=%d, compression=%r, skipped=%d)" % (
            self.id, self.size, self.compression, len(self.skipped))


# --------------------------------------------------------------------------- decompression

class _Inflater:
    """Incremental, output-bounded decompression of concatenated streams (pigz, pbzip2, pixz).

    Output comes in chunks of at most _CHUNK bytes however small the input, so a bomb never
    lands in memory at once. Zero padding between/after members is tolerated (tape-style
    padding), anything else after a member must be another member of the same format.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.members = 0
        self.d = None
        self.done = kind != "tar"   # "between members": waiting for the first one

    def _new(self):
        if self.kind == "gzip":
            import zlib
            # 31 = gzip wrapper only: a zlib-wrapped "member" after a gzip one is garbage.
            return zlib.decompressobj(31)
        if self.kind == "bzip2":
            import bz2
            return bz2.BZ2Decompressor()
        import lzma
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def feed(self, data: bytes):
        if self.kind == "tar":
            if data:
                yield data
            return
        try:
            while data:
                if self.done:
                    data = data.lstrip(b"\0")
                    if not data:
                        return
                    self.d = self._new()
                    self.done = False
                d = self.d
                if self.kind == "gzip":
                    out = d.decompress(data, _CHUNK)
                    if out:
                        yield out
                    data = d.unconsumed_tail
                    while not d.eof and not data and len(out) == _CHUNK:
                        out = d.decompress(b"", _CHUNK)
                        if out:
                            yield out
                    if d.eof:
                        data = d.unused_data
                        self.done = True
                        self.members += 1
                else:
                    out = d.decompress(data, _CHUNK)
                    if out:
                        yield out
                    while not d.eof and not d.needs_input:
                        out = d.decompress(b"", _CHUNK)
                        if out:
                            yield out
                    data = b""
                    if d.eof:
                        data = d.unused_data
                        self.done = True
                        self.members += 1
        except ImageError:
            raise
        except Exception as e:  # zlib.error, OSError (bz2), LZMAError
            raise ImageError("corrupt %s data (stream %d): %s" % (self.kind, self.members + 1, e)) from None

    def finish(self) -> None:
        if self.kind != "tar" and (not self.done or self.members == 0):
            raise ImageError("truncated %s data: the compressed stream ends early" % self.kind)


# --------------------------------------------------------------------------- tar scanner

def _parse_pax(data: bytes, where: str) -> Dict[bytes, bytes]:
    """Strict pax records ("LEN KEY=VALUE\\n"), so tarfile's looser parser sees the same."""
    out: Dict[bytes, bytes] = {}
    pos, n = 0, len(data)
    while pos < n:
        if data[pos] == 0:
            if data[pos:].count(0) != n - pos:
                break
            return out
        sp = data.find(b" ", pos, pos + 21)
        digits = data[pos:sp] if sp > pos else b""
        if not digits.isdigit():
            break
        length = int(digits)
        end = pos + length
        if length < 5 or end > n or data[end - 1] != 0x0A:
            break
        rec = data[sp + 1:end - 1]
        eq = rec.find(b"=")
        if eq <= 0:
            break
        out[rec[:eq]] = rec[eq + 1:]
        pos = end
    else:
        return out
    raise ImageError("%s: malformed pax record at byte %d" % (where, pos))


def _blocks(n: int) -> int:
    return (n + 511) & ~511


# Frames the parent sends the child instead of the raw tar stream: the archive is parsed
# once, here, and the sandboxed child only makes syscalls. A member frame is _FRAME, then
# name, link name and xattrs (_XATTR + key + value, repeated), then ``size`` data bytes.
_FRAME = struct.Struct("<BcxxIIIqQIIIII")
_XATTR = struct.Struct("<II")
_F_MEMBER = 1
_F_END = 2
_DIRECT = 1 << 16         # data pieces at least this big are written without a copy
_MAX_GLOBAL = 1 << 20     # total size of the pax global records we keep
_REGULAR = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE))
_EXT_TYPES = frozenset((tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                        tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK))
_XATTR_KEY = b"SCHILY.xattr."


def _text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _pax_int(v: bytes) -> int:
    try:
        return int(_text(v))
    except ValueError:       # tarfile's rule: an unparsable number is 0
        return 0


class _TarScanner:
    """Tar reader over the uncompressed stream (runs in the parent).

    It follows tarfile's reading rules (same header parser, same "which types carry data"
    rule; pax, GNU long names and pax global records applied with the same precedence) and
    refuses what could make a reader buffer a lot or disagree about member boundaries. With
    ``frames`` it turns each member into a frame for the child (``out``: buffers to send, in
    order); it can also capture the manifest's bytes.
    """

    def __init__(self, max_size: int, capture_manifest: bool = False, frames: bool = False) -> None:
        self.max_size = max_size
        self.capture_manifest = capture_manifest
        self.frames = frames
        self.out: list = []       # frames and data to send (frames mode)
        self.obuf = bytearray()
        self.offset = 0           # stream offset of the start of the current feed()
        self.data = 0             # member data bytes still to pass
        self.skip = 0             # padding bytes still to pass
        self.hdr = bytearray()
        self.ext: Optional[bytearray] = None
        self.ext_need = 0
        self.ext_kind = b""
        self.ext_name = ""
        self.chain = 0
        self.pax_seen = False
        self.glob: Dict[bytes, bytes] = {}     # pax global records: apply to every later member
        self.pax: Optional[Dict[bytes, bytes]] = None   # this member's pax records
        self.pending_size: Optional[int] = None
        self.pending_name: Optional[str] = None  # from the outermost L / pax path (tarfile's rule)
        self.pending_link: Optional[str] = None
        self.members = 0
        self.ended = False
        self.manifest: Optional[bytearray] = None   # being captured
        self.manifest_bytes: Optional[bytes] = None
        self.manifest_need = 0
        self.manifest_error: Optional[str] = None

    def feed(self, data) -> None:
        mv = memoryview(data)
        n = len(mv)
        pos = 0
        while pos < n and not self.ended:
            if self.data:
                k = min(self.data, n - pos)
                piece = mv[pos:pos + k]
                if self.manifest is not None:
                    self.manifest += piece
                    if len(self.manifest) == self.manifest_need:
                        self.manifest_bytes = bytes(self.manifest)
                        self.manifest = None
                if self.frames:
                    if k >= _DIRECT:
                        if self.obuf:
                            self.out.append(self.obuf)
                            self.obuf = bytearray()
                        self.out.append(piece)
                    else:
                        self.obuf += piece
                self.data -= k
                pos += k
                continue
            if self.skip:
                k = min(self.skip, n - pos)
                self.skip -= k
                pos += k
                continue
            if self.ext is not None:
                k = min(self.ext_need - len(self.ext), n - pos)
                self.ext += mv[pos:pos + k]
                pos += k
                if len(self.ext) == self.ext_need:
                    self._ext_done()
                continue
            if not self.hdr and n - pos >= 512:
                block = mv[pos:pos + 512].tobytes()
                pos += 512
            else:
                k = min(512 - len(self.hdr), n - pos)
                self.hdr += mv[pos:pos + k]
                pos += k
                if len(self.hdr) < 512:
                    continue
                block = bytes(self.hdr)
                self.hdr.clear()
            self._header(block, self.offset + pos - 512)
        self.offset += n
        if self.obuf:
            self.out.append(self.obuf)
            self.obuf = bytearray()

    def take(self) -> list:
        """The buffers to send for what was fed so far (frames mode)."""
        out, self.out = self.out, []
        return out

    def finish(self) -> None:
        if not self.ended:
            raise ImageError("truncated tar archive: no end-of-archive marker at byte %d" % self.offset)

    def _header(self, block: bytes, at: int) -> None:
        if block.count(0) == 512:
            if self.chain:
                raise ImageError("tar: extended header at the end of the archive describes no member")
            self.ended = True
            if self.frames:
                self.obuf += _FRAME.pack(_F_END, b"\0", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            return
        try:
            ti = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise ImageError("bad tar header at byte %d: %s" % (at, e)) from None
        t = ti.type
        if ti.size < 0:
            raise ImageError("tar header at byte %d: negative size" % at)
        if t in _EXT_TYPES:
            what = {b"L": "GNU long name", b"K": "GNU long link name", b"g": "pax global"}.get(t, "pax")
            if ti.size > _MAX_EXT:
                raise ImageError("%s header at byte %d is %d bytes (more than %d): refused"
                                 % (what, at, ti.size, _MAX_EXT))
            self.chain += 1
            if self.chain > _MAX_EXT_CHAIN:
                raise ImageError("tar: more than %d extended headers in a row at byte %d"
                                 % (_MAX_EXT_CHAIN, at))
            if t in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE):
                if self.pax_seen:
                    raise ImageError("tar: two pax headers for one member at byte %d" % at)
                self.pax_seen = True
            self.ext = bytearray()
            self.ext_need = ti.size
            self.ext_kind = t
            self.ext_name = "%s header at byte %d" % (what, at)
            self.skip = 0
            if ti.size == 0:
                self._ext_done()
            return
        glob, pax = self.glob, self.pax
        # tarfile applies the global records first, then the member's own extended headers
        # (the outermost one last, so it wins): mirror that precedence.
        name = self.pending_name
        if name is None:
            if pax is not None and b"path" in pax:   # only when no L header came first
                name = _text(pax[b"path"]).rstrip("/")
            elif b"path" in glob:
                name = _text(glob[b"path"]).rstrip("/")
            else:
                name = ti.name
        if t == tarfile.GNUTYPE_SPARSE or t not in tarfile.SUPPORTED_TYPES:
            raise ImageError("%s: unsupported tar member type %r" % (name, t.decode("latin-1")))
        size = self.pending_size if self.pending_size is not None else ti.size
        if size > self.max_size:
            raise ImageError("%s: member size %d exceeds %d bytes (max_size)" % (name, size, self.max_size))
        isreg = t in _REGULAR
        data = size if isreg else 0
        self.data = data
        self.skip = _blocks(data) - data
        self.members += 1
        if (self.capture_manifest and isreg and
                [p for p in name.split("/") if p not in ("", ".")] == ["manifest"]):
            if size > _MAX_MANIFEST:
                self.manifest_error = "manifest: %d bytes is more than %d" % (size, _MAX_MANIFEST)
            elif self.manifest_bytes is not None or self.manifest_error:
                self.manifest_error = "manifest: duplicate member"
            elif size == 0:
                self.manifest_bytes = b""
            else:
                self.manifest = bytearray()
                self.manifest_need = size
        if self.frames:
            self._frame(ti, t, name, data, glob, pax)
        self.chain = 0
        self.pax_seen = False
        self.pax = None
        self.pending_size = None
        self.pending_name = None
        self.pending_link = None

    def _frame(self, ti, t: bytes, name: str, data: int, glob, pax) -> None:
        uid, gid, mtime, link = ti.uid, ti.gid, ti.mtime, ti.linkname
        xattrs = b""
        if glob or pax:
            eff = dict(glob)
            if pax:
                eff.update(pax)
            if b"uid" in eff:
                uid = _pax_int(eff[b"uid"])
            if b"gid" in eff:
                gid = _pax_int(eff[b"gid"])
            if b"mtime" in eff:
                try:
                    mtime = float(_text(eff[b"mtime"]))
                except ValueError:
                    mtime = 0
            if self.pending_link is None and b"linkpath" in eff:
                link = _text(eff[b"linkpath"])
            xattrs = b"".join(_XATTR.pack(len(k) - 13, len(v)) + k[13:] + v
                              for k, v in eff.items() if k.startswith(_XATTR_KEY))
        if self.pending_link is not None:
            link = self.pending_link
        if not (0 <= uid < 1 << 32 and 0 <= gid < 1 << 32):
            raise ImageError("%s: owner %d:%d out of range" % (name, uid, gid))
        try:
            mtime_ns = _ns(mtime)
            if not -(1 << 63) <= mtime_ns < 1 << 63:
                raise OverflowError
        except (ValueError, OverflowError):
            raise ImageError("%s: modification time %r out of range" % (name, mtime)) from None
        dmaj = dmin = 0
        if t in (tarfile.CHRTYPE, tarfile.BLKTYPE):
            dmaj, dmin = ti.devmajor, ti.devminor
            if not (0 <= dmaj < 1 << 32 and 0 <= dmin < 1 << 32):
                raise ImageError("%s: device number %d,%d out of range" % (name, dmaj, dmin))
        nb = name.encode("utf-8", "surrogateescape")
        lb = link.encode("utf-8", "surrogateescape")
        self.obuf += _FRAME.pack(_F_MEMBER, t, ti.mode & 0o7777, uid, gid, mtime_ns, data, dmaj, dmin,
                                 len(nb), len(lb), len(xattrs))
        self.obuf += nb
        self.obuf += lb
        self.obuf += xattrs

    def _ext_done(self) -> None:
        data = bytes(self.ext or b"")
        self.ext = None
        self.skip = _blocks(self.ext_need) - self.ext_need
        kind = self.ext_kind
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            value = _text(data.split(b"\0", 1)[0])
            if kind == tarfile.GNUTYPE_LONGNAME:
                if self.pending_name is None:
                    self.pending_name = value
            elif self.pending_link is None:
                self.pending_link = value
            return
        recs = _parse_pax(data, self.ext_name)
        for key, value in recs.items():
            if key.startswith(b"GNU.sparse."):
                raise ImageError("%s: sparse members are not supported" % self.ext_name)
            if key == b"size":
                if kind == tarfile.XGLTYPE:
                    raise ImageError("%s: a global size record is refused" % self.ext_name)
                if not value.isdigit():
                    raise ImageError("%s: bad size record %r" % (self.ext_name, value[:40]))
                self.pending_size = int(value)
                if self.pending_size > self.max_size:
                    shown = self.pending_name or (_text(recs[b"path"]) if b"path" in recs else self.ext_name)
                    raise ImageError("%s: member size %d exceeds %d bytes (max_size)"
                                     % (shown, self.pending_size, self.max_size))
        if kind == tarfile.XGLTYPE:
            self.glob.update(recs)
            if sum(len(k) + len(v) for k, v in self.glob.items()) > _MAX_GLOBAL:
                raise ImageError("%s: pax global records exceed %d bytes" % (self.ext_name, _MAX_GLOBAL))
            return
        self.pax = recs
        if self.pending_name is None and b"path" in recs:
            self.pending_name = _text(recs[b"path"]).rstrip("/")
        if self.pending_link is None and b"linkpath" in recs:
            self.pending_link = _text(recs[b"linkpath"])


# --------------------------------------------------------------------------- child: extraction

class _Refuse(Exception):
    """An image problem found in the child; becomes an ImageError in the parent."""


_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_O_NEWFILE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_STORE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO, errno.ENOMEM, errno.EMFILE,
                 errno.ENFILE)


def _norm(name: str, what: str = "member") -> Tuple[str, ...]:
    """Archive name -> path components; refuses absolute names and '..'."""
    if "\0" in name:
        raise _Refuse("%r: NUL byte in %s name" % (name, what))
    if name.startswith("/"):
        raise _Refuse("%s: absolute %s name" % (name, what))
    parts = tuple(p for p in name.split("/") if p not in ("", "."))
    if ".." in parts:
        raise _Refuse("%s: '..' in %s name" % (name, what))
    return parts


def _ns(mtime) -> int:
    return int(round(mtime * 1_000_000_000)) if isinstance(mtime, float) else int(mtime) * 1_000_000_000


class _Member:
    """One archive member as the parent framed it."""

    __slots__ = ("name", "type", "mode", "uid", "gid", "mtime_ns", "size", "linkname", "devmajor",
                 "devminor", "xattrs")

    def isdir(self) -> bool:
        return self.type == tarfile.DIRTYPE

    def isreg(self) -> bool:
        return self.type in _REGULAR


def _read_frame(rd) -> Optional[_Member]:
    """The next member from the parent's frame stream; None at the end of the archive."""
    hdr = rd.read(_FRAME.size)
    if len(hdr) != _FRAME.size:
        raise _Refuse("tar: unexpected end of data")
    kind, t, mode, uid, gid, mtime_ns, size, dmaj, dmin, nlen, llen, xlen = _FRAME.unpack(hdr)
    if kind == _F_END:
        return None
    var = rd.read(nlen + llen + xlen)
    if len(var) != nlen + llen + xlen or kind != _F_MEMBER:
        raise _Refuse("tar: unexpected end of data")
    m = _Member()
    m.name = var[:nlen].decode("utf-8", "surrogateescape")
    m.linkname = var[nlen:nlen + llen].decode("utf-8", "surrogateescape")
    m.type, m.mode, m.uid, m.gid, m.mtime_ns, m.size, m.devmajor, m.devminor = \
        t, mode, uid, gid, mtime_ns, size, dmaj, dmin
    xattrs = []
    pos = nlen + llen
    end = len(var)
    while pos < end:
        kl, vl = _XATTR.unpack_from(var, pos)
        pos += 8
        xattrs.append((var[pos:pos + kl].decode("utf-8", "surrogateescape"), var[pos + kl:pos + kl + vl]))
        pos += kl + vl
    m.xattrs = xattrs
    return m


class _Extractor:
    """Writes members into the current root (we are chrooted), never following a symlink."""

    def __init__(self, layer: bool, allow_devices: bool, oci: bool = False) -> None:
        self.layer = layer or oci
        self.oci = oci
        self.allow_devices = allow_devices
        self.root_fd = os.open("/", _O_DIR)
        self.cache: Tuple[Tuple[str, ...], int] = ((), self.root_fd)
        self.seen = set()                 # archive paths (tuples)
        self.files = set()                # archive paths of regular files we created
        self.dirs: List[tuple] = []       # deferred directory metadata
        self.skipped: List[Tuple[str, str]] = []
        self.members = 0
        self.manifest: Optional[bytes] = None
        self.has_rootfs = False
        # Content hashes of the regular files written (import only), by rootfs-relative
        # path: the tree digest then needs no second read of the data.
        self.hashes: Optional[Dict[str, Tuple[int, str]]] = None if layer else {}
        # Fresh-node shortcuts (import only): every node is ours and new, created with a
        # known owner (ours: no setgid directory above it) and, umask being 0 and no
        # default ACL above it, exactly the mode we ask for. Then chown is skipped when the
        # owner is already right and chmod when the mode is.
        self.fresh = not self.layer and self._plain_root()
        self.me = (os.geteuid(), os.getegid())
        # OCI layer mode: paths this layer wrote or implied (whiteouts hide only lower
        # layers' nodes), and directory mtimes to put back once the layer is applied, so a
        # flattened tree (and the ACI built from it) does not depend on when it was built.
        self.implied: set = set()
        self.mtimes: Dict[Tuple[str, ...], int] = {}

    @staticmethod
    def _plain_root() -> bool:
        if os.stat("/").st_mode & stat.S_ISGID:
            return False
        try:
            os.getxattr("/", "system.posix_acl_default")
            return False
        except OSError as e:
            return e.errno in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)

    # -- paths
    def _fs(self, parts: Tuple[str, ...]) -> Tuple[str, ...]:
        return parts[1:] if self.layer and not self.oci else parts

    def _parent(self, parts: Tuple[str, ...], member: str, create: bool = True) -> Optional[int]:
        """fd of directory ``parts`` (fs path), creating missing ones, refusing symlinks.

        With ``create`` false a missing directory gives None (nothing there to remove).
        """
        cpath, cfd = self.cache
        if parts == cpath:
            return cfd
        if cpath and parts[:len(cpath)] == cpath:
            start, fd = len(cpath), cfd
        else:
            start, fd = 0, self.root_fd
        opened: List[int] = []
        try:
            for i in range(start, len(parts)):
                comp = parts[i]
                try:
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                except FileNotFoundError:
                    if not create:
                        for f in opened:
                            os.close(f)
                        return None
                    if self.oci:
                        self._touch(parts[:i], fd)
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                    if self.oci:
                        self.mtimes[parts[:i + 1]] = 0   # implied directory: a fixed time
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                    shown = "/".join(("rootfs",) + parts[:i + 1] if self.layer and not self.oci
                                     else parts[:i + 1])
                    if stat.S_ISLNK(st.st_mode):
                        raise _Refuse("%s: refusing to write through symlink %s" % (member, shown)) from None
                    raise _Refuse("%s: parent %s is not a directory" % (member, shown)) from None
                opened.append(nfd)
                fd = nfd
        except BaseException:
            for f in opened:
                os.close(f)
            raise
        for f in opened[:-1]:
            os.close(f)
        new = opened[-1] if opened else fd
        if cfd != self.root_fd and cfd != new:
            os.close(cfd)
        self.cache = (parts, new)
        return new

    def _clear(self, pfd: int, name: str, member: str, new_is_dir: bool) -> bool:
        """Make room for a new node; True if an existing directory is kept (merge).

        On import into an empty directory this is only called after EEXIST (see _create).
        """
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if new_is_dir:
                return True
            if not self.layer:
                raise _Refuse("%s: conflicts with the directory created for earlier members" % member)
            _rmtree_at(pfd, name)
            return False
        if not self.layer:
            raise _Refuse("%s: conflicts with an earlier member" % member)
        os.unlink(name, dir_fd=pfd)   # a symlink (even to a directory) is replaced, not followed
        return False

    # -- members
    def run(self, rd) -> None:
        while True:
            m = _read_frame(rd)
            if m is None:
                break
            self.members += 1
            try:
                self.member(rd, m)
            except OSError as e:
                e.member = m.name
                raise
            except ValueError as e:   # e.g. a NUL byte in a link name
                raise _Refuse("%s: %s" % (m.name, e)) from None
        if self.oci:
            self.manifest = b""
            self.restore_mtimes()
        if self.manifest is None:
            raise _Refuse("manifest: missing (an ACI holds exactly manifest and rootfs/)")
        if not self.has_rootfs and not self.oci:
            raise _Refuse("rootfs: missing (an ACI holds exactly manifest and rootfs/)")
        self.finish_dirs()

    def member(self, rd, m: _Member) -> None:
        name = m.name
        parts = _norm(name)
        t = m.type
        if not parts:
            if t == tarfile.DIRTYPE:
                if self.oci:    # an OCI layer's "./" describes the root itself
                    self._check_xattrs(m)
                    self.dirs.append(((), m))
                return        # "./": the archive's own root
            raise _Refuse("%r: a member with an empty name" % name)
        if parts in self.seen:
            raise _Refuse("%s: duplicate member" % name)
        self.seen.add(parts)
        if self.oci:
            self.oci_member(rd, m, parts)
            return
        top = parts[0]
        if top == "manifest":
            if len(parts) > 1:
                raise _Refuse("%s: manifest must be a regular file" % name)
            self.read_manifest(rd, m)
            return
        if top != "rootfs":
            raise _Refuse("%s: unexpected top-level entry (an ACI holds exactly manifest and rootfs/)" % name)
        self.has_rootfs = True
        if len(parts) == 1 and t != tarfile.DIRTYPE:
            raise _Refuse("%s: rootfs must be a directory" % name)
        self._check_xattrs(m)
        fs = self._fs(parts)
        if not fs:            # layer mode: rootfs/ itself is our root
            self.dirs.append(((), m))
            return
        self.node(rd, m, parts, fs)

    def _check_xattrs(self, m: _Member) -> None:
        for xname, dummy_value in m.xattrs:
            if not _xattr_allowed(xname):
                raise _Refuse("%s: extended attribute %s is not allowed" % (m.name, xname))

    def node(self, rd, m: _Member, parts: Tuple[str, ...], fs: Tuple[str, ...]) -> None:
        """Create the node of member ``m`` at ``fs`` (its parents made as needed)."""
        name, t = m.name, m.type
        pfd = self._parent(fs[:-1], name)
        if self.oci:
            self._touch(fs[:-1], pfd)
        leaf = fs[-1]
        if t in _REGULAR:
            self.write_file(rd, m, pfd, leaf, parts)
            self.files.add(parts)
        elif t == tarfile.DIRTYPE:
            try:
                os.mkdir(leaf, 0o700, dir_fd=pfd)
            except FileExistsError:
                if not self._clear(pfd, leaf, name, True):
                    os.mkdir(leaf, 0o700, dir_fd=pfd)
            self.dirs.append((fs, m))
        elif t == tarfile.SYMTYPE:
            self._create(os.symlink, (m.linkname, leaf), pfd, leaf, name)
            if not (self.fresh and (m.uid, m.gid) == self.me):
                os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(leaf, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        elif t == tarfile.LNKTYPE:
            self.hardlink(m, pfd, leaf, parts)
        elif t in (tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE):
            kind = "char" if t == tarfile.CHRTYPE else "block" if t == tarfile.BLKTYPE else "fifo"
            if not self.allow_devices:
                self.skipped.append((name, kind))
                return
            fmt = stat.S_IFCHR if kind == "char" else stat.S_IFBLK if kind == "block" else stat.S_IFIFO
            dev = os.makedev(m.devmajor, m.devminor) if kind != "fifo" else 0
            self._create(os.mknod, (leaf, fmt | 0o600, dev), pfd, leaf, name)
            os.chown(leaf, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
            # chmod follows symlinks, but this is the node we just made in a directory we hold
            os.chmod(leaf, m.mode, dir_fd=pfd)
            os.utime(leaf, ns=(m.mtime_ns, m.mtime_ns), dir_fd=pfd, follow_symlinks=False)
        else:
            raise _Refuse("%s: unsupported member type %r" % (name, t))

    def read_manifest(self, rd, m: _Member) -> None:
        if not m.isreg():
            t = m.type
            kind = "a symlink" if t == tarfile.SYMTYPE else "a hard link" if t == tarfile.LNKTYPE else \
                "a directory" if t == tarfile.DIRTYPE else "not a regular file"
            raise _Refuse("manifest: must be a regular file, not %s" % kind)
        if m.size > _MAX_MANIFEST:
            raise _Refuse("manifest: %d bytes is more than %d" % (m.size, _MAX_MANIFEST))
        data = rd.read(m.size)
        if len(data) != m.size:
            raise _Refuse("manifest: unexpected end of data")
        self.manifest = data
        if not self.layer:
            fd = os.open("manifest", _O_NEWFILE, 0o644, dir_fd=self.root_fd)
            try:
                _write_all(fd, data)
            finally:
                os.close(fd)

    def _create(self, fn, args, pfd: int, leaf: str, member: str, **kw):
        """fn(*args, dir_fd=pfd); on EEXIST make room (layer mode) or refuse, then retry.

        Creating first and looking only on EEXIST saves a stat per member on import.
        """
        try:
            return fn(*args, dir_fd=pfd, **kw)
        except FileExistsError:
            self._clear(pfd, leaf, member, False)
            return fn(*args, dir_fd=pfd, **kw)

    def write_file(self, rd, m: _Member, pfd: int, leaf: str, parts) -> None:
        # Fresh files are created with their final permission bits (never setuid/setgid/
        # sticky: those come after the owner is set), which saves a chmod for most files.
        mode = m.mode & 0o777 if self.fresh else 0o600
        fd = self._create(os.open, (leaf, _O_NEWFILE, mode), pfd, leaf, m.name)
        try:
            left = m.size
            h = hashlib.sha256() if self.hashes is not None else None
            while left:
                buf = rd.read(min(left, _CHUNK))
                if not buf:
                    raise _Refuse("%s: unexpected end of data" % m.name)
                _write_all(fd, buf)
                if h is not None:
                    h.update(buf)
                left -= len(buf)
            if h is not None:
                self.hashes["/" + "/".join(parts[1:])] = (m.size, h.hexdigest())
            self._attrs(fd, m, mode if self.fresh else None)
        finally:
            os.close(fd)

    def _attrs(self, fd: int, m: _Member, mode: Optional[int] = None) -> None:
        """Owner, mode, xattrs, mtime; ``mode``: the node's current mode if known (fresh)."""
        # chown clears setuid/setgid and security.capability: chmod and xattrs come after it.
        if not (self.fresh and (m.uid, m.gid) == self.me):
            os.chown(fd, m.uid, m.gid)
        if mode != m.mode:
            os.chmod(fd, m.mode)
        for xname, value in m.xattrs:
            try:
                os.setxattr(fd, xname, value)
            except OSError as e:
                raise _Refuse("%s: cannot set extended attribute %s: %s"
                              % (m.name, xname, e.strerror)) from None
        os.utime(fd, ns=(m.mtime_ns, m.mtime_ns))

    def hardlink(self, m: _Member, pfd: int, leaf: str, parts) -> None:
        name = m.name
        target = _norm(m.linkname, "hard link target")
        if not target or target not in self.seen:
            raise _Refuse("%s: hard link target %s is not an earlier member" % (name, m.linkname))
        if not self.oci and (target[0] != "rootfs" or len(target) < 2):
            raise _Refuse("%s: hard link target %s is outside rootfs/" % (name, m.linkname))
        if target not in self.files:
            raise _Refuse("%s: hard link target %s is not a regular file (symlink, directory or device)"
                          % (name, m.linkname))
        tfs = self._fs(target)
        tpfd = os.open("/", _O_DIR)   # walk the target's parents separately, O_NOFOLLOW
        try:
            for comp in tfs[:-1]:
                try:
                    nfd = os.open(comp, _O_DIR, dir_fd=tpfd)
                except OSError:
                    raise _Refuse("%s: hard link target %s is not reachable without symlinks"
                                  % (name, m.linkname)) from None
                os.close(tpfd)
                tpfd = nfd
            st = os.stat(tfs[-1], dir_fd=tpfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise _Refuse("%s: hard link target %s is not a regular file" % (name, m.linkname))
            try:
                os.link(tfs[-1], leaf, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                self._clear(pfd, leaf, name, False)
                os.link(tfs[-1], leaf, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tpfd)
        self.files.add(parts)
        if self.hashes is not None:
            known = self.hashes.get("/" + "/".join(target[1:]))
            if known is not None:
                self.hashes["/" + "/".join(parts[1:])] = known

    # -- OCI layers: whiteouts, mtimes
    def oci_member(self, rd, m: _Member, parts: Tuple[str, ...]) -> None:
        """An OCI / Docker layer member: no ``rootfs/`` prefix, ``.wh.`` names are whiteouts.

        ``.wh.<name>`` removes <name> as lower layers left it; ``.wh..wh..opq`` hides
        everything lower layers put in its directory. Either hides only what lower layers
        wrote, whatever the member order in this layer (the OCI rule). A whiteout is never
        written; other ``.wh..wh.`` names are AUFS bookkeeping and are skipped.
        """
        for comp in parts[:-1]:
            if comp.startswith(".wh."):
                raise _Refuse("%s: a whiteout name used as a directory" % m.name)
        for i in range(len(parts) - 1, 0, -1):   # this layer's own paths, prefixes included
            p = parts[:i]
            if p in self.implied or p in self.seen:
                break
            self.implied.add(p)
        leaf = parts[-1]
        if not leaf.startswith(".wh."):
            self._check_xattrs(m)
            self.node(rd, m, parts, parts)
            return
        left = m.size if m.isreg() else 0
        while left:                                # a whiteout's data (if any) is dropped
            buf = rd.read(min(left, _CHUNK))
            if not buf:
                raise _Refuse("%s: unexpected end of data" % m.name)
            left -= len(buf)
        if leaf == ".wh..wh..opq":
            pfd = self._parent(parts[:-1], m.name, create=False)
            if pfd is not None:
                self._opaque(pfd, parts[:-1])
            return
        if leaf.startswith(".wh..wh."):
            self.skipped.append((m.name, "aufs metadata"))
            return
        target = leaf[4:]
        if target in ("", ".", ".."):
            raise _Refuse("%s: a whiteout must name a file" % m.name)
        tparts = parts[:-1] + (target,)
        if tparts in self.seen or tparts in self.implied:
            return                                 # this layer's own node: not hidden
        pfd = self._parent(parts[:-1], m.name, create=False)
        if pfd is None:
            return
        try:
            st = os.stat(target, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        self._touch(parts[:-1], pfd)
        if stat.S_ISDIR(st.st_mode):
            _rmtree_at(pfd, target)
        else:
            os.unlink(target, dir_fd=pfd)

    def _opaque(self, dfd: int, dparts: Tuple[str, ...]) -> None:
        """Remove from directory ``dparts`` what lower layers put there (recursively)."""
        self._touch(dparts, dfd)
        with os.scandir(dfd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for ename, is_dir in entries:
            p = dparts + (ename,)
            if p in self.seen or p in self.implied:
                if is_dir:
                    fd = os.open(ename, _O_DIR, dir_fd=dfd)
                    try:
                        self._opaque(fd, p)
                    finally:
                        os.close(fd)
            elif is_dir:
                _rmtree_at(dfd, ename)
            else:
                os.unlink(ename, dir_fd=dfd)

    def _touch(self, parts: Tuple[str, ...], fd: int) -> None:
        """Remember directory ``parts``' mtime before this layer changes its entries."""
        if parts not in self.mtimes:
            self.mtimes[parts] = os.fstat(fd).st_mtime_ns

    def restore_mtimes(self) -> None:
        """Put back the mtimes of directories whose entries changed (OCI layer mode).

        Directories this layer describes get theirs from finish_dirs, which runs after.
        """
        for parts, mtime_ns in self.mtimes.items():
            fd = os.open("/", _O_DIR)
            try:
                for comp in parts:
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                    os.close(fd)
                    fd = nfd
                os.utime(fd, ns=(mtime_ns, mtime_ns))
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise
            finally:
                os.close(fd)

    def finish_dirs(self) -> None:
        """Directory modes/owners/mtimes last, deepest first (children change mtimes)."""
        self.dirs.sort(key=lambda d: len(d[0]), reverse=True)
        for fs, m in self.dirs:
            fd = os.open("/", _O_DIR)
            try:
                for comp in fs:
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                    os.close(fd)
                    fd = nfd
                self._attrs(fd, m)
            finally:
                os.close(fd)

    def digest(self) -> Optional[str]:
        """tree_digest of the rootfs we wrote, reusing the content hashes taken on the way."""
        hashes = self.hashes
        if hashes is None:
            return None

        def known(rel: str, st) -> Optional[str]:
            e = hashes.get(rel)
            # A node we did not write or whose size moved is read instead (never trusted).
            return e[1] if e is not None and e[0] == st.st_size else None

        return tree_digest("/rootfs", known)


def _write_all(fd: int, data) -> None:
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv):]


def _rmtree_at(pfd: int, name: str) -> None:
    """Remove directory ``name`` under ``pfd`` without following any symlink."""
    fd = os.open(name, _O_DIR, dir_fd=pfd)
    try:
        with os.scandir(fd) as it:
            entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        for ename, is_dir in entries:
            if is_dir:
                _rmtree_at(fd, ename)
            else:
                os.unlink(ename, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=pfd)


def _report(fd: int, msg: dict) -> None:
    _write_all(fd, (json.dumps(msg) + "\n").encode("utf-8", "surrogateescape"))


def _child(data_r: int, res_w: int, dest: str, layer: bool, allow_devices: bool, oci: bool = False) -> None:
    """Body of the forked extractor: confine, extract, report one JSON line, os._exit."""
    status = 1
    msg = {"ok": False, "kind": "internal", "error": "the extraction process failed"}
    try:
        try:
            _close_fds_except((data_r, res_w))
            null = os.open("/dev/null", os.O_RDWR)
            for i in (0, 1, 2):
                os.dup2(null, i)
            if null > 2:
                os.close(null)
            os.umask(0)
            os.chroot(dest)
            os.chdir("/")
        except OSError as e:
            msg = {"ok": False, "kind": "setup",
                   "error": "cannot confine the extraction in %s: %s" % (dest, e.strerror or e)}
            return
        pipe = os.fdopen(data_r, "rb", buffering=_CHUNK)
        try:
            ex = _Extractor(layer, allow_devices, oci)
            ex.run(pipe)
        except _Refuse as e:
            msg = {"ok": False, "kind": "image", "error": str(e)}
            return
        except OSError as e:
            member = getattr(e, "member", None)
            msg = {"ok": False, "kind": "store" if e.errno in _STORE_ERRNOS else "image",
                   "error": "%s%s" % (member + ": " if member else "", e.strerror or e), "errno": e.errno}
            return
        try:
            digest = ex.digest()
        except Exception:   # the store computes it again from the tree
            digest = None
        msg = {"ok": True, "members": ex.members, "skipped": ex.skipped,
               "manifest": ex.manifest.decode("latin-1"), "digest": digest}
        status = 0
    except BaseException as e:  # noqa: B902 - nothing may escape a forked child
        msg = {"ok": False, "kind": "internal", "error": "%s: %s" % (type(e).__name__, e)}
    finally:
        try:
            # Close our end first: a parent blocked writing the archive gets EPIPE and
            # comes to read this report, so a long report cannot deadlock us.
            try:
                os.close(data_r)
            except OSError:
                pass
            if not msg.get("ok"):
                msg["error"] = msg["error"][:4096]
            _report(res_w, msg)
        except BaseException:  # noqa: B902
            status = status or 1
        os._exit(status)


def _close_fds_except(keep) -> None:
    try:
        fds = [int(x) for x in os.listdir("/proc/self/fd")]
    except OSError:
        fds = None
    if fds is None:
        lo = 3
        for k in sorted(keep):
            os.closerange(lo, k)
            lo = k + 1
        os.closerange(lo, 65536)
        return
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


# --------------------------------------------------------------------------- parent

def _read_head(src: BinaryIO) -> bytes:
    head = b""
    while len(head) < 512:
        b = src.read(_CHUNK if not head else 512 - len(head))
        if not b:
            break
        head += b
    return head


class _Pump(threading.Thread):
    """Second stage of the parent: hash, scan and frame the uncompressed stream, feed the child.

    The first stage (the caller's thread) reads and decompresses; zlib/bz2/lzma and sha512
    release the GIL on big buffers, so the two stages use two cores. Errors are kept for the
    caller, which checks ``error`` / ``child_gone`` between chunks and raises in order.
    """

    def __init__(self, fd: int, scanner: _TarScanner, h) -> None:
        super().__init__(name="aci-pump", daemon=True)
        self.fd = fd
        self.scanner = scanner
        self.h = h
        self.q: "queue.Queue" = queue.Queue(maxsize=8)
        self.error: Optional[BaseException] = None
        self.child_gone = False
        self.abort = False

    def run(self) -> None:
        q, h, scanner, fd = self.q, self.h, self.scanner, self.fd
        while True:
            out = q.get()
            if out is None:
                return
            if self.error is not None or self.abort:
                continue      # drain until the end marker
            try:
                h.update(out)
                scanner.feed(out)
                pieces = scanner.take()
                if not self.child_gone:
                    for p in pieces:
                        _write_all(fd, p)
            except BrokenPipeError:
                self.child_gone = True   # it stopped on an error: the caller reads it
            except BaseException as e:  # noqa: B902 - handed to the caller
                self.error = e

    def put(self, out) -> None:
        self.q.put(out)

    def stop(self) -> None:
        """End of input: wait until everything queued is processed."""
        self.q.put(None)
        self.join()

    def cancel(self) -> None:
        self.abort = True
        while True:
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        self.q.put(None)
        self.join()


class _BlobCopy(threading.Thread):
    """Copies a regular source file to the blob off the hot loop (copy_file_range).

    Its own fds and explicit offsets: neither the caller's file positions nor its buffers
    are involved. ``finish`` then proves the bytes copied are the bytes hashed: the file's
    size, mtime and ctime did not move during the import and the lengths agree.
    """

    @classmethod
    def maybe(cls, src, blob) -> "Optional[_BlobCopy]":
        if not isinstance(src, (io.BufferedReader, io.FileIO)) or \
                (isinstance(src, io.BufferedReader) and not isinstance(src.raw, io.FileIO)):
            return None
        try:
            sfd, bfd = src.fileno(), blob.fileno()
            st = os.fstat(sfd)
            if not stat.S_ISREG(st.st_mode) or not stat.S_ISREG(os.fstat(bfd).st_mode):
                return None
            start = src.tell()
            blob.flush()
            dst = blob.tell()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return None
        if start > st.st_size:
            return None
        return cls(sfd, st, start, bfd, dst, getattr(src, "name", None))

    def __init__(self, sfd: int, st, start: int, bfd: int, dst: int, name) -> None:
        super().__init__(name="aci-blob", daemon=True)
        self.st = st
        self.start_at = start
        self.length = st.st_size - start
        self.dst = dst
        self.name = name if isinstance(name, str) else "the image file"
        self.copied = 0
        self.error: Optional[BaseException] = None
        self.abort = False
        self.sfd = os.dup(sfd)
        try:
            self.bfd = os.dup(bfd)
        except OSError:
            os.close(self.sfd)
            raise

    def run(self) -> None:
        try:
            cfr = getattr(os, "copy_file_range", None)
            while self.copied < self.length and not self.abort:
                n = min(self.length - self.copied, 8 << 20)
                so, do = self.start_at + self.copied, self.dst + self.copied
                k = -1
                if cfr is not None:
                    try:
                        k = cfr(self.sfd, self.bfd, n, so, do)
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                           errno.ENOTSUP, errno.EBADF, errno.EPERM):
                            raise
                        cfr = None
                if k < 0:
                    buf = os.pread(self.sfd, min(n, _CHUNK), so)
                    k = len(buf)
                    mv = memoryview(buf)
                    while mv:
                        w = os.pwrite(self.bfd, mv, do)
                        mv, do = mv[w:], do + w
                if k == 0:
                    break     # the file shrank: finish() says so
                self.copied += k
            if not self.abort:
                # Start the blob's write-back now, while extraction goes on: the caller's
                # fsync then finds little left to do.
                os.fdatasync(self.bfd)
        except BaseException as e:  # noqa: B902 - handed to the caller
            self.error = e

    def finish(self, hashed: int, blob) -> None:
        """Wait for the copy; raise if it failed or the source changed under us."""
        self.join()
        try:
            if self.error is not None:
                raise self.error
            st = os.fstat(self.sfd)
            before = (self.st.st_size, self.st.st_mtime_ns, self.st.st_ctime_ns)
            if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != before or \
                    self.copied != self.length or hashed != self.length:
                raise ImageError("%s changed while it was imported" % self.name)
            blob.seek(self.dst + self.copied)
        finally:
            self.close()

    def cancel(self) -> None:
        self.abort = True
        if self.ident is not None:
            self.join()
        self.close()

    def close(self) -> None:
        if self.sfd >= 0:
            os.close(self.sfd)
            os.close(self.bfd)
            self.sfd = self.bfd = -1


class _NoSpace(errors.StoreError, OSError):
    """The disk filled up under the extractor. Also an OSError(ENOSPC): whichever writer hit
    the full disk first (the extractor or the blob copy running beside it), the caller sees
    the same error."""


def _run(src: BinaryIO, dest: str, layer: bool, blob: Optional[BinaryIO], max_size: int,
         allow_devices: bool, compression: Optional[str], oci: bool = False) -> ImportResult:
    if not os.path.isdir(dest):
        raise errors.StoreError("extraction target %s is not a directory" % dest)
    if not layer and os.listdir(dest):
        raise errors.StoreError("extraction target %s is not empty" % dest)
    copier = _BlobCopy.maybe(src, blob) if blob is not None else None
    try:
        return _run2(src, dest, layer, blob, copier, max_size, allow_devices, compression, oci)
    finally:
        if copier is not None:
            copier.cancel()   # no-op after finish()


def _run2(src: BinaryIO, dest: str, layer: bool, blob: Optional[BinaryIO], copier: Optional[_BlobCopy],
          max_size: int, allow_devices: bool, compression: Optional[str], oci: bool = False) -> ImportResult:
    head = _read_head(src)
    if not head:
        raise ImageError("not an ACI: empty file")
    kind = sniff_compression(head) if compression is None else compression
    if kind not in _COMPRESSIONS:
        raise ValueError("compression must be one of %s" % ", ".join(_COMPRESSIONS))
    inflater = _Inflater(kind)
    scanner = _TarScanner(max_size, frames=True)
    h = hashlib.sha512()
    size = csize = 0

    data_r, data_w = os.pipe()
    try:
        res_r, res_w = os.pipe()
    except OSError:
        os.close(data_r)
        os.close(data_w)
        raise
    for fd in (data_r, data_w, res_r, res_w):
        os.set_inheritable(fd, False)
    try:
        fcntl.fcntl(data_w, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, leaves by os._exit
        try:
            os.close(data_w)
            os.close(res_r)
        finally:
            _child(data_r, res_w, dest, layer, allow_devices, oci)
    os.close(data_r)
    os.close(res_w)
    reaped = False
    pump = _Pump(data_w, scanner, h)
    pumping = False
    try:
        if copier is not None:
            copier.start()
        pump.start()
        pumping = True
        chunk = head
        try:
            while chunk:
                csize += len(chunk)
                if blob is not None and copier is None:
                    blob.write(chunk)
                for out in inflater.feed(chunk):
                    size += len(out)
                    if size > max_size:
                        raise ImageError("uncompressed size exceeds %d bytes (max_size)" % max_size)
                    pump.put(out)
                if pump.error is not None or pump.child_gone:
                    break
                chunk = src.read(_CHUNK)
            if pump.error is None and not pump.child_gone:
                inflater.finish()
        except ImageError:
            # An error later in the stream must not hide one the pump finds earlier in it.
            pump.stop()
            pumping = False
            if pump.error is not None:
                raise pump.error from None
            raise
        pump.stop()
        pumping = False
        if pump.error is not None:
            raise pump.error
        child_gone = pump.child_gone
        if not child_gone:
            scanner.finish()
        os.close(data_w)
        data_w = -1
        raw = _read_all(res_r)
        dummy_pid, status = os.waitpid(pid, 0)
        reaped = True
        msg = _parse_report(raw, status)
        if not msg.get("ok"):
            text = msg.get("error") or "extraction failed"
            if msg.get("kind") == "store" and msg.get("errno") == errno.ENOSPC:
                raise _NoSpace(errno.ENOSPC, text)
            if msg.get("kind") in ("setup", "store"):
                raise errors.StoreError(text)
            raise ImageError(text)
        if child_gone:  # pragma: no cover - the child reads to the end marker
            raise ImageError("extraction ended before the archive did")
        if msg.get("members") != scanner.members:
            raise ImageError("tar: the archive's members could not be read consistently "
                             "(%s extracted, %d headers)" % (msg.get("members"), scanner.members))
        if copier is not None:
            copier.finish(csize, blob)
        manifest_bytes = msg["manifest"].encode("latin-1")
        manifest = None
        if not layer:
            try:
                manifest = schema.parse_image_manifest(manifest_bytes)
            except errors.ValidationError as e:
                raise ImageError("manifest: %s" % e) from None
        res = ImportResult("sha512-" + h.hexdigest(), size, csize, kind, manifest, manifest_bytes,
                           [tuple(pair) for pair in msg.get("skipped") or []])  # JSON lists -> pairs
        res.tree_digest = msg.get("digest") if not layer else None
        return res
    finally:
        if not reaped:
            try:
                os.kill(pid, 9)   # also unblocks a pump writing to it (EPIPE)
            except OSError:
                pass
        if pumping:
            pump.cancel()
        if data_w >= 0:
            os.close(data_w)
        if not reaped:
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except ChildProcessError:
                    break
                except InterruptedError:  # pragma: no cover
                    continue
        os.close(res_r)


def _read_all(fd: int) -> bytes:
    parts = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(parts)
        parts.append(b)


def _parse_report(raw: bytes, status: int) -> dict:
    try:
        msg = json.loads(raw.decode("utf-8", "surrogateescape").splitlines()[0])
        if isinstance(msg, dict):
            return msg
    except (ValueError, IndexError):
        pass
    if os.WIFSIGNALED(status):
        why = "was killed by signal %d" % os.WTERMSIG(status)
    else:
        why = "exited with status %d" % os.WEXITSTATUS(status)
    return {"ok": False, "kind": "internal", "error": "the extraction process %s without a report" % why}


def import_aci(src: BinaryIO, dest: str, *, blob: Optional[BinaryIO] = None,
               max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> ImportResult:
    """Import an ACI read once from ``src`` into the empty directory ``dest``.

    ``dest`` receives ``manifest`` and ``rootfs/``; ``blob`` (if given) the archive bytes as
    received. On error ``dest`` may hold a partial tree: the caller removes it (nothing is
    ever written outside it). Needs root (chroot, chown, mknod).
    """
    return _run(src, dest, False, blob, max_size, allow_devices, None)


def extract_layer(src: BinaryIO, dest_rootfs: str, *, compression: Optional[str] = None,
                  max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> None:
    """Extract an ACI's ``rootfs/`` over an existing root filesystem (rendering layers).

    Later layers win: an existing node is replaced by the member at its path (a symlink is
    replaced, never followed); a directory over a directory merges.
    """
    _run(src, dest_rootfs, True, None, max_size, allow_devices, compression)


def extract_oci_layer(src: BinaryIO, dest_rootfs: str, *, compression: Optional[str] = None,
                      max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> ImportResult:
    """Apply an OCI / Docker layer tar over a root filesystem; whiteouts honoured.

    Same confined child and the same rules as ACI extraction (names, symlinks, hard links
    within the layer, devices, xattrs, sizes); member names have no ``rootfs/`` prefix and
    there is no manifest. ``skipped`` lists devices not created and AUFS metadata. The
    directory mtimes this layer did not describe are kept, so flattening is reproducible.
    """
    return _run(src, dest_rootfs, True, None, max_size, allow_devices, compression, oci=True)


def image_id_of(src: BinaryIO) -> str:
    """``sha512-`` + hex digest of the uncompressed stream of an archive."""
    return _hash_stream(src, None)[0]


def inspect_aci(src: BinaryIO, *, max_size: int = DEFAULT_MAX_SIZE) -> Tuple[str, int, dict]:
    """(image ID, uncompressed size, validated manifest) without extracting anything."""
    image_id, size, scanner = _hash_stream(src, _TarScanner(max_size, capture_manifest=True))
    if scanner.manifest_error:
        raise ImageError(scanner.manifest_error)
    if scanner.manifest_bytes is None:
        raise ImageError("manifest: missing (an ACI holds exactly manifest and rootfs/)")
    try:
        manifest = schema.parse_image_manifest(scanner.manifest_bytes)
    except errors.ValidationError as e:
        raise ImageError("manifest: %s" % e) from None
    return image_id, size, manifest


def _hash_stream(src: BinaryIO, scanner: Optional[_TarScanner]):
    head = _read_head(src)
    if not head:
        raise ImageError("not an ACI: empty file")
    inflater = _Inflater(sniff_compression(head))
    h = hashlib.sha512()
    size = 0
    chunk = head
    while chunk:
        for out in inflater.feed(chunk):
            size += len(out)
            if scanner is not None:
                if size > scanner.max_size:
                    raise ImageError("uncompressed size exceeds %d bytes (max_size)" % scanner.max_size)
                scanner.feed(out)
            h.update(out)
        chunk = src.read(_CHUNK)
    inflater.finish()
    if scanner is not None:
        scanner.finish()
    return "sha512-" + h.hexdigest(), size, scanner


# --------------------------------------------------------------------------- build

class _HashWriter:
    """File-like sink that hashes what tarfile writes before compressing it."""

    def __init__(self, out) -> None:
        self.out = out
        self.h = hashlib.sha512()

    def write(self, data) -> int:
        self.h.update(data)
        self.out.write(data)
        return len(data)


def _manifest_bytes(manifest) -> bytes:
    try:
        if isinstance(manifest, dict):
            schema.parse_image_manifest(manifest)
            return schema.dump_manifest(manifest)
        if isinstance(manifest, str):
            manifest = manifest.encode("utf-8")
        raw = bytes(manifest)
        schema.parse_image_manifest(raw)
        return raw
    except errors.ValidationError as e:
        raise ImageError("manifest: %s" % e) from None


def _walk_sub(rel: str, path: str):
    """(archive name, path, lstat) depth-first, each directory's names sorted bytewise."""
    stack = [iter([(rel, path, n) for n in sorted(os.listdir(path), key=os.fsencode)])]
    while stack:
        item = next(stack[-1], None)
        if item is None:
            stack.pop()
            continue
        prel, ppath, name = item
        p = os.path.join(ppath, name)
        r = prel + "/" + name
        st = os.lstat(p)
        yield r, p, st
        if stat.S_ISDIR(st.st_mode):
            stack.append(iter([(r, p, n) for n in sorted(os.listdir(p), key=os.fsencode)]))


def _xattrs_of(path: str) -> List[Tuple[str, bytes]]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return []
        raise
    # host-only attributes (selinux labels, trusted.*) would make the ID machine-dependent
    return [(n, os.getxattr(path, n, follow_symlinks=False)) for n in sorted(names) if _xattr_allowed(n)]


def build_aci(rootfs_dir: str, manifest, out_path: str, *, compression: str = "gzip",
              mtime: Optional[int] = 0, owner: Optional[tuple] = (0, 0)) -> str:
    """Build an ACI like ``actool build``, deterministically; returns its image ID.

    Same inputs give the same ID on any machine: PAX format, members sorted (manifest,
    rootfs, then the tree depth-first by byte order), owner ``owner`` (None keeps the
    files' numeric owners; names are always empty), mtime ``mtime`` (None keeps the files'
    whole seconds), modes and allowed xattrs kept, gzip header without name or time.
    Written beside ``out_path`` and renamed into place.
    """
    if compression == "none":
        compression = "tar"
    if compression not in _COMPRESSIONS:
        raise ValueError("compression must be one of gzip, bzip2, xz, none")
    data = _manifest_bytes(manifest)
    top = os.lstat(rootfs_dir)
    if not stat.S_ISDIR(top.st_mode):
        raise ImageError("%s is not a directory" % rootfs_dir)
    out_path = os.path.abspath(out_path)
    import tempfile
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(out_path),
                               prefix="." + os.path.basename(out_path) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            if compression == "gzip":
                import gzip
                comp = gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
            elif compression == "bzip2":
                import bz2
                comp = bz2.BZ2File(raw, "wb", compresslevel=9)
            elif compression == "xz":
                import lzma
                comp = lzma.LZMAFile(raw, "wb", format=lzma.FORMAT_XZ, preset=6)
            else:
                comp = raw
            hw = _HashWriter(comp)
            tf = tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT,
                              encoding="utf-8", errors="surrogateescape")

            def info(name: str, st) -> "tarfile.TarInfo":
                ti = tarfile.TarInfo(name)
                ti.mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
                if owner is None and st is not None:
                    ti.uid, ti.gid = st.st_uid, st.st_gid
                else:
                    ti.uid, ti.gid = (owner or (0, 0))
                ti.uname = ti.gname = ""
                if mtime is not None:
                    ti.mtime = int(mtime)
                else:
                    ti.mtime = int((st if st is not None else top).st_mtime)
                return ti

            import io
            mi = info("manifest", None)
            mi.size = len(data)
            tf.addfile(mi, io.BytesIO(data))
            ri = info("rootfs", top)
            ri.type = tarfile.DIRTYPE
            _add_xattrs(ri, rootfs_dir)
            tf.addfile(ri)
            links: Dict[Tuple[int, int], str] = {}
            for rel, path, st in _walk_sub("rootfs", rootfs_dir):
                mode = st.st_mode
                ti = info(rel, st)
                if stat.S_ISDIR(mode):
                    ti.type = tarfile.DIRTYPE
                elif stat.S_ISLNK(mode):
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = os.readlink(path)
                    tf.addfile(ti)
                    continue
                elif stat.S_ISREG(mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1 and key in links:
                        ti.type = tarfile.LNKTYPE
                        ti.linkname = links[key]
                        tf.addfile(ti)
                        continue
                    links[key] = rel
                    ti.size = st.st_size
                elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
                    ti.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
                    ti.devmajor, ti.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
                elif stat.S_ISFIFO(mode):
                    ti.type = tarfile.FIFOTYPE
                else:
                    continue   # sockets cannot be archived
                _add_xattrs(ti, path)
                if ti.type == tarfile.REGTYPE:
                    ffd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    with os.fdopen(ffd, "rb") as f:
                        tf.addfile(ti, f)
                else:
                    tf.addfile(ti)
            tf.close()
            if comp is not raw:
                comp.close()
            raw.flush()
            os.fsync(raw.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, out_path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:
        dfd = os.open(os.path.dirname(out_path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return "sha512-" + hw.h.hexdigest()


def _add_xattrs(ti: "tarfile.TarInfo", path: str) -> None:
    for name, value in _xattrs_of(path):
        ti.pax_headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
