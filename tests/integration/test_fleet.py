"""A fleet over real SSH: three hosts made on this machine, one inventory, one playbook.

Each host is a network namespace with its own address on a bridge and its own sshd, and
its own data_dir. The sshds run in this test's mount namespace (nsenter --net, not
`ip netns exec`, which would give each one a mount namespace of its own), so pods started
over ssh live where the leak checker and the clean-up see them.
"""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.support import pods
from tests.support.ansible_run import BIN, env, module

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir

HOSTS = {"alpha": "10.231.77.11", "beta": "10.231.77.12", "gamma": "10.231.77.13"}
BRIDGE, GATEWAY = "rfleet0", "10.231.77.1"

PLAY = """
- name: Converge the fleet
  hosts: fleet
  gather_facts: false
  roles:
    - role: appc.rocket.pods
"""


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
    names = sorted(podmod.pod_names(DataDir(data_dir)).values()) if os.path.isdir(data_dir) else []
    if names:
        r = module("pod_set", {"data_dir": data_dir, "pods": [{"name": n, "state": "absent", "stop_timeout": 2}
                                                              for n in names]})
        assert not r.get("failed"), r


def recap(out):
    rows = {}
    for line in out.splitlines():
        head, sep, rest = line.partition(" : ")
        if sep and head.strip() in HOSTS and "ok=" in rest:
            rows[head.strip()] = {k: int(v) for k, v in (f.split("=") for f in rest.split())}
    return rows


class Fleet:
    """Network namespaces, veths on a bridge and one sshd each; undone in reverse order."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.sshd = {}
        self.made = []
        self.run_sshd_dir = None

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
        for i, (name, addr) in enumerate(sorted(HOSTS.items())):
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
        for name, addr in HOSTS.items():
            self.wait_port(name, addr)
        return key

    def start_sshd(self, name):
        d = os.path.join(self.tmp, name)
        self.sshd[name] = subprocess.Popen(
            ["nsenter", "--net=/run/netns/rfleet-" + name, "/usr/sbin/sshd", "-D", "-e", "-f", os.path.join(d, "sshd_config")],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(d, "sshd.log"), "w"))

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

    def down(self):
        for name in list(self.sshd):
            self.stop_sshd(name)
        for kind, what in reversed(self.made):
            if kind == "netns":
                subprocess.run(["ip", "netns", "delete", what], check=False)
            else:
                subprocess.run(["ip", "link", "delete", what], check=False, stderr=subprocess.DEVNULL)
        if self.run_sshd_dir:
            shutil.rmtree(self.run_sshd_dir, ignore_errors=True)


@pytest.fixture
def fleet(tmp_path):
    if not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("no sshd (Debian openssh-server: tools/debian-packages.sh)")
    f = Fleet(str(tmp_path / "fleet"))
    os.makedirs(f.tmp)
    try:
        f.key = f.up()
        yield f
    finally:
        f.down()


def test_fleet_converges_over_ssh_and_survives_a_host_down(tmp_path, fleet):
    aci = pods.busybox_aci(tmp_path)
    data = {name: os.path.join(fleet.tmp, name, "rocket") for name in HOSTS}
    inventory = {"fleet": {"hosts": {name: {"ansible_host": addr, "rocket_data_dir": data[name]}
                                     for name, addr in HOSTS.items()},
                           "vars": {"ansible_user": "root", "ansible_port": 22,
                                    "ansible_ssh_private_key_file": fleet.key,
                                    "ansible_python_interpreter": sys.executable,
                                    "rocket_images": [{"src": aci}],
                                    "rocket_pods": [{"name": n, "image": "example.com/busybox", "net": "none",
                                                     "exec": ["/bin/sh", "-c", "exec sleep 100000"]}
                                                    for n in ("web", "worker")]}}}
    inv = tmp_path / "inventory.json"
    inv.write_text(json.dumps(inventory))
    play = tmp_path / "fleet.yml"
    play.write_text(PLAY)
    e = env()
    # No control master: a stopped sshd must mean an unreachable host, and no ssh process outlives a run.
    e.update(ANSIBLE_SSH_ARGS="-o ControlMaster=no -o UserKnownHostsFile=/dev/null -o StrictHostKeyChecking=no",
             ANSIBLE_PIPELINING="1", ANSIBLE_TIMEOUT="10", ANSIBLE_HOST_KEY_CHECKING="0")
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", str(inv), "--forks", "3", str(play)]

    def run():
        t = time.time()
        p = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                           check=False)
        return p, recap(p.stdout), time.time() - t

    try:
        p, rows, first = run()
        assert p.returncode == 0 and sorted(rows) == sorted(HOSTS), p.stdout
        assert all(r["changed"] == 1 and r["failed"] == 0 for r in rows.values()), p.stdout
        uuids = []
        for name in HOSTS:  # every host has its own store and pods, reached over its own sshd
            now = running(data[name])
            assert sorted(now) == ["web", "worker"], (name, now)
            uuids += now.values()
        p, rows, second = run()
        assert p.returncode == 0 and all(r["changed"] == 0 for r in rows.values()) and len(rows) == 3, p.stdout

        fleet.stop_sshd("gamma")
        p, rows, third = run()
        assert p.returncode == 4, p.stdout  # 4: some hosts were unreachable
        assert rows["gamma"]["unreachable"] == 1, p.stdout
        for name in ("alpha", "beta"):
            assert rows[name]["unreachable"] == 0 and rows[name]["failed"] == 0 and rows[name]["changed"] == 0, p.stdout
        print("fleet runs: first %.1f s, second %.1f s, with a host down %.1f s" % (first, second, third))
        for name in HOSTS:  # locally: gamma's sshd is down by now
            remove_all(data[name])
        # Each pod's cgroups went with it (checked by UUID: other work on the machine makes pods too).
        left = [u for u in uuids if os.path.exists("/sys/fs/cgroup/pids/rocket/" + u)]
        assert not left, left
    finally:
        for name in HOSTS:
            remove_all(data[name])
