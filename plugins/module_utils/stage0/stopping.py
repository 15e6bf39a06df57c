"""Per-app stop signal and stop timeout (docker's and podman's stop_signal, stop_timeout).

stage0 stops a pod by SIGTERM to its PID 1; PID 1 sends each app its own stop signal and
SIGKILLs it once its stop timeout is over. An app's ``stop_timeout`` wins over the pod's
(pod_run's ``stop_timeout``, the default for apps without one); the image's OCI
``StopSignal`` is the default of ``stop_signal``. Both reach stage1 as pod manifest app
annotations (contract.STOP_SIGNAL_ANNOTATION, STOP_TIMEOUT_ANNOTATION); the pod-level
default reaches PID 1 in the ``stopping`` mark. PID 1 itself is killed once the longest
timeout and GRACE are over.
"""
from ..stage1 import contract
from .errors import ImageError, ValidationError

TYPE_CHECKING = False  # typing costs milliseconds per start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional  # noqa: F401

    from .pod import Pod  # noqa: F401

GRACE = 2.0  # after the longest stop timeout: PID 1's SIGKILLs and post-stop handlers
MAX_TIMEOUT = 86400


def parse_signal(value: "Any") -> "Optional[str]":
    """A signal as docker takes it ("SIGTERM", "TERM", "15", 15, "SIGRTMIN+3") -> its
    canonical name, or None when it is not one (SIGSTOP and friends stop nothing)."""
    import signal

    if isinstance(value, bool) or not isinstance(value, (int, str)):
        return None
    text = str(value).strip().upper()
    if text.isdigit() and text.isascii():
        n = int(text)
    else:
        if not text.startswith("SIG"):
            text = "SIG" + text
        base, plus, off = text.partition("+")
        if base == "SIGRTMIN" and (not plus or (off.isdigit() and off.isascii())):
            n = signal.SIGRTMIN + (int(off) if plus else 0)
        elif base == "SIGRTMAX" and not plus:
            n = signal.SIGRTMAX
        else:
            member = getattr(signal.Signals, base, None) if base.isidentifier() else None
            if member is None or plus:
                return None
            n = int(member)
    if n in (int(signal.SIGSTOP), int(signal.SIGTSTP), int(signal.SIGTTIN), int(signal.SIGTTOU)):
        return None
    if signal.SIGRTMIN <= n <= signal.SIGRTMAX:
        return "SIGRTMIN+%d" % (n - signal.SIGRTMIN) if n != signal.SIGRTMIN else "SIGRTMIN"
    try:
        return signal.Signals(n).name
    except ValueError:
        return None


def signal_number(name: str) -> int:
    """The host's number of a canonical name from parse_signal."""
    import signal

    if name.startswith("SIGRTMIN"):
        return signal.SIGRTMIN + int(name.partition("+")[2] or 0)
    return int(getattr(signal.Signals, name))


def normalize_app(raw: "Dict[str, Any]", path: str, app_annotations: "Dict[str, str]") -> "Dict[str, Any]":
    """stop_signal (canonical name or None: the image's, else SIGTERM) and stop_timeout
    (seconds or None: the pod's) of one app of a pod spec."""
    sig = raw.get("stop_signal")
    out = {"stop_signal": None, "stop_timeout": None}  # type: Dict[str, Any]
    if sig is not None and sig != "":
        out["stop_signal"] = parse_signal(sig)
        if out["stop_signal"] is None:
            raise ValidationError(path + ".stop_signal", sig, "is not a signal that stops a process "
                                  "(a name such as SIGTERM or TERM, or a number)")
    t = raw.get("stop_timeout")
    if t is not None:
        if isinstance(t, bool) or not isinstance(t, (int, float, str)):
            raise ValidationError(path + ".stop_timeout", t, "must be a number of seconds")
        try:
            secs = float(t)
        except ValueError:
            raise ValidationError(path + ".stop_timeout", t, "must be a number of seconds") from None
        if not 0 <= secs <= MAX_TIMEOUT:
            raise ValidationError(path + ".stop_timeout", t, "must be from 0 to %d seconds" % MAX_TIMEOUT)
        out["stop_timeout"] = int(secs) if secs == int(secs) else secs
    for k in (contract.STOP_SIGNAL_ANNOTATION, contract.STOP_TIMEOUT_ANNOTATION):
        if k in app_annotations:
            raise ValidationError(path + ".annotations", k, "is set by the stop_signal and stop_timeout options, "
                                  "not by hand")
    return out


def image_signal(image_manifest: "Dict[str, Any]", app_name: str) -> "Optional[str]":
    """The image's OCI StopSignal (kept by the OCI import), canonical; None when absent."""
    for a in image_manifest.get("annotations") or ():
        if a.get("name") == contract.OCI_STOP_SIGNAL_ANNOTATION:
            name = parse_signal(a.get("value"))
            if name is None:
                raise ImageError("app %s: the image's StopSignal %r is not a signal that stops a process; "
                                 "give stop_signal" % (app_name, a.get("value")))
            return name
    return None


def annotations(app: "Dict[str, Any]", image_manifest: "Dict[str, Any]") -> "Dict[str, str]":
    """The pod manifest app annotations prepare writes for one app (empty: SIGTERM and the
    pod's timeout)."""
    out = {}
    sig = app.get("stop_signal") or image_signal(image_manifest, app["name"])
    if sig is not None:
        out[contract.STOP_SIGNAL_ANNOTATION] = str(signal_number(sig))
    if app.get("stop_timeout") is not None:
        out[contract.STOP_TIMEOUT_ANNOTATION] = str(app["stop_timeout"])
    return out


def app_stop(pod_app: "Dict[str, Any]") -> "Dict[str, Any]":
    """{signal (name), timeout (seconds or None: the pod's)} of a pod manifest app."""
    ann = {a.get("name"): a.get("value") for a in pod_app.get("annotations") or ()}
    num = ann.get(contract.STOP_SIGNAL_ANNOTATION)
    name = parse_signal(num) if num else "SIGTERM"
    timeout = ann.get(contract.STOP_TIMEOUT_ANNOTATION)
    try:
        secs = float(timeout) if timeout is not None else None  # type: Optional[float]
    except ValueError:
        secs = None
    return {"signal": name, "timeout": secs}


def longest(pod: "Pod", default: float) -> float:
    """How long the pod's stop may take: the longest of its apps' stop timeouts."""
    try:
        apps = pod.manifest().get("apps") or []
    except (OSError, ValueError):
        return default
    out = default
    for a in apps:
        t = app_stop(a)["timeout"]
        if t is not None and t > out:
            out = t
    return out


def mark(default: float) -> str:
    """The `stopping` mark's content: the stop timeout of apps without their own."""
    return "%s%r\n" % (contract.STOP_TIMEOUT_KEY, float(default))


def describe_apps(pod: "Pod", apps: "List[Dict[str, Any]]") -> None:
    """pod_info's apps[].stop: the stop signal and timeout each app has, and what the last
    stop did (sent: when its signal was sent; killed: its timeout ran out)."""
    try:
        by_name = {a["name"]: a for a in pod.manifest().get("apps") or []}
    except (OSError, ValueError, KeyError):
        return
    for app in apps:
        if app.get("name") not in by_name:
            continue
        stop = app_stop(by_name[app["name"]])
        try:
            done = pod.read_json(contract.app_file(app["name"], contract.STOP_RECORD), 1 << 12)
        except (OSError, ValueError):
            done = {}
        stop.update(sent=done.get("sent"), killed=done.get("killed"))
        app["stop"] = stop
