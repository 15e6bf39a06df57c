"""What only the benchmarks need: timing whole commands, page cache, tables, host state,
peers' residue. Root filesystems, images, pods and reaping come from tests.support, which
the tests use too.

Every bench script imports this module before anything else of the project. Run as
``python bench/x.py`` (how the Makefile, run_all.py and the docs run them), a script finds
its neighbours but not the checkout: this puts the checkout root on sys.path, the one place
in bench/ that does, and tests.support then makes the collection importable as
``ansible_collections.appc.rocket``. bench/rocket_run_prepared.py alone does without: it is
the timed cold start, run with ``python -I -S``, and imports only what a user's start would.
"""
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time

_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _CHECKOUT not in sys.path:
    sys.path.insert(0, _CHECKOUT)
from tests import support  # noqa: E402
from tests.support import pods  # noqa: E402

ROOT = support.ROOT
COLLECTIONS = support.COLLECTIONS
# run_all (and its smoke test) point every bench at another results directory with this.
RESULTS = os.environ.get("ROCKET_BENCH_RESULTS") or os.path.join(ROOT, "bench", "results")


@contextlib.contextmanager
def host_library(no_library=False):
    """As root (and unless ``no_library``), this collection's library laid out as the runtime role
    installs it (tests/support/thin_library.py), so our modules run from it as on a host the role
    set up; yields the playbook arguments that point at it ([] without one) and removes it after."""
    if no_library or os.geteuid():
        yield []
        return
    from tests.support import thin_library

    with thin_library.installed() as (lib, dummy, dummy2):
        yield ["-e", "rocket_runtime_library_dir=" + lib]


def drop_caches():
    """Drop the page cache when the machine lets us; say whether it did."""
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False


def timed(cmd, setup=None, env=None):
    if setup:
        setup()
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def median(xs):
    return statistics.median(xs)


def write_results(name, rows, meta):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, name + ".json"), "w") as f:
        json.dump({"meta": meta, "rows": rows}, f, indent=2)


def table(headers, rows):
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


# -- helpers for the pod benchmarks (start, memory, prepare) --------------------------------
def p90(xs):
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.9 * (len(s) - 1))))]


def ms(x):
    return round(x * 1000, 1)


def run_capture(cmd, env=None, timeout=120):
    """(seconds, returncode, stderr tail) of a whole command, stdout discarded."""
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout, check=False)
    dt = time.perf_counter() - t0
    return dt, p.returncode, p.stderr.decode("utf-8", "replace").strip()[-600:]


def have_debian_packages(pkgs, install=True):
    """Install missing Debian packages (root only; apt's sandbox user cannot resolve names
    here, so apt runs as root); returns {package: None or why it is missing}."""
    missing = []
    for p in pkgs:
        r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True, check=False)
        if "ok installed" not in r.stdout:
            missing.append(p)
    why = {p: None for p in pkgs}
    if not missing:
        return why
    if not install or os.geteuid() != 0:
        return dict(why, **{p: "not installed" for p in missing})
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for attempt in range(3):
        subprocess.run(["apt-get", "-o", "APT::Sandbox::User=root", "update", "-qq"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        r = subprocess.run(["apt-get", "-o", "APT::Sandbox::User=root", "install", "-y", "-qq",
                            "--no-install-recommends"] + missing, env=env, capture_output=True, text=True, check=False)
        if r.returncode == 0:
            return why
        time.sleep(3 * (attempt + 1))
    return dict(why, **{p: "apt-get install failed: " + r.stderr.strip()[-300:] for p in missing})


def busybox_store(work, name="example.com/busybox", exec_=("/bin/true",)):
    """The tests' busybox image (tests.support.pods) imported into a fresh store at
    work/data, rendered once; returns (its rootfs, Store)."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    path = pods.busybox_aci(work, name, app={"exec": list(exec_), "user": "0", "group": "0"})
    store = Store(os.path.join(work, "data"))
    store.import_file(path)
    store.render(name)
    os.unlink(path)
    return os.path.join(work, "busybox-rootfs"), store


def smaps_rollup(pid):
    """{'Rss': kB, 'Pss': kB, 'Uss': kB} of a process, or None when it is gone."""
    out = {}
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 3 and parts[0].endswith(":"):
                    out[parts[0][:-1]] = int(parts[1])
    except (OSError, ValueError):
        return None
    return {"Rss": out.get("Rss", 0), "Pss": out.get("Pss", 0),
            "Uss": out.get("Private_Clean", 0) + out.get("Private_Dirty", 0) + out.get("Private_Hugetlb", 0)}


def process_tree():
    """{pid: (ppid, comm)} of every process now."""
    out = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                s = f.read()
        except OSError:
            continue
        comm = s[s.index("(") + 1:s.rindex(")")]
        ppid = int(s[s.rindex(")") + 2:].split()[1])
        out[int(d)] = (ppid, comm)
    return out


def descendants(root, tree):
    kids = {}
    for pid, (ppid, dummy_comm) in tree.items():
        kids.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def host_state():
    """What a benchmark must leave as it found it: mounts, netns, links, rocket cgroups."""
    with open("/proc/self/mountinfo") as f:
        mounts = sorted(l.split()[4] for l in f)
    cgroups = []
    for ctrl in sorted(os.listdir("/sys/fs/cgroup")):
        top = os.path.join("/sys/fs/cgroup", ctrl, "rocket")
        if os.path.isdir(top):
            cgroups += [os.path.join(top, d) for d in sorted(os.listdir(top))
                        if os.path.isdir(os.path.join(top, d))]
    links = sorted(os.listdir("/sys/class/net"))
    try:
        netns = sorted(os.listdir("/run/netns"))
    except OSError:
        netns = []
    return {"mounts": mounts, "rocket_cgroups": cgroups, "links": links, "netns": netns}


PODMAN_MOUNTS = ("/var/lib/containers/storage/overlay", "/run/netns")


def undo_podman_mounts(before):
    """podman leaves its storage bind mount (and /run/netns) mounted: undo what we caused."""
    now = host_state()["mounts"]
    for m in PODMAN_MOUNTS:
        if now.count(m) > before["mounts"].count(m):
            subprocess.run(["umount", m], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)


def leaks(before, after, uuids=None, prefixes=None):
    """What appeared since ``before`` and is ours: rocket cgroups of our pods (``uuids``),
    mounts under ``prefixes`` (other work may run on this host at the same time)."""
    out = {}
    for k in before:
        if k == "mounts":
            extra = sorted(m for m in set(after[k]) if after[k].count(m) > before[k].count(m))
            if prefixes is not None:
                extra = [m for m in extra if m.startswith(tuple(prefixes))]
        else:
            extra = sorted(set(after[k]) - set(before[k]))
        if k == "rocket_cgroups" and uuids is not None:
            extra = [c for c in extra if os.path.basename(c) in uuids]
        if extra:
            out[k] = extra
    return out


def peer_residue():
    """Host state peers leave behind: nspawn's payload/supervisor cgroups and propagate
    directory, podman's libpod_parent cgroups (cgroupfs manager)."""
    import glob

    paths = []
    for name in ("payload", "supervisor", "libpod_parent"):
        for top in glob.glob("/sys/fs/cgroup/*/" + name):
            paths += [dp for dp, dummy_dirs, dummy_files in os.walk(top)]
    paths += glob.glob("/run/systemd/nspawn/propagate/*")
    return set(paths)


def clean_peer_residue(before):
    """Remove what peers created since ``before`` (empty cgroups, leaves first)."""
    import shutil

    left = []
    for p in sorted(peer_residue() - before, key=len, reverse=True):
        try:
            if p.startswith("/sys/fs/cgroup/"):
                os.rmdir(p)
            else:
                shutil.rmtree(p)
        except OSError as e:
            left.append("%s (%s)" % (p, e.strerror))
    return left


MINE = set()  # uuids of the pods a benchmark created


def new_pod(store, spec):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare

    p = prepare.prepare(store, spec)
    MINE.add(p.pod.uuid)
    return p


def clean_up(store, before, residue, work, settle=0.1):
    """Remove every pod of a bench's store, reap, undo peers' mounts and residue; returns
    what peer residue could not be removed."""
    import shutil

    if store is not None:
        pods.remove_all(store.dd)
        store.close()
    pods.reap(settle=settle)
    undo_podman_mounts(before)
    left = clean_peer_residue(residue)
    shutil.rmtree(work, ignore_errors=True)
    return left
