"""bench/health: what a healthcheck costs the keeper, per pod and per probe.

Three pods of one app (`/bin/sleep 3600`, net none): one without a check, one probed with
`/bin/true` every 200 ms, one whose probe is `sleep 1` (to catch a probe while it runs).
Reported: the keeper's PSS/USS without a check, with one (after the monitor started and
after the probes), the keeper's CPU per probe (its own time and its reaped children's:
the forked enter and the command it ran), the wall time of a probe (health.json), and
the forked enter's PSS/USS while a probe runs.
Usage: python bench/health_bench.py [--seconds 20]
"""
import argparse
import json
import os
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)
from tests.support.pods import subreaper

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import healthcheck
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run as runmod

TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    """(own, reaped children's) CPU seconds of a process."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + st) / TICK, (cut + cst) / TICK


def keeper_of(pod):
    with open("/proc/%d/stat" % pod.pid()) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def start(store, spec):
    p = common.new_pod(store, spec).pod
    runmod.start_detached(p, net="none")
    return p


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20.0)
    args = ap.parse_args()
    subreaper()
    before, residue = common.host_state(), common.peer_residue()
    work = tempfile.mkdtemp(prefix="health-bench-")
    store = None
    try:
        dummy_root, store = common.busybox_store(work, exec_=("/bin/sleep", "3600"))
        app = {"image": "example.com/busybox", "exec": ["/bin/sleep", "3600"]}
        plain = start(store, {"apps": [dict(app, name="plain")]})
        fast = start(store, {"apps": [dict(app, name="fast", healthcheck={"test": ["/bin/true"], "interval": 0.2})]})
        slow = start(store, {"apps": [dict(app, name="slow", healthcheck={"test": "sleep 1", "interval": 2,
                                                                          "timeout": 5})]})
        time.sleep(1.0)
        k_plain, k_fast, k_slow = keeper_of(plain), keeper_of(fast), keeper_of(slow)
        mem_plain = common.smaps_rollup(k_plain)
        # the fast pod: count every probe by its start time, poll the keeper's record
        seen, walls = set(), []
        first = None
        t_end = time.monotonic() + args.seconds
        while time.monotonic() < t_end:
            last = (healthcheck.health(fast).get("fast") or {}).get("last")
            if last and last["started"] not in seen:
                seen.add(last["started"])
                walls.append(last["ended"] - last["started"])
                if first is None:
                    first = (cpu(k_fast), len(seen), common.smaps_rollup(k_fast))
            time.sleep(0.02)
        end = (cpu(k_fast), len(seen), common.smaps_rollup(k_fast))
        n = end[1] - first[1]
        own = (end[0][0] - first[0][0]) / n
        kids = (end[0][1] - first[0][1]) / n
        # the slow pod: the keeper's child that is not the pod's PID 1 is a running probe
        probe_mem = None
        t_end = time.monotonic() + 6
        while probe_mem is None and time.monotonic() < t_end:
            tree = common.process_tree()
            for pid, (ppid, dummy_comm) in tree.items():
                if ppid == k_slow and pid != slow.pid():
                    probe_mem = common.smaps_rollup(pid)
            time.sleep(0.05)
        out = {
            "keeper_no_check_kib": mem_plain,
            "keeper_with_check_after_first_probe_kib": first[2],
            "keeper_with_check_after_probes_kib": end[2],
            "probes_counted": n,
            "keeper_cpu_ms_per_probe": round(own * 1000, 2),
            "reaped_probe_cpu_ms_per_probe": round(kids * 1000, 2),
            "probe_wall_ms_median": round(sorted(walls)[len(walls) // 2] * 1000, 1),
            "forked_enter_during_probe_kib": probe_mem,
        }
        print(json.dumps(out, indent=1))
    finally:
        left = common.clean_up(store, before, residue, work)
        if left:
            print("residue left by others:", left)


if __name__ == "__main__":
    main()
