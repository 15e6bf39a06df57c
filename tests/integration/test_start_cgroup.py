"""An app is born in its cgroup v2 directory (clone3 CLONE_INTO_CGROUP): nobody writes that
cgroup.procs, a write that waits for an RCU grace period on hosts without favordynmods.

Root only. Runs on this host's hybrid layout (the v2 hierarchy at /sys/fs/cgroup/unified)
and under tools/cgroup2-only.sh (`make test-cgroup2`). Each pod runs under strace, which
shows the clone3 call and every open of a cgroup.procs file.
"""
import os
import re
import shutil

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups, linux


def sh(script):
    return ["/bin/sh", "-c", script]


def v2_root():
    v2 = cgroups.hierarchies()[1]
    if v2 is None:
        pytest.skip("no cgroup v2 hierarchy on this host: nothing is born in one")
    return v2


def traced_run(pod, tmp_path):
    """Run the pod under strace; (result, trace text)."""
    assert shutil.which("strace"), "strace is missing: tools/debian-packages.sh installs it"
    out = str(tmp_path / "trace")
    r = pod.run(wrap=["strace", "-f", "-qq", "-s", "256", "-o", out, "-e", "trace=clone3,openat"])
    with open(out) as f:
        return r, f.read()


def procs_opens(trace, v2, uuid, app):
    """Opens of the app's v2 cgroup.procs (a join by writing)."""
    path = os.path.join(v2, "rocket", uuid, app, "cgroup.procs")
    return [line for line in trace.splitlines() if "openat(" in line and '"%s"' % path in line]


def born_clones(trace):
    return [line for line in trace.splitlines()
            if re.search(r"clone3\(\{flags=CLONE_INTO_CGROUP\b.*cgroup=\d+", line) and "= -1" not in line]


def test_app_is_born_in_its_v2_cgroup(pod, tmp_path):
    v2 = v2_root()
    pod.add_app("a", sh("grep '^0::' /proc/self/cgroup"))
    r, trace = traced_run(pod, tmp_path)
    assert r.rc == 0, r
    assert r.stdout.strip() == "0::/a", r  # the cgroup namespace's root is the pod's cgroup
    assert born_clones(trace), "no clone3(CLONE_INTO_CGROUP) in the trace:\n%s" % trace[-3000:]
    assert procs_opens(trace, v2, pod.uuid, "a") == [], "the app joined its v2 cgroup by writing"


def test_post_stop_app_is_born_there_too(pod, tmp_path):
    """With a post-stop handler the supervisor stays (in _stage1) and forks the app: the
    app's process and its handler are each born in the app's cgroup."""
    v2 = v2_root()
    pod.add_volume("out", mode="0777")
    pod.add_app("b", sh("grep '^0::' /proc/self/cgroup"),
                eventHandlers=[{"name": "post-stop", "exec": sh("grep '^0::' /proc/self/cgroup > /out/post")}],
                mounts=[{"volume": "out", "path": "/out"}])
    r, trace = traced_run(pod, tmp_path)
    assert r.rc == 0, r
    assert r.stdout.strip() == "0::/b", r
    with open(os.path.join(pod.volume_path("out"), "post")) as f:
        assert f.read().strip() == "0::/b"
    assert len(born_clones(trace)) >= 2, trace[-3000:]  # the app, then its post-stop handler
    # the supervisor opens the v2 cgroup.procs once (for a fallback); nobody else does
    assert len(procs_opens(trace, v2, pod.uuid, "b")) == 1, trace[-3000:]


def children():
    with open("/proc/self/task/%d/children" % os.getpid()) as f:
        return f.read().split()


def test_refused_clone3_leaves_no_child():
    """A fd that is no v2 cgroup: the call raises before any child exists (the fallback's premise)."""
    before = children()
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as e:
            linux.fork_into_cgroup(fd)
    finally:
        os.close(fd)
    assert e.value.errno in (9, 22), e.value  # EBADF/EINVAL: not a cgroup directory
    assert children() == before
