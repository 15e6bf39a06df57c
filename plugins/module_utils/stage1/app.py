"""One app's supervisor: a child of the pod's PID 1 that builds the app's mount namespace
and root, pivots into it, runs the pre-start handler, and then either becomes the app or
(when the app has a post-stop handler, which must run after it) forks it and stays.

It talks to PID 1 over a report pipe, one line per event:
  run <supervisor host pid> <app pid in the pod>   (the app's exec succeeded)
  fail <message>                                    (the app could not start)
  exit <code|-> <signal|-> <time>                   (the app exited)
  exec <host pid>                                   (this process execs the app now)
and waits for one byte on the ack pipe after "run" before reaping the app, so PID 1 can
find the app's host PID even when it exits at once. After "exec" the pipe carries nothing
but an exec error: it is close-on-exec, so EOF with no bytes means the app runs, and PID 1
reaps the app itself. Not staying saves a Python process per app and a fork per start.
Every forked child leaves through exec or os._exit, never by raising.
"""
import errno
import fcntl
import os
# signal's C module: `signal` adds enums, and enum costs every start.
import _signal  # type: ignore[import-not-found]  # no stub for the C module; its names are signal's
import sys
import termios
import time
import warnings

from . import cgroups, isolators, landlock, linux, mounts, seccomp, users, userns, volumes
from . import pod as pod_mod

# os.execvpe imports warnings; after pivot_root no stdlib is reachable, so load it now.
_PRELOADED = (warnings,)

ACE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class StartError(RuntimeError):
    pass


def app_environment(app, metadata_url=None, home=None):
    env = {"PATH": ACE_PATH, "AC_APP_NAME": app.name}
    if metadata_url:
        env["AC_METADATA_URL"] = metadata_url.rstrip("/")
    env["container"] = "rocket"
    for k, v in app.environment:
        env[k] = v
    if home and "HOME" not in env:
        env["HOME"] = home
    return env


class Creds:
    def __init__(self, uid, gid, groups, home):
        self.uid, self.gid, self.groups, self.home = uid, gid, groups, home


def resolve_creds(app):
    uid, home = users.resolve_user(app.user)
    gid = users.resolve_group(app.group)
    return Creds(uid, gid, list(app.supplementary_gids), home)


def apply_creds(creds, iso):
    """Bounding set, groups/gid/uid, capability sets, no-new-privileges: the last steps
    before exec."""
    bnd, eff, prm, inh, amb = iso.capability_sets(creds.uid)
    linux.drop_bounding(bnd)
    if creds.uid != 0:
        linux.set_keepcaps(True)
    os.setgroups(creds.groups)
    os.setresgid(creds.gid, creds.gid, creds.gid)
    os.setresuid(creds.uid, creds.uid, creds.uid)
    linux.capset(eff, prm, inh)
    linux.set_ambient(amb)
    if creds.uid != 0:
        linux.set_keepcaps(False)
    if iso.no_new_privileges:
        linux.set_no_new_privs()


def check_cwd(path: str) -> None:
    """chdir(path), refused when it leads outside our root (enter runs this after its chroot)."""
    os.chdir(path)
    here = os.getcwd()  # raises when the directory is not reachable from our root
    if not here.startswith("/"):
        raise OSError(errno.ENOENT, "not inside the app's root", path)


def exec_child(argv, env, creds, iso, status_fd, cg_fds, workdir, out_fd=None,
               oom_score_adj=None, interactive=False, userns_fd=None):
    """In a forked child: become the app process and exec argv. Never returns."""
    step = "start"
    try:
        linux.reset_signals()
        step = "setsid"
        os.setsid()
        if interactive and os.isatty(0):
            step = "controlling terminal"
            try:
                fcntl.ioctl(0, termios.TIOCSCTTY, 0)
            except OSError as e:
                # EPERM: it is the controlling terminal of another session (the caller's
                # shell's): never steal it; the app still reads and writes it.
                if e.errno != errno.EPERM:
                    raise
        step = "join cgroups"
        cgroups.join_fds(cg_fds)
        if oom_score_adj is not None:
            step = "oom_score_adj %d" % oom_score_adj
            try:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write(str(oom_score_adj))
            except PermissionError:
                step += " (below the runtime's own: that needs CAP_SYS_RESOURCE, which stage1 lacks)"
                raise
        if out_fd is not None:
            os.dup2(out_fd, 1)
            os.dup2(out_fd, 2)
        step = "close fds"
        linux.close_fds(keep=(status_fd,) if userns_fd is None else (status_fd, userns_fd))
        step = "chdir %s" % workdir
        check_cwd(workdir)
        if userns_fd is not None:
            step = "user namespace"
            userns.join(userns_fd)
            os.close(userns_fd)
        if iso.ulimits:
            step = "ulimits"
            isolators.apply_ulimits(iso.ulimits)
        if iso.proc_guard and iso.proc_guard.get("enforced"):
            step = "landlock"  # while root of its user namespace: no-new-privileges not forced
            landlock.restrict_self()
        step = "credentials"
        apply_creds(creds, iso)
        step = "seccomp"
        seccomp.apply(iso.seccomp_program, iso.capability_sets(creds.uid)[1])
        step = "exec %s" % argv[0]
        os.execvpe(argv[0], argv, env)
    except BaseException as e:  # noqa: BLE001 - report whatever it was, then _exit
        msg = "%s: %s" % (step, e.strerror if isinstance(e, OSError) and e.strerror else e)
        try:
            os.write(status_fd, msg.encode("utf-8", "replace")[:4000])
        except BaseException:
            pass
    os._exit(127)


def app_userns(ctx, iso, uid):
    """The user namespace fd the app joins, or None: private_users' always; the identity
    one unless the app keeps a capability that works only outside it (userns.py)."""
    if ctx.userns_fd is None or ctx.userns_base is not None:
        return ctx.userns_fd
    dummy_bnd, eff, prm, dummy_inh, amb = iso.capability_sets(uid)
    if userns.needs_host_caps(eff | prm | amb, ctx.host_net):
        return None
    return ctx.userns_fd


# The supervisor born in its app's v2 cgroup is charged there for the pages it dirties
# before it execs the app (runc's init is too); a v2 memory limit below this keeps the old
# order (born in _stage1, the app joins just before exec), so a small limit is not spent on
# stage1's Python.
BORN_IN_MIN_MEMORY = 32 << 20


def fork_supervisor(ctx, app) -> int:
    """PID 1's fork of an app's supervisor (os.fork's contract).

    Where the supervisor becomes the app (no post-stop handler must run after it), it is
    born in the app's v2 cgroup (clone3 CLONE_INTO_CGROUP): the app runs there from its
    first instruction and nobody writes that cgroup.procs, a write that costs an RCU grace
    period on hosts without favordynmods. Any refusal (an old kernel, a filter, no v2
    hierarchy) falls back to os.fork and the app joins by writing, as before. The child's
    ctx.born_in_v2 says which happened."""
    fd = None
    cg = ctx.cgroups
    if cg is not None and cg.v2 and not app.handlers.get("post-stop"):
        mem = app.isolation.memory_limit
        if not (cg.v2_memory() and mem is not None and mem < BORN_IN_MIN_MEMORY):
            fd = cg.open_app_dir_v2(app.name)
    try:
        pid, born = linux.fork_preferring_cgroup(fd)
    finally:
        if fd is not None:
            os.close(fd)
    if pid == 0 and born:
        ctx.born_in_v2 = True
    return pid


class Supervisor:
    def __init__(self, app, ctx, report_fd, ack_fd):
        self.app, self.ctx = app, ctx
        self.report_fd, self.ack_fd = report_fd, ack_fd
        self.child = None
        self.stopping = False
        self.cg_fds = []  # type: list  # cgroup.procs fds the app writes to join
        self.cg_fds_born = []  # type: list  # the same without the v2 one, for a child born there
        self.cg_v2_dir = None  # the app's v2 cgroup directory, when this supervisor is not in it

    def report(self, line):
        os.write(self.report_fd, (line.replace("\n", " ") + "\n").encode("utf-8", "replace"))

    def _on_signal(self, signum, frame):
        if signum != _signal.SIGCHLD:
            self.stopping = True
            if self.child is not None:
                try:  # PID 1's stop is SIGTERM: the app gets its own stop signal
                    os.kill(self.child, self.app.stop_signal if signum == _signal.SIGTERM else signum)
                except OSError:
                    pass

    def spawn(self, argv, what):
        """fork + exec argv as the app; its pid, or StartError with the exec error."""
        r, w = os.pipe()
        # born in the app's v2 cgroup when it can be, as fork_supervisor's are
        pid, born = linux.fork_preferring_cgroup(self.cg_v2_dir)
        cg_fds = self.cg_fds_born if born else self.cg_fds
        if pid == 0:
            os.close(r)
            exec_child(argv, self.env, self.creds, self.app.isolation, w, cg_fds,
                       self.app.working_directory, self.out_fd,
                       self.app.isolation.oom_score_adj, self.ctx.interactive, self.userns_fd)
        os.close(w)
        self.child = pid
        chunks = []
        while True:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            chunks.append(chunk)
        os.close(r)
        if chunks:
            self.wait(pid)
            raise StartError(b"".join(chunks).decode("utf-8", "replace"))
        return pid

    def wait(self, pid):
        dummy_pid, status = os.waitpid(pid, 0)
        self.child = None
        return linux.wait_status(status)

    def run_handler(self, name):
        argv = self.app.handlers.get(name)
        if not argv:
            return
        pid = self.spawn(argv, name)
        code, sig = self.wait(pid)
        if code != 0:
            raise StartError("%s handler %s" % (name, "exited with %s" % code if sig is None
                                                else "killed by signal %d" % sig))

    def become_app(self, host_pid):
        """Exec the app in this process: nothing is left to do after it. Never returns."""
        linux.reset_signals()  # a stop from here on ends this process, which is the app now
        if self.stopping:
            raise StartError("stopped before it started")
        os.set_inheritable(self.report_fd, False)
        os.close(self.ack_fd)
        self.report("exec %d" % host_pid)
        app = self.app
        exec_child(app.exec, self.env, self.creds, app.isolation, self.report_fd, self.cg_fds,
                   app.working_directory, self.out_fd, app.isolation.oom_score_adj, self.ctx.interactive,
                   self.userns_fd)

    def main(self):
        for s in (_signal.SIGTERM, _signal.SIGINT, _signal.SIGHUP):
            _signal.signal(s, self._on_signal)
        app, ctx = self.app, self.ctx
        self.out_fd = ctx.app_fds.get(app.name)
        keep = [self.report_fd, self.ack_fd] + ([self.out_fd] if self.out_fd is not None else [])
        if ctx.userns_fd is not None:
            keep.append(ctx.userns_fd)
        linux.close_fds(keep=keep)
        if ctx.userns_base is not None:
            userns.file_ids(ctx.userns_base)
        host_pid = int(os.readlink("/proc/self"))
        linux.unshare(linux.CLONE_NEWNS)
        held = volumes.hold(ctx.pod_dir, volumes.propagated(ctx.volume_opts, app))  # cloned before the rprivate
        mounts.make_private()
        if ctx.cgroups:
            born = getattr(ctx, "born_in_v2", False)  # fork_supervisor's child
            self.cg_fds = ctx.cgroups.open_app_procs(app.name, v2=not born)
            if ctx.cgroups.v2 and not born:  # roots() lists v2 last
                self.cg_fds_born = self.cg_fds[:-1]
                self.cg_v2_dir = ctx.cgroups.open_app_dir_v2(app.name)
        # Networking is set up by now (net-info.json); after pivot the pod directory is gone.
        metadata_url = ctx.metadata_url or pod_mod.metadata_url(ctx.pod_dir)
        rootfd = mounts.bind_root(app.root)
        priv = getattr(app, "privileged", False)
        mounts.mount_proc(rootfd, priv)
        mounts.mount_sys(rootfd, ctx.cgroup_mounts, priv)
        mounts.mount_dev(rootfd, ctx.console, priv, app.devices, app.isolation.shm_size)
        for name in ctx.etc_files:  # the pod's hosts and resolv.conf (private networks)
            try:
                mounts.mount_volume(rootfd, os.path.join(ctx.pod_dir, "net", name), "/etc/" + name, True, False)
            except OSError as e:
                if e.errno != errno.EROFS:  # a read-only root without the file keeps its /etc
                    raise
        for m in app.mounts:
            volumes.mount(rootfd, ctx, ctx.volume_opts, app.name, m, held)
        volumes.release(held)
        if app.secrets:  # read-only binds of the files in the pod's secrets tmpfs
            from . import secrets

            for source, target in secrets.app_files(ctx.pod_dir, app.name, app.secrets):
                mounts.mount_volume(rootfd, source, target, True, False)
        mounts.finish_root(rootfd, app.read_only_root)
        mounts.pivot(rootfd)
        os.close(rootfd)
        os.umask(0o022)
        # From here on only the app's files are visible: nothing may be imported.
        self.creds = resolve_creds(app)
        self.userns_fd = app_userns(ctx, app.isolation, self.creds.uid)
        self.env = app_environment(app, metadata_url, self.creds.home)
        if self.stopping:
            raise StartError("stopped before it started")
        self.run_handler("pre-start")
        if self.stopping:
            raise StartError("stopped before it started")
        if not app.handlers.get("post-stop"):
            self.become_app(host_pid)
        pid = self.spawn(app.exec, "app")
        self.report("run %d %d" % (host_pid, pid))
        try:
            os.read(self.ack_fd, 1)
        except OSError:
            pass
        code, sig = self.wait(pid)
        self.report("exit %s %s %r" % ("-" if code is None else code, "-" if sig is None else sig,
                                       time.time()))
        try:
            self.run_handler("post-stop")
        except Exception as e:  # noqa: BLE001
            sys.stderr.write("stage1: app %s: %s\n" % (app.name, e))


def describe(e):
    if isinstance(e, OSError) and e.strerror:
        return "%s: %s" % (e.filename, e.strerror) if e.filename else e.strerror
    return str(e) or type(e).__name__


def supervise(app, ctx, report_fd, ack_fd):
    """Body of the forked supervisor. Never returns."""
    code = 0
    try:
        linux.reset_signals()
        Supervisor(app, ctx, report_fd, ack_fd).main()
    except BaseException as e:  # noqa: BLE001
        msg = describe(e)
        try:
            os.write(report_fd, ("fail %s\n" % str(msg).replace("\n", " ")).encode("utf-8", "replace"))
        except BaseException:
            pass
        code = 1
    os._exit(code)
