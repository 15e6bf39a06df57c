"""What an app's isolators ask for, as numbers stage1 applies; and which ones it ignores.

Enforced: os/linux/capabilities-retain-set and -remove-set (bounding set, and for a
non-root user with a retain-set the effective/permitted/inheritable/ambient sets),
os/linux/no-new-privileges, os/linux/oom-score-adj, resource/memory (limit; request as
the soft limit),
resource/cpu (limit as a CFS quota, request as shares), os/linux/cpu-shares,
os/linux/seccomp-retain-set and -remove-set (a default remove-set without them; see
seccomp.py), os/unix/sysctl (namespaced sysctls only; init.py writes them in the pod's
namespaces), and this stage1's own rocket/* isolators for what appc has no isolator for
(ROCKET_ISOLATORS: the pod options memory_swap, cpuset_*, pids_limit, blkio_*/device_*,
ulimits, shm_size become these at prepare). Everything else is listed in Isolation.ignored with the reason, never
silently dropped. docs/isolation.md is the user's view of the same.
"""
import os

from . import seccomp
from .linux import CAP_NUMBERS

# podman's default set: appc's (schema.DEFAULT_CAPABILITIES) without CAP_NET_RAW (raw and
# AF_PACKET sockets: with net=host, every frame on the host's interfaces, other pods'
# traffic included), CAP_MKNOD (device nodes) and CAP_AUDIT_WRITE (the host's audit log).
# A retain-set (cap_add) gives them back; ping works without CAP_NET_RAW (PING_GROUP_RANGE).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_KILL",
    "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_SETFCAP",
    "CAP_SYS_CHROOT",
)
# Every group may open ICMP datagram sockets in the pod's own network namespace (podman's
# value): ping without CAP_NET_RAW. None: the highest group of the writer's user namespace,
# read at write time (a private_users namespace maps 65536 ids, and the kernel refuses an
# unmapped bound).
PING_GROUP_RANGE = "net.ipv4.ping_group_range"
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


def cap_names(mask):
    """The capability names of a mask, in kernel order."""
    return [n for n, i in sorted(CAP_NUMBERS.items(), key=lambda kv: kv[1]) if mask >> i & 1]


class Isolation:
    def __init__(self):
        self.bounding = cap_mask(DEFAULT_CAPABILITIES)
        self.retain = None          # mask of an explicit retain-set
        self.no_new_privileges = False
        self.oom_score_adj = None
        self.memory_limit = None    # bytes
        self.memory_request = None  # bytes: the soft limit (v1) / memory.low (v2)
        self.cpu_quota_us = None    # per CPU_PERIOD_US
        self.cpu_shares = None
        self.seccomp = None         # seccomp.Filter, or None for no filter
        self.seccomp_program = None  # its BPF for this host
        self.sysctls = {}           # name (dotted) -> value
        self.ignored = []           # isolator names (".request" for a part of one)
        self.reasons = {}           # ignored name -> why
        self.enforced = []
        self.privileged = False     # the pod's privileged option: see parse()
        self.devices = []           # passed-through host devices (init: hostdevices.describe)
        self.secrets = []           # [{name, target}] of the app's secret files (init)
        self.memory_swap = None     # bytes of memory + swap, -1 unlimited (rocket/memory-swap)
        self.cpuset_cpus = None     # "0-1,3" (rocket/cpuset)
        self.cpuset_mems = None
        self.pids_limit = None      # rocket/pids
        self.block_io = None        # rocket/block-io: {"weight": n, "read_bps": [[maj:min, n]]...}
        self.ulimits = []           # [(RLIMIT number, soft, hard)], -1 unlimited (rocket/ulimits)
        self.shm_size = None        # bytes of the app's /dev/shm tmpfs (rocket/shm-size)
        self.proc_guard = None      # landlock.guard(): whether the app runs in a domain of its own

    def ignore(self, name, reason):
        self.ignored.append(name)
        self.reasons[name] = reason

    def report(self):
        """What isolation.json says of this app (stage1 adds cgroup and pod-level facts)."""
        return {"enforced": list(self.enforced),
                "ignored": [{"name": n, "reason": self.reasons.get(n, "")} for n in self.ignored],
                "seccomp": dict(self.seccomp.describe(), mode_number=2)
                if self.seccomp_program and self.seccomp is not None else None,
                "no_new_privileges": self.no_new_privileges or self.seccomp_program is not None,
                "capabilities": cap_names(self.bounding),
                "sysctls": dict(self.sysctls), "privileged": self.privileged,
                "devices": list(self.devices), "secrets": list(self.secrets),
                "limits": self.asked(), "proc_guard": self.proc_guard}

    def asked(self):
        """The resource limits the app asks for, by the pod option's name (what enforced and
        ignored refer to); only those set."""
        out = {"memory": self.memory_limit, "memory_reservation": self.memory_request,
               "memory_swap": self.memory_swap,
               "cpus": None if self.cpu_quota_us is None else self.cpu_quota_us / float(CPU_PERIOD_US),
               "cpuset_cpus": self.cpuset_cpus, "cpuset_mems": self.cpuset_mems,
               "pids_limit": self.pids_limit, "shm_size": self.shm_size, "oom_score_adj": self.oom_score_adj,
               "ulimits": {n: [s, h] for dummy_number, s, h, n in self.ulimits} or None}
        for k, v in (self.block_io or {}).items():
            out["blkio_weight" if k == "weight" else "device_" + k] = (
                v if k == "weight" else [{"path": p, "device": d, "rate": r} for d, r, p in v])
        return {k: v for k, v in out.items() if v is not None}

    def limits(self):
        return {"memory_limit": self.memory_limit, "memory_request": self.memory_request,
                "cpu_quota_us": self.cpu_quota_us,
                "cpu_period_us": CPU_PERIOD_US, "cpu_shares": self.cpu_shares,
                "all_devices": self.privileged, "memory_swap": self.memory_swap,
                "cpuset_cpus": self.cpuset_cpus, "cpuset_mems": self.cpuset_mems,
                "pids_limit": self.pids_limit, "block_io": self.block_io}

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


# Sysctls that belong to a namespace the pod has its own of (kernel/ipc/namespace.c and
# ipc/mq_sysctl.c register these per IPC namespace; net.* are per network namespace).
IPC_SYSCTLS = ("kernel.shmmax", "kernel.shmall", "kernel.shmmni", "kernel.shm_rmid_forced",
               "kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
               "kernel.auto_msgmni", "kernel.msg_next_id", "kernel.sem_next_id",
               "kernel.shm_next_id")
IPC_PREFIXES = ("fs.mqueue.",)
NET_PREFIX = "net."


def sysctl_name(name):
    """The dotted form of a sysctl name ("net/ipv4/ip_forward" -> "net.ipv4.ip_forward")."""
    return str(name).replace("/", ".")


def check_sysctl(name):
    """ValueError unless name is a sysctl of the pod's own namespaces."""
    n = sysctl_name(name)
    parts = n.split(".")
    if not n or any(p in ("", ".", "..") for p in parts) or "\x00" in n:
        raise ValueError("os/unix/sysctl: %r is not a sysctl name" % (name,))
    if n.startswith(NET_PREFIX) or n in IPC_SYSCTLS or n.startswith(IPC_PREFIXES):
        return n
    raise ValueError("os/unix/sysctl: %s is not namespaced: setting it in a pod would change the "
                     "whole host (allowed: net.* with private networking, kernel.shm*/msg*/sem, "
                     "fs.mqueue.*)" % n)


def lsm_state():
    """{"apparmor": bool, "selinux": bool}: which LSMs confine processes on this host."""
    def _read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return ""
    return {"apparmor": _read("/sys/module/apparmor/parameters/enabled") == "Y",
            "selinux": os.path.exists("/sys/fs/selinux/enforce")}


def check(isolators):
    """Refuse at prepare what no pod could run: unknown seccomp names or errno values, both
    seccomp sets, non-namespaced sysctls. ValueError naming the isolator."""
    seccomp.from_isolators(isolators)
    for item in isolators or ():
        if item.get("name") == "os/unix/sysctl":
            for k in (item.get("value") or {}):
                check_sysctl(k)
        elif item.get("name") in ROCKET_ISOLATORS:
            try:
                _rocket(Isolation(), item["name"], item.get("value"))
            except (TypeError, KeyError, AttributeError, ValueError) as e:
                raise ValueError("%s: %r is not a value this isolator takes (%s)"
                                 % (item["name"], item.get("value"), e))


def parse(isolators, privileged=False):
    """privileged (docker's --privileged): every capability in the bounding set and no
    seccomp filter, the image's capability and seccomp isolators overridden (prepare refuses
    the pod's own); the other isolators (resources, sysctls) still hold."""
    if privileged:
        isolators = [i for i in isolators or () if not str(i.get("name", "")).startswith(
            ("os/linux/capabilities-", "os/linux/seccomp-"))]
    iso = _parse(isolators)
    if privileged:
        iso.privileged = True
        # every capability stage1 holds itself (as docker's: those of the daemon); one it
        # lacks (a host that runs rocket with a reduced bounding set) cannot be given.
        from . import linux
        iso.bounding = cap_mask(CAP_NUMBERS) & linux.capget()[1]
        iso.retain = None
        iso.seccomp = iso.seccomp_program = None
    return iso


def _parse(isolators):
    iso = Isolation()
    try:
        iso.seccomp = seccomp.from_isolators(isolators)
        if iso.seccomp is not None:
            iso.seccomp_program = seccomp.compile_filter(iso.seccomp)
    except seccomp.SeccompError as e:
        if "no syscall table" not in str(e):
            raise
        iso.ignore("os/linux/seccomp", str(e))
    lsm = None
    for item in isolators or ():
        name, value = item.get("name"), item.get("value")
        if name in ("os/linux/seccomp-retain-set", "os/linux/seccomp-remove-set"):
            if iso.seccomp_program is not None or iso.seccomp is None:
                iso.enforced.append(name)
            else:
                iso.ignore(name, iso.reasons.get("os/linux/seccomp", ""))
            continue
        elif name == "os/unix/sysctl":
            for k, v in (value or {}).items():
                iso.sysctls[check_sysctl(k)] = str(v)
        elif name in ("os/linux/apparmor-profile", "os/linux/selinux-context"):
            lsm = lsm or lsm_state()
            which = "apparmor" if "apparmor" in name else "selinux"
            iso.ignore(name, ("%s is not enabled on this host" % ("AppArmor" if which == "apparmor"
                                                                  else "SELinux"))
                       if not lsm[which] else "stage1 does not set LSM labels yet")
        elif name in ("resource/block-bandwidth", "resource/block-iops",
                      "resource/network-bandwidth"):
            iso.ignore(name, "not implemented by this stage1")
        elif name == "os/linux/capabilities-retain-set":
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
                iso.memory_request = int(quantity(value["request"]))
        elif name == "resource/cpu":
            if value.get("limit") is not None:
                iso.cpu_quota_us = max(1000, int(quantity(value["limit"]) * CPU_PERIOD_US))
            if value.get("request") is not None and iso.cpu_shares is None:
                iso.cpu_shares = max(2, int(quantity(value["request"]) * 1024))
        elif name == "os/linux/cpu-shares":
            iso.cpu_shares = int(value)
        elif name in ROCKET_ISOLATORS:
            _rocket(iso, name, value)
        else:
            iso.ignore(str(name), "not an isolator this stage1 knows")
            continue
        if name not in iso.ignored and name not in iso.enforced:
            iso.enforced.append(str(name))
    return iso


# This stage1's isolators for what appc has none for (appc lets an executor ignore an
# isolator it does not know, and say so: another stage1 reports these ignored).
ROCKET_ISOLATORS = ("rocket/memory-swap", "rocket/cpuset", "rocket/pids", "rocket/block-io",
                    "rocket/ulimits", "rocket/shm-size")
BLOCK_IO_KEYS = ("read_bps", "write_bps", "read_iops", "write_iops")


def _count(value, low=0):
    """A non-negative integer from JSON (an int, or digits), never a bool."""
    if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).lstrip("-").isdigit():
        raise ValueError("%r is not an integer" % (value,))
    n = int(value)
    if n < low:
        raise ValueError("%d is below %d" % (n, low))
    return n


def _rocket(iso, name, value):
    """Set what one rocket/* isolator asks for; ValueError (or TypeError, KeyError) on a
    value of the wrong shape."""
    if name == "rocket/memory-swap":
        iso.memory_swap = _count(value["limit"], -1)
    elif name == "rocket/cpuset":
        for key in ("cpus", "mems"):
            if value.get(key) is not None:
                text = str(value[key])
                if not text or text.strip("0123456789,-") or text.startswith(("-", ",")):
                    raise ValueError("%s %r is not a list like 0-2,4" % (key, text))
                setattr(iso, "cpuset_" + key, text)
    elif name == "rocket/pids":
        iso.pids_limit = -1 if value["limit"] in (-1, "-1") else _count(value["limit"], 1)  # -1: unlimited
    elif name == "rocket/block-io":
        out = {}
        if value.get("weight") is not None:
            out["weight"] = _count(value["weight"], 10)
            if out["weight"] > 1000:
                raise ValueError("weight %d is above 1000" % out["weight"])
        for key in BLOCK_IO_KEYS:
            rules = []
            for item in value.get(key) or ():
                major, minor = (_count(x) for x in str(item["device"]).split(":"))
                rules.append(("%d:%d" % (major, minor), _count(item["rate"], 1), item.get("path")))
            if rules:
                out[key] = rules
        iso.block_io = out or None
    elif name == "rocket/ulimits":
        import resource  # a C module; only apps with ulimits pay for it
        iso.ulimits = []
        for item in value:
            rname = str(item["name"]).upper()
            number = getattr(resource, "RLIMIT_" + rname, None)
            if not isinstance(number, int):
                raise ValueError("%s is not a resource limit of this system" % item["name"])
            soft, hard = _count(item["soft"], -1), _count(item["hard"], -1)
            if hard != -1 and (soft == -1 or soft > hard):
                raise ValueError("%s: soft %d is above hard %d" % (rname.lower(), soft, hard))
            iso.ulimits.append((number, soft, hard, rname.lower()))
    elif name == "rocket/shm-size":
        iso.shm_size = _count(value["size"], 4096)


def apply_ulimits(ulimits):
    """setrlimit for each (number, soft, hard, name), -1 as RLIM_INFINITY: in the app's
    process before its credentials change (raising a hard limit needs CAP_SYS_RESOURCE)."""
    if not ulimits:
        return
    import resource
    for number, soft, hard, dummy_name in ulimits:
        inf = resource.RLIM_INFINITY
        resource.setrlimit(number, (inf if soft == -1 else soft, inf if hard == -1 else hard))


def pod_sysctls(manifest, apps, own_netns):
    """Every sysctl the pod asks for (pod-level and apps' isolators), checked: one value per
    name, net.* only when the pod has its own network namespace. ValueError otherwise."""
    out = {}  # type: dict
    sources = [("the pod", {check_sysctl(k): str(v) for item in manifest.get("isolators") or ()
                            if item.get("name") == "os/unix/sysctl"
                            for k, v in (item.get("value") or {}).items()})]
    sources += [("app " + a.name, a.isolation.sysctls) for a in apps]
    for who, sysctls in sources:
        for k, v in sorted(sysctls.items()):
            if k.startswith(NET_PREFIX) and not own_netns:
                raise ValueError("os/unix/sysctl of %s: %s needs the pod's own network namespace; "
                                 "with net=host it would change the host" % (who, k))
            if out.get(k, v) != v:
                raise ValueError("os/unix/sysctl: %s is set to %r and to %r in one pod" % (k, out[k], v))
            out[k] = v
    if own_netns:
        out.setdefault(PING_GROUP_RANGE, None)
    return out


def _all_groups():
    """"0 N": every group the writer's user namespace maps (at most the kernel's 2^31-1)."""
    high = 0
    with open("/proc/self/gid_map") as f:
        for line in f:
            inside, dummy_outside, count = (int(x) for x in line.split())
            high = max(high, inside + count - 1)
    return "0 %d" % min(high, 2147483647)


def apply_sysctls(sysctls):
    """Write them through /proc/sys: the kernel applies each to the writer's namespaces, so
    this runs after the pod's namespaces exist and before any app starts."""
    for k, v in sorted(sysctls.items()):
        _write_sysctl(k, _all_groups() if v is None else v)


def apply_userns_sysctls(sysctls, userns_fd):
    """What a pod with its own user namespace must write from inside it (each removed from
    sysctls): the group ranges, and the IPC namespace's sysctls, which Linux 5.17+ lets
    only the namespace's own root write (on older kernels the host's root writes them
    later, as for any pod). Before the pod's PID namespace exists: the writer, a child,
    would otherwise be its PID 1, and the namespace would die with it."""
    for k in [k for k, v in sysctls.items() if v is None]:
        _write_in_userns(userns_fd, k)
        del sysctls[k]
    for k in [k for k in sorted(sysctls) if not k.startswith(NET_PREFIX)]:
        try:
            _write_in_userns(userns_fd, k, sysctls[k])
        except ValueError:
            continue  # a kernel before 5.17: apply_sysctls writes it, or says why not
        del sysctls[k]


def _write_in_userns(userns_fd, name, value=None):
    """A child joins the pod's user namespace (init stays outside it) and writes from
    there: a group range (value None) in the namespace's own terms, since its gids are
    host gids from 2^31, above what a writer in the host's namespace may name (2^31-1);
    any other value as the namespace's root (uid and gid 0 inside it)."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 0
        try:
            os.close(r)
            from . import linux
            linux.setns(userns_fd, linux.CLONE_NEWUSER)
            if value is not None:
                os.setresgid(0, 0, 0)
                os.setresuid(0, 0, 0)
            _write_sysctl(name, _all_groups() if value is None else value)
        except BaseException as e:  # noqa: BLE001 - reported to the parent
            os.write(w, str(e).encode("utf-8", "replace")[:500])
            code = 1
        os._exit(code)
    os.close(w)
    try:
        msg = os.read(r, 600).decode("utf-8", "replace")
    finally:
        os.close(r)
    os.waitpid(pid, 0)
    if msg:
        raise ValueError(msg)


def _write_sysctl(k, v):
    path = "/proc/sys/" + k.replace(".", "/")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        raise ValueError("os/unix/sysctl: %s: %s (not a sysctl of the pod's namespaces on "
                         "this kernel)" % (k, e.strerror))
    try:
        os.write(fd, v.encode("utf-8"))
    except OSError as e:
        raise ValueError("os/unix/sysctl: %s=%s: %s" % (k, v, e.strerror))
    finally:
        os.close(fd)


# cgroups.apply names a missing controller by its resource isolator; every isolator that
# needs that controller is then reported ignored, never enforced.
CONTROLLER_ISOLATORS = {"resource/cpu": ("resource/cpu", "os/linux/cpu-shares"),
                        "resource/memory": ("resource/memory",)}
UNAVAILABLE = "not enforced: controller unavailable (no cgroup %s controller on this host)"


def reports(manifest, apps, unenforced, notes, userns=None):
    """{app: isolation.json content}: enforced and ignored isolators with reasons, the
    seccomp filter, the LSM confinement (always "unconfined": stage1 sets no label)."""
    lsm = lsm_state()
    pod_level = [i.get("name") for i in manifest.get("isolators") or ()
                 if i.get("name") != "os/unix/sysctl"]
    out = {}
    for a in apps:
        rep = a.isolation.report()
        for name in unenforced.get(a.name) or ():
            if isinstance(name, tuple):  # (isolator or isolator.part, its own reason)
                if name[0] in rep["enforced"]:
                    rep["enforced"].remove(name[0])
                rep["ignored"].append({"name": name[0], "reason": name[1]})
                continue
            asked = [n for n in CONTROLLER_ISOLATORS.get(name, (name,)) if n in rep["enforced"]]
            for iso_name in asked or [name]:
                if iso_name in rep["enforced"]:
                    rep["enforced"].remove(iso_name)
                rep["ignored"].append({"name": iso_name, "reason": UNAVAILABLE % name.split("/")[-1]})
        for name in pod_level:
            rep["ignored"].append({"name": name, "reason": "pod-level isolator: not enforced"})
        rep["lsm"] = {"apparmor": lsm["apparmor"], "selinux": lsm["selinux"], "profile": "unconfined"}
        rep["user_namespace"] = userns
        rep["notes"] = list(notes)
        out[a.name] = rep
    return out
