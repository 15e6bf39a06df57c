"""An app's healthcheck: the option's normal form, the OCI config's Healthcheck, and the one
the pod runs (the option over the image's, defaults filled in).

appc has no field for a healthcheck, so it travels as a JSON annotation, as rkt kept its own
extensions: `appc.rocket/healthcheck` on an image (imported from an OCI config, or written by
an ACI's author) and on the pod manifest's app (what the keeper probes). The keeper runs each
probe through stage1's enter, so a probe never has more privilege than its app.
"""
from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional, Tuple

from ..stage1.contract import HEALTHCHECK_ANNOTATION
from .errors import ValidationError

ANNOTATION = HEALTHCHECK_ANNOTATION
FIELDS = ("test", "interval", "timeout", "start_period", "retries", "disable", "on_failure")
# docker's defaults (a check given without them behaves as it would there)
DEFAULTS: Dict[str, Any] = {"interval": 30.0, "timeout": 30.0, "start_period": 0.0, "retries": 3, "on_failure": "none"}
MIN_PERIOD = 0.1      # seconds: a shorter interval or timeout would keep the keeper busy
MAX_SECONDS = 86400.0 * 365
MAX_RETRIES = 1000000
ON_FAILURE = ("none", "restart")
_UNITS = {"ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def duration(value: Any, path: str) -> float:
    """Seconds from a number (seconds) or a Go duration as docker and compose write them
    ("30s", "1m30s", "500ms")."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError(path, value, "must be seconds (a number) or a duration such as 30s, 1m30s or 500ms")
    if isinstance(value, str):
        text = value.strip()
        try:
            return _check_seconds(float(text), value, path)
        except ValueError:
            pass
        total, i = 0.0, 0
        if not text:
            raise ValidationError(path, value, "is empty: give seconds or a duration such as 30s")
        while i < len(text):
            j = i
            while j < len(text) and (text[j].isdigit() or text[j] == "."):
                j += 1
            k = j
            while k < len(text) and not (text[k].isdigit() or text[k] == "."):
                k += 1
            number, unit = text[i:j], text[j:k]
            if not number or unit not in _UNITS or number.count(".") > 1 or number == ".":
                raise ValidationError(path, value, "is not a duration (e.g. 30s, 1m30s, 500ms, 2h)")
            total += float(number) * _UNITS[unit]
            i = k
        return _check_seconds(total, value, path)
    return _check_seconds(float(value), value, path)


def _check_seconds(seconds: float, value: Any, path: str) -> float:
    if not 0 <= seconds <= MAX_SECONDS:  # NaN too
        raise ValidationError(path, value, "must be from 0 to %d seconds" % MAX_SECONDS)
    return round(seconds, 6)


def test_argv(value: Any, path: str) -> Optional[List[str]]:
    """The probe's argv from docker's forms: a string (run by /bin/sh -c), ["CMD", argv...],
    ["CMD-SHELL", "command"], a plain argv; ["NONE"] is None (no check)."""
    if isinstance(value, str):
        if not value.strip():
            raise ValidationError(path, value, "must not be empty")
        return ["/bin/sh", "-c", value]
    if not isinstance(value, (list, tuple)) or not value or not all(isinstance(x, str) for x in value):
        raise ValidationError(path, value, "must be a command string or a list of strings (CMD/CMD-SHELL/NONE forms too)")
    head = value[0]
    if head == "NONE":
        if len(value) > 1:
            raise ValidationError(path, value, "NONE takes no arguments")
        return None
    if head == "CMD-SHELL":
        if len(value) != 2 or not value[1].strip():
            raise ValidationError(path, value, "CMD-SHELL takes exactly one command string")
        return ["/bin/sh", "-c", value[1]]
    argv = list(value[1:]) if head == "CMD" else list(value)
    if not argv or not argv[0]:
        raise ValidationError(path, value, "names no command")
    if any("\0" in a for a in argv):
        raise ValidationError(path, value, "must not contain a NUL byte")
    return argv


def normalize(raw: Any, path: str) -> Optional[Dict[str, Any]]:
    """The option as the spec keeps it: only the fields given, each in its normal form (a field
    not given comes from the image's check, then from DEFAULTS, when the pod is prepared).
    ``{"disable": True}`` drops the image's check; None: the option was not given."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ValidationError(path, raw, "must be a dictionary {test, interval, timeout, start_period, retries, "
                              "disable, on_failure}")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ValidationError("%s.%s" % (path, unknown[0]), raw[unknown[0]],
                              "is not a healthcheck field (%s)" % ", ".join(FIELDS))
    given = {k: v for k, v in raw.items() if v is not None}
    out: Dict[str, Any] = {}
    disable = given.pop("disable", False)
    if not isinstance(disable, bool):
        raise ValidationError(path + ".disable", disable, "must be true or false")
    if "test" in given:
        argv = test_argv(given["test"], path + ".test")
        if argv is None:
            disable = True
            given.pop("test")
        else:
            out["test"] = argv
    if disable:
        if given:
            first = sorted(given)[0]
            raise ValidationError("%s.%s" % (path, first), given[first],
                                  "contradicts disable (or test NONE), which drops the check")
        return {"disable": True}
    for k in ("interval", "timeout"):
        if k in given:
            out[k] = duration(given[k], "%s.%s" % (path, k))
            if out[k] < MIN_PERIOD:
                raise ValidationError("%s.%s" % (path, k), given[k], "must be at least %sms" % int(MIN_PERIOD * 1000))
    if "start_period" in given:
        out["start_period"] = duration(given["start_period"], path + ".start_period")
    if "retries" in given:
        r = given["retries"]
        if isinstance(r, str) and r.strip().isdigit():
            r = int(r)
        if isinstance(r, bool) or not isinstance(r, int) or not 1 <= r <= MAX_RETRIES:
            raise ValidationError(path + ".retries", given["retries"], "must be a whole number from 1 to %d" % MAX_RETRIES)
        out["retries"] = r
    if "on_failure" in given:
        if given["on_failure"] not in ON_FAILURE:
            raise ValidationError(path + ".on_failure", given["on_failure"], "must be none or restart")
        out["on_failure"] = given["on_failure"]
    return out


def from_oci(value: Any) -> Tuple[Optional[str], Optional[str]]:
    """An OCI/docker config's Healthcheck -> (the image annotation's value, or None; what was
    dropped and why, or None). Durations there are nanoseconds; 0 means docker's default."""
    if not value:
        return None, None
    why = "Healthcheck: not a valid check (%s), dropped"
    if not isinstance(value, dict):
        return None, why % "not an object"
    raw: Dict[str, Any] = {}
    try:
        test = value.get("Test")
        if test:
            raw["test"] = test
        for key, field in (("Interval", "interval"), ("Timeout", "timeout"), ("StartPeriod", "start_period")):
            ns = value.get(key)
            if ns:
                if isinstance(ns, bool) or not isinstance(ns, int):
                    raise ValidationError(key, ns, "is not a number of nanoseconds")
                raw[field] = ns / 1e9
        if value.get("Retries"):
            raw["retries"] = value["Retries"]
        check = normalize(raw, "Healthcheck")
    except ValidationError as e:
        return None, why % e
    import json

    if check is None or not check.get("test"):
        # ["NONE"] (a parent's check turned off) or only timings: nothing to run
        return None, None
    return json.dumps(check, sort_keys=True, separators=(",", ":")), None


def _annotation(annotations: Any) -> Optional[str]:
    for item in annotations or []:
        if isinstance(item, dict) and item.get("name") == ANNOTATION:
            return item.get("value")
    return None


def image_check(image_manifest: Dict[str, Any], path: str) -> Optional[Dict[str, Any]]:
    """The check an image brings (its annotation), in normal form, or None."""
    text = _annotation(image_manifest.get("annotations"))
    if text is None:
        return None
    import json

    try:
        doc = json.loads(text)
    except ValueError:
        raise ValidationError(path, text, "the image's %s annotation is not JSON" % ANNOTATION) from None
    try:
        check = normalize(doc, "%s (the image's %s annotation)" % (path, ANNOTATION))
    except ValidationError as e:
        raise ValidationError(path, text, "the image's annotation is not a valid check: %s" % e) from None
    return check if check and check.get("test") else None


def effective(option: Optional[Dict[str, Any]], image_manifest: Dict[str, Any], path: str) -> Optional[Dict[str, Any]]:
    """The check the pod runs: the option's fields over the image's, then docker's defaults;
    None when there is none (or the option disables it). Each field says where it came from
    in ``source``: "image", "option" or "image+option"."""
    if option is not None and option.get("disable"):
        return None
    image = image_check(image_manifest, path)
    if option is None and image is None:
        return None
    out = dict(DEFAULTS)
    out.update(image or {})
    out.update(option or {})
    if not out.get("test"):
        raise ValidationError(path + ".test", None, "is required: the image brings no healthcheck to take it from")
    sources = [s for s, given in (("image", image), ("option", option)) if given]
    out["source"] = "+".join(sources)
    return out


def manifest_annotation(check: Dict[str, Any]) -> Dict[str, str]:
    """The pod manifest app's annotation item for the keeper."""
    import json

    return {"name": ANNOTATION, "value": json.dumps(check, sort_keys=True, separators=(",", ":"))}


def check_annotations(annotations: Dict[str, str], path: str) -> None:
    """A user's annotation may not pose as the option (the keeper would run it)."""
    if ANNOTATION in annotations:
        raise ValidationError(path, ANNOTATION, "is set by the healthcheck option, not by hand")


def normalize_app(raw: Dict[str, Any], app: Dict[str, Any], path: str) -> None:
    """podspec.normalize_app's part: the app's healthcheck option, and no hand-set annotation."""
    app["healthcheck"] = normalize(raw.get("healthcheck"), path + ".healthcheck")
    check_annotations(app["annotations"], path + ".annotations")


def annotate(entry: Dict[str, Any], app: Dict[str, Any], image_manifest: Dict[str, Any], path: str) -> None:
    """prepare's part: the pod manifest app entry gets the check the keeper runs, if any."""
    check = effective(app.get("healthcheck"), image_manifest, path)
    if check is not None:
        entry["annotations"] = list(entry.get("annotations") or []) + [manifest_annotation(check)]


def health(pod: Any) -> Dict[str, Any]:
    """{app: health} as the keeper last wrote it (apps without a check are absent)."""
    from ..stage1.contract import HEALTH

    try:
        doc = pod.read_json(HEALTH, 1 << 20)
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def attach(pod: Any, apps: List[Dict[str, Any]]) -> None:
    """describe's part: pod.apps[].health for each app with a check."""
    doc = health(pod)
    for app in apps:
        if isinstance(doc.get(app["name"]), dict):
            app["health"] = doc[app["name"]]


def checked_apps(pod: Any) -> List[str]:
    """The apps of a pod's manifest that carry a check."""
    return [a["name"] for a in pod.manifest().get("apps") or []
            if any(i.get("name") == ANNOTATION for i in a.get("annotations") or [])]


def _last(h: Dict[str, Any]) -> str:
    last = h.get("last") or {}
    if not last:
        return "no probe has finished yet"
    return "last probe exit code %s, output: %s" % (last.get("exit_code"), (last.get("output") or "").strip() or "(none)")


def wait_healthy(pod: Any, timeout: Optional[float], poll: float = 0.1) -> Dict[str, Any]:
    """pod_run's state=healthy: return once every app with a check is healthy; raise
    RocketError, with the probe's output, when one is unhealthy, the pod stops, or timeout
    (seconds; None: until the checks decide, which they always do) passes."""
    import time

    from .errors import RocketError, TimedOut

    apps = checked_apps(pod)
    if not apps:
        raise RocketError("state=healthy: no app of pod %s has a healthcheck (the healthcheck option, "
                          "or one its image brings)" % pod.uuid)
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        doc = health(pod)
        for name in apps:
            h = doc.get(name) or {}
            if h.get("status") == "unhealthy":
                raise RocketError("app %s of pod %s is unhealthy (%s failed probes in a row): %s"
                                  % (name, pod.uuid, h.get("failing_streak"), _last(h)))
        if all((doc.get(name) or {}).get("status") == "healthy" for name in apps):
            return doc
        pod.refresh()
        if pod.state() != "running":
            raise RocketError("pod %s is %s, it stopped before its apps were healthy" % (pod.uuid, pod.state()))
        if deadline is not None and time.monotonic() >= deadline:
            waiting = [n for n in apps if (doc.get(n) or {}).get("status") != "healthy"]
            raise TimedOut("app %s of pod %s is not healthy after %ss (%s): %s"
                           % (waiting[0], pod.uuid, timeout, (doc.get(waiting[0]) or {}).get("status", "starting"),
                              _last(doc.get(waiting[0]) or {})))
        time.sleep(poll)
