# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""pod_set: converge a list of images and pods in one module run.

Each image is one cas_image step (image_task) and each pod one pod_run step (pod_runner),
sharing one open store: the per-task cost Ansible adds (Ansiballz, an interpreter, imports)
is paid once for the whole list. Pods pod_set declares carry a managed-by annotation, so
``purge`` can tell the pods it owns from pods made by hand or by other playbooks. The running
pods the task removes (declared absent, or purged) are all signalled before any is waited for:
N stops take the slowest one's time, not their sum; and stage1's gc of them all runs in one
process, each pod as soon as it has stopped.
"""
from __future__ import annotations

from ansible_collections.appc.rocket.plugins.module_utils import image_task, pod_options, rocket_module
from ansible_collections.appc.rocket.plugins.module_utils.pod_runner import StoreHandle, check_item, converge_pod
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, TaskFailed
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Set, Tuple

    from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]  # ansible has no type information

MANAGED_ANNOTATION = "appc.rocket/managed-by"


def pod_item_spec() -> "Dict[str, Any]":
    """pod_run's options, for one item of ``pods`` (named pods only; data_dir is pod_set's)."""
    spec = pod_options.run_argument_spec()
    del spec["data_dir"]
    del spec["uuid"]
    spec["name"] = dict(spec["name"], required=True)
    return spec


def argument_spec() -> "Dict[str, Any]":
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
        **DATA_DIR_OPTION,
    }


def _label(kind: str, i: int, params: "Dict[str, Any]") -> str:
    what = params.get("name") or params.get("src") or params.get("id") or params.get("rootfs")
    return "%s[%d]%s" % (kind, i, " (%s)" % what if what else "")


def _image_matches(ref: "Optional[str]", pending: "List[Dict[str, Any]]") -> "Optional[str]":
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


def _refs(params: "Dict[str, Any]") -> "List[Optional[str]]":
    if params.get("apps"):
        return [a.get("image") for a in params["apps"]]
    return [params.get("image")]


def run(module: "AnsibleModule") -> None:
    """The whole of pod_set once its arguments are parsed."""
    p = module.params
    names = [item["name"] for item in p["pods"]]
    twice = sorted(set(n for n in names if names.count(n) > 1))
    if twice:
        module.fail_json(msg="pods: names declared more than once: %s" % ", ".join(twice))
    if p["purge"] and not p["managed_by"]:
        module.fail_json(msg="purge needs managed_by: only pods carrying that annotation value are purged")
    rocket_module.run(module, _converge)


def _converge(module: "AnsibleModule") -> "Dict[str, Any]":
    p = module.params
    check, diff = module.check_mode, module._diff
    names = [item["name"] for item in p["pods"]]
    result: "Dict[str, Any]" = {"changed": False, "images": [], "pods": [], "purged": []}
    diffs: "List[Dict[str, Any]]" = []
    for i, item in enumerate(p["pods"]):  # every item's options first: a bad one changes nothing
        try:
            check_item(_item_params(p, item), "run")
        except TaskFailed as e:
            raise TaskFailed("%s: %s" % (_label("pods", i, item), e.msg), **result) from None
    handle = StoreHandle(p["data_dir"], check)
    try:
        pending = []
        for i, item in enumerate(p["images"]):
            try:
                r = image_task.image_step(item, check, handle.store, diff, p["data_dir"])
            except (RocketError, TaskFailed) as e:
                result["changed"] = any(x["changed"] for x in result["images"])
                raise TaskFailed("%s: %s" % (_label("images", i, item), e), **result) from None
            if r["changed"] and item["state"] == "present":
                pending.append(r.get("image") or {})
            if diff and r["changed"]:
                d = r.pop("diff")
                diffs.append(dict(d, before_header="image %s" % _label("images", i, item),
                                  after_header="image %s" % _label("images", i, item)))
            r.pop("diff", None)
            result["images"].append(r)
        if not check:
            _stop_together(handle, p, set(names))
        for i, item in enumerate(p["pods"]):
            try:
                r = converge_pod(_item_params(p, item), "run", check, diff, handle)
            except TaskFailed as e:
                result["pods"].append(dict(e.result, name=item["name"]))
                result["changed"] = any(x["changed"] for x in result["images"] + result["pods"])
                raise TaskFailed("%s: %s" % (_label("pods", i, item), e.msg), **result) from None
            r["name"] = item["name"]
            if check and not r["changed"] and item["state"] != "absent" and pending:
                hit = [m for m in (_image_matches(ref, pending) for ref in _refs(item)) if m]
                if hit:
                    r.update(changed=True, action="replace",
                             reasons=["image %s would be imported first, and the pod replaced" % hit[0]])
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
    return result


def _item_params(p: "Dict[str, Any]", item: "Dict[str, Any]") -> "Dict[str, Any]":
    """An item as pod_run's parameters, with the task's data directory and managed_by annotation."""
    params = dict(item, uuid=None, data_dir=p["data_dir"], update_stage1=item["update_stage1"])
    if p["managed_by"] and pod_options.has_spec(params):
        params["annotations"] = dict(params.get("annotations") or {}, **{MANAGED_ANNOTATION: p["managed_by"]})
    return params


def _purge_targets(handle: StoreHandle, p: "Dict[str, Any]", declared: "Set[str]") -> "List[Tuple[str, Any]]":
    """(name, pod) of each named pod carrying our managed-by value that is no longer declared."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod

    if not handle.dd.exists():
        return []
    out = []
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
        out.append((name, found))
    return out


def _stop_together(handle: StoreHandle, p: "Dict[str, Any]", declared: "Set[str]") -> None:
    """Stop at once every running pod this task removes (declared absent, or purged): one
    after another, N stops took N stop times. stage1's gc of them all runs in one process,
    each pod as it stops (pod_gc.stop_and_gc): one interpreter a pod was most of a removal.
    Each removal below then finds its pod exited and its gc done; a stop or gc that fails
    here is tried again there, and fails there with the pod's name."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc

    if not handle.dd.exists():
        return
    todo = []
    try:
        for item in p["pods"]:
            if item["state"] == "absent":
                found = podmod.find_by_name(handle.dd, item["name"])
                if found is not None:
                    t = item.get("stop_timeout")
                    todo.append((found, 10 if t is None else t))
        if p["purge"]:
            todo += [(found, p["purge_stop_timeout"]) for dummy, found in _purge_targets(handle, p, declared)]
        if len(todo) > 1:
            pod_gc.stop_and_gc(todo)
    except (RocketError, OSError):
        pass


def _purge(module: "AnsibleModule", handle: StoreHandle, declared: "Set[str]",
           diffs: "List[Dict[str, Any]]") -> "List[str]":
    """Remove the named pods carrying our managed-by value that are no longer declared."""
    p = module.params
    purged: "List[str]" = []
    for name, dummy in _purge_targets(handle, p, declared):
        params = {k: v.get("default") for k, v in pod_item_spec().items()}
        params.update(name=name, uuid=None, state="absent", data_dir=p["data_dir"], stop_timeout=p["purge_stop_timeout"])
        try:
            r = converge_pod(params, "run", module.check_mode, module._diff, handle)
        except TaskFailed as e:
            raise TaskFailed("purging pod %s: %s" % (name, e.msg), purged=purged) from None
        if r["changed"]:
            purged.append(name)
            if module._diff and r.get("diff"):
                diffs.append(dict(r["diff"], before_header="pod %s" % name, after_header="pod %s (purged)" % name))
    return purged
