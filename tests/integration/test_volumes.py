"""Named and tmpfs volumes, per-mount read_only and propagation, pod_volume and pod_gc's
volumes, checked from inside real busybox pods (issue #16, storage)."""
import os
import subprocess

import pytest

from tests.support.ansible_run import module
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import volumes
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir


def four_steps(name, args, expect_changed=True):
    """check, apply, again, check: the first two change (or not), the last two never."""
    out = []
    for check, changed in ((True, expect_changed), (False, expect_changed), (False, False), (True, False)):
        r = module(name, args, check=check, diff=True)
        assert not r.get("failed") and r["changed"] is changed, (check, r)
        out.append(r)
    return out


PROBE = r"""
stat -c 'data %a %u %g' /data
stat -c 'scratch %a %u %g' /scratch
dd if=/dev/zero of=/scratch/fits bs=1k count=512 2>/dev/null && echo fits-ok
dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>&1; echo big-exit=$?
touch /ro/x 2>&1; echo ro-exit=$?
echo kept > /data/kept && echo write-ok
grep -c ' /scratch .* - tmpfs .*size=1024k' /proc/self/mountinfo
"""


def test_named_and_tmpfs_volumes_from_inside_pods(dd):
    spec = {"name": "w", "image": "example.com/busybox", "net": "none", "data_dir": dd,
            "exec": ["/bin/sleep", "1000"],
            "volumes": [{"name": "data", "kind": "named", "mode": "0770", "uid": 1000},
                        {"name": "scratch", "kind": "tmpfs", "size": "1m", "mode": "0700", "uid": 7, "gid": 8}],
            "mounts": [{"volume": "data", "path": "/data"}, {"volume": "scratch", "path": "/scratch"},
                       {"volume": "data", "path": "/ro", "read_only": True}]}
    checked, applied, dummy_again, dummy_check = four_steps("pod_run", spec)
    assert checked["action"] == applied["action"] == "run"
    assert os.path.isdir(volumes.data_path(DataDir(dd), "data"))  # created on first use, not in check mode
    mounts = {m["path"]: m for m in applied["pod"]["apps"][0]["isolation"]["mounts"]}
    assert mounts["/data"]["kind"] == "named" and mounts["/data"]["read_only"] is False
    assert mounts["/ro"]["read_only"] is True and mounts["/ro"]["volume_name"] == "data"
    assert mounts["/scratch"]["kind"] == "tmpfs" and mounts["/scratch"]["size"] == 1 << 20
    assert mounts["/scratch"]["nosuid"] and mounts["/scratch"]["nodev"]

    r = module("pod_enter", {"name": "w", "argv": ["/bin/sh", "-c", PROBE], "data_dir": dd})
    out = r["stdout"]
    assert "data 770 1000 0" in out and "scratch 700 7 8" in out, out
    assert "fits-ok" in out and "No space left on device" in out and "big-exit=1" in out, out
    assert "Read-only file system" in out and "ro-exit=1" in out and "write-ok" in out, out
    assert out.strip().endswith("1"), out  # the tmpfs's own size, as the kernel reports it

    # a read_only change is a difference that names the mount; the pod is replaced
    r = module("pod_run", dict(spec, mounts=spec["mounts"][:2] + [{"volume": "data", "path": "/ro"}]),
               check=True, diff=True)
    assert r["changed"] and "apps[0].mounts" in r["diff"]["after"], r

    # the data outlives the pod, and a second pod (private users: idmapped) sees and adds to it
    assert module("pod_run", {"name": "w", "state": "absent", "data_dir": dd})["changed"]
    data = volumes.data_path(DataDir(dd), "data")
    with open(os.path.join(data, "kept")) as f:
        assert f.read() == "kept\n"
    job = {"name": "reader", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
           "private_users": True, "volumes": [{"name": "v", "kind": "named", "volume_name": "data"}],
           "mounts": [{"volume": "v", "path": "/v"}],
           "exec": ["/bin/sh", "-c", "cat /v/kept; touch /v/mine; chown 1000:1000 /v/mine; stat -c '%u' /v"]}
    r = module("pod_run", job)
    log = r["pod"]["apps"][0]["log"]
    assert "kept" in log and log.strip().endswith("1000"), log
    assert r["pod"]["apps"][0]["isolation"]["mounts"][0]["idmapped"] is True
    st = os.stat(os.path.join(data, "mine"))
    assert (st.st_uid, st.st_gid) == (1000, 1000)  # the pod's ids on disk, not its host range's
    root_file = os.stat(os.path.join(data, "kept"))
    assert root_file.st_uid == 0

    # in use: refused, and nothing removed; then the four steps of absent
    r = module("pod_volume", {"name": "data", "state": "absent", "data_dir": dd})
    assert r.get("failed") and "used by pod" in r["msg"] and os.path.isdir(data), r
    listed = module("pod_volume_info", {"data_dir": dd})
    assert not listed["changed"] and [v["name"] for v in listed["volumes"]] == ["data"]
    info = listed["volumes"][0]
    assert len(info["used_by"]) == 1 and info["uid"] == 1000 and info["mode"] == "0770"
    assert module("pod_run", {"name": "reader", "state": "absent", "data_dir": dd})["changed"]
    checked, applied, dummy_again, dummy_check = four_steps("pod_volume", {"name": "data", "state": "absent",
                                                                           "data_dir": dd})
    assert checked["diff"]["before"]["name"] == "data" and checked["diff"]["after"] == {}
    assert not os.path.exists(volumes.volume_path(DataDir(dd), "data"))


def test_pod_volume_four_steps_options_and_errors(data_dir):
    args = {"name": "cache", "mode": "0700", "uid": 33, "gid": 33, "labels": {"app": "web"}, "data_dir": data_dir}
    checked, applied, dummy_again, dummy_check = four_steps("pod_volume", args)
    assert checked["diff"]["before"] == {} and applied["volume"]["labels"] == {"app": "web"}
    st = os.stat(volumes.data_path(DataDir(data_dir), "cache"))
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o700, 33, 33)
    # a pod's root changed the owner: the module notices and brings it back
    os.chown(volumes.data_path(DataDir(data_dir), "cache"), 0, 0)
    r = module("pod_volume", dict(args, mode="0750"), diff=True)
    assert r["changed"] and r["diff"]["after"] == {"mode": "0750", "uid": 33, "gid": 33}, r
    st = os.stat(volumes.data_path(DataDir(data_dir), "cache"))
    assert (st.st_mode & 0o7777, st.st_uid) == (0o750, 33)
    one = module("pod_volume_info", {"name": "cache", "data_dir": data_dir})["volumes"]
    assert [(v["name"], v["mode"], v["used_by"]) for v in one] == [("cache", "0750", [])]
    r = module("pod_volume", {"name": "../etc", "data_dir": data_dir})
    assert r.get("failed") and "name" in r["msg"] and "AC Name" in r["msg"], r
    assert sorted(os.listdir(volumes.root(DataDir(data_dir)))) == ["cache"]  # nothing left by the errors


def test_a_symlinked_named_volume_is_refused(dd, tmp_path):
    dd_ = DataDir(dd)
    volumes.create(dd_, "evil")
    data = volumes.data_path(dd_, "evil")
    os.rmdir(data)
    os.symlink(str(tmp_path), data)
    r = module("pod_run", {"name": "s", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                           "exec": ["/bin/true"], "volumes": [{"name": "evil", "kind": "named"}],
                           "mounts": [{"volume": "evil", "path": "/e"}]})
    assert r.get("failed") and "symlink" in r["msg"] and "evil" in r["msg"], r
    assert module("pod_info", {"data_dir": dd})["pods"] == []  # nothing left behind


def test_pod_gc_keeps_the_volumes_pods_use(dd):
    dd_ = DataDir(dd)
    volumes.create(dd_, "spare")
    r = module("pod_prepare", {"name": "user", "image": "example.com/busybox", "exec": ["/bin/true"], "data_dir": dd,
                               "volumes": [{"name": "used", "kind": "named"}],
                               "mounts": [{"volume": "used", "path": "/u"}]})
    assert r["changed"] and os.path.isdir(volumes.data_path(dd_, "used"))
    r = module("pod_gc", {"grace": 0, "data_dir": dd})
    assert "volumes_removed" not in r and volumes.list_volumes(dd_) == ["spare", "used"]
    r = module("pod_gc", {"grace": 0, "volumes": True, "data_dir": dd}, check=True)
    assert r["changed"] and r["volumes_removed"] == ["spare"] and volumes.list_volumes(dd_) == ["spare", "used"]
    r = module("pod_gc", {"grace": 0, "volumes": True, "data_dir": dd})
    assert r["volumes_removed"] == ["spare"] and volumes.list_volumes(dd_) == ["used"]


@pytest.fixture
def shared_source(tmp_path):
    """A host directory that is a shared mount (as under systemd), unmounted after the test."""
    src = str(tmp_path / "shared")
    os.mkdir(src)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rocket-test-src", src], check=True)
    try:
        subprocess.run(["mount", "--make-shared", src], check=True)
        yield src
    finally:
        subprocess.run(["umount", "-R", src], check=True)


def test_propagation_rslave_receives_the_hosts_mounts_and_shared_needs_privileged(dd, shared_source):
    spec = {"name": "prop", "image": "example.com/busybox", "net": "none", "data_dir": dd,
            "exec": ["/bin/sleep", "1000"], "volumes": [{"name": "src", "kind": "host", "source": shared_source}],
            "mounts": [{"volume": "src", "path": "/mnt", "propagation": "rslave"},
                       {"volume": "src", "path": "/again", "propagation": "slave", "read_only": True},
                       {"volume": "src", "path": "/plain"}]}
    r = module("pod_run", spec)
    assert r["changed"] and r["pod"]["state"] == "running", r
    props = {m["path"]: m["propagation"] for m in r["pod"]["apps"][0]["isolation"]["mounts"]}
    assert props == {"/mnt": "rslave", "/again": "slave", "/plain": "rprivate"}, props
    sub = os.path.join(shared_source, "sub")
    os.mkdir(sub)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "rocket-test-sub", sub], check=True)
    try:
        with open(os.path.join(sub, "hello"), "w") as f:
            f.write("from-host\n")
        probe = ["/bin/sh", "-c", "cat /mnt/sub/hello 2>&1; grep ' /mnt ' /proc/self/mountinfo"]
        out = module("pod_enter", {"name": "prop", "argv": probe, "data_dir": dd})["stdout"]
        assert "from-host" in out and "master:" in out, out  # a slave of the host's peer group
        again = ["/bin/sh", "-c", "cat /again/sub/hello; touch /again/x 2>&1; grep ' /again ' /proc/self/mountinfo"]
        out = module("pod_enter", {"name": "prop", "argv": again, "data_dir": dd})["stdout"]
        assert "from-host" in out and "Read-only" in out and " ro," in out and "master:" in out, out
        plain = ["/bin/sh", "-c", "cat /plain/sub/hello 2>&1; grep ' /plain ' /proc/self/mountinfo"]
        out = module("pod_enter", {"name": "prop", "argv": plain, "data_dir": dd})["stdout"]
        assert "from-host" not in out and "master:" not in out, out  # the default: private
    finally:
        subprocess.run(["umount", sub], check=True)
    r = module("pod_run", dict(spec, name="out", mounts=[{"volume": "src", "path": "/mnt", "propagation": "rshared"}]))
    assert r.get("failed") and "apps[0].mounts[0].propagation" in r["msg"] and "privileged" in r["msg"], r
    r = module("pod_run", dict(spec, name="out", volumes=[{"name": "src", "kind": "tmpfs"}]))
    assert r.get("failed") and "applies to host volumes only" in r["msg"], r
    assert [p["name"] for p in module("pod_info", {"data_dir": dd})["pods"]] == ["prop"]
    # privileged: rshared sends the pod's mount to the host (the fixture unmounts it)
    r = module("pod_run", dict(spec, name="out", privileged=True, state="exited",
                               mounts=[{"volume": "src", "path": "/mnt", "propagation": "rshared"}],
                               exec=["/bin/sh", "-c", "mkdir -p /mnt/in && mount -t tmpfs rocket-test-in /mnt/in"]))
    assert r["pod"]["apps"][0]["exit_code"] == 0, r
    with open("/proc/self/mountinfo") as f:
        assert any(" %s/in " % shared_source in line for line in f)


def test_pod_set_and_pod_prepare_take_the_same_options(dd):
    """The options through pod_set's items (four steps) and pod_prepare; a tmpfs under
    private_users has the owner asked for as the pod sees it."""
    item = {"name": "setpod", "image": "example.com/busybox", "net": "none", "state": "exited", "private_users": True,
            "volumes": [{"name": "t", "kind": "tmpfs", "size": "64k", "mode": "0750", "uid": 5, "gid": 6},
                        {"name": "n", "kind": "named", "volume_name": "set-data"}],
            "mounts": [{"volume": "t", "path": "/t"}, {"volume": "n", "path": "/n", "read_only": True}],
            "exec": ["/bin/sh", "-c", "stat -c 't %a %u %g' /t; touch /n/x 2>&1; grep -c ' /t .*size=64k' /proc/self/mountinfo"]}
    checked, applied, dummy_again, dummy_check = four_steps("pod_set", {"data_dir": dd, "pods": [item]})
    pod = applied["pods"][0]["pod"]
    log = pod["apps"][0]["log"]
    assert "t 750 5 6" in log and "Read-only file system" in log and log.strip().endswith("1"), log
    mounts = {m["path"]: m for m in pod["apps"][0]["isolation"]["mounts"]}
    assert mounts["/t"]["kind"] == "tmpfs" and mounts["/t"]["uid"] == 5
    assert mounts["/n"]["kind"] == "named" and mounts["/n"]["idmapped"] is True and mounts["/n"]["read_only"] is True
    prep = {"name": "prep", "image": "example.com/busybox", "exec": ["/bin/true"], "data_dir": dd,
            "volumes": item["volumes"], "mounts": item["mounts"]}
    assert module("pod_prepare", prep)["changed"] and not module("pod_prepare", prep)["changed"]
    r = module("pod_prepare", dict(prep, volumes=[dict(item["volumes"][0], size="128k"), item["volumes"][1]]),
               check=True, diff=True)
    assert r["changed"] and list(r["diff"]["after"]) == ["volumes"], r
