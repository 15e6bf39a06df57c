"""The default stage1, run as stage0 will run it (see tests/support/stage1_harness.py), from inside apps.

Root only. Each pod is a few hundred milliseconds; the apps are busybox shell scripts.
"""
import json
import os
import re
import signal
import stat
import subprocess
import time

import pytest

from tests.support import stage1_harness as h
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cgroups


def sh(script):
    return ["/bin/sh", "-c", script]


def facts(text):
    """KEY=VALUE lines printed by an app."""
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def cgroup_dirs(uuid):
    found = []
    for base in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        for sub in ("", "memory", "cpu", "pids", "devices", "cpuset", "blkio"):
            d = os.path.join(base, sub, "rocket", uuid)
            if os.path.exists(d):
                found.append(d)
    return found


# --------------------------------------------------------------------------- ACE


def test_environment_identity_workdir(pod):
    pod.add_app("web", sh("echo UID=$(id -u); echo GID=$(id -g); echo GROUPS=$(id -G); "
                          "echo PWD=$(pwd); echo HOSTNAME=$(hostname); env"),
                user="app", group="app", supplementaryGIDs=[2000],
                workingDirectory="/home/app",
                environment=[{"name": "FOO", "value": "bar"}, {"name": "container", "value": "x"},
                             {"name": "container", "value": "rocket"}])
    r = pod.run(env={"ROCKET_METADATA_URL": "http://169.254.169.255/abc/"})
    assert r.rc == 0, r
    f = facts(r.stdout)
    assert f["UID"] == "1000" and f["GID"] == "1000", r
    assert f["GROUPS"].split() == ["1000", "2000"], r
    assert f["PWD"] == "/home/app"
    assert f["HOSTNAME"] == "rkt-" + pod.uuid.replace("-", "")[:8]
    assert f["PATH"] == "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    assert f["AC_APP_NAME"] == "web"
    assert f["AC_METADATA_URL"] == "http://169.254.169.255/abc"
    assert f["container"] == "rocket"
    assert f["FOO"] == "bar"
    assert f["HOME"] == "/home/app"
    st = r.status["web"]
    assert st["exit_code"] == 0 and st["signal"] is None and st["error"] is None
    assert st["started"] <= st["finished"]
    pid = int(open(os.path.join(pod.dir, "apps", "web", "pid")).read())
    assert pid > 1


def test_hostname_flag_and_net_none(pod):
    pod.add_app("a", sh("hostname; cat /proc/net/dev | tail -n +3 | cut -d: -f1; "
                        "cat /sys/class/net/lo/operstate /sys/class/net/lo/flags"))
    r = pod.run(flags=["--net=none", "--hostname=box1"])
    assert r.rc == 0, r
    lines = [x.strip() for x in r.stdout.split()]
    assert lines[0] == "box1"
    assert lines[1:2] == ["lo"], r           # only loopback
    assert int(lines[-1], 16) & 1, r          # IFF_UP


def test_filesystem_view(pod):
    pod.add_app("a", sh("ls -A /dev; echo ===; cat /proc/self/mountinfo; echo ===; "
                        "echo 1 > /proc/sys/kernel/ns_last_pid && echo PROCSYS=rw || echo PROCSYS=ro; "
                        "touch /sys/kernel/x 2>/dev/null && echo SYS=rw || echo SYS=ro; "
                        "cat /proc/kcore 2>/dev/null | head -c 1 | wc -c; "
                        "cat /proc/keys 2>/dev/null | wc -c"))
    r = pod.run()
    assert r.rc == 0, r
    devs, mountinfo, rest = r.stdout.split("===\n")
    devs = set(devs.split())
    for name in ("null", "zero", "full", "random", "urandom", "tty", "console", "pts", "ptmx",
                 "shm", "fd", "stdin", "stdout", "stderr"):
        assert name in devs, devs
    assert not any(re.match(r"(vd|sd|nvme|zram|loop|mem|kmsg)", d) for d in devs), devs
    f = facts(rest)
    assert f["PROCSYS"] == "ro" and f["SYS"] == "ro", r
    assert rest.split()[-2:] == ["0", "0"], rest   # kcore, keys masked
    by_point = {}
    for line in mountinfo.splitlines():
        left, dummy_sep, right = line.partition(" - ")
        fields = left.split()
        by_point[fields[4]] = (set(fields[5].split(",")), right.split()[0])
    assert "ro" in by_point["/proc/sys"][0] and "ro" in by_point["/sys"][0]
    assert by_point["/proc"][1] == "proc" and by_point["/sys"][1] == "sysfs"
    assert by_point["/dev"][1] == "tmpfs" and "nodev" in by_point["/dev"][0]
    device_binds = {"/dev/" + n for n in ("null", "zero", "full", "random", "urandom", "tty", "console")}
    masked = {"/proc/" + n for n in ("kcore", "keys", "timer_list", "timer_stats", "sched_debug",
                                     "latency_stats")}
    for point in device_binds:  # a bind keeps the host /dev's flags: these nodes open
        assert "nodev" not in by_point[point][0], (point, by_point[point])
    for point, (opts, fstype) in by_point.items():
        if point in device_binds or point in masked or point == "/dev/pts":
            continue
        assert "nodev" in opts, (point, opts, fstype)


def test_shared_empty_volume_and_event_handlers(pod):
    pod.add_volume("shared", mode="0770", uid=1000, gid=1000)
    pod.add_app("writer", sh("echo app >> /data/order; echo hello > /data/msg.tmp; "
                             "mv /data/msg.tmp /data/msg"),
                user="app", group="app",
                eventHandlers=[{"name": "pre-start", "exec": sh("id -u >> /data/order")},
                               {"name": "post-stop", "exec": sh("echo post >> /data/order")}],
                mountPoints=[{"name": "data", "path": "/data"}],
                mounts=[{"volume": "shared", "path": "data"}])
    pod.add_app("reader", sh("i=0; while [ ! -e /in/msg ] && [ $i -lt 200 ]; do sleep 0.05; "
                             "i=$((i+1)); done; cat /in/msg"),
                mounts=[{"volume": "shared", "path": "/in"}])
    r = pod.run()
    assert r.rc == 0, r
    assert r.stdout.strip() == "hello"
    assert open(pod.volume_path("shared") + "/order").read().split() == ["1000", "app", "post"]
    st = os.stat(pod.volume_path("shared"))
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o770, 1000, 1000)


def test_exit_status_is_the_first_failing_app(pod):
    pod.add_app("a", sh("exit 0"))
    pod.add_app("b", sh("sleep 0.2; exit 3"))
    pod.add_app("c", sh("exit 5"))
    r = pod.run()
    assert r.rc == 3, r
    assert [r.status[n]["exit_code"] for n in "abc"] == [0, 3, 5]


def test_missing_binary_fails_the_pod(pod):
    pod.add_app("ok", sh("sleep 20"))
    pod.add_app("bad", ["/bin/nope"])
    t = time.monotonic()
    r = pod.run()
    assert r.rc == 254, r
    assert time.monotonic() - t < 10
    assert r.status["bad"]["error"] == "exec /bin/nope: No such file or directory"
    assert "exec /bin/nope: No such file or directory" in r.stderr
    # the other app is terminated: killed, or stopped before its exec when the failure won
    ok = r.status["ok"]
    assert ok["signal"] == signal.SIGTERM or ok["error"] == "stopped before it started", r
    assert not os.path.exists(os.path.join(pod.dir, "pid"))


def test_sigint_to_pid1_stops_apps_and_runs_post_stop(pod):
    pod.add_volume("out", mode="0777")
    pod.add_app("a", ["/bin/sleep", "30"],
                eventHandlers=[{"name": "post-stop", "exec": sh("echo stopped > /out/post")}],
                mounts=[{"volume": "out", "path": "/out"}])
    pod.start()
    pid1 = pod.wait_running()
    os.kill(pid1, signal.SIGINT)
    r = pod.finish(timeout=20)
    assert r.rc == 128 + signal.SIGINT, r
    assert "Traceback" not in r.stderr and "KeyboardInterrupt" not in r.stderr, r
    assert open(pod.volume_path("out") + "/post").read() == "stopped\n"
    assert r.status["a"]["signal"] == signal.SIGINT


def _proc(pid):
    """(parent PID, command name) of a host process."""
    with open("/proc/%d/stat" % pid) as f:
        head, dummy, tail = f.read().rpartition(")")
    return int(tail.split()[1]), head.partition("(")[2]


def test_the_supervisor_becomes_the_app_unless_a_post_stop_handler_must_follow_it(pod):
    pod.add_volume("out", mode="0777")
    pod.add_app("plain", ["/bin/sleep", "30"])
    pod.add_app("handled", ["/bin/sleep", "30"],
                eventHandlers=[{"name": "post-stop", "exec": sh("echo done > /out/post")}],
                mounts=[{"volume": "out", "path": "/out"}])
    pod.start()
    pid1 = pod.wait_running()
    plain, handled = (int(open(os.path.join(pod.dir, "apps", n, "pid")).read()) for n in ("plain", "handled"))
    assert _proc(plain) == (pid1, "sleep")  # no process of ours between PID 1 and the app
    supervisor = _proc(handled)[0]
    assert _proc(handled)[1] == "sleep" and supervisor != pid1 and _proc(supervisor)[0] == pid1
    with open("/proc/%d/task/%d/children" % (pid1, pid1)) as f:
        assert sorted(int(x) for x in f.read().split()) == sorted([plain, supervisor])
    os.kill(pid1, signal.SIGTERM)
    r = pod.finish(timeout=20)
    assert r.rc == 128 + signal.SIGTERM, r
    assert r.status["plain"]["signal"] == r.status["handled"]["signal"] == signal.SIGTERM, r
    assert r.status["plain"]["started"] <= r.status["plain"]["finished"], r
    assert open(pod.volume_path("out") + "/post").read() == "done\n"


def test_gc_removes_cgroups_idempotently(pod):
    pod.add_app("a", sh("true"))
    pod.start()
    pod.proc.communicate(timeout=30)
    assert cgroup_dirs(pod.uuid), "run created no cgroup"
    for dummy in range(2):
        g = pod.gc()
        assert g.returncode == 0, g.stderr
    assert cgroup_dirs(pod.uuid) == []


# --------------------------------------------------------------------------- escapes

ESCAPE_C = r'''
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct stat st;
    mkdir("/esc-jail", 0755);
    if (chroot("/esc-jail") != 0) { perror("chroot"); return 2; }
    for (int i = 0; i < 64; i++) chdir("..");
    if (chroot(".") != 0) { perror("chroot ."); return 2; }
    if (stat(argv[1], &st) == 0) { printf("ESCAPED\n"); return 1; }
    printf("CONTAINED\n");
    return 0;
}
'''


@pytest.fixture(scope="session")
def escape_binary(tmp_path_factory):
    return h.static_binary(tmp_path_factory, "esc", ESCAPE_C)


def test_chroot_escape_is_contained(pod, tmp_path, escape_binary):
    marker = tmp_path / "host-marker"
    marker.write_text("host")
    # The probe works: from a plain chroot it escapes.
    jail = tmp_path / "jail"
    jail.mkdir()
    (jail / "esc").write_bytes(escape_binary)
    os.chmod(jail / "esc", 0o755)
    ctl = subprocess.run(["chroot", str(jail), "/esc", str(marker)], capture_output=True, text=True, check=False)
    assert ctl.stdout.strip() == "ESCAPED", ctl
    pod.add_app("a", ["/esc", str(marker)], files={"/esc": escape_binary})
    r = pod.run()
    assert r.stdout.strip() == "CONTAINED", r
    assert r.rc == 0, r


def _root_disk():
    st = os.stat("/")
    return os.major(st.st_dev), os.minor(st.st_dev)


@pytest.mark.parametrize("flags", [("--net=host",), ()], ids=["host-userns", "pod-userns"])
def test_mknod_of_the_host_disk_gives_nothing(pod, flags):
    """net=host: the root app stays in the host's user namespace and each layer shows; with
    its own network it is in the pod's user namespace, which refuses every device node."""
    major, minor = _root_disk()
    pod.add_app("a", sh("mknod /tmp/disk b %d %d && echo MKNOD=ok || echo MKNOD=denied; "
                        "head -c 512 /tmp/disk > /tmp/out 2>/dev/null && echo READ=ok || echo READ=denied; "
                        "echo BYTES=$(wc -c < /tmp/out); "
                        "mknod /tmp/null c 1 3 && echo MKNULL=ok; "
                        "echo x > /tmp/null 2>/dev/null && echo NODEV=open || echo NODEV=refused"
                        % (major, minor)),
                # CAP_MKNOD as cap_add gives it; CAP_NET_BIND_SERVICE keeps a root app on the
                # host's network in the host's user namespace.
                isolators=[{"name": "os/linux/capabilities-retain-set",
                            "value": {"set": ["CAP_MKNOD", "CAP_DAC_OVERRIDE", "CAP_NET_BIND_SERVICE"]}}])
    r = pod.run(flags=flags)
    f = facts(r.stdout)
    assert f["READ"] == "denied" and f["BYTES"] == "0", r
    assert f["MKNOD"] == "denied", r   # the v1 devices cgroup, or the v2 device program
    if flags:
        assert f["MKNULL"] == "ok", r           # allowed device: only nodev stops it
        assert f["NODEV"] == "refused", r
    else:
        assert "MKNULL" not in f, r


def test_proc_sysctl_and_sysrq_are_read_only(pod):
    with open("/proc/sys/kernel/core_pattern") as f:
        core = f.read().strip()
    pod.add_app("a", sh("echo '%s' > /proc/sys/kernel/core_pattern && echo CORE=written || echo CORE=denied; "
                        "echo h > /proc/sysrq-trigger && echo SYSRQ=written || echo SYSRQ=denied" % core))
    r = pod.run()
    f = facts(r.stdout)
    assert f["CORE"] == "denied" and f["SYSRQ"] == "denied", r


def test_pid1_root_does_not_show_the_host(pod, tmp_path):
    marker = tmp_path / "host-marker"
    marker.write_text("host")
    pod.add_app("a", sh("cat /proc/1/root%s && echo SEEN=yes || echo SEEN=no; "
                        "ls /proc/1/root/ >/dev/null 2>&1 && echo LS=yes || echo LS=no; "
                        "cat /proc/1/cmdline >/dev/null; echo PID1=$(cut -d' ' -f2 /proc/1/stat)" % marker))
    r = pod.run()
    f = facts(r.stdout)
    assert f["SEEN"] == "no" and f["LS"] == "no", r
    assert r.rc == 0, r


def test_workdir_through_proc_self_fd_never_lands_on_the_host(tmp_path, base):
    marker = "host-marker-%d" % os.getpid()
    for n in range(3, 10):
        work = tmp_path / str(n)
        work.mkdir()
        pod = h.Pod(work, base)
        os.makedirs(pod.dir)
        (work / marker).write_text("x")
        # the pod directory is what the lock fd (ROCKET_LOCK_FD) and stage1's cwd point at
        with open(os.path.join(pod.dir, marker), "w") as f:
            f.write("x")
        pod.add_app("a", sh("ls -a; pwd"), workingDirectory="/proc/self/fd/%d" % n)
        r = pod.run()
        assert marker not in r.stdout, (n, r)
        if r.rc == 0:
            assert r.stdout.strip().splitlines()[-1].startswith("/proc/self/fd"), (n, r)
        else:
            assert r.rc == 254 and "chdir /proc/self/fd/%d" % n in r.status["a"]["error"], (n, r)


def test_volume_target_through_symlink_to_root_stays_inside(pod, tmp_path):
    name = "rocket-escape-%s" % pod.uuid[:8]
    assert not os.path.exists("/" + name)
    src = tmp_path / "src"
    src.mkdir()
    (src / "file").write_text("from-volume")
    pod.add_volume("v", kind="host", source=str(src))
    pod.add_app("a", sh("cat /%s/file" % name), files={"/vol": "symlink:/"},
                mounts=[{"volume": "v", "path": "/vol/%s" % name}])
    before = open("/proc/self/mountinfo").read()
    r = pod.run()
    assert r.rc == 0, r
    assert r.stdout.strip() == "from-volume"
    assert not os.path.exists("/" + name)
    assert open("/proc/self/mountinfo").read() == before


def test_volume_target_that_is_the_root_is_refused(pod, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    pod.add_volume("v", kind="host", source=str(src))
    pod.add_app("a", sh("true"), files={"/vol": "symlink:/"}, mounts=[{"volume": "v", "path": "/vol"}])
    r = pod.run()
    assert r.rc == 254, r
    assert "resolves to the app's root" in r.status["a"]["error"]


def test_symlinked_host_volume_source_is_refused(pod, tmp_path):
    (tmp_path / "link").symlink_to("/etc")
    pod.add_volume("v", kind="host", source=str(tmp_path / "link"))
    pod.add_app("a", sh("ls /v"), mounts=[{"volume": "v", "path": "/v"}])
    r = pod.run()
    assert r.rc == 254, r
    assert "is a symlink" in r.status["a"]["error"]


def test_app_holds_only_stdio(pod):
    pod.add_app("a", ["/bin/ls", "-l", "/proc/self/fd"])
    r = pod.run()
    assert r.rc == 0, r
    fds = {}
    for line in r.stdout.splitlines()[1:]:
        m = re.search(r" (\d+)(?: -> (.*))?$", line)
        fds[int(m.group(1))] = m.group(2)
    extra = {fd: t for fd, t in fds.items() if fd > 2}
    # at most ls's own directory fd
    assert len(extra) <= 1 and all(t is None or t.startswith("/proc/") for t in extra.values()), fds


def test_mounts_do_not_propagate_from_a_shared_root(pod):
    pod.add_volume("v")
    pod.add_app("a", sh("ls / > /dev/null"), mounts=[{"volume": "v", "path": "/v"}])
    r = pod.run(shared=True)
    assert r.rc == 0, r
    assert r.leaked == [], r.leaked


# --------------------------------------------------------------------------- enter

PARITY = ("cat /proc/self/status; echo ===; cat /proc/self/cgroup; echo ===; "
          "for n in cgroup ipc mnt net pid uts; do readlink /proc/self/ns/$n; done; echo ===; "
          "env")


def _status_fields(text):
    keep = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters",
            "Uid", "Gid", "Groups")
    out = {}
    for line in text.splitlines():
        k, dummy_sep, v = line.partition(":")
        if k in keep:
            out[k] = v.split()
    return out


def test_enter_matches_the_app(pod):
    pod.add_volume("out", mode="0777")
    pod.add_app("a", sh("(%s) > /out/app 2>&1; touch /out/ready; exec sleep 30" % PARITY),
                user="app", group="app", supplementaryGIDs=[2000],
                isolators=[{"name": "os/linux/capabilities-retain-set",
                            "value": {"set": ["CAP_NET_BIND_SERVICE"]}},
                           {"name": "os/linux/no-new-privileges", "value": True}],
                mounts=[{"volume": "out", "path": "/out"}])
    pod.start()
    pid1 = pod.wait_running()
    ready = pod.volume_path("out") + "/ready"
    for dummy in range(200):
        if os.path.exists(ready):
            break
        time.sleep(0.05)
    e = pod.enter("a", sh(PARITY), pid1=pid1)
    app_pid = int(open(os.path.join(pod.dir, "apps", "a", "pid")).read())
    host_view = _status_fields(open("/proc/%d/status" % app_pid).read())
    os.kill(pid1, signal.SIGTERM)
    r = pod.finish(timeout=20)
    assert e.returncode == 0, (e.stdout, e.stderr)
    app_status, app_cg, app_ns, app_env = open(pod.volume_path("out") + "/app").read().split("===\n")
    en_status, en_cg, en_ns, en_env = e.stdout.split("===\n")
    a, b = _status_fields(app_status), _status_fields(en_status)
    assert a["CapAmb"] == ["0000000000000400"] and a["NoNewPrivs"] == ["1"], a
    assert a["Uid"][0] == "1000" and a["Groups"] == ["2000"], a
    assert a["Seccomp"] == ["2"] and a["Seccomp_filters"] == ["1"], a  # the default filter
    assert a == b
    assert host_view == a                       # what the app's main process has
    assert app_cg == en_cg and "/a" in app_cg
    assert app_ns == en_ns
    assert "AC_APP_NAME=a" in en_env
    assert r.rc == 128 + signal.SIGTERM, r


def test_enter_refuses_a_process_of_another_pod(pod):
    pod.add_app("a", ["/bin/sleep", "30"])
    pod.start()
    pod.wait_running()
    e = pod.enter("a", ["/bin/true"], pid1=os.getpid())
    os.kill(int(open(os.path.join(pod.dir, "pid")).read()), signal.SIGTERM)
    pod.finish(timeout=20)
    assert e.returncode == 254 and "not in the pod" in e.stderr, e


# --------------------------------------------------------------------------- limits


def _controller(name):
    v1, v2 = cgroups.hierarchies()
    return name in v1 or name in cgroups.PodCgroups("probe", v1, v2, discover=False).v2_controllers


def _not_enforced(pod, app, name):
    with open(os.path.join(pod.dir, "apps", app, "isolation.json")) as f:
        rep = json.load(f)
    return name not in rep["enforced"] and any(
        i["name"] == name and i["reason"].startswith("not enforced: controller unavailable") for i in rep["ignored"])


def test_memory_limit_kills_the_app(pod):
    if not _controller("memory"):  # e.g. tools/cgroup2-only.sh here: said, never claimed
        pod.add_app("hog", ["/bin/true"], isolators=[{"name": "resource/memory", "value": {"limit": "50M"}}])
        r = pod.run()
        assert r.rc == 0 and r.status["hog"]["oom_killed"] is None, r
        assert _not_enforced(pod, "hog", "resource/memory")
        return
    pod.add_app("hog", ["/bin/awk", 'BEGIN { s = "x"; while (length(s) < 300000000) s = s s; '
                                    'print length(s) }'],
                isolators=[{"name": "resource/memory", "value": {"limit": "50M"}}])
    pod.add_app("calm", ["/bin/true"])
    r = pod.run()
    assert r.status["hog"]["signal"] == signal.SIGKILL, r
    assert r.status["hog"]["oom_killed"] is True and r.status["calm"]["oom_killed"] is False, r
    assert r.rc == 128 + signal.SIGKILL


def test_cpu_quota_and_oom_score_adj_are_visible(pod):
    pod.add_app("a", sh("p=$(grep ':cpu:' /proc/self/cgroup | cut -d: -f3); "
                        "echo QUOTA=$(cat /sys/fs/cgroup/cpu$p/cpu.cfs_quota_us); "
                        "echo PERIOD=$(cat /sys/fs/cgroup/cpu$p/cpu.cfs_period_us); "
                        "echo OOM=$(cat /proc/self/oom_score_adj)"),
                isolators=[{"name": "resource/cpu", "value": {"limit": "500m"}},
                           {"name": "os/linux/oom-score-adj", "value": 500},
                           {"name": "resource/network-bandwidth", "value": {"default": True, "limit": "1M"}}])
    r = pod.run(flags=["--debug"])
    assert r.rc == 0, r
    f = facts(r.stdout)
    if os.path.isdir("/sys/fs/cgroup/cpu"):
        assert (f["QUOTA"], f["PERIOD"]) == ("50000", "100000"), r
    elif not _controller("cpu"):
        assert _not_enforced(pod, "a", "resource/cpu")
    assert f["OOM"] == "500"
    # an isolator stage1 does not enforce is said, not dropped
    assert "resource/network-bandwidth" in r.stderr
    assert "network-bandwidth" in open(os.path.join(pod.dir, "stage1", "ignored-isolators")).read()


def test_read_only_root_and_read_only_host_volume(pod, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("data")
    pod.add_volume("ro", kind="host", source=str(src), readOnly=True)
    pod.add_volume("scratch")
    pod.add_app("a", sh("touch /x 2>/dev/null && echo ROOT=rw || echo ROOT=ro; "
                        "touch /v/new 2>/dev/null && echo VOL=rw || echo VOL=ro; "
                        "echo F=$(cat /v/f); touch /s/ok && echo SCRATCH=rw"),
                pod_app={"readOnlyRootFS": True},
                mounts=[{"volume": "ro", "path": "/v"}, {"volume": "scratch", "path": "/s"}])
    r = pod.run()
    f = facts(r.stdout)
    assert (f["ROOT"], f["VOL"], f["F"], f["SCRATCH"]) == ("ro", "ro", "data", "rw"), r
    assert not (src / "new").exists()


def test_app_output_goes_to_its_rocket_app_fds_pipe(pod):
    r_fd, w_fd = os.pipe()
    pod.add_app("a", sh("echo to-out; echo to-err >&2; ls /proc/self/fd | wc -l"))
    pod.add_app("b", sh("echo plain"))
    try:
        r = pod.run(env={"ROCKET_APP_FDS": "a:%d" % w_fd}, pass_fds=(w_fd,))
        os.close(w_fd)
        w_fd = None
        with os.fdopen(r_fd, "rb") as f:
            r_fd = None
            captured = f.read().decode()
    finally:
        for fd in (r_fd, w_fd):
            if fd is not None:
                os.close(fd)
    assert r.rc == 0, r
    assert captured.split() == ["to-out", "to-err", "4"], captured   # 0 1 2 + ls's dir fd
    assert r.stdout.strip() == "plain"


# --------------------------------------------------------------------------- launch


@pytest.fixture
def store(data_dir, tmp_path):
    from tests.support import pods
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    s = Store(data_dir)
    s.import_file(pods.busybox_aci(str(tmp_path / "img")))
    yield s
    for p in podmod.list_pods(s.dd):
        pod_gc.remove(p, stop_timeout=2)
    s.close()


def _fd_targets(pid):
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            out.append(os.readlink("/proc/%d/fd/%s" % (pid, fd)))
        except OSError:
            pass
    return out


def _wait_file(path, timeout=20):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, path
        time.sleep(0.01)
    time.sleep(0.05)
    return int(open(path).read())


def test_in_process_init_holds_none_of_the_callers_fds(store, tmp_path):
    """The default init runs in stage0's forked child, not a fresh interpreter: no fd of
    the caller (inheritable or not, e.g. a pod name lock) may reach the pod."""
    import fcntl

    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare, run

    p = prepare.prepare(store, {"apps": [{"image": "example.com/busybox", "exec": ["/bin/sleep", "2"]}]})
    decoys = []
    for name, inheritable in (("decoy-inheritable", True), ("decoy-cloexec", False)):
        fd = os.open(str(tmp_path / name), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.set_inheritable(fd, inheritable)
        decoys.append(fd)
    child = os.fork()
    if child == 0:  # pragma: no cover - leaves by _exit
        code = 99
        try:
            code = run.run_foreground(p.pod, net="none")
        finally:
            os._exit(code)
    try:
        pid_file = os.path.join(store.dd.pod_state_dir("run"), p.pod.uuid, "pid")
        pid1 = _wait_file(pid_file)
        app = _wait_file(os.path.join(os.path.dirname(pid_file), "apps", "busybox", "pid"))
        with open("/proc/%d/stat" % pid1) as f:
            outer = int(f.read().rsplit(")", 1)[1].split()[1])
        with open("/proc/%d/cmdline" % outer, "rb") as f:
            outer_cmd = f.read()
        seen = {pid: _fd_targets(pid) for pid in (outer, pid1, app)}
    finally:
        dummy_pid, status = os.waitpid(child, 0)
        for fd in decoys:
            os.close(fd)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
    assert b"/init" not in outer_cmd, outer_cmd  # no second interpreter was exec'd
    for pid, targets in seen.items():
        assert not any("decoy" in t for t in targets), (pid, targets)


def test_keeper_reaps_pid1_and_reports_its_death(store):
    """Detached, stage1's outer process leaves once PID 1 runs; the keeper (a subreaper)
    is PID 1's parent and turns PID 1's death by a signal into the contract's statuses."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare, run

    # A healthcheck keeps the keeper of a restart_policy no pod (docs/decisions/keeper.md).
    p = prepare.prepare(store, {"apps": [{"image": "example.com/busybox", "exec": ["/bin/sleep", "60"],
                                          "healthcheck": {"test": ["/bin/true"], "interval": 30}}]})
    pid1 = run.start_detached(p.pod, net="none")
    with open("/proc/%d/stat" % pid1) as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
    assert parent == run._keepers[p.pod.uuid]
    os.kill(pid1, signal.SIGKILL)
    assert run.wait(p.pod, timeout=20)
    info = run.exit_info(p.pod)
    assert info["exit_code"] == 128 + signal.SIGKILL, info
    app = info["apps"][0]
    assert app["signal"] == signal.SIGKILL and "PID 1 was killed by signal 9" in app["error"], info
