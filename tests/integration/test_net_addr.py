"""Addresses, IPv6 and names on private networks, for real (issue #17): a dual-stack bridge,
fixed ip/ip6/mac, a random host port and a port range forwarded for both families, DNS
search/options, extra_hosts and hostname aliases; refusals leave nothing behind.

Run through tools/isolated.sh (links, routes and nft tables of the namespace change).
"""
import json
import os
import socket
import subprocess
import time

import pytest

from tests.integration.test_pod_modules import four_steps
# The guard test uses test_net's fixtures (a static raw-frame sender in a busybox image).
from tests.integration.test_net import own_ruleset, rawsend, raw_store  # noqa: F401 pylint: disable=unused-import
from tests.support.ansible_run import module
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import ipam
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter

pytestmark = pytest.mark.skipif(not any(os.access(p, os.X_OK) for p in ("/usr/sbin/nft", "/sbin/nft")),
                                reason="nft is not installed")

DS = {"name": "ds", "type": "bridge", "subnet": "10.77.0.0/24", "subnet6": "fd00:77::/64", "bridge": "rkt-ds77"}
# Two ports served: 80 (the random host port's target) and 8001 (the range's second port).
SERVE = ("mkdir -p /www && echo v6-and-v4 > /www/index.html && httpd -p 80 -h /www && "
         "httpd -p 8001 -h /www && exec sleep 1000")


def net_state(dd):
    def out(*cmd):
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    links = sorted(line.split(":")[1].strip().split("@")[0] for line in out("ip", "-o", "link").splitlines())
    return {"links": links, "addrs": sorted(out("ip", "-o", "addr").splitlines()),
            "routes": sorted((out("ip", "-4", "route") + out("ip", "-6", "route")).splitlines()),
            "nft": own_ruleset(), "ipam": ipam.held(DataDir(dd))}


def write_network(dd, conf):
    os.makedirs(os.path.join(dd, "net.d"), exist_ok=True)
    with open(os.path.join(dd, "net.d", conf["name"] + ".json"), "w") as f:
        json.dump(conf, f)


def in_pod(dd, name, script):
    p = podmod.find_by_name(DataDir(dd), name)
    rc, out, err = enter(p, p.manifest()["apps"][0]["name"], ["/bin/sh", "-c", script])
    return rc, out.decode() + err.decode()


def fetch(family, host, port, wait=10.0):
    """A page over a fresh connection. A pod is running once its apps exec, not once they
    listen: a refused connection is tried again until ``wait`` seconds have passed."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return _fetch_once(family, host, port)
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _fetch_once(family, host, port):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(5)
    try:
        s.connect((host, port))
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                return data.decode()
            data += b
    finally:
        s.close()


def test_dual_stack_pod_with_fixed_addresses_random_port_range_and_names(dd):
    write_network(dd, DS)
    before = net_state(dd)
    args = {"name": "web", "image": "example.com/busybox", "data_dir": dd, "net": ["ds"], "hostname": "web1",
            "exec": ["/bin/sh", "-c", SERVE], "user": "0", "group": "0", "cap_add": ["CAP_NET_RAW"],
            "ip": "10.77.0.50", "ip6": "fd00:77::50", "mac": "02:42:0a:4d:00:32",
            "dns": ["192.0.2.53"], "dns_search": ["svc.example", "example"], "dns_options": ["ndots:2", "timeout:1"],
            "extra_hosts": {"db": "10.77.0.99", "db6": "fd00:77::99"}, "hostname_aliases": ["www", "api"],
            "ports": [{"port": 80, "host_port": 0}, {"port": "8000-8001", "host_port": "18000-18001"}]}
    checked, applied = four_steps(args, "run")
    assert checked["diff"]["after"]["run"]["net_options"]["ip"] == "10.77.0.50", checked["diff"]
    net = applied["pod"]["networks"][0]
    assert (net["ip"], net["ip6"], net["mac"], net["gateway6"]) == ("10.77.0.50", "fd00:77::50", "02:42:0a:4d:00:32",
                                                                    "fd00:77::1"), net
    assert net["aliases"] == ["www", "api"]
    chosen = [p["host_port"] for p in net["ports"] if p["port"] == 80]
    assert len(chosen) == 1 and 1024 <= chosen[0] <= 65535, net["ports"]
    assert sorted((p["port"], p["host_port"]) for p in net["ports"] if p["port"] != 80) == [(8000, 18000), (8001, 18001)]
    # the random port, for both families (IPv6 on the host's address on the bridge: no ::1 forwards)
    assert "v6-and-v4" in fetch(socket.AF_INET, "127.0.0.1", chosen[0])
    assert "v6-and-v4" in fetch(socket.AF_INET6, "fd00:77::1", chosen[0])
    assert "v6-and-v4" in fetch(socket.AF_INET6, "fd00:77::1", 18001)  # the range: host 18001 -> pod 8001
    assert "v6-and-v4" in fetch(socket.AF_INET, "127.0.0.1", 18001)
    # the again-step kept the pod, so the random port is the same one
    again = module("pod_info", {"data_dir": dd, "name": "web"})["pods"][0]
    assert again["networks"][0]["ports"] == net["ports"] and again["uuid"] == applied["pod"]["uuid"]

    rc, out = in_pod(dd, "web", "cat /etc/hosts /etc/resolv.conf; ip -o addr show eth0; ip link show eth0")
    assert rc == 0, out
    lines = out.splitlines()
    for want in ("10.77.0.50\tweb1 www api", "fd00:77::50\tweb1 www api", "10.77.0.99\tdb", "fd00:77::99\tdb6",
                 "search svc.example example", "options ndots:2 timeout:1", "nameserver 192.0.2.53"):
        assert want in lines, out
    assert "inet6 fd00:77::50/64" in out and "02:42:0a:4d:00:32" in out, out

    # a second pod on the bridge: IPv6 both ways, by address and (extra_hosts) by name
    peer = module("pod_run", {"name": "peer", "image": "example.com/busybox", "data_dir": dd, "net": ["ds"],
                              "exec": ["/bin/sh", "-c", "exec sleep 1000"], "user": "0", "group": "0", "cap_add": ["CAP_NET_RAW"],
                              "extra_hosts": {"web6": "fd00:77::50"}})
    assert peer["changed"] and not peer.get("failed"), peer
    peer6 = peer["pod"]["networks"][0]["ip6"]
    assert peer6.startswith("fd00:77::") and peer6 != "fd00:77::50"
    rc, out = in_pod(dd, "peer", "ping6 -c 2 -W 2 web6 && wget -q -O - http://[fd00:77::50]:80/index.html")
    assert rc == 0 and "2 packets received" in out and "v6-and-v4" in out, out
    rc, out = in_pod(dd, "web", "ping6 -c 1 -W 2 %s" % peer6)
    assert rc == 0 and "1 packets received" in out, out

    # a changed option replaces the pod, and the diff names it
    r = module("pod_run", dict(args, dns_options=["ndots:3"]), diff=True)
    assert r["changed"] and r["action"] == "replace", r
    assert r["diff"]["after"]["run.net_options"]["dns_options"] == ["ndots:3"], r["diff"]
    rc, out = in_pod(dd, "web", "cat /etc/resolv.conf")
    assert "options ndots:3" in out, out

    for name in ("web", "peer"):
        assert module("pod_run", {"name": name, "state": "absent", "data_dir": dd})["changed"]
    after = net_state(dd)
    assert after == before, {k: (before[k], after[k]) for k in after if after[k] != before[k]}


def test_fixed_addresses_out_of_the_pool_or_taken_are_refused_and_leave_nothing(dd):
    write_network(dd, DS)
    before = net_state(dd)
    base = {"name": "bad", "image": "example.com/busybox", "data_dir": dd, "net": ["ds"],
            "exec": ["/bin/sh", "-c", "exec sleep 1000"]}
    for extra, words in [({"ip": "10.78.0.5"}, 'ip: "10.78.0.5" is not in the pool of network ds'),
                         ({"ip6": "fd00:78::5"}, "is not in the pool of network ds"),
                         ({"ip": "10.77.0.1"}, "without its gateway 10.77.0.1"),
                         ({"mac": "01:00:5e:00:00:01"}, "multicast"),
                         ({"ports": [{"port": "80-81", "host_port": 0}]}, "single port")]:
        for check in ((True, False) if "ip" in extra else (False,)):  # check mode refuses too (once is enough)
            r = module("pod_run", dict(base, **extra), check=check)
            assert r.get("failed") and words in r["msg"], (extra, r.get("msg"))
    assert module("pod_info", {"data_dir": dd})["pods"] == []
    # a fixed address another running pod holds: refused at the start, nothing of the second pod stays
    r = module("pod_run", dict(base, name="first", ip="10.77.0.60"))
    assert r["changed"] and r["pod"]["networks"][0]["ip"] == "10.77.0.60", r
    r = module("pod_run", dict(base, name="second", ip="10.77.0.60"))
    assert r.get("failed") and "ip: 10.77.0.60 on network ds is held by pod %s" % module(
        "pod_info", {"data_dir": dd, "name": "first"})["pods"][0]["uuid"] in r["msg"], r.get("msg")
    held = ipam.held(DataDir(dd))
    assert sorted(k for k in held if not k.startswith("ports/")) == ["ds/10.77.0.60", "ds/fd00:77::2"], held
    for p in module("pod_info", {"data_dir": dd})["pods"]:
        module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": dd})
    after = net_state(dd)
    assert after == before, {k: (before[k], after[k]) for k in after if after[k] != before[k]}


def _udp6(src_mac, dst_mac, src, dst, dport, payload):
    from tests.integration.test_net import _csum, _mac

    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, dst)
    udp = (4242).to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\0\0"
    csum = _csum(s + d + (8 + len(payload)).to_bytes(4, "big") + b"\0\0\0\x11" + udp + payload)
    udp = udp[:6] + csum
    ip = b"\x60\0\0\0" + (8 + len(payload)).to_bytes(2, "big") + b"\x11\x40" + s + d
    return (_mac(dst_mac) + _mac(src_mac) + b"\x86\xdd" + ip + udp + payload).hex()


def _icmp6_all_nodes(src_mac, src, body):
    """An ICMPv6 message to ff02::1 (all nodes), hop limit 255 as neighbour discovery wants."""
    from tests.integration.test_net import _csum, _mac

    s, d = socket.inet_pton(socket.AF_INET6, src), socket.inet_pton(socket.AF_INET6, "ff02::1")
    body = body[:2] + b"\0\0" + body[4:]
    body = body[:2] + _csum(s + d + len(body).to_bytes(4, "big") + b"\0\0\0\x3a" + body) + body[4:]
    ip = b"\x60\0\0\0" + len(body).to_bytes(2, "big") + b"\x3a\xff" + s + d
    return (b"\x33\x33\0\0\0\x01" + _mac(src_mac) + b"\x86\xdd" + ip + body).hex()


def test_a_pod_cannot_send_ipv6_as_another_nor_poison_neighbours_nor_advertise_routes(raw_store):
    """The link guard on a dual-stack bridge: IPv6 only from the pod's own addresses, no
    neighbour advertisement for another's address, no router advertisement."""
    from tests.integration.test_net import RAW, _link_mac, _mac, gc, in_pod as pod_sh, info, run, start, write_conf

    store = raw_store
    write_conf(store, {"name": "br6", "type": "bridge", "subnet": "10.79.0.0/24", "subnet6": "fd00:79::/64",
                       "bridge": "rkt-br79", "ipMasq": False})
    before = net_state(store.dd.path)
    a = start(store, [dict(image="example.com/rawsend", name="r", isolators=RAW)], net="br6")
    b = start(store, [dict(image="example.com/rawsend", name="v")], net="br6")
    ia, ib = info(a)[0], info(b)[0]
    bridge_mac = _link_mac("rkt-br79")
    assert "hello-from-v" in fetch(socket.AF_INET6, ib["ip6"], 80)  # the host learns b's IPv6 neighbour entry
    sink = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    sink.bind(("::", 0))
    port = sink.getsockname()[1]
    try:
        na = (b"\x88\0\0\0\x20\0\0\0" + socket.inet_pton(socket.AF_INET6, ib["ip6"]) + b"\x02\x01" + _mac(ia["mac"]))
        ll_a = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, "fe80::%02x%s:%sff:fe%s:%s%s" % tuple(
            [int(ia["mac"][:2], 16) ^ 2] + ia["mac"].split(":")[1:])))
        ra = b"\x86\0\0\0\x40\0\x07\x08" + b"\0" * 8 + b"\x01\x01" + _mac(ia["mac"])
        frames = [_udp6(ia["mac"], bridge_mac, ia["ip6"], ia["gateway6"], port, b"as-myself"),
                  _udp6(ia["mac"], bridge_mac, ib["ip6"], ia["gateway6"], port, b"as-b-ip6"),
                  _udp6(ib["mac"], bridge_mac, ib["ip6"], ia["gateway6"], port, b"as-b-ip6-and-mac"),
                  _icmp6_all_nodes(ia["mac"], ia["ip6"], na), _icmp6_all_nodes(ia["mac"], ll_a, ra)]
        rc, out, err = pod_sh(a, "r", "/rawsend eth0 " + " ".join(frames))
        assert rc == 0 and "sent 5" in out, out + err
        sink.settimeout(1.5)
        got = []
        try:
            while True:
                got.append(sink.recvfrom(2048))
        except socket.timeout:
            pass
    finally:
        sink.close()
    host_sees_b_at = subprocess.run(["ip", "-6", "neigh", "show", ib["ip6"]], capture_output=True, text=True,
                                    check=False).stdout
    routes_b = pod_sh(b, "v", "ip -6 route")[1]
    routes_host = subprocess.run(["ip", "-6", "route"], capture_output=True, text=True, check=True).stdout
    seen = {"udp": [(d, src[0]) for d, src in got], "host's entry for b is a's MAC": ia["mac"] in host_sees_b_at,
            "a route via a": ll_a in routes_b + routes_host}
    assert seen == {"udp": [(b"as-myself", ia["ip6"])], "host's entry for b is a's MAC": False,
                    "a route via a": False}, (seen, routes_b, routes_host)
    assert ib["mac"] in host_sees_b_at
    for x in (a, b):
        run.stop(x, timeout=5)
    assert gc(store) == []
    after = net_state(store.dd.path)
    assert after == before, {k: (before[k], after[k]) for k in after if after[k] != before[k]}


def test_default_redefined_dual_stack_ptp_reaches_the_host_and_forwards_ipv6(dd):
    """`default` is point-to-point: the host end carries gateway6/128, the pod a /128 route to it."""
    write_network(dd, {"name": "default", "subnet": "172.16.79.0/24", "subnet6": "fd00:7a::/64"})
    before = net_state(dd)
    r = module("pod_run", {"name": "p6", "image": "example.com/busybox", "data_dir": dd, "net": ["default"],
                           "exec": ["/bin/sh", "-c", SERVE], "user": "0", "group": "0", "cap_add": ["CAP_NET_RAW"],
                           "ports": [{"port": 80, "host_port": 0}]})
    assert r["changed"] and not r.get("failed"), r.get("msg")
    net = r["pod"]["networks"][0]
    assert net["ip6"] == "fd00:7a::2" and net["gateway6"] == "fd00:7a::1", net
    assert "v6-and-v4" in fetch(socket.AF_INET6, "fd00:7a::1", net["ports"][0]["host_port"])
    assert "v6-and-v4" in fetch(socket.AF_INET6, "fd00:7a::2", 80)  # routed to the pod's /128
    rc, out = in_pod(dd, "p6", "ping6 -c 1 -W 2 fd00:7a::1 && ip -6 route")
    assert rc == 0 and "1 packets received" in out and "default via fd00:7a::1" in out, out
    assert module("pod_run", {"name": "p6", "state": "absent", "data_dir": dd})["changed"]
    after = net_state(dd)
    assert after == before, {k: (before[k], after[k]) for k in after if after[k] != before[k]}
