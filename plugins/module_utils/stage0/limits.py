"""Resource limits as docker and podman users write them, checked and put in one normal form,
and turned into the app's isolators at prepare.

appc has isolators for the memory limit and request, the CPU limit and the OOM score
adjustment (oom_score_adj, docker's and podman's name); the rest become this
stage1's own ``rocket/*`` isolators (stage1/isolators.py ROCKET_ISOLATORS), which another
stage1 reports ignored, as appc asks of an executor. Values the kernel would refuse or that
cannot mean what was written fail here, before a pod exists, naming the option's path.
"""
from __future__ import annotations

import os
import stat

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional

from .errors import RocketError, ValidationError

KEYS = ("memory", "memory_reservation", "memory_swap", "cpus", "cpuset_cpus", "cpuset_mems",
        "pids_limit", "blkio_weight", "device_read_bps", "device_write_bps", "device_read_iops",
        "device_write_iops", "ulimits", "shm_size", "oom_score_adj")
DEVICE_KEYS = ("device_read_bps", "device_write_bps", "device_read_iops", "device_write_iops")
# Pods recorded before these options existed have none of them: unset compares equal.
DEFAULTS: Dict[str, Any] = {k: [] if k in DEVICE_KEYS or k == "ulimits" else None for k in KEYS}

MEMORY_MIN = 6 << 20  # docker's floor: below it an app cannot start (prepare.MEMORY_LIMIT_MIN)
HOST_FACTOR = 16      # as prepare.MEMORY_HOST_FACTOR: more is most likely a unit slip
_SIZE = r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(?:([kmgtpe])(i?b?)|(b?))\s*$"
_ULIMIT_NAMES = ("as", "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice",
                 "nofile", "nproc", "rss", "rtprio", "rttime", "sigpending", "stack")


def parse_size(value: Any, path: str) -> int:
    """Bytes from docker's forms ("512m", "1g", "64MiB", "1.5g", a number of bytes): the
    units are binary, as docker's are."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(path, value, "must be a size such as 512m, 1g or a number of bytes")
    if isinstance(value, int):
        n = value
    else:
        import re  # not on the start path of modules that never see a size

        m = re.match(_SIZE, value, re.IGNORECASE)
        if not m:
            raise ValidationError(path, value, "is not a size (e.g. 512m, 1g, 64MiB or a number of bytes)")
        unit = (m.group(2) or "").lower()
        n = int(float(m.group(1)) * (1 << (10 * " kmgtpe".index(unit))) if unit else float(m.group(1)))
    if n <= 0:
        raise ValidationError(path, value, "must be more than 0 bytes")
    if n >= 1 << 63:
        raise ValidationError(path, value, "is %d bytes; sizes are below 2^63 bytes" % n)
    return n


def host_memory() -> int:
    """MemTotal + SwapTotal in bytes, 0 when /proc/meminfo says nothing."""
    total = 0
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith((b"MemTotal:", b"SwapTotal:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return 0
    return total


def _memory(value: Any, path: str, floor: int = 0) -> Optional[int]:
    if value is None:
        return None
    n = parse_size(value, path)
    if n < floor:
        raise ValidationError(path, value, "is %d bytes; at least %d bytes (6m) are needed for an app to start"
                              % (n, floor))
    host = host_memory()
    if host and n > host * HOST_FACTOR:
        raise ValidationError(path, value, "is %d bytes, more than %d times this host's memory and swap (%d bytes);"
                              " leave it out for none" % (n, HOST_FACTOR, host))
    return n


def _int(value: Any, path: str, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().lstrip("-").isdigit():
        raise ValidationError(path, value, "must be %s" % what)
    return int(value)


def own_oom_score_adj() -> Optional[int]:
    """This process's oom_score_adj, which the pod's apps inherit; None where /proc does not say."""
    try:
        with open("/proc/self/oom_score_adj", "rb") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def has_sys_resource() -> bool:
    """CAP_SYS_RESOURCE in this process's effective set (stage1 runs with the same). Read from
    /proc, not with stage1's linux.capget: that would load ctypes into every such module run."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"CapEff:"):
                    return bool(int(line.split()[1], 16) >> 24 & 1)
    except (OSError, ValueError, IndexError):
        pass
    return True  # unknown: stage1 says so if the kernel refuses


def _needs_sys_resource(path: str, value: Any, what: str) -> None:
    """Refuse, before a pod exists, what the kernel lets only CAP_SYS_RESOURCE do where this
    host's root lacks it: the app's start would fail on it."""
    if not has_sys_resource():
        raise ValidationError(path, value, "%s, which needs CAP_SYS_RESOURCE, and this host's root lacks it here" % what)


def _online(kind: str) -> Optional[List[int]]:
    """The host's online CPUs or memory nodes; None when the host does not say."""
    try:
        with open("/sys/devices/system/%s/online" % kind) as f:
            return expand(f.read().strip(), "")
    except (OSError, ValidationError):
        return None


def expand(text: str, path: str) -> List[int]:
    """"0-2,4" as [0, 1, 2, 4]."""
    out: List[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValidationError(path, text, "is not a list such as 0-2,4")
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a or b > 8191:
            raise ValidationError(path, text, "has a range that is empty or beyond 8191")
        out.extend(range(a, b + 1))
    return sorted(set(out))


def compact(numbers: List[int]) -> str:
    """[0, 1, 2, 4] as "0-2,4" (the kernel's own form, so the cgroup file reads the same)."""
    out, i = [], 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else "%d-%d" % (numbers[i], numbers[j]))
        i = j + 1
    return ",".join(out)


def _cpuset(value: Any, path: str, kind: str) -> Optional[str]:
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValidationError(path, value, "must be a list such as 0-2,4")
    numbers = expand(str(value), path)
    online = _online(kind)
    if online is None and kind == "node":
        online = [0]  # a kernel without NUMA has node 0 only
    if online is not None:
        missing = [n for n in numbers if n not in online]
        if missing:
            raise ValidationError(path, value, "names %s %d, which this host does not have online (it has %s)"
                                  % ("CPU" if kind == "cpu" else "memory node", missing[0], compact(online)))
    return compact(numbers)


def _block_device(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError(path, value, "must be the absolute path of a block device on the host")
    try:
        st = os.stat(value)
    except OSError as e:
        raise ValidationError(path, value, "cannot be used: %s" % e.strerror)
    if not stat.S_ISBLK(st.st_mode):
        raise ValidationError(path, value, "is not a block device")
    return value


def _device_rates(value: Any, path: str, bps: bool) -> List[Dict[str, Any]]:
    """[{path, rate}] from dicts or docker's "path:rate" strings; each device once."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError(path, value, "must be a list of {path, rate}")
    out: List[Dict[str, Any]] = []
    for i, item in enumerate(value):
        ipath = "%s[%d]" % (path, i)
        if isinstance(item, str):
            where, colon, how_fast = item.rpartition(":")
            if not colon:
                raise ValidationError(ipath, item, "is not path:rate or {path, rate}")
            item = {"path": where, "rate": how_fast}
        if not isinstance(item, dict) or set(item) - {"path", "rate"} or "path" not in item or "rate" not in item:
            raise ValidationError(ipath, item, "must be {path, rate} (or path:rate)")
        dev = _block_device(item["path"], ipath + ".path")
        if bps:
            rate = parse_size(item["rate"], ipath + ".rate")
        else:
            rate = _int(item["rate"], ipath + ".rate", "a number of I/O operations per second")
            if rate <= 0:
                raise ValidationError(ipath + ".rate", item["rate"], "must be more than 0")
        if any(o["path"] == dev for o in out):
            raise ValidationError(ipath + ".path", dev, "is listed twice")
        out.append({"path": dev, "rate": rate})
    return sorted(out, key=lambda o: o["path"])


def _ulimit_value(value: Any, path: str) -> int:
    if isinstance(value, str) and value.strip().lower() in ("unlimited", "-1", "infinity"):
        return -1
    n = _int(value, path, "a number or unlimited (-1)")
    if n < -1:
        raise ValidationError(path, value, "must be a number or unlimited (-1)")
    return n


def _nr_open() -> int:
    try:
        with open("/proc/sys/fs/nr_open") as f:
            return int(f.read())
    except (OSError, ValueError):
        return 1 << 20


def _ulimits(value: Any, path: str) -> List[Dict[str, Any]]:
    """[{name, soft, hard}] sorted by name, from dicts or docker's and podman's strings
    ("nofile=1024:2048", "nofile:1024:2048", "nproc=512"); hard defaults to soft."""
    if value is None:
        return []
    if isinstance(value, dict):
        value = [dict(v, name=k) if isinstance(v, dict) else {"name": k, "soft": v} for k, v in value.items()]
    if not isinstance(value, list):
        raise ValidationError(path, value, "must be a list of {name, soft, hard} or name=soft:hard")
    out: Dict[str, Dict[str, Any]] = {}
    for i, item in enumerate(value):
        ipath = "%s[%d]" % (path, i)
        if isinstance(item, str):
            name, eq, rest = item.partition("=")
            if not eq:
                name, eq, rest = item.partition(":")
            if not eq or not rest:
                raise ValidationError(ipath, item, "is not name=soft[:hard] (e.g. nofile=1024:2048)")
            low, dummy_colon, high = rest.partition(":")
            item = {"name": name, "soft": low, "hard": high or low}
        if not isinstance(item, dict) or "name" not in item or "soft" not in item or set(item) - {"name", "soft", "hard"}:
            raise ValidationError(ipath, item, "must be {name, soft, hard} (hard defaults to soft)")
        name = str(item["name"]).strip().lower()
        if name.startswith("rlimit_"):
            name = name[7:]
        if name not in _ULIMIT_NAMES:
            raise ValidationError(ipath + ".name", item["name"], "is not a resource limit (one of %s)"
                                  % ", ".join(_ULIMIT_NAMES))
        if name in out:
            raise ValidationError(ipath + ".name", item["name"], "is set twice")
        soft = _ulimit_value(item["soft"], ipath + ".soft")
        hard = _ulimit_value(item.get("hard", item["soft"]), ipath + ".hard")
        if hard != -1 and (soft == -1 or soft > hard):
            raise ValidationError(ipath + ".soft", item["soft"], "is above the hard limit %d" % hard)
        if name == "nofile":
            cap = _nr_open()
            for key, n in (("hard", hard), ("soft", soft)):
                if n == -1 or n > cap:
                    raise ValidationError("%s.%s" % (ipath, key), item.get(key, item["soft"]),
                                          "is above this host's fs.nr_open (%d): the kernel refuses it" % cap)
        own = _own_hard_limit(name)
        if own is not None and (hard == -1 or hard > own):
            _needs_sys_resource(ipath + ".hard", item.get("hard", item["soft"]),
                                "is above this runtime's own hard limit (%d): raising it" % own)
        out[name] = {"name": name, "soft": soft, "hard": hard}
    return [out[k] for k in sorted(out)]


def _own_hard_limit(name: str) -> Optional[int]:
    """This process's hard limit of the resource (the app inherits it); None when unlimited."""
    import resource  # only where ulimits are given

    hard = resource.getrlimit(getattr(resource, "RLIMIT_" + name.upper()))[1]
    return None if hard == resource.RLIM_INFINITY else hard


# The isolator each option becomes (isolators() below): both given is refused.
OWNERS = {"resource/memory": ("memory", "memory_reservation"), "resource/cpu": ("cpus",),
          "rocket/memory-swap": ("memory_swap",), "rocket/cpuset": ("cpuset_cpus", "cpuset_mems"),
          "rocket/pids": ("pids_limit",), "rocket/block-io": ("blkio_weight",) + DEVICE_KEYS,
          "rocket/ulimits": ("ulimits",), "rocket/shm-size": ("shm_size",),
          "os/linux/oom-score-adj": ("oom_score_adj",)}


def normalize(raw: Dict[str, Any], path: str, isolators: List[Dict[str, Any]]) -> Dict[str, Any]:
    """The limit options of one app in their normal form (DEFAULTS for those not given).

    isolators: the app's own isolators option: an option and an isolator that set the same
    limit are refused (one source for each value, as cap_add and the capability isolators)."""
    out = dict(DEFAULTS)
    out["memory"] = _memory(raw.get("memory"), path + ".memory", MEMORY_MIN)
    out["memory_reservation"] = _memory(raw.get("memory_reservation"), path + ".memory_reservation")
    if out["memory"] is not None and out["memory_reservation"] is not None \
            and out["memory_reservation"] > out["memory"]:
        raise ValidationError(path + ".memory_reservation", raw["memory_reservation"],
                              "is more than memory (%d bytes)" % out["memory"])
    swap = raw.get("memory_swap")
    if swap is not None and str(swap).strip() not in ("0",):
        if str(swap).strip() == "-1":
            out["memory_swap"] = -1
        else:
            out["memory_swap"] = parse_size(swap, path + ".memory_swap")
        if out["memory"] is None:
            raise ValidationError(path + ".memory_swap", swap, "needs memory (it is memory plus swap)")
        if out["memory_swap"] != -1 and out["memory_swap"] < out["memory"]:
            raise ValidationError(path + ".memory_swap", swap, "is less than memory (%d bytes); it is memory plus "
                                  "swap, -1 for unlimited swap" % out["memory"])
    if raw.get("cpus") is not None:
        cpus = raw["cpus"]
        try:
            if isinstance(cpus, bool):
                raise ValueError
            f = float(cpus)
        except (TypeError, ValueError):
            raise ValidationError(path + ".cpus", cpus, "must be a number of CPUs such as 0.5 or 2")
        n = os.cpu_count() or 1
        if not 0.01 <= f <= n:
            raise ValidationError(path + ".cpus", cpus, "must be from 0.01 to %d (this host's CPUs)" % n)
        out["cpus"] = round(f, 3)
    out["cpuset_cpus"] = _cpuset(raw.get("cpuset_cpus"), path + ".cpuset_cpus", "cpu")
    out["cpuset_mems"] = _cpuset(raw.get("cpuset_mems"), path + ".cpuset_mems", "node")
    if raw.get("pids_limit") is not None:
        n = _int(raw["pids_limit"], path + ".pids_limit", "a number of processes (-1 or 0: unlimited)")
        if n < -1:
            raise ValidationError(path + ".pids_limit", raw["pids_limit"], "must be positive (-1 or 0: unlimited)")
        out["pids_limit"] = n if n > 0 else -1  # unlimited, said: unset is stage1's default (cgroups.PIDS_DEFAULT)
    if raw.get("blkio_weight") is not None:
        n = _int(raw["blkio_weight"], path + ".blkio_weight", "a weight from 10 to 1000")
        if n != 0 and not 10 <= n <= 1000:
            raise ValidationError(path + ".blkio_weight", raw["blkio_weight"], "must be from 10 to 1000 (0: unset)")
        out["blkio_weight"] = n or None
    for key in DEVICE_KEYS:
        out[key] = _device_rates(raw.get(key), path + "." + key, key.endswith("_bps"))
    out["ulimits"] = _ulimits(raw.get("ulimits"), path + ".ulimits")
    if raw.get("shm_size") is not None:
        out["shm_size"] = _memory(raw["shm_size"], path + ".shm_size")
        if out["shm_size"] is not None and out["shm_size"] < 4096:
            raise ValidationError(path + ".shm_size", raw["shm_size"], "is less than one page (4096 bytes)")
    if raw.get("oom_score_adj") is not None:
        n = _int(raw["oom_score_adj"], path + ".oom_score_adj", "a number from -1000 to 1000")
        if not -1000 <= n <= 1000:
            raise ValidationError(path + ".oom_score_adj", raw["oom_score_adj"], "must be from -1000 to 1000")
        own = own_oom_score_adj()
        if own is not None and n < own:
            _needs_sys_resource(path + ".oom_score_adj", raw["oom_score_adj"],
                                "is below this runtime's own (%d): lowering it" % own)
        out["oom_score_adj"] = n
    for iso in isolators or ():
        name = iso.get("name") if isinstance(iso, dict) else None
        for key in OWNERS.get(str(name), ()):
            if out[key] not in (None, []):
                raise ValidationError(path + "." + key, raw.get(key),
                                      "and the %s isolator both set it: give one" % name)
    return out


def asked(app: Dict[str, Any]) -> bool:
    """Does the (normalized) app set any limit option?"""
    return any(app.get(k) not in (None, []) for k in KEYS)


def isolators(existing: List[Dict[str, Any]], app: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The app's isolators (the image's, then the pod's) with its limit options as appc's
    resource/memory and resource/cpu (merged into the image's: the option wins per field) and
    os/linux/oom-score-adj, and this stage1's rocket/* isolators."""
    by_name = {iso["name"]: dict(iso) for iso in existing or ()}

    def merge(name: str, fields: Dict[str, Any]) -> None:
        fields = {k: v for k, v in fields.items() if v is not None}
        if fields:
            value = dict(by_name.get(name, {}).get("value") or {})
            value.update(fields)
            by_name[name] = {"name": name, "value": value}

    merge("resource/memory", {"limit": None if app.get("memory") is None else str(app["memory"]),
                              "request": None if app.get("memory_reservation") is None
                              else str(app["memory_reservation"])})
    if app.get("cpus") is not None:
        merge("resource/cpu", {"limit": "%dm" % round(app["cpus"] * 1000)})
    if app.get("memory_swap") is not None:
        by_name["rocket/memory-swap"] = {"name": "rocket/memory-swap", "value": {"limit": app["memory_swap"]}}
    cpuset = {k: app.get("cpuset_" + k) for k in ("cpus", "mems") if app.get("cpuset_" + k) is not None}
    if cpuset:
        by_name["rocket/cpuset"] = {"name": "rocket/cpuset", "value": cpuset}
    if app.get("pids_limit") is not None:
        by_name["rocket/pids"] = {"name": "rocket/pids", "value": {"limit": app["pids_limit"]}}
    bio: Dict[str, Any] = {}
    if app.get("blkio_weight") is not None:
        bio["weight"] = app["blkio_weight"]
    for key in DEVICE_KEYS:
        rules = []
        for rule in app.get(key) or ():
            st = os.stat(rule["path"])
            rules.append({"path": rule["path"], "device": "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev)),
                          "rate": rule["rate"]})
        if rules:
            bio[key[len("device_"):]] = rules
    if bio:
        by_name["rocket/block-io"] = {"name": "rocket/block-io", "value": bio}
    if app.get("ulimits"):
        by_name["rocket/ulimits"] = {"name": "rocket/ulimits", "value": [dict(u) for u in app["ulimits"]]}
    if app.get("oom_score_adj") is not None:  # appc's own isolator: another stage1 applies it too
        by_name["os/linux/oom-score-adj"] = {"name": "os/linux/oom-score-adj", "value": app["oom_score_adj"]}
    if app.get("shm_size") is not None:
        by_name["rocket/shm-size"] = {"name": "rocket/shm-size", "value": {"size": app["shm_size"]}}
    return list(by_name.values())


def cgroup_parent(value: "Any") -> "Optional[str]":
    """docker's and podman's cgroup_parent in its normal form (stage1's cgroups.check_parent
    decides, as stage1 checks it again), or None for the default parent."""
    if value in (None, ""):
        return None
    from ..stage1 import cgroups

    try:
        parent = cgroups.check_parent(value)
    except ValueError as e:
        raise RocketError(str(e)) from None
    return None if parent == cgroups.DEFAULT_PARENT else parent
