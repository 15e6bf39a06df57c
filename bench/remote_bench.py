"""bench/remote: tasks inside a pod on a remote host against the same tasks over plain ssh to it.

One fleet host (a network namespace with its own sshd, tests/support/fleet.py) runs a pod of
the python3 image. The same playbook of K `command` tasks runs twice per round, pipelined,
with the same ssh settings: once against the host (ansible.builtin.ssh), once against the pod
(appc.rocket.pod, remote mode: ssh plus the cached enter program plus stage1's enter). Per-task
cost = (K tasks - none) / K, medians of N rounds; the goal (#18) is pod <= 1.3x ssh.
Usage: python bench/remote_bench.py [--runs 3] [--tasks 10] [--workdir DIR]
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
from tests.support import python_image  # noqa: E402
from tests.support.ansible_run import BIN, module  # noqa: E402
from tests.support.fleet import HOSTS, Fleet  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store  # noqa: E402

TASK = """
    - ansible.builtin.command: "true"
      changed_when: false
"""


def _play(k):
    return "- hosts: all\n  gather_facts: false\n  tasks:\n    - ansible.builtin.debug: {msg: warm, verbosity: 4}\n" + TASK * k


def _time(fleet, inv, play):
    e = fleet.env()
    e.pop("ANSIBLE_PYTHON_INTERPRETER", None)
    e["ANSIBLE_PIPELINING"] = "1"
    start = time.monotonic()
    p = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inv, play], env=e, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
    took = time.monotonic() - start
    if p.returncode != 0:
        raise SystemExit(p.stdout)
    return took


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tasks", type=int, default=10)
    ap.add_argument("--workdir", help="where the fleet host's files go (default: a temporary directory)")
    a = ap.parse_args()
    if a.workdir:
        os.makedirs(a.workdir, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="rocket-remote-bench-", dir=a.workdir)
    fleet = Fleet(os.path.join(tmp, "fleet"), hosts={"alpha": HOSTS["alpha"]})
    os.makedirs(fleet.tmp)
    try:
        fleet.up()
        dd = fleet.data_dir("alpha")
        path, dummy = python_image.build()
        with Store(dd) as s:
            s.import_file(path)
        r = module("pod_run", {"data_dir": dd, "name": "py", "image": "example.com/python3", "net": "none"})
        assert not r.get("failed"), r
        gv = dict(fleet.group_vars())
        host = dict(gv, ansible_host=HOSTS["alpha"])
        pod = dict(gv, ansible_host=HOSTS["alpha"], ansible_connection="appc.rocket.pod", ansible_rocket_pod="py",
                   ansible_rocket_pod_host="alpha", ansible_rocket_data_dir=dd,
                   ansible_python_interpreter="/usr/bin/python3")
        invs = {}
        for name, hv in (("ssh", {"alpha": host}), ("pod", {"py": pod})):
            invs[name] = os.path.join(tmp, name + ".json")
            with open(invs[name], "w") as f:
                json.dump({"all": {"hosts": hv}}, f)
        plays = {}
        for k in (0, a.tasks):
            plays[k] = os.path.join(tmp, "play%d.yml" % k)
            with open(plays[k], "w") as f:
                f.write(_play(k))
        _time(fleet, invs["pod"], plays[a.tasks])  # ships the enter program once
        per = {"ssh": [], "pod": []}
        for dummy_round in range(a.runs):
            for name in ("ssh", "pod"):
                per[name].append((_time(fleet, invs[name], plays[a.tasks]) - _time(fleet, invs[name], plays[0]))
                                 / a.tasks)
        ssh_ms, pod_ms = (statistics.median(per[n]) * 1000 for n in ("ssh", "pod"))
        result = {"name": "remote", "tasks": a.tasks, "runs": a.runs, "ssh_task_ms": round(ssh_ms, 1),
                  "pod_task_ms": round(pod_ms, 1), "ratio": round(pod_ms / ssh_ms, 2), "goal_ratio": 1.3,
                  "samples_ms": {n: [round(v * 1000, 1) for v in per[n]] for n in per}}
        common.write_results("remote", [result], {"runs": a.runs, "tasks": a.tasks})
        print("| per `command` task, pipelined | plain ssh to the host | inside a pod on that host | ratio (goal <= 1.3) |")
        print("|---|---|---|---|")
        row = (a.runs, a.tasks, ssh_ms, pod_ms, pod_ms / ssh_ms)
        print("| median of %d rounds, %d tasks | %.0f ms | %.0f ms | %.2fx |" % row)
    finally:
        try:
            fleet.remove_pods()
        finally:
            fleet.down()
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
