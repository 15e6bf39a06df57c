"""Named and tmpfs volumes, per-mount read_only and propagation: the spec's normal form, what
prepare writes for stage1, and the named volumes kept under <data_dir>/volumes.

appc knows only host and empty volumes. A named volume is written into the pod manifest as a
host volume whose source is its data directory, a tmpfs volume as an empty one, and what
appc has no field for rides in the pod annotation ``appc.rocket/volumes`` (as rkt kept its
own extensions in annotations): stage1 reads it there, a reader without it still sees
where every volume comes from.

A named volume is ``<data_dir>/volumes/<name>/``: ``data/`` (what pods mount) and
``volume.json`` (the options it was created with). Pods see only ``data/``, so nothing a
pod writes can change the record. Removal takes the store lock exclusively, which every
prepare holds shared until its pod is written: a volume is never removed between a
prepare's check and its pod's manifest naming it.
"""
from __future__ import annotations

import os
import time

TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

    from .datadir import DataDir

from ..stage1.contract import VOLUMES_ANNOTATION
from . import schema
from .errors import InUseError, NotFoundError, RocketError, ValidationError

KINDS = ("named", "tmpfs")
PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
MAX_ID = 4294967294


# -- the spec -----------------------------------------------------------------------------
def parse_size(value: Any, path: str) -> int:
    """Bytes from an int or docker's "64m" / "1g" / "512k" (powers of 1024)."""
    if isinstance(value, bool):
        raise ValidationError(path, value, "is not a size (bytes, or a number with k, m or g)")
    if isinstance(value, int):
        n = value
    else:
        text = str(value).strip().lower()
        if text.endswith("ib"):
            text = text[:-2]
        elif text.endswith("b") and len(text) > 1 and text[-2] in "kmgt":
            text = text[:-1]
        unit = text[-1:] if text[-1:] in "kmgtb" else ""
        digits = text[:-1] if unit else text
        if not digits.isdigit() or not digits.isascii():
            raise ValidationError(path, value, "is not a size (bytes, or a number with k, m or g)")
        n = int(digits) * _UNITS[unit]
    if n < 4096:
        raise ValidationError(path, value, "is below 4096 bytes (a tmpfs holds whole pages)")
    if n >= 1 << 63:
        raise ValidationError(path, value, "is 2^63 bytes or more")
    return n


def _mode(value: Any, path: str, default: str) -> str:
    mode = default if value is None else str(value)
    if not mode.isdigit() or any(c not in "01234567" for c in mode) or len(mode) > 4:
        raise ValidationError(path, value, "is not an octal mode")
    return mode.rjust(4, "0")


def _id(value: Any, path: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
        raise ValidationError(path, value, "must be a number from 0 to %d" % MAX_ID)
    n = int(value)
    if n > MAX_ID:
        raise ValidationError(path, value, "must be a number from 0 to %d" % MAX_ID)
    return n


def check_volume_name(value: Any, path: str) -> str:
    """A named volume's name is an AC Name: it becomes one directory under <data_dir>/volumes."""
    schema.validate_ac_name(value, path)
    if len(value) > 128:
        raise ValidationError(path, value, "is longer than 128 characters")
    return value


def normalize_volume(raw: Dict[str, Any], kind: str, path: str) -> Dict[str, Any]:
    """The fields of a named or tmpfs volume besides name, kind and read_only."""
    allowed = {"name", "kind", "read_only", "readOnly", "mode", "uid", "gid"}
    allowed |= {"volume_name"} if kind == "named" else {"size"}
    for key in sorted(raw):
        if key not in allowed and raw[key] is not None and key not in ("recursive",):
            raise ValidationError(path + "." + key, raw[key], "is not an option of a %s volume" % kind)
    out: Dict[str, Any] = {"mode": _mode(raw.get("mode"), path + ".mode", "0755" if kind == "named" else "1777"),
                           "uid": _id(raw.get("uid"), path + ".uid"), "gid": _id(raw.get("gid"), path + ".gid")}
    if kind == "named":
        out["volume_name"] = check_volume_name(raw.get("volume_name") or raw.get("name"), path + ".volume_name")
    else:
        out["size"] = None if raw.get("size") in (None, "", 0) else parse_size(raw["size"], path + ".size")
    return out


def normalize_mounts(value: Any, path: str) -> List[Dict[str, Any]]:
    """apps[].mounts: {volume, path} plus read_only and propagation only when given, so a pod
    recorded before they existed compares equal."""
    out = []
    for j, m in enumerate(value or []):
        mp = "%s.mounts[%d]" % (path, j)
        if not isinstance(m, dict) or "volume" not in m or "path" not in m:
            raise ValidationError(mp, m, "must be a dictionary {volume, path, read_only, propagation}")
        unknown = sorted(set(m) - {"volume", "path", "read_only", "propagation"})
        if unknown:
            raise ValidationError(mp + "." + unknown[0], m[unknown[0]], "is not a mount option")
        item: Dict[str, Any] = {"volume": str(m["volume"]), "path": str(m["path"])}
        ro = m.get("read_only")
        if ro is not None and not isinstance(ro, bool):
            raise ValidationError(mp + ".read_only", ro, "must be true or false")
        if ro:
            item["read_only"] = True
        prop = m.get("propagation")
        if prop is not None:
            if prop not in PROPAGATIONS:
                raise ValidationError(mp + ".propagation", prop, "must be one of %s" % ", ".join(PROPAGATIONS))
            if prop not in ("private", "rprivate"):  # the default, kept out of the normal form
                item["propagation"] = prop
        out.append(item)
    return out


def check_spec(spec: Dict[str, Any]) -> None:
    """Cross-field rules: propagation reaches only host volumes, and a mount that would let the
    pod propagate mounts onto the host (shared) needs privileged; the annotation is ours."""
    if VOLUMES_ANNOTATION in spec["annotations"]:
        raise ValidationError("annotations", VOLUMES_ANNOTATION, "is set from volumes and mounts, not by hand")
    kinds = {v["name"]: v["kind"] for v in spec["volumes"]}
    for i, a in enumerate(spec["apps"]):
        for j, m in enumerate(a["mounts"]):
            prop = m.get("propagation")
            if prop is None:
                continue
            field = "apps[%d].mounts[%d].propagation" % (i, j)
            if kinds.get(m["volume"]) != "host":
                raise ValidationError(field, prop, "applies to host volumes only (volume %s is %s: nothing on the "
                                      "host propagates into it)" % (m["volume"], kinds.get(m["volume"])))
            if prop in ("shared", "rshared") and not spec.get("privileged"):
                raise ValidationError(field, prop, "would let the pod propagate its mounts onto the host: only a "
                                      "privileged pod may (slave or rslave receive the host's mounts)")
    plan(spec)  # two mounts of one volume with contradicting propagation fail here, before any pod exists


# -- what prepare writes ------------------------------------------------------------------
def manifest_volume(dd: DataDir, vol: Dict[str, Any]) -> Dict[str, Any]:
    """The appc volume of a named (a host volume: its data directory) or tmpfs volume (empty)."""
    doc: Dict[str, Any] = {"name": vol["name"]}
    if vol["kind"] == "named":
        doc.update(kind="host", source=data_path(dd, vol["volume_name"]), recursive=False)
    else:
        doc.update(kind="empty", mode=vol["mode"], uid=vol["uid"], gid=vol["gid"])
    if vol["read_only"]:
        doc["readOnly"] = True
    return doc


def manifest_annotations(spec: Dict[str, Any]) -> Dict[str, str]:
    """``appc.rocket/volumes``: {"named": {vol: volume name}, "tmpfs": {vol: {size, mode, uid,
    gid}}, "mounts": {app: {path: {read_only, propagation}}}}, or nothing when no volume or
    mount needs it (the pods of before stay byte for byte the same)."""
    import json

    doc: Dict[str, Any] = {}
    for v in spec["volumes"]:
        if v["kind"] == "named":
            doc.setdefault("named", {})[v["name"]] = v["volume_name"]
        elif v["kind"] == "tmpfs":
            doc.setdefault("tmpfs", {})[v["name"]] = {"size": v["size"], "mode": v["mode"],
                                                      "uid": v["uid"], "gid": v["gid"]}
    for a in spec["apps"]:
        for m in a["mounts"]:
            opts = {k: m[k] for k in ("read_only", "propagation") if k in m}
            if opts:
                doc.setdefault("mounts", {}).setdefault(a["name"], {})[m["path"]] = opts
    if not doc:
        return {}
    return {VOLUMES_ANNOTATION: json.dumps(doc, sort_keys=True, separators=(",", ":"))}


def plan(spec: Dict[str, Any]) -> Dict[str, Any]:
    """mounts.json's "propagation": the host volumes the launcher must clone before it makes
    the pod's mounts private, so that the host's mount events still reach them."""
    out = []
    seen = set()
    host = {v["name"]: v for v in spec["volumes"] if v["kind"] == "host"}
    for a in spec["apps"]:
        for m in a["mounts"]:
            prop = m.get("propagation")
            if prop is None or m["volume"] in seen:
                continue
            seen.add(m["volume"])
            v = host[m["volume"]]
            out.append({"volume": v["name"], "source": v["source"], "recursive": bool(v.get("recursive", True)),
                        "shared": prop in ("shared", "rshared")})
    # two mounts of one volume must agree: one clone serves both
    for a in spec["apps"]:
        for j, m in enumerate(a["mounts"]):
            for p in out:
                if p["volume"] == m["volume"] and p["shared"] != (m.get("propagation") in ("shared", "rshared")):
                    raise ValidationError("apps[%d].mounts[%d].propagation" % (spec["apps"].index(a), j),
                                          m.get("propagation") or "rprivate",
                                          "differs from another mount of volume %s: give its mounts one propagation"
                                          % m["volume"])
    return {"propagation": out} if out else {}


def ensure_named(dd: DataDir, spec: Dict[str, Any]) -> List[str]:
    """Create the spec's named volumes that do not exist yet (podman's first use): the names created."""
    made = []
    for v in spec["volumes"]:
        if v["kind"] == "named":
            if create(dd, v["volume_name"], v["mode"], v["uid"], v["gid"])[0]:
                made.append(v["volume_name"])
    return made


# -- named volumes on disk ------------------------------------------------------------------
def root(dd: DataDir) -> str:
    return os.path.join(dd.path, "volumes")


def volume_path(dd: DataDir, name: str) -> str:
    return os.path.join(root(dd), name)


def data_path(dd: DataDir, name: str) -> str:
    return os.path.join(volume_path(dd, name), "data")


def _check_real_dir(path: str) -> None:
    """The volumes directory, a volume and its data are real directories (never followed)."""
    from ..stage1 import paths

    try:
        os.close(paths.open_host(path))
    except paths.HostPathError as e:
        raise RocketError("%s: %s %s; refusing to use it (a named volume is never reached through a symlink)"
                          % (path, e.component, e.why))


def inspect(dd: DataDir, name: str) -> Optional[Dict[str, Any]]:
    """The volume's record with its path, or None when it does not exist."""
    from .fsutil import read_small

    import json

    check_volume_name(name, "name")
    path = volume_path(dd, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    import stat

    if not stat.S_ISDIR(st.st_mode):
        raise RocketError("%s is not a directory; refusing to use it as a named volume" % path)
    _check_real_dir(data_path(dd, name))
    try:
        fd = os.open(os.path.join(path, "volume.json"), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        os.close(fd)
        record = json.loads(read_small(os.path.join(path, "volume.json"), 1 << 20))
    except (OSError, ValueError):
        record = {}
    dst = os.lstat(data_path(dd, name))
    # mode and owner as they are (a pod's root may have changed them), labels as recorded
    return {"name": name, "path": data_path(dd, name), "mode": "%04o" % (dst.st_mode & 0o7777),
            "uid": dst.st_uid, "gid": dst.st_gid,
            "labels": record.get("labels") or {}, "created": record.get("created")}


def record(dd: DataDir, name: str) -> Optional[Dict[str, Any]]:
    """inspect() with the pods that use the volume (``used_by``), what the modules return."""
    info = inspect(dd, name)
    if info is not None:
        info["used_by"] = users(dd, name)
    return info


def list_volumes(dd: DataDir) -> List[str]:
    try:
        names = os.listdir(root(dd))
    except FileNotFoundError:
        return []
    return sorted(n for n in names if schema.AC_NAME_RE.match(n))


def create(dd: DataDir, name: str, mode: str = "0755", uid: int = 0, gid: int = 0,
           labels: Optional[Dict[str, str]] = None) -> Tuple[bool, Dict[str, Any]]:
    """(created, record): an existing volume is left as it is (its options are those it was
    created with). Made under a temporary name and renamed, so a half-made volume never exists."""
    from .locks import locked

    existing = inspect(dd, name)
    if existing is not None:
        return False, existing
    os.makedirs(dd.locks, mode=0o700, exist_ok=True)
    # shared, as prepare holds it: pod_gc's prune (exclusive) never meets a half-made volume
    with locked(dd.lock_path("store"), exclusive=False):
        return _create(dd, name, mode, uid, gid, labels)


def _create(dd: DataDir, name: str, mode: str, uid: int, gid: int,
            labels: Optional[Dict[str, str]]) -> Tuple[bool, Dict[str, Any]]:
    import json

    from .fsutil import atomic_write, fsync_dir, remove_tree

    existing = inspect(dd, name)
    if existing is not None:
        return False, existing
    os.makedirs(root(dd), mode=0o700, exist_ok=True)
    _check_real_dir(root(dd))
    tmp = os.path.join(root(dd), ".new-%s-%d" % (name, os.getpid()))
    remove_tree(tmp)
    os.mkdir(tmp, 0o700)
    try:
        data = os.path.join(tmp, "data")
        os.mkdir(data, 0o700)
        os.chown(data, uid, gid)
        os.chmod(data, int(mode, 8))
        record = {"name": name, "mode": mode, "uid": uid, "gid": gid, "labels": dict(labels or {}),
                  "created": time.time()}
        atomic_write(os.path.join(tmp, "volume.json"), json.dumps(record, sort_keys=True).encode(), 0o600)
        try:
            os.rename(tmp, volume_path(dd, name))
        except OSError:
            if inspect(dd, name) is None:
                raise
            remove_tree(tmp)  # another task made it first
            return False, inspect(dd, name) or {}
        fsync_dir(root(dd))
    except BaseException:
        remove_tree(tmp)
        raise
    return True, inspect(dd, name) or {}


def options(mode: Any, uid: Any, gid: Any, labels: Any, prefix: str = "") -> Dict[str, Any]:
    """pod_volume's options, checked (errors name the option)."""
    if labels is not None and not isinstance(labels, dict):
        raise ValidationError(prefix + "labels", labels, "must be a dictionary")
    return {"mode": _mode(mode, prefix + "mode", "0755"), "uid": _id(uid, prefix + "uid"),
            "gid": _id(gid, prefix + "gid"), "labels": {str(k): str(v) for k, v in (labels or {}).items()}}


def update(dd: DataDir, name: str, changes: Dict[str, Any]) -> None:
    """Bring an existing volume's mode, owner and labels to ``changes``. The data directory is
    opened without following a symlink and changed through that fd: a pod cannot redirect it."""
    import json

    from .fsutil import atomic_write

    rec = require(dd, name)
    fd = os.open(data_path(dd, name), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if "uid" in changes or "gid" in changes:
            os.fchown(fd, changes.get("uid", rec["uid"]), changes.get("gid", rec["gid"]))
        os.fchmod(fd, int(changes.get("mode", rec["mode"]), 8))  # chown clears setuid/setgid bits
    finally:
        os.close(fd)
    record = {k: rec[k] for k in ("name", "mode", "uid", "gid", "labels", "created")}
    record.update(changes)
    atomic_write(os.path.join(volume_path(dd, name), "volume.json"), json.dumps(record, sort_keys=True).encode(), 0o600)


def prune(dd: DataDir, dry_run: bool = False) -> List[str]:
    """pod_gc's volumes=true: remove every named volume no pod uses (the names)."""
    from .fsutil import remove_tree
    from .locks import locked

    gone: List[str] = []
    if not os.path.isdir(root(dd)):
        return gone
    os.makedirs(dd.locks, mode=0o700, exist_ok=True)
    with locked(dd.lock_path("store"), exclusive=True):
        for entry in os.listdir(root(dd)):  # what a crash left of a creation or a removal
            if entry.startswith((".new-", ".gone-")) and not dry_run:
                remove_tree(os.path.join(root(dd), entry))
        for name in list_volumes(dd):
            if users(dd, name):
                continue
            gone.append(name)
            if not dry_run:
                trash = os.path.join(root(dd), ".gone-%s-%d" % (name, os.getpid()))
                os.rename(volume_path(dd, name), trash)
                remove_tree(trash)
    return gone


def users(dd: DataDir, name: str) -> List[str]:
    """UUIDs of the pods (in any state, until gc removes them) whose manifest mounts the volume."""
    import json

    from . import pod as podmod

    out = []
    for p in podmod.list_pods(dd):
        try:
            manifest = p.manifest()
        except (OSError, ValueError, RocketError):
            continue
        for ann in manifest.get("annotations") or ():
            if ann.get("name") == VOLUMES_ANNOTATION:
                try:
                    named = json.loads(ann.get("value") or "{}").get("named") or {}
                except (ValueError, AttributeError):
                    named = {}
                if name in named.values():
                    out.append(p.uuid)
    return out


def remove(dd: DataDir, name: str, dry_run: bool = False) -> bool:
    """Remove the volume unless a pod uses it (InUseError names them); False when absent."""
    from .fsutil import remove_tree
    from .locks import locked

    check_volume_name(name, "name")
    if inspect(dd, name) is None:
        return False
    os.makedirs(dd.locks, mode=0o700, exist_ok=True)
    with locked(dd.lock_path("store"), exclusive=True):
        if inspect(dd, name) is None:
            return False
        using = users(dd, name)
        if using:
            raise InUseError("volume %s is used by pod%s %s: remove %s first" % (
                name, "s" if len(using) > 1 else "", ", ".join(using), "them" if len(using) > 1 else "it"))
        if dry_run:
            return True
        trash = os.path.join(root(dd), ".gone-%s-%d" % (name, os.getpid()))
        os.rename(volume_path(dd, name), trash)
        remove_tree(trash)
    return True


def require(dd: DataDir, name: str) -> Dict[str, Any]:
    info = inspect(dd, name)
    if info is None:
        raise NotFoundError("no named volume %s in %s" % (name, root(dd)))
    return info
