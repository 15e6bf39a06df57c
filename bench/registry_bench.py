"""bench/registry: pulling from a local registry, against podman and skopeo in the same run.

One Debian docker-registry on 127.0.0.1 (plain http, so no peer pays for TLS the others do
not), an image of 10 gzip layers pushed with skopeo, and the same pull three ways, each a
whole cold command into an empty store, median of --runs:
  podman pull                    (its own empty --root each run; overlay storage)
  skopeo copy docker://... dir:  (only downloading and checking the blobs)
  ours                           a fresh python that pulls into an empty store: download,
                                 flatten into one ACI, import and render
Then, in a warm store:
  re-pull of the unchanged tag   a cas_image task with pull=always (one HEAD) against a
                                 `ping` task, each the marginal cost of one task in a playbook
  a second image sharing 9 of its 10 layers: what was downloaded (layers, bytes).
As root, this collection's library is laid out as the runtime role installs it
(tests/support/thin_library.py), so cas_image runs from it as on a host the role set up;
``--no-library``: the full payload.
Usage: python bench/registry_bench.py [--runs N] [--layer-kib K] [--tasks T] [--no-peers] [--no-library]
"""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile

import common  # first: the checkout importable (bench/common.py)

from tests.support import registry as R
from tests.support.ansible_run import env as ansible_env

PULL = """
import json, sys
sys.path.insert(0, %r)
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_pull
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
with Store(sys.argv[1]) as s:
    rec, changed, info = registry_pull.pull(s, sys.argv[2], registry_pull.Options(insecure=True))
    s.render(rec["id"])
print(json.dumps(info))
""" % common.COLLECTIONS

PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
%s
"""


def layer_files(rng, i, kib):
    """Half random, half text: compresses about 2:1, as binaries and data do."""
    n = kib << 10
    text = (b"appc rocket layer %d\n" % i) * (n // 40)
    return {"opt/layer%02d/data" % i: rng.randbytes(n - len(text)) + text}


EXTRA = []  # -e rocket_runtime_library_dir=... when the library is laid out


def playbook_seconds(work, tasks):
    path = os.path.join(work, "play.yml")
    with open(path, "w") as f:
        f.write(PLAY % ("\n".join(tasks) if tasks else "    []"))
    cmd = [os.path.join(os.path.dirname(sys.executable), "ansible-playbook"), "-i", "localhost,", "-c", "local", path]
    return common.timed(cmd + EXTRA, env=ansible_env())


def run(args):
    with common.host_library(args.no_library) as extra:
        EXTRA[:] = extra
        run_with(args)


def run_with(args):
    work = tempfile.mkdtemp(prefix="rocket-bench-registry-", dir=args.workdir)
    rows = []
    reg = None
    try:
        reg = R.start_registry(os.path.join(work, "registry"), tls=False)
        rng = random.Random(3)
        base = [layer_files(rng, i, args.layer_kib) for i in range(10)]
        layout_a = R.build_layout(os.path.join(work, "a"), base)
        layout_b = R.build_layout(os.path.join(work, "b"), base[:9] + [layer_files(rng, 99, args.layer_kib)])
        R.skopeo_push(layout_a, reg, "bench/ten:1")
        R.skopeo_push(layout_b, reg, "bench/nine-shared:1")
        ref = reg.ref("bench/ten:1")
        compressed = sum(os.path.getsize(os.path.join(layout_a, "blobs", "sha256", n))
                         for n in os.listdir(os.path.join(layout_a, "blobs", "sha256")))

        times = {"ours": [], "podman": [], "skopeo": []}
        peers = not args.no_peers and not any(common.have_debian_packages(["podman"]).values())
        for dummy in range(args.runs):
            data = os.path.join(work, "data")
            times["ours"].append(common.timed([sys.executable, "-c", PULL, data, ref]))
            shutil.rmtree(data)
            out = os.path.join(work, "dir")
            times["skopeo"].append(common.timed(["skopeo", "--registries-conf", "/dev/null", "copy", "--quiet",
                                                 "--src-tls-verify=false", ref, "dir:" + out]))
            shutil.rmtree(out)
            if peers:
                root, runroot = os.path.join(work, "podman-root"), os.path.join(work, "podman-run")
                before = common.host_state()
                podman = ["podman", "--root", root, "--runroot", runroot, "--storage-driver", "overlay"]
                times["podman"].append(common.timed(podman + ["pull", "--quiet", "--tls-verify=false", ref]))
                subprocess.run(podman + ["rmi", "-a", "-f"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               check=False)
                common.undo_podman_mounts(before)
                for d in (root, runroot):
                    subprocess.run(["umount", "-R", os.path.join(d, "overlay")], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, check=False)
                    shutil.rmtree(d, ignore_errors=True)
        med = {k: common.median(v) if v else None for k, v in times.items()}
        rows.append({"case": "cold pull, 10 layers", "compressed_mib": round(compressed / 2**20, 1),
                     "ours_s": round(med["ours"], 3), "skopeo_dir_s": round(med["skopeo"], 3),
                     "podman_s": round(med["podman"], 3) if med["podman"] else None,
                     "ours_vs_podman": round(med["ours"] / med["podman"], 2) if med["podman"] else None,
                     "ours_vs_skopeo": round(med["ours"] / med["skopeo"], 2), "runs": args.runs})

        # Warm store: the re-pull task against ping, and the image sharing 9 layers.
        data = os.path.join(work, "warm")
        subprocess.run([sys.executable, "-c", PULL, data, ref], check=True)
        task = ("    - appc.rocket.cas_image: {src: '%s', pull: always, insecure: [http], data_dir: '%s'}"
                % (ref, data))
        ping = "    - ansible.builtin.ping:"
        empty = common.median([playbook_seconds(work, []) for dummy in range(args.runs)])
        t_ping = common.median([playbook_seconds(work, [ping] * args.tasks) for dummy in range(args.runs)])
        mark = reg.mark()
        t_pull = common.median([playbook_seconds(work, [task] * args.tasks) for dummy in range(args.runs)])
        served = [e for e in reg.access_log(mark) if e["path"] != "/v2/"]
        per_ping = (t_ping - empty) / args.tasks
        per_pull = (t_pull - empty) / args.tasks
        rows.append({"case": "re-pull of an unchanged tag (cas_image pull=always)",
                     "per_task_ms": common.ms(per_pull), "ping_per_task_ms": common.ms(per_ping),
                     "ratio_to_ping": round(per_pull / per_ping, 2),
                     "requests_per_task": round(len(served) / (args.tasks * args.runs), 2),
                     "blob_gets": len([e for e in served if "/blobs/" in e["path"]]), "tasks": args.tasks})

        mark = reg.mark()
        out = subprocess.run([sys.executable, "-c", PULL, data, reg.ref("bench/nine-shared:1")], check=True,
                             capture_output=True, text=True)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        gets = reg.blob_gets(mark)
        rows.append({"case": "second image sharing 9 of 10 layers",
                     "layers_downloaded": info["layers"]["downloaded"], "layers_total": info["layers"]["total"],
                     "layer_blob_gets": len([g for g in gets if g != info["config"]]),
                     "mib_downloaded": round(info["bytes"]["downloaded"] / 2**20, 2),
                     "mib_reused": round(info["bytes"]["reused"] / 2**20, 2)})
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    library = "installed as the runtime role does" if EXTRA else "none (full payload)"
    common.write_results("registry", rows, {"python": sys.version.split()[0], "layer_kib": args.layer_kib,
                                            "rocket_library": library})
    cold, again, shared = rows
    print(common.table(["cold pull, 10 layers (%s MiB gzip)" % cold["compressed_mib"], "seconds"],
                       [["ours (pull + flatten + import + render)", cold["ours_s"]],
                        ["podman pull", cold["podman_s"]], ["skopeo copy ... dir:", cold["skopeo_dir_s"]],
                        ["ours / podman", cold["ours_vs_podman"]], ["ours / skopeo", cold["ours_vs_skopeo"]]]))
    print(common.table(["re-pull, unchanged tag", "ms per task"],
                       [["cas_image pull=always", again["per_task_ms"]], ["ping", again["ping_per_task_ms"]],
                        ["ratio", again["ratio_to_ping"]], ["registry requests per task", again["requests_per_task"]],
                        ["blob GETs", again["blob_gets"]]]))
    print(common.table(["second image, 9 of 10 layers shared", "value"],
                       [["layers downloaded", "%d of %d" % (shared["layers_downloaded"], shared["layers_total"])],
                        ["MiB downloaded", shared["mib_downloaded"]], ["MiB reused", shared["mib_reused"]]]))
    print("medians of %d runs; the host's library: %s" % (args.runs, library))


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--layer-kib", type=int, default=4096, help="uncompressed size of each of the 10 layers")
    ap.add_argument("--tasks", type=int, default=10, help="tasks per playbook for the re-pull figure")
    ap.add_argument("--no-peers", action="store_true", help="no podman (skopeo is a test dependency anyway)")
    ap.add_argument("--no-library", action="store_true", help="no library on the host: the full payload")
    ap.add_argument("--workdir", default=None)
    run(ap.parse_args())
