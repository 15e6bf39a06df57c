"""A Landlock domain per app: the cross-app /proc guard.

The apps of a pod share one PID namespace, so root in one app could setuid to another
app's uid and pass the kernel's ptrace access check (same uid, no capability either side
lacks) on that app's /proc/PID/root, cwd, fd, environ and mem. Landlock refuses
ptrace-class access from a domain to any task that is not in it or in a domain nested in
it, whatever the uid and capabilities: each app, each entered command and each
healthcheck probe gets a domain of its own just before its exec, and PID 1, the
supervisors and the keeper stay outside every domain, keeping full access.

A domain needs a ruleset that handles a file system right. This one handles making block
devices (the device allow-list refuses those already) and reparenting (REFER, which any
ruleset refuses unless a rule grants it), and grants both beneath the app's root: files
behave as before. What a domain does change: no mount, umount or pivot_root in it, and no
ptrace or /proc/PID/{root,fd,environ,mem} of processes outside it. No scope is asked for,
so signals and abstract unix sockets between apps keep working.
Standard library only (stage1).
"""
import ctypes
import os

from . import linux

SYS_CREATE_RULESET = 444
SYS_ADD_RULE = 445
SYS_RESTRICT_SELF = 446
CREATE_RULESET_VERSION = 1
RULE_PATH_BENEATH = 1
ACCESS_FS_MAKE_BLOCK = 1 << 11
ACCESS_FS_REFER = 1 << 13  # ABI 2
HANDLED = ACCESS_FS_MAKE_BLOCK | ACCESS_FS_REFER
MIN_ABI = 2

# An app that may regain either of these is trusted with the other apps' processes (a
# debugging sidecar with cap_add SYS_PTRACE, a nested runtime with SYS_ADMIN, privileged):
# it runs outside any domain, as before, and says so.
OUTSIDE_CAPS = (1 << linux.CAP_NUMBERS["CAP_SYS_ADMIN"]) | (1 << linux.CAP_NUMBERS["CAP_SYS_PTRACE"])


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64)]  # ABI 1's size: no net rights, no scopes


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def probe() -> "tuple[int, str | None]":
    """(ABI version, None) where domains can be made here; (0, why not) where not."""
    try:
        abi = linux.syscall(ctypes.c_long(SYS_CREATE_RULESET), None, ctypes.c_size_t(0),
                            ctypes.c_uint32(CREATE_RULESET_VERSION))
    except OSError as e:
        if e.errno == 38:  # ENOSYS
            return 0, "this kernel has no Landlock (before Linux 5.13, or a filter refuses its calls)"
        if e.errno == 95:  # EOPNOTSUPP
            return 0, "Landlock is built in but not enabled (not in the kernel's lsm= list)"
        return 0, "Landlock refused: %s" % os.strerror(e.errno or 0)
    if abi < MIN_ABI:
        return 0, ("Landlock ABI %d (before Linux 5.19) would refuse every rename and link across "
                   "directories in the apps" % abi)
    return abi, None


def guard(abi: int, reason: "str | None", bounding: int) -> dict:
    """What isolation.json says of an app's guard, and what the supervisor and enter obey
    (enforced: the app gets a domain)."""
    if not abi:
        return {"enforced": False, "reason": "not enforced: " + (reason or "no Landlock")}
    if bounding & OUTSIDE_CAPS:
        return {"enforced": False, "abi": abi,
                "reason": "not enforced: the app may hold CAP_SYS_ADMIN or CAP_SYS_PTRACE, so it runs "
                          "outside any Landlock domain (it may reach the other apps' processes)"}
    return {"enforced": True, "abi": abi, "by": "landlock"}


def restrict_self() -> None:
    """Put this process (and what it execs and forks from now on) in a new domain.

    Call it while holding CAP_SYS_ADMIN in the current user namespace (before the
    credentials are dropped), so that no-new-privileges is not forced on the app: the
    kernel needs one of the two."""
    attr = _RulesetAttr(HANDLED)
    ruleset = linux.syscall(ctypes.c_long(SYS_CREATE_RULESET), ctypes.byref(attr),
                            ctypes.c_size_t(ctypes.sizeof(attr)), ctypes.c_uint32(0))
    try:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            rule = _PathBeneath(HANDLED, root)
            linux.syscall(ctypes.c_long(SYS_ADD_RULE), ctypes.c_int(ruleset),
                          ctypes.c_int(RULE_PATH_BENEATH), ctypes.byref(rule), ctypes.c_uint32(0))
        finally:
            os.close(root)
        linux.syscall(ctypes.c_long(SYS_RESTRICT_SELF), ctypes.c_int(ruleset), ctypes.c_uint32(0))
    finally:
        os.close(ruleset)
