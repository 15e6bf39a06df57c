"""Registry credentials and the authentication flow.

Credentials come from the module (``username``/``password``, no_log) or from the auth files
users already have, first match wins:

- ``$REGISTRY_AUTH_FILE`` when set (then also where registry_login writes by default, as podman);
- ``${XDG_RUNTIME_DIR}/containers/auth.json`` (or ``/run/containers/<uid>/auth.json`` without
  XDG_RUNTIME_DIR, podman's default for root);
- ``/etc/containers/auth.json``;
- ``~/.docker/config.json``.

Each holds ``{"auths": {"<host[:port][/repo]>": {"auth": base64("user:password")}}}``; keys may
also be ``https://host/v1/`` (docker's legacy form). A key with a repository path applies to that
repository and below, the longest match first. Credential helpers (``credHelpers``,
``credsStore``) are not run: an entry only reachable through one is an error that says so.

Writing (registry_login) is atomic (temporary file + rename) with mode 0600 and keeps the other
entries and keys of the file as they are.

The flow: a request is sent anonymously (or with a cached token); a 401's ``WWW-Authenticate``
challenge picks Basic (credentials sent to that registry only) or Bearer (a token fetched from
the realm with ``service`` and ``scope``, Basic credentials on that request when known, cached
per (realm, service, scope) for ``expires_in`` seconds, 60 s when absent as the spec says).
"""
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

from .registry_ref import RegistryError


class Credentials(NamedTuple):
    """A username and password (or identity token as password). ``source`` says where they
    came from ("module" or the auth file's path); never the secret itself."""
    username: str
    password: str
    source: str = "module"

    def __repr__(self) -> str:
        return "Credentials(username=%r, password=<hidden>, source=%r)" % (self.username, self.source)

    def __str__(self) -> str:
        return self.__repr__()


class Challenge(NamedTuple):
    """One ``WWW-Authenticate`` challenge: scheme lower-cased ("basic", "bearer"), params."""
    scheme: str
    params: Dict[str, str]


def auth_file_paths() -> List[str]:
    """The auth files read, in order (existing or not)."""
    out = [default_auth_file()]
    if os.environ.get("REGISTRY_AUTH_FILE"):
        out.append(_runtime_auth_file())
    out.append("/etc/containers/auth.json")
    home = os.path.expanduser("~")
    if home and home != "~":
        out.append(os.path.join(home, ".docker", "config.json"))
    return out


def default_auth_file() -> str:
    """Where registry_login writes when no auth_file is given (podman's: $REGISTRY_AUTH_FILE, else
    the runtime directory's)."""
    return os.environ.get("REGISTRY_AUTH_FILE") or _runtime_auth_file()


def _runtime_auth_file() -> str:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "containers", "auth.json")
    return "/run/containers/%d/auth.json" % os.getuid()


def _normalise_key(key: str) -> str:
    """An ``auths`` key as host[:port][/path]: docker's ``https://host/v1/`` forms included."""
    k = key.strip()
    for scheme in ("https://", "http://"):
        if k.startswith(scheme):
            k = k[len(scheme):]
            k = k.split("/", 1)[0]   # docker's URL keys name a host; their path is the API version
            break
    k = k.rstrip("/")
    host, sep, path = k.partition("/")
    host = host.lower()
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = "docker.io"
    return host + sep + path


def _load(path: str) -> Optional[Dict[str, Any]]:
    """The parsed auth file, None when it does not exist. Errors never show its content."""
    from .fsutil import read_small

    try:
        raw = read_small(os.path.realpath(path), 1 << 20)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RegistryError("cannot read the auth file %s: %s" % (path, e.strerror or e)) from None
    import json

    try:
        doc = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        raise RegistryError("the auth file %s is not valid JSON" % path) from None
    if not isinstance(doc, dict):
        raise RegistryError("the auth file %s is not a JSON object" % path)
    auths = doc.get("auths", {})
    if not isinstance(auths, dict):
        raise RegistryError("the auth file %s: 'auths' is not an object" % path)
    return doc


def _decode(entry: Any, path: str, key: str) -> Optional[Credentials]:
    import base64
    import binascii

    if not isinstance(entry, dict):
        raise RegistryError("the auth file %s: the entry for %s is not an object" % (path, key))
    token = entry.get("identitytoken")
    auth = entry.get("auth")
    if not auth and isinstance(token, str) and token:
        # An OAuth2 refresh token: sent as the password of the token request, as docker does.
        return Credentials("<token>", token, path)
    if not auth:
        return None
    if not isinstance(auth, str):
        raise RegistryError("the auth file %s: 'auth' of %s is not a string" % (path, key))
    try:
        text = base64.b64decode(auth.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, ValueError, UnicodeError):
        raise RegistryError("the auth file %s: 'auth' of %s is not base64 of user:password" % (path, key)) from None
    user, sep, password = text.partition(":")
    if not sep or not user:
        raise RegistryError("the auth file %s: 'auth' of %s is not base64 of user:password" % (path, key))
    return Credentials(user, password, path)


def _lookup(doc: Dict[str, Any], path: str, registry: str, repository: Optional[str]) -> Optional[Credentials]:
    auths = doc.get("auths", {})
    wanted = [registry + "/" + repository] if repository else []
    if repository:
        parts = repository.split("/")
        wanted = [registry + "/" + "/".join(parts[:i]) for i in range(len(parts), 0, -1)]
    wanted.append(registry)
    keyed: Dict[str, Tuple[Any, Any]] = {}
    for key, entry in auths.items():
        keyed.setdefault(_normalise_key(str(key)), (key, entry))
    for w in wanted:
        if w in keyed:
            key, entry = keyed[w]
            creds = _decode(entry, path, key)
            if creds is not None:
                return creds
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict) and registry in helpers:
        raise RegistryError("the auth file %s names a credential helper for %s: credential helpers are not "
                            "run; give username/password or an 'auths' entry (podman login / "
                            "registry_login write one)" % (path, registry), registry, repository)
    return None


def find_credentials(registry: str, repository: Optional[str] = None,
                     auth_file: Optional[str] = None) -> Optional[Credentials]:
    """Credentials for ``registry`` (and ``repository``) from ``auth_file`` when given (only that
    file), else from auth_file_paths(); None when none has an entry."""
    if auth_file is not None:
        doc = _load(auth_file)
        if doc is None:
            raise RegistryError("auth_file %s does not exist" % auth_file, registry, repository)
        return _lookup(doc, auth_file, registry, repository)
    for path in auth_file_paths():
        doc = _load(path)
        if doc is None:
            continue
        creds = _lookup(doc, path, registry, repository)
        if creds is not None:
            return creds
    return None


def read_entry(auth_file: str, registry: str) -> Optional[Credentials]:
    """The entry stored for exactly ``registry`` (host[:port][/repo]) in ``auth_file``, or None
    (a missing file has none)."""
    doc = _load(auth_file)
    if doc is None:
        return None
    want = _normalise_key(registry)
    for key, entry in doc.get("auths", {}).items():
        if _normalise_key(str(key)) == want:
            return _decode(entry, auth_file, key)
    return None


def _save(auth_file: str, doc: Dict[str, Any]) -> None:
    import json
    import tempfile

    parent = os.path.dirname(os.path.abspath(auth_file))
    os.makedirs(parent, mode=0o700, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".auth.", suffix=".tmp", dir=parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(doc, f, indent=4, sort_keys=False)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, os.path.realpath(auth_file) if os.path.islink(auth_file) else auth_file)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_entry(auth_file: str, registry: str, username: str, password: str) -> bool:
    """Store the entry (atomic, 0600, parent directories made 0700); True when the file changed."""
    import base64

    if not username or ":" in username:
        raise RegistryError("username must be non-empty and without ':'", registry)
    doc = _load(auth_file) or {}
    auths = doc.setdefault("auths", {})
    want = _normalise_key(registry)
    for key in [k for k in auths if _normalise_key(str(k)) == want]:
        current = _decode(auths[key], auth_file, key) if isinstance(auths[key], dict) else None
        if key == want and current is not None and (current.username, current.password) == (username, password):
            return False
        del auths[key]
    auths[want] = {"auth": base64.b64encode(("%s:%s" % (username, password)).encode("utf-8")).decode("ascii")}
    _save(auth_file, doc)
    return True


def remove_entry(auth_file: str, registry: str) -> bool:
    """Remove the entry; True when there was one."""
    doc = _load(auth_file)
    if doc is None:
        return False
    auths = doc.get("auths", {})
    want = _normalise_key(registry)
    keys = [k for k in auths if _normalise_key(str(k)) == want]
    if not keys:
        return False
    for k in keys:
        del auths[k]
    _save(auth_file, doc)
    return True


def basic_header(creds: Credentials) -> str:
    """``Basic base64(user:password)``."""
    import base64

    return "Basic " + base64.b64encode(("%s:%s" % (creds.username, creds.password)).encode("utf-8")).decode("ascii")


def parse_challenges(header: str) -> List[Challenge]:
    """All challenges of a ``WWW-Authenticate`` value (quoted strings with commas, several
    schemes). Unparseable text gives an empty list, never an exception."""
    out: List[Challenge] = []
    if not isinstance(header, str):
        return out
    i, n = 0, len(header)
    scheme: Optional[str] = None
    params: Dict[str, str] = {}

    def token(j: int) -> Tuple[str, int]:
        k = j
        while k < n and header[k] not in ' \t,="':
            k += 1
        return header[j:k], k

    while i < n:
        while i < n and header[i] in " \t,":
            i += 1
        if i >= n:
            break
        word, j = token(i)
        if not word:
            return out if scheme is None else out + [Challenge(scheme, params)]
        k = j
        while k < n and header[k] in " \t":
            k += 1
        if k < n and header[k] == "=" and scheme is not None:
            k += 1
            while k < n and header[k] in " \t":
                k += 1
            if k < n and header[k] == '"':
                k += 1
                value = []
                while k < n and header[k] != '"':
                    if header[k] == "\\" and k + 1 < n:
                        k += 1
                    value.append(header[k])
                    k += 1
                if k >= n:
                    return out   # unterminated quote: unusable
                k += 1
                val = "".join(value)
            else:
                val, k = token(k)
            params[word.lower()] = val
            i = k
            continue
        # a new scheme
        if scheme is not None:
            out.append(Challenge(scheme, params))
        scheme, params = word.lower(), {}
        i = j
    if scheme is not None:
        out.append(Challenge(scheme, params))
    return out


class TokenCache:
    """Bearer tokens by (realm, service, scope, username), each until its expiry."""

    def __init__(self, clock: Optional[Callable[[], float]] = None) -> None:
        import time

        self.clock = clock or time.monotonic
        self._tokens: Dict[Tuple[str, str, str, str], Tuple[str, float]] = {}

    def get(self, key: Tuple[str, str, str, str]) -> Optional[str]:
        item = self._tokens.get(key)
        if item is None:
            return None
        if self.clock() >= item[1]:
            del self._tokens[key]
            return None
        return item[0]

    def put(self, key: Tuple[str, str, str, str], token: str, expires_in: Optional[float]) -> None:
        # The spec's default lifetime is 60 s; a margin keeps a token from expiring in flight.
        life = 60.0 if expires_in is None else float(expires_in)
        life = max(0.0, min(life, 24 * 3600.0) - min(10.0, life / 10))
        self._tokens[key] = (token, self.clock() + life)

    def drop(self, key: Tuple[str, str, str, str]) -> None:
        self._tokens.pop(key, None)

    def clear(self) -> None:
        self._tokens.clear()


def scope_for(repository: str, actions: str = "pull") -> str:
    """``repository:<repo>:<actions>``."""
    return "repository:%s:%s" % (repository, actions)
