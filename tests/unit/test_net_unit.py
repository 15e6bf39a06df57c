"""Network configurations, the net option, port specs, DNS and the firewall script."""
import os
import subprocess
import sys

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import ipam, netconf, podspec
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import firewall, net
from tests.support import COLLECTIONS


def test_builtin_default_is_what_validate_makes_of_it():
    assert netconf.validate(netconf.DEFAULT_NETWORK, "x") == netconf._BUILTIN_DEFAULT


def test_config_validation_and_defaults():
    c = netconf.validate({"name": "back", "type": "bridge", "subnet": "10.5.0.0/16",
                          "routes": [{"dst": "10.6.0.0/16", "gw": "10.5.0.254"}]}, "f.json")
    assert c == {"name": "back", "type": "bridge", "subnet": "10.5.0.0", "prefix": 16, "gateway": "10.5.0.1",
                 "routes": [{"dst": "10.6.0.0", "prefix": 16, "gw": "10.5.0.254"}], "ip_masq": True,
                 "bridge": "rkt-back", "mtu": None}
    for doc, words in [({"name": "x", "subnet": "10.0.0.0/31"}, "too small"),
                       ({"name": "x", "subnet": "10.0.0.0"}, "is not an IPv4 subnet"),
                       ({"name": "x", "subnet": "10.0.0.0/24", "bridge": "b"}, "only for type bridge"),
                       ({"name": "x", "type": "bridge", "subnet": "10.0.0.0/24", "bridge": "a" * 16}, "interface name"),
                       ({"name": "host", "subnet": "10.0.0.0/24"}, "reserved"),
                       ({"name": "x", "subnet": "10.0.0.0/24", "mtu": 10}, "mtu"),
                       ({"name": "x", "subnet": "10.0.0.0/24", "routes": [{"dst": "1.2.3.4/8"}]}, "host bits")]:
        with pytest.raises(ValidationError, match=words):
            netconf.validate(doc, "f.json")


def test_config_files_first_definition_wins_and_duplicates_fail(tmp_path):
    dd = DataDir(str(tmp_path))
    d = tmp_path / "net.d"
    d.mkdir()
    (d / "a.json").write_text('{"name": "default", "subnet": "10.9.0.0/24"}')
    confs = netconf.load(dd)
    assert confs["default"]["subnet"] == "10.9.0.0" and confs["default"]["file"].endswith("a.json")
    (d / "b.json").write_text('{"name": "default", "subnet": "10.8.0.0/24"}')
    with pytest.raises(Exception, match="defined twice"):
        netconf.load(dd)
    (d / "b.json").write_text('{"name": ')
    with pytest.raises(Exception, match="b.json"):
        netconf.load(dd)


def test_parse_net():
    assert netconf.parse_net("default") == ["default"]
    assert netconf.parse_net(["a", "b"]) == ["a", "b"]
    assert netconf.parse_net("a,b") == ["a", "b"]
    for bad in ("host,a", ["a", "a"], "", ["none", "x"]):
        with pytest.raises(ValidationError):
            netconf.parse_net(bad)


def test_port_specs():
    assert podspec.normalize_port({"name": "http", "hostPort": 80}, 0) == {
        "name": "http", "port": None, "protocol": None, "host_port": 80, "host_ip": None}
    assert podspec.normalize_port({"port": "53", "protocol": "udp", "host_port": 5353, "host_ip": "127.0.0.1"}, 0)[
        "port"] == 53
    cases = [({"host_port": 80}, "needs name"), ({"name": "h", "host_port": 0}, "1 to 65535"),
             ({"port": 1, "host_port": 2, "host_ip": "x"}, "IPv4"),
             ({"name": "h", "host_port": 1, "zz": 1}, "not a port option"),
             ({"name": "h", "protocol": "tcp", "host_port": 1}, "goes with port")]
    for raw, words in cases:
        with pytest.raises(ValidationError, match=words):
            podspec.normalize_port(raw, 0)
    with pytest.raises(ValidationError, match="already forwarded"):
        podspec.normalize_spec({"apps": ["x"], "ports": [{"port": 1, "host_port": 9}, {"port": 2, "host_port": 9}]})


def test_old_specs_without_ports_compare_equal():
    spec = podspec.normalize_spec({"apps": ["x"]})
    old = dict(spec)
    del old["ports"]
    assert podspec.differences(spec, old) == []


def test_firewall_rules_are_tagged_with_the_pod():
    nets = [{"ip": "172.16.28.5", "subnet": "172.16.28.0", "prefix": 24, "ip_masq": True, "host_ifname": "rktabc0",
             "bridge": None}]
    ports = [{"protocol": "tcp", "host_port": 8080, "port": 80, "host_ip": None},
             {"protocol": "udp", "host_port": 53, "port": 53, "host_ip": "192.0.2.1"}]
    text = firewall.rules("U", nets, ports)
    rules = [line for line in text.splitlines() if line.startswith("add rule")]
    assert all(line.endswith('comment "rocket-pod U"') for line in rules)
    assert "ip saddr 172.16.28.5 ip daddr != 172.16.28.0/24 masquerade" in text
    assert "add rule ip rocket prerouting fib daddr type local tcp dport 8080 dnat to 172.16.28.5:80" in text
    assert "add rule ip rocket output ip daddr 192.0.2.1 udp dport 53 dnat to 172.16.28.5:53" in text
    assert 'iifname "rktabc0" ip daddr 127.0.0.0/8 drop' in text


def test_names_fit_interface_names():
    u = "0123abcd-4567-89ef-0123-456789abcdef"
    assert len(net.host_ifname(u, 7)) <= 15 and net.host_ifname(u, 0) != net.host_ifname(u, 1)
    assert net.pod_mac(u, 1) == "02:01:23:ab:cd:01"


def test_ipam_allocates_round_robin_and_releases(tmp_path):
    dd = DataDir(str(tmp_path))
    for state in ("run",):
        for u in ("a", "b", "c"):
            os.makedirs(os.path.join(dd.pod_state_dir(state), u))
    n = netconf.validate({"name": "t", "subnet": "10.1.0.0/29"}, "t")
    assert ipam.allocate(dd, "a", [n], []) == ["10.1.0.2"]
    assert ipam.allocate(dd, "a", [n], []) == ["10.1.0.2"]  # the same pod asks again
    assert ipam.allocate(dd, "b", [n], []) == ["10.1.0.3"]
    ipam.release(dd, "a")
    assert ipam.allocate(dd, "c", [n], []) == ["10.1.0.4"]  # round robin: not the one just freed
    assert ipam.held(dd) == {"t/10.1.0.3": "b", "t/10.1.0.4": "c"}


def test_ipam_reclaims_holders_whose_pods_are_gone(tmp_path):
    dd = DataDir(str(tmp_path))
    n = netconf.validate({"name": "t", "subnet": "10.1.0.0/30"}, "t")
    os.makedirs(os.path.join(dd.pod_state_dir("run"), "a"))
    ipam.allocate(dd, "a", [n], [])
    with pytest.raises(ipam.PoolExhausted, match="no free address in 10.1.0.0/30"):
        ipam.allocate(dd, "b", [n], [])
    os.rmdir(os.path.join(dd.pod_state_dir("run"), "a"))
    assert ipam.allocate(dd, "b", [n], []) == ["10.1.0.2"]


def test_host_network_start_path_imports_no_networking():
    """net: host pays nothing: neither our networking modules nor pyroute2 are imported."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run\n"
            "run._flags('host', False, False, None); run._flags('none', False, False, None)\n"
            "bad = [m for m in sys.modules if 'netconf' in m or 'ipam' in m or m.endswith(('.net', '.netlink', "
            "'.firewall')) or m.startswith('pyroute2')]\n"
            "assert not bad, bad\n") % COLLECTIONS
    subprocess.run([sys.executable, "-I", "-S", "-c", code], check=True)


@pytest.fixture
def subnets(tmp_path, monkeypatch):
    """The host-wide subnet claims, private to the test; links: the host's link names."""
    monkeypatch.setattr(ipam, "SUBNETS", str(tmp_path / "subnets"), raising=False)
    links = []
    monkeypatch.setattr(ipam, "_links", lambda: links, raising=False)
    return links


def test_two_data_dirs_cannot_share_a_subnet_while_pods_run(tmp_path, subnets):
    """Issue #13 finding 9: two data directories both handed out 172.16.28.2 from the default
    network, silently; now the second is refused and told which data directory holds it."""
    n = {"name": "default", "type": "ptp", "subnet": "172.16.28.0", "prefix": 24, "gateway": "172.16.28.1"}
    one, two = DataDir(str(tmp_path / "one")), DataDir(str(tmp_path / "two"))
    uuid = "0123abcd-0000-0000-0000-000000000000"
    assert ipam.allocate(one, uuid, [n], []) == ["172.16.28.2"]
    subnets.append(net.host_ifname(uuid, 0))  # the pod runs
    wider = dict(n, name="wide", subnet="172.16.0.0", prefix=16, gateway="172.16.0.1")
    for other in (n, wider):
        with pytest.raises(ipam.SubnetInUse, match="overlaps 172.16.28.0/24 \\(network default\\) of the "
                           "data directory %s, whose running pods use 1 address\\(es\\) there \\(172.16.28.2\\)"
                           % one.path):
            ipam.allocate(two, "b", [other], [])
    assert ipam.held(two) == {}
    elsewhere = dict(n, name="other", subnet="172.16.29.0", gateway="172.16.29.1")
    assert ipam.allocate(two, "b", [elsewhere], []) == ["172.16.29.2"]
    # The pod stops (its link goes): the subnet is free for the other data directory.
    subnets.clear()
    assert ipam.allocate(two, "c", [n], []) == ["172.16.28.2"]
    ipam.release(two, "c")
    ipam.release(two, "b")
    assert os.listdir(ipam.SUBNETS) == [".lock"]
