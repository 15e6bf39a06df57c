"""bench/ansible: what a no-op pod_run task costs, against ansible.builtin.ping.

Per-task cost = (playbook with K tasks - playbook with none) / K, medians of N runs, all
measured in the same run: the playbook start-up both pay is taken out, what remains is the
module round trip (ansiballz, interpreter, imports, our index and spec reads) plus a Kth of
the payload build, which the controller does once per module per playbook run. The marginal
cost, (K tasks - 1 task) / (K - 1), takes that out too: what each further task costs. The
first task's cost (1 task - none) is the other side: it carries the payload build.
The pods role with R declared pods and nothing to do (one pod_set task) is measured the
same way, as one playbook minus the empty one, against one ping task.

As root, this collection's library is laid out as the runtime role installs it (in a
root-only directory, tests/support/thin_library.py), so our tasks run from it ("host library":
the direct path, plugins/plugin_utils/module_action.py); the same playbooks with
``rocket_thin_payload: false`` (the full payload) run in the same rounds, interleaved.
``--no-library`` measures a host without the library (a thin attempt, then the full payload).
Usage: python bench/ansible_bench.py [--runs 5] [--tasks 10] [--role-pods 20] [--no-library]
"""
import argparse
import json
import os
import re
import resource
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


FULL = "  vars:\n    rocket_thin_payload: false\n"


def env():
    e = dict(os.environ)
    e.update(ANSIBLE_COLLECTIONS_PATH=common.COLLECTIONS, ANSIBLE_PYTHON_INTERPRETER=sys.executable,
             ANSIBLE_LOCALHOST_WARNING="false", ANSIBLE_INVENTORY_UNPARSED_WARNING="false")
    return e


def _cpu():
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


CPU = {}  # path -> CPU seconds (user + system) of each run's whole process tree


def play(path, extra=()):
    c = _cpu()
    t = time.perf_counter()
    p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                        "-c", "local", path] + list(extra), env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       text=True, check=False)
    if p.returncode != 0 or "changed=0" not in p.stdout:
        raise SystemExit("playbook %s failed or changed something:\n%s" % (path, p.stdout))
    wall = time.perf_counter() - t
    CPU.setdefault(path, []).append(_cpu() - c)
    return wall


def run(args):
    with common.host_library(args.no_library) as extra:
        run_with(args, extra, bool(extra))


def run_with(args, extra, thin):
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
        if thin:  # the same with the full payload, interleaved
            bodies += [(name + "_full", body) for name, body in bodies if name.startswith(("pod_run", "role"))]
        for name, body in bodies:
            files[name] = os.path.join(work, name + ".yml")
            with open(files[name], "w") as f:
                f.write((HEAD.replace("  tasks:\n", FULL + "  tasks:\n") if name.endswith("_full") else HEAD) + body)
        # Start the pods once (these runs change things; the measured ones must not), and
        # check that the thin payload is what the measured runs take.
        for k in ("pod_run", "role") if args.role_pods else ("pod_run",):
            p = subprocess.run([os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,",
                                "-c", "local", files[k], "-vvv"] + extra, env=env(), check=True, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
            if thin and not re.search(r"appc.rocket: (thin payload|direct), the module ran from", p.stdout):
                raise SystemExit("the host's library was not used:\n" + p.stdout[-4000:])
        times = {k: [] for k in files}
        for dummy in range(args.runs):
            for k in files:
                times[k].append(play(files[k], extra))
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
        if thin:
            rows = [dict(r, task=r["task"] + (", host library" if "appc.rocket" in r["task"] else "")) for r in rows]
            full_per = (med["pod_run_full"] - med["none"]) / args.tasks
            full_marginal = (med["pod_run_full"] - med["pod_run1_full"]) / (args.tasks - 1)
            full_first = med["pod_run1_full"] - med["none"]
            rows += [{"task": "appc.rocket.pod_run (no-op, pod running), full payload",
                      "per_task_ms": round(full_per * 1000, 1), "ratio": round(full_per / per["ping"], 2)},
                     {"task": "appc.rocket.pod_run (no-op), marginal, full payload",
                      "per_task_ms": round(full_marginal * 1000, 1), "ratio": round(full_marginal / marginal["ping"], 2)},
                     {"task": "appc.rocket.pod_run (no-op), first task of a playbook, full payload",
                      "per_task_ms": round(full_first * 1000, 1), "ratio": round(full_first / first["ping"], 2)}]
        ping1 = first["ping"]
        if args.role_pods:
            for key, label in (("role", ", host library" if thin else ""), ("role_full", ", full payload")):
                if key not in med:
                    continue
                role = med[key] - med["none"]
                cpu = {k: common.median(CPU[files[k]]) for k in (key, "none", "ping1")}
                role_cpu, ping1_cpu = cpu[key] - cpu["none"], cpu["ping1"] - cpu["none"]
                rows.append({"task": "appc.rocket.pods role, %d pods, nothing to do (whole role)%s" % (args.role_pods, label),
                             "cpu_ms": round(role_cpu * 1000, 1),
                             "cpu_ratio_to_one_ping_playbook": round(role_cpu / ping1_cpu, 2),
                             "per_task_ms": round(role * 1000, 1), "ratio": round(role / per["ping"], 2),
                             "ratio_to_one_ping_playbook": round(role / ping1, 2)})
        common.write_results("ansible", rows, {"runs": args.runs, "tasks": args.tasks, "library": thin,
                                               "playbook_without_tasks_s": round(med["none"], 3)})
        print(common.table(["task", "per task (ms)", "x ping"], [[r["task"], r["per_task_ms"], r["ratio"]] for r in rows]))
        print("medians of %d runs of %d tasks each; playbook start-up (%.2f s) subtracted; module_utils bytecode "
              "cache: %s" % (args.runs, args.tasks, med["none"], os.environ.get("ROCKET_BYTECODE_CACHE") or "default"))
        for r in rows:
            if "ratio_to_one_ping_playbook" in r:
                print("%s / playbook of one ping task: %.2f wall, %.2f CPU (%.0f ms)"
                      % (r["task"], r["ratio_to_one_ping_playbook"], r["cpu_ratio_to_one_ping_playbook"], r["cpu_ms"]))
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
    ap.add_argument("--no-library", action="store_true", help="no library on the host: the full payload")
    a = ap.parse_args()
    if a.tasks < 2:
        ap.error("--tasks must be at least 2 (the marginal cost compares K tasks with one)")
    run(a)
