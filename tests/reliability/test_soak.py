"""Concurrency soak: 8 processes import, prepare, run, enter, stop, remove pods, collect
garbage and remove images on one data directory at once, for ROCKET_SOAK_SECONDS
(default 60). Only documented errors may occur (soak_worker.EXPECTED); afterwards the
store check is clean and nothing leaks.
"""
import json
import os
import subprocess
import sys
import time

import harness
from tests.support import images, pods

SECONDS = float(os.environ.get("ROCKET_SOAK_SECONDS", "60"))
WORKERS = int(os.environ.get("ROCKET_SOAK_WORKERS", "8"))
WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "soak_worker.py")


def test_soak(tmp_path, image_dir):
    data_dir = str(tmp_path / "rocket")
    acis = [pods.busybox_aci(image_dir)]
    for v in ("1", "2", "3"):  # small layers over busybox: renders with a dependency
        acis.append(images.build(tmp_path, name="example.com/soak", version=v, app=False,
                                 deps=[{"imageName": "example.com/busybox"}],
                                 files={"etc/soak": v.encode()})[0])
    harness.ok(data_dir, "import", acis[0])
    seed = int(os.environ.get("ROCKET_SOAK_SEED", str(int(time.time()))))
    procs = []
    try:
        for i in range(WORKERS):
            procs.append(subprocess.Popen([sys.executable, WORKER, data_dir, str(SECONDS), str(seed + i)] + acis,
                                          env=harness.env(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE))
        results = []
        for p in procs:
            out, err = p.communicate(timeout=SECONDS + 300)
            assert p.returncode == 0, err.decode(errors="replace")[-3000:]
            results.append(json.loads(out.decode().splitlines()[-1]))
        ops, expected = {}, {}
        for r in results:
            for k, v in r["ops"].items():
                ops[k] = ops.get(k, 0) + v
            for k, errs in r["expected"].items():
                for e, n in errs.items():
                    expected["%s: %s" % (k, e)] = expected.get("%s: %s" % (k, e), 0) + n
        print("seed", seed, "ops", ops, "expected errors", expected)
        unexpected = [u for r in results for u in r["unexpected"]]
        assert unexpected == [], "seed %d:\n%s" % (seed, "\n".join(unexpected[:5]))
        for op in ("import", "prepare", "run", "stop", "remove"):
            assert ops.get(op, 0) > 0, "no successful %s in %ss: %s" % (op, SECONDS, ops)
        for op in ("enter", "rmi", "podgc", "storegc"):  # these may all meet a documented error
            assert ops.get(op, 0) + sum(n for k, n in expected.items() if k.startswith(op + ":")) > 0, (op, ops)
    except BaseException:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        harness.abandon(data_dir)
        raise
    harness.settle(data_dir)
