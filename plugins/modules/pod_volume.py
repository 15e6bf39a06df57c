#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_volume
short_description: Create and remove named volumes, or bring their mode, owner and labels to what they should be
description:
  - Named volumes are directories kept under C(<data_dir>/volumes/<name>/data) that outlive
    the pods that mount them (a pod volume of C(kind=named) in M(appc.rocket.pod_run),
    M(appc.rocket.pod_prepare) and M(appc.rocket.pod_set)), as C(podman volume) and
    C(docker volume) keep theirs.
  - A pod creates a volume it names on first use, with the pod volume's C(mode), C(uid) and
    C(gid); this module creates one ahead of a pod, brings the mode, owner and labels of an
    existing one to what it says, and removes volumes. M(appc.rocket.pod_volume_info) lists
    and inspects them.
  - A volume that a pod uses (a pod in any state, until M(appc.rocket.pod_gc) removes it) is
    never removed; the task fails naming the pods.
version_added: "0.2.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description:
      - The volume's name, an AC Name (lowercase letters and digits separated by single C(-)),
        at most 128 characters.
    type: str
    required: true
  state:
    description:
      - V(present) creates the volume, or brings its mode, owner and labels to the options.
      - V(absent) removes it and everything in it; refused while a pod uses it.
    type: str
    choices: [present, absent]
    default: present
  mode:
    description:
      - Octal mode of the volume's directory (what pods see at the mount point).
    type: str
    default: "0755"
  uid:
    description:
      - Owner of the volume's directory, as a pod sees it (pods with C(private_users) mount
        the volume idmapped, so the same number).
    type: int
    default: 0
  gid:
    description: Group of the volume's directory, as a pod sees it.
    type: int
    default: 0
  labels:
    description: Free-form labels kept with the volume (a difference is a change).
    type: dict
    default: {}
attributes:
  check_mode:
    support: full
    details: Reports what would change; refuses in check mode what it would refuse otherwise.
  diff_mode:
    support: full
  platform:
    platforms: posix
    details: Linux, as root.
"""

EXAMPLES = r"""
- name: A volume for the database, owned by its user
  appc.rocket.pod_volume:
    name: pgdata
    uid: 999
    gid: 999
    mode: "0700"
    labels:
      app: db

- name: The pod mounts it (created here on first use if the task above did not run)
  appc.rocket.pod_run:
    name: db
    image: example.com/postgres:16
    volumes:
      - name: pgdata
        kind: named
    mounts:
      - volume: pgdata
        path: /var/lib/postgresql/data

- name: Remove it (fails while a pod uses it)
  appc.rocket.pod_volume:
    name: pgdata
    state: absent
"""

RETURN = r"""
volume:
  description: The volume (after the task; in check mode, as it would be). Absent after O(state=absent).
  returned: when O(state=present)
  type: dict
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
      description: UUIDs of the pods that mount it.
      type: list
      elements: str
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, data_dir, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import volumes


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(name=dict(type="str", required=True),
                           state=dict(type="str", choices=["present", "absent"], default="present"),
                           mode=dict(type="str", default="0755"), uid=dict(type="int", default=0),
                           gid=dict(type="int", default=0), labels=dict(type="dict", default={}),
                           **DATA_DIR_OPTION),
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, converge)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def converge(module):
    p = module.params
    dd = data_dir(module)
    before = volumes.record(dd, p["name"])
    if p["state"] == "absent":
        changed = volumes.remove(dd, p["name"], dry_run=module.check_mode)
        return dict(changed=changed, diff={"before": before or {}, "after": {}})
    want = volumes.options(p["mode"], p["uid"], p["gid"], p["labels"])
    if before is None:
        if not module.check_mode:
            dd.ensure()
            volumes.create(dd, p["name"], **want)
        after = volumes.record(dd, p["name"]) or dict(want, name=p["name"], used_by=[], created=None,
                                                      path=volumes.data_path(dd, p["name"]))
        return dict(changed=True, volume=after, diff={"before": {}, "after": after})
    changes = {k: v for k, v in want.items() if before.get(k) != v}
    if changes and not module.check_mode:
        volumes.update(dd, p["name"], changes)
    after = volumes.record(dd, p["name"]) if changes and not module.check_mode else dict(before, **changes)
    return dict(changed=bool(changes), volume=after,
                diff={"before": {k: before.get(k) for k in changes}, "after": changes})


if __name__ == "__main__":
    main()
