"""Restart rules and stop signals for real, inside pods (busybox): on-failure:N, the
backoff, unless-stopped across a keeper restart, per-app stop signals and timeouts."""
import os
import signal
import time

import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge, prepare, restart, run


@pytest.fixture
def store(data_dir, image_dir):
    handlers = pods.busybox_aci(image_dir, name="example.com/busybox-post-stop", app={
        "exec": ["/bin/sh", "-c", "true"], "user": "0", "group": "0",
        "eventHandlers": [{"name": "post-stop", "exec": ["/bin/sh", "-c", "echo post-stop-ran"]}]},
        # what the OCI import keeps of a config's StopSignal (tests/integration/test_oci.py)
        annotations=[{"name": "appc.rocket/oci/stop-signal", "value": "SIGUSR1"}])
    yield from pods.busybox_store(data_dir, image_dir, handlers)


def sh(script, **kw):
    return dict({"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}, **kw)


def stamps(log, word):
    """The keeper's timestamps (seconds) of the log lines that end with word."""
    out = []
    for line in log.splitlines():
        stamp, dummy_sep, text = line.partition(" ")
        if text == word:
            t = time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S")
            out.append(time.mktime(t) + float("0" + stamp[19:-1]))
    return out


def test_on_failure_n_stops_after_n_restarts_and_backs_off(store):
    """on-failure:3 runs a failing pod 4 times, waiting 0.5 s, then 1 s, then 1 s (the cap)."""
    p = prepare.prepare(store, {"apps": [sh("echo run; exit 3")]})
    run.start_detached(p.pod, net="none", restart_policy="on-failure:3", restart_delay=0.5, restart_max_delay=1.0)
    assert run.wait(p.pod, 60)
    rec = p.pod.read_json("exit")
    assert rec["exit_code"] == 3 and rec["restarts"] == 3 and rec["restart_policy"] == "on-failure", rec
    assert rec["restart_retries"] == 3 and rec["stopped_by_user"] is False, rec
    starts = stamps(run.read_log(p.pod, "busybox"), "run")
    assert len(starts) == 4, starts  # the first run and 3 restarts, no more
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    # Each gap is the backoff plus a pod start; the starts cost the same, so the differences
    # show the doubling (0.5 -> 1) and the cap (1 -> 1, not 2).
    assert gaps[0] >= 0.45 and gaps[1] >= 0.95 and gaps[2] >= 0.95, gaps
    assert all(g < 4.0 for g in gaps), gaps
    assert gaps[1] - gaps[0] > 0.2 and abs(gaps[2] - gaps[1]) < 0.6, gaps
    desc = converge.describe(p.pod)
    assert desc["restart"] == {"policy": "on-failure", "retries": 3, "count": 3, "stopped_by_user": False}


def test_unless_stopped_survives_a_keeper_restart(store):
    """Kill a keeper by its PID: its pod stops (nobody would take its logs or exit), and the
    runtime's keeper restart (restart.resume_all, what a boot-time restore runs) brings it
    back with the same UUID, while the unless-stopped pod the user stopped stays stopped, an
    always pod the user stopped comes back and a pod of policy no does not (docker's rules)."""
    script = ("n=$(cat /v/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /v/n; echo run-$n; "
              "trap 'exit 0' TERM; while true; do sleep 0.1; done")

    def start(policy):
        p = prepare.prepare(store, {"apps": [sh(script, mounts=[{"volume": "v", "path": "/v"}])],
                                    "volumes": [{"name": "v", "kind": "empty"}]})
        run.start_detached(p.pod, net="none", restart_policy=policy)
        return p.pod

    killed, stopped, always, never = start("unless-stopped"), start("unless-stopped"), start("always"), start("no")
    assert run.stop(stopped, timeout=5) and run.stop(always, timeout=5)
    assert restart.record(stopped)["stopped_by_user"] is True
    for pod in (killed, never):
        keeper = run._keepers.pop(pod.uuid)
        # A pod of policy no keeps no keeper once it runs: its PID 1 is what there is to kill.
        os.kill(keeper if pod is killed else pod.pid(), signal.SIGKILL)
        os.waitpid(keeper, 0)
    for pod in (killed, never):
        assert run.wait(pod, 20), "the pod outlived its keeper"
        assert pod.state() == "exited"
    pods.reap(settle=0.1)  # its PID 1 came to us (a subreaper), as it would to the host's init

    resumed = restart.resume_all(store.dd, timeout=30)
    assert set(resumed) == {killed.uuid, always.uuid}, resumed
    assert "unless-stopped" in resumed[killed.uuid]
    for pod in (killed, always):
        pod.refresh()
        assert pod.state() == "running" and pod.dir_state == "run"
        deadline = time.time() + 10
        while "run-2" not in run.read_log(pod, "busybox") and time.time() < deadline:
            time.sleep(0.05)
        assert "run-2" in run.read_log(pod, "busybox")  # same pod, same volume: the second run
    for pod in (stopped, never):
        assert pod.state() == "exited" and "run-2" not in run.read_log(pod, "busybox")
    assert restart.record(killed) == {"policy": "unless-stopped", "retries": 0, "count": 1, "stopped_by_user": False}
    assert restart.resume_all(store.dd) == {}  # running pods and user-stopped ones: nothing to do
    for pod in (killed, always):
        assert run.stop(pod, timeout=5)
    assert restart.resume_all(store.dd) == {always.uuid: "restart_policy always"}
    assert run.stop(always, timeout=5)


def test_stop_signal_and_timeout_per_app(store):
    """Each app gets its own stop signal (the option's, or the image's OCI StopSignal, also
    through a supervisor that stays for post-stop); an app that ignores it is killed at its
    own timeout, not the pod's."""
    spec = {"apps": [
        sh("trap 'echo got-term' TERM; trap 'echo got-quit; exit 0' QUIT; echo ready; "
           "while true; do sleep 0.1; done", name="quit", stop_signal="SIGQUIT"),
        dict(sh("trap 'echo got-usr1; exit 0' USR1; echo ready; while true; do sleep 0.1; done",
                name="handled"), image="example.com/busybox-post-stop"),  # the image's StopSignal
        sh("trap 'echo ignored-term' TERM; echo ready; while true; do sleep 0.1; done",
           name="stubborn", stop_timeout=1),
        sh("trap 'echo got-term; exit 0' TERM; echo ready; while true; do sleep 0.1; done", name="plain"),
    ]}
    p = prepare.prepare(store, spec)
    run.start_detached(p.pod, net="none")
    deadline = time.time() + 10
    while time.time() < deadline and not all("ready" in run.read_log(p.pod, a) for a in ("quit", "handled", "stubborn", "plain")):
        time.sleep(0.05)
    t0 = time.monotonic()
    assert run.stop(p.pod, timeout=20) is True
    took = time.monotonic() - t0
    assert took < 6, took  # the stubborn app's own 1 s, not the pod's 20 s
    logs = {a: run.read_log(p.pod, a) for a in ("quit", "handled", "stubborn", "plain")}
    assert "got-quit" in logs["quit"] and "got-term" not in logs["quit"], logs
    assert "got-usr1" in logs["handled"] and "post-stop-ran" in logs["handled"], logs
    assert "ignored-term" in logs["stubborn"] and "got-term" in logs["plain"], logs
    apps = {a["name"]: a for a in converge.describe(p.pod)["apps"]}
    assert apps["quit"]["stop"]["signal"] == "SIGQUIT" and apps["quit"]["stop"]["killed"] is False
    assert apps["handled"]["stop"]["signal"] == "SIGUSR1" and apps["handled"]["exit_code"] == 0
    assert apps["stubborn"]["stop"] == dict(apps["stubborn"]["stop"], signal="SIGTERM", timeout=1.0, killed=True)
    assert apps["stubborn"]["signal"] == 9, apps["stubborn"]
    assert apps["plain"]["stop"]["timeout"] is None and apps["plain"]["exit_code"] == 0
    assert apps["plain"]["stop"]["sent"] >= apps["plain"]["started"]


def test_pod_run_four_steps_errors_and_pod_info(tmp_path):
    """The options through pod_run: check, apply, again, check; the diff names each option;
    bad values fail naming the option and leave nothing; pod_info shows what was applied."""
    from tests.support.ansible_run import module
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    from tests.integration.test_pod_modules import four_steps

    dd = str(tmp_path / "rocket")
    with Store(dd) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    base = {"name": "rs", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"], "net": "none",
            "data_dir": dd}
    try:
        assert module("pod_run", base)["changed"] is True
        changed = {"name": "rs", "net": "none", "data_dir": dd, "restart_policy": "on-failure:2",
                   "restart_delay": 0.5, "apps": [{"image": "example.com/busybox", "exec": ["/bin/sleep", "1000"],
                                                   "stop_signal": "QUIT", "stop_timeout": 3}]}
        checked, applied = four_steps(changed, "replace")
        assert set(checked["diff"]["after"]) == {"run.restart_policy", "run.restart_retries", "run.restart_delay",
                                                 "apps[0].stop_signal", "apps[0].stop_timeout"}, checked["diff"]
        assert checked["diff"]["after"]["apps[0].stop_signal"] == "SIGQUIT"
        pod = applied["pod"]
        assert pod["restart"] == {"policy": "on-failure", "retries": 2, "count": 0, "stopped_by_user": False}
        assert pod["apps"][0]["stop"] == {"signal": "SIGQUIT", "timeout": 3.0, "sent": None, "killed": None}
        # The same policy spelled as podman does: no change.
        same = dict(changed, restart_policy="on-failure", restart_retries=2)
        assert module("pod_run", same)["changed"] is False
        for bad, field in (({"restart_policy": "sometimes"}, "restart_policy"),
                           ({"restart_retries": 3}, "restart_retries"),
                           ({"restart_max_delay": 0.1}, "restart_max_delay"),
                           ({"apps": [dict(changed["apps"][0], stop_signal="STOP")]}, "apps[0].stop_signal")):
            r = module("pod_run", dict(changed, **bad))
            assert r.get("failed") and r["msg"].startswith(field + ":"), r
        r = module("pod_run", dict(changed, state="exited"))
        assert r["changed"] is True
        info = module("pod_info", {"name": "rs", "data_dir": dd})["pods"][0]
        assert info["restart"]["stopped_by_user"] is True and info["state"] == "exited"
        assert info["apps"][0]["stop"]["sent"] and info["apps"][0]["signal"] == signal.SIGQUIT
    finally:
        module("pod_run", {"name": "rs", "state": "absent", "data_dir": dd})
