"""The metadata service seen from stage0: start it, register pods, deregister, stop it.

One service per data directory (``<data_dir>/metadata/``: ``service.py``, ``pid``,
``control.sock``, ``service.log``). It is a daemon (double fork, own session, stdio on
/dev/null) started on demand by the first pod that asks for it; its code is copied from
metadata_service.py so it never runs from a module's temporary payload. Its lifetime is
explicit: stop() (by the PID in ``pid``, checked against /proc) or stop_if_unused()
(pod_gc calls it) end it; nothing else does. The PID is a supervisor's, which starts the
service again on the same port when it dies otherwise (the service re-registers the
running pods itself).

Each pod that uses it gets ``metadata.json`` (0600) in its directory before stage1 starts:
``{"port", "token", "hmac_key", "socket"}`` — the token (256 bits) is the first segment of
the pod's ``AC_METADATA_URL`` path, the key signs for ``pod/hmac/sign``; both survive a
restart of the service, which re-registers every running pod from those files.
Registration and start-up are serialized by ``locks/metadata``.
"""
import os
import sys
import time

from ..stage1 import contract
from .datadir import DataDir
from .errors import RocketError
from .fsutil import atomic_write, read_small
from .locks import locked

TYPE_CHECKING = False  # type checkers take it as true; typing costs milliseconds per start
if TYPE_CHECKING:
    from typing import Any, Dict, Optional  # noqa: F401
    from .pod import Pod  # noqa: F401

DEFAULT_PORT = 18112
DEFAULT_ADDRESS = "127.0.0.1"  # plus each registered pod's gateways: never every interface
START_TIMEOUT = 15.0
VERSION = 2  # metadata_service.VERSION: a running service of another version is restarted
SIGTERM, SIGKILL = 15, 9


class MetadataError(RocketError):
    """The metadata service could not be started, reached or asked."""


def _ansiballz_dependencies():  # pragma: no cover - never called
    """Names the daemon's source for Ansiballz, which ships only what is imported."""
    from . import metadata_service
    return metadata_service


def service_dir(dd: DataDir) -> str:
    return os.path.join(dd.path, "metadata")


def socket_path(dd: DataDir) -> str:
    return os.path.join(service_dir(dd), "control.sock")


def _script(dd: DataDir) -> str:
    return os.path.join(service_dir(dd), "service.py")


def _source() -> bytes:
    from ..stage1.image import package_source

    return package_source(__file__, globals().get("__loader__"), "metadata_service")


# -- the control socket ----------------------------------------------------------------
def call(dd: DataDir, request: "Dict[str, Any]", timeout: float = 5.0) -> "Optional[Dict[str, Any]]":
    """One request on the control socket; None when no service listens there."""
    import json
    import socket

    path = socket_path(dd)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    s.settimeout(timeout)
    try:
        try:
            s.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None
        s.sendall(json.dumps(request).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            b = s.recv(65536)
            if not b:
                break
            data += b
    except ConnectionResetError:
        return None  # it died with this connection queued (its supervisor starts it again)
    except OSError as e:
        raise MetadataError("metadata service of %s (%s): %s" % (dd.path, path, e.strerror or e))
    finally:
        s.close()
    try:
        return json.loads(data)
    except ValueError:
        raise MetadataError("metadata service of %s gave no answer to %s" % (dd.path, request.get("op")))


def status(dd: DataDir) -> "Optional[Dict[str, Any]]":
    """{"version", "pid", "port", "pods"} of the running service, or None."""
    answer = call(dd, {"op": "ping"})
    return answer if answer and answer.get("ok") else None


def registered(dd: DataDir) -> list:
    """UUIDs of the pods the service serves now ([] when it is not running)."""
    answer = call(dd, {"op": "list"})
    return answer["pods"] if answer and answer.get("ok") else []


# -- start and stop ----------------------------------------------------------------------
def ensure_running(dd: DataDir, port: int = DEFAULT_PORT, address: str = DEFAULT_ADDRESS,
                   timeout: float = START_TIMEOUT) -> "Dict[str, Any]":
    """The service of this data directory, started when it is not running.

    ``port`` 0 takes any free port (tests), or whatever port a running service has.
    A running service on another port is restarted only when it serves no pod (their
    URLs name the port); otherwise this fails and says so.
    """
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise MetadataError("metadata port %r is not a TCP port (0 to 65535; 0 takes any free one)" % (port,))
    dd.ensure()
    with locked(dd.lock_path("metadata")):
        return _ensure_locked(dd, port, address, timeout)


def _ensure_locked(dd: DataDir, port: int, address: str, timeout: float) -> "Dict[str, Any]":
    st = status(dd)
    if st is None and service_pid(dd) is not None:
        st = _wait_restart(dd, timeout)
    if st is not None:
        if st.get("version") == VERSION and (port == 0 or st.get("port") == port):
            return st
        if st.get("port") != port and port != 0 and st.get("pods"):
            raise MetadataError("the metadata service of %s listens on port %s and serves %d pods; it cannot "
                                "move to port %d while they run" % (dd.path, st.get("port"), st["pods"], port))
        _stop_locked(dd, timeout)
        if port == 0:
            port = st.get("port") or 0
    return _start(dd, port, address, timeout)


def _wait_restart(dd: DataDir, timeout: float) -> "Optional[Dict[str, Any]]":
    """The supervisor runs but the service does not answer: it is being started again (on
    its port, by the supervisor). Wait for it rather than start a second one; None when it
    does not come back in time (the caller then stops the supervisor and starts afresh)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and service_pid(dd) is not None:
        time.sleep(0.05)
        st = status(dd)
        if st is not None:
            return st
    return None


def _start(dd: DataDir, port: int, address: str, timeout: float) -> "Dict[str, Any]":
    d = service_dir(dd)
    os.makedirs(d, 0o700, exist_ok=True)
    os.chmod(d, 0o700)
    script = _script(dd)
    src = _source()
    try:
        same = read_small(script, 1 << 22) == src
    except OSError:
        same = False
    if not same:
        atomic_write(script, src, 0o600)
    from . import daemon

    argv = [sys.executable, "-I", "-S", "-B", script, "--data-dir=%s" % dd.path, "--address=%s" % address,
            "--port=%d" % port]
    dummy_pid, r = daemon.spawn(argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}, "/", detach=True, umask=0o077)
    answer = daemon.wait_ready(r, timeout)  # after a failure: once the service has exited
    parts = answer.split()
    if len(parts) == 3 and parts[0] == "ready":  # metadata_service.main's ready line
        return {"ok": True, "version": VERSION, "pid": int(parts[1]), "port": int(parts[2]), "pods": None}
    if answer.startswith(contract.READY_FAILED + " "):
        raise MetadataError("the metadata service of %s could not start on %s:%d: %s"
                            % (dd.path, address, port, answer[len(contract.READY_FAILED) + 1:].strip()))
    raise MetadataError("the metadata service of %s did not start within %ss (see %s)"
                        % (dd.path, timeout, os.path.join(d, "service.log")))


def service_pid(dd: DataDir) -> "Optional[int]":
    """The PID in ``metadata/pid`` when that process is this data directory's service."""
    try:
        pid = int(read_small(os.path.join(service_dir(dd), "pid"), 64).decode().strip())
        cmdline = read_small("/proc/%d/cmdline" % pid, 1 << 16).split(b"\0")
    except (OSError, ValueError):
        return None
    want = [_script(dd).encode(), b"--data-dir=" + dd.path.encode()]
    return pid if all(x in cmdline for x in want) and not _gone(pid) else None


def _gone(pid: int) -> bool:
    """Exited: reaped when it is our child, or no process, or a zombie of someone else's."""
    try:
        done, dummy_status = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return True
    except ChildProcessError:
        pass
    try:
        stat = read_small("/proc/%d/stat" % pid, 4096).decode("ascii", "replace")
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def stop(dd: DataDir, timeout: float = 10.0) -> bool:
    """Stop the service by its PID (SIGTERM, then SIGKILL); True when one was running.

    Pods keep their registrations on disk: the next start serves the running ones again.
    """
    if not dd.exists():
        return False
    with locked(dd.lock_path("metadata")):
        return _stop_locked(dd, timeout)


def _stop_locked(dd: DataDir, timeout: float) -> bool:
    pid = service_pid(dd)
    if pid is None:
        return False
    os.kill(pid, SIGTERM)
    deadline = time.monotonic() + timeout
    killed = False
    while not _gone(pid):
        now = time.monotonic()
        if now > deadline:
            if killed:
                raise MetadataError("the metadata service (pid %d) of %s did not stop" % (pid, dd.path))
            try:
                os.kill(pid, SIGKILL)
            except ProcessLookupError:
                pass
            killed, deadline = True, now + 10
        time.sleep(0.01)
    for name in ("pid", "control.sock"):  # gone for good, also after SIGKILL
        try:
            os.unlink(os.path.join(service_dir(dd), name))
        except FileNotFoundError:
            pass
    return True


def stop_if_unused(dd: DataDir) -> bool:
    """Stop the service when it serves no pod (pod_gc does this); True when stopped."""
    if not dd.exists() or not os.path.exists(socket_path(dd)):
        return False
    with locked(dd.lock_path("metadata")):
        if status(dd) is None and service_pid(dd) is not None:
            _wait_restart(dd, START_TIMEOUT)  # not "serves no pod" while it restarts
        if registered(dd):
            return False
        return _stop_locked(dd, 10.0)


# -- pods ------------------------------------------------------------------------------
def pod_config(pod: "Pod") -> "Optional[Dict[str, Any]]":
    """The pod's metadata.json, or None when it does not use the service."""
    try:
        return pod.read_json(contract.METADATA, 1 << 16)
    except (OSError, ValueError):
        return None


def setup(pod: "Pod", port: int = DEFAULT_PORT, address: str = DEFAULT_ADDRESS) -> "Dict[str, Any]":
    """Before stage1 starts (the pod still prepared): the service runs, and the pod has its
    metadata.json (a new token and key the first time; the port of the service)."""
    st = ensure_running(pod.dd, port, address)
    conf = pod_config(pod) or {}
    if not conf.get("token") or not conf.get("hmac_key"):
        conf = {"token": os.urandom(32).hex(), "hmac_key": os.urandom(64).hex()}
    conf.update(port=st["port"], socket=socket_path(pod.dd), address=address)
    pod.write_json(contract.METADATA, conf, 0o600)
    return conf


def register(pod: "Pod") -> None:
    """Register a pod that is in ``pods/run`` (after setup); the service is started again
    if it stopped in between (on the pod's port)."""
    conf = pod_config(pod)
    if conf is None:
        raise MetadataError("pod %s has no metadata.json: call setup first" % pod.uuid)
    with locked(pod.dd.lock_path("metadata")):
        address = conf.get("address")
        if not address or address in ("0.0.0.0", "::"):  # written before version 2 listened on loopback
            address = DEFAULT_ADDRESS
        _ensure_locked(pod.dd, conf["port"], address, START_TIMEOUT)
        answer = call(pod.dd, {"op": "register", "uuid": pod.uuid})
    if not answer or not answer.get("ok"):
        raise MetadataError("the metadata service did not register pod %s: %s"
                            % (pod.uuid, (answer or {}).get("error", "no answer")))


def deregister(dd: DataDir, uuid: str) -> bool:
    """Forget a pod (best effort: a service that is not running has nothing to forget)."""
    try:
        answer = call(dd, {"op": "deregister", "uuid": uuid}, timeout=2.0)
    except MetadataError:
        return False
    return bool(answer and answer.get("known"))
