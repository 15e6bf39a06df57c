"""`molecule test -s pod-instances`: pods as Molecule instances, a role tested inside them."""
import os
import re
import subprocess
import sys

from tests.support import python_image
from tests.support import ROOT
from tests.support.ansible_run import BIN, env
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import enter
from tests.support.fleet import running


def _remove_pods(data_dir, tmp_path):
    """Whatever a failed run left: the pods' keepers are not our children, remove them by pod."""
    pods = podmod.list_pods(DataDir(data_dir)) if os.path.isdir(data_dir) else []
    if not pods:
        return
    play = tmp_path / "cleanup.yml"
    play.write_text("- hosts: localhost\n  gather_facts: false\n  tasks:\n" + "".join(
        "    - appc.rocket.pod_run: {uuid: %s, state: absent, data_dir: \"%s\"}\n" % (p.uuid, data_dir)
        for p in pods))
    subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)],
                   env=env(), capture_output=True, timeout=300, check=False)


def test_molecule_pod_instances(tmp_path):
    image, dummy_id = python_image.build()
    data_dir = str(tmp_path / "rocket")
    e = env()
    e.update({"PATH": BIN + os.pathsep + e.get("PATH", ""), "ROCKET_DATA_DIR": data_dir,
              "ROCKET_PYTHON_IMAGE": image, "NO_COLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    e.pop("PY_COLORS", None)
    try:
        p = subprocess.run([os.path.join(BIN, "molecule"), "test", "-s", "pod-instances"], cwd=ROOT, env=e,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=560, check=False)
        out = p.stdout
        assert p.returncode == 0, out[-20000:]
        for step in ("create", "converge", "idempotence", "verify", "destroy"):
            assert re.search(r"pod-instances\W+%s\W+Executed: Successful" % step, out), (step, out[-20000:])
        # The role ran in both pods, changed things once, and nothing the second time.
        assert re.search(r"web1\s+: ok=\d+\s+changed=5 ", out) and re.search(r"web2\s+: ok=\d+\s+changed=5 ", out), out
        assert len(re.findall(r"web[12]\s+: ok=\d+\s+changed=0 .*failed=0", out)) >= 4, out
        # destroy removed the pods.
        assert [p.uuid for p in podmod.list_pods(DataDir(data_dir)) if p.state() == "running"] == []
    finally:
        _remove_pods(data_dir, tmp_path)


def test_molecule_create_refuses_bad_platforms_before_starting_anything(tmp_path):
    """The shipped create playbook names the platform and the missing key, and starts no pod."""
    import json

    data_dir = str(tmp_path / "rocket")
    config = tmp_path / "instance_config.yml"
    cases = [([{"name": "web1"}], "platform web1: needs a name"),
             ([{"name": "Bad_Name", "image": "/x.aci"}], "platform Bad_Name: needs a name"),
             ([{"name": "web1", "image": "example.com/not-stored"}], "example.com/not-stored")]
    for platforms, expect in cases:
        extra = tmp_path / "vars.json"
        extra.write_text(json.dumps({"molecule_yml": {"platforms": platforms}, "molecule_instance_config": str(config),
                                     "rocket_molecule_data_dir": data_dir}))
        p = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-e", "@%s" % extra,
                            "appc.rocket.molecule_create"], env=env(), capture_output=True, text=True, timeout=300,
                           check=False)
        assert p.returncode != 0 and expect in p.stdout + p.stderr, (platforms, p.stdout[-3000:], p.stderr[-3000:])
    assert not config.exists()
    assert not os.path.isdir(os.path.join(data_dir, "pods")) or podmod.list_pods(DataDir(data_dir)) == []


CONVERGE = """
- hosts: remote_pods
  gather_facts: false
  tasks:
    - ansible.builtin.copy: {content: "converged on {{ ansible_rocket_pod_host }}\\n", dest: /etc/molecule-remote, mode: "0644"}
"""


def test_molecule_playbooks_on_a_remote_pod_host(fleet, tmp_path):
    """create -> converge -> destroy with the pod on fleet host alpha, driven by ansible-playbook with the
    variables Molecule passes (molecule_yml, molecule_instance_config) and, for converge, the inventory
    Molecule's delegated driver builds from the instance config."""
    import json
    import yaml

    from tests.support.fleet import HOSTS, recap

    image, dummy_id = python_image.build()
    data_dir = fleet.data_dir("alpha")
    config = tmp_path / "instance_config.yml"
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps({"molecule_yml": {"platforms": [
        {"name": "mol-remote", "image": image, "pod_host": "alpha", "data_dir": data_dir}]},
        "molecule_instance_config": str(config)}))
    inv = fleet.write_inventory(tmp_path / "fleet.json")
    e = fleet.env()

    def play(inventory, what, extra_args=()):
        p = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inventory, what] + list(extra_args),
                           env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                           check=False)
        assert p.returncode == 0, "%s:\n%s" % (what, p.stdout[-6000:])
        return p.stdout

    play(inv, "appc.rocket.molecule_create", ["-e", "@%s" % extra])
    assert list(running(data_dir)) == ["mol-remote"]
    assert running(fleet.data_dir("beta")) == {} and not os.path.exists(os.path.join(str(tmp_path), "rocket"))
    instances = yaml.safe_load(config.read_text())
    assert instances == [{"instance": "mol-remote", "address": HOSTS["alpha"], "user": "root", "port": 22,
                          "identity_file": fleet.key, "connection": "appc.rocket.pod"}], instances

    # As Molecule's delegated driver maps an instance config into host variables.
    i = instances[0]
    hosts = {i["instance"]: {"ansible_host": i["address"], "ansible_user": i["user"], "ansible_port": i["port"],
                             "ansible_private_key_file": i["identity_file"], "ansible_connection": i["connection"]}}
    pods = tmp_path / "molecule_inventory.json"
    pods.write_text(json.dumps({"remote_pods": {"hosts": hosts, "vars": {
        "ansible_rocket_pod_host": "{{ ansible_host }}", "ansible_rocket_data_dir": data_dir,
        "ansible_python_interpreter": "/usr/bin/python3"}}}))
    converge = tmp_path / "converge.yml"
    converge.write_text(CONVERGE)
    first = play(str(pods), str(converge))
    assert recap(first, ["mol-remote"])["mol-remote"]["changed"] == 1, first
    second = play(str(pods), str(converge))
    assert recap(second, ["mol-remote"])["mol-remote"]["changed"] == 0, second
    pod = podmod.find_by_name(DataDir(data_dir), "mol-remote")
    rc, out, err = enter(pod, None, ["cat", "/etc/molecule-remote"])
    assert rc == 0 and out.decode() == "converged on %s\n" % HOSTS["alpha"], (rc, out, err)

    play(inv, "appc.rocket.molecule_destroy", ["-e", "@%s" % extra])
    assert running(data_dir) == {}
    assert yaml.safe_load(config.read_text()) == []


def test_molecule_test_on_a_fleet_host(fleet, tmp_path):
    """The real `molecule test -s pod-remote`: its instance is a pod on fleet host alpha."""
    from tests.support.fleet import HOSTS

    image, dummy_id = python_image.build()
    data_dir = fleet.data_dir("alpha")
    e = fleet.env()
    e.update({"PATH": BIN + os.pathsep + e.get("PATH", ""), "ROCKET_POD_HOST": HOSTS["alpha"],
              "ROCKET_POD_HOST_KEY": fleet.key, "ROCKET_POD_DATA_DIR": data_dir, "ROCKET_POD_HOST_PYTHON": sys.executable,
              "ROCKET_PYTHON_IMAGE": image, "NO_COLOR": "1", "ANSIBLE_FORCE_COLOR": "0"})
    e.pop("PY_COLORS", None)
    p = subprocess.run([os.path.join(BIN, "molecule"), "test", "-s", "pod-remote"], cwd=ROOT, env=e,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=400, check=False)
    out = p.stdout
    assert p.returncode == 0, out[-20000:]
    for step in ("create", "converge", "idempotence", "verify", "destroy"):
        assert re.search(r"pod-remote\W+%s\W+Executed: Successful" % step, out), (step, out[-20000:])
    assert re.search(r"remote1\s+: ok=1\s+changed=1 ", out) and re.search(r"remote1\s+: ok=1\s+changed=0 ", out), out
    assert running(data_dir) == {} and running(fleet.data_dir("beta")) == {}
