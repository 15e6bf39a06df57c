"""pod_set documents each item's options as pod_run and cas_image document them.

Ansible cannot take suboption documentation from a fragment, so pod_set's DOCUMENTATION
repeats them; this test fails when one of the three modules changes and pod_set does not.
"""
import json
import subprocess
import sys

import pytest

from ansible_run import env

from ansible_collections.appc.rocket.plugins.module_utils import image_task, pod_set

KEYS = ("type", "elements", "choices", "default", "required")


def doc(name):
    p = subprocess.run([sys.executable, "-m", "ansible.cli.doc", "-j", "appc.rocket." + name],
                       env=env(), capture_output=True, text=True, timeout=120, check=True)
    return json.loads(p.stdout)["appc.rocket." + name]["doc"]["options"]


def shape(options):
    return {k: dict({key: v.get(key) for key in KEYS}, sub=shape(v.get("suboptions") or {}))
            for k, v in options.items()}


@pytest.fixture(scope="module")
def set_doc():
    return doc("pod_set")


def test_pods_items_are_documented_as_pod_run_options(set_doc):
    want = shape(doc("pod_run"))
    del want["data_dir"], want["uuid"]
    want["name"]["required"] = True
    assert shape(set_doc["pods"]["suboptions"]) == want
    assert set(pod_set.pod_item_spec()) == set(want)


def test_images_items_are_documented_as_cas_image_options(set_doc):
    want = shape(doc("cas_image"))
    del want["data_dir"]
    assert shape(set_doc["images"]["suboptions"]) == want
    assert set(image_task.IMAGE_OPTIONS) == set(want)
