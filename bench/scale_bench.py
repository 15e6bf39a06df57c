"""bench/scale: many pods on one host, against podman in the same run.

1. Start N detached pods (one app `/bin/sleep 3600`, net none), one whole command per pod
   (`python -I -S bench/rocket_run_prepared.py DATA UUID --detach`, which returns once every
   app runs, as `podman run -d` returns once the container runs): the time until all N run.
   Preparing them (in-process, through the library) is timed apart: podman's figure
   includes its create.
2. Against N `podman run -d` of the same root filesystem (the flags start_bench found
   working on this host: runc, cgroupfs when systemd is not PID 1, explicit ulimits when
   the bounding set lacks CAP_SYS_RESOURCE, network none).
3. Idle memory per pod with all N running: PSS/USS of the keeper and its descendants
   (memory_bench's roles), against conmon and the container's processes.
4. M more pods prepared on disk through the library, then listing all N + M: the library
   (list_pods; list_pods + describe), and a pod_info module call as a user makes it
   (`ansible localhost -m appc.rocket.pod_info`, with ansible.builtin.ping's ad-hoc run as
   the baseline it includes).
5. Stop the N running pods (run.stop, one after another) and gc all N + M
   (pod_gc.gc with no grace and no prepared expiry): the time of each; and podman's
   `rm -f -t 0` of its N containers.
Usage: python bench/scale_bench.py [--pods 100] [--on-disk 1000] [--no-podman] [--module-runs 3]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)
from tests.support.pods import reap, subreaper
import memory_bench  # roles and per-pod sums
import start_bench  # podman flags for this host

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge, pod_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run as runmod

CLI = os.path.join(common.ROOT, "bench", "rocket_run_prepared.py")
PY = sys.executable
SPEC = {"apps": [{"image": "example.com/busybox", "exec": ["/bin/sleep", "3600"]}]}
ON_DISK_SPEC = {"apps": [{"image": "example.com/busybox", "exec": ["/bin/true"]}]}


def ansible_env():
    e = dict(os.environ)
    e.update(ANSIBLE_COLLECTIONS_PATH=common.COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=PY,
             ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return e


def adhoc(module, args, runs):
    """Median seconds of `ansible localhost -m MODULE -a ARGS` (whole command), its output."""
    cmd = [os.path.join(os.path.dirname(PY), "ansible"), "localhost", "-c", "local", "-o", "-m", module]
    if args:
        cmd += ["-a", args]
    times, out = [], ""
    for dummy in range(runs):
        t = time.perf_counter()
        p = subprocess.run(cmd, env=ansible_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
        times.append(time.perf_counter() - t)
        out = p.stdout.decode("utf-8", "replace")
        if p.returncode != 0:
            raise RuntimeError("%s failed: %s" % (" ".join(cmd), out[-600:]))
    return statistics.median(times), out


def start_ours(store, n):
    """Prepare n pods (library), then start each with one command; (pods, prepare s, start s)."""
    pods = []
    t0 = time.perf_counter()
    for dummy in range(n):
        pods.append(common.new_pod(store, SPEC).pod)
    prepared = time.perf_counter() - t0
    t0 = time.perf_counter()
    for p in pods:
        r = subprocess.run([PY, "-I", "-S", CLI, store.dd.path, p.uuid, "--net=none", "--detach"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
        if r.returncode != 0:
            raise RuntimeError("starting pod %s failed: %s" % (p.uuid, r.stderr.decode()[-600:]))
    started = time.perf_counter() - t0
    for p in pods:
        p.refresh()
        if p.state() != "running":
            raise RuntimeError("pod %s is %s after its start returned" % (p.uuid, p.state()))
    return pods, prepared, started


def memory_ours(pods):
    """memory_bench's per-role sums; the keeper is PID 1's parent (a subreaper)."""
    tree = common.process_tree()
    per_role = {r: [] for r in memory_bench.ROLES + ("other",)}
    for pod in pods:
        pid1, apps = memory_bench._pod_pids(pod)
        if not pid1 or pid1 not in tree:
            continue
        keeper = tree[pid1][0]
        if keeper in (1, os.getpid()):  # no keeper (restart policy no): PID 1 came to us, a subreaper
            keeper = None
        for pid, role in memory_bench.pod_roles(tree, keeper, pid1, apps).items():
            m = common.smaps_rollup(pid)
            if m:
                per_role[role].append(m)
    return memory_bench.summarize(per_role, len(pods), ("app (sleep)",))


def start_podman(rootfs, n, net, ids):
    """n `podman run -d`, their IDs appended to ``ids`` as they come (for the clean-up)."""
    flags, notes = start_bench.podman_flags(net)
    t0 = time.perf_counter()
    for dummy in range(n):
        r = subprocess.run(["podman", "run", "-d"] + flags + ["--rootfs", rootfs, "/bin/sleep", "3600"],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError("podman run -d failed: %s" % r.stderr.strip()[-300:])
        ids.append(r.stdout.strip())
    return time.perf_counter() - t0, notes


def memory_podman(ids):
    return memory_bench.summarize(memory_bench.podman_per_role(ids), len(ids), ("container (sleep)",))


def remove_podman(ids):
    """`podman rm -f -t 0` of every ID (stop and remove); the seconds it took."""
    if not ids:
        return 0.0
    t0 = time.perf_counter()
    subprocess.run(["podman", "rm", "-f", "-t", "0"] + ids, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   check=False)
    dt = time.perf_counter() - t0
    del ids[:]
    reap(settle=0.3)
    return dt


def listing(store, runs):
    """Library listing of every pod: (list_pods s, list_pods + describe s, count)."""
    t_list, t_desc, count = [], [], 0
    for dummy in range(runs):
        t0 = time.perf_counter()
        listed = podmod.list_pods(store.dd)
        t_list.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        names = podmod.pod_names(store.dd)
        docs = [converge.describe(p, names.get(p.uuid)) for p in podmod.list_pods(store.dd)]
        t_desc.append(time.perf_counter() - t0)
        count = min(len(listed), len([d for d in docs if d]))
    return statistics.median(t_list), statistics.median(t_desc), count


def run(args):
    before = common.host_state()
    residue = common.peer_residue()
    subreaper()
    work = tempfile.mkdtemp(prefix="rocket-bench-scale-", dir=args.workdir)
    store, ids = None, []
    res = {"pods": args.pods, "on_disk": args.on_disk}
    meta = {"python": sys.version.split()[0], "pods": args.pods, "on_disk": args.on_disk,
            "loadavg_before": os.getloadavg()}
    try:
        rootfs, store = common.busybox_store(work, exec_=("/bin/sleep", "3600"))
        common.new_pod(store, SPEC)  # warm-up: builds and imports the default stage1 once
        for p in podmod.list_pods(store.dd):
            pod_gc.remove(p)
        pods, res["ours_prepare_all_s"], res["ours_start_all_s"] = start_ours(store, args.pods)
        time.sleep(1.0)  # idle
        rows, tot = memory_ours(pods)
        res["ours_memory"] = {"rows": rows, "per_pod": tot}
        if args.no_podman:
            res["podman_error"] = "skipped (--no-podman)"
        elif not shutil.which("podman"):
            res["podman_error"] = "podman is not installed"
        else:
            proot = start_bench.copy_root(rootfs, work, "podman")
            try:
                res["podman_start_all_s"], meta["podman_flags"] = start_podman(proot, args.pods, args.podman_net, ids)
                time.sleep(1.0)
                rows, tot = memory_podman(ids)
                res["podman_memory"] = {"rows": rows, "per_pod": tot}
            except (RuntimeError, subprocess.CalledProcessError, ValueError) as e:
                res["podman_error"] = str(e)
            res["podman_rm_all_s"] = remove_podman(ids)
        t0 = time.perf_counter()
        for dummy in range(args.on_disk):
            common.new_pod(store, ON_DISK_SPEC)
        res["on_disk_prepare_all_s"] = time.perf_counter() - t0
        total = args.pods + args.on_disk
        t_list, t_desc, count = listing(store, 3)
        res["list_pods_ms"], res["list_describe_ms"] = common.ms(t_list), common.ms(t_desc)
        if count != total:
            raise RuntimeError("the library listed %d pods, not %d" % (count, total))
        res["pod_info_module_s"], out = adhoc("appc.rocket.pod_info", "data_dir=%s log_lines=0" % store.dd.path,
                                              args.module_runs)
        listed = json.loads(out.split("=>", 1)[1])["pods"]
        if len(listed) != total:
            raise RuntimeError("pod_info returned %d pods, not %d" % (len(listed), total))
        res["ping_module_s"], dummy_out = adhoc("ansible.builtin.ping", "", args.module_runs)
        t0 = time.perf_counter()
        for p in pods:
            runmod.stop(p, timeout=10)
        res["ours_stop_all_s"] = time.perf_counter() - t0
        reap()
        t0 = time.perf_counter()
        report = pod_gc.gc(store.dd, grace=0, prepared_expiry=0)
        res["ours_gc_all_s"] = time.perf_counter() - t0
        if report["errors"] or len(report["removed"]) != total:
            raise RuntimeError("gc removed %d of %d pods; errors: %s"
                               % (len(report["removed"]), total, report["errors"][:3]))
        res["ok"] = True
    except (RuntimeError, OSError, ValueError) as e:
        res["ok"], res["error"] = False, str(e)
    finally:
        remove_podman(ids)
        residue_left = common.clean_up(store, before, residue, work, settle=0.2)
    left = common.leaks(before, common.host_state(), uuids=common.MINE,
                        prefixes=[work] + list(common.PODMAN_MOUNTS))
    if residue_left:
        left["peer_residue"] = residue_left
    meta["left_behind"] = left
    meta["loadavg_after"] = os.getloadavg()
    for k in list(res):
        if k.endswith("_s"):
            res[k] = round(res[k], 3)
    report_table(res)
    common.write_results("scale", [res], meta)
    if left:
        print("\nLEFT BEHIND (not ours alone if other work runs on this host): %s" % left)
    if not res.get("ok"):
        print("\nFAILED: %s" % res.get("error"))
        sys.exit(1)


def _ratio(a, b):
    return round(a / b, 2) if a is not None and b else "—"


def report_table(r):
    n, m = r["pods"], r["on_disk"]
    get = r.get
    print("## scale: %d detached pods, %d more on disk\n" % (n, m))
    pm = (get("podman_memory") or {}).get("per_pod") or {}
    om = (get("ours_memory") or {}).get("per_pod") or {}
    rows = [
        ["start %d detached, one command each (s)" % n, get("ours_start_all_s", "—"), get("podman_start_all_s", "—"),
         _ratio(get("ours_start_all_s"), get("podman_start_all_s"))],
        ["  + prepare them first, library (s)", get("ours_prepare_all_s", "—"), "(in podman run)", ""],
        ["idle runtime PSS per pod at %d (MiB)" % n, (om.get("runtime") or {}).get("Pss", "—"),
         (pm.get("runtime") or {}).get("Pss", "—"),
         _ratio((om.get("runtime") or {}).get("Pss"), (pm.get("runtime") or {}).get("Pss"))],
        ["stop all %d, one after another (s)" % n, get("ours_stop_all_s", "—"), "", ""],
        ["gc all %d pods (s)" % (n + m), get("ours_gc_all_s", "—"), "", ""],
        ["`podman rm -f -t 0` of all %d (s)" % n, "", get("podman_rm_all_s", "—"), ""],
        ["prepare %d pods on disk, library (s)" % m, get("on_disk_prepare_all_s", "—"), "", ""],
        ["list %d pods: list_pods (ms)" % (n + m), get("list_pods_ms", "—"), "", ""],
        ["list %d pods: list_pods + describe (ms)" % (n + m), get("list_describe_ms", "—"), "", ""],
        ["`ansible -m appc.rocket.pod_info` over %d pods (s)" % (n + m), get("pod_info_module_s", "—"),
         "ping: %s" % get("ping_module_s", "—"), _ratio(get("pod_info_module_s"), get("ping_module_s"))],
    ]
    print(common.table(["what", "ours", "podman / baseline", "ratio"], rows))
    if get("podman_error"):
        print("\n- podman: %s" % r["podman_error"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100, help="detached pods to start (and podman containers)")
    ap.add_argument("--on-disk", type=int, default=1000, help="prepared pods on disk for the listing")
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--podman-net", default="none")
    ap.add_argument("--module-runs", type=int, default=3, help="runs of each ad-hoc module call (median)")
    ap.add_argument("--workdir", default=None)
    run(ap.parse_args())
