"""Issue #16's devices through real ansible runs of pod_run: the four-step pattern (check,
apply, again, check), a passed-through loop device working from inside the pod while
another stays unreachable, and hostile values refused. Also run on a cgroup-v2-only host
(Makefile CGROUP2_TESTS), where the BPF device program is the only filter."""
import os
import subprocess
import time

import pytest

from tests.support.ansible_run import module
from tests.integration.test_pod_modules import four_steps


def facts(log):
    """k=v words the probes print, from an app's log lines."""
    out = {}
    for line in log.splitlines():
        for word in line.split()[1:]:
            k, eq, v = word.partition("=")
            if eq:
                out[k] = v
    return out


def wait_log(dd, name, word, timeout=20):
    deadline = time.monotonic() + timeout
    while True:
        info = module("pod_info", {"data_dir": dd, "name": name})
        log = "".join(a.get("log") or "" for p in info["pods"] for a in p["apps"])
        if word in log or time.monotonic() > deadline:
            return info, log
        time.sleep(0.5)


def no_pods(dd):
    return module("pod_info", {"data_dir": dd})["pods"] == []


# --------------------------------------------------------------------------- devices
@pytest.fixture
def loops(tmp_path):
    """Two loop devices over two files with known first bytes; detached afterwards."""
    devs = []
    try:
        for tag in ("LOOP-A", "LOOP-B"):
            f = tmp_path / (tag + ".img")
            f.write_bytes(tag.encode().ljust(1 << 20, b"\0"))
            devs.append(subprocess.run(["losetup", "-f", "--show", str(f)], check=True, capture_output=True,
                                       text=True).stdout.strip())
        yield devs
    finally:
        for d in devs:
            subprocess.run(["losetup", "-d", d], check=False)


PROBE = """
a=$(dd if=%(a)s bs=6 count=1 2>/dev/null); echo "a.read=$a"
echo written | dd of=%(a)s bs=512 seek=1 conv=notrunc 2>/dev/null; echo "a.write=$?"
mknod /tmp/b b %(bmaj)d %(bmin)d 2>/tmp/err; echo "b.mknod=$?" "b.err=$(tr ' ' _ </tmp/err)"
mknod /dev/again b %(amaj)d %(amin)d 2>/dev/null; echo "again.mknod=$?"
dd if=/dev/again bs=6 count=1 >/dev/null 2>/tmp/err; echo "again.open=$?" "again.err=$(tr ' ' _ </tmp/err)"
echo "loops=$(ls /dev | grep -c loop)"
"""


def test_a_passed_through_loop_device_works_and_another_does_not(dd, loops, cgroup_mode):
    a, b = loops
    sa, sb = os.stat(a), os.stat(b)
    script = PROBE % {"a": "/dev/xdisk", "amaj": os.major(sa.st_rdev), "amin": os.minor(sa.st_rdev),
                      "bmaj": os.major(sb.st_rdev), "bmin": os.minor(sb.st_rdev)}
    # net=host: a root app keeping CAP_MKNOD stays in the host's user namespace, so the cgroup
    # layer is what refuses (in the pod's own user namespace the kernel refuses every mknod).
    args = {"name": "dev", "image": "example.com/busybox", "data_dir": dd, "state": "exited",
            "devices": ["%s:/dev/xdisk:rwm" % a], "cap_add": ["MKNOD"], "exec": ["/bin/sh", "-c", script]}
    checked, applied = four_steps(args, "run")
    assert checked["diff"]["after"]["spec"]["apps"][0]["devices"] == [
        {"path": a, "container_path": "/dev/xdisk", "permissions": "rwm"}]
    app = applied["pod"]["apps"][0]
    f = facts(app["log"])
    assert f["a.read"] == "LOOP-A" and f["a.write"] == "0", app["log"]
    with open(a, "rb") as dev:  # the app's write reached the host's device
        assert dev.read(1024)[512:519] == b"written"
    # The other loop device: refused by the allow-list itself (the cgroup v1 devices
    # controller, and the v2 BPF program: under tools/cgroup2-only.sh it is the only one).
    assert f["b.mknod"] == "1" and "Operation_not_permitted" in f["b.err"], app["log"]
    # The allowed device made again with mknod: the cgroup allows it (m), /dev is nodev.
    assert f["again.mknod"] == "0" and f["again.open"] == "1" and "Permission_denied" in f["again.err"], app["log"]
    assert f["loops"] == "0", app["log"]  # no other loop node in the app's /dev
    rule = "b %d:%d rwm" % (os.major(sa.st_rdev), os.minor(sa.st_rdev))
    assert app["isolation"]["devices"] == [{"path": a, "container_path": "/dev/xdisk", "permissions": "rwm",
                                            "rule": rule}]
    layers = " ".join(app["isolation"]["notes"])
    assert "a cgroup v2 BPF device program" in layers
    if cgroup_mode == "v2only":
        assert "v1 devices" not in layers

    # Read-only: a write open is refused by the allow-list; a changed option replaces the pod.
    ro = dict(args, devices=[{"path": a, "container_path": "/dev/xdisk", "permissions": "r"}])
    checked, applied = four_steps(ro, "replace")
    assert checked["diff"]["before"] == {"apps[0].devices": [
        {"path": a, "container_path": "/dev/xdisk", "permissions": "rwm"}]}
    f = facts(applied["pod"]["apps"][0]["log"])
    assert f["a.read"] == "LOOP-A" and f["a.write"] == "1", applied["pod"]["apps"][0]["log"]
