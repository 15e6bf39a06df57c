"""Run, wait for and stop prepared pods (rkt's stage0 Run, plus a supervised detach).

Foreground: a child takes a private mount namespace, mounts the pod's roots and runs
stage1's run entrypoint (the default init in that same child, any other by exec; see
stage1/launch.py); the caller waits and gets the pod's exit status.
Detached: a keeper from the stage1 tree (launched with the interpreter that runs us, its
stdio on /dev/null, in its own session) does the same and stays as the pod's parent. The
caller returns once every app's exec succeeded, or with the cause of the failure.
The start path imports nothing heavy: no typing, re, signal or subprocess at import, json
only to read small files.
"""
import os
import sys
import time

from ..stage1 import contract
from . import pod as podmod
from . import crashpoint
from .datadir import DataDir
from .errors import NotFoundError, RocketError
from .fsutil import read_small

TYPE_CHECKING = False  # type checkers take it as true; typing costs milliseconds per start
if TYPE_CHECKING:
    from typing import Any, Callable, Dict, List, Optional, Tuple  # noqa: F401

START_TIMEOUT = 60.0
SIGTERM, SIGKILL = 15, 9  # the same on every Linux architecture; no `signal` (enum) import
_keepers = {}  # type: dict  # pod uuid -> keeper pid we started (reaped by wait/stop)


class StartError(RocketError):
    """The pod did not reach running: an app failed to start or stage1 failed."""


def moved_error(pod: "podmod.Pod") -> "Optional[RocketError]":
    """The documented error for a pod whose file just vanished, or None if the pod is still
    where we found it (then the missing file is a real fault, to be raised as it is).

    Another process may start, collect or remove a pod between our finding it and our
    reading its files: that is NotFoundError when it was removed, PodStateError naming
    where it went otherwise, never a raw FileNotFoundError on one of its files."""
    if os.path.isdir(pod.path):
        return None
    was = pod.dir_state
    try:
        pod.refresh()
    except NotFoundError as e:
        return e
    return podmod.PodStateError("pod %s is no longer %s (another process moved it to %s)"
                                % (pod.uuid, was, pod.dir_state))


def _plan(pod: "podmod.Pod") -> "Dict[str, Any]":
    try:
        return pod.read_json(contract.MOUNTS)
    except FileNotFoundError:
        err = moved_error(pod)
        if err is None:
            raise
    raise err


def stage1_rootfs(pod: "podmod.Pod") -> str:
    """The stage1 tree's rootfs on the host (the pod's own view exists only in its namespace)."""
    key = pod.spec()["stage1"]["tree"]
    return os.path.join(pod.dd.tree_path(key), "rootfs")


def entrypoint(pod: "podmod.Pod", name: str) -> str:
    eps = _plan(pod).get("entrypoints") or {}
    if name not in eps:
        raise RocketError("the stage1 of pod %s has no %s entrypoint" % (pod.uuid, name))
    try:
        rootfs = stage1_rootfs(pod)
    except FileNotFoundError:  # spec.json: removed or moved since mounts.json was read
        err = moved_error(pod)
        if err is None:
            raise
        raise err from None
    return os.path.join(rootfs, eps[name].lstrip("/"))


def _flags(net: "Any", interactive: bool, debug: bool, hostname: "Optional[str]",
           userns_base: "Optional[int]" = None, domainname: "Optional[str]" = None,
           cgroup_parent: "Optional[str]" = None) -> "List[str]":
    if not isinstance(net, str) or "," in net or net not in ("host", "none"):
        from .netconf import parse_net  # private networks only: the host path stays light

        net = ",".join(parse_net(net))
    flags = ["--net=%s" % net]
    if interactive:
        flags.append("--interactive")
    if debug:
        flags.append("--debug")
    if hostname or domainname:
        from . import uts

        uts.normalize(hostname or None, domainname or None)  # the library's callers too: before the claim
    if hostname:
        flags.append("--hostname=%s" % hostname)
    if domainname:
        flags.append("--domainname=%s" % domainname)
    if cgroup_parent:
        from . import limits

        cgroup_parent = limits.cgroup_parent(cgroup_parent)
        if cgroup_parent:
            flags.append("--cgroup-parent=%s" % cgroup_parent)
    if userns_base is not None:
        flags.append("--private-users=%d" % userns_base)
    return flags


def _userns_base(pod: "podmod.Pod", private_users: "object") -> "Optional[int]":
    """private_users (false, true or a first host id) as the first id of the pod's range."""
    if not private_users:
        return None
    from . import idrange

    return idrange.for_pod(pod, private_users)


def _metadata_setup(pod: "podmod.Pod", net: str, enabled: bool, port: "Optional[int]") -> bool:
    """Before the claim (a failure leaves the pod prepared): the service runs, metadata.json."""
    if not enabled:
        return False
    if net == "none":
        raise RocketError("metadata_service needs the host network or a private network: with net=none "
                          "the pod has no route to the service")
    from . import metadata

    metadata.setup(pod, metadata.DEFAULT_PORT if port is None else port)
    return True


def _metadata_register(pod: "podmod.Pod") -> None:
    """After the claim, before stage1: the apps may ask from their first instruction on."""
    from . import metadata

    try:
        metadata.register(pod)
    except BaseException:
        pod.release()  # the pod is in run, unlocked: it reads as exited
        raise


def _metadata_deregister(pod: "podmod.Pod") -> None:
    from . import metadata

    metadata.deregister(pod.dd, pod.uuid)


def _networks(pod: "podmod.Pod", flags: "List[str]", dns: "Optional[List[str]]",
              net_options: "Optional[Dict[str, Any]]" = None) -> None:
    """Private networks: resolve them and allocate addresses and host ports (net.json)."""
    net = flags[0][6:]
    if net in ("host", "none"):
        return
    if pod.dir_state != "prepared":
        raise podmod.PodStateError("pod %s is %s, not prepared" % (pod.uuid, pod.state()))
    from . import netconf

    netconf.plan(pod, net.split(","), dns, net_options)


def _claim(pod: "podmod.Pod", interactive: bool) -> int:
    """Lock the prepared pod and move it to run; returns the lock's fd (stage1 inherits it)."""
    if pod.dir_state != "prepared":
        raise podmod.PodStateError("pod %s is %s, not prepared" % (pod.uuid, pod.state()))
    if interactive and len(pod.manifest()["apps"]) != 1:
        raise RocketError("interactive needs a pod with exactly one app")
    if not pod.take_lock(exclusive=True, block=False) or pod.lock is None or pod.lock.fd is None:
        raise podmod.PodStateError("pod %s is being used by another process" % pod.uuid)
    if pod.dir_state != "prepared":  # moved between our look and our lock: not ours to start
        pod.release()
        raise podmod.PodStateError("pod %s is no longer prepared (another process moved it to %s)"
                                   % (pod.uuid, pod.dir_state))
    fd = pod.lock.fd
    try:
        pod.move("run")
    except BaseException:
        pod.release()
        raise
    return fd


def _begin(pod: "podmod.Pod", net: "Any", interactive: bool, debug: bool, hostname: "Optional[str]",
           private_users: "object", metadata_service: bool, metadata_port: "Optional[int]",
           dns: "Optional[List[str]]", net_options: "Optional[Dict[str, Any]]" = None,
           domainname: "Optional[str]" = None, cgroup_parent: "Optional[str]" = None) -> "Tuple[List[str], bool, int]":
    """What both starts do before stage1 runs: networks, metadata, the claim.

    Returns stage1's flags, whether the pod is registered with the metadata service, and
    the lock's fd."""
    try:
        flags = _flags(net, interactive, debug, hostname, _userns_base(pod, private_users), domainname, cgroup_parent)
        _networks(pod, flags, dns, net_options)
        mds = _metadata_setup(pod, flags[0][6:], metadata_service, metadata_port)
        lock_fd = _claim(pod, interactive)
    except FileNotFoundError:  # one of the pod's files, read before the claim made it ours
        err = moved_error(pod)
        if err is None:
            raise
        raise err from None
    if mds:
        _metadata_register(pod)
    return flags, mds, lock_fd


def run_foreground(pod: "podmod.Pod", net: "Any" = "host", interactive: bool = False, debug: bool = False,
                   hostname: "Optional[str]" = None, private_users: "object" = False, metadata_service: bool = False,
                   metadata_port: "Optional[int]" = None, dns: "Optional[List[str]]" = None,
                   secrets_fd: "Optional[int]" = None, net_options: "Optional[Dict[str, Any]]" = None,
                   domainname: "Optional[str]" = None, cgroup_parent: "Optional[str]" = None) -> int:
    """Run a prepared pod attached to our stdio; returns its exit status.

    net: host, none, or network names (a list or comma-separated); dns: the pod's
    nameservers on private networks (default: from the host, see netconf.dns); net_options:
    ip, ip6, mac, dns_search, dns_options, extra_hosts, hostname_aliases (netconf.NET_OPTIONS).
    ``metadata_service``: start the host's metadata service if needed and register the pod
    with it before stage1 starts (deregistered when the pod exits); ``metadata_port``
    (default 18112, 0 for any free port) applies when the service has to be started.
    """
    from ..stage1 import launch
    from . import daemon

    flags, mds, lock_fd = _begin(pod, net, interactive, debug, hostname, private_users, metadata_service,
                                 metadata_port, dns, net_options, domainname, cgroup_parent)
    crashpoint.hit("run.foreground.after_claim")
    # stage1's default init runs in the forked child itself, unless other threads exist
    # (a fork copies only this one: a lock another thread holds would never be released).
    threading = sys.modules.get("threading")
    single = threading is None or threading.active_count() == 1
    pid = daemon.fork()
    if pid == 0:  # pragma: no cover - leaves by exec or _exit
        launch.exec_stage1(pod.path, pod.uuid, flags, lock_fd, in_process=single, secrets_fd=secrets_fd)
        os._exit(contract.EXIT_STAGE1)
    pod.release()  # stage1 holds the lock now
    crashpoint.hit("run.foreground.after_fork")
    while True:
        try:
            dummy_pid, status = os.waitpid(pid, 0)
            break
        except InterruptedError:  # pragma: no cover
            continue
    if mds:
        _metadata_deregister(pod)
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def start_detached(pod: "podmod.Pod", net: "Any" = "host", debug: bool = False, hostname: "Optional[str]" = None,
                   timeout: float = START_TIMEOUT, restart_policy: str = "no", private_users: "object" = False,
                   metadata_service: bool = False, metadata_port: "Optional[int]" = None,
                   dns: "Optional[List[str]]" = None, restart_retries: "Optional[int]" = None,
                   restart_delay: "Optional[float]" = None, restart_max_delay: "Optional[float]" = None,
                   secrets_fd: "Optional[int]" = None, net_options: "Optional[Dict[str, Any]]" = None,
                   logging: "Optional[Dict[str, Any]]" = None, boot: bool = False,
                   domainname: "Optional[str]" = None, cgroup_parent: "Optional[str]" = None) -> int:
    """Start a prepared pod under its keeper; returns the pod's PID 1 once every app runs.

    ``restart_policy`` (no, always, on-failure[:N], unless-stopped) and its retries and
    backoff (``restart_delay`` doubling up to ``restart_max_delay``) are carried out by the
    keeper (stage0/restart.py). ``metadata_service`` as in run_foreground; the keeper
    deregisters the pod when it will not run again. ``secrets_fd``: the pod's secrets
    (stage0/secrets.py memfd), which the keeper holds for its restarts; the caller closes
    its own copy. ``logging``: the log options of stage0/logs.py (the file driver's defaults
    when None); they join the keeper's saved flags, so a resumed keeper logs the same way.
    ``boot``: a boot restore brings the pod back whatever its policy, unless it
    exited on its own or by the user's stop before the host went down (stage0/boot.py).
    """
    from . import restart

    opts = restart.normalize(restart_policy, restart_retries, restart_delay, restart_max_delay)
    log_flags = []  # type: List[str]
    if logging:
        from . import logs

        if logs.normalize(logging.get("log_driver"))["log_driver"] == "journald":
            logs.check_journald()
        log_flags = logs.keeper_flags(logging, _pod_name(pod))
    keeper = entrypoint(pod, "keeper")
    flags, mds, lock_fd = _begin(pod, net, False, debug, hostname, private_users, metadata_service,
                                 metadata_port, dns, net_options, domainname, cgroup_parent)
    flags += log_flags
    crashpoint.hit("run.detached.after_claim")
    try:
        if opts["restart_policy"] != "no" or boot:  # a pod never resumed needs none: no fsync for it
            restart.save_keeper_args(pod, flags, opts, boot)
    except BaseException:
        pod.release()  # the pod is in run, unlocked: it reads as exited
        if mds:
            _metadata_deregister(pod)
        raise
    return _spawn_keeper(pod, keeper, flags, opts, lock_fd, mds, timeout, secrets_fd=secrets_fd)


def _pod_name(pod: "podmod.Pod") -> "Optional[str]":
    try:
        return (pod.spec().get("spec") or {}).get("name") or None
    except (OSError, ValueError):
        return None


def _spawn_keeper(pod: "podmod.Pod", keeper: str, flags: "List[str]", opts: "Dict[str, Any]", lock_fd: int,
                  mds: bool, timeout: float, restarts: int = 0, secrets_fd: "Optional[int]" = None) -> int:
    """Start the keeper on the pod we hold locked in run; its PID 1 once every app runs.
    A keeper started again (restart_keeper) has no secrets_fd: a pod with secret files then
    fails to start, saying its secrets live in memory only (stage1/secrets.py)."""
    from . import daemon, restart

    env = {"PATH": contract.STAGE1_PATH, contract.ENV_LOCK_FD: str(lock_fd)}
    if secrets_fd is not None:
        env[contract.ENV_SECRETS_FD] = str(secrets_fd)
    counted = ["--restarts=%d" % restarts] if restarts else []
    pid, r = daemon.spawn([sys.executable, "-I", "-S", "-B", keeper, pod.path, pod.uuid]
                          + restart.keeper_flags(opts) + counted + flags, env, pod.path,
                          keep=(lock_fd,) if secrets_fd is None else (lock_fd, secrets_fd))
    pod.release()
    _keepers[pod.uuid] = pid
    crashpoint.hit("run.detached.after_fork")
    answer = daemon.wait_ready(r, timeout)
    if answer.startswith(contract.READY_RUNNING + " "):
        crashpoint.hit("run.detached.after_ready")
        return int(answer.split()[1])
    if not answer:
        stop(pod, timeout=5)
        if mds:
            _metadata_deregister(pod)
        raise StartError("pod %s did not start within %ss" % (pod.uuid, timeout))
    _reap(pod.uuid, block=True)
    if mds:
        _metadata_deregister(pod)
    raise StartError("pod %s failed to start: %s" % (pod.uuid, failure_cause(pod, answer)))


def restart_keeper(pod: "podmod.Pod", flags: "List[str]", opts: "Dict[str, Any]", restarts: int,
                   timeout: float = START_TIMEOUT) -> int:
    """A keeper again on an exited pod in run (restart.resume decided it should run): the
    same pod directory, UUID, volumes and addresses; its PID 1 once every app runs.
    ``restarts``: the pod's restarts, this one included."""
    keeper = entrypoint(pod, "keeper")
    if not pod.take_lock(exclusive=True, block=False) or pod.lock is None or pod.lock.fd is None:
        raise podmod.PodStateError("pod %s is being used by another process" % pod.uuid)
    lock_fd = pod.lock.fd
    if pod.dir_state != "run" or not os.path.isdir(pod.path):
        pod.release()
        raise podmod.PodStateError("pod %s is no longer exited in run" % pod.uuid)
    mds = os.path.exists(pod.file(contract.METADATA))
    try:
        try:
            os.unlink(pod.file(contract.STOPPING))  # restart_policy always: a user stop is undone
        except FileNotFoundError:
            pass
        for name in (contract.PID, contract.HOST_STOPPING):
            try:
                os.unlink(pod.file(name))
            except FileNotFoundError:
                pass
        if mds:
            from . import metadata

            metadata.register(pod)
    except BaseException:
        pod.release()
        raise
    return _spawn_keeper(pod, keeper, flags, opts, lock_fd, mds, timeout, restarts)


def failure_cause(pod: "podmod.Pod", answer: str = "") -> str:
    """The best explanation of a failed start: an app's error first, then stage1's words."""
    for app in pod.manifest()["apps"]:
        st = pod.app_status(app["name"])
        if st and st.get("error"):
            return "app %s: %s" % (app["name"], st["error"])
    parts = answer.split(None, 2)
    return parts[2].strip() if len(parts) == 3 else (answer.strip() or "stage1 exited")


def _reap(uuid: str, block: bool = False) -> None:
    pid = _keepers.get(uuid)
    if pid is None:
        return
    try:
        done, dummy_status = os.waitpid(pid, 0 if block else os.WNOHANG)
    except ChildProcessError:
        done = pid
    if done == pid:
        _keepers.pop(uuid, None)


def wait(pod: "podmod.Pod", timeout: "Optional[float]" = None) -> bool:
    """Wait until the pod has exited (its lock is free); False on timeout.

    The lock is the keeper's: once we hold a pidfd of the keeper, its exit wakes us at once
    instead of the next poll (sleep-polling cost most of a stop's time). The lock stays the
    truth: each wake-up checks it, and without a pidfd (a pod still starting, an old kernel,
    a lock held by another process) the check runs on a short backoff."""
    deadline = None if timeout is None else time.monotonic() + timeout
    delay = 0.002
    fd = None
    try:
        while True:
            try:
                pod.refresh()
            except RocketError:
                return True
            if pod.state() != "running":
                _reap(pod.uuid, block=True)
                return True
            _reap(pod.uuid)
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return False
            if fd is None:
                fd = _keeper_pidfd(pod)
            if fd is not None and fd >= 0:
                # Bounded, so a lock that outlives the keeper is still seen within 50 ms.
                if _readable(fd, 0.05 if left is None else min(left, 0.05)):
                    os.close(fd)
                    fd = -1  # the keeper is gone; should the lock still be held, poll
                continue
            time.sleep(delay if left is None else min(delay, left))
            delay = min(delay * 2, 0.05)
    finally:
        if fd is not None and fd >= 0:
            os.close(fd)


def _readable(fd: int, seconds: float) -> bool:
    """Whether a pidfd's process exited within ``seconds``."""
    import select

    p = select.poll()
    p.register(fd, select.POLLIN)
    return bool(p.poll(max(0, int(seconds * 1000))))


def _keeper_pidfd(pod: "podmod.Pod") -> "Optional[int]":
    """A pidfd of the process holding the pod's lock: the keeper, which is the parent of the
    pod's PID 1 (it is a subreaper), or PID 1 itself in a pod without a keeper (restart
    policy no: stage1/keeping.py Keeping); None when there is none to be had yet."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    keeper = _keepers.get(pod.uuid)
    pid1 = pod.pid()
    if keeper is not None and pid1 and _parent(pid1) != keeper and _pid_is_pods(pid1, pod.uuid):
        _reap(pod.uuid)  # the keeper we started handed the pod to its PID 1 and left
        keeper = None
    if keeper is None:
        if not pid1 or not _pid_is_pods(pid1, pod.uuid):
            return None
        keeper = _parent(pid1)
        if not keeper or keeper == 1 or not _pid_is_pods(keeper, pod.uuid):
            keeper = pid1  # no keeper: the lock is PID 1's (a keeper sits in the pod's cgroup)
    try:
        fd = pidfd_open(keeper)
    except OSError:
        return None
    # PID reuse: the pidfd names the keeper only if PID 1 is still its child now (or is it).
    if pod.uuid not in _keepers and not (pid1 and (keeper == pid1 or _parent(pid1) == keeper)
                                         and _pid_is_pods(pid1, pod.uuid)):
        os.close(fd)
        return None
    return fd


def _parent(pid: int) -> "Optional[int]":
    try:
        stat = read_small("/proc/%d/stat" % pid, 4096).decode()
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _pid_is_pods(pid: int, uuid: str) -> bool:
    """Guard against PID reuse: the process must sit in this pod's cgroup."""
    try:
        return contract.in_pod_cgroup(read_small("/proc/%d/cgroup" % pid, 1 << 16).decode(), uuid)
    except OSError:
        return False


def stop(pod: "podmod.Pod", timeout: float = 10.0) -> bool:
    """SIGTERM to the pod's PID 1, which sends each app its stop signal (SIGTERM unless
    the app's stop_signal says otherwise) and SIGKILL after its stop timeout (the app's own
    stop_timeout, else ``timeout``), then runs post-stop; PID 1 itself is killed once the
    longest of them is over.

    Returns True when the pod was running and is now stopped.
    """
    return stop_many([(pod, timeout)]) == [True]


def stop_many(pods: "List[Tuple[podmod.Pod, float]]",
              stopped: "Optional[Callable[[podmod.Pod], None]]" = None) -> "List[bool]":
    """Stop several pods (each with its stop timeout) at once: every pod is signalled
    before any is waited for, so N stops take as long as the slowest, not as their sum.
    ``stopped`` is called with each pod once it is no longer running, while the later ones
    are still being waited for (pod_gc.GcBatch overlaps their cleanup with the stops).
    Returns, for each pod, what stop() would."""
    begun = [_stop_begin(pod, timeout) for pod, timeout in pods]
    out = []
    for (pod, dummy), b in zip(pods, begun):
        out.append(_stop_end(pod, b) if b is not None else False)
        if stopped is not None:
            stopped(pod)
    return out


def _stop_begin(pod: "podmod.Pod", timeout: float) -> "Optional[Tuple[float, List[int], Optional[int]]]":
    """Mark the stop as wanted and SIGTERM the pod; (SIGKILL deadline, targets, PID 1), or
    None when it was not running."""
    if pod.state() != "running":
        _reap(pod.uuid)
        return None
    from . import stopping

    default, timeout = timeout, stopping.longest(pod, timeout)
    # Tell the keeper this exit is wanted (no restart, whatever the policy) and PID 1 the
    # stop timeout of the apps that have none of their own.
    try:
        with open(pod.file(contract.STOPPING), "w") as f:
            f.write(stopping.mark(default))
    except FileNotFoundError:  # it exited and was collected (or removed) meanwhile
        err = moved_error(pod)
        if err is None:
            raise
        if isinstance(err, NotFoundError):
            raise err from None
        _reap(pod.uuid)
        return None
    crashpoint.hit("run.stop.after_stopping_mark")
    pid = pod.pid()
    deadline = time.monotonic() + START_TIMEOUT
    while pid is None and pod.uuid not in _keepers and time.monotonic() < deadline and pod.state() == "running":
        # Still starting, and started by another process (whose keeper PID we do not know):
        # nothing to signal until the pod's PID 1 is written.
        time.sleep(0.01)
        pid = pod.pid()
    from . import freezer

    freezer.thaw_for_stop(pod)  # a paused app would hold its stop signal until the SIGKILL
    targets = []
    if pid and _pid_is_pods(pid, pod.uuid):
        targets.append(pid)
    elif pod.uuid in _keepers:
        targets.append(_keepers[pod.uuid])  # still starting: the keeper forwards
    for t in targets:
        try:
            os.kill(t, SIGTERM)
        except ProcessLookupError:
            pass
    crashpoint.hit("run.stop.after_sigterm")
    return time.monotonic() + timeout + stopping.GRACE, targets, pid


def _stop_end(pod: "podmod.Pod", begun: "Tuple[float, List[int], Optional[int]]") -> bool:
    kill_at, targets, pid = begun
    if wait(pod, max(0.0, kill_at - time.monotonic())):
        return True
    for t in targets:
        if t == pid and _pid_is_pods(pid, pod.uuid):
            try:
                os.kill(t, SIGKILL)  # PID 1 of the pod: the kernel kills the whole pod
            except ProcessLookupError:
                pass
    if not wait(pod, 30):
        raise RocketError("pod %s did not stop" % pod.uuid)
    return True


def exit_info(pod: "podmod.Pod", state: "Optional[str]" = None) -> "Dict[str, Any]":
    """Each app's exit status and the pod's, as stage1 and the keeper recorded them; for a
    pod that ended with nobody to record its end, what can be said of it. ``state``: the
    pod's state when the caller has probed it already (one lock probe, not two)."""
    try:
        pod_exit = pod.read_json(contract.EXIT, 1 << 12)
    except (OSError, ValueError):
        pod_exit = {}
    lost = None if pod_exit else lost_exit(pod, state)
    apps = []
    for app in pod.manifest()["apps"]:
        st = pod.app_status(app["name"]) or lost or {}
        apps.append({"name": app["name"], "image_id": app["image"]["id"], "exit_code": st.get("exit_code"),
                     "signal": st.get("signal"), "error": st.get("error"), "oom_killed": st.get("oom_killed"),
                     "started": st.get("started"), "finished": st.get("finished")})
    return {"apps": apps, "exit_code": pod_exit.get("exit_code"), "finished": pod_exit.get("finished")}


def lost_exit(pod: "podmod.Pod", state: "Optional[str]" = None) -> "Optional[Dict[str, Any]]":
    """The status of an app that has none in a pod that ran (``pid`` is written once every
    app runs) and ended with nobody to record its end: its PID 1 died with its waiter (the
    keeper, the foreground caller, or none for a keeper-less pod), and the kernel killed
    every app with it; or the host went down, which the boot time tells. None while the pod
    runs or once its end is recorded."""
    try:
        ran = os.stat(pod.file(contract.PID)).st_mtime
    except OSError:
        return None
    if (state or pod.state()) not in ("exited", "exited-garbage"):  # marked by gc, its files with it
        return None
    if ran < _boot_time():
        return {"error": "the host went down while the pod ran (nothing recorded its end)"}
    if os.path.exists(pod.file(contract.STOPPING)):
        why = "the stop killed it (SIGKILL) when it had not ended by the stop timeout"
    elif _stage1_oom_kills(pod):
        why = ("the kernel's OOM killer killed it: the memory counters of stage1's cgroup record an OOM kill "
               "(the host, or a memory limit on the runtime's cgroups, ran out of memory)")
    else:
        why = ("something outside the pod killed it (SIGKILL, the OOM killer) or stage1 failed "
               "(logs/stage1.log)")
    return {"signal": SIGKILL, "error": "killed with the pod's PID 1, which ended without recording it: " + why}


def _stage1_oom_kills(pod: "podmod.Pod") -> int:
    """OOM kills the memory controller counted in the pod's stage1 cgroup, where its PID 1
    runs (0 when none, or when the controller or the cgroup is gone: gc removes it)."""
    from ..stage1 import cgroups

    try:
        return cgroups.PodCgroups.of_pod(pod.path, pod.uuid).oom_kills(cgroups.STAGE1_LEAF) or 0
    except (OSError, ValueError):
        return 0


def _boot_time() -> float:
    """When this host booted (``btime`` of /proc/stat), 0 when unknown."""
    try:
        with open("/proc/stat", "rb") as f:
            for line in f:
                if line.startswith(b"btime "):
                    return float(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0.0


def read_log(pod: "podmod.Pod", app: str, tail: "Optional[int]" = None, limit: int = 1 << 20) -> str:
    """An app's log (timestamped lines written by the keeper, in its files or the journal as
    the pod's log_driver says); the last ``tail`` lines."""
    try:
        driver = (pod.spec().get("run") or {}).get("log_driver")
    except (OSError, ValueError):
        driver = None
    path = pod.file(contract.log_file(app))
    if driver == "journald":
        from . import logs

        # Lines journald did not take are in the file (the keeper's fallback): shown first.
        return _read_file(path, tail, limit) + logs.read_journal(pod.uuid, app, tail, limit)
    text = _read_file(path, tail, limit)
    if tail and text.count("\n") < tail:  # just rotated: the rest of the tail is in <app>.log.1
        text = _read_file(path + ".1", tail - text.count("\n"), limit) + text
    return text


def _read_file(path: str, tail: "Optional[int]", limit: int) -> str:
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            if size > limit:
                f.seek(size - limit)
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if tail is not None:
        lines = text.splitlines()
        text = "\n".join(lines[-tail:]) + ("\n" if lines and tail else "")
    return text


__all__ = ["run_foreground", "start_detached", "stop", "wait", "exit_info", "read_log", "StartError", "DataDir"]
