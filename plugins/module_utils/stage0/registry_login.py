"""registry_login's converge: an auth file entry kept present (verified) or absent.

The entry is written and removed by registry_auth (atomic, mode 0600, other entries kept);
this decides whether anything changes and checks the credentials against the registry
first, so a wrong password fails the task instead of breaking the next pull. What it
returns and raises never holds the password: diffs say only whether it changed.
"""
from __future__ import annotations

import re

from .errors import RocketError

TYPE_CHECKING = False  # typing costs milliseconds at start: annotations stay strings
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Optional, Tuple

# host[:port][/repository path], what podman login and the auth files key entries by
_KEY_RE = re.compile(r"\A(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]*[a-z0-9])?)*"
                     r"|\[[0-9a-f:.]+\])(?::[0-9]{1,5})?(?:/[a-z0-9._/-]+)?\Z")


def registry_key(text: str) -> str:
    """The ``registry`` option as an auth file key: ``host[:port][/repo]``.

    ``docker://`` and ``https://`` prefixes and a trailing ``/`` are accepted and dropped;
    docker's hub hosts are the one key ``docker.io``, as podman writes it.
    """
    key = (text or "").strip()
    for prefix in ("docker://", "https://", "http://"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    key = key.rstrip("/").lower()
    if key in ("index.docker.io", "registry-1.docker.io") or key.startswith("index.docker.io/v1"):
        key = "docker.io"
    if not _KEY_RE.match(key) or "//" in key:
        raise RocketError("registry %r: give HOST[:PORT] or HOST[:PORT]/REPOSITORY" % text)
    return key


def converge(p: "Dict[str, Any]", check: bool) -> "Tuple[bool, Dict[str, Any], Dict[str, Any], Dict[str, Any]]":
    """(changed, result fields, diff before, diff after) for registry_login's options ``p``."""
    from . import registry_auth

    key = registry_key(p["registry"])
    username: str = p.get("username") or ""
    password: str = p.get("password") or ""
    if p["state"] == "present" and (not username or not password):
        raise RocketError("state=present needs username and password")
    auth_file = p.get("auth_file") or registry_auth.default_auth_file()
    old = registry_auth.read_entry(auth_file, key)
    before: "Dict[str, Any]" = {}
    if old is not None:
        before = {"registry": key, "username": old.username, "password": "(set)"}
    result: "Dict[str, Any]" = {"registry": key, "auth_file": auth_file, "verified": False}
    if p["state"] == "absent":
        if old is not None and not check:
            registry_auth.remove_entry(auth_file, key)
        return old is not None, result, before, {}
    result["username"] = username
    if p.get("verify", True):
        verify(key, username, password, p)
        result["verified"] = True
    same = old is not None and old.username == username and old.password == password
    after = {"registry": key, "username": username, "password": "(set)" if same else "(new)"}
    if same:
        return False, result, before, after
    if not check:
        registry_auth.write_entry(auth_file, key, username, password)
    return True, result, before, after


def verify(key: str, username: str, password: str, p: "Dict[str, Any]") -> None:
    """``GET /v2/`` through the auth flow with these credentials; a RegistryError when refused."""
    from . import registry_client
    from .registry_auth import Credentials

    host, dummy_sep, repository = key.partition("/")
    insecure = bool(p.get("insecure"))
    if not insecure:
        from . import registries_conf

        insecure = registries_conf.load_registries_conf(p.get("registries_conf")).is_insecure(host)
    from .registry_ref import api_host

    client = registry_client.RegistryClient(
        api_host(host), insecure=insecure, ca_path=p.get("ca_path"),
        credentials=Credentials(username, password, "module"), timeout=p.get("timeout") or 30,
        retries=p.get("retries", 3))
    with client:
        repo: "Optional[str]" = repository or None
        client.ping(repo, "pull")
