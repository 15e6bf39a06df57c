"""Real registries for tests: Debian's ``docker-registry`` (distribution 2.8) on 127.0.0.1.

``RegistrySet`` starts, on free ports, with one throw-away PKI (tests.support.https_server.make_pki):

- ``open``:  TLS, anonymous;
- ``basic``: TLS, htpasswd (bcrypt, ``htpasswd -B``) basic auth;
- ``token``: TLS, ``auth: token``, with ``TokenIssuer`` (an HTTPS endpoint that checks basic
  credentials and signs RS256 JWTs, header ``x5c`` = a certificate chained to the registry's
  ``rootcertbundle``);
- ``plain``: plain http (the insecure path).

The four share one storage directory, so an image pushed once is in all of them (pushes are
the slow part); each has its own process and access log. ``push`` builds deterministic OCI
layouts and pushes them with skopeo (``IMAGES``): a multi-platform index (amd64 + arm64), an
image with 12 layers, two images sharing a layer, a Docker schema 2 image and a Docker manifest
list.
``FakeRegistry`` is an HTTPS server whose every answer a test writes, for what a real registry
will not do (429, redirects to other hosts, garbage tokens, stalls, wrong bytes).
Processes are killed and reaped by PID; the directory is the caller's (a tmp dir).
"""
import base64
import ctypes
import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Dict, List, Optional

from tests.support.https_server import make_pki

USERNAME = "rocket"
PASSWORD = "s3cret-Pa55"
SERVICE = "rocket-test-registry"
ISSUER = "rocket-test-issuer"

# name -> repository:tag, pushed by RegistrySet.push / push_test_images
IMAGES = {
    "multi": "test/multi:1",        # OCI index: linux/amd64 + linux/arm64/v8
    "layers": "test/layers:12",     # 12 layers, one file each
    "shared_a": "test/shared-a:1",  # shares its first layer with shared_b
    "shared_b": "test/shared-b:1",
    "v2s2": "test/v2s2:1",          # Docker schema 2 manifest (skopeo --format v2s2)
    "list_v2s2": "test/list-v2s2:1",  # Docker manifest list (amd64 + arm64/v8) of schema 2 manifests
}
_TOOLS = {"docker-registry": "docker-registry", "skopeo": "skopeo", "htpasswd": "apache2-utils",
          "openssl": "openssl"}


def missing_tools() -> List[str]:
    """The programs the fixture needs that this host lacks (docker-registry, skopeo, htpasswd, openssl)."""
    return ["%s (Debian package %s)" % (t, p) for t, p in _TOOLS.items() if shutil.which(t) is None]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LOG_RE = re.compile(r'"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/[0-9.]+" (\d{3}) ')


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

    def __init__(self, proc: "subprocess.Popen[bytes]", host: str, url: str, ca: Optional[str],
                 cert_dir: Optional[str], auth: str, insecure: bool, storage: str, log_path: str) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.host = host
        self.url = url
        self.ca = ca
        self.cert_dir = cert_dir
        self.auth = auth
        self.insecure = insecure
        self.storage = storage
        self.log_path = log_path

    def ref(self, repo_tag: str) -> str:
        """``docker://<host>/<repo_tag>``."""
        return "docker://%s/%s" % (self.host, repo_tag)

    def access_log(self, since: int = 0) -> List[Dict[str, str]]:
        """The requests the registry served so far: [{"method", "path", "status"}] (from its log),
        from position ``since`` (a mark())."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        return [{"method": m.group(1), "path": m.group(2), "status": m.group(3)} for m in _LOG_RE.finditer(text)]

    def blob_gets(self, since: int = 0) -> List[str]:
        """The digests of blobs GET (status 200/206/307) so far (for 'downloaded once' assertions)."""
        out = []
        for e in self.access_log(since):
            if e["method"] == "GET" and "/blobs/sha256:" in e["path"] and e["status"] in ("200", "206", "307"):
                out.append(e["path"].rsplit("/", 1)[1].split("?", 1)[0])
        return out

    def mark(self) -> int:
        """A position in the access log: access_log(since=mark()) sees only what follows."""
        time.sleep(0.05)   # the registry writes its line after the response
        return os.path.getsize(self.log_path)

    def stop(self) -> None:
        """Kill the registry process (by PID), reap it."""
        if self.proc.poll() is None:
            os.kill(self.pid, signal.SIGKILL)
        self.proc.wait(10)
        from tests.support import pods
        pods.long_lived(self.pid, False)


class TokenIssuer:
    """The token endpoint of the ``token`` registry: ``realm`` URL, ``service`` name; counts
    ``issued`` tokens; ``expires_in`` settable; ``rootcertbundle`` is the CA the registry trusts."""

    realm: str
    service: str
    issued: int
    expires_in: int

    def __init__(self, directory: str, pki: Dict[str, str]) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
        import datetime

        self.service = SERVICE
        self.issued = 0
        self.expires_in = 300
        self.requests: List[Dict[str, Any]] = []
        now = datetime.datetime.now(datetime.timezone.utc)
        ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rocket test token CA")])
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .sign(ca_key, hashes.SHA256()))
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rocket test token signer")]))
                .issuer_name(ca_name).public_key(self.key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=2))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(ca_key, hashes.SHA256()))
        self.rootcertbundle = os.path.join(directory, "token-ca.pem")
        with open(self.rootcertbundle, "wb") as f:
            f.write(ca.public_bytes(serialization.Encoding.PEM))
        self.x5c = [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                issuer._serve(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(pki["server"], pki["server_key"])
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.realm = "https://127.0.0.1:%d/token" % self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        from urllib.parse import parse_qs, urlsplit

        parts = urlsplit(h.path)
        q = parse_qs(parts.query)
        auth = h.headers.get("Authorization", "")
        user = None
        if auth.startswith("Basic "):
            try:
                u, dummy, p = base64.b64decode(auth[6:]).decode().partition(":")
            except ValueError:
                u, p = "", ""
            if (u, p) != (USERNAME, PASSWORD):
                return self._answer(h, 401, {"errors": [{"code": "UNAUTHORIZED", "message": "bad credentials"}]})
            user = u
        self.requests.append({"scope": q.get("scope", []), "service": q.get("service", [""])[0], "user": user})
        access = []
        for scope in q.get("scope", []):
            kind, dummy, rest = scope.partition(":")
            name, dummy, actions = rest.rpartition(":")
            if kind == "repository" and user is not None:
                access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        self.issued += 1
        self._answer(h, 200, {"token": self.sign(user or "", access), "expires_in": self.expires_in})

    def _answer(self, h: BaseHTTPRequestHandler, status: int, doc: Dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def sign(self, subject: str, access: List[Dict[str, Any]]) -> str:
        """An RS256 JWT the registry accepts: x5c chains to rootcertbundle."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        def b64(data: bytes) -> str:
            return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

        now = int(time.time())
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {"iss": ISSUER, "sub": subject, "aud": SERVICE, "exp": now + self.expires_in, "nbf": now - 10,
                  "iat": now, "jti": os.urandom(8).hex(), "access": access}
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        sig = self.key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + b64(sig)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


_LIBC = ctypes.CDLL(None, use_errno=True)   # loaded here: the child between fork and exec only calls it


def _die_with_parent() -> None:
    """In the child: SIGKILL when pytest dies, so a killed run leaves no registry behind."""
    _LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)   # PR_SET_PDEATHSIG


def start_registry(directory: str, auth: str = "none", tls: bool = True, pki: Optional[Dict[str, str]] = None,
                   issuer: Optional[TokenIssuer] = None, storage: Optional[str] = None) -> Registry:
    """Start one docker-registry on a free port; wait until it answers /v2/."""
    os.makedirs(directory, exist_ok=True)
    storage = storage or os.path.join(directory, "storage")
    os.makedirs(storage, exist_ok=True)
    port = _free_port()
    host = "127.0.0.1:%d" % port
    lines = ["version: 0.1", "log:", "  level: info", "  formatter: text", "  accesslog:", "    disabled: false",
             "storage:", "  filesystem:", "    rootdirectory: %s" % storage, "  delete:", "    enabled: true",
             "  maintenance:", "    uploadpurging:", "      enabled: false",
             "http:", "  addr: %s" % host, "  secret: rocket-test-secret"]
    if tls:
        assert pki is not None
        lines += ["  tls:", "    certificate: %s" % pki["server"], "    key: %s" % pki["server_key"]]
    if auth == "basic":
        htpasswd = os.path.join(directory, "htpasswd")
        # bcrypt (-B), the only scheme distribution accepts; the password on stdin (-i), not argv.
        subprocess.run(["htpasswd", "-B", "-i", "-c", htpasswd, USERNAME], input=PASSWORD.encode(), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        lines += ["auth:", "  htpasswd:", "    realm: rocket-test", "    path: %s" % htpasswd]
    elif auth == "token":
        assert issuer is not None
        lines += ["auth:", "  token:", "    realm: %s" % issuer.realm, "    service: %s" % SERVICE,
                  "    issuer: %s" % ISSUER, "    rootcertbundle: %s" % issuer.rootcertbundle]
    elif auth != "none":
        raise ValueError(auth)
    config = os.path.join(directory, "config.yml")
    with open(config, "w") as f:
        f.write("\n".join(lines) + "\n")
    log_path = os.path.join(directory, "registry.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["docker-registry", "serve", config], stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent)
    from tests.support import pods
    pods.long_lived(proc.pid)   # it serves many tests: pods.reap() must not wait for it
    cert_dir = None
    ca = None
    if tls:
        assert pki is not None
        ca = pki["ca"]
        cert_dir = os.path.join(directory, "certs.d", host)
        os.makedirs(cert_dir)
        shutil.copy(ca, os.path.join(cert_dir, "ca.crt"))
    reg = Registry(proc, host, ("https://" if tls else "http://") + host, ca, cert_dir, auth, not tls, storage,
                   log_path)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            with open(log_path, "rb") as f:
                tail = f.read()[-2000:].decode("utf-8", "replace")
            raise RuntimeError("docker-registry exited (%s): %s" % (proc.returncode, tail))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                reg.stop()
                raise RuntimeError("docker-registry did not listen on %s within 20 s" % host)
            time.sleep(0.05)
    return reg


# --------------------------------------------------------------------------- images

def _tar_gz(files: Dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        dirs = set()
        for path in sorted(files):
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                d = "/".join(parts[:i])
                if d not in dirs:
                    dirs.add(d)
                    ti = tarfile.TarInfo(d)
                    ti.type = tarfile.DIRTYPE
                    ti.mode = 0o755
                    ti.mtime = 1
                    tf.addfile(ti)
            ti = tarfile.TarInfo(path)
            ti.size = len(files[path])
            ti.mode = 0o755 if path.startswith("bin/") else 0o644
            ti.mtime = 1
            tf.addfile(ti, io.BytesIO(files[path]))
    tar = raw.getvalue()
    out = io.BytesIO()
    with gzip.GzipFile(fileobj=out, mode="wb", mtime=0) as gz:
        gz.write(tar)
    return out.getvalue()


def _put_blob(layout: str, data: bytes) -> Dict[str, Any]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    d = os.path.join(layout, "blobs", "sha256")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, digest[7:]), "wb") as f:
        f.write(data)
    return {"digest": digest, "size": len(data)}


def _image(layout: str, layers: List[Dict[str, bytes]], architecture: str, variant: str,
           config_extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    descs = []
    diff_ids = []
    for files in layers:
        blob = _tar_gz(files)
        d = _put_blob(layout, blob)
        d["mediaType"] = "application/vnd.oci.image.layer.v1.tar+gzip"
        descs.append(d)
        diff_ids.append("sha256:" + hashlib.sha256(gzip.decompress(blob)).hexdigest())
    config = {"architecture": architecture, "os": "linux",
              "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"]},
              "rootfs": {"type": "layers", "diff_ids": diff_ids},
              "created": "2026-01-01T00:00:00Z"}
    if variant:
        config["variant"] = variant
    config.update(config_extra or {})
    c = _put_blob(layout, json.dumps(config, sort_keys=True).encode())
    c["mediaType"] = "application/vnd.oci.image.config.v1+json"
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": c, "layers": descs}
    m = _put_blob(layout, json.dumps(manifest, sort_keys=True).encode())
    m["mediaType"] = "application/vnd.oci.image.manifest.v1+json"
    m["platform"] = {"os": "linux", "architecture": architecture}
    if variant:
        m["platform"]["variant"] = variant
    return m


def build_layout(directory: str, layers: List[Dict[str, bytes]], architecture: str = "amd64",
                 variant: str = "", extra_platforms: Optional[List[tuple]] = None) -> str:
    """An OCI image layout with one gzip layer per {path: content} dict (deterministic), tagged
    "latest"; ``extra_platforms`` [(arch, variant, layers)] make it an index. Returns its path."""
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "oci-layout"), "w") as f:
        f.write('{"imageLayoutVersion": "1.0.0"}')
    top = _image(directory, layers, architecture, variant)
    if extra_platforms:
        entries = [top] + [_image(directory, ls, arch, var) for arch, var, ls in extra_platforms]
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": entries}
        top = _put_blob(directory, json.dumps(index, sort_keys=True).encode())
        top["mediaType"] = "application/vnd.oci.image.index.v1+json"
    else:
        top = {k: v for k, v in top.items() if k != "platform"}
    top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    with open(os.path.join(directory, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [top]}, f)
    return directory


def test_image_layers(name: str) -> Dict[str, Any]:
    """The content of IMAGES[name]: {"layers": [...], "extra_platforms": [...], "format": ...}."""
    def files(tag: str, i: int) -> Dict[str, bytes]:
        return {"etc/%s-%02d.txt" % (tag, i): ("%s layer %d\n" % (tag, i)).encode() * 64}

    shared = {"bin/shared.txt": b"the layer two images share\n" * 256}
    if name == "multi":
        return {"layers": [files("multi-amd64", 0)], "arch": "amd64", "variant": "",
                "extra_platforms": [("arm64", "v8", [files("multi-arm64", 0)])]}
    if name == "layers":
        return {"layers": [files("layers", i) for i in range(12)], "arch": "amd64", "variant": ""}
    if name == "shared_a":
        return {"layers": [shared, files("shared-a", 1)], "arch": "amd64", "variant": ""}
    if name == "shared_b":
        return {"layers": [shared, files("shared-b", 1)], "arch": "amd64", "variant": ""}
    if name == "list_v2s2":
        return {"layers": [files("list-amd64", 0)], "arch": "amd64", "variant": "", "format": "v2s2",
                "extra_platforms": [("arm64", "v8", [files("list-arm64", 0)])]}
    if name == "v2s2":
        return {"layers": [files("v2s2", 0), files("v2s2", 1)], "arch": "amd64", "variant": "", "format": "v2s2"}
    raise KeyError(name)


def _skopeo_env(directory: str) -> Dict[str, str]:
    env = dict(os.environ)
    env["TMPDIR"] = directory
    return env


def skopeo_push(layout: str, registry: Registry, repo_tag: str, fmt: Optional[str] = None,
                all_platforms: bool = False, username: Optional[str] = USERNAME,
                password: Optional[str] = PASSWORD) -> None:
    """``skopeo copy oci:<layout>:latest docker://<host>/<repo_tag>`` with the registry's certs
    and credentials (passed in an auth file, never on argv); ``fmt`` "v2s2" or "oci"."""
    work = os.path.join(os.path.dirname(os.path.abspath(layout)), ".skopeo")
    os.makedirs(work, exist_ok=True)
    authfile = os.path.join(work, "auth.json")
    with open(authfile, "w") as f:
        entry = {"auth": base64.b64encode(("%s:%s" % (username, password)).encode()).decode()} if username else {}
        json.dump({"auths": {registry.host: entry} if entry else {}}, f)
    os.chmod(authfile, 0o600)
    cmd = ["skopeo", "--registries-conf", "/dev/null", "copy", "--quiet", "--authfile", authfile]
    if registry.insecure:
        cmd.append("--dest-tls-verify=false")
    else:
        cmd += ["--dest-cert-dir", registry.cert_dir]
    if fmt:
        cmd += ["--format", fmt]
    if all_platforms:
        cmd.append("--all")
    cmd += ["oci:%s:latest" % layout, registry.ref(repo_tag)]
    r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       timeout=120, env=_skopeo_env(work), check=False)
    if r.returncode != 0:
        raise RuntimeError("skopeo copy to %s failed: %s" % (registry.ref(repo_tag), r.stderr.decode()[-2000:]))


def manifest_digest(registry: Registry, repo_tag: str) -> str:
    """The digest of what ``repo_tag`` names in ``registry`` (skopeo inspect --raw, hashed here)."""
    work = os.path.join(os.path.dirname(registry.storage), ".skopeo-inspect")
    os.makedirs(work, exist_ok=True)
    authfile = os.path.join(work, "auth.json")
    with open(authfile, "w") as f:
        json.dump({"auths": {registry.host: {"auth": base64.b64encode(
            ("%s:%s" % (USERNAME, PASSWORD)).encode()).decode()}}}, f)
    cmd = ["skopeo", "--registries-conf", "/dev/null", "inspect", "--raw", "--authfile", authfile]
    cmd += ["--tls-verify=false"] if registry.insecure else ["--cert-dir", registry.cert_dir]
    r = subprocess.run(cmd + [registry.ref(repo_tag)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, timeout=60, env=_skopeo_env(work), check=False)
    if r.returncode != 0:
        raise RuntimeError("skopeo inspect %s failed: %s" % (registry.ref(repo_tag), r.stderr.decode()[-2000:]))
    return "sha256:" + hashlib.sha256(r.stdout).hexdigest()


class RegistrySet:
    """The four registries (``open``, ``basic``, ``token``, ``plain``) and the token issuer,
    started together in ``directory``, sharing one storage; ``images`` maps IMAGES names to
    their digests (manifest or index) once pushed (``push``)."""

    open: Registry
    basic: Registry
    token: Registry
    plain: Registry
    issuer: TokenIssuer
    pki: Dict[str, str]
    images: Dict[str, str]

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.images = {}
        self._started: List[Registry] = []
        self.pki = make_pki(os.path.join(directory, "pki"))
        storage = os.path.join(directory, "storage")
        self.issuer = TokenIssuer(directory, self.pki)
        try:
            self.open = self._start("open", "none", True, storage)
            self.basic = self._start("basic", "basic", True, storage)
            self.token = self._start("token", "token", True, storage)
            self.plain = self._start("plain", "none", False, storage)
        except BaseException:
            self.stop()
            raise

    def _start(self, name: str, auth: str, tls: bool, storage: str) -> Registry:
        reg = start_registry(os.path.join(self.directory, name), auth, tls, self.pki, self.issuer, storage)
        self._started.append(reg)
        return reg

    def all(self) -> List[Registry]:
        return list(self._started)

    def push(self, name: str, registry: Optional[Registry] = None, repo_tag: Optional[str] = None) -> str:
        """Push IMAGES[name] (through ``registry``, the open one by default; storage is shared) under
        ``repo_tag`` (IMAGES[name] by default); returns its manifest (or index) digest."""
        spec = test_image_layers(name)
        registry = registry or self.open
        repo_tag = repo_tag or IMAGES[name]
        layout = os.path.join(self.directory, "layouts", name)
        if not os.path.exists(os.path.join(layout, "index.json")):
            build_layout(layout, spec["layers"], spec["arch"], spec["variant"], spec.get("extra_platforms"))
        skopeo_push(layout, registry, repo_tag, spec.get("format"), all_platforms=bool(spec.get("extra_platforms")))
        digest = manifest_digest(registry, repo_tag)
        if repo_tag == IMAGES[name]:
            self.images[name] = digest
        return digest

    def stop(self) -> None:
        """Stop every process started (by PID) and the issuer."""
        for reg in self._started:
            reg.stop()
        self.issuer.close()


def push_test_images(registries: RegistrySet) -> Dict[str, str]:
    """Push IMAGES (once: the registries share their storage); returns name -> digest."""
    for name in IMAGES:
        registries.push(name)
    return dict(registries.images)


# --------------------------------------------------------------------------- a hostile registry

class _QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        pass   # the client hung up on a stalled or cut answer: what the test wanted


class FakeRegistry:
    """An HTTPS (or http with ``pki=None``) server on 127.0.0.1 whose answers the test writes:
    ``routes[path] = handler(request) -> (status, headers, body)`` where ``body`` is bytes, or a
    callable(wfile) that writes (and may stall or cut) the body itself. Paths are matched without
    the query string; every request is recorded in ``requests`` as (method, path, headers)."""

    def __init__(self, pki: Optional[Dict[str, str]] = None, client_ca: Optional[str] = None) -> None:
        self.routes: Dict[str, Callable[[Any], Any]] = {}
        self.requests: List[Any] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def handle_one(self) -> None:
                path = self.path.split("?", 1)[0]
                with owner.lock:
                    owner.requests.append((self.command, self.path, dict(self.headers.items())))
                    route = owner.routes.get(path)
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                if route is None:
                    status, headers, body = 404, {}, b'{"errors":[{"code":"NAME_UNKNOWN"}]}'
                else:
                    status, headers, body = route(self)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                if not callable(body) and "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(body)))
                if callable(body):
                    self.close_connection = True
                self.end_headers()
                if self.command == "HEAD":
                    return
                if callable(body):
                    try:
                        body(self.wfile)
                    except OSError:
                        pass
                else:
                    self.wfile.write(body)

            do_GET = do_HEAD = do_POST = do_PUT = handle_one

        self.httpd = _QuietServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.host = "127.0.0.1:%d" % self.port
        scheme = "http"
        if pki is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(pki["server"], pki["server_key"])
            if client_ca:
                ctx.verify_mode = ssl.CERT_REQUIRED
                ctx.load_verify_locations(client_ca)
            self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
            scheme = "https"
        self.url = "%s://%s" % (scheme, self.host)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def count(self, path: Optional[str] = None, method: Optional[str] = None) -> int:
        with self.lock:
            return sum(1 for m, p, dummy in self.requests
                       if (path is None or p.split("?", 1)[0] == path) and (method is None or m == method))

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> "FakeRegistry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
