"""Shared by the reliability suites: run the driver, kill it, then recover and judge.

``settle(data_dir)`` is the promise every crash must keep: after stopping what still runs
and running pod gc and store gc, every pod is gone or validly prepared, the store check
finds nothing, ``cas/tmp`` is empty; the autouse leak checker then looks for mounts, netns,
veths, cgroups, processes and fds.
"""
import os
import subprocess
import sys
import time

from tests.support import COLLECTIONS, leaks
from tests.support.pods import reap
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, run, store_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "driver.py")


def env(crash_at=None, crash_log=None):
    """The environment of a driver or soak worker: the collection importable (PYTHONPATH),
    crash points only where asked for."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("ROCKET_CRASH_")}
    e["PYTHONPATH"] = COLLECTIONS
    if crash_at:
        e["ROCKET_CRASH_AT"] = crash_at
    if crash_log:
        e["ROCKET_CRASH_LOG"] = str(crash_log)
    return e


def spawn(data_dir, *args, crash_at=None, crash_log=None):
    return subprocess.Popen([sys.executable, DRIVER, str(data_dir)] + [str(a) for a in args],
                            env=env(crash_at, crash_log), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def drive(data_dir, *args, crash_at=None, crash_log=None, timeout=120):
    """Run one op; returns (returncode, stdout, stderr)."""
    p = spawn(data_dir, *args, crash_at=crash_at, crash_log=crash_log)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def ok(data_dir, *args):
    rc, out, err = drive(data_dir, *args)
    assert rc == 0, "driver %s failed (%s): %s" % (args, rc, err[-2000:])
    import json
    return json.loads(out.splitlines()[-1])


def stop_running(dd):
    for p in podmod.list_pods(dd):
        if p.dir_state != "run" or p.state() != "running":
            continue
        deadline = time.monotonic() + 20
        while p.pid() is None and p.state() == "running" and time.monotonic() < deadline:
            time.sleep(0.02)  # a keeper orphaned while starting: let it finish starting
        if p.state() == "running":
            run.stop(p, timeout=5)


def abandon(data_dir):
    """After a failed test: stop and remove every pod, whatever goes wrong, so that a failure
    is reported as itself and leaves no pod running past its temporary directory."""
    dd = DataDir(str(data_dir))
    if not dd.exists():
        return
    for p in podmod.list_pods(dd):
        try:
            pod_gc.remove(p, stop_timeout=5)
        except Exception:  # noqa: BLE001 - best effort; the test has failed already
            pass
    reap(timeout=15)


def settle(data_dir, keep_images=True):
    """Recover after a crash and assert that nothing is broken, dangling or left over."""
    dd = DataDir(str(data_dir))
    if not dd.exists():
        reap(timeout=15)
        return
    uuids = {p.uuid for p in podmod.list_pods(dd)}
    stop_running(dd)
    reap(timeout=15)
    grace = pod_gc.EMBRYO_GRACE
    pod_gc.EMBRYO_GRACE = 0  # no creator is alive any more: an unlocked embryo is garbage now
    try:
        report = pod_gc.gc(dd, grace=0)
    finally:
        pod_gc.EMBRYO_GRACE = grace
    assert not report["errors"], report
    left = [(p.uuid, p.state()) for p in podmod.list_pods(dd)]
    assert all(s == "prepared" for dummy, s in left), "pod gc left %s" % left
    for p in podmod.list_pods(dd):
        pod_gc.remove(p)
    names = os.listdir(dd.names)
    assert names == [], "names of removed pods are left: %s" % names
    with Store(str(data_dir)) as s:
        store_gc.gc(s, grace=3600 if keep_images else 0)
        problems = store_gc.check(s)
        assert problems == [], problems
        tmp = os.listdir(dd.tmp)
        assert tmp == [], "cas/tmp holds %s" % tmp
    reap(timeout=15)
    cgroups = [c for c in leaks.snapshot()["cgroups"] if os.path.basename(c) in uuids]
    assert cgroups == [], "cgroups of removed pods are left: %s" % cgroups
