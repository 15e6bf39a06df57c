"""The cross-app /proc guard (stage1/landlock.py): each app of a pod in a Landlock domain of
its own, from inside real pods.

Two root apps with podman's default capabilities pass the kernel's ptrace access check on
each other (same uid, same capabilities): without a domain per app, b reads a's environment
and root through /proc. With one, b is refused while a's own children, signals between the
apps, an entered command's ps and a healthcheck keep working."""
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import landlock
from tests.integration.test_devices import facts, wait_log
from tests.support.ansible_run import module

ABI, WHY = landlock.probe()
SECRET = "ll-s3cr3t-%d" % os.getpid()

# a: its own children read its environ and root (same domain), a USR1 is logged, and the
# marker argument lets b find its shell without b's command line holding the marker.
A_SCRIPT = ("trap 'echo usr1=got' USR1; echo mine >/tmp/afile; "
            "echo own=$(cat /proc/$$/environ | tr '\\0' '\\n' | grep -c ll-s3cr3[t]); "
            "if ls /proc/$$/root/tmp/afile >/dev/null 2>&1; then echo ownroot=1; else echo ownroot=0; fi; "
            "echo a=up; while :; do sleep 0.2; done")
B_SCRIPT = ("sleep 1; m=amark; m=${m}er; apid=; "
            "for p in /proc/[0-9]*; do if grep -q $m $p/cmdline 2>/dev/null; then apid=${p#/proc/}; break; fi; done; "
            "echo apid=$apid; "
            "if cat /proc/$apid/environ 2>/dev/null | grep -q ll-s3cr3[t]; then echo environ=read; "
            "else echo environ=denied; fi; "
            "if ls /proc/$apid/root/tmp/ >/dev/null 2>&1; then echo root=read; else echo root=denied; fi; "
            "if readlink /proc/$apid/exe >/dev/null 2>&1; then echo exe=read; else echo exe=denied; fi; "
            "kill -USR1 $apid; echo kill=$?; echo b=done; exec sleep 1000")


@pytest.mark.skipif(not ABI, reason="no usable Landlock on this host: %s" % WHY)
@pytest.mark.parametrize("private_users", [False, True], ids=["identity", "private_users"])
def test_an_app_cannot_reach_another_apps_proc_but_its_own_children_can(dd, private_users):
    # private_users: the supervisor makes the domain as root of the pod's own user namespace
    args = {"name": "ll", "net": "none", "data_dir": dd, "state": "healthy", "wait_timeout": 40,
            "private_users": private_users,
            "apps": [{"name": "a", "image": "example.com/busybox", "environment": {"LLSEC": SECRET},
                      "exec": ["/bin/sh", "-c", A_SCRIPT, "amarker"],
                      "healthcheck": {"test": "test -f /tmp/afile", "interval": 1, "retries": 3}},
                     {"name": "b", "image": "example.com/busybox", "exec": ["/bin/sh", "-c", B_SCRIPT]}]}
    r = module("pod_run", args)
    assert r["changed"] and r["pod"]["state"] == "running", r
    for app in r["pod"]["apps"]:
        assert app["isolation"]["proc_guard"] == {"enforced": True, "abi": ABI, "by": "landlock"}, app
    info, log = wait_log(dd, "ll", "usr1=got", timeout=30)
    f = facts(log)
    assert f.get("apid", "") != "", log
    assert f.get("environ") == "denied" and f.get("root") == "denied" and f.get("exe") == "denied", log
    assert f.get("own") == "1" and f.get("ownroot") == "1", log  # a's children: the same domain
    assert f.get("kill") == "0" and "usr1=got" in log, log  # no signal scope: signals still cross
    # An entered command: ps sees a's processes, a's files are its own; a's /proc is not
    # (the command is in a sibling domain, docs/isolation.md says what enter loses).
    e = module("pod_enter", {"name": "ll", "app": "a", "data_dir": dd,
                             "argv": ["/bin/sh", "-c", "ps; cat /tmp/afile; "
                                      "cat /proc/%s/environ >/dev/null 2>&1; echo environ=$?" % f["apid"]]})
    assert e["rc"] == 0 and "amarker" in e["stdout"] and "mine" in e["stdout"], e
    assert "environ=1" in e["stdout"], e
    h = module("pod_info", {"data_dir": dd, "name": "ll"})["pods"][0]["apps"][0]["health"]
    assert h["status"] == "healthy", h


@pytest.mark.skipif(not ABI, reason="no usable Landlock on this host: %s" % WHY)
def test_an_app_that_may_ptrace_stays_outside_and_says_so(dd):
    # cap_add SYS_PTRACE (a debugging sidecar): trusted with the other apps' processes, as
    # before; the others still cannot reach it (a domain never reaches outside itself).
    script = B_SCRIPT.replace("sleep 1;", "sleep 1.5;")
    args = {"name": "llp", "net": "none", "data_dir": dd,
            "apps": [{"name": "a", "image": "example.com/busybox", "environment": {"LLSEC": SECRET},
                      "exec": ["/bin/sh", "-c", A_SCRIPT, "amarker"]},
                     {"name": "b", "image": "example.com/busybox", "cap_add": ["SYS_PTRACE"],
                      "exec": ["/bin/sh", "-c", script]}]}
    r = module("pod_run", args)
    assert r["changed"], r
    guards = {a["name"]: a["isolation"]["proc_guard"] for a in r["pod"]["apps"]}
    assert guards["a"]["enforced"] is True, guards
    assert guards["b"]["enforced"] is False and "CAP_SYS_PTRACE" in guards["b"]["reason"], guards
    info, log = wait_log(dd, "llp", "b=done", timeout=30)
    f = facts(log)
    assert f.get("environ") == "read" and f.get("root") == "read", log


def test_a_host_without_landlock_runs_the_apps_as_before_and_says_so(pod):
    # A filter around the whole runtime answers ENOSYS to landlock_create_ruleset, as a kernel
    # before 5.13 (or a container manager's filter) does: the pod starts, unguarded, and says so.
    import sys

    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import seccomp
    from tests.integration.test_isolation import SECCOMP_WRAP, report

    program = seccomp.compile_filter(seccomp.Filter("remove", ["landlock_create_ruleset"], "ENOSYS"))
    pod.add_app("a", ["/bin/sh", "-c", "trap 'echo usr1=got' USR1; sleep 3; true", "amarker"], environment=[{"name": "LLSEC", "value": SECRET}])
    pod.add_app("b", ["/bin/sh", "-c", B_SCRIPT.replace("exec sleep 1000", "true")])
    r = pod.run(wrap=[sys.executable, "-c", SECCOMP_WRAP, program.hex()])
    assert r.rc == 0, r
    words = dict(w.partition("=")[::2] for line in r.stdout.splitlines() for w in line.split() if "=" in w)
    assert words.get("environ") == "read" and words.get("usr1") == "got", r.stdout  # as before the guard
    for app in ("a", "b"):
        guard = report(pod, app)["proc_guard"]
        assert guard["enforced"] is False and "this kernel has no Landlock" in guard["reason"], guard
    assert any(n.startswith("cross-app /proc guard not enforced on this host: this kernel has no Landlock")
               for n in report(pod)["notes"]), report(pod)
