"""Garbage-collect pods: rkt's mark and sweep, safe to run twice at once.

Mark: a ``run`` pod whose lock is free has exited: rename it to ``exited-garbage``.
Sweep: after the grace period, take its lock, run stage1's gc entrypoint (cgroups,
networking; for all the pods swept, or stopped and removed together, one `gc --many`
process: GcBatch), return the pod's addresses and host ports to the pool, undo any mount left
under it, remove it without following a symlink out, and drop its name. Aborted prepares and expired prepared pods go the same way.
A lost rename race means another gc got there first, which is fine.
After a reboot no lock survives, so every stale ``run`` pod is seen as exited.
"""
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional, Tuple

from ..stage1 import contract
from . import pod as podmod
from . import crashpoint
from .datadir import DataDir
from .errors import NotFoundError, RocketError
from .fsutil import remove_tree

DEFAULT_GRACE = 30 * 60
DEFAULT_PREPARED_EXPIRY = 24 * 3600
# An unlocked embryo is garbage once its creator had time to lock it (mkdir, then flock).
EMBRYO_GRACE = 60


def _mounts_under(path: str) -> List[str]:
    out = []
    prefix = path.rstrip("/") + "/"
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                mnt = line.split()[4].replace("\\040", " ")
                if mnt == path or mnt.startswith(prefix):
                    out.append(mnt)
    except OSError:
        pass
    return sorted(out, key=len, reverse=True)


def _stage1_gc(pod: "podmod.Pod") -> Optional[str]:
    """Run stage1's gc entrypoint; returns an error text or None."""
    from .run import entrypoint

    try:
        gc = entrypoint(pod, "gc")
    except (RocketError, OSError, ValueError, KeyError):
        return None  # prepared but never run, or no stage1 files: nothing outside to undo
    batched = _gc_done.pop(pod.uuid, None) == pod.dd.path
    if batched or not os.path.exists(pod.file(contract.NET)):
        if not _has_cgroups(pod):
            # Nothing outside: a pod never run (no network, no cgroup), or one a GcBatch did
            # (a pod run again since has its cgroups back, and gets its gc again).
            return None
    if not os.path.exists(gc):
        return "stage1 gc entrypoint %s is missing" % gc
    p = subprocess.run([sys.executable, "-I", "-S", "-B", gc, pod.uuid], cwd=pod.path, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False)
    if p.returncode != 0:
        return "stage1 gc failed (%d): %s" % (p.returncode, p.stdout.decode("utf-8", "replace").strip()[-500:])
    return None


def _has_cgroups(pod: "podmod.Pod") -> bool:
    from ..stage1 import cgroups

    try:
        cg = cgroups.PodCgroups.of_pod(pod.path, pod.uuid)
    except (OSError, ValueError):
        return True  # stage1's gc says what is wrong with the record
    return any(os.path.isdir(d) for d in cg.pod_dirs())


# uuid -> the data directory of a pod a GcBatch ran stage1's gc for (delete() then runs none)
_gc_done: Dict[str, str] = {}


class GcBatch:
    """stage1's gc for many pods through one process per stage1 tree, its `gc-many`
    entrypoint (stage1/gc.py): one interpreter per removed pod was most of a removal's time.

    Each pod is sent as soon as it is given (stop_many calls ``submit`` as each pod has
    stopped), so the gc of one overlaps the stop of the next. A pod is sent only while we
    hold its exclusive lock (the lock is free: it has exited), held until its answer. A pod
    it cannot do (a stage1 without `gc-many`, a busy lock, a failure, the process gone) is
    left as it was: its delete() runs `gc <uuid>` as before and reports the error there."""

    def __init__(self) -> None:
        self._procs: Dict[str, "subprocess.Popen[bytes]"] = {}
        self._waiting: Dict[str, List["podmod.Pod"]] = {}  # per process, in the order sent
        self._buf: Dict[str, bytes] = {}
        self.sent = 0

    WINDOW = 64  # pods sent and not yet answered, per process

    def submit(self, pod: "podmod.Pod") -> None:
        from .run import entrypoint

        try:
            pod.refresh()
            if pod.dir_state not in ("run", "exited-garbage", "garbage") or "\n" in pod.path:
                return
            path = entrypoint(pod, "gc-many")
        except (RocketError, OSError, ValueError, KeyError):
            return  # no gc-many (another stage1), never run, or gone: delete() decides
        if not os.path.exists(pod.file(contract.NET)) and not _has_cgroups(pod):
            return  # nothing outside the pod directory: delete() needs no gc either
        if len(self._waiting.get(path, ())) >= self.WINDOW:  # bounded: pipes, open locks
            self._read(path, 60, keep=self.WINDOW // 2)
        try:
            if not os.path.exists(path) or not pod.take_lock(exclusive=True, block=False):
                return  # running again, or another process removes it
        except (RocketError, OSError):
            return
        try:
            stdin = (self._procs.get(path) or self._spawn(path)).stdin
            if stdin is None:
                raise OSError("no pipe to stage1 gc")
            stdin.write(("%s %s\n" % (pod.uuid, pod.path)).encode("utf-8", "surrogateescape"))
            stdin.flush()
        except OSError:
            pod.release()
            return
        self._waiting[path].append(pod)
        self.sent += 1
        self._read(path, 0)

    def _spawn(self, path: str) -> "subprocess.Popen[bytes]":
        proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", path, "--many"], cwd="/",
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        if proc.stdout is not None:  # always: a PIPE
            os.set_blocking(proc.stdout.fileno(), False)
        self._procs[path], self._waiting[path], self._buf[path] = proc, [], b""
        return proc

    def _read(self, path: str, timeout: float, keep: int = 0) -> None:
        """Take the answers there are, waiting up to ``timeout`` until at most ``keep`` are due."""
        import select

        proc, waiting = self._procs[path], self._waiting[path]
        if proc.stdout is None:
            return
        fd = proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        while len(waiting) > keep:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    return
                poll = select.poll()
                poll.register(fd, select.POLLIN)
                poll.poll(int(left * 1000) + 1)
                continue
            if not data:  # the process is gone: the pods left go the single way
                for pod in waiting:
                    pod.release()
                del waiting[:]
                return
            self._buf[path] += data
            while waiting and b"\n" in self._buf[path]:
                line, self._buf[path] = self._buf[path].split(b"\n", 1)
                pod = waiting.pop(0)
                if line == ("%s ok" % pod.uuid).encode("utf-8"):
                    _gc_done[pod.uuid] = pod.dd.path
                crashpoint.hit("pod_gc.batch.after_gc")
                pod.release()

    def close(self, timeout: float = 60.0) -> None:
        """Wait for every answer (the process ends at the end of its input)."""
        for path, proc in self._procs.items():
            try:
                if proc.stdin is not None:
                    proc.stdin.close()
            except OSError:
                pass
            self._read(path, timeout)
            for pod in self._waiting[path]:  # not answered in time: their delete() decides
                pod.release()
            del self._waiting[path][:]
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()
        self._procs.clear()


def stop_and_gc(pods: "List[Tuple[podmod.Pod, float]]") -> None:
    """Before their removal: stop every running pod of the list at once (each with its stop
    timeout) and run stage1's gc for all of them through one GcBatch, each pod as it stops.
    Each pod's delete() then only returns its addresses, unmounts and removes its directory."""
    from .run import stop_many

    batch = GcBatch()
    try:
        running = [(p, t) for p, t in pods if p.state() == "running"]
        for p, dummy in pods:
            if p.state() != "running":
                batch.submit(p)
        stop_many(running, stopped=batch.submit)
    finally:
        batch.close()


def _name_of(pod: "podmod.Pod") -> Optional[str]:
    """The pod's name: the one its spec records when the names still give it this pod (one
    read), else a look through every name (what removing N pods paid N times over)."""
    try:
        name = (pod.spec().get("spec") or {}).get("name")
    except (OSError, ValueError, AttributeError):
        name = None
    if isinstance(name, str) and name and "/" not in name and not name.startswith(".") \
            and podmod.name_to_uuid(pod.dd, name) == pod.uuid:
        return name
    return podmod.pod_names(pod.dd).get(pod.uuid)


def delete(pod: "podmod.Pod") -> None:
    """Remove a pod that we hold the exclusive lock of (or that cannot be locked any more)."""
    from ..stage1 import linux

    if os.path.exists(pod.file(contract.METADATA)):
        from . import metadata

        metadata.deregister(pod.dd, pod.uuid)
    err = _stage1_gc(pod)
    crashpoint.hit("pod_gc.delete.after_stage1_gc")
    if not err and os.path.exists(pod.file(contract.NET)):  # addresses and host ports go back to the pool
        from . import ipam

        ipam.release(pod.dd, pod.uuid)
    for m in _mounts_under(pod.path):
        try:
            linux.umount2(m, 2)  # MNT_DETACH
        except OSError:
            pass
    crashpoint.hit("pod_gc.delete.after_umount")
    path = pod.path
    name = _name_of(pod)
    remove_tree(path)
    crashpoint.hit("pod_gc.delete.after_remove_tree")
    from . import idrange

    idrange.release(pod.dd, "uuid:%s" % pod.uuid)
    if name and podmod.name_to_uuid(pod.dd, name) == pod.uuid:
        podmod.set_name(pod.dd, name, None)
    if err:
        raise RocketError("pod %s removed, but %s" % (pod.uuid, err))


def _mark(p: "podmod.Pod", now: float, prepared_expiry: float, dry_run: bool, report: Dict[str, List[str]]) -> None:
    s = p.state()
    if not (s in ("exited", "aborted") or (s == "prepared" and now - p.mtime() > prepared_expiry)):
        return
    if dry_run:
        report["marked"].append(p.uuid)
        return
    if s == "prepared" and not p.take_lock(exclusive=True, block=False):
        return
    try:
        p.move("exited-garbage" if s == "exited" else "garbage")
        crashpoint.hit("pod_gc.mark.after_move")
        report["marked"].append(p.uuid)
    finally:
        p.release()


def _sweepable(p: "podmod.Pod", now: float, grace: float) -> bool:
    if p.dir_state not in ("exited-garbage", "garbage", "embryo"):
        return False
    if p.dir_state == "exited-garbage" and grace > 0 and now - p.mtime() < grace:
        return False
    return not (p.dir_state == "embryo" and now - p.mtime() < EMBRYO_GRACE)


def _gc_many(dd: DataDir, now: float, grace: float) -> None:
    """stage1's gc of every pod the sweep is about to remove, through one GcBatch."""
    batch = GcBatch()
    try:
        for p in podmod.list_pods(dd):
            try:
                if _sweepable(p, now, grace):
                    batch.submit(p)
            except (FileNotFoundError, NotFoundError, podmod.PodStateError):
                continue
    finally:
        batch.close()


def _sweep(p: "podmod.Pod", now: float, grace: float, dry_run: bool, report: Dict[str, List[str]]) -> None:
    if not _sweepable(p, now, grace):
        return
    if dry_run:
        report["removed"].append(p.uuid)
        return
    if not p.take_lock(exclusive=True, block=False):
        return  # another gc is on it
    try:
        if not os.path.isdir(p.path):
            return
        delete(p)
        report["removed"].append(p.uuid)
    except RocketError as e:
        report["errors"].append(str(e))
    finally:
        p.release()


def gc(dd: DataDir, grace: float = DEFAULT_GRACE, prepared_expiry: float = DEFAULT_PREPARED_EXPIRY,
       dry_run: bool = False) -> Dict[str, List[str]]:
    report: Dict[str, List[str]] = {"marked": [], "removed": [], "errors": []}
    if not dd.exists():
        return report
    now = time.time()
    for p in podmod.list_pods(dd):
        try:
            _mark(p, now, prepared_expiry, dry_run, report)
        except (FileNotFoundError, NotFoundError, podmod.PodStateError):
            continue  # another gc moved it first: a lost race is normal
    now = time.time()  # the marks just made must count as at least this old
    if not dry_run:
        _gc_many(dd, now, grace)
    for p in podmod.list_pods(dd):
        try:
            _sweep(p, now, grace, dry_run, report)
        except (FileNotFoundError, NotFoundError, podmod.PodStateError):
            continue
    if not dry_run:
        from . import metadata

        try:
            if metadata.stop_if_unused(dd):
                report["metadata_service_stopped"] = [metadata.service_dir(dd)]
        except RocketError as e:
            report["errors"].append(str(e))
        _sweep_names(dd, now)
    return report


def _sweep_names(dd: DataDir, now: float) -> None:
    """Drop names whose pod is gone: a removal killed between the pod and its name."""
    from .locks import try_locked

    try:
        entries = os.listdir(dd.names)
    except FileNotFoundError:
        return
    for n in entries:
        path = os.path.join(dd.names, n)
        if n.startswith(".") and n.endswith(".tmp"):  # an atomic write that died
            try:
                if now - os.lstat(path).st_mtime > EMBRYO_GRACE:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        uuid = podmod.name_to_uuid(dd, n)
        if uuid is not None:
            try:
                podmod.Pod(dd, uuid, "run").refresh()
                continue
            except NotFoundError:
                pass
        lock = try_locked(dd.lock_path("name-" + n))
        if lock is None:
            continue  # being converged right now
        try:
            if podmod.name_to_uuid(dd, n) == uuid:
                podmod.set_name(dd, n, None)
        finally:
            lock.close()


def remove(pod: "podmod.Pod", stop_timeout: float = 10.0) -> None:
    """Remove one pod now, whatever its state (stopping it first if it runs)."""
    from .run import stop

    if pod.state() == "running":
        stop(pod, stop_timeout)
    pod.refresh()
    if pod.dir_state == "embryo":  # its creator may not hold the lock yet: only gc, later
        raise podmod.PodStateError("pod %s is being created" % pod.uuid)
    if pod.dir_state in ("run", "prepared", "prepare"):
        if not pod.take_lock(exclusive=True, block=False):
            raise podmod.PodStateError("pod %s is busy (another process holds it)" % pod.uuid)
        try:
            pod.move("garbage")
            crashpoint.hit("pod_gc.remove.after_move")
        finally:
            pod.release()
    if not pod.take_lock(exclusive=True, block=False):
        raise podmod.PodStateError("pod %s is busy (another process holds it)" % pod.uuid)
    try:
        delete(pod)
    finally:
        pod.release()
