"""Where a detached pod's app output goes (the keeper writes it), and reading it back.

``log_driver: file`` (the default) keeps timestamped lines in ``logs/<app>.log``, rotated at
``log_max_size`` with ``log_max_files`` files in all (docker's json-file meaning: 2 keeps
``<app>.log`` and ``<app>.log.1``, which was the fixed rule before these options).
``log_driver: journald`` sends every line to systemd-journald over its native protocol, with
the fields of docs/logs.md (``APPC_POD_UUID``, ``APPC_POD_NAME``, ``APPC_APP``), so that
``journalctl`` finds them where the host's other services are; pod_info reads them back with
``journalctl -o json``.
"""
import os
import stat

from .errors import ValidationError

TYPE_CHECKING = False  # typing costs milliseconds per start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional  # noqa: F401

DRIVERS = ("file", "journald")
# Today's rule before these options: 1 MiB, <app>.log and one rotated <app>.log.1.
DEFAULTS = {"log_driver": "file", "log_max_size": 1 << 20, "log_max_files": 2}  # type: Dict[str, Any]
KEYS = tuple(DEFAULTS)
MIN_SIZE = 4096          # smaller rotates on nearly every line
MAX_FILES = 100
SOCKET = "/run/systemd/journal/socket"  # journald's native protocol (sd_journal_send's socket)
JOURNALCTL = "journalctl"


def normalize(driver: "Any" = None, max_size: "Any" = None, max_files: "Any" = None) -> "Dict[str, Any]":
    """The log options as run options record them (converge compares them: a change
    replaces the pod, since the keeper owns the pipes for the pod's life). Errors name the option."""
    from .limits import parse_size

    driver = "file" if driver is None else driver
    if driver not in DRIVERS:
        raise ValidationError("log_driver", driver, "must be one of %s" % ", ".join(DRIVERS))
    if driver == "journald":
        for name, value in (("log_max_size", max_size), ("log_max_files", max_files)):
            if value is not None:
                raise ValidationError(name, value, "applies to log_driver file only (journald rotates its own files)")
        return {"log_driver": "journald"}
    size = 1 << 20 if max_size is None else parse_size(max_size, "log_max_size")
    if size < MIN_SIZE:
        raise ValidationError("log_max_size", max_size, "must be at least %d bytes (4k)" % MIN_SIZE)
    files = 2 if max_files is None else max_files
    if isinstance(files, bool) or not isinstance(files, int) or not 1 <= files <= MAX_FILES:
        raise ValidationError("log_max_files", max_files, "must be a whole number from 1 (no rotated file: the "
                              "log is emptied when full) to %d" % MAX_FILES)
    return {"log_driver": "file", "log_max_size": size, "log_max_files": files}


def check_journald(path: str = SOCKET) -> None:
    """A journald pod needs the journal's socket now: say so, naming the option, before any start."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise ValidationError("log_driver", "journald", "needs systemd-journald on the host: %s: %s"
                              % (path, e.strerror)) from None
    if not stat.S_ISSOCK(st.st_mode):
        raise ValidationError("log_driver", "journald", "needs systemd-journald on the host: %s is not a socket" % path)


def keeper_flags(opts: "Dict[str, Any]", pod_name: "Optional[str]") -> "List[str]":
    """The keeper's log flags (docs/stage1-contract.md); none for the default file rule, so
    that a pod keeps the keeper command line it had before these options."""
    o = normalize(opts.get("log_driver"), opts.get("log_max_size"), opts.get("log_max_files"))
    if o["log_driver"] == "journald":
        return ["--log-driver=journald"] + (["--log-pod-name=%s" % pod_name] if pod_name else [])
    if (o["log_max_size"], o["log_max_files"]) == (DEFAULTS["log_max_size"], DEFAULTS["log_max_files"]):
        return []
    return ["--log-max-size=%d" % o["log_max_size"], "--log-max-files=%d" % o["log_max_files"]]


def read_journal(uuid: str, app: str, tail: "Optional[int]" = None, limit: int = 1 << 20) -> str:
    """An app's lines from the journal, formatted as the file driver writes them (UTC stamp,
    space, line); the last ``tail`` (all up to ``limit`` bytes when None)."""
    import json
    import subprocess
    import time

    if tail == 0:
        return ""
    cmd = [JOURNALCTL, "--no-pager", "-q", "-o", "json", "--output-fields=MESSAGE",
           "-n", str(tail if tail is not None else 100000), "APPC_POD_UUID=%s" % uuid, "APPC_APP=%s" % app]
    try:
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "(the log is in the journal, but journalctl failed: %s)\n" % e
    if r.returncode != 0 and not r.stdout:
        return "(the log is in the journal, but journalctl failed: %s)\n" % r.stderr.decode("utf-8", "replace").strip()
    out = []
    for raw in r.stdout.splitlines():
        try:
            entry = json.loads(raw)
            t = int(entry["__REALTIME_TIMESTAMP"]) / 1e6
        except (ValueError, KeyError, TypeError):
            continue
        msg = entry.get("MESSAGE")
        if isinstance(msg, list):  # not UTF-8: journalctl gives the bytes
            msg = bytes(b & 0xFF for b in msg if isinstance(b, int)).decode("utf-8", "replace")
        elif msg is None:  # more than journalctl's field size limit
            msg = "(a line too long to show)"
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ " % int((t % 1) * 1000)
        out.append(stamp + str(msg))
    kept, size = [], 0
    for line in reversed(out):  # the newest lines within limit bytes, as the file driver's read
        size += len(line.encode("utf-8", "replace")) + 1
        if size > limit:
            break
        kept.append(line + "\n")
    return "".join(reversed(kept))
