"""Issue #16 (limits): the resource options' normal form, their errors (naming the option's
path), their isolators, and what stage1 writes for them on fake cgroup v1 and v2 trees."""
import os
import stat

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import limits, podspec
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups, isolators


def app(**kw):
    return podspec.normalize_spec({"apps": [dict(kw, image="example.com/busybox")]})["apps"][0]


def a_block_device():
    for name in sorted(os.listdir("/sys/block")):
        path = "/dev/" + name
        if os.path.exists(path) and stat.S_ISBLK(os.stat(path).st_mode):
            return path
    pytest.fail("this host has no block device node under /dev")


def test_sizes_are_dockers_binary_units():
    for text, want in (("512m", 512 << 20), ("1g", 1 << 30), ("64MiB", 64 << 20), ("64Mi", 64 << 20),
                       ("1.5g", 3 << 29), (7340032, 7340032), ("100k", 100 << 10), ("4096", 4096), ("8b", 8)):
        assert limits.parse_size(text, "x") == want, text
    for bad in ("12x", "-1m", "m", "", True, 1.5, "0"):
        with pytest.raises(ValidationError):
            limits.parse_size(bad, "x")


def test_normal_form_and_defaults_compare_equal():
    a = app(memory="64m", memory_reservation="32m", memory_swap="128m", cpus="0.5", cpuset_cpus="1,0",
            pids_limit=20, ulimits=["nofile=100:200", {"name": "RLIMIT_CORE", "soft": 0}], shm_size="8m")
    assert a["memory"] == 64 << 20 and a["memory_reservation"] == 32 << 20 and a["memory_swap"] == 128 << 20
    assert a["cpus"] == 0.5 and a["cpuset_cpus"] == "0-1" and a["pids_limit"] == 20
    assert a["ulimits"] == [{"name": "core", "soft": 0, "hard": 0}, {"name": "nofile", "soft": 100, "hard": 200}]
    assert a["shm_size"] == 8 << 20
    # the same limits spelled otherwise are no difference
    b = app(memory=64 << 20, memory_reservation="32MiB", memory_swap="128Mi", cpus=0.5, cpuset_cpus="0-1",
            pids_limit="20", ulimits=["core=0", "nofile:100:200"], shm_size="8192k")
    assert podspec.differences(podspec.normalize_spec({"apps": [b]}), podspec.normalize_spec({"apps": [a]})) == []
    # 0 is unset for blkio_weight; for pids, 0 and -1 both ask for no limit, which is not
    # unset (unset is stage1's default, cgroups.PIDS_DEFAULT)
    plain = app()
    assert app(blkio_weight=0) == plain
    assert app(pids_limit=0) == app(pids_limit=-1) != plain
    assert app(pids_limit=0)["pids_limit"] == -1
    # a pod recorded before these options existed (no keys at all) compares equal
    old = {k: v for k, v in plain.items() if k not in limits.KEYS}
    assert podspec.differences({"apps": [plain]}, {"apps": [old]}) == []
    diff = podspec.differences({"apps": [dict(plain, memory=64 << 20)]}, {"apps": [old]})
    assert diff == [{"field": "apps[0].memory", "before": None, "after": 64 << 20}]


@pytest.mark.parametrize("kw, where, words", [
    ({"memory": "1m"}, "apps[0].memory", "at least"),
    ({"memory": "12q"}, "apps[0].memory", "not a size"),
    ({"memory": "64m", "memory_reservation": "128m"}, "apps[0].memory_reservation", "more than memory"),
    ({"memory_swap": "1g"}, "apps[0].memory_swap", "needs memory"),
    ({"memory": "64m", "memory_swap": "32m"}, "apps[0].memory_swap", "less than memory"),
    ({"cpus": 0}, "apps[0].cpus", "from 0.01"),
    ({"cpus": 4096}, "apps[0].cpus", "this host's CPUs"),
    ({"cpus": "two"}, "apps[0].cpus", "number of CPUs"),
    ({"cpuset_cpus": "0-1,x"}, "apps[0].cpuset_cpus", "not a list"),
    ({"cpuset_cpus": "4000"}, "apps[0].cpuset_cpus", "does not have online"),
    ({"cpuset_mems": "7"}, "apps[0].cpuset_mems", "memory node"),
    ({"pids_limit": -5}, "apps[0].pids_limit", "positive"),
    ({"blkio_weight": 5}, "apps[0].blkio_weight", "10 to 1000"),
    ({"device_read_bps": [{"path": "/etc/passwd", "rate": "1m"}]}, "apps[0].device_read_bps[0].path", "not a block device"),
    ({"device_write_iops": [{"path": "/nonexistent", "rate": 10}]}, "apps[0].device_write_iops[0].path", "cannot be used"),
    ({"device_read_iops": ["/dev/null"]}, "apps[0].device_read_iops[0]", "path:rate"),
    ({"ulimits": ["nofile"]}, "apps[0].ulimits[0]", "name=soft"),
    ({"ulimits": ["nofiles=1"]}, "apps[0].ulimits[0].name", "not a resource limit"),
    ({"ulimits": ["nofile=200:100"]}, "apps[0].ulimits[0].soft", "above the hard limit"),
    ({"ulimits": ["nofile=unlimited"]}, "apps[0].ulimits[0].hard", "fs.nr_open"),
    ({"ulimits": ["nproc=10", "NPROC=20"]}, "apps[0].ulimits[1].name", "twice"),
    ({"ulimits": [{"name": "nofile", "soft": 1, "hrad": 2}]}, "apps[0].ulimits[0]", "{name, soft, hard}"),
    ({"shm_size": "1k"}, "apps[0].shm_size", "one page"),
    ({"memory": "64m", "isolators": [{"name": "resource/memory", "value": {"limit": "1G"}}]},
     "apps[0].memory", "give one"),
    ({"pids_limit": 5, "isolators": [{"name": "rocket/pids", "value": {"limit": 9}}]},
     "apps[0].pids_limit", "give one"),
    ({"oom_score_adj": 1001}, "apps[0].oom_score_adj", "from -1000 to 1000"),
    ({"oom_score_adj": -1001}, "apps[0].oom_score_adj", "from -1000 to 1000"),
    ({"oom_score_adj": "high"}, "apps[0].oom_score_adj", "a number"),
    ({"oom_score_adj": True}, "apps[0].oom_score_adj", "a number"),
    ({"oom_score_adj": 5, "isolators": [{"name": "os/linux/oom-score-adj", "value": 9}]},
     "apps[0].oom_score_adj", "give one"),
])
def test_bad_values_name_the_option(kw, where, words):
    with pytest.raises(ValidationError) as e:
        app(**kw)
    assert e.value.path == where and words in str(e.value), str(e.value)


def test_isolators_appc_where_appc_has_one_and_the_option_wins_per_field():
    dev = a_block_device()
    st = os.stat(dev)
    a = app(memory="64m", cpus=1.5, memory_swap=-1, cpuset_cpus="0", cpuset_mems="0", pids_limit=9,
            blkio_weight=300, device_read_bps=[dev + ":1m"], device_write_iops=[{"path": dev, "rate": 50}],
            ulimits=["nofile=10:20"], shm_size="1m")
    image = [{"name": "resource/memory", "value": {"limit": "1G", "request": "100M"}},
             {"name": "os/linux/no-new-privileges", "value": True}]
    out = {i["name"]: i["value"] for i in limits.isolators(image, a)}
    assert out["resource/memory"] == {"limit": str(64 << 20), "request": "100M"}
    assert out["resource/cpu"] == {"limit": "1500m"}
    assert out["os/linux/no-new-privileges"] is True
    assert out["rocket/memory-swap"] == {"limit": -1}
    assert out["rocket/cpuset"] == {"cpus": "0", "mems": "0"}
    assert out["rocket/pids"] == {"limit": 9}
    device = "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))
    assert out["rocket/block-io"] == {"weight": 300, "read_bps": [{"path": dev, "device": device, "rate": 1 << 20}],
                                      "write_iops": [{"path": dev, "device": device, "rate": 50}]}
    assert out["rocket/ulimits"] == [{"name": "nofile", "soft": 10, "hard": 20}]
    assert out["rocket/shm-size"] == {"size": 1 << 20}
    # stage1 reads them back as the same numbers, and reports them under the options' names
    iso = isolators.parse([{"name": k, "value": v} for k, v in out.items()])
    assert iso.memory_limit == 64 << 20 and iso.cpu_quota_us == 150000 and iso.memory_swap == -1
    assert iso.pids_limit == 9 and iso.shm_size == 1 << 20 and iso.cpuset_cpus == "0"
    import resource
    assert iso.ulimits == [(resource.RLIMIT_NOFILE, 10, 20, "nofile")]
    rep = iso.report()
    assert set(rep["enforced"]) >= {"rocket/pids", "rocket/block-io", "rocket/ulimits", "rocket/shm-size",
                                    "rocket/cpuset", "rocket/memory-swap", "resource/cpu", "resource/memory"}
    assert rep["limits"]["ulimits"] == {"nofile": [10, 20]} and rep["limits"]["pids_limit"] == 9
    assert rep["limits"]["device_read_bps"] == [{"path": dev, "device": device, "rate": 1 << 20}]


@pytest.mark.parametrize("iso", [
    {"name": "rocket/pids", "value": {"limit": 0}},
    {"name": "rocket/pids", "value": {}},
    {"name": "rocket/ulimits", "value": [{"name": "nofiles", "soft": 1, "hard": 1}]},
    {"name": "rocket/cpuset", "value": {"cpus": "0;rm"}},
    {"name": "rocket/block-io", "value": {"weight": 5000}},
    {"name": "rocket/shm-size", "value": {"size": "big"}},
])
def test_hand_written_rocket_isolators_are_checked_at_prepare(iso):
    with pytest.raises(ValueError) as e:
        isolators.check([iso])
    assert iso["name"] in str(e.value)


def _read(path):
    with open(path) as f:
        return f.read()


def _fake_v1(tmp_path, ctrls):
    v1 = {}
    for c in ctrls:
        (tmp_path / c).mkdir()
        v1[c] = (str(tmp_path / c), [c])
    (tmp_path / "cpuset" / "cpuset.cpus").write_text("0-1\n")
    (tmp_path / "cpuset" / "cpuset.mems").write_text("0\n")
    return v1


def test_v1_writers(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups.devices_bpf, "attach", lambda d, prog: None)
    v1 = _fake_v1(tmp_path, ("memory", "cpu", "pids", "devices", "cpuset", "blkio"))
    real_makedirs = os.makedirs

    def makedirs(d, *a, **kw):  # a real cpuset cgroup starts with empty cpus and mems files
        real_makedirs(d, *a, **kw)
        if d.startswith(str(tmp_path / "cpuset") + "/"):
            for name in ("cpuset.cpus", "cpuset.mems"):
                if not os.path.exists(os.path.join(d, name)):
                    open(os.path.join(d, name), "w").close()
        if d.startswith(str(tmp_path / "memory") + "/") and d.endswith("/a"):
            open(os.path.join(d, "memory.memsw.limit_in_bytes"), "w").close()
    monkeypatch.setattr(cgroups.os, "makedirs", makedirs)
    cg = cgroups.PodCgroups("u1", v1=v1, v2=None, discover=False)
    cg.create_pod()
    iso = isolators.parse([{"name": "resource/memory", "value": {"limit": "64Mi"}},
                           {"name": "rocket/memory-swap", "value": {"limit": 128 << 20}},
                           {"name": "rocket/cpuset", "value": {"cpus": "1"}},
                           {"name": "rocket/pids", "value": {"limit": 16}},
                           {"name": "rocket/block-io", "value": {
                               "weight": 300, "read_bps": [{"device": "8:0", "rate": 1024, "path": "/dev/sda"}],
                               "write_iops": [{"device": "8:0", "rate": 5, "path": "/dev/sda"}]}}])
    out = cg.create_apps([("a", iso.limits())])
    pod = tmp_path / "%s" / "rocket" / "u1"
    assert _read(str(pod) % "cpuset" + "/cpuset.cpus") == "0-1"  # the pod's: its parent's
    assert _read(str(pod) % "cpuset" + "/_stage1/cpuset.mems") == "0"
    assert _read(str(pod) % "cpuset" + "/a/cpuset.cpus") == "1"
    assert _read(str(pod) % "pids" + "/a/pids.max") == "16"
    assert _read(str(pod) % "memory" + "/a/memory.memsw.limit_in_bytes") == str(128 << 20)
    assert _read(str(pod) % "blkio" + "/a/blkio.throttle.read_bps_device") == "8:0 1024"
    assert _read(str(pod) % "blkio" + "/a/blkio.throttle.write_iops_device") == "8:0 5"
    # no blkio.bfq.weight or blkio.weight file: the weight is said not to be enforced, nothing else
    assert out["a"] == [("rocket/block-io.weight", "not enforced: no blkio.bfq.weight or blkio.weight here "
                         "(a proportional I/O scheduler, such as BFQ, is not available)")]
    rep = isolators.reports({}, [type("A", (), {"name": "a", "isolation": iso})], out, [])["a"]
    assert {"name": "rocket/block-io.weight", "reason": out["a"][0][1]} in rep["ignored"]
    assert "rocket/block-io" in rep["enforced"] and "rocket/pids" in rep["enforced"]


def test_v2_writers(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups.devices_bpf, "attach", lambda d, prog: None)
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    cg = cgroups.PodCgroups("u2", v1={}, v2=str(tmp_path), discover=False)
    cg.create_pod()
    (tmp_path / "rocket" / "u2" / "a").mkdir()
    for name in ("memory.swap.max", "io.weight"):
        (tmp_path / "rocket" / "u2" / "a" / name).write_text("")
    iso = isolators.parse([{"name": "resource/memory", "value": {"limit": "64Mi"}},
                           {"name": "rocket/memory-swap", "value": {"limit": 96 << 20}},
                           {"name": "rocket/cpuset", "value": {"cpus": "1", "mems": "0"}},
                           {"name": "rocket/pids", "value": {"limit": 16}},
                           {"name": "rocket/block-io", "value": {
                               "weight": 1000, "write_bps": [{"device": "8:0", "rate": 1024, "path": "/dev/sda"}]}}])
    assert cg.create_apps([("a", iso.limits())]) == {"a": []}
    d = tmp_path / "rocket" / "u2" / "a"
    assert _read(d / "memory.max") == str(64 << 20)
    assert _read(d / "memory.swap.max") == str(32 << 20)  # v2 counts swap alone
    assert _read(d / "cpuset.cpus") == "1" and _read(d / "cpuset.mems") == "0"
    assert _read(d / "pids.max") == "16"
    assert _read(d / "io.weight") == "default 10000"
    assert _read(d / "io.max") == "8:0 wbps=1024"


def test_missing_controllers_are_reported_not_enforced(tmp_path, monkeypatch):
    monkeypatch.setattr(cgroups.devices_bpf, "attach", lambda d, prog: None)
    (tmp_path / "cgroup.controllers").write_text("hugetlb\n")  # this VM's v2 hierarchy
    cg = cgroups.PodCgroups("u3", v1={}, v2=str(tmp_path), discover=False)
    cg.create_pod()
    iso = isolators.parse([{"name": "resource/memory", "value": {"limit": "64Mi"}},
                           {"name": "rocket/memory-swap", "value": {"limit": -1}},
                           {"name": "rocket/cpuset", "value": {"cpus": "0"}},
                           {"name": "rocket/pids", "value": {"limit": 16}},
                           {"name": "rocket/block-io", "value": {"weight": 100}},
                           {"name": "rocket/ulimits", "value": [{"name": "nofile", "soft": 9, "hard": 9}]}])
    out = cg.create_apps([("a", iso.limits())])
    rep = isolators.reports({}, [type("A", (), {"name": "a", "isolation": iso})], out, [])["a"]
    ignored = {i["name"]: i["reason"] for i in rep["ignored"]}
    for name, ctrl in (("resource/memory", "memory"), ("rocket/memory-swap", "memory"), ("rocket/cpuset", "cpuset"),
                       ("rocket/pids", "pids"), ("rocket/block-io", "blkio (v1) or io (v2)")):
        assert ignored[name] == "not enforced: controller unavailable (no cgroup %s controller on this host)" % ctrl
        assert name not in rep["enforced"]
    assert rep["enforced"] == ["rocket/ulimits"]


def test_oom_score_adj_is_appcs_isolator_over_the_images_and_reported(monkeypatch):
    monkeypatch.setattr(limits, "has_sys_resource", lambda: True)
    a = app(oom_score_adj="-500")
    assert a["oom_score_adj"] == -500
    assert app(oom_score_adj=0)["oom_score_adj"] == 0 and app()["oom_score_adj"] is None  # 0 is said, not unset
    diff = podspec.differences(podspec.normalize_spec({"apps": [dict(a, oom_score_adj=300)]}),
                               podspec.normalize_spec({"apps": [a]}))
    assert diff == [{"field": "apps[0].oom_score_adj", "before": -500, "after": 300}]
    image = [{"name": "os/linux/oom-score-adj", "value": 800}]
    out = {i["name"]: i["value"] for i in limits.isolators(image, a)}
    assert out["os/linux/oom-score-adj"] == -500
    assert {i["name"]: i["value"] for i in limits.isolators(image, app())}["os/linux/oom-score-adj"] == 800
    iso = isolators.parse([{"name": k, "value": v} for k, v in out.items()])
    assert iso.oom_score_adj == -500
    rep = iso.report()
    assert "os/linux/oom-score-adj" in rep["enforced"] and rep["limits"]["oom_score_adj"] == -500


def test_oom_score_adj_below_the_runtimes_needs_cap_sys_resource(monkeypatch):
    """Lowering it needs CAP_SYS_RESOURCE (this test VM's root lacks it): refused before a pod
    exists, naming why; raising it never does."""
    own = limits.own_oom_score_adj()
    assert own is not None and -1000 <= own <= 1000
    monkeypatch.setattr(limits, "has_sys_resource", lambda: False)
    with pytest.raises(ValidationError) as e:
        app(oom_score_adj=own - 1)
    assert e.value.path == "apps[0].oom_score_adj" and "CAP_SYS_RESOURCE" in str(e.value), str(e.value)
    assert app(oom_score_adj=own)["oom_score_adj"] == own
    assert app(oom_score_adj=1000)["oom_score_adj"] == 1000
    monkeypatch.setattr(limits, "has_sys_resource", lambda: True)
    assert app(oom_score_adj=-1000)["oom_score_adj"] == -1000
    monkeypatch.undo()
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import linux
    eff = linux.capget()[0]  # the kernel's word through capget(2), not the /proc text the function reads
    assert limits.has_sys_resource() == bool(eff & (1 << linux.CAPABILITIES.index("CAP_SYS_RESOURCE")))


def test_a_hard_ulimit_above_the_runtimes_needs_cap_sys_resource(monkeypatch):
    """As oom_score_adj: raising a hard limit needs CAP_SYS_RESOURCE, so without it the value
    is refused at prepare instead of failing the app's start."""
    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert limits._own_hard_limit("nofile") == (None if hard == resource.RLIM_INFINITY else hard)
    monkeypatch.setattr(limits, "_own_hard_limit", lambda name: 100)
    monkeypatch.setattr(limits, "has_sys_resource", lambda: False)
    with pytest.raises(ValidationError) as e:
        app(ulimits=["core=0", "nofile=50:200"])
    assert e.value.path == "apps[0].ulimits[1].hard" and "CAP_SYS_RESOURCE" in str(e.value), str(e.value)
    with pytest.raises(ValidationError) as e:
        app(ulimits=[{"name": "stack", "soft": -1}])
    assert e.value.path == "apps[0].ulimits[0].hard", str(e.value)
    assert app(ulimits=["nofile=50:100"])["ulimits"] == [{"name": "nofile", "soft": 50, "hard": 100}]
    monkeypatch.setattr(limits, "has_sys_resource", lambda: True)
    assert app(ulimits=["nofile=50:200"])["ulimits"] == [{"name": "nofile", "soft": 50, "hard": 200}]
