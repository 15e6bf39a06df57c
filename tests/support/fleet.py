"""A fleet of pod hosts made on this machine, for the tests that need real SSH.

Each host is a network namespace with its own address on a bridge, its own sshd and its own
data_dir. The sshds run in the caller's mount namespace (nsenter --net, not `ip netns exec`,
which would give each one a mount namespace of its own), so pods started over ssh live where
the leak checker and the clean-up see them. Everything made is undone in reverse order, and
the pods of every host are removed first, so a failed test leaves nothing behind.

Integration tests take the `fleet` fixture (tests/integration/conftest.py) or use `Fleet` directly.
"""
import json
import os
import shutil
import subprocess
import time

import pytest

from .ansible_run import HOST_PYTHON, env as ansible_env, module

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir

HOSTS = {"alpha": "10.231.77.11", "beta": "10.231.77.12", "gamma": "10.231.77.13"}
BRIDGE, GATEWAY = "rfleet0", "10.231.77.1"
# No control master: a stopped sshd must mean an unreachable host, and no ssh process outlives a run.
SSH_ARGS = "-o ControlMaster=no -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no"


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def running(data_dir):
    """name -> uuid of the running pods of a data directory, read from the disk."""
    dd = DataDir(data_dir)
    out = {}
    for uuid, name in podmod.pod_names(dd).items():
        found = podmod.find_by_name(dd, name)
        if found is not None and found.state() == "running":
            out[name] = uuid
    return out


def remove_all(data_dir):
    """Remove every pod of a data directory (locally: works with the host's sshd down)."""
    names = sorted(podmod.pod_names(DataDir(data_dir)).values()) if os.path.isdir(data_dir) else []
    if names:
        r = module("pod_set", {"data_dir": data_dir, "pods": [{"name": n, "state": "absent", "stop_timeout": 2}
                                                              for n in names]})
        assert not r.get("failed"), r


def recap(out, hosts=None):
    """host -> {ok, changed, unreachable, failed, ...} from a PLAY RECAP."""
    hosts = HOSTS if hosts is None else hosts
    rows = {}
    for line in out.splitlines():
        head, sep, rest = line.partition(" : ")
        if sep and head.strip() in hosts and "ok=" in rest:
            rows[head.strip()] = {k: int(v) for k, v in (f.split("=") for f in rest.split())}
    return rows


class Fleet:
    """Network namespaces, veths on a bridge and one sshd each; undone in reverse order."""

    def __init__(self, tmp, hosts=None):
        self.tmp = tmp
        self.hosts = dict(hosts or HOSTS)
        self.sshd = {}
        self.made = []
        self.run_sshd_dir = None
        self.key = None

    def data_dir(self, name):
        """The host's data directory (on this machine's disk, as the host sees it)."""
        return os.path.join(self.tmp, name, "rocket")

    def up(self):
        sh("ip", "link", "add", BRIDGE, "type", "bridge")
        self.made.append(("link", BRIDGE))
        sh("ip", "addr", "add", GATEWAY + "/24", "dev", BRIDGE)
        sh("ip", "link", "set", BRIDGE, "up")
        key = os.path.join(self.tmp, "client_key")
        sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
        if not os.path.isdir("/run/sshd"):  # sshd's privilege separation directory
            os.makedirs("/run/sshd", 0o755)
            self.run_sshd_dir = "/run/sshd"
        for i, (name, addr) in enumerate(sorted(self.hosts.items())):
            ns, veth = "rfleet-" + name, "rfl%d" % i
            sh("ip", "netns", "add", ns)
            self.made.append(("netns", ns))
            sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            self.made.append(("link", veth))
            sh("ip", "link", "set", veth, "master", BRIDGE, "up")
            sh("ip", "-n", ns, "addr", "add", addr + "/24", "dev", "eth0")
            sh("ip", "-n", ns, "link", "set", "eth0", "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            d = os.path.join(self.tmp, name)
            os.makedirs(d)
            sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", os.path.join(d, "host_key"))
            shutil.copy(key + ".pub", os.path.join(d, "authorized_keys"))
            with open(os.path.join(d, "sshd_config"), "w") as f:
                f.write("ListenAddress %s:22\nHostKey %s/host_key\nAuthorizedKeysFile %s/authorized_keys\n"
                        "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                        "UsePAM no\nStrictModes no\nPidFile none\nSubsystem sftp internal-sftp\n" % (addr, d, d))
            self.start_sshd(name)
        for name, addr in self.hosts.items():
            self.wait_port(name, addr)
        self.key = key
        return key

    def start_sshd(self, name):
        d = os.path.join(self.tmp, name)
        with open(os.path.join(d, "sshd.log"), "a") as log:
            self.sshd[name] = subprocess.Popen(
                ["nsenter", "--net=/run/netns/rfleet-" + name, "/usr/sbin/sshd", "-D", "-e", "-f",
                 os.path.join(d, "sshd_config")], stdout=subprocess.DEVNULL, stderr=log)

    def wait_port(self, name, addr):
        deadline = time.time() + 20
        while time.time() < deadline:
            p = subprocess.run(["nsenter", "--net=/run/netns/rfleet-" + name, "ss", "-Hltn", "sport = :22"],
                               capture_output=True, text=True, check=False)
            if addr in p.stdout:
                return
            if self.sshd[name].poll() is not None:
                break
            time.sleep(0.1)
        with open(os.path.join(self.tmp, name, "sshd.log")) as f:
            raise AssertionError("sshd of %s did not listen on %s:22: %s" % (name, addr, f.read()))

    def stop_sshd(self, name):
        p = self.sshd.pop(name, None)
        if p is not None and p.poll() is None:
            p.terminate()
        if p is not None:
            p.wait(timeout=20)

    def host_vars(self):
        """Per-host inventory variables: address and data_dir."""
        return {name: {"ansible_host": addr, "rocket_data_dir": self.data_dir(name)}
                for name, addr in self.hosts.items()}

    def group_vars(self):
        """Connection variables every fleet host needs (root over SSH with the fleet's key)."""
        return {"ansible_user": "root", "ansible_port": 22, "ansible_ssh_private_key_file": self.key,
                "ansible_python_interpreter": HOST_PYTHON}

    def inventory(self, group="fleet", extra_vars=None):
        """A YAML/JSON inventory (as a dict) with every host in `group`."""
        v = self.group_vars()
        v.update(extra_vars or {})
        return {group: {"hosts": self.host_vars(), "vars": v}}

    def write_inventory(self, path, group="fleet", extra_vars=None):
        with open(path, "w") as f:
            json.dump(self.inventory(group, extra_vars), f)
        return str(path)

    def env(self):
        """Environment for ansible-playbook/ansible-inventory against the fleet."""
        e = ansible_env()
        e.update(ANSIBLE_SSH_ARGS=SSH_ARGS, ANSIBLE_PIPELINING="1", ANSIBLE_TIMEOUT="10",
                 ANSIBLE_HOST_KEY_CHECKING="0")
        return e

    def remove_pods(self):
        for name in self.hosts:
            remove_all(self.data_dir(name))

    def down(self):
        for name in list(self.sshd):
            self.stop_sshd(name)
        for kind, what in reversed(self.made):
            if kind == "netns":
                subprocess.run(["ip", "netns", "delete", what], check=False)
            else:
                subprocess.run(["ip", "link", "delete", what], check=False, stderr=subprocess.DEVNULL)
        self.made = []
        if self.run_sshd_dir:
            shutil.rmtree(self.run_sshd_dir, ignore_errors=True)


def fleet_hosts(tmp_path):
    """Three running hosts (HOSTS), yielded; their pods removed and everything undone afterwards.
    tests/integration/conftest.py makes it the `fleet` fixture (no import needed)."""
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("no sshd (Debian openssh-server: tools/debian-packages.sh)")
    f = Fleet(str(tmp_path / "fleet"))
    os.makedirs(f.tmp)
    try:
        f.up()
        yield f
    finally:
        try:
            f.remove_pods()
        finally:
            f.down()


fleet = pytest.fixture(fleet_hosts, name="fleet")
