"""The devices option: host devices passed through to an app, as docker's --device takes
them ("/dev/loop3", "/dev/loop3:/dev/disk0:rw", or {path, container_path, permissions}).

Normal form: [{"path", "container_path", "permissions"}], permissions a subset of "rwm" in
that order. Paths on the host and in the app are under /dev, with no "..", no whitespace
(they travel in an app annotation, one per line) and none of the nodes every app's /dev
already has; prepare checks that the host path is a device node reached without a symlink
(stage1 checks it again at every start, and allows exactly that node: hostdevices.py).
"""
from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List

from ..stage1 import contract, hostdevices
from .errors import ValidationError

KEYS = ("path", "container_path", "permissions")


def _item(raw: Any, path: str) -> Dict[str, str]:
    if isinstance(raw, str):
        parts = raw.split(":")
        if len(parts) > 3:
            raise ValidationError(path, raw, "is not HOST[:CONTAINER[:PERMISSIONS]]")
        if len(parts) == 2 and parts[1] and not parts[1].startswith("/"):
            parts = [parts[0], parts[0], parts[1]]  # docker's "/dev/x:rw"
        raw = dict(zip(KEYS, parts))
    if not isinstance(raw, dict):
        raise ValidationError(path, raw, "must be HOST[:CONTAINER[:PERMISSIONS]] or {path, container_path, permissions}")
    unknown = sorted(set(raw) - set(KEYS))
    if unknown:
        raise ValidationError(path + "." + unknown[0], raw[unknown[0]], "is not a device option (%s)" % ", ".join(KEYS))
    host = raw.get("path")
    target = raw.get("container_path") or host
    perms = raw.get("permissions")
    perms = "rwm" if perms in (None, "") else perms
    for key, value in (("path", host), ("container_path", target)):
        if not isinstance(value, str) or not value:
            raise ValidationError("%s.%s" % (path, key), value, "is required: a path under /dev")
        if any(c.isspace() for c in value) or "\0" in value:
            raise ValidationError("%s.%s" % (path, key), value, "must not contain whitespace")
        why = hostdevices.check_target(value)
        if why is not None and key == "container_path":
            raise ValidationError("%s.%s" % (path, key), value, why)
        if why is not None and not (value.startswith("/dev/") and ".." not in value.split("/")):
            raise ValidationError("%s.%s" % (path, key), value, "must be a device node under /dev on the host")
    if not isinstance(perms, str) or not perms or any(c not in "rwm" for c in perms) or len(set(perms)) != len(perms):
        raise ValidationError(path + ".permissions", perms, "must be a non-empty subset of \"rwm\"")
    return {"path": str(host), "container_path": str(target), "permissions": "".join(c for c in "rwm" if c in perms)}


def normalize(value: Any, path: str) -> List[Dict[str, str]]:
    """The devices option in normal form; ValidationError naming the item otherwise."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValidationError(path, value, "must be a list of devices")
    out = [_item(item, "%s[%d]" % (path, i)) for i, item in enumerate(value)]
    seen: Dict[str, int] = {}
    for i, d in enumerate(out):
        if d["container_path"] in seen:
            raise ValidationError("%s[%d].container_path" % (path, i), d["container_path"],
                                  "is already the path of %s[%d]" % (path, seen[d["container_path"]]))
        seen[d["container_path"]] = i
    return out


def check_host(devices: List[Dict[str, str]], path: str) -> None:
    """What stage1 would refuse at start fails at prepare: a symlink, a missing node or not
    a device at the host path."""
    import os

    for i, d in enumerate(devices):
        try:
            fd = hostdevices.open_node(d["path"])[0]
        except hostdevices.DeviceError as e:
            hint = ""
            if "symlink" in str(e):
                hint = "; give the real path (%s)" % os.path.realpath(d["path"])
            raise ValidationError("%s[%d].path" % (path, i), d["path"], "cannot be passed through: %s%s" % (e, hint))
        os.close(fd)


def annotation(devices: List[Dict[str, str]]) -> Dict[str, str]:
    """The app annotation stage1 reads (contract.DEVICES_ANNOTATION)."""
    return {"name": contract.DEVICES_ANNOTATION,
            "value": "\n".join("%s %s %s" % (d["path"], d["container_path"], d["permissions"]) for d in devices)}
