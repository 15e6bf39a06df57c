"""module_defaults with the action group sets data_dir once: the documented example, run for real."""
import json
import os

import yaml

from tests.support import pods
from tests.support import ROOT
from tests.support.ansible_run import module, playbook
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

EXAMPLE = os.path.join(ROOT, "docs", "examples", "module_defaults.yml")

# The example, then a play that writes out everything its tasks registered.
_WRAPPER = """
- name: The example
  ansible.builtin.import_playbook: %(example)s
- name: Save the results
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Write them
      ansible.builtin.copy:
        content: "{{ dict(names | zip(names | map('extract', vars))) | to_json }}"
        dest: %(out)s
        mode: "0600"
      vars:
        names: %(names)s
"""
REGISTERED = ["rocket_image", "rocket_images", "rocket_job", "rocket_prepared", "rocket_pod", "rocket_enter",
              "rocket_pods", "rocket_removed", "rocket_gc", "rocket_elsewhere"]


def test_every_module_with_a_data_dir_is_in_the_action_group():
    """The group is what module_defaults sets data_dir for: every module that takes data_dir is
    in it, and no other (registry_login, which writes auth files, would refuse the option)."""
    with open(os.path.join(ROOT, "meta", "runtime.yml")) as f:
        group = yaml.safe_load(f)["action_groups"]["rocket"]
    folder = os.path.join(ROOT, "plugins", "modules")
    modules = []
    for n in sorted(os.listdir(folder)):
        if n.endswith(".py"):
            with open(os.path.join(folder, n)) as f:
                if "- appc.rocket.data_dir\n" in f.read():  # the data_dir doc fragment
                    modules.append(n[:-3])
    assert "registry_login" not in modules and len(modules) >= 13
    assert sorted(group) == modules


def test_module_defaults_sets_data_dir_once(tmp_path):
    dd = str(tmp_path / "rocket")
    other = str(tmp_path / "other")
    out = str(tmp_path / "results.json")
    wrapper = tmp_path / "play.yml"
    wrapper.write_text(_WRAPPER % {"example": EXAMPLE, "out": out, "names": json.dumps(REGISTERED)})
    image = "example.com/defaults-" + os.urandom(4).hex()
    aci = pods.busybox_aci(tmp_path, name=image)
    try:
        extra = {"rocket_data_dir": dd, "rocket_other_data_dir": other, "hello_aci": aci, "hello_image": image}
        p = playbook(str(wrapper), "-e", json.dumps(extra))
        assert p.returncode == 0, p.stdout
        with open(out) as f:
            r = json.load(f)
    finally:
        for pod in module("pod_info", {"data_dir": dd})["pods"]:
            module("pod_run", {"uuid": pod["uuid"], "state": "absent", "data_dir": dd})
    # No task but the last names a data_dir, and the image's name is new: finding it, running it,
    # entering its pod and collecting that pod can only have happened in the play's data_dir.
    uuids = {r["rocket_job"]["pod"]["uuid"], r["rocket_pod"]["pod"]["uuid"]}
    assert r["rocket_image"]["changed"] is True and r["rocket_image"]["image"]["name"] == image
    assert image in [i["name"] for i in r["rocket_images"]["images"]] and r["rocket_images"]["problems"] == []
    assert "hello from busybox" in r["rocket_job"]["pod"]["apps"][0]["log"]
    assert r["rocket_prepared"]["pod"]["state"] == "prepared"
    assert r["rocket_pod"]["pod"]["state"] == "running"
    assert r["rocket_enter"]["rc"] == 0 and r["rocket_enter"]["stdout"].strip()
    assert {p["uuid"] for p in r["rocket_pods"]["pods"]} >= uuids
    assert r["rocket_removed"]["changed"] is True and r["rocket_job"]["pod"]["uuid"] in r["rocket_gc"]["removed"]
    with Store(dd, create=False) as s:
        assert [i["name"] for i in s.list(name=image)] == [image]
    # The task that names its own data_dir looked there (and, being an info module, created nothing).
    assert r["rocket_elsewhere"]["images"] == [] and not os.path.exists(other)
