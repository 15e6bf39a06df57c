"""Exporting an app's root filesystem, or a stored image flattened, as an ACI (``rkt export``).

The tree may belong to a running app, which can rename, swap or link anything under it while
we read: every step goes through directory file descriptors opened with ``O_NOFOLLOW``, so a
symlink is archived as a link and never followed, and a file that turns out not to be what
``lstat`` said is refused rather than read. An overlay pod's tree is merged here, in user
space, from its upper directory and the image's rendered tree (whiteouts and opaque
directories as overlayfs reads them): no mount is made, so nothing can be left behind.

The archive is deterministic, so the same tree gives the same image ID on any machine:
PAX headers, members in byte order depth-first, mtime 0, owner names empty (numeric owners
and modes kept: they are part of the tree), only the extended attributes an import accepts,
hard links within the tree kept as links, a gzip header without name or time. Device nodes,
FIFOs and sockets are left out and listed (an import would not create them). The result is
read back through the importer's scanner before it is put in place. Standard library only; never imports ansible.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import tarfile
from typing import Any, BinaryIO, Dict, Iterator, List, Optional, Tuple

from ..stage1 import contract
from . import aci, schema
from .aci_scan import xattr_allowed
from .errors import ImageError, RocketError, ValidationError

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_OPAQUE = "trusted.overlay.opaque"


class ExportResult:
    """What an export wrote (or would write): ``id``, ``size`` of the tar, ``skipped`` paths."""

    def __init__(self, image_id: str, size: int, manifest: Dict[str, Any], skipped: List[str]) -> None:
        self.id = image_id
        self.size = size
        self.manifest = manifest
        self.skipped = skipped


def export_manifest(image_manifest: Dict[str, Any], name: Optional[str] = None) -> Dict[str, Any]:
    """The image manifest of a flattened export: no dependencies, no path whitelist (applied)."""
    m = {k: v for k, v in image_manifest.items() if k not in ("dependencies", "pathWhitelist")}
    if name is not None:
        m["name"] = name
    try:
        schema.parse_image_manifest(m)
    except ValidationError as e:
        raise RocketError("image_name: %s" % e) from None
    return m


def app_layers(pod: Any, app: str) -> List[str]:
    """The directories an app's root is made of, top first (upper, image tree) or one copy."""
    plan = pod.read_json(contract.MOUNTS)
    target = "%s/opt/stage2/%s/rootfs" % (contract.STAGE1_ROOTFS, app)
    for m in plan.get("mounts") or []:
        if m.get("target") == target and m.get("lower"):
            return [os.path.join(pod.path, m["upper"]), m["lower"]]
    return [os.path.join(pod.path, "stage1", "rootfs", "opt", "stage2", app, "rootfs")]   # a copy (no overlay)


def app_manifest(pod: Any, app: str) -> Dict[str, Any]:
    """The image manifest the app was prepared from (as the pod directory keeps it)."""
    with open(os.path.join(pod.path, contract.app_file(app, "manifest")), "rb") as f:
        return schema.parse_image_manifest(f.read())


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _opaque(fd: int) -> bool:
    try:
        return os.getxattr(fd, _OPAQUE) == b"y"
    except OSError:
        return False


class _Node:
    __slots__ = ("rel", "name", "st", "dfd", "lower")

    def __init__(self, rel: str, name: str, st: os.stat_result, dfd: int, lower: List[int]) -> None:
        self.rel = rel        # archive name
        self.name = name      # name in the directory dfd
        self.st = st
        self.dfd = dfd        # the directory (of the layer the entry comes from) holding it
        self.lower = lower    # for a directory: the lower layers' same directory, opened


def _open_dir(name: str, dfd: int, rel: str) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dfd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT):
            raise ImageError("%s changed while it was exported (it is no longer a directory)" % rel) from None
        raise


def _children(dirs: List[int], rel: str) -> Iterator[_Node]:
    """A merged directory's entries in byte order; each directory's lower layers opened."""
    seen: Dict[str, Tuple[int, os.stat_result]] = {}
    for i, dfd in enumerate(dirs):
        for name in os.listdir(dfd):
            if name in seen:
                continue
            try:
                seen[name] = (i, os.lstat(name, dir_fd=dfd))
            except FileNotFoundError:
                continue   # removed by the app since listdir
    for name in sorted(seen, key=os.fsencode):
        i, st = seen[name]
        if _is_whiteout(st):
            continue
        crel = rel + "/" + name
        lower: List[int] = []
        if stat.S_ISDIR(st.st_mode):
            top = _open_dir(name, dirs[i], crel)
            lower.append(top)
            if not _opaque(top):
                for dfd in dirs[i + 1:]:
                    try:
                        lst = os.lstat(name, dir_fd=dfd)
                    except FileNotFoundError:
                        continue
                    if not stat.S_ISDIR(lst.st_mode):
                        break
                    fd = _open_dir(name, dfd, crel)
                    lower.append(fd)
                    if _opaque(fd):
                        break
        yield _Node(crel, name, st, dirs[i], lower)


def _xattrs(fd: int) -> Dict[str, str]:
    try:
        names = os.listxattr(fd)
    except OSError as e:
        if e.errno in (errno.ENOTSUP, errno.EOPNOTSUPP):
            return {}
        raise
    return {"SCHILY.xattr." + n: os.getxattr(fd, n).decode("utf-8", "surrogateescape")
            for n in sorted(names) if xattr_allowed(n)}


class _Sink:
    """Hashes the tar stream, then compresses it into ``out`` (None: hash only, check mode)."""

    def __init__(self, out: Optional[BinaryIO], compression: str) -> None:
        self.h = hashlib.sha512()
        self.size = 0
        self.raw = out
        self.comp: Optional[Any] = None
        if out is not None:
            if compression == "gzip":
                import gzip
                self.comp = gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6)
            elif compression == "xz":
                import lzma
                self.comp = lzma.LZMAFile(out, "wb", format=lzma.FORMAT_XZ, preset=6)
            else:
                self.comp = out

    def write(self, data: bytes) -> int:
        self.h.update(data)
        self.size += len(data)
        if self.comp is not None:
            self.comp.write(data)
        return len(data)

    def close(self) -> None:
        if self.comp is not None and self.comp is not self.raw:
            self.comp.close()


def write_tree(layers: List[str], manifest: Dict[str, Any], out: Optional[BinaryIO],
               compression: str = "gzip") -> ExportResult:
    """Archive the merge of ``layers`` (top first) with ``manifest`` into ``out`` (None: only hash)."""
    data = schema.dump_manifest(manifest)
    sink = _Sink(out, compression)
    # A stream ("w|") only writes: typeshed's file protocol also asks for read and seek.
    tf = tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT,  # type: ignore[call-overload]
                      encoding="utf-8", errors="surrogateescape")
    skipped: List[str] = []
    links: Dict[Tuple[int, int], str] = {}

    def info(name: str, st: Optional[os.stat_result]) -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.mode = stat.S_IMODE(st.st_mode) if st is not None else 0o644
        ti.uid, ti.gid = (st.st_uid, st.st_gid) if st is not None else (0, 0)
        ti.uname = ti.gname = ""
        ti.mtime = 0
        return ti

    mi = info("manifest", None)
    mi.size = len(data)
    tf.addfile(mi, io.BytesIO(data))
    opened: List[int] = []
    stack: List[Tuple[Iterator[_Node], List[int]]] = []
    try:
        for path in layers:
            try:
                opened.append(os.open(path, _DIR_FLAGS))
            except FileNotFoundError:
                continue   # an upper directory an app never wrote to may not exist
        if not opened:
            raise ImageError("nothing to export: %s does not exist" % layers[0])
        top = os.fstat(opened[0])
        ri = info("rootfs", top)
        ri.type = tarfile.DIRTYPE
        ri.pax_headers = _xattrs(opened[0])
        tf.addfile(ri)
        stack.append((_children(opened, "rootfs"), []))
        while stack:
            it, held = stack[-1]
            node = next(it, None)
            if node is None:
                stack.pop()
                for fd in held:
                    os.close(fd)
                continue
            st = node.st
            ti = info(node.rel, st)
            mode = st.st_mode
            if stat.S_ISDIR(mode):
                ti.type = tarfile.DIRTYPE
                ti.mode = stat.S_IMODE(os.fstat(node.lower[0]).st_mode)
                ti.pax_headers = _xattrs(node.lower[0])
                tf.addfile(ti)
                stack.append((_children(node.lower, node.rel), node.lower))
            elif stat.S_ISLNK(mode):
                ti.type = tarfile.SYMTYPE
                ti.linkname = os.readlink(node.name, dir_fd=node.dfd)   # kept as text, never followed
                tf.addfile(ti)
            elif stat.S_ISREG(mode):
                key = (st.st_dev, st.st_ino)
                if st.st_nlink > 1 and key in links:
                    ti.type = tarfile.LNKTYPE
                    ti.linkname = links[key]
                    tf.addfile(ti)
                    continue
                try:
                    fd = os.open(node.name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                                 dir_fd=node.dfd)
                except OSError as e:
                    raise ImageError("%s changed while it was exported: %s" % (node.rel, e.strerror)) from None
                with os.fdopen(fd, "rb") as f:
                    fst = os.fstat(fd)
                    if (fst.st_dev, fst.st_ino) != key or not stat.S_ISREG(fst.st_mode):
                        raise ImageError("%s changed while it was exported (another file is there now)" % node.rel)
                    ti.size = fst.st_size
                    ti.pax_headers = _xattrs(fd)
                    links[key] = node.rel
                    tf.addfile(ti, f)   # a file that shrinks meanwhile makes tarfile fail, not lie
            else:
                # Devices, FIFOs and sockets: an import does not create them, so an image that
                # held them would not survive a round trip with the same ID.
                skipped.append(node.rel[len("rootfs"):])
        tf.close()
        sink.close()
    except BaseException:
        sink.comp = None   # the half-written stream is dropped: tarfile's finaliser must not write to it
        raise
    finally:
        for fd in opened:
            os.close(fd)
        for dummy_it, held in stack:
            for fd in held:
                try:
                    os.close(fd)
                except OSError:
                    pass
    return ExportResult("sha512-" + sink.h.hexdigest(), sink.size, manifest, skipped)


def export(layers: List[str], manifest: Dict[str, Any], dest: str, *, compression: str = "gzip",
           check_mode: bool = False) -> Tuple[bool, ExportResult]:
    """Write the ACI to ``dest`` unless it already holds the same image: (changed, result)."""
    if compression not in ("gzip", "xz", "none"):
        raise RocketError("compression: must be gzip, xz or none, not %s" % compression)
    dest = os.path.abspath(dest)
    parent = os.path.dirname(dest)
    if not os.path.isdir(parent):
        raise RocketError("dest: directory %s does not exist" % parent)
    if os.path.isdir(dest):
        raise RocketError("dest: %s is a directory" % dest)
    current = _current_id(dest)
    if check_mode:
        res = write_tree(layers, manifest, None, compression)
        return res.id != current, res
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=parent, prefix="." + os.path.basename(dest) + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as raw:
            res = write_tree(layers, manifest, raw, compression)
            raw.flush()
            os.fsync(raw.fileno())
        with open(tmp, "rb") as f:
            checked, dummy_size, dummy_manifest = aci.inspect_aci(f)
        if checked != res.id:
            raise ImageError("the exported archive reads back as %s, not %s" % (checked, res.id))
        if res.id == current:
            os.unlink(tmp)
            return False, res
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return True, res


def _current_id(dest: str) -> Optional[str]:
    """The image ID of what ``dest`` holds now, or None (missing, or not an ACI)."""
    try:
        with open(dest, "rb") as f:
            return aci.image_id_of(f)
    except (OSError, RocketError):
        return None
