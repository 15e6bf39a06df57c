"""Rewrite the item suboptions in plugins/modules/pod_set.py from pod_run's and cas_image's docs.

Ansible takes no doc fragment for suboptions, so pod_set repeats them; run this after
changing an option of pod_run or cas_image (tests/unit/test_pod_set_docs.py says when).
Usage: .venv/bin/python tools/pod_set_doc.py
"""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULE = os.path.join(ROOT, "plugins", "modules", "pod_set.py")
ORDER = ("description", "type", "elements", "choices", "default", "required", "suboptions")


def options(name):
    env = dict(os.environ, ANSIBLE_COLLECTIONS_PATH=os.path.join(ROOT, ".build", "collections"))
    out = subprocess.run([sys.executable, "-m", "ansible.cli.doc", "-j", "appc.rocket." + name],
                         env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out)["appc.rocket." + name]["doc"]["options"]


def clean(opts, prefix, names, drop=()):
    """The options as pod_set documents them: references point into the list's items."""
    def text(t):
        t = re.sub(r"O\(([a-z_]+)((?:\[\]\.[a-z_]+)*(?:=[^)]*)?)\)",
                   lambda m: "O(%s[].%s%s)" % (prefix, m.group(1), m.group(2)) if m.group(1) in names else m.group(0), t)
        return re.sub(r"RV\(([^)]*)\)", r"C(\1)", t)

    out = {}
    for k in sorted(opts):
        if k in drop:
            continue
        d = {}
        for key in ORDER:
            if key in opts[k]:
                v = opts[k][key]
                if key == "description":
                    v = [text(x) for x in (v if isinstance(v, list) else [v])]
                elif key == "suboptions":
                    v = clean(v, prefix, names)
                d[key] = v
        out[k] = d
    return out


def block(opts):
    s = yaml.safe_dump(opts, sort_keys=False, width=100, default_flow_style=False)
    return "    suboptions:\n" + "".join(("      " + line if line else "") + "\n" for line in s.splitlines())


def main():
    run, cas = options("pod_run"), options("cas_image")
    # O(data_dir) stays a reference to pod_set's own data_dir.
    pods = clean(run, "pods", set(run) - {"data_dir", "uuid"}, drop=("data_dir", "uuid"))
    pods["name"] = {"description": ["The pod's name (an AC Name). Every item names its pod."], "type": "str",
                    "required": True}
    images = clean(cas, "images", set(cas) - {"data_dir"}, drop=("data_dir",))
    with open(MODULE) as f:
        src = f.read()
    src = re.sub(r"(  images:\n(?:    (?!suboptions:).*\n)*)    suboptions:\n(?:      .*\n|\n)*",
                 lambda m: m.group(1) + block(images), src, count=1)
    src = re.sub(r"(  pods:\n(?:    (?!suboptions:).*\n)*)    suboptions:\n(?:      .*\n|\n)*",
                 lambda m: m.group(1) + block(pods), src, count=1)
    with open(MODULE, "w") as f:
        f.write(src)


if __name__ == "__main__":
    main()
