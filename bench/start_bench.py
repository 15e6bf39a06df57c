"""bench/start: the cold, whole command that starts a prepared one-app pod running /bin/true
in the foreground with a new network namespace (net: none), against its peers.

Measured in the same run, interleaved, on the same busybox root filesystem (each peer on
its own identical copy, since nspawn and podman write into the root they are given):
  floor     unshare --mount --uts --ipc --pid --net --fork chroot ROOTFS /bin/true
  runc      `runc run` with `runc spec`'s default config (root.path, terminal false, /bin/true)
  crun      the same bundle (crun refuses a hybrid-cgroup host: then we say why)
  nspawn    systemd-nspawn -q --register=no --keep-unit -D ROOTFS /bin/true
            (--keep-unit: without it nspawn asks systemd over D-Bus for a scope, and there is
            no systemd or system bus when systemd is not PID 1)
  podman    podman run --rm --rootfs ROOTFS /bin/true with --runtime runc, cgroupfs when
            systemd is not PID 1, --network none (like our net: none) and explicit ulimits
            when the host's bounding set lacks CAP_SYS_RESOURCE
  ours      python -I -S bench/rocket_run_prepared.py DATA UUID --net=none: a fresh
            interpreter importing only stage0.pod + stage0.run, run_foreground. Each run gets
            a pod prepared beforehand (untimed) and removed afterwards (untimed).
  against   (--against DIR, optional) the same start with another checkout's code (a copy of
            main, say), its pods prepared by that code: an A/B of a change in the same run.
Every row has its wall time and its CPU time: user + system of the whole process tree
(getrusage of the reaped children: runc's and podman's helpers included, conmon reaped by
this subreaper), which a busy machine distorts far less than wall time, and which leaves
out what the command only waits for (an RCU grace period on a cgroup.procs write).
Then a profile of our start path: interpreter start, imports (stage0, stage1 cold/warm),
-X importtime's biggest modules, and a syscall timeline (strace --seccomp-bpf) from exec to
/bin/true's exit.
Usage: python bench/start_bench.py [--runs 20] [--no-install] [--no-profile] [--no-peers] [--podman-net none]
                                  [--against DIR]
Goal: ours <= 1.2x runc.
"""
import argparse
import json
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile

import common  # first: the checkout importable (bench/common.py)
from tests.support.pods import reap, subreaper

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run as runmod

CLI = os.path.join(common.ROOT, "bench", "rocket_run_prepared.py")
PY = sys.executable
SPEC = {"apps": [{"image": "example.com/busybox", "exec": ["/bin/true"]}]}
PACKAGES = ["runc", "crun", "podman", "systemd-container", "strace"]


def systemd_is_pid1():
    try:
        return os.readlink("/proc/1/exe").endswith("/systemd")
    except OSError:
        return False


def hard_limit(name):
    return resource.getrlimit(getattr(resource, name))[1]


def cap_in_bounding(bit):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return bool(int(line.split()[1], 16) >> bit & 1)
    return True


def children_cpu():
    """User + system seconds of every reaped descendant so far (ours and theirs)."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_timed(argv, reap_after=False):
    """(wall seconds, CPU seconds of the whole tree, returncode, stderr tail); reap_after:
    also reap what the command left to this subreaper (conmon), inside the CPU window."""
    cpu0 = children_cpu()
    dt, rc, err = common.run_capture(argv)
    if reap_after:
        reap(settle=0.05)
    return dt, children_cpu() - cpu0, rc, err


class Peer:
    """One command to time; ``probe`` runs it once and says why it cannot be used."""

    def __init__(self, name, label, argv_for, cleanup=None, reap=False):
        self.name, self.label, self.argv_for = name, label, argv_for
        self.cleanup, self.reap = cleanup, reap
        self.times, self.cpu, self.error, self.i = [], [], None, 0

    def once(self):
        self.i += 1
        dt, cpu, rc, err = run_timed(self.argv_for(self.i), self.reap)
        if rc != 0:
            return None, "exit %d: %s" % (rc, err.splitlines()[-1] if err else "")
        self.cpu.append(cpu)
        return dt, None

    def probe(self):
        dt, why = self.once()
        if why:
            self.error = why
        return self.error is None


def make_peers(work, rootfs, args):
    peers = []
    floor_root = copy_root(rootfs, work, "floor")
    peers.append(Peer("floor", "`unshare -mui -p -n --fork chroot R /bin/true` (floor)",
                      lambda i: ["unshare", "--mount", "--uts", "--ipc", "--pid", "--net", "--fork",
                                 "chroot", floor_root, "/bin/true"]))
    if args.no_peers:  # the floor costs nothing to set up; the peers are skipped
        return peers + [missing(n, "skipped (--no-peers)") for n in ("runc", "crun", "nspawn", "podman")]
    tag = "rocket-bench-%d" % os.getpid()
    bundle = os.path.join(work, "bundle")
    os.makedirs(bundle)
    have_runc = shutil.which("runc")
    if have_runc:
        subprocess.run(["runc", "spec"], cwd=bundle, check=True)
        with open(os.path.join(bundle, "config.json")) as f:
            cfg = json.load(f)
        cfg["root"]["path"] = copy_root(rootfs, work, "oci")
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = ["/bin/true"]
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(cfg, f, indent=1)
        ns = ",".join(n["type"] for n in cfg["linux"]["namespaces"])
        peers.append(Peer("runc", "`runc run` (default spec: %s)" % ns,
                          lambda i: ["runc", "run", "--bundle", bundle, "%s-runc-%d" % (tag, i)]))
    else:
        peers.append(missing("runc", "runc is not installed"))
    if shutil.which("crun") and have_runc:
        peers.append(Peer("crun", "`crun run` (same bundle)",
                          lambda i: ["crun", "run", "--bundle", bundle, "%s-crun-%d" % (tag, i)]))
    else:
        peers.append(missing("crun", "crun (or runc spec for its bundle) is not installed"))
    if shutil.which("systemd-nspawn"):
        nroot = copy_root(rootfs, work, "nspawn")
        peers.append(Peer("nspawn", "`systemd-nspawn -q --register=no --keep-unit -D R /bin/true`",
                          lambda i: ["systemd-nspawn", "-q", "--register=no", "--keep-unit", "-D", nroot,
                                     "/bin/true"]))
    else:
        peers.append(missing("nspawn", "systemd-nspawn (systemd-container) is not installed"))
    if shutil.which("podman"):
        proot = copy_root(rootfs, work, "podman")
        peers.append(Peer("podman", "`podman run --rm --rootfs R /bin/true` (%s)" % ", ".join(
            podman_flags(args.podman_net)[1]), lambda i: ["podman", "run", "--rm"] + podman_flags(args.podman_net)[0]
            + ["--rootfs", proot, "/bin/true"], reap=True))
    else:
        peers.append(missing("podman", "podman is not installed"))
    return peers


def podman_flags(net):
    """Flags podman 4.3 needs here, and why."""
    flags, notes = [], []
    if shutil.which("runc"):
        flags += ["--runtime", "runc"]
        notes.append("runc")
    if not systemd_is_pid1():
        flags += ["--cgroup-manager", "cgroupfs"]
        notes.append("cgroupfs")
    if net:
        flags += ["--network", net]
        notes.append("network %s" % net)
    if not cap_in_bounding(24):  # CAP_SYS_RESOURCE
        # podman asks for nofile 1048576 and nproc = our hard limit, but conmon lowers its
        # own nproc to 32768 first: without CAP_SYS_RESOURCE runc cannot raise either.
        nofile = hard_limit("RLIMIT_NOFILE")
        nproc = min(hard_limit("RLIMIT_NPROC"), 32768)
        flags += ["--ulimit", "nofile=%d:%d" % (nofile, nofile), "--ulimit", "nproc=%d:%d" % (nproc, nproc)]
        notes.append("ulimits nofile=%d nproc=%d (no CAP_SYS_RESOURCE)" % (nofile, nproc))
    return flags, notes


def missing(name, why):
    p = Peer(name, name, None)
    p.error = why
    return p


def copy_root(rootfs, work, name):
    dst = os.path.join(work, "rootfs-" + name)
    subprocess.run(["cp", "-a", rootfs, dst], check=True)
    return dst


class Ours:
    name = "ours"
    cleanup = None
    label = "ours: `python -I -S rocket_run_prepared.py DATA UUID --net=none`"

    def __init__(self, store):
        self.store, self.times, self.cpu, self.error = store, [], [], None

    def once(self):
        p = common.new_pod(self.store, SPEC)
        try:
            dt, cpu, rc, err = run_timed([PY, "-I", "-S", CLI, self.store.dd.path, p.pod.uuid, "--net=none"])
        finally:
            p.pod.refresh()
            pod_gc.remove(p.pod)
        if rc != 0:
            return None, "exit %d: %s" % (rc, err)
        self.cpu.append(cpu)
        return dt, None

    probe = Peer.probe


# A helper run with the other checkout's code (its tests.support makes it importable):
# prepare one pod in its own data directory (importing busybox first), or remove them all.
AGAINST_HELPER = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare
data, what = sys.argv[2], sys.argv[3]
if what == "remove":
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
    pods.remove_all(DataDir(data))
    raise SystemExit(0)
fresh = not os.path.isdir(data)
with Store(data) as store:
    if fresh:
        path = pods.busybox_aci(os.path.dirname(data), "example.com/busybox",
                                app={"exec": ["/bin/true"], "user": "0", "group": "0"})
        store.import_file(path)
        os.unlink(path)
    print(prepare.prepare(store, json.loads(sys.argv[4])).pod.uuid)
"""


class Against:
    """Our start with another checkout's code (--against DIR): its pods prepared by it
    (stage1 comes from the preparing code), its rocket_run_prepared.py timed."""
    name = "against"
    cleanup = None

    def __init__(self, checkout, work):
        self.checkout = os.path.abspath(checkout)
        self.data = os.path.join(work, "against-data")
        self.cli = os.path.join(self.checkout, "bench", "rocket_run_prepared.py")
        rev = subprocess.run(["git", "-C", self.checkout, "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=False).stdout.strip()
        self.label = "ours with %s's code%s" % (self.checkout, " (%s)" % rev if rev else "")
        self.times, self.cpu, self.error = [], [], None

    def _helper(self, *args):
        return subprocess.run([PY, "-c", AGAINST_HELPER, self.checkout, self.data] + list(args),
                              capture_output=True, text=True, check=False)

    def once(self):
        r = self._helper("prepare", json.dumps(SPEC))
        if r.returncode != 0:
            return None, "prepare: %s" % r.stderr.strip()[-300:]
        uuid = r.stdout.split()[-1]
        common.MINE.add(uuid)
        dt, cpu, rc, err = run_timed([PY, "-I", "-S", self.cli, self.data, uuid, "--net=none"])
        if rc != 0:
            return None, "exit %d: %s" % (rc, err)
        self.cpu.append(cpu)
        return dt, None

    def remove(self):
        if os.path.isdir(self.data):
            self._helper("remove")

    probe = Peer.probe


# -- profile ------------------------------------------------------------------------------
def median_cmd(argv, n):
    return statistics.median(common.run_capture(argv)[0] for dummy in range(n))


def import_costs(store, work, n):
    """Interpreter start, stage0's imports, stage1's imports without and with .pyc."""
    c = common.COLLECTIONS
    base = median_cmd([PY, "-I", "-S", "-c", "pass"], n)
    s0 = median_cmd([PY, "-I", "-S", "-c", "import sys; sys.path.insert(0, %r)\n"
                     "from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod, run\n"
                     "from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir" % c], n)
    s1_tree = runmod.stage1_rootfs(common.new_pod(store, SPEC).pod)
    cold = os.path.join(work, "s1-cold")
    shutil.copytree(s1_tree, cold, ignore=shutil.ignore_patterns("__pycache__"))
    imp = "import sys; sys.path.insert(0, %r); from stage1 import init"
    s1_cold = median_cmd([PY, "-I", "-S", "-B", "-c", imp % cold], n)
    warm = os.path.join(work, "s1-warm")
    shutil.copytree(cold, warm)
    subprocess.run([PY, "-I", "-m", "compileall", "-q", warm], check=True)
    s1_warm = median_cmd([PY, "-I", "-S", "-c", imp % warm], n)
    t = subprocess.run([PY, "-I", "-S", "-B", "-X", "importtime", "-c", imp % cold], capture_output=True, text=True, check=False)
    top = importtime_top(t.stderr, 8)
    t0 = subprocess.run([PY, "-I", "-S", "-X", "importtime", "-c", "import sys; sys.path.insert(0, %r)\n"
                         "from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod, run" % c],
                        capture_output=True, text=True, check=False)
    return {"interpreter_ms": common.ms(base), "stage0_imports_ms": common.ms(s0 - base),
            "stage1_imports_no_pyc_ms": common.ms(s1_cold - base), "stage1_imports_pyc_ms": common.ms(s1_warm - base),
            "importtime_stage1_top": top, "importtime_stage0_top": importtime_top(t0.stderr, 8)}


def importtime_top(text, k):
    rows = []
    for line in text.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|(\s*)(\S+)", line)
        if m:
            rows.append((int(m.group(1)), int(m.group(2)), m.group(4)))
    rows.sort(reverse=True)
    return [{"module": r[2], "self_us": r[0], "cumulative_us": r[1]} for r in rows[:k]]


EVENTS = [  # (label, predicate on (syscall, args), process it must come from, role it names)
    # The launcher becomes stage1's init: in the same process (default stage1), or by exec.
    ("stage0 python exec", lambda s, a: s == "execve" and "rocket_run_prepared" in a, None, "stage0"),
    ("stage0 forks the launcher", lambda s, a: s in ("clone", "clone3", "fork", "vfork"), "stage0", None),
    ("launcher unshare(NEWNS)", lambda s, a: s == "unshare" and a.startswith("CLONE_NEWNS)"), None, "init"),
    ("launcher: exec stage1 init (other stage1s only)", lambda s, a: s == "execve" and "/init" in a, "init", None),
    ("init: first cgroup mkdir", lambda s, a: s == "mkdir" and "/sys/fs/cgroup" in a, "init", None),
    ("init: unshare(NEWCGROUP)", lambda s, a: s == "unshare" and "CLONE_NEWCGROUP" in a, "init", None),
    ("init: unshare(NS|UTS|IPC|PID|NET)", lambda s, a: s == "unshare" and "CLONE_NEWPID" in a, "init", None),
    ("init forks PID 1", lambda s, a: s in ("clone", "clone3"), "init", None),
    ("PID 1 forks the app supervisor", lambda s, a: s in ("clone", "clone3"), None, "pid1"),
    ("supervisor: first app-root mount", lambda s, a: s == "mount" and "rootfs" in a, None, None),
    ("supervisor: pivot_root", lambda s, a: s == "pivot_root", None, None),
    ("execve /bin/true", lambda s, a: s == "execve" and a.startswith('"/bin/true"'), None, "app"),
    ("/bin/true exits", lambda s, a: s == "exit_group", "app", None),
    ("PID 1 exits", lambda s, a: s == "exit_group", "pid1", None),
    ("stage1 init exits", lambda s, a: s == "exit_group", "init", None),
    ("stage0 python exits", lambda s, a: s == "exit_group", "stage0", None),
]
LINE_RE = re.compile(r"^(\d+)\s+(\d+\.\d+) (?:<\.\.\. )?(\w+)\((.*)")


def strace_timeline(store, work, n):
    """Median offsets (ms from our exec) of the start path's milestones, under strace."""
    if not shutil.which("strace"):
        return None, "strace is not installed"
    runs = []
    for k in range(n):
        p = common.new_pod(store, SPEC)
        out = os.path.join(work, "trace-%d" % k)
        try:
            r = subprocess.run(["strace", "-f", "--seccomp-bpf", "-ttt", "-qq", "-s", "512", "-o", out, "-e",
                                "trace=execve,clone,clone3,fork,vfork,unshare,mount,pivot_root,mkdir,exit_group",
                                PY, "-I", "-S", CLI, store.dd.path, p.pod.uuid, "--net=none"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        finally:
            p.pod.refresh()
            pod_gc.remove(p.pod)
        if r.returncode != 0:
            return None, "strace run failed: %s" % r.stderr.decode()[-300:]
        runs.append(parse_trace(out))
    # The run whose total is the median, whole (medians per milestone need not add up).
    runs.sort(key=lambda r: r.get("stage0 python exits", 1e9))
    return {k: round(v, 1) for k, v in runs[len(runs) // 2].items()}, None


def parse_trace(path):
    lines = []
    with open(path) as f:
        for line in f:
            m = LINE_RE.match(line)
            if m and "resumed>" not in line:
                lines.append((int(m.group(1)), float(m.group(2)), m.group(3), m.group(4)))
    out, t0, i, roles = {}, None, 0, {}
    for pid, t, sc, a in lines:
        for j in range(i, len(EVENTS)):  # an event "(... only)" may not happen: look past it
            label, pred, need, names = EVENTS[j]
            if pred(sc, a) and not (need and roles.get(need) != pid):
                break
            if not label.endswith("only)"):
                j = None
                break
        else:
            j = None
        if j is None:
            continue
        label, pred, need, names = EVENTS[j]
        if names:
            roles[names] = pid
        if t0 is None:
            t0 = t
        out[label] = (t - t0) * 1000
        i = j + 1
    return out


def run(args):
    before = common.host_state()
    residue = common.peer_residue()
    subreaper()
    work = tempfile.mkdtemp(prefix="rocket-bench-start-", dir=args.workdir)
    install = {}
    if not args.no_install and not args.no_peers:
        install = common.have_debian_packages(PACKAGES)
    peers, store = [], None
    result = {"meta": {"python": sys.version.split()[0], "runs": args.runs, "kernel": os.uname().release,
                       "install": install}}
    try:
        rootfs, store = common.busybox_store(work)
        peers = make_peers(work, rootfs, args) + [Ours(store)]
        if args.against:
            peers.append(Against(args.against, work))
        for p in peers:
            if p.error is None:
                p.probe()  # also the warm-up run
                if p.error is None:
                    p.probe()
        live = [p for p in peers if p.error is None]
        for i in range(args.runs):
            order = live[:]
            random.Random(i).shuffle(order)  # no peer always runs right after another
            for p in order:
                if p.error is not None:
                    continue
                dt, why = p.once()
                if why:
                    p.error = "failed on run %d: %s" % (i + 1, why)
                else:
                    p.times.append(dt)
        by = {p.name: p for p in peers}
        ref_runc = by["runc"] if by.get("runc") and by["runc"].times else None
        ref_floor = by["floor"] if by["floor"].times else None

        def ratio(xs, ref):
            return round(statistics.median(xs) / statistics.median(ref), 2) if ref and statistics.median(ref) else None

        rows = []
        for p in peers:
            if not p.times:
                rows.append({"name": p.name, "what": p.label, "error": p.error})
                continue
            med = statistics.median(p.times)
            rows.append({"name": p.name, "what": p.label, "median_ms": common.ms(med), "p90_ms": common.ms(common.p90(p.times)),
                         "vs_runc": ratio(p.times, ref_runc.times if ref_runc else None),
                         "vs_floor": ratio(p.times, ref_floor.times if ref_floor else None),
                         "cpu_median_ms": common.ms(statistics.median(p.cpu)) if p.cpu else None,
                         "cpu_vs_runc": ratio(p.cpu, ref_runc.cpu if ref_runc else None) if p.cpu else None,
                         "cpu_vs_floor": ratio(p.cpu, ref_floor.cpu if ref_floor else None) if p.cpu else None,
                         "runs": len(p.times), "error": p.error})
        result["rows"] = rows
        result["meta"]["load_before"] = os.getloadavg()
        print("## start: prepared one-app pod, /bin/true, new netns (cold whole command)\n")
        print(common.table(["command", "wall ms (median)", "p90 ms", "× runc", "× floor",
                            "CPU ms (median)", "CPU × runc", "CPU × floor", "runs"],
                           [[r["what"], r.get("median_ms", "—"), r.get("p90_ms", "—"), r.get("vs_runc", "—"),
                             r.get("vs_floor", "—"), r.get("cpu_median_ms", "—"), r.get("cpu_vs_runc", "—"),
                             r.get("cpu_vs_floor", "—"), r.get("runs", 0)] for r in rows]))
        print("\nCPU = user + system of the whole process tree (reaped children); load average %.2f %.2f %.2f"
              % os.getloadavg())
        for r in rows:
            if r.get("error"):
                print("- %s: %s" % (r["name"], r["error"]))
        ours = next(r for r in rows if r["name"] == "ours")
        if ours.get("vs_runc"):
            print("\nGoal ours <= 1.2x runc: %s (%.2fx wall, %sx CPU)" % (
                "met" if ours["vs_runc"] <= 1.2 else "NOT met", ours["vs_runc"], ours.get("cpu_vs_runc")))
        if not args.no_profile:
            prof = import_costs(store, work, max(10, args.runs))
            timeline, why = strace_timeline(store, work, 5)
            prof["timeline_ms"] = timeline
            prof["timeline_error"] = why
            result["profile"] = prof
            print_profile(prof, ours)
    finally:
        for p in peers:
            if p.cleanup:
                p.cleanup()
            if isinstance(p, Against):
                p.remove()
        residue_left = common.clean_up(store, before, residue, work, settle=0.1)
    left = common.leaks(before, common.host_state(), uuids=common.MINE,
                        prefixes=[work] + list(common.PODMAN_MOUNTS))
    if residue_left:
        left["peer_residue"] = residue_left
    result["meta"]["left_behind"] = left
    common.write_results("start", result.get("rows", []), dict(result["meta"], profile=result.get("profile")))
    if left:
        print("\nLEFT BEHIND (not ours alone if other work runs on this host): %s" % left)


def print_profile(prof, ours):
    print("\n## where our start's milliseconds go\n")
    rows = [["`python -I -S -c pass` (interpreter start)", prof["interpreter_ms"]],
            ["stage0 imports (pod, run, datadir)", prof["stage0_imports_ms"]],
            ["stage1 init imports, no .pyc (compiled on each start)", prof["stage1_imports_no_pyc_ms"]],
            ["stage1 init imports, with .pyc", prof["stage1_imports_pyc_ms"]]]
    print(common.table(["component (whole-command medians, interpreter start subtracted)", "ms"], rows))
    tl = prof.get("timeline_ms")
    if tl:
        print("\nSyscall timeline of one start under `strace -f --seccomp-bpf` (the median of 5 runs; strace "
              "inflates each traced event, so read the gaps, not the total):\n")
        prev, trs = 0.0, []
        for label, dummy1, dummy2, dummy3 in EVENTS:
            if label in tl:
                trs.append([label, tl[label], round(tl[label] - prev, 1)])
                prev = tl[label]
        print(common.table(["milestone", "ms since exec", "ms since previous"], trs))
    elif prof.get("timeline_error"):
        print("\ntimeline: %s" % prof["timeline_error"])
    for key, title in (("importtime_stage0_top", "stage0"), ("importtime_stage1_top", "stage1 init, no .pyc")):
        print("\n`-X importtime`, %s, biggest self times:\n" % title)
        print(common.table(["module", "self µs", "cumulative µs"],
                           [[r["module"], r["self_us"], r["cumulative_us"]] for r in prof[key]]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    ap.add_argument("--no-profile", action="store_true")
    ap.add_argument("--no-peers", action="store_true", help="only the floor and ours (quick runs)")
    ap.add_argument("--podman-net", default="none", help="podman --network value ('' for podman's default bridge)")
    ap.add_argument("--against", default=None, metavar="DIR",
                    help="also time our start with the code of this checkout (e.g. a copy of main), interleaved")
    run(ap.parse_args())
