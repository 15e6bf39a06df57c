"""The registry wire against real registries (Debian's docker-registry: anonymous, htpasswd basic,
token auth with an RS256 issuer, plain http) and a fake one for what a real registry will not do.

Every hostile reply must be a clear RegistryError naming the registry, the repository and the
fault; credentials never reach another host.
"""
import hashlib
import io
import json
import os
import socket
import subprocess
import threading
import time

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registries_conf as rc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_client as cl
from ansible_collections.appc.rocket.plugins.module_utils.stage0.registry_auth import Credentials, basic_header
from ansible_collections.appc.rocket.plugins.module_utils.stage0.registry_ref import RegistryError, parse_reference
from tests.support import registry as sr
from tests.support.https_server import make_pki

CREDS = Credentials(sr.USERNAME, sr.PASSWORD)


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(cl, "BACKOFF", 0.01)


def _client(reg, creds=CREDS, **kw):
    kw.setdefault("cert_dirs", [])
    kw.setdefault("ca_path", reg.ca)
    return cl.RegistryClient(reg.host, insecure=reg.insecure, credentials=creds if reg.auth != "none" else None, **kw)


def _pull(client, ref, platform=("linux", "amd64", "")):
    """Manifest (platform's, from an index), config and layers; returns (manifest, {digest: bytes})."""
    m = client.get_manifest(ref)
    if m.is_index:
        desc = cl.select_platform(m.json(), *platform)
        m = client.get_manifest(ref, desc["digest"])
    doc = m.json()
    blobs = {}
    for d in [doc["config"]] + doc["layers"]:
        buf = io.BytesIO()
        assert client.fetch_blob(ref, d["digest"], d["size"], buf) == d["size"]
        assert "sha256:" + hashlib.sha256(buf.getvalue()).hexdigest() == d["digest"]
        blobs[d["digest"]] = buf.getvalue()
    return m, blobs


# --------------------------------------------------------------------------- real registries

@pytest.mark.parametrize("which", ["open", "basic", "token", "plain"])
def test_pull_every_image_every_auth_mode(registries, which):
    reg = getattr(registries, which)
    with _client(reg) as c:
        for name, repo_tag in sr.IMAGES.items():
            ref = parse_reference(reg.ref(repo_tag))
            m, blobs = _pull(c, ref)
            expected_layers = {"multi": 1, "layers": 12, "shared_a": 2, "shared_b": 2, "v2s2": 2, "list_v2s2": 1}[name]
            assert len(m.json()["layers"]) == expected_layers
            top = c.get_manifest(ref)
            assert top.digest == registries.images[name]           # skopeo's view, hashed independently
            assert c.head_manifest(ref) == registries.images[name]
            assert c.get_manifest(ref.replace(digest=top.digest)).data == top.data   # by digest, checked
            if name == "v2s2":
                assert top.media_type == cl.DOCKER_MANIFEST
            elif name == "multi":
                assert top.media_type == cl.OCI_INDEX
            elif name == "list_v2s2":
                assert top.media_type == cl.DOCKER_LIST and m.media_type == cl.DOCKER_MANIFEST
            else:
                assert top.media_type == cl.OCI_MANIFEST
        # Both platforms of the index, and they differ.
        ref = parse_reference(reg.ref(sr.IMAGES["multi"]))
        amd, dummy = _pull(c, ref, ("linux", "amd64", ""))
        arm, dummy = _pull(c, ref, ("linux", "arm64", "v8"))
        assert amd.digest != arm.digest
        assert json.loads(c.get_manifest(ref, arm.digest).data)["layers"] == arm.json()["layers"]
        with pytest.raises(RegistryError, match="not found"):
            c.get_manifest(parse_reference(reg.ref("test/absent:1")))


def test_basic_auth_refusals(registries, tmp_path, monkeypatch):
    reg = registries.basic
    ref = parse_reference(reg.ref(sr.IMAGES["v2s2"]))
    for env in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR"):
        monkeypatch.delenv(env, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[]) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest(ref)
    assert "registry %s, repository test/v2s2" % reg.host in str(e.value)
    assert "basic authentication and no credentials were given" in str(e.value)
    with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[], credentials=Credentials(sr.USERNAME, "wrong")) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest(ref)
    assert "HTTP 401" in str(e.value) and "credentials (from module) were rejected" in str(e.value)
    assert "wrong" not in str(e.value)


def test_credentials_from_auth_files(registries, tmp_path, monkeypatch):
    reg = registries.basic
    ref = parse_reference(reg.ref(sr.IMAGES["shared_a"]))
    f = tmp_path / "auth.json"
    f.write_text(json.dumps({"auths": {reg.host: {"auth": basic_header(CREDS)[6:]}}}))
    with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[], auth_file=str(f)) as c:
        assert c.get_manifest(ref).digest == registries.images["shared_a"]
    # The default places: containers' auth.json under XDG_RUNTIME_DIR.
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run" / "containers").mkdir(parents=True)
    os.rename(f, tmp_path / "run" / "containers" / "auth.json")
    with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[]) as c:
        assert c.head_manifest(ref) == registries.images["shared_a"]


def test_token_flow_and_cache(registries, tmp_path):
    reg = registries.token
    issuer = registries.issuer
    ref = parse_reference(reg.ref(sr.IMAGES["layers"]))
    before = issuer.issued
    with _client(reg) as c:
        _pull(c, ref)                     # a manifest and 13 blobs: one token for the scope
        assert issuer.issued == before + 1
        c.head_manifest(ref)
        assert issuer.issued == before + 1
        _pull(c, parse_reference(reg.ref(sr.IMAGES["shared_b"])))   # another repository, another scope
        assert issuer.issued == before + 2
    asked = issuer.requests[-1]
    assert asked["service"] == sr.SERVICE and asked["scope"] == ["repository:test/shared-b:pull"]
    assert asked["user"] == sr.USERNAME
    # expires_in is honoured: a token that lived its life is fetched again.
    issuer.expires_in = 1
    try:
        with _client(reg) as c:
            c.head_manifest(ref)
            c.head_manifest(ref)
            assert issuer.issued == before + 3
            time.sleep(1.0)
            c.head_manifest(ref)
            assert issuer.issued == before + 4
    finally:
        issuer.expires_in = 300
    # Anonymous: the issuer grants nothing, the registry refuses.
    empty = tmp_path / "auth.json"
    empty.write_text('{"auths": {}}')
    with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[], auth_file=str(empty)) as c:
        with pytest.raises(RegistryError, match="HTTP 401.*needs credentials"):
            c.get_manifest(ref)
    with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[], credentials=Credentials(sr.USERNAME, "nope")) as c:
        with pytest.raises(RegistryError, match="the token endpoint https://127.0.0.1:[0-9]+/token refused the credentials"):
            c.get_manifest(ref)


def test_tls_trust(registries, tmp_path):
    reg = registries.open
    ref = parse_reference(reg.ref(sr.IMAGES["shared_a"]))
    with cl.RegistryClient(reg.host, cert_dirs=[]) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest(ref)
    assert "TLS error" in str(e.value) and "certs.d/%s/" % reg.host in str(e.value)
    # certs.d layout (containers' and docker's): <dir>/<host:port>/ca.crt
    with cl.RegistryClient(reg.host, cert_dirs=[str(tmp_path / "none"), os.path.dirname(reg.cert_dir)]) as c:
        assert c.get_manifest(ref).digest == registries.images["shared_a"]
        assert c.cert_dir_used == reg.cert_dir
    with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[]) as c:
        assert c.head_manifest(ref) == registries.images["shared_a"]
    with pytest.raises(Exception, match="ca_path .* does not exist"):
        cl.RegistryClient(reg.host, ca_path=str(tmp_path / "missing.pem"))
    # Insecure: unverified TLS is accepted.
    with cl.RegistryClient(reg.host, insecure=True, cert_dirs=[]) as c:
        assert c.head_manifest(ref) == registries.images["shared_a"]
    # Plain http only when marked insecure.
    plain = registries.plain
    with cl.RegistryClient(plain.host, cert_dirs=[]) as c:
        with pytest.raises(RegistryError, match="must be marked insecure"):
            c.get_manifest(parse_reference(plain.ref(sr.IMAGES["shared_a"])))
    with cl.RegistryClient(plain.host, insecure=True, cert_dirs=[]) as c:
        assert c.get_manifest(parse_reference(plain.ref(sr.IMAGES["shared_a"]))).digest == registries.images["shared_a"]
        assert c.log[-1][1].startswith("http://")


@pytest.mark.parametrize("which", ["basic", "token"])
def test_push_primitives(registries, which, tmp_path):
    reg = getattr(registries, which)
    repo = "pushed/%s" % which
    ref = parse_reference(reg.ref(repo + ":v1"))
    layer = os.urandom(300000)
    config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    with _client(reg) as c:
        ld, cd = cl.sha256_digest(layer), cl.sha256_digest(config)
        assert not c.blob_exists(ref, ld)
        assert c.upload_blob(ref, ld, len(layer), io.BytesIO(layer)) == "uploaded"
        assert c.upload_blob(ref, ld, len(layer), io.BytesIO(layer)) == "exists"
        assert c.upload_blob(ref, cd, len(config), io.BytesIO(config)) == "uploaded"
        other = parse_reference(reg.ref(repo + "-copy:v1"))
        assert c.upload_blob(other, ld, len(layer), io.BytesIO(layer), mount_from=repo) == "mounted"
        manifest = json.dumps({"schemaVersion": 2, "mediaType": cl.OCI_MANIFEST,
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                          "size": len(config)},
                               "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                           "digest": ld, "size": len(layer)}]}).encode()
        digest = c.put_manifest(ref, cl.OCI_MANIFEST, manifest)
        assert digest == cl.sha256_digest(manifest)
        assert c.get_manifest(ref).data == manifest
        buf = io.BytesIO()
        c.fetch_blob(other, ld, len(layer), buf)
        assert buf.getvalue() == layer
        with pytest.raises(RegistryError, match="not the sha256:0+ the reference names"):
            c.put_manifest(ref.replace(digest="sha256:" + "0" * 64), cl.OCI_MANIFEST, manifest)
    # An independent reader agrees.
    assert sr.manifest_digest(reg, repo + ":v1") == digest


class CuttingProxy:
    """A TCP proxy in front of a plain-http registry that cuts the first response to a blob GET
    (without Range) after ``cut_after`` bytes, and records the request heads it forwards."""

    def __init__(self, upstream_port, cut_after):
        self.upstream = upstream_port
        self.cut_after = cut_after
        self.cuts = 0
        self.heads = []
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.threads = []
        self.closing = False
        t = threading.Thread(target=self._accept, daemon=True)
        t.start()

    def _accept(self):
        while not self.closing:
            try:
                down, dummy = self.sock.accept()
            except OSError:
                return
            up = socket.create_connection(("127.0.0.1", self.upstream))
            state = {"cut": False}
            for args in ((down, up, True, state), (up, down, False, state)):
                t = threading.Thread(target=self._pump, args=args, daemon=True)
                t.start()
                self.threads.append(t)

    def _pump(self, src, dst, to_server, state):
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if to_server:
                    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
                    if head[:4] in ("GET ", "HEAD"):
                        self.heads.append(head)
                        state["cut"] = ("/blobs/sha256:" in head and "Range:" not in head
                                        and head.startswith("GET") and self.cuts == 0)
                elif state["cut"]:
                    if sent + len(data) >= self.cut_after:
                        dst.sendall(data[:self.cut_after - sent])
                        self.cuts += 1
                        break
                    sent += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def close(self):
        self.closing = True
        self.sock.close()
        for t in self.threads:
            t.join(5)


def test_resume_against_the_real_registry(registries, tmp_path):
    """A body cut mid-way resumes with Range where it stopped; the bytes are checked whole."""
    plain = registries.plain
    big = bytes(hashlib.sha256(b"%d" % i).digest()[0] for i in range(3 << 20))   # 3 MiB, deterministic
    layout = sr.build_layout(str(tmp_path / "layout"), [{"big.bin": big}])
    sr.skopeo_push(layout, plain, "test/big:1")
    ref = parse_reference("docker://127.0.0.1:%d/test/big:1" % 1)   # replaced below by the proxy's port
    proxy = CuttingProxy(int(plain.host.rsplit(":", 1)[1]), cut_after=1 << 20)
    try:
        ref = parse_reference("docker://127.0.0.1:%d/test/big:1" % proxy.port)
        with cl.RegistryClient(ref.registry, insecure=True, cert_dirs=[]) as c:
            m = c.get_manifest(ref)
            layer = m.json()["layers"][0]
            mark = plain.mark()
            with open(tmp_path / "blob", "wb") as f:
                assert c.fetch_blob(ref, layer["digest"], layer["size"], f) == layer["size"]
            with open(tmp_path / "blob", "rb") as f:
                assert cl.sha256_digest(f.read()) == layer["digest"]
    finally:
        proxy.close()
    assert proxy.cuts == 1
    ranged = [h for h in proxy.heads if layer["digest"] in h and "Range: bytes=" in h]
    assert len(ranged) == 1, proxy.heads
    offset = int(ranged[0].split("Range: bytes=", 1)[1].split("-", 1)[0])
    assert 0 < offset < layer["size"]
    served = [e for e in plain.access_log(mark) if layer["digest"] in e["path"] and e["method"] == "GET"]
    assert [e["status"] for e in served][-1] == "206"


def test_mirror_endpoints_reach_the_real_registry(registries, tmp_path):
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nprefix = "registry.example/test"\nlocation = "registry.example/test"\n'
                    '[[registry.mirror]]\nlocation = "%s/test"\n[[registry.mirror]]\nlocation = "%s/test"\n'
                    'insecure = true\n' % (registries.open.host, registries.plain.host))
    ref = parse_reference("docker://registry.example/test/shared-b:1")
    eps = rc.load_registries_conf(str(conf)).endpoints(ref)
    assert [e.ref.registry for e in eps] == [registries.open.host, registries.plain.host, "registry.example"]
    for ep in eps[:2]:
        with cl.client_for(ep.ref, insecure=ep.insecure, ca_path=registries.open.ca, cert_dirs=[]) as c:
            assert c.get_manifest(ep.ref).digest == registries.images["shared_b"]


# --------------------------------------------------------------------------- a hostile registry

GOOD = b"the blob the manifest names\n" * 100
GOOD_D = cl.sha256_digest(GOOD)


def _manifest_doc(layer=GOOD, media_type=cl.OCI_MANIFEST):
    return json.dumps({"schemaVersion": 2, "mediaType": media_type,
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "0" * 64, "size": 2},
                       "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                                   "digest": cl.sha256_digest(layer), "size": len(layer)}]}).encode()


def _ok(body, ctype="application/octet-stream", **headers):
    return lambda h: (200, dict({"Content-Type": ctype}, **headers), body)


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("fake-pki"))


@pytest.fixture
def fake(pki):
    with sr.FakeRegistry(pki) as f:
        f.routes["/v2/"] = _ok(b"{}", "application/json")
        yield f


def _fake_client(fake, pki, **kw):
    kw.setdefault("retries", 2)
    return cl.RegistryClient(fake.host, ca_path=pki["ca"], cert_dirs=[], **kw)


REF = "docker://%s/hostile/app:1"


def test_retry_after_honoured_and_retries_bounded(fake, pki):
    calls = []

    def busy(h):
        calls.append(time.monotonic())
        if len(calls) == 1:
            return 429, {"Retry-After": "1"}, b"slow down"
        return 200, {"Content-Type": cl.OCI_MANIFEST}, _manifest_doc()

    fake.routes["/v2/hostile/app/manifests/1"] = busy
    with _fake_client(fake, pki) as c:
        m = c.get_manifest(parse_reference(REF % fake.host))
    assert m.data == _manifest_doc() and len(calls) == 2 and calls[1] - calls[0] >= 0.95
    fake.routes["/v2/hostile/app/manifests/2"] = lambda h: (503, {}, b"down")
    with _fake_client(fake, pki) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest(parse_reference(REF.replace(":1", ":2") % fake.host))
    assert "registry %s, repository hostile/app: manifest 2: HTTP 503" % fake.host in str(e.value)
    assert "gave up after 3 attempts" in str(e.value)
    assert fake.count("/v2/hostile/app/manifests/2") == 3


def test_blob_redirect_to_another_host_carries_no_credentials(fake, pki):
    with sr.FakeRegistry(pki) as storage:
        storage.routes["/storage/blob"] = _ok(GOOD)
        want = basic_header(CREDS)

        def guarded(path_result):
            def route(h):
                if h.headers.get("Authorization") != want:
                    return 401, {"WWW-Authenticate": 'Basic realm="fake"'}, b""
                return path_result(h)
            return route

        fake.routes["/v2/"] = guarded(_ok(b"{}"))
        # localhost, not 127.0.0.1: another host (and port) than the registry's.
        fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = guarded(
            lambda h: (307, {"Location": "https://localhost:%d/storage/blob?sig=1" % storage.port}, b""))
        with _fake_client(fake, pki, credentials=CREDS) as c:
            buf = io.BytesIO()
            c.fetch_blob(parse_reference(REF % fake.host), GOOD_D, len(GOOD), buf)
        assert buf.getvalue() == GOOD
        assert storage.count("/storage/blob") == 1
        assert all("Authorization" not in hdrs for dummy, dummy, hdrs in storage.requests)
        assert any(hdrs.get("Authorization") == want for dummy, dummy, hdrs in fake.requests)
        # The other host asking for credentials gets none: a clear error.
        storage.routes["/storage/blob"] = lambda h: (401, {"WWW-Authenticate": 'Basic realm="s"'}, b"")
        with _fake_client(fake, pki, credentials=CREDS) as c:
            with pytest.raises(RegistryError, match="credentials are not sent to another host"):
                c.fetch_blob(parse_reference(REF % fake.host), GOOD_D, len(GOOD), io.BytesIO())
        assert all("Authorization" not in hdrs for dummy, dummy, hdrs in storage.requests)


def test_redirect_to_plain_http_refused(fake, pki):
    fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = lambda h: (302, {"Location": "http://127.0.0.1:9/x"}, b"")
    with _fake_client(fake, pki) as c:
        with pytest.raises(RegistryError, match="redirected to plain http 127.0.0.1:9: refused"):
            c.fetch_blob(parse_reference(REF % fake.host), GOOD_D, len(GOOD), io.BytesIO())


@pytest.mark.parametrize("challenge, fragment", [
    (None, "401 without a usable WWW-Authenticate challenge"),
    ('Negotiate abc', "401 without a usable WWW-Authenticate challenge"),
    ('Bearer service="x"', "401 without a usable WWW-Authenticate challenge"),
    ('Bearer realm="ftp://127.0.0.1/token"', "is not an https URL"),
])
def test_unusable_challenges(fake, pki, challenge, fragment):
    fake.routes["/v2/"] = lambda h: (401, {"WWW-Authenticate": challenge} if challenge else {}, b"")
    fake.routes["/v2/hostile/app/manifests/1"] = fake.routes["/v2/"]
    with _fake_client(fake, pki, credentials=CREDS) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest(parse_reference(REF % fake.host))
    assert fragment in str(e.value) and fake.host in str(e.value)


@pytest.mark.parametrize("answer, fragment", [
    (b"not json at all", "returned no usable token"),
    (b'{"token": 42}', "returned no usable token"),
    (b'{"token": "has spaces in it"}', "returned no usable token"),
    (b'["token"]', "returned no usable token"),
    (None, "answered HTTP 500"),
])
def test_garbage_tokens(fake, pki, answer, fragment):
    realm = "https://127.0.0.1:%d/token" % fake.port
    fake.routes["/v2/"] = lambda h: (401, {"WWW-Authenticate": 'Bearer realm="%s",service="s"' % realm}, b"")
    fake.routes["/v2/hostile/app/manifests/1"] = fake.routes["/v2/"]
    fake.routes["/token"] = (lambda h: (500, {}, b"")) if answer is None else _ok(answer, "application/json")
    with _fake_client(fake, pki, retries=0) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest(parse_reference(REF % fake.host))
    assert fragment in str(e.value) and realm in str(e.value)


def test_token_goes_only_where_it_belongs(fake, pki):
    realm = "https://127.0.0.1:%d/token" % fake.port
    seen = []

    def v2(h):
        seen.append(h.headers.get("Authorization"))
        if h.headers.get("Authorization") != "Bearer tok-1":
            return 401, {"WWW-Authenticate": 'Bearer realm="%s",service="svc",scope="x"' % realm}, b""
        return 200, {"Content-Type": cl.OCI_MANIFEST}, _manifest_doc()

    fake.routes["/v2/"] = v2
    fake.routes["/v2/hostile/app/manifests/1"] = v2
    fake.routes["/token"] = _ok(b'{"token": "tok-1", "expires_in": 300}', "application/json")
    with _fake_client(fake, pki, credentials=CREDS) as c:
        c.get_manifest(parse_reference(REF % fake.host))
        c.get_manifest(parse_reference(REF % fake.host))
    token_reqs = [(p, hd) for m, p, hd in fake.requests if p.startswith("/token")]
    assert len(token_reqs) == 1
    assert "service=svc" in token_reqs[0][0] and "scope=repository%3Ahostile%2Fapp%3Apull" in token_reqs[0][0]
    assert token_reqs[0][1].get("Authorization") == basic_header(CREDS)
    assert seen[-1] == "Bearer tok-1"


def _stall_body(first, pause):
    def body(wfile):
        wfile.write(first)
        wfile.flush()
        time.sleep(pause)
    return body


def test_stalled_body_times_out(fake, pki):
    fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = lambda h: (
        200, {"Content-Length": str(len(GOOD))}, _stall_body(GOOD[:100], 4))
    start = time.monotonic()
    with _fake_client(fake, pki, timeout=0.5, retries=1) as c:
        with pytest.raises(RegistryError) as e:
            c.fetch_blob(parse_reference(REF % fake.host), GOOD_D, len(GOOD), io.BytesIO())
    assert "stalled" in str(e.value) and "blob %s" % GOOD_D in str(e.value)
    assert time.monotonic() - start < 3.5

    def silent(h):
        time.sleep(1.5)   # no status line at all for longer than the timeout
        return 200, {}, _manifest_doc()

    fake.routes["/v2/hostile/app/manifests/1"] = silent
    start = time.monotonic()
    with _fake_client(fake, pki, timeout=0.5, retries=1) as c:
        with pytest.raises(RegistryError) as e:
            c.get_manifest(parse_reference(REF % fake.host))
    assert "timed out after 0.5s (gave up after 2 attempts)" in str(e.value)
    assert time.monotonic() - start < 2.5


def test_wrong_digest_and_sizes(fake, pki):
    ref = parse_reference(REF % fake.host)
    evil = GOOD.replace(b"blob", b"BLOB")
    fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = _ok(evil)
    with _fake_client(fake, pki) as c:
        with pytest.raises(RegistryError) as e:
            c.fetch_blob(ref, GOOD_D, len(GOOD), io.BytesIO())
        assert "the content's digest is %s" % cl.sha256_digest(evil) in str(e.value)
        fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = _ok(GOOD + b"more")
        with pytest.raises(RegistryError, match="announces %d bytes, the manifest says %d" % (len(GOOD) + 4, len(GOOD))):
            c.fetch_blob(ref, GOOD_D, len(GOOD), io.BytesIO())
        fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = lambda h: (200, {}, _stall_body(GOOD + b"more", 0))
        with pytest.raises(RegistryError, match="larger than the %d bytes its descriptor says" % len(GOOD)):
            c.fetch_blob(ref, GOOD_D, len(GOOD), io.BytesIO())


def test_truncated_blob(fake, pki):
    fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = lambda h: (
        200, {"Content-Length": str(len(GOOD))}, _stall_body(GOOD[:1000], 0))
    with _fake_client(fake, pki, retries=2) as c:
        with pytest.raises(RegistryError) as e:
            c.fetch_blob(parse_reference(REF % fake.host), GOOD_D, len(GOOD), io.BytesIO())
    assert "download broke after 1000 bytes" in str(e.value) and "gave up after 3 attempts" in str(e.value)


@pytest.mark.parametrize("honours_range", [True, False])
def test_resume_or_restart_after_a_cut(fake, pki, honours_range):
    gets = []

    def route(h):
        rng = h.headers.get("Range")
        gets.append(rng)
        if len(gets) == 1:
            return 200, {"Content-Length": str(len(GOOD))}, _stall_body(GOOD[:1000], 0)
        if rng and honours_range:
            start = int(rng[6:-1])
            return 206, {"Content-Range": "bytes %d-%d/%d" % (start, len(GOOD) - 1, len(GOOD))}, GOOD[start:]
        return 200, {}, GOOD

    fake.routes["/v2/hostile/app/blobs/" + GOOD_D] = route
    buf = io.BytesIO(b"x")
    buf.seek(1)   # written from the current position on
    with _fake_client(fake, pki) as c:
        assert c.fetch_blob(parse_reference(REF % fake.host), GOOD_D, len(GOOD), buf) == len(GOOD)
    assert buf.getvalue() == b"x" + GOOD
    assert gets == [None, "bytes=1000-"]


def test_manifest_limits_and_lies(fake, pki):
    ref = parse_reference(REF % fake.host)
    path = "/v2/hostile/app/manifests/1"
    doc = _manifest_doc()
    with _fake_client(fake, pki, max_manifest_size=1000) as c:
        fake.routes[path] = _ok(b"{" + b" " * 5000 + b"}", cl.OCI_MANIFEST)
        with pytest.raises(RegistryError, match="manifest 1 is 5002 bytes, more than the limit of 1000"):
            c.get_manifest(ref)
        fake.routes[path] = lambda h: (200, {"Content-Type": cl.OCI_MANIFEST}, _stall_body(b"{" + b" " * 5000, 0))
        with pytest.raises(RegistryError, match="manifest 1 is more than the limit of 1000 bytes"):
            c.get_manifest(ref)
    with _fake_client(fake, pki) as c:
        fake.routes[path] = _ok(b'{"schemaVersion": 1, "name": "x", "fsLayers": []}', cl.DOCKER_SCHEMA1_SIGNED)
        with pytest.raises(RegistryError, match="Docker schema 1 manifest, which is not supported"):
            c.get_manifest(ref)
        fake.routes[path] = _ok(doc, cl.OCI_MANIFEST, **{"Docker-Content-Digest": "sha256:" + "1" * 64})
        with pytest.raises(RegistryError, match="Docker-Content-Digest says sha256:1+ but the content's digest is"):
            c.get_manifest(ref)
        fake.routes[path] = _ok(doc, cl.DOCKER_MANIFEST)
        with pytest.raises(RegistryError, match="Content-Type .*docker.* does not match its mediaType .*oci"):
            c.get_manifest(ref)
        fake.routes[path] = _ok(b"<html>", "text/html")
        with pytest.raises(RegistryError, match="is not valid JSON"):
            c.get_manifest(ref)
        fake.routes[path] = _ok(b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.artifact.manifest.v1+json"}',
                                "application/vnd.oci.artifact.manifest.v1+json")
        with pytest.raises(RegistryError, match="not an image manifest or index"):
            c.get_manifest(ref)
        # By digest: the bytes must hash to it.
        pinned = "sha256:" + "2" * 64
        fake.routes["/v2/hostile/app/manifests/" + pinned] = _ok(doc, cl.OCI_MANIFEST)
        with pytest.raises(RegistryError, match="sent content whose digest is %s" % cl.sha256_digest(doc)):
            c.get_manifest(ref.replace(digest=pinned))
        # A document without mediaType (allowed by OCI): its shape tells.
        plain = json.loads(doc)
        del plain["mediaType"]
        fake.routes[path] = _ok(json.dumps(plain).encode(), "application/json")
        assert c.get_manifest(ref).media_type == cl.OCI_MANIFEST


def test_client_certificate_from_certs_d(pki, tmp_path):
    with sr.FakeRegistry(pki, client_ca=pki["ca"]) as f:
        f.routes["/v2/"] = _ok(b"{}")
        f.routes["/v2/hostile/app/manifests/1"] = _ok(_manifest_doc(), cl.OCI_MANIFEST)
        ref = parse_reference(REF % f.host)
        certs = tmp_path / "certs.d" / f.host
        certs.mkdir(parents=True)
        (certs / "ca.crt").write_bytes(open(pki["ca"], "rb").read())
        with cl.RegistryClient(f.host, cert_dirs=[str(tmp_path / "certs.d")], retries=0) as c:
            with pytest.raises(RegistryError, match="TLS error|cannot connect"):
                c.get_manifest(ref)
        (certs / "client.cert").write_bytes(open(pki["client"], "rb").read())
        with pytest.raises(Exception, match="client certificate client.cert has no matching client.key"):
            cl.RegistryClient(f.host, cert_dirs=[str(tmp_path / "certs.d")])
        (certs / "client.key").write_bytes(open(pki["client_key"], "rb").read())
        with cl.RegistryClient(f.host, cert_dirs=[str(tmp_path / "certs.d")]) as c:
            assert c.get_manifest(ref).data == _manifest_doc()


def test_plain_http_fake_needs_insecure(pki):
    with sr.FakeRegistry(None) as f:
        f.routes["/v2/"] = _ok(b"{}")
        f.routes["/v2/hostile/app/manifests/1"] = _ok(_manifest_doc(), cl.OCI_MANIFEST)
        with cl.RegistryClient(f.host, cert_dirs=[], retries=0) as c:
            with pytest.raises(RegistryError, match="must be marked insecure"):
                c.get_manifest(parse_reference(REF % f.host))
        with cl.RegistryClient(f.host, insecure=True, cert_dirs=[], retries=0) as c:
            assert c.get_manifest(parse_reference(REF % f.host)).data == _manifest_doc()


def test_skopeo_is_not_leaking_credentials_on_argv(registries):
    """The fixture's own rule: skopeo gets credentials in a file; nothing in our ps line."""
    out = subprocess.run(["ps", "-eo", "args"], stdout=subprocess.PIPE, check=True).stdout.decode()
    assert sr.PASSWORD not in out


def test_ping_checks_credentials(registries):
    """What registry_login verifies: GET /v2/ through the auth flow."""
    for reg in (registries.basic, registries.token):
        with _client(reg) as c:
            c.ping()
            c.ping("test/layers", "pull,push")
        with cl.RegistryClient(reg.host, ca_path=reg.ca, cert_dirs=[], credentials=Credentials(sr.USERNAME, "bad")) as c:
            with pytest.raises(RegistryError) as e:
                c.ping()
        assert ("refused the credentials" if reg.auth == "token" else "were rejected") in str(e.value)
        assert "bad" not in str(e.value).replace("bad credentials", "")


def test_revoked_token_is_fetched_again(fake, pki):
    realm = "https://127.0.0.1:%d/token" % fake.port
    issued = []

    def token(h):
        issued.append("tok-%d" % len(issued))
        return 200, {"Content-Type": "application/json"}, json.dumps({"token": issued[-1], "expires_in": 3600}).encode()

    def manifest(h):
        if not issued or h.headers.get("Authorization") != "Bearer " + issued[-1]:
            return 401, {"WWW-Authenticate": 'Bearer realm="%s",service="svc"' % realm}, b""
        return 200, {"Content-Type": cl.OCI_MANIFEST}, _manifest_doc()

    fake.routes["/token"] = token
    fake.routes["/v2/hostile/app/manifests/1"] = manifest
    ref = parse_reference(REF % fake.host)
    with _fake_client(fake, pki) as c:
        c.get_manifest(ref)
        c.get_manifest(ref)
        assert issued == ["tok-0"]
        issued.append("tok-revoked-by-the-server")   # the cached token no longer works
        c.get_manifest(ref)
    assert len(issued) == 3


def test_parallel_blobs_share_one_client(registries):
    """Parallel downloads (what a pull does) through one client: one token, every blob verified."""
    from concurrent.futures import ThreadPoolExecutor

    reg = registries.token
    ref = parse_reference(reg.ref(sr.IMAGES["layers"]))
    before = registries.issuer.issued
    with _client(reg) as c:
        doc = c.get_manifest(ref).json()

        def one(d):
            buf = io.BytesIO()
            c.fetch_blob(ref, d["digest"], d["size"], buf)
            return len(buf.getvalue())

        with ThreadPoolExecutor(4) as pool:
            sizes = list(pool.map(one, doc["layers"]))
        assert sizes == [d["size"] for d in doc["layers"]]
        assert c.bytes_received == sum(sizes)
    assert registries.issuer.issued == before + 1


def test_head_manifest_without_digest_header_reads_it(fake, pki):
    doc = _manifest_doc()

    def route(h):
        return 200, {"Content-Type": cl.OCI_MANIFEST}, doc   # no Docker-Content-Digest

    fake.routes["/v2/hostile/app/manifests/1"] = route
    with _fake_client(fake, pki) as c:
        assert c.head_manifest(parse_reference(REF % fake.host)) == cl.sha256_digest(doc)
    assert fake.count("/v2/hostile/app/manifests/1", "HEAD") == 1
    assert fake.count("/v2/hostile/app/manifests/1", "GET") == 1
    fake.routes["/v2/hostile/app/manifests/1"] = lambda h: (200, {"Content-Type": cl.OCI_MANIFEST,
                                                                  "Docker-Content-Digest": cl.sha256_digest(doc)}, doc)
    with _fake_client(fake, pki) as c:
        assert c.head_manifest(parse_reference(REF % fake.host)) == cl.sha256_digest(doc)
    assert fake.count("/v2/hostile/app/manifests/1", "GET") == 1   # HEAD only this time
