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


def _parent(pid):
    with open("/proc/%d/stat" % pid) as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[1])


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
    deadline = time.monotonic() + 10
    while "dressed" not in run.read_log(attacker, "app") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "dressed" in run.read_log(attacker, "app")
    run.start_detached(victim, net="none")
    v = podmod.find(store.dd, victim.uuid)
    keeper = _parent(v.pid())
    # the dressed process exists and is listed before the keeper: the attack's precondition
    dressed = [int(e) for e in os.listdir("/proc") if e.isdigit() and e != str(keeper) and
               _cmdline(int(e))[-2:] == [b"keeper", victim.uuid.encode()]]
    assert dressed and min(dressed) < keeper, (dressed, keeper)
    found = boot.keeper_pid(v)
    assert found == keeper, (found, _cmdline(found), os.readlink("/proc/%d/cwd" % found), dressed)
    assert boot.keeper_pid(podmod.find(store.dd, attacker.uuid)) == _parent(podmod.find(store.dd, attacker.uuid).pid())


def _cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().rstrip(b"\0").split(b"\0")
    except OSError:
        return []
