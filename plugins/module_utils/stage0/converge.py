"""Converge one named pod to a declared spec and state: the logic behind the pod modules.

Desired spec vs the pod on disk, field by field (podspec.differences), plus the image IDs
the references resolve to now. One comparison decides the action and produces the diff;
check mode walks the same code and only skips the side effects. Everything for one name
happens under that name's lock, so two playbooks converging "web" end with one pod.
"""
from __future__ import annotations

import os
import time
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional

from ..stage1 import contract
from . import pod as podmod
from . import healthcheck, podspec
from .datadir import DataDir
from .errors import NotFoundError, RocketError

RUN_KEYS = ("net", "hostname", "restart_policy", "private_users", "metadata_service", "dns")
RUN_KEYS += ("restart_retries", "restart_delay", "restart_max_delay")  # type: ignore[assignment]  # stage0/restart.py
RUN_KEYS += ("net_options",)  # type: ignore[assignment]  # ip, ip6, mac, dns_search ... (stage0/netconf.py)
RUN_KEYS += ("log_driver", "log_max_size", "log_max_files")  # type: ignore[assignment]  # stage0/logs.py
# A pod recorded before a run option existed ran with this value (unset ones compare equal).
RUN_KEYS += ("boot",)  # type: ignore[assignment]  # stage0/boot.py: restored at boot whatever the policy
RUN_KEYS += ("domainname",)  # type: ignore[assignment]  # stage0/uts.py
RUN_KEYS += ("cgroup_parent",)  # type: ignore[assignment]  # stage0/limits.py; None: stage1's default
RUN_WAS = {"log_driver": "file", "log_max_size": 1 << 20, "log_max_files": 2, "boot": False, "cgroup_parent": None}


class Outcome:
    """What converge did (or, in check mode, would do)."""

    def __init__(self) -> None:
        self.changed = False
        self.action = "none"          # none|create|replace|start|restart|stop|remove|run|pause|unpause
        self.reasons: List[str] = []
        self.differences: List[Dict[str, Any]] = []
        self.pod: Optional["podmod.Pod"] = None
        self.before: Dict[str, Any] = {}
        self.after: Dict[str, Any] = {}
        self.stage1_update: Optional[str] = None
        self.info: Dict[str, Any] = {}


def _resolve_images(store, spec: Dict[str, Any], check: bool, out: Outcome) -> Optional[Dict[str, str]]:
    """App name -> image ID now; None when an image is missing (check mode only)."""
    ids: Dict[str, Any] = {}
    for a in spec["apps"]:
        try:
            ids[a["name"]] = store.resolve(a["image"])["id"] if store is not None else None
        except NotFoundError:
            if not check:
                raise
            ids[a["name"]] = None
        if ids[a["name"]] is None:
            out.reasons.append("image %s is not in the store yet (an earlier task may import it)" % a["image"])
            return None
    return ids


def _default_stage1(store) -> Optional[str]:
    """The ID the current default stage1 has in this store, without building it."""
    from . import stage1_image

    return stage1_image.known_default_id(store) if store is not None else None


def _stored(pod: "podmod.Pod") -> Dict[str, Any]:
    try:
        return pod.spec()
    except (OSError, ValueError):
        return {}


def _view(spec_doc: Dict[str, Any], state: str) -> Dict[str, Any]:
    """The part of a pod that diffs show: redacted spec, images, run options, state."""
    if not spec_doc:
        return {}
    return {"state": state, "spec": podspec.redacted(spec_doc.get("spec") or {}),
            "images": spec_doc.get("images"), "run": spec_doc.get("run") or {},
            "stage1": (spec_doc.get("stage1") or {}).get("id")}


def plan(store, dd: DataDir, raw_spec: Optional[Dict[str, Any]], name: Optional[str], uuid: Optional[str],
         state: str, run_opts: Dict[str, Any], check: bool, restart: bool = False, recreate: bool = False,
         update_stage1: bool = False) -> Outcome:
    """Decide what to do; changes nothing. run_opts["paused"] (None: left as it is) is
    compared last: pausing or thawing a pod that is otherwise as declared is its own action,
    never a replacement, and a pod about to start is paused once it runs."""
    out = _plan(store, dd, raw_spec, name, uuid, state, run_opts, check, restart, recreate, update_stage1)
    paused = run_opts.get("paused")
    if paused is None or state != "running":
        return out
    if paused:
        from . import freezer

        freezer.check_host()
    if out.action == "none" and out.pod is not None and out.before.get("state") == "running":
        from . import freezer

        now = freezer.frozen(out.pod)
        out.before["paused"], out.after["paused"] = bool(now) and all(now.values()), paused
        if paused != out.before["paused"] or (not paused and any(now.values())):
            out.changed, out.action = True, "pause" if paused else "unpause"
            out.reasons.append("pod %s is %s" % (out.pod.uuid, "running" if paused else "paused"))
    elif paused and out.action in ("run", "replace", "restart", "start"):
        out.before["paused"], out.after["paused"] = False, True
    return out


def _plan(store, dd: DataDir, raw_spec: Optional[Dict[str, Any]], name: Optional[str], uuid: Optional[str],
          state: str, run_opts: Dict[str, Any], check: bool, restart: bool, recreate: bool,
          update_stage1: bool) -> Outcome:
    out = Outcome()
    if run_opts.get("net_options") and state != "absent":  # a bad or out-of-pool address: before any change
        from . import netconf

        run_opts["net_options"] = netconf.check_options(dd, netconf.parse_net(run_opts.get("net")),
                                                        run_opts["net_options"])
    actual = None
    if dd.exists():
        if name:
            actual = podmod.find_by_name(dd, name)
        elif uuid:
            actual = podmod.find(dd, uuid)
    out.pod = actual
    astate = actual.state() if actual else "absent"
    stored = _stored(actual) if actual else {}
    out.before = _view(stored, astate)
    if state == "absent":
        if actual:
            out.changed, out.action = True, "remove"
            out.reasons.append("pod %s exists (%s)" % (actual.uuid, astate))
        return out
    if raw_spec is None:  # a pod referred to by name/uuid only
        if actual is None:
            raise NotFoundError("no pod %s in %s, and no apps or image to create it from" % (name or uuid, dd.path))
        desired, ids = podspec.normalize_spec(stored["spec"]) if stored.get("spec") else None, stored.get("images")
        # It runs as it was declared: the run options it recorded, not the defaults of the
        # options this call left out (net=host for a net=none pod would replace it).
        run_opts.update({k: v for k, v in (stored.get("run") or {}).items() if k in RUN_KEYS})
    else:
        raw = dict(raw_spec, name=name)
        desired = podspec.normalize_spec(raw)
        ids = _resolve_images(store, desired, check, out)
    if actual is not None and desired is not None and stored.get("spec"):
        out.differences = podspec.differences(desired, stored["spec"])
        if ids is not None and ids != stored.get("images"):
            for app, iid in sorted(ids.items()):
                if (stored.get("images") or {}).get(app) != iid:
                    out.differences.append({"field": "images.%s" % app, "before": (stored.get("images") or {}).get(app),
                                            "after": iid})
        for k in RUN_KEYS:
            if k in run_opts and run_opts[k] != (stored.get("run") or {}).get(k, RUN_WAS.get(k, run_opts[k])):
                out.differences.append({"field": "run.%s" % k, "before": (stored.get("run") or {}).get(k, RUN_WAS.get(k)),
                                        "after": run_opts[k]})
        default = _default_stage1(store)
        if desired.get("stage1_image") is None and default and stored.get("stage1", {}).get("id") != default:
            if update_stage1:
                out.differences.append({"field": "stage1", "before": stored["stage1"]["id"], "after": default})
            else:
                out.stage1_update = default
    if ids is None and raw_spec is not None:
        out.differences.append({"field": "images", "before": stored.get("images"), "after": "(not in the store)"})
    out.after = {"state": {"present": "prepared", "running": "running", "exited": "exited"}[state],
                 "spec": podspec.redacted(desired) if desired else {}, "images": ids,
                 "run": {k: run_opts[k] for k in RUN_KEYS if k in run_opts}}
    differs = bool(out.differences)
    if actual is None:
        out.changed, out.action = True, ("create" if state == "present" else "run")
        out.reasons.append("no pod %s yet" % (name or uuid or ""))
        return out
    if differs or recreate or (restart and state == "running"):
        out.changed, out.action = True, "replace"
        if differs:
            out.reasons.append("changed: " + ", ".join(d["field"] for d in out.differences))
        else:
            out.reasons.append("restart asked" if restart else "recreate asked")
        return out
    if state == "running":
        if astate == "running":
            return out
        if astate == "prepared":
            out.changed, out.action = True, "start"
        else:
            out.changed, out.action = True, "restart"
            out.reasons.append("pod %s is %s; a pod runs once, so a new one replaces it" % (actual.uuid, astate))
    elif state == "exited":
        if astate == "running":
            out.changed, out.action = True, "stop"
        elif astate == "prepared":
            out.changed, out.action = True, "start"
    return out


def apply(store, dd: DataDir, out: Outcome, raw_spec: Optional[Dict[str, Any]], name: Optional[str], state: str,
          run_opts: Dict[str, Any], stop_timeout: float = 10.0, wait: bool = False,
          wait_timeout: Optional[float] = None) -> Outcome:
    """Carry out the plan (never called in check mode)."""
    from . import pod_gc, prepare, run

    def current() -> "podmod.Pod":
        if out.pod is None:  # plan() names the pod of every action that acts on one
            raise RocketError("no pod to %s" % out.action)
        return out.pod

    declared = raw_spec if raw_spec is not None or out.pod is None else _stored(out.pod).get("spec")

    def fresh() -> "podmod.Pod":
        if declared is None:
            raise RocketError("pod %s has no recorded spec to prepare a new pod from" % (name or out.pod))
        spec = dict(declared, name=name)
        p = prepare.prepare(store, spec)
        out.info.update(p.info)
        return p.pod

    def start(p: "podmod.Pod") -> None:
        sfd = _secrets_fd(p, raw_spec)
        try:
            run.start_detached(p, net=run_opts.get("net", "host"), hostname=run_opts.get("hostname"),
                               domainname=run_opts.get("domainname"), cgroup_parent=run_opts.get("cgroup_parent"),
                               debug=run_opts.get("debug", False), restart_policy=run_opts.get("restart_policy", "no"),
                               private_users=run_opts.get("private_users", False),
                               metadata_service=run_opts.get("metadata_service", False),
                               metadata_port=run_opts.get("metadata_port"), dns=run_opts.get("dns"),
                               restart_retries=run_opts.get("restart_retries"),
                               restart_delay=run_opts.get("restart_delay"),
                               restart_max_delay=run_opts.get("restart_max_delay"), secrets_fd=sfd,
                               net_options=run_opts.get("net_options"),
                               logging={k: run_opts[k] for k in ("log_driver", "log_max_size", "log_max_files")
                                        if k in run_opts},
                               boot=bool(run_opts.get("boot")))
        finally:
            if sfd is not None:
                os.close(sfd)
        doc = p.spec()
        doc["run"] = {k: run_opts[k] for k in RUN_KEYS if k in run_opts}
        doc["started"] = time.time()
        p.write_json(contract.SPEC, doc, 0o600)

    a = out.action
    if a in ("remove", "replace", "restart") and out.pod is not None:
        pod_gc.remove(out.pod, stop_timeout)
        if name:
            podmod.set_name(dd, name, None)
        out.pod = None
    if a == "remove":
        return out
    if a == "stop":
        run.stop(current(), stop_timeout)
        return out
    if a in ("pause", "unpause"):
        from . import freezer

        freezer.pause(current()) if a == "pause" else freezer.unpause(current())
        return out
    if a in ("create", "run", "replace", "restart"):
        out.pod = fresh()
        if name:
            podmod.set_name(dd, name, out.pod.uuid)
    if state in ("running", "exited") and a in ("run", "replace", "restart", "start"):
        start(current())
        if state == "running" and run_opts.get("paused"):
            from . import freezer

            freezer.pause(current())
    if state == "exited" or (wait and state == "running"):
        if out.pod is not None and out.pod.state() == "running":
            if not run.wait(out.pod, wait_timeout):
                raise RocketError("pod %s did not exit within %ss" % (out.pod.uuid, wait_timeout))
    return out


def _secrets_fd(p: "podmod.Pod", raw_spec: Optional[Dict[str, Any]]) -> Optional[int]:
    """The memfd of the pod's secrets (stage0/secrets.py) for its start, or None: from the
    spec the task gave, checked against the digests the pod recorded."""
    stored = _stored(p).get("spec") or {}
    if not any(a.get("secrets") for a in stored.get("apps") or []):
        return None
    from . import secrets

    desired = podspec.normalize_spec(raw_spec) if raw_spec is not None else stored
    return secrets.memfd(desired, stored)


def describe(p: Optional["podmod.Pod"], name: Optional[str] = None, log_lines: int = 20,
             check_networks: bool = False) -> Dict[str, Any]:
    """The pod as modules return it; check_networks (pod_info): a running pod's CNI
    networks get CNI's CHECK, its verdict in networks[].check ("ok" or why not)."""
    if p is None:
        return {}
    from . import run

    try:
        p.refresh()
    except NotFoundError:
        return {}
    state = p.state()
    doc = _stored(p)
    info = run.exit_info(p, state) if os.path.exists(p.file(contract.POD_MANIFEST)) else {"apps": []}
    confinement = None
    for app in info["apps"]:
        app["log"] = run.read_log(p, app["name"], tail=log_lines)
        try:
            app["isolation"] = p.read_json(contract.app_file(app["name"], "isolation.json"), 1 << 16)
            confinement = (app["isolation"].get("lsm") or {}).get("profile") or confinement
        except (OSError, ValueError):
            pass
    healthcheck.attach(p, info["apps"])
    ignored = {}
    try:
        ignored = p.read_json(contract.IGNORED_ISOLATORS, 1 << 16)
    except (OSError, ValueError):
        pass
    networks = None  # net=host: no such file
    try:
        networks = p.read_json(contract.NET_INFO, 1 << 16)
    except (OSError, ValueError):
        pass
    if check_networks and state == "running" and networks and any(n.get("cni") for n in networks):
        from ..stage1 import cni
        from . import ipam

        for n in networks:
            if n.get("cni"):
                n["check"] = cni.check(ipam.net_dir(p.dd), p.uuid, n["ifname"]) or "ok"
    from . import restart, stopping

    stopping.describe_apps(p, info["apps"])
    paused = False
    if state == "running":
        from . import freezer

        paused = freezer.is_paused(p)
    ran = doc.get("run") if doc.get("started") else None  # the run options it last started with
    return {"uuid": p.uuid, "name": name or (doc.get("spec") or {}).get("name"), "state": state, "paused": paused,
            "hostname": (ran.get("hostname") or contract.default_hostname(p.uuid)) if ran is not None else None,
            "domainname": ran.get("domainname") if ran is not None else None,
            "restart": restart.record(p),
            "networks": networks,
            "pid": p.pid() if state == "running" else None, "created": doc.get("created"), "started": doc.get("started"),
            "exit_code": info.get("exit_code"), "apps": info["apps"], "ignored_isolators": ignored,
            "images": doc.get("images"), "overlay": doc.get("overlay"), "lsm": confinement}
