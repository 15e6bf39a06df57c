"""The stage1 image's content, built the same on every host from this package's sources.

files() maps paths in the image's rootfs to their bytes: the package under `stage1/`
and the launchers `init`, `enter`, `gc`; manifest() is the image manifest. Sources are
read through the package's loader, so this works from a zip (Ansiballz) as well.
"""
import os

INTERFACE_VERSION = "1"
NAME = "appc.rocket/stage1"

# Every module of the package, in a fixed order (the image must not depend on listing
# a directory, which a zip import cannot do anyway).
MODULES = ("__init__", "app", "cgroups", "devices_bpf", "enter", "firewall", "gc", "image", "init", "isolators", "jsonlite",
           "keeper", "launch", "linux", "mounts", "net", "netlink", "paths", "pod", "seccomp", "syscalls",
           "userns", "users")


def _ansiballz_dependencies():
    """Never called: its import names the package's modules for Ansiballz's dependency scan,
    which ships whatever module_utils a module's imports reach, also inside functions."""
    from . import (app, cgroups, devices_bpf, enter, firewall, gc, init, isolators, jsonlite, keeper, launch, linux,
                   mounts, net, netlink, paths, pod, seccomp, syscalls, users, userns)
    return (app, cgroups, devices_bpf, enter, firewall, gc, init, isolators, jsonlite, keeper, launch, linux, mounts, net,
            netlink, paths, pod, seccomp, syscalls, users, userns)


_LAUNCHER = '''import os
import sys

sys.dont_write_bytecode = True  # the stage1 tree is read-only: never leave a __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stage1 import %s as program  # noqa: E402

sys.exit(program.main(sys.argv[1:]))
'''

LAUNCHERS = {name: _LAUNCHER % name for name in ("init", "enter", "gc", "keeper")}


def _source(module):
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, module + ".py")
    loader = globals().get("__loader__")
    if loader is not None and hasattr(loader, "get_data"):
        try:
            return loader.get_data(path)
        except OSError:
            pass
    with open(path, "rb") as f:
        return f.read()


def sources():
    """{path in rootfs: bytes} — the package's sources and the launchers."""
    out = {}
    for name in MODULES:
        out["stage1/%s.py" % name] = _source(name)
    for name, text in LAUNCHERS.items():
        out[name] = text.encode("utf-8")
    return out


def _pyc(source, name):
    """Bytecode as an unchecked-hash pyc (PEP 552): used as is, never rewritten.

    Shipping it saves compiling stage1 on every pod start, and nothing ever writes a
    __pycache__ into the store's read-only tree or a pod's upper layer.
    """
    import importlib.util
    import marshal

    code = compile(source, "stage1/%s.py" % name, "exec", dont_inherit=True)
    return (importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + importlib.util.source_hash(source)
            + marshal.dumps(code))


def files():
    """{path in rootfs: bytes} — the whole rootfs of the stage1 image (bytecode included).

    The bytecode is for the interpreter that builds the image (its cache tag names the
    files), which is the one that runs the pods.
    """
    import sys

    out = sources()
    tag = sys.implementation.cache_tag
    if tag:
        for name in MODULES:
            out["stage1/__pycache__/%s.%s.pyc" % (name, tag)] = _pyc(out["stage1/%s.py" % name], name)
    return out


def manifest():
    return {
        "acKind": "ImageManifest",
        "acVersion": "0.8.11",
        "name": NAME,
        "labels": [{"name": "version", "value": INTERFACE_VERSION}],
        "annotations": [
            {"name": "appc.rocket/stage1/run", "value": "/init"},
            {"name": "appc.rocket/stage1/enter", "value": "/enter"},
            {"name": "appc.rocket/stage1/gc", "value": "/gc"},
            {"name": "appc.rocket/stage1/keeper", "value": "/keeper"},
            {"name": "appc.rocket/stage1/interface-version", "value": INTERFACE_VERSION},
        ],
    }
