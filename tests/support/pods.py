"""Pods for tests: a busybox image in a fresh store, and helpers to prepare and run."""
import os

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci

from . import images
from .stage1_harness import base_rootfs

_BUSYBOX_ACI = {}


def busybox_aci(tmp_root, name="example.com/busybox", version="1.0.0", app=None, **extra):
    """Build (once per name/version/app) an ACI of a busybox userland; returns its path."""
    key = (name, version, repr(app), repr(sorted(extra.items())))
    if key in _BUSYBOX_ACI and os.path.exists(_BUSYBOX_ACI[key]):
        return _BUSYBOX_ACI[key]
    root = os.path.join(str(tmp_root), "busybox-rootfs")
    if not os.path.isdir(root):
        base_rootfs(root)
    m = images.manifest(name, version, app=False, **extra)
    m["app"] = app or {"exec": ["/bin/sh", "-c", "echo hello from busybox"], "user": "0", "group": "0"}
    out = os.path.join(str(tmp_root), "%s-%s-%d.aci" % (name.replace("/", "_"), version, len(_BUSYBOX_ACI)))
    aci.build_aci(root, m, out, compression="none")
    _BUSYBOX_ACI[key] = out
    return out


def remove_all(dd):
    """Stop and remove every pod of a data directory: what a test left behind is then judged
    by the leak checker as the test's, not the fixture's."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

    for p in podmod.list_pods(dd):
        try:
            pod_gc.remove(p, stop_timeout=2)
        except RocketError:
            pass
    _reap_zombies()


def _reap_zombies():
    """Collect our children that have exited: when we are a subreaper, the PID 1 of a pod
    without a keeper (restart_policy no) comes to us once its keeper leaves, as it would to
    the host's init. Living children (a session's registries) are left alone."""
    me = str(os.getpid())
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me and fields[0] == "Z":
            try:
                os.waitpid(int(entry), os.WNOHANG)
            except ChildProcessError:
                pass


def busybox_store(data_dir, image_dir, *more):
    """A store holding the busybox image (and each ACI path of ``more``); a generator for
    fixtures: its pods are removed and the store closed after the test."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    s = Store(data_dir)
    s.import_file(busybox_aci(image_dir))
    for path in more:
        s.import_file(path)
    yield s
    remove_all(s.dd)
    s.close()


def subreaper(on=True):
    """PR_SET_CHILD_SUBREAPER: what a test or a benchmark starts that double-forks (a daemon,
    a keeper, conmon, a killed driver's orphans) becomes our child, for us to stop and reap;
    PID 1 here reaps nothing."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(36, int(on), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


_LONG_LIVED = set()


def long_lived(pid, on=True):
    """Mark (or unmark) a child that outlives the tests, such as the session's registries:
    reap() neither waits for it nor collects it (its Popen stops it and reaps it), where
    ``waitpid(-1)`` would see it alive and wait out reap's whole timeout."""
    if on:
        _LONG_LIVED.add(pid)
    else:
        _LONG_LIVED.discard(pid)


def _children():
    """Our children, living or zombies (this kernel has no /proc/PID/task/TID/children)."""
    me = str(os.getpid())
    kids = set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open("/proc/%s/stat" % name) as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        kids.add(int(name))
            except (OSError, IndexError):
                continue
    return kids


def reap(settle=0.0, timeout=0.0):
    """Collect every exited child (after ``settle`` seconds), waiting up to ``timeout`` for
    the living to exit; returns how many. Children marked long_lived() are left alone. Call
    it only when no child is being waited for."""
    import time

    if settle:
        time.sleep(settle)
    deadline = time.monotonic() + timeout
    n = 0
    while True:
        if _LONG_LIVED:
            pending = _children() - _LONG_LIVED
            if not pending:
                return n
            for pid in pending:
                try:
                    if os.waitpid(pid, os.WNOHANG)[0]:
                        n += 1
                except ChildProcessError:
                    pass
            if not _children() - _LONG_LIVED:
                return n
        else:
            try:
                pid, dummy_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return n
            if pid:
                n += 1
                continue
        if time.monotonic() >= deadline:
            return n
        time.sleep(0.02)


def wait_log(pod, app, word, timeout=10.0):
    """The app's log once ``word`` is in it, or as it is after ``timeout`` seconds."""
    import time

    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run

    deadline = time.monotonic() + timeout
    while word not in run.read_log(pod, app) and time.monotonic() < deadline:
        time.sleep(0.05)
    return run.read_log(pod, app)


def wait_keeper_gone(pod, timeout=5.0):
    """Reap the keeper of a pod that keeps none once it runs (restart policy no, no
    healthcheck); its PID 1 is then the pod's only process besides the apps.

    Until the keeper has handed over and exited, it still looks like PID 1's parent; once it
    exited unreaped, /proc shows a zombie in the root cgroup. Either misleads a test that looks
    for the pod's keeping process, so such a test waits here first."""
    import time

    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run

    keeper = run._keepers.pop(pod.uuid)
    deadline = time.monotonic() + timeout
    while os.waitpid(keeper, os.WNOHANG)[0] == 0:
        assert time.monotonic() < deadline, "the keeper of a restart_policy no pod stayed"
        time.sleep(0.02)
    return keeper
