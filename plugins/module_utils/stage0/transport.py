"""HTTP(S) for fetching images, signatures, keys and discovery pages.

One ``Client`` per fetch holds the transport rules, so every request (discovery page,
image, signature, key) follows the same ones:

- https only; http:// only when the caller allows insecure ``http``; any other scheme is refused.
  A redirect from https to http counts as an http request.
- Redirects are followed by hand (at most ``max_redirects``), so a loop is reported as a loop
  and every hop is checked against the rules above.
- Credentials are never taken from URLs (``https://user:pw@host`` is refused: it would end up in
  logs and results). ``username``/``password`` are sent only to the hosts named in
  ``auth_hosts``; a credentials file (rkt's ``auth.d`` JSON format) names its own domains. So a
  redirect or a discovery page that points elsewhere never receives them.
- The environment's proxies and CA bundle variables apply (read explicitly); ``~/.netrc`` does not.
- Connect and read timeouts (``timeout`` each: the read timeout bounds every wait for data, not
  the whole download); bounded retries with exponential backoff on connection errors,
  timeouts, 429 and 5xx (``Retry-After`` honoured up to a cap).
- Downloads go to a file, byte-counted against a size limit, with ``Accept-Encoding: identity``
  and the raw bytes as sent. A download broken mid-body resumes with ``Range`` and ``If-Range``
  when the server advertised ``Accept-Ranges: bytes`` and a strong validator; otherwise it
  restarts from zero. Either way the file ends up holding each byte once, and it is hashed
  once, by the import that reads it.
- ``overrides`` maps a host (``example.com`` or ``example.com:8443``) to a base URL
  (``https://127.0.0.1:8443``): requests for that host go to the base URL instead (same path
  and query). Explicit, per call; meant for mirrors and tests. Credential decisions still use
  the original host.

``requests`` is imported lazily: the rest of the library (and every module that does not fetch)
runs without it.
"""
import json
import os
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple
from urllib.parse import urljoin, urlsplit, urlunsplit

from .errors import RocketError
from .fsutil import read_small

# Backoff base in seconds; attempt n waits BACKOFF * 2**(n-1), at most BACKOFF_CAP.
BACKOFF = 0.5
BACKOFF_CAP = 10.0
RETRY_AFTER_CAP = 30.0
CHUNK = 1 << 20
MAX_REDIRECTS = 10
SMALL_LIMIT = 1 << 20   # discovery pages, signatures, keys

# What "insecure" may relax. "image" (rkt's name) and "signature" are the same thing.
INSECURE_CHOICES = ("none", "image", "signature", "tls", "http", "all-fetch", "all")
_REDIRECTS = (301, 302, 303, 307, 308)
_RETRY_STATUS = (429, 500, 502, 503, 504)

REQUESTS_MISSING = ("fetching remote images needs the Python library 'requests' on the target host: "
                    "install the Debian package python3-requests (or 'pip install requests')")


class FetchError(RocketError):
    """A remote resource could not be fetched (transport, status, size, redirects, policy)."""

    def __init__(self, message: str, url: Optional[str] = None, status: Optional[int] = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


def load_requests():
    try:
        import requests  # noqa: F401
        import urllib3  # noqa: F401
    except ImportError:
        raise RocketError(REQUESTS_MISSING) from None
    return requests


def parse_insecure(insecure: Any) -> frozenset:
    """``insecure`` (a list, or a comma-separated string) -> {"image", "tls", "http"} subset."""
    if insecure is None:
        return frozenset()
    if isinstance(insecure, str):
        insecure = [p.strip() for p in insecure.split(",") if p.strip()]
    out = set()
    for item in insecure:
        item = str(item).strip().lower()
        if item not in INSECURE_CHOICES:
            raise RocketError("insecure: %r is not one of %s" % (item, ", ".join(INSECURE_CHOICES)))
        if item in ("image", "signature"):
            out.add("image")
        elif item in ("all-fetch", "all"):
            out.update(("image", "tls", "http"))
        elif item != "none":
            out.add(item)
    return frozenset(out)


def host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()


def _netloc_key(parts) -> str:
    host = (parts.hostname or "").lower()
    return "%s:%d" % (host, parts.port) if parts.port else host


def cache_max_age(headers: Any) -> Optional[int]:
    """Seconds a response may be reused without revalidation (Cache-Control), or None."""
    value = headers.get("Cache-Control") if headers is not None else None
    if not value:
        return None
    max_age = None
    for part in value.split(","):
        key, dummy_sep, arg = part.strip().partition("=")
        key = key.strip().lower()
        if key in ("no-cache", "no-store"):
            return 0
        if key == "max-age":
            try:
                max_age = max(0, int(arg.strip().strip('"')))
            except ValueError:
                return 0
    return max_age


def retry_after(resp: Any, cap: float) -> Optional[float]:
    """Seconds a 429/503 reply asks us to wait (its Retry-After, seconds or an HTTP date), at
    most ``cap``; None when it says nothing usable. The https fetch and the registry client
    share it."""
    value = resp.headers.get("Retry-After") if resp is not None else None
    if not value:
        return None
    try:
        return min(cap, max(0.0, float(value)))
    except ValueError:
        from email.utils import parsedate_to_datetime

        try:
            return min(cap, max(0.0, parsedate_to_datetime(value).timestamp() - time.time()))
        except (TypeError, ValueError):
            return None


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff: base, 2*base, ... up to cap (attempt counts from 1)."""
    return min(cap, base * (2 ** max(0, attempt - 1)))


def load_credentials_file(path: str) -> List[Tuple[frozenset, Dict[str, str]]]:
    """rkt's auth.d format: ``{rktKind: auth, rktVersion: v1, domains: [...], type: basic|oauth,
    credentials: {user, password} | {token}}``; a list of such objects is accepted too.

    Returns [(domains, headers)]. The file's content never appears in an error.
    """
    import base64

    try:
        raw = read_small(path, 1 << 20)
    except OSError as e:
        raise RocketError("cannot read the credentials file %s: %s" % (path, e.strerror or e))
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise RocketError("credentials file %s is not valid JSON" % path) from None
    entries = doc if isinstance(doc, list) else [doc]
    out = []
    for i, entry in enumerate(entries):
        where = "credentials file %s, entry %d" % (path, i)
        if not isinstance(entry, dict) or entry.get("rktKind", "auth") != "auth":
            raise RocketError("%s: not an auth entry ({rktKind: auth, domains, type, credentials})" % where)
        domains = entry.get("domains")
        creds = entry.get("credentials")
        if not isinstance(domains, list) or not domains or not all(isinstance(d, str) and d for d in domains):
            raise RocketError("%s: 'domains' must be a non-empty list of host names" % where)
        if not isinstance(creds, dict):
            raise RocketError("%s: 'credentials' must be an object" % where)
        kind = entry.get("type", "basic")
        if kind == "basic":
            user, password = creds.get("user"), creds.get("password")
            if not isinstance(user, str) or not isinstance(password, str):
                raise RocketError("%s: basic credentials need 'user' and 'password' strings" % where)
            token = base64.b64encode(("%s:%s" % (user, password)).encode("utf-8")).decode("ascii")
            header = "Basic " + token
        elif kind == "oauth":
            if not isinstance(creds.get("token"), str):
                raise RocketError("%s: oauth credentials need a 'token' string" % where)
            header = "Bearer " + creds["token"]
        else:
            raise RocketError("%s: type %r is not basic or oauth" % (where, kind))
        out.append((frozenset(d.lower() for d in domains), {"Authorization": header}))
    return out


class Client:
    """The transport of one fetch: a requests session plus this project's rules."""

    def __init__(self, insecure: Iterable[str] = (), ca_path: Optional[str] = None,
                 client_cert: Optional[str] = None, client_key: Optional[str] = None,
                 username: Optional[str] = None, password: Optional[str] = None,
                 auth_hosts: Iterable[str] = (), credentials_file: Optional[str] = None,
                 timeout: float = 30, retries: int = 3, overrides: Optional[Dict[str, str]] = None,
                 max_redirects: int = MAX_REDIRECTS) -> None:
        requests = load_requests()
        self.requests = requests
        import urllib3

        self.urllib3 = urllib3
        self.insecure = parse_insecure(insecure)
        if timeout is None or timeout <= 0:
            raise RocketError("timeout must be a positive number of seconds, not %r" % (timeout,))
        if retries is None or retries < 0:
            raise RocketError("retries must be 0 or more, not %r" % (retries,))
        self.timeout = float(timeout)
        self.retries = int(retries)
        self.max_redirects = max_redirects
        self.session = requests.Session()
        # The environment is read here, explicitly: proxies (*_proxy, no_proxy) and a CA bundle
        # (REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE) apply; ~/.netrc does not (requests would let it
        # replace the credentials chosen below). An explicit ca_path wins.
        self.session.trust_env = False
        self.verify: Any = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
        if "tls" in self.insecure:
            self.verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        elif ca_path:
            if not os.path.exists(ca_path):
                raise RocketError("ca_path %s does not exist" % ca_path)
            self.verify = ca_path
        if client_key and not client_cert:
            raise RocketError("client_key needs client_cert")
        if client_cert:
            for p in (client_cert, client_key):
                if p and not os.path.isfile(p):
                    raise RocketError("client certificate file %s does not exist" % p)
            self.session.cert = (client_cert, client_key) if client_key else client_cert
        if (username is None) != (password is None):
            raise RocketError("username and password go together")
        self._basic = None
        if username is not None:
            import base64

            self._basic = "Basic " + base64.b64encode(("%s:%s" % (username, password)).encode("utf-8")).decode("ascii")
        self.auth_hosts = frozenset(h.lower() for h in auth_hosts if h)
        self.cred_entries = load_credentials_file(credentials_file) if credentials_file else []
        self.overrides: Dict[str, str] = {}
        for host, base in (overrides or {}).items():
            parts = urlsplit(str(base))
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise RocketError("discovery_overrides: %s -> %r is not an http(s) base URL" % (host, base))
            if parts.query or parts.fragment or parts.username:
                raise RocketError("discovery_overrides: %s -> %r must be scheme://host[:port][/path] only"
                                  % (host, base))
            self.overrides[str(host).lower()] = str(base).rstrip("/")
        self.requests_sent = 0
        self.log: List[Tuple[str, str, Optional[int]]] = []   # (method, url, status): no credentials

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- URL policy ----------------------------------------------------------------------
    def check_url(self, url: str, what: str = "URL") -> str:
        try:
            parts = urlsplit(url)
        except ValueError:
            raise FetchError("%s %r is not a valid URL" % (what, url), url)
        if parts.username or parts.password:
            raise FetchError("%s %s carries credentials: they would end up in logs and results; use "
                             "username/password or a credentials file" % (what, redact(url)), redact(url))
        if parts.scheme == "https":
            pass
        elif parts.scheme == "http":
            if "http" not in self.insecure:
                raise FetchError("%s %s uses plain http: refused unless insecure transport is allowed "
                                 "(insecure: [http])" % (what, url), url)
        else:
            raise FetchError("%s %s: only https URLs are fetched (http with insecure: [http])" % (what, url), url)
        if not parts.hostname:
            raise FetchError("%s %s has no host" % (what, url), url)
        return url

    def _target(self, url: str) -> str:
        """The URL actually requested: ``url`` through the overrides."""
        parts = urlsplit(url)
        base = self.overrides.get(_netloc_key(parts)) or self.overrides.get((parts.hostname or "").lower())
        if base is None:
            return url
        b = urlsplit(base)
        if b.scheme == "http" and "http" not in self.insecure:
            raise FetchError("discovery_overrides sends %s to plain http %s: allow it with insecure: [http]"
                             % (parts.netloc, base), url)
        return urlunsplit((b.scheme, b.netloc, b.path.rstrip("/") + (parts.path or "/"), parts.query, ""))

    def _auth_headers(self, url: str) -> Dict[str, str]:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        netloc = _netloc_key(parts)
        for domains, headers in self.cred_entries:
            if host in domains or netloc in domains:
                return dict(headers)
        if self._basic and (host in self.auth_hosts or netloc in self.auth_hosts):
            return {"Authorization": self._basic}
        return {}

    # -- requests ------------------------------------------------------------------------
    def _send_once(self, method: str, url: str, headers: Dict[str, str]):
        """One request (no redirects), with retries on transient failures."""
        req = self.requests
        target = self._target(url)
        h = {"User-Agent": "appc.rocket", "Accept-Encoding": "identity"}
        h.update(headers)
        h.update(self._auth_headers(url))
        attempt = 0
        while True:
            attempt += 1
            resp = None
            err: Optional[str] = None
            try:
                self.requests_sent += 1
                resp = self.session.request(method, target, headers=h, stream=True, allow_redirects=False,
                                            timeout=(self.timeout, self.timeout), verify=self.verify,
                                            proxies=req.utils.get_environ_proxies(target))
            except req.exceptions.SSLError as e:
                raise FetchError("%s %s: TLS error: %s (for a private CA give ca_path; for a client "
                                 "certificate, client_cert and client_key)" % (method, url, _short(e)), url)
            except req.exceptions.Timeout:
                err = "timed out after %gs" % self.timeout
            except req.exceptions.ConnectionError as e:
                err = "cannot connect: %s" % _short(e)
            except req.exceptions.InvalidURL as e:
                raise FetchError("%s %s: invalid URL: %s" % (method, url, _short(e)), url)
            except req.exceptions.RequestException as e:
                raise FetchError("%s %s failed: %s" % (method, url, _short(e)), url)
            status = resp.status_code if resp is not None else None
            self.log.append((method, url, status))
            if resp is not None and status not in _RETRY_STATUS:
                return resp
            if attempt > self.retries:
                if resp is not None:
                    return resp  # the caller reports the status
                raise FetchError("%s %s: %s (gave up after %d attempt%s)"
                                 % (method, url, err, attempt, "" if attempt == 1 else "s"), url)
            wait = retry_after(resp, RETRY_AFTER_CAP)
            if resp is not None:
                resp.close()
            time.sleep(backoff(attempt, BACKOFF, BACKOFF_CAP) if wait is None else wait)

    def open(self, url: str, method: str = "GET", headers: Optional[Dict[str, str]] = None,
             ok: Iterable[int] = (200,), what: str = "URL"):
        """The final response (streamed; the caller closes it) after redirects; status in ``ok``."""
        self.check_url(url, what)
        headers = dict(headers or {})
        chain = [url]
        current = url
        m = method
        while True:
            resp = self._send_once(m, current, headers)
            if resp.status_code in _REDIRECTS and resp.headers.get("Location"):
                location = urljoin(current, resp.headers["Location"])
                resp.close()
                if location in chain:
                    raise FetchError("%s %s: redirect loop: %s" % (method, url, " -> ".join(chain + [location])), url)
                if len(chain) > self.max_redirects:
                    raise FetchError("%s %s: more than %d redirects" % (method, url, self.max_redirects), url)
                self.check_url(location, "redirect target of %s:" % url)
                if resp.status_code == 303 and m != "HEAD":
                    m = "GET"
                chain.append(location)
                current = location
                continue
            if resp.status_code not in ok:
                status, reason = resp.status_code, resp.reason
                resp.close()
                raise FetchError("%s %s: HTTP %d %s" % (m, current, status, reason or ""), current, status)
            resp.final_url = current   # the logical URL (before overrides), for messages and the index
            return resp

    def get_small(self, url: str, limit: int = SMALL_LIMIT, what: str = "URL") -> Tuple[bytes, Any]:
        """The whole body of a small resource (page, signature, key): (bytes, response)."""
        resp = self.open(url, what=what)
        try:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > limit:
                raise FetchError("%s %s is %s bytes, more than the %d allowed" % (what, url, length, limit), url)
            data = bytearray()
            try:
                while True:
                    chunk = resp.raw.read(64 << 10, decode_content=True)
                    if not chunk:
                        break
                    data += chunk
                    if len(data) > limit:
                        raise FetchError("%s %s is more than %d bytes" % (what, url, limit), url)
            except (self.urllib3.exceptions.HTTPError, self.requests.exceptions.RequestException, OSError) as e:
                raise FetchError("reading %s %s failed: %s" % (what, url, _short(e)), url)
            if length and length.isdigit() and resp.headers.get("Content-Encoding", "identity") == "identity" \
                    and len(data) < int(length):
                raise FetchError("reading %s %s failed: the connection closed after %d of %s bytes"
                                 % (what, url, len(data), length), url)
            return bytes(data), resp
        finally:
            resp.close()

    def download(self, url: str, path: str, max_size: int, headers: Optional[Dict[str, str]] = None,
                 what: str = "image") -> Dict[str, Any]:
        """Download ``url`` into the new file ``path`` (resuming broken transfers).

        ``headers`` may hold conditional headers; a 304 returns ``{"status": 304}`` with the
        response headers and writes nothing. Otherwise returns status, etag, max_age,
        bytes, resumed, url (the final URL), content_type.
        """
        headers = dict(headers or {})
        attempt = 0
        resumed = 0
        offset = 0
        validator: Optional[str] = None
        ranges = False
        first = None
        with open(path, "wb") as out:
            while True:
                h = dict(headers)
                if offset:
                    for k in ("If-None-Match", "If-Modified-Since"):
                        h.pop(k, None)
                    h["Range"] = "bytes=%d-" % offset
                    h["If-Range"] = validator or ""
                resp = self.open(url, "GET", h, ok=(200, 206, 304), what=what)
                try:
                    if resp.status_code == 304:
                        return {"status": 304, "etag": resp.headers.get("ETag"),
                                "max_age": cache_max_age(resp.headers), "url": resp.final_url}
                    if resp.status_code == 206:
                        start = _content_range_start(resp.headers.get("Content-Range"))
                        if not offset or start != offset:
                            # Not the range we asked for: start again, without Range.
                            offset = 0
                            out.seek(0)
                            out.truncate()
                            validator = None
                            attempt += 1
                            if attempt > self.retries:
                                raise FetchError("downloading %s %s: the server answered a range request with "
                                                 "the wrong range (%s)" % (what, url, resp.headers.get("Content-Range")), url)
                            continue
                    else:  # 200: the whole resource, from the start
                        if offset:
                            out.seek(0)
                            out.truncate()
                            offset = 0
                        first = resp
                        etag = resp.headers.get("ETag")
                        validator = etag if etag and not etag.startswith("W/") else resp.headers.get("Last-Modified")
                        ranges = resp.headers.get("Accept-Ranges", "").strip().lower() == "bytes"
                    length = resp.headers.get("Content-Length")
                    length = int(length) if length and length.isdigit() else None
                    if length is not None and offset + length > max_size:
                        raise FetchError("%s %s is %d bytes, more than the limit of %d (max_size)"
                                         % (what, url, offset + length, max_size), url)
                    got = 0
                    broken: Optional[str] = None
                    while True:
                        try:
                            chunk = resp.raw.read(CHUNK, decode_content=False)
                        except (self.urllib3.exceptions.HTTPError, self.requests.exceptions.RequestException,
                                OSError) as e:
                            broken = _short(e)
                            break
                        if not chunk:
                            break
                        if offset + len(chunk) > max_size:
                            raise FetchError("%s %s is more than the limit of %d bytes (max_size)"
                                             % (what, url, max_size), url)
                        out.write(chunk)
                        got += len(chunk)
                        offset += len(chunk)
                    if broken is None and length is not None and got < length:
                        broken = "the connection closed after %d of %d bytes" % (got, length)
                    if broken is None:
                        out.flush()
                        hdrs = first.headers if first is not None else resp.headers
                        return {"status": 200, "etag": hdrs.get("ETag"), "max_age": cache_max_age(hdrs),
                                "bytes": offset, "resumed": resumed, "url": resp.final_url,
                                "content_type": hdrs.get("Content-Type")}
                finally:
                    resp.close()
                attempt += 1
                if attempt > self.retries:
                    raise FetchError("downloading %s %s broke after %d bytes and %d attempt%s: %s"
                                     % (what, url, offset, attempt, "" if attempt == 1 else "s", broken), url)
                if ranges and validator and offset:
                    resumed += 1
                else:
                    out.seek(0)
                    out.truncate()
                    offset = 0
                time.sleep(backoff(attempt, BACKOFF, BACKOFF_CAP))


def _content_range_start(value: Optional[str]) -> Optional[int]:
    # "bytes 100-199/200"
    if not value or not value.startswith("bytes "):
        return None
    try:
        return int(value[6:].split("-", 1)[0])
    except ValueError:
        return None


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.username or parts.password:
        netloc = parts.hostname or ""
        if parts.port:
            netloc += ":%d" % parts.port
        return urlunsplit((parts.scheme, "***@" + netloc, parts.path, parts.query, parts.fragment))
    return url


def _short(e: BaseException) -> str:
    """An exception as one readable line (requests nests urllib3's reasons deeply)."""
    text = str(e)
    for marker in ("Caused by ", "(Caused by "):
        if marker in text:
            text = text.split(marker, 1)[1].rstrip(")")
    return text[:300]
