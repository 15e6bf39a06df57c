"""bench/net: what a private network adds to a cold pod start.

The whole command that starts a prepared one-app pod running /bin/true in the foreground
(`python -I -S bench/rocket_run_prepared.py DATA UUID --net=...`, as bench/start does),
with `net: default` (veth pair, IPAM allocation under the data directory's lock, nftables
NAT rules, net-info.json, hosts and resolv.conf) against `net: none` (a new network
namespace with loopback only), interleaved in random order. Each run gets a pod prepared
beforehand and removed afterwards (untimed; removal tears the network down).
Run it in a private network namespace (tools/isolated.sh) to leave the host untouched.
Usage: python bench/net_bench.py [--runs 30]
Goal: default adds <= 30 ms to none (medians).
"""
import argparse
import os
import random
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

common.ensure_collection_path()
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc  # noqa: E402

CLI = os.path.join(common.ROOT, "bench", "rocket_run_prepared.py")
PY = sys.executable
SPEC = {"apps": [{"image": "example.com/busybox", "exec": ["/bin/true"]}]}
GOAL_MS = 30.0


def once(store, net):
    p = common.new_pod(store, SPEC)
    try:
        dt, rc, err = common.run_capture([PY, "-I", "-S", CLI, store.dd.path, p.pod.uuid, "--net=" + net])
    finally:
        p.pod.refresh()
        pod_gc.remove(p.pod)
    if rc != 0:
        raise RuntimeError("net=%s: exit %d: %s" % (net, rc, err))
    return dt


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="rocket-bench-net-")
    store = None
    times = {"none": [], "default": []}
    try:
        dummy_rootfs, store = common.busybox_store(work)
        for net in times:  # warm-up: page cache, the default network's first table and lock file
            once(store, net)
        for i in range(args.runs):
            order = list(times)
            random.Random(i).shuffle(order)
            for net in order:
                times[net].append(once(store, net))
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    added = (med["default"] - med["none"]) * 1000
    rows = [{"net": k, "median_ms": common.ms(med[k]), "p90_ms": common.ms(common.p90(v)), "runs": len(v)}
            for k, v in times.items()]
    print("## net: cold start of a prepared /bin/true pod, net: default vs net: none\n")
    print(common.table(["net", "median ms", "p90 ms", "runs"],
                       [[r["net"], r["median_ms"], r["p90_ms"], r["runs"]] for r in rows]))
    verdict = "met" if added <= GOAL_MS else "not met"
    print("\nprivate network adds %.1f ms (goal <= %.0f ms: %s)" % (added, GOAL_MS, verdict))
    common.write_results("net", rows, {"python": sys.version.split()[0], "kernel": os.uname().release,
                                       "runs": args.runs, "added_ms": round(added, 1), "goal_ms": GOAL_MS,
                                       "goal": verdict})
    return 0


if __name__ == "__main__":
    sys.exit(main())
