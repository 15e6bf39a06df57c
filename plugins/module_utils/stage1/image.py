"""The stage1 image's content, built the same on every host from this package's sources.

files() maps paths in the image's rootfs to their bytes: the package under `stage1/`
and the launchers `init`, `enter`, `gc`, `keeper`, `pid1` (contract.LAUNCHERS); manifest() is the image manifest. Sources are
read through the package's loader, so this works from a zip (Ansiballz) as well.
"""
import os

from . import contract


def _package():  # pragma: no cover - never called
    """The package's modules: the one list, read two ways.

    Ansiballz ships a module_utils file with a module only when an import names it (it
    reads imports from the source, in functions never called too), so this import makes
    every module that builds the image carry the whole package. MODULES below is the same
    names, in this fixed order (the image must not depend on listing a directory, which a
    zip import cannot do anyway). A new module goes here; tests/unit/test_stage1_unit.py
    checks that this is exactly the package's files and what its programs import.
    """
    from . import (app, cgroups, cni, contract, devices_bpf, enter, firewall, gc, health, hostdevices, image,  # noqa: F401
                   init, isolators, jsonlite, keeper, keeping, landlock, launch, linkguard, linux, logsink, mounts, net,
                   netlink, paths, peers, pid1, pod, seccomp, secrets, syscalls, userns, users, volumes)


# co_names of the function above: "" (the package, for `from .`) and then the names imported.
MODULES = ("__init__",) + tuple(name for name in _package.__code__.co_names if name)


def _source(module):
    return package_source(__file__, globals().get("__loader__"), module)


def package_source(anchor: str, loader: object, module: str) -> bytes:
    """The bytes of ``module``.py beside the file ``anchor``, through its package's loader
    first: under Ansiballz the sources are in a zip, not on disk."""
    path = os.path.join(os.path.dirname(os.path.abspath(anchor)), module + ".py")
    get_data = getattr(loader, "get_data", None)
    if get_data is not None:
        try:
            return get_data(path)
        except OSError:
            pass
    with open(path, "rb") as f:
        return f.read()


def sources():
    """{path in rootfs: bytes} — the package's sources and the launchers."""
    out = {}
    for name in MODULES:
        out["stage1/%s.py" % name] = _source(name)
    for name, text in contract.LAUNCHERS.items():
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
        "name": contract.IMAGE_NAME,
        "labels": [{"name": "version", "value": contract.INTERFACE_VERSION}],
        "annotations": [{"name": contract.ENTRYPOINT_ANNOTATIONS[ep], "value": path}
                        for ep, path in contract.ENTRYPOINTS.items()]
        + [{"name": contract.INTERFACE_ANNOTATION, "value": contract.INTERFACE_VERSION}],
    }
