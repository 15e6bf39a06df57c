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
version_added: "0.2.0"
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
      - Required with O(state=present). With O(state=absent), either O(key) or O(fingerprint)
        says which key to remove.
    type: str
  fingerprint:
    description:
      - The key's full fingerprint (40 or 64 hex digits; spaces and a C(0x) prefix are ignored).
      - With O(state=present) it pins the key - the task fails when O(key) holds another key.
        Recommended with a URL, which is otherwise trusted on first use.
      - With O(state=absent), the key to remove.
    type: str
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
attributes:
  check_mode:
    support: full
    details: The key is read (and fetched, for a URL) and its fingerprint computed; nothing is written.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Needs gpg on the target host (Debian package gpg); a URL needs the Python library requests (python3-requests).
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
    prefix: example.com

- name: Trust a published key, pinned by fingerprint
  appc.rocket.cas_trust:
    key: https://example.com/pubkeys.asc
    fingerprint: 0661C7F4A6D5CCA9A0B9899B89F2D7878D7F4B3D
    prefix: example.com/app

- name: A key trusted for every image name
  appc.rocket.cas_trust:
    key: /etc/rocket/keys/release.asc
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
      description: The key's file in the trust store.
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
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, fail


def main():
    module = AnsibleModule(
        argument_spec=dict(
            key=dict(type="str", no_log=False),
            fingerprint=dict(type="str"),
            prefix=dict(type="str"),
            root=dict(type="bool", default=False),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            ca_path=dict(type="path"),
            validate_certs=dict(type="bool", default=True),
            timeout=dict(type="int", default=30),
            **DATA_DIR_OPTION
        ),
        required_if=[("state", "present", ("key",)), ("state", "absent", ("key", "fingerprint"), True)],
        supports_check_mode=True,
    )
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import trust
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

    p = module.params
    if bool(p["prefix"]) == bool(p["root"]):
        module.fail_json(msg="give exactly one of prefix (the image names the key is trusted for) or root: true")
    http = {"ca_path": p["ca_path"], "timeout": p["timeout"],
            "insecure": () if p["validate_certs"] else ("tls",)}
    dd = DataDir(p["data_dir"])
    try:
        if dd.exists():
            dd.check_format()
        if p["state"] == "present":
            res = trust.add_key(dd, p["key"], prefix=p["prefix"], root=p["root"], fingerprint=p["fingerprint"],
                                check=module.check_mode, http=http)
            changed = res.pop("changed")
            module.exit_json(changed=changed, key=res)
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
        module.exit_json(changed=removed, key=dict(fingerprint=fpr, prefix=None if p["root"] else p["prefix"],
                                                   root=p["root"], path=path, **extra))
    except RocketError as e:
        fail(module, e)


if __name__ == "__main__":
    main()
