#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cas_image_info
short_description: List the images in the appc.rocket image store, and check the store
description:
  - Lists images with their IDs, names, labels, sizes and import times, optionally filtered.
  - With O(verify), runs the store check - every blob is re-hashed, every rendered tree
    compared with its digest, and files left by interrupted imports or removals are reported.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  id:
    description: Only images whose ID starts with this prefix (C(sha512-) and at least two hex digits).
    type: str
  name:
    description: Only images with this name (optionally C(name:version,label=value) to filter by labels too).
    type: str
  labels:
    description: Only images carrying all these labels.
    type: dict
    default: {}
  manifest:
    description: Include each image's manifest.
    type: bool
    default: false
  verify:
    description: Run the store check and return its findings in RV(problems).
    type: bool
    default: false
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux; reading the store needs the data directory's owner (root).
notes:
  - A data directory that does not exist yet is reported as an empty store; it is not created.
seealso:
  - module: appc.rocket.cas_image
"""

EXAMPLES = r"""
- name: List every image
  appc.rocket.cas_image_info:
  register: store

- name: Find the images of one name, with manifests
  appc.rocket.cas_image_info:
    name: example.com/hello
    manifest: true

- name: Check the store
  appc.rocket.cas_image_info:
    verify: true
  register: check
  failed_when: check.problems | length > 0
"""

RETURN = r"""
images:
  description: The matching images, sorted by name then import time; empty when the data directory does not exist.
  returned: always
  type: list
  elements: dict
  contains:
    id:
      description: The image ID.
      type: str
    name:
      description: The image name.
      type: str
    labels:
      description: The image labels.
      type: dict
    size:
      description: Size of the uncompressed archive in bytes.
      type: int
    import_time:
      description: When the image was imported (seconds since the epoch).
      type: float
    last_used:
      description: When a pod last used the image (seconds since the epoch); null if none has.
      type: float
    source:
      description: Where the image was imported from (a path, a URL, or C(build:) and the directory).
      type: str
    manifest:
      description: The image manifest.
      returned: when O(manifest=true)
      type: dict
problems:
  description: What the store check found; each entry has C(kind), C(what) and C(problem).
  returned: when O(verify=true)
  type: list
  elements: dict
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, open_store, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import schema

KEYS = ("id", "name", "labels", "size", "import_time", "last_used", "source")


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(
            id=dict(type="str"),
            name=dict(type="str"),
            labels=dict(type="dict", default={}),
            manifest=dict(type="bool", default=False),
            verify=dict(type="bool", default=False),
            **DATA_DIR_OPTION
        ),
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, listing)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def listing(module):
    p = module.params
    result = dict(changed=False, images=[])
    store = open_store(p["data_dir"], create=False)
    if store is None:
        if p["verify"]:
            result["problems"] = []
        return result
    name, labels = (None, {})
    if p["name"]:
        name, labels = schema.parse_image_reference(p["name"])
    labels.update({str(k): str(v) for k, v in p["labels"].items()})
    for rec in store.list(prefix=p["id"], name=name, labels=labels):
        item = {k: rec.get(k) for k in KEYS}
        if p["manifest"]:
            item["manifest"] = store.manifest(rec["id"])
        result["images"].append(item)
    if p["verify"]:
        from ansible_collections.appc.rocket.plugins.module_utils.stage0 import store_gc

        result["problems"] = store_gc.check(store, repair=False)
    return result


if __name__ == "__main__":
    main()
