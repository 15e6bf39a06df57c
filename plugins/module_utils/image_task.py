# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One image step of cas_image and of each image of pod_set: options declared once, logic once.

The functions take a ``module``-like object (``params``, ``check_mode``, ``fail_json``): the
real AnsibleModule for cas_image, a per-item stand-in for pod_set whose ``fail_json`` raises
ImageTaskFailed.
"""
from __future__ import annotations

import os

from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import abspath
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import schema
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import NotFoundError, RocketError

IMAGE_OPTIONS = dict(
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
    default_stage1=dict(type="bool"),  # no default: a false default would satisfy required_one_of
)
MUTUALLY_EXCLUSIVE = [("src", "rootfs", "id", "default_stage1"), ("name", "id", "default_stage1"),
                      ("rootfs", "name")]
REQUIRED_ONE_OF = [("src", "rootfs", "name", "id", "default_stage1")]
REQUIRED_TOGETHER = [("rootfs", "manifest")]


class ImageTaskFailed(Exception):
    """A failure of one image of pod_set, with the message cas_image would fail with."""


def image_step(module, store, diff):
    """Converge one image; returns the result cas_image returns (fails through ``module``)."""
    p = module.params
    try:
        if p["state"] == "present":
            changed, before, after, extra = present(module, store)
        else:
            changed, before, after, extra = absent(module, store)
    except RocketError as e:
        module.fail_json(msg=str(e))
    except OSError as e:
        module.fail_json(msg="%s: %s" % (e.filename or "I/O error", e.strerror or e))
    result = dict(changed=changed, image=after if p["state"] == "present" else before, **extra)
    if diff:
        def strip(d):
            return {k: v for k, v in d.items() if k != "manifest"}

        result["diff"] = dict(before=strip(before), after=strip(after))
    return result


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


def default_stage1(module, store, state):
    """The collection's default stage1 image, built on the host and imported (or removed)."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import stage1_image
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import image

    known = stage1_image.known_default_id(store) if store is not None else None
    rec = store.get(known) if known else None
    if state == "absent":
        if rec is None:
            return False, {}, {}, {}
        if not module.check_mode:
            store.remove(rec["id"], force=module.params["force"])
        return True, entry(rec), {}, {}
    if rec is not None:
        return False, entry(rec), entry(rec, store.manifest(rec["id"])), {}
    if module.check_mode or store is None:
        m = image.manifest()
        return True, {}, entry({"name": m["name"], "labels": schema.labels_to_dict(m["labels"])}), {}
    rec = stage1_image.ensure(store)
    return True, {}, entry(rec, store.manifest(rec["id"])), {}


def present(module, store):
    p = module.params
    check = module.check_mode
    if p.get("default_stage1"):
        return default_stage1(module, store, "present")
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
        if kind != "oci" and store is not None:  # the no-op path: an ACI file imported before
            rec = store.known_source(src)
            if rec is not None and _names(p, rec):
                return False, entry(rec), entry(rec, store.manifest(rec["id"])), \
                    ({} if check else {"skipped_members": rec.get("skipped", [])})
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
            {"skipped_members": rec.get("skipped", [])}
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
            return changed, {}, entry(rec, store.manifest(rec["id"])), {"skipped_members": rec.get("skipped", [])}
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
    extra["skipped_members"] = rec.get("skipped", [])
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
        {"skipped_members": rec.get("skipped", []), "dropped": rec.get("dropped", [])}


def _names(p, rec):
    """Whether a stored image is the one O(name) and O(labels) ask for (no name: any)."""
    if not p["name"]:
        return True
    want, labels = _ref(p)
    return rec.get("name") == want and all((rec.get("labels") or {}).get(k) == v for k, v in labels.items())


def _ref(p):
    name, labels = schema.parse_image_reference(p["name"])
    labels.update({str(k): str(v) for k, v in (p["labels"] or {}).items()})
    return name, labels


def absent(module, store):
    p = module.params
    if store is None:
        return False, {}, {}, {}
    if p.get("default_stage1"):
        return default_stage1(module, store, "absent")
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
