"""Where apps' output goes, for real: log_driver journald into a real systemd-journald (in
a private mount namespace: tests/support/journald.py), its fields, pod_info's tails, the
keeper's fallback while journald is down; the file driver's log_max_size/log_max_files."""
import os
import sys
import time

import pytest

from tests.support import pods
from tests.support.ansible_run import module
from tests.support.journald import JOURNALD, PrivateJournald
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
READ_LOG = """import tests.support
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
print(run.read_log(pod.find(DataDir(%r), %r), "busybox"), end="")
"""
RESUME = """import tests.support
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import restart
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
print(restart.resume_all(DataDir(%r), timeout=30))
"""


@pytest.fixture
def journal(tmp_path):
    if JOURNALD is None:
        pytest.fail("systemd-journald is not installed (Debian package systemd; tools/debian-packages.sh)")
    j = PrivateJournald(tmp_path).start()
    yield j
    j.stop()


def wait_for(what, until, timeout=15.0):
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if until(got):
            return got
        assert time.monotonic() < deadline, "never true: %r" % (got,)
        time.sleep(0.1)


def test_journald_driver_four_steps_fields_tails_and_fallback(dd, journal):
    """The lines are journal entries with the pod's name, UUID and app as fields; pod_info
    tails them back; the driver's change replaces the pod; journald stopped under a running
    pod: the keeper keeps the lines in the app's file, saying so, and goes back once it is up."""
    ns = journal.cmd([])
    args = {"name": "web", "image": "example.com/busybox", "net": "none", "data_dir": dd, "log_driver": "journald",
            "restart_policy": "always",
            "exec": ["/bin/sh", "-c", "echo first line; printf 'caf\\303\\251 ok\\n'; i=0; "
                     "while true; do i=$((i+1)); echo tick $i; sleep 0.2; done"]}
    r = module("pod_run", args, check=True, diff=True, wrap=ns)
    assert r["changed"] is True and r["action"] == "run", r
    r = module("pod_run", args, wrap=ns)
    assert r["changed"] is True and r["action"] == "run" and r["pod"]["state"] == "running", r
    uuid = r["pod"]["uuid"]
    assert module("pod_run", args, wrap=ns)["changed"] is False
    assert module("pod_run", args, check=True, wrap=ns)["changed"] is False

    entries = wait_for(lambda: journal.entries("SYSLOG_IDENTIFIER=web/busybox"), lambda e: len(e) >= 4)
    first = entries[0]
    assert first["MESSAGE"] == "first line" and first["PRIORITY"] == "6", first
    assert first["APPC_POD_UUID"] == uuid and first["APPC_POD_NAME"] == "web" and first["APPC_APP"] == "busybox"
    assert first["_TRANSPORT"] == "journal", first  # the native protocol, not the stdout stream
    assert entries[1]["MESSAGE"] == "caf\u00e9 ok"
    assert [e["MESSAGE"] for e in entries[2:4]] == ["tick 1", "tick 2"]
    assert journal.entries("APPC_POD_UUID=%s" % uuid, "APPC_APP=busybox")[0]["MESSAGE"] == "first line"
    # Nothing on disk: the journal holds the app's output.
    log = os.path.join(dd, "pods", "run", uuid, "logs", "busybox.log")
    assert not os.path.exists(log)

    info = module("pod_info", {"name": "web", "data_dir": dd, "log_lines": 3}, wrap=ns)
    lines = info["pods"][0]["apps"][0]["log"].splitlines()
    assert len(lines) == 3 and all(line.split(" ", 1)[1].startswith("tick ") for line in lines), lines
    assert lines[0][:4].isdigit() and lines[0].split(" ", 1)[0].endswith("Z"), lines  # the file driver's stamp
    # No tail (the whole log, as read_log gives it): from the first line on, in order.
    r = journal.run([sys.executable, "-c", READ_LOG % (dd, uuid)], cwd=ROOT)
    whole = r.stdout.splitlines()
    assert whole[0].endswith(" first line") and whole[2].endswith(" tick 1") and len(whole) >= 4, r

    # journald down: the lines land in the file, with the keeper's note; back to the journal after.
    journal.stop_journald()
    wait_for(lambda: _read(log), lambda t: t.count("tick") >= 3)
    text = _read(log)
    assert "journald did not take this line" in text.splitlines()[0], text
    journal.start_journald()
    before = len(journal.entries("APPC_POD_UUID=%s" % uuid))
    wait_for(lambda: len(journal.entries("APPC_POD_UUID=%s" % uuid)), lambda n: n > before + 2, timeout=20)
    assert not any(e["MESSAGE"].startswith("(keeper") for e in journal.entries("APPC_POD_UUID=%s" % uuid))

    # A keeper started again on the exited pod (restart.resume_all, the boot-time restore's
    # call) logs as the first did: the same UUID's lines go on in the journal.
    r = module("pod_run", dict(args, state="exited"), wrap=ns)
    assert r["changed"] is True and r["pod"]["state"] == "exited", r
    r = journal.run([sys.executable, "-c", RESUME % dd], cwd=ROOT)
    assert r.returncode == 0 and uuid in r.stdout, r
    wait_for(lambda: [e["MESSAGE"] for e in journal.entries("APPC_POD_UUID=%s" % uuid, "SYSLOG_IDENTIFIER=web/busybox")],
             lambda m: m.count("first line") == 2)

    # The file driver instead: a change of log_driver replaces the pod (the keeper owns the pipes).
    to_file = dict(args, log_driver="file", log_max_size="64k")
    r = module("pod_run", to_file, check=True, diff=True, wrap=ns)
    assert r["changed"] is True and r["action"] == "replace", r
    assert r["diff"]["before"]["run.log_driver"] == "journald" and r["diff"]["after"]["run.log_driver"] == "file", r
    r = module("pod_run", to_file, wrap=ns)
    assert r["action"] == "replace" and r["pod"]["uuid"] != uuid, r
    assert "first line" in r["pod"]["apps"][0]["log"]
    assert module("pod_run", {"name": "web", "state": "absent", "data_dir": dd}, wrap=ns)["changed"] is True


def _read(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def test_journald_missing_fails_at_start_naming_the_option(dd):
    """No journald on the host (this VM's own namespace has none): check mode and the run
    fail naming log_driver and the socket, and no pod is left, prepared or otherwise."""
    assert not os.path.exists("/run/systemd/journal/socket"), "this test needs a host without journald"
    args = {"name": "nolog", "image": "example.com/busybox", "net": "none", "data_dir": dd, "log_driver": "journald",
            "exec": ["/bin/sh", "-c", "exec sleep 1000"]}
    for check in (True, False):
        r = module("pod_run", args, check=check)
        assert r.get("failed") and "log_driver" in r["msg"] and "/run/systemd/journal/socket" in r["msg"], r
        assert r["changed"] is False, r
    item = {k: v for k, v in args.items() if k != "data_dir"}
    r = module("pod_set", {"data_dir": dd, "pods": [item]})  # pod_set's items take the options too
    assert r.get("failed") and "log_driver" in r["msg"] and "/run/systemd/journal/socket" in r["msg"], r
    assert module("pod_info", {"data_dir": dd})["pods"] == []
    # Bad values of the other options: tests/unit/test_logs_unit.py (the same normalize).


def run_pod(dd, name, apps, run_opts, state="running"):
    with Store(dd) as store:
        raw = {"apps": apps}
        out = converge.plan(store, store.dd, raw, name, None, state, run_opts, False)
        converge.apply(store, store.dd, out, raw, name, state, run_opts, stop_timeout=2)
        return out


def test_file_driver_rotates_at_log_max_size_keeping_log_max_files(dd):
    """40 KiB of output with 4 KiB files, 3 in all: <app>.log, .1 and .2, each at most 4 KiB,
    the newest lines last; pod_info's tail reaches into .1 just after a rotation. With one
    file the log is emptied when full. A pod recorded before the options compares equal to
    the defaults (1 MiB, 2 files) and differs from anything else."""
    script = "i=0; while [ $i -lt 1000 ]; do i=$((i+1)); echo line-$i; done"
    opts = {"net": "none", "log_driver": "file", "log_max_size": 4096, "log_max_files": 3}
    out = run_pod(dd, "rot", [{"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}], opts, "exited")
    logs = os.path.join(out.pod.path, "logs")
    names = sorted(n for n in os.listdir(logs) if n.startswith("busybox"))
    assert names == ["busybox.log", "busybox.log.1", "busybox.log.2"], names
    sizes = [os.path.getsize(os.path.join(logs, n)) for n in names]
    assert all(0 < s <= 4096 for s in sizes) and sum(sizes) > 8192, sizes
    assert _read(os.path.join(logs, "busybox.log")).splitlines()[-1].endswith(" line-1000")
    tail = run.read_log(out.pod, "busybox", tail=20 + _read(os.path.join(logs, "busybox.log")).count("\n"))
    got = [line.split(" ", 1)[1] for line in tail.splitlines()]
    assert got[-1] == "line-1000" and got == ["line-%d" % i for i in range(1001 - len(got), 1001)], got
    assert converge.describe(out.pod, "rot")["apps"][0]["log"].splitlines()[-1].endswith(" line-1000")

    one = dict(opts, log_max_files=1)
    again = run_pod(dd, "rot", [{"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}], one, "exited")
    assert again.action == "replace" and "run.log_max_files" in again.reasons[0], again.reasons
    logs = os.path.join(again.pod.path, "logs")
    assert sorted(n for n in os.listdir(logs) if n.startswith("busybox")) == ["busybox.log"]
    assert 0 < os.path.getsize(os.path.join(logs, "busybox.log")) <= 4096
    assert _read(os.path.join(logs, "busybox.log")).splitlines()[-1].endswith(" line-1000")

    # A record without the log keys (a pod started before them): the defaults are no change.
    doc = again.pod.spec()
    for k in ("log_driver", "log_max_size", "log_max_files"):
        doc["run"].pop(k)
    again.pod.write_json("spec.json", doc, 0o600)
    apps = [{"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}]
    with Store(dd) as store:
        same = converge.plan(store, store.dd, {"apps": apps}, "rot", None, "exited",
                             dict(opts, log_max_size=1 << 20, log_max_files=2), False)
        assert not [d for d in same.differences if d["field"].startswith("run.log")], same.differences
        moved = converge.plan(store, store.dd, {"apps": apps}, "rot", None, "exited",
                              {"net": "none", "log_driver": "journald"}, False)
        assert {"field": "run.log_driver", "before": "file", "after": "journald"} in moved.differences
    pods.remove_all(store.dd)


BOOTED_PLAY = """
- hosts: booted
  gather_facts: false
  tasks:
    - ansible.builtin.copy: {src: "%(aci)s", dest: /root/busybox.aci, mode: "0600"}
    - appc.rocket.cas_image: {src: /root/busybox.aci, data_dir: "{{ rocket_data_dir }}"}
    - name: the pod, its output to the host's journal
      appc.rocket.pod_run:
        name: web
        image: example.com/busybox
        net: none
        data_dir: "{{ rocket_data_dir }}"
        log_driver: journald
        exec: [/bin/sh, -c, "echo booted-one; echo booted-two; exec sleep 1000"]
      register: run
    - ansible.builtin.wait_for: {timeout: 1}
    - appc.rocket.pod_info: {name: web, data_dir: "{{ rocket_data_dir }}", log_lines: 5}
      register: info
    - ansible.builtin.copy:
        content: "{{ {'run': run, 'info': info} | to_json }}"
        dest: /root/result.json
        mode: "0600"
    - appc.rocket.pod_run: {name: web, state: absent, data_dir: "{{ rocket_data_dir }}"}
"""


@pytest.mark.booted
def test_journald_driver_on_a_booted_debian12_host(booted_host, tmp_path):
    """On a systemd host (Debian 12, booted by nspawn: tests/support/booted.py), the pod's
    lines are in the host's own journal with its fields, and pod_info reads them back."""
    import json

    from tests.support import booted

    h = booted_host
    play = tmp_path / "play.yml"
    play.write_text(BOOTED_PLAY % {"aci": pods.busybox_aci(tmp_path)})
    inv = h.write_inventory(tmp_path / "inv.json", extra_vars={"rocket_runtime_install_packages": False})
    p = booted.playbook(inv, play)
    assert booted.recap(p.stdout, [h.name])[h.name]["failed"] == 0, p.stdout
    result = json.loads(h.ssh("cat /root/result.json").stdout)
    uuid = result["run"]["pod"]["uuid"]
    entries = [json.loads(line) for line in h.journal("-o json -t web/busybox").splitlines()]
    assert [e["MESSAGE"] for e in entries] == ["booted-one", "booted-two"], entries
    assert all(e["APPC_POD_UUID"] == uuid and e["APPC_APP"] == "busybox" and e["_TRANSPORT"] == "journal"
               for e in entries), entries
    log = result["info"]["pods"][0]["apps"][0]["log"].splitlines()
    assert [line.split(" ", 1)[1] for line in log] == ["booted-one", "booted-two"], log
