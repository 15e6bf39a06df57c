"""bench/stop: stop and remove N running pods, the two ways a playbook does it, against
`podman rm -f -t 0` of N containers in the same run (issue #19's goal: <= 1.0x podman).

1. One `pod_set` module run declaring the N pods absent (what the pods role does).
2. A playbook of one `pod_run state=absent` task looped N times.
Each starts from N running pods that one `pod_set` run made (timed too: the create). Pods
are `/bin/sleep 3600`, `net: none`, stop timeout 0 (podman's `-t 0`). podman's N
containers run the same root filesystem with the flags start_bench finds for this host.
Whole commands are timed: the Ansible start-up is part of what a user waits for. CPU time
(user + system of the command's process tree) is reported beside wall time. As root, this
collection's library is laid out as the runtime role installs it (tests/support/thin_library.py),
so the modules run from it as on a host the role set up; ``--no-library``: the full payload.
Usage: python bench/stop_bench.py [--pods 100] [--no-podman] [--no-library] [--workdir DIR]
"""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)
import start_bench

PY = sys.executable
BIN = os.path.dirname(PY)


def env():
    return dict(os.environ, ANSIBLE_COLLECTIONS_PATH=common.COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=PY,
                ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")


def pods_args(data, n, state):
    return {"data_dir": data, "pods": [{"name": "st-%d" % i, "image": "example.com/busybox", "net": "none",
                                        "exec": ["/bin/sleep", "3600"], "stop_timeout": 0, "state": state}
                                       for i in range(n)]}


CPU = {}  # the last timed command's CPU time (user + system of its whole tree), seconds
EXTRA = []  # -e rocket_runtime_library_dir=... when the library is laid out


def timed(cmd):
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False)
    dt = time.perf_counter() - t
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = round(r.ru_utime + r.ru_stime - c.ru_utime - c.ru_stime, 3)
    out = p.stdout.decode("utf-8", "replace")
    if p.returncode != 0 or "FAILED" in out:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd[:6]), out[-800:]))
    return dt


def pod_set(work, data, n, state):
    return timed([os.path.join(BIN, "ansible"), "localhost", "-c", "local", "-o", "-m", "appc.rocket.pod_set",
                  "-a", json.dumps(pods_args(data, n, state))] + EXTRA)


def pod_run_loop(work, data, n):
    path = os.path.join(work, "remove.yml")
    with open(path, "w") as f:
        f.write("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
                "    - appc.rocket.pod_run: {name: 'st-{{ item }}', state: absent, stop_timeout: 0, data_dir: %s}\n"
                "      loop: '{{ range(%d) | list }}'\n" % (json.dumps(data), n))
    return timed([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", path] + EXTRA)


def running(data):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir

    return sum(1 for p in podmod.list_pods(DataDir(data)) if p.state() == "running")


def podman_round(rootfs, n, ids):
    flags, notes = start_bench.podman_flags("none")
    for dummy in range(n):
        r = subprocess.run(["podman", "run", "-d"] + flags + ["--rootfs", rootfs, "/bin/sleep", "3600"],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError("podman run -d failed: %s" % r.stderr.strip()[-300:])
        ids.append(r.stdout.strip())
    t = time.perf_counter()
    c = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(["podman", "rm", "-f", "-t", "0"] + ids, capture_output=True, check=False)
    dt = time.perf_counter() - t
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    CPU["last"] = round(r.ru_utime + r.ru_stime - c.ru_utime - c.ru_stime, 3)
    del ids[:]
    return round(dt, 3), notes


def run(args):
    with common.host_library(args.no_library) as extra:
        EXTRA[:] = extra
        run_with(args, "installed as the runtime role does" if extra else "none (full payload)")


def run_with(args, library):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    n = args.pods
    work = tempfile.mkdtemp(prefix="rocket-bench-stop-", dir=args.workdir)
    data = os.path.join(work, "rocket")
    before, residue, ids = common.host_state(), common.peer_residue(), []
    meta = {"pods": n, "rocket_library": library, "load_before": [round(x, 2) for x in os.getloadavg()]}
    row = {"pods": n}
    try:
        aci = common.pods.busybox_aci(work)
        with Store(data) as s:
            s.import_file(aci)
        row["create_pod_set_s"] = round(pod_set(work, data, n, "running"), 3)
        assert running(data) == n
        row["remove_pod_set_s"] = round(pod_set(work, data, n, "absent"), 3)
        row["remove_pod_set_cpu_s"] = CPU["last"]  # the pods' own exits are not in it (nor in podman's)
        assert running(data) == 0
        pod_set(work, data, n, "running")
        assert running(data) == n
        row["remove_pod_run_loop_s"] = round(pod_run_loop(work, data, n), 3)
        row["remove_pod_run_loop_cpu_s"] = CPU["last"]
        assert running(data) == 0
        if args.no_podman:
            row["podman_error"] = "skipped (--no-podman)"
        elif not shutil.which("podman"):
            row["podman_error"] = "podman is not installed"
        else:
            rootfs = start_bench.copy_root(os.path.join(work, "busybox-rootfs"), work, "podman")
            row["podman_rm_s"], meta["podman_flags"] = podman_round(rootfs, n, ids)
            row["podman_rm_cpu_s"] = CPU["last"]
            row["pod_set_vs_podman"] = round(row["remove_pod_set_s"] / row["podman_rm_s"], 2)
            row["pod_run_loop_vs_podman"] = round(row["remove_pod_run_loop_s"] / row["podman_rm_s"], 2)
    finally:
        if ids:
            subprocess.run(["podman", "rm", "-f", "-t", "0"] + ids, capture_output=True, check=False)
        uuids = set()
        if os.path.isdir(data):
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod

            with Store(data) as s:
                uuids = {p.uuid for p in podmod.list_pods(s.dd)}
                common.pods.remove_all(s.dd)
        common.pods.reap(settle=0.1)
        common.undo_podman_mounts(before)
        left = common.clean_peer_residue(residue)
        shutil.rmtree(work, ignore_errors=True)
        found = common.leaks(before, common.host_state(), uuids=uuids, prefixes=(work,))
        found = {k: v for k, v in found.items() if k in ("mounts", "rocket_cgroups")}
        if left:
            found["peer_residue"] = left
        meta["left_behind"] = found
    meta["load_after"] = [round(x, 2) for x in os.getloadavg()]
    common.write_results("stop", [row], meta)
    pm = row.get("podman_rm_s")
    print(common.table(["stop and remove %d running pods" % n, "s", "CPU s", "x `podman rm -f -t 0`"], [
        ["one `pod_set` run (pods declared absent)", row["remove_pod_set_s"], row["remove_pod_set_cpu_s"],
         row.get("pod_set_vs_podman", "")],
        ["%d `pod_run state=absent` tasks (a loop)" % n, row["remove_pod_run_loop_s"], row["remove_pod_run_loop_cpu_s"],
         row.get("pod_run_loop_vs_podman", "")],
        ["`podman rm -f -t 0` of %d containers" % n, pm if pm is not None else row.get("podman_error"),
         row.get("podman_rm_cpu_s", ""), "1.0" if pm else ""],
        ["(create %d pods, one `pod_set` run)" % n, row["create_pod_set_s"], "", ""]]))
    print("whole commands; the host's library: %s; load average %s before, %s after"
          % (library, meta["load_before"], meta["load_after"]))
    if meta["left_behind"]:
        print("left behind: %s" % meta["left_behind"])


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--pods", type=int, default=100)
    ap.add_argument("--no-podman", action="store_true")
    ap.add_argument("--no-library", action="store_true", help="no library on the host: the full payload")
    ap.add_argument("--workdir", default=None)
    run(ap.parse_args())
