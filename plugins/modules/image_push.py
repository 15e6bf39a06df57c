#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: image_push
short_description: Push an image of the appc.rocket store to a registry as an OCI image
description:
  - Sends an image of the store to a container registry (OCI distribution / Docker registry v2)
    as an OCI image, so a fleet can move images between hosts through a registry and other tools
    (podman, docker, skopeo) can run them.
  - The appc image manifest is mapped to an OCI image config (the reverse of the import's
    mapping; see the collection's docs/registries.md), and each ACI of the image's dependency
    chain becomes one gzip layer, dependencies first.
  - Layers are made from the stored archives with fixed gzip headers, so the same image gives
    the same digests on every push. A blob the repository already has is not sent again; when
    the tag already names the manifest this image gives, nothing is sent and the task reports
    no change.
version_added: "0.2.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description:
      - The image to push, by name, plain (C(example.com/app)) or with a version and labels
        (C(example.com/app:1.0.0,os=linux)). It must be in the store.
    type: str
  labels:
    description: Labels the image named by O(name) must carry.
    type: dict
    default: {}
  id:
    description: The image to push, by ID or unambiguous ID prefix.
    type: str
  push_to:
    description:
      - Where to push, C(docker://HOST[:PORT]/REPOSITORY[:TAG]) (C(latest) when no tag is given).
        The registry must be written out - a push never guesses one.
      - C(@sha256:...) instead of a tag pushes by digest; it must be the digest this image exports to.
    type: str
    required: true
  platform:
    description:
      - The OCI platform to declare (C(linux/arm64), C(linux/arm/v7)). By default the image's
        C(os) and C(arch) labels say it, or this host's when it has no C(arch) label.
    type: str
  username:
    description:
      - User for the registry. Without it, the credentials come from O(auth_file), or from the
        auth files containers tools and docker use (see M(appc.rocket.registry_login)).
    type: str
  password:
    description: Password (or token) of O(username). Never logged or returned.
    type: str
  auth_file:
    description: Read credentials only from this auth file (containers' C(auth.json) format).
    type: path
  insecure:
    description:
      - Allow plain http and unverified TLS for this registry. Only for registries on a trusted network.
      - A registry marked C(insecure) in O(registries_conf) is treated the same way.
    type: bool
    default: false
  registries_conf:
    description:
      - A containers C(registries.conf) (v2 subset) saying which registries are insecure.
        By default C(/etc/containers/registries.conf) when it exists.
    type: path
  ca_path:
    description:
      - CA bundle for the registry's TLS, in addition to the C(certs.d/HOST:PORT/) directories of
        containers tools and docker (C(/etc/containers/certs.d), C(/etc/docker/certs.d)).
    type: path
  timeout:
    description: Connect and read timeout of each request, in seconds.
    type: int
    default: 30
  retries:
    description: Retries of a failed request (429 and 5xx honour C(Retry-After)).
    type: int
    default: 3
attributes:
  check_mode:
    support: full
    details:
      - The image is exported in the store's C(cas/tmp) (to know its digests) and the registry
        asked which blobs and which manifest it has; nothing is uploaded.
  diff_mode:
    support: full
    details: Shows the manifest digest the destination named before and after.
  platform:
    platforms: posix
    details: Needs the Python library requests (python3-requests) on the target host.
notes:
  - Images with a C(pathWhitelist) cannot be pushed (OCI layers cannot express one).
  - Fields of the appc manifest that OCI has no place for (isolators, event handlers, labels
    other than version, os and arch) are listed in RV(push.dropped) and not sent.
seealso:
  - module: appc.rocket.registry_login
  - module: appc.rocket.cas_image
"""

EXAMPLES = r"""
- name: Push an image built on this host to the fleet's registry
  appc.rocket.image_push:
    name: example.com/hello:1.0.0
    push_to: docker://registry.internal:5000/apps/hello:1.0.0

- name: Push with credentials given in the task (no_log keeps them out of the output)
  appc.rocket.image_push:
    id: sha512-5f2d
    push_to: docker://registry.internal:5000/apps/hello:latest
    username: "{{ registry_user }}"
    password: "{{ registry_password }}"
"""

RETURN = r"""
image:
  description: The image pushed - C(id), C(name), C(labels).
  returned: always
  type: dict
push:
  description: What the push did.
  returned: always
  type: dict
  contains:
    push_to:
      description: The destination, normalised.
      type: str
      sample: docker://registry.internal:5000/apps/hello:1.0.0
    manifest_digest:
      description: The digest of the OCI manifest of the image (what a pull by digest asks for).
      type: str
    config_digest:
      description: The digest of its OCI config (the ID docker and podman show).
      type: str
    previous_digest:
      description: The manifest digest the destination named before the push (null when none).
      type: str
    platform:
      description: The platform the image declares.
      type: str
      sample: linux/amd64
    action:
      description: C(pushed), C(unchanged) (the destination already named this manifest) or C(would-push) (check mode).
      type: str
    blobs:
      description: Each layer and the config - C(digest), C(size), C(kind) (layer or config) and
        C(action) (C(exists), C(mounted), C(uploaded), C(would-upload)).
      type: list
      elements: dict
    blobs_uploaded:
      description: How many blobs were sent.
      type: int
    bytes_uploaded:
      description: How many bytes of blobs were sent.
      type: int
    blobs_present:
      description: How many blobs the registry already had (not sent).
      type: int
    dropped:
      description: What the appc manifest says that the OCI image cannot.
      type: list
      elements: str
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, open_store, run


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(
            name=dict(type="str"),
            labels=dict(type="dict", default={}),
            id=dict(type="str"),
            push_to=dict(type="str", required=True),
            platform=dict(type="str"),
            username=dict(type="str"),
            password=dict(type="str", no_log=True),
            auth_file=dict(type="path"),
            insecure=dict(type="bool", default=False),
            registries_conf=dict(type="path"),
            ca_path=dict(type="path"),
            timeout=dict(type="int", default=30),
            retries=dict(type="int", default=3),
            **DATA_DIR_OPTION
        ),
        mutually_exclusive=[("name", "id"), ("username", "auth_file")],
        required_one_of=[("name", "id")],
        required_together=[("username", "password")],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, push)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def push(module):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_push

    p = module.params
    store = open_store(p["data_dir"], create=False)
    changed, image, info = registry_push.push_task(store, p, module.check_mode, p["data_dir"])
    result = dict(changed=changed, image=image, push=info)
    if module._diff:
        result["diff"] = dict(before={"push_to": info["push_to"], "manifest_digest": info.get("previous_digest")},
                              after={"push_to": info["push_to"], "manifest_digest": info["manifest_digest"]})
    return result


if __name__ == "__main__":
    main()
