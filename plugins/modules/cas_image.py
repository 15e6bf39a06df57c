#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: cas_image
short_description: Import, build or remove App Container images in the appc.rocket image store
description:
  - Keeps an image present in (or absent from) the content-addressed image store of a host,
    the way C(rkt fetch) and C(rkt image rm) did.
  - An image comes from a local ACI file (O(src); plain tar, gzip, bzip2 or xz), or is built
    from a directory and a manifest (O(rootfs) and O(manifest)), deterministically.
  - Images are identified by C(sha512-) and the SHA-512 of their uncompressed archive.
    Importing the same image again changes nothing.
  - Every archive is treated as hostile - members outside the image, links out of it, device
    nodes, decompression bombs and overlay-steering attributes are refused with an error that
    names the member, and nothing is left behind.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  src:
    description:
      - Path on the target host of an ACI file, an OCI image layout (a directory, or a tar of
        one, plain or compressed) or a C(docker save) archive. The kind is detected (see O(format)).
      - OCI and docker images are converted to an appc image - layers applied in order with
        whiteouts, every layer digest verified, the config mapped onto an image manifest
        (see the collection's docs/oci.md for the mapping and what has no appc equivalent).
      - With O(name) (and O(labels)), an ACI's manifest must carry that name; an OCI image is
        given that name instead of the one its reference gives.
      - An https URL fetches a remote image (see O(pull)); it must be signed by a key trusted for
        its name (M(appc.rocket.cas_trust)) unless O(insecure) says otherwise.
      - A registry reference C(docker://[host[:port]/]repository[:tag][@sha256:...]) pulls an OCI or
        Docker image from a registry (the scheme is required; C(docker://nginx) is
        C(docker.io/library/nginx:latest)) and converts it like an OCI layout. Its blobs are kept in the
        store and shared between images; see the collection's docs/registries.md. Registry images carry
        no appc signature - see O(digest) and O(require_digest).
    type: str
  pull:
    description:
      - For a remote O(src) or an O(name) to discover - V(never) uses only the store, V(new)
        fetches when the image is not in the store yet, V(update) revalidates a stored remote
        image (C(If-None-Match), C(If-Modified-Since), C(Cache-Control) max-age) and fetches it
        only when it changed.
      - For a registry reference, V(update) asks the registry for the reference's digest only and
        downloads nothing when it has not moved. V(missing) and V(always) are podman's names for
        V(new) and V(update).
    type: str
    choices: [never, new, update, missing, always]
    default: new
  insecure:
    description:
      - Checks to relax for remote images - V(image) (alias V(signature)) accepts an image
        without a valid signature by a trusted key, V(tls) skips certificate checks, V(http)
        allows plain http; V(all-fetch) is all three.
    type: list
    elements: str
    choices: [image, signature, tls, http, all-fetch]
    default: []
  ca_path:
    description: CA bundle (file or directory) for https, instead of the system's.
    type: path
  client_cert:
    description: Client certificate (PEM) for https.
    type: path
  client_key:
    description: Key of O(client_cert).
    type: path
  username:
    description: User for HTTP basic authentication, sent only to the host of O(src) or O(name).
    type: str
  password:
    description: Password for O(username).
    type: str
  credentials_file:
    description: An rkt-style C(auth.d) JSON file naming domains and their credentials.
    type: path
  timeout:
    description: Connect and read timeout of each request, in seconds.
    type: int
    default: 30
  retries:
    description: Retries of a failed request or broken download, with backoff.
    type: int
    default: 3
  discovery_overrides:
    description:
      - Maps a host name to a base URL - every request for that host (discovery pages,
        images, signatures) goes to the base URL instead (mirrors, tests).
    type: dict
  format:
    description:
      - What O(src) is. V(auto) looks at its first archive members or directory entries.
    type: str
    choices: [auto, aci, oci]
    default: auto
  ref:
    description:
      - Which image of an OCI layout or docker archive holding several (a reference such as
        C(alpine:3.19), or a manifest or config digest).
    type: str
  platform:
    description: Which platform of a multi-platform OCI index (C(linux/arm64)); default this host's.
    type: str
  digest:
    description:
      - For a registry reference - the manifest digest (C(sha256:...)) the registry must give, the
        reference's own or its platform's; anything else fails and nothing is kept.
    type: str
  require_digest:
    description:
      - Registries (C(host[:port])) or C(registry/repository) prefixes from which a reference without a
        digest (in the reference or O(digest)) is refused.
    type: list
    elements: str
    default: []
  registries_conf:
    description:
      - A containers C(registries.conf) (mirrors, insecure and blocked registries, unqualified-search
        registries) instead of C(/etc/containers/registries.conf).
    type: path
  auth_file:
    description:
      - The auth file (containers C(auth.json) or Docker C(config.json) format) to read registry
        credentials from, instead of the default ones. O(username) and O(password) win over it.
    type: path
  cert_dir:
    description:
      - A C(certs.d)-style directory (C(<host:port>/ca.crt), client C(*.cert) and C(*.key)) searched
        instead of C(/etc/containers/certs.d) and C(/etc/docker/certs.d).
    type: path
  rootfs:
    description:
      - Build the image from this directory (its content becomes the image's C(rootfs/)).
      - Requires O(manifest). Files are stored owned by root with a fixed mtime, so the same
        directory and manifest always give the same image ID.
    type: path
  manifest:
    description:
      - The image manifest for O(rootfs), as a dictionary (appc ImageManifest).
      - C(acKind) and C(acVersion) default to C(ImageManifest) and C(0.8.11).
    type: dict
  name:
    description:
      - Refer to an image by name, either plain (C(example.com/app)) or with a version and
        labels (C(example.com/app:1.0.0,os=linux)).
      - With O(state=present) alone, the image is discovered (appc discovery) and fetched when
        the store does not have it (see O(pull)); the host's os and arch are the default labels.
      - A fetched image must be signed by a key trusted for its name (M(appc.rocket.cas_trust)).
    type: str
  labels:
    description:
      - Labels that the image referred to by O(name) must carry.
    type: dict
    default: {}
  id:
    description:
      - Refer to an image by ID or by an unambiguous ID prefix (C(sha512-) and at least two hex digits).
    type: str
  state:
    description:
      - V(present) imports or builds the image when it is missing.
      - V(absent) removes the image, its manifest and its rendered trees.
    type: str
    choices: [present, absent]
    default: present
  force:
    description:
      - With O(state=absent), remove the image even when pods still use it.
    type: bool
    default: false
  allow_devices:
    description:
      - Create device nodes and FIFOs found in the archive. By default they are skipped and
        listed in RV(skipped_members).
    type: bool
    default: false
  max_size:
    description:
      - Largest uncompressed size, in bytes, an archive may have (a defence against decompression bombs).
    type: int
    default: 8589934592
  default_stage1:
    description:
      - V(true) refers to the collection's default stage1 image - built on the host from the
        stage1 programs every pod module carries (the same image ID on every host for one
        collection version) and imported, or removed with O(state=absent).
      - Pod modules import it by themselves when a pod first needs it; this makes a host
        ready ahead of time (the M(appc.rocket.runtime) role uses it).
    type: bool
attributes:
  check_mode:
    support: full
    details:
      - A local archive is hashed and its manifest read; nothing is written (not even the data directory).
      - A remote image is looked up (discovery, revalidation) but not downloaded; the task reports that it would be.
  diff_mode:
    support: full
    details: Shows the image entry (without its manifest) before and after.
  platform:
    platforms: posix
    details: Linux only; importing needs root (archives keep their owners and modes).
notes:
  - Runs on the target host with the standard library of Python 3.8 or newer.
seealso:
  - module: appc.rocket.cas_image_info
"""

EXAMPLES = r"""
- name: Import an ACI copied to the host
  appc.rocket.cas_image:
    src: /srv/images/hello-1.0.0-linux-amd64.aci

- name: Build an image from a directory
  appc.rocket.cas_image:
    rootfs: /srv/build/hello/rootfs
    manifest:
      name: example.com/hello
      labels:
        - {name: version, value: "1.0.0"}
        - {name: os, value: linux}
        - {name: arch, value: amd64}
      app:
        exec: [/bin/hello]
        user: "0"
        group: "0"

- name: Import a docker save archive, naming the result
  appc.rocket.cas_image:
    src: /srv/images/nginx.tar
    ref: nginx:1.25
    name: example.com/nginx

- name: Pull an image from a registry, pinned by digest
  appc.rocket.cas_image:
    src: docker://registry.example.com:5000/web:1.4
    digest: sha256:4f3c2b7d0e5a6c8b9d1e2f3a4b5c6d7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b3c

- name: Import the default stage1 ahead of the first pod
  appc.rocket.cas_image:
    default_stage1: true

- name: Remove every trace of an image
  appc.rocket.cas_image:
    name: example.com/hello:1.0.0
    state: absent
"""

RETURN = r"""
image:
  description:
    - The image entry. After O(state=absent), the entry that was removed (empty when there was none).
    - In check mode, what the entry would be (without RV(image.import_time); an OCI image or a remote
      image not fetched yet has no RV(image.id) and RV(image.size) until it is converted or downloaded).
  returned: always
  type: dict
  contains:
    id:
      description: The image ID (C(sha512-) and 128 hex digits).
      type: str
      sample: sha512-5f2d...
    name:
      description: The image name from its manifest.
      type: str
      sample: example.com/hello
    labels:
      description: The image labels, as a dictionary.
      type: dict
      sample: {version: 1.0.0, os: linux, arch: amd64}
    size:
      description: Size of the uncompressed archive in bytes.
      type: int
    import_time:
      description: When the image was imported (seconds since the epoch).
      type: float
    manifest:
      description: The image manifest.
      type: dict
skipped_members:
  description: Device nodes and FIFOs of the archive that were not created (empty when there were none).
  returned: when O(state=present) read an archive into the store (not in check mode)
  type: list
  elements: list
fetch:
  description: How a remote image was obtained - C(url), C(signature_url), C(signer) (the key's
    fingerprint), C(verified), C(signature) (C(verified), or why the check was skipped) and
    C(action) (store, fresh, not-modified, downloaded, would-download), and C(dependencies) (the
    same for each dependency fetched).
  returned: when the image is remote (an https O(src), or an O(name) to discover)
  type: dict
dropped:
  description: Fields of an OCI image config that have no appc equivalent and were not kept.
  returned: when O(state=present) and O(src) is an OCI layout or docker archive (in check mode too)
  type: list
  elements: str
registry:
  description:
    - How a registry image was obtained - C(reference) (normalised), C(digest) (what the reference
      names now), C(manifest) (the image manifest's digest), C(platform), C(config) (the config
      digest), C(registry) (the endpoint that answered) and C(mirror), C(action) (store,
      not-modified, pulled, would-pull), C(verified) (what was checked - no signature exists for
      registry images), C(layers) (C(total), C(downloaded), C(reused)), C(bytes) (C(downloaded),
      C(reused)) and C(requests) (HTTP requests sent).
  returned: when O(src) is a registry reference and O(state=present)
  type: dict
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils import image_task
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, open_store, run


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(image_task.IMAGE_OPTIONS, **DATA_DIR_OPTION),
        mutually_exclusive=image_task.MUTUALLY_EXCLUSIVE,
        required_one_of=image_task.REQUIRED_ONE_OF,
        required_together=image_task.REQUIRED_TOGETHER,
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
    store = open_store(p["data_dir"], create=not module.check_mode and p["state"] == "present")
    return image_task.image_step(p, module.check_mode, store, module._diff, p["data_dir"])


if __name__ == "__main__":
    main()
