"""Fixtures of the reliability suites (crash injection, soak, fuzzing)."""
import pytest

import harness


@pytest.fixture(scope="module", autouse=True)
def reaper():
    """Orphans of killed drivers become ours to stop and reap (this host's PID 1 reaps none)."""
    harness.subreaper(True)
    yield
    harness.reap(5)
    harness.subreaper(False)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("images")
