"""pod_run's paused (docker's): the apps' cgroup v2 freezer, in real pods (busybox).

A paused pod's apps stop where they are and resume where they were; pausing and resuming
are changes of their own (idempotent, check mode and diff) and never replace the pod; a stop
or removal resumes it first, so the apps get their stop signal rather than the SIGKILL at
the stop timeout; enter refuses a paused app; the keeper skips a paused app's health checks.
"""
import os
import time

from tests.support.ansible_run import module
from tests.integration.test_health import health_of
from tests.integration.test_pod_modules import four_steps
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import healthcheck, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage1.cgroups import PodCgroups

COUNTER = ["/bin/sh", "-c", "trap 'exit 0' TERM; i=0; while :; do i=$((i+1)); echo tick $i; sleep 0.05; done"]


def events(uuid, app):
    """The app's cgroup.events as the kernel says it: {"populated": "1", "frozen": "1"}."""
    path = os.path.join(os.path.dirname(PodCgroups(uuid).freeze_file(app)), "cgroup.events")
    with open(path) as f:
        return dict(line.split() for line in f if line.strip())


def ticks(dd, uuid, app="busybox"):
    pod = podmod.find(DataDir(dd), uuid)
    return run.read_log(pod, app).count("tick")


def test_pause_resume_and_remove_a_paused_pod(dd):
    base = {"name": "ctr", "image": "example.com/busybox", "net": "none", "data_dir": dd, "exec": COUNTER}
    r = module("pod_run", base)
    assert r["changed"] and r["pod"]["paused"] is False, r
    uuid = r["pod"]["uuid"]
    time.sleep(0.3)

    checked, applied = four_steps(dict(base, paused=True), "pause")
    assert checked["diff"] == {"before": {"paused": False}, "after": {"paused": True}}, checked["diff"]
    assert applied["pod"]["uuid"] == uuid and applied["pod"]["paused"] is True and applied["pod"]["state"] == "running"
    assert events(uuid, "busybox")["frozen"] == "1"
    n = ticks(dd, uuid)
    time.sleep(0.6)
    assert ticks(dd, uuid) == n, "a paused app went on writing"
    assert module("pod_info", {"name": "ctr", "data_dir": dd})["pods"][0]["paused"] is True

    # Entering would join the frozen cgroup and hang: refused, with the reason.
    r = module("pod_enter", {"name": "ctr", "data_dir": dd, "argv": ["/bin/true"], "timeout": 20})
    assert r.get("failed") and "paused" in r["msg"], r

    checked, applied = four_steps(dict(base, paused=False), "unpause")
    assert checked["diff"] == {"before": {"paused": True}, "after": {"paused": False}}, checked["diff"]
    assert applied["pod"]["uuid"] == uuid and applied["pod"]["paused"] is False
    assert events(uuid, "busybox")["frozen"] == "0"
    n = ticks(dd, uuid)
    time.sleep(0.6)
    assert ticks(dd, uuid) > n, "the app did not resume"

    # Removing a paused pod resumes it first: its app exits on SIGTERM, long before the
    # SIGKILL that the stop timeout (30 s here) would bring to a still frozen one.
    assert module("pod_run", dict(base, paused=True))["action"] == "pause"
    began = time.monotonic()
    r = module("pod_run", {"name": "ctr", "data_dir": dd, "state": "absent", "stop_timeout": 30})
    took = time.monotonic() - began
    assert r["changed"] and r["action"] == "remove", r
    assert took < 15, "removing a paused pod took %.1fs: its app waited for the SIGKILL" % took
    assert module("pod_info", {"data_dir": dd})["pods"] == []


def test_a_pod_started_paused_and_stopped_paused(dd):
    """paused on a pod the task starts: it runs, then freezes; state=exited stops it, resumed
    first, and its app's exit is its own (trap: exit 0), not a kill."""
    args = {"name": "p", "image": "example.com/busybox", "net": "none", "data_dir": dd, "exec": COUNTER,
            "paused": True}
    checked, applied = four_steps(args, "run")
    assert checked["diff"]["after"]["paused"] is True
    pod = applied["pod"]
    assert pod["paused"] is True and events(pod["uuid"], "busybox")["frozen"] == "1"
    r = module("pod_run", {"name": "p", "data_dir": dd, "state": "exited", "stop_timeout": 30})
    assert r["changed"] and r["action"] == "stop", r
    assert r["pod"]["state"] == "exited" and r["pod"]["paused"] is False
    assert r["pod"]["apps"][0]["exit_code"] == 0 and not r["pod"]["apps"][0].get("signal"), r["pod"]["apps"][0]


def test_paused_is_refused_where_it_cannot_hold(dd):
    """A paused pod neither exits nor passes checks: refused before anything changes."""
    base = {"name": "x", "image": "example.com/busybox", "net": "none", "data_dir": dd, "exec": COUNTER,
            "paused": True}
    for extra in ({"state": "exited"}, {"state": "healthy"}, {"wait": True}, {"state": "absent"}):
        r = module("pod_run", dict(base, **extra))
        assert r.get("failed") and not r["changed"] and "paused: true needs state=running" in r["msg"], (extra, r)
    assert module("pod_info", {"data_dir": dd})["pods"] == []
    # pod_set checks every item first: a bad item leaves the good one unmade.
    r = module("pod_set", {"data_dir": dd, "pods": [
        {"name": "good", "image": "example.com/busybox", "net": "none", "exec": COUNTER},
        {"name": "bad", "image": "example.com/busybox", "net": "none", "exec": COUNTER, "paused": True,
         "state": "exited"}]})
    assert r.get("failed") and "paused" in r["msg"], r
    assert module("pod_info", {"data_dir": dd})["pods"] == []


def test_the_keeper_skips_a_paused_apps_health_checks(dd):
    """Without the skip, the probe of a frozen app is refused (or frozen until its timeout)
    and, with on_failure=restart, an unhealthy verdict would restart the pod."""
    args = {"name": "hc", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "healthy",
            "wait_timeout": 30, "exec": ["/bin/sh", "-c", "exec sleep 1000"],
            "healthcheck": {"test": "true", "interval": "200ms", "timeout": 1, "retries": 1, "on_failure": "restart"}}
    r = module("pod_run", args)
    assert r["changed"] and r["pod"]["apps"][0]["health"]["status"] == "healthy", r
    uuid = r["pod"]["uuid"]
    pod = podmod.find(DataDir(dd), uuid)
    r = module("pod_run", dict(args, state="running", paused=True))
    assert r["action"] == "pause" and r["pod"]["uuid"] == uuid, r
    last = healthcheck.health(pod)["busybox"]["last"]["started"]
    time.sleep(2.5)  # a dozen intervals
    h = healthcheck.health(pod)["busybox"]
    assert h["status"] == "healthy" and h["failing_streak"] == 0 and h["restarts"] == 0, h
    assert h["last"]["started"] == last, "a probe ran while the app was paused: %s" % h
    r = module("pod_info", {"name": "hc", "data_dir": dd})["pods"][0]
    assert r["uuid"] == uuid and r["state"] == "running" and r["paused"] is True
    r = module("pod_run", dict(args, state="running", paused=False))
    assert r["action"] == "unpause", r
    health_of(pod, "busybox", lambda h: h["last"]["started"] > last and h["status"] == "healthy")


def test_a_keeper_restart_of_a_paused_pod_runs_thawed(dd):
    """The keeper's restart reuses the pod's cgroups: the new run must not start inside the
    frozen ones (it would hang half-started). The OOM killer's SIGKILL reaches a frozen app;
    here the test's does."""
    args = {"name": "rs", "image": "example.com/busybox", "net": "none", "data_dir": dd, "exec": COUNTER,
            "restart_policy": "always", "restart_delay": 0.1, "paused": True}
    r = module("pod_run", args)
    assert r["pod"]["paused"] is True, r
    uuid = r["pod"]["uuid"]
    procs = os.path.join(os.path.dirname(PodCgroups(uuid).freeze_file("busybox")), "cgroup.procs")
    with open(procs) as f:
        pids = [int(x) for x in f.read().split()]
    assert pids
    for pid in pids:
        os.kill(pid, 9)
    pod = podmod.find(DataDir(dd), uuid)
    deadline = time.monotonic() + 30
    while True:
        info = module("pod_info", {"name": "rs", "data_dir": dd})["pods"][0]
        if info["restart"]["count"] >= 1 and info["state"] == "running" and info["apps"][0].get("started"):
            break
        assert time.monotonic() < deadline, "the paused pod was not restarted: %s" % info
        time.sleep(0.2)
    assert info["uuid"] == uuid and info["paused"] is False, info
    assert events(uuid, "busybox")["frozen"] == "0"
    n = ticks(dd, uuid)
    time.sleep(0.6)
    assert ticks(dd, uuid) > n, "the restarted app does not run"
    assert module("pod_run", dict(args, paused=False))["changed"] is False  # as declared now: running


def test_an_app_cannot_pause_or_resume_itself_or_its_peer(dd):
    """Attacked from inside a default pod as root: the freezer files of the app's own cgroup,
    its peer's and the pod's are read-only there (its own cgroup namespace, /sys/fs/cgroup
    read-only), so a paused peer stays paused and nothing in the pod pauses the pod."""
    sleeper = {"image": "example.com/busybox", "exec": ["/bin/sh", "-c", "exec sleep 1000"]}
    r = module("pod_run", {"name": "two", "data_dir": dd, "net": "none",
                           "apps": [dict(sleeper, name="a"), dict(sleeper, name="b")]})
    uuid = r["pod"]["uuid"]
    with open(PodCgroups(uuid).freeze_file("b"), "w") as f:
        f.write("1")  # b alone, as a partial pause by hand would be
    try:
        script = ("for f in $(find /sys/fs/cgroup -name cgroup.freeze); do echo 1 > $f && echo WROTE $f; "
                  "echo 0 > $f && echo WROTE $f; done; find /sys/fs/cgroup -name cgroup.freeze | wc -l")
        r = module("pod_enter", {"name": "two", "app": "a", "data_dir": dd, "argv": ["/bin/sh", "-c", script]})
        assert r["rc"] == 0 and "WROTE" not in r["stdout"], r
        assert int(r["stdout"].split()[-1]) >= 1, r  # it saw freezer files, and could write none
        assert events(uuid, "b")["frozen"] == "1" and events(uuid, "a")["frozen"] == "0"
        # b alone frozen is not a paused pod: paused=false thaws it, paused=true freezes both.
        assert module("pod_info", {"name": "two", "data_dir": dd})["pods"][0]["paused"] is False
        r = module("pod_run", {"name": "two", "data_dir": dd, "paused": False})
        assert r["action"] == "unpause" and events(uuid, "b")["frozen"] == "0", r
    finally:
        with open(PodCgroups(uuid).freeze_file("b"), "w") as f:
            f.write("0")


def test_a_host_shutdown_stops_a_paused_pod_in_order(dd):
    """appc-rocket-pods.service's stop (boot.stop_all) resumes a paused pod too: its app exits
    on its stop signal, not by the SIGKILL after PID 1's 10 s."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import boot

    r = module("pod_run", {"name": "sd", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                           "exec": COUNTER, "restart_policy": "always", "paused": True})
    uuid = r["pod"]["uuid"]
    assert r["pod"]["paused"] is True, r
    began = time.monotonic()
    assert boot.stop_all(DataDir(dd), timeout=30) == {uuid: "stopped"}
    took = time.monotonic() - began
    info = module("pod_info", {"name": "sd", "data_dir": dd})["pods"][0]
    assert info["state"] == "exited" and info["apps"][0]["exit_code"] == 0, info["apps"][0]
    assert took < 8, "a paused pod's shutdown stop took %.1fs" % took
