"""The registry wire: OCI distribution v1.1 / Docker registry v2 over ``requests``.

One ``RegistryClient`` talks to one registry endpoint (host[:port]) with the habits of
transport.Client, made for registries:

- TLS verified against the system CAs, or ``ca_path``, plus containers'/Docker's
  ``certs.d/<host:port>/`` (``*.crt`` CAs, ``*.cert`` + ``*.key`` client certificates) under
  /etc/containers/certs.d and /etc/docker/certs.d (or ``cert_dirs``); ``http://`` only for a
  registry marked insecure (which also accepts unverified TLS, tried first, as podman does).
- Auth: anonymous first; a 401 challenge picks Basic or the Bearer token flow
  (registry_auth); tokens cached per scope.
- Manifests by tag or digest with ``Accept`` for OCI manifest/index and Docker schema 2
  manifest/list; schema 1 refused; bounded size; a manifest fetched by digest is checked
  against it; the digest of one fetched by tag is the sha256 of its bytes (the header is
  compared when present).
- Blobs streamed into a file object with sha256 and size checked as they come; a broken
  body resumes with ``Range`` where it stopped; a body that stalls longer than ``timeout``
  is a broken body; bounded retries on connection errors, 429 and 5xx honouring Retry-After.
- Redirects followed by hand: to another host (blob storage, CDNs) without Authorization,
  so credentials and tokens never leave the registry that asked for them.
- Push: blob_exists, upload_blob (monolithic POST+PUT, or a cross-repository mount),
  put_manifest.

Every error is a RegistryError naming the registry, the repository and what was wrong; no
credential ever appears in one. ``requests`` is imported lazily.
"""
import hashlib
from typing import Any, BinaryIO, Dict, List, NamedTuple, Optional, Tuple

from .registry_auth import Credentials
from .registry_ref import Reference, RegistryError

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
DOCKER_SCHEMA1_SIGNED = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
ACCEPT = ", ".join(MANIFEST_TYPES + INDEX_TYPES)

MAX_MANIFEST = 4 << 20
CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")


class Manifest(NamedTuple):
    """A fetched manifest or index: its media type, exact bytes, and digest."""
    media_type: str
    data: bytes
    digest: str

    def json(self) -> Dict[str, Any]:
        """The parsed document (checked to be an object)."""
        raise NotImplementedError

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES


class Platform(NamedTuple):
    os: str
    architecture: str
    variant: str = ""

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def parse_platform(text: Optional[str]) -> Platform:
    """``os/arch[/variant]`` (the ``platform`` option); None or "" means this host."""
    raise NotImplementedError


def select_platform(index: Dict[str, Any], os: Optional[str] = None, architecture: Optional[str] = None,
                    variant: Optional[str] = None, what: str = "image index") -> Dict[str, Any]:
    """The descriptor of ``index`` for the platform (host's by default): exact variant first, then
    an entry without variant (arm64 ``v8`` equals none); a RocketError listing the platforms the
    index has when none matches. Entries that are not images (attestations: platform
    ``unknown/unknown``) are skipped."""
    raise NotImplementedError


class RegistryClient:
    """A client for one registry endpoint (``registry`` is host[:port] as in references)."""

    def __init__(self, registry: str, insecure: bool = False, ca_path: Optional[str] = None,
                 cert_dirs: Optional[List[str]] = None, credentials: Optional[Credentials] = None,
                 auth_file: Optional[str] = None, timeout: float = 30, retries: int = 3,
                 max_manifest_size: int = MAX_MANIFEST) -> None:
        """``credentials`` win over ``auth_file``; with neither, the default auth files are read
        (registry_auth.find_credentials). ``timeout`` bounds connecting and every wait for data."""
        raise NotImplementedError

    # statistics, for results and tests (never credentials)
    requests_sent: int
    bytes_received: int
    log: List[Tuple[str, str, Optional[int]]]

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def ping(self, repository: Optional[str] = None, actions: str = "pull") -> None:
        """``GET /v2/`` through the auth flow (a token for ``repository``'s scope when given):
        checks the registry answers and the credentials are accepted (registry_login)."""
        raise NotImplementedError

    def get_manifest(self, ref: Reference, digest: Optional[str] = None) -> Manifest:
        """The manifest ``ref`` names (its digest, else its tag), or ``digest`` in ref's repository
        (a platform's manifest from an index)."""
        raise NotImplementedError

    def head_manifest(self, ref: Reference) -> str:
        """The digest ``ref`` resolves to now, by HEAD (GET when the registry gives no
        Docker-Content-Digest): for pull policy ``update``, no body read."""
        raise NotImplementedError

    def fetch_blob(self, ref: Reference, digest: str, size: Optional[int], fileobj: BinaryIO,
                   resume: bool = True) -> int:
        """Stream blob ``digest`` of ref's repository into ``fileobj`` (written sequentially from
        its current position), verifying size and sha256; returns the bytes written. A wrong
        digest or size raises after the bytes were written: the caller discards the file."""
        raise NotImplementedError

    def blob_exists(self, ref: Reference, digest: str) -> bool:
        """HEAD of the blob in ref's repository."""
        raise NotImplementedError

    def upload_blob(self, ref: Reference, digest: str, size: int, fileobj: BinaryIO,
                    mount_from: Optional[str] = None) -> str:
        """Upload a blob to ref's repository unless it is there: "exists", "mounted" (from the
        repository ``mount_from`` of the same registry) or "uploaded". ``fileobj`` is read from
        its current position for ``size`` bytes."""
        raise NotImplementedError

    def put_manifest(self, ref: Reference, media_type: str, data: bytes) -> str:
        """PUT the manifest under ref's tag (or digest); returns its digest (checked against the
        registry's Docker-Content-Digest)."""
        raise NotImplementedError


def client_for(ref: Reference, insecure: bool = False, **options: Any) -> RegistryClient:
    """A RegistryClient for ref's registry (its API host), ``options`` as RegistryClient's."""
    raise NotImplementedError


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()

