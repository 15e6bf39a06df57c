"""Booted Debian test hosts: real systemd as PID 1 in systemd-nspawn, reached over SSH.

Each host boots a cached Debian root file system (tools/test-hosts.sh builds it, `make deps`
calls that) under an overlay whose upper layer is the host's own "disk" in the test's
temporary directory, so a reboot or a hard power-off keeps what the host wrote. The overlay
is mounted in a private mount namespace of the nspawn process (unshare -m): nothing of it is
visible to this machine, and it goes away with the last process of the host. /var/lib/rocket
is a bind mount of a plain directory, because the runtime inside makes overlay mounts of its
own and an overlay's upper directory cannot be on overlayfs.

Each host has its own network namespace (nspawn's private network), with one veth on a test
bridge (10.231.88.0/24) and the same address at every boot. nspawn runs in a cgroup of the host's own
(appc-rocket-booted/<name> in the named systemd and the unified hierarchies), so two hosts do
not share nspawn's "payload"/"supervisor" cgroups and the clean-up knows what to remove.

Use the `booted_host` fixture (a started Debian 12 cgroup-v2 host) or `booted_hosts` (a
factory: booted_hosts(release="11", cgroup="hybrid")) from tests/integration/conftest.py,
or BootedNet/BootedHost directly (see /work notes or the docstrings below).
"""
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from .ansible_run import BIN, env as ansible_env

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tools")
BRIDGE, GATEWAY, PREFIX = "rboot0", "10.231.88.1", "10.231.88."
CGROUP_NAME = "appc-rocket-booted"
CGROUP_ROOTS = ("/sys/fs/cgroup/systemd", "/sys/fs/cgroup/unified")
RELEASES = ("11", "12", "13")
# systemd-nspawn exits with 133 when the container's systemd asked for a reboot.
EXIT_REBOOT = 133
# The runtime role as a user runs it (its apt step included: the packages are baked into the
# tree, so it must find them all installed), then the pods role, then what pod_info says, saved
# on the host for the test to read (the test's own record: never counted as a change).
ROLES_PLAY = """
- hosts: booted
  gather_facts: false
  roles:
    - role: appc.rocket.runtime
    - role: appc.rocket.pods
  tasks:
    - name: Read the pods
      appc.rocket.pod_info: {}
      register: info
    - name: Keep what pod_info said
      ansible.builtin.copy:
        content: "{{ info | to_json }}"
        dest: /root/pod_info.json
        mode: "0600"
      changed_when: false
"""
SSH_OPTS = ["-o", "ControlMaster=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes", "-o", "ConnectTimeout=3"]
SSH_ARGS = " ".join(SSH_OPTS)


def rootfs(release):
    """The cached root file system of a release, or None when tools/test-hosts.sh has not built it."""
    p = subprocess.run([os.path.join(TOOLS, "test-hosts.sh"), "--path", str(release)],
                       capture_output=True, text=True, check=False)
    return p.stdout.strip() if p.returncode == 0 else None


def _sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _rmdir_tree(path):
    """Remove a cgroup directory and its children, deepest first (cgroups only go by rmdir)."""
    if not os.path.isdir(path):
        return True
    for dirpath, dirnames, dummy in os.walk(path, topdown=False):
        for d in dirnames:
            try:
                os.rmdir(os.path.join(dirpath, d))
            except OSError:
                pass
    try:
        os.rmdir(path)
    except OSError:
        return False
    return True


class BootedNet:
    """The test bridge the hosts sit on; made by the first host, deleted by down()."""

    def __init__(self):
        self.up_ = False
        self.used = set()

    def up(self):
        if not self.up_:
            _sh("ip", "link", "add", BRIDGE, "type", "bridge")
            self.up_ = True
            _sh("ip", "addr", "add", GATEWAY + "/24", "dev", BRIDGE)
            _sh("ip", "link", "set", BRIDGE, "up")

    def address(self):
        for i in range(11, 250):
            if i not in self.used:
                self.used.add(i)
                return i
        raise AssertionError("no address left on the test bridge")

    def down(self):
        if self.up_:
            subprocess.run(["ip", "link", "delete", BRIDGE], check=False, stderr=subprocess.DEVNULL)
            self.up_ = False


class BootedHost:
    """One booted Debian host. start() boots it and waits for SSH; stop() powers it off and
    removes everything made for it (veth, cgroups, nspawn run dirs) except its disk in `tmp`.

    Attributes: name, release, cgroup ("v2" or "hybrid"), address, key (the SSH private key),
    upper (the host's writable layer: its files as this machine sees them, e.g.
    upper + "/etc/..."), rocket_dir (this machine's path of the host's /var/lib/rocket),
    boots (number of boots), boot_seconds (seconds from nspawn's start to SSH ready, per boot),
    exits (nspawn's exit codes, per boot that ended).
    """

    def __init__(self, tmp, net, release="12", cgroup="v2", name=None):
        if str(release) not in RELEASES:
            raise ValueError("release %r: one of %s" % (release, RELEASES))
        if cgroup not in ("v2", "hybrid"):
            raise ValueError("cgroup %r: v2 or hybrid" % cgroup)
        self.release, self.cgroup, self.net = str(release), cgroup, net
        self.lower = rootfs(self.release)
        if self.lower is None:
            raise FileNotFoundError("Debian %s test host not built: run tools/test-hosts.sh %s (make deps)"
                                    % (self.release, self.release))
        idx = net.address()
        self.idx = idx
        self.name = name or "deb%s-%d" % (self.release, idx)
        self.address = PREFIX + str(idx)
        self.veth = ("vb-" + self.name)[:15]  # nspawn's name of the host side of its veth
        self.dir = os.path.join(str(tmp), "booted-" + self.name)
        self.upper = os.path.join(self.dir, "upper")
        self.work = os.path.join(self.dir, "work")
        self.root = os.path.join(self.dir, "root")  # the merged tree: only inside the host's mount namespace
        self.rocket_dir = os.path.join(self.dir, "rocket")
        self.key = os.path.join(self.dir, "client_key")
        self.console = os.path.join(self.dir, "console.log")
        self.cgroups = [os.path.join(r, CGROUP_NAME, self.name) for r in CGROUP_ROOTS]
        self.proc = None
        self.boots = 0
        self.boot_seconds = []
        self.exits = []
        self.made_net = False
        self.machine_id = os.urandom(16).hex()

    # -- set-up -------------------------------------------------------------------------------------

    def _prepare(self):
        """The host's disk, once (ssh keys, machine-id, hostname), its bridge and cgroups."""
        for d in (self.upper, self.work, self.root, self.rocket_dir):
            os.makedirs(d, exist_ok=True)
        etc = os.path.join(self.upper, "etc")
        os.makedirs(os.path.join(etc, "ssh"), exist_ok=True)
        # ssh-keygen -A writes the host keys under a prefix: straight into the upper layer.
        _sh("ssh-keygen", "-A", "-f", self.upper)
        _sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", self.key)
        ssh_dir = os.path.join(self.upper, "root", ".ssh")
        os.makedirs(ssh_dir, mode=0o700, exist_ok=True)
        os.chmod(os.path.join(self.upper, "root"), 0o700)
        shutil.copy(self.key + ".pub", os.path.join(ssh_dir, "authorized_keys"))
        # A stable machine-id: the persistent journal of every boot is then one host's.
        with open(os.path.join(etc, "machine-id"), "w") as f:
            f.write(self.machine_id + "\n")
        with open(os.path.join(etc, "hostname"), "w") as f:
            f.write(self.name + "\n")
        self.net.up()
        self.made_net = True
        for cg in self.cgroups:
            if os.path.isdir(os.path.dirname(os.path.dirname(cg))):
                os.makedirs(cg, exist_ok=True)

    def command(self):
        """The nspawn command line (after the overlay mount), each flag with its reason."""
        return [
            "systemd-nspawn", "--quiet",
            "--boot",  # run the tree's /sbin/init (systemd) as PID 1: a real booted host
            # No machined and no system bus on this machine: do not register the machine and
            # do not ask systemd for a scope; nspawn stays in the cgroup it was started in.
            "--register=no", "--keep-unit",
            "--directory=" + self.root,
            "--machine=" + self.name,
            "--uuid=" + self.machine_id,  # the same machine-id at every boot (journal, hostnamectl)
            # Its own network namespace with a veth on the test bridge (host side vb-<name>,
            # inside host0, addressed from here at each boot). A private network, not
            # --network-namespace-path: only then does nspawn keep CAP_NET_ADMIN and mount
            # /proc/sys/net writable, which the runtime needs (nft, pods' veths and bridges,
            # ip_forward, pods' ping_group_range).
            "--network-bridge=" + BRIDGE,
            # nspawn's seccomp filter refuses bpf(2); the runtime loads and attaches the device
            # allow-list of pods as BPF_PROG_TYPE_CGROUP_DEVICE programs on cgroup v2.
            "--system-call-filter=bpf",
            # The data directory on a plain file system: pods' overlay upper dirs cannot sit
            # on the overlayfs that is the host's root.
            "--bind=" + self.rocket_dir + ":/var/lib/rocket",
            # no terminal here: the console's output goes to console.log, no input
            "--console=read-only",
        ]

    def _script(self):
        places = " ".join("%s/cgroup.procs" % cg for cg in self.cgroups if os.path.isdir(cg))
        return ("set -e\n"
                "for f in %s; do echo $$ > $f; done\n"
                "mount -t overlay overlay -o lowerdir=%s,upperdir=%s,workdir=%s %s\n"
                'exec "$@"\n' % (places, self.lower, self.upper, self.work, self.root))

    def env(self):
        e = dict(os.environ)
        e.pop("NOTIFY_SOCKET", None)
        # v2: the host gets only cgroup2 at /sys/fs/cgroup (a cgroup-v2-only host); hybrid: the
        # layout of this machine (v1 controllers read-only, the named systemd hierarchy and cgroup2).
        if self.cgroup == "v2":
            e["SYSTEMD_NSPAWN_UNIFIED_HIERARCHY"] = "1"
        else:
            e.pop("SYSTEMD_NSPAWN_UNIFIED_HIERARCHY", None)
        return e

    def start(self, timeout=90):
        """Boot (preparing disk and network the first time) and wait for SSH; returns self."""
        if self.proc is not None and self.proc.poll() is None:
            raise AssertionError("%s is running" % self.name)
        if self.boots == 0 and not self.made_net:
            self._prepare()
        t = time.monotonic()
        with open(self.console, "a") as log:
            log.write("\n=== boot %d ===\n" % (self.boots + 1))
            log.flush()
            self.proc = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", self._script(), "booted"]
                + self.command(), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=self.env())
        self.boots += 1
        self._address(timeout)
        self.wait_ready(timeout)
        self.boot_seconds.append(time.monotonic() - t)
        return self

    def init_pid(self):
        """The PID (in this machine's namespace) of the host's systemd, or None."""
        for pid in self._init_pids():
            try:
                with open("/proc/%d/comm" % pid) as f:
                    if f.read().strip() in ("systemd", "init"):
                        return pid
            except OSError:
                pass
        return None

    def _address(self, timeout):
        """Give host0 (nspawn moved it into the host's fresh namespace) the host's address
        and a default route; the host runs no network manager of its own."""
        deadline = time.monotonic() + timeout
        while True:
            pid = self.init_pid()
            if pid is not None:
                ns = "--net=/proc/%d/ns/net" % pid
                p = subprocess.run(["nsenter", ns, "ip", "link", "show", "host0"], capture_output=True, check=False)
                if p.returncode == 0:
                    break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("%s: no host0 in the host (nspawn %s):\n%s"
                                     % (self.name, self.proc.poll(), self.console_tail()))
            time.sleep(0.05)
        _sh("nsenter", ns, "ip", "addr", "add", self.address + "/24", "dev", "host0")
        _sh("nsenter", ns, "ip", "link", "set", "host0", "up")
        _sh("nsenter", ns, "ip", "route", "add", "default", "via", GATEWAY)

    # -- use ----------------------------------------------------------------------------------------

    def ssh_command(self, cmd):
        return ["ssh", "-i", self.key] + SSH_OPTS + ["root@" + self.address, cmd]

    def ssh(self, cmd, check=True, timeout=120, input=None):
        """Run a shell command on the host as root; a CompletedProcess with text stdout/stderr."""
        p = subprocess.run(self.ssh_command(cmd), capture_output=True, text=True, timeout=timeout, input=input,
                           check=False)
        if check and p.returncode != 0:
            raise AssertionError("%s: `%s` exited %d: %s%s" % (self.name, cmd, p.returncode, p.stdout, p.stderr))
        return p

    def put(self, local, remote, mode="0644"):
        """Copy a file of this machine to the host over SSH (bytes as they are)."""
        with open(str(local), "rb") as f:
            p = subprocess.run(self.ssh_command("cat > %s && chmod %s %s" % (remote, mode, remote)), stdin=f,
                               capture_output=True, timeout=120, check=False)
        if p.returncode != 0:
            raise AssertionError("%s: copying %s to %s failed: %s" % (self.name, local, remote, p.stderr))
        return remote

    def wait_ready(self, timeout=90):
        """Until systemd says the boot is over (running or degraded) and SSH answers."""
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise AssertionError("%s: nspawn exited %s while booting:\n%s"
                                     % (self.name, None if self.proc is None else self.proc.returncode, self.console_tail()))
            try:
                last = self.ssh("systemctl is-system-running --wait", check=False, timeout=30)
            except subprocess.TimeoutExpired:
                continue
            if last.stdout.strip() in ("running", "degraded"):
                return last.stdout.strip()
            time.sleep(0.2)
        raise AssertionError("%s not ready in %d s (%s):\n%s" % (self.name, timeout, last and (last.stdout + last.stderr),
                                                                 self.console_tail()))

    def console_tail(self, n=40):
        try:
            with open(self.console, errors="replace") as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return ""

    def journal(self, args=""):
        """journalctl on the host (no machined here, so never journalctl -M from outside)."""
        return self.ssh("journalctl --no-pager " + args).stdout

    def is_running(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, timeout=60):
        """nspawn's exit code (133 after a reboot request, 0 after a power-off)."""
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError("%s still running after %d s:\n%s" % (self.name, timeout, self.console_tail()))
        self.exits.append(rc)
        self._clean_run_state()
        return rc

    def reboot(self, timeout=90):
        """`systemctl reboot` inside; nspawn exits with 133; boot again. Returns the exit code."""
        self.ssh("systemctl reboot", check=False, timeout=30)
        rc = self.wait_exit(timeout)
        if rc != EXIT_REBOOT:
            raise AssertionError("%s: nspawn exited %d on reboot, not %d:\n%s"
                                 % (self.name, rc, EXIT_REBOOT, self.console_tail()))
        self.start(timeout)
        return rc

    def poweroff(self, timeout=90):
        """An orderly `systemctl poweroff` inside; returns nspawn's exit code (0). start() boots again."""
        self.ssh("systemctl poweroff", check=False, timeout=30)
        return self.wait_exit(timeout)

    def _init_pids(self):
        """PIDs (in this machine's namespace) of nspawn's children: the container's init among them."""
        try:
            with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                return [int(p) for p in f.read().split()]
        except OSError:
            return []

    def power_off_hard(self):
        """SIGKILL the container's init (which takes every process of its PID namespace with it)
        and nspawn, and reap: a host losing power. start() boots again. Returns nspawn's exit code."""
        if not self.is_running():
            return None
        for pid in self._init_pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.send_signal(signal.SIGKILL)
        except ProcessLookupError:
            pass
        return self.wait_exit(30)

    def _cgroup_procs(self):
        pids = []
        for cg in self.cgroups:
            for dirpath, dummy, files in os.walk(cg):
                if "cgroup.procs" in files:
                    try:
                        with open(os.path.join(dirpath, "cgroup.procs")) as f:
                            pids += f.read().split()
                    except OSError:
                        pass
        return pids

    def _clean_run_state(self):
        """After nspawn ended: wait for the host's processes to be gone (a killed PID namespace
        is torn down asynchronously), then remove the cgroups nspawn made under ours and its
        run-time directory for the machine."""
        deadline = time.monotonic() + 20
        while self._cgroup_procs() and time.monotonic() < deadline:
            time.sleep(0.1)
        for cg in self.cgroups:
            if os.path.isdir(cg):
                for child in os.listdir(cg):
                    if os.path.isdir(os.path.join(cg, child)):
                        _rmdir_tree(os.path.join(cg, child))
        # the veth goes with the host's network namespace, which the kernel frees asynchronously
        while os.path.exists("/sys/class/net/" + self.veth) and time.monotonic() < deadline:
            time.sleep(0.05)
        subprocess.run(["ip", "link", "delete", self.veth], check=False, stderr=subprocess.DEVNULL)
        for d in ("/run/systemd/nspawn/propagate/" + self.name, "/run/systemd/nspawn/unix-export/" + self.name):
            shutil.rmtree(d, ignore_errors=True)

    # -- Ansible ------------------------------------------------------------------------------------

    def host_vars(self):
        """This host's inventory variables: root over SSH with its key, the host's own python3."""
        return {"ansible_host": self.address, "ansible_user": "root", "ansible_port": 22,
                "ansible_ssh_private_key_file": self.key, "ansible_python_interpreter": "/usr/bin/python3",
                "rocket_data_dir": "/var/lib/rocket"}

    def inventory(self, group="booted", extra_vars=None):
        return inventory([self], group, extra_vars)

    def write_inventory(self, path, group="booted", extra_vars=None):
        return write_inventory(path, [self], group, extra_vars)

    def playbook(self, inventory_path, play, *args, timeout=600):
        """ansible-playbook against an inventory of booted hosts; a CompletedProcess (stdout+stderr)."""
        return playbook(inventory_path, play, *args, timeout=timeout)

    # -- tear-down ----------------------------------------------------------------------------------

    def stop(self, timeout=60):
        """Power off (orderly, then hard if it does not go), and remove its veth and cgroups."""
        try:
            if self.is_running():
                try:
                    self.poweroff(timeout)
                except AssertionError:
                    self.power_off_hard()
        finally:
            if self.proc is not None and self.proc.poll() is None:
                self.power_off_hard()
            self._clean_run_state()
            for cg in self.cgroups:
                _rmdir_tree(cg)
                try:
                    os.rmdir(os.path.dirname(cg))  # the shared parent, when it is the last host
                except OSError:
                    pass
            self.made_net = False
            self.net.used.discard(self.idx)


def inventory(hosts, group="booted", extra_vars=None):
    """A YAML/JSON inventory (as a dict) with every host of `hosts` in `group`."""
    return {group: {"hosts": {h.name: h.host_vars() for h in hosts}, "vars": dict(extra_vars or {})}}


def write_inventory(path, hosts, group="booted", extra_vars=None):
    with open(str(path), "w") as f:
        json.dump(inventory(hosts, group, extra_vars), f)
    return str(path)


def env():
    """Environment for ansible-playbook against booted hosts."""
    e = ansible_env()
    e.pop("ANSIBLE_PYTHON_INTERPRETER", None)  # the host's own python3 (inventory), not ours
    e.update(ANSIBLE_SSH_ARGS=SSH_ARGS, ANSIBLE_PIPELINING="1", ANSIBLE_TIMEOUT="15", ANSIBLE_HOST_KEY_CHECKING="0")
    return e


def playbook(inventory_path, play, *args, timeout=600):
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", str(inventory_path), str(play)] + list(args)
    return subprocess.run(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)


def recap(out, names):
    """host -> {ok, changed, unreachable, failed, ...} from a PLAY RECAP."""
    rows = {}
    for line in out.splitlines():
        head, sep, rest = line.partition(" : ")
        if sep and head.strip() in names and "ok=" in rest:
            rows[head.strip()] = {k: int(v) for k, v in (f.split("=") for f in rest.split())}
    return rows


class BootedHosts:
    """A factory of started hosts on one bridge; close() stops them all and removes the bridge."""

    def __init__(self, tmp):
        self.tmp = str(tmp)
        self.net = BootedNet()
        self.hosts = []

    def __call__(self, release="12", cgroup="v2", name=None, timeout=90):
        h = BootedHost(self.tmp, self.net, release, cgroup, name)
        self.hosts.append(h)
        return h.start(timeout)

    def close(self):
        try:
            for h in reversed(self.hosts):
                try:
                    h.stop()
                except Exception:  # keep stopping the others; the leak check reports what is left
                    pass
        finally:
            self.net.down()


def require(release="12"):
    """Skip-free precondition: fail (not skip) when the tools or the cached tree are missing."""
    missing = [t for t in ("systemd-nspawn", "unshare", "ssh") if shutil.which(t) is None]
    if missing:
        pytest.fail("booted hosts need %s: make deps" % ", ".join(missing))
    if rootfs(release) is None:
        pytest.fail("Debian %s test host not built: tools/test-hosts.sh %s (make deps TEST_HOSTS=...)"
                    % (release, release))


def booted_hosts_factory(tmp_path):
    """Yields a BootedHosts; every host made through it is stopped and undone afterwards."""
    f = BootedHosts(tmp_path)
    try:
        yield f
    finally:
        f.close()
