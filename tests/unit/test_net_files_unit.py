"""pod_network's library (stage0/net_files.py): normal forms, the files it writes and
removes, what counts as in use, and its refusals."""
import json
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import net_files, netconf
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import InUseError, RocketError, ValidationError

UUID = "bbbbbbbb-0000-4000-8000-000000000001"


@pytest.fixture
def dd(tmp_path, monkeypatch):
    monkeypatch.setattr(netconf, "SYSTEM_CONF_DIR", str(tmp_path / "etc-net.d"))
    d = DataDir(str(tmp_path / "dd"))
    d.ensure()
    return d


def write(path, doc):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f)


def test_a_hand_written_file_with_the_defaults_spelled_out_is_the_same_network(dd):
    write(os.path.join(dd.path, "net.d", "10-back.json"),
          {"name": "back", "type": "bridge", "subnet": "10.5.0.0/24", "gateway": "10.5.0.1", "ipMasq": True,
           "routes": [{"dst": "0.0.0.0/0"}], "bridge": "rkt-back"})
    doc = net_files.desired("back", {"type": "bridge", "subnet": "10.5.0.0/24", "mtu": None})
    assert doc == {"name": "back", "type": "bridge", "subnet": "10.5.0.0/24"}
    assert net_files.ensure(dd, "back", "bridge", doc)[0] is False
    changed, before = net_files.ensure(dd, "back", "bridge", dict(doc, mtu=1400), dry_run=True)
    assert changed and before["gateway"] == "10.5.0.1"
    assert os.listdir(os.path.join(dd.path, "net.d")) == ["10-back.json"]  # a dry run writes nothing
    # applied: the network's one file is ours now, the hand-written one is gone
    assert net_files.ensure(dd, "back", "bridge", dict(doc, mtu=1400))[0] is True
    assert os.listdir(os.path.join(dd.path, "net.d")) == ["back.json"]
    assert netconf.load(dd)["back"]["mtu"] == 1400


def test_options_are_checked_by_the_same_rules_as_the_files(dd):
    for settings, words in [({"subnet": "10.0.0.1/24"}, "has host bits set"),
                            ({"subnet": "10.0.0.0/24", "bridge": "b"}, "only for type bridge"),
                            ({"subnet": "10.0.0.0/24", "mtu": 10}, "mtu")]:
        with pytest.raises(ValidationError, match=words):
            net_files.desired("x", settings)
    for name in ("host", "none", "../etc", "Upper"):
        with pytest.raises(ValidationError, match="name"):
            net_files.check_name(name)
    with pytest.raises(ValidationError, match=r"cni.plugins\[1\].type"):
        net_files.desired_cni("c", {"plugins": [{"type": "bridge"}, {"type": "/usr/bin/x"}]})
    with pytest.raises(ValidationError, match="cni.plugins"):
        net_files.desired_cni("c", {"plugins": []})
    with pytest.raises(ValidationError, match="cni.name"):
        net_files.desired_cni("c", {"name": "d", "plugins": [{"type": "bridge"}]})
    assert net_files.desired_cni("c", {"plugins": [{"type": "bridge"}]}) == {
        "name": "c", "cniVersion": "1.0.0", "plugins": [{"type": "bridge"}]}


def test_kind_changes_replace_the_file_and_list_shows_every_network(dd, tmp_path):
    own = net_files.desired("n", {"subnet": "10.6.0.0/24"})
    assert net_files.ensure(dd, "n", "ptp", own)[0]
    cni = net_files.desired_cni("n", {"plugins": [{"type": "bridge"}]})
    assert net_files.ensure(dd, "n", "cni", cni)[0]
    assert os.listdir(os.path.join(dd.path, "net.d")) == ["n.conflist"]
    assert not net_files.ensure(dd, "n", "cni", cni)[0]
    write(str(tmp_path / "etc-net.d" / "sys.json"), {"name": "sys", "subnet": "10.7.0.0/24"})
    listed = [(r["name"], r["kind"], r["managed"]) for r in net_files.list_networks(dd)]
    assert listed == [("default", "ptp", False), ("n", "cni", True), ("sys", "ptp", False)]
    # removal: only the data directory's files; the built-in default has none
    with pytest.raises(RocketError, match="outside the data directory"):
        net_files.remove(dd, "sys")
    assert net_files.remove(dd, "default") == (False, None)
    assert net_files.remove(dd, "n", dry_run=True)[0] and os.path.exists(os.path.join(dd.path, "net.d", "n.conflist"))
    assert net_files.remove(dd, "n") == (True, cni)
    assert net_files.remove(dd, "n") == (False, None)


def test_in_use_by_an_address_a_plan_or_run_options(dd):
    assert net_files.ensure(dd, "b", "bridge", net_files.desired("b", {"type": "bridge", "subnet": "10.8.0.0/24"}))[0]
    ipam_dir = os.path.join(dd.path, "net", "ipam", "b")
    os.makedirs(ipam_dir)
    with open(os.path.join(ipam_dir, "10.8.0.2"), "w") as f:
        f.write(UUID + "\n")
    with pytest.raises(InUseError, match="network b is used by pod %s" % UUID):
        net_files.remove(dd, "b", dry_run=True)
    os.unlink(os.path.join(ipam_dir, "10.8.0.2"))
    pod = os.path.join(dd.pod_state_dir("prepared"), UUID)
    os.makedirs(pod)
    write(os.path.join(pod, "spec.json"), {"run": {"net": "default,b"}})
    assert net_files.users(dd, "b") == [UUID] and net_files.users(dd, "default") == [UUID]
    write(os.path.join(pod, "spec.json"), {"run": {}})
    write(os.path.join(pod, "net.json"), {"networks": [{"name": "b"}]})
    with pytest.raises(InUseError):
        net_files.remove(dd, "b")
    os.unlink(os.path.join(pod, "net.json"))
    with open(os.path.join(ipam_dir, "last"), "w") as f:
        f.write("10.8.0.2")
    assert net_files.remove(dd, "b")[0] and not os.path.exists(ipam_dir)  # its pool's cursor too
