"""A real systemd-journald for tests on a host whose PID 1 is not systemd (this VM).

It runs in a private mount namespace (mounts propagate in from the host, none out) where
/run/systemd/journal and /run/log are fresh tmpfs and /etc/systemd/journald.conf is ours
(volatile storage up to 48 MiB of its 64 MiB tmpfs, no kernel log, no forwarding, no rate
limit). Inside that namespace
/run/systemd/journal/socket is journald's real socket: what runs there through ``run()``
or ``cmd()`` (a module, journalctl, and the keepers the modules start) finds the journal at
its usual path, while the host keeps none. A holder process keeps the namespace alive, so
journald can be stopped and started again under running pods.
"""
import os
import signal
import subprocess
import time

JOURNALD = next((p for p in ("/lib/systemd/systemd-journald", "/usr/lib/systemd/systemd-journald")
                 if os.path.exists(p)), None)
CONF = """[Journal]
Storage=volatile
ReadKMsg=no
ForwardToSyslog=no
ForwardToKMsg=no
ForwardToConsole=no
ForwardToWall=no
RateLimitIntervalSec=0
RuntimeMaxUse=48M
"""
# mkdir creates the mount points on the host's /run (an empty directory): removed at stop.
SETUP = """set -e
mount --make-rslave /
for d in /run/systemd/journal /run/log; do mkdir -p $d; mount -t tmpfs -o mode=0755,size=64m tmpfs $d; done
mkdir -p /run/log/journal
mount --bind "$1" /etc/systemd/journald.conf
echo ready
exec sleep infinity
"""


class PrivateJournald:
    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.holder = None
        self.journald = None
        self.created = [d for d in ("/run/systemd/journal", "/run/log") if not os.path.exists(d)]

    def start(self):
        conf = os.path.join(self.workdir, "journald.conf")
        with open(conf, "w") as f:
            f.write(CONF)
        if not os.path.exists("/etc/systemd/journald.conf"):
            raise RuntimeError("no /etc/systemd/journald.conf to bind ours over")
        self.holder = subprocess.Popen(["unshare", "-m", "--propagation", "slave", "sh", "-c", SETUP, "sh", conf],
                                       stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        if self.holder.stdout.readline().strip() != b"ready":
            self.stop()
            raise RuntimeError("the private mount namespace for journald could not be set up")
        self.start_journald()
        return self

    def cmd(self, argv, cwd=None):
        """argv run inside the namespace, in our working directory (entering a mount
        namespace moves to its root otherwise)."""
        return ["nsenter", "--mount=/proc/%d/ns/mnt" % self.holder.pid, "--wd=" + (cwd or os.getcwd()), "--"] + list(argv)

    def run(self, argv, cwd=None):
        return subprocess.run(self.cmd(argv, cwd), capture_output=True, text=True, timeout=60, check=False)

    @property
    def socket(self):
        """The socket as the namespace sees it (through the holder's root)."""
        return "/proc/%d/root/run/systemd/journal/socket" % self.holder.pid

    def start_journald(self):
        self.journald = subprocess.Popen(self.cmd([JOURNALD]), stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while self.run(["journalctl", "--no-pager", "-q", "-n", "0"]).returncode != 0 or not os.path.exists(self.socket):
            if time.monotonic() > deadline or self.journald.poll() is not None:
                raise RuntimeError("systemd-journald did not start")
            time.sleep(0.05)

    def stop_journald(self):
        """SIGTERM, as systemctl stop does; the socket file stays (nobody listens on it)."""
        if self.journald is not None and self.journald.poll() is None:
            self.journald.send_signal(signal.SIGTERM)
            self.journald.wait(10)
        self.journald = None

    def entries(self, *matches):
        """The journal's entries (journalctl -o json) that match, as dicts."""
        import json

        r = self.run(["journalctl", "--no-pager", "-q", "-o", "json"] + list(matches))
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def stop(self):
        self.stop_journald()
        if self.holder is not None:
            self.holder.kill()
            self.holder.wait(10)
            self.holder.stdout.close()
            self.holder = None
        for d in self.created:
            try:
                os.rmdir(d)
            except OSError:
                pass
