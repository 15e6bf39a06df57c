#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_info
short_description: Show the App Container pods on a host
description:
  - Lists pods with their state, apps, image IDs, exit codes, created and started times and the
    last lines of each app's log.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description: Only the pod of this name.
    type: str
  uuid:
    description: Only the pod with this UUID or UUID prefix.
    type: str
  state:
    description: Only pods in these states.
    type: list
    elements: str
  log_lines:
    description: How many lines of each app's log to return.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  platform:
    platforms: posix
notes:
  - A data directory that does not exist is reported as having no pods; it is not created.
"""

EXAMPLES = r"""
- name: What runs here
  appc.rocket.pod_info:
  register: pods

- name: One pod, with more of its logs
  appc.rocket.pod_info:
    name: web
    log_lines: 200
"""

RETURN = r"""
pods:
  description: The pods, as M(appc.rocket.pod_run) returns one.
  returned: always
  type: list
  elements: dict
  contains:
    uuid:
      description: The pod's UUID.
      type: str
    name:
      description: Its name, when it has one.
      type: str
    state:
      description: C(prepared), C(running), C(exited), C(exited-garbage), C(garbage), C(aborted), ...
      type: str
    apps:
      description: Each app's name, image ID, exit code, signal, start error and log tail.
      type: list
      elements: dict
    created:
      description: When it was prepared (seconds since the epoch).
      type: float
    started:
      description: When it was started.
      type: float
    networks:
      description:
        - Each network the pod joined (C(name), C(ifname), C(ip), C(prefix), C(gateway), C(mac), C(host_ifname)).
        - Empty for C(net=none), null for C(net=host).
      type: list
      elements: dict
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError


def main():
    module = AnsibleModule(
        argument_spec=dict(name=dict(type="str"), uuid=dict(type="str"), state=dict(type="list", elements="str"),
                           log_lines=dict(type="int", default=20),
                           data_dir=dict(type="path", default="/var/lib/rocket")),
        mutually_exclusive=[("name", "uuid")],
        supports_check_mode=True,
    )
    p = module.params
    dd = DataDir(p["data_dir"])
    pods = []
    try:
        if dd.exists():
            names = podmod.pod_names(dd)
            if p["name"]:
                one = podmod.find_by_name(dd, p["name"])
                candidates = [one] if one else []
            elif p["uuid"]:
                candidates = [podmod.find(dd, p["uuid"])]
            else:
                candidates = podmod.list_pods(dd)
            for pod in candidates:
                d = converge.describe(pod, names.get(pod.uuid), log_lines=p["log_lines"])
                if d and (not p["state"] or d["state"] in p["state"]):
                    pods.append(d)
    except RocketError as e:
        module.fail_json(msg=str(e))
    module.exit_json(changed=False, pods=pods)


if __name__ == "__main__":
    main()
