"""bench/net_kinds: what each kind of network costs a pod start (docs/networking.md's comparison).

1. The cold start of a prepared /bin/true pod in the foreground (bench/rocket_run_prepared.py,
   as bench/net does) with `net: none`, the built-in `default` (ptp), and a built-in `bridge`
   network, interleaved; the bridge start includes the peers' /etc/hosts refresh (alone on it).
2. The CNI plugins alone: `bridge` with `host-local` IPAM (the usual CNI network) run by hand,
   ADD then DEL, in a fresh network namespace, as a CNI runtime executes them (environment and
   stdin). This is what any CNI network adds at least, whatever runs the plugins.
3. The peers' refresh (stage1/peers.py) with 50 running pods on one bridge network, on a fake
   data directory: what every start and removal on a busy bridge network pays in addition.

Run it in a private network namespace: tools/isolated.sh .venv/bin/python bench/net_kinds_bench.py --runs 10
"""
import argparse
import fcntl
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)
import net_bench

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import peers

CNI_PATH = "/usr/lib/cni"


def start_once(store, net):
    """net_bench's cold start of a prepared /bin/true pod on ``net``: (wall, CPU seconds)."""
    return net_bench.once(store, net)


def cni_once(work, i):
    """(ADD seconds, DEL seconds) of bridge + host-local, by hand."""
    ns = "bench-cni-%d" % i
    subprocess.run(["ip", "netns", "add", ns], check=True)
    conf = {"cniVersion": "1.0.0", "name": "benchcni", "type": "bridge", "bridge": "cni-bench0", "isGateway": True,
            "ipMasq": False, "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.87.0.0/24"}]],
                                      "dataDir": os.path.join(work, "cni-ipam")}}
    env = dict(os.environ, CNI_CONTAINERID="bench%d" % i, CNI_NETNS="/run/netns/" + ns, CNI_IFNAME="eth0",
               CNI_PATH=CNI_PATH)
    try:
        t0 = time.perf_counter()
        add = subprocess.run([os.path.join(CNI_PATH, "bridge")], input=json.dumps(conf).encode(),
                             env=dict(env, CNI_COMMAND="ADD"), capture_output=True, check=False)
        t1 = time.perf_counter()
        if add.returncode != 0:
            raise RuntimeError("CNI ADD: %s" % add.stdout.decode())
        conf["prevResult"] = json.loads(add.stdout)
        dele = subprocess.run([os.path.join(CNI_PATH, "bridge")], input=json.dumps(conf).encode(),
                              env=dict(env, CNI_COMMAND="DEL"), capture_output=True, check=False)
        t2 = time.perf_counter()
        if dele.returncode != 0:
            raise RuntimeError("CNI DEL: %s" % dele.stdout.decode())
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    return t1 - t0, t2 - t1


def refresh_cost(work, pods=50, runs=20):
    dd = os.path.join(work, "fake-dd")
    fds = []
    uuids = ["cccccccc-0000-4000-8000-%012d" % i for i in range(pods)]
    for sub in ("names", "pods/run", "net/ipam/busy"):
        os.makedirs(os.path.join(dd, sub))
    plan = {"lock": os.path.join(dd, "net", "lock"), "networks": [{"name": "busy", "type": "bridge"}]}
    for i, u in enumerate(uuids):
        pod = os.path.join(dd, "pods", "run", u)
        os.makedirs(os.path.join(pod, "net"))
        with open(os.path.join(dd, "names", "pod%d" % i), "w") as f:
            f.write(u)
        with open(os.path.join(dd, "net", "ipam", "busy", "10.88.0.%d" % (i + 2)), "w") as f:
            f.write(u)
        with open(os.path.join(pod, "net", "hosts"), "w") as f:
            f.write("127.0.0.1\tlocalhost\n10.88.0.%d\tpod%d\n" % (i + 2, i))
        peers.write_self(pod, plan, u, "pod%d" % i)
        fd = os.open(pod, os.O_RDONLY | os.O_DIRECTORY)
        fcntl.flock(fd, fcntl.LOCK_EX)
        fds.append(fd)
    times = []
    try:
        for i in range(runs):
            t0 = time.perf_counter()
            errors = peers.refresh(dd, ["busy"], exclude=uuids[i % pods] if i % 2 else None)
            times.append(time.perf_counter() - t0)
            assert errors == [], errors
    finally:
        for fd in fds:
            os.close(fd)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=10)
    args = ap.parse_args(argv)
    work = tempfile.mkdtemp(prefix="rocket-bench-netkinds-")
    store = None
    kinds = ("none", "default", "benchbr")
    times = {k: [] for k in kinds}
    cpus = {k: [] for k in kinds}
    cni = []
    try:
        dummy_rootfs, store = common.busybox_store(work)
        os.makedirs(os.path.join(store.dd.path, "net.d"))
        with open(os.path.join(store.dd.path, "net.d", "benchbr.json"), "w") as f:
            json.dump({"name": "benchbr", "type": "bridge", "subnet": "10.86.0.0/24", "ipMasq": False,
                       "routes": []}, f)
        for net in kinds:  # warm-up
            start_once(store, net)
        for i in range(args.runs):
            order = list(kinds)
            random.Random(i).shuffle(order)
            for net in order:
                dt, cpu = start_once(store, net)
                times[net].append(dt)
                cpus[net].append(cpu)
        cni_once(work, -1)  # warm-up: the plugin binaries in the page cache
        cni = [cni_once(work, i) for i in range(args.runs)]
        refresh = refresh_cost(work)
    finally:
        if store is not None:
            store.close()
        shutil.rmtree(work, ignore_errors=True)
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    print("## net kinds: cold start of a prepared /bin/true pod (load %s, %d runs each)\n" % (load, args.runs))
    rows = [[k if k != "benchbr" else "bridge (built-in)", common.ms(statistics.median(times[k])),
             common.ms(statistics.median(cpus[k]))] for k in kinds]
    print(common.table(["net", "median ms", "CPU ms (median)"], rows))
    add = statistics.median([a for a, dummy_d in cni])
    dele = statistics.median([d for dummy_a, d in cni])
    print("\nCNI bridge + host-local by hand: ADD %.1f ms, DEL %.1f ms (medians)" % (add * 1000, dele * 1000))
    print("peers' refresh, 50 running pods on one bridge: %.1f ms (median)" % (refresh * 1000))
    common.write_results("net_kinds", [{"net": r[0], "median_ms": r[1], "cpu_median_ms": r[2]} for r in rows],
                         {"runs": args.runs, "loadavg": float(load), "cni_add_ms": round(add * 1000, 1),
                          "cni_del_ms": round(dele * 1000, 1), "refresh_50_ms": round(refresh * 1000, 1)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
