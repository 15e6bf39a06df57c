"""run: `init [--debug] [--net=host|none|NAME[,NAME...]] [--interactive] [--hostname=H] [--domainname=D]
[--private-users=BASE] <uuid>`.

The process stage0 starts (the "outer" one) creates the pod's cgroups and namespaces and
forks the pod's PID 1, then waits for it and exits with its status. PID 1 forks one
supervisor per app (app.py), reaps every process of the pod, forwards SIGTERM, SIGINT and
SIGHUP to the apps, writes `pid`, `apps/<app>/pid` and `status/<app>`, and exits when all
apps have exited (that loop is pid1.py's; a detached pod's PID 1 hands it to a lean
interpreter once every app runs). Exit status: 0, the first failing app's status (128+N
for signal N), or contract.EXIT_STAGE1 (254) for stage1's own failures (an app that failed
to start included).
"""
import gc
import os
# signal's C module: `signal` adds enums, and enum costs every start.
import _signal  # type: ignore[import-not-found]  # no stub for the C module; its names are signal's
import time

from . import app as app_mod
from . import cgroups, contract, isolators, landlock, linux, pid1, pod, userns
from . import jsonlite  # the json package imports re: not on the start path
from . import volumes as volumes_mod


class Options:
    def __init__(self):
        self.debug = False
        self.net = None
        self.interactive = False
        self.hostname = None
        self.domainname = None
        self.cgroup_parent = None  # cgroups.DEFAULT_PARENT when unset
        self.private_users = None  # first host id of the pod's user namespace range
        self.uuid = None


def _uts_name(value, flag):
    """What stage0's uts.check_name allows, checked again: the name reaches /etc/hosts and the
    pod's peers, and a stage0 other than ours may call."""
    if not 0 < len(value) <= 64 or not all(c.isascii() and (c.isalnum() or c in "-_.") for c in value):
        raise ValueError("%s=%r: give a host name of at most 64 letters, digits, -, _ and ." % (flag, value))
    return value


def parse_args(argv):
    o = Options()
    rest = []
    for a in argv:
        if a == "--debug":
            o.debug = True
        elif a.startswith("--net="):
            o.net = a[6:]
        elif a == "--interactive":
            o.interactive = True
        elif a.startswith("--hostname="):
            o.hostname = _uts_name(a[11:], "--hostname")
        elif a.startswith("--domainname="):
            o.domainname = _uts_name(a[13:], "--domainname")
        elif a.startswith("--private-users="):
            o.private_users = userns.parse_flag(a[16:])
        elif a.startswith("--cgroup-parent="):
            o.cgroup_parent = cgroups.check_parent(a[16:])
        elif a.startswith("--"):
            raise ValueError("unknown option %s" % a)
        else:
            rest.append(a)
    if len(rest) != 1:
        raise ValueError("usage: init [--debug] [--net=host|none|NAME[,NAME...]] [--interactive] "
                         "[--hostname=H] [--domainname=D] [--cgroup-parent=P] [--private-users=BASE] <uuid>")
    o.uuid = rest[0]
    if o.net is not None and (not o.net or any(not n or "/" in n for n in o.net.split(","))):
        raise ValueError("--net=%s: give host, none or network names" % o.net)
    return o


class Context:
    """What every supervisor needs, decided before the namespaces exist."""

    def __init__(self, pod_dir, opts):
        self.pod_dir = pod_dir
        self.opts = opts
        self.interactive = opts.interactive
        self.debug = opts.debug
        self.metadata_url = os.environ.get(contract.ENV_METADATA_URL) or None
        self.app_fds = {}
        for item in (os.environ.get(contract.ENV_APP_FDS) or "").split(","):
            if item:
                name, dummy_sep, fd = item.partition(":")
                self.app_fds[name] = int(fd)
        self.console = None
        if opts.interactive and os.isatty(0):
            self.console = os.ttyname(0)
        self.cgroups = None
        self.cgroup_mounts = []
        self.userns_fd = None
        self.userns_base = None  # None: the identity map (apps join it by their capabilities)
        self.host_net = False
        self.etc_files = []  # names under <pod>/net/ bound read-only at the apps' /etc/<name>
        self.volume_opts = {}  # the appc.rocket/volumes annotation (stage1/volumes.py)

    def volume_source(self, volume):
        return pod.volume_source(self.pod_dir, volume)


def _cgroup_mounts(cg):
    """What an app sees under /sys/fs/cgroup: the hierarchies we use, read-only."""
    out, seen = [], set()  # type: list, set
    for ctrl in cgroups.CONTROLLERS:
        if ctrl in cg.v1:
            point, ctrls = cg.v1[ctrl]
            if point not in seen:
                seen.add(point)
                out.append((os.path.basename(point), "cgroup", ",".join(ctrls)))
    if cg.v2:
        out.append(("unified" if cg.v1 else "", "cgroup2", None))
    return out


def _loopback_up():
    import fcntl
    import _socket  # the C module: `socket` imports enum, milliseconds of every start
    import struct
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH", fcntl.ioctl(s, 0x8913, ifr)[:18])[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14s", b"lo", flags | 0x1, b""))
    finally:
        s.close()


def _network_bandwidth(pod_dir, apps):
    """resource/network-bandwidth is enforced, not ignored, when stage0 gave it to a CNI
    network's bandwidth plugin (netconf; net.py passes it at ADD)."""
    try:
        with open(os.path.join(pod_dir, contract.NET), "rb") as f:
            plan = jsonlite.loads(f.read())
    except OSError:
        return
    if not any(n.get("bandwidth") for n in plan.get("networks") or ()):
        return
    name = "resource/network-bandwidth"
    for a in apps:
        if name in a.isolation.ignored:
            a.isolation.ignored.remove(name)
            a.isolation.reasons.pop(name, None)
            a.isolation.enforced.append(name)


def _proc_guard(apps, notes):
    """Each app's Landlock domain decision (landlock.py), before any supervisor is forked."""
    abi, why = landlock.probe()
    if not abi:
        notes.append("cross-app /proc guard not enforced on this host: %s; a root app can setuid to "
                     "another app's uid and read its /proc/PID/environ and root" % why)
    for a in apps:
        a.isolation.proc_guard = landlock.guard(abi, why, a.isolation.bounding)


def _ignored(pod_dir, manifest, apps, debug, notes, unenforced=None, userns=None):
    """stage1/ignored-isolators (names by app, "" for the pod's) and apps/<app>/isolation.json."""
    out = {}
    pod_level = [i.get("name") for i in manifest.get("isolators") or () if i.get("name") != "os/unix/sysctl"]
    if pod_level:
        out[""] = pod_level
    by_name = {a.name: a for a in apps}
    for name, rep in isolators.reports(manifest, apps, unenforced or {}, notes, userns).items():
        if rep["ignored"]:
            out[name] = [i["name"] for i in rep["ignored"] if not i["reason"].startswith("pod-level")]
        rep["mounts"] = volumes_mod.describe(volumes_mod.options(manifest), by_name[name], userns is not None)
        try:
            pid1.write_file(os.path.join(pod_dir, contract.app_file(name, "isolation.json")),
                            jsonlite.dumps(rep, sort_keys=True))
        except OSError:
            pass
    out = {k: v for k, v in out.items() if v}
    try:
        pid1.write_file(os.path.join(pod_dir, contract.IGNORED_ISOLATORS),
                        jsonlite.dumps(out, sort_keys=True))
    except OSError:
        pass
    if debug:
        for name, isos in sorted(out.items()):
            pid1.err("%s: isolators not enforced: %s" % ("pod" if not name else "app " + name,
                                                         ", ".join(isos)))
        for n in notes:
            pid1.err(n)


def main(argv, pid1_fd=None):
    """pid1_fd (the keeper's, when it runs init in its own child): write the host PID of the
    pod's PID 1 there and return 0 at once instead of waiting for it; the caller, a
    subreaper, reaps PID 1 and derives the pod's exit status as below. When the keeper
    offers it (contract.ENV_KEEPS), PID 1 keeps the pod (keeping.Keeping) and says so there."""
    linux.set_dumpable(False)
    try:
        opts = parse_args(argv)
    except ValueError as e:
        pid1.err(e)
        return contract.EXIT_STAGE1
    pod_dir = os.getcwd()
    # the lean loop's interpreter and sources, while the paths are the host's (a detached pod's)
    lean = pid1.lean_fds(pid1.__file__) if pid1_fd is not None else None
    lock_env = os.environ.get(contract.ENV_LOCK_FD)
    lock_fd = int(lock_env) if lock_env and lock_env.isdigit() else None
    apps = []
    try:
        manifest, apps, volumes = pod.load(pod_dir)
        ctx = Context(pod_dir, opts)
        pod.create_empty_volumes(pod_dir, volumes, opts.private_users or 0)
        ctx.volume_opts = volumes_mod.options(manifest)
        volumes_mod.mount_tmpfs(pod_dir, ctx.volume_opts, opts.private_users or 0)
        for d in (contract.STATUS, contract.APPS):
            os.makedirs(os.path.join(pod_dir, d), exist_ok=True)
        for a in apps:
            os.makedirs(os.path.join(pod_dir, contract.APPS, a.name), exist_ok=True)
        for a in apps:
            if a.secrets:  # launch unpacked them (secrets.py): a start without them ends here
                from . import secrets

                a.isolation.secrets = [{"name": n, "target": t} for n, (dummy_file, t)
                                       in zip(a.secrets, secrets.app_files(pod_dir, a.name, a.secrets))]
        if opts.cgroup_parent:  # before any cgroup exists: gc, enter and stage0 find them by it
            with open(os.path.join(pod_dir, contract.CGROUP_PARENT), "w") as rec:
                rec.write(opts.cgroup_parent + "\n")
        cg = cgroups.PodCgroups(opts.uuid, parent=opts.cgroup_parent)
        notes = []  # type: list
        _proc_guard(apps, notes)
        if cg.available():
            cg.create_pod()
            ctx.cgroups = cg
            ctx.cgroup_mounts = _cgroup_mounts(cg)
        else:
            notes.append("no cgroup hierarchy: resource isolators and the device allow-list not "
                         "enforced; only nodev mounts keep apps from device nodes")
        linux.unshare(linux.CLONE_NEWCGROUP)
        sysctls = isolators.pod_sysctls(manifest, apps, opts.net != "host")
        unenforced = {}
        if ctx.cgroups:
            limits = []
            for a in apps:
                lim = a.isolation.limits()
                if ctx.console:
                    st = os.stat(ctx.console)
                    lim["extra_devices"] = ["c %d:%d rwm" % (os.major(st.st_rdev), os.minor(st.st_rdev))]
                if a.devices:
                    from . import hostdevices

                    try:
                        allowed = hostdevices.rules(a.devices)
                    except hostdevices.DeviceError as e:
                        raise hostdevices.DeviceError("app %s: device %s" % (a.name, e))
                    lim["extra_devices"] = list(lim.get("extra_devices") or []) + allowed
                    a.isolation.devices = hostdevices.describe(a.devices, allowed)
                limits.append((a.name, lim))
            unenforced = cg.create_apps(limits)
            notes.extend(cg.notes)
        else:  # no hierarchy: apply() writes nothing and names what it cannot enforce
            unenforced = {a.name: cg.apply(a.name, a.isolation.limits()) for a in apps}
        ns = None
        # the host's network namespace: the user namespace's own is made (and joined) first
        host_net = None
        if opts.net not in (None, "host"):
            host_net = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        if opts.private_users is not None:
            with open(os.path.join(pod_dir, contract.MOUNTS), "rb") as f:
                plan = jsonlite.loads(f.read())
            ns = userns.create(opts.private_users, own_net=opts.net != "host")
            ctx.userns_fd, ctx.userns_base = ns.user_fd, ns.base
            userns.idmap_roots(pod_dir, plan, ns)
        else:  # the identity-mapped one: no host user reaches the apps through /proc
            ctx.userns_fd = userns.create_identity(own_net=opts.net != "host").user_fd
        ctx.host_net = opts.net == "host"
        if opts.net not in (None, "host", "none"):
            _network_bandwidth(pod_dir, apps)
        _ignored(pod_dir, manifest, apps, opts.debug, notes, unenforced, ns.describe() if ns else None)
        # create() made the UTS, IPC and (unless net=host) network namespaces, owned by the
        # pod's user namespace, so that its root administers them
        flags = linux.CLONE_NEWNS | linux.CLONE_NEWPID
        hostname = opts.hostname or contract.default_hostname(opts.uuid)
        if opts.net not in (None, "host"):  # none or private networks: net.py makes (or joins) the namespace
            from . import net
            try:
                ctx.etc_files = net.setup(pod_dir, opts.uuid, hostname, opts.net, host_ns=host_net)
            finally:
                if host_net is not None:
                    os.close(host_net)
        if ns is not None:
            isolators.apply_userns_sysctls(sysctls, ns.user_fd)
        linux.unshare(flags)
        held = volumes_mod.hold(pod_dir)  # propagated volumes, cloned before the rprivate
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        volumes_mod.restore(pod_dir, held)
        linux.sethostname(hostname)
        if opts.domainname:
            linux.setdomainname(opts.domainname)
        if opts.net != "host":
            _loopback_up()
        isolators.apply_sysctls(sysctls)
    except Exception as e:  # noqa: BLE001
        msg = app_mod.describe(e)
        pid1.err(msg)
        for a in apps:
            try:
                pid1.write_status(pod_dir, a.name, error=msg, started=time.time(), finished=time.time())
            except OSError:
                pass
        return contract.EXIT_STAGE1

    child = [None]  # type: list

    def forward(signum, frame):
        if child[0] is not None:
            try:
                os.kill(child[0], signum)
            except OSError:
                pass

    for s in pid1.FORWARD:
        _signal.signal(s, forward)
    keeping = None
    if pid1_fd is not None and os.environ.get(contract.ENV_KEEPS):
        from .keeping import Keeping

        try:
            keeping = Keeping(opts.uuid, os.environ)
        except (OSError, ValueError, KeyError) as e:
            pid1.err("PID 1 cannot keep the pod, the keeper stays: %s" % e)
    gc.freeze()  # the children share this heap: no collection of theirs may write all of it
    pid = os.fork()
    if pid == 0:
        code = contract.EXIT_STAGE1
        try:
            if pid1_fd is not None:
                os.close(pid1_fd)
            pid1.shield()  # before any app runs: no root app may lower PID 1's limits
            code = Pid1(ctx, apps, pod_dir, keeping, _lean(lean, ctx, opts, lock_fd)).run()
        except BaseException as e:  # noqa: BLE001
            pid1.err("pid 1: %s" % app_mod.describe(e))
        os._exit(code)
    child[0] = pid
    if lock_fd is not None:
        try:
            os.close(lock_fd)
        except OSError:
            pass
    if pid1_fd is not None:
        os.write(pid1_fd, b"%d\n" % pid if keeping is None else b"%d %s\n" % (pid, contract.PID1_KEEPS.encode()))
        os.close(pid1_fd)
        return 0
    dummy_pid, status = os.waitpid(pid, 0)
    return pod_exit(pod_dir, [a.name for a in apps], status)


def pod_exit(pod_dir, app_names, status):
    """The pod's exit status from its PID 1's wait status; when PID 1 was killed, every app
    without a status gets one saying so."""
    code, sig = linux.wait_status(status)
    if sig is not None:
        now = time.time()
        for name in app_names:
            if not os.path.exists(os.path.join(pod_dir, contract.app_status(name))):
                try:
                    pid1.write_status(pod_dir, name, sig=sig, finished=now,
                                      error="the pod's PID 1 was killed by signal %d" % sig)
                except OSError:
                    pass
        return 128 + sig
    return code


class Pid1(pid1.Loop):
    """The pod's PID 1: forks the apps' supervisors, then runs the loop (pid1.py), which a
    detached pod's PID 1 (lean given) hands to a lean interpreter once every app runs."""

    def __init__(self, ctx, apps, pod_dir, keeping=None, lean=None):
        oom = ctx.cgroups.oom_kills if ctx.cgroups else None
        super().__init__(pod_dir, [pid1.AppState(a) for a in apps], keeping, oom)
        self.ctx = ctx
        self.lean = lean

    def run(self):
        wake_r = self.handlers()
        gc.freeze()
        for st in self.states:
            rep_r, rep_w = os.pipe()
            ack_r, ack_w = os.pipe()
            pid = app_mod.fork_supervisor(self.ctx, st.app)  # in the app's v2 cgroup where it can
            if pid == 0:
                app_mod.supervise(st.app, self.ctx, rep_w, ack_r)
            os.close(rep_w)
            os.close(ack_r)
            st.sup, st.report, st.ack = pid, rep_r, ack_w
            self.by_sup[pid] = st
        self.live = set(self.by_sup)
        self.lifeline = pid1.lifeline()
        if self.keeping is not None:
            self.keeping.forked(self.ctx.app_fds.values())
            if self.lifeline is not None:  # the keeper leaves once the pod runs: its going stops nothing
                os.close(self.lifeline)
                self.lifeline = None
        elif self.lean is not None:  # PID 1 holds the apps' write ends of the keeper's pipes, as before
            self.lean["keep"] += list(self.ctx.app_fds.values())
        return self.loop(wake_r)


def _lean(lean, ctx, opts, lock_fd):
    """What Pid1 needs to exec the lean loop: pid1.lean_fds's and the pod's, or None."""
    if lean is None:
        return None
    try:
        with open("/proc/self/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = "python3"
    lean.update(uuid=opts.uuid, comm=comm, keep=[lock_fd] if lock_fd is not None else [],
                cgroups={"v1": ctx.cgroups.v1, "v2": ctx.cgroups.v2, "parent": ctx.cgroups.parent}
                if ctx.cgroups else None)
    return lean
