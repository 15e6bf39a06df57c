"""bench/payload: what the controller pays to build a module's payload, and what it carries.

The first task of a module in a playbook run makes the controller build that module's
Ansiballz payload: it parses every module_utils file the module reaches (imports inside
functions count too) and zips them. For the pods role, whose one task is pod_set, that
build is most of the gap to a playbook of one ping task: the module's own run on the host
costs little more than ping's. This times the build cold, each module in a fresh process
(after building another module, so all pay the same interpreter and Ansible warm-up), and splits the payload
into Ansible's files, stage0, the stage1 modules stage0 imports, and the stage1 modules
that ride along only so that a fresh host can build the stage1 image (stage1/image.py).
The thin payload (``thin``: plugins/plugin_utils/thin_module.py, what the action plugins
send a host that has the runtime role's library) is timed beside them.
Usage: python bench/payload_bench.py [--runs 5] [module ...]
"""
import argparse
import base64
import io
import json
import os
import re
import subprocess
import sys
import zipfile

import common  # first: the checkout importable (bench/common.py)

WARM_UP = "ansible.builtin.command"
BUILD = r"""
import json, sys, time
from ansible.plugins.loader import init_plugin_loader, module_loader
init_plugin_loader([sys.argv[1]])
from ansible.executor import module_common
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar
out = {}
for name in sys.argv[2:]:
    if name == "thin":  # what the action plugins send a host with the library (module_action.py)
        from ansible_collections.appc.rocket.plugins.plugin_utils import module_action, thin_module
        fqcn, path = module_action.THIN_NAME, thin_module.__file__
    else:
        ctx = module_loader.find_plugin_with_context(name)
        fqcn, path = ctx.resolved_fqcn, ctx.plugin_resolved_path
    t = time.perf_counter()
    built = module_common.modify_module(module_name=fqcn, module_path=path,
                                        module_args={}, templar=Templar(loader=DataLoader()),
                                        task_vars={"ansible_python_interpreter": sys.executable},
                                        module_compression="ZIP_DEFLATED")
    out[name] = {"build_s": time.perf_counter() - t, "payload": built.b_module_data.decode("utf-8")}
json.dump(out, sys.stdout)
"""


def image_only():
    """The stage1 modules that only stage1/image.py's package list brings into a payload."""
    import ast

    base = os.path.join(common.ROOT, "plugins", "module_utils")

    def stage1_imports(path):
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and node.name == "_package":
                node.body = []  # the list that exists only to make Ansiballz ship the package
        out = set()
        in_stage1 = os.path.basename(os.path.dirname(path)) == "stage1"
        for node in ast.walk(tree):
            if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").startswith("ansible_")):
                continue  # launch's `from stage1 import init` runs inside the image: Ansiballz does not follow it
            mod = node.module or ""
            if mod.endswith("stage1") or (in_stage1 and node.level == 1 and not mod):
                out.update(a.name for a in node.names)
            elif "stage1." in mod or (in_stage1 and node.level == 1):
                out.add(mod.rsplit(".", 1)[-1])
        return out

    todo = set()
    for dirpath, dummy, files in os.walk(base):
        if os.path.basename(dirpath) != "stage1":
            for f in files:
                if f.endswith(".py"):
                    todo |= stage1_imports(os.path.join(dirpath, f))
    seen = set()
    while todo:
        m = todo.pop()
        if m in seen or not os.path.exists(os.path.join(base, "stage1", m + ".py")):
            continue
        seen.add(m)
        todo |= stage1_imports(os.path.join(base, "stage1", m + ".py"))
    return {f[:-3] for f in os.listdir(os.path.join(base, "stage1")) if f.endswith(".py")} - seen - {"__init__"}


def split(payload, only):
    data = base64.b64decode(re.search(r"zip_data='([^']*)'", payload).group(1))
    parts = {"ansible": 0, "collection, not stage0/stage1": 0, "stage0": 0, "stage1, imported by stage0": 0,
             "stage1, for the image only": 0}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for i in z.infolist():
            f = i.filename
            if not f.startswith("ansible_collections/"):
                parts["ansible"] += i.file_size
            elif "/stage0/" in f:
                parts["stage0"] += i.file_size
            elif "/stage1/" in f:
                mod = f.rsplit("/", 1)[1][:-3]
                parts["stage1, for the image only" if mod in only else "stage1, imported by stage0"] += i.file_size
            else:
                parts["collection, not stage0/stage1"] += i.file_size
    return parts, len(payload)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("modules", nargs="*", default=["appc.rocket.pod_run", "appc.rocket.pod_set"])
    a = ap.parse_args()
    names = ["ansible.builtin.ping", "thin"] + a.modules
    times = {n: [] for n in names}
    last = {}
    for dummy in range(a.runs):
        for n in names:  # each in a fresh process, after a build of another module that warms Ansible up
            p = subprocess.run([sys.executable, "-c", BUILD, common.COLLECTIONS, WARM_UP, n],
                               stdout=subprocess.PIPE, check=True, text=True)
            last[n] = json.loads(p.stdout)[n]
            times[n].append(last[n]["build_s"])
    only = image_only()
    rows = []
    for n in names:
        parts, size = split(last[n]["payload"], only)
        rows.append(dict({"module": n, "build_ms": round(common.median(times[n]) * 1000, 1), "payload_bytes": size},
                         **parts))
    common.write_results("payload", rows, {"runs": a.runs, "stage1_image_only": sorted(only)})
    keys = list(rows[0])
    print(common.table(keys, [[r[k] for k in keys] for r in rows]))
    print("build: median of %d cold builds (a fresh process each, after a warm-up build of %s); sizes are "
          "uncompressed sources in the payload; stage1 modules for the image only: %s" % (a.runs, WARM_UP, ", ".join(sorted(only))))


if __name__ == "__main__":
    main()
