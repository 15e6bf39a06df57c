"""Red-team probes of this session's features (pod names, CNI, IPv6, journald, boot restore)
from inside a default pod (root, default capabilities). Each attack was seen to succeed
against the code before its fix, or the test says why it cannot; a gap not fixed yet is an
xfail(strict=True) naming it."""
import os
import time

import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import boot, pod as podmod, prepare, run


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir)


def _sh(script):
    return {"name": "app", "image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}


def test_a_pod_process_dressed_as_another_pods_keeper_is_not_taken_for_it(store):
    # The shutdown (appc-rocket-pods stop) finds each pod's keeper in /proc by its cwd and
    # command line, and SIGTERMs it. /proc/PID/cwd of a process in a pod's mount namespace
    # reads as its path inside that namespace, so a pod that makes the victim's pod
    # directory path in its own root, sits there, and names the victim's UUID and "keeper" in
    # its argv is found first when its PID is lower (it started earlier): the victim's keeper
    # never hears of the shutdown, its apps get no stop signal and are SIGKILLed after the
    # timeout. The UUID is no secret (pod_info, the journal's APPC_POD_UUID, logs).
    victim = prepare.prepare(store, {"apps": [_sh("exec sleep 1000")]}).pod
    path = os.path.join(store.dd.pods, "run", victim.uuid)
    fake = ("mkdir -p %s && cd %s && (sh -c 'while :; do sleep 1; done' keeper %s &) ; "
            "echo dressed; exec sleep 1000" % (path, path, victim.uuid))
    attacker = prepare.prepare(store, {"apps": [_sh(fake)]}).pod
    run.start_detached(attacker, net="none")
    pods.wait_keeper_gone(attacker)  # restart_policy no: PID 1 keeps the pod, and is what a shutdown signals
    deadline = time.monotonic() + 10
    while "dressed" not in run.read_log(attacker, "app") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "dressed" in run.read_log(attacker, "app")
    run.start_detached(victim, net="none")
    pods.wait_keeper_gone(victim)  # until it has left, it is PID 1's parent (or its zombie): a race
    v = podmod.find(store.dd, victim.uuid)
    keeper = v.pid()
    # the dressed process exists and is listed before the keeper: the attack's precondition
    dressed = [int(e) for e in os.listdir("/proc") if e.isdigit() and e != str(keeper) and
               _cmdline(int(e))[-2:] == [b"keeper", victim.uuid.encode()]]
    assert dressed and min(dressed) < keeper, (dressed, keeper)
    found = boot.keeper_pid(v)
    assert found == keeper, (found, _cmdline(found), os.readlink("/proc/%d/cwd" % found), dressed)
    assert boot.keeper_pid(podmod.find(store.dd, attacker.uuid)) == podmod.find(store.dd, attacker.uuid).pid()


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return []


def test_a_pod_that_scribbles_over_its_hosts_file_reaches_no_peer(store):
    # cap_add SYS_ADMIN alone cannot remount (the default seccomp filter refuses mount: seen,
    # "permission denied"), so the pod is privileged: the app remounts its /etc/hosts
    # writable and writes names of its choice (a peer's name on its own address, a line with spaces,
    # more than the rewrite's 64 KiB). The file is its own (the bind of <pod>/net/hosts by
    # inode): what it writes reaches no peer, whose lines come from the keeper-side peer
    # records (names checked), and the next rewrite of its own file drops the scribble.
    import json

    from tests.integration.test_net_names import in_pod, ip_of, start

    if not any(os.access(p, os.X_OK) for p in ("/usr/sbin/nft", "/sbin/nft")):
        pytest.fail("nft is not installed (tools/debian-packages.sh)")
    d = os.path.join(store.dd.path, "net.d")
    os.makedirs(d)
    with open(os.path.join(d, "rt20.json"), "w") as f:
        json.dump({"name": "rt20", "type": "bridge", "subnet": "10.84.0.0/24", "bridge": "rkt-rt20",
                   "ipMasq": False, "routes": []}, f)
    scribble = ("mount -o remount,bind,rw /etc/hosts; echo remount=$?; "
                "{ printf '10.84.0.250\\talpha evil\\n10.84.0.251 mallory alpha\\n'; "
                "head -c 100000 /dev/zero | tr '\\0' x; echo; } > /etc/hosts; echo wrote=$?; sleep 120")
    m = prepare.prepare(store, {"privileged": True, "apps": [
        {"image": "example.com/busybox", "name": "c", "exec": ["/bin/sh", "-c", scribble]}]}).pod
    with podmod.name_lock(store.dd, "mallory"):
        podmod.set_name(store.dd, "mallory", m.uuid)
    run.start_detached(m, net="rt20")
    deadline = time.monotonic() + 10
    while "wrote=" not in run.read_log(m, "c") and time.monotonic() < deadline:
        time.sleep(0.05)
    log = run.read_log(m, "c")
    assert "remount=0" in log and "wrote=0" in log, log  # the scribble happened
    a = start(store, "alpha", "sleep 120", "rt20", caps=())
    rc, hosts_a = in_pod(a, "cat /etc/hosts")
    assert rc == 0, hosts_a
    assert "%s\tmallory" % ip_of(m) in hosts_a, hosts_a
    assert "evil" not in hosts_a and "10.84.0.25" not in hosts_a and "xxxx" not in hosts_a, hosts_a
    rc, hosts_m = in_pod(m, "cat /etc/hosts")
    assert "%s\talpha" % ip_of(a) in hosts_m and "evil" not in hosts_m and "xxxx" not in hosts_m, hosts_m
    assert len(hosts_m) < 4096, len(hosts_m)


def test_an_apps_output_forges_no_journal_field(dd, tmp_path):
    # Lines with newlines and FIELD=value text, a carriage return, NUL bytes and a line far
    # past the cut: each line is one entry whose fields are the keeper's (the native
    # protocol's fields are newline-separated, and the keeper's lines hold none).
    from tests.support.ansible_run import module
    from tests.support.journald import JOURNALD, PrivateJournald

    if JOURNALD is None:
        pytest.fail("systemd-journald is not installed (Debian package systemd; tools/debian-packages.sh)")
    j = PrivateJournald(tmp_path).start()
    try:
        forged = "00000000-0000-0000-0000-000000000000"
        script = ("printf 'a\\nAPPC_POD_UUID=%s\\nSYSLOG_IDENTIFIER=victim/app\\nPRIORITY=0\\n'; "
                  "printf 'MESSAGE=x\\rAPPC_APP=victim\\000_PID=1\\n'; "
                  "head -c 200000 /dev/zero | tr '\\0' y; echo; echo done; exec sleep 1000" % forged)
        args = {"name": "rtj", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                "log_driver": "journald", "exec": ["/bin/sh", "-c", script]}
        r = module("pod_run", args, wrap=j.cmd([]))
        assert r["changed"], r
        uuid = r["pod"]["uuid"]
        deadline = time.monotonic() + 15
        entries = []
        while time.monotonic() < deadline:
            entries = j.entries("APPC_POD_UUID=%s" % uuid)
            if any(e.get("MESSAGE") == "done" for e in entries):
                break
            time.sleep(0.2)
        assert any(e.get("MESSAGE") == "done" for e in entries), entries[-3:]
        assert j.entries("APPC_POD_UUID=%s" % forged) == []
        assert j.entries("SYSLOG_IDENTIFIER=victim/app") == [] and j.entries("APPC_APP=victim") == []
        msgs = [e.get("MESSAGE") for e in entries]
        assert msgs[:4] == ["a", "APPC_POD_UUID=%s" % forged, "SYSLOG_IDENTIFIER=victim/app", "PRIORITY=0"], msgs[:5]
        for e in entries:
            assert e["SYSLOG_IDENTIFIER"] == "rtj/busybox" and e["PRIORITY"] == "6" and e["APPC_APP"] == "busybox", e
        # the 200000-byte line: cut in entries of the keeper's own (journalctl -o json shows a
        # field over 4096 bytes as null without --all), each with the keeper's fields above
        assert [m for m in msgs if m is None] and msgs[-1] == "done", msgs
        module("pod_run", {"name": "rtj", "state": "absent", "data_dir": dd}, wrap=j.cmd([]))
    finally:
        j.stop()
