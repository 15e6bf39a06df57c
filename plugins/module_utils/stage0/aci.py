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
import json
import os
import stat
import tarfile
from typing import BinaryIO, Dict, List, Optional, Tuple

from . import errors, schema
from .errors import ImageError

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
                 "skipped")

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


class _TarScanner:
    """Tar header state machine over the uncompressed stream (runs in the parent).

    It mirrors tarfile's reading rules (same header parser, same "which types carry data"
    rule, same pax size override), refuses anything that could make them diverge, counts
    members (the child must count the same) and can capture the manifest's bytes.
    """

    def __init__(self, max_size: int, capture_manifest: bool = False) -> None:
        self.max_size = max_size
        self.capture_manifest = capture_manifest
        self.offset = 0           # stream offset of the start of the current feed()
        self.skip = 0             # data + padding bytes still to pass
        self.hdr = bytearray()
        self.ext: Optional[bytearray] = None
        self.ext_need = 0
        self.ext_kind = b""
        self.ext_name = ""
        self.chain = 0
        self.pax_seen = False
        self.pending_size: Optional[int] = None
        self.pending_name: Optional[str] = None
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
            if self.skip:
                if self.manifest is not None:
                    k = min(self.manifest_need - len(self.manifest), n - pos)
                    self.manifest += mv[pos:pos + k]
                    if len(self.manifest) == self.manifest_need:
                        self.manifest_bytes = bytes(self.manifest)
                        self.manifest = None
                    self.skip -= k
                    pos += k
                    continue
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

    def finish(self) -> None:
        if not self.ended:
            raise ImageError("truncated tar archive: no end-of-archive marker at byte %d" % self.offset)

    def _header(self, block: bytes, at: int) -> None:
        if block.count(0) == 512:
            if self.chain:
                raise ImageError("tar: extended header at the end of the archive describes no member")
            self.ended = True
            return
        try:
            ti = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            raise ImageError("bad tar header at byte %d: %s" % (at, e)) from None
        t = ti.type
        if ti.size < 0:
            raise ImageError("tar header at byte %d: negative size" % at)
        if t in (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
                 tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
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
        name = self.pending_name if self.pending_name is not None else ti.name
        if t == tarfile.GNUTYPE_SPARSE or t not in tarfile.SUPPORTED_TYPES:
            raise ImageError("%s: unsupported tar member type %r" % (name, t.decode("latin-1")))
        size = self.pending_size if self.pending_size is not None else ti.size
        if size > self.max_size:
            raise ImageError("%s: member size %d exceeds %d bytes (max_size)" % (name, size, self.max_size))
        data = size if ti.isreg() else 0
        self.skip = _blocks(data)
        self.members += 1
        if (self.capture_manifest and ti.isreg() and
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
        self.chain = 0
        self.pax_seen = False
        self.pending_size = None
        self.pending_name = None

    def _ext_done(self) -> None:
        data = bytes(self.ext or b"")
        self.ext = None
        self.skip = _blocks(self.ext_need) - self.ext_need
        kind = self.ext_kind
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            if kind == tarfile.GNUTYPE_LONGNAME:
                self.pending_name = data.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")
            return
        recs = _parse_pax(data, self.ext_name)
        if b"path" in recs and kind != tarfile.XGLTYPE:
            self.pending_name = recs[b"path"].decode("utf-8", "surrogateescape")
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
                    raise ImageError("%s: member size %d exceeds %d bytes (max_size)"
                                     % (self.pending_name or self.ext_name, self.pending_size, self.max_size))


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


class _Extractor:
    """Writes members into the current root (we are chrooted), never following a symlink."""

    def __init__(self, layer: bool, allow_devices: bool) -> None:
        self.layer = layer
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

    # -- paths
    def _fs(self, parts: Tuple[str, ...]) -> Tuple[str, ...]:
        return parts[1:] if self.layer else parts

    def _parent(self, parts: Tuple[str, ...], member: str) -> int:
        """fd of directory ``parts`` (fs path), creating missing ones, refusing symlinks."""
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
                    os.mkdir(comp, 0o755, dir_fd=fd)
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                except OSError as e:
                    if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    st = os.stat(comp, dir_fd=fd, follow_symlinks=False)
                    shown = "/".join(("rootfs",) + parts[:i + 1] if self.layer else parts[:i + 1])
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
    def run(self, tf: "tarfile.TarFile") -> None:
        while True:
            ti = tf.next()
            if ti is None:
                break
            tf.members.clear()        # stream mode would otherwise keep every TarInfo
            self.members += 1
            try:
                self.member(tf, ti)
            except OSError as e:
                e.member = ti.name
                raise
            except ValueError as e:   # e.g. a NUL byte in a pax link name
                raise _Refuse("%s: %s" % (ti.name, e)) from None
        if self.manifest is None:
            raise _Refuse("manifest: missing (an ACI holds exactly manifest and rootfs/)")
        if not self.has_rootfs:
            raise _Refuse("rootfs: missing (an ACI holds exactly manifest and rootfs/)")
        self.finish_dirs()

    def member(self, tf, ti) -> None:
        name = ti.name
        parts = _norm(name)
        if not parts:
            if ti.isdir():
                return        # "./": the archive's own root
            raise _Refuse("%r: a member with an empty name" % name)
        if parts in self.seen:
            raise _Refuse("%s: duplicate member" % name)
        self.seen.add(parts)
        top = parts[0]
        if top == "manifest":
            if len(parts) > 1:
                raise _Refuse("%s: manifest must be a regular file" % name)
            self.read_manifest(tf, ti)
            return
        if top != "rootfs":
            raise _Refuse("%s: unexpected top-level entry (an ACI holds exactly manifest and rootfs/)" % name)
        self.has_rootfs = True
        if len(parts) == 1 and not ti.isdir():
            raise _Refuse("%s: rootfs must be a directory" % name)
        for key in ti.pax_headers:
            if key.startswith("SCHILY.xattr."):
                xname = key[13:]
                if not _xattr_allowed(xname):
                    raise _Refuse("%s: extended attribute %s is not allowed" % (name, xname))
        fs = self._fs(parts)
        if not fs:            # layer mode: rootfs/ itself is our root
            self.dirs.append(((), ti))
            return
        pfd = self._parent(fs[:-1], name)
        leaf = fs[-1]
        if ti.isdir():
            try:
                os.mkdir(leaf, 0o700, dir_fd=pfd)
            except FileExistsError:
                if not self._clear(pfd, leaf, name, True):
                    os.mkdir(leaf, 0o700, dir_fd=pfd)
            self.dirs.append((fs, ti))
        elif ti.isreg():
            self.write_file(tf, ti, pfd, leaf)
            self.files.add(parts)
        elif ti.issym():
            self._create(os.symlink, (ti.linkname, leaf), pfd, leaf, name)
            os.chown(leaf, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
            os.utime(leaf, ns=(_ns(ti.mtime),) * 2, dir_fd=pfd, follow_symlinks=False)
        elif ti.islnk():
            self.hardlink(ti, pfd, leaf, parts)
        elif ti.ischr() or ti.isblk() or ti.isfifo():
            kind = "char" if ti.ischr() else "block" if ti.isblk() else "fifo"
            if not self.allow_devices:
                self.skipped.append((name, kind))
                return
            fmt = stat.S_IFCHR if ti.ischr() else stat.S_IFBLK if ti.isblk() else stat.S_IFIFO
            dev = os.makedev(ti.devmajor, ti.devminor) if kind != "fifo" else 0
            self._create(os.mknod, (leaf, fmt | 0o600, dev), pfd, leaf, name)
            os.chown(leaf, ti.uid, ti.gid, dir_fd=pfd, follow_symlinks=False)
            # chmod follows symlinks, but this is the node we just made in a directory we hold
            os.chmod(leaf, ti.mode & 0o7777, dir_fd=pfd)
            os.utime(leaf, ns=(_ns(ti.mtime),) * 2, dir_fd=pfd, follow_symlinks=False)
        else:
            raise _Refuse("%s: unsupported member type %r" % (name, ti.type))

    def read_manifest(self, tf, ti) -> None:
        if not ti.isreg():
            kind = "a symlink" if ti.issym() else "a hard link" if ti.islnk() else \
                "a directory" if ti.isdir() else "not a regular file"
            raise _Refuse("manifest: must be a regular file, not %s" % kind)
        if ti.size > _MAX_MANIFEST:
            raise _Refuse("manifest: %d bytes is more than %d" % (ti.size, _MAX_MANIFEST))
        data = tf.extractfile(ti).read()
        if len(data) != ti.size:
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

    def write_file(self, tf, ti, pfd: int, leaf: str) -> None:
        fd = self._create(os.open, (leaf, _O_NEWFILE, 0o600), pfd, leaf, ti.name)
        try:
            left = ti.size
            if left:
                # The stream sits at this member's data (stream mode): read it directly,
                # cheaper than extractfile()'s wrappers for thousands of small files.
                src = tf.fileobj
                while left:
                    buf = src.read(min(left, _CHUNK))
                    if not buf:
                        raise _Refuse("%s: unexpected end of data" % ti.name)
                    _write_all(fd, buf)
                    left -= len(buf)
            self._attrs(fd, ti)
        finally:
            os.close(fd)

    def _attrs(self, fd: int, ti) -> None:
        # chown clears setuid/setgid and security.capability: chmod and xattrs come after it.
        os.chown(fd, ti.uid, ti.gid)
        os.chmod(fd, ti.mode & 0o7777)
        for key, value in ti.pax_headers.items():
            if key.startswith("SCHILY.xattr."):
                xname = key[13:]
                try:
                    os.setxattr(fd, xname, value.encode("utf-8", "surrogateescape"))
                except OSError as e:
                    raise _Refuse("%s: cannot set extended attribute %s: %s"
                                  % (ti.name, xname, e.strerror)) from None
        os.utime(fd, ns=(_ns(ti.mtime),) * 2)

    def hardlink(self, ti, pfd: int, leaf: str, parts) -> None:
        name = ti.name
        target = _norm(ti.linkname, "hard link target")
        if not target or target not in self.seen:
            raise _Refuse("%s: hard link target %s is not an earlier member" % (name, ti.linkname))
        if target[0] != "rootfs" or len(target) < 2:
            raise _Refuse("%s: hard link target %s is outside rootfs/" % (name, ti.linkname))
        if target not in self.files:
            raise _Refuse("%s: hard link target %s is not a regular file (symlink, directory or device)"
                          % (name, ti.linkname))
        tfs = self._fs(target)
        tpfd = os.open("/", _O_DIR)   # walk the target's parents separately, O_NOFOLLOW
        try:
            for comp in tfs[:-1]:
                try:
                    nfd = os.open(comp, _O_DIR, dir_fd=tpfd)
                except OSError:
                    raise _Refuse("%s: hard link target %s is not reachable without symlinks"
                                  % (name, ti.linkname)) from None
                os.close(tpfd)
                tpfd = nfd
            st = os.stat(tfs[-1], dir_fd=tpfd, follow_symlinks=False)
            if not stat.S_ISREG(st.st_mode):
                raise _Refuse("%s: hard link target %s is not a regular file" % (name, ti.linkname))
            try:
                os.link(tfs[-1], leaf, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
            except FileExistsError:
                self._clear(pfd, leaf, name, False)
                os.link(tfs[-1], leaf, src_dir_fd=tpfd, dst_dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(tpfd)
        self.files.add(parts)

    def finish_dirs(self) -> None:
        """Directory modes/owners/mtimes last, deepest first (children change mtimes)."""
        self.dirs.sort(key=lambda d: len(d[0]), reverse=True)
        for fs, ti in self.dirs:
            fd = os.open("/", _O_DIR)
            try:
                for comp in fs:
                    nfd = os.open(comp, _O_DIR, dir_fd=fd)
                    os.close(fd)
                    fd = nfd
                self._attrs(fd, ti)
            finally:
                os.close(fd)


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


def _child(data_r: int, res_w: int, dest: str, layer: bool, allow_devices: bool) -> None:
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
        ex = _Extractor(layer, allow_devices)
        pipe = os.fdopen(data_r, "rb", buffering=_CHUNK)
        try:
            tf = tarfile.open(fileobj=pipe, mode="r|", bufsize=16384,
                              encoding="utf-8", errors="surrogateescape")
            ex.run(tf)
        except _Refuse as e:
            msg = {"ok": False, "kind": "image", "error": str(e)}
            return
        except tarfile.TarError as e:
            msg = {"ok": False, "kind": "image", "error": "tar: %s" % e}
            return
        except OSError as e:
            member = getattr(e, "member", None)
            msg = {"ok": False, "kind": "store" if e.errno in _STORE_ERRNOS else "image",
                   "error": "%s%s" % (member + ": " if member else "", e.strerror or e)}
            return
        while pipe.read(_CHUNK):   # drain: the parent hashes up to the last byte
            pass
        msg = {"ok": True, "members": ex.members, "skipped": ex.skipped,
               "manifest": ex.manifest.decode("latin-1")}
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


def _run(src: BinaryIO, dest: str, layer: bool, blob: Optional[BinaryIO], max_size: int,
         allow_devices: bool, compression: Optional[str]) -> ImportResult:
    if not os.path.isdir(dest):
        raise errors.StoreError("extraction target %s is not a directory" % dest)
    if not layer and os.listdir(dest):
        raise errors.StoreError("extraction target %s is not empty" % dest)
    head = _read_head(src)
    if not head:
        raise ImageError("not an ACI: empty file")
    kind = sniff_compression(head) if compression is None else compression
    if kind not in _COMPRESSIONS:
        raise ValueError("compression must be one of %s" % ", ".join(_COMPRESSIONS))
    inflater = _Inflater(kind)
    scanner = _TarScanner(max_size)
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
            _child(data_r, res_w, dest, layer, allow_devices)
    os.close(data_r)
    os.close(res_w)
    reaped = False
    child_gone = False
    try:
        chunk = head
        while chunk:
            csize += len(chunk)
            if blob is not None:
                blob.write(chunk)
            for out in inflater.feed(chunk):
                size += len(out)
                if size > max_size:
                    raise ImageError("uncompressed size exceeds %d bytes (max_size)" % max_size)
                h.update(out)
                scanner.feed(out)
                if not child_gone:
                    try:
                        _write_all(data_w, out)
                    except BrokenPipeError:
                        child_gone = True   # it stopped on an error: we read it below
            if child_gone:
                break
            chunk = src.read(_CHUNK)
        if not child_gone:
            inflater.finish()
            scanner.finish()
        os.close(data_w)
        data_w = -1
        raw = _read_all(res_r)
        _, status = os.waitpid(pid, 0)
        reaped = True
        msg = _parse_report(raw, status)
        if not msg.get("ok"):
            text = msg.get("error") or "extraction failed"
            if msg.get("kind") in ("setup", "store"):
                raise errors.StoreError(text)
            raise ImageError(text)
        if child_gone:  # pragma: no cover - the child drains, so it cannot end early and succeed
            raise ImageError("extraction ended before the archive did")
        if msg.get("members") != scanner.members:
            raise ImageError("tar: the archive's members could not be read consistently "
                             "(%s extracted, %d headers)" % (msg.get("members"), scanner.members))
        manifest_bytes = msg["manifest"].encode("latin-1")
        manifest = None
        if not layer:
            try:
                manifest = schema.parse_image_manifest(manifest_bytes)
            except errors.ValidationError as e:
                raise ImageError("manifest: %s" % e) from None
        return ImportResult("sha512-" + h.hexdigest(), size, csize, kind, manifest, manifest_bytes,
                            [(n, k) for n, k in msg.get("skipped") or []])
    finally:
        if data_w >= 0:
            os.close(data_w)
        if not reaped:
            try:
                os.kill(pid, 9)
            except OSError:
                pass
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
