#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_volume_info
short_description: List and inspect named volumes
description:
  - Reports the named volumes of the data directory (M(appc.rocket.pod_volume)), each with its
    data directory, mode, owner, labels and the pods that use it.
  - Changes nothing; a data directory that does not exist yet has no volumes.
version_added: "0.2.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description: Only this volume (none is returned when it does not exist).
    type: str
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux; reading the data directory needs its owner (root).
seealso:
  - module: appc.rocket.pod_volume
"""

EXAMPLES = r"""
- name: Every named volume
  appc.rocket.pod_volume_info:
  register: vols

- name: Which pods use pgdata
  appc.rocket.pod_volume_info:
    name: pgdata
  register: pgdata
"""

RETURN = r"""
volumes:
  description: The volumes (with O(name), that one or none), sorted by name.
  returned: always
  type: list
  elements: dict
  contains:
    name:
      description: The volume's name.
      type: str
    path:
      description: Its data directory on the host, what pods mount.
      type: str
    mode:
      description: Octal mode of the data directory.
      type: str
    uid:
      description: Owner of the data directory, as pods see it.
      type: int
    gid:
      description: Group of the data directory, as pods see it.
      type: int
    labels:
      description: The volume's labels.
      type: dict
    created:
      description: When it was created (seconds since the epoch).
      type: float
    used_by:
      description: UUIDs of the pods that mount it (any state, until M(appc.rocket.pod_gc) removes them).
      type: list
      elements: str
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, data_dir, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import volumes


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(argument_spec=dict(name=dict(type="str"), **DATA_DIR_OPTION), supports_check_mode=True)


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, report)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def report(module):
    dd = data_dir(module)
    names = [module.params["name"]] if module.params["name"] else volumes.list_volumes(dd)
    found = [volumes.record(dd, n) for n in names]
    return dict(changed=False, volumes=[v for v in found if v is not None])


if __name__ == "__main__":
    main()
