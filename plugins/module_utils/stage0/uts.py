"""The pod's UTS names, hostname and domainname, checked before any pod exists.

The kernel takes up to 64 bytes of anything, but the host name also lands in the pod's
/etc/hosts and in what its peers on a network read about it: a space or a newline there
would forge entries. So a name is what resolvers take (labels of letters, digits, - and _,
as netconf's names), and a bad one is refused naming the option, not found by stage1.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional

from .errors import ValidationError

HOST_NAME_MAX = 64  # the kernel's __NEW_UTS_LEN, for the host name and the domain name alike


def check_name(value: Any, path: str, limit: int = HOST_NAME_MAX) -> str:
    """A host or domain name of at most ``limit`` bytes (253 for a name in /etc/hosts)."""
    ok = isinstance(value, str) and 0 < len(value) and all(
        0 < len(label) <= 63 and all(c.isalnum() and c.isascii() or c in "-_" for c in label)
        and label[0] != "-" for label in value.rstrip(".").split("."))
    if not ok:
        raise ValidationError(path, value, "is not a host name (dot-separated labels of letters, digits, - and _)")
    if len(value) > limit:
        raise ValidationError(path, value, "is %d characters long; the kernel takes at most %d" % (len(value), limit)
                              if limit == HOST_NAME_MAX else "is %d characters long; at most %d" % (len(value), limit))
    return value


def normalize(hostname: Optional[str], domainname: Optional[str]) -> Dict[str, str]:
    """The run options of the pod's names that were given, checked."""
    out = {}
    if hostname is not None:
        out["hostname"] = check_name(hostname, "hostname")
    if domainname is not None:
        out["domainname"] = check_name(domainname, "domainname")
    return out
