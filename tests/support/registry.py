"""Real registries for tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

``RegistrySet`` starts, on free ports, with one throw-away PKI (tests.support.https_server.make_pki):

- ``open``:  TLS, anonymous;
- ``basic``: TLS, htpasswd (bcrypt, ``htpasswd -B``) basic auth;
- ``token``: TLS, ``auth: token``, with ``TokenIssuer`` (an HTTPS endpoint that checks basic
  credentials and signs RS256 JWTs, header ``x5c`` = a certificate chained to the registry's
  ``rootcertbundle``);
- ``plain``: plain http (the insecure path).

``push_test_images`` pushes, with skopeo from OCI layouts built here, the images the tests
share (``IMAGES``): a multi-platform index (amd64 + arm64), an image with 12 layers, two images
sharing a layer, and a Docker schema 2 image. Processes are reaped by PID; storage is removed.
"""
from typing import Dict, List, Optional

USERNAME = "rocket"
PASSWORD = "s3cret-Pa55"

# name -> repository:tag, pushed by push_test_images into each registry it is given
IMAGES = {
    "multi": "test/multi:1",        # OCI index: linux/amd64 + linux/arm64/v8
    "layers": "test/layers:12",     # 12 layers, one file each
    "shared_a": "test/shared-a:1",  # shares its first layer with shared_b
    "shared_b": "test/shared-b:1",
    "v2s2": "test/v2s2:1",          # Docker schema 2 manifest (skopeo --format v2s2)
}


def missing_tools() -> List[str]:
    """The programs the fixture needs that this host lacks (docker-registry, skopeo, htpasswd, openssl)."""
    raise NotImplementedError


class Registry:
    """One running registry. ``host`` is "127.0.0.1:PORT", ``url`` its base URL, ``ca`` the CA file
    clients trust, ``cert_dir`` a certs.d-style directory for it (``ca.crt``), ``auth`` one of
    "none", "basic", "token"; ``insecure`` for the plain-http one."""

    host: str
    url: str
    ca: Optional[str]
    cert_dir: Optional[str]
    auth: str
    insecure: bool
    storage: str
    pid: int

    def ref(self, repo_tag: str) -> str:
        """``docker://<host>/<repo_tag>``."""
        raise NotImplementedError

    def access_log(self) -> List[Dict[str, str]]:
        """The requests the registry served so far: [{"method", "path", "status"}] (from its log)."""
        raise NotImplementedError

    def blob_gets(self) -> List[str]:
        """The digests of blobs GET so far (for 'downloaded once' assertions)."""
        raise NotImplementedError

    def mark(self) -> int:
        """A position in the access log: access_log(since=mark()) sees only what follows."""
        raise NotImplementedError

    def stop(self) -> None:
        """Kill the registry process (by PID), reap it."""
        raise NotImplementedError


class TokenIssuer:
    """The token endpoint of the ``token`` registry: ``realm`` URL, ``service`` name; counts
    ``issued`` tokens; ``expires_in`` settable."""

    realm: str
    service: str
    issued: int
    expires_in: int


class RegistrySet:
    """The four registries (``open``, ``basic``, ``token``, ``plain``) and the token issuer,
    started together in ``directory``; ``images`` maps IMAGES names to their digests
    (manifest or index) once pushed."""

    open: Registry
    basic: Registry
    token: Registry
    plain: Registry
    issuer: TokenIssuer
    pki: Dict[str, str]
    images: Dict[str, str]

    def __init__(self, directory: str) -> None:
        raise NotImplementedError

    def all(self) -> List[Registry]:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process started, remove the storage."""
        raise NotImplementedError


def start_registry(directory: str, auth: str = "none", tls: bool = True, pki: Optional[Dict[str, str]] = None,
                   issuer: Optional[TokenIssuer] = None) -> Registry:
    """Start one docker-registry on a free port; wait until it answers /v2/."""
    raise NotImplementedError


def build_layout(directory: str, layers: List[Dict[str, bytes]], architecture: str = "amd64",
                 variant: str = "", extra_platforms: Optional[List[tuple]] = None) -> str:
    """An OCI image layout with one gzip layer per {path: content} dict (deterministic), tagged
    "latest"; ``extra_platforms`` [(arch, variant, layers)] make it an index. Returns its path."""
    raise NotImplementedError


def skopeo_push(layout: str, registry: Registry, repo_tag: str, fmt: Optional[str] = None,
                all_platforms: bool = False) -> None:
    """``skopeo copy oci:<layout>:latest docker://<host>/<repo_tag>`` with the registry's certs
    and credentials (passed in an auth file, never on argv); ``fmt`` "v2s2" or "oci"."""
    raise NotImplementedError


def push_test_images(registries: List[Registry], directory: str) -> Dict[str, str]:
    """Push IMAGES into each registry; returns name -> manifest (or index) digest (same in all)."""
    raise NotImplementedError


