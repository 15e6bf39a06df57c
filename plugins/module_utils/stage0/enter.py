"""Enter a running pod: stage1's enter entrypoint runs a command as the app runs."""
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from ..stage1 import contract
from . import pod as podmod
from .errors import RocketError, TimedOut
from .run import entrypoint, moved_error


def command(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]] = None,
            chdir: Optional[str] = None) -> Tuple[List[str], Dict[str, str], str]:
    """(argv, environment, cwd) of the process that runs ``argv`` in ``app`` of a running pod.

    For callers that stream the command's input or output (the connection plugin) rather
    than collect it; checks that the pod runs and names the app when it has several.
    """
    return _command(pod, app, argv, environment, chdir)[:3]


def _command(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]],
             chdir: Optional[str]) -> Tuple[List[str], Dict[str, str], str, str, int]:
    try:
        return _command_of(pod, app, argv, environment, chdir)
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
                chdir: Optional[str]) -> Tuple[List[str], Dict[str, str], str, str, int]:
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
    cmd += ["--"] + list(argv)
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if environment:
        env[contract.ENV_ENTER_ENV] = "\0".join("%s=%s" % (k, v) for k, v in environment.items())
    return cmd, env, pod.path, app, pid


def enter(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]] = None,
          chdir: Optional[str] = None, stdin: Optional[bytes] = None, timeout: Optional[float] = None,
          capture: bool = True) -> Tuple[int, bytes, bytes]:
    """Run ``argv`` in ``app`` of a running pod; returns (rc, stdout, stderr)."""
    cmd, env, cwd, app, pid = _command(pod, app, argv, environment, chdir)
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, input=stdin if stdin is not None else b"",
                           stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
                           timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TimedOut("the command did not finish within %ss" % timeout) from None
    except OSError:  # the child's chdir to the pod's directory: the pod was moved or removed
        err = moved_error(pod)
        if err is None:
            raise
        raise _not_running(pod, err) from None
    if vanished(pod, app, pid, p.returncode):
        # stage1's enter failed, or the command was killed, because the app or the pod ended
        # meanwhile: say so, rather than hand back stage1's words about a missing /proc entry
        # or the kill's status as the command's exit code.
        raise podmod.PodStateError("app %s of pod %s exited while a command was entering it" % (app, pod.uuid))
    return p.returncode, p.stdout or b"", p.stderr or b""


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
    return not all(_alive(p) for p in (pid, app_pid))


def _alive(pid: int) -> bool:
    """A process that has not exited: a zombie keeps its /proc entry and its pid namespace
    but not its mm (environ: ESRCH) nor its other namespaces, so ask its state."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read(4096)
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2:stat.rfind(b")") + 3]
    return state not in (b"Z", b"X", b"x", b"")
