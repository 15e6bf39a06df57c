"""run: `init [--debug] [--net=host|none|NAME[,NAME...]] [--interactive] [--hostname=H] [--private-users=BASE] <uuid>`.

The process stage0 starts (the "outer" one) creates the pod's cgroups and namespaces and
forks the pod's PID 1, then waits for it and exits with its status. PID 1 forks one
supervisor per app (app.py), reaps every process of the pod, forwards SIGTERM, SIGINT and
SIGHUP to the apps, writes `pid`, `apps/<app>/pid` and `status/<app>`, and exits when all
apps have exited. Exit status: 0, the first failing app's status (128+N for signal N), or
contract.EXIT_STAGE1 (254) for stage1's own failures (an app that failed to start included).
"""
import gc
import os
import select
# signal's C module: `signal` adds enums, and enum costs every start.
import _signal  # type: ignore[import-not-found]  # no stub for the C module; its names are signal's
import sys
import time

from . import app as app_mod
from . import cgroups, contract, isolators, landlock, linux, pod, userns
from . import jsonlite  # the json package imports re: not on the start path
from . import volumes as volumes_mod

_FORWARD = (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP)


class Options:
    def __init__(self):
        self.debug = False
        self.net = None
        self.interactive = False
        self.hostname = None
        self.private_users = None  # first host id of the pod's user namespace range
        self.uuid = None


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
            o.hostname = a[11:]
        elif a.startswith("--private-users="):
            o.private_users = userns.parse_flag(a[16:])
        elif a.startswith("--"):
            raise ValueError("unknown option %s" % a)
        else:
            rest.append(a)
    if len(rest) != 1:
        raise ValueError("usage: init [--debug] [--net=host|none|NAME[,NAME...]] [--interactive] "
                         "[--hostname=H] [--private-users=BASE] <uuid>")
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


def _err(msg):
    try:
        sys.stderr.write("stage1: %s\n" % msg)
        sys.stderr.flush()
    except Exception:  # noqa: BLE001
        pass


def _write_file(path, data):
    tmp = "%s.%d.tmp" % (path, os.getpid())
    with open(tmp, "w") as f:
        f.write(data)
    os.rename(tmp, path)


def write_status(pod_dir, name, exit_code=None, sig=None, error=None, started=None,
                 finished=None, oom_killed=None):
    """status/<app>; oom_killed: whether the OOM killer killed a process of the app (its
    memory limit, resource/memory), None when the host cannot tell."""
    d = os.path.join(pod_dir, contract.STATUS)
    os.makedirs(d, exist_ok=True)
    _write_file(os.path.join(d, name), jsonlite.dumps(
        {"exit_code": exit_code, "signal": sig, "error": error, "started": started,
         "finished": finished, "oom_killed": oom_killed}, sort_keys=True))


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
            _write_file(os.path.join(pod_dir, contract.app_file(name, "isolation.json")),
                        jsonlite.dumps(rep, sort_keys=True))
        except OSError:
            pass
    out = {k: v for k, v in out.items() if v}
    try:
        _write_file(os.path.join(pod_dir, contract.IGNORED_ISOLATORS),
                    jsonlite.dumps(out, sort_keys=True))
    except OSError:
        pass
    if debug:
        for name, isos in sorted(out.items()):
            _err("%s: isolators not enforced: %s" % ("pod" if not name else "app " + name,
                                                     ", ".join(isos)))
        for n in notes:
            _err(n)


def main(argv, pid1_fd=None):
    """pid1_fd (the keeper's, when it runs init in its own child): write the host PID of the
    pod's PID 1 there and return 0 at once instead of waiting for it; the caller, a
    subreaper, reaps PID 1 and derives the pod's exit status as below. When the keeper
    offers it (contract.ENV_KEEPS), PID 1 keeps the pod (keeper.Keeping) and says so there."""
    linux.set_dumpable(False)
    try:
        opts = parse_args(argv)
    except ValueError as e:
        _err(e)
        return contract.EXIT_STAGE1
    pod_dir = os.getcwd()
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
        cg = cgroups.PodCgroups(opts.uuid)
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
        hostname = opts.hostname or "rkt-" + opts.uuid.replace("-", "")[:8]
        if opts.net not in (None, "host"):  # none or private networks: net.py makes (or joins) the namespace
            from . import net
            try:
                ctx.etc_files = net.setup(pod_dir, opts.uuid, hostname, opts.net, host_ns=host_net)
            finally:
                if host_net is not None:
                    os.close(host_net)
        if ns is not None and opts.net != "host":
            isolators.apply_userns_sysctls(sysctls, ns.user_fd)
        linux.unshare(flags)
        held = volumes_mod.hold(pod_dir)  # propagated volumes, cloned before the rprivate
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        volumes_mod.restore(pod_dir, held)
        linux.sethostname(hostname)
        if opts.net != "host":
            _loopback_up()
        isolators.apply_sysctls(sysctls)
    except Exception as e:  # noqa: BLE001
        msg = app_mod.describe(e)
        _err(msg)
        for a in apps:
            try:
                write_status(pod_dir, a.name, error=msg, started=time.time(), finished=time.time())
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

    for s in _FORWARD:
        _signal.signal(s, forward)
    keeping = None
    if pid1_fd is not None and os.environ.get(contract.ENV_KEEPS):
        from .keeper import Keeping

        try:
            keeping = Keeping(opts.uuid, os.environ)
        except (OSError, ValueError, KeyError) as e:
            _err("PID 1 cannot keep the pod, the keeper stays: %s" % e)
    gc.freeze()  # the children share this heap: no collection of theirs may write all of it
    pid = os.fork()
    if pid == 0:
        code = contract.EXIT_STAGE1
        try:
            if pid1_fd is not None:
                os.close(pid1_fd)
            code = Pid1(ctx, apps, pod_dir, keeping).run()
        except BaseException as e:  # noqa: BLE001
            _err("pid 1: %s" % app_mod.describe(e))
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
                    write_status(pod_dir, name, sig=sig, finished=now,
                                 error="the pod's PID 1 was killed by signal %d" % sig)
                except OSError:
                    pass
        return 128 + sig
    return code


class _State:
    def __init__(self, app):
        self.app = app
        self.sup = None
        self.report = None
        self.ack = None
        self.buf = b""
        self.running = False
        self.error = None
        self.exit = None  # (exit code, signal) once the app has exited
        self.started = time.time()
        self.finished = None
        self.sup_status = None
        self.exec_host = None  # the supervisor said "exec": it is the app, with this host PID
        self.app_pid = None  # the app's PID in the pod when its supervisor stays (post-stop)
        self.stop_sent = None  # when the stop signal was sent
        self.kill_at = None  # monotonic time of the SIGKILL when the stop timeout is over


class Pid1:
    def __init__(self, ctx, apps, pod_dir, keeping=None):
        self.ctx, self.apps, self.pod_dir = ctx, apps, pod_dir
        self.keeping = keeping  # keeper.Keeping: the pod has no keeper once it runs
        self.sigterm = False
        self.states = [_State(a) for a in apps]
        self.by_sup = {}
        self.pid_written = False
        self.failing = False
        self.kill_at = None

    def run(self):
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        _signal.set_wakeup_fd(wake_w)
        for s in _FORWARD + (_signal.SIGCHLD,):
            _signal.signal(s, lambda signum, frame: None)
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
        live = set(self.by_sup)
        lifeline = _lifeline()
        keeping = self.keeping
        if keeping is not None:
            keeping.forked(self.ctx.app_fds.values())
            if lifeline is not None:  # the keeper leaves once the pod runs: its going stops nothing
                os.close(lifeline)
                lifeline = None
        while live or any(st.report is not None for st in self.states):
            fds = [wake_r] + [st.report for st in self.states if st.report is not None]
            fds += [lifeline] if lifeline is not None else []
            fds += keeping.fds() if keeping is not None else []
            timeout = None
            kill_at = [t for t in [self.kill_at] + [st.kill_at for st in self.states] if t is not None]
            if kill_at:
                timeout = max(0.0, min(kill_at) - time.monotonic())
            try:
                ready = select.select(fds, [], [], timeout)[0]
            except InterruptedError:
                ready = []
            for fd in ready:
                if fd == wake_r:
                    self._signals(wake_r, live)
                elif fd == lifeline:  # EOF: the keeper is gone
                    os.close(lifeline)
                    lifeline = None
                    _err("the keeper is gone: stopping the pod")
                    self._stop(live)
                elif keeping is None or not keeping.feed(fd):
                    self._read_report(fd)
            self._reap(live)
            self._progress(live)
        for st in self.states:
            self._final_status(st)
        code = self._exit_code()
        if keeping is not None:
            keeping.finish(code, self.sigterm)
        return code

    def _signals(self, wake_r, live):
        try:
            data = os.read(wake_r, 256)
        except BlockingIOError:
            return
        for signum in data:
            if signum == _signal.SIGTERM:
                self.sigterm = True
                self._stop(live)
            elif signum in _FORWARD:
                for pid in live:
                    try:
                        os.kill(pid, signum)
                    except OSError:
                        pass

    def _stop(self, live):
        """A stop (SIGTERM to PID 1): each app gets its stop signal now and SIGKILL once its
        stop timeout (its own, else the one in the `stopping` mark) is over. A supervisor
        that stays gets SIGTERM and passes the app's stop signal on (app.py)."""
        default = _stop_timeout(self.pod_dir)
        now = time.monotonic()
        for st in self.states:
            sup = st.sup
            if sup is None or sup not in live:
                continue
            sig = st.app.stop_signal if st.exec_host is not None else _signal.SIGTERM
            try:
                os.kill(sup, sig)
            except OSError:
                continue
            if st.stop_sent is None:
                st.stop_sent = time.time()
                timeout = st.app.stop_timeout if st.app.stop_timeout is not None else default
                st.kill_at = now + timeout
                self._stop_record(st, False)

    def _stop_kills(self, live, now):
        for st in self.states:
            if st.kill_at is None or now < st.kill_at:
                continue
            st.kill_at = None
            sup = st.sup
            if sup is not None and sup in live:
                try:
                    os.kill(st.app_pid if st.exec_host is None and st.app_pid else sup, _signal.SIGKILL)
                except OSError:
                    continue
                self._stop_record(st, True)

    def _stop_record(self, st, killed):
        """apps/<app>/stop.json: what the stop did to the app (pod_info reports it)."""
        try:
            _write_file(os.path.join(self.pod_dir, contract.app_file(st.app.name, contract.STOP_RECORD)),
                        jsonlite.dumps({"signal": st.app.stop_signal, "sent": st.stop_sent,
                                        "timeout": st.app.stop_timeout, "killed": killed}, sort_keys=True))
        except OSError as e:
            _err("apps/%s/%s: %s" % (st.app.name, contract.STOP_RECORD, e))

    def _read_report(self, fd):
        st = next(s for s in self.states if s.report == fd)
        data = os.read(fd, 65536)
        if not data:
            os.close(fd)
            st.report = None
            if st.exec_host is not None:
                self._exec_done(st)
            return
        st.buf += data
        while st.exec_host is None and b"\n" in st.buf:
            line, st.buf = st.buf.split(b"\n", 1)
            self._event(st, line.decode("utf-8", "replace"))

    def _exec_done(self, st):
        """EOF after "exec": the close-on-exec pipe closed, by a successful exec when nothing
        came before it, or by the exit that follows a failed one (its message came)."""
        if st.buf:
            self._event(st, "fail " + st.buf.decode("utf-8", "replace").replace("\n", " "))
            st.buf = b""
        else:
            self._running(st, st.exec_host)
        if st.sup_status is not None:
            self._final_status(st)

    def _running(self, st, host):
        st.running = True
        st.started = time.time()
        if host is not None:
            try:
                _write_file(os.path.join(self.pod_dir, contract.app_file(st.app.name, contract.PID)), "%d\n" % host)
            except OSError as e:
                _err("apps/%s/pid: %s" % (st.app.name, e))

    def _event(self, st, line):
        kind, dummy_sep, rest = line.partition(" ")
        if kind == "run":
            sup_host, nspid = (int(x) for x in rest.split())
            st.app_pid = nspid
            self._running(st, _host_pid(sup_host, nspid))
            try:
                os.write(st.ack, b"k")
            except OSError:
                pass
        elif kind == "exec":
            st.exec_host = int(rest)
        elif kind == "fail":
            st.error = rest
            st.finished = time.time()
            _err("app %s: %s" % (st.app.name, rest))
        elif kind == "exit":
            code, sig, t = rest.split()
            st.exit = (None if code == "-" else int(code), None if sig == "-" else int(sig))
            st.finished = float(t)
            self._final_status(st)

    def _reap(self, live):
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            st = self.by_sup.get(pid)
            if st is not None:
                live.discard(pid)
                st.sup_status = status
                if st.ack is not None:
                    os.close(st.ack)
                    st.ack = None
                if st.exec_host is not None and st.report is None:
                    self._final_status(st)

    def _progress(self, live):
        now = time.monotonic()
        if not self.failing and any(st.error for st in self.states):
            self.failing = True
            self.kill_at = now + 10
            for pid in live:
                try:
                    os.kill(pid, _signal.SIGTERM)
                except OSError:
                    pass
        if not self.pid_written and not self.failing and all(st.running for st in self.states):
            self.pid_written = True
            try:
                _write_file(os.path.join(self.pod_dir, contract.PID), "%d\n" % int(os.readlink("/proc/self")))
            except OSError as e:
                _err("pid: %s" % e)
            if self.keeping is not None:
                self.keeping.running([st.app.name for st in self.states])
        self._stop_kills(live, now)
        if self.kill_at is not None and now >= self.kill_at:
            for pid in live:
                try:
                    os.kill(pid, _signal.SIGKILL)
                except OSError:
                    pass
            self.kill_at = now + 5

    def _final_status(self, st):
        if st.exec_host is not None and st.report is None and st.exit is None and st.error is None \
                and st.sup_status is not None:  # the app itself was our child
            st.exit = linux.wait_status(st.sup_status)
            st.finished = time.time()
        if st.exit is None and st.error is None and st.sup_status is not None and st.exec_host is None:
            code, sig = linux.wait_status(st.sup_status)
            st.error = "stage1 supervisor %s" % ("exited with %s" % code if sig is None
                                                 else "killed by signal %d" % sig)
            st.finished = time.time()
        if st.exit is None and st.error is None:
            return
        code, sig = st.exit if st.exit is not None else (None, None)
        try:
            oom = self.ctx.cgroups.oom_kills(st.app.name) if self.ctx.cgroups else None
            write_status(self.pod_dir, st.app.name, code, sig, st.error, st.started, st.finished,
                         None if oom is None else oom > 0)
        except OSError as e:
            _err("status/%s: %s" % (st.app.name, e))

    def _exit_code(self):
        if any(st.error for st in self.states):
            return contract.EXIT_STAGE1
        for st in self.states:
            code, sig = st.exit  # type: ignore[misc]  # every app has exited by now (or has an error)
            if sig is not None:
                return 128 + sig
            if code:
                return code
        return 0


def _lifeline():
    """The keeper's lifeline fd (contract.ENV_KEEPER_FD), or None (a foreground run)."""
    fd = os.environ.get(contract.ENV_KEEPER_FD) or ""
    return int(fd) if fd.isdigit() else None


def _stop_timeout(pod_dir):
    """The stop timeout of apps without their own: stage0's `stopping` mark, else the default."""
    try:
        with open(os.path.join(pod_dir, contract.STOPPING)) as f:
            for line in f:
                if line.startswith(contract.STOP_TIMEOUT_KEY):
                    return max(0.0, float(line[len(contract.STOP_TIMEOUT_KEY):]))
    except (OSError, ValueError):
        pass
    return contract.DEFAULT_STOP_TIMEOUT


def _host_pid(sup_host, nspid):
    """The host PID of the supervisor's child whose PID in the pod is nspid."""
    try:
        with open("/proc/%d/task/%d/children" % (sup_host, sup_host)) as f:
            kids = f.read().split()
    except OSError:
        return None
    for k in kids:
        try:
            with open("/proc/%s/status" % k) as f:
                for line in f:
                    if line.startswith("NSpid:"):
                        if line.split()[-1] == str(nspid):
                            return int(k)
                        break
        except OSError:
            continue
    return None
