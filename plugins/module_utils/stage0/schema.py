"""appc v0.8.11 types: parse and validate image and pod manifests, names, labels, quantities.

Every manifest stays a plain JSON-compatible dict, the document as its author wrote it, so
what we store, hash, compare and serve through the metadata service is exactly what was
given. Validation returns that same document and changes nothing in it:

- Unknown keys are kept verbatim and not checked. The spec allows extensions (rkt and
  CRI added fields), and a round trip must not lose what another tool put there.
- Defaults (``count`` 1, ``workingDirectory`` ``/``, volume ``mode`` ``"0755"``, ...) are
  not filled in here. The code that uses a field applies them, so the stored document is
  unchanged.
- An optional field that is ``null`` means the same as an absent one (Go's nil). This is
  also how ``null`` pod annotations reach the metadata service unchanged.
- Every error is an ``errors.ValidationError`` that names the field path and the value,
  e.g. ``app.environment[2].name: "1X" is not a valid environment variable name``.
  Malformed input (bad bytes, bad JSON, wrong JSON types) raises it too, never
  TypeError/KeyError.

Where the spec is silent or its examples disagree with the types, each decision is noted at
the place it applies (image IDs of dependencies, mount ``path``, exec[0]).
Standard library only and cheap to import: decimal, ipaddress, urllib and datetime are
imported where they are used.
"""
from __future__ import annotations

import json
import math
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, List, Optional, Tuple, Union

from .errors import ValidationError

if TYPE_CHECKING:  # pragma: no cover
    import re
    from decimal import Decimal

__all__ = [
    "AC_VERSION", "AC_IDENTIFIER_RE", "AC_NAME_RE", "ENV_NAME_RE", "OS_ARCH",
    "DEFAULT_CAPABILITIES", "KNOWN_ISOLATORS", "LINUX_CAPABILITIES", "CAPABILITY_NUMBERS",
    "MISSING", "PLACEHOLDER_IMAGE_ID",
    "validate_ac_identifier", "validate_ac_name", "validate_env_name", "validate_labels",
    "labels_to_dict", "dict_to_labels", "validate_annotations", "parse_quantity",
    "validate_isolator", "validate_isolators", "validate_app", "parse_image_manifest",
    "parse_pod_manifest", "parse_image_reference", "format_image_reference",
    "dump_manifest", "parse_image_id",
]

AC_VERSION = "0.8.11"


# The spec's regexes, anchored with \A...\Z: "$" would accept a trailing newline.
# One widening of the AC Identifier regex: "/" may be followed by "~" (a "~user"
# directory). The spec's regex forbids two separators in a row, but its own conformance
# names ("example.com/~bob/database") need "/~". The Go code allows any separator run;
# we allow only this one ("a//b" and "a..b" are still refused).
class _Pattern:
    """A regex compiled on first use: a module run that validates little compiles little.

    Modules run from Ansiballz's zip, where nothing is cached between runs.
    """

    __slots__ = ("pattern", "_compiled")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self._compiled: Optional[re.Pattern[str]] = None

    def _re(self) -> re.Pattern[str]:
        if self._compiled is None:
            import re

            self._compiled = re.compile(self.pattern)
        return self._compiled

    def match(self, text: str) -> Optional[re.Match[str]]:
        return self._re().match(text)

    def fullmatch(self, text: str) -> Optional[re.Match[str]]:
        return self._re().fullmatch(text)

    def search(self, text: str) -> Optional[re.Match[str]]:
        return self._re().search(text)


AC_IDENTIFIER_RE = _Pattern(r"\A[a-z0-9]+(?:(?:[-._~]|/~?)[a-z0-9]+)*\Z")
AC_NAME_RE = _Pattern(r"\A[a-z0-9]+(?:-[a-z0-9]+)*\Z")
ENV_NAME_RE = _Pattern(r"\A[A-Za-z_][A-Za-z_0-9.-]*\Z")

OS_ARCH = {
    "linux": frozenset(("amd64", "i386", "aarch64", "aarch64_be", "armv6l", "armv7l",
                        "armv7b", "ppc64", "ppc64le", "s390x")),
    "freebsd": frozenset(("amd64", "i386", "arm")),
    "darwin": frozenset(("x86_64", "i386")),
}

DEFAULT_CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
)

# Kernel capability numbers (linux/capability.h), up to CAP_CHECKPOINT_RESTORE (40).
# stage1 needs the numbers for capset/prctl; validation needs the names.
CAPABILITY_NUMBERS = {
    name: number for number, name in enumerate((
        "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
        "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
        "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
        "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
        "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
        "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
        "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
        "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
        "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
    ))
}
LINUX_CAPABILITIES = frozenset(CAPABILITY_NUMBERS)

KNOWN_ISOLATORS = frozenset((
    "resource/cpu", "resource/memory", "resource/block-bandwidth", "resource/block-iops",
    "resource/network-bandwidth", "os/linux/capabilities-retain-set",
    "os/linux/capabilities-remove-set", "os/linux/no-new-privileges",
    "os/linux/seccomp-remove-set", "os/linux/seccomp-retain-set", "os/linux/oom-score-adj",
    "os/linux/cpu-shares", "os/linux/selinux-context", "os/linux/apparmor-profile",
    "os/unix/sysctl",
))

# Pairs that cannot both appear in one isolator list.
_EXCLUSIVE_ISOLATORS = (
    ("os/linux/capabilities-retain-set", "os/linux/capabilities-remove-set"),
    ("os/linux/seccomp-retain-set", "os/linux/seccomp-remove-set"),
)

# The spec's own example image manifest pins a dependency as "sha512-..."; the reference Go
# code accepts any non-empty value after "sha512-". We accept a hex prefix of an ID
# (>= 2 digits) or exactly this placeholder, which means "not pinned": users of
# dependencies[].imageID must treat it as absent.
PLACEHOLDER_IMAGE_ID = "sha512-..."


class _Missing:
    """Stands for an absent field in errors (shown as <missing>, not as a misleading null)."""

    def __repr__(self) -> str:
        return "<missing>"


MISSING = _Missing()

_SEMVER_RE = _Pattern(
    r"\A(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?\Z"
)
_IMAGE_ID_RE = _Pattern(r"\Asha512-[0-9a-f]{128}\Z")
_IMAGE_ID_PREFIX_RE = _Pattern(r"\Asha512-[0-9a-f]{2,128}\Z")
_RFC3339_RE = _Pattern(
    r"\A(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.\d+)?(?:[Zz]|[+-](\d{2}):(\d{2}))\Z"
)
_QUANTITY_RE = _Pattern(r"\A([+-]?)([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([A-Za-z]*[-+]?[0-9]*)\Z")
_EXPONENT_RE = _Pattern(r"\A[eE]([-+]?[0-9]{1,4})\Z")
# Kubernetes resource.Quantity suffixes: (base, exponent) multipliers.
_QUANTITY_SUFFIXES = {
    "": (10, 0), "n": (10, -9), "u": (10, -6), "m": (10, -3),
    "k": (10, 3), "M": (10, 6), "G": (10, 9), "T": (10, 12), "P": (10, 15), "E": (10, 18),
    "Ki": (2, 10), "Mi": (2, 20), "Gi": (2, 30), "Ti": (2, 40), "Pi": (2, 50), "Ei": (2, 60),
}
_SYSCALL_RE = _Pattern(r"\A[a-z_][a-z0-9_]*\Z")
_SYSCALL_GROUP_RE = _Pattern(r"\A@[a-z0-9][a-z0-9._~/-]*\Z")
_ERRNO_RE = _Pattern(r"\AE[A-Z0-9]+\Z")
_MODE_RE = _Pattern(r"\A[0-7]{1,5}\Z")
_PORT_PROTOCOLS = frozenset(("tcp", "udp", "sctp"))
_EVENT_HANDLERS = frozenset(("pre-start", "post-stop"))


# --------------------------------------------------------------------------- helpers

def _at(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _ix(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _dict(value: Any, path: str) -> dict:
    if not isinstance(value, dict):
        raise ValidationError(path, value, f"must be an object, not {_type_name(value)}")
    return value


def _list(value: Any, path: str) -> list:
    if not isinstance(value, list):
        raise ValidationError(path, value, f"must be a list, not {_type_name(value)}")
    return value


def _str(value: Any, path: str, nonempty: bool = False) -> str:
    if not isinstance(value, str):
        raise ValidationError(path, value, f"must be a string, not {_type_name(value)}")
    if nonempty and not value:
        raise ValidationError(path, value, "must not be empty")
    if "\x00" in value:
        raise ValidationError(path, value, "must not contain a NUL character")
    return value


def _bool(value: Any, path: str) -> bool:
    if not isinstance(value, bool):
        raise ValidationError(path, value, f"must be a boolean, not {_type_name(value)}")
    return value


def _int(value: Any, path: str, low: Optional[int] = None, high: Optional[int] = None) -> int:
    # bool is an int in Python but not in JSON; 4000.0 is not an integer field's value.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(path, value, f"must be an integer, not {_type_name(value)}")
    if low is not None and high is not None and not low <= value <= high:
        raise ValidationError(path, value, f"must be between {low} and {high}")
    if low is not None and value < low:
        raise ValidationError(path, value, f"must be at least {low}")
    if high is not None and value > high:
        raise ValidationError(path, value, f"must be at most {high}")
    return value


def _abs_path(value: Any, path: str) -> str:
    # ".." components are left to the runtime, which must resolve paths inside a root
    # safely anyway (an image's symlinks can do what ".." does).
    _str(value, path, nonempty=True)
    if not value.startswith("/"):
        raise ValidationError(path, value, "must be an absolute path")
    return value


def _required(obj: dict, key: str, path: str) -> Any:
    value = obj.get(key, MISSING)
    if value is MISSING or value is None:
        raise ValidationError(_at(path, key), value, "is required")
    return value


def _optional(obj: dict, key: str) -> Any:
    """The value of an optional field, None when absent or null."""
    return obj.get(key)


def _unique(seen: Dict[str, int], key: str, path: str, index: int, what: str) -> None:
    if key in seen:
        raise ValidationError(path, key, f"duplicates {what}[{seen[key]}]")
    seen[key] = index


def _exec_list(value: Any, path: str, nonempty: bool) -> list:
    _list(value, path)
    if nonempty and not value:
        raise ValidationError(path, value, "must not be empty")
    for i, arg in enumerate(value):
        _str(arg, _ix(path, i), nonempty=(i == 0))
    return value


# --------------------------------------------------------------------------- names

def validate_ac_identifier(value: Any, path: str = "name") -> str:
    """An AC Identifier: image, label, annotation and isolator names."""
    _str(value, path)
    if not AC_IDENTIFIER_RE.match(value):
        raise ValidationError(path, value, "is not a valid AC Identifier (lowercase letters and "
                              "digits, separated by single '-', '.', '_', '~' or '/')")
    return value


def validate_ac_name(value: Any, path: str = "name") -> str:
    """An AC Name: app, volume, mount point and port names."""
    _str(value, path)
    if not AC_NAME_RE.match(value):
        raise ValidationError(path, value, "is not a valid AC Name (lowercase letters and digits, "
                              "separated by single '-')")
    return value


def validate_env_name(value: Any, path: str) -> str:
    """An environment variable name as the spec allows it."""
    _str(value, path)
    if not ENV_NAME_RE.match(value):
        raise ValidationError(path, value, "is not a valid environment variable name")
    return value


def parse_image_id(text: Any, path: str = "id", allow_prefix: bool = False) -> str:
    """An image ID, ``sha512-`` + 128 lowercase hex; with allow_prefix, at least 2 hex digits.

    Uppercase is refused rather than folded: IDs are compared and used as file names as-is.
    """
    _str(text, path)
    if _IMAGE_ID_RE.match(text) or (allow_prefix and _IMAGE_ID_PREFIX_RE.match(text)):
        return text
    if allow_prefix:
        raise ValidationError(path, text, "is not an image ID or ID prefix "
                              "(\"sha512-\" and 2 to 128 lowercase hex digits)")
    raise ValidationError(path, text, "is not an image ID (\"sha512-\" and 128 lowercase hex digits)")


def _semver(value: Any, path: str) -> str:
    _str(value, path)
    if not _SEMVER_RE.match(value):
        raise ValidationError(path, value, "is not a semantic version (e.g. \"0.8.11\")")
    return value


# --------------------------------------------------------------------------- labels, annotations

def _name_value_list(items: Any, path: str, name_check: Callable[[Any, str], str],
                     what: str) -> Dict[str, str]:
    """Check a [{name, value}] list; return name -> value in order."""
    _list(items, path)
    out: Dict[str, str] = {}
    seen: Dict[str, int] = {}
    for i, item in enumerate(items):
        ipath = _ix(path, i)
        _dict(item, ipath)
        name = name_check(_required(item, "name", ipath), _at(ipath, "name"))
        _unique(seen, name, _at(ipath, "name"), i, path.rsplit(".", 1)[-1] or what)
        out[name] = _str(_required(item, "value", ipath), _at(ipath, "value"))
    return out


def _check_os_arch(labels: Dict[str, str], path: str, index_of: Callable[[str], str]) -> None:
    os_name = labels.get("os")
    if os_name is None:
        return  # arch alone is allowed: it only means something next to an os
    if os_name not in OS_ARCH:
        raise ValidationError(index_of("os"), os_name,
                              f"is not a supported os (one of: {', '.join(sorted(OS_ARCH))})")
    arch = labels.get("arch")
    if arch is not None and arch not in OS_ARCH[os_name]:
        raise ValidationError(index_of("arch"), arch, f"is not a valid arch for os {os_name} "
                              f"(one of: {', '.join(sorted(OS_ARCH[os_name]))})")


def validate_labels(labels_list: Any, path: str = "labels") -> list:
    """Labels: unique AC Identifier names (not "name"), string values, a valid os/arch pair."""
    def name_check(value: Any, npath: str) -> str:
        validate_ac_identifier(value, npath)
        if value == "name":
            raise ValidationError(npath, value, "is not allowed as a label name")
        return value

    labels = _name_value_list(labels_list, path, name_check, "labels")
    names = [item["name"] for item in labels_list]
    _check_os_arch(labels, path, lambda n: _at(_ix(path, names.index(n)), "value"))
    return labels_list


def labels_to_dict(labels_list: Any, path: str = "labels") -> Dict[str, str]:
    """[{name, value}] -> {name: value}, in order; validates first so lookups cannot fail."""
    if labels_list is None:
        return {}
    validate_labels(labels_list, path)
    return {item["name"]: item["value"] for item in labels_list}


def dict_to_labels(labels: Any, path: str = "labels") -> List[Dict[str, str]]:
    """{name: value} -> [{name, value}], keeping insertion order; the result is validated."""
    if labels is None:
        return []
    _dict(labels, path)
    out = [{"name": name, "value": value} for name, value in labels.items()]
    validate_labels(out, path)
    return out


def _rfc3339(value: str, path: str) -> None:
    import datetime

    m = _RFC3339_RE.match(value)
    ok = m is not None
    if m is not None:
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        try:
            datetime.datetime(year, month, day, hour, minute, min(second, 59))
        except ValueError:
            ok = False
        if second > 60 or (m.group(7) is not None and (int(m.group(7)) > 23 or int(m.group(8)) > 59)):
            ok = False
    if not ok:
        raise ValidationError(path, value, "is not an RFC 3339 date-time "
                              "(e.g. \"2014-10-27T19:32:27.67021798Z\")")


def _http_url(value: str, path: str) -> None:
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(value)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:
        ok = False
    if not ok or any(c.isspace() for c in value):
        raise ValidationError(path, value, "is not an http(s) URL")


def validate_annotations(annotations: Any, path: str = "annotations") -> list:
    """Annotations: unique AC Identifier names, string values; a few names have formats."""
    values = _name_value_list(annotations, path, validate_ac_identifier, "annotations")
    for i, item in enumerate(annotations):
        name = item["name"]
        vpath = _at(_ix(path, i), "value")
        if name == "created":
            _rfc3339(values[name], vpath)
        elif name in ("homepage", "documentation"):
            _http_url(values[name], vpath)
    return annotations


# --------------------------------------------------------------------------- quantities

def parse_quantity(text: Any, path: str) -> "Decimal":
    """A resource quantity as Kubernetes resource.Quantity writes it, as a Decimal.

    The unit is the resource's base unit (bytes, cores, bytes/s ...). Decimal keeps "500m"
    and "1.5Gi" exact; callers decide whether a fraction makes sense.
    """
    from decimal import Decimal, localcontext

    _str(text, path)
    m = _QUANTITY_RE.match(text)
    if m is None:
        raise ValidationError(path, text, "is not a quantity (e.g. \"128Mi\", \"1G\", \"500m\", \"1e3\")")
    sign, number, suffix = m.groups()
    if suffix in _QUANTITY_SUFFIXES:
        base, exp = _QUANTITY_SUFFIXES[suffix]
    else:
        em = _EXPONENT_RE.match(suffix)
        if em is None:
            raise ValidationError(path, text, f"has an unknown quantity suffix {suffix!r} "
                                  "(one of n u m k M G T P E Ki Mi Gi Ti Pi Ei, or e<exponent>)")
        base, exp = 10, int(em.group(1))
        if abs(exp) > 64:
            raise ValidationError(path, text, "is out of range")
    with localcontext() as ctx:
        ctx.prec = len(number) + 40  # exact: no input we accept needs rounding
        value = Decimal(number)
        value = value.scaleb(exp) if base == 10 else value * (2 ** exp)
        if sign == "-":
            value = -value
        if value == value.to_integral_value():
            value = value.quantize(Decimal(1))  # 1G reads as 1000000000, not 1E+9
    return value


def _positive_quantity(value: Any, path: str, integral: bool = False) -> "Decimal":
    q = parse_quantity(value, path)
    if q <= 0:
        raise ValidationError(path, value, "must be a positive quantity")
    if integral and q != q.to_integral_value():
        raise ValidationError(path, value, "must be a whole number of bytes")
    return q


# --------------------------------------------------------------------------- isolators

def _iso_request_limit(value: Any, path: str, integral: bool) -> None:
    _dict(value, path)
    if value.get("default") not in (None, False):
        raise ValidationError(_at(path, "default"), value["default"], "must be false for this isolator")
    request = limit = None
    if _optional(value, "request") is not None:
        request = _positive_quantity(value["request"], _at(path, "request"), integral)
    if _optional(value, "limit") is not None:
        limit = _positive_quantity(value["limit"], _at(path, "limit"), integral)
    if request is not None and limit is not None and request > limit:
        raise ValidationError(_at(path, "request"), value["request"],
                              f"is more than the limit {json.dumps(value['limit'])}")


def _iso_default_limit(value: Any, path: str) -> None:
    # The spec only defines default=true (the limit applies to every device/interface);
    # false is kept as written and left to the executor.
    _dict(value, path)
    _bool(_required(value, "default", path), _at(path, "default"))
    if _optional(value, "request") is not None:
        raise ValidationError(_at(path, "request"), value["request"], "is not supported by this isolator")
    _positive_quantity(_required(value, "limit", path), _at(path, "limit"))


def _iso_capabilities(value: Any, path: str) -> None:
    _dict(value, path)
    spath = _at(path, "set")
    caps = _list(_required(value, "set", path), spath)
    if not caps:
        raise ValidationError(spath, caps, "must not be empty")
    for i, cap in enumerate(caps):
        _str(cap, _ix(spath, i))
        if cap not in LINUX_CAPABILITIES:
            raise ValidationError(_ix(spath, i), cap, "is not a Linux capability (e.g. \"CAP_NET_ADMIN\")")


def _iso_seccomp(value: Any, path: str) -> None:
    _dict(value, path)
    spath = _at(path, "set")
    names = _list(_required(value, "set", path), spath)
    if not names:
        raise ValidationError(spath, names, "must not be empty")
    for i, name in enumerate(names):
        _str(name, _ix(spath, i))
        if not (_SYSCALL_RE.match(name) or _SYSCALL_GROUP_RE.match(name)):
            raise ValidationError(_ix(spath, i), name, "is not a syscall name or @group")
    errno = _optional(value, "errno")
    if errno is not None:
        # Not checked against a table: the spec's own example says "EACCESS".
        _str(errno, _at(path, "errno"))
        if not _ERRNO_RE.match(errno):
            raise ValidationError(_at(path, "errno"), errno, "is not an errno name (e.g. \"EPERM\")")


def _iso_selinux(value: Any, path: str) -> None:
    _dict(value, path)
    for key in ("user", "role", "type", "level"):
        field = _str(_required(value, key, path), _at(path, key), nonempty=True)
        if key != "level" and ":" in field:  # levels are "s0:c1,c2"; the rest cannot hold ':'
            raise ValidationError(_at(path, key), field, "must not contain ':'")


def _iso_apparmor(value: Any, path: str) -> None:
    _dict(value, path)
    if _optional(value, "name") is not None:
        _str(value["name"], _at(path, "name"), nonempty=True)


def _iso_sysctl(value: Any, path: str) -> None:
    _dict(value, path)
    for key, val in value.items():
        if not isinstance(key, str) or not key or "/" in key or "\x00" in key:
            raise ValidationError(path, key, "is not a sysctl name (e.g. \"net.ipv4.tcp_fin_timeout\")")
        _str(val, _at(path, key))


_ISOLATOR_CHECKS: Dict[str, Callable[[Any, str], Any]] = {
    "resource/cpu": lambda v, p: _iso_request_limit(v, p, integral=False),
    "resource/memory": lambda v, p: _iso_request_limit(v, p, integral=True),
    "resource/block-bandwidth": _iso_default_limit,
    "resource/block-iops": _iso_default_limit,
    "resource/network-bandwidth": _iso_default_limit,
    "os/linux/capabilities-retain-set": _iso_capabilities,
    "os/linux/capabilities-remove-set": _iso_capabilities,
    "os/linux/no-new-privileges": _bool,
    "os/linux/seccomp-remove-set": _iso_seccomp,
    "os/linux/seccomp-retain-set": _iso_seccomp,
    "os/linux/oom-score-adj": lambda v, p: _int(v, p, -1000, 1000),
    "os/linux/cpu-shares": lambda v, p: _int(v, p, 2, 262144),
    "os/linux/selinux-context": _iso_selinux,
    "os/linux/apparmor-profile": _iso_apparmor,
    "os/unix/sysctl": _iso_sysctl,
}


def validate_isolator(obj: Any, path: str) -> dict:
    """One {name, value} isolator; known names are checked by shape, unknown ones kept.

    Executors may ignore isolators they do not implement (KNOWN_ISOLATORS lists the spec's),
    but must say which they ignored.
    """
    _dict(obj, path)
    name = validate_ac_identifier(_required(obj, "name", path), _at(path, "name"))
    vpath = _at(path, "value")
    if "value" not in obj:
        raise ValidationError(vpath, MISSING, "is required")
    check = _ISOLATOR_CHECKS.get(name)
    if check is not None:
        check(obj["value"], vpath)
    return obj


def validate_isolators(isolators: Any, path: str = "isolators") -> list:
    """An isolator list: each valid, names unique, exclusive pairs not together."""
    _list(isolators, path)
    seen: Dict[str, int] = {}
    for i, iso in enumerate(isolators):
        ipath = _ix(path, i)
        validate_isolator(iso, ipath)
        _unique(seen, iso["name"], _at(ipath, "name"), i, path.rsplit(".", 1)[-1])
    for a, b in _EXCLUSIVE_ISOLATORS:
        if a in seen and b in seen:
            i = max(seen[a], seen[b])
            other = a if i == seen[b] else b
            raise ValidationError(_at(_ix(path, i), "name"), isolators[i]["name"],
                                  f"cannot be used together with {other} "
                                  f"({path.rsplit('.', 1)[-1]}[{seen[other]}])")
    return isolators


# --------------------------------------------------------------------------- app

def _validate_port(port: Any, path: str) -> dict:
    _dict(port, path)
    validate_ac_name(_required(port, "name", path), _at(path, "name"))
    proto = _str(_required(port, "protocol", path), _at(path, "protocol"))
    if proto not in _PORT_PROTOCOLS:
        raise ValidationError(_at(path, "protocol"), proto, "is not a supported protocol (tcp, udp, sctp)")
    number = _int(_required(port, "port", path), _at(path, "port"), 1, 65535)
    count = 1
    if _optional(port, "count") is not None:
        count = _int(port["count"], _at(path, "count"), low=1)
    if number + count > 65536:
        raise ValidationError(_at(path, "count"), count, f"makes the port range end past 65535 "
                              f"(port {number})")
    if _optional(port, "socketActivated") is not None:
        _bool(port["socketActivated"], _at(path, "socketActivated"))
    return port


def validate_app(obj: Any, path: str = "app") -> dict:
    """An image's app (or a pod app's full override of it).

    ``exec`` is optional (a dependency-only image has none; a pod app may supply it).
    exec[0] may be an absolute path or a name looked up in PATH (the project's facts say
    execvp); v0.8.11's Go code required an absolute path, which we do not copy.
    """
    _dict(obj, path)
    if _optional(obj, "exec") is not None:
        _exec_list(obj["exec"], _at(path, "exec"), nonempty=False)
    _str(_required(obj, "user", path), _at(path, "user"), nonempty=True)
    _str(_required(obj, "group", path), _at(path, "group"), nonempty=True)

    if _optional(obj, "supplementaryGIDs") is not None:
        gpath = _at(path, "supplementaryGIDs")
        for i, gid in enumerate(_list(obj["supplementaryGIDs"], gpath)):
            _int(gid, _ix(gpath, i), 0, 2 ** 32 - 2)

    if _optional(obj, "eventHandlers") is not None:
        hpath = _at(path, "eventHandlers")
        seen: Dict[str, int] = {}
        for i, handler in enumerate(_list(obj["eventHandlers"], hpath)):
            ipath = _ix(hpath, i)
            _dict(handler, ipath)
            name = _str(_required(handler, "name", ipath), _at(ipath, "name"))
            if name not in _EVENT_HANDLERS:
                raise ValidationError(_at(ipath, "name"), name, "is not an event handler (pre-start, post-stop)")
            _unique(seen, name, _at(ipath, "name"), i, "eventHandlers")
            _exec_list(_required(handler, "exec", ipath), _at(ipath, "exec"), nonempty=True)

    if "workingDirectory" in obj and obj["workingDirectory"] is not None:
        _abs_path(obj["workingDirectory"], _at(path, "workingDirectory"))

    if _optional(obj, "environment") is not None:
        epath = _at(path, "environment")
        seen = {}
        for i, var in enumerate(_list(obj["environment"], epath)):
            ipath = _ix(epath, i)
            _dict(var, ipath)
            name = validate_env_name(_required(var, "name", ipath), _at(ipath, "name"))
            _unique(seen, name, _at(ipath, "name"), i, "environment")
            _str(_required(var, "value", ipath), _at(ipath, "value"))

    if _optional(obj, "mountPoints") is not None:
        mpath = _at(path, "mountPoints")
        seen = {}
        for i, mp in enumerate(_list(obj["mountPoints"], mpath)):
            ipath = _ix(mpath, i)
            _dict(mp, ipath)
            name = validate_ac_name(_required(mp, "name", ipath), _at(ipath, "name"))
            _unique(seen, name, _at(ipath, "name"), i, "mountPoints")
            _abs_path(_required(mp, "path", ipath), _at(ipath, "path"))
            if _optional(mp, "readOnly") is not None:
                _bool(mp["readOnly"], _at(ipath, "readOnly"))

    if _optional(obj, "ports") is not None:
        ppath = _at(path, "ports")
        seen = {}
        for i, port in enumerate(_list(obj["ports"], ppath)):
            ipath = _ix(ppath, i)
            _validate_port(port, ipath)
            _unique(seen, port["name"], _at(ipath, "name"), i, "ports")

    if _optional(obj, "isolators") is not None:
        validate_isolators(obj["isolators"], _at(path, "isolators"))
    return obj


# --------------------------------------------------------------------------- documents

def _load(raw: Union[bytes, bytearray, str, dict], what: str) -> dict:
    """bytes/str/dict -> dict, refusing bad UTF-8, bad JSON, duplicate keys and NaN."""
    if isinstance(raw, dict):
        _jsonable(raw, "")
        return raw
    if isinstance(raw, (bytes, bytearray)):
        try:
            text = bytes(raw).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValidationError("", what, f"is not UTF-8 text (byte {exc.start})") from None
    elif isinstance(raw, str):
        text = raw
    else:
        raise ValidationError("", what, f"must be JSON text or an object, not {_type_name(raw)}")

    def pairs(items: List[Tuple[str, Any]]) -> dict:
        out: dict = {}
        for key, value in items:
            if key in out:
                raise ValidationError("", key, f"is a duplicate key in {what}")
            out[key] = value
        return out

    def constant(name: str) -> Any:
        raise ValidationError("", name, f"is not valid JSON in {what}")

    try:
        doc = json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except json.JSONDecodeError as exc:
        raise ValidationError("", what, f"is not valid JSON: {exc.msg} at line {exc.lineno} "
                              f"column {exc.colno}") from None
    except RecursionError:
        raise ValidationError("", what, "is nested too deeply") from None
    if not isinstance(doc, dict):
        raise ValidationError("", doc, f"must be a JSON object ({what}), not {_type_name(doc)}")
    return doc


def _jsonable(value: Any, path: str) -> None:
    """A dict given directly must hold only what JSON can (str keys, no tuples, no NaN)."""
    stack = [(value, path)]
    while stack:
        item, ipath = stack.pop()
        if isinstance(item, dict):
            for key, sub in item.items():
                if not isinstance(key, str):
                    raise ValidationError(ipath, key, "is not a string key, as JSON needs")
                stack.append((sub, _at(ipath, key)))
        elif isinstance(item, list):
            stack.extend((sub, _ix(ipath, i)) for i, sub in enumerate(item))
        elif isinstance(item, float):
            if math.isnan(item) or math.isinf(item):
                raise ValidationError(ipath, repr(item), "is not a JSON number")
        elif not (item is None or isinstance(item, (str, int, bool))):
            raise ValidationError(ipath, repr(item), f"is a {type(item).__name__}, not a JSON value")


def _header(doc: dict, kind: str) -> None:
    ac_kind = _str(_required(doc, "acKind", ""), "acKind")
    if ac_kind != kind:
        raise ValidationError("acKind", ac_kind, f"must be \"{kind}\"")
    _semver(_required(doc, "acVersion", ""), "acVersion")


def parse_image_manifest(raw: Union[bytes, str, dict]) -> dict:
    """Parse (if needed) and validate an ImageManifest; returns the document itself."""
    doc = _load(raw, "image manifest")
    _header(doc, "ImageManifest")
    validate_ac_identifier(_required(doc, "name", ""), "name")
    if _optional(doc, "labels") is not None:
        validate_labels(doc["labels"], "labels")
    if _optional(doc, "app") is not None:
        validate_app(doc["app"], "app")
    if _optional(doc, "dependencies") is not None:
        for i, dep in enumerate(_list(doc["dependencies"], "dependencies")):
            dpath = _ix("dependencies", i)
            _dict(dep, dpath)
            validate_ac_identifier(_required(dep, "imageName", dpath), _at(dpath, "imageName"))
            if _optional(dep, "imageID") is not None and dep["imageID"] != PLACEHOLDER_IMAGE_ID:
                parse_image_id(dep["imageID"], _at(dpath, "imageID"), allow_prefix=True)
            if _optional(dep, "labels") is not None:
                validate_labels(dep["labels"], _at(dpath, "labels"))
            if _optional(dep, "size") is not None:
                _int(dep["size"], _at(dpath, "size"), low=0)
    if _optional(doc, "pathWhitelist") is not None:
        for i, p in enumerate(_list(doc["pathWhitelist"], "pathWhitelist")):
            _abs_path(p, _ix("pathWhitelist", i))
    if _optional(doc, "annotations") is not None:
        validate_annotations(doc["annotations"], "annotations")
    return doc


def _validate_volume(vol: Any, path: str) -> str:
    _dict(vol, path)
    name = validate_ac_name(_required(vol, "name", path), _at(path, "name"))
    kind = _str(_required(vol, "kind", path), _at(path, "kind"))
    if kind not in ("host", "empty"):
        raise ValidationError(_at(path, "kind"), kind, "is not a volume kind (host, empty)")
    if kind == "host":
        _abs_path(_required(vol, "source", path), _at(path, "source"))
        for key in ("mode", "uid", "gid"):
            if _optional(vol, key) is not None:
                raise ValidationError(_at(path, key), vol[key], "is only allowed for empty volumes")
        if _optional(vol, "recursive") is not None:
            _bool(vol["recursive"], _at(path, "recursive"))
    else:
        for key in ("source", "recursive"):
            if _optional(vol, key) is not None:
                raise ValidationError(_at(path, key), vol[key], "is only allowed for host volumes")
        if _optional(vol, "mode") is not None:
            mode = _str(vol["mode"], _at(path, "mode"))
            if not _MODE_RE.match(mode) or int(mode, 8) > 0o7777:
                raise ValidationError(_at(path, "mode"), mode, "is not an octal file mode (e.g. \"0755\")")
        for key in ("uid", "gid"):
            if _optional(vol, key) is not None:
                _int(vol[key], _at(path, key), 0, 2 ** 32 - 2)
    if _optional(vol, "readOnly") is not None:
        _bool(vol["readOnly"], _at(path, "readOnly"))
    return name


def _validate_pod_app(app: Any, path: str, volumes: Dict[str, int]) -> str:
    _dict(app, path)
    name = validate_ac_name(_required(app, "name", path), _at(path, "name"))
    ipath = _at(path, "image")
    image = _dict(_required(app, "image", path), ipath)
    # A pod template (the spec's pod_template.json) names images without IDs; a runtime
    # manifest pins full IDs. So: id or name, and an id given must be a full ID.
    if _optional(image, "id") is None and _optional(image, "name") is None:
        raise ValidationError(_at(ipath, "id"), MISSING, "is required when image.name is not given")
    if _optional(image, "id") is not None:
        parse_image_id(image["id"], _at(ipath, "id"))
    if _optional(image, "name") is not None:
        validate_ac_identifier(image["name"], _at(ipath, "name"))
    if _optional(image, "labels") is not None:
        validate_labels(image["labels"], _at(ipath, "labels"))
    if _optional(app, "app") is not None:
        validate_app(app["app"], _at(path, "app"))
    if _optional(app, "readOnlyRootFS") is not None:
        _bool(app["readOnlyRootFS"], _at(path, "readOnlyRootFS"))
    if _optional(app, "mounts") is not None:
        mpath = _at(path, "mounts")
        targets: Dict[str, int] = {}
        for i, mount in enumerate(_list(app["mounts"], mpath)):
            mi = _ix(mpath, i)
            _dict(mount, mi)
            volume = validate_ac_name(_required(mount, "volume", mi), _at(mi, "volume"))
            known = volume in volumes
            if _optional(mount, "appVolume") is not None:  # v0.8.11: a volume of this app only
                own = _validate_volume(mount["appVolume"], _at(mi, "appVolume"))
                if own != volume:
                    raise ValidationError(_at(mi, "appVolume.name"), own, f"must equal volume {json.dumps(volume)}")
                known = True
            if not known:
                raise ValidationError(_at(mi, "volume"), volume, "names no volume of the pod")
            # v0.8.11 (and the spec's examples) give "path", the absolute target; earlier
            # versions named a mount point of the app (an AC Name), as "path" or
            # "mountPoint". Both are accepted: a name resolves through app.mountPoints.
            key = "path" if _optional(mount, "path") is not None or "mountPoint" not in mount else "mountPoint"
            kpath = _at(mi, key)
            target = _str(_required(mount, key, mi), kpath, nonempty=True)
            if not target.startswith("/") and not AC_NAME_RE.match(target):
                raise ValidationError(kpath, target, "is neither an absolute path nor a mount point name")
            _unique(targets, target.rstrip("/") or "/", kpath, i, "mounts")
    if _optional(app, "annotations") is not None:
        validate_annotations(app["annotations"], _at(path, "annotations"))
    return name


def parse_pod_manifest(raw: Union[bytes, str, dict]) -> dict:
    """Parse (if needed) and validate a PodManifest; returns the document itself.

    Every mount must name a volume of the pod (or its own appVolume): a pod that mounts
    nothing real is refused here rather than at run time.
    """
    doc = _load(raw, "pod manifest")
    _header(doc, "PodManifest")
    volumes: Dict[str, int] = {}
    if _optional(doc, "volumes") is not None:
        for i, vol in enumerate(_list(doc["volumes"], "volumes")):
            vpath = _ix("volumes", i)
            _unique(volumes, _validate_volume(vol, vpath), _at(vpath, "name"), i, "volumes")
    apps = _list(_required(doc, "apps", ""), "apps")
    if not apps:
        raise ValidationError("apps", apps, "must name at least one app")
    names: Dict[str, int] = {}
    for i, app in enumerate(apps):
        apath = _ix("apps", i)
        _unique(names, _validate_pod_app(app, apath, volumes), _at(apath, "name"), i, "apps")
    if _optional(doc, "isolators") is not None:
        validate_isolators(doc["isolators"], "isolators")
    if _optional(doc, "annotations") is not None:
        validate_annotations(doc["annotations"], "annotations")
    if _optional(doc, "ports") is not None:
        seen: Dict[str, int] = {}
        for i, port in enumerate(_list(doc["ports"], "ports")):
            ppath = _ix("ports", i)
            _dict(port, ppath)
            name = validate_ac_name(_required(port, "name", ppath), _at(ppath, "name"))
            _unique(seen, name, _at(ppath, "name"), i, "ports")
            _int(_required(port, "hostPort", ppath), _at(ppath, "hostPort"), 1, 65535)
            if _optional(port, "hostIP") is not None:
                _ip_address(port["hostIP"], _at(ppath, "hostIP"))
            if _optional(port, "podPort") is not None:
                # v0.8.11 makes podPort a full port object; a bare number is accepted too.
                if isinstance(port["podPort"], dict):
                    _validate_port(port["podPort"], _at(ppath, "podPort"))
                else:
                    _int(port["podPort"], _at(ppath, "podPort"), 1, 65535)
    return doc


def _ip_address(value: Any, path: str) -> str:
    import ipaddress

    _str(value, path)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValidationError(path, value, "is not an IP address") from None
    return value


def dump_manifest(doc: Any) -> bytes:
    """Canonical bytes of a manifest: compact UTF-8 JSON, key order as given.

    Deterministic for equal dicts built in the same order; sort_keys is off so the author's
    order survives (it is what the metadata service serves back).
    """
    try:
        text = json.dumps(doc, ensure_ascii=False, sort_keys=False, separators=(",", ":"),
                          allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValidationError("", _type_name(doc), f"cannot be written as JSON: {exc}") from None
    return text.encode("utf-8")


# --------------------------------------------------------------------------- image references

def parse_image_reference(text: Any) -> Tuple[str, Dict[str, str]]:
    """``name[:version][,label=value...]`` -> (name, labels); the version becomes a label."""
    _str(text, "image", nonempty=True)
    head, *pairs = text.split(",")
    name, sep, version = head.partition(":")
    validate_ac_identifier(name, "image")
    labels: Dict[str, str] = {}
    if sep:
        if not version or ":" in version or "=" in version:  # "=": what format_image_reference cannot write
            raise ValidationError("image", text, "has an empty or malformed :version")
        labels["version"] = version
    for pair in pairs:
        key, eq, value = pair.partition("=")
        if not eq or "=" in value:
            raise ValidationError("image", pair, f"is not a label=value pair (in {json.dumps(text)})")
        path = f"image labels.{key}" if key else "image labels"
        validate_ac_identifier(key, path)
        if key == "name":
            raise ValidationError(path, key, "is not allowed as a label name")
        if not value:
            raise ValidationError(path, value, "must not be empty")
        if any(c.isspace() for c in value):
            raise ValidationError(path, value, "must not contain whitespace")
        if key in labels:
            raise ValidationError(path, value, f"is given twice (in {json.dumps(text)})")
        labels[key] = value
    if any(c.isspace() for c in labels.get("version", "")):
        raise ValidationError("image labels.version", labels["version"], "must not contain whitespace")
    _check_os_arch(labels, "image labels", lambda n: f"image labels.{n}")
    return name, labels


def format_image_reference(name: Any, labels: Optional[Dict[str, str]] = None) -> str:
    """Inverse of parse_image_reference: version first (as ``:version``), then the rest in order."""
    validate_ac_identifier(name, "image")
    labels = dict(_dict(labels, "image labels")) if labels is not None else {}
    dict_to_labels(labels, "image labels")
    parts = [name]
    for key, value in labels.items():
        if not value or any(c in value for c in ",=") or any(c.isspace() for c in value) \
                or (key == "version" and ":" in value):
            raise ValidationError(f"image labels.{key}", value, "cannot be written in an image reference")
    if "version" in labels:
        parts[0] += ":" + labels.pop("version")
    parts.extend(f"{key}={value}" for key, value in labels.items())
    return ",".join(parts)
