"""CNI networks for real: Debian's containernetworking-plugins (/usr/lib/cni) run by stage1.

bridge + host-local + portmap end to end, macvlan to a peer through its parent link, a
bandwidth-limited pod, and the failures (a missing plugin, one that exits non-zero, a crash
between ADD and the start): each a clear error that leaves nothing behind (links, iptables
CNI-* chains, host-local's files, the result cache, the pinned namespace).
"""
import json
import os
import subprocess
import time

import pytest

from tests.support import leaks, pods
from tests.integration.test_net import HTTPD, fetch, in_pod, info, sh, wait_for, _try_fetch
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

pytestmark = pytest.mark.skipif(not os.path.exists("/usr/lib/cni/bridge") or not os.path.exists("/usr/sbin/iptables"),
                                reason="containernetworking-plugins and iptables are not installed")

SUBNET = "10.217.17.0/24"
BRIDGE = "cni-rkt17"


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir, pods.busybox_aci(image_dir, name="example.com/httpd", app=HTTPD))


def write(store, name, doc):
    d = os.path.join(store.dd.path, "net.d")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "w") as f:
        json.dump(doc, f)


def bridge_conflist(name="cnibr", extra=()):
    return {"cniVersion": "1.0.0", "name": name, "plugins": [
        {"type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": True,
         "ipam": {"type": "host-local", "ranges": [[{"subnet": SUBNET}]], "routes": [{"dst": "0.0.0.0/0"}]}},
        {"type": "portmap", "capabilities": {"portMappings": True}}] + list(extra)}


def start(store, apps, net, **kw):
    ports = kw.pop("ports", None)
    spec = {"apps": apps}
    if ports is not None:
        spec["ports"] = ports
    p = prepare.prepare(store, spec).pod
    run.start_detached(p, net=net, **kw)
    return p


def gc(store):
    return pod_gc.gc(store.dd, grace=0)["errors"]


def cni_state(store):
    """What a CNI pod could leave: links, iptables chains and rules, host-local's files, our cache."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    cni = leaks.cni_state()  # CNI-* chains and rules but the plugins' host-wide ones
    return {"links": [x for x in links if x != BRIDGE], "iptables": sorted(cni["cni_chains"]),
            "hostlocal": cni["cni_hostlocal"],
            "cache": sorted(os.listdir(os.path.join(store.dd.path, "net", "cni")))
            if os.path.isdir(os.path.join(store.dd.path, "net", "cni")) else [],
            "mounts": leaks.snapshot()["mounts"]}


def _drop_bridge():
    subprocess.run(["ip", "link", "del", BRIDGE], check=False, capture_output=True)


def test_bridge_host_local_portmap_end_to_end(store):
    """ADD at start (address, routes, the firewall plugin's rules, a port forward from the
    host), CHECK in pod_info, DEL at gc with nothing left: the pinned namespace, iptables,
    host-local, the cache."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge

    conf = bridge_conflist()
    conf["plugins"].insert(1, {"type": "firewall", "backend": "iptables"})
    write(store, "10-cnibr.conflist", conf)
    before = cni_state(store)
    try:
        p = start(store, [dict(image="example.com/httpd", name="web")], "cnibr",
                  ports=[{"name": "http", "host_port": 18117}])
        n = info(p)[0]
        assert n["cni"] is True and n["name"] == "cnibr" and n["ifname"] == "eth0"
        assert n["ip"].startswith("10.217.17.") and n["prefix"] == 24 and n["gateway"] == "10.217.17.1"
        assert n["guarded"] and n["host_ifname"].startswith("veth")
        assert os.path.exists("/var/lib/cni/networks/cnibr/%s" % n["ip"])
        assert os.path.exists(os.path.join(store.dd.path, "net", "cni", "%s-eth0.json" % p.uuid))
        # The firewall plugin's rule for the pod's address (its DEL needs the cached prevResult).
        assert any(n["ip"] + "/32" in rule for rule in cni_state(store)["iptables"] if "CNI-FORWARD" in rule), \
            cni_state(store)["iptables"]
        # The port forward through portmap's iptables (DNAT from the host's address).
        host_ip = subprocess.run(["ip", "-4", "-o", "addr", "show", "scope", "global"], capture_output=True,
                                 text=True, check=True).stdout.split()[3].split("/")[0]
        assert wait_for(lambda: "hello-from-web" in _try_fetch(host_ip, 18117)), cni_state(store)
        assert "hello-from-web" in fetch(n["ip"], 80)
        rc, out, err = in_pod(p, "web", "ip -o -4 addr show eth0 && ip route")
        assert rc == 0, err
        assert n["ip"] in out and "default via 10.217.17.1" in out
        # CHECK in pod_info: fine, then fails once the pod's address is taken away.
        # bridge and host-local pass CHECK; Debian's portmap 1.1.1 then fails its own IPv6
        # check on an IPv4-only result under iptables-nft (its defect: docs/networking.md).
        verdict = converge.describe(p, check_networks=True)["networks"][0]["check"]
        assert verdict == "ok" or verdict.startswith("CNI plugin portmap (CHECK of network cnibr) failed with status 1: "
                                                     "could not check ipv6 dnat"), verdict
        subprocess.run(["ip", "link", "set", n["host_ifname"], "nomaster"], check=True)
        verdict = converge.describe(p, check_networks=True)["networks"][0]["check"]
        assert verdict.startswith("CNI plugin bridge (CHECK of network cnibr) failed"), verdict
        subprocess.run(["ip", "link", "set", n["host_ifname"], "master", BRIDGE], check=True)
        run.stop(p, timeout=5)
        assert gc(store) == []
        assert cni_state(store) == before
    finally:
        _drop_bridge()


def test_a_missing_plugin_is_a_clear_error_before_anything(store):
    write(store, "20-nope.conflist", {"cniVersion": "1.0.0", "name": "nope", "plugins": [
        {"type": "no-such-plugin"}]})
    before = cni_state(store)
    p = prepare.prepare(store, {"apps": [sh("true", name="x")]}).pod
    with pytest.raises(RocketError, match=r"network nope \(.*20-nope.conflist\): CNI plugin no-such-plugin not found "
                                          r"in .*/usr/lib/cni"):
        run.start_detached(p, net="nope")
    assert p.dir_state == "prepared"
    pod_gc.remove(p)
    assert cni_state(store) == before


def test_a_plugin_that_exits_non_zero_fails_the_start_and_leaves_nothing(store):
    """The bridge plugin's ADD succeeded (address, link, NAT), the next plugin fails: the start
    fails naming it and its message, and the DEL undoes the bridge's ADD."""
    bindir = os.path.join(store.dd.path, "cni", "bin")
    os.makedirs(bindir)
    with open(os.path.join(bindir, "refuse"), "w") as f:
        f.write('#!/bin/sh\nif [ "$CNI_COMMAND" = ADD ]; then echo \'{"cniVersion":"1.0.0","code":7,'
                '"msg":"refused by the test"}\'; exit 1; fi\nexit 0\n')
    os.chmod(os.path.join(bindir, "refuse"), 0o755)
    write(store, "10-cnibr.conflist", bridge_conflist(extra=[{"type": "refuse"}]))
    before = cni_state(store)
    try:
        p = prepare.prepare(store, {"apps": [sh("sleep 30", name="x")]}).pod
        with pytest.raises(RocketError, match="CNI plugin refuse \\(ADD of network cnibr\\) failed with status 1: "
                                              "refused by the test"):
            run.start_detached(p, net="cnibr")
        assert gc(store) == []
        assert cni_state(store) == before
    finally:
        _drop_bridge()


def test_a_crash_between_add_and_the_start_then_gc_leaves_nothing(store, tmp_path):
    """stage1 SIGKILLed right after the bridge's and portmap's ADDs (by a last plugin that
    kills it, before the link guard and any app): the start fails, and gc's DEL (the cached
    result, the pinned namespace) removes everything."""
    bindir = os.path.join(store.dd.path, "cni", "bin")
    os.makedirs(bindir)
    marker = str(tmp_path / "killed")
    with open(os.path.join(bindir, "killer"), "w") as f:
        # Our parent is stage1's helper in the host's mount namespace, its parent stage1's init.
        f.write('#!/bin/sh\n[ "$CNI_COMMAND" = ADD ] || exit 0\n'
                'init=$(cut -d" " -f4 /proc/$PPID/stat)\necho "$init" > %s\nkill -9 "$init" "$PPID"\nexit 1\n'
                % marker)
    os.chmod(os.path.join(bindir, "killer"), 0o755)
    write(store, "10-cnibr.conflist", bridge_conflist(extra=[{"type": "killer"}]))
    before = cni_state(store)
    try:
        p = prepare.prepare(store, {"apps": [sh("sleep 30", name="x")]}).pod
        with pytest.raises(RocketError):
            run.start_detached(p, net="cnibr")
        assert os.path.exists(marker)
        ip = [n for n in os.listdir("/var/lib/cni/networks/cnibr") if n[0].isdigit()]
        assert len(ip) == 1  # the ADD happened and holds an address
        with open(os.path.join(store.dd.path, "net", "cni", "%s-eth0.json" % p.uuid)) as f:
            cached = json.load(f)
        assert cached["result"]["ips"][0]["address"].startswith(ip[0] + "/")
        assert gc(store) == []
        assert cni_state(store) == before
    finally:
        _drop_bridge()


@pytest.fixture
def peer_on_a_parent():
    """A parent link for macvlan (one end of a veth pair, no address) whose other end is in a
    peer network namespace serving HTTP on 192.0.2.2."""
    www = "/tmp/rkt-cni-peer-www"
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("hello-from-the-peer\n")
    cmds = [["ip", "netns", "add", "rkt-cni-peer"],
            ["ip", "link", "add", "cnimv0", "type", "veth", "peer", "name", "eth0", "netns", "rkt-cni-peer"],
            ["ip", "link", "set", "cnimv0", "up"],
            ["ip", "-n", "rkt-cni-peer", "addr", "add", "192.0.2.2/24", "dev", "eth0"],
            ["ip", "-n", "rkt-cni-peer", "link", "set", "eth0", "up"],
            ["ip", "-n", "rkt-cni-peer", "link", "set", "lo", "up"]]
    for c in cmds:
        subprocess.run(c, check=True)
    httpd = subprocess.Popen(["ip", "netns", "exec", "rkt-cni-peer", "busybox", "httpd", "-f", "-p", "8017", "-h", www])
    yield "cnimv0"
    httpd.kill()
    httpd.wait()
    subprocess.run(["ip", "link", "del", "cnimv0"], check=False)
    subprocess.run(["ip", "netns", "del", "rkt-cni-peer"], check=False)
    subprocess.run(["rm", "-rf", www], check=False)


def test_a_macvlan_pod_reaches_a_peer_through_the_parent_link(store, peer_on_a_parent):
    write(store, "30-mv.conflist", {"cniVersion": "1.0.0", "name": "mv", "plugins": [
        {"type": "macvlan", "master": peer_on_a_parent, "mode": "bridge",
         "ipam": {"type": "host-local", "ranges": [[{"subnet": "192.0.2.0/24", "rangeStart": "192.0.2.10"}]]}}]})
    before = cni_state(store)
    p = start(store, [sh("while true; do sleep 1; done", name="c")], "mv")
    try:
        n = info(p)[0]
        assert n["cni"] and n["ip"].startswith("192.0.2.") and int(n["ip"].split(".")[3]) >= 10 and n["prefix"] == 24
        assert n["host_ifname"] is None and n["guarded"] is False  # no host end: nothing to guard
        rc, out, err = in_pod(p, "c", "for i in 1 2 3 4 5 6 7 8 9 10; do "
                                      "wget -q -O - http://192.0.2.2:8017/ && exit 0; sleep 0.3; done; exit 1")
        assert rc == 0, err
        assert "hello-from-the-peer" in out
        # The peer learned the pod's address and MAC on its end of the parent link.
        neigh = subprocess.run(["ip", "-n", "rkt-cni-peer", "neigh", "show", n["ip"]], capture_output=True,
                               text=True, check=True).stdout
        assert n["mac"] in neigh, neigh
        run.stop(p, timeout=5)
        assert gc(store) == []
        assert cni_state(store) == before
    finally:  # before the parent link goes: macvlan's DEL needs it
        if os.path.isdir(p.path):
            pod_gc.remove(p, stop_timeout=5)


def test_a_bandwidth_limited_pod_gets_the_qdisc_and_a_transfer_near_the_limit(store):
    """resource/network-bandwidth (bytes per second) through the bandwidth plugin: a tbf at
    the rate on the host end, and a 2 MiB download into the pod at 512 KiB/s measures
    within 30% of it."""
    import http.server
    import threading

    write(store, "10-cnibr.conflist", bridge_conflist(extra=[{"type": "bandwidth",
                                                              "capabilities": {"bandwidth": True}}]))
    before = cni_state(store)
    limit = 512 * 1024
    size = 2 * 1024 * 1024
    body = b"x" * size

    class Big(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(size))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("10.217.17.1", 0), Big, bind_and_activate=False)
    t = None
    try:
        iso = [{"name": "resource/network-bandwidth", "value": {"default": True, "limit": "512Ki"}}]
        p = start(store, [sh("while true; do sleep 1; done", name="c", isolators=iso)], "cnibr")
        n = info(p)[0]
        qdisc = subprocess.run(["tc", "qdisc", "show", "dev", n["host_ifname"]], capture_output=True, text=True,
                               check=True).stdout
        assert "tbf" in qdisc and "rate 4194Kbit" in qdisc, qdisc  # 512 KiB/s = 4194304 bit/s
        with open(p.file("stage1/ignored-isolators")) as f:
            assert "network-bandwidth" not in f.read()  # enforced, by the plugin
        with open(p.file("apps/c/isolation.json")) as f:
            assert "resource/network-bandwidth" in json.load(f)["enforced"]
        srv.server_bind()
        srv.server_activate()
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        url = "http://10.217.17.1:%d/" % srv.server_port
        t0 = time.monotonic()
        rc, out, err = in_pod(p, "c", "true")
        overhead = time.monotonic() - t0
        t0 = time.monotonic()
        rc, out, err = in_pod(p, "c", "wget -q -O - %s | wc -c" % url)
        took = time.monotonic() - t0 - overhead
        assert rc == 0, err
        assert int(out.split()[0]) == size
        rate = size / took
        print("bandwidth: limit %d B/s, measured %.0f B/s over %.2f s" % (limit, rate, took))
        assert 0.7 * limit <= rate <= 1.3 * limit, (rate, took)
        run.stop(p, timeout=5)
        assert gc(store) == []
        assert cni_state(store) == before
    finally:
        if t is not None:
            srv.shutdown()
            t.join()
        srv.server_close()
        _drop_bridge()
