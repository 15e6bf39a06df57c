"""What a test may leave behind on the host, read before and after it.

Mounts, network namespaces, veth links, cgroups named by us and child processes are all
things a pod or an import can leak; a test that leaks fails, whichever test it is.
"""
import os


def _mounts():
    try:
        with open("/proc/self/mountinfo") as f:
            return frozenset(line.split()[4] for line in f)
    except OSError:
        return frozenset()


def _netns():
    try:
        return frozenset(os.listdir("/run/netns"))
    except OSError:
        return frozenset()


def _veths():
    out = set()
    try:
        for name in os.listdir("/sys/class/net"):
            if os.path.exists(f"/sys/class/net/{name}/veth") or name.startswith("veth") or name.startswith("rkt"):
                out.add(name)
    except OSError:
        pass
    return frozenset(out)


def _cgroups():
    out = set()
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for sub in ("", "memory", "cpu", "pids", "devices"):
            d = os.path.join(base, sub, "rocket") if sub else os.path.join(base, "rocket")
            try:
                out.update(os.path.join(d, n) for n in os.listdir(d))
            except OSError:
                pass
    return frozenset(out)


def _children():
    me = str(os.getpid())
    kids = set()
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == me:
            kids.add(pid)
    return frozenset(kids)


def snapshot():
    return {"mounts": _mounts(), "netns": _netns(), "veth": _veths(),
            "cgroups": _cgroups(), "children": _children()}


def assert_clean(before, after, what):
    leaked = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
    if leaked:
        raise AssertionError(f"{what} leaked: {leaked}")
