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
                 "bridge": "rkt-back", "mtu": None, "subnet6": None, "prefix6": None, "gateway6": None, "routes6": []}
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
    cases = [({"host_port": 80}, "needs name"), ({"name": "h", "host_port": -1}, "0 to 65535"),
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


def test_dual_stack_config():
    c = netconf.validate({"name": "ds", "type": "bridge", "subnet": "10.7.0.0/24", "subnet6": "FD00:7::/64"}, "f")
    assert (c["subnet6"], c["prefix6"], c["gateway6"]) == ("fd00:7::", 64, "fd00:7::1")
    assert c["routes6"] == [{"dst": "::", "prefix": 0}] and c["routes"] == [{"dst": "0.0.0.0", "prefix": 0}]
    c = netconf.validate({"name": "ds", "subnet": "10.7.0.0/24", "subnet6": "fd00:7::/112", "gateway6": "fd00:7::fe",
                          "routes": [{"dst": "fd00:8::/64"}]}, "f")
    assert c["routes"] == [] and c["routes6"] == [{"dst": "fd00:8::", "prefix": 64}] and c["gateway6"] == "fd00:7::fe"
    for doc, words in [({"subnet6": "fd00::1/64"}, "host bits"), ({"subnet6": "fd00::/48"}, "64 to 120"),
                       ({"subnet6": "10.0.0.0/8"}, "not an IPv6"), ({"gateway6": "fd00::1"}, "needs subnet6"),
                       ({"subnet6": "fe80::/64"}, "link-local"),
                       ({"subnet6": "fd00::/64", "gateway6": "fd01::1"}, "not a host address"),
                       ({"routes": [{"dst": "::/0"}]}, "without subnet6")]:
        with pytest.raises(ValidationError, match=words):
            netconf.validate(dict({"name": "x", "subnet": "10.0.0.0/24"}, **doc), "f.json")


def test_network_options_are_checked_and_name_the_option(tmp_path):
    o = netconf.normalize_options({"ip": "10.1.0.9", "ip6": "FD00::0009", "mac": "02:AA:bb:cc:dd:ee",
                                   "dns_search": ["example.com"], "dns_options": ["ndots:2"],
                                   "extra_hosts": {"db": "10.9.0.1", "v6": "fd00::1"}, "hostname_aliases": ["web"]})
    assert o["ip6"] == "fd00::9" and o["mac"] == "02:aa:bb:cc:dd:ee" and o["extra_hosts"]["db"] == "10.9.0.1"
    for opts, field in [({"ip": "10.1.0"}, "ip"), ({"ip6": "10.1.0.1"}, "ip6"), ({"mac": "03:00:00:00:00:01"}, "mac"),
                        ({"mac": "zz:00:00:00:00:01"}, "mac"), ({"dns_search": ["a b"]}, r"dns_search\[0\]"),
                        ({"dns_options": ["a b"]}, r"dns_options\[0\]"), ({"extra_hosts": {"h": "x"}}, "extra_hosts.h"),
                        ({"extra_hosts": {"-h": "10.0.0.1"}}, "extra_hosts"),
                        ({"hostname_aliases": ["ok", "bad name"]}, r"hostname_aliases\[1\]"),
                        ({"dns_search": ["a.b"] * 7}, "dns_search")]:
        with pytest.raises(ValidationError) as e:
            netconf.normalize_options(opts)
        assert e.value.args and str(e.value).startswith(field.replace("\\", "")), str(e.value)
    dd = DataDir(str(tmp_path))
    os.makedirs(tmp_path / "net.d")
    (tmp_path / "net.d" / "ds.json").write_text('{"name": "ds", "type": "bridge", "subnet": "10.8.0.0/24", '
                                                '"subnet6": "fd00:8::/64"}')
    assert netconf.check_options(dd, ["ds"], {"ip": "10.8.0.5", "ip6": "fd00:8::5"})["ip"] == "10.8.0.5"
    for opts, words in [({"ip": "10.9.0.5"}, "not in the pool of network ds"), ({"ip": "10.8.0.1"}, "not in the pool"),
                        ({"ip": "10.8.0.255"}, "not in the pool"), ({"ip6": "fd00:9::5"}, "not in the pool"),
                        ({"ip6": "fd00:8::1"}, "not in the pool")]:
        with pytest.raises(ValidationError, match=words):
            netconf.check_options(dd, ["ds"], opts)
    with pytest.raises(ValidationError, match="no IPv6 subnet"):
        netconf.check_options(dd, ["default"], {"ip6": "fd00::5"})
    with pytest.raises(ValidationError, match="needs a private network"):
        netconf.check_options(dd, ["host"], {"ip": "10.8.0.5"})


def test_fixed_addresses_and_random_ports_in_ipam(tmp_path, subnets):
    dd = DataDir(str(tmp_path))
    for uuid in ("a", "b", "d"):  # holders whose pods exist (a holder without one is reclaimed)
        os.makedirs(os.path.join(dd.pod_state_dir("run"), uuid))
    n = {"name": "ds", "subnet": "10.3.0.0", "prefix": 24, "gateway": "10.3.0.1",
         "subnet6": "fd00:3::", "prefix6": 64, "gateway6": "fd00:3::1"}
    a = dict(n, want_ip="10.3.0.50", want_ip6="fd00:3::50")
    assert ipam.allocate(dd, "a", [a], []) == ["10.3.0.50"] and a["ip6"] == "fd00:3::50"
    b = dict(n)
    assert ipam.allocate(dd, "b", [b], []) == ["10.3.0.2"] and b["ip6"] == "fd00:3::2"
    with pytest.raises(ipam.AddressTaken, match="ip: 10.3.0.50 on network ds is held by pod a"):
        ipam.allocate(dd, "c", [dict(n, want_ip="10.3.0.50")], [])
    with pytest.raises(ipam.AddressTaken, match="ip6: fd00:3::50"):
        ipam.allocate(dd, "c", [dict(n, want_ip6="fd00:3::50")], [])
    assert not [k for k, v in ipam.held(dd).items() if v == "c"]  # nothing stays from a refusal
    ports = [{"protocol": "tcp", "host_port": 0, "port": 80}, {"protocol": "tcp", "host_port": 0, "port": 81}]
    ipam.allocate(dd, "d", [dict(n)], ports)
    assert all(1024 <= p["host_port"] <= 65535 for p in ports) and ports[0]["host_port"] != ports[1]["host_port"]
    assert "ports/tcp-%d-any" % ports[0]["host_port"] in ipam.held(dd)
    assert sorted(ipam.release(dd, "a")) == ["10.3.0.50", "fd00:3::50"]
    ipam.release(dd, "b")
    ipam.release(dd, "d")
    assert ipam.held(dd) == {}


def test_port_ranges_and_random_ports_in_specs():
    n = podspec.normalize_port({"port": "8000-8002", "host_port": "9000-9002"}, 0)
    assert (n["port"], n["host_port"]) == ("8000-8002", "9000-9002")
    assert podspec.normalize_port({"port": 80, "host_port": 0, "host_ip": "FD00::1"}, 0)["host_ip"] == "fd00::1"
    for raw, words in [({"port": "8000-8002", "host_port": "9000-9001"}, "range of 2 ports"),
                       ({"port": "8000-8002", "host_port": 0}, "single port"),
                       ({"port": "9-8", "host_port": 1}, "port range"),
                       ({"port": "1-2000", "host_port": "1-2000"}, "at most"),
                       ({"port": "8000-8002", "host_port": 65534}, "beyond 65535")]:
        with pytest.raises(ValidationError, match=words):
            podspec.normalize_port(raw, 0)
    with pytest.raises(ValidationError, match="9001, already forwarded by ports"):
        podspec.normalize_spec({"apps": ["x"], "ports": [
            {"port": "1-3", "host_port": "9000-9002"}, {"port": 5, "host_port": 9001}]})
    spec = podspec.normalize_spec({"apps": ["x"], "ports": [{"port": 1, "host_port": 0}, {"port": 2, "host_port": 0}]})
    assert [p["host_port"] for p in spec["ports"]] == [0, 0]


def test_dual_stack_rules_and_guard():
    nets = [{"host_ifname": "rktx0", "ip": "10.3.0.2", "subnet": "10.3.0.0", "prefix": 24, "ip_masq": True,
             "bridge": "rkt-ds", "ip6": "fd00:3::2", "subnet6": "fd00:3::", "prefix6": 64}]
    ports = [{"protocol": "tcp", "host_port": 8080, "port": 80},
             {"protocol": "udp", "host_port": 53, "port": 53, "host_ip": "fd00::1"}]
    script = firewall.rules("u", nets, ports)
    assert "add table ip6 rocket" in script
    assert "ip6 rocket prerouting fib daddr type local tcp dport 8080 dnat to [fd00:3::2]:80" in script
    assert "ip6 rocket output ip6 daddr fd00::1 udp dport 53 dnat to [fd00:3::2]:53" in script
    assert "ip rocket prerouting fib daddr type local tcp dport 8080 dnat to 10.3.0.2:80" in script
    assert "udp dport 53 dnat to 10.3.0.2" not in script  # an IPv6 host_ip: no IPv4 forward
    assert "ip6 saddr fd00:3::2 ip6 daddr != fd00:3::/64 masquerade" in script
    v4 = [dict(nets[0], ip6=None)]
    assert "ip6" not in firewall.rules("u", v4, ports[:1])  # IPv4-only: no ip6 table at all
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import linkguard
    assert linkguard.link_local("02:11:22:33:44:55").hex() == "fe80000000000000001122fffe334455"
    assert len(linkguard.program("02:11:22:33:44:55", "10.0.0.2", "fd00::2")) > len(
        linkguard.program("02:11:22:33:44:55", "10.0.0.2"))


def test_hosts_file_has_aliases_extra_hosts_and_ipv6(tmp_path):
    plan = {"dns": {"nameservers": ["192.0.2.1"], "search": ["a.example"], "options": ["ndots:2"]},
            "aliases": ["web", "www"], "extra_hosts": {"db": "10.9.0.1", "v6db": "fd00::9"}}
    info = [{"ip": "10.3.0.2", "ip6": "fd00:3::2"}]
    net.write_files(str(tmp_path), plan, "pod1", info)
    hosts = (tmp_path / "net" / "hosts").read_text().splitlines()
    assert "10.3.0.2\tpod1 web www" in hosts and "fd00:3::2\tpod1 web www" in hosts
    assert "10.9.0.1\tdb" in hosts and "fd00::9\tv6db" in hosts
    resolv = (tmp_path / "net" / "resolv.conf").read_text()
    assert "search a.example\n" in resolv and "options ndots:2\n" in resolv
    d = netconf.dns(["192.0.2.1"], search=["x.example"], options=["timeout:1"])
    assert (d["search"], d["options"]) == (["x.example"], ["timeout:1"])


def test_two_data_dirs_cannot_share_an_ipv6_subnet_while_pods_run(tmp_path, subnets):
    n = {"name": "ds", "subnet": "10.4.0.0", "prefix": 24, "gateway": "10.4.0.1",
         "subnet6": "fd00:4::", "prefix6": 64, "gateway6": "fd00:4::1"}
    one, two = DataDir(str(tmp_path / "one")), DataDir(str(tmp_path / "two"))
    uuid = "0123abcd-0000-0000-0000-000000000000"
    ipam.allocate(one, uuid, [dict(n)], [])
    subnets.append(net.host_ifname(uuid, 0))  # the pod runs
    inside = dict(n, subnet="10.5.0.0", gateway="10.5.0.1", subnet6="fd00:4::100", prefix6=120, gateway6="fd00:4::101")
    with pytest.raises(ipam.SubnetInUse, match="network ds: subnet fd00:4::100/120 overlaps fd00:4::/64 "
                       "\\(network ds\\) of the data directory %s" % one.path):
        ipam.allocate(two, "b", [inside], [])
    assert ipam.held(two) == {}
    assert ipam.allocate(two, "b", [dict(inside, subnet6="fd00:5::", prefix6=64, gateway6="fd00:5::1")], [])
    subnets.clear()
    ipam.release(two, "b")
    ipam.release(one, uuid)
    assert os.listdir(ipam.SUBNETS) == [".lock"]
