"""Red-team probes of issue #19's features from inside pods: keeper-less pods (PID 1 writes
the logs, records the exit and holds the lock: docs/decisions/keeper.md), the `gc --many`
batch and the thin payload's library. Each probe asserts what holds; a gap not fixed yet is an
xfail(strict=True) naming it."""
import os
import subprocess
import sys
import time

import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare, restart, run


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir)


def _sh(script, **extra):
    return dict({"name": "app", "image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}, **extra)


def _wait_log(pod, word, timeout=15):
    return pods.wait_log(pod, "app", word, timeout)


def _status(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].split()[0]
    raise AssertionError("no %s in /proc/%d/status" % (key, pid))


def _facts(log):
    return dict(w.split("=", 1) for line in log.splitlines() for w in line.split()[1:] if "=" in w)


def test_a_root_app_cannot_stall_read_or_write_its_keeperless_pid1(store):
    # PID 1 is the pod's only writer of logs and exit record now: the app (root, default
    # capabilities) tries to stop it (SIGSTOP, SIGKILL: a namespace's init ignores the
    # signals it has no handler for when they come from inside), to read its memory and
    # environment, to write its memory, and to trace it. Each is refused; PID 1 still logs.
    script = ("kill -STOP 1; echo stop=$?; kill -KILL 1; echo kill=$?; "
              "cat /proc/1/environ >/dev/null 2>&1; echo environ=$?; "
              "head -c 1 /proc/1/mem >/dev/null 2>&1; echo memr=$?; "
              "printf x 2>/dev/null >/proc/1/mem; echo memw=$?; "
              "ls /proc/1/fd 2>&1 | tr '\\n' ' '; echo; w=0; for f in /proc/1/fd/* /proc/1/task/1/fd/*; do "
              "[ -e $f ] && (echo rt19-through >>$f) 2>/dev/null && w=1; done; echo fdw=$w; "
              "ls /proc/1/root/ >/dev/null 2>&1; echo root=$?; "
              "echo after; exec sleep 1000")
    p = prepare.prepare(store, {"apps": [_sh(script)]})
    pid1 = run.start_detached(p.pod, net="none")
    try:
        log = _wait_log(p.pod, "after")
        f = _facts(log)
        assert "after" in log and f.get("fdw") == "0", log  # no write through PID 1's log fds
        for k in ("environ", "memr", "memw", "root"):
            assert f.get(k) not in (None, "0"), (k, log)
        time.sleep(0.2)
        assert _status(pid1, "State") in ("S", "R"), _status(pid1, "State")  # not T: not stopped
        assert p.pod.state() == "running"
    finally:
        assert run.stop(p.pod, timeout=5)
    rec = p.pod.read_json("exit")
    assert rec["stopped_by_user"] is True and rec["stopped_by_host"] is False, rec
    pods.reap(settle=0.2)


def test_a_flood_and_an_endless_line_keep_pid1_small_and_the_logs_capped(store):
    # 16 MiB without a newline, then 200,000 short lines, into a 64 KiB log with 2 files:
    # PID 1 cuts the endless line at 64 KiB, rotates, and its memory stays bounded.
    script = ("head -c 16777216 /dev/zero | tr '\\0' x; echo; "
              "i=0; while [ $i -lt 2000 ]; do seq 100; i=$((i+1)); done; echo flood-done; exec sleep 1000")
    p = prepare.prepare(store, {"apps": [_sh(script)]})
    pid1 = run.start_detached(p.pod, net="none",
                              logging={"log_driver": "file", "log_max_size": 65536, "log_max_files": 2})
    try:
        rss0 = int(_status(pid1, "VmRSS"))
        peak = rss0
        deadline = time.monotonic() + 40
        while "flood-done" not in run.read_log(p.pod, "app") and time.monotonic() < deadline:
            peak = max(peak, int(_status(pid1, "VmRSS")))
            time.sleep(0.05)
        assert "flood-done" in run.read_log(p.pod, "app")
        peak = max(peak, int(_status(pid1, "VmHWM")))  # the kernel's high-water mark: no peak missed between polls
        assert peak - rss0 < 8 * 1024, (rss0, peak)  # kB: the 16 MiB line was never held
        logs = p.pod.file("logs")
        sizes = {n: os.path.getsize(os.path.join(logs, n)) for n in os.listdir(logs) if n.startswith("app.log")}
        assert set(sizes) <= {"app.log", "app.log.1", "app.log.2"}, sizes
        assert all(s <= 65536 + 65536 + 64 for s in sizes.values()), sizes  # one cut line may overrun once
    finally:
        assert run.stop(p.pod, timeout=5)
    pods.reap(settle=0.2)


def test_an_apps_sigterm_to_its_keeperless_pid1_is_no_host_stop(store):
    # A keeper-less PID 1 recorded any SIGTERM without stage0's stop mark as a host shutdown
    # (boot.stop_all's). A SIGTERM from an app of the pod (init takes SIGTERM, from inside its
    # PID namespace too) ended the pod the same way: the record said the host stopped it,
    # and restart.wants_to_run brought the `boot: true` pod back at the next boot. Seen to
    # fail before the fix; now only boot.stop_all's `stopping-host` mark makes it the host's.
    p = prepare.prepare(store, {"apps": [_sh("sleep 0.5; kill -TERM 1; exec sleep 1000")]})
    run.start_detached(p.pod, net="none", boot=True)
    assert run.wait(p.pod, 20)
    rec = p.pod.read_json("exit")
    assert rec["stopped_by_user"] is False, rec  # the precondition: nobody on the host stopped it
    assert rec["stopped_by_host"] is False, rec
    why = restart.resume(p.pod, 20)  # what a boot restore does: the pod that ended itself stays down
    if why is not None:
        run.stop(p.pod, timeout=5)
    pods.reap(settle=0.2)
    assert why is None, why


def test_gc_many_refuses_lines_that_name_another_place(tmp_path):
    # gc --many reads `<uuid> <pod directory>` lines from stage0 only; still, a line whose
    # uuid is a path, whose directory is relative, or that has no directory acts on nothing
    # and does not stop the lines after it.
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import gc

    victim = tmp_path / "victim"
    victim.mkdir()
    lines = [b"../../etc /tmp", b".. /", b"abc relative/dir", b"lonely", b"x/y " + str(victim).encode(),
             b"\xff\xfe " + str(tmp_path / "absent").encode()]
    import io

    out_b, cwd = io.BytesIO(), os.getcwd()
    try:
        code = gc._many(io.BytesIO(b"\n".join(lines) + b"\n"), out_b)
    finally:
        os.chdir(cwd)
    out = out_b.getvalue().decode("utf-8", "replace").splitlines()
    assert code == 0 and len(out) == len(lines), (code, out)
    assert out[:5] == ["- failed " + o.split(" failed ", 1)[1] for o in out[:5]], out
    assert all("not `<uuid> <pod directory>`" in o for o in out[:5]), out
    assert out[5].startswith("\ufffd") and " failed " in out[5], out  # no such directory: its own failure
    assert sorted(os.listdir(tmp_path)) == ["victim"]


RACE = r'''
import importlib.util, json, os, sys
argv, sys.argv = sys.argv, sys.argv[:1]  # the module reads its arguments from stdin, as under Ansible
spec = importlib.util.spec_from_file_location("thin_module", argv[1])
thin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(thin)
real = thin.check


def check(path, sha256, *rest):
    answer = real(path, sha256, *rest)
    os.rename(argv[2], path)  # the window: after the digest, before the import
    return answer


thin.check = check
os.environ.update({thin.ENV_LIBRARY: argv[3], thin.ENV_SHA256: argv[4], thin.ENV_MODULE: "pod_info"})
thin.main()
'''


def test_the_thin_payload_imports_the_bytes_it_hashed(tmp_path):
    # The thin payload (plugins/plugin_utils/thin_module.py) hashed the library by an open fd
    # and then put its path on sys.path: zipimport reopens the archive by path at each import,
    # so whoever can write the library's directory as root between the two (a pod given a
    # volume onto it: a default pod's root is root on its volumes) had its own zip run as the
    # module, as root on the host. Seen to run the planted code before the fix: now the
    # verified bytes are imported from a sealed memfd, whatever the path holds afterwards.
    import json
    import zipfile

    from ansible_collections.appc.rocket.plugins.plugin_utils import thin_module
    from tests.support import thin_library

    marker = tmp_path / "planted-ran"
    with thin_library.installed() as (dummy, path, sha256):
        evil = os.path.join(os.path.dirname(path), "evil.pyz")
        with zipfile.ZipFile(evil, "w") as z:
            z.writestr("ansible_collections/__init__.py", "")
            for pkg in ("appc", "appc/rocket", "appc/rocket/plugins", "appc/rocket/plugins/modules"):
                z.writestr("ansible_collections/%s/__init__.py" % pkg, "")
            z.writestr("ansible_collections/appc/rocket/plugins/modules/pod_info.py",
                       "def main():\n    open(%r, 'w').close()\n    print('{\"planted\": true}')\n" % str(marker))
        os.chmod(evil, 0o644)
        args = json.dumps({"ANSIBLE_MODULE_ARGS": {"data_dir": str(tmp_path / "dd")}})
        r = subprocess.run([sys.executable, "-c", RACE, thin_module.__file__, evil, path, sha256],
                           input=args.encode(), capture_output=True, timeout=60, check=False)
        out = r.stdout.decode("utf-8", "replace")
        assert not os.path.exists(evil)  # the swap happened
    assert not marker.exists(), out
    assert '"planted"' not in out and '"pods": []' in out, (out, r.stderr[-2000:])
