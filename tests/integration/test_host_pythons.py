"""Pods on each managed-host Python of the supported matrix (docs/support.md): Debian 11's
3.9, 12's 3.11 and 13's 3.13. The module runs on that Python, and so does stage1 under it
(keeper, init: launched with the module's interpreter), so its start path, the seccomp
filter it builds and the netlink messages that set up `net: default` are exercised there.

The interpreters come from ROCKET_HOST_PYTHONS (space-separated paths), by default pyenv's
(~/.pyenv/versions/3.9.*, 3.11.*, 3.13.*); a missing one fails the test, naming it: a cell
that did not run proves nothing.
"""
import glob
import os
import time

import pytest

from tests.support.ansible_run import module

WANTED = ("3.9", "3.11", "3.13")


def _interpreters():
    given = os.environ.get("ROCKET_HOST_PYTHONS")
    if given:
        return given.split()
    found = []
    for minor in WANTED:
        paths = sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/%s.*/bin/python%s" % (minor, minor))))
        found.append(paths[-1] if paths else "python%s (none under ~/.pyenv/versions)" % minor)
    return found


def _pids_below(pid):
    """pid and its descendants (from /proc's parent links)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open("/proc/%s/stat" % entry) as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except OSError:
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


@pytest.mark.parametrize("python", _interpreters(), ids=os.path.basename)
def test_a_pod_runs_on_the_hosts_python(dd, python):
    assert os.path.isfile(python) and os.access(python, os.X_OK), \
        "host Python %s is missing: install it (pyenv) or list others in ROCKET_HOST_PYTHONS" % python
    on = {"ANSIBLE_PYTHON_INTERPRETER": python}
    r = module("pod_run", {"name": "probe", "image": "example.com/busybox", "net": "default", "state": "exited",
                           "data_dir": dd, "exec": ["/bin/sh", "-c", "grep Seccomp: /proc/self/status; ip -4 -o addr show eth0"]},
               extra_env=on)
    assert not r.get("failed") and r["pod"]["exit_code"] == 0, r
    net = r["pod"]["networks"][0]
    log = r["pod"]["apps"][0]["log"]
    assert "Seccomp:\t2" in log and "inet %s/%d" % (net["ip"], net["prefix"]) in log, log

    r = module("pod_run", {"name": "stays", "image": "example.com/busybox", "net": "default", "state": "running",
                           "data_dir": dd, "exec": ["/bin/sleep", "1000"]}, extra_env=on)
    assert not r.get("failed") and r["pod"]["state"] == "running", r
    exes = {}
    for pid in _pids_below(r["pod"]["pid"]):
        try:
            exes[pid] = os.path.realpath("/proc/%d/exe" % pid)
        except OSError:
            continue
    pythons = [p for p, exe in exes.items() if os.path.basename(exe).startswith("python")]
    # stage1 (the pod's init) runs on the host's Python, and only on it; the app is busybox.
    assert pythons and all(exes[p] == os.path.realpath(python) for p in pythons), (python, exes)
    assert any(os.path.basename(exe) == "busybox" for exe in exes.values()), exes
    # Once its app runs, a detached pod's PID 1 execs its lean loop (stage1/pid1.py) on the
    # same interpreter, by a descriptor opened before the pod's namespaces: it must get there
    # on every host Python, and be stopped from there.
    lean, deadline = None, time.monotonic() + 10
    while lean is None and time.monotonic() < deadline:
        for pid in pythons:
            try:
                with open("/proc/%d/cmdline" % pid, "rb") as f:
                    if any(a.endswith(b"/pid1") for a in f.read().split(b"\0")):
                        lean = pid
            except OSError:
                continue
        time.sleep(0.05)
    assert lean is not None, "PID 1 never went lean on %s" % python
    assert os.path.realpath("/proc/%d/exe" % lean) == os.path.realpath(python)
    r = module("pod_run", {"name": "stays", "state": "absent", "data_dir": dd, "stop_timeout": 5}, extra_env=on)
    assert not r.get("failed") and r["changed"], r
