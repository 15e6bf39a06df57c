# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One converge step for pod_prepare, pod_run and each item of pod_set: params in, result out.

The library decides (stage0.converge.plan) and acts (apply); this file only maps module
parameters onto it and its outcome onto a result, a diff and failures (TaskFailed, with
the result so far, or the library's RocketError).
"""
from __future__ import annotations

from ansible_collections.appc.rocket.plugins.module_utils import pod_options, rocket_module
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import TaskFailed, open_store
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

    from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]  # ansible has no type information

    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store


class StoreHandle:
    """The data directory and (when it may be opened) the store, shared by many converge steps.

    In check mode a missing data directory is not created: the store is then None.
    """

    def __init__(self, data_dir: str, check: bool) -> None:
        self.dd = DataDir(data_dir)
        self.check = check
        self.store: "Optional[Store]" = open_store(data_dir, create=not check)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None


def options(p: "Dict[str, Any]", mode: str) -> "Tuple[Optional[Dict[str, Any]], str, bool, Dict[str, Any]]":
    """The raw pod spec, the state to reach, whether to wait for health checks, and the run
    options: each checked, so a bad one fails here (TaskFailed), before anything changes."""
    try:
        raw = pod_options.raw_spec(p)
    except ValueError as e:
        raise TaskFailed(str(e), changed=False) from None
    state = p["state"]
    healthy = mode == "run" and state == "healthy"
    if p.get("paused") and (state != "running" or p.get("wait")):
        raise TaskFailed("paused: true needs state=running without wait (a paused pod neither exits nor passes its "
                         "health checks)", changed=False)
    if healthy:
        if p.get("wait"):
            raise TaskFailed("wait waits for the pod to exit, state=healthy for its checks: give one of them", changed=False)
        state = "running"
    if mode == "prepare":
        state = "present" if state == "present" else "absent"
    run_opts: "Dict[str, Any]" = {}
    if mode == "run":
        run_opts = dict(pod_options.run_options(p), debug=p["debug"],
                        metadata_service=p["metadata_service"], metadata_port=p["metadata_port"])
        try:
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import idrange, restart

            run_opts.update(restart.normalize(p["restart_policy"], p.get("restart_retries"), p.get("restart_delay"),
                                              p.get("restart_max_delay")))
            run_opts["private_users"] = idrange.normalize(p.get("private_users"))
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import logs

            run_opts.update(logs.normalize(p.get("log_driver"), p.get("log_max_size"), p.get("log_max_files")))
            run_opts["boot"] = bool(p.get("boot"))
            run_opts["paused"] = p.get("paused")
            run_opts["cgroup_parent"] = None
            if p.get("cgroup_parent"):
                from ansible_collections.appc.rocket.plugins.module_utils.stage0 import limits

                run_opts["cgroup_parent"] = limits.cgroup_parent(p["cgroup_parent"])
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import uts

            run_opts.update(uts.normalize(p["hostname"] or None, p.get("domainname") or None))
        except RocketError as e:
            raise TaskFailed(str(e), changed=False) from None
        net_sysctls = sorted(k for k in (raw or {}).get("sysctls") or {} if str(k).replace("/", ".").startswith("net."))
        if net_sysctls and run_opts.get("net") == "host":
            raise TaskFailed("sysctls: %s needs the pod's own network namespace; with net=host it would change "
                             "the host's" % net_sysctls[0], changed=False)
    return raw, state, healthy, run_opts


def check_item(p: "Dict[str, Any]", mode: str) -> None:
    """Everything converge_pod can refuse without the store: pod_set checks every item with it
    before it changes anything, so that a bad item leaves the others as they were."""
    raw, state, dummy_healthy, run_opts = options(p, mode)
    if raw is not None and state != "absent":
        from ansible_collections.appc.rocket.plugins.module_utils.stage0 import podspec

        try:
            podspec.normalize_spec(dict(raw, name=p["name"]))
            if run_opts.get("net_options"):
                from ansible_collections.appc.rocket.plugins.module_utils.stage0 import netconf

                netconf.normalize_options(run_opts["net_options"])
        except RocketError as e:
            raise TaskFailed(str(e), changed=False) from None


def converge_pod(p: "Dict[str, Any]", mode: str, check: bool, diff: bool, handle: StoreHandle) -> "Dict[str, Any]":
    """Converge one pod as parameters ``p`` declare; returns the result.

    A failure raises TaskFailed with the result so far; anything else is a bug and propagates.
    """
    raw, state, healthy, run_opts = options(p, mode)
    dd, store = handle.dd, handle.store
    lock = None
    result: "Dict[str, Any]" = {"changed": False}
    try:
        if not check and p["name"]:
            lock = podmod.name_lock(dd, p["name"])
        pulled = _pull_images(raw, p, check, store) if raw is not None and state != "absent" else []
        out = converge.plan(store, dd, raw, p["name"], p["uuid"], state, run_opts, check,
                            restart=p.get("restart", False), recreate=p.get("recreate", False),
                            update_stage1=p["update_stage1"])
        if run_opts.get("log_driver") == "journald" and out.action in ("run", "start", "restart", "replace"):
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import logs

            logs.check_journald()  # before anything is removed or prepared (and in check mode: it would fail)
        moved = [i["reference"] for i in pulled if i["changed"]]
        if check and moved and out.pod is not None and out.action not in ("create", "run", "replace"):
            # The store still resolves the reference to the old image: say what the pull would do.
            out.changed, out.action = True, "replace"
            out.reasons.append("image %s would be pulled anew" % ", ".join(moved))
        if out.changed and not check:
            converge.apply(store, dd, out, raw, p["name"], state, run_opts, stop_timeout=p.get("stop_timeout", 10),
                           wait=p.get("wait", False), wait_timeout=p.get("wait_timeout"))
        elif not out.changed and mode == "run" and p.get("wait") and out.pod is not None and not check:
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import run

            if not run.wait(out.pod, p.get("wait_timeout")):
                raise TaskFailed("pod %s did not exit within %ss" % (out.pod.uuid, p.get("wait_timeout")), **result)
        result = {"changed": out.changed, "action": out.action, "reasons": out.reasons}
        if state == "absent":
            result["pod"] = {"uuid": out.pod.uuid, "name": p["name"]} if (out.pod and out.changed) else {}
        elif check and out.changed:
            result["pod"] = converge.describe(out.pod, p["name"]) if out.action in ("start", "stop") else {}
        else:
            result["pod"] = converge.describe(out.pod, p["name"])
        if pulled:
            result["pulled"] = pulled
        if out.stage1_update:
            result["stage1_update_available"] = out.stage1_update
        if out.info.get("copy_reason"):
            result["overlay_fallback"] = out.info["copy_reason"]
        if diff:
            result["diff"] = pod_options.result_diff(out)
        if healthy and not check and out.pod is not None:
            from ansible_collections.appc.rocket.plugins.module_utils.stage0 import healthcheck

            try:
                healthcheck.wait_healthy(out.pod, p.get("wait_timeout"))
            finally:
                result["pod"] = converge.describe(out.pod, p["name"])
    except RocketError as e:
        raise TaskFailed(str(e), **result) from None
    finally:
        if lock is not None:
            lock.close()
    waited = mode == "run" and (state == "exited" or p.get("wait")) and not check
    if waited and p.get("fail_on_app_error", True):
        bad = [a for a in result["pod"].get("apps") or [] if a.get("exit_code") not in (0, None) or a.get("error")]
        if bad:
            a = bad[0]
            why = a.get("error") or ("exit code %s" % a.get("exit_code"))
            pod = result["pod"]
            which = "%s (%s)" % (pod["name"], pod.get("uuid")) if pod.get("name") else pod.get("uuid")
            raise TaskFailed("app %s of pod %s failed: %s" % (a["name"], which, why), **result)
    return result


def _pull_images(raw: "Dict[str, Any]", p: "Dict[str, Any]", check: bool,
                 store: "Optional[Store]") -> "List[Dict[str, Any]]":
    """Pull every registry image (``docker://``) the pod names, by the pull policy, each once."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import image_converge, registry_pull

    out: "List[Dict[str, Any]]" = []
    seen = set()
    for app in raw.get("apps") or []:
        ref = app.get("image")
        if not registry_pull.is_reference(ref) or ref in seen:
            continue
        seen.add(ref)
        opts = image_converge.registry_options(dict(p.get("registry") or {}), pull=p.get("pull") or "new")
        rec, changed, info = registry_pull.pull(store, ref, opts, check=check)
        out.append(dict(info, image=rec.get("id"), changed=changed))
    return out


def converge_task(module: "AnsibleModule", mode: str) -> None:
    """The whole of pod_prepare and pod_run once their arguments are parsed."""
    def task(module: "AnsibleModule") -> "Dict[str, Any]":
        handle = StoreHandle(module.params["data_dir"], module.check_mode)
        try:
            return converge_pod(module.params, mode, module.check_mode, module._diff, handle)
        finally:
            handle.close()

    rocket_module.run(module, task)
