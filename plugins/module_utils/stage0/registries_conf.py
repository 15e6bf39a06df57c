"""A subset of containers' ``registries.conf`` (v2 TOML), parsed without tomllib (hosts run 3.9).

Understood (everything else is an error naming the file and line, so a setting is never
silently ignored)::

    unqualified-search-registries = ["127.0.0.1:5000", "docker.io"]
    short-name-mode = "enforcing" | "permissive" | "disabled"

    [[registry]]
    prefix = "docker.io/library"       # default: location
    location = "mirror.example:5000/lib"
    insecure = false                    # http allowed, TLS unverified
    blocked = false                     # pulls refused
    mirror-by-digest-only = false       # mirrors only for @sha256 references

    [[registry.mirror]]
    location = "127.0.0.1:5000/cache"
    insecure = true

The TOML read is: comments, ``key = value`` with basic/literal strings, booleans and arrays of
strings (one line or several), ``[[registry]]`` / ``[[registry.mirror]]`` tables. The
``registries.conf.d`` drop-ins and the v1 format are not read (said in docs/registries.md).

The longest matching prefix wins, as in containers/image. ``endpoints(ref)`` lists where to
try: mirrors in order, then the location itself.
"""
from typing import Any, Dict, List, NamedTuple, Optional

from .registry_ref import Reference

DEFAULT_PATH = "/etc/containers/registries.conf"
SHORT_NAME_MODES = ("enforcing", "permissive", "disabled")


class Endpoint(NamedTuple):
    """One place to pull ``ref`` from. ``ref`` is rewritten for the endpoint (its registry and
    repository are the mirror's or the location's); ``insecure`` allows http and unverified TLS;
    ``mirror`` is False for the source itself."""
    ref: Reference
    insecure: bool
    mirror: bool


class RegistryEntry:
    """One ``[[registry]]`` table."""

    def __init__(self, prefix: str, location: str, insecure: bool = False, blocked: bool = False,
                 mirror_by_digest_only: bool = False, mirrors: Optional[List[Dict[str, Any]]] = None) -> None:
        self.prefix = prefix
        self.location = location
        self.insecure = insecure
        self.blocked = blocked
        self.mirror_by_digest_only = mirror_by_digest_only
        self.mirrors = list(mirrors or [])   # [{"location": str, "insecure": bool}]


class RegistriesConf:
    """The parsed configuration (an empty one when no file exists)."""

    def __init__(self, registries: Optional[List[RegistryEntry]] = None,
                 unqualified_search: Optional[List[str]] = None, short_name_mode: Optional[str] = None,
                 source: Optional[str] = None) -> None:
        self.registries = list(registries or [])
        self.unqualified_search = list(unqualified_search or [])
        self.short_name_mode = short_name_mode
        self.source = source

    def find(self, ref: Reference) -> Optional[RegistryEntry]:
        """The ``[[registry]]`` whose prefix matches ``ref`` longest, or None."""
        raise NotImplementedError

    def candidates(self, ref: Reference) -> List[Reference]:
        """The fully qualified references a (possibly short) ``ref`` stands for, in order.

        A reference with a registry is itself. A short one (``docker://nginx``) follows
        ``unqualified-search-registries`` when configured (``enforcing`` refuses more than one
        candidate, since which one answers would be a guess); without that setting, Docker's
        rule (docker.io) applies, as documented.
        """
        raise NotImplementedError

    def endpoints(self, ref: Reference) -> List[Endpoint]:
        """Where to try ``ref`` (qualified), in order: mirrors first, then the source.

        A blocked registry is a RegistryError.
        """
        raise NotImplementedError

    def is_insecure(self, registry: str) -> bool:
        """Whether ``registry`` (host[:port]) is marked insecure (by a location or a mirror)."""
        raise NotImplementedError


def parse_registries_conf(text: str, source: str = "registries.conf") -> RegistriesConf:
    """Parse the subset; errors name ``source`` and the line."""
    raise NotImplementedError


def load_registries_conf(path: Optional[str] = None) -> RegistriesConf:
    """Read ``path`` (must exist when given: the ``registries_conf`` option), else DEFAULT_PATH
    when it exists, else an empty configuration."""
    raise NotImplementedError
