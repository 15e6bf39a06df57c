"""Registry credentials and the authentication flow.

Credentials come from the module (``username``/``password``, no_log) or from the auth files
users already have, first match wins:

- ``$REGISTRY_AUTH_FILE`` when set;
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


class Challenge(NamedTuple):
    """One ``WWW-Authenticate`` challenge: scheme lower-cased ("basic", "bearer"), params."""
    scheme: str
    params: Dict[str, str]


def auth_file_paths() -> List[str]:
    """The auth files read, in order (existing or not)."""
    raise NotImplementedError


def default_auth_file() -> str:
    """Where registry_login writes when no auth_file is given (podman's default)."""
    raise NotImplementedError


def find_credentials(registry: str, repository: Optional[str] = None,
                     auth_file: Optional[str] = None) -> Optional[Credentials]:
    """Credentials for ``registry`` (and ``repository``) from ``auth_file`` when given (only that
    file), else from auth_file_paths(); None when none has an entry."""
    raise NotImplementedError


def read_entry(auth_file: str, registry: str) -> Optional[Credentials]:
    """The entry stored for exactly ``registry`` (host[:port][/repo]) in ``auth_file``, or None
    (a missing file has none)."""
    raise NotImplementedError


def write_entry(auth_file: str, registry: str, username: str, password: str) -> bool:
    """Store the entry (atomic, 0600, parent directories made 0700); True when the file changed."""
    raise NotImplementedError


def remove_entry(auth_file: str, registry: str) -> bool:
    """Remove the entry; True when there was one."""
    raise NotImplementedError


def basic_header(creds: Credentials) -> str:
    """``Basic base64(user:password)``."""
    raise NotImplementedError


def parse_challenges(header: str) -> List[Challenge]:
    """All challenges of a ``WWW-Authenticate`` value (quoted strings with commas, several
    schemes). Unparseable text gives an empty list, never an exception."""
    raise NotImplementedError


class TokenCache:
    """Bearer tokens by (realm, service, scope, username), each until its expiry."""

    def __init__(self, clock: Callable[[], float] = None) -> None:  # type: ignore[assignment]
        raise NotImplementedError

    def get(self, key: Tuple[str, str, str, str]) -> Optional[str]:
        raise NotImplementedError

    def put(self, key: Tuple[str, str, str, str], token: str, expires_in: Optional[float]) -> None:
        raise NotImplementedError


def scope_for(repository: str, actions: str = "pull") -> str:
    """``repository:<repo>:<actions>``."""
    return "repository:%s:%s" % (repository, actions)
