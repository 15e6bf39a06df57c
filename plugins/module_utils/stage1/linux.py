"""Every Linux system call stage1 needs that Python's os module lacks, through ctypes.

One place for the numbers and the ctypes plumbing: namespaces (unshare, setns), mounts
(mount, umount2, pivot_root, mount_setattr), path resolution (openat2), fds (close_range),
credentials (capget/capset, prctl: dumpable, keep-caps, bounding set, ambient set,
no-new-privileges) and signal state. Standard library only; each call raises OSError with
the errno and a message naming what failed.
"""
import ctypes
import os
# signal's C module: `signal` adds enums, and enum costs every start.
import _signal  # type: ignore[import-not-found]  # no stub for the C module; its names are signal's

_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long

# clone flags
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

# mount flags
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_MOVE = 0x2000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_STRICTATIME = 1 << 24
MNT_DETACH = 0x2

# mount_setattr attributes
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
PR_SET_KEEPCAPS = 8
PR_CAPBSET_DROP = 24
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

# Syscalls added after 5.x have one number on every architecture.
SYS_CLOSE_RANGE = 436
SYS_OPENAT2 = 437
SYS_MOUNT_SETATTR = 442
_PIVOT_ROOT = {"x86_64": 155, "i386": 217, "i686": 217, "aarch64": 41, "armv7l": 218,
               "armv6l": 218, "ppc64le": 203, "ppc64": 203, "s390x": 217, "riscv64": 41,
               "loongarch64": 41}

CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAP_NUMBERS = {name: i for i, name in enumerate(CAPABILITIES)}


def _check(ret, what):
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, "%s: %s" % (what, os.strerror(err)))
    return ret


def _b(path):
    return os.fsencode(path)


def unshare(flags):
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")


def setns(fd, nstype=0):
    _check(_libc.setns(ctypes.c_int(fd), ctypes.c_int(nstype)), "setns")


def mount(source, target, fstype, flags=0, data=None):
    src = _b(source) if source is not None else None
    fst = _b(fstype) if fstype is not None else None
    dat = _b(data) if data is not None else None
    ret = _libc.mount(src, _b(target), fst, ctypes.c_ulong(flags), dat)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, "mount %s on %s (%s): %s" % (source, target, fstype or "bind",
                                                        os.strerror(err)))


def umount2(target, flags=0):
    _check(_libc.umount2(_b(target), ctypes.c_int(flags)), "umount %s" % target)


def pivot_root(new_root, put_old):
    nr = _PIVOT_ROOT.get(os.uname().machine)
    if nr is None:
        raise OSError(38, "pivot_root: unknown architecture %s" % os.uname().machine)
    _check(_syscall(ctypes.c_long(nr), ctypes.c_char_p(_b(new_root)),
                    ctypes.c_char_p(_b(put_old))), "pivot_root")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def mount_setattr(fd: int, attr_set: int, attr_clr: int = 0, recursive: bool = False, userns_fd: int = 0) -> None:
    """Change the flags of the mount that fd (an O_PATH fd of its root) names; userns_fd
    is the user namespace of MOUNT_ATTR_IDMAP (userns.py)."""
    attr = _MountAttr(attr_set, attr_clr, 0, userns_fd)
    flags = AT_EMPTY_PATH | (AT_RECURSIVE if recursive else 0)
    _check(_syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(fd), ctypes.c_char_p(b""),
                    ctypes.c_uint(flags), ctypes.byref(attr), ctypes.c_size_t(ctypes.sizeof(attr))),
           "mount_setattr")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def openat2(dirfd, path, flags, resolve, mode=0):
    how = _OpenHow(flags | os.O_CLOEXEC, mode, resolve)
    ret = _syscall(ctypes.c_long(SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(_b(path)),
                   ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return ret


def syscall(*args: object) -> int:
    """A system call by number (ctypes arguments) that libc has no wrapper for; OSError
    with its errno (and only the errno's words: the caller names the call) when it fails."""
    ret = _syscall(*args)
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return ret


def setfsuid(uid: int) -> int:
    """setfsuid(2): returns the previous fsuid (it reports no error)."""
    return _libc.setfsuid(ctypes.c_uint(uid))


def setfsgid(gid: int) -> int:
    """setfsgid(2): returns the previous fsgid (it reports no error)."""
    return _libc.setfsgid(ctypes.c_uint(gid))


def close_fds(keep=()):
    """Close every fd >= 3 except those in keep (close_range, else one by one)."""
    start = 3
    for fd in sorted(k for k in keep if k >= 3) + [None]:
        end = (fd - 1) if fd is not None else 0xFFFFFFFF
        if end >= start:
            ret = _syscall(ctypes.c_long(SYS_CLOSE_RANGE), ctypes.c_uint(start),
                           ctypes.c_uint(end), ctypes.c_uint(0))
            if ret < 0:
                top = end if fd is not None else _max_fd()
                os.closerange(start, top + 1)
        if fd is not None:
            start = fd + 1


def _max_fd():
    try:
        return max(int(n) for n in os.listdir("/proc/self/fd"))
    except (OSError, ValueError):
        return 65535


def sethostname(name):
    data = _b(name)
    _check(_libc.sethostname(data, ctypes.c_size_t(len(data))), "sethostname")


def setdomainname(name):
    data = _b(name)
    _check(_libc.setdomainname(data, ctypes.c_size_t(len(data))), "setdomainname")


def prctl(option, arg2=0, arg3=0, arg4=0, arg5=0):
    return _check(_libc.prctl(ctypes.c_int(option), ctypes.c_ulong(arg2), ctypes.c_ulong(arg3),
                              ctypes.c_ulong(arg4), ctypes.c_ulong(arg5)), "prctl(%d)" % option)


def set_dumpable(on):
    prctl(PR_SET_DUMPABLE, 1 if on else 0)


def set_no_new_privs():
    prctl(PR_SET_NO_NEW_PRIVS, 1)


def set_keepcaps(on):
    prctl(PR_SET_KEEPCAPS, 1 if on else 0)


def last_cap():
    try:
        with open("/proc/sys/kernel/cap_last_cap", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


def drop_bounding(keep_mask):
    """Drop every capability not in keep_mask from the bounding set (needs CAP_SETPCAP)."""
    for cap in range(last_cap() + 1):
        if not keep_mask & (1 << cap):
            try:
                prctl(PR_CAPBSET_DROP, cap)
            except OSError as e:
                if e.errno != 22:  # EINVAL: the kernel does not know this capability
                    raise


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


_CAP_V3 = 0x20080522


def capget():
    """(effective, permitted, inheritable) of this thread, as 64-bit masks."""
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    _check(_libc.capget(ctypes.byref(hdr), data), "capget")
    return tuple(getattr(data[0], f) | (getattr(data[1], f) << 32)
                 for f in ("effective", "permitted", "inheritable"))


def capset(effective, permitted, inheritable):
    hdr = _CapHeader(_CAP_V3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        data[i].effective = (effective >> (32 * i)) & 0xFFFFFFFF
        data[i].permitted = (permitted >> (32 * i)) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> (32 * i)) & 0xFFFFFFFF
    _check(_libc.capset(ctypes.byref(hdr), data), "capset")


def set_ambient(mask):
    prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    for cap in range(64):
        if mask & (1 << cap):
            prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap)


def reset_signals():
    """Default dispositions and an empty mask: both survive exec, Python changes both."""
    try:
        _signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for sig in range(1, _signal.NSIG):
        if sig in (_signal.SIGKILL, _signal.SIGSTOP):
            continue
        try:
            _signal.signal(sig, _signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass
    _signal.pthread_sigmask(_signal.SIG_SETMASK, [])


def wait_status(status):
    """(exit_code, signal) from a waitpid status."""
    if os.WIFSIGNALED(status):
        return None, os.WTERMSIG(status)
    if os.WIFEXITED(status):
        return os.WEXITSTATUS(status), None
    return None, None


def crash_point(name):
    """stage0/crashpoint.hit for code that also runs from the stage1 tree (no stage0 there):
    SIGKILL here when ROCKET_CRASH_AT is name, after logging it to ROCKET_CRASH_LOG. Test
    only; the keeper's environment never carries these, so it reaches the foreground path."""
    env = os.environ
    if "ROCKET_CRASH_AT" not in env and "ROCKET_CRASH_LOG" not in env:
        return
    if env.get("ROCKET_CRASH_LOG"):
        fd = os.open(env["ROCKET_CRASH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, (name + "\n").encode())
        finally:
            os.close(fd)
    if env.get("ROCKET_CRASH_AT") == name:
        os.kill(os.getpid(), 9)


# clone3(2) with CLONE_INTO_CGROUP (Linux 5.7, cgroup v2 only): the child is born in a
# cgroup, so nobody writes its cgroup.procs, which on a host without favordynmods waits for
# an RCU grace period (7-17 ms) each time the writer lock has been idle for a few ms.
SYS_CLONE3 = 435
CLONE_INTO_CGROUP = 0x200000000
_SIGCHLD = 17


class _CloneArgs(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size",
        "tls", "set_tid", "set_tid_size", "cgroup")]


_raw_syscall = []  # type: list
_clone3_refused = []  # type: list  # the first errno: a kernel or host that refuses it, once per process


def fork_into_cgroup(cgroup_fd: int) -> int:
    """os.fork() whose child starts in the cgroup v2 directory open as cgroup_fd (O_RDONLY).

    Raises OSError (ENOSYS on kernels before 5.7, EBADF/EINVAL for a fd that is not a v2
    cgroup, EBUSY for one that delegates controllers, EPERM) before any child exists, so
    the caller can fall back to os.fork() and a cgroup.procs write. After the first
    refusal of the system call itself (ENOSYS, E2BIG: a seccomp filter or an old kernel)
    later calls raise at once. Python's own fork hooks run around it, as os.fork's do; the
    caller must be single-threaded (stage1's processes are)."""
    if _clone3_refused:
        raise OSError(_clone3_refused[0], "clone3: %s" % os.strerror(_clone3_refused[0]))
    api = ctypes.pythonapi  # calls keep the GIL: no other Python thread runs across the fork
    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=_SIGCHLD, cgroup=cgroup_fd)
    if not _raw_syscall:  # syscall(2) through PyDLL: called with the GIL held
        fn = ctypes.PyDLL(None, use_errno=True).syscall
        fn.restype = ctypes.c_long
        _raw_syscall.append(fn)
    raw = _raw_syscall[0]
    api.PyOS_BeforeFork()
    pid = raw(ctypes.c_long(SYS_CLONE3), ctypes.byref(args), ctypes.c_size_t(ctypes.sizeof(args)))
    err = ctypes.get_errno()
    if pid == 0:
        api.PyOS_AfterFork_Child()
        return 0
    api.PyOS_AfterFork_Parent()
    if pid < 0:
        if err in (38, 7):  # ENOSYS, E2BIG: this kernel (or a filter) has no clone3 with cgroup
            _clone3_refused.append(err)
        raise OSError(err, "clone3(CLONE_INTO_CGROUP): %s" % os.strerror(err))
    return pid


def fork_preferring_cgroup(cgroup_fd: "int | None") -> "tuple[int, bool]":
    """(os.fork's result, whether the child was born in cgroup_fd's cgroup).

    Born there when clone3 allows it; otherwise a plain fork, and the child joins by writing
    cgroup.procs as it would have without this. None: a plain fork."""
    if cgroup_fd is not None:
        try:
            return fork_into_cgroup(cgroup_fd), True
        except OSError:
            pass
    return os.fork(), False
