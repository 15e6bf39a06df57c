"""Rendered trees: an image's root filesystem with its dependencies applied.

A tree is rendered once and shared read-only by every pod (overlayfs lower layer), so its
integrity matters: its digest covers every entry's type, mode, owner, size, content, link
target and xattrs (not mtimes, which overlay copy-up and tools touch) and is recomputed on
demand by the store check.
"""
from __future__ import annotations

import hashlib
import os
import stat
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Iterable, List, Optional

from .errors import StoreError

_CHUNK = 1 << 20


def tree_key(image_id: str, dep_ids: Iterable[str]) -> str:
    """The key of a tree: the image ID alone, or ``deps-`` + a hash of the resolved chain.

    Including the resolved dependency IDs means a moved ``base:latest`` renders a new tree
    instead of reusing a stale one (rkt's ``deps-`` keys).
    """
    deps = list(dep_ids)
    if not deps:
        return image_id
    h = hashlib.sha512()
    for i in [image_id] + deps:
        h.update(i.encode("ascii") + b"\n")
    return "deps-sha512-" + h.hexdigest()


def xattr_fields(node: int | str) -> List[bytes]:
    """A node's xattrs as the digest records them; ``node``: a path (not followed) or an open fd."""
    follow = isinstance(node, int)   # an fd is the node itself; the flag is refused with one
    try:
        names = sorted(os.listxattr(node, follow_symlinks=follow))
    except OSError:
        return []
    out = []
    for n in names:
        try:
            out.append(n.encode() + b"=" + os.getxattr(node, n, follow_symlinks=follow))
        except OSError:
            pass
    return out


def entry_record(rel: str, st: os.stat_result, tail: List[bytes], xattrs: List[bytes]) -> bytes:
    """One entry of the digest: one format for the walk here and the extractor's own records."""
    rec = [rel.encode("utf-8", "surrogateescape"), b"%o" % st.st_mode, b"%d:%d" % (st.st_uid, st.st_gid)]
    return b"\0".join(rec + tail + xattrs) + b"\n"


def digest_of(records: Iterable[bytes]) -> str:
    """The digest of entry records given in the walk's order (paths sorted component-wise)."""
    h = hashlib.sha512()
    for r in records:
        h.update(r)
    return "sha512-" + h.hexdigest()


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        with os.fdopen(fd, "rb", buffering=0) as f:
            fd = -1
            while True:
                b = f.read(_CHUNK)
                if not b:
                    break
                h.update(b)
    finally:
        if fd >= 0:
            os.close(fd)
    return h.hexdigest()


def tree_digest(rootfs: str, known: Optional[Callable[[str, os.stat_result], Optional[str]]] = None) -> str:
    """Digest of a root filesystem, independent of directory listing order and mtimes.

    ``known(rel, st)`` may return the sha256 hex digest of a regular file's content when
    the caller already has it (the extractor hashes what it writes); None means read it.
    """
    h = hashlib.sha512()

    def entry(rel: str, full: str, st: os.stat_result) -> None:
        m = st.st_mode
        tail: List[bytes] = []
        if stat.S_ISREG(m):
            digest = known(rel, st) if known is not None else None
            tail = [b"%d" % st.st_size, (digest or _file_digest(full)).encode()]
        elif stat.S_ISLNK(m):
            tail = [os.readlink(full).encode("utf-8", "surrogateescape")]
        elif stat.S_ISCHR(m) or stat.S_ISBLK(m):
            tail = [b"%d" % st.st_rdev]
        h.update(entry_record(rel, st, tail, xattr_fields(full)))

    def walk(rel: str, full: str) -> None:
        try:
            names = sorted(os.listdir(full))
        except OSError as e:
            raise StoreError("cannot read tree directory %s: %s" % (full, e.strerror))
        for name in names:
            r = rel + "/" + name
            f = os.path.join(full, name)
            st = os.lstat(f)
            entry(r, f, st)
            if stat.S_ISDIR(st.st_mode):
                walk(r, f)

    st = os.lstat(rootfs)
    entry("/", rootfs, st)
    walk("", rootfs)
    return "sha512-" + h.hexdigest()


def apply_path_whitelist(rootfs: str, whitelist: Iterable[str]) -> None:
    """Keep only the whitelisted paths (and the directories leading to them)."""
    keep = set()
    for p in whitelist:
        p = "/" + p.strip("/")
        keep.add(p)
        parent = os.path.dirname(p)
        while parent != "/":
            keep.add(parent)
            parent = os.path.dirname(parent)
    keep.add("/")

    def walk(rel: str, full: str) -> None:
        for name in os.listdir(full):
            r = (rel.rstrip("/") + "/" + name)
            f = os.path.join(full, name)
            st = os.lstat(f)
            if r not in keep:
                if stat.S_ISDIR(st.st_mode):
                    import shutil

                    shutil.rmtree(f)
                else:
                    os.unlink(f)
            elif stat.S_ISDIR(st.st_mode):
                walk(r, f)

    walk("/", rootfs)
