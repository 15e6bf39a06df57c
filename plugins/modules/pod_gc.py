#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_gc
short_description: Garbage-collect exited pods and unused images
description:
  - rkt's mark and sweep - exited pods are marked, and removed after a grace period (their
    stage1 undoes what it set up outside the pod directory, every mount is undone); aborted
    and expired prepared pods are removed.
  - With O(images), images and rendered trees that no pod uses and nobody used for
    O(image_grace) seconds are removed too.
  - Safe to run while pods run and while another gc runs.
  - Stops the data directory's metadata service when it serves no pod any more (the next
    pod that asks for it starts it again).
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  grace:
    description: Seconds an exited pod is kept before removal.
    type: int
    default: 1800
  prepared_expiry:
    description: Seconds after which a prepared pod that was never started is removed.
    type: int
    default: 86400
  images:
    description: Also remove unused images and trees.
    type: bool
    default: false
  image_grace:
    description: Seconds an image must have gone unused before O(images) removes it.
    type: int
    default: 86400
  volumes:
    description:
      - Also remove the named volumes (M(appc.rocket.pod_volume)) that no pod uses, after the
        pods are collected. A volume that a pod in any state still mounts is never removed.
      - Without it (the default) no named volume is ever removed by this module.
    type: bool
    default: false
    version_added: "0.2.0"
attributes:
  check_mode:
    support: full
    details: Reports what would be marked and removed (RV(marked), RV(removed), ...); removes nothing.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux, as root.
"""

EXAMPLES = r"""
- name: Collect now
  appc.rocket.pod_gc:
    grace: 0

- name: Nightly, images too
  appc.rocket.pod_gc:
    images: true

- name: Named volumes no pod uses too
  appc.rocket.pod_gc:
    volumes: true
"""

RETURN = r"""
marked:
  description: UUIDs of the exited, aborted and expired prepared pods moved to garbage (in check mode, those that would be).
  returned: always
  type: list
  elements: str
removed:
  description: UUIDs of the pods removed (in check mode, those that would be).
  returned: always
  type: list
  elements: str
images_removed:
  description: IDs of the images removed.
  returned: when O(images=true) and the data directory exists
  type: list
  elements: str
trees_removed:
  description: Rendered trees removed.
  returned: when O(images=true) and the data directory exists
  type: list
  elements: str
volumes_removed:
  description: Names of the named volumes removed (in check mode, those that would be).
  returned: when O(volumes=true)
  type: list
  elements: str
blobs_removed:
  description: Digests of registry blobs (layers, configs, manifests) no image lists any more, deleted from the store.
  returned: when O(images=true) and the data directory exists
  type: list
  elements: str
metadata_service_stopped:
  description: Whether the metadata service was stopped because no pod uses it any more.
  returned: always
  type: bool
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, data_dir, open_store, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(grace=dict(type="int", default=1800), prepared_expiry=dict(type="int", default=86400),
                           images=dict(type="bool", default=False), image_grace=dict(type="int", default=86400),
                           volumes=dict(type="bool", default=False),
                           **DATA_DIR_OPTION),
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, collect)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def collect(module):
    p = module.params
    dd = data_dir(module)
    result = dict(changed=False, marked=[], removed=[], metadata_service_stopped=False)
    report = pod_gc.gc(dd, grace=p["grace"], prepared_expiry=p["prepared_expiry"], dry_run=module.check_mode)
    result.update(marked=report["marked"], removed=report["removed"],
                  metadata_service_stopped=bool(report.get("metadata_service_stopped")))
    for err in report["errors"]:
        module.warn(err)
    if p["images"]:
        store = open_store(p["data_dir"], create=False)
        if store is not None:
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import store_gc

            with store:
                img = store_gc.gc(store, grace=p["image_grace"], dry_run=module.check_mode)
            result.update(images_removed=img["images"], trees_removed=img["trees"],
                          blobs_removed=img.get("blobs", []))
    if p["volumes"] and dd.exists():
        from ansible_collections.appc.rocket.plugins.module_utils.stage0 import volumes

        result["volumes_removed"] = volumes.prune(dd, dry_run=module.check_mode)
    result["changed"] = bool(result["marked"] or result["removed"] or result.get("images_removed")
                             or result.get("blobs_removed")
                             or result.get("trees_removed") or result["metadata_service_stopped"]
                             or result.get("volumes_removed"))
    return result


if __name__ == "__main__":
    main()
