"""Fetch remote images into the store: by https URL, or by name through appc discovery.

``fetch()`` is the one entry point (cas_image calls it for ``src: https://...`` and for
``name`` with a pull policy). What it does, in order:

1. Decide from the store and the pull policy (rkt 1.x) whether the network is needed at all:
   ``never`` uses the store or fails; ``new`` uses the store when the image is there;
   ``update`` uses it while its ``Cache-Control: max-age`` is fresh, and otherwise
   revalidates (``If-None-Match`` with the stored ETag, else ``If-Modified-Since`` with the
   time it was cached). A 304 or a fresh cache downloads nothing and reports changed False.
2. Find the URLs: ``src`` itself (signature: ``<src>.asc`` for ``.aci`` URLs, else
   ``<src>.aci.asc``, as rkt did), or discovery (discovery.py) for ``name`` + labels. Host
   os/arch are the default labels, ``latest`` the default version.
3. Download the signature first (small; an unsigned image fails before its bytes are
   fetched), then the image into a private work directory of the store's ``cas/tmp``
   (resumable with Range; see transport.py), then read its manifest (only its first
   members) and check it names the requested image and labels, then check the signature
   with trust.verify against the keys trusted for the image name, and only then import the
   file with Store.import_stream, which hashes every byte once and commits the index row with
   remote_url, etag, max_age and cache_time. Whatever fails, nothing is left in the store.

Why a temporary file rather than the response stream straight into import_stream: the
signature has to be checked before the image becomes visible in the store, and a download
that breaks has to resume without hashing any byte twice. The file costs one extra write of
the compressed archive (the import then copies it with copy_file_range).

Check mode (``check=True``) does what can be done without writing: store lookup, discovery
pages, and a HEAD (or a conditional GET closed before its body) on the image URL. It
predicts the record and ``changed``; it does not verify signatures (that needs the image).
"""
import os
import time
from email.utils import formatdate
from typing import Any, Dict, List, Optional, Tuple

from . import schema
from . import crashpoint
from .errors import ImageError, NotFoundError, RocketError
from .transport import Client, FetchError, parse_insecure, SMALL_LIMIT

PULL_POLICIES = ("never", "new", "update")

# platform.machine() -> appc arch label
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "i386": "i386", "i486": "i386", "i586": "i386", "i686": "i386",
         "aarch64": "aarch64", "arm64": "aarch64", "aarch64_be": "aarch64_be", "armv6l": "armv6l",
         "armv7l": "armv7l", "armv7b": "armv7b", "ppc64": "ppc64", "ppc64le": "ppc64le", "s390x": "s390x"}


def host_labels() -> Dict[str, str]:
    """The default ``os`` and ``arch`` labels of this host."""
    u = os.uname()
    return {"os": u.sysname.lower(), "arch": _ARCH.get(u.machine, u.machine)}


def signature_url(url: str) -> str:
    return url + ".asc" if url.endswith(".aci") else url + ".aci.asc"


class _Want:
    """What the caller asked for: a name with hard labels (must match) and soft ones.

    Soft labels are the host os/arch defaults and the version ``latest``: they fill
    templates, but an image without them still matches (an arch-independent image has no
    arch label; ``latest`` is resolved by the server to a real version).
    """

    def __init__(self, name: str, labels: Optional[Dict[str, Any]]) -> None:
        base, hard = schema.parse_image_reference(name)
        for k, v in (labels or {}).items():
            k, v = str(k), str(v)
            if k in hard and hard[k] != v:
                raise RocketError("image %s: label %s is %s in the name and %s in labels" % (name, k, hard[k], v))
            hard[k] = v
        ref = schema.format_image_reference(base, hard)   # validates the merged labels
        self.name = base
        self.ref = ref
        soft = dict(host_labels())
        if hard.get("version") == "latest":
            del hard["version"]
        soft = {k: v for k, v in soft.items() if k not in hard}
        self.hard = hard
        self.soft = soft

    @property
    def template_labels(self) -> Dict[str, str]:
        return dict(self.soft, **self.hard)

    def mismatch(self, manifest_name: str, labels: Dict[str, str]) -> Optional[str]:
        if manifest_name != self.name:
            return "it is named %s, not %s" % (manifest_name, self.name)
        for k, v in self.hard.items():
            if labels.get(k) != v:
                return "its label %s is %s, not %s" % (k, labels.get(k, "missing"), v)
        for k, v in self.soft.items():
            if k in labels and labels[k] != v:
                return "its label %s is %s, not this host's %s" % (k, labels[k], v)
        return None


def _stored_for_name(store, want: _Want) -> Optional[Dict[str, Any]]:
    if store is None:
        return None
    for rec in store.find_all(want.name, want.hard):
        if want.mismatch(rec["name"], rec["labels"]) is None:
            return rec
    return None


def _stored_for_url(store, url: str) -> Optional[Dict[str, Any]]:
    if store is None:
        return None
    recs = [r for r in store.index.all_images() if r.get("remote_url") == url]
    recs.sort(key=lambda r: -r["import_time"])
    return recs[0] if recs else None


def _fresh(rec: Dict[str, Any], now: float) -> bool:
    return bool(rec.get("max_age") and rec.get("cache_time") and rec["cache_time"] + rec["max_age"] > now)


def _validators(rec: Optional[Dict[str, Any]], url: str) -> Dict[str, str]:
    if not rec or rec.get("remote_url") != url:
        return {}
    if rec.get("etag"):
        return {"If-None-Match": rec["etag"]}
    if rec.get("cache_time"):
        return {"If-Modified-Since": formatdate(rec["cache_time"], usegmt=True)}
    return {}


def _update_cache(store, image_id: str, url: str, etag: Optional[str], max_age: Optional[int]) -> None:
    # A plain UPDATE: a row removed meanwhile stays removed (never resurrected without its blob).
    with store.index.transaction() as db:
        db.execute("UPDATE images SET remote_url = ?, etag = COALESCE(?, etag), max_age = ?, cache_time = ? "
                   "WHERE id = ?", (url, etag, max_age, time.time(), image_id))


def read_manifest(path: str, max_size: int) -> Dict[str, Any]:
    """The manifest of an ACI file, reading only as far as the ``manifest`` member.

    Uses the import's own decompressor and tar scanner (same refusals, same size bounds).
    """
    from . import aci_scan

    with open(path, "rb") as f:
        head = f.read(aci_scan.CHUNK)
        if not head:
            raise ImageError("not an ACI: empty file")
        inflater = aci_scan.Inflater(aci_scan.sniff_compression(head))
        scanner = aci_scan.TarScanner(max_size, capture_manifest=True)
        chunk = head
        while chunk:
            for out in inflater.feed(chunk):
                scanner.feed(out)
                if scanner.manifest_error:
                    raise ImageError(scanner.manifest_error)
                if scanner.manifest_bytes is not None:
                    try:
                        return schema.parse_image_manifest(scanner.manifest_bytes)
                    except schema.ValidationError as e:
                        raise ImageError("manifest: %s" % e) from None
                if scanner.ended:
                    break
            if scanner.ended:
                break
            chunk = f.read(aci_scan.CHUNK)
    raise ImageError("manifest: missing (an ACI holds exactly manifest and rootfs/)")


def fetch(store, src: Optional[str] = None, name: Optional[str] = None, labels: Optional[Dict[str, Any]] = None,
          pull: str = "new", insecure=(), ca_path: Optional[str] = None, client_cert: Optional[str] = None,
          client_key: Optional[str] = None, username: Optional[str] = None, password: Optional[str] = None,
          timeout: float = 30, retries: int = 3, max_size: Optional[int] = None,
          discovery_overrides: Optional[Dict[str, str]] = None, check: bool = False, *,
          credentials_file: Optional[str] = None, allow_devices: bool = False) -> Tuple[Dict[str, Any], bool, Dict[str, Any]]:
    """Make a remote image present in ``store``; returns (record, changed, info).

    ``store`` may be None in check mode when the data directory does not exist yet.
    ``record`` is the store's image record (with ``skipped`` after an import); in check mode
    when an import would happen, a prediction ``{id: None, name, labels, remote_url}``.
    ``info``: ``url``, ``signature_url``, ``signer`` (fingerprint, or None), ``verified``,
    ``signature`` ("verified", or "skipped: ..." when the check was turned off),
    ``action`` (store | fresh | not-modified | downloaded | would-download), ``requests``
    (HTTP requests sent), ``log`` ([method, url, status] of each), ``bytes``, ``resumed``,
    ``etag``, ``discovery`` (for name fetches: page, tried, endpoints, pubkeys).

    Options: ``insecure`` relaxes ``image`` (alias ``signature``: no signature check), ``tls``
    (no certificate check) and/or ``http`` (plain http allowed); ``all-fetch`` is all three.
    ``username``/``password`` go only to the host of ``src`` (or of ``name``);
    ``credentials_file`` (rkt auth.d JSON) names its own domains. ``max_size`` bounds both the
    download and the uncompressed archive (default 8 GiB). ``retries`` counts retries after the
    first attempt, for each request and for each broken download. ``discovery_overrides``
    ``{host: base_url}`` sends every request for ``host`` (discovery pages, images,
    signatures) to ``base_url`` instead, same path and query: for mirrors and for tests
    against 127.0.0.1; nothing is overridden unless given here.
    """
    if (src is None) == (name is None):
        raise RocketError("fetch needs exactly one of src (an https URL) or name")
    pull = {"missing": "new", "always": "update"}.get(pull, pull)   # podman's words, as registry_pull takes them
    if pull not in PULL_POLICIES:
        raise RocketError("pull must be one of %s, not %r" % (", ".join(PULL_POLICIES), pull))
    flags = parse_insecure(insecure)
    if store is None and not check:
        raise RocketError("fetch needs a store (None is only for check mode)")
    from . import aci

    limit = int(max_size) if max_size else aci.DEFAULT_MAX_SIZE
    info: Dict[str, Any] = {"url": None, "signature_url": None, "signer": None, "verified": False,
                            "action": None, "requests": 0, "bytes": 0, "resumed": 0, "etag": None,
                            "discovery": None, "pull": pull, "log": []}
    want: Optional[_Want] = None
    if src is not None:
        if not isinstance(src, str) or "://" not in src:
            raise RocketError("src %r is not a URL: import local files with Store.import_file" % (src,))
        from .transport import redact

        what = redact(src)
        rec = _stored_for_url(store, src)
    else:
        want = _Want(name or "", labels)  # name is given when src is not
        rec = _stored_for_name(store, want)
        what = want.ref
    if rec is not None and (pull == "never" or pull == "new"):
        info["action"] = "store"
        info["url"] = rec.get("remote_url")
        return rec, False, info
    if rec is None and pull == "never":
        where = store.dd.path if store is not None else "(no store yet)"
        raise NotFoundError("image %s is not in the store %s and pull is never" % (what, where))
    if rec is not None and _fresh(rec, time.time()):
        info["action"] = "fresh"
        info["url"] = rec.get("remote_url")
        return rec, False, info

    auth_hosts = []
    if username is not None:
        from .transport import host_of

        auth_hosts = [host_of(src) if src else (want.name if want else "").split("/", 1)[0]]
    client = Client(insecure=flags, ca_path=ca_path, client_cert=client_cert, client_key=client_key,
                    username=username, password=password, auth_hosts=auth_hosts,
                    credentials_file=credentials_file, timeout=timeout, retries=retries,
                    overrides=discovery_overrides)
    try:
        if src is not None:
            client.check_url(src, "image URL")
            candidates = [{"aci": src, "asc": signature_url(src)}]
        elif want is not None:  # always, as src is not: the check tells the type checker
            from .discovery import discover

            found = discover(client, want.name, want.template_labels)
            info["discovery"] = {"page": found["page"], "tried": [list(t) for t in found["tried"]],
                                 "endpoints": found["aci"], "pubkeys": found["keys"]}
            candidates = found["aci"]
        else:
            raise RocketError("fetch needs exactly one of src (an https URL) or name")
        errors: List[str] = []
        for ep in candidates:
            url = ep["aci"]
            try:
                client.check_url(url, "image URL")
            except FetchError as e:
                errors.append(str(e))
                continue
            info["url"], info["signature_url"] = url, ep["asc"]
            try:
                if check:
                    return _predict(client, rec, url, want, info)
                return _fetch_one(store, client, rec, url, ep["asc"], want, flags, limit, allow_devices, info)
            except FetchError as e:
                if e.status is None or e.status < 400 or e.status >= 500 or src is not None:
                    raise
                errors.append(str(e))   # a 4xx on one discovered endpoint: try the next one
        raise FetchError("no usable endpoint for %s: %s" % (what, "; ".join(errors) or "none discovered"))
    finally:
        info["requests"] = client.requests_sent
        info["log"] = [list(entry) for entry in client.log]
        client.close()


def _predict(client: Client, rec, url: str, want: Optional[_Want], info: Dict[str, Any]):
    headers = _validators(rec, url)
    resp = client.open(url, "HEAD", headers, ok=(200, 304, 405, 501), what="image")
    try:
        status, etag = resp.status_code, resp.headers.get("ETag")
    finally:
        resp.close()
    if status in (405, 501):   # no HEAD: a conditional GET, closed before its body
        resp = client.open(url, "GET", headers, ok=(200, 304), what="image")
        try:
            status, etag = resp.status_code, resp.headers.get("ETag")
        finally:
            resp.close()
    info["etag"] = etag
    if status == 304 or (rec is not None and etag and rec.get("etag") == etag and rec.get("remote_url") == url):
        info["action"] = "not-modified"
        return rec, False, info
    info["action"] = "would-download"
    predicted = {"id": None, "name": want.name if want else None,
                 "labels": dict(want.hard) if want else {}, "remote_url": url}
    return predicted, True, info


def _fetch_one(store, client: Client, rec, url: str, asc_url: str, want: Optional[_Want], flags,
               limit: int, allow_devices: bool, info: Dict[str, Any]):
    from .store import Work

    check_sig = "image" not in flags
    work = Work(store.dd.tmp, "fetch")
    try:
        sig_path = os.path.join(work.path, "image.aci.asc")
        image_path = os.path.join(work.path, "image.aci")
        headers = _validators(rec, url)
        if check_sig and not headers:
            _get_signature(client, asc_url, sig_path, want.ref if want else url)
        res = client.download(url, image_path, limit, headers=headers, what="image")
        crashpoint.hit("fetch.after_download")
        info["etag"] = res.get("etag")
        if res["status"] == 304:
            if rec is None:
                raise FetchError("GET %s: HTTP 304 Not Modified to an unconditional request" % url, url, 304)
            _update_cache(store, rec["id"], url, res.get("etag"), res.get("max_age"))
            info["action"] = "not-modified"
            return store.index.get_image(rec["id"]) or rec, False, info
        info["bytes"], info["resumed"] = res["bytes"], res["resumed"]
        if check_sig and not os.path.exists(sig_path):
            _get_signature(client, asc_url, sig_path, want.ref if want else url)
        try:
            manifest = read_manifest(image_path, limit)
        except ImageError as e:
            raise ImageError(_unusable(url, res, e)) from None
        mlabels = schema.labels_to_dict(manifest.get("labels") or [])
        if want is not None:
            why = want.mismatch(manifest["name"], mlabels)
            if why:
                raise ImageError("image fetched from %s does not match %s: %s; nothing was kept" % (url, want.ref, why))
        if check_sig:
            from . import trust

            try:
                info["signer"] = trust.verify(store.dd, image_path, sig_path, manifest["name"])
            except trust.SignatureError as e:
                raise trust.SignatureError(e.image, e.reason + "; nothing was kept", e.fingerprint, where=url) from None
            info["verified"] = True
            info["signature"] = "verified"
        else:
            info["signature"] = "skipped: insecure includes image"
        crashpoint.hit("fetch.after_verify")
        extra = {"remote_url": url, "etag": res.get("etag"), "max_age": res.get("max_age"), "cache_time": time.time()}
        try:
            with open(image_path, "rb") as f:
                new, changed = store.import_stream(f, source=url, allow_devices=allow_devices, max_size=limit,
                                                   extra=extra)
        except ImageError as e:  # import_stream raises no subclass (signatures were checked above)
            raise ImageError(_unusable(url, res, e)) from None
        if not changed:
            # The same image as one already stored (same bytes under a new ETag, or another URL).
            _update_cache(store, new["id"], url, res.get("etag"), res.get("max_age"))
            skipped = new.get("skipped", [])
            new = dict(store.index.get_image(new["id"]) or new, skipped=skipped)
        info["action"] = "downloaded"
        return new, changed, info
    finally:
        work.cleanup()


def _unusable(url: str, res: Dict[str, Any], e: Exception) -> str:
    """The message for a downloaded file that is not a usable ACI: where it came from, and what it was."""
    ctype = (res.get("content_type") or "").split(";")[0].strip().lower()
    hint = ""
    if ctype in ("text/html", "application/xhtml+xml"):
        hint = " (the server sent an HTML page, Content-Type %s: a login, error or directory page?)" % ctype
    return "image fetched from %s (%d bytes) is not a usable ACI%s: %s; nothing was kept" % (
        url, res.get("bytes") or 0, hint, e)


def _get_signature(client: Client, url: str, path: str, what: str) -> None:
    from .trust import SignatureError

    try:
        data, dummy_resp = client.get_small(url, SMALL_LIMIT, what="signature")
    except FetchError as e:
        if e.status == 404 or e.status == 410:
            raise SignatureError(what, "no signature at %s (HTTP %d): the image is unsigned. Sign it "
                                 "(gpg --armor --detach-sign), or fetch without a signature check "
                                 "(insecure: [image]); nothing was kept" % (url, e.status)) from None
        raise SignatureError(what, "cannot fetch the signature: %s; nothing was kept" % e) from None
    with open(path, "wb") as f:
        f.write(data)


def fetch_with_dependencies(store, src: Optional[str] = None, name: Optional[str] = None,
                            labels: Optional[Dict[str, Any]] = None, check: bool = False,
                            **options) -> Tuple[Dict[str, Any], bool, Dict[str, Any]]:
    """fetch(), then every dependency the store lacks, by name and labels, each once.

    Dependencies are discovered like any name (same pull policy, trust and transport
    options); a pinned ``imageID`` must match what arrives; a cycle is refused with the
    chain. The image's tree is rendered at the end, so a missing or broken dependency shows
    now, not at the first prepare. ``info["dependencies"]`` lists what each dependency
    resolved to.
    """
    rec, changed, info = fetch(store, src=src, name=name, labels=labels, check=check, **options)
    info["dependencies"] = []
    if check or rec.get("id") is None:
        return rec, changed, info
    seen: Dict[Tuple[str, Tuple[Tuple[str, str], ...]], str] = {}

    def walk(image_id: str, chain: List[str]) -> bool:
        any_changed = False
        manifest = store.manifest(image_id)
        for dep in manifest.get("dependencies") or []:
            dlabels = schema.labels_to_dict(dep.get("labels") or [])
            key = (dep["imageName"], tuple(sorted(dlabels.items())))
            shown = schema.format_image_reference(dep["imageName"], dlabels)
            if dep["imageName"] in chain:
                raise ImageError("dependency cycle: %s" % " -> ".join(chain + [dep["imageName"]]))
            if key in seen:
                continue
            pin = dep.get("imageID")
            if pin == schema.PLACEHOLDER_IMAGE_ID:
                pin = None
            have = None
            if pin:
                try:
                    have = store.get(pin)
                except RocketError:
                    have = None
            if have is None:
                have, dchanged, dinfo = fetch(store, name=dep["imageName"], labels=dlabels or None, **options)
                any_changed = any_changed or dchanged
                if pin and not have["id"].startswith(pin):
                    raise ImageError("dependency %s of %s: fetched %s, but the manifest pins %s"
                                     % (shown, manifest["name"], have["id"], pin))
            seen[key] = have["id"]
            info["dependencies"].append({"name": shown, "id": have["id"]})
            any_changed = walk(have["id"], chain + [dep["imageName"]]) or any_changed
        return any_changed

    changed = walk(rec["id"], [rec["name"]]) or changed
    store.render(rec["id"])
    return rec, changed, info
