"""Fixtures of the reliability suites (crash injection, soak, fuzzing)."""
import harness
import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import stage1_image
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store


@pytest.fixture(scope="module", autouse=True)
def reaper():
    """Orphans of killed drivers become ours to stop and reap (this host's PID 1 reaps none)."""
    pods.subreaper(True)
    yield
    pods.reap(timeout=5)
    pods.subreaper(False)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture
def store(data_dir, image_dir):
    """A store with busybox and the default stage1; its pods are settled afterwards."""
    s = Store(data_dir)
    s.import_file(pods.busybox_aci(image_dir))
    stage1_image.ensure(s, None)
    yield s
    s.close()
    harness.settle(data_dir)
