"""What stage0 and stage1 agree on (interface version 1), in one place, as rkt's
common/common.go was: exit statuses, environment variables, entrypoints and their
annotations, the launchers, the ready line, and the names in the pod directory.

docs/stage1-contract.md describes the contract; this file holds its names and numbers.
Both sides import it: stage0 as module_utils.stage1.contract, stage1's programs (inside a
pod, from the stage1 tree) as stage1.contract. So it imports nothing of the project and
only `os` of the standard library: every pod start imports it (no json, re or enum here).
"""
import os

INTERFACE_VERSION = "1"
IMAGE_NAME = "appc.rocket/stage1"

# -- exit statuses ------------------------------------------------------------------------
# stage1's own failures (init, enter, gc, the keeper and launch: bad arguments, a mount or
# namespace that failed, an app that could not be started, an enter whose pod went away)
# all exit with one status. An app may exit with any status 0-255, so no value tells
# "stage1 failed" from "the app said so" by itself; one fixed value, rkt's, is what callers
# test before they read stage1's words (stderr, status/<app>) for the cause. More values
# would only be more numbers to keep apart from the apps' own.
EXIT_STAGE1 = 254
# What enter's message says when what it was joining ended under it (the app's process, or
# the pod's PID 1): stage0 reports that as the app having exited, whatever /proc says by the
# time it looks (an exiting process is neither alive nor yet a zombie for a while: exited()).
ENTER_TARGET_EXITED = "has exited"
# ... and what it says of an app whose cgroup is frozen (stage0/freezer.py): it refuses, since
# the command would join the frozen cgroup and hang there until the pod is unpaused.
ENTER_TARGET_PAUSED = "paused"


def exited(pid: int) -> bool:
    """Has the process exited, or begun to? Both enters decide by this whether what they
    joined ended under them.

    Gone from /proc, or a zombie, or without namespaces: the kernel releases a task's
    namespaces early in its exit and makes it a zombie only after the deferred work, which
    for an app holding the last reference to its mount namespace is the unmount of its
    overlay root, a sync of the upper file system that can last as long as a disk flush."""
    try:
        with open("/proc/%d/stat" % pid, "rb") as f:
            stat = f.read(4096)
    except OSError:
        return True
    end = stat.rfind(b")")
    if stat[end + 2:end + 3] in (b"Z", b"X", b"x", b""):
        return True
    try:
        os.readlink("/proc/%d/ns/mnt" % pid)
    except FileNotFoundError:  # a live task always has its namespaces
        return True
    except OSError:  # not ours to look at (EACCES): no sign of an exit
        pass
    return False


# -- environment variables (stage0 or the keeper -> stage1's programs) --------------------
ENV_LOCK_FD = "ROCKET_LOCK_FD"            # fd of the pod directory's lock (flock), held for the pod's life
ENV_APP_FDS = "ROCKET_APP_FDS"            # "<app>:<fd>,…": the keeper's per-app output pipes
ENV_ENTER_ENV = "ROCKET_ENTER_ENV"        # NUL-separated K=V for enter (not argv: /proc/*/cmdline is public)
ENV_METADATA_URL = "ROCKET_METADATA_URL"  # base of the apps' AC_METADATA_URL (overrides metadata.json)
# PATH of stage1's programs (they look up nothing, but an exec'd stage1 may).
STAGE1_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# -- entrypoints ----------------------------------------------------------------------------
# A stage1 image names its entrypoints in annotations; the default one has a launcher file
# per program at the root of its rootfs.
ANNOTATION_PREFIX = "appc.rocket/stage1/"
INTERFACE_ANNOTATION = ANNOTATION_PREFIX + "interface-version"
ENTRYPOINTS = {"run": "/init", "enter": "/enter", "gc": "/gc", "keeper": "/keeper"}  # the default stage1's
# Optional: a gc that takes `--many` and reads pods from stdin (stage1/gc.py says how), so that
# removing N pods starts one process, not N; a stage1 without it gets `gc <uuid>` per pod.
ENTRYPOINTS["gc-many"] = "/gc"
ENTRYPOINT_ANNOTATIONS = {name: ANNOTATION_PREFIX + name for name in ENTRYPOINTS}
# A pod manifest annotation ("true") prepare writes for pod_run's privileged option: appc has
# no field for it (rkt kept its own extensions in annotations too). Stage1 reads only this.
PRIVILEGED_ANNOTATION = "appc.rocket/privileged"
# An image's or a pod manifest app's healthcheck (JSON: test, interval, timeout, start_period,
# retries in seconds, on_failure); the keeper probes the apps whose pod manifest entry has one.
HEALTHCHECK_ANNOTATION = "appc.rocket/healthcheck"
# named and tmpfs volumes, per-mount read_only and propagation (JSON; stage0/volumes.py)
VOLUMES_ANNOTATION = "appc.rocket/volumes"

_LAUNCHER = '''import os
import sys

sys.dont_write_bytecode = True  # the stage1 tree is read-only: never leave a __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from stage1 import %s as program  # noqa: E402

sys.exit(program.main(sys.argv[1:]))
'''

# The default stage1's launchers, by file name (= program module). stage0 and the keeper
# compare a pod's run entrypoint with LAUNCHERS["init"] byte for byte before they run init
# in their own process instead of exec'ing it (stage1/launch.py).
LAUNCHERS = {name: _LAUNCHER % name for name in ("init", "enter", "gc", "keeper")}
# Not an entrypoint: a detached pod's PID 1 execs it once every app runs (stage1/pid1.py), as
# `<tree>/pid1 <uuid> <state fd> [--keeps]`; --keeps: it keeps its pod (boot.keeper_pid finds it).
LEAN_PID1 = "pid1"
LEAN_KEEPS_FLAG = "--keeps"
LAUNCHERS[LEAN_PID1] = _LAUNCHER % LEAN_PID1

# -- the ready line -------------------------------------------------------------------------
# A process started detached (the keeper; stage0's metadata service, which writes
# `ready <pid> <port>`) says once on its --ready-fd whether it started, as one line, then
# closes the fd: `<word> <fields…>\n`. READY_FAILED is the same word for every such process.
READY_FLAG = "--ready-fd="
READY_RUNNING = "running"   # the keeper: `running <host PID of the pod's PID 1>` once `pid` exists
READY_FAILED = "failed"     # the keeper: `failed <exit status> <why>`; the metadata service: `failed <why>`


def in_pod_cgroup(proc_cgroup: str, uuid: str) -> bool:
    """Whether a process's /proc/<pid>/cgroup puts it in the pod's cgroups (<parent>/<uuid>/...),
    whatever the cgroup parent: no parent has a UUID for a component (cgroups.check_parent)."""
    needle = "/%s/" % uuid
    return any(needle in line.split(":", 2)[-1] + "/" for line in proc_cgroup.splitlines())


def default_hostname(uuid: str) -> str:
    """The host name of a pod run without --hostname (rkt's form): stage1 sets it, pod_info says it."""
    return "rkt-" + uuid.replace("-", "")[:8]


def running_line(pid: str) -> str:
    return "%s %s\n" % (READY_RUNNING, pid)


def failed_line(status: int, why: str) -> str:
    return "%s %d %s\n" % (READY_FAILED, status, why)


# -- the pod directory (the cwd of every entrypoint) ---------------------------------------
# Relative names; docs/stage1-contract.md says who writes each and what it holds.
# stage0/metadata_service.py runs alone from a copy, without this package: it spells
# POD_MANIFEST, METADATA and app_file(…, "manifest") itself.
POD_MANIFEST = "pod"                     # stage0: the appc PodManifest
MOUNTS = "mounts.json"                   # stage0 (prepare): the pod's mounts and the stage1 entrypoints
SPEC = "spec.json"                       # stage0: the pod as it was asked for (converge, pod_info)
NET = "net.json"                         # stage0: resolved private networks, addresses, ports, DNS
NET_INFO = "net-info.json"               # stage1: the pod's interfaces, one object per network
METADATA = "metadata.json"               # stage0: the metadata service's port, token, key, socket
PID = "pid"                              # stage1: host PID of the pod's PID 1, once every app runs
EXIT = "exit"                            # the keeper: the pod's exit status after each run
STOPPING = "stopping"                    # stage0: the stop was asked for, the keeper restarts nothing
CGROUP_PARENT = "cgroup-parent"          # stage1: the pod's cgroup parent when not the default (cgroups.py)
LOGS = "logs"                            # the keeper: logs/<app>.log, logs/stage1.log
STATUS = "status"                        # stage1: status/<app>
APPS = "apps"                            # apps/<app>/{manifest,pid,isolation.json}
STAGE1_ROOTFS = os.path.join("stage1", "rootfs")
STAGE2 = os.path.join(STAGE1_ROOTFS, "opt", "stage2")        # stage2/<app>/{rootfs,manifest}
HEALTH = "health.json"                   # the keeper: each probed app's health (status, streak, last probe)
IGNORED_ISOLATORS = os.path.join("stage1", "ignored-isolators")  # stage1: what it does not enforce


def app_file(app: str, name: str) -> str:
    """apps/<app>/<name>: "manifest" (stage0), "pid" and "isolation.json" (stage1)."""
    return os.path.join(APPS, app, name)


def app_status(app: str) -> str:
    return os.path.join(STATUS, app)


def log_file(name: str) -> str:
    """logs/<name>.log: an app's output, or stage1's own (name "stage1")."""
    return os.path.join(LOGS, name + ".log")


# -- stop signal and timeout (per app) ----------------------------------------------------
# appc has no field for them: pod manifest app annotations, as rkt kept its extensions.
# Written by prepare (the stop_signal / stop_timeout options, else the image's OCI
# StopSignal); read by PID 1 when the pod is stopped. The signal is the host's number.
STOP_SIGNAL_ANNOTATION = "rocket/stop-signal"
STOP_TIMEOUT_ANNOTATION = "rocket/stop-timeout"
OCI_STOP_SIGNAL_ANNOTATION = "appc.rocket/oci/stop-signal"  # stage0's OCI import (image manifest)
STOP_RECORD = "stop.json"  # PID 1: apps/<app>/stop.json, the signal it sent and whether it had to kill
STOP_TIMEOUT_KEY = "timeout="  # the `stopping` mark's line: the stop timeout of apps without their own
DEFAULT_STOP_TIMEOUT = 10.0  # PID 1's, for a stop without the mark (the keeper gone, a forwarded SIGTERM)
# The keeper's lifeline: the read end of a pipe only the keeper writes to. PID 1 sees EOF
# when the keeper is gone and stops the pod (nobody would take its logs or its exit), so
# that the runtime can start a keeper on it again (stage0/restart.py resume).
ENV_KEEPER_FD = "ROCKET_KEEPER_FD"
# A pod without a keeper once it runs (restart policy no, no healthcheck: keeping.Keeping):
# "<app>:<fd>,…,stage1:<fd>", the read ends of the output pipes PID 1 takes over; the
# keeper's logging and restart flags (a JSON list); the word after PID 1's PID on the
# keeper's pipe when PID 1 took them.
ENV_KEEPS = "ROCKET_KEEPS"
ENV_KEEPS_ARGS = "ROCKET_KEEPS_ARGS"
PID1_KEEPS = "keeps"
# -- devices and secrets (issue #16) ----------------------------------------------------------
# App annotations prepare writes (appc has no field for either; users may not set them):
# host devices passed through, one "<host path> <path in the app> <rwm subset>" per line;
# the app's secret names, comma-separated (their data never reaches the pod directory).
DEVICES_ANNOTATION = "appc.rocket/devices"
SECRETS_ANNOTATION = "appc.rocket/secrets"
# fd of a sealed memfd holding the pod's secrets (stage1/secrets.py's format), inherited by
# the keeper and by launch, which unpacks it into a tmpfs mounted only in the pod's mount
# namespace, at this directory of the pod (on disk it stays an empty directory).
ENV_SECRETS_FD = "ROCKET_SECRETS_FD"
SECRETS_DIR = "secrets"
# stage0's host shutdown (boot.stop_all), before its SIGTERM: a keeper-less PID 1 records
# stopped_by_host only with it, since an app of the pod may SIGTERM its PID 1 too.
HOST_STOPPING = "stopping-host"
