"""Fixtures every test shares: the leak check, the bytecode cache, a data directory.

tests.support, imported first, makes the checkout importable as ansible_collections.appc.rocket
(the relative import works both under pytest, which imports this file as tests.conftest, and
under ansible-test units, which imports it from its copy of the collection).
"""
import os

import pytest

from .support import COLLECTIONS, leaks

os.environ.setdefault("ANSIBLE_COLLECTIONS_PATH", COLLECTIONS)


@pytest.fixture(autouse=True)
def no_leaks(request, tmp_path_factory):
    """Fail the test that leaves a mount, netns, veth, cgroup, child process, cas/tmp file
    or open fd (under its tmp_path) behind."""
    root = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    before = leaks.snapshot(root)
    yield
    leaks.assert_clean(before, leaks.snapshot(root), request.node.nodeid, tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session", autouse=True)
def bytecode_cache(tmp_path_factory):
    """Modules run by the tests keep their compiled module_utils here, not in the host's
    /var/cache (module_utils/bytecode.py)."""
    d = tmp_path_factory.mktemp("bytecode") / "pyc"
    os.environ["ROCKET_BYTECODE_CACHE"] = str(d)
    yield d
    os.environ.pop("ROCKET_BYTECODE_CACHE", None)


@pytest.fixture
def data_dir(tmp_path):
    """A fresh data directory for a store or pods."""
    return str(tmp_path / "rocket")


def pytest_collection_modifyitems(config, items):
    root = os.geteuid() == 0
    for item in items:
        if {"integration", "reliability"} & set(item.nodeid.split("/")) and not root:
            item.add_marker(pytest.mark.skip(reason="integration tests change the host: root only"))
