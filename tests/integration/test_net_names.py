"""Pods on one bridge network resolve each other's names (stage1/peers.py), for real: the
running pods' /etc/hosts change as peers come and go.

Run through tools/isolated.sh, like test_net.py (links, bridges and nft rules).
"""
import json
import os
import subprocess

import pytest

from tests.support import pods
from tests.support.ansible_run import module
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


def start(store, name, script, net, caps=("NET_RAW",)):  # busybox's ping opens a raw socket
    spec = {"apps": [{"image": "example.com/busybox", "name": "c", "exec": ["/bin/sh", "-c", script],
                      "cap_add": list(caps)}]}
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
    # a hostile peer with CAP_SYS_ADMIN cannot make its /etc/hosts writable (a locked read-only bind)
    evil = start(store, "evil", "sleep 120", "names", caps=("NET_RAW", "SYS_ADMIN"))
    rc, out = in_pod(evil, "mount -o remount,bind,rw /etc/hosts && echo '10.83.0.66 beta' >> /etc/hosts")
    assert rc != 0, out
    # alpha was running before beta came: its file changed under it, beta's lists alpha
    rc, out = in_pod(a, "cat /etc/hosts; ping -c 1 -W 2 beta")
    assert rc == 0, out
    assert "%s\tbeta rkt-" % ip_of(b) in out and "1 packets received" in out
    rc, out = in_pod(b, "ping -c 1 -W 2 alpha && cat /etc/hosts")
    assert rc == 0 and "PING alpha (%s)" % ip_of(a) in out and "10.83.0.66" not in out, out
    assert "%s\tevil " % ip_of(evil) in out
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
    for p in (a, lone, evil):
        run.stop(p, timeout=5)
    assert pod_gc.gc(store.dd, grace=0)["errors"] == []
    assert links() == before and ipam.held(store.dd) == {}


def four_steps(args):
    """check, apply, again, check: the first two change, the last two never."""
    out = []
    for check, changed in ((True, True), (False, True), (False, False), (True, False)):
        r = module("pod_network", args, check=check, diff=True)
        assert not r.get("failed") and r["changed"] is changed, (check, r)
        out.append(r)
    return out


def test_pod_network_four_steps_refusal_in_use_and_a_cni_list(dd):
    conf = os.path.join(dd, "net.d", "backend.json")
    args = {"name": "backend", "type": "bridge", "subnet": "10.84.0.0/24", "bridge": "rkt-back84", "data_dir": dd}
    checked, applied, again, dummy = four_steps(args)
    want = {"name": "backend", "type": "bridge", "subnet": "10.84.0.0/24", "bridge": "rkt-back84"}
    assert checked["diff"] == {"before": {}, "after": want}, checked
    assert applied["network"]["file"] == conf and applied["network"]["kind"] == "bridge"
    with open(conf) as f:
        assert json.load(f) == checked["diff"]["after"]
    # a change: the diff says what, the file follows
    r = module("pod_network", dict(args, subnet="10.85.0.0/24", ip_masq=False), diff=True)
    assert r["changed"] and r["diff"]["before"]["subnet"] == "10.84.0.0/24", r
    assert r["diff"]["after"]["subnet"] == "10.85.0.0/24" and r["diff"]["after"]["ipMasq"] is False
    # a pod on it: the network is in use, removal refused (check mode too), nothing removed
    pod = module("pod_run", {"name": "user", "image": "example.com/busybox", "exec": ["/bin/sleep", "60"],
                             "net": ["backend"], "data_dir": dd})
    assert not pod.get("failed") and pod["pod"]["networks"][0]["ip"].startswith("10.85.0."), pod
    for check in (True, False):
        r = module("pod_network", {"name": "backend", "state": "absent", "data_dir": dd}, check=check)
        assert r.get("failed") and "network backend is used by pod %s" % pod["pod"]["uuid"] in r["msg"], r
    assert os.path.exists(conf)
    listed = module("pod_network", {"data_dir": dd})  # no name: the list
    assert [(n["name"], n["kind"], n["used_by"]) for n in listed["networks"]] == [
        ("backend", "bridge", [pod["pod"]["uuid"]]), ("default", "ptp", [])], listed
    assert module("pod_run", {"name": "user", "state": "absent", "data_dir": dd})["changed"]
    checked, dummy_applied, dummy_again, dummy_check = four_steps({"name": "backend", "state": "absent",
                                                                   "data_dir": dd})
    assert checked["diff"]["before"]["subnet"] == "10.85.0.0/24" and checked["diff"]["after"] == {}
    assert os.listdir(os.path.join(dd, "net.d")) == []
    # a CNI configuration list: written as <name>.conflist, idempotent
    ipam_conf = {"type": "host-local", "ranges": [[{"subnet": "10.86.0.0/24"}]]}
    cni = {"plugins": [{"type": "bridge", "bridge": "cni-t0", "ipam": ipam_conf}]}
    r = module("pod_network", {"name": "cnet", "cni": cni, "data_dir": dd})
    assert r["changed"] and r["network"]["kind"] == "cni" and r["network"]["file"].endswith("/net.d/cnet.conflist")
    with open(r["network"]["file"]) as f:
        assert json.load(f) == dict(cni, name="cnet", cniVersion="1.0.0")
    assert not module("pod_network", {"name": "cnet", "cni": cni, "data_dir": dd})["changed"]
    r = module("pod_network", {"name": "cnet", "cni": {"plugins": [{"type": "../evil"}]}, "data_dir": dd})
    assert r.get("failed") and "cni.plugins[0].type" in r["msg"], r
    r = module("pod_network", {"name": "nosubnet", "data_dir": dd})
    assert r.get("failed") and "subnet" in r["msg"], r
    assert sorted(os.listdir(os.path.join(dd, "net.d"))) == ["cnet.conflist"]  # nothing left by the errors
