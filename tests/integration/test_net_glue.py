"""The seams between #17's parts, end to end through the modules: pod_network writes a CNI
network that pod_run starts a pod on, pod_info reports its CNI result and CHECK, and
pod_network refuses to remove it while the pod exists; peers' /etc/hosts lines carry their
aliases and IPv6 addresses; pod_network's subnet6/gateway6; fixed addresses refused on a
CNI first network.

Run through tools/isolated.sh, like test_net.py (links, bridges, nft and iptables rules).
"""
import json
import os
import subprocess

import pytest

from tests.support import leaks
from tests.support.ansible_run import module
from tests.integration.test_net import _try_fetch, fetch, wait_for
from tests.integration.test_net_names import four_steps
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter

HAVE_CNI = os.path.exists("/usr/lib/cni/bridge") and os.path.exists("/usr/sbin/iptables")
HAVE_NFT = any(os.access(p, os.X_OK) for p in ("/usr/sbin/nft", "/sbin/nft"))

BRIDGE = "cni-glue18"
SUBNET = "10.218.18.0/24"
HTTPD = ["/bin/sh", "-c", "mkdir -p /www && echo hello-glue > /www/index.html && exec httpd -f -p 80 -h /www"]


def pod_run(dd, check=False, **args):
    return module("pod_run", dict(args, data_dir=dd), check=check)


def cni_state(dd):
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = sorted(x.split(":")[1].strip().split("@")[0] for x in out.splitlines())
    cache = os.path.join(dd, "net", "cni")
    c = leaks.cni_state()
    return {"links": [x for x in links if x != BRIDGE], "iptables": sorted(c["cni_chains"]),
            "hostlocal": c["cni_hostlocal"], "cache": sorted(os.listdir(cache)) if os.path.isdir(cache) else []}


def in_pod(dd, name, script):
    rc, out, err = enter(podmod.find_by_name(DataDir(dd), name), None, ["/bin/sh", "-c", script])
    return rc, out.decode() + err.decode()


@pytest.mark.skipif(not HAVE_CNI, reason="containernetworking-plugins and iptables are not installed")
def test_pod_network_cni_pod_run_pod_info_and_removal_in_use(dd):
    """pod_network writes the conflist; pod_run's four steps start a pod on it that is
    reachable (directly and through portmap); pod_info shows the CNI result and CHECK;
    removal is refused naming the pod, then allowed after its removal and gc; nothing left."""
    before = cni_state(dd)
    cni = {"plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    try:
        net = four_steps({"name": "glue", "cni": cni, "data_dir": dd})
        assert net[1]["network"]["kind"] == "cni" and net[1]["network"]["file"].endswith("/net.d/glue.conflist")
        args = dict(name="web", image="example.com/busybox", exec=HTTPD, user="0", group="0", net=["glue"],
                    ports=[{"port": 80, "host_port": 18218}])
        # a fixed address or MAC on a CNI first network: refused at prepare naming the option, nothing made
        for opt, value in (("ip", "10.218.18.50"), ("ip6", "fd00:218::50"), ("mac", "02:42:0a:da:12:32")):
            r = pod_run(dd, **dict(args, **{opt: value}))
            assert r.get("failed") and r["msg"].startswith("%s: " % opt), r
            assert "network glue is a CNI configuration" in r["msg"], r
        assert module("pod_info", {"data_dir": dd})["pods"] == [] and cni_state(dd) == before
        steps = [pod_run(dd, check=c, **args) for c in (True, False, False, True)]
        assert [(bool(s.get("failed")), s["changed"]) for s in steps] == [
            (False, True), (False, True), (False, False), (False, False)], steps
        uuid = steps[1]["pod"]["uuid"]
        n = steps[1]["pod"]["networks"][0]
        assert n["cni"] is True and n["name"] == "glue" and n["ip"].startswith("10.218.18."), n
        # reachable: from the host at its address, and through portmap from the host's address
        assert "hello-glue" in wait_for(lambda: _try_fetch(n["ip"], 80)), n
        host_ip = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                                 text=True, check=True).stdout.split()[3].split("/")[0]
        assert "hello-glue" in fetch(host_ip, 18218)
        # pod_info: the CNI result and CHECK (Debian's portmap 1.1.1 fails its own IPv6 check
        # on an IPv4-only result under iptables-nft: docs/networking.md)
        (p,) = module("pod_info", {"name": "web", "data_dir": dd})["pods"]
        got = p["networks"][0]
        assert got["cni"] is True and got["ip"] == n["ip"] and got["gateway"] == "10.218.18.1", got
        assert got["ips"] and got["host_ifname"], got
        assert got["check"] == "ok" or got["check"].startswith(
            "CNI plugin portmap (CHECK of network glue) failed with status 1: could not check ipv6 dnat"), got
        # in use: refused, naming the pod (check mode refuses the same: test_net_names.py)
        r = module("pod_network", {"name": "glue", "state": "absent", "data_dir": dd})
        assert r.get("failed") and "network glue is used by pod %s" % uuid in r["msg"], r
        listed = module("pod_network", {"data_dir": dd})["networks"]
        assert [x["used_by"] for x in listed if x["name"] == "glue"] == [[uuid]], listed
        assert pod_run(dd, name="web", state="absent")["changed"]
        assert not module("pod_gc", {"grace": 0, "data_dir": dd}).get("failed")
        gone = module("pod_network", {"name": "glue", "state": "absent", "data_dir": dd}, diff=True)
        assert gone["changed"] and gone["diff"]["before"]["plugins"] == cni["plugins"], gone
        assert os.listdir(os.path.join(dd, "net.d")) == []
        assert cni_state(dd) == before
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)


@pytest.mark.skipif(not HAVE_NFT or not os.path.isdir("/proc/sys/net/ipv6"), reason="nft or IPv6 is missing")
def test_a_dual_stack_bridge_from_pod_network_and_peers_aliases_and_ipv6_lines(dd):
    """pod_network's subnet6/gateway6 (four steps); two pods on the bridge: one resolves the
    other's alias, and has its IPv6 line (with the alias) in /etc/hosts."""
    args = {"name": "dual", "type": "bridge", "subnet": "10.219.19.0/24", "bridge": "rkt-dual19",
            "subnet6": "fd00:219:19::/64", "gateway6": "fd00:219:19::fe", "ip_masq": False, "data_dir": dd}
    steps = four_steps(args)
    assert steps[0]["diff"]["after"]["subnet6"] == "fd00:219:19::/64"
    with open(os.path.join(dd, "net.d", "dual.json")) as f:
        assert json.load(f)["gateway6"] == "fd00:219:19::fe"
    r = module("pod_network", dict(args, name="bad6", subnet="10.219.20.0/24", bridge="rkt-bad20",
                                   subnet6="fd00:219:20::/64", gateway6="fd00:219:21::1"))
    assert r.get("failed") and "gateway6" in r["msg"], r
    common = dict(image="example.com/busybox", exec=["/bin/sleep", "120"], net=["dual"], cap_add=["NET_RAW"])
    a = pod_run(dd, name="alpha", hostname_aliases=["www-alpha"], **common)
    b = pod_run(dd, name="beta", **common)
    assert not a.get("failed") and not b.get("failed"), (a, b)
    na = a["pod"]["networks"][0]
    assert na["ip6"].startswith("fd00:219:19::") and na["gateway6"] == "fd00:219:19::fe", na
    rc, out = in_pod(dd, "beta", "cat /etc/hosts; ping -c 1 -W 2 www-alpha")
    assert rc == 0 and "PING www-alpha (%s)" % na["ip"] in out, out
    peers_part = out.split("rewritten as they come and go)")[1]
    assert "%s\talpha " % na["ip"] in peers_part and "%s\talpha " % na["ip6"] in peers_part, out
    assert [ln for ln in peers_part.splitlines() if ln.startswith(na["ip6"] + "\t")][0].endswith(" www-alpha"), out
    # alpha goes: beta stops resolving its alias (and its IPv6 line goes too)
    assert pod_run(dd, name="alpha", state="absent")["changed"]
    rc, out = in_pod(dd, "beta", "cat /etc/hosts; ping -c 1 -W 1 www-alpha")
    assert rc != 0 and na["ip6"] not in out and "bad address 'www-alpha'" in out, out
    assert pod_run(dd, name="beta", state="absent")["changed"]
    assert module("pod_network", {"name": "dual", "state": "absent", "data_dir": dd})["changed"]
    assert os.listdir(os.path.join(dd, "net.d")) == []
