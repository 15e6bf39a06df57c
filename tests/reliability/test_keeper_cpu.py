"""The keeper's CPU counts against the pod (issue #13, finding 7).

The keeper moves every line an app writes into its log: for ``yes`` that is far more work
per byte than the app's own. Outside the pod's cgroup it was unbounded, so an app limited
to 100m made the keeper take a host core. Now the keeper joins the pod's ``_keeper`` leaf,
under a pod-level quota (the sum of the apps' quotas), and both share the limit.
"""
import os
import time

import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups

TICK = os.sysconf("SC_CLK_TCK")
WINDOW = 3.0
LIMIT = 0.25  # cores, for a 100m pod: the quota plus the slack of a loaded 2-core machine


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid, "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def test_yes_in_a_100m_pod_does_not_take_a_core_through_its_keeper(store):
    probe = cgroups.PodCgroups("probe")
    if "cpu" not in probe.v1 and "cpu" not in probe.v2_controllers:
        pytest.skip("no cpu controller on this host (v1 or v2): no CPU limit is enforced, the "
                    "keeper's included (docs/reliability.md says so)")
    p = prepare.prepare(store, {"apps": [{"name": "app", "image": "example.com/busybox", "exec": ["/bin/yes"],
                                          "isolators": [{"name": "resource/cpu", "value": {"limit": "100m"}}]}]}).pod
    run.start_detached(p, net="none")
    try:
        # restart_policy no, no healthcheck: the keeper hands over and leaves, and PID 1 pumps
        # the logs (stage1/keeping.py Keeping). Looking before it left found its zombie, which
        # the kernel shows in the root cgroup.
        pods.wait_keeper_gone(p)
        keeper = p.pid()
        with open(p.file("apps", "app", "pid")) as f:
            app = int(f.read())
        time.sleep(0.5)  # past the start
        before = _cpu_seconds(keeper) + _cpu_seconds(app)
        t0 = time.monotonic()
        time.sleep(WINDOW)
        used = (_cpu_seconds(keeper) + _cpu_seconds(app) - before) / (time.monotonic() - t0)
        print("keeper + app: %.3f cores" % used)
        with open("/proc/%d/cgroup" % keeper) as f:
            where = f.read()
        assert used <= LIMIT, "keeper + app used %.2f cores of a 100m pod; keeper's cgroups:\n%s" % (used, where)
        assert "/rocket/%s/%s" % (p.uuid, cgroups.KEEPER_LEAF) in where
    finally:
        run.stop(p, timeout=10)
