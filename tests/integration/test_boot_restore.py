"""The boot restore program on this machine: pods of a host that crashed come back when the
installed program (the zip the runtime role copies, run by python3 alone) runs, and its
orderly stop leaves them for the next boot. The host crash is simulated: every process of
the pods is killed by PID and what a reboot empties in /run (this network namespace's
firewall registry and nft table, the data directory's subnet claims) is removed.

Run through tools/isolated.sh (its own network namespace: the test removes the nft table).
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support import ROOT, pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge, ipam, prepare, restart, run
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import firewall

HTTPD = {"exec": ["/bin/sh", "-c", "mkdir -p /www && echo hello-$(cat /v/n 2>/dev/null) > /www/index.html && "
                  "exec httpd -f -p 80 -h /www"], "user": "0", "group": "0",
         "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}
COUNT = ("n=$(cat /v/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /v/n; echo run-$n; "
         "trap 'echo got-term; exit 0' TERM; while true; do sleep 0.1; done")


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(
        data_dir, image_dir, pods.busybox_aci(image_dir, name="example.com/httpd", app=HTTPD),
        pods.busybox_aci(image_dir, name="example.com/busybox-post-stop", app={
            "exec": ["/bin/sh", "-c", "true"], "user": "0", "group": "0",
            "eventHandlers": [{"name": "post-stop", "exec": ["/bin/sh", "-c", "echo post-stop-ran"]}]}))


@pytest.fixture(scope="module")
def program(tmp_path_factory):
    """The program as the runtime role builds it (roles/runtime/files/pods_program.py)."""
    out = tmp_path_factory.mktemp("program")
    p = subprocess.run([sys.executable, os.path.join(ROOT, "roles", "runtime", "files", "pods_program.py"), ROOT,
                        str(out)], capture_output=True, text=True, check=True)
    return json.loads(p.stdout)["path"]


def program_run(program, *args):
    """python3 alone, isolated from site-packages: what the unit runs."""
    t0 = time.monotonic()
    p = subprocess.run(["/usr/bin/python3", "-I", "-S", program] + list(args), capture_output=True, text=True,
                       timeout=120, check=False)
    assert p.returncode == 0, (p.stdout, p.stderr)
    return p.stdout, p.stderr, time.monotonic() - t0


def sh(script, **kw):
    return dict({"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}, **kw)


def start(store, apps, net="none", boot=False, policy="no", **spec):
    p = prepare.prepare(store, dict({"apps": apps, "volumes": [{"name": "v", "kind": "empty"}]}, **spec)).pod
    run.start_detached(p, net=net, restart_policy=policy, boot=boot)
    return p


def wait_log(pod, app, word, timeout=10.0):
    deadline = time.monotonic() + timeout
    while word not in run.read_log(pod, app) and time.monotonic() < deadline:
        time.sleep(0.05)
    return word in run.read_log(pod, app)


def fetch(port, timeout=10.0):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                return s.makefile("rb").read().decode()
        except OSError:
            if time.monotonic() > deadline:
                return ""
            time.sleep(0.1)


def crash(store, alive):
    """What a power cut does to the pods: every process of theirs gone at once (SIGKILL by
    PID: the keeper, then PID 1, whose death takes the pod's PID namespace), no exit
    recorded; then what the reboot empties in /run."""
    for p in alive:
        keeper = run._keepers.pop(p.uuid, None)
        pid1 = p.pid()
        for pid in (keeper, pid1):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    for p in alive:
        assert run.wait(p, 20), "pod %s outlived its processes" % p.uuid
    pods.reap(settle=0.2)
    subprocess.run(["nft", "delete", "table", "ip", firewall.TABLE], capture_output=True, check=False)
    reg = os.path.join(firewall.REGISTRY, str(os.stat("/proc/self/ns/net").st_ino))
    subprocess.run(["rm", "-rf", reg], check=True)
    if os.path.isdir(ipam.SUBNETS):
        for name in os.listdir(ipam.SUBNETS):
            path = os.path.join(ipam.SUBNETS, name)
            try:
                with open(path) as f:
                    if f.readline().strip() == store.dd.path:
                        os.unlink(path)
            except (IsADirectoryError, FileNotFoundError):
                pass


def test_restore_after_a_crash_and_after_an_orderly_stop(store, program):
    dd = store.dd.path
    booted = start(store, [sh(COUNT, mounts=[{"volume": "v", "path": "/v"}], name="app")], boot=True)
    unless = start(store, [sh(COUNT, mounts=[{"volume": "v", "path": "/v"}], name="app")], policy="unless-stopped")
    web = start(store, [dict(image="example.com/httpd", name="web", mounts=[{"volume": "v", "path": "/v"}])],
                net="default", policy="always", ports=[{"name": "http", "host_port": 18191}])
    never = start(store, [sh(COUNT, mounts=[{"volume": "v", "path": "/v"}], name="app")])
    done = start(store, [sh("echo job-done", name="app")], boot=True)  # exits on its own
    user = start(store, [sh(COUNT, mounts=[{"volume": "v", "path": "/v"}], name="app")], boot=True)
    handler = start(store, [dict(sh(COUNT, mounts=[{"volume": "v", "path": "/v"}], name="app"),
                                 image="example.com/busybox-post-stop")], boot=True)
    assert run.wait(done, 20) and done.state() == "exited"
    assert run.stop(user, timeout=5)
    addr = json.load(open(web.file("net-info.json")))[0]["ip"]
    assert "hello-" in fetch(18191)
    alive = [booted, unless, web, never, handler]
    for p in (booted, unless, never, handler):
        assert wait_log(p, "app", "run-1")

    crash(store, alive)
    for p in alive + [done, user]:
        assert p.state() == "exited"
    assert fetch(18191, timeout=0.5) == ""

    out, err, took = program_run(program, "restore", "--data-dir", dd)
    print("restore of 4 pods after the crash: %.2fs\n%s" % (took, out))
    back = {booted.uuid, unless.uuid, web.uuid, handler.uuid}
    for p in (booted, unless, web, handler):
        assert "restored pod %s" % p.uuid in out, out
    assert "boot: true and it was running when the host went down" in out
    assert "restore %s: 4 pod(s)" % dd in out and err == "", (out, err)
    for p in (booted, unless, web, handler, never, done, user):
        p.refresh()
        assert p.state() == ("running" if p.uuid in back else "exited"), p.uuid
        assert p.dir_state == "run"
    for p in (booted, unless, handler):  # same pod, same volume: the second run
        assert wait_log(p, "app", "run-2"), run.read_log(p, "app")
    assert "run-2" not in run.read_log(never, "app") and "run-2" not in run.read_log(user, "app")
    assert json.load(open(web.file("net-info.json")))[0]["ip"] == addr
    assert "hello-" in fetch(18191)  # the port forward is back: the nft table was made again
    assert converge.describe(booted)["restart"]["count"] == 1

    # The orderly shutdown: each pod its stop signal and post-stop handler, the host's stop
    # (not the user's) recorded, so the next boot brings them back; user-stopped stays down.
    out, err, took = program_run(program, "stop", "--data-dir", dd)
    print("orderly stop of 4 pods: %.2fs\n%s" % (took, out))
    assert err == "" and "stop %s: 4 pod(s)" % dd in out, (out, err)
    assert "killed" not in out, out
    for p in (booted, unless, web, handler):
        assert p.state() == "exited"
        rec = p.read_json("exit")
        assert rec["stopped_by_host"] is True and rec["stopped_by_user"] is False, rec
    assert "got-term" in run.read_log(booted, "app")
    assert "post-stop-ran" in run.read_log(handler, "app")
    out, err, took = program_run(program, "restore", "--data-dir", dd)
    assert "restore %s: 4 pod(s)" % dd in out and "a host shutdown stopped it" in out, out
    for p in (booted, unless, web, handler):
        assert p.state() == "running"
    assert wait_log(booted, "app", "run-3")
    assert "hello-" in fetch(18191)
    # Running pods: a restore has nothing to do.
    out, err, took = program_run(program, "restore", "--data-dir", dd)
    assert "restore %s: 0 pod(s)" % dd in out, out
    # A user's stop still wins over boot: true.
    assert run.stop(booted, timeout=5)
    assert restart.resume(booted) is None
    for p in (unless, web, handler):
        assert run.stop(p, timeout=5)
    pods.reap(settle=0.1)


def test_the_program_refuses_bad_arguments(program):
    for args in ([], ["reboot"], ["restore", "--data-dir"], ["stop", "--timeout", "soon"], ["restore", "-x"]):
        p = subprocess.run(["/usr/bin/python3", "-I", "-S", program] + args, capture_output=True, text=True,
                           timeout=60, check=False)
        assert p.returncode == 2 and p.stdout == "", (args, p.stdout, p.stderr)
        assert "usage: appc-rocket-pods" in p.stderr or "--timeout" in p.stderr, (args, p.stderr)


def test_boot_option_four_steps_and_errors(tmp_path):
    """boot through pod_run: check, apply, again, check; the diff names it; keeper.json says
    it for a pod of policy no; a bad value fails naming the option and leaves nothing."""
    from tests.support.ansible_run import module
    from tests.integration.test_pod_modules import four_steps
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    dd = str(tmp_path / "rocket")
    with Store(dd) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    base = {"name": "bt", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"], "net": "none",
            "data_dir": dd}
    try:
        assert module("pod_run", base)["changed"] is True
        checked, applied = four_steps(dict(base, boot=True), "replace")
        assert checked["diff"]["after"] == {"run.boot": True} and checked["diff"]["before"] == {"run.boot": False}
        with open(os.path.join(dd, "pods", "run", applied["pod"]["uuid"], restart.KEEPER_ARGS)) as f:
            assert json.load(f)["boot"] is True
        r = module("pod_run", dict(base, boot="sometimes"))
        assert r.get("failed") and "boot" in r["msg"], r
        assert module("pod_run", dict(base, boot=True))["changed"] is False
    finally:
        module("pod_run", {"name": "bt", "state": "absent", "data_dir": dd})
    assert module("pod_info", {"data_dir": dd})["pods"] == []
