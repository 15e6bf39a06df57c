"""The appc.rocket.pod connection in remote mode: pods on fleet hosts, reached over Ansible's ssh."""
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import zipfile

from tests.support import COLLECTIONS, python_image
from tests.support.ansible_run import BIN, module
from tests.support.fleet import HOSTS, recap
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import remote_enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

PODS = {"py-alpha": "alpha", "py-beta": "beta"}

PLAY = """
- hosts: pods
  gather_facts: true
  vars:
    greeting: hello from the controller
  tasks:
    - ansible.builtin.assert:
        that:
          - ansible_distribution == "Debian"
          - ansible_env.AC_APP_NAME == "python3"
    - ansible.builtin.file: {path: /srv/app, state: directory, owner: app, group: app, mode: "0750"}
    - ansible.builtin.template: {src: "%(dir)s/app.conf.j2", dest: /srv/app/app.conf, owner: app, mode: "0640"}
    - ansible.builtin.copy: {content: "secret\\n", dest: /srv/app/data, owner: app, group: app, mode: "0600"}
    - ansible.builtin.copy: {src: "%(dir)s/blob.bin", dest: /srv/app/blob.bin, mode: "0644"}
    - ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
      become_user: app
      register: as_app
      changed_when: false
    - ansible.builtin.copy: {content: "mine\\n", dest: /home/app/notes, mode: "0644"}
      become: true
      become_method: ansible.builtin.su
      become_user: app
    - ansible.builtin.command:
        cmd: sh -c 'echo ran >> /srv/app/ran'
        creates: /srv/app/ran
    - ansible.builtin.fetch: {src: /srv/app/blob.bin, dest: "%(dir)s/fetched/"}
    - ansible.builtin.assert:
        that: [as_app.stdout == "app"]
"""

VANISH = """
- hosts: pods
  gather_facts: false
  tasks:
    - ansible.builtin.command: "true"
      changed_when: false
    - name: the pod on beta goes away
      appc.rocket.pod_set:
        data_dir: "%(beta)s"
        pods: [{name: py, state: absent, stop_timeout: 2}]
      delegate_to: localhost
      connection: local
      vars: {ansible_python_interpreter: "%(python)s"}
      run_once: true
    - ansible.builtin.command: "true"
      changed_when: false
"""

# The app's status, cgroup and namespaces as a command entered over the connection sees them.
PARITY = ("cat /proc/self/status; echo ===; cat /proc/self/cgroup; echo ===; "
          "for n in cgroup ipc mnt net pid uts; do readlink /proc/self/ns/$n; done")

PROBE = r"""
import json, os, sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
opts = json.loads(sys.argv[2])
conn = connection_loader.get("appc.rocket.pod", PlayContext(), None)
conn.set_options(direct=opts)
src, tag, fetched, parity = sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6]
out = {}
rc, o, e = conn.exec_command(parity)
out["parity"] = [rc, o.decode(), e.decode()]
rc, o, e = conn.exec_command("ln -sfn / /tmp/evil && ln -sfn ../../../../../../.. /tmp/up")
out["links"] = rc
for dest in ("/tmp/evil/" + tag, "/tmp/up/tmp/" + tag, "/proc/1/root/" + tag):
    try:
        conn.put_file(src, dest)
        out[dest] = "written"
    except Exception as ex:
        out[dest] = "%s: %s" % (type(ex).__name__, ex)
conn.fetch_file("/tmp/evil/etc/hostname", fetched)
rc, o, e = conn.exec_command("sha256sum /%s /tmp/%s" % (tag, tag))
out["inside"] = o.decode()
print(json.dumps(out))
"""

# A command over the connection with ansible_rocket_user: enter's --user on the remote host.
USER_PROBE = r"""
import json, sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
conn = connection_loader.get("appc.rocket.pod", PlayContext(), None)
conn.set_options(direct=json.loads(sys.argv[2]))
rc, o, e = conn.exec_command("id -un; grep CapEff /proc/self/status")
print(json.dumps([rc, o.decode(), conn.default_user]))
"""


def _status_fields(text):
    keep = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters",
            "Uid", "Gid", "Groups")
    return {k: v.split() for k, dummy, v in (line.partition(":") for line in text.splitlines()) if k in keep}


def _start_pods(fleet):
    path, dummy = python_image.build()
    for host in set(PODS.values()):
        dd = fleet.data_dir(host)
        with Store(dd) as s:
            s.import_file(path)
        r = module("pod_run", {"data_dir": dd, "name": "py", "image": "example.com/python3", "net": "none"})
        assert not r.get("failed"), r


def _inventory(fleet, tmp_path):
    hosts = {name: {"ansible_connection": "appc.rocket.pod", "ansible_rocket_pod_host": host,
                    "ansible_host": HOSTS[host], "ansible_rocket_pod": "py",
                    "ansible_rocket_data_dir": fleet.data_dir(host), "ansible_python_interpreter": "/usr/bin/python3"}
             for name, host in PODS.items()}
    gv = dict(fleet.group_vars())
    gv.pop("ansible_python_interpreter")  # the controller's; the pods have their own
    inv = tmp_path / "pods.json"
    inv.write_text(json.dumps({"pods": {"hosts": hosts, "vars": gv}}))
    return str(inv)


def _playbook(fleet, inv, play, *args):
    e = fleet.env()
    e.pop("ANSIBLE_PYTHON_INTERPRETER", None)
    return subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inv, play, "--forks", "3"] + list(args),
                          env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)


def _in_pod(fleet, host, argv):
    rc, out, err = enter(podmod.find_by_name(DataDir(fleet.data_dir(host)), "py"), None, argv)
    assert rc == 0, err
    return out.decode()


def test_tasks_run_in_pods_of_two_remote_hosts(fleet, tmp_path):
    _start_pods(fleet)
    inv = _inventory(fleet, tmp_path)
    (tmp_path / "app.conf.j2").write_text("greeting={{ greeting }}\nhost={{ ansible_rocket_pod_host }}\n")
    blob = os.urandom(300 * 1024)
    (tmp_path / "blob.bin").write_bytes(blob)
    play = tmp_path / "play.yml"
    play.write_text(PLAY % {"dir": tmp_path})
    bundle, digest = remote_enter.bundle()
    cached = os.path.join(remote_enter.CACHE_DIR, digest + ".zip")
    if os.path.exists(cached):
        os.unlink(cached)  # shipped on first use by this run

    p = _playbook(fleet, inv, str(play))
    assert p.returncode == 0, p.stdout
    rows = recap(p.stdout, PODS)
    assert {h: (r["ok"], r["changed"]) for h, r in rows.items()} == {h: (11, 7) for h in PODS}, p.stdout
    st, dst = os.lstat(cached), os.lstat(remote_enter.CACHE_DIR)
    assert stat.S_ISREG(st.st_mode) and st.st_uid == 0 and stat.S_IMODE(st.st_mode) == 0o600
    assert dst.st_uid == 0 and stat.S_IMODE(dst.st_mode) == 0o700
    # the shipped sources, plus the code the host compiled from them at install
    with zipfile.ZipFile(cached) as have, zipfile.ZipFile(io.BytesIO(bundle)) as sent:
        assert all(have.read(n) == sent.read(n) for n in sent.namelist())
        assert sorted(set(have.namelist()) - set(sent.namelist())) == sorted(
            n[:-3] + ".pyc" for n in sent.namelist())
    for name, host in PODS.items():
        assert _in_pod(fleet, host, ["stat", "-c", "%U %G %a", "/srv/app", "/srv/app/app.conf", "/srv/app/data",
                                     "/home/app/notes"]).split("\n")[:4] == [
            "app app 750", "app root 640", "app app 600", "app app 644"]
        assert _in_pod(fleet, host, ["cat", "/srv/app/app.conf"]) == \
            "greeting=hello from the controller\nhost=%s\n" % host
        assert _in_pod(fleet, host, ["sha256sum", "/srv/app/blob.bin"]).split()[0] == hashlib.sha256(blob).hexdigest()
        assert (tmp_path / "fetched" / name / "srv" / "app" / "blob.bin").read_bytes() == blob

    # Again without pipelining (put_file streams each module): nothing changes.
    e_play = _playbook(fleet, inv, str(play), "-e", "ansible_pipelining=false")
    assert e_play.returncode == 0, e_play.stdout
    assert {h: (r["ok"], r["changed"]) for h, r in recap(e_play.stdout, PODS).items()} == \
        {h: (11, 0) for h in PODS}, e_play.stdout

    # The enter isolation probe, remotely: what a command entered over ssh has is what the app has.
    src = tmp_path / "payload"
    src.write_bytes(os.urandom(2 << 20))
    tag = "rocket-remote-escape-%d" % os.getpid()
    fetched = str(tmp_path / "fetched-hostname")
    opts = {"pod_host": "alpha", "host_address": HOSTS["alpha"], "rocket_pod": "py", "host_user": "root",
            "host_private_key_file": fleet.key, "data_dir": fleet.data_dir("alpha")}
    e = fleet.env()
    p = subprocess.run([sys.executable, "-c", PROBE, COLLECTIONS, json.dumps(opts), str(src), tag, fetched, PARITY],
                       env=e, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    pod = podmod.find_by_name(DataDir(fleet.data_dir("alpha")), "py")
    app_pid = int(open(pod.file("apps", "python3", "pid")).read())
    rc, text, err = out["parity"]
    assert rc == 0, err
    status, cgroup, ns = text.split("===\n")
    assert _status_fields(status) == _status_fields(open("/proc/%d/status" % app_pid).read())
    assert _status_fields(status)["NoNewPrivs"] == ["1"] and _status_fields(status)["Seccomp"] == ["2"]
    # the same cgroups: the entered command sees them through the app's cgroup namespace, the host in full
    host_cg = open("/proc/%d/cgroup" % app_pid).read().splitlines()
    assert len(cgroup.splitlines()) == len(host_cg) and "/python3" in cgroup
    for seen, full in zip(cgroup.splitlines(), host_cg):
        ctl, dummy, path = seen.rpartition(":")
        assert full.startswith(ctl + ":") and full.endswith(path), (seen, full)
    assert ns.split() == [os.readlink("/proc/%d/ns/%s" % (app_pid, n)) for n in ("cgroup", "ipc", "mnt", "net", "pid", "uts")]
    try:
        assert out["links"] == 0
        assert out["/tmp/evil/" + tag] == "written" and out["/tmp/up/tmp/" + tag] == "written"
        assert "Permission denied" in out["/proc/1/root/" + tag], out
        digest_src = hashlib.sha256(src.read_bytes()).hexdigest()
        assert [line.split()[0] for line in out["inside"].splitlines()] == [digest_src, digest_src]
        with open(fetched) as f:
            assert f.read() == "pod\n"  # the image's /etc/hostname, not the host's
        for host_path in ("/" + tag, "/tmp/" + tag):
            assert not os.path.exists(host_path), host_path
    finally:
        for host_path in ("/" + tag, "/tmp/" + tag):
            if os.path.exists(host_path):
                os.unlink(host_path)

    # rocket_user over ssh: the command runs as that user of the image, without capabilities.
    p = subprocess.run([sys.executable, "-c", USER_PROBE, COLLECTIONS, json.dumps(dict(opts, rocket_user="app"))],
                       env=e, capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert json.loads(p.stdout.strip().splitlines()[-1]) == [0, "app\nCapEff:\t0000000000000000\n", "app"], p.stdout

    # A pod that goes away mid-play fails its own host only.
    vanish = tmp_path / "vanish.yml"
    vanish.write_text(VANISH % {"beta": fleet.data_dir("beta"), "python": sys.executable})
    p = _playbook(fleet, inv, str(vanish))
    rows = recap(p.stdout, PODS)
    assert rows["py-alpha"]["ok"] == 3 and rows["py-alpha"]["unreachable"] == 0 and rows["py-alpha"]["failed"] == 0, \
        p.stdout
    assert rows["py-beta"]["unreachable"] == 1, p.stdout
    assert "cannot enter pod py@beta" in p.stdout, p.stdout
