"""bench/net: what a private network adds to a cold pod start.

The whole command that starts a prepared one-app pod running /bin/true in the foreground
(`python -I -S bench/rocket_run_prepared.py DATA UUID --net=...`, as bench/start does),
with `net: default` (veth pair, IPAM allocation under the data directory's lock, nftables
NAT rules, net-info.json, hosts and resolv.conf) against `net: none` (a new network
namespace with loopback only), interleaved in random order. Each run gets a pod prepared
beforehand and removed afterwards (untimed; removal tears the network down).
Run it in a private network namespace (tools/isolated.sh) to leave the host untouched.
Usage: python bench/net_bench.py [--runs 30] [--cni]
--cni adds `net: cnibr`, a CNI network (Debian's bridge + host-local plugins in /usr/lib/cni:
two plugin processes, the pinned namespace, the result cache, the link guard).
Goal: default adds <= 30 ms to none (medians).
"""
import argparse
import os
import random
import resource
import shutil
import statistics
import sys
import tempfile

import common  # first: the checkout importable (bench/common.py)

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc

CLI = os.path.join(common.ROOT, "bench", "rocket_run_prepared.py")
PY = sys.executable
SPEC = {"apps": [{"image": "example.com/busybox", "exec": ["/bin/true"]}]}
GOAL_MS = 30.0


def _cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def once(store, net):
    """(wall seconds, CPU seconds of the command and everything it waited for)."""
    p = common.new_pod(store, SPEC)
    try:
        c0 = _cpu()
        dt, rc, err = common.run_capture([PY, "-I", "-S", CLI, store.dd.path, p.pod.uuid, "--net=" + net])
        cpu = _cpu() - c0
    finally:
        p.pod.refresh()
        pod_gc.remove(p.pod)
    if rc != 0:
        raise RuntimeError("net=%s: exit %d: %s" % (net, rc, err))
    return dt, cpu


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--cni", action="store_true", help="also time a CNI bridge network (cnibr)")
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="rocket-bench-net-")
    store = None
    times = {"none": [], "default": []}  # type: dict
    cpus = {"none": [], "default": []}  # type: dict
    if args.cni:
        times["cnibr"], cpus["cnibr"] = [], []
    try:
        dummy_rootfs, store = common.busybox_store(work)
        if args.cni:
            import json

            os.makedirs(os.path.join(store.dd.path, "net.d"), exist_ok=True)
            with open(os.path.join(store.dd.path, "net.d", "cnibr.conflist"), "w") as f:
                json.dump({"cniVersion": "1.0.0", "name": "cnibr", "plugins": [
                    {"type": "bridge", "bridge": "cni-bench", "isGateway": True, "ipMasq": True,
                     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.218.17.0/24"}]],
                              "routes": [{"dst": "0.0.0.0/0"}]}}]}, f)
        for net in times:  # warm-up: page cache, the default network's first table and lock file
            once(store, net)
        for i in range(args.runs):
            order = list(times)
            random.Random(i).shuffle(order)
            for net in order:
                dt, cpu = once(store, net)
                times[net].append(dt)
                cpus[net].append(cpu)
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(work, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    cmed = {k: statistics.median(v) for k, v in cpus.items()}
    added = (med["default"] - med["none"]) * 1000
    added_cpu = (cmed["default"] - cmed["none"]) * 1000
    if args.cni:
        print("CNI bridge + host-local adds %.1f ms wall, %.1f ms CPU to none"
              % ((med["cnibr"] - med["none"]) * 1000, (cmed["cnibr"] - cmed["none"]) * 1000))
    rows = [{"net": k, "median_ms": common.ms(med[k]), "p90_ms": common.ms(common.p90(v)),
             "cpu_median_ms": common.ms(cmed[k]), "runs": len(v)} for k, v in times.items()]
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print("## net: cold start of a prepared /bin/true pod, net: default vs net: none (load %s)\n" % load)
    print(common.table(["net", "median ms", "p90 ms", "CPU ms (median)", "runs"],
                       [[r["net"], r["median_ms"], r["p90_ms"], r["cpu_median_ms"], r["runs"]] for r in rows]))
    verdict = "met" if added <= GOAL_MS else "not met"
    print("\nprivate network adds %.1f ms wall, %.1f ms CPU (goal <= %.0f ms wall: %s)"
          % (added, added_cpu, GOAL_MS, verdict))
    common.write_results("net", rows, {"python": sys.version.split()[0], "kernel": os.uname().release,
                                       "runs": args.runs, "added_ms": round(added, 1),
                                       "added_cpu_ms": round(added_cpu, 1), "loadavg": float(load),
                                       "goal_ms": GOAL_MS, "goal": verdict})
    return 0


if __name__ == "__main__":
    sys.exit(main())
