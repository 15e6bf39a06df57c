#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: registry_login
short_description: Log in to (or out of) a container registry in an auth file
description:
  - Keeps the credentials for a registry in an auth file in the format containers tools
    (podman, skopeo, buildah) and docker use (an C(auths) object whose C(HOST[:PORT]) entries
    hold C(auth), the base64 of C(user:password)), like C(podman login) and C(podman logout).
  - Pulls (C(docker://) images) and M(appc.rocket.image_push) read that file, so a playbook logs
    in once and later tasks name no credentials.
  - The credentials are checked against the registry first (C(GET /v2/) through its basic or
    bearer-token challenge) unless O(verify=false); a refused password fails the task and
    leaves the file as it was.
  - The file is replaced atomically with mode C(0600), its other entries and keys kept.
    The password never appears on a command line, in the result, in a diff or in a log.
version_added: "0.2.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
options:
  registry:
    description:
      - The registry, C(HOST[:PORT]), or C(HOST[:PORT]/REPOSITORY) for credentials that apply to
        that repository (and below) only. A C(docker://) or C(https://) prefix is dropped;
        docker's hub is C(docker.io).
    type: str
    required: true
  username:
    description: The user. Required with O(state=present).
    type: str
  password:
    description: The password or access token. Required with O(state=present). Never logged or returned.
    type: str
  auth_file:
    description:
      - The auth file to write. By default podman's - C($REGISTRY_AUTH_FILE) when the task's
        environment sets it, else C(${XDG_RUNTIME_DIR}/containers/auth.json), or
        C(/run/containers/<uid>/auth.json) without C(XDG_RUNTIME_DIR) (a tmpfs - gone at reboot;
        give C(/etc/containers/auth.json) to keep the login).
    type: path
  state:
    description: V(present) logs in (writes the entry); V(absent) logs out (removes it).
    type: str
    choices: [present, absent]
    default: present
  verify:
    description:
      - Check the credentials against the registry before writing them. A registry that lets
        anyone in (no authentication) accepts any credentials.
    type: bool
    default: true
  insecure:
    description: Allow plain http and unverified TLS for the verification. Only for registries on a trusted network.
    type: bool
    default: false
  registries_conf:
    description: A containers C(registries.conf) (v2 subset) saying which registries are insecure.
    type: path
  ca_path:
    description:
      - CA bundle for the registry's TLS, in addition to the C(certs.d/HOST:PORT/) directories of
        containers tools and docker.
    type: path
  timeout:
    description: Connect and read timeout of each request, in seconds.
    type: int
    default: 30
  retries:
    description: Retries of a failed request.
    type: int
    default: 3
attributes:
  check_mode:
    support: full
    details: The credentials are verified (a read-only request); the file is not written.
  diff_mode:
    support: full
    details: Shows the registry and user before and after; the password only as C((set)) or C((new)).
  platform:
    platforms: posix
    details: Verification needs the Python library requests (python3-requests) on the target host.
notes:
  - Credential helpers (C(credHelpers), C(credsStore)) are not run; entries are plain C(auth) values.
  - Logging in again with the same user and password changes nothing (still verified).
seealso:
  - module: appc.rocket.image_push
  - module: appc.rocket.cas_image
"""

EXAMPLES = r"""
- name: Log in to the fleet's registry, for every later pull and push on this host
  appc.rocket.registry_login:
    registry: registry.internal:5000
    username: deploy
    password: "{{ vault_registry_password }}"
    auth_file: /etc/containers/auth.json

- name: Log out
  appc.rocket.registry_login:
    registry: registry.internal:5000
    auth_file: /etc/containers/auth.json
    state: absent
"""

RETURN = r"""
registry:
  description: The auth file key written or removed.
  returned: always
  type: str
  sample: registry.internal:5000
auth_file:
  description: The auth file.
  returned: always
  type: str
username:
  description: The user logged in.
  returned: with O(state=present)
  type: str
verified:
  description: Whether the registry accepted the credentials in this run.
  returned: always
  type: bool
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import run


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(
            registry=dict(type="str", required=True),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            auth_file=dict(type="path"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            verify=dict(type="bool", default=True),
            insecure=dict(type="bool", default=False),
            registries_conf=dict(type="path"),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=30),
            retries=dict(type="int", default=3),
        ),
        required_if=[("state", "present", ("username", "password"))],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, login)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def login(module):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_login

    changed, result, before, after = registry_login.converge(module.params, module.check_mode)
    result["changed"] = changed
    if module._diff:
        result["diff"] = dict(before=before, after=after)
    return result


if __name__ == "__main__":
    main()
