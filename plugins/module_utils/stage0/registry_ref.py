"""Registry image references: ``docker://[host[:port]/]repo[:tag][@sha256:...]``.

The scheme is required because a bare ``registry/repo:tag`` reads exactly like an appc name
(``example.com/hello:1.0.0``). After it, Docker's normalisation applies: no registry means
``docker.io``, and a one-component repository there means ``library/<name>`` (docker and
podman read ``nginx`` the same way). A first component is a registry only when it has a
``.`` or a ``:`` or is ``localhost``; so ``docker://myhost/app`` is ``docker.io/myhost/app``,
as it is for docker. Whether the registry was written (``Reference.short``) is kept, so a
registries.conf ``unqualified-search-registries`` rule can replace the default.

Standard library only.
"""
import re
from typing import Optional

from .errors import RocketError

SCHEME = "docker://"
DOCKER_HUB = "docker.io"
# Docker Hub's registry API does not answer on docker.io itself: part of the same rule.
DOCKER_HUB_API = "registry-1.docker.io"
DEFAULT_TAG = "latest"


class RegistryError(RocketError):
    """A registry operation failed; the message names the registry, repository and what was wrong.

    ``status`` is the HTTP status when one was received.
    """

    def __init__(self, message: str, registry: Optional[str] = None, repository: Optional[str] = None,
                 status: Optional[int] = None) -> None:
        self.registry = registry
        self.repository = repository
        self.status = status
        super().__init__(message)


_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_RE = re.compile(r"\A%s(?:/%s)*\Z" % (_COMPONENT, _COMPONENT))
_DOMAIN_RE = re.compile(r"\A(?:(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
                        r"(?:\.(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]))*"
                        r"|\[[0-9a-fA-F:]+\])(?::[0-9]{1,5})?\Z")
_TAG_RE = re.compile(r"\A[\w][\w.-]{0,127}\Z")
_DIGEST_RE = re.compile(r"\A(?:sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128})\Z")
_MAX_NAME = 255


class Reference:
    """One parsed, normalised reference. ``tag`` is None only when ``digest`` is given alone."""

    __slots__ = ("registry", "repository", "tag", "digest", "short")

    def __init__(self, registry: str, repository: str, tag: Optional[str] = None,
                 digest: Optional[str] = None, short: bool = False) -> None:
        self.registry = registry
        self.repository = repository
        self.tag = tag if tag is not None or digest is not None else DEFAULT_TAG
        self.digest = digest
        self.short = short

    @property
    def name(self) -> str:
        """``registry/repository``, the image's name without tag or digest."""
        return "%s/%s" % (self.registry, self.repository)

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        return self.digest or self.tag or DEFAULT_TAG

    def replace(self, registry: Optional[str] = None, repository: Optional[str] = None,
                tag: Optional[str] = None, digest: Optional[str] = None) -> "Reference":
        """A copy with the given parts changed (a mirror's location, a resolved digest)."""
        return Reference(self.registry if registry is None else registry,
                         self.repository if repository is None else repository,
                         self.tag if tag is None else tag,
                         self.digest if digest is None else digest,
                         self.short if registry is None else False)

    def uri(self) -> str:
        """``docker://`` + str(self): what the user would write to get exactly this image."""
        return SCHEME + str(self)

    def __str__(self) -> str:
        """``registry/repository[:tag][@digest]``."""
        out = self.name
        if self.tag is not None:
            out += ":" + self.tag
        if self.digest is not None:
            out += "@" + self.digest
        return out

    def __repr__(self) -> str:
        return "Reference(%r)" % str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def is_registry_reference(text: object) -> bool:
    """True when ``text`` names a registry image (starts with the ``docker://`` scheme)."""
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_reference(text: str, what: str = "image") -> Reference:
    """Parse ``docker://...``; a RocketError naming ``what`` and the fault otherwise."""
    if not isinstance(text, str):
        raise RocketError("%s: %r is not a string" % (what, text))
    if not text.startswith(SCHEME):
        raise RocketError("%s: %r is not a registry reference: it must start with %s (a bare "
                          "'host/repo:tag' reads as an appc name)" % (what, text, SCHEME))
    rest = text[len(SCHEME):]
    if not rest or rest != rest.strip() or any(c in rest for c in " \t\r\n\\?#"):
        raise RocketError("%s: %r is not a valid registry reference" % (what, text))
    digest = None
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        try:
            check_digest(digest, "%s: digest of %s" % (what, text))
        except RocketError as e:
            raise RocketError(str(e)) from None
    tag = None
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest, tag = rest[:colon], rest[colon + 1:]
        if not _TAG_RE.match(tag):
            raise RocketError("%s: %r: tag %r is not valid (letters, digits, _ . -, at most 128, "
                              "not starting with . or -)" % (what, text, tag))
    first, sep, more = rest.partition("/")
    short = False
    if sep and ("." in first or ":" in first or first == "localhost" or first.startswith("[")):
        registry, path = first, more
        if not _DOMAIN_RE.match(registry):
            raise RocketError("%s: %r: registry %r is not a valid host[:port]" % (what, text, registry))
        if ":" in registry and not registry.endswith("]"):
            port = int(registry.rsplit(":", 1)[1])
            if not 0 < port < 65536:
                raise RocketError("%s: %r: port %d is out of range" % (what, text, port))
        registry = registry.lower()
    else:
        registry, path, short = DOCKER_HUB, rest, True
    if registry in ("index.docker.io", DOCKER_HUB_API):
        registry = DOCKER_HUB
    if not path:
        raise RocketError("%s: %r names no repository" % (what, text))
    if not _PATH_RE.match(path):
        hint = " (repository names are lower case)" if path.lower() != path else ""
        raise RocketError("%s: %r: repository %r is not valid: components of lower-case letters, digits "
                          "and . _ - separators, joined by /%s" % (what, text, path, hint))
    if registry == DOCKER_HUB and "/" not in path:
        path = "library/" + path
    if len(registry) + 1 + len(path) > _MAX_NAME:
        raise RocketError("%s: %r: the name is longer than %d characters" % (what, text, _MAX_NAME))
    return Reference(registry, path, tag, digest, short)


def check_digest(value: str, what: str = "digest") -> str:
    """``sha256:<64 hex>`` (or ``sha512:<128 hex>``), returned as is; a RocketError otherwise."""
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise RocketError("%s: %r is not a digest (sha256:<64 lower-case hex digits>)" % (what, value))
    return value


def check_location(value: str, what: str = "location") -> str:
    """``host[:port][/path]`` (a registries.conf location or prefix), without a trailing /."""
    value = value.rstrip("/") if isinstance(value, str) else value
    host, dummy_sep, path = value.partition("/") if isinstance(value, str) else ("", "", "")
    if not host or not _DOMAIN_RE.match(host) or (path and not _PATH_RE.match(path)):
        raise RocketError("%s %r is not host[:port][/path]" % (what, value))
    return value


def api_host(registry: str) -> str:
    """The host[:port] that serves ``registry``'s API (Docker Hub's is not docker.io)."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry
