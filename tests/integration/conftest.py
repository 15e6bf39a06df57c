"""Fixtures the integration tests share: the stage1 harness's base rootfs and pod, and a
folder for the images a module builds; the cgroup-v2-only mode's check."""
import os

import pytest

from tests.support import stage1_harness as h


@pytest.fixture(scope="session", autouse=True)
def cgroup_mode():
    """ROCKET_TEST_CGROUP=v2only (tools/cgroup2-only.sh): the run must really see a
    cgroup-v2-only host, or its passing would prove nothing."""
    mode = os.environ.get("ROCKET_TEST_CGROUP")
    if mode not in (None, "", "host", "v2only"):
        pytest.fail("ROCKET_TEST_CGROUP=%s: give v2only or host" % mode)
    if mode == "v2only":
        with open("/proc/self/mountinfo") as f:
            types = [(line.split()[4], line.split(" - ")[1].split()[0]) for line in f]
        cgroupfs = [(point, fstype) for point, fstype in types if fstype in ("cgroup", "cgroup2")]
        if cgroupfs != [("/sys/fs/cgroup", "cgroup2")]:
            pytest.fail("ROCKET_TEST_CGROUP=v2only but the cgroup mounts are %s: run under "
                        "tools/cgroup2-only.sh" % cgroupfs)
    return mode or "host"


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    return h.base_rootfs(str(tmp_path_factory.mktemp("base") / "rootfs"))


@pytest.fixture
def dd(tmp_path):
    """A data directory with busybox imported; every pod a test left is removed after it (by
    pod, through the modules: the keepers are not our children). Files that need another
    data directory define their own ``dd``."""
    from tests.support import pods
    from tests.support.ansible_run import module
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    d = str(tmp_path / "rocket")
    with Store(d) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    yield d
    for p in module("pod_info", {"data_dir": d})["pods"]:
        module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": d})


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


@pytest.fixture
def fleet(tmp_path):
    """Three SSH hosts with their own data_dir (tests/support/fleet.py), undone after the test."""
    from tests.support.fleet import fleet_hosts

    yield from fleet_hosts(tmp_path)


@pytest.fixture(scope="session")
def registries(tmp_path_factory):
    """Real registries (tests/support/registry.py: open, basic, token, plain, one storage) with
    the shared test images pushed; stopped (by PID) at the end of the session."""
    from tests.support import registry

    missing = registry.missing_tools()
    if missing:
        pytest.fail("the registry tests need %s: run tools/debian-packages.sh (make deps)" % ", ".join(missing))
    regs = registry.RegistrySet(str(tmp_path_factory.mktemp("registries")))
    try:
        registry.push_test_images(regs)
        yield regs
    finally:
        regs.stop()


@pytest.fixture
def booted_hosts(tmp_path):
    """A factory of booted Debian hosts (tests/support/booted.py):
    booted_hosts(release="12", cgroup="v2") -> a started BootedHost; all stopped and undone after the test."""
    from tests.support.booted import booted_hosts_factory

    yield from booted_hosts_factory(tmp_path)


@pytest.fixture
def booted_host(booted_hosts):
    """One started Debian 12 host on cgroup v2 only (tests/support/booted.py)."""
    from tests.support.booted import require

    require("12")
    return booted_hosts("12", "v2")
