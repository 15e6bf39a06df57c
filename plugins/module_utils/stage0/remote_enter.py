"""The enter program the pod connection ships to a remote pod host, and its host side.

The connection plugin reaches a remote pod over Ansible's ssh connection, where no
collection is installed. It ships a small zip of this module and the stage0/stage1 files
that enter needs (``bundle()``), once per content: the host keeps it in
``CACHE_DIR/<sha256>.zip``, root-owned, in directories only root can write (the bytecode
cache's rules: no link, no group or other write bit, on the file or any directory up to
/var/cache), so a program run as root there is never one another user could have placed.
``BOOTSTRAP`` checks that and runs ``main()``; ``INSTALL`` writes a shipped zip after
checking its hash. Both are ``python3 -I -c`` programs: nothing on the host but Python.

``main()`` runs a command in an app exactly as local enter does (stage1's enter
entrypoint: the app's namespaces, root, cgroups, user, capabilities, seccomp and
no-new-privileges) with the ssh session's standard streams passed straight through, so
files stream and nothing is held in memory.
"""
import hashlib
import io
import os
import subprocess
import sys
import zipfile
from typing import List, Optional, Tuple

CACHE_DIR = "/var/cache/appc.rocket/enter"
MISSING = "rocket-enter-missing"  # the bootstrap's stderr line when the program is not cached yet
EXIT_MISSING = 97
EXIT_ENTER = 254  # stage1's contract.EXIT_STAGE1, not imported: the controller must not need stage1

# The files main() imports (directly or lazily); a unit test runs the bundle to prove it complete.
_FILES = ("stage0/__init__.py", "stage0/remote_enter.py", "stage0/enter.py", "stage0/run.py", "stage0/pod.py",
          "stage0/datadir.py", "stage0/errors.py", "stage0/crashpoint.py", "stage0/fsutil.py", "stage0/locks.py",
          "stage0/schema.py", "stage1/__init__.py", "stage1/contract.py", "stage1/jsonlite.py")
_PACKAGE = "ansible_collections/appc/rocket/plugins/module_utils/"

BOOTSTRAP = r"""
import os, stat, sys
def bad(m):
    sys.stderr.write("enter: " + m + "\n"); sys.exit(%(enter)d)
if os.geteuid() != 0:
    bad("entering a pod needs root on its host (running as uid %%d there): connect as root, "
        "or set ansible_rocket_host_sudo" %% os.geteuid())
d = %(dir)r
p = os.path.join(d, sys.argv[1] + ".zip")
for q, mask in (("/var/cache", 0o022), (os.path.dirname(d), 0o022), (d, 0o077), (p, 0o022)):
    try:
        st = os.lstat(q)
    except FileNotFoundError:
        sys.stderr.write(%(missing)r + "\n"); sys.exit(%(exit_missing)d)
    if st.st_uid != 0 or st.st_mode & mask or not (stat.S_ISREG if q == p else stat.S_ISDIR)(st.st_mode):
        bad("%%s is not a %%s of root that only root can write: refusing to run the enter program from it"
            %% (q, "file" if q == p else "directory"))
sys.path.insert(0, p)
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import remote_enter
sys.exit(remote_enter.main(sys.argv[2:]))
""" % {"enter": EXIT_ENTER, "dir": CACHE_DIR, "missing": MISSING, "exit_missing": EXIT_MISSING}

INSTALL = r"""
import hashlib, os, stat, sys, tempfile
def bad(m):
    sys.stderr.write("enter: " + m + "\n"); sys.exit(%(enter)d)
if os.geteuid() != 0:
    bad("shipping the enter program needs root on the pod's host: connect as root, or set ansible_rocket_host_sudo")
data = sys.stdin.buffer.read()
if hashlib.sha256(data).hexdigest() != sys.argv[1]:
    bad("the shipped enter program arrived damaged (hash mismatch)")
d = %(dir)r
for q, mode in ((os.path.dirname(d), 0o755), (d, 0o700)):
    try:
        os.mkdir(q, mode)
    except FileExistsError:
        pass
for q, mask in (("/var/cache", 0o022), (os.path.dirname(d), 0o022), (d, 0o077)):
    st = os.lstat(q)
    if st.st_uid != 0 or st.st_mode & mask or not stat.S_ISDIR(st.st_mode):
        bad("%%s is not a directory of root that only root can write: refusing to cache the enter program there" %% q)
fd, tmp = tempfile.mkstemp(dir=d, prefix=".new-")
try:
    os.write(fd, data) == len(data) or bad("short write to " + tmp)
    os.fchmod(fd, 0o600)
    os.close(fd)
    import importlib.util, marshal, zipfile
    with zipfile.ZipFile(tmp, "a") as z:
        for name in [n for n in z.namelist() if n.endswith(".py")]:
            source = z.read(name)
            head = importlib.util.MAGIC_NUMBER + (1).to_bytes(4, "little") + importlib.util.source_hash(source)
            info = zipfile.ZipInfo(name[:-3] + ".pyc", date_time=(1980, 1, 1, 0, 0, 0))
            z.writestr(info, head + marshal.dumps(compile(source, name, "exec", dont_inherit=True)))
    fd = os.open(tmp, os.O_RDONLY)
    os.fsync(fd)
    os.close(fd)
    os.rename(tmp, os.path.join(d, sys.argv[1] + ".zip"))
except BaseException:
    os.unlink(tmp)
    raise
""" % {"enter": EXIT_ENTER, "dir": CACHE_DIR}


def bundle() -> Tuple[bytes, str]:
    """(zip bytes, sha256) of the enter program: sources only, deterministic, so a host keeps one
    copy per version. The host compiles them into the zip as it installs it (INSTALL: unchecked-hash
    .pyc for its own Python; marshal's output is not reproducible, so it cannot be part of the name)
    and a remote task does not recompile stage0 each time."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        def add(name: str, data: bytes) -> None:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type, info.external_attr = zipfile.ZIP_DEFLATED, 0o644 << 16
            z.writestr(info, data)

        for pkg in ("ansible_collections/", "ansible_collections/appc/", "ansible_collections/appc/rocket/",
                    "ansible_collections/appc/rocket/plugins/", _PACKAGE):
            add(pkg + "__init__.py", b"")
        for rel in _FILES:
            with open(os.path.join(root, rel), "rb") as f:
                source = f.read()
            add(_PACKAGE + rel, source)
    data = buf.getvalue()
    return data, hashlib.sha256(data).hexdigest()


def _fail(message: str) -> int:
    sys.stderr.write("enter: %s\n" % message)
    sys.stderr.flush()
    return EXIT_ENTER


def main(argv: List[str]) -> int:
    """argv: data_dir, pod (name or UUID prefix), app ('' for the only one), user ('' for the
    app's, else enter's --user), then the command."""
    from . import pod as podmod
    from .datadir import DataDir
    from .enter import command, vanished
    from .errors import RocketError
    from .run import moved_error

    if len(argv) < 5:
        return _fail("usage: DATA_DIR POD APP USER COMMAND...")
    data_dir, ref, chosen, user, cmd = argv[0], argv[1], argv[2] or None, argv[3] or None, argv[4:]
    pod: Optional["podmod.Pod"] = None
    try:
        pod = podmod.lookup_ref(DataDir(data_dir), ref)
        state = pod.state()
        if state != "running":
            return _fail("pod %s (%s) is %s, not running; start it with appc.rocket.pod_run" % (ref, pod.uuid, state))
        app = podmod.choose_app(pod, chosen, label=ref, hint="set ansible_rocket_app to one of them")
        argv_, env, cwd = command(pod, app, cmd, user=user)
        try:
            p = subprocess.Popen(argv_, cwd=cwd, env=env)  # the ssh session's streams, unbuffered
        except OSError:  # its chdir: the pod exited and was collected meanwhile
            err = moved_error(pod)
            if err is None:
                raise
            raise err from None
    except RocketError as e:
        return _fail("pod %s: %s" % (ref, e))
    rc = p.wait()
    rc = rc if rc >= 0 else 128 - rc
    if vanished(pod, app, None, rc):
        return _fail("app %s of pod %s exited while a command ran in it" % (app, ref))
    return rc
