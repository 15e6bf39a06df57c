"""Stage one of an image import, in the module's own process: decompress and scan the tar.

An image is untrusted input. Before a byte reaches the extractor child (aci_extract), the
parent decompresses the stream incrementally with a bounded output size and runs a small
tar-header state machine over it. That scanner refuses what could make the extractor buffer
a lot (pax / GNU long-name headers over 1 MiB, absurd sizes) or make it disagree with us
about member boundaries (bad checksums, malformed pax records, sparse members, unknown
types), and turns each member into a frame for the child.

The limits, the decompressor and the pax parser are public: the OCI reader (oci_layout) and
fetch's manifest peek use the same ones, so every archive meets the same bounds.
Standard library only; never imports ansible.
"""
import struct
import tarfile
import zlib
from typing import Any, Dict, Iterator, List, Optional, Protocol, Union

from .errors import ImageError

# 8 GiB: larger than any real image we know of (base OS images are a few hundred MiB, fat
# ML images a few GiB), small enough that a decompression bomb or a runaway stream stops
# long before it fills a data disk. Callers can raise it per import.
DEFAULT_MAX_SIZE = 8 << 30

CHUNK = 1 << 20           # read / decompress-output / write granularity
MAX_EXT = 1 << 20         # largest pax or GNU long-name header we accept
MAX_MANIFEST = 1 << 20    # largest manifest we accept
_MAX_EXT_CHAIN = 4        # extended headers allowed in front of one member

_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bzip2"),
    (b"\xfd7zXZ\x00", "xz"),
)
COMPRESSIONS = ("gzip", "bzip2", "xz", "tar")


class Readable(Protocol):
    """What an archive is read from: a file, a socket, a stream that checks what it reads."""

    def read(self, __n: int = ...) -> bytes:
        ...


# xattrs an image may carry. security.capability is how images ship file capabilities
# (ping, ...). trusted.* is refused: trusted.overlay.* changes how overlayfs reads our trees
# (opaque dirs, redirects, metacopy); other security.* (selinux, ima, evm) are host policy.
_XATTR_KEEP_EXACT = ("security.capability", "system.posix_acl_access", "system.posix_acl_default")


def xattr_allowed(name: str) -> bool:
    return name.startswith("user.") or name in _XATTR_KEEP_EXACT


def sniff_compression(head: bytes) -> str:
    """'gzip' | 'bzip2' | 'xz' | 'tar' from the first bytes (>= 262 for a plain tar)."""
    for magic, kind in _MAGIC:
        if head[:len(magic)] == magic:
            return kind
    if head[257:262] == b"ustar":
        return "tar"
    raise ImageError("not an ACI: neither a tar archive nor gzip/bzip2/xz data")


# --------------------------------------------------------------------------- decompression

class Inflater:
    """Incremental, output-bounded decompression of concatenated streams (pigz, pbzip2, pixz).

    Output comes in chunks of at most CHUNK bytes however small the input, so a bomb never
    lands in memory at once. Zero padding between/after members is tolerated (tape-style
    padding), anything else after a member must be another member of the same format.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.members = 0
        # zlib, bz2 or lzma decompressor: their interfaces differ (feed() knows which it has)
        self.d: Any = None
        self.done = kind != "tar"   # "between members": waiting for the first one

    def _new(self) -> Any:
        if self.kind == "gzip":
            import zlib
            # 31 = gzip wrapper only: a zlib-wrapped "member" after a gzip one is garbage.
            return zlib.decompressobj(31)
        if self.kind == "bzip2":
            import bz2
            return bz2.BZ2Decompressor()
        import lzma
        return lzma.LZMADecompressor(format=lzma.FORMAT_XZ)

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The uncompressed pieces ``data`` completes, each at most CHUNK bytes."""
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
                    out = d.decompress(data, CHUNK)
                    if out:
                        yield out
                    data = d.unconsumed_tail
                    while not d.eof and not data and len(out) == CHUNK:
                        out = d.decompress(b"", CHUNK)
                        if out:
                            yield out
                    if d.eof:
                        data = d.unused_data
                        self.done = True
                        self.members += 1
                else:
                    out = d.decompress(data, CHUNK)
                    if out:
                        yield out
                    while not d.eof and not d.needs_input:
                        out = d.decompress(b"", CHUNK)
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

def parse_pax(data: bytes, where: str) -> Dict[bytes, bytes]:
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


def padded_size(n: int) -> int:
    return (n + 511) & ~511


# Frames the parent sends the child instead of the raw tar stream: the archive is parsed
# once, here, and the sandboxed child only makes syscalls. A member frame is FRAME, then
# name, link name and xattrs (XATTR + key + value, repeated), then ``size`` data bytes.
FRAME = struct.Struct("<BcxxIIIqQIIIII")
XATTR = struct.Struct("<II")
F_MEMBER = 1
F_END = 2
_DIRECT = 1 << 16         # data pieces at least this big are written without a copy
_MAX_GLOBAL = 1 << 20     # total size of the pax global records we keep
REGULAR = frozenset((tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE))
_EXT_TYPES = frozenset((tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                        tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK))
_XATTR_KEY = b"SCHILY.xattr."


# The header fields the scanner uses, at tarfile's offsets (uname, gname and padding skipped).
_USTAR = struct.Struct("100s8s8s8s12s12s8sc100s72x8s8s155s12x")
_OCTAL = b"01234567"


class _Header:
    """What tarfile.TarInfo.frombuf gives for a header, the fields the scanner reads."""

    __slots__ = ("name", "mode", "uid", "gid", "size", "mtime", "type", "linkname", "devmajor", "devminor")
    name: str
    mode: int
    uid: int
    gid: int
    size: int
    mtime: int
    type: bytes
    linkname: str
    devmajor: int
    devminor: int


def _octal(field: bytes) -> int:
    """tarfile's value of a number field that is plain octal (NUL-ended, space-padded); else -1."""
    p = field.find(b"\0")
    if p >= 0:
        field = field[:p]
    digits = field.strip(b" ")
    if digits.translate(None, _OCTAL):
        return -1
    return int(digits, 8) if digits else 0


def _nts(field: bytes) -> str:
    p = field.find(b"\0")
    return (field[:p] if p >= 0 else field).decode("utf-8", "surrogateescape")


def parse_header(block: bytes) -> "Union[_Header, tarfile.TarInfo]":
    """A 512-byte header parsed exactly as tarfile.TarInfo.frombuf does, in a third of its time.

    tarfile's own parser costs 12 µs a header: for 20,000 small files that is 0.25 s of
    the importing process. Headers whose numbers are plain octal and whose checksum is the
    unsigned one (every archive tar, tarfile and our builder write) are parsed here; any
    other (base-256 numbers, odd spacing or characters, a signed checksum, old GNU sparse,
    a bad checksum) goes to tarfile, which accepts or refuses it as before. A unit test
    compares both parsers on generated and mutated headers. Raises tarfile.HeaderError.
    """
    if len(block) == 512:
        name, mode, uid, gid, size, mtime, chk, t, link, dmaj, dmin, prefix = _USTAR.unpack(block)
        nums = [_octal(f) for f in (mode, uid, gid, size, mtime, dmaj, dmin, chk)]
        # The unsigned sum of the header, the checksum field counted as spaces (256): by
        # halves, as adler32's low 16 bits are 1 + the byte sum while that stays below
        # 65521 (256 bytes sum to at most 65280).
        total = (zlib.adler32(block[:256]) & 0xFFFF) + (zlib.adler32(block[256:]) & 0xFFFF) - 2 \
            - sum(block[148:156]) + 256
        if min(nums) >= 0 and nums[7] == total and t != tarfile.GNUTYPE_SPARSE:
            h = _Header()
            h.mode, h.uid, h.gid, h.size, h.mtime, h.devmajor, h.devminor = nums[:7]
            n = _nts(name)
            if t == tarfile.AREGTYPE and n.endswith("/"):
                t = tarfile.DIRTYPE
            if t == tarfile.DIRTYPE:
                n = n.rstrip("/")
            p = _nts(prefix)
            if p and t not in tarfile.GNU_TYPES:
                n = p + "/" + n
            h.name, h.type, h.linkname = n, t, _nts(link)
            return h
    return tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")


def tar_text(b: bytes) -> str:
    return b.decode("utf-8", "surrogateescape")


def _pax_int(v: bytes) -> int:
    try:
        return int(tar_text(v))
    except ValueError:       # tarfile's rule: an unparsable number is 0
        return 0


def _ns(mtime: Union[int, float]) -> int:
    """A tar mtime (whole seconds, or pax's fractional ones) in nanoseconds."""
    return int(round(mtime * 1_000_000_000)) if isinstance(mtime, float) else int(mtime) * 1_000_000_000


class TarScanner:
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
        self.out: List[Union[bytearray, memoryview]] = []   # frames and data to send (frames mode)
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

    def feed(self, data: Union[bytes, bytearray, memoryview]) -> None:
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

    def take(self) -> List[Union[bytearray, memoryview]]:
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
                self.obuf += FRAME.pack(F_END, b"\0", 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
            return
        try:
            ti = parse_header(block)
        except tarfile.HeaderError as e:
            raise ImageError("bad tar header at byte %d: %s" % (at, e)) from None
        t = ti.type
        if ti.size < 0:
            raise ImageError("tar header at byte %d: negative size" % at)
        if t in _EXT_TYPES:
            what = {b"L": "GNU long name", b"K": "GNU long link name", b"g": "pax global"}.get(t, "pax")
            if ti.size > MAX_EXT:
                raise ImageError("%s header at byte %d is %d bytes (more than %d): refused"
                                 % (what, at, ti.size, MAX_EXT))
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
                name = tar_text(pax[b"path"]).rstrip("/")
            elif b"path" in glob:
                name = tar_text(glob[b"path"]).rstrip("/")
            else:
                name = ti.name
        if t == tarfile.GNUTYPE_SPARSE or t not in tarfile.SUPPORTED_TYPES:
            raise ImageError("%s: unsupported tar member type %r" % (name, t.decode("latin-1")))
        size = self.pending_size if self.pending_size is not None else ti.size
        if size > self.max_size:
            raise ImageError("%s: member size %d exceeds %d bytes (max_size)" % (name, size, self.max_size))
        isreg = t in REGULAR
        data = size if isreg else 0
        self.data = data
        self.skip = padded_size(data) - data
        self.members += 1
        if (self.capture_manifest and isreg and
                [p for p in name.split("/") if p not in ("", ".")] == ["manifest"]):
            if size > MAX_MANIFEST:
                self.manifest_error = "manifest: %d bytes is more than %d" % (size, MAX_MANIFEST)
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

    def _frame(self, ti: "Union[_Header, tarfile.TarInfo]", t: bytes, name: str, data: int,
               glob: Dict[bytes, bytes], pax: Optional[Dict[bytes, bytes]]) -> None:
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
                    mtime = float(tar_text(eff[b"mtime"]))
                except ValueError:
                    mtime = 0
            if self.pending_link is None and b"linkpath" in eff:
                link = tar_text(eff[b"linkpath"])
            xattrs = b"".join(XATTR.pack(len(k) - 13, len(v)) + k[13:] + v
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
        self.obuf += FRAME.pack(F_MEMBER, t, ti.mode & 0o7777, uid, gid, mtime_ns, data, dmaj, dmin,
                                len(nb), len(lb), len(xattrs))
        self.obuf += nb
        self.obuf += lb
        self.obuf += xattrs

    def _ext_done(self) -> None:
        data = bytes(self.ext or b"")
        self.ext = None
        self.skip = padded_size(self.ext_need) - self.ext_need
        kind = self.ext_kind
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            long_name = tar_text(data.split(b"\0", 1)[0])
            if kind == tarfile.GNUTYPE_LONGNAME:
                if self.pending_name is None:
                    self.pending_name = long_name
            elif self.pending_link is None:
                self.pending_link = long_name
            return
        recs = parse_pax(data, self.ext_name)
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
                    shown = self.pending_name or (tar_text(recs[b"path"]) if b"path" in recs else self.ext_name)
                    raise ImageError("%s: member size %d exceeds %d bytes (max_size)"
                                     % (shown, self.pending_size, self.max_size))
        if kind == tarfile.XGLTYPE:
            self.glob.update(recs)
            if sum(len(k) + len(v) for k, v in self.glob.items()) > _MAX_GLOBAL:
                raise ImageError("%s: pax global records exceed %d bytes" % (self.ext_name, _MAX_GLOBAL))
            return
        self.pax = recs
        if self.pending_name is None and b"path" in recs:
            self.pending_name = tar_text(recs[b"path"]).rstrip("/")
        if self.pending_link is None and b"linkpath" in recs:
            self.pending_link = tar_text(recs[b"linkpath"])
