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


class Reference:
    """One parsed, normalised reference. ``tag`` is None only when ``digest`` is given alone."""

    __slots__ = ("registry", "repository", "tag", "digest", "short")

    def __init__(self, registry: str, repository: str, tag: Optional[str] = None,
                 digest: Optional[str] = None, short: bool = False) -> None:
        raise NotImplementedError

    @property
    def name(self) -> str:
        """``registry/repository``, the image's name without tag or digest."""
        raise NotImplementedError

    @property
    def reference(self) -> str:
        """What goes after ``/manifests/``: the digest when pinned, else the tag."""
        raise NotImplementedError

    def replace(self, registry: Optional[str] = None, repository: Optional[str] = None,
                tag: Optional[str] = None, digest: Optional[str] = None) -> "Reference":
        """A copy with the given parts changed (a mirror's location, a resolved digest)."""
        raise NotImplementedError

    def uri(self) -> str:
        """``docker://`` + str(self): what the user would write to get exactly this image."""
        raise NotImplementedError

    def __str__(self) -> str:
        """``registry/repository[:tag][@digest]``."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return "Reference(%r)" % str(self)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Reference) and str(self) == str(other)

    def __hash__(self) -> int:
        return hash(str(self))


def is_registry_reference(text: str) -> bool:
    """True when ``text`` names a registry image (starts with the ``docker://`` scheme)."""
    return isinstance(text, str) and text.startswith(SCHEME)


def parse_reference(text: str, what: str = "image") -> Reference:
    """Parse ``docker://...``; a RocketError naming ``what`` and the fault otherwise."""
    raise NotImplementedError


def check_digest(value: str, what: str = "digest") -> str:
    """``sha256:<64 hex>`` (or ``sha512:<128 hex>``), returned as is; a RocketError otherwise."""
    raise NotImplementedError


def api_host(registry: str) -> str:
    """The host[:port] that serves ``registry``'s API (Docker Hub's is not docker.io)."""
    raise NotImplementedError
