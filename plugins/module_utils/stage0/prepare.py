"""Prepare a pod: a pod manifest from images and options, written to a pod directory.

This is rkt's stage0 ``Prepare`` (and ``MergeEnvs``) with the options of a serious tool:
per-app exec (replace or append), environment, user, group, supplementary GIDs, working
directory, read-only root, mounts, annotations and isolators; per-pod volumes, inherited
and explicit environment, annotations and the stage1 image.

Preparing costs the same whatever the images' size: apps get overlay mounts on the shared
rendered trees (prepare only writes small files). Where overlay cannot work, trees are
copied and the result says so.
"""
from __future__ import annotations

import os
import time
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

from ..stage1 import contract
from . import pod as podmod
from . import limits, schema
from .limits import host_memory
from . import volumes as volumes_mod
from . import crashpoint, healthcheck
from . import stopping
from .podspec import check_sysctls_against, for_disk, merge_envs, normalize_spec
from .errors import ImageError, RocketError, ValidationError
from .fsutil import atomic_write, remove_tree
from .store import Store

OVERLAY_MAGIC_FSTYPES = ("overlay", "aufs")


# -- overlay -----------------------------------------------------------------------------
def overlay_support(path: str) -> Tuple[bool, str]:
    """Can overlayfs use ``path`` as lower/upper? (False, reason) when it cannot."""
    try:
        with open("/proc/filesystems") as f:
            if "\toverlay\n" not in f.read():
                return False, "the kernel has no overlay file system"
    except OSError:
        return False, "cannot read /proc/filesystems"
    fstype = _fstype(path)
    if fstype in OVERLAY_MAGIC_FSTYPES:
        return False, "%s is on %s, which overlayfs cannot use as an upper layer" % (path, fstype)
    return True, ""


def _fstype(path: str) -> str:
    """The file system type of the mount holding ``path`` (from mountinfo)."""
    path = os.path.realpath(path)
    best, best_type = "", ""
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, dummy_sep, right = line.partition(" - ")
                mnt = left.split()[4].replace("\\040", " ")
                if (path == mnt or path.startswith(mnt.rstrip("/") + "/")) and len(mnt) >= len(best):
                    best, best_type = mnt, right.split()[0]
    except OSError:
        pass
    return best_type


# -- prepare -----------------------------------------------------------------------------
def _effective_app(image_app: Optional[Dict[str, Any]], a: Dict[str, Any], spec: Dict[str, Any],
                   image_name: str) -> Optional[Dict[str, Any]]:
    """The app to write in the pod manifest, or None to use the image's own app."""
    overridden = any((a["exec"] is not None, a["exec_append"], a["environment"], a["user"], a["group"],
                      a["supplementary_gids"], a["working_dir"], a["isolators"], a.get("cap_add"),
                      a.get("cap_drop"), spec["environment"],
                      spec["secret_environment"], spec["inherit_env"], a.get("env_file"), spec.get("env_file"),
                      a.get("unsetenv"), a.get("unsetenv_all")))
    overridden = overridden or limits.asked(a)
    if image_app is None and a["exec"] is None:
        raise ImageError("image %s has no app: give exec for app %s" % (image_name, a["name"]))
    if not overridden:
        return None
    import copy

    app: Dict[str, Any] = copy.deepcopy(image_app) if image_app else {"user": "0", "group": "0"}
    if a["exec"] is not None:
        app["exec"] = list(a["exec"])
    if a["exec_append"]:
        app["exec"] = list(app.get("exec") or []) + list(a["exec_append"])
    if not app.get("exec"):
        raise ImageError("app %s: image %s has no exec: give exec" % (a["name"], image_name))
    if a["user"] is not None:
        app["user"] = a["user"]
    if a["group"] is not None:
        app["group"] = a["group"]
    if a["supplementary_gids"]:
        app["supplementaryGIDs"] = list(a["supplementary_gids"])
    if a["working_dir"] is not None:
        app["workingDirectory"] = a["working_dir"]
    if a["isolators"]:
        by_name = {iso["name"]: iso for iso in app.get("isolators") or []}
        for iso in a["isolators"]:
            by_name[iso["name"]] = iso
        app["isolators"] = list(by_name.values())
    if a.get("cap_add") or a.get("cap_drop"):
        app["isolators"] = capability_isolators(app.get("isolators") or [], a["cap_add"], a["cap_drop"])
    if limits.asked(a):
        app["isolators"] = limits.isolators(app.get("isolators") or [], a)
    # Explicit pod-wide, then per-app (highest), then inherited host variables.
    # An env file's variables come before the environment given next to it (docker's rule).
    from . import envfile

    explicit = envfile.pairs(spec.get("env_file") or []) + [tuple(p) for p in spec["environment"] + spec["secret_environment"]]
    env = [] if a.get("unsetenv_all") else [e for e in app.get("environment") or [] if e["name"] not in a.get("unsetenv", ())]
    env = merge_envs(env, False, explicit)
    env = merge_envs(env, spec["inherit_env"], envfile.pairs(a.get("env_file") or []) + [tuple(p) for p in a["environment"]])
    app["environment"] = env
    return schema.validate_app(app, "apps[%s].app" % a["name"])


def capability_isolators(isolators: List[Dict[str, Any]], cap_add: List[str],
                         cap_drop: List[str]) -> List[Dict[str, Any]]:
    """The app's isolators with cap_add/cap_drop as appc's capability isolators, replacing
    the image's: the image's set (or the default one) minus cap_drop plus cap_add, as a
    retain-set; cap_drop alone on the default set as a remove-set, so that a non-root user
    still gets no capabilities (a retain-set gives a non-root user every one it keeps)."""
    from ..stage1 import isolators as s1_isolators

    order = schema.CAPABILITY_NUMBERS.__getitem__
    everything = sorted(schema.LINUX_CAPABILITIES, key=order)
    base = list(s1_isolators.DEFAULT_CAPABILITIES)
    rest = []
    retain = bool(cap_add)
    for iso in isolators:
        if iso.get("name") == "os/linux/capabilities-retain-set":
            base, retain = list(iso["value"]["set"]), True
        elif iso.get("name") == "os/linux/capabilities-remove-set":
            base = [c for c in base if c not in iso["value"]["set"]]
        else:
            rest.append(iso)
    drop = set(everything if "ALL" in cap_drop else cap_drop)
    add = set(everything if "ALL" in cap_add else cap_add)
    keep = sorted((set(base) - drop) | add, key=order)
    if keep and (retain or not set(keep) <= set(s1_isolators.DEFAULT_CAPABILITIES)):
        rest.append({"name": "os/linux/capabilities-retain-set", "value": {"set": keep}})
    else:  # keep is within the default set (and no retain-set may be empty)
        gone = sorted(set(s1_isolators.DEFAULT_CAPABILITIES) - set(keep), key=order)
        rest.append({"name": "os/linux/capabilities-remove-set", "value": {"set": gone}})
    return rest


def _check_isolators(app_name: str, isolators: Optional[List[Dict[str, Any]]]) -> None:
    """What the default stage1 could never run (unknown syscalls, a sysctl of the host) fails
    here, before a pod exists, rather than at its start."""
    if not isolators:
        return
    from ..stage1 import isolators as s1_isolators

    try:
        s1_isolators.check(isolators)
    except ValueError as e:
        raise RocketError("app %s: %s" % (app_name, e))
    for iso in isolators:
        if iso.get("name") == "resource/memory" and isinstance(iso.get("value"), dict):
            check_memory(app_name, iso["value"])


# A memory limit below this cannot start an app (docker's floor, 6 MiB, for the same reason).
MEMORY_LIMIT_MIN = 6 << 20
# Above this many times the host's memory and swap a limit can never bind: most likely a unit
# slip (Ti for Gi is 1024 times); the factor leaves room for a host that grows. The kernel's
# counters are signed 64-bit: nothing at or above 2^63 can be written at all.
MEMORY_HOST_FACTOR = 16


def check_memory(app_name: str, value: Dict[str, Any]) -> None:
    """resource/memory values the kernel would refuse at start, or that cannot mean what
    was written, fail at prepare with the value named."""
    host = host_memory()
    high = (1 << 63) - 1
    if host:
        high = min(high, host * MEMORY_HOST_FACTOR)
    for key in ("limit", "request"):
        if value.get(key) is None:
            continue
        field = "apps[%s].isolators[resource/memory].%s" % (app_name, key)
        q = int(schema.parse_quantity(value[key], field))
        if key == "limit" and q < MEMORY_LIMIT_MIN:
            raise ValidationError(field, value[key], "is %d bytes; a memory limit is at least %d bytes (6Mi)"
                                  % (q, MEMORY_LIMIT_MIN))
        if q > high:
            raise ValidationError(field, value[key], "is %d bytes, more than %d times this host's memory and swap "
                                  "(%d bytes); leave the limit out for none" % (q, MEMORY_HOST_FACTOR, host)
                                  if host and q <= (1 << 63) - 1 else
                                  "is %d bytes; memory amounts are below 2^63 bytes" % q)


def _manifest_ports(ports: List[Dict[str, Any]], pm_apps: List[Dict[str, Any]], resolved: list) -> List[Dict[str, Any]]:
    """appc's pod ``ports`` for the named forwards, each checked against the apps' ports.

    Forwards given by number (no name) live in spec.json only: appc names every port."""
    declared = set()
    for entry, (dummy_a, dummy_rec, dummy_tree, im) in zip(pm_apps, resolved):
        for p in ((entry.get("app") or im.get("app") or {}).get("ports") or []):
            declared.add(p["name"])
    out = []
    for i, p in enumerate(ports):
        if p["port"] is not None:
            continue
        if p["name"] not in declared:
            raise ValidationError("ports[%d].name" % i, p["name"], "is not a port any app of the pod declares (%s)"
                                  % (", ".join(sorted(declared)) or "none declared"))
        doc = {"name": p["name"], "hostPort": p["host_port"]}
        if p["host_ip"]:
            doc["hostIP"] = p["host_ip"]
        out.append(doc)
    return out


class Prepared:
    """What prepare made: the pod (now ``prepared``) and facts for the caller."""

    def __init__(self, pod: "podmod.Pod", manifest: Dict[str, Any], info: Dict[str, Any]) -> None:
        self.pod = pod
        self.manifest = manifest
        self.info = info


def prepare(store: Store, raw_spec: Dict[str, Any], stage1: Optional[Dict[str, Any]] = None) -> Prepared:
    """Prepare a pod from a spec; on any error nothing is left behind."""
    # The store lock, shared, from resolving the images until the pod's refs name them:
    # store gc and image removal (exclusive) cannot delete what the pod is about to use.
    with store.store_lock(exclusive=False):
        return _prepare(store, raw_spec, stage1)


def _check_host_source(source: str, field: str) -> None:
    """The check every start repeats (stage1 paths.open_host): no component a symlink."""
    from ..stage1 import paths

    try:
        os.close(paths.open_host(source))
    except paths.HostPathError as e:
        hint = ""
        if e.why.startswith("is a symlink"):
            hint = "; give the real path (%s): a symlink in a host volume's source is never followed" % (
                os.path.realpath(source))
        why = e.why + (" on the host" if e.why == "does not exist" else "")
        raise ValidationError(field, source, "%s%s" % (why, hint) if e.component == source
                              else "has a component, %s, that %s%s" % (e.component, why, hint))
    except OSError as e:
        raise ValidationError(field, source, "cannot be opened: %s" % e.strerror)


def _prepare(store: Store, raw_spec: Dict[str, Any], stage1: Optional[Dict[str, Any]]) -> Prepared:
    spec = normalize_spec(raw_spec)
    for i, v in enumerate(spec["volumes"]):
        if v["kind"] == "host":
            _check_host_source(v["source"], "volumes[%d].source" % i)
    for i, a in enumerate(spec["apps"]):
        if a.get("devices"):
            from . import devices

            devices.check_host(a["devices"], "apps[%d].devices" % i)
    # Resolve and render every image before creating anything.
    resolved = []
    for a in spec["apps"]:
        rec = store.resolve(a["image"])
        tree = store.render(rec["id"])
        resolved.append((a, rec, tree, store.manifest(rec["id"])))
    if stage1 is None:
        from . import stage1_image

        stage1 = stage1_image.ensure(store, spec["stage1_image"])
    s1_tree = store.render(stage1["id"])

    pm_apps = []
    implicit_vols: List[Dict[str, Any]] = []
    for a, rec, tree, im in resolved:
        app = _effective_app(im.get("app"), a, spec, im["name"])
        _check_isolators(a["name"], (app or im.get("app") or {}).get("isolators"))
        entry: Dict[str, Any] = {"name": a["name"], "image": {"name": im["name"], "id": rec["id"]}}
        if im.get("labels"):
            entry["image"]["labels"] = im["labels"]
        if app is not None:
            entry["app"] = app
        if a["read_only_rootfs"]:
            entry["readOnlyRootFS"] = True
        mounts = [{"volume": m["volume"], "path": m["path"]} for m in a["mounts"]]
        covered = {m["path"] for m in mounts}
        for mp in ((app or im.get("app") or {}).get("mountPoints") or []):
            if mp["path"] in covered:
                continue
            if any(v["name"] == mp["name"] for v in spec["volumes"]):
                vol_name = mp["name"]
            else:
                vol_name = "%s-%s" % (a["name"], mp["name"])
                implicit_vols.append({"name": vol_name, "kind": "empty", "readOnly": bool(mp.get("readOnly")),
                                      "mode": "0755", "uid": 0, "gid": 0})
            mounts.append({"volume": vol_name, "path": mp["path"]})
            covered.add(mp["path"])
        if mounts:
            entry["mounts"] = mounts
        app_ann = dict(a["annotations"], **stopping.annotations(a, im))  # stop_signal, stop_timeout
        if app_ann:
            entry["annotations"] = schema.dict_to_labels(app_ann)
        if a.get("devices") or a.get("secrets"):
            from . import devices, secrets

            entry["annotations"] = list(entry.get("annotations") or []) + (
                [devices.annotation(a["devices"])] if a.get("devices") else []) + (
                [secrets.annotation(a["secrets"])] if a.get("secrets") else [])
        healthcheck.annotate(entry, a, im, "apps[%d].healthcheck" % spec["apps"].index(a))
        pm_apps.append(entry)
    volumes = []
    for v in spec["volumes"]:
        if v["kind"] in volumes_mod.KINDS:
            volumes.append(volumes_mod.manifest_volume(store.dd, v))
            continue
        doc: Dict[str, Any] = {"name": v["name"], "kind": v["kind"]}
        if v["read_only"]:
            doc["readOnly"] = True
        if v["kind"] == "host":
            doc["source"] = v["source"]
            doc["recursive"] = v["recursive"]
        else:
            doc.update(mode=v["mode"], uid=v["uid"], gid=v["gid"])
        volumes.append(doc)
    volumes += implicit_vols
    manifest: Dict[str, Any] = {"acKind": "PodManifest", "acVersion": schema.AC_VERSION, "apps": pm_apps}
    if spec.get("sysctls"):
        for entry, (dummy_a, dummy_rec, dummy_tree, im) in zip(pm_apps, resolved):  # the images' isolators too
            check_sysctls_against(spec["sysctls"], (entry.get("app") or im.get("app") or {}).get("isolators") or [],
                                  entry["name"])
        manifest["isolators"] = [{"name": "os/unix/sysctl", "value": dict(spec["sysctls"])}]
    if volumes:
        manifest["volumes"] = volumes
    ports = _manifest_ports(spec["ports"], pm_apps, resolved)
    if ports:
        manifest["ports"] = ports
    annotations = dict(spec["annotations"])
    if spec["name"]:
        annotations.setdefault("appc.rocket/name", spec["name"])
    if spec.get("privileged"):
        annotations[contract.PRIVILEGED_ANNOTATION] = "true"
    annotations.update(volumes_mod.manifest_annotations(spec))
    if annotations:
        manifest["annotations"] = schema.dict_to_labels(annotations)
    schema.parse_pod_manifest(manifest)

    want_overlay = spec["overlay"]
    ok, why = overlay_support(store.dd.path)
    if want_overlay is True and not ok:
        raise RocketError("overlay was asked for but cannot be used: %s" % why)
    use_overlay = ok and want_overlay is not False
    fallback = None if use_overlay else (why or "overlay disabled by the spec")

    volumes_mod.ensure_named(store.dd, spec)  # first use creates it, as podman does
    pod = podmod.create(store.dd)
    try:
        crashpoint.hit("prepare.before_write")
        _write_pod(pod, manifest, spec, resolved, stage1, s1_tree, use_overlay)
        crashpoint.hit("prepare.after_write")
        pod.move("prepared")
    except BaseException:
        path = pod.path
        pod.release()
        remove_tree(path)
        raise
    pod.release()
    crashpoint.hit("prepare.after_move")
    with store.index.transaction():
        for dummy_app, rec, tree, dummy_manifest in resolved:
            store.index.touch_image(rec["id"])
            store.index.touch_tree(tree["key"])
    crashpoint.hit("prepare.after_touch")
    info = {"overlay": use_overlay, "copy_reason": fallback, "stage1": stage1["id"]}
    return Prepared(pod, manifest, info)


def _write_pod(pod: "podmod.Pod", manifest: Dict[str, Any], spec: Dict[str, Any], resolved: list,
               stage1: Dict[str, Any], s1_tree: Dict[str, Any], use_overlay: bool) -> None:
    import subprocess

    root = pod.path
    # 0600: the manifest carries the apps' environment, secrets included.
    atomic_write(os.path.join(root, "pod"), schema.dump_manifest(manifest), 0o600)
    mounts = []
    if use_overlay:
        s1_upper = os.path.join(root, "overlay", "stage1", "upper")
        for d in ("upper", "work"):
            os.makedirs(os.path.join(root, "overlay", "stage1", d), 0o700)
        os.chmod(s1_upper, 0o755)
        mounts.append({"target": "stage1/rootfs", "lower": s1_tree["rootfs"],
                       "upper": "overlay/stage1/upper", "work": "overlay/stage1/work"})
        s1_root = s1_upper
    else:
        s1_root = os.path.join(root, "stage1", "rootfs")
        os.makedirs(os.path.dirname(s1_root), 0o755)
        subprocess.run(["cp", "-a", s1_tree["rootfs"], s1_root], check=True)
    os.makedirs(os.path.join(root, "stage1", "rootfs"), 0o755, exist_ok=True)
    for a, rec, tree, im in resolved:
        app_dir = os.path.join(s1_root, "opt", "stage2", a["name"])
        os.makedirs(os.path.join(app_dir, "rootfs"), 0o755, exist_ok=True)
        with open(os.path.join(tree["path"], "manifest"), "rb") as f:
            image_manifest = f.read()
        atomic_write(os.path.join(app_dir, "manifest"), image_manifest, 0o644)
        os.makedirs(os.path.join(root, contract.APPS, a["name"]), 0o755, exist_ok=True)
        atomic_write(os.path.join(root, contract.app_file(a["name"], "manifest")), image_manifest, 0o644)
        target = "stage1/rootfs/opt/stage2/%s/rootfs" % a["name"]
        if use_overlay:
            base = os.path.join(root, "overlay", a["name"])
            os.makedirs(os.path.join(base, "work"), 0o700)
            os.makedirs(os.path.join(base, "upper"), 0o755)
            mounts.append({"target": target, "lower": tree["rootfs"], "upper": "overlay/%s/upper" % a["name"],
                           "work": "overlay/%s/work" % a["name"], "readonly": a["read_only_rootfs"]})
        else:
            dst = os.path.join(app_dir, "rootfs")
            os.rmdir(dst)
            subprocess.run(["cp", "-a", tree["rootfs"], dst], check=True)
            if a["read_only_rootfs"]:
                mounts.append({"target": target, "bind": target, "readonly": True})
    from .stage1_image import entrypoints

    with open(os.path.join(s1_tree["path"], "manifest"), "rb") as f:
        eps = entrypoints(schema.parse_image_manifest(f.read()))
    pod.write_json(contract.MOUNTS, {"overlay": use_overlay, "mounts": mounts, "entrypoints": eps,
                                     **volumes_mod.plan(spec)})
    spec_doc = {
        "spec": spec,
        "images": {a["name"]: rec["id"] for a, rec, dummy_tree, dummy_manifest in resolved},
        "trees": {a["name"]: tree["key"] for a, dummy_rec, tree, dummy_manifest in resolved},
        "stage1": {"id": stage1["id"], "tree": s1_tree["key"]},
        "overlay": use_overlay,
        "created": time.time(),
    }
    spec_doc["spec"] = for_disk(spec)
    pod.write_json(contract.SPEC, spec_doc, 0o600)
    refs = ["image %s" % stage1["id"], "tree %s" % s1_tree["key"]]
    for a, rec, tree, dummy_manifest in resolved:
        refs += ["image %s" % rec["id"], "tree %s" % tree["key"]]
    atomic_write(os.path.join(root, "refs"), ("\n".join(refs) + "\n").encode(), 0o644)
    for d in (contract.STATUS, contract.APPS, contract.LOGS):
        os.makedirs(os.path.join(root, d), 0o755, exist_ok=True)
