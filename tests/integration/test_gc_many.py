"""Removing N pods in one module run starts one stage1 gc process, not N (issue #19).

stage1's gc (networking, cgroups) used to run as one interpreter per removed pod, most of a
removal's time. pod_set now sends every pod it removes to one `gc --many` process as each
pod stops. The module run is traced (strace, execve only) to count the gc processes; the
leak checker and the assertions below check that nothing of the pods stays behind.
"""
import json
import os
import re

from tests.support import pods
from tests.support.ansible_run import module

GC_EXEC = re.compile(r'execve\("[^"]*", \["[^"]*", "-I", "-S", "-B", "[^"]*/rootfs/gc", ("[^"]*")')


def gc_execs(trace):
    with open(trace) as f:
        return [json.loads(m.group(1)) for m in GC_EXEC.finditer(f.read())]


def cgroup_dirs(uuids):
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups

    return [d for u in uuids for d in cgroups.PodCgroups(u).pod_dirs() if os.path.isdir(d)]


def _running(tmp_path, names):
    """Pods of those names running /bin/sleep (net none) in a fresh data directory: (dd, uuids)."""
    dd = str(tmp_path / "rocket")
    r = module("pod_set", {"data_dir": dd, "images": [{"src": pods.busybox_aci(tmp_path)}], "pods": [
        {"name": n, "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"], "net": "none"} for n in names]})
    return dd, [p["pod"]["uuid"] for p in r["pods"]]


def _spy_popen(monkeypatch, pod_gc):
    """The commands pod_gc starts from now on (subprocess.run goes through Popen too)."""
    spawned = []
    real_popen = pod_gc.subprocess.Popen
    monkeypatch.setattr(pod_gc.subprocess, "Popen", lambda cmd, **kw: spawned.append(cmd) or real_popen(cmd, **kw))
    return spawned


def _remove_left(dd):
    for p in module("pod_info", {"data_dir": dd}).get("pods") or []:
        module("pod_run", {"uuid": p["uuid"], "state": "absent", "stop_timeout": 0, "data_dir": dd})


def test_pod_set_removes_many_pods_through_one_gc_process(tmp_path):
    dd = str(tmp_path / "rocket")
    trace = str(tmp_path / "trace")
    aci = pods.busybox_aci(tmp_path)
    names = ["g%d" % i for i in range(4)]
    declared = [{"name": n, "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"], "stop_timeout": 0,
                 "net": "default" if i % 2 else "none"} for i, n in enumerate(names)]
    try:
        r = module("pod_set", {"data_dir": dd, "images": [{"src": aci}], "pods": declared})
        assert all(p["pod"]["state"] == "running" for p in r["pods"]), r
        uuids = [p["pod"]["uuid"] for p in r["pods"]]
        assert len(cgroup_dirs(uuids)) >= len(uuids)
        r = module("pod_set", {"data_dir": dd, "pods": [{"name": n, "state": "absent", "stop_timeout": 0}
                                                        for n in names]},
                   wrap=["strace", "-f", "-qq", "--seccomp-bpf", "-e", "trace=execve", "-s", "4096", "-o", trace])
        assert r["changed"] and [p["changed"] for p in r["pods"]] == [True] * len(names), r
        assert gc_execs(trace) == ["--many"]  # one per pod before: ["<uuid>", "<uuid>", ...]
        assert module("pod_info", {"data_dir": dd}).get("pods") == []
        assert cgroup_dirs(uuids) == []
        assert sorted(os.listdir(os.path.join(dd, "pods", "run"))) == []
    finally:
        _remove_left(dd)


def test_a_stage1_without_gc_many_gets_one_gc_per_pod(tmp_path, monkeypatch):
    """A pod prepared with a stage1 that names no gc-many entrypoint (an older or another
    stage1) is left out of the batch: its removal runs `gc <uuid>` as before."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    dd, uuids = _running(tmp_path, ("old", "new1", "new2"))
    try:
        with Store(dd) as s:
            found = [podmod.find(s.dd, u) for u in uuids]
            plan = found[0].read_json("mounts.json")
            del plan["entrypoints"]["gc-many"]
            with open(found[0].file("mounts.json"), "w") as f:
                json.dump(plan, f)
            spawned = _spy_popen(monkeypatch, pod_gc)
            pod_gc.stop_and_gc([(p, 0) for p in found])
            for p in found:
                pod_gc.remove(p, 0)
            monkeypatch.undo()
        assert [c[-1] for c in spawned] == ["--many", uuids[0]]  # the batch, then the old pod's own gc
        assert cgroup_dirs(uuids) == []
        assert module("pod_info", {"data_dir": dd}).get("pods") == []
    finally:
        _remove_left(dd)


def test_the_sweep_of_many_exited_pods_is_one_gc_process(tmp_path, monkeypatch):
    """pod_gc's sweep (the pod_gc module, the boot unit) does the same for exited pods."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, run
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    dd, uuids = _running(tmp_path, ("e1", "e2", "e3"))
    try:
        with Store(dd) as s:
            run.stop_many([(podmod.find(s.dd, u), 0) for u in uuids])
            assert len(cgroup_dirs(uuids)) >= len(uuids)
            spawned = _spy_popen(monkeypatch, pod_gc)
            report = pod_gc.gc(s.dd, grace=0)
            monkeypatch.undo()
        assert sorted(report["removed"]) == sorted(uuids) and report["errors"] == [], report
        assert [c[-1] for c in spawned] == ["--many"]
        assert cgroup_dirs(uuids) == []
    finally:
        _remove_left(dd)
