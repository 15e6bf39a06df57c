# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One image step of cas_image and of each image of pod_set: the mapping to and from Ansible.

The options are declared once here; the converge itself (what to do, and doing it) is the
library's, stage0.image_converge. A failure raises: a RocketError, or TaskFailed for an
I/O error, which rocket_module.run (cas_image) or pod_set turn into the task's failure.
"""
from __future__ import annotations

from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import TaskFailed
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import image_converge

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional

    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

IMAGE_OPTIONS = dict(
    src=dict(type="str"),
    format=dict(type="str", choices=["auto", "aci", "oci"], default="auto"),
    pull=dict(type="str", choices=["never", "new", "update", "missing", "always"], default="new"),
    insecure=dict(type="list", elements="str", default=[],
                  choices=["image", "signature", "tls", "http", "all-fetch"]),
    ca_path=dict(type="path"), client_cert=dict(type="path"), client_key=dict(type="path"),
    username=dict(type="str"), password=dict(type="str", no_log=True),
    credentials_file=dict(type="path"), timeout=dict(type="int", default=30),
    retries=dict(type="int", default=3), discovery_overrides=dict(type="dict"),
    ref=dict(type="str"),
    platform=dict(type="str"),
    digest=dict(type="str"), require_digest=dict(type="list", elements="str", default=[]),
    registries_conf=dict(type="path"), auth_file=dict(type="path"), cert_dir=dict(type="path"),
    rootfs=dict(type="path"),
    manifest=dict(type="dict"),
    name=dict(type="str"),
    labels=dict(type="dict", default={}),
    id=dict(type="str"),
    state=dict(type="str", choices=["present", "absent"], default="present"),
    force=dict(type="bool", default=False),
    allow_devices=dict(type="bool", default=False),
    max_size=dict(type="int", default=8 * 1024 ** 3),
    default_stage1=dict(type="bool"),  # no default: a false default would satisfy required_one_of
)
MUTUALLY_EXCLUSIVE = [("src", "rootfs", "id", "default_stage1"), ("name", "id", "default_stage1"),
                      ("rootfs", "name")]
REQUIRED_ONE_OF = [("src", "rootfs", "name", "id", "default_stage1")]
REQUIRED_TOGETHER = [("rootfs", "manifest")]


def image_step(params: "Dict[str, Any]", check: bool, store: "Optional[Store]", diff: bool,
               data_dir: str) -> "Dict[str, Any]":
    """Converge one image; returns the result cas_image returns."""
    try:
        changed, before, after, extra = image_converge.converge(store, params, check, data_dir)
    except OSError as e:
        raise TaskFailed("%s: %s" % (e.filename or "I/O error", e.strerror or e)) from None
    result = dict(changed=changed, image=after if params["state"] == "present" else before, **extra)
    if diff:
        def strip(d: "Dict[str, Any]") -> "Dict[str, Any]":
            return {k: v for k, v in d.items() if k != "manifest"}

        result["diff"] = dict(before=strip(before), after=strip(after))
    return result
