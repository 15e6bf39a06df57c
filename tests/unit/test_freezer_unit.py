"""paused's refusals that need no pod: a host with no cgroup2 hierarchy fails before a pod is
started to be paused (converge.plan), with the reason."""
import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import freezer
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups


def test_a_host_without_cgroup2_cannot_pause(monkeypatch):
    monkeypatch.setattr(cgroups, "hierarchies", lambda: ({"memory": ("/sys/fs/cgroup/memory", ["memory"])}, None))
    with pytest.raises(RocketError, match="no cgroup2 hierarchy"):
        freezer.check_host()
    monkeypatch.setattr(cgroups, "hierarchies", lambda: ({}, "/sys/fs/cgroup"))
    freezer.check_host()
