"""Stopping N pods in one module run overlaps their stops (issue #19).

Each pod's app takes SLOW seconds to stop: on SIGTERM it writes the time into a host
directory, sleeps, then exits. Stopped one after another, the last pod would get its SIGTERM
about (N-1) * SLOW seconds after the first; overlapped, all get it before the first has
finished stopping. The assertion is on the order of events, not on a duration.
"""
import os

from tests.support import pods
from tests.support.ansible_run import module

N, SLOW = 3, 2


def pod(name, shared):
    # /proc/uptime: the host's clock (in centiseconds) without busybox date's missing %N.
    script = ("trap 'cut -d\" \" -f1 /proc/uptime > /out/%s; sleep %d; exit 0' TERM; while :; do sleep 0.2; done"
              % (name, SLOW))
    return {"name": name, "image": "example.com/busybox", "net": "none", "exec": ["/bin/sh", "-c", script],
            "stop_timeout": 30, "volumes": [{"name": "out", "kind": "host", "source": shared}],
            "mounts": [{"volume": "out", "path": "/out"}]}


def signalled(shared):
    return sorted(float(open(os.path.join(shared, n)).read()) for n in os.listdir(shared))


def test_pod_set_stops_absent_and_purged_pods_together(tmp_path):
    dd = str(tmp_path / "rocket")
    shared = str(tmp_path / "out")
    os.mkdir(shared)
    os.chmod(shared, 0o777)
    aci = pods.busybox_aci(tmp_path)
    names = ["s%d" % i for i in range(N)]
    try:
        r = module("pod_set", {"data_dir": dd, "images": [{"src": aci}], "managed_by": "t",
                               "pods": [pod(n, shared) for n in names]})
        assert r["changed"] and all(p["pod"]["state"] == "running" for p in r["pods"]), r

        # Declared absent: every pod's SIGTERM came before the first pod had stopped.
        r = module("pod_set", {"data_dir": dd, "pods": [{"name": n, "state": "absent"} for n in names[:2]]})
        assert r["changed"] and [p["changed"] for p in r["pods"]] == [True, True], r
        t = signalled(shared)
        assert len(t) == 2 and t[-1] - t[0] < SLOW, t

        # Purged: the same, and the pod declared absent in the same task joins them.
        for n in names[:2]:
            os.unlink(os.path.join(shared, n))
        r = module("pod_set", {"data_dir": dd, "images": [{"src": aci}], "managed_by": "t",
                               "pods": [pod(n, shared) for n in names[:2]]})
        assert r["changed"], r
        r = module("pod_set", {"data_dir": dd, "managed_by": "t", "purge": True, "purge_stop_timeout": 30,
                               "pods": [{"name": names[0], "state": "absent"}]})
        assert r["changed"] and sorted(r["purged"]) == names[1:], r
        t = signalled(shared)
        assert len(t) == N and t[-1] - t[0] < SLOW, t
        assert module("pod_info", {"data_dir": dd}).get("pods") == []
    finally:
        for p in module("pod_info", {"data_dir": dd}).get("pods") or []:
            module("pod_run", {"uuid": p["uuid"], "state": "absent", "stop_timeout": 0, "data_dir": dd})


def test_a_stop_wakes_on_the_keepers_exit_not_on_a_poll(tmp_path, monkeypatch):
    """A pod started by another process (a module run): its stop holds a pidfd of the
    keeper found through PID 1's parent, and never sleeps between looks at the lock."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    dd = str(tmp_path / "rocket")
    aci = pods.busybox_aci(tmp_path)
    try:
        r = module("pod_set", {"data_dir": dd, "images": [{"src": aci}], "pods": [
            {"name": "w", "image": "example.com/busybox", "net": "none", "exec": ["/bin/sleep", "1000"]}]})
        assert r["changed"] and r["pods"][0]["pod"]["state"] == "running", r
        with Store(dd) as s:
            p = podmod.find_by_name(s.dd, "w")
            assert p.uuid not in run._keepers
            slept = []
            monkeypatch.setattr(run.time, "sleep", slept.append)
            assert run.stop(p, 5) is True
            monkeypatch.undo()
            assert p.state() == "exited" and slept == [], slept
    finally:
        for p in module("pod_info", {"data_dir": dd}).get("pods") or []:
            module("pod_run", {"uuid": p["uuid"], "state": "absent", "stop_timeout": 0, "data_dir": dd})
