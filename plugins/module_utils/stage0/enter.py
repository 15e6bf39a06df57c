"""Enter a running pod: stage1's enter entrypoint runs a command as the app runs."""
import os
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from ..stage1 import contract
from . import pod as podmod
from .errors import RocketError, TimedOut
from .run import entrypoint, moved_error


def command(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]] = None,
            chdir: Optional[str] = None, user: Optional[str] = None) -> Tuple[List[str], Dict[str, str], str]:
    """(argv, environment, cwd) of the process that runs ``argv`` in ``app`` of a running pod.

    For callers that stream the command's input or output (the connection plugin) rather
    than collect it; checks that the pod runs and names the app when it has several.
    """
    return _command(pod, app, argv, environment, chdir, user)[:3]


def _command(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]],
             chdir: Optional[str], user: Optional[str] = None) -> Tuple[List[str], Dict[str, str], str, str, int]:
    try:
        return _command_of(pod, app, argv, environment, chdir, user)
    except FileNotFoundError:  # the pod's manifest or spec: it exited and was collected or removed
        err = moved_error(pod)
        if err is None:
            raise
        raise _not_running(pod, err) from None


def _not_running(pod: "podmod.Pod", err: Exception) -> Exception:
    """NotFoundError stays (the pod is gone); a move means the pod is not running any more."""
    if isinstance(err, podmod.PodStateError):
        return podmod.PodStateError("pod %s is %s, not running" % (pod.uuid, pod.state()))
    return err


def _command_of(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]],
                chdir: Optional[str], user: Optional[str] = None) -> Tuple[List[str], Dict[str, str], str, str, int]:
    if pod.state() != "running":
        raise podmod.PodStateError("pod %s is %s, not running" % (pod.uuid, pod.state()))
    app = podmod.choose_app(pod, app)
    if not argv:
        argv = ["/bin/sh"]
    pid = pod.pid()
    if not pid:
        raise podmod.PodStateError("pod %s is not running yet" % pod.uuid)
    cmd = [sys.executable, "-I", "-S", "-B", entrypoint(pod, "enter"), "--pid=%d" % pid, "--app=%s" % app]
    if chdir:
        cmd.append("--chdir=%s" % chdir)
    if user:
        cmd.append("--user=%s" % user)
    cmd += ["--"] + list(argv)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if environment:
        env[contract.ENV_ENTER_ENV] = "\0".join("%s=%s" % (k, v) for k, v in environment.items())
    return cmd, env, pod.path, app, pid


def enter(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]] = None,
          chdir: Optional[str] = None, stdin: Optional[bytes] = None, timeout: Optional[float] = None,
          capture: bool = True, output_limit: Optional[int] = None, user: Optional[str] = None) -> Tuple[int, bytes, bytes]:
    """Run ``argv`` in ``app`` of a running pod; returns (rc, stdout, stderr).

    ``output_limit``: the most bytes kept of stdout and of stderr each; more kills the
    command and raises OutputTooLarge (a pod must not fill the caller's memory). ``user``:
    docker exec's ``-u`` (``user[:group]``), as far as the app's own privileges allow."""
    cmd, env, cwd, app, pid = _command(pod, app, argv, environment, chdir, user)
    try:
        if capture and output_limit:
            p = _run_capped(cmd, cwd, env, stdin or b"", timeout, output_limit)
        else:
            p = subprocess.run(cmd, cwd=cwd, env=env, input=stdin if stdin is not None else b"",
                               stdout=subprocess.PIPE if capture else None,
                               stderr=subprocess.PIPE if capture else None, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TimedOut("the command did not finish within %ss" % timeout) from None
    except OSError:  # the child's chdir to the pod's directory: the pod was moved or removed
        err = moved_error(pod)
        if err is None:
            raise
        raise _not_running(pod, err) from None
    # stage1 enter's own words (they start with "enter: ") that what it joined ended under it.
    said = (p.returncode == contract.EXIT_STAGE1 and (p.stderr or b"").startswith(b"enter: ")
            and contract.ENTER_TARGET_EXITED.encode() in (p.stderr or b""))
    if said or vanished(pod, app, pid, p.returncode):
        # stage1's enter failed, or the command was killed, because the app or the pod ended
        # meanwhile: say so, rather than hand back stage1's words about a missing /proc entry
        # or the kill's status as the command's exit code.
        raise podmod.PodStateError("app %s of pod %s exited while a command was entering it" % (app, pod.uuid))
    if p.returncode == contract.EXIT_STAGE1 and (p.stderr or b"").startswith(b"enter: "):
        # stage1's enter failed before the command ran (a user the image lacks, a bad chdir):
        # an error of the task, not an exit status of a command that never was
        raise EnterFailed("the command did not run in app %s of pod %s: %s"
                          % (app, pod.uuid, p.stderr[len(b"enter: "):].decode("utf-8", "replace").strip()))
    return p.returncode, p.stdout or b"", p.stderr or b""


class EnterFailed(RocketError):
    """stage1's enter could not start the command (it says why)."""


class OutputTooLarge(RocketError):
    """A command entered in a pod wrote more than the caller takes (``stream``, ``limit``)."""

    def __init__(self, stream: str, limit: int) -> None:
        super().__init__("the command wrote more than %d bytes to %s; it was killed (raise the output limit, "
                         "or write the output to a file in the app)" % (limit, stream))
        self.stream, self.limit = stream, limit


def _run_capped(cmd: List[str], cwd: str, env: Dict[str, str], stdin: bytes, timeout: Optional[float],
                limit: int) -> "subprocess.CompletedProcess[bytes]":
    """subprocess.run with stdout and stderr each capped at ``limit`` bytes."""
    import selectors
    import time

    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    if p.stdin is None or p.stdout is None or p.stderr is None:  # pragma: no cover - PIPE gives all three
        raise RocketError("enter: the command's pipes are missing")
    out_fd, err_fd, in_fd = p.stdout.fileno(), p.stderr.fileno(), p.stdin.fileno()
    names = {out_fd: "stdout", err_fd: "stderr"}
    got: Dict[int, List[bytes]] = {fd: [] for fd in names}
    size = {fd: 0 for fd in names}
    pending = memoryview(stdin)
    deadline = None if timeout is None else time.monotonic() + timeout
    sel = selectors.DefaultSelector()
    try:
        for fd in names:
            sel.register(fd, selectors.EVENT_READ)
        if pending:
            os.set_blocking(in_fd, False)
            sel.register(in_fd, selectors.EVENT_WRITE)
        else:
            p.stdin.close()
        while sel.get_map():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise subprocess.TimeoutExpired(cmd, timeout or 0)
            for key, dummy_events in sel.select(left):
                fd = key.fd
                if fd == in_fd:
                    try:
                        pending = pending[os.write(fd, pending[:65536]):]
                    except BrokenPipeError:
                        pending = pending[:0]
                    if not pending:
                        sel.unregister(fd)
                        p.stdin.close()
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    sel.unregister(fd)
                    continue
                size[fd] += len(chunk)
                if size[fd] > limit:
                    raise OutputTooLarge(names[fd], limit)
                got[fd].append(chunk)
        rc = p.wait(None if deadline is None else max(deadline - time.monotonic(), 0.001))
    except BaseException:
        p.kill()
        for f in (p.stdin, p.stdout, p.stderr):
            f.close()
        p.wait()
        raise
    finally:
        sel.close()
    p.stdout.close()
    p.stderr.close()
    return subprocess.CompletedProcess(cmd, rc, b"".join(got[out_fd]), b"".join(got[err_fd]))


KILLED = (128 + 9, 128 + 15)  # SIGKILL (a pod's stop kills its cgroup), SIGTERM (its apps are told to end)


def vanished(pod: "podmod.Pod", app: str, pid: Optional[int], rc: int) -> bool:
    """Did the command (enter's exit status ``rc``) fail because the app or the pod ended?

    Only enter's own failure (contract.EXIT_STAGE1) or a kill count, and only when the app
    or the pod is gone: a command's own status is never mistaken for the pod's end. ``pid``
    is the pod's PID 1 when the command started (None: read it now)."""
    if rc != contract.EXIT_STAGE1 and rc >= 0 and rc not in KILLED:
        return False
    try:
        return _gone(pod, app, pid if pid is not None else pod.pid())
    except RocketError:  # NotFoundError: removed meanwhile, which is gone too
        return True


def _gone(pod: "podmod.Pod", app: str, pid: Optional[int]) -> bool:
    """Has the pod stopped, or its PID 1 or the app's process (what enter joins) exited?"""
    from .fsutil import read_small

    if pod.state() != "running" or not pid:
        return True
    try:
        app_pid = int(read_small(pod.file(contract.app_file(app, contract.PID)), 64).decode().strip())
    except (OSError, ValueError):
        return True
    return contract.exited(pid) or contract.exited(app_pid)
