# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pod_set: converge a list of images and pods in one module run.

Each image is one cas_image step (image_task) and each pod one pod_run step (pod_runner),
sharing one open store: the per-task cost Ansible adds (Ansiballz, an interpreter, imports)
is paid once for the whole list. Pods pod_set declares carry a managed-by annotation, so
``purge`` can tell the pods it owns from pods made by hand or by other playbooks.
"""
from __future__ import annotations

from ansible_collections.appc.rocket.plugins.module_utils import image_task
from ansible_collections.appc.rocket.plugins.module_utils import pod_options
from ansible_collections.appc.rocket.plugins.module_utils.pod_runner import StoreHandle, converge_params
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

MANAGED_ANNOTATION = "appc.rocket/managed-by"


def pod_item_spec():
    """pod_run's options, for one item of ``pods`` (named pods only; data_dir is pod_set's)."""
    spec = pod_options.run_argument_spec()
    del spec["data_dir"]
    del spec["uuid"]
    spec["name"] = dict(spec["name"], required=True)
    return spec


def argument_spec():
    return {
        "images": {"type": "list", "elements": "dict", "default": [], "options": dict(image_task.IMAGE_OPTIONS),
                   "mutually_exclusive": image_task.MUTUALLY_EXCLUSIVE,
                   "required_one_of": image_task.REQUIRED_ONE_OF,
                   "required_together": image_task.REQUIRED_TOGETHER},
        "pods": {"type": "list", "elements": "dict", "default": [], "options": pod_item_spec(),
                 "mutually_exclusive": [("image", "apps")]},
        "managed_by": {"type": "str"},
        "purge": {"type": "bool", "default": False},
        "purge_stop_timeout": {"type": "int", "default": 10},
        "data_dir": {"type": "path", "default": "/var/lib/rocket"},
    }


class _ItemModule:
    """What image_task needs of a module, for one image of the list; failures raise."""

    def __init__(self, params, check_mode, data_dir):
        self.params = dict(params, data_dir=data_dir)
        self.check_mode = check_mode

    def fail_json(self, msg, **dummy):
        raise image_task.ImageTaskFailed(msg)


def _label(kind, i, params):
    what = params.get("name") or params.get("src") or params.get("id") or params.get("rootfs")
    return "%s[%d]%s" % (kind, i, " (%s)" % what if what else "")


def _image_matches(ref, pending):
    """Whether an app's image reference names an image a check-mode run would import."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import schema

    if not ref or ref.startswith("sha512-"):
        return None
    try:
        name, labels = schema.parse_image_reference(ref)
    except RocketError:
        return None
    for img in pending:
        if img.get("name") == name and all((img.get("labels") or {}).get(k) == v for k, v in labels.items()):
            return ref
    return None


def _refs(params):
    if params.get("apps"):
        return [a.get("image") for a in params["apps"]]
    return [params.get("image")]


def run(module):
    """The whole of pod_set once its arguments are parsed."""
    p = module.params
    check, diff = module.check_mode, module._diff
    names = [item["name"] for item in p["pods"]]
    twice = sorted(set(n for n in names if names.count(n) > 1))
    if twice:
        module.fail_json(msg="pods: names declared more than once: %s" % ", ".join(twice))
    if p["purge"] and not p["managed_by"]:
        module.fail_json(msg="purge needs managed_by: only pods carrying that annotation value are purged")
    result = {"changed": False, "images": [], "pods": [], "purged": []}
    diffs = []
    try:
        handle = StoreHandle(p["data_dir"], check)
    except RocketError as e:
        module.fail_json(msg=str(e))
    try:
        pending = []
        for i, item in enumerate(p["images"]):
            try:
                r = image_task.image_step(_ItemModule(item, check, p["data_dir"]), handle.store, diff)
            except image_task.ImageTaskFailed as e:
                result["changed"] = any(x["changed"] for x in result["images"])
                module.fail_json(msg="%s: %s" % (_label("images", i, item), e), **result)
            if r["changed"] and item["state"] == "present":
                pending.append(r.get("image") or {})
            if diff and r["changed"]:
                d = r.pop("diff")
                diffs.append(dict(d, before_header="image %s" % _label("images", i, item),
                                  after_header="image %s" % _label("images", i, item)))
            r.pop("diff", None)
            result["images"].append(r)
        for i, item in enumerate(p["pods"]):
            params = dict(item, uuid=None, data_dir=p["data_dir"], update_stage1=item["update_stage1"])
            if p["managed_by"] and pod_options.has_spec(params):
                params["annotations"] = dict(params.get("annotations") or {}, **{MANAGED_ANNOTATION: p["managed_by"]})
            r, err = converge_params(params, "run", check, diff, handle)
            r["name"] = item["name"]
            if err is None and check and not r["changed"] and item["state"] != "absent" and pending:
                hit = [m for m in (_image_matches(ref, pending) for ref in _refs(item)) if m]
                if hit:
                    r.update(changed=True, action="replace",
                             reasons=["image %s would be imported first, and the pod replaced" % hit[0]])
            if err is not None:
                result["pods"].append(r)
                result["changed"] = any(x["changed"] for x in result["images"] + result["pods"])
                module.fail_json(msg="%s: %s" % (_label("pods", i, item), err), **result)
            if diff and r.get("diff") and r["changed"]:
                diffs.append(dict(r["diff"], before_header="pod %s" % item["name"], after_header="pod %s" % item["name"]))
            r.pop("diff", None)
            result["pods"].append(r)
        if p["purge"]:
            result["purged"] = _purge(module, handle, set(names), diffs)
    finally:
        handle.close()
    result["changed"] = bool(result["purged"]) or any(x["changed"] for x in result["images"] + result["pods"])
    if diff:
        result["diff"] = diffs
    module.exit_json(**result)


def _purge(module, handle, declared, diffs):
    """Remove the named pods carrying our managed-by value that are no longer declared."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod

    p = module.params
    if not handle.dd.exists():
        return []
    purged = []
    for uuid, name in sorted(podmod.pod_names(handle.dd).items(), key=lambda x: x[1]):
        if name in declared:
            continue
        found = podmod.find_by_name(handle.dd, name)
        if found is None:
            continue
        try:
            spec = found.spec().get("spec") or {}
        except (OSError, ValueError):
            continue
        ann = spec.get("annotations") or {}
        if not isinstance(ann, dict) or ann.get(MANAGED_ANNOTATION) != p["managed_by"]:
            continue
        params = {k: v.get("default") for k, v in pod_item_spec().items()}
        params.update(name=name, uuid=None, state="absent", data_dir=p["data_dir"], stop_timeout=p["purge_stop_timeout"])
        r, err = converge_params(params, "run", module.check_mode, module._diff, handle)
        if err is not None:
            module.fail_json(msg="purging pod %s: %s" % (name, err), purged=purged)
        if r["changed"]:
            purged.append(name)
            if module._diff and r.get("diff"):
                diffs.append(dict(r["diff"], before_header="pod %s" % name, after_header="pod %s (purged)" % name))
    return purged
