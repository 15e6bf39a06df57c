"""health: the keeper's healthcheck probes, docker's semantics, with enter's confinement.

The pod manifest's apps that carry the `appc.rocket/healthcheck` annotation are probed
every `interval`: a fork of the keeper runs stage1's enter on the probe's argv (the app's
namespaces, cgroups, root, user, capabilities, no-new-privileges, seccomp and environment:
never more than the app), with `--timeout`, which kills the probe's process group when
it overruns. The probe's stdout and stderr come back on one pipe (the first OUTPUT_MAX
bytes are kept), its exit status on another: the keeper's reaper may take the process,
the status still arrives.

Status: `starting` until a probe passes (a failure within start_period does not count
while starting), `healthy` after a pass, `unhealthy` after `retries` failures in a row.
With on_failure=restart, an unhealthy app stops the pod (SIGTERM, then SIGKILL after
STOP_GRACE) and the keeper starts it again (its backoff applies), whatever its restart
policy: an appc pod's apps run as one unit, as rkt ran them. Each change is written to
health.json (atomically), which pod_info reads.

Nothing here runs, or is imported, for a pod without a check.
"""
import os
import time
# signal's C module: `signal` adds enums (enter, imported for the probes, brings it anyway).
import _signal  # type: ignore[import-not-found]  # no stub for the C module; its names are signal's

from . import contract, jsonlite, linux

OUTPUT_MAX = 4096     # bytes of a probe's output kept (docker keeps as many)
GRACE = 5.0           # seconds past its timeout before a probe's enter itself is killed
STOP_GRACE = 10.0     # seconds between SIGTERM and SIGKILL when an unhealthy app restarts the pod


def load(pod_dir):
    """{app: check} of the pod manifest's apps that carry a check."""
    with open(os.path.join(pod_dir, contract.POD_MANIFEST), "rb") as f:
        manifest = jsonlite.loads(f.read())
    out = {}
    for app in manifest.get("apps") or []:
        for item in app.get("annotations") or []:
            if item.get("name") == contract.HEALTHCHECK_ANNOTATION:
                out[app["name"]] = jsonlite.loads(item["value"])
    return out


class Probe:
    """One running probe: the forked enter's pid, its output and status pipes."""

    def __init__(self, pid, out_r, st_r, timeout):
        self.pid = pid
        self.out_r = out_r
        self.st_r = st_r
        self.output = b""
        self.status = b""
        self.started = time.time()
        self.deadline = time.monotonic() + timeout + GRACE

    def fds(self):
        return [fd for fd in (self.out_r, self.st_r) if fd >= 0]


class Check:
    """One app's check and its state."""

    def __init__(self, name, conf, now, previous):
        self.name = name
        self.test = list(conf["test"])
        self.interval = float(conf["interval"])
        self.timeout = float(conf["timeout"])
        self.start_period = float(conf["start_period"])
        self.retries = int(conf["retries"])
        self.on_failure = conf.get("on_failure", "none")
        self.conf = conf
        self.status = "starting"
        self.streak = 0
        self.last = None
        self.restarts = int((previous or {}).get("restarts") or 0)
        self.since = now
        self.due = now + self.interval
        self.probe = None

    def record(self):
        return {"status": self.status, "failing_streak": self.streak, "last": self.last,
                "restarts": self.restarts, "check": self.conf}

    def done(self, code, output, started):
        """A probe's outcome, by docker's rules; True when the app just became unhealthy."""
        self.last = {"exit_code": code, "output": output, "started": started, "ended": time.time()}
        if code == 0:
            self.status, self.streak = "healthy", 0
            return False
        if self.status == "starting" and time.monotonic() - self.since < self.start_period:
            return False  # still starting: a failure does not count yet
        self.streak += 1
        if self.streak >= self.retries and self.status != "unhealthy":
            self.status = "unhealthy"
            return True
        return False


class Monitor:
    """The keeper's side: fds to watch, a timeout for its select, and a step per wake-up."""

    def __init__(self, pod_dir, target, checks, uuid):
        self.pod_dir = pod_dir
        self.uuid = uuid
        self.cgroups = None  # PodCgroups, once a probe is due
        self.target = target  # the keeper's: "pid" is the pod's PID 1 (or stage1's process)
        now = time.monotonic()
        previous = _read(pod_dir)
        self.checks = [Check(name, conf, now, previous.get(name)) for name, conf in sorted(checks.items())]
        self.kill_at = None  # the restart's SIGKILL time, once it began
        with open(os.path.join(pod_dir, contract.PID)) as f:
            self.pid1 = int(f.read().strip())
        if self.checks:
            self.write()

    def fds(self):
        out = []
        for c in self.checks:
            if c.probe is not None:
                out += c.probe.fds()
        return out

    def timeout(self, default):
        """select's timeout: the default, or less when a probe is due sooner."""
        if not self.checks:
            return default
        now = time.monotonic()
        if self.kill_at is not None:  # restarting: no more probes
            return min(default, max(0.0, self.kill_at - now))
        soonest = default
        for c in self.checks:
            when = c.probe.deadline if c.probe is not None else c.due
            soonest = min(soonest, max(0.0, when - now))
        return soonest

    def feed(self, fd):
        """Read a probe's pipe that select found readable; False when the fd is not ours."""
        for c in self.checks:
            p = c.probe
            if p is None or fd not in (p.out_r, p.st_r):
                continue
            try:
                data = os.read(fd, 65536)
            except OSError:
                data = b""
            if fd == p.out_r:
                if len(p.output) < OUTPUT_MAX + 1:
                    p.output += data[:OUTPUT_MAX + 1 - len(p.output)]
            else:
                p.status += data[:64]
            if not data:
                os.close(fd)
                if fd == p.out_r:
                    p.out_r = -1
                else:
                    p.st_r = -1
            return True
        return False

    def step(self):
        """Start due probes, finish ended ones, kill overrunning ones, carry out a restart."""
        if not self.checks:
            return
        now = time.monotonic()
        if self.kill_at is not None:
            if now >= self.kill_at:
                self._signal(_signal.SIGKILL)
                self.kill_at = now + STOP_GRACE
            return
        changed = False
        for c in self.checks:
            p = c.probe
            if p is not None and p.st_r < 0:
                changed = True
                self._finish(c, p)
            elif p is not None and now >= p.deadline:
                try:
                    os.kill(p.pid, _signal.SIGKILL)  # still holds its status pipe: not reaped yet
                except OSError:
                    pass
                p.deadline = now + GRACE
            elif p is None and now >= c.due:
                c.due = now + c.interval
                if self._paused(c):
                    continue
                try:
                    c.probe = self._start(c)
                except OSError as e:  # no fd or process to spare: a failed probe, not a dead keeper
                    changed = True
                    self._outcome(c, None, "cannot start the probe: %s" % (e.strerror or e), time.time())
        if changed:
            self.write()

    def _finish(self, c, p):
        if p.out_r >= 0:  # what is in the pipe now; what the probe's children still hold is not waited for
            os.set_blocking(p.out_r, False)
            while len(p.output) <= OUTPUT_MAX:
                try:
                    data = os.read(p.out_r, 65536)
                except OSError:
                    break
                if not data:
                    break
                p.output += data[:OUTPUT_MAX + 1 - len(p.output)]
            os.close(p.out_r)
            p.out_r = -1
        c.probe = None
        text = p.status.decode("ascii", "replace").strip()
        code = int(text) if text.lstrip("-").isdigit() else None
        output = p.output[:OUTPUT_MAX].decode("utf-8", "replace")
        if len(p.output) > OUTPUT_MAX:
            output += "\n(output cut at %d bytes)" % OUTPUT_MAX
        if code is None:
            output += "\n(the probe was killed before it reported a status)"
        if self._paused(c):
            return  # paused under the probe: it froze with the app, and its end says nothing of its health
        self._outcome(c, code, output, p.started)

    def _paused(self, c):
        """A paused app (stage0/freezer.py) is not probed: the probe would join its frozen
        cgroup, and the kill at its timeout would count as a failure, docker's pause none."""
        if self.cgroups is None:
            from .cgroups import PodCgroups

            self.cgroups = PodCgroups.of_pod(self.pod_dir, self.uuid)
        return self.cgroups.frozen(c.name)

    def _outcome(self, c, code, output, started):
        if c.done(code, output, started) and c.on_failure == "restart":
            c.restarts += 1
            self.target["unhealthy"] = c.name
            self._signal(_signal.SIGTERM)
            self.kill_at = time.monotonic() + STOP_GRACE

    def _signal(self, signum):
        if self.target.get("pid"):
            try:
                os.kill(self.target["pid"], signum)
            except OSError:
                pass

    def _start(self, c):
        out_r, out_w = os.pipe()
        try:
            st_r, st_w = os.pipe()
        except OSError:
            os.close(out_r)
            os.close(out_w)
            raise
        try:
            pid = os.fork()
        except OSError:
            for fd in (out_r, out_w, st_r, st_w):
                os.close(fd)
            raise
        if pid == 0:
            code = contract.EXIT_STAGE1
            try:
                linux.reset_signals()
                null = os.open("/dev/null", os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out_w, 1)
                os.dup2(out_w, 2)
                os.dup2(st_w, 3)
                linux.close_fds(keep=(3,))  # the pod's lock and the log pipes stay with the keeper
                from . import enter  # in the probe: the keeper's heap stays as small as without checks

                code = enter.main(["--pid=%d" % self.pid1, "--app=%s" % c.name,
                                   "--timeout=%r" % c.timeout, "--"] + c.test)
            finally:
                try:
                    import sys

                    sys.stderr.flush()
                    os.write(3, b"%d\n" % code)
                finally:
                    os._exit(0)
        os.close(out_w)
        os.close(st_w)
        return Probe(pid, out_r, st_r, c.timeout)

    def write(self):
        doc = {c.name: c.record() for c in self.checks}
        tmp = contract.HEALTH + ".tmp"
        try:
            with open(tmp, "w") as f:
                jsonlite.dump(doc, f)
            os.rename(tmp, contract.HEALTH)
        except OSError:
            pass  # a full disk: the record is late, the probing (and the pod) go on

    def close(self):
        """The pod's run ended: no probe outlives it."""
        for c in self.checks:
            p = c.probe
            if p is None:
                continue
            if p.st_r >= 0:
                try:
                    os.kill(p.pid, _signal.SIGKILL)
                except OSError:
                    pass
            for fd in p.fds():
                os.close(fd)
            c.probe = None


class Idle:
    """A pod without checks (or before it runs): the same calls, nothing done."""

    def fds(self):
        return []

    def timeout(self, default):
        return default

    def feed(self, fd):
        return False

    def step(self):
        pass

    def close(self):
        pass


IDLE = Idle()


def monitor(pod_dir, target, uuid):
    """The keeper's monitor for a pod that now runs (IDLE when no app has a check)."""
    try:
        checks = load(pod_dir)
        return Monitor(pod_dir, target, checks, uuid) if checks else IDLE
    except (OSError, ValueError, KeyError, TypeError):
        return IDLE  # a pod gone already: nothing to probe


def _read(pod_dir):
    try:
        with open(os.path.join(pod_dir, contract.HEALTH), "rb") as f:
            doc = jsonlite.loads(f.read())
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}
