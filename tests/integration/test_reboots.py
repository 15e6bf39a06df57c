"""Pods across reboots on a booted Debian 12 host (systemd as PID 1, cgroup v2 only), with no
playbook: the runtime role installs appc-rocket-pods.service, a playbook converges pods,
then `systemctl reboot` inside and a hard power-off; the pods whose desired state is running
are back (same UUID, address, port forward, volume data) before any SSH session, the exited
ones stay exited, and a second playbook run changes nothing; pods with and without
private_users (the web pod, and a second boot=true pod).
"""
import json
import os
import socket
import time

import pytest

from tests.support import booted, pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir

pytestmark = pytest.mark.booted

COUNT = ("n=$(cat /v/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /v/n; echo run-$n; "
         "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done")
HTTPD = {"exec": ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www"],
         "user": "0", "group": "0", "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}

PLAY = """
- hosts: booted
  gather_facts: false
  roles:
    - role: appc.rocket.runtime
  tasks:
    - name: Images (the host reaches no registry)
      ansible.builtin.copy:
        src: "{{ item }}"
        dest: /root/
        mode: "0600"
      loop: "{{ acis }}"
    - name: Import them
      appc.rocket.cas_image:
        src: "/root/{{ item | basename }}"
      loop: "{{ acis }}"
    - name: A pod that comes back at boot by boot=true
      appc.rocket.pod_run:
        name: booted
        image: example.com/busybox
        exec: [/bin/sh, -c, "%(count)s"]
        volumes: [{name: v, kind: empty}]
        mounts: [{volume: v, path: /v}]
        boot: true
    - name: The same with private_users
      appc.rocket.pod_run:
        name: booted-userns
        image: example.com/busybox
        exec: [/bin/sh, -c, "%(count)s"]
        volumes: [{name: v, kind: empty}]
        mounts: [{volume: v, path: /v}]
        boot: true
        private_users: true
    - name: A web pod on the default network with a port forward, restart_policy always
      appc.rocket.pod_run:
        name: web
        image: example.com/httpd
        net: [default]
        ports: [{name: http, host_port: 18080}]
        restart_policy: always
        private_users: true
    - name: A pod that exited (on-failure, and it succeeded) stays exited
      appc.rocket.pod_run:
        name: plain
        image: example.com/busybox
        exec: [/bin/sh, -c, "sleep 1; echo plain-done"]
        restart_policy: on-failure
        state: exited
    - name: A job, run once
      appc.rocket.pod_run:
        name: job
        image: example.com/busybox
        exec: [/bin/sh, -c, "echo job-done"]
        state: exited
        boot: true
"""


UP = {"booted": "running", "booted-userns": "running", "web": "running", "job": "exited"}


def fetch(address, port, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((address, port), timeout=2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return s.makefile("rb").read().decode()
        except OSError:
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.2)


def state(h):
    """name -> (uuid, running or exited) of the host's pods, read through the bind mount of its data directory."""
    dd = DataDir(h.rocket_dir)
    out = {}
    for uuid, name in podmod.pod_names(dd).items():
        p = podmod.lookup(dd, uuid=uuid)
        out[name] = (uuid, p.state())
    return out


def address(h, uuid):
    with open(os.path.join(h.rocket_dir, "pods", "run", uuid, "net-info.json")) as f:
        return json.load(f)[0]["ip"]


def log(h, uuid, app):
    with open(os.path.join(h.rocket_dir, "pods", "run", uuid, "logs", app + ".log")) as f:
        return f.read()


def restored_before_ssh(h):
    """The unit's start and restore lines of this boot and the first SSH login of this boot,
    as timestamps from the host's journal: systemd ran the restore as a boot unit."""
    unit = h.journal("-b -u appc-rocket-pods.service -o short-unix --no-hostname")
    started = [float(ln.split()[0]) for ln in unit.splitlines() if " systemd[1]: Starting appc-rocket-pods" in ln]
    done = [float(ln.split()[0]) for ln in unit.splitlines() if " restore /var/lib/rocket: " in ln]
    ssh = h.journal("-b -u ssh.service -o short-unix --no-hostname")
    logins = [float(ln.split()[0]) for ln in ssh.splitlines() if "Accepted publickey" in ln]
    assert started and done and logins, (unit, ssh)
    # systemd started the restore at boot before anyone logged in (the fixture's readiness
    # probe may log in while the restore still runs: SSH does not wait for pods).
    assert started[0] < logins[0] and len(done) == 1, (unit, ssh)
    print("restore: started %.3fs before the first SSH login, took %.3fs" % (logins[0] - started[0], done[0] - started[0]))
    return unit


def test_pods_come_back_after_a_reboot_and_a_hard_power_off(booted_host, tmp_path, image_dir):
    h = booted_host
    acis = [pods.busybox_aci(image_dir), pods.busybox_aci(image_dir, name="example.com/httpd", app=HTTPD)]
    inv = h.write_inventory(tmp_path / "inv.json", extra_vars={
        "rocket_runtime_install_packages": False, "rocket_runtime_private_networks": True,
        "acis": acis})
    play = tmp_path / "pods.yml"
    play.write_text(PLAY % {"count": COUNT.replace('"', '\\"')})
    t0 = time.monotonic()
    p = booted.playbook(inv, play)
    assert booted.recap(p.stdout, [h.name])[h.name]["failed"] == 0, p.stdout
    converge_s = time.monotonic() - t0
    assert h.ssh("systemctl is-active appc-rocket-pods.service").stdout.strip() == "active"
    assert h.ssh("systemctl is-enabled appc-rocket-pods.service").stdout.strip() == "enabled"
    before = state(h)
    assert {k: v[1] for k, v in before.items()} == dict(UP, plain="exited"), before
    web_ip = address(h, before["web"][0])
    assert "hello-from-web" in fetch(h.address, 18080)
    assert "run-1" in log(h, before["booted"][0], "busybox")

    t1 = time.monotonic()
    assert h.reboot() == booted.EXIT_REBOOT
    reboot_s = time.monotonic() - t1
    unit = restored_before_ssh(h)
    after = state(h)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # the same pods
    assert {k: v[1] for k, v in after.items()} == dict(UP, plain="exited"), (after, unit)
    assert address(h, after["web"][0]) == web_ip
    assert "hello-from-web" in fetch(h.address, 18080)
    booted_log = log(h, after["booted"][0], "busybox")
    assert "got-term" in booted_log and "run-2" in booted_log, booted_log  # stopped in order, same volume
    assert "run-2" in log(h, after["booted-userns"][0], "busybox")
    shutdown = h.journal("-b -1 -u appc-rocket-pods.service -o cat")
    assert "stopped pod %s (booted) for the shutdown" % after["booted"][0] in shutdown, shutdown
    p = booted.playbook(inv, play)
    assert booted.recap(p.stdout, [h.name])[h.name]["changed"] == 0, p.stdout

    assert h.power_off_hard() == -9
    h.start()
    restored_before_ssh(h)
    again = state(h)
    assert {k: v[1] for k, v in again.items()} == dict(UP, plain="exited"), again
    assert {k: v[0] for k, v in again.items()} == {k: v[0] for k, v in before.items()}
    assert "run-3" in log(h, again["booted"][0], "busybox")
    assert "run-3" in log(h, again["booted-userns"][0], "busybox")
    assert "hello-from-web" in fetch(h.address, 18080)
    p = booted.playbook(inv, play)
    assert booted.recap(p.stdout, [h.name])[h.name]["changed"] == 0, p.stdout
    print("converge %.1fs, reboot to SSH-ready %.1fs, boots %s" % (
        converge_s, reboot_s, ", ".join("%.2f" % s for s in h.boot_seconds)))
