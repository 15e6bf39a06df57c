"""Restart rules as docker and podman users know them, and bringing a pod's keeper back.

A detached pod's keeper restarts the whole pod (one keeper per pod) as its policy says:
``no``, ``always``, ``on-failure`` (at most ``restart_retries`` times; ``on-failure:N`` is
the same), ``unless-stopped`` (``always``, except across keeper restarts: see below), with
a backoff from ``restart_delay`` doubling up to ``restart_max_delay``.

When a keeper is gone (killed, or the host went down), ``resume`` is how the runtime starts
a keeper again on the same pod (same UUID, volumes and addresses): it is what a boot-time
restore calls for every pod. Whether a pod comes back is docker's rule: ``always`` always,
``unless-stopped`` unless the user stopped it, ``on-failure`` unless the user stopped it and
only while its last run failed and retries are left, ``no`` never; ``boot: true`` (any policy) when the pod was running as the host went down.
A run that a host shutdown ended (the keeper's SIGTERM, recorded as ``stopped_by_host``) is
taken up again by every policy but ``no`` without ``boot``. "Stopped by the user" is
the ``stopping`` mark stage0's stop leaves in the pod directory (the keeper also records it
as ``stopped_by_user`` in ``exit``); ``keeper.json`` holds the keeper's arguments (written
for every policy but ``no``, and with ``boot: true``; other pods are never resumed).
"""
import os

from ..stage1 import contract
from .errors import RocketError, ValidationError

TYPE_CHECKING = False  # typing costs milliseconds per start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional  # noqa: F401

    from .pod import Pod  # noqa: F401

POLICIES = ("no", "always", "on-failure", "unless-stopped")
DEFAULT_DELAY = 1.0
DEFAULT_MAX_DELAY = 60.0
KEEPER_ARGS = "keeper.json"  # stage0: the keeper's flags, so that resume starts the same keeper
KEYS = ("restart_policy", "restart_retries", "restart_delay", "restart_max_delay")


def _seconds(value: "Any", path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValidationError(path, value, "must be a number of seconds")
    try:
        out = float(value)
    except ValueError:
        raise ValidationError(path, value, "must be a number of seconds") from None
    if not 0 <= out <= 86400:  # NaN is refused too: it compares false
        raise ValidationError(path, value, "must be from 0 to 86400 seconds")
    return out


def normalize(policy: "Any" = "no", retries: "Any" = None, delay: "Any" = None,
              max_delay: "Any" = None) -> "Dict[str, Any]":
    """The restart options as run options record them (converge.RUN_KEYS compares them).

    ``on-failure:N`` becomes ``on-failure`` with ``restart_retries: N``; 0 retries means no
    cap, as docker's 0. Errors name the option."""
    if policy is None:
        policy = "no"
    if not isinstance(policy, str):
        raise ValidationError("restart_policy", policy, "must be one of %s, or on-failure:N" % ", ".join(POLICIES))
    name, sep, count = policy.partition(":")
    if name not in POLICIES or (sep and name != "on-failure"):
        raise ValidationError("restart_policy", policy, "must be one of %s, or on-failure:N" % ", ".join(POLICIES))
    n = None
    if sep:
        if not count.isdigit() or not count.isascii():
            raise ValidationError("restart_policy", policy, "needs a number of retries after on-failure:")
        n = int(count)
    if retries is not None:
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValidationError("restart_retries", retries, "must be a whole number >= 0 (0: no cap)")
        if name != "on-failure" and retries:  # 0 is "no cap", which every policy has
            raise ValidationError("restart_retries", retries, "applies to restart_policy on-failure only, "
                                  "not %s" % name)
        if n is not None and n != retries:
            raise ValidationError("restart_retries", retries, "contradicts restart_policy %s" % policy)
        n = retries
    d = DEFAULT_DELAY if delay is None else _seconds(delay, "restart_delay")
    m = DEFAULT_MAX_DELAY if max_delay is None else _seconds(max_delay, "restart_max_delay")
    if m < d:
        raise ValidationError("restart_max_delay", max_delay, "is less than restart_delay (%s)" % d)
    return {"restart_policy": name, "restart_retries": n or 0, "restart_delay": d, "restart_max_delay": m}


def keeper_flags(opts: "Dict[str, Any]") -> "List[str]":
    """The keeper's restart flags (docs/stage1-contract.md)."""
    r = normalize(opts.get("restart_policy", "no"), opts.get("restart_retries") or None,
                  opts.get("restart_delay"), opts.get("restart_max_delay"))
    return ["--restart=%s" % r["restart_policy"], "--restart-retries=%d" % r["restart_retries"],
            "--restart-delay=%r" % r["restart_delay"], "--restart-max-delay=%r" % r["restart_max_delay"]]


def wants_to_run(policy: str, stopped_by_user: bool, last_exit: "Optional[int]", restarts: int,
                 retries: int, boot: bool = False, stopped_by_host: bool = False) -> "Optional[str]":
    """Why a pod whose keeper is gone should run again (None: it stays exited).

    ``last_exit`` None: its keeper died before the pod's exit was recorded (the pod ran
    until then, as at a power cut: a failure for on-failure's sake). ``stopped_by_host``:
    the last run ended by a host shutdown, so the pod was running as the host went down."""
    if policy == "always":
        return "restart_policy always"
    if stopped_by_user:
        return None
    if stopped_by_host and (boot or policy != "no"):
        return "%s and a host shutdown stopped it" % ("boot: true" if boot else "restart_policy " + policy)
    if boot and last_exit is None:
        return "boot: true and it was running when the host went down"
    if policy not in ("unless-stopped", "on-failure"):
        return None
    if policy == "unless-stopped":
        return "restart_policy unless-stopped and not stopped by the user"
    if last_exit == 0:
        return None
    if retries and restarts >= retries:
        return None
    return "restart_policy on-failure and its last run %s" % (
        "ended without a recorded exit" if last_exit is None else "failed (%d)" % last_exit)


def record(pod: "Pod") -> "Dict[str, Any]":
    """What pod_info shows of the pod's restarts: its policy, how many restarts so far,
    whether the user stopped it (what a restore must honour)."""
    try:
        rec = pod.read_json(contract.EXIT, 1 << 12)
    except (OSError, ValueError):
        rec = {}
    try:
        args = pod.read_json(KEEPER_ARGS, 1 << 16)
    except (OSError, ValueError):
        args = {}
    policy = args.get("restart") or {}
    if not policy:  # restart_policy no (no keeper.json): what converge recorded, if it did
        try:
            policy = pod.spec().get("run") or {}
        except (OSError, ValueError):
            pass
    return {"policy": rec.get("restart_policy") or policy.get("restart_policy"),
            "retries": policy.get("restart_retries", rec.get("restart_retries", 0)),
            "count": rec.get("restarts", 0),
            "stopped_by_user": bool(rec.get("stopped_by_user")) or os.path.exists(pod.file(contract.STOPPING))}


def save_keeper_args(pod: "Pod", flags: "List[str]", opts: "Dict[str, Any]", boot: bool = False) -> None:
    """Before the keeper starts: its stage1 flags and restart options, for resume; ``boot``:
    the pod comes back at boot whatever its policy (docs/reboots.md)."""
    pod.write_json(KEEPER_ARGS, {"flags": list(flags), "boot": bool(boot), "restart": normalize(
        opts.get("restart_policy", "no"), opts.get("restart_retries") or None, opts.get("restart_delay"),
        opts.get("restart_max_delay"))}, 0o600)


def resume(pod: "Pod", timeout: float = 60.0) -> "Optional[str]":
    """Start a keeper again on an exited pod whose restart policy says it should run (the
    runtime's keeper restart, what a boot-time restore does); the reason, or None when the
    pod stays as it is (not exited, policy no, stopped by the user...)."""
    from . import run

    pod.refresh()
    if pod.dir_state != "run" or pod.state() != "exited":
        return None
    try:
        args = pod.read_json(KEEPER_ARGS, 1 << 16)
    except (OSError, ValueError):
        return None  # started before keeper.json existed, or in the foreground: not ours to bring back
    opts = args.get("restart") or {}
    rec = record(pod)
    try:
        ex = pod.read_json(contract.EXIT, 1 << 12)
    except (OSError, ValueError):
        ex = {}
    why = wants_to_run(opts.get("restart_policy", "no"), rec["stopped_by_user"], ex.get("exit_code"), rec["count"],
                       int(opts.get("restart_retries") or 0), bool(args.get("boot")), bool(ex.get("stopped_by_host")))
    if why is None:
        return None
    run.restart_keeper(pod, list(args.get("flags") or []), opts, rec["count"] + 1, timeout)
    return why


def resume_all(dd: "Any", timeout: float = 60.0) -> "Dict[str, str]":
    """resume() for every pod of a data directory: {uuid: why} of the pods started again.
    A pod that fails to start is reported as "failed: <why>" and the others still start."""
    from . import pod as podmod

    out = {}
    for p in podmod.list_pods(dd):
        try:
            why = resume(p, timeout)
        except RocketError as e:
            why = "failed: %s" % e
        if why:
            out[p.uuid] = why
    return out
