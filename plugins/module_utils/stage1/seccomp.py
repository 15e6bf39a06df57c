"""Seccomp filters for apps: the appc seccomp isolators turned into classic BPF, installed
with prctl(PR_SET_SECCOMP) as the last step before exec (app.py and enter.py).

Why hand-built BPF and not libseccomp: stage1 runs with the host's Python and its
standard library only; a filter that only compares syscall numbers (plus one argument
check for clone) is a few dozen lines, and syscalls.py holds the numbers, generated from
the kernel headers by tools/gen_syscalls.py.

The program: load the audit arch and fail every syscall of another ABI (i386 or x32 on
an x86_64 host would otherwise bypass a remove-set); then one `jeq nr` per listed
syscall; then the default action. Everything here is decided before the app's root is
entered; install() only makes the prctl calls.
"""
import ctypes
import errno as errno_mod
import os
import struct

from . import linux, syscalls

# Special set names. The appc ones are the spec's; ours names the default remove-set,
# also under the names rkt and docker users know it by.
ALL = "@appc.io/all"
EMPTY = "@appc.io/empty"
DEFAULT_GROUP = "@rocket/default-remove-set"
DEFAULT_ALIASES = (DEFAULT_GROUP, "@rkt/default-blacklist", "@docker/default-blacklist")

# The default remove-set, applied to every app that has no seccomp isolator. Syscalls an
# app does not need and that either act on the whole host (modules, kexec, reboot, swap,
# clock, accounting, quotas), reach into other processes (ptrace, process_vm_*, kcmp), or
# are the usual kernel attack surface from inside a container (keyrings, bpf,
# perf_event_open, userfaultfd, io_uring, new namespaces, mounts, handles).
DEFAULT_REMOVE_SET = (
    "acct", "add_key", "bpf", "clock_adjtime", "clock_settime", "create_module",
    "delete_module", "finit_module", "fsconfig", "fsmount", "fsopen", "fspick",
    "get_kernel_syms", "init_module", "io_uring_enter", "io_uring_register", "io_uring_setup",
    "ioperm", "iopl", "kcmp", "kexec_file_load", "kexec_load", "keyctl", "lookup_dcookie",
    "mount", "mount_setattr", "move_mount", "name_to_handle_at", "nfsservctl",
    "open_by_handle_at", "open_tree", "perf_event_open", "pivot_root", "process_vm_readv",
    "process_vm_writev", "ptrace", "query_module", "quotactl", "quotactl_fd", "reboot",
    "request_key", "setns", "settimeofday", "swapoff", "swapon", "syslog", "umount2",
    "unshare", "uselib", "userfaultfd", "ustat", "vhangup",
)
# clone3 passes its flags in memory BPF cannot read: it fails with ENOSYS, and the C
# library falls back to clone, whose flags the filter checks (no new namespaces).
ENOSYS_IN_DEFAULT = ("clone3",)
CLONE_NAMESPACE_FLAGS = (linux.CLONE_NEWNS | linux.CLONE_NEWCGROUP | linux.CLONE_NEWUTS
                         | linux.CLONE_NEWIPC | linux.CLONE_NEWUSER | linux.CLONE_NEWPID
                         | linux.CLONE_NEWNET)
# Kept in every retain-set: without them the app could neither be started nor end.
ALWAYS_RETAINED = ("execve", "exit", "exit_group")

# classic BPF
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
RET_KILL_PROCESS = 0x80000000
RET_ERRNO = 0x00050000
RET_ALLOW = 0x7FFF0000
_OFF_NR, _OFF_ARCH, _OFF_ARG0 = 0, 4, 16
X32_SYSCALL_BIT = 0x40000000
MAX_INSNS = 4096

PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2


class SeccompError(ValueError):
    pass


def arch():
    return os.uname().machine


def errno_number(name):
    """The number of an errno name ("EPERM"), or SeccompError."""
    if name is None:
        return errno_mod.EPERM
    value = getattr(errno_mod, str(name), None)
    if not isinstance(value, int) or not str(name).startswith("E"):
        raise SeccompError("errno %r is not an errno name this host knows (e.g. \"EPERM\")" % (name,))
    return value


def _known_anywhere(name):
    return any(name in t for t in syscalls.TABLES.values())


def check_names(names):
    """Refuse names that are neither special nor a syscall of any architecture we know."""
    for name in names:
        if name.startswith("@"):
            if name not in (ALL, EMPTY) + DEFAULT_ALIASES:
                raise SeccompError("seccomp set: unknown group %r (known: %s)"
                                   % (name, ", ".join((ALL, EMPTY) + DEFAULT_ALIASES)))
        elif not _known_anywhere(name):
            raise SeccompError("seccomp set: %r is not a Linux syscall" % (name,))


class Filter:
    """What one app's filter does, before it is compiled for an architecture.

    mode "remove": the listed syscalls fail, all others run; "retain": the reverse.
    """

    def __init__(self, mode, names, errno_name=None, source="isolator"):
        self.mode = mode
        self.names = list(names)
        self.errno_name = errno_name or "EPERM"
        self.errno = errno_number(errno_name)
        self.source = source            # "isolator" or "default"

    def describe(self):
        return {"mode": self.mode, "set": list(self.names), "errno": self.errno_name,
                "source": self.source}

    def expanded(self):
        """(names, default group included?) with groups expanded."""
        out, default = [], False  # type: list, bool
        for n in self.names:
            if n in DEFAULT_ALIASES:
                default = True
                out.extend(DEFAULT_REMOVE_SET)
            elif n not in (ALL, EMPTY):
                out.append(n)
        return out, default


def from_isolators(isolators):
    """The app's Filter: from its seccomp isolator, the default one without; None when the
    isolator asks for no filter (retain @appc.io/all, remove @appc.io/empty)."""
    found = None
    for item in isolators or ():
        name = item.get("name")
        if name in ("os/linux/seccomp-retain-set", "os/linux/seccomp-remove-set"):
            if found is not None:
                raise SeccompError("seccomp-retain-set and seccomp-remove-set cannot both be given")
            found = item
    if found is None:
        return Filter("remove", [DEFAULT_GROUP], "EPERM", source="default")
    value = found.get("value") or {}
    names = list(value.get("set") or ())
    if not names:
        raise SeccompError("%s: the set must not be empty" % found["name"])
    check_names(names)
    mode = "retain" if found["name"].endswith("retain-set") else "remove"
    if (mode == "retain" and ALL in names) or (mode == "remove" and names == [EMPTY]):
        return None
    return Filter(mode, names, value.get("errno"))


def _insn(code, jt, jf, k):
    return struct.pack("=HBBI", code, jt, jf, k & 0xFFFFFFFF)


def compile_filter(flt, machine=None):
    """The BPF program (bytes, 8 per instruction) for machine (default: this host).

    SeccompError when there is no syscall table for the machine.
    """
    machine = machine or arch()
    table = syscalls.TABLES.get(machine)
    audit = syscalls.AUDIT_ARCH.get(machine)
    if table is None or audit is None:
        raise SeccompError("seccomp: no syscall table for architecture %s" % machine)
    fail = RET_ERRNO | (flt.errno & 0xFFFF)
    names, default_group = flt.expanded()
    rules = []  # (nr, return value)
    seen = set()
    if flt.mode == "remove":
        match, otherwise = fail, RET_ALLOW
        if default_group:
            for n in ENOSYS_IN_DEFAULT:
                if n in table:
                    rules.append((table[n], RET_ERRNO | errno_mod.ENOSYS))
                    seen.add(table[n])
    else:
        match, otherwise = RET_ALLOW, fail
        names = names + [n for n in ALWAYS_RETAINED if n not in names]
    for n in names:
        nr = table.get(n)
        if nr is not None and nr not in seen:
            seen.add(nr)
            rules.append((nr, match))
    prog = [_insn(_LD_W_ABS, 0, 0, _OFF_ARCH),
            _insn(_JEQ_K, 1, 0, audit),
            _insn(_RET_K, 0, 0, RET_ERRNO | errno_mod.ENOSYS),   # another ABI
            _insn(_LD_W_ABS, 0, 0, _OFF_NR)]
    if machine == "x86_64":
        prog += [_insn(_JGE_K, 0, 1, X32_SYSCALL_BIT),
                 _insn(_RET_K, 0, 0, RET_ERRNO | errno_mod.ENOSYS)]
    if flt.mode == "remove" and default_group and "clone" in table and table["clone"] not in seen:
        # clone with a namespace flag fails; any other clone runs. The flags are the first
        # argument on both architectures; the low 32 bits hold every CLONE_NEW* flag.
        prog += [_insn(_JEQ_K, 0, 4, table["clone"]),
                 _insn(_LD_W_ABS, 0, 0, _OFF_ARG0),
                 _insn(_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS),
                 _insn(_RET_K, 0, 0, fail),
                 _insn(_RET_K, 0, 0, RET_ALLOW)]
    for nr, ret in sorted(rules):
        prog += [_insn(_JEQ_K, 0, 1, nr), _insn(_RET_K, 0, 0, ret)]
    prog.append(_insn(_RET_K, 0, 0, otherwise))
    if len(prog) > MAX_INSNS:
        raise SeccompError("seccomp: the filter needs %d instructions, more than %d" % (len(prog), MAX_INSNS))
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install(program):
    """Install program (compile_filter's bytes) on this thread; it survives exec.

    The caller has set no-new-privileges, or holds CAP_SYS_ADMIN: the kernel requires one.
    """
    buf = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buf))
    linux.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(fprog))


CAP_SYS_ADMIN = 21


def apply(program, effective_caps):
    """The last step before exec: no-new-privileges when the kernel needs it, the filter."""
    if program is None:
        return
    if not effective_caps & (1 << CAP_SYS_ADMIN):
        linux.set_no_new_privs()
    install(program)
