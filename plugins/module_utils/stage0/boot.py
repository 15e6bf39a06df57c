"""The host's boot and shutdown for pods, with no playbook: what ``appc-rocket-pods.service``
runs (docs/reboots.md).

``restore`` starts a keeper again on every pod of a data directory whose desired state is
running (restart.resume: the restart policy, or ``boot: true``), with the same UUID,
volumes, addresses and data; exited pods stay exited. ``stop_all`` is the orderly half at a
poweroff: each running pod's keeper gets SIGTERM, which it forwards to the pod's PID 1 (each
app's stop signal, its stop timeout, post-stop handlers) and records as a stop by the host,
not the user's, so the next boot brings the pod back; a pod still running past its longest
stop timeout has its PID 1 killed, so nothing is left half-stopped for the next boot to read.

``main`` is the program: the runtime role installs this package with a ``__main__`` that
calls it (stage0 never imports ansible, so python3 alone runs it). Its lines go to the unit's
journal; a pod that fails to come back is said on stderr with the journal's error priority,
and the exit status stays 0, because a failed oneshot unit would have systemd kill the
keepers of the pods that did come back.
"""
import os
import signal
import sys
import time

from ..stage1 import contract
from .datadir import DataDir
from .errors import RocketError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Dict, List, Optional, TextIO  # noqa: F401

    from .pod import Pod  # noqa: F401

ERR = "<3>"  # systemd's SyslogLevelPrefix: this line is an error in the journal


def _names(dd: DataDir) -> "Dict[str, str]":
    from . import pod as podmod

    try:
        return podmod.pod_names(dd)
    except (OSError, ValueError):
        return {}


def restore(dd: DataDir, timeout: float = 60.0, out: "Optional[TextIO]" = None) -> "Dict[str, str]":
    """restart.resume_all, one line per pod it started again or failed to (``out``)."""
    from . import pod as podmod, restart

    done = {}
    names = _names(dd)
    for p in podmod.list_pods(dd):
        try:
            why = restart.resume(p, timeout)
        except RocketError as e:
            why = "failed: %s" % e
        if not why:
            continue
        done[p.uuid] = why
        if out is not None:
            failed = why.startswith("failed: ")
            out.write("%s%s pod %s (%s): %s\n" % (ERR if failed else "", "not restored" if failed else "restored",
                                                  p.uuid, names.get(p.uuid, "-"), why))
            out.flush()
    return done


def keeper_pid(pod: "Pod") -> "Optional[int]":
    """The PID of the pod's keeper: the process started in the pod's directory with the
    pod's UUID as its second argument (the keeper's command line, stage0/run.py), whoever
    started it (a module over SSH, an earlier restore), or the lean PID 1 of a pod without
    keeper (`.../pid1 <uuid> <fd> --keeps`, stage1/pid1.py); None when there is none.

    The cwd's text is not enough: a process in a pod's mount namespace reads as its path in
    there, so a pod could make the same path in its own root and dress a process up as
    another pod's keeper. The cwd must be the pod directory itself (device and inode), which
    no pod reaches."""
    want = os.path.realpath(pod.path)
    try:
        st = os.stat(want)
    except OSError:
        return None
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.readlink("/proc/%s/cwd" % entry) != want:
                continue
            cwd = os.stat("/proc/%s/cwd" % entry)
            if (cwd.st_dev, cwd.st_ino) != (st.st_dev, st.st_ino):
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        # a keeper-less pod's PID 1 once it runs lean (stage1/pid1.py) is the pod's keeper
        lean = (argv[4:5] and argv[4].endswith(b"/" + contract.LEAN_PID1.encode())
                and contract.LEAN_KEEPS_FLAG.encode() in argv[5:8])
        if pod.uuid.encode() in argv[:8] and (lean or any(a.endswith(b"keeper") for a in argv[:5])):
            return int(entry)
    return None


def _in_pod(pid: int, uuid: str) -> bool:
    """Guard against PID reuse before a SIGKILL: the process sits in the pod's cgroup."""
    try:
        with open("/proc/%d/cgroup" % pid) as f:
            return contract.in_pod_cgroup(f.read(), uuid)
    except OSError:
        return False


def stop_all(dd: DataDir, timeout: float = 10.0, out: "Optional[TextIO]" = None) -> "Dict[str, str]":
    """Stop every running pod for a host shutdown: SIGTERM to each keeper at once, then wait
    for all of them (each pod's longest stop timeout plus the grace); {uuid: how}."""
    from . import freezer, pod as podmod, run, stopping

    waiting = []  # (pod, PID 1, deadline)
    done = {}
    names = _names(dd)
    for p in podmod.list_pods(dd):
        if p.dir_state != "run" or p.state() != "running":
            continue
        pid1 = p.pid()
        keeper = keeper_pid(p)
        target = keeper if keeper is not None else pid1  # no keeper: PID 1 then, nothing restarts it
        if target is None:
            continue
        try:  # a keeper-less PID 1 tells this SIGTERM from an app's by the mark (a keeper ignores it)
            with open(p.file(contract.HOST_STOPPING), "w"):
                pass
        except OSError:
            pass
        freezer.thaw_for_stop(p)  # a paused pod's apps would hold the stop signal until the SIGKILL
        try:
            os.kill(target, signal.SIGTERM)
        except ProcessLookupError:
            pass
        waiting.append((p, pid1, time.monotonic() + stopping.longest(p, timeout) + stopping.GRACE))
    for p, pid1, deadline in waiting:
        how = "stopped"
        if not run.wait(p, max(0.0, deadline - time.monotonic())):
            how = "killed after its stop timeout"
            if pid1 is not None and _in_pod(pid1, p.uuid):
                try:
                    os.kill(pid1, signal.SIGKILL)  # the pod's PID 1: the kernel kills the whole pod
                except ProcessLookupError:
                    pass
            if not run.wait(p, 30):
                how = "failed: did not stop"
        done[p.uuid] = how
        if out is not None:
            err = ERR if how.startswith("failed") else ""
            out.write("%s%s pod %s (%s) for the shutdown\n" % (err, how, p.uuid, names.get(p.uuid, "-")))
            out.flush()
    return done


USAGE = "usage: appc-rocket-pods restore|stop [--data-dir DIR]... [--timeout SECONDS]\n"


def main(argv: "List[str]") -> int:
    """``restore`` or ``stop`` for each ``--data-dir`` (default /var/lib/rocket)."""
    if not argv or argv[0] not in ("restore", "stop"):
        sys.stderr.write(USAGE)
        return 2
    dirs = []  # type: List[Optional[str]]
    timeout = None
    args = list(argv[1:])
    while args:
        a = args.pop(0)
        if a in ("--data-dir", "--timeout") and args:
            v = args.pop(0)
        elif a.startswith(("--data-dir=", "--timeout=")):
            a, dummy_sep, v = a.partition("=")
        else:
            sys.stderr.write("%sunknown argument %r\n%s" % (ERR, a, USAGE))
            return 2
        if a == "--data-dir":
            dirs.append(v)
        else:
            try:
                timeout = float(v)
            except ValueError:
                sys.stderr.write("%s--timeout: %r is not a number of seconds\n" % (ERR, v))
                return 2
    t0 = time.monotonic()
    for d in dirs or [None]:
        dd = DataDir(d)
        if not os.path.isdir(dd.pods):
            sys.stdout.write("no pods in %s\n" % dd.path)
            continue
        try:
            if argv[0] == "restore":
                n = restore(dd, 60.0 if timeout is None else timeout, sys.stdout)
            else:
                n = stop_all(dd, 10.0 if timeout is None else timeout, sys.stdout)
        except (OSError, RocketError) as e:  # the data directory itself: say it, other directories go on
            sys.stderr.write("%s%s %s: %s\n" % (ERR, argv[0], dd.path, e))
            continue
        sys.stdout.write("%s %s: %d pod(s) in %.2fs\n" % ("restore" if argv[0] == "restore" else "stop",
                                                          dd.path, len(n), time.monotonic() - t0))
    sys.stdout.flush()
    return 0
