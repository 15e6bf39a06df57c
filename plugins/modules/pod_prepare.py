#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_prepare
short_description: Keep an App Container pod prepared (rkt prepare, idempotent)
description:
  - Converges the pod of a name to a prepared pod with the declared apps, volumes and
    options - its pod manifest written, its images' trees mounted on demand - ready for
    M(appc.rocket.pod_run) to start.
  - A pod of that name that already has the declared spec (running or not) is left alone;
    one with a different spec is replaced, and RV(reasons) says which fields differ.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
  - appc.rocket.pod_options
options:
  state:
    description: V(present) keeps the pod prepared; V(absent) removes it (stopping it if it runs).
    type: str
    choices: [present, absent]
    default: present
  recreate:
    description: Replace the pod even when nothing changed.
    type: bool
    default: false
  stop_timeout:
    description: Seconds between SIGTERM and SIGKILL when a running pod is replaced or removed.
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    details: Compares and reports; prepares and removes nothing.
  diff_mode:
    support: full
    details: Shows only the fields that differ (secret values redacted).
  platform:
    platforms: posix
    details: Linux, as root.
seealso:
  - module: appc.rocket.pod_run
"""

EXAMPLES = r"""
- name: Prepare a pod to start later
  appc.rocket.pod_prepare:
    name: batch
    image: example.com/worker:1.0
    exec_append: [--queue, nightly]
  register: prepared

- name: Start it
  appc.rocket.pod_run:
    uuid: "{{ prepared.pod.uuid }}"
    state: exited
"""

RETURN = r"""
pod:
  description: The pod (empty in check mode when it would be created, and after removal).
  returned: always
  type: dict
  contains:
    uuid:
      description: The pod's UUID.
      type: str
    name:
      description: The pod's name.
      type: str
    state:
      description: The pod's state.
      type: str
    apps:
      description: The pod's apps with their image IDs.
      type: list
      elements: dict
action:
  description: C(none), C(create), C(replace) or C(remove).
  returned: always
  type: str
reasons:
  description: Why the action was needed.
  returned: always
  type: list
  elements: str
overlay_fallback:
  description: Why the image trees were copied instead of mounted with overlayfs.
  returned: when the pod was prepared without overlayfs
  type: str
stage1_update_available:
  description: The ID of a newer default stage1 that O(update_stage1) would move the pod to.
  returned: when one exists
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appc.rocket.plugins.module_utils import pod_options


def main():
    module = AnsibleModule(
        argument_spec=pod_options.argument_spec(
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            recreate={"type": "bool", "default": False},
            stop_timeout={"type": "int", "default": 10},
        ),
        mutually_exclusive=pod_options.MUTUALLY_EXCLUSIVE,
        required_one_of=[("name", "uuid", "image", "apps")],
        supports_check_mode=True,
    )
    from ansible_collections.appc.rocket.plugins.module_utils.pod_runner import converge_task

    converge_task(module, mode="prepare")


if __name__ == "__main__":
    main()
