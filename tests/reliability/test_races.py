"""Regression tests, each for a bug the crash and soak suites found, made deterministic."""
import os
import time

import pytest

import harness
from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run, stage1_image
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

LOOP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"]


@pytest.fixture
def store(data_dir, image_dir):
    s = Store(data_dir)
    s.import_file(pods.busybox_aci(image_dir))
    stage1_image.ensure(s, None)
    yield s
    s.close()
    harness.settle(data_dir)


def test_store_gc_waits_for_a_prepare_in_flight(store, monkeypatch):
    """prepare resolved and rendered the image, then gc (grace 0) deleted it before the pod's
    refs named it: the pod pointed at a tree that no longer existed."""
    started = []
    create = podmod.create

    def create_while_gc_runs(dd):
        started.append(harness.spawn(dd.path, "storegc", "0"))
        time.sleep(1.0)
        assert started[0].poll() is None, "store gc did not wait for the prepare in flight"
        return create(dd)

    monkeypatch.setattr(prepare.podmod, "create", create_while_gc_runs)
    p = prepare.prepare(store, {"apps": [{"name": "app", "image": "example.com/busybox", "exec": ["/bin/true"]}]})
    out, err = started[0].communicate(timeout=60)
    assert started[0].returncode == 0, err
    monkeypatch.undo()
    assert run.run_foreground(p.pod, net="none") == 0  # its image and trees are all there


def test_stop_a_pod_another_process_is_starting(store, image_dir):
    """stop() knew no PID to signal for a pod started by another process that had not yet
    written its pid: it waited 40 s and failed with 'did not stop'."""
    slow = pods.busybox_aci(image_dir, name="example.com/slowstart", app={
        "exec": LOOP, "user": "0", "group": "0",
        "eventHandlers": [{"name": "pre-start", "exec": ["/bin/sleep", "2"]}]})
    store.import_file(slow)
    uuid = harness.ok(store.dd.path, "prepare", "example.com/slowstart")
    starter = harness.spawn(store.dd.path, "run", uuid)
    try:
        p = podmod.find(store.dd, uuid)
        deadline = time.monotonic() + 30
        while not (p.dir_state == "run" and p.state() == "running") and time.monotonic() < deadline:
            time.sleep(0.01)
            p.refresh()
        assert p.pid() is None, "the pod started too fast for this test"
        t0 = time.monotonic()
        assert run.stop(p, timeout=10) is True
        assert time.monotonic() - t0 < 20
        assert p.state() == "exited"
    finally:
        starter.communicate(timeout=60)


def test_enter_an_app_that_has_exited_says_so(store):
    """The app's process had exited while the pod ran on: enter returned stage1's rc 254
    and its words about a /proc entry, as if the command had run."""
    p = prepare.prepare(store, {"apps": [{"name": "gone", "image": "example.com/busybox", "exec": ["/bin/true"]},
                                         {"name": "stays", "image": "example.com/busybox", "exec": LOOP}]}).pod
    run.start_detached(p, net="none")
    try:
        deadline = time.monotonic() + 30
        while p.app_status("gone") is None and time.monotonic() < deadline:
            time.sleep(0.02)
        with pytest.raises(podmod.PodStateError, match="app gone of pod .* exited"):
            enter(p, "gone", ["/bin/true"])
        assert enter(p, "stays", ["/bin/echo", "ok"])[:2] == (0, b"ok\n")
    finally:
        run.stop(p, timeout=10)


def test_remove_refuses_an_embryo(store):
    """pod_gc.remove took the lock of a pod being created (between its mkdir and its flock)
    and deleted it under its creator."""
    uuid = podmod.new_uuid()
    os.mkdir(os.path.join(store.dd.pod_state_dir("embryo"), uuid), 0o700)
    with pytest.raises(podmod.PodStateError, match="being created"):
        pod_gc.remove(podmod.find(store.dd, uuid))
    assert os.path.isdir(os.path.join(store.dd.pod_state_dir("embryo"), uuid))


def test_pod_gc_drops_dangling_names_and_dead_name_writes(data_dir):
    """A removal killed between the pod and its name left the name pointing at nothing, for
    ever; an atomic write of a name killed halfway left its temporary file."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir

    dd = DataDir(data_dir).ensure()
    podmod.set_name(dd, "web", podmod.new_uuid())            # its pod is gone
    old, fresh = os.path.join(dd.names, ".db.1.aa.tmp"), os.path.join(dd.names, ".db.2.bb.tmp")
    for path in (old, fresh):
        with open(path, "w") as f:
            f.write("x")
    os.utime(old, (time.time() - 3600, time.time() - 3600))  # its writer died an hour ago
    pod_gc.gc(dd, grace=0)
    assert sorted(os.listdir(dd.names)) == [".db.2.bb.tmp"]   # a write in progress is left alone
