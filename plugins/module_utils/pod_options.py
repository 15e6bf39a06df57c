# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The pod options of pod_prepare and pod_run, declared once.

Each option is declared here with its argument spec; how it is compared is decided in one
place too (stage0.podspec.differences: every spec field replaces the pod when it differs;
run options restart it). Modules build their argument spec and the raw pod spec from here.
"""
from __future__ import annotations

from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional

    from ansible_collections.appc.rocket.plugins.module_utils.stage0.converge import Outcome

    Spec = Dict[str, Dict[str, Any]]

APP_OPTIONS: Spec = {
    "image": {"type": "str"},
    "exec": {"type": "list", "elements": "str"},
    "exec_append": {"type": "list", "elements": "str"},
    "user": {"type": "str"},
    "group": {"type": "str"},
    "supplementary_gids": {"type": "list", "elements": "int"},
    "working_dir": {"type": "str"},
    "read_only_rootfs": {"type": "bool", "default": False},
    "mounts": {"type": "list", "elements": "dict", "options": {
        "volume": {"type": "str", "required": True}, "path": {"type": "str", "required": True},
        "read_only": {"type": "bool"},
        "propagation": {"type": "str", "choices": ["private", "rprivate", "slave", "rslave", "shared", "rshared"]}}},
    "isolators": {"type": "list", "elements": "dict"},
    # docker's and podman's names for appc's capability isolators (prepare maps them).
    "cap_add": {"type": "list", "elements": "str"},
    "cap_drop": {"type": "list", "elements": "str"},
}
# A dict, not suboptions: stage0.healthcheck.normalize checks it (docker's forms, durations
# as "1m30s") and names the field of a bad value.
APP_OPTIONS["healthcheck"] = {"type": "dict"}
APP_OPTIONS["stop_signal"] = {"type": "str"}  # stage0/stopping.py; the image's OCI StopSignal by default
# Host devices and secret files (issue #16; stage0/devices.py and stage0/secrets.py check them).
APP_OPTIONS.update({
    "devices": {"type": "list", "elements": "raw"},
    "secrets": {"type": "list", "elements": "dict", "no_log": False, "options": {  # content is no_log
        "name": {"type": "str", "required": True}, "content": {"type": "str", "no_log": True},
        "source": {"type": "path"}, "target": {"type": "str"}, "mode": {"type": "raw"},
        "uid": {"type": "int"}, "gid": {"type": "int"}}},
})
# Resource limits (docker's and podman's names; stage0/limits.py checks and maps them).
_RATES = {"type": "list", "elements": "raw"}
APP_OPTIONS.update({
    "memory": {"type": "raw"}, "memory_reservation": {"type": "raw"}, "memory_swap": {"type": "raw"},
    "cpus": {"type": "raw"}, "cpuset_cpus": {"type": "raw"}, "cpuset_mems": {"type": "raw"},
    "pids_limit": {"type": "int"}, "blkio_weight": {"type": "int"},
    "device_read_bps": dict(_RATES), "device_write_bps": dict(_RATES),
    "device_read_iops": dict(_RATES), "device_write_iops": dict(_RATES),
    "ulimits": {"type": "list", "elements": "raw"}, "shm_size": {"type": "raw"},
    "oom_score_adj": {"type": "int"},
})
# podman's names; stage0.podspec.unsetenv checks them.
APP_OPTIONS.update(unsetenv={"type": "list", "elements": "str"}, unsetenv_all={"type": "bool", "default": False})

APPS_ITEM: Spec = dict(APP_OPTIONS, name={"type": "str"}, environment={"type": "dict"}, annotations={"type": "dict"})
APPS_ITEM["image"] = {"type": "str", "required": True}
# An app's own stop timeout; pod_run's stop_timeout (the pod's) is the default of apps without one.
APPS_ITEM["stop_timeout"] = {"type": "float"}
APPS_ITEM.update(env_file={"type": "list", "elements": "path"}, env_file_secret={"type": "bool", "default": False})

POD_OPTIONS: Spec = {
    "apps": {"type": "list", "elements": "dict", "options": APPS_ITEM},
    "volumes": {"type": "list", "elements": "dict", "options": {
        "name": {"type": "str", "required": True},
        "kind": {"type": "str", "choices": ["host", "empty", "named", "tmpfs"]},
        "source": {"type": "path"},
        "read_only": {"type": "bool", "default": False},
        "recursive": {"type": "bool", "default": True},
        "mode": {"type": "str"},  # 0755 (empty, named), 1777 (tmpfs): podspec fills it in
        "uid": {"type": "int", "default": 0},
        "gid": {"type": "int", "default": 0},
        "volume_name": {"type": "str"},
        "size": {"type": "raw"},
    }},
    "environment": {"type": "dict", "default": {}},
    "secret_environment": {"type": "dict", "default": {}, "no_log": True},
    "inherit_env": {"type": "bool", "default": False},
    "annotations": {"type": "dict", "default": {}},
    "stage1_image": {"type": "str"},
    "overlay": {"type": "str", "choices": ["auto", "yes", "no"], "default": "auto"},
    "update_stage1": {"type": "bool", "default": False},
    "privileged": {"type": "bool", "default": False},
    "sysctls": {"type": "dict"},  # docker's; stage0.podspec.sysctls checks it
    "env_file": {"type": "list", "elements": "path"},
    "env_file_secret": {"type": "bool", "default": False},
    # Registry images (docker://...) of image/apps[].image: pulled before the converge (pod_runner).
    "pull": {"type": "str", "choices": ["never", "new", "update", "missing", "always"], "default": "new"},
    "registry": {"type": "dict", "options": {
        "platform": {"type": "str"},
        "registries_conf": {"type": "path"},
        "auth_file": {"type": "path"},
        "ca_path": {"type": "path"},
        "cert_dir": {"type": "path"},
        "require_digest": {"type": "list", "elements": "str", "default": []},
        "timeout": {"type": "int", "default": 30},
        "retries": {"type": "int", "default": 3},
        "max_size": {"type": "int", "default": 8 * 1024 ** 3},
    }},
    "ports": {"type": "list", "elements": "dict", "options": {
        "name": {"type": "str"},
        "port": {"type": "raw"},  # a number or a range "8000-8009" (podspec.normalize_port)
        "protocol": {"type": "str", "choices": ["tcp", "udp"]},
        "host_port": {"type": "raw", "required": True},  # a number, a range, or 0 (a random free port)
        "host_ip": {"type": "str"},
    }},
}

# The options pod_run adds to the pod options (pod_set's items take the same), with RUN_OPTIONS.
POD_RUN_OPTIONS: Spec = {
    "state": {"type": "str", "choices": ["running", "exited", "absent", "healthy"], "default": "running"},
    "wait": {"type": "bool", "default": False},
    "wait_timeout": {"type": "int"},
    "stop_timeout": {"type": "int", "default": 10},
    "restart": {"type": "bool", "default": False},
    # no, always, on-failure, on-failure:N, unless-stopped: stage0/restart.py checks it.
    "restart_policy": {"type": "str", "default": "no"},
    "restart_retries": {"type": "int"},
    "restart_delay": {"type": "float"},
    "restart_max_delay": {"type": "float"},
    "boot": {"type": "bool", "default": False},  # stage0/boot.py: brought back at boot, whatever restart_policy says
    "hostname": {"type": "str"},
    "domainname": {"type": "str"},  # docker's: the pod's NIS domain name (stage0/uts.py checks both)
    "debug": {"type": "bool", "default": False},
    "fail_on_app_error": {"type": "bool", "default": True},
    "paused": {"type": "bool"},  # docker's: the apps' cgroup v2 freezer (stage0/freezer.py); None leaves it
}

# Run options of pod_run: recorded in the pod's spec.json "run" (converge.RUN_KEYS), so a
# change restarts the pod; they reach stage1 as flags (stage0/run.py _flags()).
RUN_OPTIONS: Spec = {
    "net": {"type": "list", "elements": "str", "default": ["host"]},
    "dns": {"type": "list", "elements": "str"},
    # false, true (a range picked per pod name from the data directory's store) or the
    # first host id of an explicit 65536-id range: stage0.idrange.normalize checks it.
    "private_users": {"type": "raw", "default": False},
    "metadata_service": {"type": "bool", "default": False},
    "metadata_port": {"type": "int", "default": 18112},
    # docker's and podman's: where the pod's cgroups go (stage0/limits.py checks it); a change replaces the pod
    "cgroup_parent": {"type": "str"},
}

# Addresses and names on private networks (issue #17; stage0/netconf.py normalize_options checks
# them): ip, ip6 and mac apply to the first network of `net`. Recorded together as run.net_options.
RUN_OPTIONS.update({
    "ip": {"type": "str"}, "ip6": {"type": "str"}, "mac": {"type": "str"},
    "dns_search": {"type": "list", "elements": "str"}, "dns_options": {"type": "list", "elements": "str"},
    "extra_hosts": {"type": "dict"}, "hostname_aliases": {"type": "list", "elements": "str"},
})
NET_OPTIONS = ("ip", "ip6", "mac", "dns_search", "dns_options", "extra_hosts", "hostname_aliases")
# Where the apps' output goes (stage0/logs.py checks them; a change replaces the pod).
RUN_OPTIONS.update({
    "log_driver": {"type": "str", "choices": ["file", "journald"], "default": "file"},
    "log_max_size": {"type": "raw"},
    "log_max_files": {"type": "int"},
})

SHORTHAND = tuple(APP_OPTIONS)


def argument_spec(**extra: Dict[str, Any]) -> Spec:
    spec = {"name": {"type": "str"}, "uuid": {"type": "str"}, **DATA_DIR_OPTION}
    spec.update({k: dict(v) for k, v in APP_OPTIONS.items()})
    spec.update({k: dict(v) for k, v in POD_OPTIONS.items()})
    spec.update(extra)
    return spec


MUTUALLY_EXCLUSIVE = [("image", "apps"), ("name", "uuid")]


def run_argument_spec() -> Spec:
    """pod_run's argument spec (pod options and run options)."""
    extra = {k: dict(v) for k, v in POD_RUN_OPTIONS.items()}
    extra.update({k: dict(v) for k, v in RUN_OPTIONS.items()})
    return argument_spec(**extra)


def has_spec(params: Dict[str, Any]) -> bool:
    return bool(params.get("image") or params.get("apps"))


def raw_spec(params: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The pod spec the library takes, from module parameters (None: refer to a pod only)."""
    if not has_spec(params):
        for k in SHORTHAND:
            if k != "read_only_rootfs" and params.get(k):
                raise ValueError("%s needs image (or apps)" % k)
        return None
    if params.get("apps"):
        apps = []
        for item in params["apps"]:
            apps.append({k: v for k, v in item.items() if v not in (None, [], {})})
    else:
        app = {k: params[k] for k in SHORTHAND if params.get(k) not in (None, [], {})}
        apps = [app]
    volumes = []
    for v in params.get("volumes") or []:
        # kind is left out when not given: podspec refuses a source without it.
        d = {"name": v["name"], "read_only": v["read_only"]}
        if v["kind"] is not None:
            d["kind"] = v["kind"]
        if v["kind"] == "host" or (v["kind"] is None and v.get("source") is not None):
            d.update(source=v["source"], recursive=v["recursive"])
        else:
            d.update(uid=v["uid"], gid=v["gid"])
            d.update({k: v[k] for k in ("mode", "volume_name", "size") if v.get(k) is not None})
            if v.get("source") is not None:
                d["source"] = v["source"]
        volumes.append(d)
    overlay = {"auto": "auto", "yes": True, "no": False}[params.get("overlay") or "auto"]
    return {"apps": apps, "volumes": volumes, "environment": params.get("environment") or {},
            "secret_environment": params.get("secret_environment") or {},
            "inherit_env": params.get("inherit_env", False), "annotations": params.get("annotations") or {},
            "stage1_image": params.get("stage1_image"), "overlay": overlay,
            "privileged": bool(params.get("privileged")),
            "sysctls": params.get("sysctls") or {},
            "env_file": params.get("env_file") or [], "env_file_secret": bool(params.get("env_file_secret")),
            "ports": [{k: v for k, v in p.items() if v is not None} for p in params.get("ports") or []]}


def run_options(params: Dict[str, Any]) -> Dict[str, Any]:
    """The network run options as converge records them: net as one string ("host",
    "default", "default,backend"), so pods started before lists were accepted compare equal."""
    out: Dict[str, Any] = {"net": ",".join(params.get("net") or ["host"])}
    if params.get("dns"):
        out["dns"] = list(params["dns"])
    net_options = {k: params[k] for k in NET_OPTIONS if params.get(k) is not None}
    if net_options:  # absent when none is given: pods started before these options compare equal
        out["net_options"] = net_options
    return out


def result_diff(outcome: Outcome) -> Dict[str, Any]:
    """--diff content: only the fields that differ (secrets redacted)."""
    if outcome.action in ("create", "run") or outcome.action == "remove":
        return {"before": outcome.before, "after": outcome.after if outcome.action != "remove" else {}}
    before, after = {}, {}
    for d in outcome.differences:
        before[d["field"]] = d["before"]
        after[d["field"]] = d["after"]
    if outcome.action in ("start", "stop", "restart"):
        before["state"] = outcome.before.get("state")
        after["state"] = outcome.after.get("state")
    if "paused" in outcome.after and outcome.before.get("paused") != outcome.after["paused"]:
        before["paused"], after["paused"] = outcome.before.get("paused"), outcome.after["paused"]
    return {"before": before, "after": after}
