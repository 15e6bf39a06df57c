"""The leak checker itself: each kind of leftover it promises to catch makes it fail."""
import os

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
