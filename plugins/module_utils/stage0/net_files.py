"""Named networks as files in ``<data_dir>/net.d``: what pod_network creates, lists and removes.

A network is the first definition of its name (the data directory's net.d, then
/etc/rocket/net.d, then the built-in `default`; netconf.py reads them for a start). This
module writes only the data directory's files, one per network:

* ``<name>.json``: rocket's own format (docs/networking.md), checked by netconf.validate;
* ``<name>.conflist``: a CNI network configuration list ({"cniVersion", "name", "plugins"}),
  executed by the CNI plugins at start (stage1's CNI runner reads it).

Two networks are the same when their normal forms are (netconf.validate's for ours, the
document for CNI), so a file written by hand with defaults spelled out is not rewritten.
A network is in use while a pod (in any state, until gc removes it) names it in its run
options (spec.json), in its network plan (net.json) or holds an address on it (ipam); such a
network is never removed. Changes are made under the data directory's network lock.
"""
import json
import os

from ..stage1 import contract
from . import ipam, netconf
from .datadir import DataDir
from .errors import InUseError, RocketError, ValidationError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

CNI_EXTS = (".conflist", ".conf")
DEFAULT_CNI_VERSION = "1.0.0"


def conf_dir(dd: DataDir) -> str:
    return os.path.join(dd.path, "net.d")


def _read(path: str) -> "Any":
    try:
        with open(path, "rb") as f:
            return json.loads(f.read(1 << 16).decode("utf-8"))
    except (OSError, ValueError) as e:
        raise RocketError("network configuration %s: %s" % (path, e))


def _files(d: str) -> "List[Tuple[str, str, Any]]":
    """[(name, path, document)] of a directory's network files (sorted, as netconf reads them)."""
    try:
        names = sorted(n for n in os.listdir(d) if n.endswith((".json",) + CNI_EXTS) and not n.startswith("."))
    except FileNotFoundError:
        return []
    out = []
    for n in names:
        path = os.path.join(d, n)
        doc = _read(path)
        name = doc.get("name") if isinstance(doc, dict) else None
        if not isinstance(name, str):
            raise ValidationError("%s: name" % path, name, "is missing: a network configuration names its network")
        out.append((name, path, doc))
    return out


def kind_of(path: "Optional[str]", doc: "Any") -> str:
    if path is not None and path.endswith(CNI_EXTS):
        return "cni"
    return doc.get("type", "ptp") if isinstance(doc, dict) else "ptp"


def desired_cni(name: str, cni: "Dict[str, Any]") -> "Dict[str, Any]":
    """The conflist pod_network writes for `cni` (the list without its name), checked."""
    if not isinstance(cni, dict):
        raise ValidationError("cni", cni, "must be a CNI network configuration list (a dict with plugins)")
    if "name" in cni and cni["name"] != name:
        raise ValidationError("cni.name", cni["name"], "differs from the network's name %s" % name)
    plugins = cni.get("plugins")
    if not isinstance(plugins, list) or not plugins:
        raise ValidationError("cni.plugins", plugins, "must be a non-empty list of plugin configurations")
    for i, p in enumerate(plugins):
        if not isinstance(p, dict) or not isinstance(p.get("type"), str) or not p["type"] \
                or "/" in p["type"] or p["type"] in (".", ".."):
            raise ValidationError("cni.plugins[%d].type" % i, p.get("type") if isinstance(p, dict) else p,
                                  "must name a plugin (a file name in the CNI plugin path)")
    version = cni.get("cniVersion", DEFAULT_CNI_VERSION)
    if not isinstance(version, str) or not version:
        raise ValidationError("cni.cniVersion", version, "must be a version string such as 1.0.0")
    check_name(name)
    return dict(cni, name=name, cniVersion=version)


def check_name(name: "Any") -> None:
    from .schema import validate_ac_name

    validate_ac_name(name, "name")
    if name in ("host", "none"):
        raise ValidationError("name", name, "is reserved (net: host and none are not networks)")


def desired(name: str, settings: "Dict[str, Any]") -> "Dict[str, Any]":
    """Our own format's document for the given settings (None: not given), checked."""
    doc = {"name": name}
    doc.update((k, v) for k, v in settings.items() if v is not None)
    netconf.validate(doc, "%s.json" % name)
    return doc


def same(path: "Optional[str]", doc: "Any", new_kind: str, new_doc: "Dict[str, Any]") -> bool:
    """Whether the file's network is the one asked for (normal forms compared)."""
    if kind_of(path, doc) == "cni" or new_kind == "cni":
        return kind_of(path, doc) == new_kind == "cni" and doc == new_doc
    try:
        return netconf.validate(doc, path or "x") == netconf.validate(new_doc, "x")
    except ValidationError:
        return False


def find(dd: DataDir, name: str) -> "Tuple[Optional[str], Any, List[str]]":
    """(path, document, other data-directory files defining name) of the network's
    definition in force; path None for the built-in default or an unknown name."""
    mine = [(p, d) for n, p, d in _files(conf_dir(dd)) if n == name]
    if mine:
        return mine[0][0], mine[0][1], [p for p, dummy_d in mine[1:]]
    for n, p, d in _files(netconf.SYSTEM_CONF_DIR):
        if n == name:
            return p, d, []
    if name == "default":
        return None, dict(netconf.DEFAULT_NETWORK), []
    return None, None, []


def users(dd: DataDir, name: str) -> "List[str]":
    """UUIDs of the pods (any state, until gc) that name the network or hold an address on it."""
    from . import pod as podmod

    out = set(u for k, u in ipam.held(dd).items() if k.split("/")[0] == name)
    for p in podmod.list_pods(dd):
        try:
            run = (p.spec().get("run") or {}).get("net")
        except (OSError, ValueError, RocketError):
            run = None
        if isinstance(run, str) and name in run.split(","):
            out.add(p.uuid)
        try:
            plan = p.read_json(contract.NET, 1 << 20)
        except (OSError, ValueError, RocketError):
            continue
        for n in plan.get("networks") or () if isinstance(plan, dict) else ():
            if isinstance(n, dict) and n.get("name") == name:
                out.add(p.uuid)
    return sorted(u for u in out if u)


def record(dd: DataDir, name: str) -> "Optional[Dict[str, Any]]":
    """What pod_network returns for a network, or None when there is none of that name."""
    path, doc, dummy_others = find(dd, name)
    if doc is None:
        return None
    return {"name": name, "kind": kind_of(path, doc), "file": path, "config": doc,
            "managed": path is not None and os.path.dirname(path) == conf_dir(dd), "used_by": users(dd, name)}


def list_networks(dd: DataDir) -> "List[Dict[str, Any]]":
    names = {n for d in (conf_dir(dd), netconf.SYSTEM_CONF_DIR) for n, dummy_p, dummy_d in _files(d)}
    names.add("default")
    return [r for r in (record(dd, n) for n in sorted(names)) if r is not None]


def _write(path: str, doc: "Dict[str, Any]") -> None:
    from .fsutil import atomic_write

    atomic_write(path, (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode(), 0o644)


def target(dd: DataDir, name: str, kind: str) -> str:
    """The file pod_network writes for a network."""
    return os.path.join(conf_dir(dd), name + (".conflist" if kind == "cni" else ".json"))


def ensure(dd: DataDir, name: str, kind: str, doc: "Dict[str, Any]", dry_run: bool = False) -> "Tuple[bool, Any]":
    """Make the data directory define network name as doc; (changed, the document before)."""
    if not dry_run:
        dd.ensure()
    with _lock(dd, dry_run):
        path, before, others = find(dd, name)
        managed = path is not None and os.path.dirname(path) == conf_dir(dd)
        if managed and not others and same(path, before, kind, doc):
            return False, before
        if dry_run:
            return True, before if managed else None
        os.makedirs(conf_dir(dd), 0o755, exist_ok=True)
        path_to = target(dd, name, kind)
        _write(path_to, doc)
        for p in ([path] if managed and path else []) + others:
            if p != path_to:
                os.unlink(p)
        return True, before if managed else None


def remove(dd: DataDir, name: str, dry_run: bool = False) -> "Tuple[bool, Any]":
    """Remove the data directory's definition of name unless a pod uses the network
    (InUseError names the pods); (changed, the document before)."""
    with _lock(dd, dry_run or not os.path.isdir(conf_dir(dd))):
        path, before, others = find(dd, name)
        if path is None or os.path.dirname(path) != conf_dir(dd):
            if path is not None:
                raise RocketError("network %s is defined in %s, outside the data directory: pod_network manages only "
                                  "%s; remove that file by hand" % (name, path, conf_dir(dd)))
            return False, None
        using = users(dd, name)
        if using:
            raise InUseError("network %s is used by pod%s %s: remove %s first (pod_gc removes exited pods)"
                             % (name, "s" if len(using) > 1 else "", ", ".join(using),
                                "them" if len(using) > 1 else "it"))
        if dry_run:
            return True, before
        for p in [path] + others:
            os.unlink(p)
        ipam_dir = os.path.join(ipam.net_dir(dd), "ipam", name)
        try:  # the pool's round-robin cursor goes too (no address is held: not in use)
            os.unlink(os.path.join(ipam_dir, "last"))
            os.rmdir(ipam_dir)
        except OSError:
            pass
        return True, before


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: "Any") -> None:
        return None


def _lock(dd: DataDir, dry_run: bool) -> "Any":
    """The data directory's network lock (a start's allocation takes it too); none for a dry
    run, which must not create the data directory."""
    return _NoLock() if dry_run else ipam.NetLock(dd)
