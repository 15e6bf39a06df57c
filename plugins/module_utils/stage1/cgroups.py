"""The pod's cgroups: rocket/<uuid>/<app> in each v1 controller we use (memory, cpu, pids,
devices) and in the v2 hierarchy (/sys/fs/cgroup when it is cgroup2, else
/sys/fs/cgroup/unified, used there for tracking and the device program only).

Devices: the same allow-list (ALLOWED_DEVICES) through every layer the host has for the
pod's cgroups: the v1 devices controller when mounted, and a BPF device program
(devices_bpf.py) on each app's v2 cgroup whenever there is one, hybrid hosts included
(the kernel asks both). Fail closed: without a v1 devices controller the program is the
only filter, so a bpf(2) the host refuses stops the pod; with one, it is a note.

Stage1's own processes live in rocket/<uuid>/_stage1 (v2 forbids processes in a cgroup
whose controllers are delegated to children; "_" cannot start an app name); each app in
rocket/<uuid>/<app>. An app joins through fds of its cgroup.procs files opened before
pivot_root.

The keeper of a detached pod moves the apps' output into their logs, which can cost more
CPU than the apps spend writing it (`yes`). Once the pod runs it joins
rocket/<uuid>/_keeper in the cpu hierarchy, and when every app has a CPU quota the pod's
cgroup gets their sum (keeper_join): the keeper's work comes out of the pod's budget,
never a host core.
"""
import errno
import os
import time

from . import contract


def __getattr__(name):
    """devices_bpf (ctypes) on first use: the keeper imports this module for its own cgroup
    only, and a keeper lives as long as its pod (720 kB of ctypes per pod otherwise)."""
    if name == "devices_bpf":
        from . import devices_bpf

        return devices_bpf
    raise AttributeError(name)


# Where pods' cgroups go in each hierarchy: <parent>/<uuid>; the cgroup_parent run option
# (docker's and podman's) names another, recorded in the pod directory (contract.CGROUP_PARENT).
DEFAULT_PARENT = "rocket"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@:")
CONTROLLERS = ("memory", "cpu", "pids", "devices", "cpuset", "blkio")
# The v2 controllers we enable, by their v1 names where they differ (blkio is v2's io).
V2_CONTROLLERS = {"memory": "memory", "cpu": "cpu", "pids": "pids", "cpuset": "cpuset", "blkio": "io"}
STAGE1_LEAF = "_stage1"
KEEPER_LEAF = "_keeper"  # the keeper's own leaf: its CPU counts against the pod's quota
CPU_PERIOD_US = 100000
# An app that asks for no pids_limit gets this one (podman's default): a fork bomb in a
# default pod would otherwise take every PID of the host (pid_max is 32768 on many), and
# then not even the host's root can fork. pids_limit -1 (or 0) asks for none.
PIDS_DEFAULT = 2048
PIDS_NOTE = "pids: at most %d processes and threads per app unless pids_limit says otherwise" % PIDS_DEFAULT
# Devices an app may use (v1 devices cgroup, v2 BPF program): null zero full random urandom
# tty console ptmx and the pts of its devpts instance.
ALLOWED_DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                   "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm")


def unescape_mountinfo(path: str) -> str:
    """A path as /proc/*/mountinfo writes it (space, tab, newline, backslash in octal)."""
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def hierarchies(mountinfo="/proc/self/mountinfo"):
    """({controller: (mountpoint, [controllers of that hierarchy])}, v2 mountpoint or None);
    read-only mounts are left out."""
    v1, v2 = {}, None  # type: dict, str | None
    try:
        with open(mountinfo) as f:
            lines = f.read().splitlines()
    except OSError:
        return v1, v2
    for line in lines:
        left, dummy_sep, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        point, fstype, opts = unescape_mountinfo(fields[4]), rfields[0], rfields[2].split(",")
        if fstype in ("cgroup", "cgroup2") and "ro" in fields[5].split(","):
            # a read-only hierarchy takes no pod cgroup: as good as absent, so its limits are
            # reported not enforced (systemd-nspawn mounts the v1 controllers read-only)
            continue
        if fstype == "cgroup2" and v2 is None:
            v2 = point
        elif fstype == "cgroup":
            ctrls = [o for o in opts if o in CONTROLLERS or o in ("cpuacct", "cpuset", "blkio",
                     "freezer", "net_cls", "net_prio", "perf_event", "hugetlb", "rdma", "misc")]
            for c in ctrls:
                if c in CONTROLLERS and c not in v1:
                    v1[c] = (point, ctrls)
    return v1, v2


def check_parent(value):
    """A cgroup parent as pods take it: a relative path of plain names, a leading or trailing
    / dropped. Nothing that climbs (. ..), names a kernel interface file (cgroup.*) or looks
    like a pod's own cgroup (a UUID): one pod's cgroups inside another's would break both.
    ValueError says what is wrong."""
    text = value.strip("/") if isinstance(value, str) else ""
    if not text or len(text) > 512:
        raise ValueError("cgroup_parent %r: give a cgroup path such as pods or machine.slice/pods" % (value,))
    for name in text.split("/"):
        why = None
        if name in ("", ".", ".."):
            why = "has an empty, . or .. component"
        elif len(name) > 128 or not all(c in _NAME_CHARS for c in name):
            why = "component %r is not at most 128 letters, digits and _ - . @ :" % name
        elif name.startswith("cgroup."):
            why = "component %r is the name of a cgroup's interface file" % name
        elif len(name) == 36 and name.count("-") == 4 and all(c in "0123456789abcdef-" for c in name.lower()):
            why = "component %r is a UUID, the name of a pod's own cgroup" % name
        if why:
            raise ValueError("cgroup_parent %r %s" % (value, why))
    return text


def recorded_parent(pod_dir):
    """The cgroup parent a pod's stage1 used (or will): what it recorded, else the default."""
    try:
        with open(os.path.join(pod_dir, contract.CGROUP_PARENT)) as f:
            return check_parent(f.read(1024).strip())
    except FileNotFoundError:
        return DEFAULT_PARENT


def is_frozen(cgroup_dir):
    """Whether a v2 cgroup is asked to be frozen (its cgroup.freeze); False where it cannot be."""
    try:
        with open(os.path.join(cgroup_dir, "cgroup.freeze")) as f:
            return f.read(2).strip() == "1"
    except OSError:
        return False


def _write(path, value):
    with open(path, "w") as f:
        f.write(value)


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return "?(%s)" % e.strerror


def unavailable(ctrl):
    """The reason a limit is not enforced where its controller is missing (isolators.UNAVAILABLE's words)."""
    return "not enforced: controller unavailable (no cgroup %s controller on this host)" % ctrl


class PodCgroups:
    def __init__(self, uuid, v1=None, v2=None, discover=True, parent=None):
        if discover and v1 is None and v2 is None:
            v1, v2 = hierarchies()
        self.uuid = uuid
        self.parent = parent or DEFAULT_PARENT
        self.v1 = dict(v1 or {})
        self.v2 = v2
        # v2 controllers: those no v1 hierarchy has
        self.v2_controllers = []
        if v2:
            try:
                with open(os.path.join(v2, "cgroup.controllers")) as f:
                    avail = f.read().split()
            except OSError:
                avail = []
            self.v2_controllers = [v2name for c, v2name in V2_CONTROLLERS.items()
                                   if v2name in avail and c not in self.v1]
        self.notes = []
        self.device_layers = []  # what enforces the device allow-list, for the notes

    @classmethod
    def of_pod(cls, pod_dir, uuid):
        """The cgroups of the pod in pod_dir, under the parent its stage1 recorded (ValueError:
        a record that is no parent): how everything but init finds them."""
        return cls(uuid, parent=recorded_parent(pod_dir))

    # ---------------------------------------------------------------- paths
    def roots(self):
        """Every hierarchy mount point we use, once."""
        seen = []
        for point, dummy_ctrls in self.v1.values():
            if point not in seen:
                seen.append(point)
        if self.v2 and self.v2 not in seen:
            seen.append(self.v2)
        return seen

    def pod_dir(self, root):
        return os.path.join(root, self.parent, self.uuid)

    def _controller_root(self, ctrl):
        if ctrl in self.v1:
            return self.v1[ctrl][0]
        if V2_CONTROLLERS.get(ctrl, ctrl) in self.v2_controllers:
            return self.v2
        return None

    def _cpuset_fill(self, dirs):
        """A v1 cpuset cgroup starts with no CPUs and no memory nodes, and refuses every
        process until given some: each new one gets its parent's (v2 inherits by itself)."""
        if "cpuset" not in self.v1:
            return
        top = self.v1["cpuset"][0]
        for d in dirs:
            if not d.startswith(top + "/"):
                continue
            for name in ("cpuset.cpus", "cpuset.mems"):
                with open(os.path.join(d, name)) as f:
                    if f.read().strip():
                        continue
                with open(os.path.join(os.path.dirname(d), name)) as f:
                    _write(os.path.join(d, name), f.read().strip())

    def available(self):
        return bool(self.roots())

    # ---------------------------------------------------------------- setup
    def create_pod(self):
        """Create <parent>/<uuid> everywhere (the parent's levels too) and move this process into it."""
        names = self.parent.split("/")
        for root in self.roots():
            levels = [os.path.join(root, *names[:i + 1]) for i in range(len(names))]
            if root == self.v2 and self.v2_controllers:
                enable = " ".join("+" + c for c in self.v2_controllers)
                for d in [root] + levels:
                    os.makedirs(d, exist_ok=True)
                    try:
                        _write(os.path.join(d, "cgroup.subtree_control"), enable)
                    except OSError:
                        pass  # the root may already delegate them, or refuse
            os.makedirs(self.pod_dir(root), exist_ok=True)
            self._cpuset_fill(levels + [self.pod_dir(root)])
        self.join(self.pod_dirs())

    def pod_dirs(self):
        return [self.pod_dir(r) for r in self.roots()]

    def create_apps(self, apps):
        """After the cgroup namespace exists: the _stage1 leaf (joined) and one per app.

        apps: [(name, limits)] with limits as Isolation.limits() gives them. Returns
        {app: [isolator names no controller enforces]}.
        """
        leaves = [os.path.join(d, STAGE1_LEAF) for d in self.pod_dirs()]
        for d in leaves:
            os.makedirs(d, exist_ok=True)
        self._cpuset_fill(leaves)
        self.join(leaves)
        if self.v2 and self.v2_controllers:
            try:
                _write(os.path.join(self.pod_dir(self.v2), "cgroup.subtree_control"),
                       " ".join("+" + c for c in self.v2_controllers))
            except OSError as e:
                self.notes.append("cgroup v2 controllers not delegated: %s" % e)
        unenforced = {}
        for name, limits in apps:
            for root in self.roots():
                os.makedirs(os.path.join(self.pod_dir(root), name), exist_ok=True)
                self._cpuset_fill([os.path.join(self.pod_dir(root), name)])
            if self.frozen(name):
                # the keeper's restart of a paused pod reuses its cgroups: a new run starts thawed
                _write(self.freeze_file(name), "0")
            unenforced[name] = self.apply(name, limits)
        self.notes.append(self.devices_note())
        return unenforced

    def keeper_join(self, apps, pid=0):
        """Put the keeper (``pid``, 0: this process) under the pod's CPU budget.

        Once the pod runs: rocket/<uuid> gets the sum of the apps' CPU quotas (when each
        app has one; an unlimited app leaves the pod unlimited), then the keeper moves
        into its _keeper leaf there, so what it spends on the apps' logs comes out of the
        pod's budget. Not before the pod runs: stage1's set-up would be throttled too.
        Returns a note for the pod's notes, or None where there is no cpu controller or
        the pod's cgroups are gone (a pod that already exited)."""
        root = self._controller_root("cpu")
        if root is None:
            return None
        pod = self.pod_dir(root)
        try:
            cores = [self._app_cpu(root, app) for app in apps]
            leaf = os.path.join(pod, KEEPER_LEAF)
            os.makedirs(leaf, exist_ok=True)
            note = "cpu: the keeper's log pump counts against the pod's cgroup"
            if cores and None not in cores:
                quota = max(1000, int(round(sum(cores) * CPU_PERIOD_US)))
                if root == self.v2:
                    _write(os.path.join(pod, "cpu.max"), "%d %d" % (quota, CPU_PERIOD_US))
                else:
                    _write(os.path.join(pod, "cpu.cfs_period_us"), str(CPU_PERIOD_US))
                    _write(os.path.join(pod, "cpu.cfs_quota_us"), str(quota))
                note += ", limited to %d us every %d us (the sum of its apps' quotas)" % (quota, CPU_PERIOD_US)
            _write(os.path.join(leaf, "cgroup.procs"), str(pid))
        except OSError:
            return None
        return note

    def _app_cpu(self, root, app):
        """An app's CPU quota in cores, as its cgroup holds it; None when unlimited."""
        d = self.app_dir(root, app)
        if root == self.v2:
            with open(os.path.join(d, "cpu.max")) as f:
                words = (f.read().split() + ["100000"])[:2]
            return None if words[0] == "max" else int(words[0]) / float(words[1])
        with open(os.path.join(d, "cpu.cfs_quota_us")) as f:
            quota = int(f.read())
        with open(os.path.join(d, "cpu.cfs_period_us")) as f:
            period = int(f.read())
        return None if quota < 0 else quota / float(period)

    def devices_note(self):
        if self.device_layers:
            return "devices: allow-list enforced by %s" % " and ".join(sorted(set(self.device_layers)))
        return "devices: no cgroup device filter on this host; only nodev mounts keep apps from device nodes"

    def app_dir(self, ctrl_root, app):
        return os.path.join(self.pod_dir(ctrl_root), app)

    # ---------------------------------------------------------------- pause
    def freeze_file(self, app):
        """The app's cgroup v2 freezer (docker's pause); None on a host with no cgroup2
        hierarchy (the pod has no v1 freezer cgroup: CONTROLLERS has none)."""
        return os.path.join(self.app_dir(self.v2, app), "cgroup.freeze") if self.v2 else None

    def frozen(self, app):
        """Whether the app's cgroup is asked to be frozen (False where it cannot be)."""
        return self.v2 is not None and is_frozen(self.app_dir(self.v2, app))

    def apply(self, app, limits):
        mem, quota = limits.get("memory_limit"), limits.get("cpu_quota_us")
        soft = limits.get("memory_request")
        period, shares = limits.get("cpu_period_us") or 100000, limits.get("cpu_shares")
        unenforced = []  # type: list  # names, or (name, reason) where the reason is not the controller
        root = self._controller_root("memory")
        if soft is not None and root is not None:
            # Reclaimed down to this first under memory pressure; never a hard cap.
            name = "memory.low" if root == self.v2 else "memory.soft_limit_in_bytes"
            _write(os.path.join(self.app_dir(root, app), name), str(soft))
        if (mem is not None or soft is not None) and root is None:
            unenforced.append("resource/memory")
        swap = limits.get("memory_swap")  # memory + swap, -1 unlimited; None: no swap
        if mem is not None and root is not None:
            if root == self.v2:
                d = self.app_dir(root, app)
                _write(os.path.join(d, "memory.max"), str(mem))
                if os.path.exists(os.path.join(d, "memory.swap.max")):
                    _write(os.path.join(d, "memory.swap.max"), "max" if swap == -1 else
                           str(max(0, swap - mem)) if swap is not None else "0")
            else:
                d = self.app_dir(root, app)
                _write(os.path.join(d, "memory.limit_in_bytes"), str(mem))
                if os.path.exists(os.path.join(d, "memory.memsw.limit_in_bytes")):
                    _write(os.path.join(d, "memory.memsw.limit_in_bytes"), str(mem if swap is None else swap))
        if swap is not None:
            sw = "memory.swap.max" if root == self.v2 else "memory.memsw.limit_in_bytes"
            if root is None:
                unenforced.append(("rocket/memory-swap", unavailable("memory")))
            elif mem is None or not os.path.exists(os.path.join(self.app_dir(root, app), sw)):
                unenforced.append(("rocket/memory-swap", "not enforced: no swap accounting on this host (no %s)"
                                   % sw if mem is not None else "not enforced: needs a memory limit"))
        root = self._controller_root("cpu")
        if quota is not None or shares is not None:
            if root is None:
                unenforced.append("resource/cpu")
            elif root == self.v2:
                d = self.app_dir(root, app)
                if quota is not None:
                    _write(os.path.join(d, "cpu.max"), "%d %d" % (quota, period))
                if shares is not None:
                    weight = 1 + ((max(2, min(shares, 262144)) - 2) * 9999) // 262142
                    _write(os.path.join(d, "cpu.weight"), str(weight))
            else:
                d = self.app_dir(root, app)
                if quota is not None:
                    _write(os.path.join(d, "cpu.cfs_period_us"), str(period))
                    _write(os.path.join(d, "cpu.cfs_quota_us"), str(quota))
                if shares is not None:
                    _write(os.path.join(d, "cpu.shares"), str(shares))
        unenforced.extend(self._apply_more(app, limits))
        if limits.get("all_devices"):
            # privileged: no allow-list at all (devices_bpf refuses "a *:* rwm" on purpose),
            # so neither the v1 rules nor the v2 program are set.
            note = "devices: privileged pod, no device allow-list"
            if note not in self.notes:
                self.notes.append(note)
            return unenforced
        rules = ALLOWED_DEVICES + tuple(limits.get("extra_devices") or ())
        if "devices" in self.v1:
            d = self.app_dir(self.v1["devices"][0], app)
            _write(os.path.join(d, "devices.deny"), "a")
            for rule in rules:
                _write(os.path.join(d, "devices.allow"), rule)
            self.device_layers.append("the cgroup v1 devices controller")
        if self.v2:
            self._device_program(app, rules)
        return unenforced

    def _apply_more(self, app, limits):
        """cpuset, pids and block I/O (the rocket/* isolators); [(isolator, reason)] of
        what this host cannot enforce."""
        out = []
        cpus, mems = limits.get("cpuset_cpus"), limits.get("cpuset_mems")
        if cpus is not None or mems is not None:
            root = self._controller_root("cpuset")
            if root is None:
                out.append(("rocket/cpuset", unavailable("cpuset")))
            else:
                d = self.app_dir(root, app)
                for name, value in (("cpuset.mems", mems), ("cpuset.cpus", cpus)):
                    if value is not None:
                        try:
                            _write(os.path.join(d, name), value)
                        except OSError as e:
                            raise OSError(e.errno, "rocket/cpuset: %s %s: %s (the pod's cgroup has %s)"
                                          % (name, value, e.strerror, _read(os.path.join(os.path.dirname(d), name))))
        pids = limits.get("pids_limit")
        root = self._controller_root("pids")
        if pids not in (None, -1) and root is None:
            out.append(("rocket/pids", unavailable("pids")))
        elif root is not None:
            if pids is None:  # not asked: the default, so that a fork bomb cannot take the host's PIDs
                pids = PIDS_DEFAULT
                if PIDS_NOTE not in self.notes:
                    self.notes.append(PIDS_NOTE)
            _write(os.path.join(self.app_dir(root, app), "pids.max"), "max" if pids == -1 else str(pids))
        bio = limits.get("block_io")
        if bio:
            root = self._controller_root("blkio")
            if root is None:
                out.append(("rocket/block-io", unavailable("blkio (v1) or io (v2)")))
            else:
                out.extend(self._block_io(self.app_dir(root, app), root == self.v2, bio))
        return out

    def _block_io(self, d, v2, bio):
        out = []
        weight = bio.get("weight")
        if weight is not None:
            # BFQ's weight has docker's range (10-1000); v2's io.weight (1-10000) is scaled
            names = ("io.bfq.weight", "io.weight") if v2 else ("blkio.bfq.weight", "blkio.weight")
            there = [n for n in names if os.path.exists(os.path.join(d, n))]
            if not there:
                out.append(("rocket/block-io.weight", "not enforced: no %s here (a proportional I/O "
                            "scheduler, such as BFQ, is not available)" % " or ".join(names)))
            else:
                value = weight if "bfq" in there[0] else 1 + (weight - 10) * 9999 // 990
                _write(os.path.join(d, there[0]), ("default %d" if v2 else "%d") % value)
        v1_files = {"read_bps": "blkio.throttle.read_bps_device", "write_bps": "blkio.throttle.write_bps_device",
                    "read_iops": "blkio.throttle.read_iops_device", "write_iops": "blkio.throttle.write_iops_device"}
        v2_keys = {"read_bps": "rbps", "write_bps": "wbps", "read_iops": "riops", "write_iops": "wiops"}
        for key in ("read_bps", "write_bps", "read_iops", "write_iops"):
            for device, rate, path in bio.get(key) or ():
                try:
                    if v2:
                        _write(os.path.join(d, "io.max"), "%s %s=%d" % (device, v2_keys[key], rate))
                    else:
                        _write(os.path.join(d, v1_files[key]), "%s %d" % (device, rate))
                except OSError as e:
                    out.append(("rocket/block-io.%s" % key, "not enforced for %s (%s): %s"
                                % (path, device, e.strerror)))
        return out

    def _device_program(self, app, rules):
        """The v2 device program on the app's cgroup; fatal only where it is the one filter."""
        from . import devices_bpf

        try:
            devices_bpf.attach(self.app_dir(self.v2, app), devices_bpf.assemble(rules))
        except devices_bpf.DeviceFilterError as e:
            if "devices" not in self.v1:
                raise devices_bpf.DeviceFilterError(
                    "%s; the pod does not start: on this host nothing else would keep its apps "
                    "from the host's devices" % e)
            note = "%s (the cgroup v1 devices controller enforces the allow-list)" % e
            if note not in self.notes:
                self.notes.append(note)
            return
        self.device_layers.append("a cgroup v2 BPF device program")

    def oom_kills(self, app):
        """How many processes of the app the kernel's OOM killer killed in its memory
        cgroup (memory.oom_control v1, memory.events v2); None when unknown."""
        root = self._controller_root("memory")
        if root is None:
            return None
        name = "memory.events" if root == self.v2 else "memory.oom_control"
        try:
            with open(os.path.join(self.app_dir(root, app), name)) as f:
                for line in f:
                    key, dummy_sep, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
        except (OSError, ValueError):
            return None
        return None

    def join(self, dirs):
        for d in dirs:
            _write(os.path.join(d, "cgroup.procs"), "0")

    def open_app_procs(self, app, v2=True):
        """O_WRONLY fds of the app's cgroup.procs in every hierarchy (write b"0" to join);
        v2=False leaves out the v2 one (a process born there by fork_into_cgroup)."""
        fds = []
        for root in self.roots():
            if root == self.v2 and not v2:
                continue
            fds.append(os.open(os.path.join(self.app_dir(root, app), "cgroup.procs"),
                               os.O_WRONLY | os.O_CLOEXEC))
        return fds

    def open_app_dir_v2(self, app):
        """An O_RDONLY fd of the app's v2 cgroup directory, for linux.fork_into_cgroup; None
        without a v2 hierarchy or when it cannot be opened (the caller then joins by writing)."""
        if not self.v2:
            return None
        try:
            return os.open(self.app_dir(self.v2, app), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return None

    def v2_memory(self):
        """Does the v2 hierarchy hold the memory controller (a child born there is charged there)?"""
        return "memory" in self.v2_controllers

    # ---------------------------------------------------------------- gc
    def remove(self, timeout=2.0):
        """rmdir <parent>/<uuid> (leaves first) everywhere, never the parent; [(path, error)] of what stayed."""
        failed = []
        for root in self.roots():
            top = self.pod_dir(root)
            if not os.path.isdir(top):
                continue
            dirs = [dp for dp, dummy_dirs, dummy_files in os.walk(top, topdown=False)]
            for d in dirs:
                deadline = time.monotonic() + timeout
                while True:
                    try:
                        os.rmdir(d)
                        break
                    except FileNotFoundError:
                        break
                    except OSError as e:
                        if e.errno == errno.EBUSY and time.monotonic() < deadline:
                            time.sleep(0.02)
                            continue
                        failed.append((d, e))
                        break
        return failed


def join_fds(fds):
    for fd in fds:
        os.write(fd, b"0")
