"""The leak checker itself: each kind of leftover it promises to catch makes it fail."""
import os
import sys
import time

import pytest

from tests.support import leaks
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store, Work


def test_cas_tmp_leftover_and_open_lock_are_caught(tmp_path):
    data_dir = str(tmp_path / "pods" / "rocket")  # data dirs may sit below tmp_path
    Store(data_dir).close()
    before = leaks.snapshot(tmp_path)
    work = Work(os.path.join(data_dir, "cas", "tmp"), "import")  # a live work dir: file + locked fd
    with pytest.raises(AssertionError) as e:
        leaks.assert_clean(before, leaks.snapshot(tmp_path), "t")
    assert "cas_tmp" in str(e.value) and "fds" in str(e.value) and work.path in str(e.value)
    work.cleanup()
    leaks.assert_clean(before, leaks.snapshot(tmp_path), "t")


def test_child_process_is_caught(tmp_path):
    before = leaks.snapshot(tmp_path)
    pid = os.fork()
    if pid == 0:  # pragma: no cover
        os._exit(0)
    try:
        with pytest.raises(AssertionError, match="children"):
            leaks.assert_clean(before, leaks.snapshot(tmp_path), "t")  # a zombie is a leak too
    finally:
        os.waitpid(pid, 0)
    leaks.assert_clean(before, leaks.snapshot(tmp_path), "t")


def test_booted_host_leftovers_are_caught(tmp_path):
    """A booted test host's bridge or cgroup left behind (tests/support/booted.py) is a leak."""
    import subprocess

    before = leaks.snapshot(tmp_path)
    subprocess.run(["ip", "link", "add", "rboot-leak", "type", "bridge"], check=True)
    cg = "/sys/fs/cgroup/unified/appc-rocket-booted/leak-test"
    os.makedirs(cg)
    try:
        with pytest.raises(AssertionError, match="booted") as e:
            leaks.assert_clean(before, leaks.snapshot(tmp_path), "t")
        assert "link:rboot-leak" in str(e.value) and "cgroup:" + cg in str(e.value)
    finally:
        subprocess.run(["ip", "link", "delete", "rboot-leak"], check=True)
        os.rmdir(cg)
        try:
            os.rmdir(os.path.dirname(cg))
        except OSError:  # a booted host of another run is using it
            pass
    leaks.assert_clean(before, leaks.snapshot(tmp_path), "t")


def test_booted_hosts_of_another_session_are_not_ours(tmp_path):
    """A host whose nspawn names another pytest session's directory is that session's, not a
    leak of ours; the same host is a leak when the session is ours."""
    import subprocess

    before = leaks.snapshot(tmp_path)
    cg = "/sys/fs/cgroup/unified/appc-rocket-booted/other-session"
    os.makedirs(cg)
    other = "/tmp/pytest-of-root/pytest-999999"
    # one process (no shell forking a child) whose command line names the other session
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", other + "/test_x0/booted-deb12-11/root"])
    try:
        with open(cg + "/cgroup.procs", "w") as f:
            f.write(str(p.pid))
        after = dict(leaks.snapshot(tmp_path), children=before["children"])
        leaks.assert_clean(before, after, "t", session="/tmp/pytest-of-root/pytest-1")
        with pytest.raises(AssertionError, match="other-session"):
            leaks.assert_clean(before, after, "t", session=other)
    finally:
        p.kill()
        p.wait()
        for dummy in range(50):  # a killed process leaves its cgroup a moment later
            try:
                os.rmdir(cg)
                break
            except OSError:
                time.sleep(0.1)
        try:
            os.rmdir(os.path.dirname(cg))
        except OSError:
            pass
    leaks.assert_clean(before, leaks.snapshot(tmp_path), "t")
