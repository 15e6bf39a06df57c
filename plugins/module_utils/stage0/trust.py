"""Trusted keys and image signatures.

The trust store lives under ``data_dir/trust`` in rkt's layout:

- ``root.d/<fingerprint>``: keys trusted for every image name;
- ``prefix.d/<escaped prefix>/<fingerprint>``: keys trusted for the names under a prefix
  (``/`` in the prefix escaped as ``,``, which an AC Identifier cannot contain). A prefix
  covers whole path components: ``example.com/app`` covers ``example.com/app`` and
  ``example.com/app/db`` but not ``example.com/apple``.

Each file holds one ASCII-armoured OpenPGP public key, named by its lowercase fingerprint.

A system trust store (``/etc/rocket/trustedkeys`` by default, the ``system_dir`` argument)
has the same layout; its keys are trusted too. The data_dir store takes precedence (rkt's
rule): a file there with the same relative path replaces the system one, and an EMPTY file
there masks (disables) the system key of that fingerprint for that scope.

Signatures are detached and ASCII-armoured (``<image>.aci.asc``), checked with gpg:

- a temporary ``--homedir`` (removed afterwards) and a keyring built, for this check only,
  from the trust store's keys that apply to the image name; no keyring, trust database,
  agent or key server of the host is consulted (``--no-options``, ``--no-autostart``,
  ``--trust-model always`` plus our own decision below);
- gpg's ``--status-fd`` output decides: a signature counts when gpg reports GOODSIG and
  VALIDSIG, no expiry or revocation, and the primary key fingerprint of VALIDSIG is one of
  the file names we loaded. A key file whose content is another key therefore trusts nothing.

Secret keys are refused wherever a key is read (they would also make gpg start an agent).
"""
import base64
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from .datadir import DataDir
from .errors import ImageError, RocketError
from .fsutil import atomic_write, fsync_dir, read_small

ROOT_DIR = "root.d"
PREFIX_DIR = "prefix.d"
SYSTEM_DIR = "/etc/rocket/trustedkeys"
KEY_LIMIT = 1 << 20
SIGNATURE_LIMIT = 1 << 20
GPG_TIMEOUT = 120

_FPR_RE = re.compile(r"\A(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_BEGIN_RE = re.compile(r"\A-----BEGIN PGP ([A-Z0-9 ,]+)-----\Z")

# OpenPGP packet tags (RFC 4880 4.3)
_SECRET_KEY, _PUBLIC_KEY, _SECRET_SUBKEY = 5, 6, 7

GPG_MISSING = ("checking image signatures needs gpg on the target host: install the Debian package gpg "
               "(or gnupg)")


class TrustError(RocketError):
    """The trust store or a key is unusable (bad key file, secret key, unknown prefix...)."""


class SignatureError(ImageError):
    """An image signature is missing, bad, or made by a key not trusted for the image name.

    ``image`` is the image name, ``fingerprint`` the signing key's (when known), ``reason`` why.
    """

    def __init__(self, image: str, reason: str, fingerprint: Optional[str] = None,
                 where: Optional[str] = None) -> None:
        self.image = image
        self.reason = reason
        self.fingerprint = fingerprint
        text = "signature of image %s%s refused: %s" % (image, " (%s)" % where if where else "", reason)
        super().__init__(text)


# --------------------------------------------------------------------------- names and paths

def _dd(dd: Union[DataDir, str, None]) -> DataDir:
    return dd if isinstance(dd, DataDir) else DataDir(dd)


def normalize_fingerprint(fpr: Any) -> str:
    """``0x0661 C7F4 ...`` -> ``0661c7f4...``; refuses anything but a v4/v5 fingerprint."""
    if not isinstance(fpr, str):
        raise TrustError("fingerprint must be a string, not %r" % (fpr,))
    f = fpr.strip().lower().replace(" ", "").replace(":", "")
    if f.startswith("0x"):
        f = f[2:]
    if not _FPR_RE.match(f):
        raise TrustError("%r is not a full OpenPGP key fingerprint (40 or 64 hex digits); "
                         "short key IDs are not accepted" % fpr)
    return f


def escape_prefix(prefix: str) -> str:
    from . import schema

    schema.validate_ac_identifier(prefix, "prefix")
    return prefix.replace("/", ",")


def unescape_prefix(escaped: str) -> str:
    return escaped.replace(",", "/")


def _scope_dir(dd: DataDir, prefix: Optional[str], root: bool) -> str:
    if root and prefix:
        raise TrustError("a key is trusted either for a prefix or as a root key, not both")
    if not root and not prefix:
        raise TrustError("say which image names the key is trusted for: a prefix, or root")
    if root:
        return os.path.join(dd.trust, ROOT_DIR)
    return os.path.join(dd.trust, PREFIX_DIR, escape_prefix(prefix or ""))


def name_prefixes(name: str) -> List[str]:
    """The prefixes that cover ``name``: itself, then each parent path."""
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(len(parts), 0, -1)]


def _key_files(directory: str) -> List[Tuple[str, str]]:
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []
    return [(n, os.path.join(directory, n)) for n in names if _FPR_RE.match(n)]


def is_mask(path: str) -> bool:
    """An empty regular file in the data_dir store: it masks the system key of the same path."""
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == 0


def _scope_entries(local_dir: str, system_dir: Optional[str], prefix: Optional[str],
                   rel: str) -> List[Dict[str, Any]]:
    """The keys of one scope (root.d or one prefix.d/<escaped>) from both stores, masks applied.

    Every entry: ``{fingerprint, prefix, root, path, source (local|system), masked[, masked_by]}``.
    Local masks without a system key are not listed (they mask nothing).
    """
    out = []
    local = dict(_key_files(os.path.join(local_dir, rel)))
    system = dict(_key_files(os.path.join(system_dir, rel))) if system_dir else {}
    root = prefix is None
    for fpr in sorted(set(local) | set(system)):
        lpath = local.get(fpr)
        if lpath is not None and not is_mask(lpath):
            out.append({"fingerprint": fpr, "prefix": prefix, "root": root, "path": lpath,
                        "source": "local", "masked": False})
        elif fpr in system:
            e = {"fingerprint": fpr, "prefix": prefix, "root": root, "path": system[fpr],
                 "source": "system", "masked": lpath is not None}
            if lpath is not None:
                e["masked_by"] = lpath
            out.append(e)
    return out


def _prefix_dirs(*dirs: Optional[str]) -> List[str]:
    names = set()
    for d in dirs:
        if not d:
            continue
        try:
            names.update(os.listdir(os.path.join(d, PREFIX_DIR)))
        except (FileNotFoundError, NotADirectoryError, PermissionError):
            pass
    return sorted(names)


def key_path(dd: Union[DataDir, str, None], fingerprint: str, prefix: Optional[str] = None,
             root: bool = False) -> str:
    """Where the trust store keeps a key trusted for ``prefix`` (or as a root key)."""
    return os.path.join(_scope_dir(_dd(dd), prefix, root), normalize_fingerprint(fingerprint))


def list_keys(dd: Union[DataDir, str, None], system_dir: Optional[str] = SYSTEM_DIR) -> List[Dict[str, Any]]:
    """Every key of both stores: ``{fingerprint, prefix (None for root keys), root, path, source,
    masked[, masked_by]}``; ``source`` is ``local`` (data_dir) or ``system`` (``system_dir``);
    a masked system key is listed with ``masked: true`` and the masking file as ``masked_by``."""
    dd = _dd(dd)
    out = _scope_entries(dd.trust, system_dir, None, ROOT_DIR)
    for e in _prefix_dirs(dd.trust, system_dir):
        out.extend(_scope_entries(dd.trust, system_dir, unescape_prefix(e), os.path.join(PREFIX_DIR, e)))
    return out


def _keys_for(dd: DataDir, name: str, system_dir: Optional[str]) -> List[Dict[str, Any]]:
    from . import schema

    schema.validate_ac_identifier(name, "name")
    out = _scope_entries(dd.trust, system_dir, None, ROOT_DIR)
    for prefix in name_prefixes(name):
        out.extend(_scope_entries(dd.trust, system_dir, prefix,
                                  os.path.join(PREFIX_DIR, prefix.replace("/", ","))))
    return out


def keys_for(dd: Union[DataDir, str, None], name: str,
             system_dir: Optional[str] = SYSTEM_DIR) -> List[Dict[str, Any]]:
    """The trusted keys that apply to image ``name`` (root keys, then longest prefix first),
    from the data_dir store and the system store; masked system keys are left out."""
    return [k for k in _keys_for(_dd(dd), name, system_dir) if not k["masked"]]


# --------------------------------------------------------------------------- armour and packets

def _crc24(data: bytes) -> int:
    crc = 0xB704CE
    for b in data:
        crc ^= b << 16
        for dummy in range(8):
            crc <<= 1
            if crc & 0x1000000:
                crc ^= 0x1864CFB
    return crc & 0xFFFFFF


def dearmor(text: str, what: str) -> List[Tuple[str, bytes]]:
    """Every armoured block of ``text`` as (kind, binary), e.g. ("PUBLIC KEY BLOCK", b"...")."""
    lines = [line.rstrip("\r\n \t") for line in text.splitlines()]
    out = []
    i, n = 0, len(lines)
    while i < n:
        m = _BEGIN_RE.match(lines[i].strip())
        i += 1
        if not m:
            continue
        kind = m.group(1)
        while i < n and lines[i].strip() and ":" in lines[i]:
            i += 1  # armour headers (Version:, Comment:)
        body, crc = [], None
        while i < n and not lines[i].startswith("-----END PGP "):
            line = lines[i].strip()
            if line.startswith("=") and len(line) == 5:
                crc = line[1:]
            elif line:
                body.append(line)
            i += 1
        if i >= n:
            raise TrustError("%s: armoured block %s is not terminated" % (what, kind))
        if lines[i].strip() != "-----END PGP %s-----" % kind:
            raise TrustError("%s: armoured block %s ends with %r" % (what, kind, lines[i].strip()[:60]))
        i += 1
        try:
            data = base64.b64decode("".join(body), validate=True)
        except (ValueError, TypeError):
            raise TrustError("%s: armoured block %s is not valid base64" % (what, kind)) from None
        if crc is not None:
            try:
                want = int.from_bytes(base64.b64decode(crc, validate=True), "big")
            except (ValueError, TypeError):
                raise TrustError("%s: armoured block %s has a malformed checksum" % (what, kind)) from None
            if _crc24(data) != want:
                raise TrustError("%s: armoured block %s fails its checksum (damaged?)" % (what, kind))
        out.append((kind, data))
    return out


def armor_key(data: bytes) -> bytes:
    """A deterministic armoured form of a binary public key."""
    b64 = base64.b64encode(data).decode("ascii")
    lines = [b64[i:i + 64] for i in range(0, len(b64), 64)]
    crc = base64.b64encode(_crc24(data).to_bytes(3, "big")).decode("ascii")
    text = "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n%s\n=%s\n-----END PGP PUBLIC KEY BLOCK-----\n" % ("\n".join(lines), crc)
    return text.encode("ascii")


def packet_tags(data: bytes, what: str) -> List[int]:
    """The tags of the OpenPGP packets in ``data`` (headers only; refuses malformed framing)."""
    tags = []
    i, n = 0, len(data)
    while i < n:
        b = data[i]
        i += 1
        if not b & 0x80:
            raise TrustError("%s: not OpenPGP data (bad packet header at byte %d)" % (what, i - 1))
        if b & 0x40:  # new format
            tag = b & 0x3F
            while True:
                if i >= n:
                    raise TrustError("%s: truncated OpenPGP packet" % what)
                o = data[i]
                i += 1
                if o < 192:
                    length, partial = o, False
                elif o < 224:
                    if i >= n:
                        raise TrustError("%s: truncated OpenPGP packet" % what)
                    length, partial = ((o - 192) << 8) + data[i] + 192, False
                    i += 1
                elif o == 255:
                    length, partial = int.from_bytes(data[i:i + 4], "big"), False
                    i += 4
                else:
                    length, partial = 1 << (o & 0x1F), True
                i += length
                if not partial:
                    break
        else:  # old format
            tag = (b >> 2) & 0x0F
            ltype = b & 3
            if ltype == 3:
                length = n - i
            else:
                size = (1, 2, 4)[ltype]
                length = int.from_bytes(data[i:i + size], "big")
                i += size
            i += length
        if i > n:
            raise TrustError("%s: truncated OpenPGP packet" % what)
        tags.append(tag)
    return tags


def _public_key_binary(raw: bytes, what: str) -> bytes:
    """The single public key in an armoured key file, as binary; refuses everything else."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise TrustError("%s is not an ASCII-armoured OpenPGP public key (binary keys: "
                         "export with gpg --armor --export)" % what) from None
    blocks = dearmor(text, what)
    kinds = [k for k, dummy_block in blocks]
    if any("PRIVATE" in k or "SECRET" in k for k in kinds):
        raise TrustError("%s holds a secret key: give the public key only (gpg --armor --export FINGERPRINT)" % what)
    keys = [d for k, d in blocks if k == "PUBLIC KEY BLOCK"]
    if not keys:
        raise TrustError("%s is not an ASCII-armoured OpenPGP public key (no -----BEGIN PGP PUBLIC KEY "
                         "BLOCK----- line)" % what)
    if len(keys) > 1:
        raise TrustError("%s holds %d key blocks: give one key per file" % (what, len(keys)))
    data = keys[0]
    tags = packet_tags(data, what)
    if _SECRET_KEY in tags or _SECRET_SUBKEY in tags:
        raise TrustError("%s holds secret key material: give the public key only" % what)
    primaries = tags.count(_PUBLIC_KEY)
    if primaries != 1 or tags[0] != _PUBLIC_KEY:
        raise TrustError("%s holds %d public keys: give exactly one key per file" % (what, primaries))
    return data


# --------------------------------------------------------------------------- gpg

def _gpg() -> str:
    path = shutil.which("gpg") or shutil.which("gpg2")
    if not path:
        raise TrustError(GPG_MISSING)
    return path


class _GpgHome:
    """A temporary, private gpg home; removed (and any agent in it stopped) on exit."""

    def __enter__(self) -> str:
        self.path = tempfile.mkdtemp(prefix="rocket-gpg-")
        return self.path

    def __exit__(self, *exc) -> None:
        try:
            if any(n.startswith("S.") for n in os.listdir(self.path)) or \
                    os.path.isdir("/run/user/%d/gnupg" % os.getuid()):
                gpgconf = shutil.which("gpgconf")
                if gpgconf:
                    subprocess.run([gpgconf, "--homedir", self.path, "--kill", "all"],
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, timeout=30, check=False)
        finally:
            shutil.rmtree(self.path, ignore_errors=True)


def _run_gpg(home: str, args: List[str]) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "GNUPGHOME": home}
    cmd = [_gpg(), "--homedir", home, "--no-options", "--batch", "--no-tty", "--no-autostart",
           "--no-auto-key-retrieve", "--no-permission-warning"] + args
    try:
        return subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env=env, timeout=GPG_TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise TrustError("gpg did not finish within %d seconds" % GPG_TIMEOUT) from None
    except OSError as e:
        raise TrustError("cannot run gpg: %s" % (e.strerror or e)) from None


def _colon_unescape(s: str) -> str:
    return re.sub(r"\\x([0-9a-fA-F]{2})", lambda m: chr(int(m.group(1), 16)), s)


def key_info(raw: bytes, what: str = "the key") -> Dict[str, Any]:
    """``{fingerprint, uids, created, expires, revoked, expired, armored}`` of one armoured public key."""
    binary = _public_key_binary(raw, what)
    with _GpgHome() as home:
        path = os.path.join(home, "key.gpg")
        with open(path, "wb") as f:
            f.write(binary)
        p = _run_gpg(home, ["--with-colons", "--fixed-list-mode", "--import-options", "show-only",
                            "--import", path])
    fpr = None
    uids: List[str] = []
    created = expires = None
    revoked = False
    state = None
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        f = line.split(":")
        if f[0] == "pub":
            if state is not None:
                raise TrustError("%s holds more than one public key" % what)
            state = "pub"
            revoked = f[1] == "r"
            created = int(f[5]) if len(f) > 5 and f[5].isdigit() else None
            expires = int(f[6]) if len(f) > 6 and f[6].isdigit() else None
        elif f[0] == "fpr" and state == "pub" and fpr is None:
            fpr = f[9].lower()
        elif f[0] == "sub":
            state = "sub"
        elif f[0] == "uid" and len(f) > 9:
            uids.append(_colon_unescape(f[9]))
    if p.returncode != 0 or fpr is None:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise TrustError("%s is not a usable OpenPGP public key: %s" % (what, "; ".join(err[-3:]) or "gpg found no key"))
    return {"fingerprint": normalize_fingerprint(fpr), "uids": uids, "created": created, "expires": expires,
            "revoked": revoked, "expired": bool(expires and expires < time.time()),
            "armored": armor_key(binary)}


def read_key(source: str, http: Optional[Dict[str, Any]] = None) -> Tuple[bytes, str]:
    """The bytes of a key file or https URL (at most 1 MiB) and how to name it in messages."""
    if not isinstance(source, str) or not source:
        raise TrustError("key: give the path or https URL of an armoured public key")
    if source.startswith(("https://", "http://")) or "://" in source:
        from .transport import Client, FetchError

        opts = dict(http or {})
        try:
            with Client(**opts) as client:
                data, dummy_resp = client.get_small(source, KEY_LIMIT, what="key")
        except FetchError as e:
            raise TrustError("cannot fetch the key: %s" % e) from None
        return data, source
    try:
        return read_small(source, KEY_LIMIT), source
    except OSError as e:
        raise TrustError("cannot read the key file %s: %s" % (source, e.strerror or e)) from None


def add_key(dd: Union[DataDir, str, None], key_path_or_url: str, prefix: Optional[str] = None,
            root: bool = False, fingerprint: Optional[str] = None, check: bool = False,
            http: Optional[Dict[str, Any]] = None, require_fingerprint: bool = False,
            raw: Optional[bytes] = None) -> Dict[str, Any]:
    """Trust the armoured public key at a path or URL for ``prefix`` (or every name, ``root``).

    ``fingerprint`` pins the expected key (recommended for URLs: a fetched key is otherwise
    trusted on first use); with ``require_fingerprint`` a key without one is refused (the
    message gives the key's fingerprint and user IDs to review). ``http`` holds
    transport.Client options for URLs (ca_path, insecure, timeout, overrides...). ``raw``:
    the key's bytes, already read from ``key_path_or_url``. With ``check`` nothing is
    written; ``changed`` says what would be. A masking (empty) file at the key's path is
    replaced by the key. Returns ``{fingerprint, prefix, root, path, uids, expired, changed}``.
    """
    dd = _dd(dd)
    directory = _scope_dir(dd, prefix, root)
    if raw is None:
        raw, what = read_key(key_path_or_url, http)
    else:
        what = key_path_or_url
    info = key_info(raw, what)
    fpr = info["fingerprint"]
    if fingerprint is not None and normalize_fingerprint(fingerprint) != fpr:
        raise TrustError("%s is key %s, not the expected %s" % (what, fpr, normalize_fingerprint(fingerprint)))
    if fingerprint is None and require_fingerprint:
        raise TrustError("%s is key %s (%s): it is not trusted without review. Check that this is the "
                         "signer's key and give its fingerprint (fingerprint: %s), or accept it unreviewed "
                         "(accept_unreviewed: true, insecure)"
                         % (what, fpr, ", ".join(info["uids"]) or "no user ID", fpr))
    if info["revoked"]:
        raise TrustError("%s (key %s) is revoked: it cannot be trusted" % (what, fpr))
    path = os.path.join(directory, fpr)
    try:
        current = read_small(path, KEY_LIMIT)
    except FileNotFoundError:
        current = None
    except OSError as e:
        raise TrustError("cannot read %s: %s" % (path, e.strerror or e))
    changed = current != info["armored"]
    if changed and not check:
        if not dd.exists():
            dd.ensure()
        os.makedirs(directory, 0o755, exist_ok=True)
        atomic_write(path, info["armored"], 0o644)
    return {"fingerprint": fpr, "prefix": None if root else prefix, "root": bool(root), "path": path,
            "uids": info["uids"], "expired": info["expired"], "changed": changed}


def remove_key(dd: Union[DataDir, str, None], fingerprint: str, prefix: Optional[str] = None,
               root: bool = False, check: bool = False) -> bool:
    """Stop trusting a key for ``prefix`` (or as a root key); True when it was trusted."""
    dd = _dd(dd)
    directory = _scope_dir(dd, prefix, root)
    path = os.path.join(directory, normalize_fingerprint(fingerprint))
    if not os.path.lexists(path):
        return False
    if check:
        return True
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    fsync_dir(directory)
    if not root:
        try:
            os.rmdir(directory)   # only when empty
        except OSError:
            pass
    return True


def mask_key(dd: Union[DataDir, str, None], fingerprint: str, prefix: Optional[str] = None,
             root: bool = False, check: bool = False,
             system_dir: Optional[str] = SYSTEM_DIR) -> Dict[str, Any]:
    """Mask (disable) the system key ``fingerprint`` for ``prefix`` (or as a root key).

    Writes the empty masking file at the key's path in the data_dir store (a key trusted
    there is replaced). Returns ``{fingerprint, prefix, root, path, system_key, changed}``;
    ``system_key`` is the masked system key file, or None when the system store has none
    (the mask then only takes effect if such a key appears).
    """
    dd = _dd(dd)
    fpr = normalize_fingerprint(fingerprint)
    directory = _scope_dir(dd, prefix, root)
    path = os.path.join(directory, fpr)
    rel = os.path.relpath(path, dd.trust)
    sys_path = os.path.join(system_dir, rel) if system_dir else None
    changed = not is_mask(path)
    if changed and not check:
        if not dd.exists():
            dd.ensure()
        os.makedirs(directory, 0o755, exist_ok=True)
        atomic_write(path, b"", 0o644)
    return {"fingerprint": fpr, "prefix": None if root else prefix, "root": bool(root), "path": path,
            "system_key": sys_path if sys_path and os.path.isfile(sys_path) else None, "masked": True,
            "changed": changed}


def discover_keys(prefix: str, http: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The public key URLs appc discovery gives for ``prefix`` (``ac-discovery-pubkeys`` tags).

    Walks ``prefix`` up to its host (as discovery does for images) until a page gives keys.
    ``http``: transport.Client options (ca_path, insecure, timeout, overrides...).
    Returns ``{keys: [url...], page, tried: [(url, why)]}``; TrustError when none is found.
    """
    from . import discovery, schema
    from .transport import Client, FetchError

    schema.validate_ac_identifier(prefix, "prefix")
    tried: List[Tuple[str, str]] = []
    try:
        with Client(**dict(http or {})) as client:
            schemes = ["https"] + (["http"] if "http" in client.insecure else [])
            for level in discovery.levels(prefix):
                for scheme in schemes:
                    url = "%s://%s?ac-discovery=1" % (scheme, level)
                    try:
                        body, resp = client.get_small(url, discovery.SMALL_LIMIT, what="discovery page")
                    except FetchError as e:
                        tried.append((url, "HTTP %d" % e.status if e.status is not None else str(e)))
                        if e.status is not None:
                            break
                        continue
                    metas = discovery.parse_meta(body.decode(discovery.response_charset(resp), "replace"))
                    found = discovery.endpoints(metas, prefix)["keys"]
                    if found:
                        return {"keys": found, "page": url, "tried": tried}
                    tried.append((url, "no ac-discovery-pubkeys tag for %s" % prefix))
                    break
    except FetchError as e:
        raise TrustError("discovery of the keys of %s failed: %s" % (prefix, e)) from None
    raise TrustError("discovery of the keys of %s found no ac-discovery-pubkeys tag: %s"
                     % (prefix, "; ".join("%s: %s" % t for t in tried) or "nothing tried"))


def add_discovered(dd: Union[DataDir, str, None], prefix: str, fingerprint: Optional[str] = None,
                   accept_unreviewed: bool = False, check: bool = False,
                   http: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Trust, for ``prefix``, the key(s) its discovery page publishes.

    With ``fingerprint`` only the discovered key of that fingerprint is added (TrustError when
    none of them is it); without it every discovered key is added, which needs
    ``accept_unreviewed``. Returns ``{keys: [add_key results], skipped: [{url, fingerprint}],
    page, changed}``.
    """
    want = normalize_fingerprint(fingerprint) if fingerprint is not None else None
    found = discover_keys(prefix, http)
    seen = []
    for url in found["keys"]:
        raw, what = read_key(url, http)
        seen.append((url, raw, key_info(raw, what)))
    if want is None and not accept_unreviewed:
        raise TrustError("%s publishes %s: keys are not trusted without review. Check them and give the "
                         "fingerprint of the one to trust (fingerprint: ...), or accept them unreviewed "
                         "(accept_unreviewed: true, insecure)" % (found["page"], "; ".join(
                             "%s (key %s, %s)" % (u, i["fingerprint"], ", ".join(i["uids"]) or "no user ID")
                             for u, dummy_raw, i in seen)))
    chosen = [(u, r) for u, r, i in seen if want is None or i["fingerprint"] == want]
    if not chosen:
        raise TrustError("none of the keys %s publishes for %s is the expected %s: %s" % (
            found["page"], prefix, want, ", ".join("%s (key %s)" % (u, i["fingerprint"]) for u, dummy_raw, i in seen)))
    added = [add_key(dd, u, prefix=prefix, fingerprint=want, check=check, raw=r) for u, r in chosen]
    skipped = [{"url": u, "fingerprint": i["fingerprint"]} for u, dummy_raw, i in seen
               if want is not None and i["fingerprint"] != want]
    return {"keys": added, "skipped": skipped, "page": found["page"],
            "changed": any(a["changed"] for a in added)}


# --------------------------------------------------------------------------- verification

def _parse_status(out: str) -> List[Dict[str, Any]]:
    """gpg --status-fd lines -> one dict per signature (NEWSIG starts one)."""
    sigs: List[Dict[str, Any]] = []
    cur: Optional[Dict[str, Any]] = None
    for line in out.splitlines():
        if not line.startswith("[GNUPG:] "):
            continue
        f = line[9:].split()
        if not f:
            continue
        kw = f[0]
        starts_sig = ("GOODSIG", "BADSIG", "ERRSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "VALIDSIG")
        if kw == "NEWSIG" or (cur is None and kw in starts_sig):
            cur = {"status": set(), "keyid": None, "fpr": None, "primary": None}
            sigs.append(cur)
            if kw == "NEWSIG":
                continue
        if cur is None:
            continue
        if kw in ("GOODSIG", "BADSIG", "EXPSIG", "EXPKEYSIG", "REVKEYSIG", "ERRSIG"):
            cur["status"].add(kw)
            if len(f) > 1:
                cur["keyid"] = f[1].lower()
            if kw == "ERRSIG" and len(f) > 7 and _FPR_RE.match(f[7].lower()):
                cur["fpr"] = f[7].lower()
        elif kw == "VALIDSIG":
            cur["status"].add(kw)
            cur["fpr"] = f[1].lower() if len(f) > 1 else None
            cur["primary"] = f[10].lower() if len(f) > 10 else cur["fpr"]
        elif kw == "NO_PUBKEY":
            cur["status"].add(kw)
    return sigs


def verify(dd: Union[DataDir, str, None], image_path: str, signature_path: str, name: str,
           system_dir: Optional[str] = SYSTEM_DIR) -> str:
    """Check the detached armoured signature of an image against the keys trusted for ``name``
    (in the data_dir store and the system store ``system_dir``, masks applied).

    Returns the (primary) fingerprint of the trusted key that made a good signature; raises
    SignatureError naming the image, the key (when known) and why otherwise.
    """
    dd = _dd(dd)
    candidates = _keys_for(dd, name, system_dir)
    trusted = [k for k in candidates if not k["masked"]]
    try:
        sig_raw = read_small(signature_path, SIGNATURE_LIMIT)
    except OSError as e:
        raise SignatureError(name, "cannot read the signature %s: %s" % (signature_path, e.strerror or e))
    if b"-----BEGIN PGP SIGNATURE-----" not in sig_raw:
        raise SignatureError(name, "the signature file is not an ASCII-armoured OpenPGP signature")
    ring = bytearray()
    loaded = set()
    for k in trusted:
        try:
            raw = read_small(k["path"], KEY_LIMIT)
            ring += _public_key_binary(raw, "trusted key file %s" % k["path"])
        except OSError as e:
            raise TrustError("cannot read the trusted key %s: %s" % (k["path"], e.strerror or e))
        loaded.add(k["fingerprint"])
    with _GpgHome() as home:
        keyring = os.path.join(home, "trusted.gpg")
        with open(keyring, "wb") as f:
            f.write(bytes(ring))
        sig_copy = os.path.join(home, "image.asc")
        with open(sig_copy, "wb") as f:
            f.write(sig_raw)
        p = _run_gpg(home, ["--no-default-keyring", "--keyring", keyring, "--trust-model", "always",
                            "--status-fd", "1", "--verify", sig_copy, os.path.abspath(image_path)])
    sigs = _parse_status(p.stdout.decode("utf-8", "replace"))
    if not sigs:
        err = p.stderr.decode("utf-8", "replace").strip().splitlines()
        raise SignatureError(name, "gpg found no signature in it (%s)" % ("; ".join(err[-2:]) or "no output"))
    for s in sigs:
        st = s["status"]
        if "BADSIG" in st:
            key = _full_fingerprint(s["fpr"] or s["keyid"], loaded)
            raise SignatureError(name, "BAD signature by key %s: the image does not match its signature"
                                 % key, key)
    problems = []
    for s in sigs:
        st = s["status"]
        key = s["primary"] or s["fpr"] or s["keyid"]
        if "GOODSIG" in st and "VALIDSIG" in st and not st & {"EXPKEYSIG", "REVKEYSIG", "EXPSIG", "ERRSIG"}:
            if s["primary"] in loaded:
                return s["primary"]
            problems.append((key, _masked(s["primary"], candidates)
                             or "key %s made it but is not one of the keys trusted for %s" % (key, name)))
        elif "EXPKEYSIG" in st:
            problems.append((key, "key %s has expired" % key))
        elif "REVKEYSIG" in st:
            problems.append((key, "key %s is revoked" % key))
        elif "EXPSIG" in st:
            problems.append((key, "the signature by key %s has expired" % key))
        elif "ERRSIG" in st:
            problems.append((key, _untrusted(dd, name, key, trusted, candidates, system_dir)))
        else:
            problems.append((key, "gpg did not report a valid signature"))
    key, why = problems[0]
    raise SignatureError(name, why, key)


def _full_fingerprint(key: Optional[str], known: Iterable[str]) -> Optional[str]:
    """A long key ID (as BADSIG gives it) -> the full fingerprint of a known key, when one matches."""
    if key and len(key) < 40:
        for f in known:
            if f.endswith(key):
                return f
    return key


def _masked(key: Optional[str], candidates: List[Dict[str, Any]]) -> Optional[str]:
    """The refusal for a signing key that is a masked system key for the name, if it is one."""
    if not key:
        return None
    for k in candidates:
        if k["masked"] and (k["fingerprint"] == key or k["fingerprint"].endswith(key)):
            return ("it was made by key %s, a system trusted key (%s, for %s) that is masked by the empty "
                    "file %s: it is not trusted. Remove that file to unmask it (appc.rocket.cas_trust "
                    "state: absent)" % (k["fingerprint"], k["path"],
                                        "every name" if k["root"] else "prefix %s" % k["prefix"], k["masked_by"]))
    return None


def _untrusted(dd: DataDir, name: str, key: Optional[str], trusted: List[Dict[str, Any]],
               candidates: Optional[List[Dict[str, Any]]] = None,
               system_dir: Optional[str] = SYSTEM_DIR) -> str:
    """Why a signing key is not usable for ``name``, with what is trusted and where the key is."""
    masked = _masked(key, candidates or [])
    if masked:
        return masked
    elsewhere = []
    if key:
        for k in list_keys(dd, system_dir):
            if k["fingerprint"] == key or k["fingerprint"].endswith(key):
                where = "root" if k["root"] else "prefix %s" % k["prefix"]
                if k["source"] == "system":
                    where += " (system store%s)" % (", masked" if k["masked"] else "")
                elsewhere.append(where)
    text = "it was made by key %s, which is not trusted for %s" % (key or "(unknown)", name)
    if elsewhere:
        text += " (that key is trusted only for %s)" % ", ".join(elsewhere)
    if trusted:
        text += "; keys trusted for %s: %s" % (name, ", ".join(
            "%s (%s%s)" % (k["fingerprint"], "root" if k["root"] else k["prefix"],
                           ", system" if k["source"] == "system" else "") for k in trusted))
    else:
        text += "; no key is trusted for %s" % name
    text += ". Trust the signer's key with appc.rocket.cas_trust (prefix: %s), or fetch without a " \
            "signature check (insecure: [image])" % name
    return text
