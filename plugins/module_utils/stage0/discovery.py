"""appc image discovery: from ``name`` (+ labels) to image, signature and public key URLs.

As the spec (v0.8.11, "Discovery and fetch") says:

- GET ``https://<name>?ac-discovery=1`` and read ``<meta name="ac-discovery"
  content="PREFIX TEMPLATE">`` and ``<meta name="ac-discovery-pubkeys" content="PREFIX URL">``
  (every such meta tag of the page, in document order; html.parser from the standard library).
- A tag counts only when the image name starts with its PREFIX (a string prefix, as in the
  reference implementation).
- When the page fails (HTTP error, connection error) or gives no usable ``ac-discovery`` tag,
  try the parent path: ``a.com/p/s`` -> ``a.com/p`` -> ``a.com``. Redirects are followed (by
  the transport, with its rules).
- Templates fill ``{name}``, ``{version}`` (``latest`` when none is given), ``{os}``,
  ``{arch}``, every other label, and ``{ext}`` (``aci``, then ``aci.asc`` for the signature).
  A template left with an unfilled ``{...}`` is skipped.
- Plain http only when the caller allows insecure http (then tried after https fails).

Two decisions where the reference Go code is loose:

- Substitution is one pass over the template: a label value is never re-scanned, so a
  value like ``{os}`` cannot inject another placeholder; ``{name}`` and ``{ext}`` cannot be
  overridden by labels (a label cannot be called ``name``; ``ext`` is ours).
- Endpoints whose scheme we cannot fetch (``hdfs://``...) are kept in the result, in order, as
  the spec gives them; the fetcher skips them and says why.
"""
import re
from html.parser import HTMLParser
from typing import Any, Dict, List, Optional, Tuple

from .transport import Client, FetchError, SMALL_LIMIT

DEFAULT_VERSION = "latest"
DISCOVERY_META = "ac-discovery"
PUBKEYS_META = "ac-discovery-pubkeys"
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class DiscoveryError(FetchError):
    """Discovery found no endpoint for an image; ``tried`` lists (url, why) for each attempt."""

    def __init__(self, message: str, tried: Optional[List[Tuple[str, str]]] = None) -> None:
        self.tried = list(tried or [])
        super().__init__(message)


class _MetaParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.metas: List[Tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        if tag != "meta":
            return
        seen: Dict[str, Optional[str]] = {}
        for key, value in attrs:
            seen.setdefault(key, value)
        name, content = seen.get("name"), seen.get("content")
        if not name or not name.startswith("ac-") or content is None:
            return
        parts = content.strip().split(None, 1)
        if len(parts) != 2:
            return
        self.metas.append((name, parts[0], parts[1].strip()))


def parse_meta(html: str) -> List[Tuple[str, str, str]]:
    """Every ``ac-*`` meta tag of a page as (name, prefix, value), in document order."""
    p = _MetaParser()
    try:
        p.feed(html)
        p.close()
    except Exception:  # html.parser is lenient; anything it still refuses ends the page
        pass
    return p.metas


def render(template: str, variables: Dict[str, str]) -> Optional[str]:
    """Fill ``{key}`` placeholders in one pass; None when one is left unfilled."""
    missing = []

    def sub(m: "re.Match") -> str:
        key = m.group(1)
        if key in variables:
            return variables[key]
        missing.append(key)
        return m.group(0)

    out = _PLACEHOLDER.sub(sub, template)
    return None if missing else out


def template_labels(labels: Optional[Dict[str, str]]) -> Dict[str, str]:
    """The labels templates see: the given ones, with ``version`` defaulting to latest."""
    out = dict(labels or {})
    out.setdefault("version", DEFAULT_VERSION)
    return out


def endpoints(metas: List[Tuple[str, str, str]], name: str,
              labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """The ACI endpoints (``{aci, asc}``) and public key URLs a page's tags give for ``name``."""
    variables = template_labels(labels)
    variables.pop("ext", None)
    variables["name"] = name
    aci: List[Dict[str, str]] = []
    keys: List[str] = []
    for kind, prefix, value in metas:
        if not name.startswith(prefix):
            continue
        if kind == DISCOVERY_META:
            a = render(value, dict(variables, ext="aci"))
            s = render(value, dict(variables, ext="aci.asc"))
            if a is None or s is None:
                continue
            ep = {"aci": a, "asc": s}
            if ep not in aci:
                aci.append(ep)
        elif kind == PUBKEYS_META and value not in keys:
            keys.append(value)
    return {"aci": aci, "keys": keys}


def response_charset(resp: Any) -> str:
    """The charset a response declares, if Python knows it; utf-8 otherwise (pages lie)."""
    import codecs

    enc = getattr(resp, "encoding", None) or "utf-8"
    try:
        codecs.lookup(enc)
    except LookupError:
        enc = "utf-8"
    return enc


def levels(name: str) -> List[str]:
    """``a.com/p/s`` -> [``a.com/p/s``, ``a.com/p``, ``a.com``]."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def discover(client: Client, name: str, labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
    """Walk ``name`` up to its host until a page gives ACI endpoints.

    Returns ``{aci: [{aci, asc}], keys: [...], page: url, tried: [(url, why)]}``.
    """
    from . import schema

    schema.validate_ac_identifier(name, "name")
    tried: List[Tuple[str, str]] = []
    schemes = ["https"] + (["http"] if "http" in client.insecure else [])
    for level in levels(name):
        for scheme in schemes:
            url = "%s://%s?ac-discovery=1" % (scheme, level)
            try:
                body, resp = client.get_small(url, SMALL_LIMIT, what="discovery page")
            except FetchError as e:
                if e.status is not None:
                    tried.append((url, "HTTP %d" % e.status))
                    break  # the server answered: no point asking it again over http
                tried.append((url, str(e)))
                continue
            text = body.decode(response_charset(resp), "replace")
            found = endpoints(parse_meta(text), name, labels)
            if found["aci"]:
                found["page"] = url
                found["tried"] = tried
                return found
            tried.append((url, "no ac-discovery tag for %s" % name))
            break
    raise DiscoveryError("discovery of %s found no image endpoint: %s"
                         % (name, "; ".join("%s: %s" % t for t in tried)), tried)
