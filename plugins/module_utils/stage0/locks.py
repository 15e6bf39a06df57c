"""flock-based locks: shared/exclusive, blocking or not, released when the fd closes.

flock (not fcntl record locks) because it belongs to the open file description: a child
that inherits the fd keeps the lock alive (stage1 holds the pod lock that way) and the
kernel drops it when the last holder dies, so a crash never leaves a stale lock.
"""
import errno
import fcntl
import os
TYPE_CHECKING = False  # typing costs milliseconds at start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional

from .errors import StoreError


class Lock:
    """A lock on a file (created if missing) or on a directory."""

    def __init__(self, path: str, directory: bool = False) -> None:
        self.path = path
        flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
        if directory:
            flags |= os.O_DIRECTORY
        else:
            flags |= os.O_CREAT
        self.fd: "Optional[int]" = os.open(path, flags, 0o600)

    def _flock(self, op: int, block: bool) -> bool:
        if self.fd is None:
            raise StoreError("lock %s is closed" % self.path)
        if not block:
            op |= fcntl.LOCK_NB
        try:
            fcntl.flock(self.fd, op)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN) and not block:
                return False
            raise

    def exclusive(self, block: bool = True) -> bool:
        return self._flock(fcntl.LOCK_EX, block)

    def shared(self, block: bool = True) -> bool:
        return self._flock(fcntl.LOCK_SH, block)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "Lock":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def locked(path: str, exclusive: bool = True, directory: bool = False) -> Lock:
    """Open ``path`` and take the lock, blocking; use as a context manager."""
    lock = Lock(path, directory=directory)
    try:
        if exclusive:
            lock.exclusive()
        else:
            lock.shared()
    except BaseException:
        lock.close()
        raise
    return lock


def try_locked(path: str, exclusive: bool = True, directory: bool = False) -> "Optional[Lock]":
    """Take the lock without blocking; None when someone else holds it."""
    try:
        lock = Lock(path, directory=directory)
    except FileNotFoundError:
        return None
    ok = lock.exclusive(block=False) if exclusive else lock.shared(block=False)
    if not ok:
        lock.close()
        return None
    return lock
