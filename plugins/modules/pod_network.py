#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_network
short_description: Create, remove and list the named networks pods join
description:
  - A pod joins named networks with the O(appc.rocket.pod_run#module:net) option. A network
    is a file in C(<data_dir>/net.d) (then C(/etc/rocket/net.d); the first definition of a
    name wins; C(default) is built in and may be redefined). This module writes and removes
    the data directory's files, one per network, and lists every network the pods can join.
  - Rocket's own networks (O(type=ptp) or O(type=bridge)) are written as C(<name>.json); a
    network run by CNI plugins (O(cni)) as the CNI network configuration list C(<name>.conflist).
    See C(docs/networking.md) for both, and for when to choose which.
  - Pods on one O(type=bridge) network resolve each other's names (their C(/etc/hosts) lists
    the running peers, and is rewritten as they come and go).
  - A network that a pod uses (a pod in any state, until M(appc.rocket.pod_gc) removes it,
    that names it or holds an address on it) is never removed; the task fails naming the pods.
    A changed network applies to the pods started after the change.
version_added: "0.3.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description:
      - The network's name, an AC Name; not V(host) or V(none).
      - Without it, the module changes nothing and only lists the networks (RV(networks)).
    type: str
  state:
    description:
      - V(present) writes the network's file (or rewrites it when it differs).
      - V(absent) removes the data directory's file of the network; refused while a pod uses
        it, and for a network defined only in C(/etc/rocket/net.d). The built-in C(default)
        cannot be removed (removing a file that redefines it brings the built-in one back).
    type: str
    choices: [present, absent]
    default: present
  type:
    description:
      - V(ptp) gives each pod a point-to-point link routed by the host; V(bridge) joins the
        pods' links to a bridge (pods on it share a link and resolve each other's names).
      - Defaults to V(ptp) (in the file, when not given).
    type: str
    choices: [ptp, bridge]
  subnet:
    description:
      - IPv4 subnet C(a.b.c.d/len) (C(len) at most 30) the pods' addresses come from.
        Required with O(name) and O(state=present) unless O(cni) is given.
    type: str
  gateway:
    description: The host's address on the network (defaults to the subnet's first address).
    type: str
  subnet6:
    description:
      - IPv6 subnet C(addr/len) (C(len) 64 to 120). With it the network is dual-stack, each pod also gets
        an address from it (and its peers' IPv6 addresses in C(/etc/hosts) on a O(type=bridge) network).
      - Without it, the network is IPv4 only.
    type: str
  gateway6:
    description: The host's IPv6 address on the network (defaults to O(subnet6)'s first address); needs O(subnet6).
    type: str
  routes:
    description: The pods' routes (defaults to a default route through the gateway).
    type: list
    elements: dict
    suboptions:
      dst:
        description: Destination C(a.b.c.d/len).
        type: str
        required: true
      gw:
        description: Next hop (defaults to the gateway).
        type: str
  ip_masq:
    description: Masquerade the pods' traffic to outside the subnet (defaults to true).
    type: bool
  bridge:
    description:
      - The bridge's name (O(type=bridge) only, at most 15 characters; defaults to C(rkt-<name>)).
    type: str
  mtu:
    description: MTU of the pods' links (and the bridge); defaults to the kernel's.
    type: int
  cni:
    description:
      - A CNI network configuration list without its name (C(cniVersion), defaulting to
        V(1.0.0), and C(plugins), each with a C(type) naming a plugin), written as
        C(<data_dir>/net.d/<name>.conflist). Excludes the options of rocket's own networks.
    type: dict
attributes:
  check_mode:
    support: full
    details: Reports what would change; refuses in check mode what it would refuse otherwise.
  diff_mode:
    support: full
    details: The network's file, as a document, before and after.
  platform:
    platforms: posix
    details: Linux, as root.
"""

EXAMPLES = r"""
- name: A bridge network whose pods resolve each other's names
  appc.rocket.pod_network:
    name: backend
    type: bridge
    subnet: 10.22.0.0/24

- name: A dual-stack bridge network (IPv4 and IPv6 addresses for its pods)
  appc.rocket.pod_network:
    name: dual
    type: bridge
    subnet: 10.24.0.0/24
    subnet6: fd00:24::/64

- name: Pods join it
  appc.rocket.pod_run:
    name: api
    image: example.com/api:1.0
    net: [backend]

- name: A network run by the CNI plugins
  appc.rocket.pod_network:
    name: cni-br
    cni:
      cniVersion: 1.0.0
      plugins:
        - type: bridge
          bridge: cni-br0
          isGateway: true
          ipMasq: true
          ipam:
            type: host-local
            ranges: [[{subnet: 10.23.0.0/24}]]
        - type: portmap
          capabilities: {portMappings: true}

- name: Every network pods can join (no name given)
  appc.rocket.pod_network:
  register: nets

- name: Remove one (fails while a pod uses it)
  appc.rocket.pod_network:
    name: backend
    state: absent
"""

RETURN = r"""
network:
  description: The network (after the task; in check mode, as it would be).
  returned: when O(state=present)
  type: dict
  contains:
    name:
      description: The network's name.
      type: str
    kind:
      description: V(ptp), V(bridge), or V(cni) (run by CNI plugins).
      type: str
    file:
      description: The file that defines it (null for the built-in C(default)).
      type: str
    config:
      description: The file's document (the CNI configuration list for V(cni)).
      type: dict
    managed:
      description: Whether the file is the data directory's (what this module writes and removes).
      type: bool
    used_by:
      description: UUIDs of the pods that name the network or hold an address on it.
      type: list
      elements: str
networks:
  description: Every network pods can join, by name, each as RV(network) is.
  returned: when O(name) is not given
  type: list
  elements: dict
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, data_dir, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import net_files
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError

OWN = ("type", "subnet", "gateway", "routes", "ip_masq", "bridge", "mtu", "subnet6", "gateway6")


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(name=dict(type="str"),
                           state=dict(type="str", choices=["present", "absent"], default="present"),
                           type=dict(type="str", choices=["ptp", "bridge"]), subnet=dict(type="str"),
                           gateway=dict(type="str"), subnet6=dict(type="str"), gateway6=dict(type="str"),
                           routes=dict(type="list", elements="dict",
                                       options=dict(dst=dict(type="str", required=True), gw=dict(type="str"))),
                           ip_masq=dict(type="bool"), bridge=dict(type="str"), mtu=dict(type="int"),
                           cni=dict(type="dict"), **DATA_DIR_OPTION),
        mutually_exclusive=[("cni", k) for k in OWN],
        required_if=[("state", "absent", ("name",))],
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
    if p["name"] is None:
        if any(p[k] is not None for k in OWN + ("cni",)):
            raise ValidationError("name", None, "is required to create a network (without it the module lists them)")
        return dict(changed=False, networks=net_files.list_networks(dd))
    net_files.check_name(p["name"])
    if p["state"] == "absent":
        changed, before = net_files.remove(dd, p["name"], dry_run=module.check_mode)
        return dict(changed=changed, diff={"before": before or {}, "after": {}})
    if p["cni"] is None and p["subnet"] is None:
        raise ValidationError("subnet", None, "is required (or cni, for a network run by CNI plugins)")
    if p["cni"] is not None:
        kind, doc = "cni", net_files.desired_cni(p["name"], p["cni"])
    else:
        routes = None if p["routes"] is None else [{k: v for k, v in r.items() if v is not None} for r in p["routes"]]
        doc = net_files.desired(p["name"], {"type": p["type"], "subnet": p["subnet"], "gateway": p["gateway"],
                                            "routes": routes, "ipMasq": p["ip_masq"], "bridge": p["bridge"],
                                            "mtu": p["mtu"], "subnet6": p["subnet6"], "gateway6": p["gateway6"]})
        kind = doc.get("type", "ptp")
    changed, before = net_files.ensure(dd, p["name"], kind, doc, dry_run=module.check_mode)
    after = net_files.record(dd, p["name"])
    if module.check_mode and changed:  # as it would be
        after = dict(after or {"used_by": []}, name=p["name"], kind=kind, config=doc, managed=True,
                     file=net_files.target(dd, p["name"], kind))
    return dict(changed=changed, network=after,
                diff={"before": before or {}, "after": doc if changed else (before or {})})


if __name__ == "__main__":
    main()
