"""Rewrite the module documentation that Ansible cannot take from a doc fragment.

- pod_set's item suboptions, from pod_run's and cas_image's options;
- the pod that pod_run and pod_prepare return (RETURN ``pod.contains``), from the pods
  pod_info returns: all three describe a pod with the same function (converge.describe).

Run it after changing one of the sources; tests/unit/test_module_docs.py says when.
Usage: .venv/bin/python tools/module_docs.py
"""
import json
import os
import re
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODULES = os.path.join(ROOT, "plugins", "modules")
MODULE = os.path.join(MODULES, "pod_set.py")
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


def pod_set_items():
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


def _return_block(src):
    start = src.index('RETURN = r"""\n')
    return start, src.index('"""\n', start + 14)


def pod_fields(info_src):
    """The lines under pod_info's ``pods: contains:``, as pod_run and pod_prepare word them."""
    start, end = _return_block(info_src)
    ret = info_src[start:end]
    lines = ret[ret.index("\n  contains:\n") + len("\n  contains:\n"):]
    return lines.replace("(O(log_lines) lines)", "(20 lines)")


def pod_returns():
    with open(os.path.join(MODULES, "pod_info.py")) as f:
        fields = pod_fields(f.read())
    for name in ("pod_run", "pod_prepare"):
        path = os.path.join(MODULES, name + ".py")
        with open(path) as f:
            src = f.read()
        start, end = _return_block(src)
        ret = re.sub(r"(\npod:\n(?:  .*\n)*?  contains:\n)(?:    .*\n)*", lambda m: m.group(1) + fields,
                     src[start:end], count=1)
        with open(path, "w") as f:
            f.write(src[:start] + ret + src[end:])


def main():
    pod_set_items()
    pod_returns()


if __name__ == "__main__":
    main()
