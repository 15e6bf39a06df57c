"""enter: `enter --pid=<pod pid 1> --app=<name> [--env=K=V …] [--chdir=D] [--timeout=S] [--user=U[:G]] -- cmd …`

Runs cmd as the app runs: in every namespace of the app's main process (apps/<app>/pid),
its cgroups, root, uid/gid/groups, bounding/effective/permitted/inheritable/ambient
capabilities, no-new-privileges, oom_score_adj and environment, all read from
/proc/<app pid>. Never more privileged than the app (rkt's CVE-2019-10144/10145/10147).
--user (docker exec's -u) changes user last, once the command is the app in every way,
seccomp filter included: the kernel then allows exactly what the app itself could do (a root
app with CAP_SETUID becomes anyone and loses its capabilities; an unprivileged app cannot).
This process is non-dumpable before it joins anything. Exit status: the command's
(128+N for signal N); contract.EXIT_STAGE1 (254) for enter's own failures.
"""
import errno
import os
import signal
import sys
import warnings

from . import app as app_mod
from . import cgroups, contract, isolators, landlock, linux, pod, seccomp, users, userns

# os.execvpe imports warnings; after pivot_root no stdlib is reachable, so load it now.
_PRELOADED = (warnings,)

NAMESPACES = ("cgroup", "ipc", "uts", "net", "mnt")  # pid is joined by the parent


def parse_args(argv):
    opts = {"pid": None, "app": None, "env": [], "chdir": None, "cmd": None, "user": None}  # type: dict
    for i, a in enumerate(argv):
        if a == "--":
            opts["cmd"] = argv[i + 1:]
            break
        if a.startswith("--pid="):
            opts["pid"] = int(a[6:])
        elif a.startswith("--app="):
            opts["app"] = a[6:]
        elif a.startswith("--env="):
            k, sep, v = a[6:].partition("=")
            if not sep or not k:
                raise ValueError("--env needs K=V: %s" % a)
            opts["env"].append((k, v))
        elif a.startswith("--chdir="):
            opts["chdir"] = a[8:]
        elif a.startswith("--user="):
            opts["user"] = a[7:]
            if not opts["user"]:
                raise ValueError("--user needs a user: %s" % a)
        elif a.startswith("--timeout="):
            opts["timeout"] = float(a[10:])
            if not opts["timeout"] > 0:
                raise ValueError("--timeout must be positive seconds: %s" % a)
        else:
            raise ValueError("unknown argument %s" % a)
    # Values that may be secret come through the environment, not argv (/proc/*/cmdline
    # is world-readable): ROCKET_ENTER_ENV holds NUL-separated K=V items.
    for item in (os.environ.get(contract.ENV_ENTER_ENV) or "").split("\0"):
        if item:
            k, sep, v = item.partition("=")
            if not sep or not k:
                raise ValueError("%s item without K=V" % contract.ENV_ENTER_ENV)
            opts["env"].append((k, v))
    if not opts["pid"] or not opts["app"] or not opts["cmd"]:
        raise ValueError("usage: enter --pid=N --app=NAME [--env=K=V] [--chdir=D] [--user=U[:G]] -- cmd ...")
    if "/" in opts["app"] or opts["app"] in (".", ".."):
        raise ValueError("bad app name %r" % opts["app"])
    return opts


def read_status(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, dummy_sep, v = line.partition(":")
            out[k] = v.strip()
    return out


class Target:
    """The app process's identity, as the kernel reports it."""

    def __init__(self, pid):
        s = read_status(pid)
        self.pid = pid
        self.uid = [int(x) for x in s["Uid"].split()[:3]]
        self.gid = [int(x) for x in s["Gid"].split()[:3]]
        self.groups = [int(x) for x in s.get("Groups", "").split()]
        self.cap_inh = int(s["CapInh"], 16)
        self.cap_prm = int(s["CapPrm"], 16)
        self.cap_eff = int(s["CapEff"], 16)
        self.cap_bnd = int(s["CapBnd"], 16)
        self.cap_amb = int(s.get("CapAmb", "0"), 16)
        self.no_new_privs = s.get("NoNewPrivs", "0") == "1"
        self.seccomp = int(s.get("Seccomp", "0"))
        with open("/proc/%d/environ" % pid, "rb") as f:
            raw = f.read()
        self.env = {}
        for item in raw.split(b"\0"):
            k, sep, v = item.partition(b"=")
            if sep and k:
                self.env[k.decode("utf-8", "surrogateescape")] = v.decode("utf-8", "surrogateescape")
        with open("/proc/%d/oom_score_adj" % pid) as f:
            self.oom_score_adj = int(f.read())
        with open("/proc/%d/cgroup" % pid) as f:
            self.cgroups = [line.rstrip("\n").split(":", 2) for line in f if line.strip()]
        self.ulimits = []  # the app's rocket/ulimits (main sets them from the manifest)
        # The app's supervisor put it in a Landlock domain by the same rule (landlock.guard)
        # from the same bounding set: the command gets one too, never more reach than the app.
        self.proc_guard = landlock.guard(*landlock.probe(), bounding=self.cap_bnd)["enforced"]

    def to_inside(self):
        """uid/gid/groups as the app's user namespace sees them (what setresuid there takes)."""
        umap = _read_map("/proc/%d/uid_map" % self.pid)
        gmap = _read_map("/proc/%d/gid_map" % self.pid)
        self.uid = [_inside(u, umap) for u in self.uid]
        self.gid = [_inside(g, gmap) for g in self.gid]
        self.groups = [_inside(g, gmap) for g in self.groups]


def _inside(ident, mapping):
    """A host id as the user namespace of mapping ([(inside, outside, count)]) sees it."""
    for inside, outside, count in mapping:
        if outside <= ident < outside + count:
            return inside + ident - outside
    raise ValueError("id %d is not mapped in the app's user namespace" % ident)


def _read_map(path):
    with open(path) as f:
        return [tuple(int(x) for x in line.split()) for line in f if line.strip()]


def _cgroup_procs(target):
    """Host paths of the cgroup.procs files of every cgroup the target is in."""
    mounts, v2 = [], None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, dummy_sep, right = line.partition(" - ")
            fields, rf = left.split(), right.split()
            if len(fields) < 5 or len(rf) < 3:
                continue
            if rf[0] == "cgroup2" and v2 is None:
                v2 = cgroups.unescape_mountinfo(fields[4])
            elif rf[0] == "cgroup":
                mounts.append((set(rf[2].split(",")), cgroups.unescape_mountinfo(fields[4])))
    out = []
    for dummy_id, ctrls, path in target.cgroups:
        point = v2
        if ctrls:
            want = set(ctrls.split(","))
            point = next((p for opts, p in mounts if want <= opts), None)
        if point is None:
            continue
        out.append(os.path.join(point, path.lstrip("/"), "cgroup.procs"))
        if point == v2 and cgroups.is_frozen(os.path.join(point, path.lstrip("/"))):
            # the command would join a frozen cgroup and hang there until the pod is unpaused
            raise ValueError("the app is %s: unpause the pod first (paused: false)" % contract.ENTER_TARGET_PAUSED)
    return out


def _same_ns(a, b, ns):
    return os.readlink("/proc/%d/ns/%s" % (a, ns)) == os.readlink("/proc/%d/ns/%s" % (b, ns))


def _child(target, ns_fds, root_fd, procs, workdir, cmd, env, status_fd, program=None, user_fd=None, group=False,
           user=None, home_given=False):
    step = "join cgroups"
    try:
        linux.reset_signals()
        if group:  # its own process group, so a timeout kills what it started too
            os.setpgid(0, 0)
        for path in procs:
            with open(path, "w") as f:
                f.write("0")
        step = "join namespaces"
        for fd in ns_fds:
            linux.setns(fd)
        os.fchdir(root_fd)
        os.chroot(".")
        step = "oom_score_adj"
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(target.oom_score_adj))
        linux.close_fds(keep=(status_fd,) if user_fd is None else (status_fd, user_fd))
        step = "chdir %s" % workdir
        app_mod.check_cwd(workdir)
        creds = None
        if user is not None:  # looked up in the app's own files, changed to after the filter
            step = "user %s" % user
            creds = users.resolve_spec(user)
            if creds[0] == target.uid[1] and ":" not in user:
                creds = None  # the app's own user: its gid and groups as they are, nothing to change
            if not home_given and creds is not None:  # the user's home, as docker exec -u gives it
                env = dict(env, HOME=creds[3] or "/")
        if user_fd is not None:
            step = "user namespace"  # last: from inside it, no other namespace could be joined
            userns.join(user_fd)
            os.close(user_fd)
        if target.ulimits:  # the app's, from the same manifest: never more than the app's
            step = "ulimits"
            isolators.apply_ulimits(target.ulimits)
        if target.proc_guard:  # a domain of its own, as the app has (a sibling: no ptrace of the app)
            step = "landlock"
            landlock.restrict_self()
        step = "credentials"
        linux.drop_bounding(target.cap_bnd)
        uid = target.uid[1]
        if uid != 0:
            linux.set_keepcaps(True)
        os.setgroups(target.groups)
        os.setresgid(*target.gid)
        os.setresuid(*target.uid)
        linux.capset(target.cap_eff, target.cap_prm, target.cap_inh)
        linux.set_ambient(target.cap_amb)
        if uid != 0:
            linux.set_keepcaps(False)
        if target.no_new_privs:
            linux.set_no_new_privs()
        step = "seccomp"
        seccomp.apply(program, target.cap_eff)
        if creds is not None:
            step = "user %s (the app's own privileges decide)" % user
            uid, gid, groups, dummy_home = creds
            os.setgroups(groups)
            os.setresgid(gid, gid, gid)
            os.setresuid(uid, uid, uid)
        step = "exec %s" % cmd[0]
        os.execvpe(cmd[0], cmd, env)
    except BaseException as e:  # noqa: BLE001
        msg = "%s: %s" % (step, e.strerror if isinstance(e, OSError) and e.strerror else e)
        try:
            os.write(status_fd, msg.encode("utf-8", "replace")[:4000])
        except BaseException:
            pass
    os._exit(127)


def _kill_after(pid, timeout):
    """--timeout (the keeper's probes): SIGKILL to the command's process group when it is
    still running after timeout seconds; the wait below then returns 128+9."""
    def expire(signum, frame):
        sys.stderr.write("enter: timed out after %gs; the command was killed\n" % timeout)
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass

    signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)


def main(argv):
    linux.set_dumpable(False)
    app_pid = 0
    try:
        opts = parse_args(argv)
        pod_dir = os.getcwd()
        with open(os.path.join(pod_dir, contract.app_file(opts["app"], contract.PID))) as f:
            app_pid = int(f.read().strip())
        if not _same_ns(app_pid, opts["pid"], "pid"):
            raise ValueError("process %d is not in the pod of PID %s" % (app_pid, opts["pid"]))
        dummy_manifest, apps, dummy_volumes = pod.load(pod_dir)
        app = next((a for a in apps if a.name == opts["app"]), None)
        if app is None:
            raise ValueError("the pod has no app %s" % opts["app"])
        workdir = opts["chdir"] if opts["chdir"] is not None else app.working_directory
        target = Target(app_pid)
        target.ulimits = app.isolation.ulimits
        # The same filter the app got, built from the same manifest; the kernel's word on
        # the app must agree with it, or the manifest is not what the app runs under.
        program = app.isolation.seccomp_program
        if target.seccomp != (2 if program is not None else 0):
            raise ValueError("the app's seccomp mode is %d, its manifest asks for %s; "
                             "enter cannot match it" % (target.seccomp,
                                                        "a filter" if program else "none"))
        procs = _cgroup_procs(target)
        ns_fds = [os.open("/proc/%d/ns/%s" % (app_pid, ns), os.O_RDONLY | os.O_CLOEXEC)
                  for ns in NAMESPACES]
        root_fd = os.open("/proc/%d/root" % app_pid, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        user_fd = None
        if not _same_ns(app_pid, os.getpid(), "user"):
            user_fd = os.open("/proc/%d/ns/user" % app_pid, os.O_RDONLY | os.O_CLOEXEC)
            target.to_inside()
        pid_fd = os.open("/proc/%d/ns/pid" % app_pid, os.O_RDONLY | os.O_CLOEXEC)
        # The app must still be the process we read: same pid namespace after opening.
        if not _same_ns(app_pid, opts["pid"], "pid"):
            raise ValueError("app process %d went away" % app_pid)
        env = dict(target.env)
        for k, v in opts["env"]:
            env[k] = v
        linux.setns(pid_fd, linux.CLONE_NEWPID)
        os.close(pid_fd)
    except (OSError, ValueError, KeyError, IndexError, StopIteration, pod.ConfigError) as e:
        why = app_mod.describe(e)
        if app_pid and (contract.exited(app_pid) or (isinstance(e, OSError) and e.errno == errno.ESRCH)):
            # The app exited under us (an exiting process or a zombie answers ESRCH for its
            # environ, ENOENT for its namespaces: contract.exited): that, not the /proc
            # entry, is what the caller must hear.
            why = "the app's process %d %s (%s)" % (app_pid, contract.ENTER_TARGET_EXITED, why)
        sys.stderr.write("enter: %s\n" % why)
        return contract.EXIT_STAGE1
    r, w = os.pipe()
    child = [None]  # type: list

    def forward(signum, frame):
        if child[0] is not None:
            try:
                os.kill(child[0], signum)
            except OSError:
                pass

    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(s, forward)
    try:
        pid = os.fork()
    except OSError as e:
        # ENOMEM: the pod's PID 1 exited after our setns, and its namespace takes no new process
        why = ("the pod's PID 1 " + contract.ENTER_TARGET_EXITED) if e.errno == errno.ENOMEM else app_mod.describe(e)
        sys.stderr.write("enter: cannot start a process in the pod: %s\n" % why)
        return contract.EXIT_STAGE1
    if pid == 0:
        os.close(r)
        _child(target, ns_fds, root_fd, procs, workdir, opts["cmd"], env, w, program, user_fd,
               group=opts.get("timeout") is not None, user=opts["user"],
               home_given=any(k == "HOME" for k, dummy_v in opts["env"]))
    child[0] = pid
    if opts.get("timeout") is not None:
        _kill_after(pid, opts["timeout"])
    os.close(w)
    for fd in ns_fds + [root_fd] + ([user_fd] if user_fd is not None else []):
        os.close(fd)
    err = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        err += chunk
    os.close(r)
    if opts.get("timeout") is not None:
        # Stop the timer while the child is a zombie: its pid is not free for another to take.
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
        signal.setitimer(signal.ITIMER_REAL, 0)
    dummy_pid, status = os.waitpid(pid, 0)
    if err:
        sys.stderr.write("enter: %s\n" % err.decode("utf-8", "replace"))
        return contract.EXIT_STAGE1
    code, sig = linux.wait_status(status)
    return 128 + sig if sig is not None else code
