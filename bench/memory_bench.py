"""bench/memory: every process that exists because a pod does, PSS and USS, at 1 and at 50
idle pods (one app `/bin/sleep 3600`, start_detached, net none).

A pod's processes are its keeper (run._keepers) and the keeper's descendants: stage1's
outer init (none with the default stage1: it leaves once PID 1 runs, and the keeper, a
subreaper, becomes PID 1's parent), the pod's PID 1, one supervisor per app, and the app. PSS and USS come from
/proc/<pid>/smaps_rollup (USS = Private_Clean + Private_Dirty + Private_Hugetlb).
For comparison, when podman works here: `podman run -d` of 1 and 10 containers running
/bin/sleep 3600 on the same root filesystem, PSS/USS of conmon and the container's processes.
Usage: python bench/memory_bench.py [--pods 1,50] [--podman 1,10] [--no-podman] [--restart-policy no,always]
Goal (issue 19): <= 4 MiB PSS per pod at 100 (runtime processes; the app is shown apart).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)
from tests.support.pods import reap, subreaper
import start_bench  # podman flags for this host

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run as runmod

SPEC = {"apps": [{"image": "example.com/busybox", "exec": ["/bin/sleep", "3600"]}]}
ROLES = ("keeper", "stage1 init (outer)", "pod PID 1", "app supervisor", "app (sleep)")
MIB = 1024.0


def classify(keeper, tree, pid1=None, apps=()):
    """{pid: role} for the keeper and its descendants. pid1 and apps (host PIDs, from the
    pod's `pid` and `apps/<app>/pid`) name those roles wherever they sit in the tree (the
    default stage1's outer process exits once PID 1 runs: PID 1 is the keeper's child);
    without them, roles go by depth."""
    kids = {}
    for pid, (ppid, dummy_comm) in tree.items():
        kids.setdefault(ppid, []).append(pid)
    out = {keeper: "keeper"}
    depth_roles = ["stage1 init (outer)", "pod PID 1", "app supervisor", "app (sleep)"]
    level, frontier = 0, [keeper]
    while frontier:
        nxt = []
        for p in frontier:
            for c in kids.get(p, []):
                out[c] = depth_roles[level] if level < len(depth_roles) else "other"
                nxt.append(c)
        frontier, level = nxt, level + 1
    if pid1 in out:
        for pid in out:
            if pid == pid1:
                out[pid] = "pod PID 1"
            elif pid in apps:
                out[pid] = "app (sleep)"
            elif pid != keeper:
                ppid = tree[pid][0]
                out[pid] = "stage1 init (outer)" if ppid == keeper else (
                    "app supervisor" if ppid == pid1 else "other")
    return out


def _pod_pids(pod):
    """(PID 1, {app host PIDs}) as stage1 wrote them."""
    apps = set()
    for name in os.listdir(pod.file("apps")):
        try:
            with open(pod.file("apps", name, "pid")) as f:
                apps.add(int(f.read()))
        except (OSError, ValueError):
            pass
    return pod.pid(), apps


def private_by_mapping(pid):
    """{mapping: [USS kB, PSS kB]} of one process from /proc/<pid>/smaps: what is private
    where (the heap, anonymous arenas, libpython's data and relocations, each library)."""
    out, name = {}, None
    try:
        with open("/proc/%d/smaps" % pid) as f:
            for line in f:
                parts = line.split()
                if not parts[0].endswith(":"):  # a mapping's header: range perms offset dev inode [path]
                    path = parts[5] if len(parts) > 5 else "[anon]"
                    name = os.path.basename(path) if path.startswith("/") else path
                    name = name.split(".so")[0] + ".so" if ".so" in name else name
                    out.setdefault(name, [0, 0])
                elif parts[0] in ("Private_Clean:", "Private_Dirty:"):
                    out[name][0] += int(parts[1])
                elif parts[0] == "Pss:":
                    out[name][1] += int(parts[1])
    except (OSError, ValueError):
        return {}
    return out


def pod_roles(tree, keeper, pid1, apps):
    """{pid: role} of a pod's processes: the keeper's tree, or PID 1's when keeper is None
    (a pod without one: restart policy no and no healthcheck)."""
    if keeper:
        return classify(keeper, tree, pid1, apps)
    roles = {pid1: "pod PID 1"}
    for pid, role in classify(pid1, tree).items():  # PID 1's descendants by depth
        if pid != pid1:
            roles[pid] = "app (sleep)" if pid in apps else {"stage1 init (outer)": "app supervisor"}.get(role, role)
    return roles


def measure_pods(pods, detail=None):
    """{role: [smaps_rollup of each process]}; detail (a dict): {role: private_by_mapping}
    of the first pod's processes."""
    tree = common.process_tree()
    per_role = {r: [] for r in ROLES + ("other",)}
    for i, pod in enumerate(pods):
        keeper = runmod._keepers.get(pod.uuid)
        pid1, apps = _pod_pids(pod)
        if pid1 not in tree:
            raise RuntimeError("pod %s: its PID 1 %s is not running" % (pod.uuid, pid1))
        if tree[pid1][0] != keeper:  # the keeper handed the pod to PID 1 and left (restart policy no)
            keeper = None
        for pid, role in pod_roles(tree, keeper, pid1, apps).items():
            m = common.smaps_rollup(pid)
            if m:
                per_role[role].append(m)
                if detail is not None and i == 0 and role not in detail:
                    detail[role] = private_by_mapping(pid)
    return per_role


def podman_per_role(ids):
    """PSS/USS of each process podman keeps per container, by role (conmon, the container)."""
    tree = common.process_tree()
    per_role = {"conmon": [], "container (sleep)": [], "other": []}
    for cid in ids:
        r = subprocess.run(["podman", "inspect", "--format", "{{.State.ConmonPid}} {{.State.Pid}}", cid],
                           capture_output=True, text=True, check=True)
        conmon, cpid = (int(x) for x in r.stdout.split())
        for pid in common.descendants(conmon, tree):
            role = "conmon" if pid == conmon else ("container (sleep)" if pid == cpid else "other")
            m = common.smaps_rollup(pid)
            if m:
                per_role[role].append(m)
    return per_role


def summarize(per_role, n, app_roles):
    rows, tot = [], {"runtime": {"Pss": 0, "Uss": 0, "Rss": 0}, "app": {"Pss": 0, "Uss": 0, "Rss": 0}}
    for role, ms in per_role.items():
        if not ms:
            continue
        s = {k: sum(m[k] for m in ms) for k in ("Rss", "Pss", "Uss")}
        kind = "app" if role in app_roles else "runtime"
        for k in s:
            tot[kind][k] += s[k]
        rows.append({"role": role, "processes": len(ms), "pss_per_pod_mib": round(s["Pss"] / n / MIB, 2),
                     "uss_per_pod_mib": round(s["Uss"] / n / MIB, 2), "rss_per_process_mib": round(s["Rss"] / len(ms) / MIB, 2)})
    return rows, {k: {m: round(v / n / MIB, 2) for m, v in d.items()} for k, d in tot.items()}


def ours(store, counts, policy="no"):
    results = []
    for n in counts:
        pods = []
        t0 = time.perf_counter()
        try:
            for dummy in range(n):
                p = common.new_pod(store, SPEC)
                runmod.start_detached(p.pod, net="none", restart_policy=policy)
                pods.append(p.pod)
            started = time.perf_counter() - t0
            time.sleep(1.0)
            detail = {}
            rows, tot = summarize(measure_pods(pods, detail), n, ("app (sleep)",))
            results.append({"pods": n, "rows": rows, "per_pod": tot, "start_all_s": round(started, 2),
                            "restart_policy": policy, "private": detail})
        finally:
            for p in pods:  # SIGTERM to every pod first, then wait and remove each
                pid = p.pid()
                if pid:
                    try:
                        os.kill(pid, 15)
                    except OSError:
                        pass
            for p in pods:
                try:
                    pod_gc.remove(p, stop_timeout=10)
                except Exception as e:  # noqa: BLE001
                    print("cleanup: pod %s: %s" % (p.uuid, e))
    return results


def podman(rootfs, counts, net):
    if not shutil.which("podman"):
        return None, "podman is not installed"
    flags, notes = start_bench.podman_flags(net)
    results = []
    for n in counts:
        ids = []
        try:
            for dummy in range(n):
                r = subprocess.run(["podman", "run", "-d"] + flags + ["--rootfs", rootfs, "/bin/sleep", "3600"],
                                   capture_output=True, text=True, check=False)
                if r.returncode != 0:
                    return results, "podman run -d failed: %s" % r.stderr.strip()[-300:]
                ids.append(r.stdout.strip())
            time.sleep(1.0)
            rows, tot = summarize(podman_per_role(ids), n, ("container (sleep)",))
            results.append({"pods": n, "rows": rows, "per_pod": tot, "flags": notes})
        finally:
            if ids:
                subprocess.run(["podman", "rm", "-f", "-t", "0"] + ids, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=False)
            reap(settle=0.3)
    return results, None


def run(args):
    before = common.host_state()
    residue = common.peer_residue()
    subreaper()
    work = tempfile.mkdtemp(prefix="rocket-bench-mem-", dir=args.workdir)
    store = None
    out = {"ours": [], "podman": None, "podman_error": None}
    try:
        rootfs, store = common.busybox_store(work)
        for policy in args.restart_policy.split(","):
            out["ours"] += ours(store, [int(x) for x in args.pods.split(",")], policy)
        if not args.no_podman:
            proot = start_bench.copy_root(rootfs, work, "podman")
            out["podman"], out["podman_error"] = podman(proot, [int(x) for x in args.podman.split(",")],
                                                        args.podman_net)
    finally:
        residue_left = common.clean_up(store, before, residue, work, settle=0.2)
    print("## memory: idle pods (`/bin/sleep 3600`, net none), PSS/USS from smaps_rollup\n")
    rows = []
    for r in out["ours"]:
        for x in r["rows"]:
            rows.append(["ours (restart %s)" % r["restart_policy"], r["pods"], x["role"], x["processes"],
                         x["rss_per_process_mib"], x["pss_per_pod_mib"], x["uss_per_pod_mib"]])
    for r in out["podman"] or []:
        for x in r["rows"]:
            rows.append(["podman", r["pods"], x["role"], x["processes"], x["rss_per_process_mib"],
                         x["pss_per_pod_mib"], x["uss_per_pod_mib"]])
    print(common.table(["runtime", "pods", "process", "processes", "RSS MiB / process", "PSS MiB / pod",
                        "USS MiB / pod"], rows))
    print("\nPer pod (container) totals, MiB:\n")
    trows = []
    for who, lst in (("ours", out["ours"]), ("podman", out["podman"] or [])):
        for r in lst:
            name = who if who != "ours" else "ours (restart %s)" % r["restart_policy"]
            trows.append([name, r["pods"], r["per_pod"]["runtime"]["Pss"], r["per_pod"]["runtime"]["Uss"],
                          r["per_pod"]["app"]["Pss"], round(r["per_pod"]["runtime"]["Pss"] + r["per_pod"]["app"]["Pss"], 2)])
    print(common.table(["runtime", "pods", "runtime PSS / pod", "runtime USS / pod", "app PSS / pod",
                        "all PSS / pod"], trows))
    print("\nWhat is private in each process of the first pod (USS / PSS kB by mapping, largest first):\n")
    drows = []
    for r in out["ours"]:
        for role, maps in r["private"].items():
            top = sorted(maps.items(), key=lambda kv: -kv[1][0])[:6]
            drows.append(["restart %s, %d pods" % (r["restart_policy"], r["pods"]), role,
                          ", ".join("%s %d/%d" % (k, v[0], v[1]) for k, v in top if v[0] or v[1])])
    print(common.table(["run", "process", "USS/PSS kB by mapping"], drows))
    if out["podman_error"]:
        print("\n- podman: %s" % out["podman_error"])
    elif out["podman"]:
        print("\npodman flags: %s" % ", ".join(out["podman"][0]["flags"]))
    at = [r for r in out["ours"] if r["pods"] == max(int(x) for x in args.pods.split(","))
          and r["restart_policy"] == args.restart_policy.split(",")[0]]
    if at:
        v = at[0]["per_pod"]["runtime"]["Pss"]
        print("\nGoal <= 4 MiB PSS per pod at %d pods, restart %s (runtime processes): %s (%.2f MiB; %.2f MiB with the app)" % (
            at[0]["pods"], at[0]["restart_policy"], "met" if v <= 4 else "NOT met", v, v + at[0]["per_pod"]["app"]["Pss"]))
    left = common.leaks(before, common.host_state(), uuids=common.MINE,
                        prefixes=[work] + list(common.PODMAN_MOUNTS))
    if residue_left:
        left["peer_residue"] = residue_left
    common.write_results("memory", out["ours"] + (out["podman"] or []),
                         {"python": sys.version.split()[0], "podman_error": out["podman_error"], "left_behind": left})
    if left:
        print("\nLEFT BEHIND (not ours alone if other work runs on this host): %s" % left)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", default="1,50")
    ap.add_argument("--podman", default="1,10")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--restart-policy", default="no,always", help="each measured in turn (comma-separated)")
    ap.add_argument("--podman-net", default="none")
    ap.add_argument("--workdir", default=None)
    run(ap.parse_args())
