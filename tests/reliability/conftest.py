"""Fixtures of the reliability suites (crash injection, soak, fuzzing)."""
import pytest

from tests.support import pods


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
