"""Pausing a running pod (docker's `paused`): the cgroup v2 freezer of each of its apps.

Only the apps' cgroups freeze. The pod's PID 1, stage1's supervisor and the keeper go on,
so a stop still reaches the pod (run._stop_begin thaws it first, as `docker rm -f` does),
the keeper still drains the logs, and it skips a frozen app's health checks rather than
count a frozen probe as a failure. A command entered into an app would join a frozen
cgroup and hang: stage1's enter refuses a paused app instead. Nothing is recorded beside
the kernel's own `cgroup.freeze`: a thaw by hand is seen as one, and a reboot ends a pause.
"""
import os
import time

from ..stage1.cgroups import PodCgroups
from .errors import RocketError

TYPE_CHECKING = False  # typing costs milliseconds per module run
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict

    from .pod import Pod

FREEZE_TIMEOUT = 10.0  # seconds for every process of the apps to stop; a D-state one can hold it up
NO_FREEZER = "needs the cgroup v2 freezer, and this host mounts no cgroup2 hierarchy (a pod has no cgroup v1 freezer)"


def check_host() -> None:
    """Before a task pauses anything (or starts a pod to pause): a host without a cgroup2
    hierarchy cannot, and must fail before the pod is started rather than after."""
    from ..stage1.cgroups import hierarchies

    if hierarchies()[1] is None:
        raise RocketError("paused " + NO_FREEZER)


def _apps(pod: "Pod") -> "Dict[str, str]":
    """{app: its cgroup.freeze} of the pod's apps; RocketError where the host has no freezer."""
    cg = PodCgroups.of_pod(pod.path, pod.uuid)
    if cg.v2 is None:
        raise RocketError("pausing pod %s %s" % (pod.uuid, NO_FREEZER))
    return {app["name"]: cg.freeze_file(app["name"]) for app in pod.manifest().get("apps") or []}


def frozen(pod: "Pod") -> "Dict[str, bool]":
    """{app: whether its cgroup is frozen} of a pod; empty where nothing can be frozen (no
    cgroup2 hierarchy, the pod gone)."""
    try:
        cg = PodCgroups.of_pod(pod.path, pod.uuid)
        names = [app["name"] for app in pod.manifest().get("apps") or []]
    except (OSError, ValueError):
        return {}
    return {name: cg.frozen(name) for name in names} if cg.v2 is not None else {}


def is_paused(pod: "Pod") -> bool:
    """Every app of the pod frozen (a pod partly thawed by hand is not paused)."""
    state = frozen(pod)
    return bool(state) and all(state.values())


def _write_all(files: "Dict[str, str]", value: str) -> None:
    for app, path in files.items():
        try:
            with open(path, "w") as f:
                f.write(value)
        except FileNotFoundError:
            if not os.path.isdir(os.path.dirname(path)):
                raise RocketError("app %s has no cgroup (%s): the pod is not running" % (app, os.path.dirname(path)))
            raise RocketError("this kernel has no cgroup v2 freezer (%s is missing; Linux 5.2 added it)" % path)


def _settled(path: str) -> bool:
    """The kernel's word that every process of the cgroup is frozen (cgroup.events)."""
    try:
        with open(os.path.join(os.path.dirname(path), "cgroup.events")) as f:
            return "frozen 1" in f.read()
    except OSError:
        return False


def pause(pod: "Pod", timeout: float = FREEZE_TIMEOUT) -> None:
    """Freeze every app of a running pod and wait until the kernel says they are; one that
    does not freeze in time thaws them all again and fails (the pod is left as it was)."""
    if pod.state() != "running":
        from .pod import PodStateError

        raise PodStateError("pod %s is %s: only a running pod can be paused" % (pod.uuid, pod.state()))
    files = _apps(pod)
    try:
        _write_all(files, "1")
        deadline = time.monotonic() + timeout
        while True:
            pending = [app for app, path in files.items() if not _settled(path)]
            if not pending:
                return
            if time.monotonic() > deadline:
                raise RocketError("pod %s did not freeze within %gs: app %s still has a process running (one "
                                  "in uninterruptible sleep holds a freeze up); it was thawed again"
                                  % (pod.uuid, timeout, pending[0]))
            time.sleep(0.002)
    except BaseException:
        try:
            _write_all(files, "0")
        except RocketError:
            pass
        raise


def unpause(pod: "Pod") -> bool:
    """Thaw every frozen app of the pod; whether one was frozen."""
    state = frozen(pod)
    if not any(state.values()):
        return False
    files = {app: path for app, path in _apps(pod).items() if state.get(app)}
    _write_all(files, "0")
    return bool(files)


def thaw_for_stop(pod: "Pod") -> None:
    """Before a stop signal: a frozen app would hold the signal until its stop timeout's
    SIGKILL. Quiet where there is nothing to thaw (the pod gone, no cgroup2)."""
    try:
        unpause(pod)
    except (RocketError, OSError):
        pass
