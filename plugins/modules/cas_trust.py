#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cas_trust
short_description: Manage the OpenPGP keys trusted to sign App Container images
description:
  - Adds keys to, or removes them from, the trust store of the appc.rocket data directory,
    the way C(rkt trust) did. Remote images are only fetched when a key trusted for their
    name made a valid detached signature (C(<image>.aci.asc)).
  - A key is trusted either for the image names under a O(prefix) (whole path components -
    V(example.com/app) covers C(example.com/app) and C(example.com/app/db), not
    C(example.com/apple)), or for every name (O(root=true)).
  - Keys are stored as C(trust/prefix.d/<prefix with / as ,>/<fingerprint>) and
    C(trust/root.d/<fingerprint>), one ASCII-armoured public key per file, named by the
    fingerprint gpg computes. Adding the same key again changes nothing.
  - Keys of the system trust store O(system_dir) (same layout) are trusted too. The data_dir
    store takes precedence - an empty file there with the same relative path masks the system
    key (O(mask=true) writes it; O(state=absent) with the fingerprint removes the mask).
  - A key is only added when its expected O(fingerprint) is given (and matches), or when
    O(accept_unreviewed=true) explicitly accepts it without review.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  key:
    description:
      - The ASCII-armoured OpenPGP public key, as a path on the target host or an https URL.
      - The file must hold exactly one public key. Secret keys are refused.
      - With O(state=present), one of O(key), O(discover=true) and O(mask=true) is required.
        With O(state=absent), either O(key) or O(fingerprint) says which key to remove.
    type: str
  fingerprint:
    description:
      - The key's full fingerprint (40 or 64 hex digits; spaces and a C(0x) prefix are ignored).
      - With O(state=present) it is required (unless O(accept_unreviewed=true)) and pins the
        key - the task fails when O(key) holds another key. With O(discover=true), only the
        discovered key of this fingerprint is added; the task fails when none is.
      - With O(mask=true), the system key to mask. With O(state=absent), the key (or mask) to remove.
    type: str
  accept_unreviewed:
    description:
      - Add the key (or every discovered key) without an expected O(fingerprint). Insecure -
        a key fetched from a URL or discovery is then trusted on first use.
    type: bool
    default: false
  discover:
    description:
      - Add the keys that the appc discovery page of O(prefix) publishes
        (C(ac-discovery-pubkeys) tags; the prefix is walked up to its host, as image discovery
        does). Needs O(prefix); excludes O(key).
    type: bool
    default: false
  mask:
    description:
      - Mask (disable) the key O(fingerprint) of the system trust store for O(prefix) (or as a
        root key) by writing an empty file at its path in the data_dir trust store.
        With O(state=present) only; excludes O(key) and O(discover).
    type: bool
    default: false
  system_dir:
    description:
      - The system trust store, whose keys are trusted too unless masked. Only read.
    type: path
    default: /etc/rocket/trustedkeys
  prefix:
    description:
      - Trust the key for image names under this prefix (an AC Identifier, for example
        V(example.com/app)). Exactly one of O(prefix) and O(root=true) is required.
    type: str
  root:
    description:
      - Trust the key for every image name.
    type: bool
    default: false
  state:
    description:
      - V(present) trusts the key; V(absent) stops trusting it (for that O(prefix), or as a root key).
    type: str
    choices: [present, absent]
    default: present
  ca_path:
    description:
      - A CA bundle for fetching O(key) from an https URL signed by a private CA.
    type: path
  validate_certs:
    description:
      - Verify the TLS certificate of an https O(key) URL. Only turn this off for testing.
    type: bool
    default: true
  timeout:
    description: Connect and read timeout, in seconds, for fetching O(key) from a URL.
    type: int
    default: 30
  discovery_overrides:
    description:
      - Maps a host name to a base URL - every request for that host (discovery pages, keys)
        goes to the base URL instead (mirrors, tests).
    type: dict
attributes:
  check_mode:
    support: full
    details: The key is read (and fetched, for a URL or discovery) and its fingerprint computed; nothing is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Needs gpg on the target host (Debian package gpg); a URL or O(discover=true) needs the
      Python library requests (python3-requests).
notes:
  - Only the trust store is consulted when signatures are checked; the keyrings and trust
    database of the host's gpg are never used.
seealso:
  - module: appc.rocket.cas_image
"""

EXAMPLES = r"""
- name: Trust the key that signs example.com images
  appc.rocket.cas_trust:
    key: /etc/rocket/keys/example.com.asc
    fingerprint: 0661C7F4A6D5CCA9A0B9899B89F2D7878D7F4B3D
    prefix: example.com

- name: Trust a published key, pinned by fingerprint
  appc.rocket.cas_trust:
    key: https://example.com/pubkeys.asc
    fingerprint: 0661C7F4A6D5CCA9A0B9899B89F2D7878D7F4B3D
    prefix: example.com/app

- name: A key trusted for every image name, accepted without review (insecure)
  appc.rocket.cas_trust:
    key: /etc/rocket/keys/release.asc
    root: true
    accept_unreviewed: true

- name: Trust the key published by example.com/app's discovery page, pinned by fingerprint
  appc.rocket.cas_trust:
    discover: true
    prefix: example.com/app
    fingerprint: 0661C7F4A6D5CCA9A0B9899B89F2D7878D7F4B3D

- name: Mask a root key of the system trust store (/etc/rocket/trustedkeys)
  appc.rocket.cas_trust:
    mask: true
    fingerprint: 0661C7F4A6D5CCA9A0B9899B89F2D7878D7F4B3D
    root: true

- name: Stop trusting a key for a prefix
  appc.rocket.cas_trust:
    fingerprint: 0661C7F4A6D5CCA9A0B9899B89F2D7878D7F4B3D
    prefix: example.com/app
    state: absent
"""

RETURN = r"""
key:
  description: The key the task was about.
  returned: always
  type: dict
  contains:
    fingerprint:
      description: The key's fingerprint, lowercase hex.
      type: str
      sample: 0661c7f4a6d5cca9a0b9899b89f2d7878d7f4b3d
    prefix:
      description: The prefix it is (or was) trusted for; null for a root key.
      type: str
      sample: example.com/app
    root:
      description: Whether it is a root key.
      type: bool
    path:
      description: The key's file (or masking file) in the data_dir trust store.
      type: str
    masked:
      description: True for O(mask=true).
      returned: with O(mask=true)
      type: bool
    system_key:
      description: The masked key's file in the system trust store, null when it has none.
      returned: with O(mask=true)
      type: str
    uids:
      description: The key's user IDs.
      returned: when O(key) was read
      type: list
      elements: str
    expired:
      description: Whether the key has expired (signatures by an expired key are refused).
      returned: when O(key) was read
      type: bool
keys:
  description:
    - Every key the task was about, each with the fields of RV(key); several with
      O(discover=true) and no O(fingerprint).
  returned: always
  type: list
  elements: dict
skipped_keys:
  description: Discovered keys not added because their fingerprint is not O(fingerprint).
  returned: with O(discover=true)
  type: list
  elements: dict
  contains:
    url:
      description: Where the key was published.
      type: str
    fingerprint:
      description: Its fingerprint.
      type: str
discovery_page:
  description: The discovery page that published the keys.
  returned: with O(discover=true)
  type: str
"""

import os

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, data_dir, run


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(
            key=dict(type="str", no_log=False),
            fingerprint=dict(type="str"),
            accept_unreviewed=dict(type="bool", default=False),
            prefix=dict(type="str"),
            root=dict(type="bool", default=False),
            discover=dict(type="bool", default=False),
            mask=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            system_dir=dict(type="path", default="/etc/rocket/trustedkeys"),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
            discovery_overrides=dict(type="dict"),
            **DATA_DIR_OPTION
        ),
        mutually_exclusive=[("key", "discover"), ("key", "mask"), ("discover", "mask"),
                            ("mask", "accept_unreviewed")],
        required_if=[("state", "absent", ("key", "fingerprint"), True), ("mask", True, ("fingerprint",))],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    p = module.params
    if bool(p["prefix"]) == bool(p["root"]):
        module.fail_json(msg="give exactly one of prefix (the image names the key is trusted for) or root: true")
    if p["state"] == "present" and not (p["key"] or p["discover"] or p["mask"]):
        module.fail_json(msg="state: present needs the key (a path or https URL), discover: true (the keys "
                             "the prefix's discovery page publishes), or mask: true with fingerprint")
    if p["discover"] and not p["prefix"]:
        module.fail_json(msg="discover: true needs prefix (the name whose discovery page publishes the keys)")
    if p["state"] == "absent" and (p["discover"] or p["mask"]):
        module.fail_json(msg="discover and mask go with state: present (state: absent with the fingerprint "
                             "removes a key or a mask)")
    run(module, converge)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def converge(module):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import trust

    p = module.params
    http = {"ca_path": p["ca_path"], "timeout": p["timeout"],
            "insecure": () if p["validate_certs"] else ("tls",)}
    if p["discovery_overrides"]:
        http["overrides"] = p["discovery_overrides"]
    dd = data_dir(module)
    if dd.exists():
        dd.check_format()
    if p["state"] == "present" and p["mask"]:
        res = trust.mask_key(dd, p["fingerprint"], prefix=p["prefix"], root=p["root"], check=module.check_mode,
                             system_dir=p["system_dir"])
        changed = res.pop("changed")
        if not res["system_key"]:
            module.warn("the system trust store %s has no key %s for %s: the mask masks nothing for now"
                        % (p["system_dir"], res["fingerprint"],
                           "root" if p["root"] else "prefix %s" % p["prefix"]))
        return dict(changed=changed, key=res, keys=[res])
    if p["state"] == "present" and p["discover"]:
        res = trust.add_discovered(dd, p["prefix"], fingerprint=p["fingerprint"],
                                   accept_unreviewed=p["accept_unreviewed"], check=module.check_mode, http=http)
        keys = [dict((k, v) for k, v in a.items() if k != "changed") for a in res["keys"]]
        return dict(changed=res["changed"], key=keys[0], keys=keys, skipped_keys=res["skipped"],
                    discovery_page=res["page"])
    if p["state"] == "present":
        res = trust.add_key(dd, p["key"], prefix=p["prefix"], root=p["root"], fingerprint=p["fingerprint"],
                            check=module.check_mode, http=http, require_fingerprint=not p["accept_unreviewed"])
        changed = res.pop("changed")
        return dict(changed=changed, key=res, keys=[res])
    fpr = trust.normalize_fingerprint(p["fingerprint"]) if p["fingerprint"] else None
    extra = {}
    if p["key"]:
        info = trust.key_info(*trust.read_key(p["key"], http))
        if fpr and info["fingerprint"] != fpr:
            module.fail_json(msg="%s is key %s, not %s" % (p["key"], info["fingerprint"], fpr))
        fpr = info["fingerprint"]
        extra = {"uids": info["uids"], "expired": info["expired"]}
    removed = trust.remove_key(dd, fpr, prefix=p["prefix"], root=p["root"], check=module.check_mode)
    path = trust.key_path(dd, fpr, p["prefix"], p["root"])
    sys_key = os.path.join(p["system_dir"], os.path.relpath(path, dd.trust)) if p["system_dir"] else None
    if sys_key and os.path.isfile(sys_key) and not trust.is_mask(path):
        module.warn("key %s is still trusted by the system trust store (%s): mask it with mask: true"
                    % (fpr, sys_key))
    res = dict(fingerprint=fpr, prefix=None if p["root"] else p["prefix"], root=p["root"], path=path, **extra)
    return dict(changed=removed, key=res, keys=[res])


if __name__ == "__main__":
    main()
