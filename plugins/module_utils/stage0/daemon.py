"""Start a long-lived process detached from the caller and wait for its ready line.

stage0 starts two kinds: a pod's keeper (run.start_detached) and the data directory's
metadata service (metadata.py). Both must outlive the module process, keep none of its
fds or signal state, and tell the caller whether they started: the ready line of
stage1/contract.py on the fd that `--ready-fd=N` names. One way to do it keeps the two
from drifting apart (a leaked fd in one would hold a pipe or a lock open for a pod's life).
Start path: no import beyond os, sys and time at import.
"""
import os
import sys
import time

from ..stage1 import contract

TYPE_CHECKING = False  # type checkers take it as true; typing costs milliseconds per start
if TYPE_CHECKING:
    from typing import Dict, List, Optional, Sequence, Tuple  # noqa: F401


def spawn(argv: "List[str]", env: "Dict[str, str]", cwd: str, keep: "Sequence[int]" = (),
          detach: bool = False, umask: "Optional[int]" = None) -> "Tuple[Optional[int], int]":
    """Run argv + ``--ready-fd=N`` in a new session, stdio on /dev/null, with only the fds
    in ``keep`` and the ready pipe open and every signal at its default.

    Returns (pid, read end of the ready pipe; for wait_ready). pid is our child's, for the
    caller to reap; with ``detach`` the process is a grandchild, reparented at once to the
    host (or to a subreaper), and pid is None.
    """
    r, w = os.pipe()
    pid = fork()
    if pid == 0:  # pragma: no cover - leaves by exec or _exit
        try:
            from ..stage1 import linux

            os.setsid()
            if detach and os.fork() != 0:
                os._exit(0)
            null = os.open("/dev/null", os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(null, fd)
            for fd in list(keep) + [w]:
                os.set_inheritable(fd, True)
            linux.close_fds(keep=tuple(keep) + (w,))
            linux.reset_signals()
            os.chdir(cwd)
            if umask is not None:
                os.umask(umask)
            os.execve(argv[0], argv + ["%s%d" % (contract.READY_FLAG, w)], env)
        finally:
            os._exit(contract.EXIT_STAGE1)
    os.close(w)
    if not detach:
        return pid, r
    while True:  # the middle process leaves at once
        try:
            os.waitpid(pid, 0)
            return None, r
        except InterruptedError:  # pragma: no cover
            continue


def fork() -> int:
    """os.fork with nothing left in sys.stdout's or sys.stderr's buffer, which the child
    would write a second time if it ever flushed it."""
    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except (AttributeError, OSError, ValueError):
            pass
    return os.fork()


def wait_ready(fd: int, timeout: float) -> str:
    """The ready line read from fd (which this closes); "" when none came within timeout or
    the process closed the pipe without one. After a failure line it waits for the pipe's
    end too: the process has then exited, or at least is past its failure."""
    try:
        line = _read(fd, time.monotonic() + timeout, line=True)
        if line.startswith(contract.READY_FAILED + " "):
            _read(fd, time.monotonic() + timeout, line=False)
        return line
    finally:
        os.close(fd)


def _read(fd: int, deadline: float, line: bool) -> str:
    """Up to the first newline (line) or the end of the pipe, or until the deadline."""
    import select

    out = b""
    while not (line and out.endswith(b"\n")):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        if not select.select([fd], [], [], left)[0]:
            continue
        b = os.read(fd, 4096)
        if not b:
            break
        out += b
    return out.decode("utf-8", "replace")
