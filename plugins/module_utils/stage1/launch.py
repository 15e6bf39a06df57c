"""stage0's last step before stage1: a private mount namespace, the pod's mounts, exec init.

Shared by stage0's foreground run (imported from module_utils) and by the keeper (run
from the stage1 tree), so a pod is started one way whoever starts it. It runs in a fresh
child process and leaves only by exec or os._exit.
"""
import json
import os
import sys

from . import linux

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 1 << 18
CLONE_NEWNS = 0x00020000


def mount_pod(pod_dir: str) -> dict:
    """Mount stage1's and every app's root as mounts.json (written by prepare) says."""
    with open(os.path.join(pod_dir, "mounts.json"), "rb") as f:
        plan = json.loads(f.read())
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


def exec_stage1(pod_dir: str, uuid: str, flags: list, lock_fd: int, env_extra: dict = None) -> None:
    """In a fresh child: unshare the mount namespace, mount, exec stage1's run entrypoint."""
    try:
        linux.unshare(CLONE_NEWNS)
        # Private before anything else: under systemd / is shared and our mounts would leak.
        linux.mount(None, "/", None, MS_REC | MS_PRIVATE)
        plan = mount_pod(pod_dir)
        os.chdir(pod_dir)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "ROCKET_LOCK_FD": str(lock_fd)}
        env.update(env_extra or {})
        os.set_inheritable(lock_fd, True)
        run = plan.get("entrypoints", {}).get("run", "/init")
        init = os.path.join(pod_dir, "stage1", "rootfs", run.lstrip("/"))
        os.execve(sys.executable, [sys.executable, "-I", "-S", "-B", init] + list(flags) + [uuid], env)
    except BaseException as e:  # a forked child leaves only through exec or _exit
        try:
            os.write(2, ("stage1 launch: %s\n" % (e,)).encode("utf-8", "replace"))
        finally:
            os._exit(254)
