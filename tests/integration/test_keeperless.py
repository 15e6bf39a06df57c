"""A pod that nothing restarts and nothing probes keeps no keeper once it runs (issue 19,
docs/decisions/keeper.md): its PID 1 is its only process beside its apps, and its logs, its
stop signals, its exit status and pod_info work as with a keeper."""
import os
import time

import pytest

from tests.support import pods
from tests.support.ansible_run import module
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import boot, converge, prepare, run

# SIGUSR1 is the app's stop signal: the app says which signal came, and exits 3.
APP = {"image": "example.com/busybox", "stop_signal": "SIGUSR1",
       "exec": ["/bin/sh", "-c", "echo hello; trap 'echo got-usr1; exit 3' USR1; "
                                 "while :; do sleep 0.1; done"]}


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir)


def _in_cgroup(uuid):
    """PIDs of every process in the pod's cgroup (any hierarchy: the keeper joins only cpu)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cgroup" % entry) as f:
                    if "/rocket/%s" % uuid in f.read():
                        out.add(int(entry))
            except OSError:
                pass
    return out


def _naming(uuid):
    """PIDs of every process whose command line names the pod (a keeper's, or PID 1's:
    forked from it, it keeps its command line)."""
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    if uuid.encode() in f.read().split(b"\0"):
                        out.add(int(entry))
            except OSError:
                pass
    return out


def _subtree(pid):
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _app_pid(pod):
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with open(pod.file("apps", "busybox", "pid")) as f:
                return int(f.read())
        except (OSError, ValueError):
            time.sleep(0.05)
    raise AssertionError("the app's pid was never written")


def _wait_log(pod, word, timeout=10):
    return pods.wait_log(pod, "busybox", word, timeout)


def test_restart_policy_no_pod_is_its_pid1_and_its_apps(store, data_dir):
    p = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(p.pod, net="none")
    app = _app_pid(p.pod)
    pods.wait_keeper_gone(p.pod)  # it started the pod, said `running`, and leaves
    assert "hello" in _wait_log(p.pod, "hello")
    apps = _subtree(app)
    # Everything of the pod: its cgroup, and whatever names it on its command line.
    beside = (_in_cgroup(p.pod.uuid) | _naming(p.pod.uuid)) - apps
    assert beside == {pid1}, (beside, pid1, apps)
    assert boot.keeper_pid(p.pod) == pid1  # a host shutdown's SIGTERM goes to PID 1 (boot.stop_all)
    assert p.pod.state() == "running"  # PID 1 holds the lock

    # pod_info, through the module, while it runs
    info = {x["uuid"]: x for x in module("pod_info", {"data_dir": data_dir})["pods"]}[p.pod.uuid]
    assert info["state"] == "running", info

    # the stop: the app's own stop signal, its exit status, logs written after the keeper left
    t0 = time.monotonic()
    assert run.stop(p.pod, timeout=10)
    assert time.monotonic() - t0 < 5  # the signal ended it: no wait for the stop timeout
    assert "got-usr1" in _wait_log(p.pod, "got-usr1", 2)
    ex = run.exit_info(p.pod)
    assert ex["exit_code"] == 3 and ex["apps"][0]["exit_code"] == 3, ex
    rec = p.pod.read_json("exit")
    assert rec["stopped_by_user"] is True and rec["stopped_by_host"] is False, rec
    assert rec["restart_policy"] == "no" and rec["restarts"] == 0, rec
    info = {x["uuid"]: x for x in module("pod_info", {"data_dir": data_dir})["pods"]}[p.pod.uuid]
    assert info["state"] == "exited" and info["exit_code"] == 3, info
    assert "got-usr1" in converge.describe(p.pod)["apps"][0]["log"]
    pods.reap(settle=0.2)


def test_a_pod_that_restarts_or_probes_keeps_its_keeper(store):
    """restart_policy always (and a healthcheck, whatever the policy): the keeper stays,
    PID 1's parent (it restarts the pod, it runs the probes)."""
    always = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(always.pod, net="none", restart_policy="always")
    probed = prepare.prepare(store, {"apps": [dict(APP, healthcheck={"test": ["/bin/true"], "interval": 5})]})
    pid1b = run.start_detached(probed.pod, net="none")
    try:
        for pod, pid in ((always.pod, pid1), (probed.pod, pid1b)):
            keeper = run._keepers[pod.uuid]
            with open("/proc/%d/stat" % pid) as f:
                assert int(f.read().rsplit(")", 1)[1].split()[1]) == keeper
    finally:
        assert run.stop_many([(always.pod, 5), (probed.pod, 5)]) == [True, True]
    pods.reap(settle=0.2)


def test_a_host_stop_of_a_pod_without_keeper_is_recorded_as_the_hosts(store):
    """SIGTERM to PID 1 with boot.stop_all's host mark and without stage0's stop mark: the
    exit record says the host stopped it, so that a boot restore brings back a boot pod."""
    p = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(p.pod, net="none")
    _app_pid(p.pod)
    pods.wait_keeper_gone(p.pod)  # gone: the SIGTERM goes to PID 1
    assert boot.keeper_pid(p.pod) == pid1
    assert boot.stop_all(store.dd, timeout=10) == {p.pod.uuid: "stopped"}  # the mark, then SIGTERM to PID 1
    assert run.wait(p.pod, 15)
    rec = p.pod.read_json("exit")
    assert rec["stopped_by_host"] is True and rec["stopped_by_user"] is False and rec["exit_code"] == 3, rec
    pods.reap(settle=0.2)
