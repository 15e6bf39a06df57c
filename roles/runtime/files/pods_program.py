"""Build the host's pod restore program on the controller: one zip of this collection's
runtime library (module_utils' stage0 and stage1, which never import ansible) with a
``__main__`` that runs stage0/boot.py, so python3 alone runs it on a host.

The zip also carries the modules and the module_utils files beside stage0 and stage1 (the
module glue, which imports ansible and which the boot program never imports): the action
plugins then send a host that has exactly this zip a payload of ping's size that imports
them from it (plugins/plugin_utils/thin_module.py), instead of all these sources again.

Sources only, fixed timestamps and order: the same collection always gives the same bytes,
so the copy to a host reports no change, and the version directory it goes to on the host
(``<collection version>-<sha256 prefix>``) changes exactly when the program does.
Usage: python pods_program.py COLLECTION_ROOT OUT_DIR; prints {"version", "path"} as JSON.
"""
import hashlib
import io
import json
import os
import sys
import zipfile

PACKAGE = "ansible_collections/appc/rocket/plugins/module_utils/"
MODULES = "ansible_collections/appc/rocket/plugins/modules/"
MAIN = (b"import sys\n"
        b"from ansible_collections.appc.rocket.plugins.module_utils.stage0 import boot\n"
        b"sys.exit(boot.main(sys.argv[1:]))\n")


def version(root):
    """The collection's version: MANIFEST.json where installed, galaxy.yml in a clone."""
    try:
        with open(os.path.join(root, "MANIFEST.json")) as f:
            return json.load(f)["collection_info"]["version"]
    except (OSError, ValueError, KeyError):
        pass
    with open(os.path.join(root, "galaxy.yml")) as f:
        for line in f:
            if line.startswith("version:"):
                return line.split(":", 1)[1].strip().strip("'\"")
    raise SystemExit("no version in %s (MANIFEST.json or galaxy.yml)" % root)


def build(root):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name, data):
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            z.writestr(info, data)

        add("__main__.py", MAIN)
        parts = PACKAGE.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            add("/".join(parts[:i]) + "/__init__.py", b"")
        add(MODULES + "__init__.py", b"")
        for path, name in sources(root):
            with open(path, "rb") as f:
                add(name, f.read())
    return buf.getvalue()


def sources(root):
    """(file, name in the zip) of every source the zip carries, in the zip's order."""
    out = []
    for folder, prefix in ((os.path.join(root, "plugins", "modules"), MODULES),
                           (os.path.join(root, "plugins", "module_utils"), PACKAGE)):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".py") and name != "__init__.py":
                out.append((os.path.join(folder, name), prefix + name))
    lib = os.path.join(root, "plugins", "module_utils")
    for sub in ("stage0", "stage1"):
        for name in sorted(os.listdir(os.path.join(lib, sub))):
            if name.endswith(".py"):
                out.append((os.path.join(lib, sub, name), PACKAGE + sub + "/" + name))
    return out


def main(argv):
    root, out = argv
    data = build(root)
    ver = "%s-%s" % (version(root), hashlib.sha256(data).hexdigest()[:12])
    path = os.path.join(out, "appc-rocket-pods.pyz")
    with open(path, "wb") as f:
        f.write(data)
    sys.stdout.write(json.dumps({"version": ver, "path": path}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
