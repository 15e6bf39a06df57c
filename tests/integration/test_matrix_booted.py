"""The matrix's booted-host cell (docs/support.md): on a systemd-booted Debian host (tests/support/
booted.py), from whichever controller ROCKET_ANSIBLE_BIN names, the runtime role and a pod,
then a reboot: the boot unit brings the pod back (the same UUID) before any play, and the
same play again changes nothing.

ROCKET_MATRIX_BOOTED lists the Debian releases (default "12"); each is one cell, on that
release's own python3 (11: 3.9, 12: 3.11, 13: 3.13). A listed release whose tree is not built
fails. tests/integration/test_reboots.py has the boot restore's fuller tests (networks, exited pods,
a hard power-off, private_users) on Debian 12.
"""
import json
import os

import pytest

from tests.support import booted, pods

RELEASES = os.environ.get("ROCKET_MATRIX_BOOTED", "12").split()
PYTHONS = {"11": "3.9", "12": "3.11", "13": "3.13"}


@pytest.mark.booted
@pytest.mark.parametrize("release", RELEASES)
def test_runtime_role_a_pod_and_a_reboot(booted_hosts, tmp_path, release):
    booted.require(release)
    h = booted_hosts(release, "v2")
    version = h.ssh("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip()
    assert version == PYTHONS[release], version
    h.put(pods.busybox_aci(tmp_path), "/root/busybox.aci")
    inv = h.write_inventory(tmp_path / "inventory.json", extra_vars={
        "rocket_images": [{"src": "/root/busybox.aci"}],
        "rocket_pods": [{"name": "sleeper", "image": "example.com/busybox", "net": "none",
                         "restart_policy": "always", "exec": ["/bin/sh", "-c", "exec sleep 100000"]}]})
    play = tmp_path / "play.yml"
    play.write_text(booted.ROLES_PLAY)

    def converge(*args):
        p = booted.playbook(inv, play, *args)
        row = booted.recap(p.stdout, [h.name]).get(h.name)
        assert p.returncode == 0 and row and row["failed"] == 0 and row["unreachable"] == 0, p.stdout[-4000:]
        info = json.loads(h.ssh("cat /root/pod_info.json").stdout)["pods"]
        return row, [x for x in info if x["name"] == "sleeper" and x["state"] == "running"], p.stdout

    row, running, dummy = converge()
    assert row["changed"] > 0 and len(running) == 1, running
    uuid = running[0]["uuid"]
    assert h.reboot() == booted.EXIT_REBOOT
    # appc-rocket-pods.service restored it at boot, before this play: nothing to do, same pod.
    out = h.ssh("journalctl --no-pager -b -u appc-rocket-pods.service -o cat").stdout
    assert "restored pod %s (sleeper)" % uuid in out, out
    row, running, log = converge("-vvv")
    assert row["changed"] == 0 and [x["uuid"] for x in running] == [uuid], (row, running)
    # The runtime role's library is there: the pods role's pod_set ran from it, on this host's
    # python3, without Ansible's module code (plugins/plugin_utils/module_action.py).
    assert "appc.rocket: direct, the module ran from /usr/lib/appc.rocket/" in log, log[-4000:]
