"""Where a pod's output goes: timestamped, size-capped, rotated files, or the journal.

Written by whichever process keeps the pod (the keeper, or a keeper-less pod's PID 1:
keeping.py); stage0/logs.py reads the files and sets the flags. Standard library only.
"""
import os
import time

from . import contract

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Optional  # noqa: F401

LOG_MAX = 1 << 20       # bytes per log file before it rotates (--log-max-size)
LOG_FILES = 2           # files in all: <app>.log and <app>.log.1 (--log-max-files)
JOURNAL_SOCKET = "/run/systemd/journal/socket"
JOURNAL_RETRY = 5.0     # seconds of file fallback after a failed send, before journald is tried again
LINE_MAX = 65536        # a line without end is cut here (both drivers)


class Log:
    """Timestamped lines into logs/<name>.log, rotated at max_size, max_files files in all."""

    def __init__(self, path: str, max_size: "Optional[int]" = None, max_files: int = LOG_FILES) -> None:
        self.path = path
        self.name = os.path.basename(path)[:-4]
        self.max_size = LOG_MAX if max_size is None else max_size
        self.keep = max_files - 1  # rotated files: 0 empties the log when it is full
        self.fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC | os.O_NOFOLLOW, 0o640)
        self.size = os.fstat(self.fd).st_size
        self.partial = b""
        self.lines = []  # type: list  # the last lines, for failure reports

    def feed(self, data: bytes) -> None:
        data = self.partial + data
        *lines, self.partial = data.split(b"\n")
        if len(self.partial) > LINE_MAX:  # a line without end: cut it
            lines.append(self.partial)
            self.partial = b""
        for line in lines:
            self.write(line)

    def write(self, line: bytes) -> None:
        t = time.time()
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ " % int((t % 1) * 1000)
        rec = stamp.encode() + line + b"\n"
        if self.size + len(rec) > self.max_size and self.size:
            self.rotate()
        os.write(self.fd, rec)
        self.size += len(rec)
        self.lines = (self.lines + [line])[-20:]

    def rotate(self) -> None:
        os.close(self.fd)
        for i in range(self.keep, 0, -1):
            src = self.path if i == 1 else "%s.%d" % (self.path, i - 1)
            try:
                os.rename(src, "%s.%d" % (self.path, i))
            except FileNotFoundError:
                pass
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND | os.O_CLOEXEC, 0o640)
        self.size = 0

    def close(self) -> None:
        if self.partial:
            self.write(self.partial)
            self.partial = b""
        os.close(self.fd)


class Journal(Log):
    """An app's lines to systemd-journald, one entry each, over the native protocol (what
    sd_journal_send speaks: a datagram of FIELD=value lines; our lines hold no newline).
    A send that fails (journald stopped or restarting) puts the line in the file log
    instead, with a note saying why, so nothing is lost; journald is tried again later."""

    def __init__(self, path: str, app: str, uuid: str, pod_name: str) -> None:
        import _socket  # the C module: socket's module imports enum

        self.path = path
        self.name = app
        self.partial = b""
        self.lines = []  # type: list
        self.fallback = None  # type: Optional[Log]  # a Log once a send failed
        self.down_until = 0.0
        self.fields = b"".join(b"\n%s=%s" % (k, v.encode("utf-8", "replace")) for k, v in (
            (b"PRIORITY", "6"), (b"SYSLOG_IDENTIFIER", "%s/%s" % (pod_name or uuid[:8], app)),
            (b"APPC_POD_UUID", uuid), (b"APPC_POD_NAME", pod_name), (b"APPC_APP", app)) if v) + b"\n"
        self.sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM | _socket.SOCK_CLOEXEC)
        self.sock.settimeout(2.0)  # journald stalled: the app's pipe fills, not our whole loop for long

    def write(self, line: bytes) -> None:
        self.lines = (self.lines + [line])[-20:]
        now = time.monotonic()
        if now >= self.down_until:
            try:
                self.sock.sendto(b"MESSAGE=" + line + self.fields, JOURNAL_SOCKET)
                return
            except OSError as e:
                self.down_until = now + JOURNAL_RETRY
                why = e.strerror or e.__class__.__name__
        else:
            why = None
        fallback = self.fallback = self.fallback or Log(self.path)
        if why is not None:
            fallback.write(b"(keeper: journald did not take this line: %s; output goes here until it does)"
                           % why.encode("utf-8", "replace"))
        fallback.write(line)

    def close(self) -> None:
        if self.partial:
            self.write(self.partial)
            self.partial = b""
        self.sock.close()
        if self.fallback is not None:
            self.fallback.close()


def flags() -> dict:
    """The logging flags and their defaults (stage0/logs.py sets them), as the keeper takes them."""
    return {"--log-driver": "file", "--log-max-size": str(LOG_MAX), "--log-max-files": str(LOG_FILES),
            "--log-pod-name": ""}


def open_log(name: str, logging: dict, uuid: str) -> Log:
    """The log of one pipe (an app's, or stage1's own) under the logging flags."""
    if name == "stage1":  # stage1's own words stay in its file: start failures quote them
        return Log(contract.log_file(name))
    if logging["--log-driver"] == "journald":
        return Journal(contract.log_file(name), name, uuid, logging["--log-pod-name"])
    return Log(contract.log_file(name), int(logging["--log-max-size"]), int(logging["--log-max-files"]))
