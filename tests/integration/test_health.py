"""Healthchecks in real pods (busybox): the keeper probes through enter, pod_info reports,
pod_run state=healthy waits or fails with the probe's output, the OCI image's check is
imported and overridden, a timeout kills the probe's process group, on_failure=restart."""
import json
import os
import time

import pytest

from tests.support import pods
from tests.support.ansible_run import module
from tests.integration.test_oci import Layout, config_for, layer
from tests.integration.test_pod_modules import four_steps
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge, healthcheck, oci
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError, TimedOut
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

FAST = {"interval": "200ms", "timeout": 2, "retries": 2}


@pytest.fixture
def dd(tmp_path):
    d = str(tmp_path / "rocket")
    with Store(d) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    yield d
    pods.remove_all(DataDir(d))


def run_pod(dd, name, apps, state="running"):
    """A pod through the library (what the modules call), without Ansible's cost per step."""
    with Store(dd) as store:
        raw = {"apps": apps}
        out = converge.plan(store, store.dd, raw, name, None, state, {"net": "none"}, False)
        converge.apply(store, store.dd, out, raw, name, state, {"net": "none"}, stop_timeout=2)
        return out.pod


def health_of(pod, app, until, timeout=15.0):
    """pod.apps[].health of app once until(health) holds (polls the keeper's record)."""
    deadline = time.monotonic() + timeout
    while True:
        h = healthcheck.health(pod).get(app)
        if h and until(h):
            return h
        assert time.monotonic() < deadline, "health of %s never matched: %s" % (app, h)
        time.sleep(0.1)


def test_healthy_four_steps_probe_runs_as_the_app(dd):
    """state=healthy waits for the check; the probe has the app's uid, capabilities,
    no-new-privileges, seccomp and namespaces, not the keeper's."""
    args = {"name": "web", "image": "example.com/busybox", "net": "none", "data_dir": dd, "user": "1000",
            "state": "healthy", "wait_timeout": 30,
            "exec": ["/bin/sh", "-c", "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status > /tmp/app; "
                     "for n in mnt net pid; do readlink /proc/self/ns/$n; done >> /tmp/app; "
                     "sleep 1; touch /tmp/ready; exec sleep 1000"],
            "healthcheck": dict(FAST, start_period="20s", test="test -e /tmp/ready && id -u && cat /tmp/app && "
                                "grep -E '^(CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status && "
                                "for n in mnt net pid; do readlink /proc/self/ns/$n; done")}
    checked, applied = four_steps(args, "run")
    assert checked["diff"]["after"]["spec"]["apps"][0]["healthcheck"]["interval"] == 0.2
    h = applied["pod"]["apps"][0]["health"]
    assert h["status"] == "healthy" and h["failing_streak"] == 0, h
    assert h["check"]["test"][:2] == ["/bin/sh", "-c"] and h["check"]["source"] == "option"
    assert h["check"]["retries"] == 2 and h["check"]["start_period"] == 20
    lines = h["last"]["output"].splitlines()
    assert lines[0] == "1000", lines            # the app's user
    app_view, probe_view = lines[1:8], lines[8:15]
    assert app_view == probe_view, lines       # same capabilities, nnp, seccomp mode, namespaces
    assert "CapEff:\t0000000000000000" in lines and "NoNewPrivs:\t1" in lines
    assert h["last"]["exit_code"] == 0 and h["last"]["ended"] >= h["last"]["started"]
    assert not applied.get("failed") and not checked.get("failed"), applied


def test_unhealthy_app_fails_the_task_with_the_probe_output(dd):
    args = {"name": "sick", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "healthy",
            "exec": ["/bin/sh", "-c", "exec sleep 1000"],
            "healthcheck": dict(FAST, test=["CMD-SHELL", "echo db is down >&2; head -c 100000 /dev/zero | tr '\\0' x; exit 3"])}
    r = module("pod_run", args)
    assert r.get("failed") and "unhealthy" in r["msg"] and "db is down" in r["msg"], r
    assert r["changed"] is True and r["pod"]["state"] == "running"   # on_failure: none keeps it running
    h = r["pod"]["apps"][0]["health"]
    assert h["status"] == "unhealthy" and h["failing_streak"] >= 2 and h["last"]["exit_code"] == 3, h
    assert h["restarts"] == 0
    out = h["last"]["output"]    # bounded: the first 4096 bytes, and a note
    assert out.startswith("db is down\nxxx") and out.endswith("(output cut at 4096 bytes)") and len(out) < 4200, out[-100:]


def test_bad_values_are_named_and_leave_nothing(dd):
    for hc, field in (({"test": "true", "interval": "5 parsecs"}, "apps[0].healthcheck.interval"),
                      ({"test": "true", "retries": 0}, "apps[0].healthcheck.retries"),
                      ({"test": "true", "timeout": "10ms"}, "apps[0].healthcheck.timeout"),
                      ({"disable": True, "test": "true"}, "apps[0].healthcheck.test"),
                      ({"test": ["NONE", "x"]}, "apps[0].healthcheck.test"),
                      ({"test": "true", "on_failure": "kill"}, "apps[0].healthcheck.on_failure"),
                      ({"test": "true", "startperiod": 1}, "apps[0].healthcheck.startperiod"),
                      ({"interval": 1}, "apps[0].healthcheck.test")):   # the image brings none
        with pytest.raises(RocketError) as e:
            run_pod(dd, "bad", [{"image": "example.com/busybox", "exec": ["sleep", "1"], "healthcheck": hc}])
        assert field in str(e.value), (hc, str(e.value))
    with pytest.raises(RocketError) as e:
        run_pod(dd, "bad", [{"image": "example.com/busybox", "annotations": {healthcheck.ANNOTATION: "{}"}}])
    assert "apps[0].annotations" in str(e.value)
    assert not list(podmod.list_pods(DataDir(dd)))


def test_starting_during_start_period_and_timeout_kills_the_probe(dd):
    pod = run_pod(dd, "slow", [
        {"name": "warm", "image": "example.com/busybox", "exec": ["sleep", "1000"],
         "healthcheck": {"test": "echo warming; exit 1", "interval": "200ms", "retries": 1, "start_period": "1m"}},
        {"name": "hang", "image": "example.com/busybox", "exec": ["sleep", "1000"],
         "healthcheck": {"test": "echo begun; sleep 61 & sleep 62", "interval": "300ms", "timeout": "500ms",
                         "retries": 100}}])
    warm = health_of(pod, "warm", lambda h: h["last"] is not None)
    # A failure within start_period does not count while the app is still starting.
    assert warm["status"] == "starting" and warm["failing_streak"] == 0, warm
    assert warm["last"]["exit_code"] == 1 and warm["last"]["output"].strip() == "warming"
    with pytest.raises(TimedOut) as e:
        healthcheck.wait_healthy(pod, 1)
    assert "warm" in str(e.value) and "starting" in str(e.value) and "warming" in str(e.value)

    hang = health_of(pod, "hang", lambda h: h["last"] is not None)
    assert hang["status"] == "starting" and hang["failing_streak"] >= 1
    took = hang["last"]["ended"] - hang["last"]["started"]
    assert hang["last"]["exit_code"] == 137 and "timed out after 0.5s" in hang["last"]["output"], hang
    assert "begun" in hang["last"]["output"] and 0.4 < took < 3, hang
    # The probe's whole process group was killed: neither sleep survives in the pod.
    time.sleep(0.3)
    left = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        if cmd in (b"sleep\x0061\x00", b"sleep\x0062\x00"):
            left.append(pid)
    assert left == [] or all(_started_after(pid, hang["last"]["ended"]) for pid in left), left


def _started_after(pid, when):
    """A probe started after `when` may be running its own sleeps now: not a leftover."""
    with open("/proc/%s/stat" % pid) as f:
        ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        up = float(f.read().split()[0])
    return time.time() - up + ticks / os.sysconf("SC_CLK_TCK") > when - 0.05


def oci_busybox(tmp_path, dd, hc):
    """An OCI image of busybox whose config has a Healthcheck, imported into dd's store."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    l1 = layer(("bin", "dir"), ("bin/busybox", "file", busybox, {"mode": 0o755}), ("bin/sh", "sym", "busybox"),
               ("bin/sleep", "sym", "busybox"), ("tmp", "dir", b"", {"mode": 0o1777}))
    lay = Layout(tmp_path / "layout")
    lay.add(lay.image([l1], config_for([l1], Entrypoint=["/bin/sleep", "1000"], Env=["PATH=/bin"], Healthcheck=hc)),
            "example.com/checked:1")
    with Store(dd) as store:
        rec, dummy_changed = oci.import_oci(store, lay.root)
        return store.manifest(rec["id"])


def test_image_healthcheck_imported_and_overridden(dd, tmp_path):
    m = oci_busybox(tmp_path, dd, {"Test": ["CMD-SHELL", "echo from image"], "Interval": 200000000,
                                   "Timeout": 2000000000, "Retries": 2})
    ann = {a["name"]: a["value"] for a in m["annotations"]}
    assert json.loads(ann[healthcheck.ANNOTATION]) == {"test": ["/bin/sh", "-c", "echo from image"],
                                                       "interval": 0.2, "timeout": 2.0, "retries": 2}
    image = {"image": "example.com/checked", "name": "app"}
    pod = run_pod(dd, "img", [image])
    h = health_of(pod, "app", lambda h: h["status"] == "healthy")
    assert h["last"]["output"] == "from image\n" and h["check"]["source"] == "image", h
    assert h["check"]["start_period"] == 0 and h["check"]["on_failure"] == "none"   # docker's defaults fill in

    with Store(dd) as store:   # the comparison rule: a changed check replaces the pod
        out = converge.plan(store, store.dd, {"apps": [dict(image, healthcheck={"retries": 5})]}, "img", None,
                            "running", {"net": "none"}, True)
    assert out.action == "replace" and [d["field"] for d in out.differences] == ["apps[0].healthcheck"], out.reasons
    pod = run_pod(dd, "img", [dict(image, healthcheck={"retries": 5})])   # a field over the image's test
    h = health_of(pod, "app", lambda h: h["status"] == "healthy")
    assert h["check"]["source"] == "image+option" and h["check"]["retries"] == 5
    assert h["last"]["output"] == "from image\n"

    pod = run_pod(dd, "img", [dict(image, healthcheck={"test": ["CMD", "/bin/busybox", "echo", "from option"]})])
    h = health_of(pod, "app", lambda h: h["status"] == "healthy")
    assert h["last"]["output"] == "from option\n" and h["check"]["interval"] == 0.2, h

    pod = run_pod(dd, "img", [dict(image, healthcheck={"disable": True})])
    assert healthcheck.checked_apps(pod) == [] and healthcheck.health(pod) == {}
    with pytest.raises(RocketError) as e:
        healthcheck.wait_healthy(pod, 1)
    assert "no app" in str(e.value)


def test_on_failure_restart_restarts_the_pod(dd):
    pod = run_pod(dd, "flaky", [{"name": "app", "image": "example.com/busybox",
                                 "exec": ["/bin/sh", "-c", "echo started; exec sleep 1000"],
                                 "healthcheck": {"test": "exit 1", "interval": "200ms", "retries": 2,
                                                 "on_failure": "restart"}}])
    h = health_of(pod, "app", lambda h: h["restarts"] >= 1 and h["status"] == "starting", timeout=20)
    assert h["failing_streak"] == 0
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        d = converge.describe(pod)
        if d["state"] == "running" and d["apps"][0]["log"].count("started") >= 2:
            break
        time.sleep(0.2)
    assert d["state"] == "running" and d["apps"][0]["log"].count("started") >= 2, d
