"""bench/ansible: what a no-op pod_run task costs, against ansible.builtin.ping.

Per-task cost = (playbook with K tasks - playbook with none) / K, medians of N runs, all
measured in the same run: the playbook start-up both pay is taken out, what remains is the
module round trip (ansiballz, interpreter, imports, our index and spec reads) plus a Kth of
the payload build, which the controller does once per module per playbook run. The marginal
cost, (K tasks - 1 task) / (K - 1), takes that out too: what each further task costs. The
first task's cost (1 task - none) is the other side: it carries the payload build.
The pods role with R declared pods and nothing to do (one pod_set task) is measured the
same way, as one playbook minus the empty one, against one ping task.
Usage: python bench/ansible_bench.py [--runs 5] [--tasks 10] [--role-pods 20]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)


HEAD = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: warm-up (skipped, so every playbook has a recap line)
      ansible.builtin.debug:
        msg: warm-up
        verbosity: 4
"""
PING = """
    - name: ping
      ansible.builtin.ping:
"""
POD_RUN = """
    - name: no-op pod_run
      appc.rocket.pod_run:
        name: bench
        image: example.com/busybox
        exec: [/bin/sleep, "100000"]
        net: none
        data_dir: %s
"""


ROLE = """
    - name: the pods role
      ansible.builtin.import_role:
        name: appc.rocket.pods
      vars:
        rocket_data_dir: %s
        rocket_images: %s
        rocket_pods: %s
"""


def role_body(data, aci, n):
    pods_ = [{"name": "bench-%02d" % i, "image": "example.com/busybox", "net": "none",
              "exec": ["/bin/sleep", "100000"]} for i in range(n)]
    return ROLE % (data, json.dumps([{"src": aci}]), json.dumps(pods_))


def env():
    e = dict(os.environ)
    e.update(ANSIBLE_COLLECTIONS_PATH=common.COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
             ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return e


def play(path):
    t = time.perf_counter()
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                        "-c", "local", path], env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    if p.returncode != 0 or "changed=0" not in p.stdout:
        raise SystemExit("playbook %s failed or changed something:\n%s" % (path, p.stdout))
    return time.perf_counter() - t


def run(args):
    from tests.support import pods
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    work = tempfile.mkdtemp(prefix="rocket-bench-ansible-")
    data = os.path.join(work, "rocket")
    try:
        aci = pods.busybox_aci(work)
        with Store(data) as s:
            s.import_file(aci)
        files = {}
        bodies = [("none", ""), ("ping", PING * args.tasks), ("pod_run", (POD_RUN % data) * args.tasks),
                  ("ping1", PING), ("pod_run1", POD_RUN % data)]
        if args.role_pods:
            # The role is one playbook run, which builds its module payload once: so does a
            # playbook of one ping task, its fair baseline (the K-task ping spreads that cost).
            bodies += [("role", role_body(data, aci, args.role_pods))]
        for name, body in bodies:
            files[name] = os.path.join(work, name + ".yml")
            with open(files[name], "w") as f:
                f.write(HEAD + body)
        # Start the pods once (these runs change things; the measured ones must not).
        for k in ("pod_run", "role") if args.role_pods else ("pod_run",):
            subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                            "-c", "local", files[k]], env=env(), check=True, stdout=subprocess.DEVNULL)
        times = {k: [] for k in files}
        for dummy in range(args.runs):
            for k in files:
                times[k].append(play(files[k]))
        med = {k: common.median(v) for k, v in times.items()}
        per = {k: (med[k] - med["none"]) / args.tasks for k in ("ping", "pod_run")}
        marginal = {k: (med[k] - med[k + "1"]) / (args.tasks - 1) for k in ("ping", "pod_run")}
        first = {k: med[k + "1"] - med["none"] for k in ("ping", "pod_run")}
        rows = [{"task": "ansible.builtin.ping", "per_task_ms": round(per["ping"] * 1000, 1), "ratio": 1.0},
                {"task": "appc.rocket.pod_run (no-op, pod running)", "per_task_ms": round(per["pod_run"] * 1000, 1),
                 "ratio": round(per["pod_run"] / per["ping"], 2)},
                {"task": "ansible.builtin.ping, marginal (each task after the first)",
                 "per_task_ms": round(marginal["ping"] * 1000, 1), "ratio": 1.0},
                {"task": "appc.rocket.pod_run (no-op), marginal", "per_task_ms": round(marginal["pod_run"] * 1000, 1),
                 "ratio": round(marginal["pod_run"] / marginal["ping"], 2)},
                {"task": "ansible.builtin.ping, first task of a playbook (payload built)",
                 "per_task_ms": round(first["ping"] * 1000, 1), "ratio": 1.0},
                {"task": "appc.rocket.pod_run (no-op), first task of a playbook",
                 "per_task_ms": round(first["pod_run"] * 1000, 1), "ratio": round(first["pod_run"] / first["ping"], 2)}]
        ping1 = first["ping"]
        if args.role_pods:
            role = med["role"] - med["none"]
            rows.append({"task": "appc.rocket.pods role, %d pods, nothing to do (whole role)" % args.role_pods,
                         "per_task_ms": round(role * 1000, 1), "ratio": round(role / per["ping"], 2),
                         "ratio_to_one_ping_playbook": round(role / ping1, 2)})
        common.write_results("ansible", rows, {"runs": args.runs, "tasks": args.tasks,
                                               "playbook_without_tasks_s": round(med["none"], 3)})
        print(common.table(["task", "per task (ms)", "x ping"], [[r["task"], r["per_task_ms"], r["ratio"]] for r in rows]))
        print("medians of %d runs of %d tasks each; playbook start-up (%.2f s) subtracted; module_utils bytecode "
              "cache: %s" % (args.runs, args.tasks, med["none"], os.environ.get("ROCKET_BYTECODE_CACHE") or "default"))
        if args.role_pods:
            print("pods role / playbook of one ping task: %.2f" % rows[-1]["ratio_to_one_ping_playbook"])
    finally:
        names = ["bench"] + ["bench-%02d" % i for i in range(args.role_pods)]
        subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible"), "localhost", "-c", "local", "-m",
                        "appc.rocket.pod_set", "-a", json.dumps({"data_dir": data, "pods": [
                            {"name": n, "state": "absent"} for n in names]})], env=env(),
                       stdout=subprocess.DEVNULL, check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--role-pods", type=int, default=20, help="pods the pods role declares (0: skip it)")
    a = ap.parse_args()
    if a.tasks < 2:
        ap.error("--tasks must be at least 2 (the marginal cost compares K tasks with one)")
    run(a)
