"""Keeping a pod: its pipes into its logs while it runs, then its exit record and the
metadata service's goodbye.

The keeper does this for a pod it may restart or probe; a pod that nothing restarts and
nothing probes is kept by its own PID 1 (Keeping), which then execs a lean interpreter
importing this module and not the keeper's (docs/decisions/keeper.md).
"""
import os
import select
import time

from . import contract
from . import jsonlite  # the json package imports re: not on the start path
from . import logsink

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Mapping  # noqa: F401


class Rules:
    """The restart rules of stage0/restart.py, as the keeper's flags carry them."""

    def __init__(self):
        self.policy = "no"
        self.retries = 0  # on-failure: at most this many restarts (0: no cap)
        self.delay = 1.0  # the first backoff, doubling up to max_delay
        self.max_delay = 60.0
        self.restarts = 0  # restarts so far: a keeper started again goes on counting

    def parse(self, arg):
        name, sep, value = arg.partition("=")
        if not sep:
            return False
        if name == "--restart":
            self.policy = value
        elif name == "--restart-retries":
            self.retries = int(value)
        elif name == "--restart-delay":
            self.delay = float(value)
        elif name == "--restart-max-delay":
            self.max_delay = float(value)
        elif name == "--restarts":
            self.restarts = int(value)
        else:
            return False
        return True

    def flags(self, restarts):
        """The flags parse() reads back (PID 1 records the exit with them: Keeping)."""
        return ["--restart=%s" % self.policy, "--restart-retries=%d" % self.retries,
                "--restart-delay=%r" % self.delay, "--restart-max-delay=%r" % self.max_delay,
                "--restarts=%d" % restarts]

    def again(self, status, restarts):
        """Whether the pod runs again after a run that exited with status (restarts so far)."""
        if self.policy in ("always", "unless-stopped"):
            return True
        if self.policy != "on-failure" or status == 0:
            return False
        return not self.retries or restarts < self.retries

    def backoff(self, last, lasted):
        """The wait before the next run: delay, doubled after each quick exit up to max_delay;
        a run that lasted 10 s starts over (docker's rule)."""
        if not last or lasted > 10:
            return self.delay
        return min(max(last * 2, self.delay), self.max_delay)


class Keeping:
    """What PID 1 does in place of a keeper (restart policy no, no healthcheck): the apps'
    and stage1's pipes into their logs, then the pod's exit record and the metadata
    service's goodbye. Built from the environment the keeper gave (contract.ENV_KEEPS)."""

    def __init__(self, uuid: str, env: "Mapping[str, str]") -> None:
        self.uuid = uuid
        self.started = time.time()
        self.rules = Rules()
        logging = logsink.flags()
        for a in jsonlite.loads(env[contract.ENV_KEEPS_ARGS]):
            if a.partition("=")[0] in logging:
                logging[a.partition("=")[0]] = a.partition("=")[2]
            elif not self.rules.parse(a):
                raise ValueError("%s: unknown flag %s" % (contract.ENV_KEEPS_ARGS, a))
        self.logging = logging
        self.logs = {}  # type: dict
        self.stage1 = -1  # PID 1's own stderr: no EOF while it lives
        for item in env[contract.ENV_KEEPS].split(","):
            name, dummy_sep, fd = item.rpartition(":")
            self.logs[int(fd)] = logsink.open_log(name, logging, uuid)
            if name == "stage1":
                self.stage1 = int(fd)

    def handover(self) -> dict:
        """What the lean PID 1 (pid1.py) needs to go on: the pipes and their unfinished lines,
        the logging and restart flags (the log files are opened again, where they end)."""
        return {"started": self.started, "rules": self.rules.flags(self.rules.restarts), "logging": self.logging,
                "logs": [[fd, log.name, log.partial.hex()] for fd, log in self.logs.items()], "stage1": self.stage1}

    @classmethod
    def taken(cls, uuid: str, state: dict) -> "Keeping":
        """The Keeping that handover() described, in the lean PID 1."""
        self = cls.__new__(cls)
        self.uuid, self.started, self.logging, self.stage1 = uuid, state["started"], state["logging"], state["stage1"]
        self.rules = Rules()
        for a in state["rules"]:
            self.rules.parse(a)
        self.logs = {}
        for fd, name, partial in state["logs"]:
            log = self.logs[fd] = logsink.open_log(name, self.logging, uuid)
            log.partial = bytes.fromhex(partial)
        return self

    def forked(self, writers) -> None:
        """Every supervisor runs: PID 1's copies of the apps' write ends go, so that each
        pipe ends when its app does."""
        for w in writers:
            os.close(w)

    def fds(self) -> list:
        return list(self.logs)

    def running(self, apps: list) -> None:
        """Every app runs: the pod's CPU budget covers PID 1's log pump, as it did the keeper's."""
        from .cgroups import PodCgroups

        try:
            PodCgroups.of_pod(".", self.uuid).keeper_join(apps)
        except (OSError, ValueError, KeyError):
            pass  # what _join_pod_cpu tolerates

    def feed(self, fd: int) -> bool:
        """Data (or EOF) on one of our pipes; False when fd is none of ours."""
        log = self.logs.get(fd)
        if log is None:
            return False
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if data:
            log.feed(data)
        else:
            log.close()
            os.close(fd)
            del self.logs[fd]
        return True

    def finish(self, status: int, signalled: bool) -> None:
        """The pod has exited with status: the pipes' last output (2 s at most, as the
        keeper), the exit record (a SIGTERM to PID 1 without stage0's stop mark is a host's
        stop), the goodbye."""
        deadline = time.time() + 2
        while self.logs:
            wait = 0.0 if list(self.logs) == [self.stage1] else max(0.0, deadline - time.time())
            try:
                r = select.select(list(self.logs), [], [], wait)[0]
            except InterruptedError:
                continue
            if not r:
                break
            for fd in r:
                self.feed(fd)
        for fd, log in self.logs.items():
            log.close()
            os.close(fd)
        self.logs = {}
        stopped = os.path.exists(contract.STOPPING)
        # an app may SIGTERM its PID 1 too: only stage0's host shutdown leaves the mark
        host = signalled and os.path.exists(contract.HOST_STOPPING)
        record_exit(status, self.started, self.rules.restarts, self.rules, stopped, host)
        deregister(self.uuid)


def deregister(uuid: str) -> None:
    """The pod will not run again: tell the metadata service (when it uses one) to forget it
    before our exit frees the pod's lock. Best effort; gc deregisters too."""
    import socket

    try:
        with open(contract.METADATA, "rb") as f:
            path = jsonlite.loads(f.read())["socket"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(2.0)
    try:
        s.connect(path)
        s.sendall(jsonlite.dumps({"op": "deregister", "uuid": uuid}).encode() + b"\n")
        s.recv(4096)
    except OSError:
        pass
    finally:
        s.close()


def record_exit(status, started, restarts, rules, stopped, signalled=False) -> None:
    """exit: the last run's status; restarts counts the one about to happen; stopped_by_user
    is what a restore honours (unless-stopped, docs/stage1-contract.md); stopped_by_host: a
    SIGTERM to the keeper (a host shutdown) ended the run, which a boot restore undoes."""
    rec = {"exit_code": status, "started": started, "finished": time.time(), "restarts": restarts,
           "restart_policy": rules.policy, "restart_retries": rules.retries, "stopped_by_user": stopped,
           "stopped_by_host": bool(signalled and not stopped)}
    with open("exit.tmp", "w") as f:
        jsonlite.dump(rec, f)
        f.flush()
        os.fsync(f.fileno())
    os.rename("exit.tmp", contract.EXIT)
