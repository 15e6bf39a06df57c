"""An app's root: bind it, mount /proc /sys /dev and the volumes inside it, pivot_root.

Runs in the app's own mount namespace (made rprivate first). Every target is resolved
inside the root (paths.resolve) and mounted through /proc/self/fd/N of the resolved fd.
Every mount is nodev except the device nodes bound one by one into /dev (a bind mount
carries the flags of the mount it comes from, the host's /dev, not those of the nodev
tmpfs under it) and /dev/pts: a node an app makes with mknod, anywhere, opens nothing.
"""
import os
import stat

from . import linux, paths
from .linux import MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, MS_REC, MS_REMOUNT

# runc's default spec
PROC_MASKED_FILES = ("kcore", "keys", "timer_list", "timer_stats", "sched_debug",
                     "latency_stats")
PROC_MASKED_DIRS = ("acpi", "asound", "scsi")
PROC_READONLY = ("sys", "sysrq-trigger", "irq", "bus", "fs")
SYS_MASKED_DIRS = ("firmware", "devices/virtual/powercap")
DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"),
             ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2"),
             ("core", "/proc/kcore"), ("ptmx", "pts/ptmx"))
_PSEUDO = MS_NOSUID | MS_NODEV | MS_NOEXEC


class MountError(RuntimeError):
    pass


def make_private():
    linux.mount(None, "/", None, MS_REC | linux.MS_PRIVATE)


def _try_resolve(rootfd, path):
    try:
        return paths.resolve(rootfd, path)
    except FileNotFoundError:
        return None


def _remount(rootfd, path, flags, recursive=False):
    """Set flags on the mount at path (resolved inside rootfd): mount_setattr, else remount."""
    fd = paths.resolve(rootfd, path)
    try:
        attrs = 0
        for ms, ma in ((MS_RDONLY, linux.MOUNT_ATTR_RDONLY), (MS_NOSUID, linux.MOUNT_ATTR_NOSUID),
                       (MS_NODEV, linux.MOUNT_ATTR_NODEV), (MS_NOEXEC, linux.MOUNT_ATTR_NOEXEC)):
            if flags & ms:
                attrs |= ma
        try:
            linux.mount_setattr(fd, attrs, 0, recursive)
        except OSError as e:
            if e.errno not in (38, 1):
                raise
            linux.mount(None, paths.fd_path(fd), None, MS_REMOUNT | MS_BIND | flags)
    finally:
        os.close(fd)


def _mount_at(rootfd, path, source, fstype, flags, data=None, create="dir"):
    fd = paths.mkdirs(rootfd, path) if create == "dir" else paths.mkfile(rootfd, path)
    try:
        if paths.same_file(fd, rootfd):
            raise MountError("mount target %s resolves to the app's root" % path)
        linux.mount(source, paths.fd_path(fd), fstype, flags, data)
    finally:
        os.close(fd)


def mount_proc(rootfd, privileged=False):
    _mount_at(rootfd, "/proc", "proc", "proc", _PSEUDO)
    if privileged:  # docker's --privileged: no masked or read-only paths
        return
    for name in PROC_MASKED_FILES:
        fd = _try_resolve(rootfd, "/proc/" + name)
        if fd is not None:
            try:
                linux.mount("/dev/null", paths.fd_path(fd), None, MS_BIND)
            finally:
                os.close(fd)
    for name in PROC_MASKED_DIRS:
        _mask_dir(rootfd, "/proc/" + name)
    for name in PROC_READONLY:
        fd = _try_resolve(rootfd, "/proc/" + name)
        if fd is not None:
            try:
                linux.mount(paths.fd_path(fd), paths.fd_path(fd), None, MS_BIND | MS_REC)
            finally:
                os.close(fd)
            _remount(rootfd, "/proc/" + name, _PSEUDO | MS_RDONLY, recursive=True)


def _mask_dir(rootfd, path):
    """Hide a directory under an empty read-only tmpfs (runc's masked paths), if it exists."""
    fd = _try_resolve(rootfd, path)
    if fd is not None:
        try:
            linux.mount("tmpfs", paths.fd_path(fd), "tmpfs", _PSEUDO | MS_RDONLY, "size=0,mode=000")
        finally:
            os.close(fd)


def mount_sys(rootfd, cgroup_mounts=(), privileged=False):
    """sysfs read-only; the pod's cgroup hierarchies read-only under /sys/fs/cgroup.
    privileged: sysfs writable and nothing masked (the cgroup hierarchies stay read-only).

    cgroup_mounts: [(dir name, fstype, options)] e.g. ("memory", "cgroup", "memory").
    """
    _mount_at(rootfd, "/sys", "sysfs", "sysfs", _PSEUDO | (0 if privileged else MS_RDONLY))
    for name in () if privileged else SYS_MASKED_DIRS:
        _mask_dir(rootfd, "/sys/" + name)
    if not cgroup_mounts:
        return
    if len(cgroup_mounts) == 1 and not cgroup_mounts[0][0]:  # pure v2
        dummy_point, fstype, options = cgroup_mounts[0]
        _mount_at(rootfd, "/sys/fs/cgroup", "cgroup", fstype, _PSEUDO | MS_RDONLY, options)
        return
    fd = _try_resolve(rootfd, "/sys/fs/cgroup")
    if fd is None:
        return
    try:
        linux.mount("tmpfs", paths.fd_path(fd), "tmpfs", _PSEUDO, "mode=755,size=64k")
    finally:
        os.close(fd)
    for name, fstype, options in cgroup_mounts:
        _mount_at(rootfd, "/sys/fs/cgroup/" + name, "cgroup", fstype, _PSEUDO | MS_RDONLY, options)
    _remount(rootfd, "/sys/fs/cgroup", _PSEUDO | MS_RDONLY)


def mount_dev(rootfd, console=None, privileged=False, devices=(), shm_size=None):
    """/dev: a nodev tmpfs with the ACE devices bound from the host one by one (each bind
    keeps the flags of the host's /dev, so these nodes open; nothing else there does).
    privileged: the same tmpfs without nodev, so the nodes the app makes (CAP_MKNOD) open;
    not the host's /dev bound in (its devpts, shm and console are the host's).
    shm_size: bytes of /dev/shm, the app's own tmpfs (64 MiB, docker's default, without)."""
    flags = (_PSEUDO & ~MS_NODEV) if privileged else _PSEUDO
    _mount_at(rootfd, "/dev", "tmpfs", "tmpfs", flags | linux.MS_STRICTATIME,
              "mode=755,size=65536k")
    devfd = paths.resolve(rootfd, "/dev", os.O_PATH | os.O_DIRECTORY)
    try:
        binds = [(n, "/dev/" + n) for n in DEV_NODES] + [("console", console or "/dev/null")]
        for name, source in binds:
            os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                             | os.O_CLOEXEC, 0o600, dir_fd=devfd))
            linux.mount(source, "%s/%s" % (paths.fd_path(devfd), name), None, MS_BIND)
        if devices:
            from . import hostdevices

            for host, target, dummy_perms in devices:
                nfd = hostdevices.open_node(host)[0]
                try:
                    _mount_at(rootfd, target, paths.fd_path(nfd), None, MS_BIND, create="file")
                finally:
                    os.close(nfd)
        os.mkdir("pts", 0o755, dir_fd=devfd)
        linux.mount("devpts", paths.fd_path(devfd) + "/pts", "devpts", MS_NOSUID | MS_NOEXEC,
                    "newinstance,ptmxmode=0666,mode=0620,gid=5")
        os.mkdir("shm", 0o1777, dir_fd=devfd)
        linux.mount("shm", paths.fd_path(devfd) + "/shm", "tmpfs", _PSEUDO,
                    "mode=1777,size=%s" % ("65536k" if shm_size is None else "%d" % shm_size))
        for name, target in DEV_LINKS:
            os.symlink(target, name, dir_fd=devfd)
    finally:
        os.close(devfd)


def mount_volume(rootfd, source, target, read_only, recursive, volume=None):
    """Bind source at target resolved inside the root.

    volume: the name of a host volume, whose source is opened with paths.open_host (no
    symlink in any component) at every start, restarts included; other sources are the
    pod's own files (the last component must not be a symlink).
    """
    if volume is not None:
        try:
            sfd = paths.open_host(source)
        except paths.HostPathError as e:
            raise MountError("volume %s: source %s: %s %s; refusing to mount it (a host volume's "
                             "source is never resolved through a symlink)" % (volume, source, e.component, e.why))
    else:
        try:
            sfd = os.open(source, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise MountError("volume source %s does not exist" % source)
    try:
        st = os.fstat(sfd)
        if stat.S_ISLNK(st.st_mode):
            raise MountError("volume source %s is a symlink" % source)
        create = "dir" if stat.S_ISDIR(st.st_mode) else "file"
        _mount_at(rootfd, target, paths.fd_path(sfd), None, MS_BIND | (MS_REC if recursive else 0),
                  create=create)
    finally:
        os.close(sfd)
    _remount(rootfd, target, MS_NODEV | (MS_RDONLY if read_only else 0), recursive=recursive)


def bind_root(root):
    """Make the app's root a mount point of its own; an O_PATH fd of it."""
    linux.mount(root, root, None, MS_BIND | MS_REC)
    return os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)


def finish_root(rootfd, read_only):
    _remount(rootfd, "/", MS_NODEV | (MS_RDONLY if read_only else 0))


def pivot(rootfd):
    """pivot_root into rootfd and detach the old root: nothing of the host stays reachable."""
    os.fchdir(rootfd)
    linux.pivot_root(".", ".")
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
