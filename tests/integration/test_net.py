"""Private networking for real: veth pairs, host-local IPAM, nftables NAT and port forwards.

Run through tools/isolated.sh: the tests change links, routes, sysctls and the firewall of
the network namespace they run in.
"""
import json
import os
import signal
import socket
import subprocess
import threading
import time
import http.server

import pytest

import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import ipam, netconf
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError, ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

pytestmark = pytest.mark.skipif(subprocess.run(["sh", "-c", "command -v nft"], capture_output=True).returncode != 0,
                                reason="nft is not installed")

HTTPD = {"exec": ["/bin/sh", "-c", "mkdir -p /www && echo hello-from-$AC_APP_NAME > /www/index.html && "
                  "exec httpd -f -p 80 -h /www"], "user": "0", "group": "0",
         "ports": [{"name": "http", "protocol": "tcp", "port": 80}]}


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("images")


@pytest.fixture
def store(data_dir, image_dir):
    s = Store(data_dir)
    s.import_file(pods.busybox_aci(image_dir))
    s.import_file(pods.busybox_aci(image_dir, name="example.com/httpd", app=HTTPD))
    yield s
    for p in podmod.list_pods(s.dd):
        try:
            pod_gc.remove(p, stop_timeout=2)
        except RocketError:
            pass
    s.close()


def net_state(store=None):
    """Everything network-related a pod could leave behind."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    links = sorted(line.split(":")[1].strip().split("@")[0] for line in links.splitlines())
    addrs = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    rules = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True, check=True).stdout
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
    pod_gc.gc(store.dd, grace=0)
    assert net_state(store) == before
