"""Run the default stage1 the way stage0 will, on pods laid out by hand.

- base_rootfs(): a read-only app image tree from Debian's busybox-static, with
  /etc/passwd and /etc/group holding root, a user "app" (1000) and groups app (1000),
  extra (2000).
- Pod: lays out a pod directory per docs/stage1-contract.md (pod manifest, stage1/rootfs
  holding image.files(), each app's manifest), then runs stage1 from a child that
  unshares a mount namespace (/ made rprivate, or rshared for the propagation test),
  mounts an overlay for each app root (lower: the base tree; upper/work in the pod dir,
  the upper pre-filled with the app's extra files), flocks the pod directory and execs
  `sys.executable -I -S <pod>/stage1/rootfs/init … <uuid>` with cwd = the pod directory
  and ROCKET_LOCK_FD set. The mounts die with that namespace; cgroups go through gc.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid as uuidlib

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import image

BUSYBOX = "/bin/busybox"
PASSWD = ("root:x:0:0:root:/root:/bin/sh\n"
          "app:x:1000:1000:app user:/home/app:/bin/sh\n"
          "nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
GROUP = "root:x:0:\napp:x:1000:\nextra:x:2000:app\nnogroup:x:65534:\n"


def static_binary(tmp_path_factory, name, source):
    """A static C program built with gcc (a declared test dependency) for probes in pods."""
    assert shutil.which("gcc"), "gcc is missing: tools/debian-packages.sh installs it"
    d = tmp_path_factory.mktemp(name)
    (d / (name + ".c")).write_text(source)
    subprocess.run(["gcc", "-static", "-O1", "-o", str(d / name), str(d / (name + ".c"))], check=True)
    return (d / name).read_bytes()


def ensure_busybox():
    if not os.path.exists(BUSYBOX):
        subprocess.run(["apt-get", "install", "-y", "busybox-static"], check=True,
                       stdout=subprocess.DEVNULL)
    return BUSYBOX


def base_rootfs(path):
    """The busybox image tree at path (built once per session by the fixture)."""
    ensure_busybox()
    for d in ("bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev", "usr/bin", "var"):
        os.makedirs(os.path.join(path, d), exist_ok=True)
    os.chmod(os.path.join(path, "tmp"), 0o1777)
    os.chown(os.path.join(path, "home/app"), 1000, 1000)
    shutil.copy2(BUSYBOX, os.path.join(path, "bin", "busybox"))
    applets = subprocess.run([BUSYBOX, "--list"], check=True, capture_output=True,
                             text=True).stdout.split()
    for a in applets:
        link = os.path.join(path, "bin", a)
        if a != "busybox" and not os.path.lexists(link):
            os.symlink("busybox", link)
    with open(os.path.join(path, "etc", "passwd"), "w") as f:
        f.write(PASSWD)
    with open(os.path.join(path, "etc", "group"), "w") as f:
        f.write(GROUP)
    return path


_WRAPPER = r'''
import ctypes, fcntl, json, os, sys
cfg = json.loads(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
def check(r, what):
    if r != 0:
        e = ctypes.get_errno()
        sys.stderr.write("harness: %s: %s\n" % (what, os.strerror(e)))
        os._exit(250)
check(libc.unshare(0x20000), "unshare")
MS_REC, MS_PRIVATE, MS_SHARED = 0x4000, 1 << 18, 1 << 20
check(libc.mount(None, b"/", None, MS_REC | (MS_SHARED if cfg["shared"] else MS_PRIVATE), None), "propagation")
for lower, upper, work, target in cfg["overlays"]:
    data = ("lowerdir=%s,upperdir=%s,workdir=%s" % (lower, upper, work)).encode()
    check(libc.mount(b"overlay", target.encode(), b"overlay", 0, data), "overlay " + target)
def mounts():
    with open("/proc/self/mountinfo") as f:
        return set(" ".join((l.split()[4], l.split(" - ")[1].split()[0])) for l in f)
before = mounts()
lock = os.open(cfg["pod"], os.O_RDONLY | os.O_DIRECTORY)
fcntl.flock(lock, fcntl.LOCK_EX)
os.set_inheritable(lock, True)
env = dict(os.environ)
env.update(cfg["env"])
env["ROCKET_LOCK_FD"] = str(lock)
pid = os.fork()
if pid == 0:
    os.chdir(cfg["pod"])
    os.execve(sys.executable, [sys.executable, "-I", "-S", cfg["init"]] + cfg["flags"] + [cfg["uuid"]], env)
with open(cfg["report"] + ".outer", "w") as f:
    f.write(str(pid))
_, status = os.waitpid(pid, 0)
rc = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
leaked = sorted(mounts() - before)
with open(cfg["report"], "w") as f:
    json.dump({"rc": rc, "leaked": leaked}, f)
os._exit(rc)
'''


class Result:
    def __init__(self, rc, stdout, stderr, status, leaked, pod):
        self.rc, self.stdout, self.stderr = rc, stdout, stderr
        self.status, self.leaked, self.pod = status, leaked, pod

    def __repr__(self):
        return "Result(rc=%r, stdout=%r, stderr=%r, status=%r)" % (
            self.rc, self.stdout[-2000:], self.stderr[-2000:], self.status)


class Pod:
    def __init__(self, workdir, base):
        self.workdir = str(workdir)
        self.base = base
        self.dir = os.path.join(self.workdir, "pod")
        self.uuid = str(uuidlib.uuid4())
        self.apps = []
        self.volumes = []
        self.isolators = None
        self.annotations = None  # pod manifest annotations, [{"name", "value"}]
        self.proc = None

    # ------------------------------------------------------------ layout
    def add_app(self, name, exec_, user="0", group="0", files=None, mounts=None,
                pod_app=None, **app_fields):
        """files: {path in root: str|bytes|(data, mode)} written into the overlay's upper."""
        app = {"exec": list(exec_), "user": user, "group": group}
        app.update(app_fields)
        manifest = {"acKind": "ImageManifest", "acVersion": "0.8.11",
                    "name": "example.com/%s" % name, "app": app}
        entry = {"name": name, "image": {"id": "sha512-" + "0" * 128}}
        if mounts:
            entry["mounts"] = mounts
        entry.update(pod_app or {})
        self.apps.append((entry, manifest, files or {}))
        return app

    def add_volume(self, name, kind="empty", **fields):
        vol = {"name": name, "kind": kind}
        vol.update(fields)
        self.volumes.append(vol)
        return vol

    def volume_path(self, name):
        return os.path.join(self.dir, "volumes", name)

    def write(self):
        os.makedirs(self.dir, exist_ok=True)
        manifest = {"acKind": "PodManifest", "acVersion": "0.8.11",
                    "apps": [a[0] for a in self.apps]}
        if self.volumes:
            manifest["volumes"] = self.volumes
        if self.isolators:
            manifest["isolators"] = self.isolators
        if self.annotations:
            manifest["annotations"] = self.annotations
        with open(os.path.join(self.dir, "pod"), "w") as f:
            json.dump(manifest, f)
        s1 = os.path.join(self.dir, "stage1", "rootfs")
        for path, data in image.files().items():
            full = os.path.join(s1, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
        self.overlays = []
        for entry, img, files in self.apps:
            adir = os.path.join(s1, "opt", "stage2", entry["name"])
            os.makedirs(os.path.join(adir, "rootfs"), exist_ok=True)
            with open(os.path.join(adir, "manifest"), "w") as f:
                json.dump(img, f)
            ov = os.path.join(self.dir, "overlay", entry["name"])
            upper, work = os.path.join(ov, "upper"), os.path.join(ov, "work")
            os.makedirs(upper, exist_ok=True)
            os.makedirs(work, exist_ok=True)
            for path, data in files.items():
                mode = 0o755
                if isinstance(data, tuple):
                    data, mode = data
                full = os.path.join(upper, path.lstrip("/"))
                os.makedirs(os.path.dirname(full), exist_ok=True)
                if isinstance(data, str) and data.startswith("symlink:"):
                    os.symlink(data[len("symlink:"):], full)
                    continue
                with open(full, "wb") as f:
                    f.write(data.encode() if isinstance(data, str) else data)
                os.chmod(full, mode)
            self.overlays.append((self.base, upper, work, os.path.join(adir, "rootfs")))

    # ------------------------------------------------------------ running
    def _cfg(self, flags, shared, env):
        return json.dumps({
            "pod": self.dir, "init": os.path.join(self.dir, "stage1", "rootfs", "init"),
            "flags": list(flags), "uuid": self.uuid, "overlays": self.overlays,
            "shared": shared, "env": env or {}, "report": os.path.join(self.workdir, "report")})

    def start(self, flags=(), shared=False, env=None, pass_fds=(), wrap=()):
        """wrap: a command that execs the rest of its arguments (e.g. under a seccomp filter)."""
        self.write()
        self.proc = subprocess.Popen(list(wrap) + [sys.executable, "-c", _WRAPPER, self._cfg(flags, shared, env)],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL, pass_fds=pass_fds)
        return self.proc

    def wait_running(self, timeout=20):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if os.path.exists(os.path.join(self.dir, "pid")):
                return int(open(os.path.join(self.dir, "pid")).read())
            if self.proc.poll() is not None:
                raise AssertionError("pod ended before running: %r" % (self.finish(),))
            time.sleep(0.02)
        raise AssertionError("pod not running after %ss" % timeout)

    def finish(self, timeout=60):
        try:
            out, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            out, err = self.proc.communicate()
        try:
            with open(os.path.join(self.workdir, "report")) as f:
                rep = json.load(f)
        except (OSError, ValueError):
            rep = {"rc": self.proc.returncode, "leaked": None}
        status = {}
        for entry, dummy1, dummy2 in self.apps:
            try:
                with open(os.path.join(self.dir, "status", entry["name"])) as f:
                    status[entry["name"]] = json.load(f)
            except OSError:
                pass
        self.gc()
        return Result(rep["rc"], out.decode("utf-8", "replace"), err.decode("utf-8", "replace"),
                      status, rep["leaked"], self)

    def kill(self):
        for name in ("pid",):
            try:
                os.kill(int(open(os.path.join(self.dir, name)).read()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        try:
            os.kill(int(open(os.path.join(self.workdir, "report.outer")).read()), signal.SIGKILL)
        except (OSError, ValueError):
            pass

    def run(self, flags=(), shared=False, env=None, timeout=60, pass_fds=(), wrap=()):
        self.start(flags, shared, env, pass_fds, wrap)
        return self.finish(timeout)

    def gc(self):
        return subprocess.run([sys.executable, "-I", "-S",
                               os.path.join(self.dir, "stage1", "rootfs", "gc"), self.uuid],
                              cwd=self.dir, capture_output=True, text=True, check=False)

    def enter(self, app, cmd, pid1=None, extra=()):
        pid1 = pid1 or int(open(os.path.join(self.dir, "pid")).read())
        return subprocess.run([sys.executable, "-I", "-S",
                               os.path.join(self.dir, "stage1", "rootfs", "enter"),
                               "--pid=%d" % pid1, "--app=%s" % app] + list(extra) + ["--"] + list(cmd),
                              cwd=self.dir, capture_output=True, text=True, timeout=30, check=False)
