"""Pods on disk: directories whose location is their state, rkt's protocol.

``pods/<state>/<uuid>``: a transition is one rename(2); the process that owns a pod holds
an flock on its directory. Probing takes a non-blocking shared lock:

  embryo        being created
  prepare       locked: being prepared; unlocked: an aborted prepare (garbage)
  prepared      ready to run (unlocked)
  run           locked: running (stage1 holds the lock); unlocked: exited
  exited-garbage  exited, marked by gc; deleted after the grace period
  garbage       aborted or expired; deleted by gc

Losing a rename race (another process moved the pod first) is normal: the loser gets a
clear PodStateError and looks again. A pod also has a name; ``names/<name>`` holds its
UUID and a lock per name serializes everything that converges that name.
"""
import errno
import os
import time

from ..stage1 import contract
from .datadir import DataDir
from . import crashpoint
from .errors import AmbiguousError, NotFoundError, RocketError
from .fsutil import atomic_write, fsync_dir, read_small
from .locks import Lock, locked

TYPE_CHECKING = False  # type checkers take it as true; typing costs milliseconds per start
if TYPE_CHECKING:
    from typing import Any, Dict, List, Optional  # noqa: F401

_HEX = frozenset("0123456789abcdef")
_UUID_GROUPS = (8, 4, 4, 4, 12)


def is_uuid(text: str) -> bool:
    """A lower-case UUID in its 8-4-4-4-12 form (no regular expression: importing re costs
    every start milliseconds)."""
    parts = text.split("-")
    return (len(text) == 36 and tuple(len(p) for p in parts) == _UUID_GROUPS
            and all(c in _HEX for p in parts for c in p))


def is_uuid_prefix(text: str) -> bool:
    """2 to 36 characters of lower-case hex digits and dashes."""
    return 2 <= len(text) <= 36 and all(c in _HEX or c == "-" for c in text)


class PodStateError(RocketError):
    """The pod is not in the state the operation needs (or another process moved it)."""


def new_uuid() -> str:
    """A random (version 4) UUID, without importing the uuid module on the start path."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


class Pod:
    """A pod directory as found on disk (its state can change under us)."""

    def __init__(self, dd: DataDir, uuid: str, dir_state: str) -> None:
        self.dd = dd
        self.uuid = uuid
        self.dir_state = dir_state
        self.lock = None  # type: Optional[Lock]

    @property
    def path(self) -> str:
        return os.path.join(self.dd.pod_state_dir(self.dir_state), self.uuid)

    def file(self, *parts: str) -> str:
        return os.path.join(self.path, *parts)

    # -- state ---------------------------------------------------------------------------
    def state(self) -> str:
        """The state, probed with a non-blocking shared lock as rkt does."""
        s = self.dir_state
        if s not in ("run", "prepare"):
            return s
        if self.lock is not None:  # we own it
            return "running" if s == "run" else "preparing"
        try:
            probe = Lock(self.path, directory=True)
        except FileNotFoundError:
            self.refresh()
            return self.state() if self.dir_state not in ("run", "prepare") else "deleted"
        try:
            free = probe.shared(block=False)
        finally:
            probe.close()
        if s == "run":
            return "exited" if free else "running"
        return "aborted" if free else "preparing"

    def refresh(self) -> None:
        """Find the pod again after another process may have moved it."""
        for s in ("run", "prepared", "prepare", "exited-garbage", "garbage", "embryo"):
            if os.path.isdir(os.path.join(self.dd.pod_state_dir(s), self.uuid)):
                self.dir_state = s
                return
        raise NotFoundError("pod %s no longer exists" % self.uuid)

    def move(self, to_state: str) -> None:
        """One rename(2); fsync both parents so the transition survives a crash."""
        src = self.path
        dst = os.path.join(self.dd.pod_state_dir(to_state), self.uuid)
        try:
            os.rename(src, dst)
        except OSError as e:
            if e.errno in (errno.ENOENT, errno.ENOTEMPTY, errno.EEXIST):
                raise PodStateError("pod %s is no longer %s (another process moved it)" % (self.uuid, self.dir_state))
            raise
        fsync_dir(os.path.dirname(src))
        fsync_dir(os.path.dirname(dst))
        self.dir_state = to_state

    def take_lock(self, exclusive: bool = True, block: bool = False) -> bool:
        """Lock the pod's directory wherever it is now: another process may move it (a state
        transition) between our finding it and our open; NotFoundError when it is gone."""
        for dummy_attempt in range(16):
            try:
                lock = Lock(self.path, directory=True)
                break
            except FileNotFoundError:
                self.refresh()
        else:
            raise PodStateError("pod %s keeps moving (other processes hold it)" % self.uuid)
        ok = lock.exclusive(block) if exclusive else lock.shared(block)
        if not ok:
            lock.close()
            return False
        try:
            moved = lock.fd is None or os.stat(self.path).st_ino != os.fstat(lock.fd).st_ino
        except FileNotFoundError:
            moved = True
        if moved:  # moved after our open, before our lock: the lock holds it, find where
            try:
                self.refresh()
            except NotFoundError:
                lock.close()
                raise
        self.lock = lock
        return True

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()
            self.lock = None

    # -- content -------------------------------------------------------------------------
    def read_json(self, name: str, limit: int = 16 << 20) -> "Any":
        from ..stage1 import jsonlite  # the json package imports re: not on the start path

        return jsonlite.loads(read_small(self.file(name), limit))

    def manifest(self) -> "Dict[str, Any]":
        return self.read_json(contract.POD_MANIFEST)

    def spec(self) -> "Dict[str, Any]":
        """The desired spec and resolved IDs kept privately (0600) by prepare."""
        return self.read_json(contract.SPEC)

    def write_json(self, name: str, doc: "Any", mode: int = 0o644) -> None:
        import json

        atomic_write(self.file(name), json.dumps(doc, indent=1, sort_keys=True).encode(), mode)

    def pid(self) -> "Optional[int]":
        try:
            return int(read_small(self.file(contract.PID), 64).decode().strip())
        except (OSError, ValueError):
            return None

    def app_status(self, app: str) -> "Optional[Dict[str, Any]]":
        try:
            return self.read_json(contract.app_status(app), 1 << 16)
        except (OSError, ValueError):
            return None

    def mtime(self) -> float:
        try:
            return os.stat(self.path).st_ctime
        except OSError:
            return 0.0


def create(dd: DataDir) -> Pod:
    """A new pod in ``prepare``, locked by us: embryo first, then one rename."""
    dd.ensure()
    for dummy in range(10):
        uuid = new_uuid()
        pod = Pod(dd, uuid, "embryo")
        try:
            os.mkdir(pod.path, 0o700)
            crashpoint.hit("pod.create.after_mkdir")
        except FileExistsError:
            continue
        pod.take_lock(exclusive=True, block=True)
        pod.move("prepare")
        return pod
    raise RocketError("cannot create a pod directory in %s" % dd.pods)


def list_pods(dd: DataDir) -> "List[Pod]":
    out = []
    for s in ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage"):
        try:
            names = os.listdir(dd.pod_state_dir(s))
        except FileNotFoundError:
            continue
        out += [Pod(dd, u, s) for u in sorted(names) if is_uuid(u)]
    return out


def find(dd: DataDir, ref: str) -> Pod:
    """A pod by UUID or unambiguous UUID prefix (at least 2 characters)."""
    ref = (ref or "").lower()
    if not is_uuid_prefix(ref):
        raise NotFoundError("%r is not a pod UUID or UUID prefix" % ref)
    matches = [p for p in list_pods(dd) if p.uuid.startswith(ref)]
    if not matches:
        raise NotFoundError("no pod %s in %s" % (ref, dd.pods))
    if len(matches) > 1:
        uuids = sorted(p.uuid for p in matches)
        raise AmbiguousError("pod UUID prefix %s is ambiguous: it matches %s" % (ref, ", ".join(uuids)), uuids)
    return matches[0]


# -- names -----------------------------------------------------------------------------
def name_lock(dd: DataDir, name: str) -> Lock:
    """Serialize everything that converges one pod name (two playbooks end with one pod)."""
    from .schema import validate_ac_name

    validate_ac_name(name, "name")
    dd.ensure()
    return locked(dd.lock_path("name-" + name))


def name_to_uuid(dd: DataDir, name: str) -> "Optional[str]":
    try:
        uuid = read_small(os.path.join(dd.names, name), 128).decode().strip()
    except OSError:
        return None
    return uuid if is_uuid(uuid) else None


def find_by_name(dd: DataDir, name: str) -> "Optional[Pod]":
    uuid = name_to_uuid(dd, name)
    if uuid is None:
        return None
    pod = Pod(dd, uuid, "run")
    try:
        pod.refresh()
    except NotFoundError:
        return None
    return pod


def lookup(dd: DataDir, name: "Optional[str]" = None, uuid: "Optional[str]" = None) -> Pod:
    """The pod a module names by ``name`` or by ``uuid`` (or a prefix): NotFoundError says which."""
    if name is not None:
        pod = find_by_name(dd, name) if dd.exists() else None
        if pod is None:
            raise NotFoundError("no pod named %s in %s" % (name, dd.path))
        return pod
    return find(dd, uuid or "")


def lookup_ref(dd: DataDir, ref: str) -> Pod:
    """The pod ``ref`` names, a name or else a UUID (prefix): one word names a pod (inventory hosts)."""
    from .schema import AC_NAME_RE

    if not dd.exists():
        raise NotFoundError("no pod %s: data directory %s does not exist" % (ref, dd.path))
    pod = None
    if AC_NAME_RE.match(ref):
        pod = find_by_name(dd, ref)
    if pod is None and is_uuid_prefix(ref.lower()):
        try:
            pod = find(dd, ref)
        except NotFoundError:
            pod = None
    if pod is None:
        names = sorted(pod_names(dd).values())
        raise NotFoundError("no pod named %s and none with that UUID in %s (named pods: %s)"
                            % (ref, dd.path, ", ".join(names) or "none"))
    return pod


def choose_app(pod: Pod, app: "Optional[str]", label: "Optional[str]" = None,
               hint: str = "say which one to enter") -> str:
    """The app ``app`` names, or the pod's only app; ``hint`` tells how to name one."""
    apps = [a["name"] for a in pod.manifest()["apps"]]
    label = label or pod.uuid
    if app is None:
        if len(apps) != 1:
            raise RocketError("pod %s has apps %s: %s" % (label, ", ".join(apps), hint))
        app = apps[0]
    if app not in apps:
        raise RocketError("pod %s has no app %s (apps: %s)" % (label, app, ", ".join(apps)))
    return app


def set_name(dd: DataDir, name: str, uuid: "Optional[str]") -> None:
    """Point a name at a pod (or remove it); call with the name's lock held."""
    path = os.path.join(dd.names, name)
    if uuid is None:
        try:
            os.unlink(path)
            fsync_dir(dd.names)
        except FileNotFoundError:
            pass
        return
    atomic_write(path, (uuid + "\n").encode(), 0o600)


def pod_names(dd: DataDir) -> "Dict[str, str]":
    """uuid -> name for every named pod."""
    out: "Dict[str, str]" = {}
    try:
        names = os.listdir(dd.names)
    except FileNotFoundError:
        return out
    for n in names:
        u = name_to_uuid(dd, n)
        if u:
            out[u] = n
    return out


def age(pod: Pod) -> float:
    return time.time() - pod.mtime()
