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
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from .errors import RocketError
from .registry_ref import DOCKER_HUB, Reference, RegistryError, check_location

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
        best = None
        name = ref.name
        for entry in self.registries:
            if _prefix_matches(entry.prefix, name) and (best is None or len(entry.prefix) > len(best.prefix)):
                best = entry
        return best

    def candidates(self, ref: Reference) -> List[Reference]:
        """The fully qualified references a (possibly short) ``ref`` stands for, in order.

        A reference with a registry is itself. A short one (``docker://nginx``) follows
        ``unqualified-search-registries`` when configured (``enforcing`` refuses more than one
        candidate, since which one answers would be a guess); without that setting, Docker's
        rule (docker.io) applies, as documented.
        """
        if not ref.short or not self.unqualified_search:
            return [ref]
        # Undo docker.io's "library/" so the search registries see the name as written.
        path = ref.repository
        if path.startswith("library/") and path.count("/") == 1:
            path = path[len("library/"):]
        out = []
        for registry in self.unqualified_search:
            repo = "library/" + path if registry == DOCKER_HUB and "/" not in path else path
            out.append(Reference(registry, repo, ref.tag, ref.digest, False))
        if len(out) > 1 and self.short_name_mode == "enforcing":
            raise RegistryError("short name %s is ambiguous: unqualified-search-registries in %s lists %s and "
                                "short-name-mode is enforcing; name the registry (docker://host/%s)"
                                % (path, self.source, ", ".join(self.unqualified_search), path),
                                repository=path)
        return out

    def endpoints(self, ref: Reference) -> List[Endpoint]:
        """Where to try ``ref`` (qualified), in order: mirrors first, then the source.

        A blocked registry is a RegistryError.
        """
        entry = self.find(ref)
        if entry is None:
            return [Endpoint(ref, False, False)]
        if entry.blocked:
            raise RegistryError("%s is blocked by registries.conf (%s, prefix %s)" % (ref.name, self.source, entry.prefix),
                                ref.registry, ref.repository)
        out = []
        if ref.digest is not None or not entry.mirror_by_digest_only:
            for mirror in entry.mirrors:
                out.append(Endpoint(_rewrite(ref, entry.prefix, mirror["location"]), bool(mirror["insecure"]), True))
        out.append(Endpoint(_rewrite(ref, entry.prefix, entry.location), entry.insecure, False))
        return out

    def is_insecure(self, registry: str) -> bool:
        """Whether ``registry`` (host[:port]) is marked insecure (by a location or a mirror)."""
        for entry in self.registries:
            if entry.insecure and (entry.location.split("/", 1)[0] == registry or (
                    entry.prefix.startswith("*.") and _prefix_matches(entry.prefix, registry + "/x"))):
                return True
            for mirror in entry.mirrors:
                if mirror["insecure"] and mirror["location"].split("/", 1)[0] == registry:
                    return True
        return False


def _prefix_matches(prefix: str, name: str) -> bool:
    if prefix.startswith("*."):
        host = name.split("/", 1)[0]
        if not host.endswith("]"):
            host = host.rsplit(":", 1)[0]   # a wildcard names hosts, on any port
        return host.endswith(prefix[1:])
    return name == prefix or name.startswith(prefix + "/")


def _rewrite(ref: Reference, prefix: str, location: str) -> Reference:
    """``ref`` with ``prefix`` replaced by ``location`` (host[:port][/path]); a wildcard prefix's
    own location is empty: the host matched."""
    if not location:
        return Reference(ref.registry, ref.repository, ref.tag, ref.digest, False)
    if prefix.startswith("*."):
        rest = ref.name.split("/", 1)[1]
    else:
        rest = ref.name[len(prefix):].lstrip("/")
    full = location + ("/" + rest if rest else "")
    registry, dummy_sep, repository = full.partition("/")
    if not repository:
        raise RegistryError("registries.conf: location %s leaves no repository for %s" % (location, ref.name),
                            ref.registry, ref.repository)
    return Reference(registry, repository, ref.tag, ref.digest, False)


# --------------------------------------------------------------------------- the TOML subset

_KEYS_TOP = ("unqualified-search-registries", "short-name-mode")
_KEYS_REGISTRY = ("prefix", "location", "insecure", "blocked", "mirror-by-digest-only")
_KEYS_MIRROR = ("location", "insecure")


def _parse_value(text: str, where: str) -> Tuple[Any, str]:
    """One TOML value at the start of ``text`` -> (value, rest)."""
    text = text.lstrip()
    if text.startswith('"'):
        out = []
        i = 1
        while i < len(text):
            c = text[i]
            if c == "\\":
                esc = text[i + 1:i + 2]
                table = {"n": "\n", "t": "\t", '"': '"', "\\": "\\", "r": "\r"}
                if esc in table:
                    out.append(table[esc])
                    i += 2
                    continue
                if esc == "u" and len(text) >= i + 6:
                    try:
                        out.append(chr(int(text[i + 2:i + 6], 16)))
                    except ValueError:
                        raise RocketError("%s: bad \\u escape" % where) from None
                    i += 6
                    continue
                raise RocketError("%s: unsupported escape \\%s in a string" % (where, esc))
            if c == '"':
                return "".join(out), text[i + 1:]
            out.append(c)
            i += 1
        raise RocketError("%s: unterminated string" % where)
    if text.startswith("'"):
        end = text.find("'", 1)
        if end < 0:
            raise RocketError("%s: unterminated string" % where)
        return text[1:end], text[end + 1:]
    if text.startswith("["):
        items: List[Any] = []
        rest = text[1:]
        while True:
            rest = _skip_ws_comments(rest)
            if rest.startswith("]"):
                return items, rest[1:]
            value, rest = _parse_value(rest, where)
            items.append(value)
            rest = _skip_ws_comments(rest)
            if rest.startswith(","):
                rest = rest[1:]
            elif not rest.startswith("]"):
                raise RocketError("%s: expected , or ] in an array" % where)
    for word, value in (("true", True), ("false", False)):
        if text.startswith(word) and not text[len(word):len(word) + 1].isalnum():
            return value, text[len(word):]
    raise RocketError("%s: only strings, booleans and arrays of strings are understood here, not %r"
                      % (where, text.split("\n", 1)[0][:40]))


def _skip_ws_comments(text: str) -> str:
    while True:
        text = text.lstrip()
        if text.startswith("#"):
            nl = text.find("\n")
            text = "" if nl < 0 else text[nl + 1:]
            continue
        return text


def _line_of(full: str, rest: str) -> int:
    return full.count("\n", 0, len(full) - len(rest)) + 1


def parse_registries_conf(text: str, source: str = "registries.conf") -> RegistriesConf:
    """Parse the subset; errors name ``source`` and the line."""
    top: Dict[str, Any] = {}
    tables: List[Dict[str, Any]] = []
    current: Optional[Dict[str, Any]] = None   # None: the top level
    kind = "top"
    rest = text
    while True:
        rest = _skip_ws_comments(rest)
        if not rest:
            break
        where = "%s line %d" % (source, _line_of(text, rest))
        if rest.startswith("["):
            end = rest.find("\n")
            header = (rest if end < 0 else rest[:end]).split("#", 1)[0].strip()
            rest = "" if end < 0 else rest[end + 1:]
            if header == "[[registry]]":
                current = {"mirror": []}
                tables.append(current)
                kind = "registry"
            elif header == "[[registry.mirror]]":
                if not tables:
                    raise RocketError("%s: [[registry.mirror]] before any [[registry]]" % where)
                current = {}
                tables[-1]["mirror"].append(current)
                kind = "mirror"
            else:
                raise RocketError("%s: table %s is not understood (only [[registry]] and [[registry.mirror]]; "
                                  "the v1 format and other tables are not supported)" % (where, header))
            continue
        key, eq, after = rest.partition("=")
        key = key.strip().strip('"')
        if not eq or "\n" in key or not key:
            raise RocketError("%s: expected key = value" % where)
        allowed = {"top": _KEYS_TOP, "registry": _KEYS_REGISTRY, "mirror": _KEYS_MIRROR}[kind]
        if key not in allowed:
            raise RocketError("%s: key %r is not understood in %s (understood: %s)"
                              % (where, key, {"top": "the top level", "registry": "[[registry]]",
                                              "mirror": "[[registry.mirror]]"}[kind], ", ".join(allowed)))
        value, rest = _parse_value(after, where)
        line_rest, nl, rest = rest.partition("\n")
        if line_rest.strip() and not line_rest.strip().startswith("#"):
            raise RocketError("%s: unexpected text after the value of %s" % (where, key))
        target = top if current is None else current
        if key in target:
            raise RocketError("%s: %s is set twice" % (where, key))
        target[key] = (value, where)
    return _build(top, tables, source)


def _typed(item: Any, key: str, kind: type) -> Any:
    value, where = item
    if kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise RocketError("%s: %s must be an array of strings" % (where, key))
    elif not isinstance(value, kind):
        raise RocketError("%s: %s must be a %s" % (where, key, "boolean" if kind is bool else "string"))
    return value


def _check_location(value: str, key: str, where: str, prefix: bool = False) -> str:
    if prefix and value.startswith("*.") and check_location(value[2:], key):
        return value
    try:
        return check_location(value, key)
    except RocketError as e:
        raise RocketError("%s: %s" % (where, e)) from None


def _build(top: Dict[str, Any], tables: List[Dict[str, Any]], source: str) -> RegistriesConf:
    search = _typed(top["unqualified-search-registries"], "unqualified-search-registries", list) \
        if "unqualified-search-registries" in top else []
    for host in search:
        if "/" in host or not host:
            raise RocketError("%s: unqualified-search-registries: %r is not a registry host[:port]"
                              % (top["unqualified-search-registries"][1], host))
    mode = None
    if "short-name-mode" in top:
        mode = _typed(top["short-name-mode"], "short-name-mode", str)
        if mode not in SHORT_NAME_MODES:
            raise RocketError("%s: short-name-mode %r is not one of %s"
                              % (top["short-name-mode"][1], mode, ", ".join(SHORT_NAME_MODES)))
    entries = []
    for table in tables:
        some = next((v[1] for k, v in table.items() if k != "mirror"), source)
        if "location" not in table and "prefix" not in table:
            raise RocketError("%s: a [[registry]] needs a location or a prefix" % some)
        location = _typed(table["location"], "location", str) if "location" in table else None
        if location:
            location = _check_location(location, "location", some)
        prefix = _typed(table["prefix"], "prefix", str) if "prefix" in table else (location or "")
        prefix = _check_location(prefix, "prefix", some, prefix=True)
        if prefix.startswith("*."):
            if location:
                raise RocketError("%s: a wildcard prefix (%s) takes no location: pulls go to the host that "
                                  "matched" % (some, prefix))
            location = ""
        elif location is None:
            location = prefix
        mirrors = []
        for m in table["mirror"]:
            if "location" not in m:
                raise RocketError("%s: a [[registry.mirror]] needs a location" % next(
                    (v[1] for v in m.values()), source))
            loc = _check_location(_typed(m["location"], "location", str), "mirror location", m["location"][1])
            mirrors.append({"location": loc,
                            "insecure": _typed(m["insecure"], "insecure", bool) if "insecure" in m else False})
        entries.append(RegistryEntry(
            prefix, location,
            insecure=_typed(table["insecure"], "insecure", bool) if "insecure" in table else False,
            blocked=_typed(table["blocked"], "blocked", bool) if "blocked" in table else False,
            mirror_by_digest_only=_typed(table["mirror-by-digest-only"], "mirror-by-digest-only", bool)
            if "mirror-by-digest-only" in table else False,
            mirrors=mirrors))
    seen = set()
    for e in entries:
        if e.prefix in seen:
            raise RocketError("%s: two [[registry]] tables have the prefix %s" % (source, e.prefix))
        seen.add(e.prefix)
    return RegistriesConf(entries, search, mode, source)


def load_registries_conf(path: Optional[str] = None) -> RegistriesConf:
    """Read ``path`` (must exist when given: the ``registries_conf`` option), else DEFAULT_PATH
    when it exists, else an empty configuration."""
    from .fsutil import read_small

    if path is None:
        if not os.path.exists(DEFAULT_PATH):
            return RegistriesConf(source=DEFAULT_PATH)
        path = DEFAULT_PATH
    try:
        raw = read_small(os.path.realpath(path), 1 << 20)
    except OSError as e:
        raise RocketError("registries_conf: cannot read %s: %s" % (path, e.strerror or e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RocketError("registries_conf: %s is not UTF-8 text" % path) from None
    return parse_registries_conf(text, path)
