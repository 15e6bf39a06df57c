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
    rc, out, err = enter(podmod.find_by_name(DataDir(dd), name), "c", ["/bin/sh", "-c", script])
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
        steps = [pod_run(dd, check=c, **args) for c in (True, False)] + [pod_run(dd, **args),
                                                                           pod_run(dd, check=True, **args)]
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
        # in use: refused, naming the pod, in check mode too, while it runs and once it exited
        for check in (True, False):
            r = module("pod_network", {"name": "glue", "state": "absent", "data_dir": dd}, check=check)
            assert r.get("failed") and "network glue is used by pod %s" % uuid in r["msg"], r
        listed = module("pod_network", {"data_dir": dd})["networks"]
        assert [x["used_by"] for x in listed if x["name"] == "glue"] == [[uuid]], listed
        assert pod_run(dd, name="web", state="absent")["changed"]
        assert not module("pod_gc", {"grace": 0, "data_dir": dd}).get("failed")
        gone = four_steps({"name": "glue", "state": "absent", "data_dir": dd})
        assert gone[0]["diff"]["before"]["plugins"] == cni["plugins"] and gone[0]["diff"]["after"] == {}
        assert os.listdir(os.path.join(dd, "net.d")) == []
        assert cni_state(dd) == before
    finally:
        subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)
