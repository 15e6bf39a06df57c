"""Issue #16 (limits): memory, cpus, cpuset, pids_limit, block I/O, ulimits, shm_size and
oom_score_adj through pod_run, seen from inside a busybox pod; on this hybrid host and on a simulated
cgroup-v2-only one (tools/cgroup2-only.sh, where the VM's v2 hierarchy has no memory, cpu,
cpuset, pids or io controller: every cgroup limit must then say "not enforced").

Root only."""
import os
import stat
import time

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import limits
from tests.integration.test_pod_modules import four_steps
from tests.support.ansible_run import module

V2ONLY = os.environ.get("ROCKET_TEST_CGROUP") == "v2only"
# Below the runtime's own oom_score_adj (0) where root may lower it (CAP_SYS_RESOURCE, which
# this test VM's root lacks); above it elsewhere. The refusal is checked below either way.
OOM = -500 if limits.has_sys_resource() else 500
CGROUP_LIMITS = ("resource/memory", "resource/cpu", "rocket/memory-swap", "rocket/cpuset", "rocket/pids",
                 "rocket/block-io")

# One line per fact; r() reads the app's own cgroup file of a v1 hierarchy (as /proc/self/cgroup
# names it inside the pod's cgroup namespace).
PROBE = r'''
r() { p=$(grep ":$1:" /proc/self/cgroup | cut -d: -f3); cat /sys/fs/cgroup/$1$p/$2 2>/dev/null || echo none; }
echo SOFT=$(ulimit -n)
echo HARD=$(ulimit -Hn)
echo CORE=$(ulimit -c)
echo CPUS=$(grep Cpus_allowed_list /proc/self/status | cut -f2)
echo SHM=$(df -k /dev/shm | tail -1 | awk '{print $2}')
echo MEM=$(r memory memory.limit_in_bytes)
echo MEMSOFT=$(r memory memory.soft_limit_in_bytes)
echo MEMSW=$(r memory memory.memsw.limit_in_bytes)
echo PIDS=$(r pids pids.max)
echo BPS=$(r blkio blkio.throttle.read_bps_device)
echo OOM=$(cat /proc/self/oom_score_adj)
'''


def facts(log):
    out = {}
    for line in log.splitlines():
        k, sep, v = line.split(" ", 1)[-1].partition("=")
        if sep:
            out[k] = v.strip()
    return out


def a_block_device():
    for name in sorted(os.listdir("/sys/block")):
        path = "/dev/" + name
        if os.path.exists(path) and stat.S_ISBLK(os.stat(path).st_mode):
            st = os.stat(path)
            return path, "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    pytest.fail("this host has no block device node under /dev")


def test_limits_inside_the_pod_four_steps_diff_and_errors(dd):
    dev, devno = a_block_device()
    cpu = str((os.cpu_count() or 1) - 1)
    args = {"name": "lim", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
            "exec": ["/bin/sh", "-c", PROBE], "memory": "64m", "memory_reservation": "32m",
            "memory_swap": "96m", "cpus": 0.5, "cpuset_cpus": cpu, "pids_limit": 20,
            "device_read_bps": [{"path": dev, "rate": "1m"}],
            "ulimits": ["nofile=100:200", {"name": "core", "soft": 0}], "shm_size": "8m",
            "oom_score_adj": OOM}
    checked, applied = four_steps(args, "run")
    app = applied["pod"]["apps"][0]
    f = facts(app["log"])
    iso = app["isolation"]
    # not cgroups: the same on every host
    assert f["SOFT"] == "100" and f["HARD"] == "200" and f["CORE"] == "0", app["log"]
    assert f["SHM"] == str(8 * 1024), app["log"]
    assert f["OOM"] == str(OOM), app["log"]  # the app's process (cat) inherits it
    assert iso["limits"]["oom_score_adj"] == OOM, iso["limits"]
    assert {"rocket/ulimits", "rocket/shm-size", "os/linux/oom-score-adj"} <= set(iso["enforced"]), iso
    assert iso["limits"]["ulimits"] == {"core": [0, 0], "nofile": [100, 200]}, iso["limits"]
    ignored = {i["name"]: i["reason"] for i in iso["ignored"]}
    if V2ONLY:
        for name in CGROUP_LIMITS:
            assert name not in iso["enforced"], iso
            assert ignored[name].startswith("not enforced: controller unavailable"), iso
        assert f["CPUS"] == "0-%d" % ((os.cpu_count() or 1) - 1) or f["CPUS"] == "0", app["log"]
    else:
        assert set(CGROUP_LIMITS) <= set(iso["enforced"]), iso
        assert not ignored, iso
        assert f["CPUS"] == cpu, app["log"]
        assert f["MEM"] == str(64 << 20) and f["MEMSOFT"] == str(32 << 20), app["log"]
        assert f["MEMSW"] == str(96 << 20), app["log"]
        assert f["PIDS"] == "20", app["log"]
        assert f["BPS"] == "%s %d" % (devno, 1 << 20), app["log"]

    # a changed limit replaces the pod, and --diff names it
    changed = dict(args, memory="96m", memory_swap=None, ulimits=["nofile=100:200", "core=0"])
    r = module("pod_run", changed, diff=True)
    assert r["changed"] is True and r["action"] == "replace", r
    assert r["diff"] == {"before": {"apps[0].memory": 64 << 20, "apps[0].memory_swap": 96 << 20},
                         "after": {"apps[0].memory": 96 << 20, "apps[0].memory_swap": None}}, r["diff"]
    assert "apps[0].memory" in " ".join(r["reasons"]), r
    if not V2ONLY:  # without memory_swap the app gets no swap
        assert facts(r["pod"]["apps"][0]["log"])["MEMSW"] == str(96 << 20), r["pod"]["apps"][0]["log"]

    # hostile values fail before anything is made, naming the option
    before = [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]]
    # (every other refusal is in tests/unit/test_limits_unit.py: the same code, without a module run)
    bads = [(dict(changed, name="bad", ulimits=["nofile=200:100"]), "apps[0].ulimits[0].soft"),
            (dict(changed, name="bad", device_read_bps=["/etc/passwd:1m"]), "apps[0].device_read_bps[0].path")]
    if not limits.has_sys_resource():  # this VM's root: what only CAP_SYS_RESOURCE may do is refused up front
        bads.append((dict(changed, name="bad", oom_score_adj=-1), "apps[0].oom_score_adj"))
        if limits._own_hard_limit("memlock") is not None:  # 8 MiB here
            bads.append((dict(changed, name="bad", ulimits=["memlock=-1"]), "apps[0].ulimits[0].hard"))
    for bad, where in bads:
        r = module("pod_run", bad)
        assert r.get("failed") and where in r["msg"], (where, r.get("msg"))
    assert [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]] == before


def _pids(uuid, app, name):
    with open("/sys/fs/cgroup/pids/rocket/%s/%s/%s" % (uuid, app, name)) as f:
        return f.read().strip()


def test_a_fork_bomb_stops_at_pids_limit_and_the_pod_still_stops(dd):
    # The bomb forks two copies of itself that do the same; a subshell that dies (a fork
    # refused) is started again, so it keeps pressing on the limit until the pod is stopped.
    # It waits for /tmp/go, which an entered command makes once it has seen the app's ulimits.
    bomb = ("(while [ ! -e /tmp/go ]; do sleep 0.1; done; "
            "while :; do ( b() { b & b & wait; }; b ) 2>/dev/null; done) & exec sleep 1000")
    args = {"name": "bomb", "image": "example.com/busybox", "net": "none", "data_dir": dd,
            "exec": ["/bin/sh", "-c", bomb if not V2ONLY else "exec sleep 1000"],
            "pids_limit": 16, "cpus": 0.3, "ulimits": ["nofile=50:60"]}
    r = module("pod_run", args)
    assert r["pod"]["state"] == "running", r
    uuid = r["pod"]["uuid"]
    # an entered command is never stronger than the app: the same ulimits
    e = module("pod_enter", {"name": "bomb", "argv": ["/bin/sh", "-c", "ulimit -n; ulimit -Hn; touch /tmp/go"],
                             "data_dir": dd})
    assert e["rc"] == 0 and e["stdout"].split() == ["50", "60"], e
    iso = r["pod"]["apps"][0]["isolation"]
    if V2ONLY:
        # no pids controller here: said so, and no bomb is let loose on the host
        assert {"name": "rocket/pids", "reason": "not enforced: controller unavailable (no cgroup pids "
                "controller on this host)"} in iso["ignored"], iso
    else:
        assert "rocket/pids" in iso["enforced"], iso
        assert _pids(uuid, "busybox", "pids.max") == "16"
        # (one refused fork is enough: a loaded CI host gives the 0.3-CPU bomb few turns)
        deadline = time.monotonic() + 45
        refused = 0
        while time.monotonic() < deadline:
            assert int(_pids(uuid, "busybox", "pids.current")) <= 16
            refused = int(_pids(uuid, "busybox", "pids.events").split()[-1])
            if refused > 0:
                break
            time.sleep(0.1)
        assert refused > 0, "the bomb never reached the limit"
        if os.path.exists("/sys/fs/cgroup/pids/rocket/%s/busybox/pids.peak" % uuid):
            assert _pids(uuid, "busybox", "pids.peak") == "16"
    started = time.monotonic()
    r = module("pod_run", {"uuid": uuid, "state": "absent", "data_dir": dd})
    assert r["changed"] is True and not r.get("failed"), r
    assert time.monotonic() - started < 30
    for hierarchy in ("pids", "memory", "cpu", "cpuset", "blkio", "devices", "unified", ""):
        assert not os.path.exists(os.path.join("/sys/fs/cgroup", hierarchy, "rocket", uuid)), hierarchy
    assert module("pod_info", {"data_dir": dd})["pods"] == []
    # (the session's leak check adds: no process, mount, namespace or cgroup of ours is left)


def test_an_app_without_pids_limit_gets_the_default_and_minus_one_is_unlimited(dd):
    """A default pod must not be able to take every PID of the host (a fork bomb as root in
    it would leave the host unable to fork): an app that asks for no pids_limit gets
    stage1's default (podman's 2048); -1 asks for none, and is no difference from 0."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups

    base = {"image": "example.com/busybox", "net": "none", "data_dir": dd, "exec": ["/bin/sleep", "1000"]}
    plain = module("pod_run", dict(base, name="plain"))
    free = module("pod_run", dict(base, name="free", pids_limit=-1))
    for r in (plain, free):
        assert r["pod"]["state"] == "running", r
    iso = plain["pod"]["apps"][0]["isolation"]
    assert iso["limits"] == {} and iso["ignored"] == [], iso  # not asked: nothing reported as asked
    free_iso = free["pod"]["apps"][0]["isolation"]
    assert free_iso["limits"] == {"pids_limit": -1} and free_iso["ignored"] == [], free_iso
    if V2ONLY:  # no pids controller: nothing to write, and nothing said to be missing
        assert cgroups.PIDS_NOTE not in iso["notes"], iso
    else:
        assert _pids(plain["pod"]["uuid"], "busybox", "pids.max") == str(cgroups.PIDS_DEFAULT) == "2048"
        assert cgroups.PIDS_NOTE in iso["notes"], iso
        assert _pids(free["pod"]["uuid"], "busybox", "pids.max") == "max"
    # the same ask spelled 0 changes nothing; unset is a change (back to the default)
    again = module("pod_run", dict(base, name="free", pids_limit=0))
    assert again["changed"] is False, again
    back = module("pod_run", dict(base, name="free"), diff=True)
    assert back["changed"] is True and "apps[0].pids_limit" in str(back.get("diff")), back
    for name in ("plain", "free"):
        assert module("pod_run", {"name": name, "state": "absent", "data_dir": dd})["changed"] is True
