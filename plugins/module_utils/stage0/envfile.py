"""The env_file option: dotenv files read on the managed host (where the module runs), as
docker's and podman's ``--env-file`` read them on theirs, with the dotenv syntax users
write: comments, blank lines, ``export`` prefixes, single and double quotes.

Syntax, line by line: ``# comment``; ``[export ]NAME=VALUE``. VALUE is taken as it is
(surrounding spaces trimmed; `` #`` starts a comment), or between single quotes
(literally, may span lines) or double quotes (``\\n``, ``\\t``, ``\\"``, ``\\\\`` and
``\\$`` escapes, may span lines). Nothing is expanded: ``$HOME`` stays ``$HOME``, as in
docker. Errors name the option, the file and the line, never a value.

Normal form: [{"path", "environment": [[name, value], ...]}]; with env_file_secret the
values are secrets (for_disk keeps digests, redact hides them), like secret_environment.
"""
from __future__ import annotations

import hashlib

TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Tuple

from . import schema
from .errors import ValidationError
from .fsutil import read_option_file

MAX_SIZE = 1 << 20
REDACTED = "********"
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\", "$": "$"}


def parse(text: str, where: str, path: str) -> List[Tuple[str, str]]:
    """(name, value) pairs of a dotenv text; ValidationError(path, where, "line N: ...")."""
    lines = text.split("\n")
    out: List[Tuple[str, str]] = []
    seen: Dict[str, int] = {}
    i = 0

    def fail(n: int, why: str) -> ValidationError:
        return ValidationError(path, where, "line %d: %s" % (n, why))

    while i < len(lines):
        n, line = i + 1, lines[i].rstrip("\r")
        i += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("export ") or stripped.startswith("export\t"):
            stripped = stripped[7:].lstrip()
        name, eq, rest = stripped.partition("=")
        name = name.rstrip()
        if not eq:
            raise fail(n, "is not NAME=VALUE (no '=')")
        if not schema.ENV_NAME_RE.match(name):
            raise fail(n, "%r is not a variable name (letters, digits and '_', not starting with a digit)" % name[:64])
        rest = rest.lstrip()
        if rest[:1] in ("'", '"'):
            quote, body, value, closed = rest[0], rest[1:], [], False
            while True:
                j = 0
                while j < len(body):
                    c = body[j]
                    if quote == '"' and c == "\\" and j + 1 < len(body):
                        value.append(_ESCAPES.get(body[j + 1], "\\" + body[j + 1]))
                        j += 2
                        continue
                    if c == quote:
                        closed = True
                        break
                    value.append(c)
                    j += 1
                if closed:
                    tail = body[j + 1:].strip()
                    if tail and not tail.startswith("#"):
                        raise fail(n, "unexpected text after the closing quote")
                    break
                if i >= len(lines):
                    raise fail(n, "the quoted value of %s is never closed" % name)
                value.append("\n")
                body = lines[i].rstrip("\r")
                i += 1
            text_value = "".join(value)
        else:
            cut = [k for k in (rest.find(" #"), rest.find("\t#")) if k >= 0]
            text_value = (rest[:min(cut)] if cut else rest).strip()
        if name in seen:
            raise fail(n, "sets %s again (first set on line %d)" % (name, seen[name]))
        seen[name] = n
        out.append((name, text_value))
    return out


def read(file: Any, path: str) -> List[Tuple[str, str]]:
    """The pairs of the dotenv file at ``file`` on this host (no symlink as its last part
    is needed: the user names the file)."""
    if not isinstance(file, str) or not file.startswith("/"):
        raise ValidationError(path, file, "must be an absolute path of a file on the managed host")
    data = read_option_file(file, path, MAX_SIZE, follow=True)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ValidationError(path, file, "line %d: is not UTF-8" % line)
    return parse(text, file, path)


def normalize(value: Any, path: str) -> List[Dict[str, Any]]:
    """env_file (a path or a list of paths) read now: [{"path", "environment"}]. An item
    already in that form (a pod's recorded spec) is kept as it is."""
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValidationError(path, value, "must be a list of paths of dotenv files")
    out = []
    for i, item in enumerate(value):
        where = "%s[%d]" % (path, i)
        if isinstance(item, dict) and set(item) == {"path", "environment"}:
            out.append({"path": item["path"], "environment": [list(p) for p in item["environment"]]})
            continue
        out.append({"path": item, "environment": [list(p) for p in read(item, where)]})
    return out


def pairs(items: List[Dict[str, Any]]) -> List[Tuple[str, str]]:
    """The files' variables in order, a later file's value winning (docker's rule)."""
    merged: Dict[str, str] = {}
    for item in items or []:
        for k, v in item["environment"]:
            merged.pop(k, None)
            merged[k] = v
    return list(merged.items())


def _digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def for_disk(items: List[Dict[str, Any]], secret: bool) -> List[Dict[str, Any]]:
    if not secret:
        return items
    return [{"path": it["path"],
             "environment": [[k, v if v.startswith("sha256:") else _digest(v)] for k, v in it["environment"]]}
            for it in items or []]


def redact(items: List[Dict[str, Any]], secret: bool) -> List[Dict[str, Any]]:
    if not secret:
        return items
    return [{"path": it["path"], "environment": [[k, REDACTED] for k, dummy_value in it["environment"]]}
            for it in items or []]
