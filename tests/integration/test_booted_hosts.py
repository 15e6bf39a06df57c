"""Booted Debian hosts (tests/support/booted.py): systemd as PID 1 in systemd-nspawn, over SSH.

Debian 12 on cgroup v2 only runs in full; Debian 11 and 13 run as smoke cells (boot, the
runtime role, one pod). ROCKET_TEST_HOSTS selects the releases (default "12"; CI: "11 12 13");
a release not selected is not collected, so nothing is counted as a pass that did not run.
"""
import os

import pytest

from tests.support import booted

RELEASES = os.environ.get("ROCKET_TEST_HOSTS", "12").split()
pytestmark = pytest.mark.booted


def _selected(release):
    return release in RELEASES


@pytest.mark.skipif(not _selected("12"), reason="ROCKET_TEST_HOSTS does not select Debian 12")
def test_debian12_boots_reboots_and_survives_a_hard_power_off(booted_host):
    h = booted_host
    assert h.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert h.ssh("systemd-detect-virt").stdout.strip() == "systemd-nspawn"
    mounts = h.ssh("findmnt -n -o FSTYPE /sys/fs/cgroup").stdout.split()
    assert mounts == ["cgroup2"], mounts  # a cgroup-v2-only host
    h.ssh("echo written-before > /root/mark")
    first = h.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert h.reboot() == booted.EXIT_REBOOT
    second = h.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert h.ssh("cat /root/mark").stdout.strip() == "written-before"  # the disk survived the reboot
    assert len(h.journal("--list-boots -q").splitlines()) == 2
    assert h.power_off_hard() == -9
    h.start()
    assert h.ssh("cat /root/mark").stdout.strip() == "written-before"
    print("Debian 12 boot seconds: %s" % ", ".join("%.2f" % s for s in h.boot_seconds))
    assert h.exits == [booted.EXIT_REBOOT, -9]
    assert first != second
