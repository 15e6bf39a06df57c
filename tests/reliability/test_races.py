"""Regression tests, each for a bug the crash and soak suites found, made deterministic."""
import os
import time

import pytest

import harness
from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import contract, linux

LOOP = ["/bin/sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.05; done"]


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


def _ppid(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("PPid:")).split()[1])


def test_enter_an_app_that_exited_under_it_says_so(store):
    """The soak, on a fresh machine: the app exited (not yet reaped) while enter read it, and
    enter returned rc 254 with "/proc/PID/environ: No such process" as if the command had
    run. Made deterministic: the pod's PID 1 is stopped, so the killed app stays a zombie."""
    import signal

    p = prepare.prepare(store, {"apps": [{"name": "app", "image": "example.com/busybox", "exec": LOOP}]}).pod
    run.start_detached(p, net="none")
    parent = None
    try:
        with open(p.file("apps", "app", "pid")) as f:
            app_pid = int(f.read())
        parent = _ppid(app_pid)
        os.kill(parent, signal.SIGSTOP)          # nobody reaps the app now
        os.kill(app_pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while b") Z " not in open("/proc/%d/stat" % app_pid, "rb").read() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(podmod.PodStateError, match="app app of pod .* exited while a command was entering it"):
            enter(p, "app", ["/bin/echo", "in"])
    finally:
        if parent is not None:
            os.kill(parent, signal.SIGCONT)
        run.stop(p, timeout=10)


def _remove_under(pod):
    """Another worker removes the pod (pod_gc.remove, through its own Pod object)."""
    pod_gc.remove(podmod.find(pod.dd, pod.uuid), stop_timeout=10)


def _start_under(pod):
    """Another worker starts the pod first."""
    run.start_detached(podmod.find(pod.dd, pod.uuid), net="none")


@pytest.mark.parametrize("other, error", [(_remove_under, "NotFoundError"), (_start_under, "PodStateError")])
def test_start_a_pod_another_worker_took_meanwhile(store, monkeypatch, other, error):
    """The soak, on a fresh machine: start_detached read mounts.json, another worker removed
    the pod, and the read of spec.json raised a raw FileNotFoundError."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import errors

    p = prepare.prepare(store, {"apps": [{"name": "app", "image": "example.com/busybox", "exec": LOOP}]}).pod
    spec = podmod.Pod.spec
    calls = []

    def spec_after_the_other_worker(self):
        if not calls:
            calls.append(1)
            other(self)
        return spec(self)

    monkeypatch.setattr(podmod.Pod, "spec", spec_after_the_other_worker)
    try:
        with pytest.raises((podmod.PodStateError, errors.NotFoundError), match="pod %s" % p.uuid) as e:
            run.start_detached(p, net="none")
        assert type(e.value).__name__ == error
    finally:
        monkeypatch.undo()
        q = podmod.find(store.dd, p.uuid) if os.path.isdir(os.path.join(store.dd.pod_state_dir("run"), p.uuid)) else None
        if q is not None:
            run.stop(q, timeout=10)


def test_enter_a_pod_collected_meanwhile(store, monkeypatch):
    """enter found the pod running; it exited and pod gc moved it before enter read its
    manifest: a raw FileNotFoundError."""
    p = prepare.prepare(store, {"apps": [{"name": "app", "image": "example.com/busybox", "exec": LOOP}]}).pod
    run.start_detached(p, net="none")
    choose = podmod.choose_app

    def choose_after_gc(pod, app, *a, **kw):
        run.stop(podmod.find(pod.dd, pod.uuid), timeout=10)
        pod_gc.gc(pod.dd, grace=0)
        return choose(pod, app, *a, **kw)

    monkeypatch.setattr(podmod, "choose_app", choose_after_gc)
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import errors

    with pytest.raises((podmod.PodStateError, errors.NotFoundError), match="pod %s" % p.uuid):
        enter(p, None, ["/bin/echo", "in"])


def test_a_process_syncing_its_overlay_on_exit_has_exited(tmp_path):
    """The soak on CI: enter failed with "/proc/PID/ns/cgroup: No such file or directory"
    and neither enter called the app gone, because it was not a zombie yet. An app holding
    the last reference to its mount namespace unmounts its overlay root as it exits, and the
    unmount syncs the upper file system after the kernel released the task's namespaces and
    before it makes it a zombie (measured here: 25 ms for 50 MiB dirty, 98 ms for 200 MiB).
    contract.exited must call that state exited, at every moment of it."""
    for d in ("lower", "upper", "work", "merged"):
        (tmp_path / d).mkdir()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(r)
            linux.unshare(linux.CLONE_NEWNS)
            linux.mount("none", "/", None, linux.MS_REC | linux.MS_PRIVATE)
            linux.mount("overlay", str(tmp_path / "merged"), "overlay", 0,
                        "lowerdir=%s,upperdir=%s,workdir=%s" % (tmp_path / "lower", tmp_path / "upper", tmp_path / "work"))
            with open(tmp_path / "merged" / "dirty", "wb") as f:
                for dummy in range(32):
                    f.write(b"x" * (1 << 20))
            os.write(w, b"1")
        finally:
            os._exit(0)
    os.close(w)
    try:
        assert os.read(r, 1) == b"1"
        assert not contract.exited(os.getpid())
        exiting = 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with open("/proc/%d/stat" % pid, "rb") as f:
                zombie = b") Z " in f.read()  # ours to reap: it stays in /proc until then
            try:
                os.readlink("/proc/%d/ns/mnt" % pid)
            except FileNotFoundError:
                if zombie:
                    break
                exiting += 1  # namespaces gone, not a zombie yet: exiting
                assert contract.exited(pid)
        assert exiting, "the exit was never seen between its namespaces and its zombie"
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    assert contract.exited(pid)
