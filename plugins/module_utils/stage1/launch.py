"""stage0's last step before stage1: a private mount namespace, the pod's mounts, then init.

Shared by stage0's foreground run (imported from module_utils) and by the keeper (run
from the stage1 tree), so a pod is started one way whoever starts it. It runs in a fresh
child process and leaves only by exec or os._exit.

When the pod's run entrypoint is the default stage1's launcher, byte for byte, running it
is exactly "put its directory first on sys.path, import stage1.init, exit with
main(argv)": that is done here, in the child that already runs this interpreter, instead
of exec'ing a second one (saves an interpreter start and its imports per pod start, and
an interpreter's heap per running pod). The child first looks like a fresh interpreter
would: only stdio, the lock fd and the apps' fds open, default signal dispositions (plus
the ones Python sets), an empty mask, the exec path's environment and argv. Any other run
entrypoint (another stage1 image) is exec'd as before.
"""
import os
import sys

from . import contract, linux
from .linux import CLONE_NEWNS, MS_BIND, MS_NODEV, MS_PRIVATE, MS_RDONLY, MS_REC, MS_REMOUNT

TYPE_CHECKING = False  # type checkers take it as true; typing costs milliseconds per start
if TYPE_CHECKING:
    from typing import Dict, Optional  # noqa: F401


def mount_pod(pod_dir: str) -> dict:
    """Mount stage1's and every app's root as mounts.json (written by prepare) says."""
    from . import jsonlite  # the json package imports re: not on the start path

    with open(os.path.join(pod_dir, contract.MOUNTS), "rb") as f:
        plan = jsonlite.loads(f.read())
    for m in plan["mounts"]:
        target = os.path.join(pod_dir, m["target"])
        flags = MS_NODEV
        if "lower" in m:
            if m.get("readonly"):
                flags |= MS_RDONLY
            data = "lowerdir=%s,upperdir=%s,workdir=%s" % (
                m["lower"], os.path.join(pod_dir, m["upper"]), os.path.join(pod_dir, m["work"]))
            linux.mount("overlay", target, "overlay", flags, data)
        elif m.get("bind"):
            src = os.path.join(pod_dir, m["bind"])
            linux.mount(src, target, None, MS_BIND | MS_REC)
            if m.get("readonly"):
                linux.mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | flags)
    return plan


def _propagated_sources(pod_dir: str) -> list:
    """Clones of the host volumes whose mounts ask for slave (or shared) propagation, taken
    before the rprivate below cuts them from the host's peer group (stage1/volumes.py).
    mounts.json is read twice only for such pods: one substring test otherwise."""
    with open(os.path.join(pod_dir, contract.MOUNTS), "rb") as f:
        raw = f.read()
    if b'"propagation"' not in raw:
        return []
    from . import jsonlite, volumes

    return volumes.clone_sources(jsonlite.loads(raw))


def _is_default_launcher(path: str) -> bool:
    """Is the file at path the default stage1's launcher for init (same bytes)?"""
    want = contract.LAUNCHERS["init"].encode("utf-8")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return os.read(fd, len(want) + 1) == want
    finally:
        os.close(fd)


def _same_package_or_none() -> bool:
    """The top-level `stage1` package a launcher would import: not yet imported (stage0's
    foreground run, where this code is module_utils.stage1), or this very package (the
    keeper, which runs from the pod's own stage1 tree)."""
    mod = sys.modules.get("stage1")
    return mod is None or __name__ == "stage1.launch"


def _as_fresh_interpreter(env: dict, keep: list) -> None:
    """What exec would give init: these fds only, fresh signal state, this environment."""
    import gc
    import _signal  # type: ignore[import-not-found]  # signal's C module (no stub): `signal` imports enum

    # Nothing inherited from the caller may be finalized here (a finalizer could close an
    # fd number that is reused by then): freeze every existing object out of the GC.
    gc.freeze()
    linux.close_fds(keep=keep)
    linux.reset_signals()
    # What CPython sets up at start: SIGPIPE and SIGXFSZ ignored, SIGINT raises.
    _signal.signal(_signal.SIGPIPE, _signal.SIG_IGN)
    if hasattr(_signal, "SIGXFSZ"):
        _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    os.environ.clear()
    os.environ.update(env)


def _app_fds(env: dict) -> list:
    out = []
    for item in (env.get(contract.ENV_APP_FDS) or "").split(","):
        fd = item.rpartition(":")[2]
        if fd.isdigit():
            out.append(int(fd))
    lifeline = env.get(contract.ENV_KEEPER_FD) or ""
    if lifeline.isdigit():
        out.append(int(lifeline))
    for item in (env.get(contract.ENV_KEEPS) or "").split(","):  # the pipes PID 1 may keep
        fd = item.rpartition(":")[2]
        if fd.isdigit():
            out.append(int(fd))
    return out


def _secrets(pod_dir: str, flags: list, secrets_fd: "Optional[int]") -> None:
    """The pod's secrets from stage0's memfd (ours, or the keeper's: ROCKET_SECRETS_FD) into
    their tmpfs in this mount namespace (stage1/secrets.py); the fd is closed here."""
    if secrets_fd is None:
        text = os.environ.get(contract.ENV_SECRETS_FD) or ""
        secrets_fd = int(text) if text.isdigit() else None
    if secrets_fd is None:
        return
    from . import secrets

    base = 0
    for flag in flags:
        if flag.startswith("--private-users="):
            base = int(flag.split("=", 1)[1])
    try:
        secrets.unpack(secrets_fd, pod_dir, base)
    finally:
        os.close(secrets_fd)


def exec_stage1(pod_dir: str, uuid: str, flags: list, lock_fd: int, env_extra: "Optional[Dict[str, str]]" = None,
                in_process: bool = True, pid1_fd: "Optional[int]" = None, secrets_fd: "Optional[int]" = None) -> None:
    """In a fresh child: unshare the mount namespace, mount, run stage1's run entrypoint.

    in_process: the caller allows running the default init in this process (it must be
    single-threaded). pid1_fd (the keeper's): when init runs in this process, it writes
    the host PID of the pod's PID 1 there and this process exits at once, the keeper (a
    subreaper) becoming PID 1's parent; on the exec path it is closed unused.
    secrets_fd: the memfd of the pod's secrets (stage0's foreground run; the keeper's comes
    in ROCKET_SECRETS_FD).
    """
    try:
        linux.unshare(CLONE_NEWNS)
        held = _propagated_sources(pod_dir)  # cloned while still peers of the host's mounts
        # Private before anything else: under systemd / is shared and our mounts would leak.
        linux.mount(None, "/", None, MS_REC | MS_PRIVATE)
        plan = mount_pod(pod_dir)
        if held:
            from . import volumes

            volumes.attach_sources(pod_dir, held)
        _secrets(pod_dir, flags, secrets_fd)
        linux.crash_point("launch.after_mount")
        os.chdir(pod_dir)
        env = {"PATH": contract.STAGE1_PATH, contract.ENV_LOCK_FD: str(lock_fd)}
        env.update(env_extra or {})
        os.set_inheritable(lock_fd, True)
        run = plan.get("entrypoints", {}).get("run", contract.ENTRYPOINTS["run"])
        init = os.path.join(pod_dir, contract.STAGE1_ROOTFS, run.lstrip("/"))
        argv = list(flags) + [uuid]
        if in_process and _same_package_or_none() and _is_default_launcher(init):
            keep = [lock_fd] + _app_fds(env) + ([pid1_fd] if pid1_fd is not None else [])
            _as_fresh_interpreter(env, keep)
            sys.argv = [init] + argv
            # What the launcher does:
            sys.dont_write_bytecode = True  # the stage1 tree is read-only
            sys.path.insert(0, os.path.dirname(os.path.abspath(init)))
            # The pod's own stage1 (on sys.path from here on; mypy cannot see it).
            from stage1 import init as program  # type: ignore[import-not-found]  # see above

            try:
                if pid1_fd is not None:
                    code = program.main(argv, pid1_fd=pid1_fd)
                else:
                    code = program.main(argv)
            except SystemExit as e:  # what the launcher's sys.exit would have done
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            try:
                sys.stderr.flush()
            finally:
                os._exit(code if isinstance(code, int) else contract.EXIT_STAGE1)
        if pid1_fd is not None:
            os.close(pid1_fd)
        os.execve(sys.executable, [sys.executable, "-I", "-S", "-B", init] + argv, env)
    except BaseException as e:  # a forked child leaves only through exec or _exit
        try:
            os.write(2, ("stage1 launch: %s\n" % (e,)).encode("utf-8", "replace"))
        finally:
            os._exit(contract.EXIT_STAGE1)
