"""keeper: the small process outside a detached pod (conmon's role).

It holds the pod's lock, owns the apps' output pipes (timestamped, size-capped, rotated
logs), reaps the pod's stage1, and records its exit, on hosts whose PID 1 reaps nothing.
It runs from the stage1 tree with the standard library only, never from a module's
temporary payload, and its stdio is /dev/null so no caller waits on it.

`keeper <pod dir> <uuid> --ready-fd=N [stage1 flags…]` — ROCKET_LOCK_FD names the lock.
On the ready fd it writes `running <pid>` once every app runs, or `failed <code> <why>`.
"""
import json
import os
import select
import signal
import sys
import time

from . import launch, linux

LOG_MAX = 1 << 20       # bytes per log file before it rotates
LOG_KEEP = 1            # rotated files kept (<app>.log.1)


class Log:
    """Timestamped lines into logs/<name>.log, rotated at LOG_MAX."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.partial = b""
        self.lines = []  # the last lines, for failure reports

    def feed(self, data: bytes) -> None:
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        if len(self.partial) > 65536:  # a line without end: cut it
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self.write(line)

    def write(self, line: bytes) -> None:
        t = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ " % int((t % 1) * 1000)
        rec = stamp.encode() + line + b"\n"
        if self.size + len(rec) > LOG_MAX:
            self.rotate()
        os.write(self.fd, rec)
        self.size += len(rec)
        self.lines = (self.lines + [line])[-20:]

    def rotate(self) -> None:
        os.close(self.fd)
        for i in range(LOG_KEEP, 0, -1):
            src = self.path if i == 1 else "%s.%d" % (self.path, i - 1)
            try:
                os.rename(src, "%s.%d" % (self.path, i))
            except FileNotFoundError:
                pass
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = 0

    def close(self) -> None:
        if self.partial:
            self.write(self.partial)
            self.partial = b""
        os.close(self.fd)


def _apps(pod_dir: str) -> list:
    with open(os.path.join(pod_dir, "pod"), "rb") as f:
        return [a["name"] for a in json.loads(f.read())["apps"]]


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
    policy = "no"
    flags = []
    for a in argv[2:]:
        if a.startswith("--ready-fd="):
            ready_fd = int(a[11:])
        elif a.startswith("--restart="):
            policy = a[10:]
        else:
            flags.append(a)
    lock_fd = int(os.environ["ROCKET_LOCK_FD"])
    os.chdir(pod_dir)
    os.makedirs("logs", 0o755, exist_ok=True)
    logs = {}
    readers = {}
    app_fds = []
    stage1_r = -1
    for name in _apps(pod_dir) + ["stage1"]:
        r, w = os.pipe()
        os.set_inheritable(r, False)
        logs[r] = Log(os.path.join("logs", name + ".log"))
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

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    restarts = 0
    delay = 1.0
    while True:
        started = time.time()
        status, ready_fd = _run_once(pod_dir, uuid, flags, lock_fd, readers, logs, stage1_r, stage1_w,
                                     app_fds, ready_fd, target)
        stopping = os.path.exists("stopping") or target.get("signalled")
        again = policy == "always" or (policy == "on-failure" and status != 0)
        _record(status, started, restarts, policy)
        if stopping or not again or ready_fd >= 0:
            break
        # Backoff: 1 s doubling to 60 s; a run that lasted 10 s resets it.
        delay = 1.0 if time.time() - started > 10 else min(delay * 2, 60.0)
        deadline = time.time() + delay
        while time.time() < deadline and not (os.path.exists("stopping") or target.get("signalled")):
            time.sleep(0.05)
        if os.path.exists("stopping") or target.get("signalled"):
            break
        for name in ("pid",):
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
                app_fds.append("%s:%d" % (os.path.basename(log.path)[:-4], w))
        logs, stage1_r = new_logs, new_stage1
        stage1_w = readers[stage1_r]
    for log in logs.values():
        log.close()
    return 0


def _record(status, started, restarts, policy) -> None:
    rec = {"exit_code": status, "started": started, "finished": time.time(), "restarts": restarts,
           "restart_policy": policy}
    with open("exit.tmp", "w") as f:
        json.dump(rec, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename("exit.tmp", "exit")


def _run_once(pod_dir, uuid, flags, lock_fd, readers, logs, stage1_r, stage1_w, app_fds, ready_fd, target):
    """Launch stage1 once, pump its pipes into the logs, reap it; (status, ready_fd)."""
    child = os.fork()
    if child == 0:
        try:
            linux.reset_signals()
            for w in readers.values():
                os.set_inheritable(w, True)
            devnull = os.open("/dev/null", os.O_RDWR)
            os.dup2(devnull, 0)
            os.dup2(stage1_w, 1)
            os.dup2(stage1_w, 2)
            if ready_fd >= 0:
                os.close(ready_fd)
            launch.exec_stage1(pod_dir, uuid, flags, lock_fd, {"ROCKET_APP_FDS": ",".join(app_fds)})
        finally:
            os._exit(254)
    target["pid"] = child
    for w in readers.values():
        os.close(w)
    open_fds = set(readers)
    status = None
    deadline = 0.0
    while open_fds or status is None:
        if ready_fd >= 0 and os.path.exists("pid"):
            with open("pid") as f:
                pid1 = f.read().strip()
            ready_fd = _tell(ready_fd, "running %s\n" % pid1)
        try:
            r, _, _ = select.select(list(open_fds), [], [], 0.005 if ready_fd >= 0 else 0.5)
        except InterruptedError:
            r = []
        for fd in r:
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
            try:
                pid, st = os.waitpid(child, os.WNOHANG)
            except ChildProcessError:
                pid, st = child, 0
            if pid == child:
                code, sig = linux.wait_status(st)
                status = code if code is not None else 128 + (sig or 0)
                # Stage1 may leave the pipes open in nobody: stop reading soon after exit.
                deadline = time.time() + 2
        elif time.time() > deadline:
            break
    for fd in open_fds:
        os.close(fd)
    target["pid"] = 0
    if ready_fd >= 0:
        why = b" / ".join(logs[stage1_r].lines[-3:]).decode("utf-8", "replace") or "stage1 exited"
        ready_fd = _tell(ready_fd, "failed %d %s\n" % (status, why))
    return status, ready_fd
