"""keeper: the small process outside a detached pod (conmon's role).

It holds the pod's lock, owns the apps' output pipes (timestamped, size-capped, rotated
logs, or the journal: stage0/logs.py), reaps the pod's stage1, and records its exit, on hosts whose PID 1 reaps nothing.
It is a subreaper: with the default stage1, init runs in the keeper's own child (no second
interpreter) and that child leaves once the pod's PID 1 exists, so per running pod there
are the keeper, PID 1 and the apps' supervisors, all sharing the keeper's heap.
It runs from the stage1 tree with the standard library only, never from a module's
temporary payload, and its stdio is /dev/null so no caller waits on it.

`keeper <pod dir> <uuid> --ready-fd=N [stage1 flags…]` — ROCKET_LOCK_FD names the lock.
On the ready fd it writes `running <pid>` once every app runs, or `failed <code> <why>`.

A pod that nothing restarts and nothing probes (restart policy `no`, no healthcheck) keeps
no keeper once it runs: the pod's PID 1 takes the log pipes over (keeping.Keeping; it holds
the lock already) and records the pod's exit itself, and the keeper leaves once it has said
`running`, so such a pod is one Python process beside its apps (docs/decisions/keeper.md).
"""
import gc
import os
import select
# signal's C module: `signal` adds enums, and enum costs every start.
import _signal  # type: ignore[import-not-found]  # no stub for the C module; its names are signal's
import time

from . import contract
from . import jsonlite  # the json package imports re: not on the start path
from . import keeping
from . import logsink

HANDED = "handed to PID 1"  # _run_once's status when PID 1 keeps the pod (Keeping)


def _apps(pod_dir: str) -> list:
    return _manifest(pod_dir)[0]


def _manifest(pod_dir: str) -> tuple:
    """(app names, whether any app carries a healthcheck the keeper would run)."""
    with open(os.path.join(pod_dir, contract.POD_MANIFEST), "rb") as f:
        apps = jsonlite.loads(f.read())["apps"]
    return [a["name"] for a in apps], any(item.get("name") == contract.HEALTHCHECK_ANNOTATION
                                          for a in apps for item in a.get("annotations") or ())


def _tell(fd: int, text: str) -> int:
    if fd >= 0:
        try:
            os.write(fd, text.encode("utf-8", "replace"))
        except OSError:
            pass
        os.close(fd)
    return -1


def main(argv: list) -> int:
    pod_dir, uuid = argv[0], argv[1]
    ready_fd = -1
    rules = keeping.Rules()
    flags = []
    logging = logsink.flags()
    for a in argv[2:]:
        if a.startswith(contract.READY_FLAG):
            ready_fd = int(a[len(contract.READY_FLAG):])
        elif a.partition("=")[0] in logging:  # ours (stage0/logs.py), not stage1's
            logging[a.partition("=")[0]] = a.partition("=")[2]
        elif not rules.parse(a):
            flags.append(a)
    from . import linux  # ctypes: imported by the keeper alone

    lock_fd = int(os.environ[contract.ENV_LOCK_FD])
    # The pod's PID 1 is reparented to us when stage1's outer process leaves early (and
    # any orphan of the pod comes to us rather than to a host PID 1 that may reap nothing).
    linux.prctl(linux.PR_SET_CHILD_SUBREAPER, 1)
    os.chdir(pod_dir)
    os.makedirs(contract.LOGS, 0o755, exist_ok=True)
    logs = {}
    readers = {}
    app_fds = []
    stage1_r = -1
    apps, checks = _manifest(pod_dir)
    alone = rules.policy == "no" and not checks  # PID 1 keeps the pod once it runs (Keeping)
    for name in apps + ["stage1"]:
        r, w = os.pipe()
        os.set_inheritable(r, False)
        logs[r] = logsink.open_log(name, logging, uuid)
        readers[r] = w
        if name == "stage1":
            stage1_r = r
        else:
            app_fds.append("%s:%d" % (name, w))
    stage1_w = readers[stage1_r]
    # SIGTERM to the keeper stops the pod: forward it to the pod's PID 1 (set below).
    target = {"pid": 0}

    def forward(signum, frame):
        target["signalled"] = True
        if target["pid"]:
            try:
                os.kill(target["pid"], signum)
            except OSError:
                pass

    for s in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
        _signal.signal(s, forward)
    restarts = rules.restarts
    if restarts:  # a keeper started again (stage0/restart.py resume): pod_info counts it now
        keeping.record_exit(None, time.time(), restarts, rules, False)
    delay = 0.0
    lifeline_r, lifeline_w = os.pipe()  # PID 1 stops the pod once we are gone (contract.ENV_KEEPER_FD)
    while True:
        started = time.time()
        keeps = None
        if alone:  # what PID 1 needs to keep the pod: these pipes, the logging and restart flags
            keeps = {contract.ENV_KEEPS: ",".join("%s:%d" % (logs[r].name if r != stage1_r else "stage1", r)
                                                  for r in readers),
                     contract.ENV_KEEPS_ARGS: jsonlite.dumps(["%s=%s" % kv for kv in sorted(logging.items())]
                                                             + rules.flags(restarts))}
        status, ready_fd = _run_once(pod_dir, uuid, flags, lock_fd, readers, logs, stage1_r, stage1_w,
                                     app_fds, ready_fd, target, lifeline_r, keeps)
        if status is HANDED:  # PID 1 keeps the pod from here: its logs and its exit are its own
            for log in logs.values():
                log.close()
            os.close(lifeline_w)
            os.close(lifeline_r)
            return 0
        # A stop by the user (stage0's mark) is what unless-stopped honours at a restore; a
        # SIGTERM to us (a host shutdown) ends the pod too, but is no user's stop. An app found
        # unhealthy with healthcheck on_failure=restart restarts the pod whatever the policy says.
        by_user = os.path.exists(contract.STOPPING)
        unhealthy = target.pop("unhealthy", None) is not None
        again = (not (by_user or target.get("signalled")) and ready_fd < 0
                 and (unhealthy or rules.again(status, restarts)))
        keeping.record_exit(status, started, restarts + (1 if again else 0), rules, by_user, bool(target.get("signalled")))
        if not again:
            break
        delay = rules.backoff(delay, time.time() - started)
        deadline = time.time() + delay
        while time.time() < deadline and not (os.path.exists(contract.STOPPING) or target.get("signalled")):
            time.sleep(0.05)
        if os.path.exists(contract.STOPPING) or target.get("signalled"):
            keeping.record_exit(status, started, restarts, rules, os.path.exists(contract.STOPPING), bool(target.get("signalled")))
            break
        for name in (contract.PID,):
            try:
                os.unlink(name)
            except FileNotFoundError:
                pass
        restarts += 1
        readers, app_fds, new_logs = {}, [], {}
        for r_fd, log in logs.items():  # fresh pipes for the next run, same log files
            r, w = os.pipe()
            os.set_inheritable(r, False)
            readers[r] = w
            new_logs[r] = log
            if r_fd == stage1_r:
                new_stage1 = r
            else:
                app_fds.append("%s:%d" % (log.name, w))
        logs, stage1_r = new_logs, new_stage1
        stage1_w = readers[stage1_r]
    for log in logs.values():
        log.close()
    os.close(lifeline_w)
    os.close(lifeline_r)
    keeping.deregister(uuid)
    return 0


def _read_pid1(fd):
    """The PID 1 that stage1 (run in our child) reported on fd, or None; closes fd. A PID 1
    that keeps the pod (Keeping) says so after its PID: (pid, True)."""
    data = b""
    try:
        while not data.endswith(b"\n"):
            chunk = os.read(fd, 32)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    os.close(fd)
    text, dummy_sep, word = data.decode("ascii", "replace").strip().partition(" ")
    return (int(text), word == contract.PID1_KEEPS) if text.isdigit() else None


def _run_once(pod_dir, uuid, flags, lock_fd, readers, logs, stage1_r, stage1_w, app_fds, ready_fd, target,
              lifeline_r, keeps=None):
    """Launch stage1 once, pump its pipes into the logs, reap it; (status, ready_fd).

    When the default init runs in our child (launch), the child exits once the pod's PID 1
    exists and says its PID on a pipe: PID 1 becomes our child (we are a subreaper) and
    the pod's exit status is derived from its wait status here, as init would have.
    keeps (the environment of Keeping): PID 1 may keep the pod; the apps' pipes wait unread
    until it says whether it does, and once `running` is said, (HANDED, -1) is returned.
    """
    from . import launch, linux  # before the freeze: their objects are shared too

    pid1_r, pid1_w = os.pipe()
    gc.freeze()  # the pod's processes share our heap: our collections must not write all of it
    child = os.fork()
    if child == 0:
        try:
            os.close(pid1_r)
            linux.reset_signals()
            for w in readers.values():
                os.set_inheritable(w, True)
            devnull = os.open("/dev/null", os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(stage1_w, 1)
            os.dup2(stage1_w, 2)
            if ready_fd >= 0:
                os.close(ready_fd)
            os.set_inheritable(lifeline_r, True)
            env = {contract.ENV_APP_FDS: ",".join(app_fds), contract.ENV_KEEPER_FD: str(lifeline_r)}
            env.update(keeps or {})
            launch.exec_stage1(pod_dir, uuid, flags, lock_fd, env, pid1_fd=pid1_w)
        finally:
            os._exit(contract.EXIT_STAGE1)
    target["pid"] = child
    os.close(pid1_w)
    for w in readers.values():
        os.close(w)
    # PID 1 may take the apps' pipes (keeps): unread until it says whether it does.
    waiting = set(r for r in readers if r != stage1_r) if keeps else set()
    open_fds = set(readers) - waiting
    target.pop("keeps", None)
    status = None
    deadline = 0.0
    pid1 = None
    pid1_pipe = [pid1_r]
    joined = False
    probes = _no_probes()
    while open_fds or status is None:
        ready_fd = _tell_running(ready_fd)
        if target.get("keeps") and ready_fd < 0 and status is None:
            for fd in open_fds:
                os.close(fd)
            return HANDED, -1
        if not joined and ready_fd < 0 and os.path.exists(contract.PID):
            joined = True
            _join_pod_cpu(pod_dir, uuid)
            probes = _probes(pod_dir, uuid, target, status)
        watch = list(open_fds) + ([pid1_pipe[0]] if pid1_pipe[0] >= 0 else []) + probes.fds()
        try:
            # Every pipe closed: the pod is exiting, and its exit is what the backoff counts from.
            r, dummy_w, dummy_x = select.select(watch, [], [], probes.timeout(
                0.005 if ready_fd >= 0 else 0.5 if open_fds else 0.01))
        except InterruptedError:
            r = []
        for fd in r:
            if probes.feed(fd):
                continue
            if fd == pid1_pipe[0]:
                pid1 = _take_pid1(pid1_pipe, target)
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if data:
                logs[fd].feed(data)
            else:
                open_fds.discard(fd)
                os.close(fd)
        if status is None:
            probes.step()
            status, child, pid1 = _reap(pod_dir, child, pid1, pid1_pipe, target)
            if status is not None:
                # Stage1 may leave the pipes open in nobody: stop reading soon after exit.
                deadline = time.time() + 2
        elif time.time() > deadline:
            break
        if waiting and (pid1_pipe[0] < 0 or status is not None):  # PID 1 said, or never will
            if target.get("keeps"):
                for fd in waiting:
                    os.close(fd)
            else:
                open_fds |= waiting
            waiting = set()
    probes.close()
    for fd in open_fds | waiting:
        os.close(fd)
    if pid1_pipe[0] >= 0:
        os.close(pid1_pipe[0])
    _reap_orphans()
    target["pid"] = 0
    ready_fd = _tell_running(ready_fd)  # a pod that ran and has exited already ran
    if ready_fd >= 0:
        why = b" / ".join(logs[stage1_r].lines[-3:]).decode("utf-8", "replace") or "stage1 exited"
        ready_fd = _tell(ready_fd, contract.failed_line(status, why))
    return status, ready_fd


def _join_pod_cpu(pod_dir, uuid):
    """Once the pod runs (after `running` was said: no cost to the start), this process
    moves into the pod's CPU budget: what it spends on the apps' logs counts against
    the pod, so `yes` in a 100m pod cannot take a host core through its keeper."""
    from .cgroups import PodCgroups  # not on the start path: init in our child imported it there

    try:
        PodCgroups.of_pod(pod_dir, uuid).keeper_join(_apps(pod_dir))
    except (OSError, ValueError, KeyError):
        pass  # a pod gone already, or a manifest we cannot read: nothing to count against


def _no_probes():
    from .health import IDLE  # no json, re or enum: the module imports enter only for a pod with a check

    return IDLE


def _probes(pod_dir, uuid, target, status):
    """The healthcheck monitor once the pod runs (after `running` was said: no cost to the start)."""
    from . import health

    return health.monitor(pod_dir, target, uuid) if status is None else health.IDLE


def _tell_running(ready_fd):
    """Once stage1 wrote `pid` (every app's exec succeeded): `running <pid>` on the ready fd."""
    if ready_fd >= 0 and os.path.exists(contract.PID):
        with open(contract.PID) as f:
            running = f.read().strip()
        ready_fd = _tell(ready_fd, contract.running_line(running))
    return ready_fd


def _take_pid1(pid1_pipe, target):
    """Read the PID 1 our child reported (once); signals go to it from now on."""
    said = _read_pid1(pid1_pipe[0])
    pid1_pipe[0] = -1
    if said is None:
        return None
    target["pid"], target["keeps"] = said
    return said[0]


def _reap(pod_dir, child, pid1, pid1_pipe, target):
    """Reap what exited; (pod status or None, the child we wait for, PID 1 or None)."""
    while True:
        try:
            pid, st = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return contract.EXIT_STAGE1, child, pid1
        if pid == 0:
            return None, child, pid1
        if pid != child:
            continue  # an orphan of the pod that came to us (we are a subreaper)
        from . import linux

        if pid1 is None and pid1_pipe[0] >= 0:
            pid1 = _take_pid1(pid1_pipe, target)
        if pid1 is not None and child != pid1:
            child = pid1  # stage1's outer process is done: PID 1 is ours to wait for now
            continue
        code, sig = linux.wait_status(st)
        if pid1 is None or sig is None:
            return (code if code is not None else 128 + (sig or 0)), child, pid1
        from .init import pod_exit

        return pod_exit(pod_dir, _apps(pod_dir), st), child, pid1


def _reap_orphans():
    """Whatever else of the pod came to us and has exited (never blocks)."""
    while True:
        try:
            pid, dummy_status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
