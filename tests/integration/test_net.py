"""Private networking for real: veth pairs, host-local IPAM, nftables NAT and port forwards.

Run through tools/isolated.sh: the tests change links, routes, sysctls and the firewall of
the network namespace they run in.
"""
import json
import os
import re
import signal
import socket
import subprocess
import threading
import time
import http.server

import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import ipam, netconf
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError, ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

pytestmark = pytest.mark.skipif(not any(os.access(p, os.X_OK) for p in ("/usr/sbin/nft", "/sbin/nft")),
                                reason="nft is not installed")

HTTPD = {"exec": ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-$AC_APP_NAME > /www/index.html && "
                  "exec httpd -f -p 80 -h /www"], "user": "0", "group": "0",
         "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir, pods.busybox_aci(image_dir, name="example.com/httpd", app=HTTPD))


def own_ruleset():
    """The nft tables our built-in networks write (ip/ip6 rocket), counters left out. CNI
    plugins leave host-wide iptables-nft chains whose packet counters move with any pod's
    traffic (tests/support/leaks.py watches their per-pod rules), and an `nft flush ruleset`
    test removes them: neither is a leak of ours."""
    text = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
    blocks = re.split(r"(?m)^(?=table )", text)
    ours = [b for b in blocks if re.match(r"table ip6? rocket ", b)]
    return re.sub(r"counter packets \d+ bytes \d+", "counter", "".join(ours))


def net_state(store=None):
    """Everything network-related a pod could leave behind."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    rules = own_ruleset()
    netns = sorted(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else []
    held = ipam.held(store.dd) if store is not None else {}
    return {"links": links, "addrs": sorted(addrs.splitlines()), "routes": sorted(routes.splitlines()),
            "nft": rules, "netns": netns, "ipam": held}


def sh(script, image="example.com/busybox", **kw):
    return dict({"image": image, "exec": ["/bin/sh", "-c", script]}, **kw)


def start(store, apps, net="default", **kw):
    ports = kw.pop("ports", None)
    spec = {"apps": apps}
    if ports is not None:
        spec["ports"] = ports
    p = prepare.prepare(store, spec).pod
    run.start_detached(p, net=net, **kw)
    return p


def info(p):
    with open(p.file("net-info.json")) as f:
        return json.load(f)


def wait_for(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    return pred()


def in_pod(p, app, script):
    rc, out, err = enter(p, app, ["/bin/sh", "-c", script])
    return rc, out.decode(), err.decode()


def host_http_server(ip):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            body = b"host-says-hi\n"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer((ip, 0), Quiet)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    return srv, t


def fetch(host, port, timeout=3.0):
    s = socket.create_connection((host, port), timeout=timeout)
    try:
        s.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        data = b""
        while True:
            b = s.recv(4096)
            if not b:
                return data.decode("utf-8", "replace")
            data += b
    finally:
        s.close()


def test_default_network_reaches_host_and_gc_leaves_nothing(store):
    before = net_state(store)
    p = start(store, [sh("while true; do sleep 1; done", name="c")])
    nets = info(p)
    assert len(nets) == 1
    n = nets[0]
    assert n["name"] == "default" and n["ifname"] == "eth0" and n["prefix"] == 24
    assert n["ip"].startswith("172.16.28.") and n["gateway"] == "172.16.28.1"
    srv, t = host_http_server(n["gateway"])
    try:
        rc, out, err = in_pod(p, "c", "wget -q -O - http://%s:%d/ && ip -o -4 addr && ip route && "
                                      "cat /etc/hosts /etc/resolv.conf && hostname" % (n["gateway"], srv.server_port))
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()
    assert rc == 0, err
    assert "host-says-hi" in out
    assert "eth0" in out and n["ip"] in out and "default via 172.16.28.1" in out
    assert "nameserver" in out and "%s\trkt-" % n["ip"] in out
    assert "127.0.0.53" not in out
    assert ipam.held(store.dd) == {"default/%s" % n["ip"]: p.uuid}
    assert n["host_ifname"] in net_state()["links"]
    assert "rocket-pod %s" % p.uuid in net_state()["nft"]
    run.stop(p, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before


def test_two_pods_on_default_reach_each_other_and_none_has_only_loopback(store):
    before = net_state(store)
    a = start(store, [sh("while true; do sleep 1; done", name="a")])
    b = start(store, [dict(image="example.com/httpd", name="b")])
    c = start(store, [sh("while true; do sleep 1; done", name="c")], net="none")
    ia, ib = info(a)[0], info(b)[0]
    assert ia["ip"] != ib["ip"]
    rc, out, err = in_pod(a, "a", "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O - http://%s/ && exit 0; "
                                  "sleep 0.3; done; exit 1" % ib["ip"])
    assert rc == 0, err
    assert "hello-from-b" in out
    assert info(c) == []
    rc, out, err = in_pod(c, "c", "ip -o link")
    assert rc == 0, err
    links = [m.group(1) for m in re.finditer(r"^\d+: ([^:@]+)", out, re.M)]
    assert links == ["lo"]
    for p in (a, b, c):
        run.stop(p, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before


@pytest.fixture
def other_host():
    """A second 'host' (a network namespace) wired to ours, and an address of our own."""
    cmds = [["ip", "netns", "add", "rkt-test-peer"],
            ["ip", "link", "add", "tpeer0", "type", "veth", "peer", "name", "eth0", "netns", "rkt-test-peer"],
            ["ip", "addr", "add", "198.51.100.1/24", "dev", "tpeer0"], ["ip", "link", "set", "tpeer0", "up"],
            ["ip", "-n", "rkt-test-peer", "addr", "add", "198.51.100.2/24", "dev", "eth0"],
            ["ip", "-n", "rkt-test-peer", "link", "set", "eth0", "up"],
            ["ip", "-n", "rkt-test-peer", "link", "set", "lo", "up"]]
    for c in cmds:
        subprocess.run(c, check=True)
    yield "rkt-test-peer", "198.51.100.1"
    subprocess.run(["ip", "link", "del", "tpeer0"], check=False)
    subprocess.run(["ip", "netns", "del", "rkt-test-peer"], check=False)


def test_port_forwards_from_another_host_the_host_address_and_localhost(store, other_host):
    peer, host_ip = other_host
    before = net_state(store)
    p = start(store, [dict(image="example.com/httpd", name="web")],
              ports=[{"name": "http", "host_port": 18080}, {"port": 80, "host_port": 18081, "host_ip": "127.0.0.1"}])
    manifest = p.manifest()
    assert manifest["ports"] == [{"name": "http", "hostPort": 18080}]
    assert wait_for(lambda: "hello-from-web" in _try_fetch("127.0.0.1", 18080))
    assert "hello-from-web" in fetch(host_ip, 18080)
    assert "hello-from-web" in fetch("127.0.0.1", 18081)
    with pytest.raises(OSError):  # only on 127.0.0.1
        fetch(host_ip, 18081, timeout=1)
    out = subprocess.run(["ip", "netns", "exec", peer, "busybox", "wget", "-q", "-O", "-",
                          "http://%s:18080/" % host_ip], capture_output=True, text=True, check=False)
    assert "hello-from-web" in out.stdout, out.stderr
    # A second pod cannot take the same host port: a clear error, nothing allocated.
    q = prepare.prepare(store, {"apps": [sh("sleep 5", name="x")], "ports": [{"port": 80, "host_port": 18080}]}).pod
    with pytest.raises(RocketError, match="host port tcp/18080 is already forwarded to pod %s" % p.uuid):
        run.start_detached(q, net="default")
    assert q.uuid not in ipam.held(store.dd).values()
    assert q.dir_state == "prepared"
    # The pod cannot reach the host's loopback through its link (route_localnet is on it).
    srv, t = host_http_server("127.0.0.1")
    try:
        script = ("wget -q -O - http://127.0.0.1:{port}/ || ip route add 127.0.0.0/8 via {gw} dev eth0 2>/dev/null; "
                  "wget -q -O - http://127.0.0.1:{port}/").format(port=srv.server_port, gw=info(p)[0]["gateway"])
        rc, out, err = in_pod(p, "web", script)
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()
    assert "host-says-hi" not in out
    run.stop(p, timeout=5)
    assert gc(store) == []
    pod_gc.remove(q)
    assert net_state(store) == before


def _try_fetch(host, port):
    try:
        return fetch(host, port, timeout=1)
    except OSError:
        return ""


def test_parallel_starts_get_distinct_addresses(store):
    before = net_state(store)
    pods_ = [prepare.prepare(store, {"apps": [sh("sleep 30", name="p")]}).pod for dummy in range(6)]
    errors = []

    def go(p):
        try:
            run.start_detached(p, net="default")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go, args=(p,)) for p in pods_]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    ips = [info(p)[0]["ip"] for p in pods_]
    assert len(set(ips)) == 6
    assert sorted(ipam.held(store.dd)) == sorted("default/" + ip for ip in ips)
    for p in pods_:
        run.stop(p, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before


def gc(store):
    return pod_gc.gc(store.dd, grace=0)["errors"]


def write_conf(store, doc, name="tiny.json"):
    d = os.path.join(store.dd.path, "net.d")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "w") as f:
        json.dump(doc, f)


def test_named_bridge_network_full_pool_is_a_clear_error(store):
    # /30: two host addresses, one of which is the gateway: room for one pod.
    write_conf(store, {"name": "tiny", "type": "bridge", "subnet": "10.77.0.0/30", "bridge": "rkt-tiny",
                       "ipMasq": False, "routes": [{"dst": "10.0.0.0/8"}]})
    before = net_state(store)
    # busybox's ping opens a raw socket: CAP_NET_RAW back (cap_add), no longer a default
    a = start(store, [sh("sleep 30", name="a", cap_add=["NET_RAW"])], net="tiny")
    ia = info(a)[0]
    assert ia == dict(ia, name="tiny", ip="10.77.0.2", gateway="10.77.0.1", prefix=30)
    assert "rkt-tiny" in net_state()["links"]
    rc, out, err = in_pod(a, "a", "ip route; ping -c 1 -W 2 10.77.0.1")
    assert rc == 0, out + err
    assert "10.0.0.0/8 via 10.77.0.1" in out and "default" not in out
    b = prepare.prepare(store, {"apps": [sh("sleep 30", name="b")]}).pod
    mid = net_state(store)
    with pytest.raises(RocketError, match=r"network tiny: no free address in 10.77.0.0/30 \(1 usable"):
        run.start_detached(b, net="tiny")
    assert net_state(store) == mid
    assert b.dir_state == "prepared"
    run.stop(a, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before  # the bridge went with its last pod


@pytest.mark.parametrize("doc, words", [
    ({"name": "bad", "subnet": "10.1.0.1/24"}, "has host bits set"),
    ({"name": "bad", "subnet": "10.1.0.0/24", "gateway": "10.2.0.1"}, "is not a host address of the subnet"),
    ({"name": "bad", "subnet": "10.1.0.0/24", "colour": "red"}, "colour"),
    ({"name": "bad", "type": "macvlan", "subnet": "10.1.0.0/24"}, "must be ptp or bridge"),
])
def test_bad_network_configs_are_clear_errors(store, doc, words):
    write_conf(store, doc, "bad.json")
    before = net_state(store)
    p = prepare.prepare(store, {"apps": [sh("true", name="x")]}).pod
    with pytest.raises(ValidationError, match=words):
        run.start_detached(p, net="bad")
    with pytest.raises(RocketError, match="no network nosuch"):
        os.unlink(os.path.join(store.dd.path, "net.d", "bad.json"))
        run.start_detached(p, net="nosuch")
    assert net_state(store) == before


def test_sigkill_of_stage1_then_gc_leaves_nothing(store):
    before = net_state(store)
    p = start(store, [sh("while true; do sleep 1; done", name="a")],
              ports=[{"port": 80, "host_port": 18090}])
    assert info(p)[0]["host_ifname"] in net_state()["links"]
    os.kill(p.pid(), signal.SIGKILL)  # the pod's PID 1: the kernel kills the whole pod
    assert run.wait(p, 10)  # also reaps the keeper, our child
    assert gc(store) == []
    assert net_state(store) == before


def test_dns_option_and_stub_resolver_fallback(tmp_path):
    stub = tmp_path / "resolv.conf"
    stub.write_text("nameserver 127.0.0.53\nsearch example.org\noptions edns0\n")
    upstream = tmp_path / "upstream.conf"
    upstream.write_text("nameserver 192.0.2.53\nnameserver 127.0.0.1\n")
    d = netconf.dns(None, str(stub), str(upstream))
    assert d == {"nameservers": ["192.0.2.53"], "search": ["example.org"], "options": ["edns0"]}
    d = netconf.dns(None, str(stub), str(tmp_path / "absent"))
    assert d["nameservers"] == list(netconf.FALLBACK_NAMESERVERS)
    assert netconf.dns(["192.0.2.1"], str(stub))["nameservers"] == ["192.0.2.1"]
    with pytest.raises(ValidationError, match="not an IP address"):
        netconf.dns(["nope"])


def test_dns_option_reaches_the_pod(store):
    p = start(store, [sh("while true; do sleep 1; done", name="a")], dns=["192.0.2.99"])
    rc, out, err = in_pod(p, "a", "cat /etc/resolv.conf")
    assert rc == 0, err
    assert out == "nameserver 192.0.2.99\n"
    run.stop(p, timeout=5)
    # A read-only root without /etc/resolv.conf or /etc/hosts runs, with its /etc as it is.
    q = start(store, [sh("while true; do sleep 1; done", name="a", read_only_rootfs=True)])
    rc, out, err = in_pod(q, "a", "ls /etc; ip -o -4 addr show eth0")
    assert rc == 0, err
    assert "resolv.conf" not in out and info(q)[0]["ip"] in out
    run.stop(q, timeout=5)


def test_pod_run_module_net_and_ports_idempotent_with_networks(tmp_path, image_dir):
    from tests.support.ansible_run import module

    dd = str(tmp_path / "rocket")
    with Store(dd) as s:
        s.import_file(pods.busybox_aci(image_dir, name="example.com/httpd", app=HTTPD))
        before = net_state(s)
    args = {"name": "web", "image": "example.com/httpd", "net": "default", "data_dir": dd,
            "ports": [{"name": "http", "host_port": 18070}], "dns": ["192.0.2.53"]}
    try:
        r = module("pod_run", args, check=True)
        assert r["changed"] is True and r["action"] == "run", r
        r = module("pod_run", args)
        assert r["changed"] is True and r["action"] == "run", r
        nets = r["pod"]["networks"]
        assert [n["name"] for n in nets] == ["default"] and nets[0]["ip"].startswith("172.16.28."), r
        assert wait_for(lambda: "hello-from-httpd" in _try_fetch("127.0.0.1", 18070))
        r = module("pod_run", dict(args, net=["default"]))
        assert r["changed"] is False and r["action"] == "none", r
        assert module("pod_info", {"name": "web", "data_dir": dd})["pods"][0]["networks"] == nets
        r = module("pod_run", dict(args, ports=[{"name": "http", "host_port": 18071}]), diff=True)
        assert r["changed"] is True and r["action"] == "replace", r
        assert r["diff"]["after"]["ports"][0]["host_port"] == 18071
        assert wait_for(lambda: "hello-from-httpd" in _try_fetch("127.0.0.1", 18071))
        r = module("pod_run", dict(args, ports=[{"name": "http", "host_port": 18071}], net="none"))
        assert r["changed"] is True and "run.net" in " ".join(r["reasons"]) and r["pod"]["networks"] == [], r
        r = module("pod_run", dict(args, ports=[{"name": "nosuch", "host_port": 1}]))
        assert r.get("failed") and "ports[0].name" in r["msg"] and "http" in r["msg"], r
    finally:
        module("pod_run", {"name": "web", "state": "absent", "data_dir": dd})
    with Store(dd) as s:
        assert net_state(s) == before


def test_a_failing_setup_leaves_nothing_and_foreign_bridges_stay(store):
    # "lo" exists and is no bridge: the start fails after the pod's veth pair and nft rules
    # were made, and both are undone.
    write_conf(store, {"name": "odd", "type": "bridge", "subnet": "10.78.0.0/24", "bridge": "lo"})
    before = net_state(store)
    p = prepare.prepare(store, {"apps": [sh("sleep 30", name="a")]}).pod
    with pytest.raises(RocketError, match="lo exists and is not a bridge"):
        run.start_detached(p, net="odd")
    assert run.wait(p, 10)
    assert gc(store) == []
    assert net_state(store) == before
    # A bridge the administrator made is used, and left in place when its last pod goes.
    subprocess.run(["ip", "link", "add", "rktadmin0", "type", "bridge"], check=True)
    try:
        write_conf(store, {"name": "adm", "type": "bridge", "subnet": "10.79.0.0/24", "bridge": "rktadmin0"},
                   "adm.json")
        before = net_state(store)
        q = start(store, [sh("sleep 30", name="a")], net="adm")
        assert info(q)[0]["ip"] == "10.79.0.2"
        run.stop(q, timeout=5)
        assert gc(store) == []
        after = net_state(store)
        assert "rktadmin0" in after["links"]
        assert after["nft"] == before["nft"] and after["ipam"] == before["ipam"]
    finally:
        subprocess.run(["ip", "link", "del", "rktadmin0"], check=False)


def test_a_pod_restarted_by_its_keeper_keeps_its_address(store):
    before = net_state(store)
    p = prepare.prepare(store, {"apps": [sh("ip -o -4 addr show eth0 >> /tmp/seen; sleep 0.5; exit 3", name="a")]}).pod
    run.start_detached(p, net="default", restart_policy="on-failure")
    ip = info(p)[0]["ip"]

    def restarted():
        try:
            with open(p.file("exit")) as f:
                return json.load(f)["restarts"] >= 1
        except (OSError, ValueError):
            return False

    assert wait_for(restarted, 20)
    assert info(p)[0]["ip"] == ip
    assert ipam.held(store.dd) == {"default/" + ip: p.uuid}
    rules = [line for line in net_state()["nft"].splitlines() if "rocket-pod" in line]
    assert rules and len(rules) == len(set(rules))  # the last run's rules went before the new run's came
    run.stop(p, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before


# ------------------------------------------------------------- with the other run options

def test_private_users_on_the_default_network(store):
    """The pod's network namespace is its user namespace's: root in the pod uses its
    capabilities there (binds port 80) while being an unprivileged uid on the host."""
    before = net_state(store)
    p = start(store, [sh("while true; do sleep 1; done", name="c")], private_users=True)
    n = info(p)[0]
    srv, t = host_http_server(n["gateway"])
    try:
        rc, out, err = in_pod(p, "c", "cat /proc/self/uid_map; wget -q -O - http://%s:%d/; "
                                      "(busybox httpd -p 80 -h / && echo BOUND80)"
                              % (n["gateway"], srv.server_port))
    finally:
        srv.shutdown()
        srv.server_close()
        t.join()
    assert rc == 0, err
    first = out.splitlines()[0].split()
    assert first[0] == "0" and int(first[1]) >= 65536, out  # not root on the host
    assert "host-says-hi" in out and "BOUND80" in out, (out, err)
    run.stop(p, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before


def test_metadata_service_from_a_private_network(store, capfd):
    """Apps on a private network reach the service at their gateway, with their token."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import metadata

    pods.subreaper(True)  # the daemon double-forks: ours to reap
    before = net_state(store)
    try:
        p = prepare.prepare(store, {"apps": [sh("echo URL=$AC_METADATA_URL; wget -q -O - --header "
                                                "'Metadata-Flavor: AppContainer' $AC_METADATA_URL/acMetadata/v1/pod/uuid",
                                                name="m")]}).pod
        rc = run.run_foreground(p, net="default", metadata_service=True, metadata_port=0)
        out = capfd.readouterr().out
        conf = metadata.pod_config(p)
        gw = info(p)[0]["gateway"]
        assert rc == 0, out
        assert "URL=http://%s:%d/%s\n" % (gw, conf["port"], conf["token"]) in out
        assert out.rstrip().endswith(p.uuid), out
        assert gc(store) == []
    finally:
        metadata.stop(store.dd)
        pods.reap()
        pods.subreaper(False)
    assert net_state(store) == before


# -- issue #13 finding 5: the pod link's guard, the firewall's state ---------------------------
RAWSEND_C = r"""
#include <arpa/inet.h>
#include <linux/if_ether.h>
#include <linux/if_packet.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
/* rawsend IFNAME HEXFRAME...: send each Ethernet frame as given (needs CAP_NET_RAW). */
int main(int argc, char **argv) {
    int s = socket(AF_PACKET, SOCK_RAW, htons(ETH_P_ALL));
    if (s < 0) { perror("socket(AF_PACKET)"); return 2; }
    struct sockaddr_ll sll;
    memset(&sll, 0, sizeof sll);
    sll.sll_family = AF_PACKET;
    sll.sll_ifindex = if_nametoindex(argv[1]);
    sll.sll_halen = 6;
    for (int i = 2; i < argc; i++) {
        unsigned char buf[1600];
        size_t n = strlen(argv[i]) / 2;
        for (size_t j = 0; j < n && j < sizeof buf; j++) sscanf(argv[i] + 2 * j, "%2hhx", &buf[j]);
        memcpy(sll.sll_addr, buf, 6);
        if (sendto(s, buf, n, 0, (struct sockaddr *)&sll, sizeof sll) != (ssize_t)n) { perror("sendto"); return 3; }
    }
    printf("sent %d\n", argc - 2);
    return 0;
}
"""
RAW = [{"name": "os/linux/capabilities-retain-set",
        "value": {"set": ["CAP_NET_RAW", "CAP_NET_BIND_SERVICE", "CAP_SETUID", "CAP_SETGID"]}}]


@pytest.fixture(scope="module")
def rawsend(tmp_path_factory):
    from tests.support import stage1_harness

    return stage1_harness.static_binary(tmp_path_factory, "rawsend", RAWSEND_C)


@pytest.fixture
def raw_store(data_dir, image_dir, rawsend, tmp_path):
    """The busybox store plus example.com/rawsend: httpd on port 80 and /rawsend, a static probe
    that writes Ethernet frames of its own making (what a pod root with CAP_NET_RAW can do)."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci
    from tests.support import images, stage1_harness

    root = str(tmp_path / "rawsend-rootfs")
    stage1_harness.base_rootfs(root)
    with open(os.path.join(root, "rawsend"), "wb") as f:
        f.write(rawsend)
    os.chmod(os.path.join(root, "rawsend"), 0o755)
    m = images.manifest("example.com/rawsend", "1.0.0", app=False)
    m["app"] = HTTPD
    out = str(tmp_path / "rawsend.aci")
    aci.build_aci(root, m, out, compression="none")
    yield from pods.busybox_store(data_dir, image_dir, out)


def _mac(text):
    return bytes(int(x, 16) for x in text.split(":"))


def _link_mac(name):
    out = subprocess.run(["ip", "-o", "link", "show", "dev", name], capture_output=True, text=True, check=True).stdout
    return out.split("link/ether ")[1].split()[0]


def _csum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s & 0xFFFF).to_bytes(2, "big")


def udp_frame(src_mac, dst_mac, src_ip, dst_ip, dport, payload):
    udp = (4242).to_bytes(2, "big") + dport.to_bytes(2, "big") + (8 + len(payload)).to_bytes(2, "big") + b"\0\0"
    ip = (b"\x45\x00" + (20 + len(udp) + len(payload)).to_bytes(2, "big") + b"\x00\x01\x40\x00\x40\x11\0\0"
          + socket.inet_aton(src_ip) + socket.inet_aton(dst_ip))
    ip = ip[:10] + _csum(ip) + ip[12:]
    return (_mac(dst_mac) + _mac(src_mac) + b"\x08\x00" + ip + udp + payload).hex()


def garp_frame(src_mac, ip):
    """A gratuitous ARP reply, broadcast: "ip is at src_mac"."""
    arp = (b"\x00\x01\x08\x00\x06\x04\x00\x02" + _mac(src_mac) + socket.inet_aton(ip) + b"\xff" * 6
           + socket.inet_aton(ip))
    return (b"\xff" * 6 + _mac(src_mac) + b"\x08\x06" + arp + b"\0" * 18).hex()


class UdpSink:
    """A UDP socket on the host (all addresses): what reaches it, the probes' other side."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("0.0.0.0", 0))
        self.port = self.sock.getsockname()[1]

    def received(self, wait=1.5):
        self.sock.settimeout(wait)
        got = []
        try:
            while True:
                got.append(self.sock.recvfrom(2048))
        except socket.timeout:
            return got
        finally:
            self.sock.settimeout(None)

    def close(self):
        self.sock.close()


def test_the_loopback_guard_holds_after_an_nft_flush_and_a_start_restores_the_rules(raw_store):
    """Finding 5: an operator's `nft flush ruleset` removed the only guard while the pod's link
    kept route_localnet=1, so a pod root (CAP_NET_RAW) reached the host's 127.0.0.1."""
    store = raw_store
    before = net_state(store)
    p = start(store, [dict(image="example.com/rawsend", name="r", isolators=RAW)],
              ports=[{"port": 80, "host_port": 18091, "host_ip": "127.0.0.1"}])
    me = info(p)[0]
    assert wait_for(lambda: "hello-from-r" in _try_fetch("127.0.0.1", 18091))
    with open("/proc/sys/net/ipv4/conf/%s/route_localnet" % me["host_ifname"]) as f:
        assert f.read().strip() == "1"
    host_mac = _link_mac(me["host_ifname"])
    sink = UdpSink()
    try:
        subprocess.run(["nft", "flush", "ruleset"], check=True)
        frames = [udp_frame(me["mac"], host_mac, me["ip"], me["gateway"], sink.port, b"to-the-gateway"),
                  udp_frame(me["mac"], host_mac, me["ip"], "127.0.0.1", sink.port, b"to-the-loopback")]
        rc, out, err = in_pod(p, "r", "/rawsend eth0 " + " ".join(frames))
        assert rc == 0 and "sent 2" in out, out + err
        got = [data for data, dummy_addr in sink.received()]
    finally:
        sink.close()
    assert b"to-the-gateway" in got  # the probe's frames are well made
    assert b"to-the-loopback" not in got, "a pod reached the host's 127.0.0.1 after nft flush ruleset"
    # The next start puts back the rules of every running pod (the forward works again).
    q = start(store, [sh("sleep 30", name="q")])
    rules = subprocess.run(["nft", "list", "table", "ip", "rocket"], capture_output=True, text=True, check=False).stdout
    assert "rocket-pod %s" % p.uuid in rules and "rocket-pod %s" % q.uuid in rules
    assert wait_for(lambda: "hello-from-r" in _try_fetch("127.0.0.1", 18091))
    for x in (p, q):
        run.stop(x, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before


def _neigh(ip, dev=None, pod=None):
    cmd = "ip neigh show %s" % ip + (" dev %s" % dev if dev else "")
    if pod is not None:
        return in_pod(pod[0], pod[1], cmd)[1]
    return subprocess.run(cmd.split(), capture_output=True, text=True, check=False).stdout


def test_a_pod_cannot_send_as_another_nor_poison_neighbours(raw_store):
    """Finding 5: nothing bound a pod's link to its addresses; a pod root with CAP_NET_RAW sent
    as another pod and rewrote the bridge's and the other pods' neighbour entries (ARP)."""
    store = raw_store
    write_conf(store, {"name": "br", "type": "bridge", "subnet": "10.78.0.0/24", "bridge": "rkt-br78",
                       "ipMasq": False})
    before = net_state(store)
    a = start(store, [dict(image="example.com/rawsend", name="r", isolators=RAW)], net="br")
    b = start(store, [dict(image="example.com/rawsend", name="v")], net="br")
    ia, ib = info(a)[0], info(b)[0]
    bridge_mac = _link_mac("rkt-br78")
    # Both sides learn each other: the host b's address, b the gateway's.
    assert wait_for(lambda: "hello-from-v" in _try_fetch(ib["ip"], 80))
    assert ib["mac"] in _neigh(ib["ip"], "rkt-br78")
    assert bridge_mac in _neigh(ia["gateway"], pod=(b, "v"))
    time.sleep(1.2)  # past the neighbour entries' locktime
    sink = UdpSink()
    try:
        frames = [udp_frame(ia["mac"], bridge_mac, ia["ip"], ia["gateway"], sink.port, b"as-myself"),
                  udp_frame(ia["mac"], bridge_mac, ib["ip"], ia["gateway"], sink.port, b"as-b-ip"),
                  udp_frame(ib["mac"], bridge_mac, ib["ip"], ia["gateway"], sink.port, b"as-b-ip-and-mac"),
                  garp_frame(ia["mac"], ib["ip"]), garp_frame(ia["mac"], ia["gateway"])]
        rc, out, err = in_pod(a, "r", "/rawsend eth0 " + " ".join(frames))
        assert rc == 0 and "sent 5" in out, out + err
        got = sink.received()
    finally:
        sink.close()
    host_sees_b_at = _neigh(ib["ip"], "rkt-br78")
    b_sees_gateway_at = _neigh(ia["gateway"], pod=(b, "v"))
    seen = {"udp": [(d, src) for d, (src, dummy) in got],
            "host's entry for b is a's MAC": ia["mac"] in host_sees_b_at,
            "b's entry for the gateway is a's MAC": ia["mac"] in b_sees_gateway_at}
    assert seen == {"udp": [(b"as-myself", ia["ip"])], "host's entry for b is a's MAC": False,
                    "b's entry for the gateway is a's MAC": False}
    assert ib["mac"] in host_sees_b_at and bridge_mac in b_sees_gateway_at
    for x in (a, b):
        run.stop(x, timeout=5)
    assert gc(store) == []
    assert net_state(store) == before


def test_the_firewall_lock_is_one_for_the_host(store, tmp_path):
    """Finding 5: the nft table is one per host, but each data directory took only its own
    lock, so a gc in one could delete the table under another's start. Holding the host's
    lock holds every data directory's start."""
    import fcntl

    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import firewall

    p = prepare.prepare(store, {"apps": [sh("sleep 30", name="p")]}).pod
    fd = os.open(getattr(firewall, "HOST_LOCK", "/run/rocket/firewall.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    done = threading.Event()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        t = threading.Thread(target=lambda: (run.start_detached(p, net="default"), done.set()))
        t.start()
        held_off = not done.wait(2.0)
    finally:
        os.close(fd)
    t.join()
    assert held_off, "a start changed the host's firewall while another process held its lock"
    assert done.is_set()
    run.stop(p, timeout=5)
    assert gc(store) == []


def test_two_data_dirs_start_and_remove_pods_concurrently(store, image_dir, tmp_path):
    """Finding 5 and 9: two data directories share the host's nft table (one lock) and must
    not share a subnet; pods come and go in both at once and every running pod keeps its rules."""
    other = Store(str(tmp_path / "other"))
    other.import_file(pods.busybox_aci(image_dir))
    try:
        write_conf(other, {"name": "default", "type": "ptp", "subnet": "172.16.29.0/24", "ipMasq": True})
        before = net_state()
        errors = []
        keep = []

        def churn(path, n, w):
            # One process per data directory, as two modules would be: threads of one
            # process share every fork's copy of each other's lock fds, a race no user has.
            errors, keep = [], []
            try:
                s = Store(path)
                for i in range(n):
                    p = prepare.prepare(s, {"apps": [sh("sleep 30", name="p")]}).pod
                    run.start_detached(p, net="default")
                    if i % 2:  # a gc here while the other data directory starts pods
                        run.stop(p, timeout=5)
                        errors.extend(str(e) for e in pod_gc.gc(s.dd, grace=0)["errors"])
                    else:
                        keep.append(p.uuid)
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
            os.write(w, json.dumps([errors, keep]).encode())
            os._exit(0)

        children = []
        for s in (store, other):
            r, w = os.pipe()
            child = os.fork()
            if child == 0:  # leaves through _exit
                os.close(r)
                churn(s.dd.path, 6, w)
            os.close(w)
            children.append((child, r))
        errors, keep = [], []
        for child, r in children:
            with os.fdopen(r, "rb") as f:
                data = f.read()
            os.waitpid(child, 0)
            got_errors, got_keep = json.loads(data or b'[["no answer"], []]')
            errors += got_errors
            keep += [podmod.lookup(st.dd, uuid=u) for st in (store, other) for u in got_keep
                     if os.path.isdir(os.path.join(st.dd.path, "pods", "run", u))]
        assert errors == []
        rules = subprocess.run(["nft", "list", "table", "ip", "rocket"], capture_output=True, text=True, check=False).stdout
        assert all("rocket-pod %s" % p.uuid in rules for p in keep), rules
        for p in keep:
            run.stop(p, timeout=5)
        assert gc(store) == [] and gc(other) == []
        assert net_state() == before
    finally:
        pods.remove_all(other.dd)
        other.close()


def test_two_data_dirs_on_the_default_subnet_is_a_clear_error(store, image_dir, tmp_path):
    """Finding 9: a second data directory handed out the same 172.16.28.x as the first, silently
    (two host routes for one address). Now its start names the data directory that uses it."""
    other = Store(str(tmp_path / "other"))
    other.import_file(pods.busybox_aci(image_dir))
    try:
        before = net_state()
        a = start(store, [sh("sleep 30", name="a")])
        q = prepare.prepare(other, {"apps": [sh("sleep 30", name="b")]}).pod
        with pytest.raises(RocketError, match="network default: subnet 172.16.28.0/24 overlaps 172.16.28.0/24 "
                           r"\(network default\) of the data directory %s" % re.escape(store.dd.path)):
            run.start_detached(q, net="default")
        assert q.dir_state == "prepared" and ipam.held(other.dd) == {}
        run.stop(a, timeout=5)
        assert gc(store) == []
        run.start_detached(q, net="default")  # a's pod is gone: the subnet is free
        assert info(q)[0]["ip"].startswith("172.16.28.")
        pod_gc.remove(q, stop_timeout=2)
        assert net_state() == before
    finally:
        pods.remove_all(other.dd)
        other.close()
