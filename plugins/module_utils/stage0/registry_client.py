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
import os
import threading
import time
from typing import Any, BinaryIO, Dict, List, NamedTuple, Optional, Tuple
from urllib.parse import quote, urlencode, urljoin, urlsplit

from .errors import RocketError
from .registry_auth import Credentials, TokenCache, basic_header, find_credentials, parse_challenges, scope_for
from .registry_ref import Reference, RegistryError, api_host, check_digest
from .transport import backoff, retry_after

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
MAX_TOKEN_RESPONSE = 1 << 20
CERT_DIRS = ("/etc/containers/certs.d", "/etc/docker/certs.d")
CHUNK = 1 << 20
MAX_REDIRECTS = 10
# Backoff: attempt n waits BACKOFF * 2**(n-1) s, at most BACKOFF_CAP; Retry-After up to RETRY_AFTER_CAP.
BACKOFF = 0.5
BACKOFF_CAP = 10.0
RETRY_AFTER_CAP = 60.0
_RETRY_STATUS = (429, 500, 502, 503, 504)
_REDIRECTS = (301, 302, 303, 307, 308)
_HASHES = {"sha256": hashlib.sha256, "sha512": hashlib.sha512}
# ssl contexts by what they trust (RegistryClient._tls_files), built once per process.
_CONTEXTS: Dict[Tuple[Any, ...], Any] = {}
_CONTEXTS_LOCK = threading.Lock()


class Manifest(NamedTuple):
    """A fetched manifest or index: its media type, exact bytes, and digest."""
    media_type: str
    data: bytes
    digest: str

    def json(self) -> Dict[str, Any]:
        """The parsed document (checked to be an object when fetched)."""
        import json

        doc = json.loads(self.data.decode("utf-8"))
        if not isinstance(doc, dict):
            raise RocketError("manifest %s is not a JSON object" % self.digest)
        return doc

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
    if not text:
        from .oci_layout import host_platform

        return Platform(*host_platform())
    parts = str(text).strip().split("/")
    if len(parts) not in (2, 3) or not all(p and p.replace("_", "").replace("-", "").isalnum() for p in parts):
        raise RocketError("platform: %r is not os/architecture[/variant] (linux/amd64, linux/arm64/v8)" % (text,))
    return Platform(parts[0].lower(), parts[1].lower(), parts[2].lower() if len(parts) == 3 else "")


def _norm_variant(arch: str, variant: str) -> str:
    # arm64's only variant is v8, which indexes write or leave out.
    return "" if arch == "arm64" and variant == "v8" else variant


def select_platform(index: Dict[str, Any], os: Optional[str] = None, architecture: Optional[str] = None,
                    variant: Optional[str] = None, what: str = "image index") -> Dict[str, Any]:
    """The descriptor of ``index`` for the platform (host's by default): exact variant first, then
    an entry without variant (arm64 ``v8`` equals none); a RocketError listing the platforms the
    index has when none matches. Entries that are not images (attestations: platform
    ``unknown/unknown``) are skipped."""
    if os is None and architecture is None:
        host = parse_platform(None)
        os, architecture, variant = host.os, host.architecture, host.variant if variant is None else variant
    if not os or not architecture:
        raise RocketError("%s: a platform needs both os and architecture" % what)
    want_variant = _norm_variant(architecture, variant or "")
    manifests = index.get("manifests")
    if not isinstance(manifests, list):
        raise RocketError("%s: 'manifests' is not a list" % what)
    seen = []
    exact = []
    loose = []
    for d in manifests:
        if not isinstance(d, dict):
            raise RocketError("%s: a manifests entry is not an object" % what)
        plat = d.get("platform")
        if not isinstance(plat, dict):
            continue
        p_os, p_arch = str(plat.get("os", "")), str(plat.get("architecture", ""))
        p_var = _norm_variant(p_arch, str(plat.get("variant", "") or ""))
        if p_os == "unknown" or d.get("mediaType") not in MANIFEST_TYPES + (None,):
            continue
        seen.append(str(Platform(p_os, p_arch, p_var)))
        if p_os != os or p_arch != architecture:
            continue
        if p_var == want_variant:
            exact.append(d)
        elif not want_variant or not p_var:
            loose.append(d)
    # Without a variant asked for, an entry without one wins; with one, an entry without one is the fallback.
    pick = exact or loose
    if not pick:
        raise RocketError("%s has no image for platform %s (it has: %s); choose one with the platform option"
                          % (what, Platform(os, architecture, want_variant), ", ".join(seen) or "none"))
    d = pick[0]
    check_digest(str(d.get("digest")), "%s: digest of the %s entry" % (what, Platform(os, architecture, want_variant)))
    return d


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _short(e: BaseException) -> str:
    text = str(e)
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1].rstrip(")")
    return text[:300]


def _netloc(url: str) -> str:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = "[%s]" % host
    return "%s:%d" % (host, parts.port) if parts.port else host


class _Section:
    """``size`` bytes of a file object from its current position, with a length for requests."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f = f
        self.size = size
        self.left = size
        self.start = f.tell() if hasattr(f, "tell") else None

    def __len__(self) -> int:
        return self.size

    def read(self, n: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if n is None or n < 0 else min(n, self.left)
        data = self.f.read(n)
        self.left -= len(data)
        return data

    def rewind(self) -> bool:
        if self.start is None:
            return False
        self.f.seek(self.start)
        self.left = self.size
        return True


class RegistryClient:
    """A client for one registry endpoint (``registry`` is host[:port] as in references).

    Threads may share one client for parallel fetch_blob calls (requests' connection pool is
    thread-safe, a token is fetched once per scope, bytes_received is counted under a lock).
    """

    def __init__(self, registry: str, insecure: bool = False, ca_path: Optional[str] = None,
                 cert_dirs: Optional[List[str]] = None, credentials: Optional[Credentials] = None,
                 auth_file: Optional[str] = None, timeout: float = 30, retries: int = 3,
                 max_manifest_size: int = MAX_MANIFEST) -> None:
        """``credentials`` win over ``auth_file``; with neither, the default auth files are read
        (registry_auth.find_credentials). ``timeout`` bounds connecting and every wait for data."""
        try:
            import requests
            import urllib3
        except ImportError:
            raise RocketError("pulling from registries needs the Python library 'requests' on the target host: "
                              "install the Debian package python3-requests (or 'pip install requests')") from None
        self._requests = requests
        self._urllib3 = urllib3
        if not registry or "/" in registry:
            raise RocketError("registry %r is not host[:port]" % (registry,))
        if timeout is None or timeout <= 0:
            raise RocketError("timeout must be a positive number of seconds, not %r" % (timeout,))
        if retries is None or retries < 0:
            raise RocketError("retries must be 0 or more, not %r" % (retries,))
        self.registry = registry
        self.host = api_host(registry)
        self.insecure = bool(insecure)
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_manifest_size = int(max_manifest_size)
        self._credentials = credentials
        self._auth_file = auth_file
        self._creds_cache: Dict[str, Optional[Credentials]] = {}
        self._tokens = TokenCache()
        self._token_lock = threading.Lock()
        self._challenge: Optional[Tuple[str, Dict[str, str]]] = None   # what the registry asked for last
        self._base: Optional[str] = None
        self.requests_sent = 0
        self.bytes_received = 0
        self.log: List[Tuple[str, str, Optional[int]]] = []
        self.session = requests.Session()
        self.session.trust_env = False   # proxies read explicitly below; ~/.netrc never
        self._tls = self._tls_files(ca_path, cert_dirs)
        self._tls_mounted = False
        self._tls_lock = threading.Lock()

    # -- TLS -----------------------------------------------------------------------------
    def _tls_files(self, ca_path: Optional[str], cert_dirs: Optional[List[str]]) -> Tuple[Any, ...]:
        """The CA files and client certificate pairs this endpoint trusts and presents, checked
        now (a missing file or an unpaired key is the caller's error at once); the context is
        built from them only when the first https request is made (_mount_tls)."""
        cas: List[str] = []
        env_bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE")
        if env_bundle and os.path.isfile(env_bundle):
            cas.append(env_bundle)
        self._env_cas = len(cas)
        if ca_path:
            if os.path.isdir(ca_path):
                cas += [os.path.join(ca_path, n) for n in sorted(os.listdir(ca_path)) if n.endswith((".crt", ".pem"))]
            elif os.path.exists(ca_path):
                cas.append(ca_path)
            else:
                raise RocketError("ca_path %s does not exist" % ca_path)
        ca_user = len(cas)   # the files of ca_path (and the environment's bundle), before certs.d's
        pairs: List[Tuple[str, str]] = []
        self.cert_dir_used: Optional[str] = None
        for base in (cert_dirs if cert_dirs is not None else CERT_DIRS):
            d = os.path.join(base, self.host)
            if not os.path.isdir(d):
                continue
            self.cert_dir_used = d
            names = sorted(os.listdir(d))
            cas += [os.path.join(d, n) for n in names if n.endswith(".crt")]
            for name in names:
                if name.endswith(".cert"):
                    key = os.path.join(d, name[:-len(".cert")] + ".key")
                    if not os.path.isfile(key):
                        raise RocketError("%s: client certificate %s has no matching %s"
                                          % (d, name, os.path.basename(key)))
                    pairs.append((os.path.join(d, name), key))
                elif name.endswith(".key") and name[:-len(".key")] + ".cert" not in names:
                    raise RocketError("%s: key %s has no matching .cert" % (d, name))
            break   # the first certs.d that has the host wins (containers' order)
        stamps: List[Optional[Tuple[int, int]]] = []
        for path in cas + [f for pair in pairs for f in pair]:
            try:
                st = os.stat(path)
                stamps.append((st.st_mtime_ns, st.st_size))
            except OSError:
                stamps.append(None)
        return (self.insecure, tuple(cas), ca_user, tuple(pairs), tuple(stamps))

    def _mount_tls(self) -> None:
        """Mount the https adapter with this endpoint's context (once; threads may race here)."""
        with self._tls_lock:
            if not self._tls_mounted:
                if self.insecure:   # per client: the warning filters are the caller's, and pytest resets them
                    self._urllib3.disable_warnings(self._urllib3.exceptions.InsecureRequestWarning)
                self.session.mount("https://", _adapter(self._requests, self._ssl_context()))
                self._tls_mounted = True

    def _ssl_context(self) -> Any:
        """The context for this endpoint's files, shared by every client of the process that
        trusts the same files (stat-stamped): loading the system CAs costs about 20 ms. An
        insecure endpoint verifies nothing, so its context loads no CA at all."""
        with _CONTEXTS_LOCK:
            ctx = _CONTEXTS.get(self._tls)
            if ctx is None:
                ctx = _CONTEXTS[self._tls] = self._build_context()
            return ctx

    def _build_context(self) -> Any:
        import ssl

        insecure, cas, ca_user, pairs, dummy_stamps = self._tls
        if insecure:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context()
        for i, path in enumerate(cas):
            if insecure:
                break
            try:
                ctx.load_verify_locations(cafile=path)
            except (OSError, ssl.SSLError) as e:
                if i < ca_user:
                    raise RocketError("%s %s: not a usable PEM CA file: %s" % (
                        "ca_path" if i >= self._env_cas else "CA bundle", path,
                        _short(e))) from None
                raise RocketError("%s: unusable certificate or key: %s" % (os.path.dirname(path), _short(e))) from None
        for cert, key in pairs:
            try:
                ctx.load_cert_chain(cert, key)
            except (OSError, ssl.SSLError) as e:
                raise RocketError("%s: unusable certificate or key: %s" % (os.path.dirname(cert), _short(e))) from None
        return ctx

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------
    def _where(self, repository: Optional[str]) -> str:
        return "registry %s, repository %s" % (self.registry, repository) if repository else "registry %s" % self.registry

    def _err(self, repository: Optional[str], message: str, status: Optional[int] = None) -> RegistryError:
        return RegistryError("%s: %s" % (self._where(repository), message), self.registry, repository, status)

    def _creds(self, repository: Optional[str]) -> Optional[Credentials]:
        if self._credentials is not None:
            return self._credentials
        key = repository or ""
        if key not in self._creds_cache:
            self._creds_cache[key] = find_credentials(self.registry, repository, self._auth_file)
        return self._creds_cache[key]

    def _base_url(self, repository: Optional[str]) -> str:
        """https://host, or for an insecure registry whichever of https and http answers."""
        if self._base is not None:
            return self._base
        if not self.insecure:
            self._base = "https://" + self.host
            return self._base
        try:
            resp = self._send("GET", "https://%s/v2/" % self.host, {}, repository, retry=False)
            resp.close()
            self._base = "https://" + self.host
        except RegistryError:
            self._base = "http://" + self.host
        return self._base

    def _send(self, method: str, url: str, headers: Dict[str, str], repository: Optional[str],
              data: Any = None, retry: bool = True) -> Any:
        """One request (no redirects), retried on connection errors, timeouts, 429 and 5xx."""
        req = self._requests
        h = {"User-Agent": "appc.rocket", "Accept-Encoding": "identity"}
        h.update(headers)
        attempt = 0
        while True:
            attempt += 1
            resp = None
            err = None
            if isinstance(data, _Section) and attempt > 1 and not data.rewind():
                raise self._err(repository, "%s %s failed and the upload cannot be replayed" % (method, url))
            if not self._tls_mounted and url.startswith("https:"):
                self._mount_tls()
            try:
                self.requests_sent += 1
                resp = self.session.request(method, url, headers=h, data=data, stream=True, allow_redirects=False,
                                            timeout=(self.timeout, self.timeout), verify=not self.insecure,
                                            proxies=req.utils.get_environ_proxies(url))
            except req.exceptions.SSLError as e:
                raise self._err(repository, "%s %s: TLS error: %s (for a private CA give ca_path or put ca.crt in "
                                "certs.d/%s/; a registry without TLS must be marked insecure)"
                                % (method, url, _short(e), self.host))
            except req.exceptions.Timeout:
                err = "timed out after %gs" % self.timeout
            except req.exceptions.ConnectionError as e:
                err = "cannot connect: %s" % _short(e)
            except req.exceptions.RequestException as e:
                raise self._err(repository, "%s %s failed: %s" % (method, url, _short(e)))
            status = resp.status_code if resp is not None else None
            self.log.append((method, url, status))
            if resp is not None and status not in _RETRY_STATUS:
                return resp
            if not retry or attempt > self.retries:
                if resp is not None:
                    return resp
                raise self._err(repository, "%s %s: %s (gave up after %d attempt%s)"
                                % (method, url, err, attempt, "" if attempt == 1 else "s"))
            wait = retry_after(resp, RETRY_AFTER_CAP)
            if resp is not None:
                resp.close()
            time.sleep(backoff(attempt, BACKOFF, BACKOFF_CAP) if wait is None else wait)

    def _token(self, challenge: Dict[str, str], scopes: List[str], repository: Optional[str]) -> str:
        """A Bearer token for ``scopes`` from the challenge's realm (cached)."""
        with self._token_lock:   # parallel blob downloads share one token per scope
            return self._token_locked(challenge, scopes, repository)

    def _token_locked(self, challenge: Dict[str, str], scopes: List[str], repository: Optional[str]) -> str:
        realm = challenge.get("realm") or ""
        service = challenge.get("service", "")
        creds = self._creds(repository)
        key = (realm, service, " ".join(scopes), creds.username if creds else "")
        cached = self._tokens.get(key)
        if cached is not None:
            return cached
        parts = urlsplit(realm)
        if parts.scheme not in ("https", "http") or not parts.hostname or parts.username or parts.password:
            raise self._err(repository, "the token realm %r of the registry's challenge is not an https URL" % realm)
        if parts.scheme == "http" and not self.insecure:
            raise self._err(repository, "the token realm %s is plain http: credentials would travel in clear; "
                            "refused unless the registry is marked insecure" % realm)
        query: List[Tuple[str, str]] = []
        if service:
            query.append(("service", service))
        for sc in scopes:
            query.append(("scope", sc))
        url = realm + ("&" if "?" in realm else "?") + urlencode(query)
        h = {"Accept": "application/json"}
        if creds is not None:
            h["Authorization"] = basic_header(creds)
        resp = self._send("GET", url, h, repository)
        try:
            if resp.status_code in _REDIRECTS:
                raise self._err(repository, "the token endpoint %s redirected (%d): not followed with credentials"
                                % (realm, resp.status_code))
            if resp.status_code in (401, 403):
                raise self._err(repository, "the token endpoint %s refused %s (HTTP %d)"
                                % (realm, "the credentials" if creds else "anonymous access; give credentials",
                                   resp.status_code), resp.status_code)
            if resp.status_code != 200:
                raise self._err(repository, "the token endpoint %s answered HTTP %d" % (realm, resp.status_code),
                                resp.status_code)
            raw = self._read_limited(resp, MAX_TOKEN_RESPONSE, repository, "the token endpoint's answer")
        finally:
            resp.close()
        import json

        try:
            doc = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            doc = None
        token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
        if not isinstance(token, str) or not token or any(c.isspace() for c in token) or len(token) > 65536:
            raise self._err(repository, "the token endpoint %s returned no usable token (its answer is not JSON "
                            "with a 'token' string)" % realm)
        expires = doc.get("expires_in") if isinstance(doc, dict) else None
        if not isinstance(expires, (int, float)) or isinstance(expires, bool) or expires <= 0:
            expires = None
        self._tokens.put(key, token, expires)
        return token

    def _auth_header(self, scopes: List[str], repository: Optional[str]) -> Optional[str]:
        """The Authorization the last challenge calls for (a cached token, or Basic), if any."""
        if self._challenge is None:
            return None
        scheme, params = self._challenge
        if scheme == "basic":
            creds = self._creds(repository)
            return basic_header(creds) if creds else None
        return "Bearer " + self._token(params, scopes, repository)

    def _request(self, method: str, path_or_url: str, repository: Optional[str], scopes: List[str],
                 headers: Optional[Dict[str, str]] = None, ok: Tuple[int, ...] = (200,), data: Any = None,
                 what: str = "") -> Any:
        """A request to the registry through auth and redirects; the final response (status in ``ok``
        or 404 / 401 handled by the caller via ``ok``)."""
        base = self._base_url(repository)
        url = path_or_url if "://" in path_or_url else base + path_or_url
        headers = dict(headers or {})
        authed_retry = False
        hops = 0
        m = method
        while True:
            h = dict(headers)
            same_host = _netloc(url) == _netloc(base)
            if same_host:
                auth = self._auth_header(scopes, repository)
                if auth:
                    h["Authorization"] = auth
            resp = self._send(m, url, h, repository, data=data)
            status = resp.status_code
            if status == 401 and same_host and not authed_retry:
                resp.close()
                if h.get("Authorization", "").startswith("Bearer "):
                    self._tokens.clear()   # revoked or expired early: ask again, once
                self._use_challenge(resp, repository)
                if not scopes and self._challenge and self._challenge[1].get("scope"):
                    scopes = self._challenge[1]["scope"].split(" ")
                if isinstance(data, _Section) and not data.rewind():
                    raise self._err(repository, "%s %s needs authentication and the upload cannot be replayed"
                                    % (m, url))
                authed_retry = True
                continue
            if status == 401:
                resp.close()
                if not same_host:
                    raise self._err(repository, "%s %s: the redirect target %s asks for authentication: "
                                    "credentials are not sent to another host" % (method, path_or_url, _netloc(url)), 401)
                creds = self._creds(repository)
                raise self._err(repository, "%s%s: access denied (HTTP 401): %s" % (
                    what and what + " ", "", "the credentials (from %s) were rejected" % creds.source if creds
                    else "the registry needs credentials (username/password or an auth file entry)"), 401)
            if status in _REDIRECTS and resp.headers.get("Location"):
                location = urljoin(url, resp.headers["Location"])
                resp.close()
                hops += 1
                if hops > MAX_REDIRECTS:
                    raise self._err(repository, "%s %s: more than %d redirects" % (method, path_or_url, MAX_REDIRECTS))
                parts = urlsplit(location)
                if parts.scheme not in ("https", "http") or not parts.hostname:
                    raise self._err(repository, "%s redirected to %r, not an http(s) URL" % (path_or_url, location))
                if parts.username or parts.password:
                    raise self._err(repository, "%s redirected to a URL carrying credentials: refused" % path_or_url)
                if parts.scheme == "http" and not self.insecure:
                    raise self._err(repository, "%s redirected to plain http %s: refused (the registry is not "
                                    "marked insecure)" % (path_or_url, _netloc(location)))
                if status == 303 and m != "HEAD":
                    m = "GET"
                url = location
                continue
            if status not in ok:
                resp.close()
                raise self._status_error(resp, method, path_or_url, repository, what)
            return resp

    def _status_error(self, resp: Any, method: str, path: str, repository: Optional[str], what: str) -> RegistryError:
        status = resp.status_code
        if status == 403:
            text = "access denied (HTTP 403)"
        elif status == 404:
            text = "not found (HTTP 404)"
        elif status in _RETRY_STATUS:
            text = "HTTP %d %s (gave up after %d attempts)" % (status, resp.reason or "", self.retries + 1)
        else:
            text = "HTTP %d %s" % (status, resp.reason or "")
        return self._err(repository, "%s: %s" % (what or "%s %s" % (method, path), text.strip()), status)

    def _use_challenge(self, resp: Any, repository: Optional[str]) -> None:
        challenges = parse_challenges(resp.headers.get("WWW-Authenticate", ""))
        for ch in challenges:
            if ch.scheme == "bearer" and ch.params.get("realm"):
                self._challenge = ("bearer", ch.params)
                return
        for ch in challenges:
            if ch.scheme == "basic":
                if self._creds(repository) is None:
                    raise self._err(repository, "the registry asks for basic authentication and no credentials "
                                    "were given (username/password, or an auth file entry)", 401)
                self._challenge = ("basic", ch.params)
                return
        raise self._err(repository, "the registry answered 401 without a usable WWW-Authenticate challenge "
                        "(Basic, or Bearer with a realm): %r" % (resp.headers.get("WWW-Authenticate", "")[:200]), 401)

    def _read_limited(self, resp: Any, limit: int, repository: Optional[str], what: str) -> bytes:
        length = resp.headers.get("Content-Length")
        if length and length.isdigit() and int(length) > limit:
            raise self._err(repository, "%s is %s bytes, more than the limit of %d" % (what, length, limit))
        data = bytearray()
        try:
            while True:
                chunk = resp.raw.read(64 << 10, decode_content=True)
                if not chunk:
                    break
                data += chunk
                if len(data) > limit:
                    raise self._err(repository, "%s is more than the limit of %d bytes" % (what, limit))
        except (self._urllib3.exceptions.HTTPError, self._requests.exceptions.RequestException, OSError) as e:
            raise self._err(repository, "reading %s failed: %s" % (what, _short(e)))
        if length and length.isdigit() and len(data) < int(length):
            raise self._err(repository, "reading %s failed: the connection closed after %d of %s bytes"
                            % (what, len(data), length))
        return bytes(data)

    # -- public --------------------------------------------------------------------------
    def ping(self, repository: Optional[str] = None, actions: str = "pull") -> None:
        """``GET /v2/`` through the auth flow (a token for ``repository``'s scope when given):
        checks the registry answers and the credentials are accepted (registry_login)."""
        scopes = [scope_for(repository, actions)] if repository else []
        resp = self._request("GET", "/v2/", repository, scopes, what="GET /v2/")
        resp.close()

    def get_manifest(self, ref: Reference, digest: Optional[str] = None) -> Manifest:
        """The manifest ``ref`` names (its digest, else its tag), or ``digest`` in ref's repository
        (a platform's manifest from an index)."""
        repo = ref.repository
        pinned = digest or ref.digest
        if pinned is not None:
            check_digest(pinned, "%s: manifest digest" % self._where(repo))
        reference = pinned or ref.reference
        what = "manifest %s" % reference
        resp = self._request("GET", "/v2/%s/manifests/%s" % (repo, quote(reference, safe=":")), repo,
                             [scope_for(repo)], {"Accept": ACCEPT}, what=what)
        try:
            data = self._read_limited(resp, self.max_manifest_size, repo, what)
            header_type = (resp.headers.get("Content-Type") or "").split(";", 1)[0].strip().lower()
            header_digest = resp.headers.get("Docker-Content-Digest")
        finally:
            resp.close()
        media_type = self._check_manifest(data, header_type, repo, what)
        if pinned is not None:
            algo = pinned.split(":", 1)[0]
            got = algo + ":" + _HASHES[algo](data).hexdigest()
            if got != pinned:
                raise self._err(repo, "%s: the registry sent content whose digest is %s" % (what, got))
            return Manifest(media_type, data, pinned)
        got = sha256_digest(data)
        if header_digest and header_digest.startswith("sha256:") and header_digest != got:
            raise self._err(repo, "%s: Docker-Content-Digest says %s but the content's digest is %s"
                            % (what, header_digest, got))
        return Manifest(media_type, data, got)

    def _check_manifest(self, data: bytes, header_type: str, repo: str, what: str) -> str:
        import json

        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise self._err(repo, "%s is not valid JSON" % what) from None
        if not isinstance(doc, dict):
            raise self._err(repo, "%s is not a JSON object" % what)
        body_type = doc.get("mediaType")
        if header_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED) or doc.get("schemaVersion") == 1 \
                or body_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
            raise self._err(repo, "%s is a Docker schema 1 manifest, which is not supported (deprecated since 2017); "
                            "push the image again with a current tool (schema 2 or OCI)" % what)
        if doc.get("schemaVersion") != 2:
            raise self._err(repo, "%s: schemaVersion is %r, not 2" % (what, doc.get("schemaVersion")))
        accepted = MANIFEST_TYPES + INDEX_TYPES
        if header_type in accepted:
            media_type = header_type
            if body_type is not None and body_type != header_type:
                raise self._err(repo, "%s: Content-Type %s does not match its mediaType %s" % (what, header_type, body_type))
        elif body_type in accepted:
            media_type = body_type
        elif body_type is None and header_type in ("", "application/json", "text/plain", "application/octet-stream"):
            # An OCI document without mediaType: its shape tells (as containers/image does).
            media_type = OCI_INDEX if "manifests" in doc else OCI_MANIFEST
        else:
            raise self._err(repo, "%s has the media type %s, not an image manifest or index"
                            % (what, body_type or header_type or "(none)"))
        key = "manifests" if media_type in INDEX_TYPES else "layers"
        if not isinstance(doc.get(key), list):
            raise self._err(repo, "%s: '%s' is not a list" % (what, key))
        if media_type in MANIFEST_TYPES and not isinstance(doc.get("config"), dict):
            raise self._err(repo, "%s: 'config' is not an object" % what)
        return media_type

    def head_manifest(self, ref: Reference) -> str:
        """The digest ``ref`` resolves to now, by HEAD (GET when the registry gives no
        Docker-Content-Digest): for pull policy ``update``, no body read."""
        repo = ref.repository
        what = "manifest %s" % ref.reference
        resp = self._request("HEAD", "/v2/%s/manifests/%s" % (repo, quote(ref.reference, safe=":")), repo,
                             [scope_for(repo)], {"Accept": ACCEPT}, what=what)
        resp.close()
        header = resp.headers.get("Docker-Content-Digest")
        if header:
            try:
                check_digest(header)
            except RocketError:
                header = None
        if header and (ref.digest is None or header == ref.digest):
            return header
        return self.get_manifest(ref).digest

    def fetch_blob(self, ref: Reference, digest: str, size: Optional[int], fileobj: BinaryIO,
                   resume: bool = True) -> int:
        """Stream blob ``digest`` of ref's repository into ``fileobj`` (written sequentially from
        its current position), verifying size and sha256; returns the bytes written. A wrong
        digest or size raises after the bytes were written: the caller discards the file."""
        repo = ref.repository
        check_digest(digest, "%s: blob digest" % self._where(repo))
        if size is not None and (not isinstance(size, int) or size < 0):
            raise self._err(repo, "blob %s: size %r is not a byte count" % (digest, size))
        algo = digest.split(":", 1)[0]
        hasher = _HASHES[algo]()
        try:
            start: Optional[int] = fileobj.tell()
        except (AttributeError, OSError):
            start = None   # a pipe: a resume must be a real range, never a restart
        what = "blob %s" % digest
        path = "/v2/%s/blobs/%s" % (repo, digest)
        offset = 0
        attempt = 0
        while True:
            headers = {}
            if offset:
                headers["Range"] = "bytes=%d-" % offset
            resp = self._request("GET", path, repo, [scope_for(repo)], headers, ok=(200, 206), what=what)
            broken = None
            try:
                if resp.status_code == 206:
                    crange = resp.headers.get("Content-Range", "")
                    try:
                        got_start = int(crange.split(" ", 1)[1].split("-", 1)[0]) if crange.startswith("bytes ") else -1
                    except (IndexError, ValueError):
                        got_start = -1
                    if got_start != offset:
                        raise self._err(repo, "%s: asked for bytes from %d, the registry sent %r" % (what, offset, crange))
                elif offset:
                    # A whole body again: start over.
                    if start is None:
                        raise self._err(repo, "%s: the registry ignored the range request and the destination "
                                        "cannot be rewound" % what)
                    fileobj.seek(start)
                    fileobj.truncate()
                    hasher = _HASHES[algo]()
                    offset = 0
                length = resp.headers.get("Content-Length")
                if length and length.isdigit() and size is not None and offset + int(length) > size:
                    raise self._err(repo, "%s: the registry announces %d bytes, the manifest says %d"
                                    % (what, offset + int(length), size))
                while True:
                    try:
                        chunk = resp.raw.read(CHUNK, decode_content=False)
                    except (self._urllib3.exceptions.HTTPError, self._requests.exceptions.RequestException,
                            OSError) as e:
                        broken = _short(e)
                        if "timed out" in broken.lower() or "timeout" in type(e).__name__.lower():
                            broken = "no data for %gs (stalled)" % self.timeout
                        break
                    if not chunk:
                        break
                    if size is not None and offset + len(chunk) > size:
                        raise self._err(repo, "%s is larger than the %d bytes its descriptor says" % (what, size))
                    fileobj.write(chunk)
                    hasher.update(chunk)
                    offset += len(chunk)
                    with self._token_lock:
                        self.bytes_received += len(chunk)
                if broken is None and size is not None and offset < size:
                    broken = "the connection closed after %d of %d bytes" % (offset, size)
                elif broken is None and length and length.isdigit() and resp.status_code == 200 and offset < int(length):
                    broken = "the connection closed after %d of %s bytes" % (offset, length)
            finally:
                resp.close()
            if broken is None:
                break
            attempt += 1
            if not resume or attempt > self.retries:
                raise self._err(repo, "%s: download broke after %d bytes (%s)%s" % (
                    what, offset, broken, "" if not resume else ", gave up after %d attempts" % attempt))
            time.sleep(backoff(attempt, BACKOFF, BACKOFF_CAP))
        got = algo + ":" + hasher.hexdigest()
        if got != digest:
            raise self._err(repo, "%s: the content's digest is %s (%d bytes): corrupt or hostile registry"
                            % (what, got, offset))
        return offset

    def blob_exists(self, ref: Reference, digest: str) -> bool:
        """HEAD of the blob in ref's repository."""
        repo = ref.repository
        check_digest(digest, "%s: blob digest" % self._where(repo))
        resp = self._request("HEAD", "/v2/%s/blobs/%s" % (repo, digest), repo, [scope_for(repo, "pull,push")],
                             ok=(200, 404), what="blob %s" % digest)
        resp.close()
        return resp.status_code == 200

    def upload_blob(self, ref: Reference, digest: str, size: int, fileobj: BinaryIO,
                    mount_from: Optional[str] = None) -> str:
        """Upload a blob to ref's repository unless it is there: "exists", "mounted" (from the
        repository ``mount_from`` of the same registry) or "uploaded". ``fileobj`` is read from
        its current position for ``size`` bytes."""
        repo = ref.repository
        if self.blob_exists(ref, digest):
            return "exists"
        scopes = [scope_for(repo, "pull,push")]
        what = "upload of blob %s" % digest
        path = "/v2/%s/blobs/uploads/" % repo
        if mount_from:
            scopes.append(scope_for(mount_from, "pull"))
            path += "?" + urlencode([("mount", digest), ("from", mount_from)])
        resp = self._request("POST", path, repo, scopes, {"Content-Length": "0"}, ok=(201, 202), what=what)
        resp.close()
        if resp.status_code == 201:
            return "mounted"
        location = resp.headers.get("Location")
        if not location:
            raise self._err(repo, "%s: the registry started an upload without a Location" % what)
        url = urljoin(self._base_url(repo) + path, location)
        if _netloc(url) != _netloc(self._base_url(repo)):
            raise self._err(repo, "%s: the upload location is on another host (%s): refused" % (what, _netloc(url)))
        url += ("&" if "?" in url else "?") + urlencode([("digest", digest)])
        body = _Section(fileobj, size)
        resp = self._request("PUT", url, repo, scopes, {"Content-Type": "application/octet-stream",
                                                        "Content-Length": str(size)}, ok=(201,), data=body, what=what)
        resp.close()
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise self._err(repo, "%s: the registry stored it as %s" % (what, got))
        return "uploaded"

    def put_manifest(self, ref: Reference, media_type: str, data: bytes) -> str:
        """PUT the manifest under ref's tag (or digest); returns its digest (checked against the
        registry's Docker-Content-Digest)."""
        repo = ref.repository
        digest = sha256_digest(data)
        if ref.digest is not None and ref.digest != digest:
            raise self._err(repo, "manifest: its digest is %s, not the %s the reference names" % (digest, ref.digest))
        reference = ref.tag if ref.tag is not None else digest
        what = "PUT manifest %s" % reference
        resp = self._request("PUT", "/v2/%s/manifests/%s" % (repo, quote(reference, safe=":")), repo,
                             [scope_for(repo, "pull,push")], {"Content-Type": media_type}, ok=(201,),
                             data=data, what=what)
        resp.close()
        got = resp.headers.get("Docker-Content-Digest")
        if got and got != digest:
            raise self._err(repo, "%s: the registry stored it as %s, not %s" % (what, got, digest))
        return digest


def _adapter(requests: Any, ctx: Any) -> Any:
    """An HTTPAdapter whose https pools use ``ctx`` (CAs from certs.d and ca_path, client certs)."""

    class _Adapter(requests.adapters.HTTPAdapter):
        def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
            kwargs["ssl_context"] = ctx
            super().init_poolmanager(*args, **kwargs)

        def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
            # The context holds the trust decisions; requests' CA bundle must not replace them.
            conn.cert_reqs = "CERT_REQUIRED" if verify else "CERT_NONE"
            conn.ca_certs = None
            conn.ca_cert_dir = None

    return _Adapter()


def client_for(ref: Reference, insecure: bool = False, **options: Any) -> RegistryClient:
    """A RegistryClient for ref's registry (its API host), ``options`` as RegistryClient's."""
    return RegistryClient(ref.registry, insecure=insecure, **options)
