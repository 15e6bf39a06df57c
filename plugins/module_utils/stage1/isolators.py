"""What an app's isolators ask for, as numbers stage1 applies; and which ones it ignores.

Enforced: os/linux/capabilities-retain-set and -remove-set (bounding set, and for a
non-root user with a retain-set the effective/permitted/inheritable/ambient sets),
os/linux/no-new-privileges, os/linux/oom-score-adj, resource/memory (limit),
resource/cpu (limit as a CFS quota, request as shares), os/linux/cpu-shares.
Everything else is listed in Isolation.ignored, never silently dropped.
"""
from .linux import CAP_NUMBERS

DEFAULT_CAPABILITIES = (
    "CAP_AUDIT_WRITE", "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER",
    "CAP_KILL", "CAP_MKNOD", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID",
    "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP", "CAP_SYS_CHROOT",
)
CPU_PERIOD_US = 100000

_SUFFIXES = {
    "": (10, 0), "n": (10, -9), "u": (10, -6), "m": (10, -3),
    "k": (10, 3), "M": (10, 6), "G": (10, 9), "T": (10, 12), "P": (10, 15), "E": (10, 18),
    "Ki": (2, 10), "Mi": (2, 20), "Gi": (2, 30), "Ti": (2, 40), "Pi": (2, 50), "Ei": (2, 60),
}


def quantity(text):
    """A Kubernetes-style quantity ("128Mi", "500m", "1e3") as a Decimal."""
    from decimal import Decimal, InvalidOperation
    s = str(text).strip()
    i = 1 if s[:1] in "+-" else 0
    while i < len(s) and (s[i].isdigit() or s[i] == "."):
        i += 1
    number, suffix = s[:i], s[i:]
    try:
        value = Decimal(number)
    except InvalidOperation:
        raise ValueError("%r is not a quantity" % (text,))
    if suffix in _SUFFIXES:
        base, exp = _SUFFIXES[suffix]
    elif suffix[:1] in ("e", "E") and suffix[1:].lstrip("+-").isdigit():
        base, exp = 10, int(suffix[1:])
    else:
        raise ValueError("%r is not a quantity" % (text,))
    return value.scaleb(exp) if base == 10 else value * (2 ** exp)


def cap_mask(names):
    mask = 0
    for name in names:
        if name not in CAP_NUMBERS:
            raise ValueError("unknown capability %r" % (name,))
        mask |= 1 << CAP_NUMBERS[name]
    return mask


def mask_names(mask):
    return [n for n, i in sorted(CAP_NUMBERS.items(), key=lambda x: x[1]) if mask & (1 << i)]


class Isolation:
    def __init__(self):
        self.bounding = cap_mask(DEFAULT_CAPABILITIES)
        self.retain = None          # mask of an explicit retain-set
        self.no_new_privileges = False
        self.oom_score_adj = None
        self.memory_limit = None    # bytes
        self.cpu_quota_us = None    # per CPU_PERIOD_US
        self.cpu_shares = None
        self.ignored = []

    def limits(self):
        return {"memory_limit": self.memory_limit, "cpu_quota_us": self.cpu_quota_us,
                "cpu_period_us": CPU_PERIOD_US, "cpu_shares": self.cpu_shares}

    def capability_sets(self, uid):
        """(bounding, effective, permitted, inheritable, ambient) masks for a process of uid.

        root: permitted = effective = bounding, no inheritable/ambient.
        another user: with a retain-set, the retained capabilities in every set (ambient
        so that they survive the uid change and the exec); without one, none.
        """
        bnd = self.bounding
        if uid == 0:
            return bnd, bnd, bnd, 0, 0
        kept = (self.retain or 0) & bnd
        return bnd, kept, kept, kept, kept


def parse(isolators):
    iso = Isolation()
    for item in isolators or ():
        name, value = item.get("name"), item.get("value")
        if name == "os/linux/capabilities-retain-set":
            iso.retain = cap_mask(value["set"])
            iso.bounding = iso.retain
        elif name == "os/linux/capabilities-remove-set":
            iso.bounding = cap_mask(DEFAULT_CAPABILITIES) & ~cap_mask(value["set"])
        elif name == "os/linux/no-new-privileges":
            iso.no_new_privileges = bool(value)
        elif name == "os/linux/oom-score-adj":
            iso.oom_score_adj = int(value)
        elif name == "resource/memory":
            if value.get("limit") is not None:
                iso.memory_limit = int(quantity(value["limit"]))
            if value.get("request") is not None:
                iso.ignored.append("resource/memory.request")
        elif name == "resource/cpu":
            if value.get("limit") is not None:
                iso.cpu_quota_us = max(1000, int(quantity(value["limit"]) * CPU_PERIOD_US))
            if value.get("request") is not None and iso.cpu_shares is None:
                iso.cpu_shares = max(2, int(quantity(value["request"]) * 1024))
        elif name == "os/linux/cpu-shares":
            iso.cpu_shares = int(value)
        else:
            iso.ignored.append(str(name))
    return iso
