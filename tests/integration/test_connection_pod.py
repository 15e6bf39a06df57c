"""The appc.rocket.pod connection plugin: real modules run inside pods of a python3 image."""
import json
import os
import subprocess
import sys

import pytest

from tests.support import COLLECTIONS, python_image
from tests.support.ansible_run import BIN, env
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

SETUP = """
- hosts: localhost
  gather_facts: false
  module_defaults:
    appc.rocket.pod_run: {data_dir: "%(dd)s", net: none}
  tasks:
    - appc.rocket.pod_run: {name: py, image: example.com/python3}
"""

ERRORS_SETUP = """
    - appc.rocket.pod_run: {name: py-user, image: example.com/python3, user: "1000", group: "1000"}
    - appc.rocket.pod_run:
        name: two
        apps:
          - {name: first, image: example.com/python3}
          - {name: second, image: example.com/python3}
    - appc.rocket.pod_run: {name: done, image: example.com/python3, exec: [/bin/true], state: exited}
"""

INVENTORY = """
all:
  vars:
    ansible_connection: appc.rocket.pod
    ansible_python_interpreter: /usr/bin/python3
    ansible_rocket_data_dir: "%(dd)s"
  hosts:
    py:
    py-user:
    py-as-app: {ansible_host: py, ansible_rocket_user: app}
    py-user-as-root: {ansible_host: py-user, ansible_rocket_user: root}
    two:
    two-second: {ansible_host: two, ansible_rocket_app: second}
    done:
    nosuch:
"""

PLAY = """
- hosts: py
  gather_facts: true
  vars:
    greeting: hello from the controller
  tasks:
    - name: facts come from inside the pod
      ansible.builtin.assert:
        that:
          - ansible_distribution == "Debian"
          - ansible_distribution_release == "bookworm"
          - ansible_user_id == "root"
          - ansible_python.version.major == 3
          - ansible_env.AC_APP_NAME == "python3"

    - name: a directory for the app
      ansible.builtin.file: {path: /srv/app, state: directory, owner: app, group: app, mode: "0750"}

    - name: a template
      ansible.builtin.template: {src: "%(dir)s/app.conf.j2", dest: /srv/app/app.conf, owner: app, mode: "0640"}

    - name: a copy of content
      ansible.builtin.copy: {content: "secret\\n", dest: /srv/app/data, owner: app, group: app, mode: "0600"}

    - name: a copy of a binary file from the controller
      ansible.builtin.copy: {src: "%(dir)s/blob.bin", dest: /srv/app/blob.bin, mode: "0644"}

    - name: who am I after becoming app
      ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
      become_user: app
      register: as_app
      changed_when: false

    - name: who am I after becoming root
      ansible.builtin.command: id -un
      become: true
      become_method: ansible.builtin.su
      become_user: root
      register: as_root
      changed_when: false

    - name: files made as app belong to app
      ansible.builtin.copy: {content: "mine\\n", dest: /home/app/notes, mode: "0644"}
      become: true
      become_method: ansible.builtin.su
      become_user: app

    - name: a directory made as app
      ansible.builtin.file: {path: /home/app/made, state: directory, mode: "0700"}
      become: true
      become_method: ansible.builtin.su
      become_user: app

    - name: a command that changes something, once
      ansible.builtin.command:
        cmd: sh -c 'echo ran >> /srv/app/ran'
        creates: /srv/app/ran

    - name: fetch the rendered template back
      ansible.builtin.fetch: {src: /srv/app/app.conf, dest: "%(dir)s/fetched/", flat: false}

    - ansible.builtin.assert:
        that:
          - as_app.stdout == "app"
          - as_root.stdout == "root"
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A data directory holding the python3 image (built from Debian packages, cached)."""
    path, image_id = python_image.build()
    d = str(tmp_path_factory.mktemp("conn") / "rocket")
    with Store(d) as s:
        s.import_file(path)
    return d


def _playbook(play, inventory, *args, extra_env=None):
    e = env()
    e.pop("ANSIBLE_PYTHON_INTERPRETER", None)  # the pods' is set in the inventory
    e.update(extra_env or {})
    return subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, play] + list(args), env=e,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)


def _local(play_text, tmp_path):
    path = tmp_path / "setup.yml"
    path.write_text(play_text)
    p = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(path)],
                       env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                       check=False)
    assert p.returncode == 0, p.stdout


@pytest.fixture
def pods(store, tmp_path):
    """Start pods in the store; remove every pod afterwards (their keepers are not our children)."""
    def start(extra=""):
        _local(SETUP % {"dd": store} + extra, tmp_path)
        inv = tmp_path / "inventory.yml"
        inv.write_text(INVENTORY % {"dd": store})
        return str(inv)
    yield start
    dd = DataDir(store)
    if podmod.list_pods(dd):
        tasks = "".join("    - appc.rocket.pod_run: {uuid: %s, state: absent, data_dir: \"%s\"}\n" % (p.uuid, store)
                        for p in podmod.list_pods(dd))
        _local("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + tasks, tmp_path)


def _in_pod(store, argv):
    pod = podmod.find_by_name(DataDir(store), "py")
    rc, out, err = enter(pod, None, argv)
    assert rc == 0, err
    return out.decode()


def test_modules_run_inside_the_pod(pods, store, tmp_path):
    inv = pods()
    (tmp_path / "app.conf.j2").write_text("greeting={{ greeting }}\ndistribution={{ ansible_distribution }}\n")
    blob = os.urandom(300 * 1024)
    (tmp_path / "blob.bin").write_bytes(blob)
    play = tmp_path / "play.yml"
    play.write_text(PLAY % {"dir": tmp_path})

    p = _playbook(str(play), inv, "--limit", "py")
    assert p.returncode == 0, p.stdout
    assert "py                         : ok=13   changed=8 " in p.stdout, p.stdout

    # What the tasks did is inside the pod, with the owners and modes asked for.
    assert _in_pod(store, ["stat", "-c", "%U %G %a", "/srv/app", "/srv/app/app.conf", "/srv/app/data",
                           "/home/app/notes", "/home/app/made"]).split("\n")[:5] == [
        "app app 750", "app root 640", "app app 600", "app app 644", "app app 700"]
    assert _in_pod(store, ["cat", "/srv/app/app.conf"]) == "greeting=hello from the controller\ndistribution=Debian\n"
    assert _in_pod(store, ["sha256sum", "/srv/app/blob.bin"]).split()[0] == __import__("hashlib").sha256(blob).hexdigest()
    fetched = tmp_path / "fetched" / "py" / "srv" / "app" / "app.conf"
    assert fetched.read_text().startswith("greeting=hello from the controller\n")

    # Again, pipelined this time: nothing changes.
    p = _playbook(str(play), inv, "--limit", "py", extra_env={"ANSIBLE_PIPELINING": "1"})
    assert p.returncode == 0, p.stdout
    assert "py                         : ok=13   changed=0 " in p.stdout, p.stdout


PROBE = r"""
import json, os, sys
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
conn = connection_loader.get("appc.rocket.pod", PlayContext(), None)
conn.set_options(direct={"remote_addr": "py", "data_dir": sys.argv[2]})
src, tag, fetched = sys.argv[3], sys.argv[4], sys.argv[5]
out = {}
rc, o, e = conn.exec_command("ln -sfn / /tmp/evil && ln -sfn ../../../../../../.. /tmp/up && mkdir -p /tmp/d")
out["links"] = rc
for dest in ("/tmp/evil/" + tag, "/tmp/up/tmp/" + tag, "/proc/1/root/" + tag, "/tmp/d/" + tag):
    try:
        conn.put_file(src, dest)
        out[dest] = "written"
    except Exception as ex:
        out[dest] = "%s: %s" % (type(ex).__name__, ex)
conn.fetch_file("/tmp/evil/etc/hostname", fetched)
try:
    conn.fetch_file("/tmp/evil/nonexistent-" + tag, fetched + ".missing")
except Exception as ex:
    out["missing"] = "%s: %s" % (type(ex).__name__, ex)
rc, o, e = conn.exec_command("cat /%s /tmp/%s /tmp/d/%s" % (tag, tag, tag))
out["inside"] = o.decode()
print(json.dumps(out))
"""


def test_files_never_leave_the_pods_root(pods, store, tmp_path):
    """Links in the pod (absolute, climbing, /proc/1/root) resolve inside it, or fail."""
    pods()
    tag = "rocket-escape-%d" % os.getpid()
    src = tmp_path / "payload"
    src.write_text("payload\n")
    fetched = str(tmp_path / "fetched-hostname")
    p = subprocess.run([sys.executable, "-c", PROBE, COLLECTIONS, store,
                        str(src), tag, fetched], env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    try:
        assert out["links"] == 0
        assert out["/tmp/evil/" + tag] == "written" and out["/tmp/up/tmp/" + tag] == "written"
        assert out["/proc/1/root/" + tag].startswith("AnsibleError") and "Permission denied" in out["/proc/1/root/" + tag]
        assert out["inside"] == "payload\n" * 3
        assert out["missing"].startswith("AnsibleError") and "No such file" in out["missing"]
        assert not os.path.exists(fetched + ".missing")
        with open(fetched) as f:
            assert f.read() == "pod\n"  # the image's /etc/hostname, not the host's
        for host_path in ("/" + tag, "/tmp/" + tag):
            assert not os.path.exists(host_path), host_path
    finally:
        for host_path in ("/" + tag, "/tmp/" + tag):
            if os.path.exists(host_path):
                os.unlink(host_path)


def test_clear_errors_and_several_apps(pods, store, tmp_path):
    inv = pods(ERRORS_SETUP)
    e = env()
    e.pop("ANSIBLE_PYTHON_INTERPRETER", None)
    p = subprocess.run([os.path.join(BIN, "ansible"), "-i", inv, "all", "-m", "raw", "-a", "echo app=$AC_APP_NAME"],
                       env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    out = p.stdout
    assert p.returncode != 0
    assert "no pod named nosuch and none with that UUID in %s (named pods: done, py, py-user, two)" % store in out, out
    assert "pod done (" in out and ") is exited, not running; start it with appc.rocket.pod_run" in out, out
    assert "pod two has apps first, second: set ansible_rocket_app to one of them" in out, out
    assert "two-second | CHANGED | rc=0 >>\napp=second" in out, out
    assert "py-user | CHANGED | rc=0 >>\napp=python3" in out, out
    # A UUID prefix works as the host too.
    uuid = podmod.find_by_name(DataDir(store), "py").uuid
    p = subprocess.run([os.path.join(BIN, "ansible"), "-i", inv, "py", "-e", "ansible_host=%s" % uuid[:8],
                        "-m", "raw", "-a", "echo app=$AC_APP_NAME"],
                       env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert p.returncode == 0 and "app=python3" in p.stdout, p.stdout

    # An unprivileged app cannot become root: no-new-privileges keeps setuid su from elevating.
    p = subprocess.run([os.path.join(BIN, "ansible"), "-i", inv, "py-user", "-m", "raw", "-a", "touch /became-root",
                        "-b", "--become-method", "su"],
                       env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert p.returncode != 0 and "su: must be suid to work properly" in p.stdout, p.stdout
    py_user = podmod.find_by_name(DataDir(store), "py-user")
    rc, o, dummy = enter(py_user, None, ["/bin/sh", "-c", "id -un; ls /became-root"])
    assert rc != 0 and o == b"app\n"

    # ansible_rocket_user: a root app's commands (a module too, its files in the user's home) run
    # as that user without capabilities; an app running as a user cannot become root that way either.
    p = subprocess.run([os.path.join(BIN, "ansible"), "-i", inv, "py-as-app", "-m", "ansible.builtin.command",
                        "-a", "sh -c 'id -un; grep CapEff /proc/self/status; echo HOME=$HOME'"],
                       env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert p.returncode == 0 and "app\nCapEff:\t0000000000000000\nHOME=/home/app" in p.stdout, p.stdout
    p = subprocess.run([os.path.join(BIN, "ansible"), "-i", inv, "py-user-as-root", "-m", "raw", "-a", "touch /as-root"],
                       env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert p.returncode != 0 and "user root (the app's own privileges decide): Operation not permitted" in p.stdout, p.stdout
    rc, o, dummy = enter(py_user, None, ["/bin/sh", "-c", "ls /as-root"])
    assert rc != 0


FETCH_PROBE = r"""
import json, os, sys, time
from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder
_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()
from ansible.playbook.play_context import PlayContext
from ansible.plugins.loader import connection_loader
conn = connection_loader.get("appc.rocket.pod", PlayContext(), None)
conn.set_options(direct={"remote_addr": "py", "data_dir": sys.argv[2], "fetch_max_size": 1 << 20})
out_dir = sys.argv[3]
out = {}
rc, o, e = conn.exec_command("head -c 2097152 /dev/zero > /tmp/big && head -c 1048576 /dev/zero > /tmp/fits "
                             "&& mkfifo /tmp/fifo")
out["setup"] = rc
for name in ("/tmp/big", "/tmp/fits", "/tmp/fifo", "/dev/zero"):
    start = time.monotonic()
    try:
        conn.fetch_file(name, os.path.join(out_dir, os.path.basename(name)))
        out[name] = "fetched"
    except Exception as ex:
        out[name] = "%s: %s" % (type(ex).__name__, ex)
    out[name + ".seconds"] = time.monotonic() - start
print(json.dumps(out))
"""


def test_fetch_file_takes_regular_files_up_to_fetch_max_size(pods, store, tmp_path):
    """A pod cannot fill the controller's disk or hang the task through fetch: a file above
    fetch_max_size, a FIFO and a device are refused with errors naming them, nothing kept."""
    pods()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    p = subprocess.run([sys.executable, "-c", FETCH_PROBE, COLLECTIONS, store, str(out_dir)],
                       env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    out = json.loads(p.stdout.strip().splitlines()[-1])
    assert out["setup"] == 0, out
    assert out["/tmp/big"].startswith("AnsibleError") and "/tmp/big in pod py" in out["/tmp/big"] \
        and "larger than fetch_max_size (1048576 bytes)" in out["/tmp/big"], out
    assert out["/tmp/fits"] == "fetched" and (out_dir / "fits").stat().st_size == 1 << 20, out
    for name in ("/tmp/fifo", "/dev/zero"):
        assert "%s: not a regular file" % name in out[name] and out[name + ".seconds"] < 30, out
    assert sorted(os.listdir(out_dir)) == ["fits"]


def test_the_app_user_lookup_takes_no_fifo_or_device_for_etc_passwd(pods, store):
    """The connection names an app's user from the app's own /etc/passwd: a FIFO or a device
    there must neither hang the lookup nor be read (the uid is used instead)."""
    pods(ERRORS_SETUP)
    pod = podmod.find_by_name(DataDir(store), "py-user")
    app = pod.manifest()["apps"][0]["name"]
    pid = int(open(pod.file("apps", app, "pid")).read())
    passwd = "/proc/%d/root/etc/passwd" % pid
    for make in (lambda: os.mkfifo(passwd), lambda: os.mknod(passwd, 0o644 | 0o020000, os.makedev(1, 5))):
        os.unlink(passwd)
        make()
        p = subprocess.run([sys.executable, "-c", "import sys; sys.path[:0] = [sys.argv[1]]\n"
                            "from ansible.utils.collection_loader._collection_finder import _AnsibleCollectionFinder\n"
                            "_AnsibleCollectionFinder(paths=[sys.argv[1]])._install()\n"
                            "from ansible_collections.appc.rocket.plugins.connection import pod as c\n"
                            "from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod\n"
                            "from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir\n"
                            "print(c._app_user(podmod.find_by_name(DataDir(sys.argv[2]), 'py-user'), sys.argv[3]))",
                            COLLECTIONS, store, app], env=env(), capture_output=True, text=True, timeout=60, check=False)
        assert p.returncode == 0 and p.stdout.strip() == "1000", p.stdout + p.stderr
