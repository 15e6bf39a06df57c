"""The cgroup v2 device program (stage1/devices_bpf.py) without a kernel: its instructions
run by a small interpreter of the few eBPF opcodes it uses, against the allow-list and
what must stay out; and cgroups.py's fail-closed rule (fatal without a v1 devices
controller, a note beside one). The kernel's side is tests/integration/test_isolation.py."""
import struct
import sys

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups, devices_bpf as d


def run(program, dev_type, major, minor, access):
    """Execute program on a bpf_cgroup_dev_ctx; its return value."""
    ctx = struct.pack("=III", (access << 16) | dev_type, major, minor)
    regs = [0] * 11
    pc = 0
    n = len(program) // 8
    for dummy in range(10000):
        assert 0 <= pc < n, "jumped out of the program"
        code, rb, off, imm = struct.unpack_from("=BBhi", program, pc * 8)
        dst, src = (rb & 0xF, rb >> 4) if sys.byteorder == "little" else (rb >> 4, rb & 0xF)
        pc += 1
        if code == 0x61:
            assert src == 1 and off in (0, 4, 8), "reads outside the context"
            regs[dst] = struct.unpack_from("=I", ctx, off)[0]
        elif code == 0xbc:
            regs[dst] = regs[src] & 0xFFFFFFFF
        elif code == 0xb4:
            regs[dst] = imm & 0xFFFFFFFF
        elif code == 0x54:
            regs[dst] = (regs[dst] & imm) & 0xFFFFFFFF
        elif code == 0x74:
            regs[dst] = (regs[dst] & 0xFFFFFFFF) >> imm
        elif code == 0x55:
            if regs[dst] != imm & 0xFFFFFFFFFFFFFFFF:
                assert off > 0, "backward jump"
                pc += off
        elif code == 0x95:
            return regs[0]
        else:
            raise AssertionError("opcode %#x" % code)
    raise AssertionError("no exit")


C, B = d.DEV_CHAR, d.DEV_BLOCK
M, R, W = d.ACC_MKNOD, d.ACC_READ, d.ACC_WRITE


def test_default_allow_list():
    prog = d.assemble(cgroups.ALLOWED_DEVICES)
    for major, minor in ((1, 3), (1, 5), (1, 7), (1, 8), (1, 9), (5, 0), (5, 1), (5, 2), (136, 0), (136, 4095)):
        for acc in (M, R, W, R | W, M | R | W):
            assert run(prog, C, major, minor, acc) == 1, (major, minor, acc)
    denied = [(B, 254, 0), (B, 8, 0), (B, 1, 3), (C, 1, 1), (C, 1, 2), (C, 4, 1), (C, 10, 200), (C, 5, 3),
              (C, 137, 0), (C, 135, 0), (C, 0, 0)]
    for dev_type, major, minor in denied:
        for acc in (M, R, W):
            assert run(prog, dev_type, major, minor, acc) == 0, (dev_type, major, minor, acc)


def test_access_subsets_and_wildcards():
    prog = d.assemble(["c 4:1 r", "b 7:* rw", "c *:9 m"])
    assert run(prog, C, 4, 1, R) == 1
    assert run(prog, C, 4, 1, W) == 0 and run(prog, C, 4, 1, M) == 0 and run(prog, C, 4, 1, R | W) == 0
    assert run(prog, B, 7, 0, R | W) == 1 and run(prog, B, 7, 99, R) == 1
    assert run(prog, B, 7, 0, M) == 0 and run(prog, C, 7, 0, R) == 0
    assert run(prog, C, 200, 9, M) == 1 and run(prog, C, 200, 9, R) == 0
    assert run(d.assemble([]), C, 1, 3, R) == 0  # nothing allowed: deny all


@pytest.mark.parametrize("rule", ["a *:* rwm", "c 1:3", "c 1-3 rw", "c x:3 rw", "c 1:3 rwx"])
def test_bad_rules_are_refused(rule):
    with pytest.raises(d.DeviceFilterError):
        d.assemble([rule])


def _v2_only(tmp_path, v1=None):
    (tmp_path / "v2").mkdir()
    cg = cgroups.PodCgroups("u", v1=v1 or {}, v2=str(tmp_path / "v2"), discover=False)
    return cg


def _refuse(dummy_dir, dummy_prog):
    raise d.DeviceFilterError("cgroup v2 device filtering: bpf(BPF_PROG_LOAD) refused (EPERM): a seccomp filter")


def test_a_refused_program_stops_the_pod_without_v1_devices(tmp_path, monkeypatch):
    monkeypatch.setattr(d, "attach", _refuse)
    cg = _v2_only(tmp_path)
    (tmp_path / "v2/rocket/u/a").mkdir(parents=True)
    with pytest.raises(d.DeviceFilterError, match="cgroup v2 device filtering.*the pod does not start"):
        cg.apply("a", {})


def test_a_refused_program_is_a_note_beside_v1_devices(tmp_path, monkeypatch):
    monkeypatch.setattr(d, "attach", _refuse)
    (tmp_path / "devices/rocket/u/a").mkdir(parents=True)
    cg = _v2_only(tmp_path, {"devices": (str(tmp_path / "devices"), ["devices"])})
    (tmp_path / "v2/rocket/u/a").mkdir(parents=True)
    assert cg.apply("a", {}) == []
    assert cg.devices_note() == "devices: allow-list enforced by the cgroup v1 devices controller"
    assert any("refused (EPERM)" in n and "v1 devices controller enforces" in n for n in cg.notes)


def test_missing_controllers_are_reported_not_enforced():
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import isolators

    class App:
        name = "a"
        isolation = isolators.parse([{"name": "os/linux/cpu-shares", "value": 512},
                                     {"name": "resource/memory", "value": {"limit": "64Mi"}}])

    cg = cgroups.PodCgroups("u", v1={}, v2=None, discover=False)
    unenforced = {"a": cg.apply("a", App.isolation.limits())}
    rep = isolators.reports({}, [App], unenforced, [])["a"]
    assert rep["enforced"] == []
    reasons = {i["name"]: i["reason"] for i in rep["ignored"]}
    assert set(reasons) == {"os/linux/cpu-shares", "resource/memory"}
    assert all(r.startswith("not enforced: controller unavailable") for r in reasons.values())
