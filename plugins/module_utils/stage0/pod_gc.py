"""Garbage-collect pods: rkt's mark and sweep, safe to run twice at once.

Mark: a ``run`` pod whose lock is free has exited: rename it to ``exited-garbage``.
Sweep: after the grace period, take its lock, run stage1's gc entrypoint (cgroups,
networking), return the pod's addresses and host ports to the pool, undo any mount left
under it, remove it without following a symlink out, and drop its name. Aborted prepares and expired prepared pods go the same way.
A lost rename race means another gc got there first, which is fine.
After a reboot no lock survives, so every stale ``run`` pod is seen as exited.
"""
import os
import subprocess
import sys
import time
from typing import Dict, List, Optional

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
    if not os.path.exists(pod.file(contract.NET)):
        from ..stage1 import cgroups

        if not any(os.path.isdir(d) for d in cgroups.PodCgroups(pod.uuid).pod_dirs()):
            return None  # no network and no cgroup: stage1 left nothing outside (a pod never run)
    if not os.path.exists(gc):
        return "stage1 gc entrypoint %s is missing" % gc
    p = subprocess.run([sys.executable, "-I", "-S", "-B", gc, pod.uuid], cwd=pod.path, stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60, check=False)
    if p.returncode != 0:
        return "stage1 gc failed (%d): %s" % (p.returncode, p.stdout.decode("utf-8", "replace").strip()[-500:])
    return None


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
    names = podmod.pod_names(pod.dd)
    remove_tree(path)
    crashpoint.hit("pod_gc.delete.after_remove_tree")
    from . import idrange

    idrange.release(pod.dd, "uuid:%s" % pod.uuid)
    name = names.get(pod.uuid)
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


def _sweep(p: "podmod.Pod", now: float, grace: float, dry_run: bool, report: Dict[str, List[str]]) -> None:
    if p.dir_state not in ("exited-garbage", "garbage", "embryo"):
        return
    if p.dir_state == "exited-garbage" and grace > 0 and now - p.mtime() < grace:
        return
    if p.dir_state == "embryo" and now - p.mtime() < EMBRYO_GRACE:
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
