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
    type: str
  pull:
    description:
      - For a remote O(src) or an O(name) to discover - V(never) uses only the store, V(new)
        fetches when the image is not in the store yet, V(update) revalidates a stored remote
        image (C(If-None-Match), C(If-Modified-Since), C(Cache-Control) max-age) and fetches it
        only when it changed.
    type: str
    choices: [never, new, update]
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
        listed in RV(skipped).
    type: bool
    default: false
  max_size:
    description:
      - Largest uncompressed size, in bytes, an archive may have (a defence against decompression bombs).
    type: int
    default: 8589934592
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
skipped:
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
"""

import os

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, abspath, fail, open_store
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import schema
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import NotFoundError, RocketError

ENTRY_KEYS = ("id", "name", "labels", "size", "import_time")


def entry(rec, manifest=None):
    """The public image entry, the same shape for results and diffs."""
    if not rec:
        return {}
    out = {k: rec.get(k) for k in ENTRY_KEYS if rec.get(k) is not None}
    if manifest is not None:
        out["manifest"] = manifest
    return out


def find_referenced(store, params):
    """The stored image that id/name/labels refer to, or None."""
    if store is None:
        return None
    try:
        if params["id"]:
            return store.get(params["id"])
        name, labels = schema.parse_image_reference(params["name"])
        labels.update({str(k): str(v) for k, v in (params["labels"] or {}).items()})
        return store.find(name, labels)
    except NotFoundError:
        return None


def build_manifest(params):
    m = dict(params["manifest"])
    m.setdefault("acKind", "ImageManifest")
    m.setdefault("acVersion", schema.AC_VERSION)
    return schema.parse_image_manifest(m)


def present(module, store):
    p = module.params
    check = module.check_mode
    if p["src"] and "://" in p["src"]:
        name, labels = _ref(p) if p["name"] else (None, None)
        changed, before, after, extra = present_remote(module, store, p["src"], None, None)
        if name and (after.get("name") != name or any((after.get("labels") or {}).get(k) != v
                                                      for k, v in (labels or {}).items())):
            module.fail_json(msg="%s holds image %s, not %s" % (p["src"], after.get("name"),
                                                                schema.format_image_reference(name, labels)))
        return changed, before, after, extra
    if p["src"]:
        src = abspath(p["src"])
        kind = p["format"]
        if kind == "auto":
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import oci

            kind = "aci" if oci.detect_format(src) == "aci" else "oci"
        if kind == "oci":
            return present_oci(module, store, src)
        if store is None:
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci

            with open(src, "rb") as f:
                image_id, size, manifest = aci.inspect_aci(f)
            predicted = {"id": image_id, "name": manifest["name"],
                         "labels": schema.labels_to_dict(manifest.get("labels") or []), "size": size}
            return True, {}, entry(predicted, manifest), {}
        if check:
            info = store.inspect_file(src)
            if info["present"]:
                return False, entry(info), entry(info, store.manifest(info["id"])), {}
            return True, {}, entry(info, info["manifest"]), {}
        if p["name"]:
            info = store.inspect_file(src)
            want, labels = _ref(p)
            if info["name"] != want or any(info["labels"].get(k) != v for k, v in labels.items()):
                module.fail_json(msg="%s holds image %s, not %s" % (
                    src, schema.format_image_reference(info["name"], info["labels"]),
                    schema.format_image_reference(want, labels)))
        rec, changed = store.import_file(src, allow_devices=p["allow_devices"], max_size=p["max_size"])
        return changed, ({} if changed else entry(rec)), entry(rec, store.manifest(rec["id"])), \
            {"skipped": rec.get("skipped", [])}
    if p["rootfs"]:
        manifest = build_manifest(p)
        import tempfile

        from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci

        tmp = tempfile.mkdtemp(prefix="rocket-build-")
        try:
            out = os.path.join(tmp, "image.aci")
            image_id = aci.build_aci(abspath(p["rootfs"]), manifest, out)
            have = None
            if store is not None:
                try:
                    have = store.get(image_id)
                except NotFoundError:
                    have = None
            if have is not None:
                return False, entry(have), entry(have, store.manifest(image_id)), {}
            if check or store is None:
                predicted = {"id": image_id, "name": manifest["name"],
                             "labels": schema.labels_to_dict(manifest.get("labels") or []),
                             "size": os.path.getsize(out)}
                return True, {}, entry(predicted, manifest), {}
            with open(out, "rb") as f:
                rec, changed = store.import_stream(f, source="build:" + abspath(p["rootfs"]))
            return changed, {}, entry(rec, store.manifest(rec["id"])), {"skipped": rec.get("skipped", [])}
        finally:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    if p["name"] and p["pull"] != "never":
        name, labels = _ref(p)
        return present_remote(module, store, None, name, labels)
    rec = find_referenced(store, p)
    if rec is None:
        what = p["id"] or schema.format_image_reference(*_ref(p))
        module.fail_json(msg="image %s is not in the store %s (pull=never)" % (what, p["data_dir"]))
    return False, entry(rec), entry(rec, store.manifest(rec["id"])), {}


def present_remote(module, store, src, name, labels):
    """An image from an https URL or found by discovery, signature checked."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.fetch import fetch_with_dependencies

    p = module.params
    rec, changed, info = fetch_with_dependencies(
        store, src=src, name=name, labels=labels, pull=p["pull"], insecure=p["insecure"] or (),
        ca_path=p["ca_path"], client_cert=p["client_cert"], client_key=p["client_key"], username=p["username"],
        password=p["password"], credentials_file=p["credentials_file"], timeout=p["timeout"], retries=p["retries"],
        max_size=p["max_size"], discovery_overrides=p["discovery_overrides"], allow_devices=p["allow_devices"],
        check=module.check_mode)
    extra = {"fetch": {k: info.get(k) for k in ("url", "signature_url", "signer", "verified", "signature",
                                                "action", "dependencies")}}
    if rec.get("id") is None:  # check mode: would download
        return True, {}, entry(rec), extra
    before = {} if changed else entry(rec)
    after = entry(rec, store.manifest(rec["id"])) if store is not None else entry(rec)
    extra["skipped"] = rec.get("skipped", [])
    return changed, before, after, extra


def present_oci(module, store, src):
    """An OCI layout or docker archive, converted; check mode reads only its documents."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import oci

    p = module.params
    name, labels = (None, None)
    if p["name"]:
        name, labels = _ref(p)
    kw = dict(name=name, labels=labels or None, ref=p["ref"], platform=p["platform"], max_size=p["max_size"],
              allow_devices=p["allow_devices"])
    if module.check_mode or store is None:
        info = oci.inspect_oci(store, src, **kw)
        if info["present"]:
            rec = store.get(info["id"])
            return False, entry(rec), entry(rec, store.manifest(rec["id"])), {"dropped": info["dropped"]}
        predicted = {"name": info["name"], "labels": info["labels"]}
        return True, {}, entry(predicted), {"dropped": info["dropped"]}
    rec, changed = oci.import_oci(store, src, **kw)
    return changed, ({} if changed else entry(rec)), entry(rec, store.manifest(rec["id"])), \
        {"skipped": rec.get("skipped", []), "dropped": rec.get("dropped", [])}


def _ref(p):
    name, labels = schema.parse_image_reference(p["name"])
    labels.update({str(k): str(v) for k, v in (p["labels"] or {}).items()})
    return name, labels


def absent(module, store):
    p = module.params
    if store is None:
        return False, {}, {}, {}
    if p["src"]:
        from ansible_collections.appc.rocket.plugins.module_utils.stage0 import oci

        src = abspath(p["src"])
        if p["format"] == "oci" or (p["format"] == "auto" and oci.detect_format(src) != "aci"):
            info = oci.inspect_oci(store, src, ref=p["ref"], platform=p["platform"])
            rec = store.get(info["id"]) if info.get("present") else None
        else:
            info = store.inspect_file(src)
            rec = info if info.get("present") else None
    else:
        rec = find_referenced(store, p)
    if rec is None:
        return False, {}, {}, {}
    before = entry(rec)
    if not module.check_mode:
        store.remove(rec["id"], force=p["force"])
    return True, before, {}, {}


def main():
    module = AnsibleModule(
        argument_spec=dict(
            src=dict(type="str"),
            format=dict(type="str", choices=["auto", "aci", "oci"], default="auto"),
            pull=dict(type="str", choices=["never", "new", "update"], default="new"),
            insecure=dict(type="list", elements="str", default=[],
                          choices=["image", "signature", "tls", "http", "all-fetch"]),
            ca_path=dict(type="path"), client_cert=dict(type="path"), client_key=dict(type="path"),
            username=dict(type="str"), password=dict(type="str", no_log=True),
            credentials_file=dict(type="path"), timeout=dict(type="int", default=30),
            retries=dict(type="int", default=3), discovery_overrides=dict(type="dict"),
            ref=dict(type="str"),
            platform=dict(type="str"),
            rootfs=dict(type="path"),
            manifest=dict(type="dict"),
            name=dict(type="str"),
            labels=dict(type="dict", default={}),
            id=dict(type="str"),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            force=dict(type="bool", default=False),
            allow_devices=dict(type="bool", default=False),
            max_size=dict(type="int", default=8 * 1024 ** 3),
            **DATA_DIR_OPTION
        ),
        mutually_exclusive=[("src", "rootfs", "id"), ("name", "id"), ("rootfs", "name")],
        required_one_of=[("src", "rootfs", "name", "id")],
        required_together=[("rootfs", "manifest")],
        supports_check_mode=True,
    )
    p = module.params
    try:
        store = open_store(module, create=not module.check_mode)
        if p["state"] == "present":
            changed, before, after, extra = present(module, store)
        else:
            changed, before, after, extra = absent(module, store)
    except RocketError as e:
        fail(module, e)
    except OSError as e:
        module.fail_json(msg="%s: %s" % (e.filename or "I/O error", e.strerror or e))
    result = dict(changed=changed, image=after if p["state"] == "present" else before, **extra)
    if module._diff:
        def strip(d):
            return {k: v for k, v in d.items() if k != "manifest"}

        result["diff"] = dict(before=strip(before), after=strip(after))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
