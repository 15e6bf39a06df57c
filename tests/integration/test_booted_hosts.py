"""Booted Debian hosts (tests/support/booted.py): systemd as PID 1 in systemd-nspawn, over SSH.

Debian 12 on cgroup v2 only runs in full; Debian 11 and 13 (and 12 on this machine's hybrid
layout) run as smoke cells: boot, the runtime role, pods. ROCKET_TEST_HOSTS selects the
releases (make's default "12"; CI: "11 12 13"); a cell of a release not selected is skipped
with that reason, never counted as a pass. The trees are built by `make deps`
(tools/test-hosts.sh); a selected release whose tree is missing fails.
"""
import json
import os
import urllib.request

import pytest

from tests.support import booted, pods

RELEASES = os.environ.get("ROCKET_TEST_HOSTS", "12").split()
pytestmark = pytest.mark.booted

HTTPD = {"exec": ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-$AC_APP_NAME > /www/index.html && "
                  "exec httpd -f -p 80 -h /www"], "user": "0", "group": "0",
         "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}
CGROUP_LIMITS = ("resource/memory", "resource/cpu", "rocket/pids")
PORT = 18080


def _select(release):
    if release not in RELEASES:
        pytest.skip("ROCKET_TEST_HOSTS=%r does not select Debian %s" % (" ".join(RELEASES), release))
    booted.require(release)


def _converge(h, tmp_path, pods_=None, **extra):
    """The play against one host: (CompletedProcess, recap row, {pod name: pod_info entry})."""
    h.put(pods.busybox_aci(tmp_path), "/root/busybox.aci")
    h.put(pods.busybox_aci(tmp_path, name="example.com/httpd", app=HTTPD), "/root/httpd.aci")
    v = {"rocket_runtime_private_networks": True,
         "rocket_images": [{"src": "/root/busybox.aci"}, {"src": "/root/httpd.aci"}],
         "rocket_pods": pods_ if pods_ is not None else [
             {"name": "web", "image": "example.com/httpd", "net": "default",
              "ports": [{"name": "http", "host_port": PORT}]},
             {"name": "limited", "image": "example.com/busybox", "net": "none",
              "exec": ["/bin/sh", "-c", "exec sleep 100000"], "memory": "64m", "cpus": 0.5, "pids_limit": 20}]}
    v.update(extra)
    inv = h.write_inventory(tmp_path / ("inventory-%s.json" % h.name), extra_vars=v)
    play = tmp_path / "booted.yml"
    play.write_text(booted.ROLES_PLAY)
    p = booted.playbook(inv, play)
    row = booted.recap(p.stdout, [h.name]).get(h.name)
    info = {}
    if p.returncode == 0:
        info = {x["name"]: x for x in json.loads(h.ssh("cat /root/pod_info.json").stdout)["pods"]}
    return p, row, info


def _http(h):
    with urllib.request.urlopen("http://%s:%d/" % (h.address, PORT), timeout=10) as r:
        return r.read().decode()


def _assert_limits_not_enforced(pod):
    iso = pod["apps"][0]["isolation"]
    ignored = {i["name"]: i["reason"] for i in iso["ignored"]}
    for name in CGROUP_LIMITS:  # asked for, never claimed: reported with the reason
        assert name not in iso["enforced"], iso
        assert ignored[name].startswith("not enforced: controller unavailable"), iso
    assert iso["limits"] == {"cpus": 0.5, "memory": 64 << 20, "pids_limit": 20}, iso


def test_debian12_boots_reboots_and_survives_a_hard_power_off(booted_hosts):
    _select("12")
    h = booted_hosts("12", "v2")
    assert h.ssh("cat /proc/1/comm").stdout.strip() == "systemd"
    assert h.ssh("systemd-detect-virt").stdout.strip() == "systemd-nspawn"
    assert h.ssh("findmnt -n -o FSTYPE /sys/fs/cgroup").stdout.split() == ["cgroup2"]  # v2 only
    h.ssh("echo written-before > /root/mark")
    first = h.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert h.reboot() == booted.EXIT_REBOOT
    second = h.ssh("cat /proc/sys/kernel/random/boot_id").stdout.strip()
    assert first != second
    assert h.ssh("cat /root/mark").stdout.strip() == "written-before"  # the disk survived the reboot
    assert len(h.journal("--list-boots -q").splitlines()) == 2  # one machine-id, two boots
    assert h.power_off_hard() == -9
    assert not h._cgroup_procs()  # nothing of the host outlived its init
    h.start()
    assert h.ssh("cat /root/mark").stdout.strip() == "written-before"
    assert h.exits == [booted.EXIT_REBOOT, -9]
    print("Debian 12 boot to SSH-ready, seconds: %s" % ", ".join("%.2f" % s for s in h.boot_seconds))


def test_debian12_runtime_role_pods_and_limits_reported_not_enforced(booted_hosts, tmp_path):
    _select("12")
    h = booted_hosts("12", "v2")
    # a cgroup-v2-only host with no controllers delegated to it: limits cannot be enforced here
    assert h.ssh("cat /sys/fs/cgroup/cgroup.controllers").stdout.split() == []
    p, row, info = _converge(h, tmp_path)
    assert p.returncode == 0 and row["failed"] == 0 and row["changed"] > 0, p.stdout
    # the packages step ran and found everything installed: no registry needed
    assert "ok: [%s]" % h.name in p.stdout.split("Install the Debian packages the modules need on a target")[1][:400], \
        p.stdout
    assert sorted(info) == ["limited", "web"] and {x["state"] for x in info.values()} == {"running"}, info
    assert _http(h) == "hello-from-httpd\n"  # through the host's nft port forward, from outside it
    _assert_limits_not_enforced(info["limited"])
    assert "devices: allow-list enforced by a cgroup v2 BPF device program" in info["web"]["apps"][0]["isolation"]["notes"]
    assert h.ssh("cat /proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    p, row, dummy = _converge(h, tmp_path)
    assert p.returncode == 0 and row["changed"] == 0 and row["failed"] == 0, p.stdout

    # The kernel module cannot be loaded from inside a container: a host whose kernel offers
    # no overlay makes the role stop with the reason (shown here by hiding it from the host).
    h.ssh("grep -vw overlay /proc/filesystems > /root/filesystems && mount --bind /root/filesystems /proc/filesystems")
    try:
        p, row, dummy = _converge(h, tmp_path)
    finally:
        h.ssh("umount /proc/filesystems")
    assert p.returncode != 0 and row["failed"] == 1, p.stdout
    assert "the overlay file system is not available and `modprobe overlay` failed" in p.stdout, p.stdout


@pytest.mark.parametrize("release,cgroup", [("11", "v2"), ("13", "v2"), ("12", "hybrid")])
def test_smoke_boot_role_and_a_pod(booted_hosts, tmp_path, release, cgroup):
    _select(release)
    h = booted_hosts(release, cgroup)
    python = {"11": "3.9", "12": "3.11", "13": "3.13"}[release]
    assert h.ssh("python3 -c 'import sys; print(\"%d.%d\" % sys.version_info[:2])'").stdout.strip() == python
    p, row, info = _converge(h, tmp_path)
    assert p.returncode == 0 and row["failed"] == 0, p.stdout
    assert {x["state"] for x in info.values()} == {"running"}, info
    assert _http(h) == "hello-from-httpd\n"
    _assert_limits_not_enforced(info["limited"])
    print("Debian %s (%s) boot to SSH-ready: %.2f s" % (release, cgroup, h.boot_seconds[0]))
