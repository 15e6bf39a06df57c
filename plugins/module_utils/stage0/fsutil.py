"""Crash-safe file system primitives: everything visible under its final name is whole.

The rule everywhere: write in a temporary place, fsync, rename into place, fsync the parent
directory (neither rkt nor containerd did the last step; a crash could lose the rename).
"""
import errno
import os
TYPE_CHECKING = False  # typing costs milliseconds at start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

_libc = None


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: str, data: bytes, mode: int = 0o644, tmp_dir: "Optional[str]" = None) -> None:
    """Write ``data`` to ``path`` so that readers see the old file or the whole new one."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(tmp_dir or directory, ".%s.%d.%s.tmp" % (os.path.basename(path), os.getpid(), os.urandom(4).hex()))
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    fsync_dir(directory)


def read_small(path: str, limit: int = 1 << 20) -> bytes:
    """Read a small regular file without following a symlink or blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        import stat

        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        if st.st_size > limit:
            raise OSError(errno.EFBIG, "file larger than %d bytes" % limit, path)
        chunks = []
        while True:
            b = os.read(fd, 1 << 16)
            if not b:
                break
            chunks.append(b)
            if sum(len(c) for c in chunks) > limit:
                raise OSError(errno.EFBIG, "file larger than %d bytes" % limit, path)
        return b"".join(chunks)
    finally:
        os.close(fd)


def read_option_file(file: str, field: str, limit: int, follow: bool = False) -> bytes:
    """A small regular file an option names on the managed host (env_file, a secret's source),
    read without blocking on a FIFO; any failure is that option's ValidationError."""
    from .errors import ValidationError

    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (0 if follow else os.O_NOFOLLOW)
    try:
        fd = os.open(file, flags)
    except OSError as e:
        raise ValidationError(field, file, "cannot be read: %s" % (e.strerror or e))
    try:
        import stat

        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValidationError(field, file, "is not a regular file")
        data = os.read(fd, limit + 1)
    finally:
        os.close(fd)
    if len(data) > limit:
        raise ValidationError(field, file, "is larger than %d bytes" % limit)
    return data


def syncfs(path: str) -> None:
    """Flush one file system (cheaper than an fsync per file of an extracted tree)."""
    global _libc
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if _libc is None:
            import ctypes

            _libc = ctypes.CDLL(None, use_errno=True)
        if _libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)


def remove_tree(path: str) -> None:
    """Remove a directory tree without following symlinks out of it; missing is fine.

    shutil.rmtree uses the fd-based walk on Linux (never follows a symlink), which matters
    here: trees come from untrusted images.
    """
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    import stat

    if not stat.S_ISDIR(st.st_mode):
        os.unlink(path)
        return
    import shutil

    shutil.rmtree(path)


def makedirs(path: str, mode: int = 0o700) -> None:
    os.makedirs(path, mode=mode, exist_ok=True)
