"""The device allow-list on cgroup v2: a BPF_PROG_TYPE_CGROUP_DEVICE program per app cgroup.

cgroup v2 has no devices controller; the kernel asks the BPF programs attached to a task's
v2 cgroup (and, with BPF_F_ALLOW_MULTI, its ancestors') before any mknod or open of a
device node, and refuses when one returns 0. runc and crun enforce their device rules this
way; this module does the same with the standard library: the program is assembled here
(eBPF instructions, not the classic BPF of seccomp.py) and loaded and attached with bpf(2)
through ctypes.

The program reads struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor},
where access_type is (BPF_DEVCG_ACC_* << 16) | BPF_DEVCG_DEV_*, compares it with each rule
of the allow-list, returns 1 on the first match and 0 otherwise: default deny.

The kernel consults these programs on a hybrid host too (the v2 cgroup of a task is
always asked, whether or not a v1 devices hierarchy also is), so cgroups.py attaches one
wherever the pod has a v2 cgroup; see there for when a refusal is fatal.
"""
from __future__ import annotations

import ctypes
import os
import struct
import sys

from . import linux

TYPE_CHECKING = False  # typing imports re, which the start path must not: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Iterable, Tuple, Union
    Rule = Tuple[str, int, int, int]  # type ("c"/"b"), major or ANY, minor or ANY, access mask

# bpf(2) commands, program and attach types, flags (include/uapi/linux/bpf.h)
BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

# bpf_cgroup_dev_ctx encodings
DEV_BLOCK, DEV_CHAR = 1, 2
ACC_MKNOD, ACC_READ, ACC_WRITE = 1, 2, 4
_TYPES = {"b": DEV_BLOCK, "c": DEV_CHAR}
_ACCESS = {"m": ACC_MKNOD, "r": ACC_READ, "w": ACC_WRITE}
ANY = -1

# bpf(2) where the generated seccomp tables (syscalls.py) do not cover the architecture.
_SYS_BPF = {"x86_64": 321, "aarch64": 280, "riscv64": 280, "loongarch64": 280, "s390x": 351,
            "ppc64le": 361, "ppc64": 361, "i386": 357, "i686": 357, "armv7l": 386, "armv6l": 386}

# eBPF opcodes: class | size/op | mode/source
_LDX_MEM_W = 0x61      # dst = *(u32 *)(src + off)
_MOV32_REG = 0xbc      # dst = (u32) src
_MOV32_IMM = 0xb4      # dst = (u32) imm
_AND32_IMM = 0x54      # dst &= imm (32-bit)
_RSH32_IMM = 0x74      # dst >>= imm (32-bit)
_JNE_IMM = 0x55        # if dst != imm: pc += off
_EXIT = 0x95
R0, R1, R2, R3, R4, R5 = range(6)
MAX_INSNS = 4096


class DeviceFilterError(RuntimeError):
    """The program could not be built, loaded or attached: the pod must not start."""


def parse_rule(rule: str) -> Rule:
    """("c"|"b", major or ANY, minor or ANY, access mask) from a v1-style rule "c 1:3 rwm"."""
    parts = str(rule).split()
    if len(parts) != 3 or parts[0] not in _TYPES or ":" not in parts[1]:
        raise DeviceFilterError("device rule %r: expected \"c|b MAJOR:MINOR rwm\"" % (rule,))
    major, dummy_sep, minor = parts[1].partition(":")
    access = 0
    for ch in parts[2]:
        if ch not in _ACCESS:
            raise DeviceFilterError("device rule %r: access is made of r, w and m" % (rule,))
        access |= _ACCESS[ch]

    def number(text: str) -> int:
        if text == "*":
            return ANY
        if not text.isdigit():
            raise DeviceFilterError("device rule %r: %r is not a device number" % (rule, text))
        return int(text)

    return parts[0], number(major), number(minor), access


def _insn(code: int, dst: int = 0, src: int = 0, off: int = 0, imm: int = 0) -> bytes:
    # The register nibbles follow the bitfield order of struct bpf_insn, which is the host's.
    regs = (dst | (src << 4)) if sys.byteorder == "little" else ((dst << 4) | src)
    return struct.pack("=BBhi", code, regs, off, imm)


def assemble(rules: Iterable[Union[str, Rule]]) -> bytes:
    """The program (bytes, 8 per instruction) allowing exactly the given rules."""
    prog = [_insn(_LDX_MEM_W, R2, R1, 0),      # r2 = access_type
            _insn(_MOV32_REG, R3, R2),         # r3 = r2 & 0xffff: the device type
            _insn(_AND32_IMM, R3, imm=0xFFFF),
            _insn(_RSH32_IMM, R2, imm=16),     # r2 = the access asked for
            _insn(_LDX_MEM_W, R4, R1, 4),      # r4 = major
            _insn(_LDX_MEM_W, R5, R1, 8)]      # r5 = minor
    for rule in rules:
        kind, major, minor, access = parse_rule(rule) if isinstance(rule, str) else rule
        block: list = [(_JNE_IMM, R3, _TYPES[kind])]
        if major != ANY:
            block.append((_JNE_IMM, R4, major))
        if minor != ANY:
            block.append((_JNE_IMM, R5, minor))
        tail: list = []
        if access != ACC_MKNOD | ACC_READ | ACC_WRITE:
            # Allowed only when nothing outside the rule's access is asked for.
            tail = [_insn(_MOV32_REG, R0, R2), _insn(_AND32_IMM, R0, imm=~access & 0xFFFF),
                    _insn(_JNE_IMM, R0, off=2, imm=0)]
        # Each jump lands on the next rule, past this one's "return 1".
        size = len(block) + len(tail) + 2
        for i, (code, reg, imm) in enumerate(block):
            prog.append(_insn(code, reg, off=size - i - 1, imm=imm))
        prog.extend(tail)
        prog += [_insn(_MOV32_IMM, R0, imm=1), _insn(_EXIT)]
    prog += [_insn(_MOV32_IMM, R0, imm=0), _insn(_EXIT)]
    if len(prog) > MAX_INSNS:
        raise DeviceFilterError("device filter: %d instructions, more than %d" % (len(prog), MAX_INSNS))
    return b"".join(prog)


class _ProgLoad(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32)]


class _ProgAttach(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_bpf_fd", ctypes.c_uint32),
                ("attach_type", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("replace_bpf_fd", ctypes.c_uint32)]


class _ProgQuery(ctypes.Structure):
    _fields_ = [("target_fd", ctypes.c_uint32), ("attach_type", ctypes.c_uint32),
                ("query_flags", ctypes.c_uint32), ("attach_flags", ctypes.c_uint32),
                ("prog_ids", ctypes.c_uint64), ("prog_cnt", ctypes.c_uint32)]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    """bpf(cmd, &attr, sizeof attr): its result, or OSError with the errno."""
    machine = os.uname().machine
    nr = _SYS_BPF.get(machine)
    if nr is None:
        raise OSError(38, "bpf(2): unknown architecture %s" % machine)
    return linux.syscall(ctypes.c_long(nr), ctypes.c_int(cmd), ctypes.byref(attr),
                         ctypes.c_uint(ctypes.sizeof(attr)))


_WHY = {1: "refused (EPERM): a seccomp filter around the runtime (systemd-nspawn's default one "
           "refuses bpf), or no CAP_BPF and CAP_SYS_ADMIN",
        38: "not available (ENOSYS): the kernel has no bpf(2), or a seccomp filter hides it",
        22: "refused (EINVAL): the kernel lacks cgroup BPF (CONFIG_CGROUP_BPF)"}


def _fail(step: str, e: OSError) -> DeviceFilterError:
    if step == "BPF_PROG_ATTACH" and e.errno == 1:
        return DeviceFilterError("cgroup v2 device filtering: bpf(BPF_PROG_ATTACH) refused (EPERM): a "
                                 "device program attached above the pod's cgroup without "
                                 "BPF_F_ALLOW_MULTI allows no other, or a seccomp filter refuses bpf")
    why = _WHY.get(e.errno or 0, "%s (errno %d)" % (e.strerror or e, e.errno or 0))
    return DeviceFilterError("cgroup v2 device filtering: bpf(%s) %s" % (step, why))


def load(program: bytes, prog_type: int = BPF_PROG_TYPE_CGROUP_DEVICE, attach_type: int = BPF_CGROUP_DEVICE,
         name: bytes = b"rocket_devices") -> int:
    """An fd of the loaded program; DeviceFilterError (with the verifier's log) otherwise.
    (linkguard.py loads its XDP program here too.)"""
    insns = ctypes.create_string_buffer(program, len(program))
    lic = ctypes.create_string_buffer(b"Apache-2.0")
    attr = _ProgLoad(prog_type=prog_type, insn_cnt=len(program) // 8,
                     insns=ctypes.addressof(insns), license=ctypes.addressof(lic),
                     prog_name=name, expected_attach_type=attach_type)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        if e.errno != 13:  # EACCES: the verifier refused the program; ask for its log
            raise _fail("BPF_PROG_LOAD", e)
    log = ctypes.create_string_buffer(16384)
    attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except OSError as e:
        raise DeviceFilterError("cgroup v2 device filtering: the kernel's verifier refused the "
                                "program (%s): %s" % (e.strerror, log.value.decode("ascii", "replace")[-2000:]))


def attach(cgroup_dir: str, program: bytes) -> None:
    """Load program and attach it to the v2 cgroup at cgroup_dir, beside any others there or
    above (BPF_F_ALLOW_MULTI: every one must allow an access)."""
    fd = load(program)
    try:
        try:
            cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as e:
            raise DeviceFilterError("cgroup v2 device filtering: %s: %s" % (cgroup_dir, e.strerror))
        try:
            _bpf(BPF_PROG_ATTACH, _ProgAttach(target_fd=cg, attach_bpf_fd=fd, attach_type=BPF_CGROUP_DEVICE,
                                              attach_flags=BPF_F_ALLOW_MULTI))
        except OSError as e:
            raise _fail("BPF_PROG_ATTACH", e)
        finally:
            os.close(cg)
    finally:
        os.close(fd)  # the cgroup holds the program now, until the cgroup is removed


def attached(cgroup_dir: str) -> int:
    """How many device programs are attached to the cgroup itself (not its ancestors)."""
    cg = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        attr = _ProgQuery(target_fd=cg, attach_type=BPF_CGROUP_DEVICE)
        _bpf(BPF_PROG_QUERY, attr)
        return attr.prog_cnt
    finally:
        os.close(cg)
