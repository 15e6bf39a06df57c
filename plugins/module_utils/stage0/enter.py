"""Enter a running pod: stage1's enter entrypoint runs a command as the app runs."""
import os
import subprocess
import sys
from typing import Dict, List, Optional, Tuple

from ..stage1 import contract
from . import pod as podmod
from .errors import TimedOut
from .run import entrypoint


def command(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]] = None,
            chdir: Optional[str] = None) -> Tuple[List[str], Dict[str, str], str]:
    """(argv, environment, cwd) of the process that runs ``argv`` in ``app`` of a running pod.

    For callers that stream the command's input or output (the connection plugin) rather
    than collect it; checks that the pod runs and names the app when it has several.
    """
    return _command(pod, app, argv, environment, chdir)[:3]


def _command(pod: "podmod.Pod", app: Optional[str], argv: List[str], environment: Optional[Dict[str, str]],
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
    killed = p.returncode < 0 or p.returncode == 128 + 9  # SIGKILL: what stopping a pod sends its cgroup
    if (p.returncode == contract.EXIT_STAGE1 or killed) and _gone(pod, app, pid):
        # stage1's enter failed, or the command was killed, because the app or the pod ended
        # meanwhile: say so, rather than hand back stage1's words about a missing /proc entry
        # or the kill's status as the command's exit code.
        raise podmod.PodStateError("app %s of pod %s exited while a command was entering it" % (app, pod.uuid))
    return p.returncode, p.stdout or b"", p.stderr or b""


def _gone(pod: "podmod.Pod", app: str, pid: int) -> bool:
    """Has the pod stopped, or its PID 1 or the app's process (what enter joins) exited?"""
    from .fsutil import read_small

    if pod.state() != "running":
        return True
    try:
        app_pid = int(read_small(pod.file(contract.app_file(app, contract.PID)), 64).decode().strip())
    except (OSError, ValueError):
        return True
    return not all(os.path.exists("/proc/%d/ns/pid" % p) for p in (pid, app_pid))
