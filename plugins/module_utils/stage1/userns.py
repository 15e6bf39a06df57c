"""private_users: the pod's apps in a user namespace whose root is an unprivileged host uid.

Order (init.py, in the process stage0 started, which is root on the host):
1. create(): a short-lived child unshares a user namespace; we (host root) write its
   uid_map and gid_map ("0 <base> 65536"); the child, now root in it, unshares the UTS,
   IPC and (unless net=host) network namespaces, which the user namespace thus owns; we
   open all of them by /proc/<child>/ns/* and join the UTS/IPC/net ones; the child exits.
   init itself stays in the host's user namespace: its mounts, cgroups, sysctls and the
   net helper's veth moves (by PID, from outside) work as before, and root in the pod
   still has CAP_NET_BIND_SERVICE etc. over its own network namespace.
2. idmap_roots(): every app root is remounted as an overlay over idmapped layers, so the
   image's root-owned files are root-owned inside the pod and its writes land in the
   upper layer as the image's ids (overlayfs itself cannot be idmapped on this kernel
   line, its layers can).
3. The mount and PID namespaces are then unshared by init as before (owned by the host's
   user namespace: the pod's root can mount nothing).
4. join(): each app process (app.py) and each entered process (enter.py) joins the user
   namespace as the last namespace step, before it sets its uid/gid.
Host volumes are not idmapped: files the pod's root creates there belong to <base> on
the host, and it cannot write host files owned by the real root.

Without private_users every pod still gets a user namespace, with the identity map
("0 0 4294967295", create_identity()): ids, files and volumes are what they were, but the
namespace is owned by host root, so the kernel's ptrace check (which guards
/proc/PID/environ, root, cwd, fd, mem and ptrace itself) refuses a host user whose uid
equals the app's: it has no capability in the app's namespace. An app joins it unless it
keeps a capability that only works in the host's user namespace (needs_host_caps()):
such an app stays out, and its non-empty permitted set makes the same check refuse a
capless host user. Signals, priority and rlimits are checked by uid alone and stay open
to that user.
"""
import ctypes
import os

from . import linux

RANGE = 65536
IDENTITY = "0 0 4294967295"  # every id but (uid_t)-1, mapped to itself
SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOUNT_ATTR_IDMAP = 0x00100000
AT_FDCWD = -100


class UsernsError(RuntimeError):
    pass


def parse_flag(value):
    """--private-users=<base>: the first host uid/gid of the pod's 65536."""
    if not value.isdigit() or not 0 < int(value) <= 0xFFFFFFFF - RANGE:
        raise ValueError("--private-users=%s: want the first host id of a 65536 range" % value)
    return int(value)


class Userns:
    def __init__(self, base, user_fd, ns_fds):
        self.base = base
        self.user_fd = user_fd      # kept open (and inherited) for join()
        self.ns_fds = ns_fds        # {"uts": fd, ...}: joined by create(), then closed

    def describe(self):
        return {"uid_base": self.base, "gid_base": self.base, "size": RANGE}


def _write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, data.encode())
    finally:
        os.close(fd)


def create(base, own_net):
    """The pod's user namespace (and the UTS/IPC/net namespaces it owns), joined but for
    the user namespace itself. Returns a Userns."""
    return Userns(base, _create("0 %d %d\n" % (base, RANGE), own_net), {})


def create_identity(own_net):
    """create() with the identity map: a Userns whose base is None."""
    try:
        return Userns(None, _create(IDENTITY + "\n", own_net), {})
    except UsernsError as e:
        raise UsernsError("%s (every pod runs its apps in a user namespace; is "
                          "user.max_user_namespaces 0?)" % e)


# Capabilities the kernel checks in the initial user namespace (capable(), or against a
# namespace the host's user namespace owns: the mount and PID namespaces, and the host's
# network namespace): an app holding one keeps it only outside the pod's user namespace.
HOST_CAPS = ("CAP_SYS_ADMIN", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_TIME", "CAP_SYS_NICE",
             "CAP_SYS_RESOURCE", "CAP_SYS_BOOT", "CAP_SYS_PACCT", "CAP_SYS_TTY_CONFIG",
             "CAP_IPC_LOCK", "CAP_LINUX_IMMUTABLE", "CAP_AUDIT_CONTROL",
             "CAP_AUDIT_READ", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
             "CAP_MAC_ADMIN", "CAP_MAC_OVERRIDE", "CAP_LEASE", "CAP_BPF", "CAP_PERFMON")
# Not here though the kernel checks them in the host's namespace too: CAP_MKNOD (device
# nodes, which the nodev /dev and the device allow-list make useless anyway; FIFOs need
# none) and CAP_AUDIT_WRITE (the audit socket refuses other user namespaces, which PAM and
# sudo take as "no audit"). CAP_SYS_PTRACE and CAP_KILL work on the pod's processes.
HOST_NET_CAPS = ("CAP_NET_BIND_SERVICE", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BROADCAST")


def needs_host_caps(mask, host_net):
    """Whether a process holding the capabilities of mask would lose one in the pod's
    (identity-mapped) user namespace; host_net: the pod uses the host's network namespace."""
    names = HOST_CAPS + (HOST_NET_CAPS if host_net else ())
    return any(mask >> linux.CAP_NUMBERS[n] & 1 for n in names if n in linux.CAP_NUMBERS)


def _create(map_line, own_net):
    """The user namespace's fd; see create()."""
    go_r, go_w = os.pipe()
    done_r, done_w = os.pipe()
    flags = linux.CLONE_NEWUTS | linux.CLONE_NEWIPC | (linux.CLONE_NEWNET if own_net else 0)
    pid = os.fork()
    if pid == 0:  # leaves only through _exit
        code = 1
        try:
            os.close(go_w)
            os.close(done_r)
            linux.unshare(linux.CLONE_NEWUSER)
            os.write(done_w, b"u")
            if os.read(go_r, 1) == b"m":          # maps written
                linux.unshare(flags)
                os.write(done_w, b"n")
                os.read(go_r, 1)                  # parent has opened our namespaces
                code = 0
        except BaseException as e:  # noqa: BLE001
            try:
                os.write(done_w, ("!" + str(e)).encode("utf-8", "replace")[:500])
            except BaseException:
                pass
        os._exit(code)
    os.close(go_r)
    os.close(done_w)
    fds = {}
    try:
        answer = os.read(done_r, 512)
        if answer != b"u":
            raise UsernsError("user namespace: %s" % answer[1:].decode("utf-8", "replace"))
        for name in ("uid_map", "gid_map"):
            _write("/proc/%d/%s" % (pid, name), map_line)
        os.write(go_w, b"m")
        answer = os.read(done_r, 512)
        if answer != b"n":
            raise UsernsError("pod namespaces in the user namespace: %s"
                              % answer[1:].decode("utf-8", "replace"))
        names = ["user", "uts", "ipc"] + (["net"] if own_net else [])
        for n in names:
            fds[n] = os.open("/proc/%d/ns/%s" % (pid, n), os.O_RDONLY | os.O_CLOEXEC)
        os.write(go_w, b"x")
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    finally:
        os.close(go_w)
        os.close(done_r)
        os.waitpid(pid, 0)
    user_fd = fds.pop("user")
    try:
        for n, fd in fds.items():
            linux.setns(fd, 0)
    except BaseException:
        os.close(user_fd)
        raise
    finally:
        for fd in fds.values():
            os.close(fd)
    return user_fd


def idmapped_clone(source, target, user_fd):
    """Attach at target a recursive clone of the mount tree at source, idmapped by user_fd."""
    try:
        fd = linux.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(os.fsencode(source)),
                           ctypes.c_uint(OPEN_TREE_CLONE | os.O_CLOEXEC | linux.AT_RECURSIVE))
    except OSError as e:
        raise UsernsError("open_tree %s: %s" % (source, e.strerror))
    try:
        try:
            linux.mount_setattr(fd, MOUNT_ATTR_IDMAP, recursive=True, userns_fd=user_fd)
        except OSError as e:
            raise UsernsError("idmapped mount of %s: %s (private_users needs a kernel and file system "
                              "with idmapped mounts, Linux 5.12+; overlay on idmapped layers, 5.19+)"
                              % (source, os.strerror(e.errno or 0)))
        try:
            linux.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_int(AT_FDCWD),
                          ctypes.c_char_p(os.fsencode(target)), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH))
        except OSError as e:
            raise UsernsError("move_mount to %s: %s" % (target, e.strerror))
    finally:
        os.close(fd)


def file_ids(base):
    """fsuid/fsgid = base, effective capabilities kept: files this process creates then
    belong to the pod's root, and through an idmapped root they are stored as the image's
    root's (a file of host root could not be represented there: EOVERFLOW). The app
    supervisor makes its mount points so."""
    saved = linux.capget()
    linux.setfsgid(base)
    linux.setfsuid(base)
    linux.capset(saved[1], saved[1], saved[2])  # a fsuid change drops file capabilities
    return saved


def _as_base(base, fn):
    """Run fn with file_ids(base): what overlayfs records as its mounter, and so the ids its
    work and copy-up files are made with."""
    saved = file_ids(base)
    try:
        return fn()
    finally:
        linux.setfsuid(0)
        linux.setfsgid(0)
        linux.capset(*saved)


def idmap_roots(pod_dir, plan, ns):
    """Remount every app root of mounts.json (plan) through idmapped layers. Runs in the
    launcher's private mount namespace, before init unshares the pod's."""
    work = os.path.join(pod_dir, "userns")
    os.makedirs(work, mode=0o700, exist_ok=True)
    for i, m in enumerate(plan.get("mounts") or ()):
        if m["target"] == "stage1/rootfs":
            continue
        target = os.path.join(pod_dir, m["target"])
        flags = linux.MS_NODEV | (linux.MS_RDONLY if m.get("readonly") else 0)
        if "lower" in m:
            upper, wdir = os.path.join(pod_dir, m["upper"]), os.path.join(pod_dir, m["work"])
            if os.path.dirname(upper) != os.path.dirname(wdir):
                raise UsernsError("%s: upper and work directories must share a parent" % m["target"])
            lowers = []
            for j, lower in enumerate(m["lower"].split(":")):
                at = os.path.join(work, "%d-lower%d" % (i, j))
                os.makedirs(at, exist_ok=True)
                idmapped_clone(lower, at, ns.user_fd)
                lowers.append(at)
            at = os.path.join(work, "%d-upper" % i)
            os.makedirs(at, exist_ok=True)
            idmapped_clone(os.path.dirname(upper), at, ns.user_fd)
            data = "lowerdir=%s,upperdir=%s,workdir=%s" % (
                ":".join(lowers), os.path.join(at, os.path.basename(upper)), os.path.join(at, os.path.basename(wdir)))
            linux.umount2(target, linux.MNT_DETACH)
            _as_base(ns.base, lambda: linux.mount("overlay", target, "overlay", flags, data))
        elif m.get("bind"):
            linux.umount2(target, linux.MNT_DETACH)
            idmapped_clone(os.path.join(pod_dir, m["bind"]), target, ns.user_fd)
            if m.get("readonly"):
                linux.mount(None, target, None, linux.MS_REMOUNT | linux.MS_BIND | flags)


def join(user_fd):
    """Enter the pod's user namespace (the caller is single-threaded, root on the host):
    full capabilities there, none on the host; then set the app's ids."""
    linux.setns(user_fd, linux.CLONE_NEWUSER)
