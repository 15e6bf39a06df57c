"""Fixtures the integration tests share: the stage1 harness's base rootfs and pod, and a
folder for the images a module builds."""
import pytest

from tests.support import stage1_harness as h


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    return h.base_rootfs(str(tmp_path_factory.mktemp("base") / "rootfs"))


@pytest.fixture
def pod(tmp_path, base):
    """A pod run by the stage1 harness, killed if still running and collected after the test."""
    p = h.Pod(tmp_path, base)
    yield p
    if p.proc is not None and p.proc.poll() is None:
        p.kill()
        p.proc.communicate()
    p.gc()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("images")
