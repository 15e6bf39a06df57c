"""Documentation that Ansible cannot take from a fragment, and tools/module_docs.py writes:
pod_set documents each item's options as pod_run and cas_image document them, and pod_run
and pod_prepare document the pod they return as pod_info documents each pod. This test
fails when a source changes and the copies do not: run the tool.
"""
import json
import subprocess
import sys

import pytest

from tests.support.ansible_run import env

from ansible_collections.appc.rocket.plugins.module_utils import image_task, pod_set

KEYS = ("type", "elements", "choices", "default", "required")


def doc(name, part="doc"):
    p = subprocess.run([sys.executable, "-m", "ansible.cli.doc", "-j", "appc.rocket." + name],
                       env=env(), capture_output=True, text=True, timeout=120, check=True)
    out = json.loads(p.stdout)["appc.rocket." + name]
    return out["doc"]["options"] if part == "doc" else out["return"]


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


def fields(contains):
    return {k: dict({key: v.get(key) for key in ("description", "type", "elements", "returned")},
                    sub=fields(v.get("contains") or {}))
            for k, v in contains.items()}


@pytest.mark.parametrize("name", ["pod_run", "pod_prepare"])
def test_the_returned_pod_is_documented_as_pod_info_documents_each_pod(name):
    want = json.loads(json.dumps(fields(doc("pod_info", "return")["pods"]["contains"]))
                      .replace("(O(log_lines) lines)", "(20 lines)"))
    assert fields(doc(name, "return")["pod"]["contains"]) == want
