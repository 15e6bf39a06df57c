"""What a test may leave behind on the host, read before and after it.

Mounts, network namespaces, veth links, cgroups named by us and child processes are all
things a pod or an import can leak; a test that leaks fails, whichever test it is. Given the
test's tmp_path (where its data directories live), also files left in any data directory's
``cas/tmp`` (work of an import, render or fetch that did not clean up) and file descriptors
of this process still open on anything under it (a lock or a pod directory never closed).
"""
import glob
import os


# iproute2 mounts /run/netns on itself (to make it shared) the first time any `ip netns add`
# runs on a host, and never takes it back: host set-up, not something a test leaves.
HOST_SETUP_MOUNTS = frozenset({"/run/netns"})


def _mounts():
    try:
        with open("/proc/self/mountinfo") as f:
            return frozenset(line.split()[4] for line in f) - HOST_SETUP_MOUNTS
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


# The cgroup_parent the tests give (tests/integration/test_cgroup_parent.py): pods under it,
# and the parent itself once a test is done, are leaks too.
TEST_PARENT = "rocket-test-parent"


def _cgroups():
    out = set()
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for sub in ("", "memory", "cpu", "pids", "devices", "cpuset", "blkio"):
            top = os.path.join(base, sub) if sub else base
            d = os.path.join(top, "rocket")
            try:
                out.update(os.path.join(d, n) for n in os.listdir(d))
            except OSError:
                pass
            if os.path.isdir(os.path.join(top, TEST_PARENT)):
                out.add(os.path.join(top, TEST_PARENT))
    return frozenset(out)


BOOTED_CGROUPS = ("/sys/fs/cgroup/systemd/appc-rocket-booted", "/sys/fs/cgroup/unified/appc-rocket-booted")


def _booted():
    """What a booted test host (tests/support/booted.py) makes outside itself: its bridge and
    veths, its cgroups (nspawn's payload/supervisor under appc-rocket-booted/<host>) and
    nspawn's run-time directories for the machine. Its nspawn is in _children; its network
    namespace is nspawn's and its overlay is mounted in a mount namespace of its own."""
    out = set()
    try:
        out.update("link:" + n for n in os.listdir("/sys/class/net") if n.startswith(("rboot", "vb-")))
    except OSError:
        pass
    for d in BOOTED_CGROUPS:  # one per host (what runs inside it comes and goes with it)
        try:
            out.update("cgroup:" + os.path.join(d, n) for n in os.listdir(d)
                       if os.path.isdir(os.path.join(d, n)))
        except OSError:
            pass
    for d in ("/run/systemd/nspawn/propagate", "/run/systemd/nspawn/unix-export"):
        try:
            out.update("run:" + os.path.join(d, n) for n in os.listdir(d))
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


def _cas_tmp(root):
    out = set()
    for depth in ("", "*", "*/*", "*/*/*"):
        for d in glob.glob(os.path.join(glob.escape(root), depth, "cas", "tmp")):
            out.update(os.path.join(d, n) for n in os.listdir(d))
    return frozenset(out)


def _fds(root):
    out = set()
    prefix = root.rstrip("/") + "/"
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink("/proc/self/fd/" + fd)
        except OSError:
            continue
        if target.startswith(prefix):
            out.add(target)
    return frozenset(out)


HOSTLOCAL = "/var/lib/cni/networks"  # the CNI host-local plugin's default data directory


def _cni_hostlocal():
    """Addresses host-local holds (its lock and last_reserved_ip files stay by design)."""
    out = set()
    for f in glob.glob(os.path.join(HOSTLOCAL, "*", "*")):
        name = os.path.basename(f)
        if name[:1].isdigit() or ":" in name:
            out.add(f)
    return frozenset(out)


# Chains the portmap and firewall plugins create once per host and never delete (with the
# jumps to them): host set-up, like /run/netns. Each pod's own chains and rules still count.
CNI_SHARED_CHAINS = ("CNI-HOSTPORT-DNAT", "CNI-HOSTPORT-MASQ", "CNI-HOSTPORT-SETMARK", "CNI-FORWARD", "CNI-ADMIN",
                     "CNI portfwd")


def _cni_chains():
    """iptables chains and rules CNI plugins make (CNI-*; iptables-nft's tables)."""
    import subprocess

    # One iptables-save is ~10 ms, twice per test: only once a CNI plugin ran on this host
    # (host-local, which every test's network uses, made /var/lib/cni).
    if not os.path.exists("/usr/sbin/iptables-save") or not os.path.isdir("/var/lib/cni"):
        return frozenset()
    try:
        out = subprocess.run(["/usr/sbin/iptables-save"], capture_output=True, text=True, check=False,
                             timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return frozenset()
    return frozenset(line for line in out.splitlines() if line[:1] in (":", "-") and "CNI-" in line
                     and not _cni_shared(line))


def _cni_shared(line):
    """A shared chain's declaration or a rule of it that names no pod (no address, no id)."""
    return any(c in line for c in CNI_SHARED_CHAINS) and "/32" not in line and "/128" not in line and "id: " not in line


def _cni_cache(root):
    out = set()
    for depth in ("", "*", "*/*", "*/*/*"):
        for d in glob.glob(os.path.join(glob.escape(root), depth, "net", "cni")):
            out.update(os.path.join(d, n) for n in os.listdir(d))
    return frozenset(out)


def cni_state():
    """The host-wide CNI part of a snapshot."""
    return {"cni_hostlocal": _cni_hostlocal(), "cni_chains": _cni_chains()}


def snapshot(root=None):
    """What exists now; with ``root`` (a test's tmp_path) also its cas/tmp files and fds."""
    snap = {"mounts": _mounts(), "netns": _netns(), "veth": _veths(),
            "cgroups": _cgroups(), "children": _children(), "booted": _booted()}
    snap.update(cni_state())
    if root is not None:
        snap.update(cas_tmp=_cas_tmp(str(root)), fds=_fds(str(root)))
        snap.update(cni_cache=_cni_cache(str(root)))
    return snap


def _foreign(cgroup, session):
    """A pod cgroup whose processes all belong to another pytest session (a developer
    running tests beside us on a shared machine): its cmdline or cwd names a pytest
    directory that is not ours. CI runs alone and never has any."""
    texts = []
    for dirpath, dummy_dirs, files in os.walk(cgroup):
        if "cgroup.procs" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "cgroup.procs")) as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                with open("/proc/%s/cmdline" % pid, "rb") as f:
                    text = f.read().decode(errors="replace")
                text += " " + os.readlink("/proc/%s/cwd" % pid)
            except OSError:
                continue
            texts.append(text)
    if texts:
        mine = session.rstrip("/") + "/"  # pytest-1 must not claim pytest-12's processes
        return any("/pytest-" in t for t in texts) and not any(mine in t for t in texts)
    # No process left: foreign if a pod directory of that UUID exists in another session
    # (gc removes a pod's cgroups before its directory, so a live one is still there).
    uuid = os.path.basename(cgroup)
    base = os.path.dirname(session.rstrip("/"))
    for depth in ("*", "*/*", "*/*/*"):
        for hit in glob.glob(os.path.join(glob.escape(base), "*", depth, "pods", "*", uuid)):
            if not hit.startswith(session.rstrip("/") + "/"):
                return True
    return False


def _own_booted(before, session):
    """The booted-host entries now, less those of another pytest session's hosts (a developer
    or another worktree running the booted tests beside a unit run). Hosts share one bridge
    name, so one session at a time has them: when every host present is foreign (its nspawn
    names another session's directory), so is every new entry. A host being stopped right
    now has no process left to tell: wait for it to go."""
    import time

    now = before
    for dummy in range(30):
        now = _booted()
        new = now - before
        if not new:
            return now
        hosts = [e[len("cgroup:"):] for e in new if e.startswith("cgroup:")]
        foreign = [h for h in hosts if _foreign(h, session)]
        if hosts and len(foreign) == len(hosts):
            return before
        if hosts and len(foreign) < len(hosts) and all(_procs_in(h) for h in hosts):
            return now  # a host of ours, still running: a leak
        time.sleep(0.1)  # no host (a bridge or veth going away) or one being stopped
    return now


def _procs_in(cgroup):
    for dirpath, dummy_dirs, files in os.walk(cgroup):
        if "cgroup.procs" in files:
            try:
                with open(os.path.join(dirpath, "cgroup.procs")) as f:
                    if f.read().split():
                        return True
            except OSError:
                pass
    return False


def assert_clean(before, after, what, session=None):
    """Fail naming what ``after`` holds that ``before`` did not; ``session`` (the pytest
    base temporary directory) lets cgroups of other sessions' live pods be told apart."""
    if session and after["cgroups"] - before["cgroups"]:
        import time

        for dummy in range(20):  # another session's pod being removed right now: let it go
            new = frozenset(c for c in _cgroups() - before["cgroups"] if not _foreign(c, str(session)))
            if not new:
                break
            time.sleep(0.1)
        after = dict(after, cgroups=new | before["cgroups"])
    if session and after.get("booted", frozenset()) - before.get("booted", frozenset()):
        after = dict(after, booted=_own_booted(before.get("booted", frozenset()), str(session)))
    leaked = {k: sorted(after[k] - before.get(k, frozenset())) for k in after if after[k] - before.get(k, frozenset())}
    if leaked:
        raise AssertionError(f"{what} leaked: {leaked}")
