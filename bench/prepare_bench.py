"""bench/prepare: preparing a pod from a 1 GiB image vs from a 1 MiB image, trees rendered.

Both images are imported and rendered once (untimed); then N prepares of a one-app pod from
each, interleaved, each timed in-process around prepare() (the pod is removed afterwards,
untimed). With overlay, prepare writes only small files whatever the image's size.
The 1 GiB image: a busybox userland plus 8 files of random bytes (incompressible, so no
filesystem trick makes it cheap), built with compression "none".
Usage: python bench/prepare_bench.py [--runs 20] [--large-mib 1024]
Goal: large / small <= 1.2.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

import common  # first: the checkout importable (bench/common.py)

from tests.support.stage1_harness import base_rootfs

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, pod_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store


def build(work, name, extra_mib, files=8):
    root = os.path.join(work, "src-" + name.rsplit("/", 1)[1])
    base_rootfs(root)
    if extra_mib:
        os.makedirs(os.path.join(root, "opt/data"))
        per = (extra_mib << 20) // files
        for i in range(files):
            with open(os.path.join(root, "opt/data/blob%d" % i), "wb") as f:
                left = per
                while left:
                    n = min(left, 8 << 20)
                    f.write(os.urandom(n))
                    left -= n
    m = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
         "app": {"exec": ["/bin/true"], "user": "0", "group": "0"}}
    path = os.path.join(work, name.rsplit("/", 1)[1] + ".aci")
    aci.build_aci(root, m, path, compression="none")
    shutil.rmtree(root)
    return path


def run(args):
    before = common.host_state()
    work = tempfile.mkdtemp(prefix="rocket-bench-prepare-", dir=args.workdir)
    store = None
    try:
        t0 = time.perf_counter()
        images = {"small": ("example.com/small", 0), "large": ("example.com/large", args.large_mib)}
        store = Store(os.path.join(work, "data"))
        sizes = {}
        for key, (name, mib) in images.items():
            path = build(work, name, mib)
            sizes[key] = os.path.getsize(path)
            store.import_file(path)
            os.unlink(path)
            store.render(name)
        setup_s = time.perf_counter() - t0
        spec = {k: {"apps": [{"image": name, "exec": ["/bin/true"]}]} for k, (name, dummy_mib) in images.items()}
        for k in spec:  # warm-up (also builds and imports the default stage1 once)
            pod_gc.remove(common.new_pod(store, spec[k]).pod)
        times = {"small": [], "large": []}
        overlay = None
        for i in range(args.runs):
            for k in (("small", "large") if i % 2 == 0 else ("large", "small")):
                t = time.perf_counter()
                p = common.new_pod(store, spec[k])
                times[k].append(time.perf_counter() - t)
                overlay = p.info["overlay"]
                pod_gc.remove(p.pod)
        med = {k: statistics.median(v) for k, v in times.items()}
        rows = [{"image": "%s (%s, tar %.1f MiB)" % (k, images[k][0], sizes[k] / 2**20),
                 "median_ms": common.ms(med[k]), "p90_ms": common.ms(common.p90(times[k])),
                 "vs_small": round(med[k] / med["small"], 2), "runs": args.runs} for k in ("small", "large")]
    finally:
        if store is not None:
            for p in podmod.list_pods(store.dd):
                pod_gc.remove(p, stop_timeout=2)
            store.close()
        shutil.rmtree(work, ignore_errors=True)
    print("## prepare: one-app pod, image trees already rendered (in-process prepare())\n")
    print(common.table(["image", "median ms", "p90 ms", "× small", "runs"],
                       [[r["image"], r["median_ms"], r["p90_ms"], r["vs_small"], r["runs"]] for r in rows]))
    ratio = rows[1]["vs_small"]
    print("\noverlay used: %s; image build+import+render took %.1f s (untimed)" % (overlay, setup_s))
    print("Goal large/small <= 1.2: %s (%.2f)" % ("met" if ratio <= 1.2 else "NOT met", ratio))
    left = common.leaks(before, common.host_state(), uuids=common.MINE, prefixes=[work])
    common.write_results("prepare", rows, {"python": sys.version.split()[0], "overlay": overlay,
                                           "left_behind": left})
    if left:
        print("\nLEFT BEHIND: %s" % left)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--large-mib", type=int, default=1024)
    ap.add_argument("--workdir", default=None)
    run(ap.parse_args())
