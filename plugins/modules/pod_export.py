#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_export
short_description: Export an app's root filesystem, or a stored image flattened, as an ACI
description:
  - Writes an App Container image (ACI) file, the way C(rkt export) did - the current root
    filesystem of an app of a pod (O(name) or O(uuid), and O(app)), or a stored image with its
    dependencies flattened into one tree (O(image)).
  - The manifest is the app's image manifest without C(dependencies) and C(pathWhitelist)
    (they are applied); O(image_name) renames the image.
  - The archive is deterministic - the same tree gives the same image ID on any host. Members
    are sorted, mtimes are 0, owner names are empty (numeric owners, modes, allowed extended
    attributes and hard links are kept), and the gzip header has no name or time.
  - Symbolic links are archived as links and never followed, even when the app changes its tree
    during the export. Device nodes, FIFOs and sockets are left out (an import would not create
    them) and listed in RV(skipped).
  - The written archive is read back and validated (headers, manifest, ID) before it replaces
    O(dest). When O(dest) already holds the same image, nothing is written.
  - M(appc.rocket.cas_image) imports the result; M(appc.rocket.pod_run) can then run it on any host.
version_added: "0.2.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description: The pod whose app to export, by name.
    type: str
  uuid:
    description: The pod whose app to export, by UUID (or a unique prefix).
    type: str
  app:
    description: The app of the pod; may be left out when the pod has one app.
    type: str
  image:
    description:
      - Export this stored image instead of an app (a name with optional version and labels, or
        an image ID), its dependencies rendered and flattened.
    type: str
  dest:
    description: Path of the ACI file to write on the target host; its directory must exist.
    type: path
    required: true
  image_name:
    description: Name of the exported image (default the name in the app's image manifest).
    type: str
  compression:
    description: Compression of the file. The image ID does not depend on it.
    type: str
    choices: [gzip, xz, none]
    default: gzip
attributes:
  check_mode:
    support: full
    details: The tree is read and hashed, nothing is written; the result says whether O(dest) would change.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux; reading pods and the store needs the data directory's owner (root).
notes:
  - An app that writes while it is exported may or may not have its last writes in the archive; stop
    the pod first (as C(rkt export) required) for a consistent snapshot.
  - A pod started with C(private_users) has the host-side (shifted) owners on the files its apps wrote;
    they are exported as they are on disk.
"""

EXAMPLES = r"""
- name: Snapshot what a role did inside a pod
  appc.rocket.pod_export:
    name: web1
    dest: /srv/images/web1.aci
    image_name: example.com/web-configured
  register: exported

- name: Import it on another host
  appc.rocket.cas_image:
    src: /srv/images/web1.aci

- name: A stored image and its dependencies as one archive
  appc.rocket.pod_export:
    image: example.com/app:1.0.0
    dest: /tmp/app-flat.aci
"""

RETURN = r"""
image:
  description: The exported image.
  returned: always
  type: dict
  contains:
    id:
      description: The image ID (C(sha512-) and the SHA-512 of the uncompressed archive).
      type: str
    size:
      description: Size of the uncompressed archive in bytes.
      type: int
    manifest:
      description: The image manifest written into the archive.
      type: dict
dest:
  description: The absolute path of the file.
  returned: always
  type: str
skipped:
  description: Paths in the tree (device nodes, FIFOs, sockets) that are not in the archive.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, data_dir, open_store, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_export
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import NotFoundError


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(name=dict(type="str"), uuid=dict(type="str"), app=dict(type="str"), image=dict(type="str"),
                           dest=dict(type="path", required=True), image_name=dict(type="str"),
                           compression=dict(type="str", choices=["gzip", "xz", "none"], default="gzip"),
                           **DATA_DIR_OPTION),
        mutually_exclusive=[("name", "uuid", "image"), ("image", "app")],
        required_one_of=[("name", "uuid", "image")],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, export)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def export(module):
    p = module.params
    dd = data_dir(module)
    if p["image"]:
        store = open_store(p["data_dir"], create=False)
        if store is None:
            raise NotFoundError("image: no image %s: data directory %s does not exist" % (p["image"], dd.path))
        with store.store_lock(exclusive=False):
            tree = store.render(p["image"])
            manifest = pod_export.export_manifest(store.manifest(tree["image_id"]), p["image_name"])
            changed, res = pod_export.export([tree["rootfs"]], manifest, p["dest"], compression=p["compression"],
                                             check_mode=module.check_mode)
    else:
        pod = podmod.lookup(dd, name=p["name"], uuid=p["uuid"])
        app = podmod.choose_app(pod, p["app"], p["name"], hint="say which one to export with app")
        manifest = pod_export.export_manifest(pod_export.app_manifest(pod, app), p["image_name"])
        changed, res = pod_export.export(pod_export.app_layers(pod, app), manifest, p["dest"],
                                         compression=p["compression"], check_mode=module.check_mode)
    return dict(changed=changed, dest=p["dest"], skipped=res.skipped,
                image=dict(id=res.id, size=res.size, manifest=res.manifest))


if __name__ == "__main__":
    main()
