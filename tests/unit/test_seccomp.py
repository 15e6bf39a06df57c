"""The seccomp BPF builder, checked by running its programs in a small BPF interpreter
written here from the kernel's documented semantics (classic BPF, seccomp_data layout),
plus the isolator parsing around it. The real kernel runs them in
tests/integration/test_isolation.py."""
import errno
import struct

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import isolators, seccomp, syscalls

X86, ARM = syscalls.AUDIT_ARCH["x86_64"], syscalls.AUDIT_ARCH["aarch64"]


def run(program, nr, arch=X86, args=(0,) * 6):
    """Execute program on one seccomp_data; the returned action."""
    data = struct.pack("=iIQ6Q", nr, arch, 0, *args)
    insns = [struct.unpack("=HBBI", program[i:i + 8]) for i in range(0, len(program), 8)]
    pc, acc = 0, 0
    for dummy in range(len(insns) + 1):
        code, jt, jf, k = insns[pc]
        if code == 0x20:
            acc = struct.unpack("=I", data[k:k + 4])[0]
            pc += 1
        elif code in (0x15, 0x35, 0x45):
            hit = {0x15: acc == k, 0x35: acc >= k, 0x45: bool(acc & k)}[code]
            pc += 1 + (jt if hit else jf)
        elif code == 0x06:
            return k
        else:
            raise AssertionError("unexpected opcode %#x" % code)
    raise AssertionError("no return")


def nr(name, machine="x86_64"):
    return syscalls.TABLES[machine][name]


def eperm():
    return seccomp.RET_ERRNO | errno.EPERM


def test_tables_are_generated_for_both_architectures():
    assert nr("execve") == 59 and nr("execve", "aarch64") == 221
    assert nr("mkdir") == 83 and "mkdir" not in syscalls.TABLES["aarch64"]
    assert nr("mkdirat", "aarch64") == 34 and nr("clone3") == nr("clone3", "aarch64") == 435


def test_remove_set_fails_only_its_syscalls():
    prog = seccomp.compile_filter(seccomp.Filter("remove", ["mkdir", "chmod"]), "x86_64")
    assert run(prog, nr("mkdir")) == eperm()
    assert run(prog, nr("chmod")) == eperm()
    assert run(prog, nr("mkdirat")) == seccomp.RET_ALLOW
    assert run(prog, nr("clone"), args=(0x10000000, 0, 0, 0, 0, 0)) == seccomp.RET_ALLOW


def test_retain_set_fails_every_other_syscall_with_its_errno():
    prog = seccomp.compile_filter(seccomp.Filter("retain", ["read", "write"], "EACCES"), "aarch64")
    assert run(prog, nr("read", "aarch64"), ARM) == seccomp.RET_ALLOW
    assert run(prog, nr("mkdirat", "aarch64"), ARM) == seccomp.RET_ERRNO | errno.EACCES
    for name in seccomp.ALWAYS_RETAINED:
        assert run(prog, nr(name, "aarch64"), ARM) == seccomp.RET_ALLOW


def test_other_abis_fail():
    prog = seccomp.compile_filter(seccomp.Filter("remove", ["reboot"]), "x86_64")
    enosys = seccomp.RET_ERRNO | errno.ENOSYS
    assert run(prog, nr("getpid"), arch=0x40000003) == enosys          # i386 via int 0x80
    assert run(prog, seccomp.X32_SYSCALL_BIT | nr("getpid")) == enosys  # x32
    assert run(prog, nr("getpid")) == seccomp.RET_ALLOW


def test_default_filter():
    flt = seccomp.from_isolators([])
    assert flt.source == "default" and flt.mode == "remove"
    for machine, arch in (("x86_64", X86), ("aarch64", ARM)):
        prog = seccomp.compile_filter(flt, machine)
        for name in ("kexec_load", "keyctl", "bpf", "mount", "unshare", "init_module", "ptrace"):
            assert run(prog, nr(name, machine), arch) == eperm(), name
        assert run(prog, nr("clone3", machine), arch) == seccomp.RET_ERRNO | errno.ENOSYS
        clone = nr("clone", machine)
        assert run(prog, clone, arch, (0x01200011, 0, 0, 0, 0, 0)) == seccomp.RET_ALLOW  # fork
        assert run(prog, clone, arch, (0x00010000 | 0x10000000, 0, 0, 0, 0, 0)) == eperm()
        assert run(prog, clone, arch, (0x40000000, 0, 0, 0, 0, 0)) == eperm()  # CLONE_NEWNET
        for name in ("read", "openat", "execve", "getpid", "socket"):
            assert run(prog, nr(name, machine), arch) == seccomp.RET_ALLOW, name


def test_default_group_extends_an_explicit_remove_set():
    flt = seccomp.from_isolators([{"name": "os/linux/seccomp-remove-set",
                                   "value": {"set": ["@rocket/default-remove-set", "mkdir"], "errno": "ENOTSUP"}}])
    prog = seccomp.compile_filter(flt, "x86_64")
    assert run(prog, nr("mkdir")) == seccomp.RET_ERRNO | errno.ENOTSUP
    assert run(prog, nr("keyctl")) == seccomp.RET_ERRNO | errno.ENOTSUP


def test_special_sets_and_errors():
    assert seccomp.from_isolators([{"name": "os/linux/seccomp-retain-set", "value": {"set": ["@appc.io/all"]}}]) is None
    assert seccomp.from_isolators([{"name": "os/linux/seccomp-remove-set", "value": {"set": ["@appc.io/empty"]}}]) is None
    everything = seccomp.from_isolators([{"name": "os/linux/seccomp-remove-set", "value": {"set": ["@appc.io/all"]}}])
    assert everything.mode == "remove" and everything.expanded() == ([], False)
    with pytest.raises(seccomp.SeccompError, match="not a Linux syscall"):
        seccomp.from_isolators([{"name": "os/linux/seccomp-remove-set", "value": {"set": ["mkdri"]}}])
    with pytest.raises(seccomp.SeccompError, match="unknown group"):
        seccomp.from_isolators([{"name": "os/linux/seccomp-retain-set", "value": {"set": ["@rkt/default-whitelist"]}}])
    with pytest.raises(seccomp.SeccompError, match="errno"):
        seccomp.from_isolators([{"name": "os/linux/seccomp-remove-set", "value": {"set": ["mkdir"], "errno": "EWHAT"}}])
    with pytest.raises(seccomp.SeccompError, match="cannot both"):
        seccomp.from_isolators([{"name": "os/linux/seccomp-remove-set", "value": {"set": ["mkdir"]}},
                                {"name": "os/linux/seccomp-retain-set", "value": {"set": ["read"]}}])
    with pytest.raises(seccomp.SeccompError, match="no syscall table"):
        seccomp.compile_filter(seccomp.Filter("remove", ["mkdir"]), "sparc64")


def test_a_retain_set_of_every_syscall_fits():
    prog = seccomp.compile_filter(seccomp.Filter("retain", sorted(syscalls.TABLES["x86_64"])), "x86_64")
    assert len(prog) // 8 < seccomp.MAX_INSNS
    assert run(prog, nr("reboot")) == seccomp.RET_ALLOW


def test_sysctl_names_are_checked():
    assert isolators.check_sysctl("net/ipv4/ip_forward") == "net.ipv4.ip_forward"
    assert isolators.check_sysctl("kernel.shmmax") == "kernel.shmmax"
    assert isolators.check_sysctl("fs.mqueue.msg_max") == "fs.mqueue.msg_max"
    for bad in ("vm.swappiness", "kernel.panic", "fs.file-max", "net..x", "net.../x"):
        with pytest.raises(ValueError):
            isolators.check_sysctl(bad)
    with pytest.raises(ValueError, match="not namespaced"):
        isolators.check([{"name": "os/unix/sysctl", "value": {"vm.swappiness": "10"}}])
