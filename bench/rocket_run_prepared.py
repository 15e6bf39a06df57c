"""Run one prepared pod in the foreground: the whole command a user runs to start a pod
(rkt's `run-prepared`), cold: a fresh interpreter that imports only stage0.pod and
stage0.run (no ansible, no json at import, no subprocess) and calls run_foreground.

Usage: python -I -S bench/rocket_run_prepared.py DATA_DIR UUID [--net=none|host] [--detach]
Exit status: the pod's (see docs/stage1-contract.md). With --detach: start the pod under its
keeper (as `podman run -d` does under conmon), print its PID 1 once every app runs, exit 0;
the keeper then belongs to the nearest subreaper (the benchmark), which must reap it.
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                                ".build", "collections"))
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir  # noqa: E402


def main(argv):
    net = "none"
    detach = False
    args = []
    for a in argv:
        if a.startswith("--net="):
            net = a[6:]
        elif a == "--detach":
            detach = True
        else:
            args.append(a)
    if len(args) != 2:
        sys.stderr.write("usage: rocket_run_prepared.py DATA_DIR UUID [--net=none|host] [--detach]\n")
        return 2
    pod = podmod.Pod(DataDir(args[0]), args[1], "prepared")
    if detach:
        sys.stdout.write("%d\n" % run.start_detached(pod, net=net))
        return 0
    return run.run_foreground(pod, net=net)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
