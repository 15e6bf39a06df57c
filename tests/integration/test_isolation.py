"""Isolators from inside real pods: seccomp (explicit sets, the default filter, errno,
enter), cpu shares, sysctls, LSM reporting; private_users (user namespaces).

Root only. A tiny static C probe makes raw syscalls and prints name=errno (0: success),
so the results do not depend on what a shell does on failure.
"""
import errno
import json
import os
import signal
import time

import pytest

from tests.support import stage1_harness as h

PROBE_C = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        long r = -1;
        errno = 0;
        if (!strcmp(argv[i], "mkdir")) r = syscall(SYS_mkdirat, AT_FDCWD, "/tmp/probe-dir", 0755);
        else if (!strcmp(argv[i], "getppid")) r = syscall(SYS_getppid);
        else if (!strcmp(argv[i], "keyctl")) r = syscall(SYS_keyctl, 0, -3, 1);
        else if (!strcmp(argv[i], "unshare-user")) r = syscall(SYS_unshare, CLONE_NEWUSER);
        else if (!strcmp(argv[i], "uname")) { char b[400]; r = syscall(SYS_uname, b); }
        printf("%s=%d\n", argv[i], r < 0 ? errno : 0);
    }
    fflush(stdout);
    return 0;
}
'''


@pytest.fixture(scope="session")
def probe(tmp_path_factory):
    return h.static_binary(tmp_path_factory, "probe", PROBE_C)


def facts(text):
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k] = v
    return out


def probe_app(pod, probe, calls, isolators=None, **kw):
    pod.add_app("a", ["/probe"] + list(calls), files={"/probe": probe}, isolators=isolators or [], **kw)


def iso(name, value):
    return {"name": name, "value": value}


def report(pod, app="a"):
    with open(os.path.join(pod.dir, "apps", app, "isolation.json")) as f:
        return json.load(f)


# --------------------------------------------------------------------------- seccomp


def test_remove_set_fails_the_named_syscalls_and_enter_gets_the_same_filter(pod, probe):
    pod.add_volume("out", mode="0777")
    pod.add_app("a", ["/bin/sh", "-c", "/probe mkdir getppid > /out/app; touch /out/ready; exec sleep 30"],
                files={"/probe": probe}, mounts=[{"volume": "out", "path": "/out"}],
                isolators=[iso("os/linux/seccomp-remove-set", {"set": ["mkdir", "mkdirat", "chmod"]})])
    pod.start()
    pid1 = pod.wait_running()
    for dummy in range(200):
        if os.path.exists(pod.volume_path("out") + "/ready"):
            break
        time.sleep(0.05)
    e = pod.enter("a", ["/probe", "mkdir", "getppid"], pid1=pid1)
    busybox = pod.enter("a", ["/bin/chmod", "700", "/tmp"], pid1=pid1)
    os.kill(pid1, signal.SIGTERM)
    pod.finish(timeout=20)
    app = facts(open(pod.volume_path("out") + "/app").read())
    assert app == {"mkdir": str(errno.EPERM), "getppid": "0"}, app
    assert facts(e.stdout) == app, e
    assert busybox.returncode != 0 and "Operation not permitted" in busybox.stderr, busybox


def test_custom_errno_is_returned(pod, probe):
    probe_app(pod, probe, ["getppid", "uname"],
              [iso("os/linux/seccomp-remove-set", {"set": ["getppid"], "errno": "ENOTSUP"})])
    r = pod.run()
    assert r.rc == 0, r
    assert facts(r.stdout) == {"getppid": str(errno.ENOTSUP), "uname": "0"}, r


def test_retain_set_fails_every_other_syscall(pod, probe):
    if os.uname().machine != "x86_64":
        pytest.skip("the retained set is what a static x86_64 C program needs to start")
    keep = ["brk", "arch_prctl", "set_tid_address", "set_robust_list", "rseq", "prlimit64", "mmap", "munmap",
            "mprotect", "readlink", "readlinkat", "getrandom", "newfstatat", "fstat", "write", "uname", "ioctl"]
    probe_app(pod, probe, ["uname", "getppid", "mkdir"], [iso("os/linux/seccomp-retain-set", {"set": keep})])
    r = pod.run()
    assert r.rc == 0, r
    assert facts(r.stdout) == {"uname": "0", "getppid": str(errno.EPERM), "mkdir": str(errno.EPERM)}, r
    assert report(pod)["seccomp"]["mode"] == "retain"


def test_default_filter_blocks_keyrings_and_new_user_namespaces(pod, probe):
    probe_app(pod, probe, ["keyctl", "unshare-user", "getppid"])
    r = pod.run()
    assert r.rc == 0, r
    assert facts(r.stdout) == {"keyctl": str(errno.EPERM), "unshare-user": str(errno.EPERM), "getppid": "0"}, r
    rep = report(pod)
    assert rep["seccomp"]["source"] == "default" and rep["no_new_privileges"] is True


def test_empty_remove_set_turns_the_default_filter_off(pod, probe):
    # The control for the test above: the same probe without a filter succeeds.
    pod.add_app("a", ["/bin/sh", "-c", "/probe keyctl; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"],
                files={"/probe": probe}, isolators=[iso("os/linux/seccomp-remove-set", {"set": ["@appc.io/empty"]})])
    r = pod.run()
    assert r.rc == 0, r
    f = facts(r.stdout)
    assert f["keyctl"] == "0", r
    assert "Seccomp:\t0" in r.stdout and "NoNewPrivs:\t0" in r.stdout, r


def test_unknown_syscall_name_fails_the_start_clearly(pod):
    pod.add_app("a", ["/bin/true"], isolators=[iso("os/linux/seccomp-remove-set", {"set": ["mkdri"]})])
    r = pod.run()
    assert r.rc == 254 and "'mkdri' is not a Linux syscall" in r.stderr, r


# --------------------------------------------------------------------------- cgroups, sysctl, LSM


def test_cpu_shares_are_in_the_pods_cgroup(pod):
    pod.add_app("a", ["/bin/sh", "-c", "p=$(grep -E ':cpu[,:]' /proc/self/cgroup | cut -d: -f3); "
                                       "c=$(ls -d /sys/fs/cgroup/cpu /sys/fs/cgroup/cpu,cpuacct 2>/dev/null | head -1); "
                                       "echo SHARES=$(cat $c$p/cpu.shares 2>/dev/null); "
                                       "q=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); "
                                       "echo WEIGHT=$(cat /sys/fs/cgroup$q/cpu.weight 2>/dev/null)"],
                isolators=[iso("os/linux/cpu-shares", 512)])
    r = pod.run()
    assert r.rc == 0, r
    f = facts(r.stdout)
    assert f["SHARES"] == "512" or f["WEIGHT"] == str(1 + ((512 - 2) * 9999) // 262142), r
    assert "os/linux/cpu-shares" in report(pod)["enforced"]


def test_memory_request_is_the_soft_limit(pod):
    pod.add_app("a", ["/bin/sh", "-c", "p=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); "
                                       "echo SOFT=$(cat /sys/fs/cgroup/memory$p/memory.soft_limit_in_bytes 2>/dev/null); "
                                       "q=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); "
                                       "echo LOW=$(cat /sys/fs/cgroup$q/memory.low 2>/dev/null)"],
                isolators=[iso("resource/memory", {"request": "16Mi", "limit": "64Mi"})])
    r = pod.run()
    assert r.rc == 0, r
    f = facts(r.stdout)
    assert str(16 * 2 ** 20) in (f["SOFT"], f["LOW"]), r
    assert "resource/memory" in report(pod)["enforced"]


def _host_sysctl(name):
    with open("/proc/sys/" + name.replace(".", "/")) as f:
        return f.read().strip()


def test_namespaced_sysctls_are_set_in_the_pod_only(pod):
    host_ttl, host_shmmni = _host_sysctl("net.ipv4.ip_default_ttl"), _host_sysctl("kernel.shmmni")
    want_ttl = "42" if host_ttl != "42" else "43"
    want_shm = "1234" if host_shmmni != "1234" else "1235"
    pod.add_app("a", ["/bin/sh", "-c", "echo TTL=$(cat /proc/sys/net/ipv4/ip_default_ttl); "
                                       "echo SHMMNI=$(cat /proc/sys/kernel/shmmni)"],
                isolators=[iso("os/unix/sysctl", {"net.ipv4.ip_default_ttl": want_ttl, "kernel/shmmni": want_shm})])
    r = pod.run(flags=["--net=none"])
    assert r.rc == 0, r
    assert facts(r.stdout) == {"TTL": want_ttl, "SHMMNI": want_shm}, r
    assert (_host_sysctl("net.ipv4.ip_default_ttl"), _host_sysctl("kernel.shmmni")) == (host_ttl, host_shmmni)


def test_sysctl_of_the_host_is_refused(pod):
    before = _host_sysctl("vm.swappiness")
    pod.add_app("a", ["/bin/true"], isolators=[iso("os/unix/sysctl", {"vm.swappiness": "1"})])
    r = pod.run(flags=["--net=none"])
    assert r.rc == 254 and "vm.swappiness is not namespaced" in r.stderr, r
    assert _host_sysctl("vm.swappiness") == before


def test_net_sysctl_with_the_hosts_network_is_refused(pod):
    before = _host_sysctl("net.ipv4.ip_default_ttl")
    pod.add_app("a", ["/bin/true"], isolators=[iso("os/unix/sysctl", {"net.ipv4.ip_default_ttl": "9"})])
    r = pod.run(flags=["--net=host"])
    assert r.rc == 254 and "needs the pod's own network namespace" in r.stderr, r
    assert _host_sysctl("net.ipv4.ip_default_ttl") == before


def test_lsm_is_reported_unconfined_and_its_isolators_ignored(pod):
    pod.add_app("a", ["/bin/sh", "-c", "cat /proc/self/attr/current 2>/dev/null; echo"],
                isolators=[iso("os/linux/apparmor-profile", {"name": "rocket-default"})])
    r = pod.run()
    assert r.rc == 0, r
    rep = report(pod)
    apparmor = os.path.exists("/sys/module/apparmor/parameters/enabled") and \
        open("/sys/module/apparmor/parameters/enabled").read().strip() == "Y"
    assert rep["lsm"]["apparmor"] is apparmor and rep["lsm"]["profile"] == "unconfined"
    ignored = {i["name"]: i["reason"] for i in rep["ignored"]}
    assert "os/linux/apparmor-profile" in ignored
    if not apparmor:
        assert "not enabled" in ignored["os/linux/apparmor-profile"]
        assert r.stdout.strip() in ("", "unconfined"), r


# --------------------------------------------------------------------------- private_users

from tests.support import pods  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge, idrange  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare, run  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter  # noqa: E402
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store  # noqa: E402


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir)


def sh(script, **kw):
    return dict({"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}, **kw)


def test_private_users_root_in_the_pod_is_not_root_on_the_host(store, tmp_path, capfd):
    shared = tmp_path / "shared"
    shared.mkdir()
    os.chmod(shared, 0o777)
    owned = shared / "roots-file"
    owned.write_text("host root's\n")
    os.chmod(owned, 0o666 & ~0o022)  # rw-r--r--, owned by the real root
    script = ("cat /proc/self/uid_map; id -u; touch /v/made-in-pod; echo x >> /v/roots-file && echo WROTE; "
              "touch /etc/in-image && echo IMAGE_WRITABLE; ls -ln /bin/busybox | awk '{print \"BB_OWNER=\" $3}'")
    p = prepare.prepare(store, {"name": "userns", "apps": [sh(script, name="a", mounts=[{"volume": "v", "path": "/v"}])],
                                "volumes": [{"name": "v", "kind": "host", "source": str(shared)}]})
    rc = run.run_foreground(p.pod, net="none", private_users=True)
    out = capfd.readouterr()
    base = idrange.for_pod(p.pod, True)
    assert base >= idrange.FIRST
    lines = out.out.splitlines()
    assert lines and lines[0].split() == ["0", str(base), "65536"], (rc, out, run.exit_info(p.pod))
    assert lines[1] == "0", out
    st = os.stat(shared / "made-in-pod")
    assert (st.st_uid, st.st_gid) == (base, base)
    assert "WROTE" not in out.out and "Permission denied" in out.err, out
    assert owned.read_text() == "host root's\n"
    assert "IMAGE_WRITABLE" in out.out and "BB_OWNER=0" in out.out, out  # the image's root files are its root's
    assert rc == 0, out
    rep = converge.describe(p.pod)["apps"][0]["isolation"]
    assert rep["user_namespace"] == {"uid_base": base, "gid_base": base, "size": 65536}
    # The same name gets the same range again; the range survives the pod (a name keeps it).
    assert idrange.for_pod(p.pod, True) == base


def test_private_users_enter_joins_the_user_namespace(store):
    p = prepare.prepare(store, {"apps": [sh("echo up; exec sleep 30", name="a")]})
    run.start_detached(p.pod, net="none", private_users=True)
    try:
        rc, out, err = enter(p.pod, "a", ["/bin/sh", "-c", "cat /proc/self/uid_map; id -u; "
                                          "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status"])
        app_pid = int(open(os.path.join(p.pod.path, "apps", "a", "pid")).read())
        with open("/proc/%d/uid_map" % app_pid) as f:
            app_map = f.read().split()
    finally:
        run.stop(p.pod, timeout=5)
    assert rc == 0, err
    lines = out.decode().splitlines()
    assert lines[0].split() == app_map and lines[1] == "0", out
    assert "Seccomp:\t2" in out.decode()


def test_pod_run_module_private_users_isolation_report_and_restart(tmp_path):
    from tests.support.ansible_run import module

    dd = str(tmp_path / "rocket")
    with Store(dd) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    args = {"name": "job", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
            "exec": ["/bin/sh", "-c", "cat /proc/self/uid_map"], "private_users": True,
            "isolators": [{"name": "os/linux/cpu-shares", "value": 256},
                          {"name": "os/linux/selinux-context",
                           "value": {"user": "u", "role": "r", "type": "t", "level": "s0"}}]}
    try:
        r = module("pod_run", args)
        pod = r["pod"]
        iso_ = pod["apps"][0]["isolation"]
        base = iso_["user_namespace"]["uid_base"]
        assert pod["lsm"] == "unconfined" and iso_["lsm"]["profile"] == "unconfined", pod
        assert base >= idrange.FIRST and pod["apps"][0]["log"].split()[-3:] == ["0", str(base), "65536"], pod
        assert "os/linux/cpu-shares" in iso_["enforced"] and iso_["seccomp"]["source"] == "default"
        if not os.path.exists("/sys/fs/selinux/enforce"):
            assert {"name": "os/linux/selinux-context", "reason": "SELinux is not enabled on this host"} in iso_["ignored"]
        r = module("pod_run", args)
        assert r["changed"] is False, r
        r = module("pod_run", dict(args, private_users=False))
        assert r["action"] == "replace" and "run.private_users" in " ".join(r["reasons"]), r
        assert r["pod"]["apps"][0]["isolation"]["user_namespace"] is None
        # a host sysctl is refused before any pod exists
        bad = dict(args, name="bad", isolators=[{"name": "os/unix/sysctl", "value": {"kernel.panic": "1"}}])
        r = module("pod_run", bad)
        assert r.get("failed") and "kernel.panic is not namespaced" in r["msg"], r
        assert [p["name"] for p in module("pod_info", {"data_dir": dd})["pods"]] == ["job"]
    finally:
        for p in module("pod_info", {"data_dir": dd})["pods"]:
            module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": dd})
