"""Building ACIs: a tree and a manifest into a deterministic archive, like ``actool build``.

Build runs in the module's own process and trusts its input (a tree on this host); the
archive it writes is imported like any other, through aci_scan and aci_extract, so nothing
built here skips a check. Standard library only; never imports ansible.
"""
import errno
import hashlib
import io
import os
import stat
import tarfile
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

from . import errors, schema
from .aci_scan import COMPRESSIONS, xattr_allowed
from .errors import ImageError


class _HashWriter:
    """File-like sink that hashes what tarfile writes before compressing it."""

    def __init__(self, out: io.BufferedIOBase) -> None:
        self.out = out
        self.h = hashlib.sha512()

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.out.write(data)
        return len(data)


def _manifest_bytes(manifest: Union[Dict[str, Any], str, bytes]) -> bytes:
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


def _walk_sub(rel: str, path: str) -> Iterator[Tuple[str, str, os.stat_result]]:
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
    return [(n, os.getxattr(path, n, follow_symlinks=False)) for n in sorted(names) if xattr_allowed(n)]


def build_aci(rootfs_dir: str, manifest: Union[Dict[str, Any], str, bytes], out_path: str, *,
              compression: str = "gzip", mtime: Optional[int] = 0,
              owner: Optional[Tuple[int, int]] = (0, 0)) -> str:
    """Build an ACI like ``actool build``, deterministically; returns its image ID.

    Same inputs give the same ID on any machine: PAX format, members sorted (manifest,
    rootfs, then the tree depth-first by byte order), owner ``owner`` (None keeps the
    files' numeric owners; names are always empty), mtime ``mtime`` (None keeps the files'
    whole seconds), modes and allowed xattrs kept, gzip header without name or time.
    Written beside ``out_path`` and renamed into place.
    """
    if compression == "none":
        compression = "tar"
    if compression not in COMPRESSIONS:
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
            comp: io.BufferedIOBase
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
            # A stream ("w|") only writes: typeshed's file protocol also asks for read and seek.
            tf = tarfile.open(fileobj=hw, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                              encoding="utf-8", errors="surrogateescape")

            def info(name: str, st: Optional[os.stat_result]) -> "tarfile.TarInfo":
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
    xattrs = _xattrs_of(path)
    if xattrs:
        headers = dict(ti.pax_headers)
        for name, value in xattrs:
            headers["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
        ti.pax_headers = headers
