"""A detached pod's PID 1 execs a lean interpreter once every app runs (issue 19's memory goal,
stage1/pid1.py): same PID, same children, lock and pipes; the set-up's modules are gone; and
a stop's SIGTERM, logs, exit records and the host's shutdown work as before."""
import os
import sys
import time

from tests.support import pods
# The keeper-less pod's app (it says which signal came, and exits 3) and its store fixture.
from tests.integration.test_keeperless import APP, store  # noqa: F401  # pylint: disable=unused-import
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import boot, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare


def _argv(pid):
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        return f.read().rstrip(b"\0").split(b"\0")


NAME = os.path.basename(sys.executable)[:15]  # PID 1's name: the keeper's, this interpreter's


def _comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip()


def wait_lean(pid, timeout=10.0):
    """PID 1's command line once it runs the lean loop (pid1.LEAN_AFTER after `running`)
    and has taken its state over (its name, which exec changed, is back)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        argv = _argv(pid)
        if len(argv) > 4 and argv[4].endswith(b"/pid1") and _comm(pid) == NAME:
            time.sleep(0.2)  # its loop is up
            return argv
        time.sleep(0.05)
    raise AssertionError("PID 1 never went lean: %r" % _argv(pid))


def _uss_kib(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        fields = dict(line.split(":", 1) for line in f if ":" in line and not line.startswith(" "))
    return sum(int(fields.get(k, "0 kB").split()[0]) for k in ("Private_Clean", "Private_Dirty"))


def _fds(pid):
    out = {}
    for n in os.listdir("/proc/%d/fd" % pid):
        try:
            out[int(n)] = os.readlink("/proc/%d/fd/%s" % (pid, n))
        except OSError:
            pass
    return out


def test_a_keeperless_pod_goes_lean_and_still_stops_logs_and_records(store):
    p = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(p.pod, net="none")
    pods.wait_keeper_gone(p.pod)
    argv = wait_lean(pid1)
    # its own keeper on the command line (boot.keeper_pid finds it for a host shutdown)
    assert argv[5] == p.pod.uuid.encode() and argv[7:] == [b"--keeps"], argv
    assert boot.keeper_pid(p.pod) == pid1
    assert p.pod.pid() == pid1 and p.pod.state() == "running"  # same PID, the lock still held
    assert _comm(pid1) == NAME, _comm(pid1)  # its name before the exec
    # Only what it keeps: stdio, the lock, the pipes it pumps, the stage1 tree, the
    # wakeup pipe; no namespace, cgroup or set-up fd came through the exec.
    fds = _fds(pid1)
    kinds = sorted(set(t.split(":")[0] if ":" in t else "file" for n, t in fds.items() if n > 2))
    assert set(kinds) <= {"pipe", "file"}, sorted(fds.items())
    assert sum(1 for t in fds.values() if "anon_inode" in t or "memfd" in t) == 0, fds
    # the set-up's modules are not loaded: its USS is the interpreter's, well under the
    # 4.4 MiB of a PID 1 that kept them (docs/performance.md, Memory)
    assert _uss_kib(pid1) < 3800, _uss_kib(pid1)
    assert "hello" in pods.wait_log(p.pod, "busybox", "hello")

    t0 = time.monotonic()
    assert run.stop(p.pod, timeout=10)
    assert time.monotonic() - t0 < 5  # the app's own stop signal ended it, no timeout
    assert "got-usr1" in pods.wait_log(p.pod, "busybox", "got-usr1", 2)
    ex = run.exit_info(p.pod)
    assert ex["exit_code"] == 3 and ex["apps"][0]["exit_code"] == 3, ex
    rec = p.pod.read_json("exit")
    assert rec["stopped_by_user"] is True and rec["restart_policy"] == "no", rec
    assert p.pod.read_json("apps/busybox/stop.json")["signal"] == 10
    pods.reap(settle=0.2)


def test_a_sigterm_in_the_exec_window_is_not_lost(store):
    """The stop's SIGTERM right after PID 1's exec, before the lean loop has handlers (its
    name is still the one exec gave, which it replaces before it sets them): blocked
    before the exec, it stays pending and is handled once they are set. Unblocked, the
    default disposition would apply, and a namespace's PID 1 drops the signal: the pod
    would go on running."""
    p = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(p.pod, net="none")
    deadline = time.monotonic() + 10
    path = "/proc/%d/cmdline" % pid1
    while time.monotonic() < deadline:
        with open(path, "rb") as f:
            if b"/pid1\0" in f.read():
                break
    os.kill(pid1, 15)  # what stop sends (without the mark: the app's stop signal all the same)
    in_window = _comm(pid1) != NAME
    assert run.wait(p.pod, 8), "PID 1 did not end on the SIGTERM sent as it exec'd"
    if NAME != os.path.basename(os.path.realpath(sys.executable))[:15]:  # else exec's name is the same
        assert in_window, "the SIGTERM came after the lean loop's handlers: the window was missed"
    assert "got-usr1" in pods.wait_log(p.pod, "busybox", "got-usr1", 2)
    assert run.exit_info(p.pod)["exit_code"] == 3
    pods.reap(settle=0.1)


def test_a_pod_with_a_keeper_goes_lean_too(store):
    p = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(p.pod, net="none", restart_policy="always")
    try:
        argv = wait_lean(pid1)
        assert b"--keeps" not in argv  # the keeper keeps the pod, and is what keeper_pid finds
        assert boot.keeper_pid(p.pod) == run._keepers[p.pod.uuid]
        assert _uss_kib(pid1) < 3800, _uss_kib(pid1)
    finally:
        assert run.stop(p.pod, timeout=10)
    ex = run.exit_info(p.pod)
    assert ex["exit_code"] == 3 and ex["apps"][0]["exit_code"] == 3, ex
    assert "got-usr1" in pods.wait_log(p.pod, "busybox", "got-usr1", 2)
    pods.reap(settle=0.2)


def test_a_killed_pid1_leaves_a_status_that_says_so(store):
    """Nothing is left to record the end of a keeper-less pod whose PID 1 is SIGKILLed (the
    OOM killer, a user's kill -9), and the kernel kills every app with it. pod_info must not
    show a pod that ended without a word (exit code and error both null, as before): each
    app gets SIGKILL and the cause; a pod that ran before this boot, that the host went
    down; one the user stopped, that the stop killed it."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import contract

    p = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(p.pod, net="none")
    pods.wait_keeper_gone(p.pod)
    wait_lean(pid1)
    assert run.exit_info(p.pod)["apps"][0]["error"] is None  # running: nothing lost
    os.kill(pid1, 9)
    assert run.wait(p.pod, 10)
    pods.reap(settle=0.2)
    assert not os.path.exists(p.pod.file(contract.EXIT))
    app = converge.describe(p.pod)["apps"][0]
    assert app["signal"] == 9 and "outside the pod" in app["error"], app
    assert "OOM killer killed it" not in app["error"], app  # no OOM kill counted: not said
    assert app["exit_code"] is None
    p.pod.move("exited-garbage")  # what gc's mark does to an exited pod: still said
    app = converge.describe(p.pod)["apps"][0]
    assert app["signal"] == 9 and "outside the pod" in app["error"], app
    # the same pod as seen after a reboot: it ran before the host booted
    os.utime(p.pod.file(contract.PID), (1, 1))
    app = run.exit_info(p.pod)["apps"][0]
    assert app["signal"] is None and "host went down" in app["error"], app
    os.utime(p.pod.file(contract.PID))
    with open(p.pod.file(contract.STOPPING), "w") as f:
        f.write("timeout=1\n")
    app = run.exit_info(p.pod)["apps"][0]
    assert app["signal"] == 9 and "the stop killed" in app["error"], app
    # what was recorded stays as it was: only a missing status is explained
    p.pod.write_json(contract.app_status("busybox"), {"exit_code": 0, "signal": None})
    app = run.exit_info(p.pod)["apps"][0]
    assert app["exit_code"] == 0 and app["error"] is None and app["signal"] is None, app


# Joins the memory cgroup given, then takes memory until the OOM killer ends it.
HOG = """
import os, sys, time
with open(sys.argv[1], "w") as f:
    f.write(str(os.getpid()))
held = [b"x" * (8 << 20) for dummy in range(int(sys.argv[2]))]
time.sleep(30)
"""


def test_a_pid1_the_oom_killer_took_says_so(store):
    """A keeper-less PID 1 killed by the OOM killer: its status names the OOM killer, from the
    memory counters of stage1's cgroup. The OOM is real: a hog joins that cgroup under a
    limit, and PID 1's oom_score_adj (raised, which needs no capability) makes it the victim."""
    import subprocess

    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups

    p = prepare.prepare(store, {"apps": [APP]})
    pid1 = run.start_detached(p.pod, net="none")
    pods.wait_keeper_gone(p.pod)
    wait_lean(pid1)
    cg = cgroups.PodCgroups(p.pod.uuid)
    root = cg._controller_root("memory")
    assert root is not None, "this host has no memory controller: the test cannot make an OOM"
    leaf = os.path.join(cg.pod_dir(root), cgroups.STAGE1_LEAF)
    v2 = root == cg.v2
    with open(os.path.join(leaf, "memory.current" if v2 else "memory.usage_in_bytes")) as f:
        limit = int(f.read()) + (32 << 20)
    for name in (("memory.max",) if v2 else ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes")):
        if os.path.exists(os.path.join(leaf, name)):
            with open(os.path.join(leaf, name), "w") as f:
                f.write(str(limit))
    assert cg.oom_kills(cgroups.STAGE1_LEAF) == 0
    with open("/proc/%d/oom_score_adj" % pid1, "w") as f:
        f.write("1000")
    hog = subprocess.Popen([sys.executable, "-c", HOG, os.path.join(leaf, "cgroup.procs"), "32"])
    try:
        assert run.wait(p.pod, 30), "PID 1 was not killed"
    finally:
        hog.kill()
        hog.wait(10)
    pods.reap(settle=0.2)
    assert cg.oom_kills(cgroups.STAGE1_LEAF) >= 1
    app = converge.describe(p.pod)["apps"][0]
    assert app["signal"] == 9 and "OOM killer killed it" in app["error"], app
