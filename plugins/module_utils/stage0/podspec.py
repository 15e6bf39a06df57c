"""The desired pod: options normalized, every default filled in, compared field by field.

One normal form serves prepare (what to build), spec.json (what was built) and the modules'
idempotence (what differs). Secret environment values are kept out of spec.json: only
their SHA-256 is stored, and differences show them redacted.
"""
from __future__ import annotations

import hashlib
import os
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..stage1.contract import DEVICES_ANNOTATION, PRIVILEGED_ANNOTATION, SECRETS_ANNOTATION
from . import devices as devices_opt
from . import envfile
from . import healthcheck, limits, schema, volumes
from . import secrets as secrets_opt
from . import stopping
from .errors import ValidationError

APP_KEYS: Tuple[str, ...]  # options append their keys below
APP_KEYS = ("name", "image", "exec", "exec_append", "environment", "user", "group", "supplementary_gids",
            "working_dir", "read_only_rootfs", "mounts", "annotations", "isolators", "cap_add", "cap_drop")
# App keys added after pods were first recorded: a spec.json without one has this value, so
# an upgrade does not see a difference (and replace every pod) where the user asked nothing.
APP_KEY_DEFAULTS: Dict[str, Any] = {"cap_add": [], "cap_drop": []}
APP_KEYS += ("healthcheck",)
APP_KEY_DEFAULTS["healthcheck"] = None
APP_KEYS += ("stop_signal", "stop_timeout")  # stage0/stopping.py
APP_KEY_DEFAULTS.update(stop_signal=None, stop_timeout=None)
APP_KEYS += limits.KEYS  # memory, cpus, pids_limit, ulimits, shm_size ... (stage0/limits.py)
APP_KEY_DEFAULTS.update(limits.DEFAULTS)
POD_KEYS: Tuple[str, ...]
POD_KEYS = ("name", "apps", "volumes", "inherit_env", "environment", "secret_environment", "annotations",
            "stage1_image", "overlay", "ports", "privileged")
# devices, secrets and env files (issue #16): stage0/devices.py, secrets.py, envfile.py
APP_KEYS += ("devices", "secrets", "env_file", "env_file_secret")
APP_KEY_DEFAULTS.update(devices=[], secrets=[], env_file=[], env_file_secret=False)
POD_KEYS += ("env_file", "env_file_secret")
POD_KEY_DEFAULTS: Dict[str, Any] = {"env_file": [], "env_file_secret": False}
# docker's and podman's sysctls: the pod's (its network and IPC namespaces are the apps').
POD_KEYS += ("sysctls",)
POD_KEY_DEFAULTS["sysctls"] = {}
# podman's unsetenv and unsetenv_all: what of the image's environment an app does without.
APP_KEYS += ("unsetenv", "unsetenv_all")
APP_KEY_DEFAULTS.update(unsetenv=[], unsetenv_all=False)
REDACTED = "********"


# Limits of what becomes a path: a pod, app or volume name is a file name (<= 255 bytes) with
# suffixes such as ".log" or "-<mount point>" added; 128 leaves room and is more than
# Kubernetes allows a container name (63). A path given for inside an app or on the host is
# at most PATH_MAX (4096 with its NUL) and each of its components at most NAME_MAX.
MAX_NAME_BYTES = 128
PATH_MAX = 4096
NAME_MAX = 255


def check_name(value: Any, path: str) -> str:
    """An AC Name that is short enough to be a file name with what the runtime appends."""
    schema.validate_ac_name(value, path)
    if len(value.encode("utf-8")) > MAX_NAME_BYTES:
        raise ValidationError(path, value, "is %d bytes long; names are at most %d bytes (they become file names)"
                              % (len(value.encode("utf-8")), MAX_NAME_BYTES))
    return value


def check_path(value: Any, path: str, where: str = "inside the app") -> str:
    """An absolute path with no ".." component (a mount that climbs is never what was meant,
    and normalizing it away would change what a symlink on the way means), within
    PATH_MAX and NAME_MAX."""
    if not isinstance(value, str) or not value.startswith("/"):
        raise ValidationError(path, value, "must be an absolute path %s" % where)
    if ".." in value.split("/"):
        raise ValidationError(path, value, "must not have a \"..\" component")
    if "\0" in value:
        raise ValidationError(path, value, "must not contain a NUL byte")
    size = len(value.encode("utf-8", "surrogateescape"))
    if size >= PATH_MAX:
        raise ValidationError(path, value[:64] + "...", "is %d bytes long; a path is at most %d bytes"
                              % (size, PATH_MAX - 1))
    for part in value.split("/"):
        if len(part.encode("utf-8", "surrogateescape")) > NAME_MAX:
            raise ValidationError(path, value[:64] + "...", "has a component of more than %d bytes: %s..."
                                  % (NAME_MAX, part[:32]))
    return value


def check_user(value: Any, path: str, what: str = "user") -> Optional[str]:
    """appc's user and group: a name (of the image's /etc/passwd or /etc/group), a number,
    or an absolute path (its owner). A colon is no part of either: ``root:0`` is a user and
    a group, which appc sets apart (user and group)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValidationError(path, value, "must be a %s name, a number or an absolute path" % what)
    text = str(value)
    if text.startswith("/"):
        return check_path(text, path, "in the image")
    if text.isdigit() and text.isascii():
        if int(text) > 4294967294:
            raise ValidationError(path, value, "is not a valid %s id (0 to 4294967294)" % ("uid" if what == "user" else "gid"))
        return text
    if ":" in text:
        other = "group" if what == "user" else "user"
        raise ValidationError(path, value, "is not a %s: a colon has no place in it; give the %s in %s"
                              % (what, other, other))
    if not text or len(text) > 256 or any(c.isspace() or ord(c) < 32 or c == "/" for c in text):
        raise ValidationError(path, value, "is not a %s name (no spaces, control characters or '/'), "
                              "a number or an absolute path" % what)
    return text


# -- environment -------------------------------------------------------------------------
def env_pairs(value: Any, path: str) -> List[Tuple[str, str]]:
    """Environment as ordered (name, value) pairs from a dict, ``K=V`` strings or appc items."""
    if value is None:
        return []
    items: List[Tuple[str, str]] = []
    if isinstance(value, dict):
        items = [(str(k), "" if v is None else str(v)) for k, v in value.items()]
    elif isinstance(value, (list, tuple)):
        for i, it in enumerate(value):
            if isinstance(it, str):
                if "=" not in it:
                    raise ValidationError("%s[%d]" % (path, i), it, "is not NAME=VALUE")
                k, v = it.split("=", 1)
            elif isinstance(it, dict) and "name" in it:
                k, v = str(it["name"]), str(it.get("value", ""))
            else:
                raise ValidationError("%s[%d]" % (path, i), it, "is not NAME=VALUE or {name, value}")
            items.append((k, v))
    else:
        raise ValidationError(path, value, "must be a dictionary or a list of NAME=VALUE")
    seen = set()
    for i, (k, dummy_value) in enumerate(items):
        schema.validate_env_name(k, "%s[%d].name" % (path, i))
        if k in seen:
            raise ValidationError(path, k, "sets the variable twice")
        seen.add(k)
    return items


def merge_envs(app_env: List[Dict[str, str]], inherit_env: bool, set_env: Sequence[Tuple[str, str]],
               host_env: Optional[Dict[str, str]] = None) -> List[Dict[str, str]]:
    """rkt's MergeEnvs: explicit replaces or appends, then host variables still absent.

    Precedence: explicit > image > host; the image's order is kept, new names append.
    """
    out = [dict(e) for e in app_env]
    where = {e["name"]: i for i, e in enumerate(out)}
    for k, v in set_env:
        if k in where:
            out[where[k]]["value"] = v
        else:
            where[k] = len(out)
            out.append({"name": k, "value": v})
    if inherit_env:
        host = os.environ if host_env is None else host_env
        for k, v in host.items():
            if k not in where and schema.ENV_NAME_RE.match(k):
                where[k] = len(out)
                out.append({"name": k, "value": v})
    return out


# -- the desired spec ------------------------------------------------------------------
def _str_list(value: Any, path: str) -> Optional[List[str]]:
    if value is None:
        return None
    if isinstance(value, str):
        import shlex

        return shlex.split(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(x, (str, int, float)) for x in value):
        raise ValidationError(path, value, "must be a list of strings")
    return [str(x) for x in value]


def _kv(value: Any, path: str) -> Dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, list):
        return schema.labels_to_dict(value, path)
    if not isinstance(value, dict):
        raise ValidationError(path, value, "must be a dictionary")
    return {str(k): str(v) for k, v in value.items()}


def capabilities(value: Any, path: str) -> List[str]:
    """cap_add/cap_drop as docker and podman take them ("NET_ADMIN", "cap_net_admin", "ALL"):
    canonical names, each once, in kernel order ("ALL" alone when given)."""
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise ValidationError(path, value, "must be a list of capability names")
    names = set()
    for i, item in enumerate(value):
        name = str(item).strip().upper()
        if name != "ALL" and not name.startswith("CAP_"):
            name = "CAP_" + name
        if name != "ALL" and name not in schema.LINUX_CAPABILITIES:
            raise ValidationError("%s[%d]" % (path, i), item,
                                  "is not a Linux capability (e.g. NET_ADMIN or CAP_NET_ADMIN, or ALL)")
        names.add(name)
    if "ALL" in names:
        return ["ALL"]
    return sorted(names, key=schema.CAPABILITY_NUMBERS.__getitem__)


def app_name_from_image(ref: str) -> str:
    """A default app name: the last path element of the image name, as an AC Name."""
    import re

    if ref.startswith("docker://"):   # docker://host:port/org/repo:tag@sha256:... -> repo
        ref = ref[len("docker://"):].split("@")[0].rsplit("/", 1)[-1]
    base = ref.split(",")[0].split(":")[0].rstrip("/").rsplit("/", 1)[-1].lower()
    base = re.sub(r"[^a-z0-9]+", "-", base).strip("-")
    return base or "app"


def normalize_app(raw: Any, i: int) -> Dict[str, Any]:
    path = "apps[%d]" % i
    if isinstance(raw, str):
        raw = {"image": raw}
    if not isinstance(raw, dict):
        raise ValidationError(path, raw, "must be an image reference or a dictionary")
    unknown = sorted(set(raw) - set(APP_KEYS))
    if unknown:
        raise ValidationError(path + "." + unknown[0], raw[unknown[0]], "is not an app option")
    image = raw.get("image")
    if isinstance(image, dict):
        name = image.get("id") or schema.format_image_reference(image.get("name", ""), _kv(image.get("labels"), path + ".image.labels"))
        image = name
    if not isinstance(image, str) or not image:
        raise ValidationError(path + ".image", image, "is required: an image ID, ID prefix or name[:version][,label=value]")
    mounts = volumes.normalize_mounts(raw.get("mounts"), path)
    app: Dict[str, Any] = {
        "name": raw.get("name") or app_name_from_image(image),
        "image": image,
        "exec": _str_list(raw.get("exec"), path + ".exec"),
        "exec_append": _str_list(raw.get("exec_append"), path + ".exec_append") or [],
        "environment": [list(p) for p in env_pairs(raw.get("environment"), path + ".environment")],
        "user": check_user(raw.get("user"), path + ".user"),
        "group": check_user(raw.get("group"), path + ".group", "group"),
        "supplementary_gids": [int(g) for g in raw.get("supplementary_gids") or []],
        "working_dir": raw.get("working_dir"),
        "read_only_rootfs": bool(raw.get("read_only_rootfs", False)),
        "mounts": mounts,
        "annotations": _kv(raw.get("annotations"), path + ".annotations"),
        "isolators": list(raw.get("isolators") or []),
        "cap_add": capabilities(raw.get("cap_add"), path + ".cap_add"),
        "cap_drop": capabilities(raw.get("cap_drop"), path + ".cap_drop"),
    }
    app.update(stopping.normalize_app(raw, path, app["annotations"]))
    app.update(_app_extras(raw, path))
    app.update(unsetenv(raw, path))
    app.update(limits.normalize(raw, path, app["isolators"]))
    check_name(app["name"], path + ".name")
    healthcheck.normalize_app(raw, app, path)
    if app["exec"] is not None and not app["exec"]:
        raise ValidationError(path + ".exec", app["exec"], "must not be empty")
    if app["working_dir"] is not None:
        check_path(app["working_dir"], path + ".working_dir")
    if app["isolators"]:
        schema.validate_isolators(app["isolators"], path + ".isolators")
    if app["cap_add"] or app["cap_drop"]:
        for iso in app["isolators"]:
            if str(iso.get("name", "")).startswith("os/linux/capabilities-"):
                raise ValidationError(path + ".cap_add" if app["cap_add"] else path + ".cap_drop",
                                      app["cap_add"] or app["cap_drop"],
                                      "and an %s isolator both set the capabilities: give one" % iso["name"])
    both = set(app["cap_add"]) & set(app["cap_drop"]) - {"ALL"}
    if both:
        raise ValidationError(path + ".cap_drop", sorted(both)[0], "is also in cap_add")
    for j, m in enumerate(mounts):
        schema.validate_ac_name(m["volume"], "%s.mounts[%d].volume" % (path, j))
        check_path(m["path"], "%s.mounts[%d].path" % (path, j))
    return app


def unsetenv(raw: Dict[str, Any], path: str) -> Dict[str, Any]:
    """unsetenv (names, sorted: their order means nothing) and unsetenv_all. They take away
    only what the image sets; what the task sets is set anyway, as in podman."""
    names = raw.get("unsetenv")
    if names is None:
        names = []
    elif isinstance(names, str):
        names = [names]
    if not isinstance(names, (list, tuple)):
        raise ValidationError(path + ".unsetenv", names, "must be a list of environment variable names")
    for i, name in enumerate(names):
        schema.validate_env_name(name, "%s.unsetenv[%d]" % (path, i))
    every = raw.get("unsetenv_all", False)
    if not isinstance(every, bool):
        raise ValidationError(path + ".unsetenv_all", every, "must be true or false")
    if every and names:
        raise ValidationError(path + ".unsetenv", list(names), "names variables that unsetenv_all already "
                              "takes away: give one of the two")
    return {"unsetenv": sorted(set(names)), "unsetenv_all": every}


def sysctls(value: Any, path: str = "sysctls") -> Dict[str, str]:
    """docker's sysctls ({name: value}) as appc's os/unix/sysctl wants them: dotted names of
    the pod's own namespaces only (stage1's rule, so prepare refuses what stage1 would), and
    values as the text written to /proc/sys."""
    if value is None or value == {}:
        return {}  # stage1's isolators (and seccomp's tables) load only for a pod that asks
    if not isinstance(value, dict):
        raise ValidationError(path, value, "must be a dictionary of sysctl names and values")
    from ..stage1 import isolators as s1_isolators

    out: Dict[str, str] = {}
    for name, val in value.items():
        try:
            dotted = s1_isolators.check_sysctl(name)
        except ValueError as e:
            raise ValidationError("%s.%s" % (path, name), val, str(e).split(": ", 1)[-1]) from None
        if isinstance(val, bool) or not isinstance(val, (str, int, float)):
            raise ValidationError("%s.%s" % (path, name), val, "must be a string or a number")
        text = str(val)
        if not text or "\0" in text or "\n" in text:
            raise ValidationError("%s.%s" % (path, name), val, "must be one line of text, not empty")
        if dotted in out:
            raise ValidationError("%s.%s" % (path, name), val, "names %s, which is given twice" % dotted)
        out[dotted] = text
    return dict(sorted(out.items()))


def check_sysctls_against(wanted: Dict[str, str], isolators: List[Dict[str, Any]], app: str) -> None:
    """The sysctls option against one app's os/unix/sysctl isolators: one name with two
    values would fail the start in stage1, so it is refused before anything changes."""
    for iso in isolators:
        for k, v in (iso.get("value") or {}).items() if iso.get("name") == "os/unix/sysctl" else ():
            name = str(k).replace("/", ".")
            if wanted.get(name, str(v)) != str(v):
                raise ValidationError("sysctls.%s" % name, wanted[name], "contradicts app %s's os/unix/sysctl "
                                      "isolator, which sets it to %r" % (app, v))


def _app_extras(raw: Dict[str, Any], path: str) -> Dict[str, Any]:
    """devices, secrets and env_file of an app (issue #16), each in its own module."""
    for name in (DEVICES_ANNOTATION, SECRETS_ANNOTATION):
        if name in (raw.get("annotations") or {}):
            raise ValidationError(path + ".annotations", name, "is set by the %s option, not by hand"
                                  % name.rsplit("/", 1)[1])
    secret = raw.get("env_file_secret", False)
    if not isinstance(secret, bool):
        raise ValidationError(path + ".env_file_secret", secret, "must be true or false")
    return {"devices": devices_opt.normalize(raw.get("devices"), path + ".devices"),
            "secrets": secrets_opt.normalize(raw.get("secrets"), path + ".secrets"),
            "env_file": envfile.normalize(raw.get("env_file"), path + ".env_file"), "env_file_secret": secret}


def normalize_volume(raw: Any, i: int) -> Dict[str, Any]:
    path = "volumes[%d]" % i
    if not isinstance(raw, dict):
        raise ValidationError(path, raw, "must be a dictionary")
    kind = raw.get("kind")
    if kind is None:
        # Inferring a kind from source once made a volume given a source but no kind an
        # empty one (the module's default kind): the user's data went elsewhere, silently.
        if raw.get("source") is not None:
            raise ValidationError(path + ".source", raw["source"],
                                  "is given without kind: kind is required when source is given (kind: host)")
        kind = "empty"
    vol = {"name": raw.get("name"), "kind": kind, "read_only": bool(raw.get("read_only", raw.get("readOnly", False)))}
    check_name(vol["name"], path + ".name")
    if kind == "host":
        vol["source"] = os.path.normpath(check_path(raw.get("source"), path + ".source", "on the host"))
        vol["recursive"] = bool(raw.get("recursive", True))
    elif kind == "empty":
        if raw.get("source"):
            raise ValidationError(path + ".source", raw["source"], "is not allowed for an empty volume")
        mode = str(raw.get("mode", "0755"))
        if not mode.isdigit() or any(c not in "01234567" for c in mode) or len(mode) > 4:
            raise ValidationError(path + ".mode", mode, "is not an octal mode")
        vol["mode"] = mode.rjust(4, "0")
        vol["uid"] = int(raw.get("uid", 0))
        vol["gid"] = int(raw.get("gid", 0))
    elif kind in volumes.KINDS:
        vol.update(volumes.normalize_volume(raw, kind, path))
    else:
        raise ValidationError(path + ".kind", kind, "must be host, empty, named or tmpfs")
    return vol


def normalize_port(raw: Any, i: int) -> Dict[str, Any]:
    """A host port forward: to an app's declared port by name (appc's pod ``ports``), or
    directly to a port number; ``host_ip`` limits it to one host address."""
    path = "ports[%d]" % i
    if not isinstance(raw, dict):
        raise ValidationError(path, raw, "must be a dictionary {name or port, host_port, host_ip}")
    raw = {{"hostPort": "host_port", "hostIP": "host_ip"}.get(k, k): v for k, v in raw.items()}
    unknown = sorted(set(raw) - {"name", "port", "protocol", "host_port", "host_ip"})
    if unknown:
        raise ValidationError(path + "." + unknown[0], raw[unknown[0]], "is not a port option")
    out = {"name": raw.get("name"), "port": raw.get("port"), "protocol": raw.get("protocol"),
           "host_port": raw.get("host_port"), "host_ip": raw.get("host_ip")}
    if out["name"] is None and out["port"] is None:
        raise ValidationError(path, raw, "needs name (a port an app declares) or port (a number)")
    if out["name"] is not None:
        schema.validate_ac_name(out["name"], path + ".name")
    for k in ("port", "host_port"):
        if out[k] is None and k == "port":
            continue
        out[k] = _port_or_range(out[k], "%s.%s" % (path, k), zero=(k == "host_port"))
    _check_ranges(out, path)
    if out["port"] is not None:
        out["protocol"] = out["protocol"] or "tcp"
    if out["protocol"] not in (None, "tcp", "udp"):
        raise ValidationError(path + ".protocol", out["protocol"], "must be tcp or udp")
    if out["protocol"] is not None and out["port"] is None:
        raise ValidationError(path + ".protocol", out["protocol"], "goes with port (a named port has its own)")
    if out["host_ip"] is not None:
        import socket

        try:
            if ":" in str(out["host_ip"]):
                out["host_ip"] = socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, out["host_ip"]))
            else:
                socket.inet_aton(out["host_ip"])
                if str(out["host_ip"]).count(".") != 3:
                    raise OSError
        except (OSError, TypeError, ValueError):
            raise ValidationError(path + ".host_ip", out["host_ip"], "is not an IPv4 or IPv6 address")
    return out


MAX_PORT_RANGE = 1024  # forwards of one range (each is a few nft rules and a reservation file)


def _port_or_range(v: Any, path: str, zero: bool) -> Any:
    """A port number (int), or a range "a-b" (a < b) kept as that string; 0 when zero allows it."""
    if isinstance(v, str) and v.isdigit():
        v = int(v)
    if isinstance(v, str) and v.count("-") == 1 and all(x.isdigit() for x in v.split("-")):
        a, b = (int(x) for x in v.split("-"))
        if not 1 <= a < b <= 65535:
            raise ValidationError(path, v, "is not a port range a-b with 1 <= a < b <= 65535")
        if b - a + 1 > MAX_PORT_RANGE:
            raise ValidationError(path, v, "spans %d ports; a range is at most %d" % (b - a + 1, MAX_PORT_RANGE))
        return "%d-%d" % (a, b)
    if not isinstance(v, int) or isinstance(v, bool) or not (0 if zero else 1) <= v <= 65535:
        raise ValidationError(path, v, "must be a port number from %d to 65535 or a range a-b"
                              % (0 if zero else 1) + (" (0: a random free port)" if zero else ""))
    return v


def _span(v: Any) -> int:
    """How many ports a port or an "a-b" range covers."""
    return int(v.split("-")[1]) - int(v.split("-")[0]) + 1 if isinstance(v, str) else 1


def _check_ranges(out: Dict[str, Any], path: str) -> None:
    """A host port range forwards to a port range of the same length; 0 takes a single port."""
    port, host = out["port"], out["host_port"]
    span = _span
    if isinstance(host, str) and span(host) != span(port):
        raise ValidationError(path + ".host_port", host, "is a range of %d ports for %s %s"
                              % (span(host), "a range of %d" % span(port) if span(port) > 1 else "a single port",
                                 "(port)" if port is not None else "(a named port is a single port)"))
    if host == 0 and span(port) > 1:
        raise ValidationError(path + ".host_port", host, "0 (a random port) takes a single port, not the range %s" % port)
    if isinstance(port, str) and isinstance(host, int) and host and host + span(port) - 1 > 65535:
        raise ValidationError(path + ".host_port", host, "plus the range %s goes beyond 65535" % port)


def normalize_spec(raw: Dict[str, Any]) -> Dict[str, Any]:
    """The desired pod, every default filled in: what idempotence compares field by field."""
    if not isinstance(raw, dict):
        raise ValidationError("", raw, "a pod spec must be a dictionary")
    unknown = sorted(set(raw) - set(POD_KEYS))
    if unknown:
        raise ValidationError(unknown[0], raw[unknown[0]], "is not a pod option")
    apps = raw.get("apps") or []
    if not isinstance(apps, list) or not apps:
        raise ValidationError("apps", apps, "must list at least one app")
    spec = {
        "name": raw.get("name"),
        "apps": [normalize_app(a, i) for i, a in enumerate(apps)],
        "volumes": [normalize_volume(v, i) for i, v in enumerate(raw.get("volumes") or [])],
        "inherit_env": bool(raw.get("inherit_env", False)),
        "environment": [list(p) for p in env_pairs(raw.get("environment"), "environment")],
        "secret_environment": [list(p) for p in env_pairs(raw.get("secret_environment"), "secret_environment")],
        "annotations": _kv(raw.get("annotations"), "annotations"),
        "stage1_image": raw.get("stage1_image"),
        "overlay": raw.get("overlay", "auto"),
        "ports": [normalize_port(p, i) for i, p in enumerate(raw.get("ports") or [])],
        "privileged": raw.get("privileged", False),
        "env_file": envfile.normalize(raw.get("env_file"), "env_file"),
        "env_file_secret": raw.get("env_file_secret", False),
        "sysctls": sysctls(raw.get("sysctls")),
    }
    if not isinstance(spec["env_file_secret"], bool):
        raise ValidationError("env_file_secret", spec["env_file_secret"], "must be true or false")
    if not isinstance(spec["privileged"], bool):
        raise ValidationError("privileged", spec["privileged"], "must be true or false")
    if PRIVILEGED_ANNOTATION in spec["annotations"]:
        raise ValidationError("annotations", PRIVILEGED_ANNOTATION, "is set by the privileged option, not by hand")
    if spec["privileged"]:
        check_privileged(spec["apps"])
    if spec["name"] is not None:
        check_name(spec["name"], "name")
    seen: Dict[str, int] = {}
    for i, a in enumerate(spec["apps"]):
        if a["name"] in seen:
            raise ValidationError("apps[%d].name" % i, a["name"],
                                  "is already the name of apps[%d]; give each app a unique name" % seen[a["name"]])
        seen[a["name"]] = i
    vnames: Dict[str, int] = {}
    for i, v in enumerate(spec["volumes"]):
        if v["name"] in vnames:
            raise ValidationError("volumes[%d].name" % i, v["name"], "is declared twice")
        vnames[v["name"]] = i
    for i, a in enumerate(spec["apps"]):
        for j, m in enumerate(a["mounts"]):
            if m["volume"] not in vnames:
                raise ValidationError("apps[%d].mounts[%d].volume" % (i, j), m["volume"], "names no volume of the pod")
    volumes.check_spec(spec)
    seen_ports: Dict[Tuple[Any, ...], int] = {}
    for i, p in enumerate(spec["ports"]):
        hp = p["host_port"]
        first, last = (int(x) for x in hp.split("-")) if isinstance(hp, str) else (hp, hp)
        for port in range(first, last + 1) if hp else ():  # 0: a random port, never a duplicate
            key = (p["protocol"] or p["name"], port)
            if key in seen_ports:
                raise ValidationError("ports[%d].host_port" % i, hp, "forwards %d, already forwarded by ports[%d]"
                                      % (port, seen_ports[key]))
            seen_ports[key] = i
    for a in spec["apps"] if spec["sysctls"] else ():  # an image's own isolators: prepare checks them
        check_sysctls_against(spec["sysctls"], a["isolators"], a["name"])
    if spec["overlay"] not in ("auto", True, False):
        raise ValidationError("overlay", spec["overlay"], "must be auto, true or false")
    return spec


def check_privileged(apps: List[Dict[str, Any]]) -> None:
    """privileged gives every capability and no seccomp filter: an app that also asks to drop
    capabilities or for a seccomp filter contradicts it, and is refused rather than one of
    them silently losing (docker lets --cap-drop win; one rule, stated, is easier to trust)."""
    for i, a in enumerate(apps):
        if a["cap_drop"]:
            raise ValidationError("apps[%d].cap_drop" % i, a["cap_drop"],
                                  "contradicts privileged (which keeps every capability); drop one of them")
        for item in a["isolators"] or []:
            name = item.get("name") if isinstance(item, dict) else None
            if isinstance(name, str) and (name.startswith("os/linux/capabilities-")
                                          or name.startswith("os/linux/seccomp-")):
                raise ValidationError("apps[%d].isolators" % i, name,
                                      "contradicts privileged (every capability, no seccomp filter); "
                                      "drop one of them")


def _secret_digest(value: str) -> str:
    return "sha256:" + hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()


def for_disk(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The spec as spec.json keeps it: secret values replaced by their digests."""
    out = dict(spec)
    out["secret_environment"] = [[k, v if v.startswith("sha256:") else _secret_digest(v)]
                                 for k, v in spec.get("secret_environment") or []]
    if "env_file" in spec:
        out["env_file"] = envfile.for_disk(spec["env_file"], spec.get("env_file_secret", False))
    out["apps"] = [_app_for_disk(a) for a in spec.get("apps") or []]
    return out


def _app_for_disk(app: Dict[str, Any]) -> Dict[str, Any]:
    if not app.get("secrets") and not app.get("env_file"):
        return app
    out = dict(app)
    out["secrets"] = secrets_opt.for_disk(app.get("secrets") or [])
    out["env_file"] = envfile.for_disk(app.get("env_file") or [], app.get("env_file_secret", False))
    return out


def _app_redact(app: Dict[str, Any]) -> Dict[str, Any]:
    if not app.get("secrets") and not app.get("env_file"):
        return app
    out = dict(app)
    out["secrets"] = secrets_opt.redact(app.get("secrets") or [])
    out["env_file"] = envfile.redact(app.get("env_file") or [], app.get("env_file_secret", False))
    return out


def _redact(spec: Dict[str, Any]) -> Dict[str, Any]:
    out = dict(spec)
    out["secret_environment"] = [[k, REDACTED] for k, dummy_value in spec.get("secret_environment") or []]
    if "env_file" in spec:
        out["env_file"] = envfile.redact(spec["env_file"], spec.get("env_file_secret", False))
    out["apps"] = [_app_redact(a) for a in spec.get("apps") or []]
    return out


def differences(desired: Dict[str, Any], actual: Dict[str, Any]) -> List[Dict[str, Any]]:
    """Field-by-field differences between two normalized specs (secrets compared by digest).

    Each item: ``{"field": "apps[0].exec", "before": ..., "after": ...}`` with secret
    values redacted; an empty list means the pod is as declared.
    """
    want = for_disk(desired)
    have = for_disk(actual)
    out: List[Dict[str, Any]] = []

    def add(field: str, before: Any, after: Any, secret: bool = False) -> None:
        if secret:
            before = [[k, REDACTED] for k, dummy_value in before or []]
            after = [[k, REDACTED] for k, dummy_value in after or []]
        out.append({"field": field, "before": before, "after": after})

    keys = [k for k in POD_KEYS if k != "apps"]
    for k in keys:
        if k in ("ports", "privileged") and not want.get(k) and not have.get(k):
            continue  # pods prepared before ports (privileged) existed have no such field
        if k in POD_KEY_DEFAULTS and want.get(k, POD_KEY_DEFAULTS[k]) == have.get(k, POD_KEY_DEFAULTS[k]):
            continue  # pods recorded before the option existed
        if want.get(k) != have.get(k):
            if k == "env_file":
                add(k, envfile.redact(have.get(k) or [], bool(have.get("env_file_secret"))),
                    envfile.redact(want.get(k) or [], bool(want.get("env_file_secret"))))
                continue
            add(k, have.get(k, POD_KEY_DEFAULTS.get(k)), want.get(k), secret=(k == "secret_environment"))
    wa, ha = want.get("apps") or [], have.get("apps") or []
    for i in range(max(len(wa), len(ha))):
        if i >= len(wa) or i >= len(ha):
            add("apps[%d]" % i, _app_redact(ha[i]) if i < len(ha) else None, _app_redact(wa[i]) if i < len(wa) else None)
            continue
        for k in APP_KEYS:
            if wa[i].get(k, APP_KEY_DEFAULTS.get(k)) != ha[i].get(k, APP_KEY_DEFAULTS.get(k)):
                if k in ("secrets", "env_file"):  # shown redacted (stage0/secrets.py, envfile.py)
                    add("apps[%d].%s" % (i, k), _app_redact(ha[i]).get(k, []), _app_redact(wa[i]).get(k))
                    continue
                add("apps[%d].%s" % (i, k), ha[i].get(k, APP_KEY_DEFAULTS.get(k)), wa[i].get(k))
    return out


def redacted(spec: Dict[str, Any]) -> Dict[str, Any]:
    """The spec fit for results and diffs."""
    return _redact(spec)
