"""bench/import: importing (hash + store + render) two generated gzip ACIs.

Baselines measured in the same run, on the same file, page cache dropped before each run:
  gzip -dc | sha512sum     what only hashing the image costs
  tar -xzf + sync          what only unpacking it durably costs (our import syncs too)
Ours: a fresh `python -c` that imports the file into an empty store (cold, whole command).
Every row gives wall time and CPU time (user+sys of the command and its children).
Usage: python bench/import_bench.py [--runs N] [--large-mib 300] [--small-files 20000] [--keep-cache]
                                    [--against DIR]
(--keep-cache: leave the page cache alone, for smoke runs on a machine others use;
--against DIR: also import with the collection under DIR/ansible_collections (e.g. a copy of
main's code), interleaved with ours in the same rounds, for A/B measurements.)
"""
import argparse
import os
import random
import resource
import shutil
import sys
import tempfile

import common  # first: the checkout importable (bench/common.py)

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci

IMPORT = """
import sys
sys.path.insert(0, %r)
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
Store(sys.argv[1]).import_file(sys.argv[2])
"""


def timed_cpu(cmd):
    """(wall, cpu) seconds of a command; cpu is user+sys of it and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = common.timed(cmd)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def chunk(rng, n):
    """Half random, half text-like: compresses about 2:1 like real binaries and data."""
    words = [b"appc", b"rocket", b"pod", b"image", b"stage1", b"overlay", b"tree", b"\n"]
    half = n // 2
    text = b" ".join(rng.choice(words) for dummy in range(half // 6 + 1))[:half]
    return rng.randbytes(n - len(text)) + text


def make_large(root, mib):
    rng = random.Random(1)
    os.makedirs(os.path.join(root, "opt/data"))
    per = 8
    for i in range(per):
        with open(os.path.join(root, "opt/data/blob%d" % i), "wb") as f:
            left = (mib << 20) // per
            while left:
                n = min(left, 4 << 20)
                f.write(chunk(rng, n))
                left -= n


def make_small(root, count):
    rng = random.Random(2)
    for i in range(count):
        d = os.path.join(root, "usr/share/d%03d" % (i // 100))
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "f%05d" % i), "wb") as f:
            f.write(chunk(rng, rng.randint(200, 8000)))


def manifest(name):
    return {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": name,
            "app": {"exec": ["/bin/true"], "user": "0", "group": "0"}}


def run(args):
    work = tempfile.mkdtemp(prefix="rocket-bench-", dir=args.workdir)
    rows = []
    try:
        cases = [("large (%d MiB, 8 files)" % args.large_mib, make_large, args.large_mib),
                 ("small (%d files)" % args.small_files, make_small, args.small_files)]
        for label, maker, size in cases:
            src = os.path.join(work, "src")
            maker(os.path.join(src, "rootfs-src"), size)
            path = os.path.join(work, "image.aci")
            aci.build_aci(os.path.join(src, "rootfs-src"), manifest("example.com/bench"), path)
            shutil.rmtree(src)
            variants = [("hash", ["sh", "-c", "gzip -dc %s | sha512sum" % path], None),
                        ("tar", ["sh", "-c", "tar -xzf %s -C %s && sync" % (path, os.path.join(work, "out"))],
                         os.path.join(work, "out")),
                        ("ours", [sys.executable, "-c", IMPORT % common.COLLECTIONS, os.path.join(work, "data"),
                                  path], os.path.join(work, "data"))]
            if args.against:
                variants.append(("against", [sys.executable, "-c", IMPORT % args.against,
                                             os.path.join(work, "data"), path], os.path.join(work, "data")))
            times = {name: [] for name, dummy_cmd, dummy_out in variants}
            cpu = {name: [] for name, dummy_cmd, dummy_out in variants}
            drop = (lambda: False) if args.keep_cache else common.drop_caches
            dropped = False
            for dummy in range(args.runs):
                for name, cmd, out in variants:
                    if name == "tar":
                        os.mkdir(out)
                    dropped = drop()
                    wall, used = timed_cpu(cmd)
                    times[name].append(wall)
                    cpu[name].append(used)
                    if out:
                        shutil.rmtree(out)
            med = {k: common.median(v) for k, v in times.items()}
            mcpu = {k: common.median(v) for k, v in cpu.items()}
            row = {"image": label, "compressed_mib": round(os.path.getsize(path) / 2**20, 1),
                   "hash_s": round(med["hash"], 3), "tar_sync_s": round(med["tar"], 3),
                   "ours_s": round(med["ours"], 3),
                   "ours_vs_tar": round(med["ours"] / med["tar"], 2),
                   "ours_vs_hash": round(med["ours"] / med["hash"], 2),
                   "hash_cpu_s": round(mcpu["hash"], 3), "tar_cpu_s": round(mcpu["tar"], 3),
                   "ours_cpu_s": round(mcpu["ours"], 3),
                   "runs": args.runs, "page_cache_dropped": dropped, "load": os.getloadavg()[0]}
            if args.against:
                row.update(against_s=round(med["against"], 3), against_cpu_s=round(mcpu["against"], 3),
                           against_vs_tar=round(med["against"] / med["tar"], 2))
            rows.append(row)
            os.unlink(path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    common.write_results("import", rows, {"python": sys.version.split()[0], "against": args.against})
    against = [("--against", "against")] if args.against else []
    print(common.table(["image", "gzip MiB", "gzip -dc | sha512sum", "tar -xzf + sync", "ours (import+render)"]
                       + [h for h, dummy in against] + ["ours / tar"] + [h + " / tar" for h, dummy in against]
                       + ["ours / hash", "load"],
                       [[r["image"], r["compressed_mib"], "%s (cpu %s)" % (r["hash_s"], r["hash_cpu_s"]),
                         "%s (cpu %s)" % (r["tar_sync_s"], r["tar_cpu_s"]),
                         "%s (cpu %s)" % (r["ours_s"], r["ours_cpu_s"])]
                        + ["%s (cpu %s)" % (r[k + "_s"], r[k + "_cpu_s"]) for dummy, k in against]
                        + [r["ours_vs_tar"]] + [r[k + "_vs_tar"] for dummy, k in against]
                        + [r["ours_vs_hash"], round(r["load"], 2)] for r in rows]))
    print("medians of %d runs, seconds (wall, and cpu: user+sys of the command's tree); page cache dropped: %s"
          % (args.runs, rows[0]["page_cache_dropped"]))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--large-mib", type=int, default=300)
    ap.add_argument("--small-files", type=int, default=20000)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--keep-cache", action="store_true", help="do not drop the page cache before each run")
    ap.add_argument("--against", default=None,
                    help="a directory holding ansible_collections/appc/rocket to import with too, interleaved")
    run(ap.parse_args())
