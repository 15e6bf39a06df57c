"""Real gpg keys and signatures for tests, without leaking gpg-agent processes.

Secret-key operations need gpg-agent, which daemonizes (and would outlive the test as an
orphan). So every batch of gpg commands runs in a helper process (this file run as a
script) that makes itself a child subreaper, runs the commands, stops the agent with
``gpgconf --kill all`` and reaps every descendant before it exits.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

GPG_BASE = ["--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]


def _helper(home, commands):
    import ctypes
    import signal

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1, 0, 0, 0)   # PR_SET_CHILD_SUBREAPER: orphaned agents become our children
    signal.alarm(120)
    env = dict(os.environ, GNUPGHOME=home, LC_ALL="C")
    rc = 0
    out = []
    try:
        for cmd in commands:
            p = subprocess.run(["gpg", "--homedir", home] + GPG_BASE + cmd, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                               check=False)
            out.append(p.stdout.decode("utf-8", "replace"))
            if p.returncode != 0:
                sys.stderr.write("gpg %s failed: %s\n" % (cmd, p.stderr.decode("utf-8", "replace")))
                rc = 1
                break
    finally:
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], env=env,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
        while True:
            try:
                os.waitpid(-1, 0)
            except ChildProcessError:
                break
    sys.stdout.write(json.dumps(out))
    return rc


def run(home, commands):
    """Run gpg commands (lists of arguments) in ``home``; returns their stdouts."""
    p = subprocess.run([sys.executable, os.path.abspath(__file__), home, json.dumps(commands)],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=180, check=False)
    if p.returncode != 0:
        raise AssertionError("gpg batch failed: %s" % p.stderr.decode("utf-8", "replace"))
    return json.loads(p.stdout.decode())


class Keys:
    """A temporary GNUPGHOME with ed25519 signing keys; ``close()`` removes it."""

    def __init__(self, names=("trusted", "other")):
        self.home = tempfile.mkdtemp(prefix="rocket-test-gpg-")
        os.chmod(self.home, 0o700)
        cmds = [["--quick-gen-key", "%s <%s@rocket.test>" % (n, n), "ed25519", "sign", "never"] for n in names]
        run(self.home, cmds)
        listing = run(self.home, [["--with-colons", "--list-keys"]])[0]
        self.fpr = {}
        uid_of = {}
        current = None
        for line in listing.splitlines():
            f = line.split(":")
            if f[0] == "pub":
                current = None
            elif f[0] == "fpr" and current is None:
                current = f[9]
            elif f[0] == "uid" and current:
                uid_of[f[9].split(" ")[0]] = current
        for n in names:
            self.fpr[n] = uid_of[n].lower()
        self.public = {}
        for n in names:
            path = os.path.join(self.home, "%s.pub.asc" % n)
            run(self.home, [["--armor", "--output", path, "--export", self.fpr[n]]])
            self.public[n] = path

    def sign(self, paths, key="trusted"):
        """Detached armoured signatures ``<path>.asc`` for each path (one batch)."""
        cmds = [["--yes", "--local-user", self.fpr[key], "--armor", "--detach-sign", "--output", p + ".asc", p]
                for p in paths]
        run(self.home, cmds)
        return [p + ".asc" for p in paths]

    def export_secret(self, key, path):
        run(self.home, [["--armor", "--output", path, "--export-secret-keys", self.fpr[key]]])
        return path

    def close(self):
        shutil.rmtree(self.home, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(_helper(sys.argv[1], json.loads(sys.argv[2])))
