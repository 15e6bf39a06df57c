"""The secrets option: files an app reads its secrets from, as docker's and podman's
``--secret`` give them, never an environment variable.

Normal form per app: [{"name", "target", "mode", "uid", "gid", "source", "content"}];
``content`` (given, or read from ``source`` on the managed host when the spec is
normalized) lives only in memory: spec.json keeps its SHA-256 as ``digest`` (for_disk),
results and diffs show neither (redact), and the pod gets it through a memfd (memfd) that
stage1 unpacks into a tmpfs of the pod's own mount namespace (stage1/secrets.py).
"""
from __future__ import annotations

import hashlib
import os

TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional

from ..stage1 import contract
from .errors import RocketError, ValidationError
from .fsutil import read_option_file

KEYS = ("name", "content", "source", "target", "mode", "uid", "gid")
MAX_SIZE = 1 << 20          # bytes per secret (docker: 500 kB)
DEFAULT_DIR = "/run/secrets"
REDACTED = "********"
# Where a secret may not be bound: the kernel's and stage1's own file systems.
_FORBIDDEN = ("/proc", "/sys", "/dev")


def _digest(content: str) -> str:
    return "sha256:" + hashlib.sha256(content.encode("utf-8", "surrogateescape")).hexdigest()


def _name(value: Any, path: str) -> str:
    ok = isinstance(value, str) and 0 < len(value) <= 128 and value[0].isascii() and value[0].isalnum() \
        and all(c.isascii() and (c.isalnum() or c in "._-") for c in value)
    if not ok:
        raise ValidationError(path, value, "must be a secret name: letters, digits, '.', '_' and '-', "
                                           "starting with a letter or digit, at most 128 characters")
    return value


def _read_source(source: Any, path: str) -> str:
    if not isinstance(source, str) or not source.startswith("/"):
        raise ValidationError(path, source, "must be an absolute path of a file on the managed host")
    data = read_option_file(source, path, MAX_SIZE)
    return data.decode("utf-8", "surrogateescape")


def _int(value: Any, path: str, default: int, high: int, octal: bool = False) -> int:
    if value is None:
        return default
    if isinstance(value, str) and value.strip():
        try:
            value = int(value, 8 if octal else 10)
        except ValueError:
            raise ValidationError(path, value, "is not %s number" % ("an octal" if octal else "a"))
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise ValidationError(path, value, "must be a number from 0 to %s" % (oct(high) if octal else high))
    return value


def _item(raw: Any, path: str) -> Dict[str, Any]:
    if not isinstance(raw, dict):
        raise ValidationError(path, "(hidden)", "must be a dictionary {name, content or source, target, mode, uid, gid}")
    unknown = sorted(set(raw) - set(KEYS) - {"digest"})
    if unknown:
        raise ValidationError(path + "." + unknown[0], "(hidden)", "is not a secret option (%s)" % ", ".join(KEYS))
    name = _name(raw.get("name"), path + ".name")
    content, source = raw.get("content"), raw.get("source")
    recorded = content is None and source is None and isinstance(raw.get("digest"), str)
    if recorded:  # a pod's spec.json: only the digest is known (memfd() refuses to start it)
        pass
    elif (content is None) == (source is None):
        raise ValidationError(path, name, "needs content or source (one of them)")
    if content is not None:
        if not isinstance(content, str):
            raise ValidationError(path + ".content", "(hidden)", "must be a string")
        if len(content.encode("utf-8", "surrogateescape")) > MAX_SIZE:
            raise ValidationError(path + ".content", "(hidden)", "is larger than %d bytes" % MAX_SIZE)
    elif not recorded:
        content = _read_source(source, path + ".source")
    target = raw.get("target") or name
    if not isinstance(target, str):
        raise ValidationError(path + ".target", target, "must be a path")
    if not target.startswith("/"):
        target = DEFAULT_DIR + "/" + target
    from .podspec import check_path

    check_path(target, path + ".target")
    target = os.path.normpath(target)
    if any(c in target for c in "\t\n"):
        raise ValidationError(path + ".target", target, "must not contain a tab or a newline")
    if target == "/" or any(target == p or target.startswith(p + "/") for p in _FORBIDDEN):
        raise ValidationError(path + ".target", target, "must not be / or under /proc, /sys or /dev")
    out = {"name": name, "target": target, "mode": _int(raw.get("mode"), path + ".mode", 0o400, 0o7777, True),
           "uid": _int(raw.get("uid"), path + ".uid", 0, 4294967294),
           "gid": _int(raw.get("gid"), path + ".gid", 0, 4294967294), "source": source}
    if recorded:
        out["digest"] = raw["digest"]
    else:
        out["content"] = content
    return out


def normalize(value: Any, path: str) -> List[Dict[str, Any]]:
    """The secrets option in normal form (content included: keep it in memory only)."""
    if value is None:
        return []
    if not isinstance(value, (list, tuple)):
        raise ValidationError(path, "(hidden)", "must be a list of secrets")
    out = [_item(item, "%s[%d]" % (path, i)) for i, item in enumerate(value)]
    names: Dict[str, int] = {}
    targets: Dict[str, int] = {}
    for i, s in enumerate(out):
        if s["name"] in names:
            raise ValidationError("%s[%d].name" % (path, i), s["name"], "is already the name of %s[%d]" % (path, names[s["name"]]))
        if s["target"] in targets:
            raise ValidationError("%s[%d].target" % (path, i), s["target"],
                                  "is already the target of %s[%d]" % (path, targets[s["target"]]))
        names[s["name"]], targets[s["target"]] = i, i
    return out


def for_disk(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The secrets as spec.json keeps them: content replaced by its digest."""
    out = []
    for s in items or []:
        d = {k: v for k, v in s.items() if k != "content"}
        if "content" in s:
            d["digest"] = _digest(s["content"])
        out.append(d)
    return out


def redact(items: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """The secrets fit for results and diffs: neither content nor digest."""
    return [dict({k: v for k, v in s.items() if k not in ("content", "digest")}, digest=REDACTED)
            for s in items or []]


def annotation(items: List[Dict[str, Any]]) -> Dict[str, str]:
    """The app annotation naming its secrets (contract.SECRETS_ANNOTATION)."""
    return {"name": contract.SECRETS_ANNOTATION, "value": ",".join(s["name"] for s in items)}


def memfd(spec: Dict[str, Any], stored: Optional[Dict[str, Any]] = None) -> Optional[int]:
    """A sealed memfd with the pod's secrets for stage1, or None when it has none.

    ``stored``: the pod's spec.json spec; each secret must have the digest recorded there
    (the pod was prepared with exactly this content), or the start is refused."""
    from ..stage1 import secrets as s1

    items = []
    for a, app in enumerate(spec.get("apps") or []):
        for i, s in enumerate(app.get("secrets") or []):
            if "content" not in s:
                raise RocketError("apps[%d].secrets[%d] (%s): the content is not known: secrets are kept in memory "
                                  "only, give the pod's spec (with its secrets) to start it" % (a, i, s["name"]))
            items.append((app["name"], s["name"], s["target"], s["mode"], s["uid"], s["gid"],
                          s["content"].encode("utf-8", "surrogateescape")))
    if not items:
        return None
    if stored is not None:
        want = [for_disk(app.get("secrets") or []) for app in spec.get("apps") or []]
        have = [app.get("secrets") or [] for app in stored.get("apps") or []]
        if want != have:
            raise RocketError("the secrets given differ from those the pod was prepared with")
    import fcntl

    data = s1.pack(items)
    fd = os.memfd_create("rocket-secrets", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
                    | fcntl.F_SEAL_WRITE)
    except BaseException:
        os.close(fd)
        raise
    return fd
