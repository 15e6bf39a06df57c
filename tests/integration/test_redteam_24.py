"""Red-team probes of this session's two changes from inside pods: the lean PID 1 (a
detached pod's PID 1 execs a fresh interpreter holding only its loop, stage1/pid1.py) and
the Landlock domain of each app (stage1/landlock.py). Each probe asserts what holds; a gap
not fixed yet is an xfail(strict=True) naming it."""
import os
import time

import pytest

from tests.support import pods, stage1_harness
from tests.integration.test_lean_pid1 import wait_lean
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import boot, enter, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import contract, landlock

ABI, WHY = landlock.probe()

# A static probe: the syscalls busybox has no applet for, each printing `<what>=ok` or the
# error (vmread: `reached` when the access check let it through to a bad address).
PROBE = r'''
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

static int out(const char *what, long rc) {
    printf("%s=%s\n", what, rc < 0 ? (errno == EPERM ? "EPERM" : errno == EACCES ? "EACCES" : strerror(errno)) : "ok");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3) return 2;
    pid_t pid = atoi(argv[2]);
    if (!strcmp(argv[1], "prlimit") && argc == 6) {
        struct rlimit r = {strtoul(argv[4], 0, 0), strtoul(argv[5], 0, 0)};
        return out("prlimit", prlimit(pid, atoi(argv[3]), &r, NULL));
    }
    if (!strcmp(argv[1], "vmread")) {
        char buf[8];
        struct iovec l = {buf, 8}, r = {(void *)0x1000, 8};
        long rc = syscall(SYS_process_vm_readv, pid, &l, 1, &r, 1, 0);
        if (rc < 0 && errno == EFAULT) { printf("vmread=reached\n"); return 0; }
        return out("vmread", rc);
    }
    if (!strcmp(argv[1], "pidfd")) {
        long pfd = syscall(SYS_pidfd_open, pid, 0);
        if (pfd < 0) return out("pidfd_open", pfd);
        return out("pidfd_getfd", syscall(SYS_pidfd_getfd, pfd, 0, 0));
    }
    if (!strcmp(argv[1], "ptrace")) {
        long rc = ptrace(PTRACE_ATTACH, pid, 0, 0);
        out("ptrace", rc);
        if (rc == 0) { waitpid(pid, 0, __WALL); ptrace(PTRACE_DETACH, pid, 0, 0); }
        return 0;
    }
    return 2;
}
'''


@pytest.fixture(scope="module")
def probe_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt24-bin")
    (d / "probe").write_bytes(stage1_harness.static_binary(tmp_path_factory, "probe", PROBE))
    os.chmod(d / "probe", 0o755)
    os.chmod(d, 0o755)  # private_users: the pod's root is an unprivileged host uid
    return str(d)


@pytest.fixture
def store(data_dir, image_dir):
    yield from pods.busybox_store(data_dir, image_dir)


def _sh(name, script, **extra):
    return dict({"name": name, "image": "example.com/busybox", "exec": ["/bin/sh", "-c", script],
                 "mounts": [{"volume": "t", "path": "/t"}]}, **extra)


def _spec(probe_dir, *apps):
    return {"apps": list(apps), "volumes": [{"name": "t", "kind": "host", "source": probe_dir, "read_only": True}]}


NO_FILTER = {"name": "os/linux/seccomp-remove-set", "value": {"set": ["@appc.io/empty"]}}


def _gids(pid):
    with open("/proc/%d/status" % pid) as f:
        return [int(x) for line in f if line.startswith("Gid:") for x in line.split()[1:4]]


def _facts(log):
    return dict(w.split("=", 1) for line in log.splitlines() for w in line.split() if "=" in w)


LEAN_PROBE = ("sleep 2; "  # PID 1 has gone lean by now (pid1.LEAN_AFTER after every app runs)
              "cat /proc/1/environ >/dev/null 2>&1; echo environ=$?; "
              "echo envextra=$(cat /proc/1/environ 2>/dev/null | tr '\\0' '\\n' | grep -v '^PATH=' | grep -c .); "
              "head -c 1 /proc/1/mem >/dev/null 2>&1; echo mem=$?; "
              "n=0; for f in /proc/1/fd/*; do readlink $f >/dev/null 2>&1 && n=$((n+1)); "
              "head -c 1 $f >/dev/null 2>&1 </dev/null && n=$((n+1)); done; echo fdreach=$n; "
              "ls /proc/1/root/ >/dev/null 2>&1; echo root=$?; "
              "ls /proc/1/cwd/ >/dev/null 2>&1; echo cwd=$?; "
              "head -c 1 /proc/1/exe >/dev/null 2>&1; echo exe=$?; "
              "t=$(tr '\\0' '\\n' </proc/1/cmdline | grep /pid1); echo tree=${t:-none}; "
              "head -c 1 $t >/dev/null 2>&1; echo launcher=$?; "
              "/t/probe vmread 1; /t/probe pidfd 1; /t/probe ptrace 1; "
              "echo done; exec sleep 1000")


@pytest.mark.parametrize("extra", [{}, {"isolators": [NO_FILTER]}, {"isolators": [NO_FILTER], "cap_add": ["SYS_ADMIN"]},
                                   {"private_users": True}],
                         ids=["default", "no_filter", "sys_admin_no_filter", "private_users"])
def test_an_app_cannot_read_or_replace_what_the_lean_pid1_runs(store, probe_dir, extra):
    # The lean PID 1 holds the interpreter and the stage1 tree by fd, and its state came in a
    # memfd: a root app reaches none of it through /proc/1, nor by process_vm_readv,
    # pidfd_getfd or ptrace; the launcher's path on its command line names the app's own
    # fds, not PID 1's. Without the seccomp filter the kernel's own checks refuse (PID 1 is
    # outside the app's user namespace and Landlock domain); with cap_add SYS_ADMIN the app
    # is outside any domain and the capability subset check still refuses.
    private = extra.pop("private_users", False)
    p = prepare.prepare(store, _spec(probe_dir, _sh("a", LEAN_PROBE, **extra)))
    pid1 = run.start_detached(p.pod, net="none", private_users=private)
    try:
        argv = wait_lean(pid1)
        # -I: no PYTHON* variable or user site reaches it; the environment is PATH alone
        assert argv[1:4] == [b"-I", b"-S", b"-B"], argv
        with open("/proc/%d/environ" % pid1, "rb") as f:
            assert f.read() == b"PATH=%s\0" % contract.STAGE1_PATH.encode()
        tree = os.readlink("/proc/%d/fd/%s" % (pid1, argv[4].split(b"/")[4].decode()))
        st = os.stat(tree)
        assert st.st_uid == 0 and not st.st_mode & 0o022, (tree, oct(st.st_mode))
        log = pods.wait_log(p.pod, "a", "done", 15)
        f = _facts(log)
        for k in ("mem", "root", "cwd", "exe", "launcher"):
            assert f.get(k) not in (None, "0"), (k, log)
        assert f.get("fdreach") == "0" and f.get("envextra") == "0", log
        # An app that may hold CAP_SYS_ADMIN runs outside any domain (docs/isolation.md), and
        # the capability alone passes the kernel's check on PID 1's environ (PATH once lean).
        assert f.get("environ") != "0" or "cap_add" in extra, log
        assert f.get("vmread") == "EPERM" and f.get("pidfd_getfd") == "EPERM" and f.get("ptrace") == "EPERM", log
        assert p.pod.state() == "running" and wait_lean(pid1)  # still its lean self
    finally:
        assert run.stop(p.pod, timeout=5)
    assert p.pod.read_json("exit")["stopped_by_user"] is True
    pods.reap(settle=0.2)


@pytest.mark.parametrize("limit", ["7 8 8", "9 8388608 8388608", "0 1 1"], ids=["nofile", "as", "cpu"])
def test_an_app_cannot_cripple_pid1_through_its_resource_limits(store, probe_dir, limit):
    # prlimit(2) on another process asks only that the caller's uid and gid match the
    # target's real, effective and saved ones (or CAP_SYS_RESOURCE over it): no ptrace
    # check, no Landlock hook. A root app of a default pod is uid 0 and gid 0 like PID 1, so
    # it could lower PID 1's limits before the lean exec (too few fds or too little address
    # space for the new interpreter: PID 1 would die and the pod with it, unrecorded) or
    # its CPU time (the kernel's SIGKILL at the hard limit reaches even a namespace's init).
    # Seen before the fix: 8 MiB of address space or 1 s of CPU time (then log
    # lines for PID 1 to pump) and PID 1 died, the pod `exited` with no exit record and no
    # app status; too few fds and it never went lean. Now the call is refused.
    script = "/t/probe prlimit 1 %s; seq 30000; echo done; exec sleep 1000" % limit
    p = prepare.prepare(store, _spec(probe_dir, _sh("a", script)))
    pid1 = run.start_detached(p.pod, net="none")
    try:
        log = pods.wait_log(p.pod, "a", "done", 15)
        assert _facts(log).get("prlimit") == "EPERM", log
        gids = _gids(pid1)
        assert gids[0] != gids[1] == gids[2] == 0, gids  # the real gid no app can match
        wait_lean(pid1)
        assert _gids(pid1) == gids  # exec kept it
        time.sleep(1.5)
        assert p.pod.state() == "running", run.exit_info(p.pod)
    finally:
        stopped = run.stop(p.pod, timeout=5)
    ex = run.exit_info(p.pod)
    assert stopped and p.pod.read_json("exit")["stopped_by_user"] is True, ex
    pods.reap(settle=0.2)


A_SCRIPT = "echo mine >/tmp/afile; while :; do sleep 1; done"  # the shell keeps the marker argument
ROUTES = ("m=amark; m=${m}er; a=; "
          "for p in /proc/[0-9]*; do if grep -q $m $p/cmdline 2>/dev/null; then a=${p#/proc/}; break; fi; done; "
          "echo apid=${a:-none}; "
          "ls /proc/$a/cwd/ >/dev/null 2>&1; echo cwd=$?; "
          "n=0; for x in /proc/$a/fd/*; do readlink $x >/dev/null 2>&1 && n=$((n+1)); done; echo fdlink=$n; "
          "cat /proc/$a/fd/1 </dev/null >/dev/null 2>&1 & sleep 0.2; kill $! 2>/dev/null; wait $! ; echo fdopen=$?; "
          "echo mapfiles=$(ls /proc/$a/map_files/ 2>/dev/null | grep -c .); "
          "ls /proc/$a/task/$a/root/tmp/ >/dev/null 2>&1; echo taskroot=$?; "
          "cat /proc/$a/task/$a/environ >/dev/null 2>&1; echo taskenviron=$?; "
          "head -c 1 /proc/$a/exe >/dev/null 2>&1; echo exe=$?; "
          "cat /proc/$a/maps >/dev/null 2>&1 && [ -n \"$(cat /proc/$a/maps 2>/dev/null)\" ]; echo maps=$?; "
          "/t/probe vmread $a; /t/probe pidfd $a; /t/probe ptrace $a; ")


@pytest.mark.skipif(not ABI, reason="no usable Landlock on this host: %s" % WHY)
def test_no_other_route_from_one_apps_domain_to_anothers_process(store, probe_dir):
    # Two root apps with the default capabilities: the same uid and capability sets, so
    # only the domains stand between them (b's seccomp filter is off: the kernel answers). b tries every ptrace-class route to a it has:
    # /proc/a/{cwd,fd,fd/N,map_files,task/N/root,task/N/environ,exe,maps},
    # process_vm_readv, pidfd_getfd, PTRACE_ATTACH. A command entered into b (a sibling
    # domain of b's) tries the same, and a's own domain still reaches a (an entered command
    # into a is a sibling too: it is refused, as docs/isolation.md says).
    p = prepare.prepare(store, _spec(probe_dir, dict(_sh("a", A_SCRIPT), exec=["/bin/sh", "-c", A_SCRIPT, "amarker"]),
                                     _sh("b", "sleep 0.5; " + ROUTES + "/t/probe prlimit $a 0 100000 100000; echo done; exec sleep 1000",
                                         isolators=[NO_FILTER])))
    run.start_detached(p.pod, net="none")
    try:
        log = pods.wait_log(p.pod, "b", "done", 15)
        f = _facts(log)
        assert f.get("apid") not in (None, "none", ""), log
        for k in ("cwd", "fdopen", "taskroot", "taskenviron", "exe", "maps"):
            assert f.get(k) not in (None, "0"), (k, log)
        assert f.get("fdlink") == "0" and f.get("mapfiles") == "0", log  # fd numbers list (root's directory), no link
        assert f.get("vmread") == "EPERM" and f.get("pidfd_getfd") == "EPERM" and f.get("ptrace") == "EPERM", log
        # what is not ptrace-class still crosses, as signals do: the same ids may set a's limits
        assert f.get("prlimit") == "ok", log
        rc, out, err = enter.enter(p.pod, "b", ["/bin/sh", "-c", ROUTES], timeout=15)
        g = _facts(out.decode())
        assert g.get("apid") == f["apid"], (out, err)
        for k in ("cwd", "fdopen", "taskroot", "taskenviron", "exe", "maps"):
            assert g.get(k) not in (None, "0"), (k, out)
        assert g.get("fdlink") == "0" and g.get("mapfiles") == "0", out
        assert g.get("vmread") == "EPERM" and g.get("pidfd_getfd") == "EPERM" and g.get("ptrace") == "EPERM", out
    finally:
        assert run.stop(p.pod, timeout=5)
    pods.reap(settle=0.2)


def test_an_app_dressed_as_the_lean_pid1_is_not_taken_for_the_pods_keeper(store, probe_dir):
    # boot.keeper_pid (a host shutdown signals what it finds) knows a keeper-less pod's lean
    # PID 1 by its command line (`<tree>/pid1 <uuid> <fd> --keeps`) and its cwd, the pod
    # directory. An app makes the same path in its own root, goes there and runs a shell
    # whose command line reads the same: the cwd's device and inode give it away.
    # PID 1's command line before it goes lean is the keeper's: `... keeper <pod dir> <uuid> ...`
    fake = ("set -- $(tr '\\0' ' ' </proc/1/cmdline); mkdir -p $6 && cd $6 && "
            "sh -c 'echo dressed; while :; do sleep 1; done' x /x/pid1 $7 3 --keeps")
    p = prepare.prepare(store, _spec(probe_dir, _sh("a", fake)))
    pid1 = run.start_detached(p.pod, net="none")
    try:
        assert "dressed" in pods.wait_log(p.pod, "a", "dressed", 10)
        wait_lean(pid1)
        want = os.path.realpath(p.pod.path)
        dressed = []
        for n in os.listdir("/proc"):
            try:
                if n.isdigit() and int(n) != pid1 and os.readlink("/proc/%s/cwd" % n) == want:
                    with open("/proc/%s/cmdline" % n, "rb") as f:
                        if b"--keeps" in f.read():
                            dressed.append(int(n))
            except OSError:
                continue
        assert dressed, "the app's process does not read as the pod's path: the probe proves nothing"
        assert boot.keeper_pid(p.pod) == pid1  # (PID 1 lists first: the next lines are the guard)
        st, fake = os.stat(want), os.stat("/proc/%d/cwd" % dressed[0])
        assert (fake.st_dev, fake.st_ino) != (st.st_dev, st.st_ino)
    finally:
        assert run.stop(p.pod, timeout=5)
    pods.reap(settle=0.2)
