"""A fleet over real SSH: three hosts made on this machine, one inventory, one playbook.

Each host is a network namespace with its own address on a bridge and its own sshd, and
its own data_dir. The sshds run in this test's mount namespace (nsenter --net, not
`ip netns exec`, which would give each one a mount namespace of its own), so pods started
over ssh live where the leak checker and the clean-up see them.
"""
import os
import subprocess
import time

from tests.support import pods
from tests.support.ansible_run import BIN
from tests.support.fleet import HOSTS, recap, remove_all, running

PLAY = """
- name: Converge the fleet
  hosts: fleet
  gather_facts: false
  roles:
    - role: appc.rocket.pods
"""


def test_fleet_converges_over_ssh_and_survives_a_host_down(tmp_path, fleet):
    aci = pods.busybox_aci(tmp_path)
    data = {name: fleet.data_dir(name) for name in HOSTS}
    inv = fleet.write_inventory(tmp_path / "inventory.json", extra_vars={
        "rocket_images": [{"src": aci}],
        "rocket_pods": [{"name": n, "image": "example.com/busybox", "net": "none",
                         "exec": ["/bin/sh", "-c", "exec sleep 100000"]} for n in ("web", "worker")]})
    play = tmp_path / "fleet.yml"
    play.write_text(PLAY)
    e = fleet.env()
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", inv, "--forks", "3", str(play)]

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
