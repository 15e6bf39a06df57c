"""The pod's PID 1 once its apps are forked: the loop, and the lean interpreter that runs it.

init.py sets the pod up and forks one supervisor per app; from then on PID 1 only waits:
it reaps, forwards stop signals, writes `pid`, each app's status and stop record, and (a pod
without keeper) pumps the logs and records the exit (keeping.Keeping). That is Loop, here.

Set-up leaves its modules loaded for the pod's life (app, mounts, seccomp, isolators, userns,
ctypes: about 1.2 MiB private per pod). So a detached pod's PID 1, once every app runs and
nothing is under way, execs a fresh interpreter that imports only this module (and
keeping.Keeping where it pumps logs), and hands it its state in a memfd
(docs/decisions/keeper.md). execve keeps the PID, the children, the cwd, the fds without O_CLOEXEC (the
lock, the pipes: the rest get O_CLOEXEC first), the blocked mask and the pending signals; it
resets handlers to the default, and the pod's PID 1 drops a signal it has no handler for.
So the signals the loop handles are blocked before the exec and unblocked only once the new
handlers are set: a stop's SIGTERM in between stays pending, it is not lost. The new
interpreter and its sources come through fds opened before the namespaces were made
(the binary by fexecve, the stage1 tree as /proc/self/fd/N on sys.path), not by path.

Standard library only, and no ctypes package, json, re or enum: `main` is what the lean
process runs, and what it imports is what it holds.
"""
import os
import select
# signal's C module: `signal` adds enums, and enum costs every start.
import _signal  # type: ignore[import-not-found]  # no stub for the C module; its names are signal's
import sys
import time

from . import contract
from . import jsonlite  # the json package imports re

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Callable, Dict, List, Optional  # noqa: F401

FORWARD = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)
HANDLED = FORWARD + (_signal.SIGCHLD,)
LEAN_AFTER = 0.5  # seconds after every app runs: the keeper has said `running` long before
LAUNCHER = contract.LEAN_PID1  # the stage1 tree's launcher of main() (contract.LAUNCHERS)
KEEPS_FLAG = contract.LEAN_KEEPS_FLAG
_PR_SET_NAME = 15
_PR_SET_DUMPABLE = 4
SHIELD_GID = 65534  # PID 1's real gid (shield): any gid but its effective one


def err(msg: object) -> None:
    try:
        sys.stderr.write("stage1: %s\n" % msg)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


def write_file(path: str, data: str) -> None:
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(data)
    os.rename(tmp, path)


def write_status(pod_dir, name, exit_code=None, sig=None, error=None, started=None,
                 finished=None, oom_killed=None):
    """status/<app>; oom_killed: whether the OOM killer killed a process of the app (its
    memory limit, resource/memory), None when the host cannot tell."""
    d = os.path.join(pod_dir, contract.STATUS)
    os.makedirs(d, exist_ok=True)
    write_file(os.path.join(d, name), jsonlite.dumps(
        {"exit_code": exit_code, "signal": sig, "error": error, "started": started,
         "finished": finished, "oom_killed": oom_killed}, sort_keys=True))


def wait_status(status: int) -> tuple:
    """(exit_code, signal) from a waitpid status (linux.wait_status without ctypes)."""
    code = os.waitstatus_to_exitcode(status)
    return (code, None) if code >= 0 else (None, -code)


def stop_timeout(pod_dir: str) -> float:
    """The stop timeout of apps without their own: stage0's `stopping` mark, else the default."""
    try:
        with open(os.path.join(pod_dir, contract.STOPPING)) as f:
            for line in f:
                if line.startswith(contract.STOP_TIMEOUT_KEY):
                    return max(0.0, float(line[len(contract.STOP_TIMEOUT_KEY):]))
    except (OSError, ValueError):
        pass
    return contract.DEFAULT_STOP_TIMEOUT


def lifeline() -> "Optional[int]":
    """The keeper's lifeline fd (contract.ENV_KEEPER_FD), or None (a foreground run)."""
    fd = os.environ.get(contract.ENV_KEEPER_FD) or ""
    return int(fd) if fd.isdigit() else None


def host_pid(sup_host: int, nspid: int) -> "Optional[int]":
    """The host PID of the supervisor's child whose PID in the pod is nspid."""
    try:
        with open("/proc/%d/task/%d/children" % (sup_host, sup_host)) as f:
            kids = f.read().split()
    except OSError:
        return None
    for k in kids:
        try:
            with open("/proc/%s/status" % k) as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        if line.split()[-1] == str(nspid):
                            return int(k)
                        break
        except OSError:
            continue
    return None


class AppSpec:
    """What the loop reads of an app (pod.App has it too): the lean process's app."""

    def __init__(self, name: str, stop_signal: int, stop_timeout: "Optional[float]") -> None:
        self.name, self.stop_signal, self.stop_timeout = name, stop_signal, stop_timeout


# AppState's fields that the lean process takes over as they are (JSON values)
_FIELDS = ("sup", "report", "ack", "running", "error", "started", "finished", "sup_status", "exec_host",
           "app_pid", "stop_sent", "kill_at")


class AppState:
    def __init__(self, app) -> None:
        self.app = app
        self.sup = None  # type: Optional[int]
        self.report = None  # type: Optional[int]
        self.ack = None  # type: Optional[int]
        self.buf = b""
        self.running = False
        self.error = None  # type: Optional[str]
        self.exit = None  # type: Optional[tuple]  # (exit code, signal) once the app has exited
        self.started = time.time()
        self.finished = None  # type: Optional[float]
        self.sup_status = None  # type: Optional[int]
        self.exec_host = None  # type: Optional[int]  # the supervisor said "exec": it is the app, with this host PID
        self.app_pid = None  # type: Optional[int]  # the app's PID in the pod when its supervisor stays (post-stop)
        self.stop_sent = None  # type: Optional[float]  # when the stop signal was sent
        self.kill_at = None  # type: Optional[float]  # monotonic time of the SIGKILL when the stop timeout is over

    def state(self) -> dict:
        out = {k: getattr(self, k) for k in _FIELDS}
        out.update(name=self.app.name, stop_signal=self.app.stop_signal, stop_timeout=self.app.stop_timeout,
                   buf=self.buf.hex(), exit=self.exit)
        return out

    @classmethod
    def restore(cls, d: dict) -> "AppState":
        st = cls(AppSpec(d["name"], d["stop_signal"], d["stop_timeout"]))
        for k in _FIELDS:
            setattr(st, k, d[k])
        st.buf = bytes.fromhex(d["buf"])
        st.exit = tuple(d["exit"]) if d["exit"] is not None else None
        return st


class Loop:
    """PID 1 from its apps' fork to its exit (init.Pid1 forks them; main() takes over)."""

    def __init__(self, pod_dir: str, states: list, keeping=None, oom=None) -> None:
        self.pod_dir = pod_dir
        self.states = states
        self.keeping = keeping  # keeping.Keeping: the pod has no keeper once it runs
        self.oom = oom  # type: Optional[Callable[[str], Optional[int]]]  # app -> OOM kills, when the host can tell
        self.by_sup = {}  # type: Dict[int, AppState]
        self.live = set()  # type: set
        self.lifeline = None  # type: Optional[int]
        self.sigterm = False
        self.pid_written = False
        self.failing = False
        self.kill_at = None  # type: Optional[float]
        self.lean = None  # type: Optional[dict]  # how to exec the lean loop (init.Pid1); None: never
        self.running_at = None  # type: Optional[float]

    def handlers(self) -> int:
        """The wakeup pipe's read end, with a handler for every signal the loop takes."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        _signal.set_wakeup_fd(wake_w)
        for s in HANDLED:
            _signal.signal(s, lambda signum, frame: None)
        return wake_r

    def loop(self, wake_r: int) -> int:
        keeping = self.keeping
        while self.live or any(st.report is not None for st in self.states):
            fds = [wake_r] + [st.report for st in self.states if st.report is not None]
            fds += [self.lifeline] if self.lifeline is not None else []
            fds += keeping.fds() if keeping is not None else []
            now = time.monotonic()
            due = [t for t in [self.kill_at] + [st.kill_at for st in self.states] if t is not None]
            if self.lean is not None and self.running_at is not None:
                due.append(self.running_at + LEAN_AFTER)
            timeout = max(0.0, min(due) - now) if due else None
            try:
                ready = select.select(fds, [], [], timeout)[0]
            except InterruptedError:
                ready = []
            for fd in ready:
                if fd == wake_r:
                    self._signals(_drain(wake_r))
                elif fd == self.lifeline:  # EOF: the keeper is gone
                    os.close(fd)
                    self.lifeline = None
                    err("the keeper is gone: stopping the pod")
                    self._stop()
                elif keeping is None or not keeping.feed(fd):
                    self._read_report(fd)
            self._reap()
            self._progress()
            if self.lean is not None and self._quiet():
                self._go_lean(wake_r)  # returns only when the exec did not happen
        for st in self.states:
            self._final_status(st)
        code = self._exit_code()
        if keeping is not None:
            keeping.finish(code, self.sigterm)
        return code

    def _signals(self, data: bytes) -> None:
        for signum in data:
            if signum == _signal.SIGTERM:
                self.sigterm = True
                self._stop()
            elif signum in FORWARD:
                for pid in self.live:
                    try:
                        os.kill(pid, signum)
                    except OSError:
                        pass

    def _stop(self) -> None:
        """A stop (SIGTERM to PID 1): each app gets its stop signal now and SIGKILL once its
        stop timeout (its own, else the one in the `stopping` mark) is over. A supervisor
        that stays gets SIGTERM and passes the app's stop signal on (app.py)."""
        default = stop_timeout(self.pod_dir)
        now = time.monotonic()
        for st in self.states:
            sup = st.sup
            if sup is None or sup not in self.live:
                continue
            sig = st.app.stop_signal if st.exec_host is not None else _signal.SIGTERM
            try:
                os.kill(sup, sig)
            except OSError:
                continue
            if st.stop_sent is None:
                st.stop_sent = time.time()
                timeout = st.app.stop_timeout if st.app.stop_timeout is not None else default
                st.kill_at = now + timeout
                self._stop_record(st, False)

    def _stop_kills(self, now: float) -> None:
        for st in self.states:
            if st.kill_at is None or now < st.kill_at:
                continue
            st.kill_at = None
            sup = st.sup
            if sup is not None and sup in self.live:
                try:
                    os.kill(st.app_pid if st.exec_host is None and st.app_pid else sup, _signal.SIGKILL)
                except OSError:
                    continue
                self._stop_record(st, True)

    def _stop_record(self, st: AppState, killed: bool) -> None:
        """apps/<app>/stop.json: what the stop did to the app (pod_info reports it)."""
        try:
            write_file(os.path.join(self.pod_dir, contract.app_file(st.app.name, contract.STOP_RECORD)),
                       jsonlite.dumps({"signal": st.app.stop_signal, "sent": st.stop_sent,
                                       "timeout": st.app.stop_timeout, "killed": killed}, sort_keys=True))
        except OSError as e:
            err("apps/%s/%s: %s" % (st.app.name, contract.STOP_RECORD, e))

    def _read_report(self, fd: int) -> None:
        st = next(s for s in self.states if s.report == fd)
        data = os.read(fd, 65536)
        if not data:
            os.close(fd)
            st.report = None
            if st.exec_host is not None:
                self._exec_done(st)
            return
        st.buf += data
        while st.exec_host is None and b"\n" in st.buf:
            line, st.buf = st.buf.split(b"\n", 1)
            self._event(st, line.decode("utf-8", "replace"))

    def _exec_done(self, st: AppState) -> None:
        """EOF after "exec": the close-on-exec pipe closed, by a successful exec when nothing
        came before it, or by the exit that follows a failed one (its message came)."""
        if st.buf:
            self._event(st, "fail " + st.buf.decode("utf-8", "replace").replace("\n", " "))
            st.buf = b""
        else:
            self._running(st, st.exec_host)
        if st.sup_status is not None:
            self._final_status(st)

    def _running(self, st: AppState, host: "Optional[int]") -> None:
        st.running = True
        st.started = time.time()
        if host is not None:
            try:
                write_file(os.path.join(self.pod_dir, contract.app_file(st.app.name, contract.PID)), "%d\n" % host)
            except OSError as e:
                err("apps/%s/pid: %s" % (st.app.name, e))

    def _event(self, st: AppState, line: str) -> None:
        kind, dummy_sep, rest = line.partition(" ")
        if kind == "run":
            sup_host, nspid = (int(x) for x in rest.split())
            st.app_pid = nspid
            self._running(st, host_pid(sup_host, nspid))
            try:
                os.write(st.ack, b"k")  # type: ignore[arg-type]  # the ack pipe is open until the supervisor is reaped
            except (OSError, TypeError):
                pass
        elif kind == "exec":
            st.exec_host = int(rest)
        elif kind == "fail":
            st.error = rest
            st.finished = time.time()
            err("app %s: %s" % (st.app.name, rest))
        elif kind == "exit":
            code, sig, t = rest.split()
            st.exit = (None if code == "-" else int(code), None if sig == "-" else int(sig))
            st.finished = float(t)
            self._final_status(st)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            st = self.by_sup.get(pid)
            if st is not None:
                self.live.discard(pid)
                st.sup_status = status
                if st.ack is not None:
                    os.close(st.ack)
                    st.ack = None
                if st.exec_host is not None and st.report is None:
                    self._final_status(st)

    def _progress(self) -> None:
        now = time.monotonic()
        if not self.failing and any(st.error for st in self.states):
            self.failing = True
            self.kill_at = now + 10
            for pid in self.live:
                try:
                    os.kill(pid, _signal.SIGTERM)
                except OSError:
                    pass
        if not self.pid_written and not self.failing and all(st.running for st in self.states):
            self.pid_written = True
            self.running_at = now
            try:
                write_file(os.path.join(self.pod_dir, contract.PID), "%d\n" % int(os.readlink("/proc/self")))
            except OSError as e:
                err("pid: %s" % e)
            if self.keeping is not None:
                self.keeping.running([st.app.name for st in self.states])
        self._stop_kills(now)
        if self.kill_at is not None and now >= self.kill_at:
            for pid in self.live:
                try:
                    os.kill(pid, _signal.SIGKILL)
                except OSError:
                    pass
            self.kill_at = now + 5

    def _final_status(self, st: AppState) -> None:
        if st.exec_host is not None and st.report is None and st.exit is None and st.error is None \
                and st.sup_status is not None:  # the app itself was our child
            st.exit = wait_status(st.sup_status)
            st.finished = time.time()
        if st.exit is None and st.error is None and st.sup_status is not None and st.exec_host is None:
            code, sig = wait_status(st.sup_status)
            st.error = "stage1 supervisor %s" % ("exited with %s" % code if sig is None
                                                 else "killed by signal %d" % sig)
            st.finished = time.time()
        if st.exit is None and st.error is None:
            return
        code, sig = st.exit if st.exit is not None else (None, None)
        try:
            oom = self.oom(st.app.name) if self.oom is not None else None
            write_status(self.pod_dir, st.app.name, code, sig, st.error, st.started, st.finished,
                         None if oom is None else oom > 0)
        except OSError as e:
            err("status/%s: %s" % (st.app.name, e))

    def _exit_code(self) -> int:
        if any(st.error for st in self.states):
            return contract.EXIT_STAGE1
        for st in self.states:
            code, sig = st.exit  # every app has exited by now (or has an error)
            if sig is not None:
                return 128 + sig
            if code:
                return code
        return 0

    # -- the lean interpreter -----------------------------------------------------------

    def _quiet(self) -> bool:
        """Every app runs (LEAN_AFTER ago), and no stop, failure or exec is under way."""
        return (self.running_at is not None and time.monotonic() >= self.running_at + LEAN_AFTER
                and not (self.failing or self.sigterm or self.kill_at is not None)
                and all(st.stop_sent is None and (st.exec_host is None or st.report is None) for st in self.states))

    def _go_lean(self, wake_r: int) -> None:
        """exec the lean loop with this state; back here (and never again) if it cannot."""
        lean, self.lean = self.lean, None
        if lean is None:
            return
        _signal.pthread_sigmask(_signal.SIG_BLOCK, HANDLED)
        try:
            early = _drain(wake_r)  # a signal that came before the block: handled here, as ever
            if early:
                self._signals(early)
                self.lean = lean  # and the exec waits for a quiet loop again
                return
            keep = set(lean["keep"]) | {lean["root"]} | set(self.keeping.fds() if self.keeping is not None else ())
            keep |= {fd for st in self.states for fd in (st.report, st.ack) if fd is not None}
            if self.lifeline is not None:
                keep.add(self.lifeline)
            state = {"uuid": lean["uuid"], "comm": lean["comm"], "cgroups": lean["cgroups"],
                     "apps": [st.state() for st in self.states], "live": sorted(self.live),
                     "lifeline": self.lifeline, "pid_written": self.pid_written,
                     "keeping": self.keeping.handover() if self.keeping is not None else None}
            fd = os.memfd_create("pid1-state", 0)
            keep.add(fd)
            try:
                os.write(fd, jsonlite.dumps(state).encode())
                os.lseek(fd, 0, os.SEEK_SET)
                for other in _open_fds():
                    if other > 2:
                        try:
                            os.set_inheritable(other, other in keep)
                        except OSError:  # the listing's own fd, closed by now
                            pass
                argv = [lean["argv0"], "-I", "-S", "-B", "/proc/self/fd/%d/%s" % (lean["root"], LAUNCHER),
                        lean["uuid"], str(fd)] + ([KEEPS_FLAG] if self.keeping is not None else [])
                sys.stderr.flush()
                os.execve(lean["exe"], argv, {"PATH": contract.STAGE1_PATH})
            finally:
                os.close(fd)  # the exec failed
        except Exception as e:  # noqa: BLE001  # the exec only saves memory: never a reason to fail
            err("PID 1 stays as it is (no lean exec): %s" % e)
        finally:
            _signal.pthread_sigmask(_signal.SIG_UNBLOCK, HANDLED)


def shield() -> None:
    """Make PID 1's real gid differ from its effective one, so no app matches all its ids.

    prlimit(2) on another process asks only that the caller's uid and gid equal the
    target's real, effective and saved ones (or CAP_SYS_RESOURCE over it): no ptrace check
    and no Landlock hook. A root app of a pod without private users is uid 0 and gid 0 as
    PID 1 is, so it could lower PID 1's limits: its CPU time (the kernel's SIGKILL at the
    hard limit reaches a namespace's init too: the pod ends unrecorded), its fds or
    address space (the lean exec fails, or the loop does). Files take the fs gid (the
    effective one), execve keeps the real gid and, as the ids differ, starts the lean
    interpreter non-dumpable; every app and handler sets all three gids before its exec."""
    egid = os.getegid()
    try:
        os.setresgid(SHIELD_GID if egid != SHIELD_GID else SHIELD_GID - 1, -1, -1)
    except OSError as e:  # no CAP_SETGID: as before
        err("PID 1's limits stay reachable from root apps: %s" % e)


def lean_fds(pid1_file: str) -> "Optional[dict]":
    """What the exec needs, opened now while the paths are the host's: the interpreter, and
    the stage1 tree this code runs from (when it has the lean launcher); None without them."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(pid1_file)))
    try:
        exe = os.open(sys.executable, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        tree = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        os.close(exe)
        return None
    try:
        os.stat(LAUNCHER, dir_fd=tree)
    except OSError:  # an older tree: no lean loop there
        os.close(exe)
        os.close(tree)
        return None
    return {"exe": exe, "root": tree, "argv0": sys.executable}


def _drain(fd: int) -> bytes:
    out = b""
    while True:
        try:
            data = os.read(fd, 256)
        except BlockingIOError:
            return out
        if not data:
            return out
        out += data


def _open_fds() -> list:
    return [int(n) for n in os.listdir("/proc/self/fd")]


def _prctl(option: int, value) -> int:
    """prctl(2) through _ctypes alone: the ctypes package costs three times its memory."""
    import _ctypes

    class _ULong(_ctypes._SimpleCData):
        _type_ = "L"

    class _Int(_ctypes._SimpleCData):
        _type_ = "i"

    class _CharP(_ctypes._SimpleCData):
        _type_ = "z"

    class _Func(_ctypes.CFuncPtr):
        _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
        _restype_ = _Int

    f = _Func(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))  # type: ignore[arg-type]  # None: the program's own
    arg = _CharP(value) if isinstance(value, bytes) else _ULong(value)
    if f(_Int(option), arg, _ULong(0), _ULong(0), _ULong(0)) < 0:
        e = _ctypes.get_errno()
        raise OSError(e, "prctl(%d): %s" % (option, os.strerror(e)))
    return 0


def _oom(uuid: str, cgroups: "Optional[dict]") -> "Optional[Callable[[str], Optional[int]]]":
    if cgroups is None:
        return None

    def count(app: str) -> "Optional[int]":
        from .cgroups import PodCgroups  # at an app's exit only

        return PodCgroups(uuid, cgroups["v1"], cgroups["v2"], discover=False,
                          parent=cgroups.get("parent")).oom_kills(app)

    return count


def main(argv: "List[str]") -> int:
    """`pid1 <uuid> <state fd> [--keeps]`: the lean PID 1, exec'd by Loop._go_lean with the
    signals it handles blocked."""
    try:
        _prctl(_PR_SET_DUMPABLE, 0)  # as init made PID 1: exec made it dumpable again
    except Exception as e:  # noqa: BLE001
        err("lean PID 1: %s" % e)
    code = contract.EXIT_STAGE1
    try:
        loop, wake_r = _take_over(argv[0], int(argv[1]))  # the state's text is garbage from here
        _signal.pthread_sigmask(_signal.SIG_UNBLOCK, HANDLED)  # what came since the exec is handled now
        code = loop.loop(wake_r)
    except BaseException as e:  # noqa: BLE001
        err("pid 1: %s" % e)
    try:
        sys.stderr.flush()
    finally:
        os._exit(code)


def _take_over(uuid: str, state_fd: int) -> tuple:
    with os.fdopen(state_fd, "rb") as f:
        state = jsonlite.loads(f.read())
    try:
        _prctl(_PR_SET_NAME, state["comm"].encode()[:15])  # exec named it after the file (or the fd)
    except Exception as e:  # noqa: BLE001
        err("lean PID 1: %s" % e)
    keeping = None
    if state["keeping"] is not None:
        from .keeping import Keeping

        keeping = Keeping.taken(uuid, state["keeping"])
    loop = Loop(os.getcwd(), [AppState.restore(d) for d in state["apps"]], keeping, _oom(uuid, state["cgroups"]))
    loop.by_sup = {st.sup: st for st in loop.states if st.sup is not None}
    loop.live = set(state["live"])
    loop.lifeline = state["lifeline"]
    loop.pid_written = state["pid_written"]
    return loop, loop.handlers()
