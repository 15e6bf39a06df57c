"""Host devices passed through to an app (the devices option): the node bound into the
app's /dev and its rule added to the app's device allow-list (cgroups.py: the v1 devices
controller and the v2 BPF program), so the app reaches that device and still no other.

The host node is opened with paths.open_host (no symlink in any component) and must be a
character or block device under /dev, at every start: what is allowed is what the node is
then, and what is bound is the node that was checked (through /proc/self/fd/N).
"""
import os
import stat

from . import contract, paths

# Names mounts.py makes in every app's /dev: a passed-through device may not take them.
RESERVED = ("null", "zero", "full", "random", "urandom", "tty", "console", "pts", "shm", "fd",
            "stdin", "stdout", "stderr", "core", "ptmx", "mqueue")


class DeviceError(RuntimeError):
    pass


def parse(annotations):
    """[(host path, path in the app, permissions)] from an app's pod-manifest annotations."""
    for a in annotations or ():
        if a.get("name") == contract.DEVICES_ANNOTATION:
            out = []
            for line in str(a.get("value") or "").split("\n"):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) != 3:
                    raise DeviceError("annotation %s: %r is not \"<host> <path> <rwm>\""
                                      % (contract.DEVICES_ANNOTATION, line))
                out.append((parts[0], parts[1], parts[2]))
            return out
    return []


def check_target(target):
    """None when target is a path under /dev an app may get a device at; else why not."""
    parts = target.split("/")
    if len(parts) < 3 or parts[0] != "" or parts[1] != "dev" or "" in parts[2:] or "." in parts[2:] \
            or ".." in parts[2:]:
        return "must be a path under /dev (e.g. /dev/loop3 or /dev/net/tun)"
    if parts[2] in RESERVED:
        return "is a node every app's /dev already has (/dev/%s)" % parts[2]
    return None


def open_node(host):
    """(O_PATH fd, "c" or "b", major, minor) of a device node at host (under /dev, no
    symlink on the way); DeviceError otherwise."""
    if not host.startswith("/dev/") or ".." in host.split("/"):
        raise DeviceError("%s is not a path under /dev" % host)
    try:
        fd = paths.open_host(host)
    except paths.HostPathError as e:
        raise DeviceError("%s: %s %s (a device's path is never resolved through a symlink)"
                          % (host, e.component, e.why))
    st = os.fstat(fd)
    if stat.S_ISCHR(st.st_mode):
        kind = "c"
    elif stat.S_ISBLK(st.st_mode):
        kind = "b"
    else:
        os.close(fd)
        raise DeviceError("%s is not a device node" % host)
    return fd, kind, os.major(st.st_rdev), os.minor(st.st_rdev)


def rules(devices):
    """The allow-list rules ("c 10:200 rw") of the devices as their host nodes are now."""
    out = []
    for host, dummy_target, perms in devices:
        fd, kind, major, minor = open_node(host)
        os.close(fd)
        out.append("%s %d:%d %s" % (kind, major, minor, perms))
    return out


def describe(devices, allowed):
    """isolation.json's "devices": what was passed through, with the rule allowing it."""
    return [{"path": host, "container_path": target, "permissions": perms, "rule": rule}
            for (host, target, perms), rule in zip(devices, allowed)]
