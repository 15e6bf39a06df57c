"""One soak worker: random library operations on a shared data dir until a deadline.

``PYTHONPATH=.build/collections python soak_worker.py DATA_DIR SECONDS SEED ACI...``
(harness.env()); prints one JSON line:
``{"ops": {op: count}, "expected": {op: {error type: count}}, "unexpected": [traceback...]}``.
An error is expected only if it is one the operation documents when another worker got
there first (see EXPECTED); anything else is a bug and is reported with its traceback.
"""
import collections
import json
import random
import sys
import time
import traceback

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import (
    pod as podmod, pod_gc, prepare, run, store_gc)
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import InUseError, NotFoundError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

BUSYBOX = "example.com/busybox"
# What each operation may fail with when the world changed under it (another worker
# removed the image or the pod, or moved the pod first). Nothing else is acceptable.
EXPECTED = {
    "import": (),
    "prepare": (NotFoundError,),                       # the image was removed meanwhile
    "run": (podmod.PodStateError, NotFoundError),      # another worker ran, removed or collected it
    "enter": (podmod.PodStateError, NotFoundError),    # it stopped or went away before we joined
    "stop": (NotFoundError,),
    "remove": (podmod.PodStateError, NotFoundError),   # busy with another worker, or gone
    "podgc": (),
    "storegc": (),
    "rmi": (InUseError, NotFoundError),                # a pod uses it, or it is gone already
}


def pick(pods, state):
    return [p for p in pods if p.state() == state]


def main(data_dir, seconds, seed, *acis):
    rng = random.Random(int(seed))
    store = Store(data_dir)
    dd = store.dd
    ops = collections.Counter()
    expected = collections.defaultdict(collections.Counter)
    unexpected = []
    deadline = time.monotonic() + float(seconds)
    names = ["import", "prepare", "run", "enter", "stop", "remove", "podgc", "storegc", "rmi"]
    weights = [3, 3, 3, 3, 2, 2, 1, 1, 1]
    while time.monotonic() < deadline:
        op = rng.choices(names, weights)[0]
        pods = podmod.list_pods(dd)
        try:
            if op == "import":
                store.import_file(rng.choice(acis))
            elif op == "prepare":
                ref = rng.choice([BUSYBOX, "example.com/soak"])
                prepare.prepare(store, {"apps": [{"name": "app", "image": ref, "exec": [
                    "/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"]}]})
            elif op == "run":
                live = pick(pods, "running")
                cands = pick(pods, "prepared")
                if not cands or len(live) >= 6:
                    continue
                run.start_detached(rng.choice(cands), net="none", timeout=60)
            elif op == "enter":
                cands = pick(pods, "running")
                if not cands:
                    continue
                rc, out, err = enter(rng.choice(cands), None, ["/bin/echo", "in"], timeout=30)
                if rc != 0 or out != b"in\n":
                    raise AssertionError("enter failed rc=%d: %s" % (rc, err[-500:]))
            elif op == "stop":
                cands = pick(pods, "running")
                if not cands:
                    continue
                run.stop(rng.choice(cands), timeout=10)
            elif op == "remove":
                if not pods:
                    continue
                pod_gc.remove(rng.choice(pods), stop_timeout=10)
            elif op == "podgc":
                pod_gc.gc(dd, grace=0)
            elif op == "storegc":
                store_gc.gc(store, grace=0)
            elif op == "rmi":
                recs = store.list()
                if not recs:
                    continue
                store.remove(rng.choice(recs)["id"])
            ops[op] += 1
        except EXPECTED[op] as e:
            expected[op][type(e).__name__] += 1
        except Exception:  # noqa: BLE001  (every other failure is a finding)
            unexpected.append("%s: %s" % (op, traceback.format_exc()[-3000:]))
    store.close()
    return {"ops": dict(ops), "expected": {k: dict(v) for k, v in expected.items()}, "unexpected": unexpected}


if __name__ == "__main__":
    sys.stdout.write(json.dumps(main(*sys.argv[1:])) + "\n")
