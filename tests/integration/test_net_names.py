"""Pods on one bridge network resolve each other's names (stage1/peers.py), for real: the
running pods' /etc/hosts change as peers come and go.

Run through tools/isolated.sh, like test_net.py (links, bridges and nft rules).
"""
import json
import os
import subprocess

import pytest

from tests.support import pods
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import ipam
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter

pytestmark = pytest.mark.skipif(not any(os.access(p, os.X_OK) for p in ("/usr/sbin/nft", "/sbin/nft")),
                                reason="nft is not installed")


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir, pods.busybox_aci(image_dir))


def links():
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    return sorted(line.split(":")[1].strip().split("@")[0] for line in out.splitlines())


def start(store, name, script, net):
    spec = {"apps": [{"image": "example.com/busybox", "name": "c", "exec": ["/bin/sh", "-c", script],
                      "cap_add": ["NET_RAW"]}]}  # busybox's ping opens a raw socket
    p = prepare.prepare(store, spec).pod
    with podmod.name_lock(store.dd, name):
        podmod.set_name(store.dd, name, p.uuid)
    run.start_detached(p, net=net)
    return p


def in_pod(p, script):
    rc, out, err = enter(p, "c", ["/bin/sh", "-c", script])
    return rc, out.decode() + err.decode()


def ip_of(p):
    with open(p.file("net-info.json")) as f:
        return json.load(f)[0]["ip"]


def test_a_pod_resolves_its_peers_until_they_are_removed(store):
    d = os.path.join(store.dd.path, "net.d")
    os.makedirs(d)
    with open(os.path.join(d, "names.json"), "w") as f:
        json.dump({"name": "names", "type": "bridge", "subnet": "10.83.0.0/24", "bridge": "rkt-names83",
                   "ipMasq": False, "routes": []}, f)
    before = links()
    a = start(store, "alpha", "sleep 120", "names")
    rc, out = in_pod(a, "cat /etc/hosts")
    assert rc == 0 and "beta" not in out, out
    b = start(store, "beta", "sleep 120", "names")
    lone = start(store, "lone", "sleep 120", "default")  # ptp: no peers' names
    # alpha was running before beta came: its file changed under it, beta's lists alpha
    rc, out = in_pod(a, "cat /etc/hosts; ping -c 1 -W 2 beta")
    assert rc == 0, out
    assert "%s\tbeta rkt-" % ip_of(b) in out and "1 packets received" in out
    rc, out = in_pod(b, "ping -c 1 -W 2 alpha")
    assert rc == 0 and "PING alpha (%s)" % ip_of(a) in out, out
    rc, out = in_pod(lone, "cat /etc/hosts")
    assert "alpha" not in out and "beta" not in out, out
    # the file is read-only inside the pod
    rc, out = in_pod(a, "echo '10.0.0.1 evil' >> /etc/hosts")
    assert rc != 0 and "Read-only file system" in out, out
    # beta goes: alpha stops resolving it, while alpha runs
    run.stop(b, timeout=5)
    assert pod_gc.gc(store.dd, grace=0)["errors"] == []
    rc, out = in_pod(a, "cat /etc/hosts; ping -c 1 -W 1 beta")
    assert rc != 0 and "beta" not in out.split("ping:")[0] and "bad address 'beta'" in out, out
    assert "%s\trkt-" % ip_of(a) in out  # its own line stays
    for p in (a, lone):
        run.stop(p, timeout=5)
    assert pod_gc.gc(store.dd, grace=0)["errors"] == []
    assert links() == before and ipam.held(store.dd) == {}
