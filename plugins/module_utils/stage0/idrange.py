"""Host uid/gid ranges for pods run with private_users.

Each range is 65536 ids, the first one the pod's root. With private_users=true a range is
picked from one store for the whole host (STORE, /var/lib/rocket-idranges: a file per
range, <first id>, naming the data directory and the key that own it), under its lock:
ids are the host's, so two data directories must never hand out the same range (each
would map its pods' root onto the other's files). The start slot comes from a hash of the
data directory and the pod's name (of its UUID when unnamed), so a named pod gets the same
range every time it is replaced and its volumes keep their owners; a taken slot moves the
pick to the next free one. A range an older version recorded in the data directory's own
store (<data_dir>/userns) is adopted into the host's when still free, so it stays put.
Ranges start at 2^31, above the ids distributions hand out to users and to /etc/subuid
(by convention 100000 upwards). An explicit first id is used as given: keeping it apart
from other users of the host's ids is then the caller's business.
Ranges of unnamed pods are released when the pod is removed; a name keeps its range.
"""
import hashlib
import os

from .errors import RocketError
from .locks import locked

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Dict, Optional, Union  # noqa: F401
    from .datadir import DataDir  # noqa: F401
    from .pod import Pod  # noqa: F401

RANGE = 65536
FIRST = 1 << 31
SLOTS = ((1 << 32) - 1 - FIRST) // RANGE - 1   # the last range ends below (uid_t)-1
STORE = "/var/lib/rocket-idranges"


def _owners(d: str) -> "Dict[int, str]":
    out = {}  # type: Dict[int, str]
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return out
    for n in names:
        if n.isdigit():
            try:
                with open(os.path.join(d, n)) as f:
                    out[int(n)] = f.read().strip()
            except OSError:
                continue
    return out


def _owner(dd: "DataDir", key: str) -> str:
    """What the host store records: the data directory, a tab, the key."""
    return "%s\t%s" % (dd.path, key)


def _write(base: int, owner: str) -> None:
    tmp = os.path.join(STORE, ".%d.tmp" % base)
    with open(tmp, "w") as f:
        f.write(owner + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.rename(tmp, os.path.join(STORE, str(base)))


def allocate(dd: "DataDir", key: str) -> int:
    """The first host id of key's range in data directory dd, allocating one when it has none."""
    os.makedirs(STORE, mode=0o700, exist_ok=True)
    me = _owner(dd, key)
    with locked(os.path.join(STORE, ".lock")):
        owners = _owners(STORE)
        for base, owner in owners.items():
            if owner == me:
                return base
        for base, owner in _owners(os.path.join(dd.path, "userns")).items():
            if owner == key and base not in owners:  # recorded by an older version: keep it
                _write(base, me)
                return base
        start = int(hashlib.sha256(me.encode("utf-8")).hexdigest()[:8], 16) % SLOTS
        for i in range(SLOTS):
            base = FIRST + ((start + i) % SLOTS) * RANGE
            if base in owners:
                continue
            _write(base, me)
            return base
    raise RocketError("no free user namespace range in %s" % STORE)


def release(dd: "DataDir", key: str) -> None:
    old = os.path.join(dd.path, "userns")
    if os.path.isdir(old):  # an older version's record
        with locked(os.path.join(old, ".lock")):
            for base, owner in _owners(old).items():
                if owner == key:
                    os.unlink(os.path.join(old, str(base)))
    if not os.path.isdir(STORE):
        return
    me = _owner(dd, key)
    with locked(os.path.join(STORE, ".lock")):
        for base, owner in _owners(STORE).items():
            if owner == me:
                os.unlink(os.path.join(STORE, str(base)))


def normalize(value: "object") -> "Union[bool, int]":
    """The private_users option: false, true or the first host id of an explicit range."""
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in ("yes", "true", "on"):
        return True
    if text in ("no", "false", "off", ""):
        return False
    if text.isdigit() and 0 < int(text) <= (1 << 32) - 1 - RANGE:
        return int(text)
    raise RocketError("private_users must be true, false or a host id from 1 to %d (the first of %d), not %r"
                      % ((1 << 32) - 1 - RANGE, RANGE, value))


def for_pod(pod: "Pod", value: "object") -> "Optional[int]":
    """The first host id for this pod's start, or None without private_users."""
    v = normalize(value)
    if v is False:
        return None
    if v is not True:
        return v
    try:
        name = (pod.spec().get("spec") or {}).get("name")
    except (OSError, ValueError):
        name = None
    return allocate(pod.dd, ("name:%s" % name) if name else ("uuid:%s" % pod.uuid))
