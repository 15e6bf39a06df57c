"""cgroup_parent's normal form and refusals (stage1 cgroups.check_parent, stage0 limits), the
paths it gives a pod's cgroups, and the PID guard that finds a pod's processes under any parent."""
import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import limits, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups, contract

UUID = "5b2c0a7e-8a55-4f0b-9d1e-3f6a2c1d4e70"


@pytest.mark.parametrize("given, normal", [
    ("pods", "pods"), ("/machine.slice/pods/", "machine.slice/pods"), ("a_b-c.d@e:f", "a_b-c.d@e:f"),
    ("rocket", None), ("/rocket", None), (None, None), ("", None),
])
def test_normal_form(given, normal):
    assert limits.cgroup_parent(given) == normal


@pytest.mark.parametrize("bad", ["/", "..", "a/..", "./a", "a//b", "cgroup.procs", "a/" + UUID, UUID.upper(),
                                 "a b", "a\nb", "é", "x" * 129, "/".join(["abcd"] * 120), 7])
def test_refused(bad):
    with pytest.raises(RocketError, match="cgroup_parent"):
        limits.cgroup_parent(bad)


def test_paths_and_the_pid_guard(tmp_path):
    cg = cgroups.PodCgroups(UUID, v1={"memory": ("/sys/fs/cgroup/memory", ["memory"])}, v2="/sys/fs/cgroup/unified",
                            discover=False, parent="machine.slice/pods")
    assert cg.pod_dir("/sys/fs/cgroup/memory") == "/sys/fs/cgroup/memory/machine.slice/pods/" + UUID
    assert cg.freeze_file("web") == "/sys/fs/cgroup/unified/machine.slice/pods/%s/web/cgroup.freeze" % UUID
    assert cgroups.recorded_parent(str(tmp_path)) == "rocket"
    (tmp_path / contract.CGROUP_PARENT).write_text("machine.slice/pods\n")
    assert cgroups.recorded_parent(str(tmp_path)) == "machine.slice/pods"
    (tmp_path / contract.CGROUP_PARENT).write_text("../../etc\n")
    with pytest.raises(ValueError):
        cgroups.recorded_parent(str(tmp_path))
    text = "12:memory:/machine.slice/pods/%s/_stage1\n0::/machine.slice/pods/%s\n" % (UUID, UUID)
    assert contract.in_pod_cgroup(text, UUID)
    assert contract.in_pod_cgroup("0::/rocket/%s/web\n" % UUID, UUID)
    assert not contract.in_pod_cgroup("0::/rocket/%sf/web\n" % UUID, UUID)  # another name
    assert not contract.in_pod_cgroup("0::/user.slice/session-1.scope\n", UUID)
    assert run._flags("none", False, False, None, cgroup_parent="/pods/") == ["--net=none", "--cgroup-parent=pods"]
    assert run._flags("none", False, False, None, cgroup_parent="rocket") == ["--net=none"]
