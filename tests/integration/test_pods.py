"""stage0 pods for real: prepare, run (foreground and detached), enter, stop, gc."""
import os
import time

import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import (
    AmbiguousError, ImageError, RocketError, ValidationError)


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir)


def pod_dirs(store):
    return {s: os.listdir(store.dd.pod_state_dir(s)) for s in ("embryo", "prepare", "prepared", "run", "garbage")}


def no_pods(store):
    return all(v == [] for v in pod_dirs(store).values())


def sh(script, **kw):
    return dict({"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}, **kw)


def test_foreground_pod_exit_code_and_ace_env(store, capfd):
    p = prepare.prepare(store, {"apps": [sh("echo name=$AC_APP_NAME container=$container path=$PATH; exit 3",
                                            name="first")]})
    assert p.pod.dir_state == "prepared" and p.info["overlay"] is True
    rc = run.run_foreground(p.pod, net="none")
    out = capfd.readouterr().out
    assert rc == 3
    assert "name=first container=rocket path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" in out
    p.pod.refresh()
    assert p.pod.state() == "exited"
    info = run.exit_info(p.pod)
    assert info["apps"][0]["exit_code"] == 3


def test_detached_pod_enter_logs_stop_post_stop_gc(store):
    image = store.find("example.com/busybox")
    spec = {"name": "web", "apps": [dict(sh("echo started; trap 'echo got-term; exit 0' TERM; "
                                            "while true; do sleep 0.05; done"), name="web")],
            "volumes": [{"name": "data", "kind": "empty", "mode": "0777"}]}
    spec["apps"][0]["mounts"] = [{"volume": "data", "path": "/data"}]
    p = prepare.prepare(store, spec)
    pid = run.start_detached(p.pod, net="none")
    assert pid > 0 and p.pod.state() == "running"
    rc, out, err = enter(p.pod, "web", ["/bin/sh", "-c", "echo entered $AC_APP_NAME $SECRET; echo x > /data/f"],
                         environment={"SECRET": "s3cret"})
    assert rc == 0, err
    assert out == b"entered web s3cret\n"
    rc, out, dummy_err = enter(p.pod, None, ["/bin/sh", "-c", "exit 7"])
    assert rc == 7
    assert run.stop(p.pod, timeout=10) is True
    assert p.pod.state() == "exited"
    log = run.read_log(p.pod, "web")
    assert "started" in log and "got-term" in log
    line = log.splitlines()[0]
    assert line[4] == "-" and line.endswith(" started")  # timestamped
    info = run.exit_info(p.pod)
    assert info["apps"][0]["exit_code"] == 0 and info["apps"][0]["image_id"] == image["id"]
    report = pod_gc.gc(store.dd, grace=0)
    assert p.pod.uuid in report["marked"] and p.pod.uuid in report["removed"], report
    assert no_pods(store)
    # Running, entering and collecting a pod wrote nothing into the shared stage1 tree.
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import store_gc

    assert store_gc.check(store) == []


def test_exec_by_name_is_looked_up_in_path(store, capfd):
    p = prepare.prepare(store, {"apps": [{"image": "example.com/busybox", "exec": ["sh", "-c", "echo via-path"]}]})
    assert run.run_foreground(p.pod, net="none") == 0
    assert "via-path" in capfd.readouterr().out


def test_missing_binary_is_a_start_failure_with_cause(store):
    p = prepare.prepare(store, {"apps": [{"image": "example.com/busybox", "exec": ["/bin/nope"]}]})
    with pytest.raises(run.StartError, match="exec /bin/nope: No such file or directory"):
        run.start_detached(p.pod, net="none")
    p.pod.refresh()
    assert p.pod.state() == "exited"


def test_environment_precedence_and_exec_append(store, capfd, image_dir):
    store.import_file(pods.busybox_aci(image_dir, name="example.com/envy", app={
        "exec": ["/bin/sh", "-c", 'echo "A=$A B=$B C=$C H=$ROCKET_TEST_HOST args=$*"', "sh"], "user": "0", "group": "0",
        "environment": [{"name": "A", "value": "image"}, {"name": "B", "value": "image"}]}))
    os.environ["ROCKET_TEST_HOST"] = "host"
    os.environ["A"] = "host"
    try:
        p = prepare.prepare(store, {"apps": [{"image": "example.com/envy", "exec_append": ["x", "y"],
                                              "environment": {"C": "app"}}],
                                    "environment": {"B": "explicit"}, "inherit_env": True})
    finally:
        del os.environ["ROCKET_TEST_HOST"], os.environ["A"]
    assert run.run_foreground(p.pod, net="none") == 0
    out = capfd.readouterr().out
    assert "A=image B=explicit C=app H=host args=x y" in out


def test_prepare_errors_leave_nothing(store, tmp_path, image_dir):
    store.import_file(pods.busybox_aci(image_dir, name="example.com/noapp", app={"exec": ["/bin/true"], "user": "0", "group": "0"}))
    bad = [
        ({"apps": [sh("true", name="a"), sh("true", name="a")]}, ValidationError, "unique"),
        ({"apps": [dict(sh("true"), mounts=[{"volume": "nope", "path": "/x"}])]}, ValidationError, "names no volume"),
        ({"apps": [sh("true")], "volumes": [{"name": "v", "kind": "host", "source": str(tmp_path / "missing")}]},
         ValidationError, "does not exist"),
        ({"apps": [{"image": "example.com/nowhere"}]}, RocketError, "example.com/nowhere"),
    ]
    link = tmp_path / "link"
    os.symlink("/etc", link)
    bad.append(({"apps": [sh("true")], "volumes": [{"name": "v", "kind": "host", "source": str(link)}]},
                ValidationError, "symlink"))
    for spec, exc, text in bad:
        with pytest.raises(exc, match=text):
            prepare.prepare(store, spec)
        assert no_pods(store), (spec, pod_dirs(store))


def test_image_without_app_needs_exec(store, tmp_path):
    from tests.support import images

    path, dummy = images.build(tmp_path, name="example.com/bare", app=False)
    store.import_file(path)
    with pytest.raises(ImageError, match="has no app"):
        prepare.prepare(store, {"apps": [{"image": "example.com/bare"}]})
    assert no_pods(store)


def test_two_apps_share_a_volume_and_implicit_volume(store, capfd, image_dir):
    store.import_file(pods.busybox_aci(image_dir, name="example.com/mp", app={
        "exec": ["/bin/sh", "-c", "touch /state/ok && echo mp-ok"], "user": "0", "group": "0",
        "mountPoints": [{"name": "state", "path": "/state"}]}))
    spec = {"apps": [sh("echo shared > /v/file", name="writer", mounts=[{"volume": "v", "path": "/v"}]),
                     sh("for i in 1 2 3 4 5 6 7 8 9 10; do [ -f /v/file ] && break; sleep 0.1; done; cat /v/file",
                        name="reader", mounts=[{"volume": "v", "path": "/v"}]),
                     {"image": "example.com/mp", "name": "mp"}],
            "volumes": [{"name": "v", "kind": "empty"}]}
    p = prepare.prepare(store, spec)
    assert any(v["name"] == "mp-state" for v in p.manifest["volumes"])
    assert run.run_foreground(p.pod, net="none") == 0
    out = capfd.readouterr().out
    assert "shared" in out and "mp-ok" in out


def test_uuid_prefix_lookup(store):
    by_prefix = {}
    for dummy in range(120):  # random UUIDs: two soon share their first two hex digits
        p = prepare.prepare(store, {"apps": [sh("true")]}).pod
        by_prefix.setdefault(p.uuid[:2], []).append(p.uuid)
        if len(by_prefix[p.uuid[:2]]) > 1:
            break
    shared = next(k for k, v in by_prefix.items() if len(v) > 1)
    first = by_prefix[shared][0]
    assert podmod.find(store.dd, first[:8]).uuid == first
    with pytest.raises(AmbiguousError) as e:
        podmod.find(store.dd, shared)
    assert set(by_prefix[shared]) <= set(e.value.candidates)
    with pytest.raises(RocketError):
        podmod.find(store.dd, "zz")


def test_a_pod_moved_by_another_process_before_it_is_locked_is_followed(store):
    """The soak's race, made deterministic: one process finds the pod, another moves it,
    then the first locks and removes it (it used to fail with a raw FileNotFoundError)."""
    p = prepare.prepare(store, {"apps": [sh("true")]}).pod
    mine = podmod.find(store.dd, p.uuid)
    assert mine.dir_state == "prepared"
    theirs = podmod.find(store.dd, p.uuid)
    assert theirs.take_lock()
    theirs.move("garbage")
    theirs.release()
    assert mine.take_lock() and mine.dir_state == "garbage"
    mine.release()
    pod_gc.remove(podmod.find(store.dd, p.uuid))
    with pytest.raises(podmod.NotFoundError):
        mine.take_lock()
    with pytest.raises(podmod.NotFoundError):
        pod_gc.remove(mine)
    assert no_pods(store)


def test_copy_fallback_without_overlay(store, capfd):
    p = prepare.prepare(store, {"apps": [sh("echo copied > /tmp/x && cat /tmp/x")], "overlay": False})
    assert p.info["overlay"] is False and p.info["copy_reason"]
    assert run.run_foreground(p.pod, net="none") == 0
    assert "copied" in capfd.readouterr().out


def test_prepare_is_constant_cost_with_rendered_trees(store):
    """Prepare writes small files only: no copy of the image (overlay)."""
    p = prepare.prepare(store, {"apps": [sh("true")]})
    total = 0
    for root, dirs, files in os.walk(p.pod.path):
        total += sum(os.lstat(os.path.join(root, f)).st_size for f in files)
    assert total < 256 * 1024, total


def test_stale_run_pod_after_reboot_is_exited_and_collected(store):
    p = prepare.prepare(store, {"apps": [sh("true")]}).pod
    # A reboot leaves a pod in run/ with nobody holding its lock.
    os.rename(p.path, os.path.join(store.dd.pod_state_dir("run"), p.uuid))
    p.refresh()
    assert p.dir_state == "run" and p.state() == "exited"
    pod_gc.gc(store.dd, grace=0)
    assert no_pods(store)


def test_gc_twice_at_once(store):
    import threading

    uuids = []
    for dummy in range(3):
        p = prepare.prepare(store, {"apps": [sh("true")]}).pod
        run.run_foreground(p, net="none")
        uuids.append(p.uuid)
    errors = []

    def go():
        try:
            pod_gc.gc(store.dd, grace=0)
        except Exception as e:  # noqa: BLE001 - the test reports any failure
            errors.append(e)

    ts = [threading.Thread(target=go) for dummy in range(2)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert errors == []
    assert no_pods(store)


def test_interactive_passes_the_terminal_through(store):
    """The seed's Interactive: the app gets our terminal as its stdin, stdout and console."""
    import pty
    import select

    p = prepare.prepare(store, {"apps": [sh('[ -t 0 ] && echo stdin-is-a-tty; read line; echo "got=$line"; exit 4')]})
    pid, master = pty.fork()
    if pid == 0:  # the child: run the pod on the pty, then leave without pytest's cleanup
        try:
            rc = run.run_foreground(p.pod, net="none", interactive=True)
        except BaseException:
            rc = 99
        os._exit(rc)
    out = b""
    sent = False
    deadline = time.time() + 30
    try:
        while time.time() < deadline:
            r, dummy_w, dummy_x = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                out += chunk
            if b"stdin-is-a-tty" in out and not sent:
                os.write(master, b"hello\n")
                sent = True
            if b"got=hello" in out:
                break
    finally:
        dummy_pid, status = os.waitpid(pid, 0)
        os.close(master)
    assert b"stdin-is-a-tty" in out and b"got=hello" in out, out
    assert os.WEXITSTATUS(status) == 4


def test_interactive_needs_exactly_one_app(store):
    p = prepare.prepare(store, {"apps": [sh("true", name="a"), sh("true", name="b")]})
    with pytest.raises(RocketError, match="exactly one app"):
        run.run_foreground(p.pod, net="none", interactive=True)
    assert p.pod.dir_state == "prepared"


def test_restart_policy_on_failure_restarts_until_success(store):
    """The keeper restarts a failed pod (backoff 1 s), keeps its logs, and records restarts."""
    script = ("n=$(cat /v/n 2>/dev/null || echo 0); n=$((n+1)); echo $n > /v/n; echo run-$n; "
              "[ $n -ge 2 ] && exit 0; exit 3")
    p = prepare.prepare(store, {"apps": [sh(script, mounts=[{"volume": "v", "path": "/v"}])],
                                "volumes": [{"name": "v", "kind": "empty"}]})
    run.start_detached(p.pod, net="none", restart_policy="on-failure")
    assert run.wait(p.pod, 30)
    rec = p.pod.read_json("exit")
    assert rec["restarts"] == 1 and rec["exit_code"] == 0, rec
    log = run.read_log(p.pod, "busybox")
    assert "run-1" in log and "run-2" in log


def test_restart_policy_always_stops_when_asked(store):
    p = prepare.prepare(store, {"apps": [sh("echo up; sleep 0.3")]})
    run.start_detached(p.pod, net="none", restart_policy="always")
    deadline = time.time() + 20
    while time.time() < deadline and run.read_log(p.pod, "busybox").count("up") < 2:
        time.sleep(0.1)
    assert run.read_log(p.pod, "busybox").count("up") >= 2  # it was restarted
    assert run.stop(p.pod, timeout=10) is True
    assert p.pod.state() == "exited"
    ups = run.read_log(p.pod, "busybox").count("up")
    time.sleep(1.5)  # longer than the first backoff: a stopped pod does not come back
    assert run.read_log(p.pod, "busybox").count("up") == ups
