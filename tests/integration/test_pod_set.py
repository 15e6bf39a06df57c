"""pod_set through real ansible runs: a list of images and pods converged in one task."""
import json

import pytest

from tests.support import pods
from tests.support.ansible_run import module


@pytest.fixture
def dd(tmp_path):
    d = str(tmp_path / "rocket")
    yield d
    for p in module("pod_info", {"data_dir": d}).get("pods") or []:
        module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": d})


def pod(name, version="1.0.0", **kw):
    return dict({"name": name, "image": "example.com/busybox:" + version, "net": "none",
                 "exec": ["/bin/sh", "-c", "exec sleep 1000"]}, **kw)


def test_list_converges_in_four_steps_and_purges_only_managed_pods(tmp_path, dd):
    aci = pods.busybox_aci(tmp_path)
    args = {"data_dir": dd, "managed_by": "test", "images": [{"src": aci}],
            "pods": [pod("a"), pod("b", secret_environment={"TOKEN": "hunter2-secret"}), pod("c")]}
    r = module("pod_set", args, check=True, diff=True)
    assert r["changed"] is True and [p["changed"] for p in r["pods"]] == [True] * 3, r
    assert r["images"][0]["changed"] is True
    assert [d["before_header"] for d in r["diff"]][0].startswith("image images[0]")
    r = module("pod_set", args, diff=True)
    assert r["changed"] is True and [p["action"] for p in r["pods"]] == ["run"] * 3, r
    assert all(p["pod"]["state"] == "running" for p in r["pods"])
    assert "hunter2" not in json.dumps(r)
    r = module("pod_set", args)
    assert r["changed"] is False and [p["action"] for p in r["pods"]] == ["none"] * 3, r
    r = module("pod_set", args, check=True, diff=True)
    assert r["changed"] is False and r["diff"] == [], r

    # A pod not declared by this owner stays; a managed pod no longer declared goes.
    hand = module("pod_run", {"name": "byhand", "data_dir": dd, **{k: v for k, v in pod("x").items() if k != "name"}})
    assert hand["changed"] is True
    less = dict(args, purge=True, pods=[pod("a"), pod("b", secret_environment={"TOKEN": "hunter2-secret"})])
    r = module("pod_set", less, check=True)
    assert r["changed"] is True and r["purged"] == ["c"], r
    r = module("pod_set", less)
    assert r["changed"] is True and r["purged"] == ["c"], r
    r = module("pod_set", less)
    assert r["changed"] is False and r["purged"] == [], r
    names = sorted(p["name"] for p in module("pod_info", {"data_dir": dd})["pods"])
    assert names == ["a", "b", "byhand"]


def test_image_update_replaces_the_pods_that_use_it(tmp_path, dd):
    v1 = pods.busybox_aci(tmp_path, version="1.0.0")
    args = {"data_dir": dd, "images": [{"src": v1}],
            "pods": [pod("uses", version="1.0.0"), pod("other")]}
    del args["pods"][1]["image"], args["pods"][1]["exec"]
    args["pods"][1]["apps"] = [{"image": "example.com/busybox:1.0.0", "name": "other",
                                "exec": ["/bin/sh", "-c", "exec sleep 1000"]}]
    r = module("pod_set", args)
    assert r["changed"] is True
    first = {p["name"]: p["pod"]["uuid"] for p in r["pods"]}
    # The same name and version, new content: the image ID behind the reference moves.
    v1b = pods.busybox_aci(tmp_path / "b", version="1.0.0", annotations=[{"name": "build", "value": "2"}])
    new = dict(args, images=[{"src": v1b}])
    r = module("pod_set", new, check=True)
    assert r["changed"] is True and all(p["changed"] and p["action"] == "replace" for p in r["pods"]), r
    assert "would be imported" in r["pods"][0]["reasons"][0]
    r = module("pod_set", new)
    assert all(p["action"] == "replace" for p in r["pods"]), r
    assert all(p["pod"]["uuid"] != first[p["name"]] for p in r["pods"])
    assert module("pod_set", new)["changed"] is False


def test_failures_name_the_item_and_keep_earlier_results(tmp_path, dd):
    aci = pods.busybox_aci(tmp_path)
    r = module("pod_set", {"data_dir": dd, "images": [{"src": aci}],
                           "pods": [pod("ok"), pod("bad", image="example.com/missing:9")]})
    assert r.get("failed") and "pods[1] (bad)" in r["msg"] and "example.com/missing" in r["msg"], r
    assert [p["name"] for p in r["pods"]] == ["ok", "bad"] and r["pods"][0]["changed"] is True
    r = module("pod_set", {"data_dir": dd, "pods": [pod("ok"), pod("ok")]})
    assert r.get("failed") and "more than once: ok" in r["msg"], r
    r = module("pod_set", {"data_dir": dd, "purge": True, "pods": []})
    assert r.get("failed") and "purge needs managed_by" in r["msg"], r
    r = module("pod_set", {"data_dir": dd, "images": [{"src": str(tmp_path / "nope.aci")}]})
    assert r.get("failed") and "images[0]" in r["msg"] and "nope.aci" in r["msg"], r


def test_a_bad_option_in_any_item_changes_nothing(tmp_path, dd):
    """Options are checked for every item before the first change: the running pod is not
    replaced, the new one is not made, a purge target is not stopped."""
    aci = pods.busybox_aci(tmp_path)
    r = module("pod_set", {"data_dir": dd, "managed_by": "t", "images": [{"src": aci}],
                           "pods": [pod("keep"), pod("gone")]})
    assert r["changed"] is True and not r.get("failed"), r
    before = [(p["uuid"], p["name"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]]
    for bad, why in (({"hostname": "a\n10.0.0.1 evil"}, "hostname"), ({"unsetenv": ["9x"]}, "apps[0].unsetenv[0]"),
                     ({"memory": "lots"}, "apps[0].memory"), ({"ip": "10.0.0.300"}, "ip"),
                     ({"restart_policy": "sometimes"}, "restart_policy")):
        r = module("pod_set", {"data_dir": dd, "managed_by": "t", "purge": True,
                               "pods": [pod("keep", exec=["/bin/sleep", "999"]), pod("new"), pod("bad", **bad)]})
        assert r.get("failed") and r["msg"].startswith("pods[2] (bad): " + why), (bad, r.get("msg"))
        assert r["changed"] is False and r["pods"] == [] and r["purged"] == [], r
        assert [(p["uuid"], p["name"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]] == before
