"""pod_run's cgroup_parent (docker's and podman's), in real pods (busybox): the pod's cgroups
go under the named parent in every hierarchy, limits, pausing, stopping (its PIDs found there)
and removal work there, the parent outlives the pod, and a parent that climbs, names an
interface file or a pod's cgroup is refused before anything changes."""
import os
import time

import pytest

from tests.support.ansible_run import module
from tests.support.leaks import TEST_PARENT
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import contract
from ansible_collections.appc.rocket.plugins.module_utils.stage1.cgroups import PodCgroups

PARENT = TEST_PARENT + "/web.slice"
COUNTER = ["/bin/sh", "-c", "trap 'exit 0' TERM; while :; do sleep 0.05; done"]


@pytest.fixture
def parent():
    """The parent's levels, removed (leaves first) after the test in every hierarchy."""
    yield PARENT
    cg = PodCgroups("x")
    for root in cg.roots():
        for d in (os.path.join(root, PARENT), os.path.join(root, TEST_PARENT)):
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass


def test_a_pods_cgroups_under_its_parent_from_start_to_removal(dd, parent):
    args = {"name": "cp", "image": "example.com/busybox", "net": "none", "data_dir": dd, "exec": COUNTER,
            "cgroup_parent": "/" + parent + "/", "pids_limit": 77}
    r = module("pod_run", args, diff=True)
    assert r["changed"] and r["diff"]["after"]["run"]["cgroup_parent"] == parent, r
    uuid = r["pod"]["uuid"]
    cg = PodCgroups(uuid, parent=parent)
    dirs = cg.pod_dirs()
    assert dirs and all(os.path.isdir(os.path.join(d, "busybox")) for d in dirs), dirs
    assert not any(os.path.isdir(d) for d in PodCgroups(uuid).pod_dirs())  # nothing under rocket/
    # the app's own processes sit there, as the host sees them
    v2_app = os.path.join(cg.pod_dir(cg.v2), "busybox")
    with open(os.path.join(v2_app, "cgroup.procs")) as f:
        pid = int(f.read().split()[0])
    with open("/proc/%d/cgroup" % pid) as f:
        text = f.read()
    assert "/%s/%s/busybox" % (parent, uuid) in text and contract.in_pod_cgroup(text, uuid), text
    pids = cg._controller_root("pids")
    if pids is not None:  # the limit holds in the app's cgroup under the parent
        with open(os.path.join(cg.app_dir(pids, "busybox"), "pids.max")) as f:
            assert f.read().strip() == "77"
    assert module("pod_run", args)["changed"] is False
    assert module("pod_run", dict(args, paused=True))["action"] == "pause"
    with open(os.path.join(v2_app, "cgroup.freeze")) as f:
        assert f.read().strip() == "1"

    moved = dict(args, cgroup_parent=TEST_PARENT + "/other.slice")
    r = module("pod_run", moved, check=True, diff=True)
    assert r["action"] == "replace" and r["diff"]["after"] == {"run.cgroup_parent": TEST_PARENT + "/other.slice"}, r
    # Removal: the pod's PID 1 is found under the parent (SIGTERM, not the 30 s timeout's
    # SIGKILL), the pod's cgroups go, the parent the user named stays.
    began = time.monotonic()
    r = module("pod_run", {"name": "cp", "data_dir": dd, "state": "absent", "stop_timeout": 30})
    assert r["changed"] and time.monotonic() - began < 15, r
    assert not any(os.path.isdir(d) for d in dirs), dirs
    assert all(os.path.isdir(os.path.join(root, parent)) for root in cg.roots())


def test_an_exited_pod_under_a_parent_is_collected(dd, parent):
    args = {"name": "job", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
            "exec": ["/bin/true"], "cgroup_parent": parent}
    r = module("pod_run", args)
    assert r["pod"]["state"] == "exited" and r["pod"]["apps"][0]["exit_code"] == 0, r
    dirs = PodCgroups(r["pod"]["uuid"], parent=parent).pod_dirs()
    removed = module("pod_gc", {"data_dir": dd, "grace": 0})["removed"]  # marked, and swept at grace 0
    removed += module("pod_gc", {"data_dir": dd, "grace": 0})["removed"]
    assert removed == [r["pod"]["uuid"]], removed
    assert not any(os.path.isdir(d) for d in dirs), dirs


@pytest.mark.parametrize("bad, why", [
    ("../escape", "empty, . or .."),
    ("a/../../b", "empty, . or .."),
    ("a//b", "empty, . or .."),
    ("pods/cgroup.procs", "interface file"),
    ("rocket/5b2c0a7e-8a55-4f0b-9d1e-3f6a2c1d4e70", "UUID"),
    ("two words", "letters, digits"),
    ("a\nb", "letters, digits"),
])
def test_a_bad_parent_is_refused_before_anything_changes(dd, bad, why):
    args = {"name": "bad", "image": "example.com/busybox", "net": "none", "data_dir": dd, "exec": COUNTER,
            "cgroup_parent": bad}
    for check in (True, False):
        r = module("pod_run", args, check=check)
        assert r.get("failed") and not r["changed"] and why in r["msg"] and "cgroup_parent" in r["msg"], r
    assert module("pod_info", {"data_dir": dd})["pods"] == []
