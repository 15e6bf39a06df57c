"""Issue #16's devices, secrets and env_file through real ansible runs of pod_run: the
four-step pattern (check, apply, again, check), what the app sees from inside the pod, and
what must never be seen outside it."""
import errno
import json
import os
import subprocess
import time

import pytest

from tests.support import pods
from tests.support.ansible_run import module
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
from tests.integration.test_pod_modules import four_steps


@pytest.fixture
def dd(tmp_path):
    d = str(tmp_path / "rocket")
    with Store(d) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    yield d
    for p in module("pod_info", {"data_dir": d})["pods"]:
        module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": d})


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


HOSTILE_DEVICES = [
    ("/etc/passwd", "apps[0].devices[0].path", "must be a device node under /dev on the host"),
    ("/dev/zero-not-there", "apps[0].devices[0].path", "does not exist"),
    ("/dev/shm:/dev/myshm", "apps[0].devices[0].path", "is not a device node"),
    ("/dev/null:/etc/null", "apps[0].devices[0].container_path", "must be a path under /dev"),
    ("/dev/null:/dev/../etc/x", "apps[0].devices[0].container_path", "must be a path under /dev"),
    ("/dev/null:/dev/pts/0", "apps[0].devices[0].container_path", "already has"),
    ("/dev/null:/dev/x:rwx", "apps[0].devices[0].permissions", "subset"),
]


def test_hostile_devices_are_refused_naming_the_option(dd):
    for device, field, why in HOSTILE_DEVICES:
        r = module("pod_run", {"name": "bad", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                               "devices": [device]})
        assert r.get("failed") and field in r["msg"] and why in r["msg"], (device, r["msg"])
    assert no_pods(dd)


def test_a_symlink_to_a_device_is_refused(dd, loops):
    link = "/dev/rocket-test-link-%d" % os.getpid()
    os.symlink(loops[0], link)
    try:
        r = module("pod_run", {"name": "bad", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                               "devices": [link]})
    finally:
        os.unlink(link)
    assert r.get("failed") and "apps[0].devices[0].path" in r["msg"] and "symlink" in r["msg"], r["msg"]
    assert "give the real path (%s)" % loops[0] in r["msg"], r["msg"]
    assert no_pods(dd)


# --------------------------------------------------------------------------- secrets
SECRET = "hunter2-s3cr3t-%d" % os.getpid()


def sha(text):
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def everything_under(path):
    """Every byte of every regular file under path (the host's view), as one blob."""
    blob = []
    for top, dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(top, name)
            try:
                with open(p, "rb") as f:
                    blob.append(f.read())
            except OSError:
                pass
    return b"".join(blob)


def environ_of_every_process():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return b"".join(out)


def test_a_secret_file_is_readable_by_the_app_and_nowhere_else(dd, tmp_path):
    src = tmp_path / "from-host"
    src.write_text(SECRET + "-file")
    # The app prints digests, not the secrets: its log is in the results.
    script = ("id -u | sed 's/^/uid=/'; echo \"token=$(sha256sum </run/secrets/token | cut -c1-64)\"; "
              "echo \"file=$(sha256sum </etc/app/key | cut -c1-64)\"; cat /run/secrets/root-only >/dev/null 2>&1; "
              "echo \"rootonly=$?\"; "
              "ls -ln /run/secrets/token | awk '{print \"perm=\" $1 \"/\" $3 \"/\" $4}'; "
              "echo x 2>/dev/null >/run/secrets/token; echo \"write=$?\"; exec sleep 1000")
    args = {"name": "sec", "image": "example.com/busybox", "net": "none", "data_dir": dd, "user": "1000",
            "group": "1000", "exec": ["/bin/sh", "-c", script],
            "secrets": [{"name": "token", "content": SECRET, "uid": 1000, "mode": "0440"},
                        {"name": "key", "source": str(src), "target": "/etc/app/key", "uid": 1000},
                        {"name": "root-only", "content": SECRET + "-root"}]}
    checked, applied = four_steps(args, "run")
    info, log = wait_log(dd, "sec", "write=")
    f = facts(log)
    assert f["uid"] == "1000" and f["token"] == sha(SECRET) and f["file"] == sha(SECRET + "-file"), log
    assert f["rootonly"] == "1" and f["perm"] == "-r--r-----/1000/0" and f["write"] != "0", log
    pod = info["pods"][0]
    # Nowhere else: the results and ansible's output, every file under the pod directory
    # (the manifest, spec.json, logs, status), any process's environment.
    for r in (checked, applied, info):
        assert SECRET not in json.dumps(r), r
    pod_dir = os.path.join(dd, "pods", "run", pod["uuid"])
    assert os.path.isdir(pod_dir)
    assert SECRET.encode() not in everything_under(pod_dir)
    assert os.listdir(os.path.join(pod_dir, "secrets")) == []  # the tmpfs is the pod's own
    assert SECRET.encode() not in environ_of_every_process()
    with open(os.path.join(pod_dir, "spec.json")) as fp:
        stored = json.load(fp)["spec"]["apps"][0]["secrets"][0]
    assert stored["digest"].startswith("sha256:") and "content" not in stored
    assert checked["diff"]["after"]["spec"]["apps"][0]["secrets"][0]["digest"] == "********"
    assert pod["apps"][0]["isolation"]["secrets"] == [
        {"name": "token", "target": "/run/secrets/token"}, {"name": "key", "target": "/etc/app/key"},
        {"name": "root-only", "target": "/run/secrets/root-only"}]

    # A changed content replaces the pod; the diff names the option, redacted.
    changed = dict(args, secrets=[dict(args["secrets"][0], content=SECRET + "-v2")] + args["secrets"][1:])
    checked, applied = four_steps(changed, "replace")
    assert list(checked["diff"]["after"]) == ["apps[0].secrets"], checked["diff"]
    assert SECRET not in json.dumps(checked) + json.dumps(applied)
    info, log = wait_log(dd, "sec", "write=")
    assert facts(log)["token"] == sha(SECRET + "-v2"), log
    # The data lives in memory only: a start that does not give it is refused, clearly.
    module("pod_run", {"name": "sec", "data_dir": dd, "state": "absent"})
    prepared = module("pod_prepare", {k: v for k, v in changed.items() if k not in ("net", "state")})
    assert prepared["changed"] and SECRET not in json.dumps(prepared), prepared
    r = module("pod_run", {"name": "sec", "data_dir": dd, "state": "running"})
    assert r.get("failed") and "secrets are kept in memory only" in r["msg"], r


def test_hostile_secrets_are_refused_naming_the_option(dd, tmp_path):
    os.symlink("/etc/shadow", str(tmp_path / "link"))
    cases = [({"name": "../x", "content": "v"}, "apps[0].secrets[0].name"),
             ({"name": "a", "content": "v", "target": "/proc/self/x"}, "apps[0].secrets[0].target"),
             ({"name": "a", "source": str(tmp_path / "link")}, "apps[0].secrets[0].source"),
             ({"name": "a", "content": "v", "mode": "0999"}, "apps[0].secrets[0].mode")]
    for item, field in cases:
        r = module("pod_run", {"name": "bad", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                               "secrets": [item]})
        assert r.get("failed") and field in r["msg"], (item, r["msg"])
    assert no_pods(dd)
