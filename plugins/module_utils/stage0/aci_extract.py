"""Stage two of an image import, in a forked child: confine, extract, report.

The parent (aci) forks this child after the pipes are made. It chroots into the destination
and extracts the member frames the scanner (aci_scan) sends down a pipe with its own
member-writing code: numeric owners only, no name lookups, never following a symlink,
directories opened component by component with O_NOFOLLOW. The chroot is the kernel's
safety net; every rule is also checked explicitly so the error names the member and the
cause. It reports through a second pipe as one JSON line and leaves only through
``os._exit`` (a SystemExit in a child of an Ansible module would run the module's clean-up
and delete its payload). Standard library only; never imports ansible.
"""
import errno
import hashlib
import json
import os
import stat
import tarfile
from typing import Any, BinaryIO, Callable, Dict, List, Optional, Set, Tuple, Union, overload

from ..stage1 import linux
from .aci_scan import CHUNK, F_END, F_MEMBER, FRAME, MAX_MANIFEST, REGULAR, XATTR, xattr_allowed
from .tree import digest_of, entry_record, tree_digest, xattr_fields

# What the child writes, and where. The parent picks one; the child's rules follow from it.
IMAGE = "image"            # an ACI into an empty directory: manifest and rootfs/
ACI_LAYER = "aci-layer"    # an ACI's rootfs/ over an existing tree (rendering dependencies)
OCI_LAYER = "oci-layer"    # an OCI / Docker layer over an existing tree, whiteouts honoured
MODES = (IMAGE, ACI_LAYER, OCI_LAYER)


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
    split = name.split("/")
    parts = tuple(p for p in split if p not in ("", ".")) if "" in split or "." in split else tuple(split)
    if ".." in parts:
        raise _Refuse("%s: '..' in %s name" % (name, what))
    return parts


class _Member:
    """One archive member as the parent framed it."""

    __slots__ = ("name", "type", "mode", "uid", "gid", "mtime_ns", "size", "linkname", "devmajor",
                 "devminor", "xattrs")
    name: str
    type: bytes               # a tarfile type (REGTYPE, DIRTYPE, ...)
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    size: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: List[Tuple[str, bytes]]

    def isdir(self) -> bool:
        return self.type == tarfile.DIRTYPE

    def isreg(self) -> bool:
        return self.type in REGULAR


def _read_frame(rd: BinaryIO) -> Optional[_Member]:
    """The next member from the parent's frame stream; None at the end of the archive."""
    hdr = rd.read(FRAME.size)
    if len(hdr) != FRAME.size:
        raise _Refuse("tar: unexpected end of data")
    kind, t, mode, uid, gid, mtime_ns, size, dmaj, dmin, nlen, llen, xlen = FRAME.unpack(hdr)
    if kind == F_END:
        return None
    var = rd.read(nlen + llen + xlen)
    if len(var) != nlen + llen + xlen or kind != F_MEMBER:
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
        kl, vl = XATTR.unpack_from(var, pos)
        pos += 8
        xattrs.append((var[pos:pos + kl].decode("utf-8", "surrogateescape"), var[pos + kl:pos + kl + vl]))
        pos += kl + vl
    m.xattrs = xattrs
    return m


_Rec = Tuple[os.stat_result, List[bytes], List[bytes]]
_SMALL = 1 << 16   # files up to this size are read whole, then written with one write


class _Extractor:
    """Writes members into the current root (we are chrooted), never following a symlink."""

    def __init__(self, mode: str, allow_devices: bool) -> None:
        if mode not in MODES:
            raise ValueError("extraction mode must be one of %s" % ", ".join(MODES))
        self.layer = mode != IMAGE    # over an existing tree: later members replace nodes
        self.oci = mode == OCI_LAYER
        self.allow_devices = allow_devices
        self.root_fd = os.open("/", _O_DIR)
        self.cache: Tuple[Tuple[str, ...], int] = ((), self.root_fd)
        self.seen: Set[Tuple[str, ...]] = set()    # archive paths
        self.files: Set[Tuple[str, ...]] = set()   # archive paths of regular files we created
        self.dirs: List[Tuple[Tuple[str, ...], _Member]] = []   # deferred directory metadata
        self.skipped: List[Tuple[str, str]] = []
        self.members = 0
        self.manifest: Optional[bytes] = None
        self.has_rootfs = False
        # Content hashes of the regular files written (import only), by rootfs-relative
        # path: the tree digest then needs no second read of the data.
        self.hashes: Optional[Dict[str, Tuple[int, str]]] = None if self.layer else {}
        # The digest's entries, taken from each node as it is finished (import only), so
        # the digest needs no walk of the tree: (stat, type fields, xattrs) by rootfs path.
        # None when a node could not be recorded: the tree is walked instead.
        self.recs: Optional[Dict[Tuple[str, ...], _Rec]] = None if self.layer else {}
        self.made: List[Tuple[str, ...]] = []    # directories made for members' parents
        # Fresh-node shortcuts (import only): every node is ours and new, created with a
        # known owner (ours: no setgid directory above it) and, umask being 0 and no
        # default ACL above it, exactly the mode we ask for. Then chown is skipped when the
        # owner is already right and chmod when the mode is.
        self.fresh = not self.layer and self._plain_root()
        self.me = (os.geteuid(), os.getegid())
        # OCI layer mode: paths this layer wrote or implied (whiteouts hide only lower
        # layers' nodes), and directory mtimes to put back once the layer is applied, so a
        # flattened tree (and the ACI built from it) does not depend on when it was built.
        self.implied: Set[Tuple[str, ...]] = set()
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

    @overload
    def _parent(self, parts: Tuple[str, ...], member: str) -> int:
        ...

    @overload
    def _parent(self, parts: Tuple[str, ...], member: str, create: bool) -> Optional[int]:
        ...

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
                    self.made.append(parts[:i + 1])
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
    def run(self, rd: BinaryIO) -> None:
        while True:
            m = _read_frame(rd)
            if m is None:
                break
            self.members += 1
            try:
                self.member(rd, m)
            except OSError as e:
                # The report names the member; OSError has no field for it.
                e.member = m.name  # type: ignore[attr-defined]
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

    def member(self, rd: BinaryIO, m: _Member) -> None:
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
            if not xattr_allowed(xname):
                raise _Refuse("%s: extended attribute %s is not allowed" % (m.name, xname))

    def node(self, rd: BinaryIO, m: _Member, parts: Tuple[str, ...], fs: Tuple[str, ...]) -> None:
        """Create the node of member ``m`` at ``fs`` (its parents made as needed)."""
        name, t = m.name, m.type
        pfd = self._parent(fs[:-1], name)
        if self.oci:
            self._touch(fs[:-1], pfd)
        leaf = fs[-1]
        if t in REGULAR:
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
            self._record_path(fs, pfd, leaf, [m.linkname.encode("utf-8", "surrogateescape")])
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
            self._record_path(fs, pfd, leaf, [b"%d" % dev] if kind != "fifo" else [])
        else:
            raise _Refuse("%s: unsupported member type %r" % (name, t))

    def read_manifest(self, rd: BinaryIO, m: _Member) -> None:
        if not m.isreg():
            t = m.type
            kind = "a symlink" if t == tarfile.SYMTYPE else "a hard link" if t == tarfile.LNKTYPE else \
                "a directory" if t == tarfile.DIRTYPE else "not a regular file"
            raise _Refuse("manifest: must be a regular file, not %s" % kind)
        if m.size > MAX_MANIFEST:
            raise _Refuse("manifest: %d bytes is more than %d" % (m.size, MAX_MANIFEST))
        data = rd.read(m.size)
        if len(data) != m.size:
            raise _Refuse("manifest: unexpected end of data")
        self.manifest = data
        if not self.layer:
            fd = os.open("manifest", _O_NEWFILE, 0o644, dir_fd=self.root_fd)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)

    def _create(self, fn: Callable[..., Any], args: Tuple[Any, ...], pfd: int, leaf: str, member: str,
                **kw: Any) -> Any:
        """fn(*args, dir_fd=pfd); on EEXIST make room (layer mode) or refuse, then retry.

        Creating first and looking only on EEXIST saves a stat per member on import.
        """
        try:
            return fn(*args, dir_fd=pfd, **kw)
        except FileExistsError:
            self._clear(pfd, leaf, member, False)
            return fn(*args, dir_fd=pfd, **kw)

    def write_file(self, rd: BinaryIO, m: _Member, pfd: int, leaf: str, parts: Tuple[str, ...]) -> None:
        # Fresh files are created with their final permission bits (never setuid/setgid/
        # sticky: those come after the owner is set), which saves a chmod for most files.
        mode = m.mode & 0o777 if self.fresh else 0o600
        size = m.size
        hashes = self.hashes
        h = hashlib.sha256() if hashes is not None else None
        # A small file's data is read whole before the file is made: one read, one write.
        data = rd.read(size) if 0 < size <= _SMALL else b""
        if len(data) != (size if size <= _SMALL else 0):
            raise _Refuse("%s: unexpected end of data" % m.name)
        fd = self._create(os.open, (leaf, _O_NEWFILE, mode), pfd, leaf, m.name)
        try:
            if data:
                n = os.write(fd, data)
                if n != size:
                    write_all(fd, memoryview(data)[n:])
                if h is not None:
                    h.update(data)
            left = size - len(data)
            while left:
                buf = rd.read(min(left, CHUNK))
                if not buf:
                    raise _Refuse("%s: unexpected end of data" % m.name)
                write_all(fd, buf)
                if h is not None:
                    h.update(buf)
                left -= len(buf)
            self._attrs(fd, m, mode if self.fresh else None)
            if hashes is not None and h is not None:
                hexd = h.hexdigest()
                hashes["/" + "/".join(parts[1:])] = (m.size, hexd)
                recs = self.recs
                if recs is not None and len(parts) > 1:
                    st = os.fstat(fd)
                    if st.st_size == m.size:
                        recs[parts[1:]] = (st, [b"%d" % m.size, hexd.encode()], xattr_fields(fd))
                    else:
                        self.recs = None
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

    def hardlink(self, m: _Member, pfd: int, leaf: str, parts: Tuple[str, ...]) -> None:
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
        recs = self.recs
        if recs is not None:   # one inode: the target's entry under this name
            trec = recs.get(target[1:])
            if trec is None:
                self.recs = None
            else:
                recs[parts[1:]] = trec

    # -- OCI layers: whiteouts, mtimes
    def oci_member(self, rd: BinaryIO, m: _Member, parts: Tuple[str, ...]) -> None:
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
            buf = rd.read(min(left, CHUNK))
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
            try:
                fd = _open_dir(parts)
                try:
                    os.utime(fd, ns=(mtime_ns, mtime_ns))
                finally:
                    os.close(fd)
            except OSError as e:
                if e.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    raise

    def finish_dirs(self) -> None:
        """Directory modes/owners/mtimes last, deepest first (children change mtimes)."""
        self.dirs.sort(key=lambda d: len(d[0]), reverse=True)
        for fs, m in self.dirs:
            fd = _open_dir(fs)
            try:
                self._attrs(fd, m)
                self._record_fd(fs, fd)
            finally:
                os.close(fd)

    # -- the digest's entries
    def _record_fd(self, fs: Tuple[str, ...], fd: int) -> None:
        """Record the directory ``fs`` (fs path, import only) from its open fd."""
        recs = self.recs
        if recs is not None and fs and fs[0] == "rootfs":
            recs[fs[1:]] = (os.fstat(fd), [], xattr_fields(fd))

    def _record_path(self, fs: Tuple[str, ...], pfd: int, leaf: str, tail: List[bytes]) -> None:
        """Record a symlink or device (import only): stat through the held parent, no following."""
        recs = self.recs
        if recs is not None and fs[0] == "rootfs":
            st = os.stat(leaf, dir_fd=pfd, follow_symlinks=False)
            recs[fs[1:]] = (st, tail, xattr_fields("/" + "/".join(fs)))

    def digest(self) -> Optional[str]:
        """tree_digest of the rootfs we wrote, reusing the content hashes taken on the way."""
        hashes = self.hashes
        if hashes is None:
            return None
        recs = self.recs
        if recs is not None:
            for fs in self.made:    # parents no member described: as made (0755, ours)
                if fs[0] == "rootfs" and fs[1:] not in recs:
                    fd = _open_dir(fs)
                    try:
                        self._record_fd(fs, fd)
                    finally:
                        os.close(fd)
            if () in recs:
                return digest_of(entry_record("/" + "/".join(p), st, tail, xattrs)
                                 for p, (st, tail, xattrs) in sorted(recs.items()))

        def known(rel: str, st: os.stat_result) -> Optional[str]:
            e = hashes.get(rel)
            # A node we did not write or whose size moved is read instead (never trusted).
            return e[1] if e is not None and e[0] == st.st_size else None

        return tree_digest("/rootfs", known)


def write_all(fd: int, data: Union[bytes, bytearray, memoryview]) -> None:
    """os.write until all of ``data`` is written (pipes and files take it in pieces)."""
    mv = memoryview(data)
    while mv:
        mv = mv[os.write(fd, mv):]


def _open_dir(parts: Tuple[str, ...]) -> int:
    """fd of directory ``parts`` below the root, opened one component at a time, no symlinks."""
    fd = os.open("/", _O_DIR)
    try:
        for comp in parts:
            nfd = os.open(comp, _O_DIR, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


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


def _report(fd: int, msg: Dict[str, Any]) -> None:
    write_all(fd, (json.dumps(msg) + "\n").encode("utf-8", "surrogateescape"))


def run_child(data_r: int, res_w: int, dest: str, *, mode: str, allow_devices: bool) -> None:
    """Body of the forked extractor: confine, extract, report one JSON line, os._exit.

    ``data_r`` carries the scanner's frames, ``res_w`` takes the report; ``mode`` is one of
    MODES. Never returns.
    """
    status = 1
    msg: Dict[str, Any] = {"ok": False, "kind": "internal", "error": "the extraction process failed"}
    try:
        try:
            linux.close_fds(keep=(data_r, res_w))
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
        pipe = os.fdopen(data_r, "rb", buffering=CHUNK)
        try:
            ex = _Extractor(mode, allow_devices)
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
               "manifest": (ex.manifest or b"").decode("latin-1"), "digest": digest}
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
