"""Pull an image from a registry (``docker://...``) into the store, through a blob cache.

A reference is resolved to endpoints (mirrors first, registries_conf), the manifest is read
(an index is followed to one platform), and the config and layers are made present in the
store's blob cache ``cas/oci/blobs/<alg>/<hex>``, compressed as received. Then the existing
OCI converter (oci.convert) flattens them into one ACI, imported like any other.

Why a blob cache when the image is flattened anyway: a second image that shares layers
with one already pulled (a new tag of the same base) downloads only what is new. No image
"uses" a layer after flattening, so each image keeps the list of the blobs it was made
from (index table ``image_blobs``: its manifest, config and layers); what no image lists is
garbage that store gc and image removal delete.

Crash safety: new blobs are downloaded (in parallel, bounded) into a private work
directory of ``cas/tmp``, and cached ones are hard-linked there, so the converter reads one
directory and gc cannot take a blob from under it. Only after the image is imported are
the new blobs linked into the cache and the rows (its blobs, the reference -> image) added.
A failure or a SIGKILL at any point leaves the cache as it was (or with blobs no row lists,
which gc deletes), and cas/tmp to the next cleaner. The whole pull holds the store lock
shared, as an import does, so gc never runs between a landing and its rows.

The pull policy is fetch's (never|new|update, with podman's missing|always as aliases).
``update`` asks the registry for the reference's digest only (HEAD) and downloads nothing
when it has not moved. Registry images carry no appc signature: a pull is accepted as
podman accepts it and the result says so (``verified``); ``digest`` pins what must come,
and ``require_digest`` names registries (or registry/repository prefixes) that refuse an
unpinned reference. Standard library and requests only; never imports ansible.
"""
import hashlib
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple

from . import crashpoint
from .errors import ImageError, NotFoundError, RocketError, StoreError, ValidationError

SCHEME = "docker://"
PULL_POLICIES = ("never", "new", "update", "missing", "always")
_ALIASES = {"missing": "new", "always": "update"}
MAX_PARALLEL = 4
MAX_CONFIG = 4 << 20
_DIGEST_RE = re.compile(r"\Asha256:[0-9a-f]{64}\Z")
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
# Layer media types the converter can read (it sniffs the compression; zstd is refused there).
LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
               "application/vnd.docker.image.rootfs.diff.tar.gzip",
               "application/vnd.docker.image.rootfs.diff.tar",
               "application/vnd.oci.image.layer.v1.tar+zstd")
NOT_VERIFIED = "not verified: registry images carry no appc signature (accepted, as podman does)"


def is_reference(text: Optional[str]) -> bool:
    """Whether an image string is a registry reference (the scheme is required)."""
    return isinstance(text, str) and text.startswith(SCHEME)


def policy(value: str) -> str:
    """never|new|update from the option (missing/always are podman's words for new/update)."""
    if value not in PULL_POLICIES:
        raise ValidationError("pull", value, "is not one of %s" % ", ".join(PULL_POLICIES))
    return _ALIASES.get(value, value)


def parse(text: str, what: str = "image") -> Any:
    """The registry_ref.Reference of ``docker://...``; errors name ``what`` and the reference."""
    from . import registry_ref

    return registry_ref.parse_reference(text, what)


def platform_of(value: Optional[str]) -> Tuple[str, str, str]:
    """``os/arch[/variant]`` -> (os, arch, variant); None -> this host's platform."""
    from . import oci_layout

    if not value:
        return oci_layout.host_platform()
    bits = value.split("/")
    if len(bits) not in (2, 3) or not all(bits):
        raise ValidationError("platform", value, "is not os/architecture[/variant]")
    return bits[0], bits[1], bits[2] if len(bits) == 3 else ""


def _show_platform(p: Tuple[str, str, str]) -> str:
    return "/".join(x for x in p if x)


def source_key(ref: Any) -> str:
    """The store's sources row of a reference: the image the reference gave last."""
    return "docker:" + str(ref)


def stored(store: Any, text: str) -> Optional[Dict[str, Any]]:
    """The stored image last pulled for ``docker://...`` (None when never pulled or removed)."""
    if store is None or not store.dd.exists():
        return None
    row = store.index.source_entry(source_key(parse(text)))
    if row is None:
        return None
    return store.index.get_image(row["image_id"])


def _row(store: Any, ref: Any) -> Optional[Dict[str, Any]]:
    """``{digest, platform, manifest, image}`` of the reference's last pull, image present."""
    if store is None or not store.dd.exists():
        return None
    row = store.index.source_entry(source_key(ref))
    if row is None:
        return None
    rec = store.index.get_image(row["image_id"])
    if rec is None:
        return None
    try:
        stat = json.loads(row["stat"])
    except ValueError:
        return None
    return dict(stat, image=rec)


def _check_digest(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _DIGEST_RE.match(value):
        raise ImageError("%s: %r is not a sha256 digest" % (what, value))
    return value


class Options:
    """What a pull may be told besides the reference; the modules' options map onto it."""

    def __init__(self, pull: str = "new", platform: Optional[str] = None, digest: Optional[str] = None,
                 require_digest: Sequence[str] = (), registries_conf: Optional[str] = None,
                 auth_file: Optional[str] = None, username: Optional[str] = None, password: Optional[str] = None,
                 ca_path: Optional[str] = None, cert_dirs: Optional[List[str]] = None,
                 insecure: bool = False, timeout: float = 30, retries: int = 3,
                 max_size: int = 8 << 30, allow_devices: bool = False, parallel: int = MAX_PARALLEL,
                 name: Optional[str] = None, labels: Optional[Dict[str, str]] = None) -> None:
        self.pull = policy(pull)
        self.platform = platform_of(platform)
        if digest is not None and not _DIGEST_RE.match(digest):
            raise ValidationError("digest", digest, "is not sha256:<64 hex digits>")
        self.digest = digest
        self.require_digest = [str(p).rstrip("/") for p in require_digest or ()]
        self.registries_conf = registries_conf
        self.auth_file = auth_file
        self.username, self.password = username, password
        self.ca_path = ca_path
        self.cert_dirs = cert_dirs
        self.insecure = insecure      # every endpoint, as if registries.conf marked it
        self.timeout, self.retries = timeout, retries
        self.max_size = max_size
        self.allow_devices = allow_devices
        self.parallel = max(1, min(int(parallel), 16))
        self.name, self.labels = name, labels


def _trust(ref: Any, opts: Options) -> str:
    """What the pull will have verified; refuses an unpinned reference a rule requires pinned."""
    pin = ref.digest or opts.digest
    if ref.digest and opts.digest and ref.digest != opts.digest:
        raise ValidationError("digest", opts.digest, "differs from the digest of the reference %s" % ref)
    if not pin:
        full = "%s/%s" % (ref.registry, ref.repository)
        for prefix in opts.require_digest:
            if full == prefix or full.startswith(prefix + "/") or ref.registry == prefix:
                raise ImageError("%s%s: require_digest (%s) refuses a reference without a digest; "
                                 "pin it (@sha256:... or digest)" % (SCHEME, ref, prefix))
        return NOT_VERIFIED
    return "manifest digest %s pinned and checked (no signature: registry images carry no appc signature)" % pin


# --------------------------------------------------------------------------- the wire

class _Remote:
    """The endpoints of one reference (mirrors, then the source) and the one that answered."""

    def __init__(self, ref: Any, opts: Options) -> None:
        from . import registries_conf

        self.ref = ref
        self.opts = opts
        conf = registries_conf.load_registries_conf(opts.registries_conf)
        self.endpoints: List[Any] = []
        for cand in conf.candidates(ref):
            self.endpoints += conf.endpoints(cand)
        self.clients: List[Any] = []
        self.client: Any = None
        self.endpoint: Any = None

    def _connect(self, endpoint: Any) -> Any:
        from . import registry_auth, registry_client

        creds = None
        if self.opts.username is not None:
            creds = registry_auth.Credentials(self.opts.username, self.opts.password or "")
        c = registry_client.client_for(endpoint.ref, endpoint.insecure or self.opts.insecure, ca_path=self.opts.ca_path,
                                       cert_dirs=self.opts.cert_dirs, credentials=creds,
                                       auth_file=self.opts.auth_file, timeout=self.opts.timeout,
                                       retries=self.opts.retries)
        self.clients.append(c)
        return c

    def close(self) -> None:
        for c in self.clients:
            c.close()

    @property
    def requests(self) -> int:
        return sum(getattr(c, "requests_sent", 0) for c in self.clients)

    def _each(self, call: Any) -> Any:
        """``call(client, ref)`` on the first endpoint that answers; the last error when none does."""
        if self.client is not None:
            return call(self.client, self.endpoint.ref)
        last: Optional[RocketError] = None
        for endpoint in self.endpoints:
            c = self._connect(endpoint)
            try:
                out = call(c, endpoint.ref)
            except RocketError as e:
                last = e
                continue
            self.client, self.endpoint = c, endpoint
            return out
        if last is None:
            raise ImageError("%s%s: no registry to pull from" % (SCHEME, self.ref))
        raise last

    def head(self) -> str:
        return self._each(lambda c, ref: c.head_manifest(ref))

    def manifest(self, digest: Optional[str] = None) -> Any:
        return self._each(lambda c, ref: c.get_manifest(ref, digest))

    def fetch_blob(self, digest: str, size: int, f: Any) -> None:
        self.client.fetch_blob(self.endpoint.ref, digest, size, f, resume=True)


# --------------------------------------------------------------------------- resolution

class _Resolved:
    __slots__ = ("top", "digest", "media_type", "manifest_bytes", "manifest", "platform")
    top: str                  # the digest the reference names now (an index's, or the manifest's)
    digest: str               # the image manifest's
    media_type: str
    manifest_bytes: bytes
    manifest: Dict[str, Any]
    platform: str


def _load(data: bytes, what: str) -> Dict[str, Any]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ImageError("%s: not valid JSON: %s" % (what, e)) from None
    if not isinstance(doc, dict):
        raise ImageError("%s: not a JSON object" % what)
    return doc


def _resolve(remote: _Remote, ref: Any, opts: Options) -> _Resolved:
    from . import registry_client

    what = SCHEME + str(ref)
    media_type, data, digest = remote.manifest()
    top = digest
    doc = _load(data, what)
    chosen = ""
    if media_type in INDEX_TYPES or ("manifests" in doc and "layers" not in doc):
        desc = registry_client.select_platform(doc, *opts.platform, what=what)
        p = desc.get("platform") or {}
        chosen = _show_platform((p.get("os") or "", p.get("architecture") or "", p.get("variant") or ""))
        want = _check_digest(desc.get("digest"), "%s: index entry" % what)
        media_type, data, digest = remote.manifest(want)
        if digest != want:
            raise ImageError("%s: manifest %s came back as %s" % (what, want, digest))
        doc = _load(data, "%s (%s)" % (what, digest))
    if media_type not in MANIFEST_TYPES and "layers" not in doc:
        raise ImageError("%s: %s is not an image manifest (%s)" % (what, digest, media_type))
    pin = ref.digest or opts.digest
    if pin and pin not in (top, digest):
        raise ImageError("%s: the registry gave manifest %s, not the pinned %s (digest)" % (what, top, pin))
    r = _Resolved()
    r.top, r.digest, r.media_type, r.manifest_bytes, r.manifest = top, digest, media_type, data, doc
    r.platform = chosen
    return r


def _descriptors(res: _Resolved, what: str) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    cdesc = res.manifest.get("config")
    if not isinstance(cdesc, dict):
        raise ImageError("%s: the manifest has no config descriptor" % what)
    _check_digest(cdesc.get("digest"), "%s: config" % what)
    size = cdesc.get("size")
    if not isinstance(size, int) or not 0 <= size <= MAX_CONFIG:
        raise ImageError("%s: config size %r is not 0..%d" % (what, size, MAX_CONFIG))
    layers = res.manifest.get("layers")
    if not isinstance(layers, list):
        raise ImageError("%s: the manifest has no layers list" % what)
    out = []
    for i, d in enumerate(layers):
        shown = "%s: layer %d of %d" % (what, i + 1, len(layers))
        if not isinstance(d, dict):
            raise ImageError("%s is not a descriptor" % shown)
        _check_digest(d.get("digest"), shown)
        if not isinstance(d.get("size"), int) or d["size"] < 0:
            raise ImageError("%s: size %r is not a byte count" % (shown, d.get("size")))
        if d.get("urls") or "foreign" in str(d.get("mediaType")) or "nondistributable" in str(d.get("mediaType")):
            raise ImageError("%s: a foreign (non-distributable) layer, which appc.rocket does not fetch" % shown)
        if d.get("mediaType") and d["mediaType"] not in LAYER_TYPES:
            raise ImageError("%s: media type %s is not a layer appc.rocket can read" % (shown, d["mediaType"]))
        out.append(d)
    return cdesc, out


# --------------------------------------------------------------------------- the pull

def _cached(store: Any, digest: str) -> bool:
    return os.path.isfile(store.dd.oci_blob_path(digest))


def _work_blob(work: str, digest: str) -> str:
    alg, dummy_sep, hexd = digest.partition(":")
    return os.path.join(work, "blobs", alg, hexd)


def _download(remote: _Remote, work: str, digest: str, size: int, what: str) -> None:
    final = _work_blob(work, digest)
    part = final + ".part"
    with open(part, "wb") as f:
        remote.fetch_blob(digest, size, f)
        f.flush()
        os.fsync(f.fileno())
    got = os.path.getsize(part)
    if got != size:    # the client checks; a second look costs one stat
        raise ImageError("%s: blob %s is %d bytes, its descriptor says %d" % (what, digest, got, size))
    os.rename(part, final)


def _download_all(remote: _Remote, work: str, todo: List[Tuple[str, int]], parallel: int, what: str) -> None:
    """Download blobs into ``work``, ``parallel`` at a time; the first error wins."""
    if not todo:
        return
    if len(todo) == 1 or parallel == 1:
        for digest, size in todo:
            _download(remote, work, digest, size, what)
        return
    from concurrent.futures import ThreadPoolExecutor

    errors: List[BaseException] = []
    with ThreadPoolExecutor(max_workers=min(parallel, len(todo))) as pool:
        futures = [pool.submit(_download, remote, work, d, s, what) for d, s in todo]
        for fut in futures:
            try:
                fut.result()
            except BaseException as e:  # noqa: BLE001 - re-raised below, after every worker ended
                errors.append(e)
                for other in futures:
                    other.cancel()
    if errors:
        raise errors[0]


def _land(store: Any, work: str, digests: List[str]) -> None:
    """Link downloaded blobs into the cache (a blob already there is the same bytes)."""
    for digest in digests:
        dest = store.dd.oci_blob_path(digest)
        os.makedirs(os.path.dirname(dest), 0o700, exist_ok=True)
        try:
            os.link(_work_blob(work, digest), dest)
        except FileExistsError:
            pass
    for d in {os.path.dirname(store.dd.oci_blob_path(x)) for x in digests}:
        from .fsutil import fsync_dir

        fsync_dir(d)


def _image(res: _Resolved, cdesc: Dict[str, Any], config: Dict[str, Any], layers: List[Dict[str, Any]],
           ref: Any, what: str) -> Any:
    from . import oci_layout

    rootfs = config.get("rootfs") if isinstance(config.get("rootfs"), dict) else {}
    diffs = rootfs.get("diff_ids") if isinstance(rootfs, dict) else None
    if not isinstance(diffs, list) or len(diffs) != len(layers):
        raise ImageError("%s: the config lists %s diff_ids for %d layers"
                         % (what, len(diffs) if isinstance(diffs, list) else "no", len(layers)))
    out = []
    for d, diff in zip(layers, diffs):
        diff = _check_digest(diff, "%s: rootfs.diff_ids" % what) if not str(diff).startswith("sha512:") else diff
        alg, dummy_sep, hexd = d["digest"].partition(":")
        out.append(("blobs/%s/%s" % (alg, hexd), d["digest"], d["size"], diff))
    name = "%s/%s:%s" % (ref.registry, ref.repository, ref.tag) if ref.tag else "%s/%s" % (ref.registry, ref.repository)
    return oci_layout.Image(config, cdesc["digest"], out, name, res.digest, "oci")


def _config(store: Any, remote: Optional[_Remote], work: str, cdesc: Dict[str, Any], what: str) -> Dict[str, Any]:
    """The config document, from the cache or the registry (then kept in ``work``), verified."""
    digest, size = cdesc["digest"], cdesc["size"]
    path = store.dd.oci_blob_path(digest) if store is not None else ""
    if store is not None and os.path.isfile(path):
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG + 1)
    else:
        if remote is None:
            raise NotFoundError("%s: config %s is not cached" % (what, digest))
        import io

        buf = io.BytesIO()
        remote.fetch_blob(digest, size, buf)
        data = buf.getvalue()
        if work:
            with open(_work_blob(work, digest), "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
    if len(data) != size or "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        raise ImageError("%s: config %s does not match its descriptor" % (what, digest))
    return _load(data, "%s: config %s" % (what, digest))


def pull(store: Any, text: str, opts: Options, check: bool = False) -> Tuple[Dict[str, Any], bool, Dict[str, Any]]:
    """Make the image ``docker://...`` names present in ``store``; returns (record, changed, info).

    ``store`` may be None in check mode (no data directory yet). ``record`` is the store's
    image record; in check mode, when a pull would happen, a prediction (``id`` None unless
    the same config was converted before). ``info``: ``reference``, ``digest`` (what the
    reference names now), ``manifest`` (the image manifest's digest), ``platform``, ``config``,
    ``action`` (store | not-modified | pulled | would-pull), ``verified``, ``layers``
    ``{total, downloaded, reused}``, ``bytes`` ``{downloaded, reused}``, ``registry`` (the
    endpoint that answered).
    """
    ref = parse(text)
    what = SCHEME + str(ref)
    verified = _trust(ref, opts)
    info: Dict[str, Any] = {"reference": what, "verified": verified, "layers": {"total": 0, "downloaded": 0, "reused": 0},
                            "bytes": {"downloaded": 0, "reused": 0}}
    row = _row(store, ref)
    want_platform = _show_platform(opts.platform)

    def from_store(found: Dict[str, Any], action: str) -> Tuple[Dict[str, Any], bool, Dict[str, Any]]:
        info.update(action=action, digest=found.get("digest"), manifest=found.get("manifest"),
                    platform=found.get("platform"), config=found.get("config"))
        return found["image"], False, info

    pin = ref.digest or opts.digest
    # The last pull of this reference, when it answers the same question (platform, pin).
    same = row if row is not None and row.get("platform") in (want_platform, "") and \
        (not pin or pin in (row.get("digest"), row.get("manifest"))) else None
    if opts.pull == "never":
        if same is None:
            raise NotFoundError("image %s is not in the store (pull=never)" % what)
        return from_store(same, "store")
    if opts.pull == "new" and same is not None:
        return from_store(same, "store")
    remote = _Remote(ref, opts)
    try:
        if opts.pull == "update" and same is not None:
            if ref.digest:      # what a digest names never moves
                return from_store(same, "store")
            now = remote.head()
            if now == same.get("digest"):
                return from_store(same, "not-modified")
        res = _resolve(remote, ref, opts)
        info.update(digest=res.top, manifest=res.digest, platform=res.platform or want_platform,
                    registry=remote.endpoint.ref.registry, mirror=bool(remote.endpoint.mirror))
        cdesc, layers = _descriptors(res, what)
        info["config"] = cdesc["digest"]
        info["layers"]["total"] = len(layers)
        if check or store is None:
            return _predict(store, remote, res, cdesc, layers, ref, opts, info)
        return _pull(store, remote, res, cdesc, layers, ref, opts, info)
    finally:
        info["requests"] = remote.requests
        remote.close()


def _config_platform(config: Dict[str, Any]) -> str:
    return _show_platform((str(config.get("os") or ""), str(config.get("architecture") or ""),
                           str(config.get("variant") or "")))


def _stat(res: _Resolved, platform: str, config: str) -> str:
    return json.dumps({"digest": res.top, "manifest": res.digest, "platform": platform, "config": config},
                      sort_keys=True)


def _predict(store: Any, remote: _Remote, res: _Resolved, cdesc: Dict[str, Any], layers: List[Dict[str, Any]],
             ref: Any, opts: Options, info: Dict[str, Any]) -> Tuple[Dict[str, Any], bool, Dict[str, Any]]:
    """Check mode: the config is read (small), no layer byte is."""
    from . import oci

    what = SCHEME + str(ref)
    config = _config(store if store is not None and store.dd.exists() else None, remote, "", cdesc, what)
    image = _image(res, cdesc, config, layers, ref, what)
    src = None
    plan = oci.plan_image(store if store is not None and store.dd.exists() else None, src, image,  # type: ignore[arg-type]
                          opts.name, opts.labels, opts.allow_devices, what)
    _count(store, layers, info, predict=True)
    info["action"] = "would-pull"
    if plan.known is not None:
        row = _row(store, ref)
        changed = row is None or row["image"]["id"] != plan.known["id"]
        return plan.known, changed, info
    return {"id": None, "name": plan.name, "labels": plan.labels}, True, info


def _count(store: Any, layers: List[Dict[str, Any]], info: Dict[str, Any], predict: bool = False) -> List[Dict[str, Any]]:
    todo = []
    seen = set()
    for d in layers:
        if d["digest"] in seen:
            continue
        seen.add(d["digest"])
        if store is not None and store.dd.exists() and _cached(store, d["digest"]):
            info["layers"]["reused"] += 1
            info["bytes"]["reused"] += d["size"]
        else:
            info["layers"]["downloaded"] += 1
            info["bytes"]["downloaded"] += d["size"]
            todo.append(d)
    return todo


def _pull(store: Any, remote: _Remote, res: _Resolved, cdesc: Dict[str, Any], layers: List[Dict[str, Any]],
          ref: Any, opts: Options, info: Dict[str, Any]) -> Tuple[Dict[str, Any], bool, Dict[str, Any]]:
    from . import oci, oci_layout
    from .store import Work, clean_tmp

    what = SCHEME + str(ref)
    with store.store_lock(exclusive=False):
        clean_tmp(store.dd.tmp)
        work = Work(store.dd.tmp, "pull")
        try:
            os.makedirs(os.path.join(work.path, "blobs", "sha256"), 0o700)
            new: List[str] = []
            mpath = _work_blob(work.path, res.digest)
            with open(mpath, "wb") as f:
                f.write(res.manifest_bytes)
            if not _cached(store, res.digest):
                new.append(res.digest)
            config = _config(store, remote, work.path, cdesc, what)
            if not _cached(store, cdesc["digest"]):
                new.append(cdesc["digest"])
            todo = _count(store, layers, info)
            for d in layers:   # cached blobs: linked, so gc cannot take them from the converter
                if d not in todo and not os.path.exists(_work_blob(work.path, d["digest"])):
                    try:
                        os.link(store.dd.oci_blob_path(d["digest"]), _work_blob(work.path, d["digest"]))
                    except FileNotFoundError:   # gone since it was counted: download it after all
                        todo.append(d)
                        info["layers"]["reused"] -= 1
                        info["layers"]["downloaded"] += 1
                        info["bytes"]["reused"] -= d["size"]
                        info["bytes"]["downloaded"] += d["size"]
            _download_all(remote, work.path, [(d["digest"], d["size"]) for d in todo], opts.parallel, what)
            new += [d["digest"] for d in todo]
            crashpoint.hit("registry_pull.after_download")
            image = _image(res, cdesc, config, layers, ref, what)
            src = oci_layout.directory_source(work.path, what)
            plan = oci.plan_image(store, src, image, opts.name, opts.labels, opts.allow_devices, what)
            conv = os.path.join(work.path, "convert")
            os.mkdir(conv, 0o700)
            rec, changed = oci.convert(store, plan, conv, what, opts.max_size, opts.allow_devices, compression="none")
            crashpoint.hit("registry_pull.after_import")
            _land(store, work.path, sorted(set(new)))
            crashpoint.hit("registry_pull.after_blob_land")
            before = _row(store, ref)
            info["platform"] = res.platform or _config_platform(config) or info["platform"]
            with store.index.transaction():
                store.index.add_image_blobs(rec["id"], [res.digest, cdesc["digest"]] + [d["digest"] for d in layers])
                # The platform asked for, so that the same question finds this row again.
                store.index.set_source(source_key(ref), _stat(res, _show_platform(opts.platform), cdesc["digest"]),
                                       rec["id"])
            crashpoint.hit("registry_pull.after_index_update")
            info["action"] = "pulled"
            changed = changed or before is None or before["image"]["id"] != rec["id"]
            return rec, changed, info
        except OSError as e:
            import errno

            if e.errno == errno.ENOSPC:
                raise StoreError("no space left on device in %s while pulling %s; nothing was kept"
                                 % (store.dd.path, what)) from None
            raise StoreError("pulling %s failed: %s" % (what, e)) from None
        finally:
            work.cleanup()
