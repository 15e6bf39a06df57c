"""Fetching remote images for real: an HTTPS server on 127.0.0.1, real gpg signatures.

Each test starts its own server (stopped at the end) and its own store; the keys and the
PKI are made once per module. Request counts come from the server's own log.
"""
import os
import sys

import pytest

from tests.support import images
from tests.support.gpgtool import Keys
from tests.support.https_server import Resource, Server, _Handler, make_pki

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import transport, trust
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ImageError, NotFoundError, RocketError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.fetch import fetch, read_manifest
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
from ansible_collections.appc.rocket.plugins.module_utils.stage0.transport import FetchError


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def keys():
    k = Keys()
    yield k
    k.close()


@pytest.fixture(autouse=True)
def fast_backoff(monkeypatch):
    monkeypatch.setattr(transport, "BACKOFF", 0.01)


@pytest.fixture
def server(pki):
    with Server(pki) as s:
        yield s


@pytest.fixture
def store(data_dir):
    s = Store(data_dir)
    yield s
    s.close()


def publish(server, keys, tmp_path, path="/images/app.aci", name="example.com/app", version="1.0.0",
            signer="trusted", sign=True, big=0, **res):
    """Build an image, sign it, serve both; returns (url, image_id, aci path)."""
    files = {"etc/v": version.encode()}
    if big:
        files["big"] = os.urandom(big)   # incompressible: the archive is at least this large
    aci, image_id = images.build(tmp_path, name=name, version=version, files=files)
    url = server.add(path, Resource(file=aci, **res))
    if sign:
        asc = keys.sign([aci], signer)[0]
        server.add(path + ".asc", Resource(file=asc))
    return url, image_id, aci


def trust_key(store, keys, prefix="example.com", who="trusted"):
    return trust.add_key(store.dd, keys.public[who], prefix=prefix)


def assert_nothing_kept(store):
    assert store.list() == []
    assert os.listdir(store.dd.tmp) == [], "work files left in cas/tmp"


def test_fetch_by_url_with_a_valid_signature(server, keys, store, tmp_path, pki):
    url, image_id, dummy_aci = publish(server, keys, tmp_path, etag='"v1"')
    trust_key(store, keys)
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"])
    assert changed is True and rec["id"] == image_id and rec["name"] == "example.com/app"
    assert info["verified"] is True and info["signer"] == keys.fpr["trusted"]
    assert info["action"] == "downloaded" and info["requests"] == 2
    row = store.index.get_image(image_id)
    assert row["remote_url"] == url and row["etag"] == '"v1"' and row["cache_time"]
    assert os.listdir(store.dd.tmp) == []
    # Importing by hand gives the same ID: every byte was hashed once, in order.
    assert store.render(image_id)["rootfs"]
    assert open(os.path.join(store.render(image_id)["rootfs"], "etc/v"), "rb").read() == b"1.0.0"

    # pull=new: the store has it, so the network is not touched.
    before = server.count()
    rec2, changed, info = fetch(store, src=url, ca_path=pki["ca"], pull="new")
    assert changed is False and rec2["id"] == image_id and info["action"] == "store"
    assert server.count() == before and info["requests"] == 0


def test_unsigned_untrusted_and_bad_signatures_are_refused(server, keys, store, tmp_path, pki):
    trust_key(store, keys, prefix="example.com/app")
    trust_key(store, keys, prefix="example.com/elsewhere", who="other")

    # Unsigned: refused after fetching only the (missing) signature.
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path, path="/unsigned.aci", sign=False)
    with pytest.raises(trust.SignatureError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    assert "unsigned" in str(e.value) and url + ".asc" in str(e.value)
    assert server.count("/unsigned.aci") == 0
    assert_nothing_kept(store)

    # Signed by a key that is trusted, but not for this name.
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path, path="/other.aci", signer="other")
    with pytest.raises(trust.SignatureError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    msg = str(e.value)
    assert keys.fpr["other"] in msg and "not trusted for example.com/app" in msg
    assert "trusted only for prefix example.com/elsewhere" in msg and "example.com/app" in msg
    assert e.value.fingerprint == keys.fpr["other"]
    assert_nothing_kept(store)

    # A signature that does not match the image.
    url, dummy_image_id, aci = publish(server, keys, tmp_path, path="/bad.aci")
    decoy = str(tmp_path / "decoy")
    with open(decoy, "wb") as f:
        f.write(b"something else")
    server.add("/bad.aci.asc", Resource(file=keys.sign([decoy])[0]))
    with pytest.raises(trust.SignatureError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    assert "BAD signature" in str(e.value) and keys.fpr["trusted"] in str(e.value)
    assert_nothing_kept(store)

    # Not a signature at all.
    server.add("/bad.aci.asc", Resource(body=b"hello"))
    with pytest.raises(trust.SignatureError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    assert "not an ASCII-armoured OpenPGP signature" in str(e.value)
    assert_nothing_kept(store)

    # The caller may waive the check, explicitly.
    url, image_id, dummy_aci = publish(server, keys, tmp_path, path="/unsigned2.aci", sign=False)
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], insecure=["image"])
    assert changed and rec["id"] == image_id and info["verified"] is False and info["signer"] is None
    assert info["signature"] == "skipped: insecure includes image"  # the result says it was skipped


def test_no_trusted_key_at_all(server, keys, store, tmp_path, pki):
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path)
    with pytest.raises(trust.SignatureError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    assert "no key is trusted for example.com/app" in str(e.value) and keys.fpr["trusted"] in str(e.value)
    assert_nothing_kept(store)


def test_pull_never(server, keys, store, tmp_path, pki):
    url, image_id, dummy_aci = publish(server, keys, tmp_path)
    with pytest.raises(NotFoundError) as e:
        fetch(store, src=url, pull="never", ca_path=pki["ca"])
    assert url in str(e.value) and "pull is never" in str(e.value)
    assert server.count() == 0
    trust_key(store, keys)
    fetch(store, src=url, ca_path=pki["ca"])
    n = server.count()
    rec, changed, dummy_info = fetch(store, src=url, pull="never", ca_path=pki["ca"])
    assert rec["id"] == image_id and not changed and server.count() == n


def test_update_revalidates_with_etag(server, keys, store, tmp_path, pki):
    url, image_id, dummy_aci = publish(server, keys, tmp_path, etag='"v1"')
    trust_key(store, keys)
    fetch(store, src=url, ca_path=pki["ca"])

    # Same ETag: one conditional GET, a 304, nothing downloaded.
    n_img, n_sig = server.count("/images/app.aci"), server.count("/images/app.aci.asc")
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], pull="update")
    assert changed is False and rec["id"] == image_id and info["action"] == "not-modified"
    assert server.count("/images/app.aci") == n_img + 1 and server.count("/images/app.aci.asc") == n_sig
    assert server.headers_of("/images/app.aci")[-1]["If-None-Match"] == '"v1"'

    # The image changed (new ETag): the new one is imported, the signature checked again.
    url2, image_id2, dummy_aci = publish(server, keys, tmp_path, version="1.0.1", etag='"v2"')
    assert url2 == url and image_id2 != image_id
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], pull="update")
    assert changed is True and rec["id"] == image_id2 and info["verified"]
    assert store.index.get_image(image_id2)["etag"] == '"v2"'
    assert {r["id"] for r in store.list()} == {image_id, image_id2}

    # pull=new now finds the newest import for that URL.
    rec, changed, dummy_info = fetch(store, src=url, ca_path=pki["ca"])
    assert rec["id"] == image_id2 and not changed


def test_new_etag_same_bytes_is_not_a_change(server, keys, store, tmp_path, pki):
    url, image_id, aci = publish(server, keys, tmp_path, etag='"a"')
    trust_key(store, keys)
    fetch(store, src=url, ca_path=pki["ca"])
    server.add("/images/app.aci", Resource(file=aci, etag='"b"'))
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], pull="update")
    assert changed is False and rec["id"] == image_id and info["action"] == "downloaded"
    assert store.index.get_image(image_id)["etag"] == '"b"'


def test_fresh_cache_control_sends_nothing(server, keys, store, tmp_path, pki):
    url, image_id, dummy_aci = publish(server, keys, tmp_path, etag='"v1"', max_age=3600)
    trust_key(store, keys)
    fetch(store, src=url, ca_path=pki["ca"])
    assert store.index.get_image(image_id)["max_age"] == 3600
    n = server.count()
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], pull="update")
    assert changed is False and info["action"] == "fresh" and server.count() == n
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], pull="update", check=True)
    assert changed is False and server.count() == n


def test_update_without_etag_uses_if_modified_since(server, keys, store, tmp_path, pki):
    url, image_id, dummy_aci = publish(server, keys, tmp_path)
    trust_key(store, keys)
    fetch(store, src=url, ca_path=pki["ca"])
    fetch(store, src=url, ca_path=pki["ca"], pull="update")
    assert "If-Modified-Since" in server.headers_of("/images/app.aci")[-1]


def test_redirects_are_followed_and_loops_refused(server, keys, store, tmp_path, pki):
    url, image_id, aci = publish(server, keys, tmp_path, path="/real.aci")
    trust_key(store, keys)
    server.add("/moved.aci", Resource(redirect="/real.aci"))
    server.add("/moved.aci.asc", Resource(redirect=server.url + "/real.aci.asc"))
    rec, changed, info = fetch(store, src=server.url + "/moved.aci", ca_path=pki["ca"])
    assert changed and rec["id"] == image_id

    server.add("/loop-a.aci", Resource(redirect="/loop-b.aci"))
    server.add("/loop-b.aci", Resource(redirect="/loop-a.aci"))
    with pytest.raises(FetchError) as e:
        fetch(store, src=server.url + "/loop-a.aci", ca_path=pki["ca"], insecure=["image"])
    assert "redirect loop" in str(e.value) and "/loop-b.aci" in str(e.value)

    for i in range(15):
        server.add("/hop%d.aci" % i, Resource(redirect="/hop%d.aci" % (i + 1)))
    with pytest.raises(FetchError) as e:
        fetch(store, src=server.url + "/hop0.aci", ca_path=pki["ca"], insecure=["image"])
    assert "more than 10 redirects" in str(e.value)

    # https -> http is a downgrade: refused unless plain http is allowed.
    server.add("/down.aci", Resource(redirect="http://127.0.0.1:1/x.aci"))
    with pytest.raises(FetchError) as e:
        fetch(store, src=server.url + "/down.aci", ca_path=pki["ca"], insecure=["image"])
    assert "plain http" in str(e.value)
    assert {r["id"] for r in store.list()} == {image_id}


def test_size_limit(server, keys, store, tmp_path, pki):
    url, dummy_image_id, aci = publish(server, keys, tmp_path)
    trust_key(store, keys)
    size = os.path.getsize(aci)
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=pki["ca"], max_size=size - 1)
    assert "max_size" in str(e.value) and str(size) in str(e.value)
    assert_nothing_kept(store)
    # Without Content-Length the limit is enforced while reading.
    server.add("/images/app.aci", Resource(file=aci, length=False))
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=pki["ca"], max_size=size - 1)
    assert "more than the limit of %d bytes (max_size)" % (size - 1) in str(e.value)
    assert_nothing_kept(store)
    # The same limit bounds the uncompressed archive (what cas_image's max_size means).
    with pytest.raises(ImageError) as e:
        fetch(store, src=url, ca_path=pki["ca"], max_size=size)
    assert "uncompressed size exceeds %d bytes (max_size)" % size in str(e.value)
    assert_nothing_kept(store)
    rec, changed, dummy_info = fetch(store, src=url, ca_path=pki["ca"], max_size=1 << 20)
    assert changed


def test_resume_with_range_after_a_dropped_connection(server, keys, store, tmp_path, pki):
    url, image_id, aci = publish(server, keys, tmp_path, etag='"r1"', drop_after=100000, big=300000)
    trust_key(store, keys)
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"])
    assert changed and rec["id"] == image_id and info["resumed"] == 1
    assert info["bytes"] == os.path.getsize(aci)
    gets = server.headers_of("/images/app.aci")
    assert len(gets) == 2 and "Range" not in gets[0]
    assert gets[1]["Range"] == "bytes=100000-" and gets[1]["If-Range"] == '"r1"'


def test_restart_when_the_server_cannot_resume(server, keys, store, tmp_path, pki):
    url, image_id, aci = publish(server, keys, tmp_path, ranges=False, drop_after=7000, drops=2, big=20000)
    trust_key(store, keys)
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"])
    assert changed and rec["id"] == image_id and info["resumed"] == 0
    gets = server.headers_of("/images/app.aci")
    assert len(gets) == 3 and not any("Range" in h for h in gets)
    # More breaks than retries: a clear error, nothing kept.
    store.remove(image_id)
    server.add("/images/app.aci", Resource(file=aci, ranges=False, drop_after=7000, drops=10))
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=pki["ca"], retries=1)
    assert "broke after" in str(e.value) and "2 attempts" in str(e.value)
    assert_nothing_kept(store)


def test_transient_errors_are_retried(server, keys, store, tmp_path, pki):
    url, image_id, dummy_aci = publish(server, keys, tmp_path, fail_times=2)
    trust_key(store, keys)
    rec, changed, dummy_info = fetch(store, src=url, ca_path=pki["ca"], retries=2)
    assert changed and rec["id"] == image_id
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path, path="/flaky.aci", fail_times=5)
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=pki["ca"], retries=1, insecure=["image"])
    assert "HTTP 503" in str(e.value)


def test_tls_is_verified(server, keys, store, tmp_path, pki):
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path)
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=None, insecure=["image"])
    assert "TLS error" in str(e.value) and "ca_path" in str(e.value)
    rec, changed, dummy_info = fetch(store, src=url, insecure=["image", "tls"])
    assert changed


def test_client_certificates(keys, store, tmp_path, pki):
    with Server(pki, client_ca=pki["ca"]) as server:
        url, image_id, dummy_aci = publish(server, keys, tmp_path, sign=False)
        with pytest.raises(FetchError) as e:
            fetch(store, src=url, ca_path=pki["ca"], insecure=["image"], retries=0)
        assert url in str(e.value)
        rec, changed, dummy_info = fetch(store, src=url, ca_path=pki["ca"], insecure=["image"],
                                         client_cert=pki["client"], client_key=pki["client_key"])
        assert changed and rec["id"] == image_id


def test_credentials_go_only_to_their_host(server, keys, store, tmp_path, pki):
    aci, image_id = images.build(tmp_path, name="example.com/private")
    server.add("/private.aci", Resource(file=aci, auth=("alice", "s3cret")))
    url = server.url + "/private.aci"
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=pki["ca"], insecure=["image"])
    assert "HTTP 401" in str(e.value)
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], insecure=["image"], username="alice",
                               password="s3cret")
    assert changed and rec["id"] == image_id
    assert "s3cret" not in repr(info) and "s3cret" not in repr(rec)

    # A redirect to another host name does not carry them along.
    server.add("/hop.aci", Resource(redirect=server.url_localhost + "/private2.aci"))
    server.add("/private2.aci", Resource(file=aci, auth=("alice", "s3cret")))
    with pytest.raises(FetchError) as e:
        fetch(store, src=server.url + "/hop.aci", ca_path=pki["ca"], insecure=["image"], username="alice",
              password="s3cret")
    assert "HTTP 401" in str(e.value) and "s3cret" not in str(e.value)
    assert "Authorization" not in server.headers_of("/private2.aci")[-1]

    # rkt's auth.d format names its domains.
    creds = tmp_path / "auth.json"
    creds.write_text('{"rktKind": "auth", "rktVersion": "v1", "domains": ["localhost"], "type": "basic",'
                     ' "credentials": {"user": "alice", "password": "s3cret"}}')
    store.remove(image_id)
    rec, changed, dummy_info = fetch(store, src=server.url + "/hop.aci", ca_path=pki["ca"], insecure=["image"],
                                     credentials_file=str(creds))
    assert changed and rec["id"] == image_id

    with pytest.raises(FetchError) as e:
        fetch(store, src="https://alice:s3cret@127.0.0.1:1/x.aci", insecure=["image"])
    assert "s3cret" not in str(e.value) and "carries credentials" in str(e.value)


def test_plain_http_only_when_allowed(keys, store, tmp_path):
    with Server(None) as server:
        aci, image_id = images.build(tmp_path)
        url = server.add("/app.aci", Resource(file=aci))
        with pytest.raises(FetchError) as e:
            fetch(store, src=url, insecure=["image"])
        assert "plain http" in str(e.value) and server.count() == 0
        rec, changed, dummy_info = fetch(store, src=url, insecure=["image", "http"])
        assert changed and rec["id"] == image_id


def discovery_site(server, keys, tmp_path, name="example.com/org/app", version="1.0.0", labels=None, **kw):
    """A discovery page at example.com/org (the app's own path answers 404) and a signed image."""
    page = ("<html><head>"
            "<meta name='ac-discovery' content='example.com https://example.com/images/{name}-{version}-{os}-{arch}.{ext}'>"
            "<meta name='ac-discovery-pubkeys' content='example.com https://example.com/pubkeys.asc'>"
            "</head></html>")
    server.add("/org?ac-discovery=1", Resource(body=page.encode(), content_type="text/html"))
    extra = {"labels": labels} if labels is not None else {}
    aci, image_id = images.build(tmp_path, name=name, version=version, **extra, **kw)
    base = "/images/example.com/org/app-%s-linux-amd64.aci" % version
    server.add(base, Resource(file=aci, etag='"d1"'))
    server.add(base + ".asc", Resource(file=keys.sign([aci])[0]))
    return image_id, base


def test_discovery_with_parent_path_and_labels(server, keys, store, tmp_path, pki):
    image_id, base = discovery_site(server, keys, tmp_path)
    trust.add_key(store.dd, keys.public["trusted"], prefix="example.com/org")
    overrides = {"example.com": server.url}
    rec, changed, info = fetch(store, name="example.com/org/app:1.0.0", ca_path=pki["ca"],
                               discovery_overrides=overrides)
    assert changed and rec["id"] == image_id and info["verified"]
    d = info["discovery"]
    assert d["page"] == "https://example.com/org?ac-discovery=1"
    assert [t[0] for t in d["tried"]] == ["https://example.com/org/app?ac-discovery=1"]
    assert d["pubkeys"] == ["https://example.com/pubkeys.asc"]
    assert info["url"] == "https://example.com" + base
    assert server.count("/org/app?ac-discovery=1") == 1 and server.count(base) == 1
    # Host os/arch were the defaults: the template got linux/amd64.
    if os.uname().machine == "x86_64":
        n = server.count()
        rec2, changed, info = fetch(store, name="example.com/org/app", labels={"version": "1.0.0"},
                                    ca_path=pki["ca"], discovery_overrides=overrides)
        assert not changed and rec2["id"] == image_id and server.count() == n

    # pull=update re-runs discovery and revalidates the discovered URL.
    rec, changed, info = fetch(store, name="example.com/org/app:1.0.0", ca_path=pki["ca"],
                               discovery_overrides=overrides, pull="update")
    assert not changed and info["action"] == "not-modified"
    assert server.headers_of(base)[-1]["If-None-Match"] == '"d1"'


def test_discovery_failure_names_the_attempts(server, store, pki):
    with pytest.raises(FetchError) as e:
        fetch(store, name="example.com/org/none:1.0.0", ca_path=pki["ca"], discovery_overrides={"example.com": server.url})
    msg = str(e.value)
    assert "example.com/org/none" in msg and "HTTP 404" in msg
    assert server.count() == 3


def test_discovered_manifest_must_match(server, keys, store, tmp_path, pki):
    trust.add_key(store.dd, keys.public["trusted"], root=True)
    overrides = {"example.com": server.url}
    # The server hands out an image with another name.
    discovery_site(server, keys, tmp_path, name="example.com/org/impostor")
    with pytest.raises(ImageError) as e:
        fetch(store, name="example.com/org/app:1.0.0", ca_path=pki["ca"], discovery_overrides=overrides)
    assert "named example.com/org/impostor, not example.com/org/app" in str(e.value)
    assert_nothing_kept(store)
    # ... or one whose labels differ from what was asked.
    labels = [{"name": "version", "value": "9.9.9"}, {"name": "os", "value": "linux"}, {"name": "arch", "value": "amd64"}]
    discovery_site(server, keys, tmp_path, labels=labels)
    with pytest.raises(ImageError) as e:
        fetch(store, name="example.com/org/app:1.0.0", ca_path=pki["ca"], discovery_overrides=overrides)
    assert "label version is 9.9.9, not 1.0.0" in str(e.value)
    assert_nothing_kept(store)


def test_check_mode_writes_nothing(server, keys, store, tmp_path, pki):
    url, image_id, dummy_aci = publish(server, keys, tmp_path, etag='"c1"')
    trust_key(store, keys)
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], check=True)
    assert changed is True and rec["id"] is None and rec["remote_url"] == url
    assert server.count("/images/app.aci", "GET") == 0 and server.count("/images/app.aci", "HEAD") == 1
    assert store.list() == []
    # With no store at all (check mode before the data directory exists).
    rec, changed, dummy_info = fetch(None, src=url, ca_path=pki["ca"], check=True)
    assert changed is True

    fetch(store, src=url, ca_path=pki["ca"])
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], check=True, pull="update")
    assert changed is False and rec["id"] == image_id and info["action"] == "not-modified"
    publish(server, keys, tmp_path, version="2.0.0", etag='"c2"')
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], check=True, pull="update")
    assert changed is True
    assert server.count("/images/app.aci", "GET") == 1
    assert [r["id"] for r in store.list()] == [image_id]


def test_argument_errors(store):
    with pytest.raises(RocketError):
        fetch(store)
    with pytest.raises(RocketError):
        fetch(store, src="https://a/x.aci", name="a/x")
    with pytest.raises(RocketError) as e:
        fetch(store, src="https://a/x.aci", pull="sometimes")   # missing/always are aliases now
    assert "never, new, update" in str(e.value)
    with pytest.raises(RocketError) as e:
        fetch(store, src="https://a/x.aci", insecure=["everything"])
    assert "everything" in str(e.value)
    with pytest.raises(RocketError) as e:
        fetch(store, src="/tmp/local.aci")
    assert "import_file" in str(e.value)
    with pytest.raises(RocketError) as e:
        fetch(store, name="example.com/app:1.0.0", labels={"version": "2.0.0"})
    assert "version" in str(e.value)


def test_requests_missing_is_a_clear_error(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "requests", None)
    with pytest.raises(RocketError) as e:
        fetch(store, src="https://127.0.0.1:1/x.aci", insecure=["image"])
    assert "python3-requests" in str(e.value)


def test_read_manifest_stops_early(tmp_path):
    aci, dummy_image_id = images.build(tmp_path, name="example.com/peek", files={"big": os.urandom(1 << 20)})
    assert read_manifest(aci, 1 << 30)["name"] == "example.com/peek"
    # The manifest comes first: the rest of the archive is never read (a cut copy still works).
    cut = str(tmp_path / "cut.aci")
    with open(aci, "rb") as f, open(cut, "wb") as out:
        out.write(f.read(64 << 10))
    assert read_manifest(cut, 1 << 30)["name"] == "example.com/peek"
    with open(str(tmp_path / "junk"), "wb") as f:
        f.write(b"x" * 1000)
    with pytest.raises(ImageError):
        read_manifest(str(tmp_path / "junk"), 1 << 30)


def test_cas_trust_and_cas_image_fetch_through_ansible(server, keys, tmp_path, pki):
    """The module face: trust a key for a prefix, fetch by URL; check mode, apply, again."""
    from tests.support.ansible_run import module

    d = str(tmp_path / "rocket")
    url, image_id, dummy_aci = publish(server, keys, tmp_path, etag='"v1"')
    key = {"key": keys.public["trusted"], "fingerprint": keys.fpr["trusted"], "prefix": "example.com", "data_dir": d}
    assert module("cas_trust", key, check=True)["changed"] is True
    assert module("cas_trust", key)["changed"] is True
    assert module("cas_trust", key)["changed"] is False
    args = {"src": url, "ca_path": pki["ca"], "data_dir": d}
    r = module("cas_image", args, check=True)
    assert r["changed"] is True and r["fetch"]["action"] == "would-download", r
    r = module("cas_image", args)
    assert r["changed"] is True and r["image"]["id"] == image_id, r
    assert r["fetch"]["verified"] is True and r["fetch"]["signer"] == keys.fpr["trusted"]
    assert r["fetch"]["signature"] == "verified"
    r = module("cas_image", args)
    assert r["changed"] is False and r["fetch"]["action"] == "store"
    r = module("cas_image", dict(args, pull="update"))
    assert r["changed"] is False and r["fetch"]["action"] == "not-modified"
    # Without the trusted key the same image is refused, with a message naming it.
    other = str(tmp_path / "other")
    r = module("cas_image", dict(args, data_dir=other))
    assert r.get("failed") and "example.com/app" in r["msg"], r


def test_dependencies_are_fetched_by_name_once_and_rendered(server, keys, store, tmp_path, pki):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.fetch import fetch_with_dependencies

    page = ("<html><head><meta name='ac-discovery' content='example.com "
            "https://example.com/images/{name}-{version}-{os}-{arch}.{ext}'></head></html>")
    server.add("/org?ac-discovery=1", Resource(body=page.encode(), content_type="text/html"))

    def serve(name, version, **kw):
        aci, image_id = images.build(tmp_path, name=name, version=version, **kw)
        path = "/images/%s-%s-linux-amd64.aci" % (name, version)
        server.add(path, Resource(file=aci))
        server.add(path + ".asc", Resource(file=keys.sign([aci])[0]))
        return image_id, path

    base_id, base_path = serve("example.com/org/base", "latest", app=False, files={"etc/base": b"base"})
    lib_id, dummy_path = serve("example.com/org/lib", "latest", app=False, files={"etc/lib": b"lib"},
                               deps=[{"imageName": "example.com/org/base"}])
    app_id, dummy_path = serve("example.com/org/app", "1.0.0", files={"etc/app": b"app"},
                               deps=[{"imageName": "example.com/org/lib"}, {"imageName": "example.com/org/base"}])
    trust.add_key(store.dd, keys.public["trusted"], prefix="example.com/org")
    overrides = {"example.com": server.url}
    rec, changed, info = fetch_with_dependencies(store, name="example.com/org/app:1.0.0", ca_path=pki["ca"],
                                                 discovery_overrides=overrides)
    assert changed and rec["id"] == app_id
    assert [d["id"] for d in info["dependencies"]] == [lib_id, base_id]
    assert server.count(base_path) == 1  # base is wanted twice, fetched once
    rootfs = store.render(app_id)["rootfs"]
    for f, data in (("etc/app", b"app"), ("etc/lib", b"lib"), ("etc/base", b"base")):
        assert open(os.path.join(rootfs, f), "rb").read() == data
    # Again: everything is in the store, nothing is fetched.
    before = server.count()
    rec, changed, info = fetch_with_dependencies(store, name="example.com/org/app:1.0.0", ca_path=pki["ca"],
                                                 discovery_overrides=overrides)
    assert changed is False and server.count() == before


def test_dependency_cycle_is_refused(server, keys, store, tmp_path, pki):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.fetch import fetch_with_dependencies

    page = ("<html><head><meta name='ac-discovery' content='example.com "
            "https://example.com/images/{name}-{version}-{os}-{arch}.{ext}'></head></html>")
    server.add("/org?ac-discovery=1", Resource(body=page.encode(), content_type="text/html"))
    for name, dep in (("example.com/org/a", "example.com/org/b"), ("example.com/org/b", "example.com/org/a")):
        aci, dummy_image_id = images.build(tmp_path, name=name, version="latest", deps=[{"imageName": dep}])
        path = "/images/%s-latest-linux-amd64.aci" % name
        server.add(path, Resource(file=aci))
        server.add(path + ".asc", Resource(file=keys.sign([aci])[0]))
    trust.add_key(store.dd, keys.public["trusted"], prefix="example.com/org")
    with pytest.raises(ImageError, match="dependency cycle: example.com/org/a -> example.com/org/b -> example.com/org/a"):
        fetch_with_dependencies(store, name="example.com/org/a", ca_path=pki["ca"],
                                discovery_overrides={"example.com": server.url})


# --------------------------------------------------------------------------- failures leave nothing behind

def test_tampered_image_is_refused(server, keys, store, tmp_path, pki):
    url, dummy_image_id, aci = publish(server, keys, tmp_path)
    trust_key(store, keys)
    # The bytes change after signing (a valid archive still: another version of the same name).
    other = tmp_path / "other"
    other.mkdir()
    tampered, dummy_id = images.build(other, name="example.com/app", version="1.0.0", files={"etc/v": b"evil!"})
    server.add("/images/app.aci", Resource(file=tampered))
    with pytest.raises(trust.SignatureError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    assert "BAD signature" in str(e.value) and "nothing was kept" in str(e.value)
    assert_nothing_kept(store)
    # A flipped byte in the signed file itself.
    data = bytearray(open(aci, "rb").read())
    data[len(data) // 2] ^= 0x01
    server.add("/images/app.aci", Resource(body=bytes(data)))
    with pytest.raises(ImageError) as e:    # corrupt before the signature could even be checked
        fetch(store, src=url, ca_path=pki["ca"])
    assert url in str(e.value) and "not a usable ACI" in str(e.value) and "nothing was kept" in str(e.value)
    assert_nothing_kept(store)


def test_prefix_key_does_not_trust_a_longer_name(server, keys, store, tmp_path, pki):
    trust_key(store, keys, prefix="example.com/foo")
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path, path="/foobar.aci", name="example.com/foobar")
    with pytest.raises(trust.SignatureError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    msg = str(e.value)
    assert "example.com/foobar" in msg and keys.fpr["trusted"] in msg and "example.com/foo" in msg
    assert_nothing_kept(store)
    # The same key does trust a name below the prefix.
    url, image_id, dummy_aci = publish(server, keys, tmp_path, path="/foo-bar.aci", name="example.com/foo/bar")
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"])
    assert changed and rec["id"] == image_id and info["verified"]


def test_server_error_after_retries(server, keys, store, tmp_path, pki):
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path, status=500)
    trust_key(store, keys)
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=pki["ca"], retries=2)
    assert "HTTP 500" in str(e.value) and url in str(e.value) and e.value.status == 500
    assert server.count("/images/app.aci", "GET") == 3      # the first try and 2 retries
    assert_nothing_kept(store)


class _StallingHandler(_Handler):
    """Sends the headers and part of the body of a Resource with ``stall_after``, then waits."""

    def _serve(self, head):
        res = self.server.owner.routes.get(self.path)
        stall = getattr(res, "stall_after", None)
        if res is None or stall is None or head:
            return super()._serve(head)
        with self.server.owner.lock:
            self.server.owner.requests.append((self.command, self.path, dict(self.headers.items())))
        data = res.data()
        self.send_response(200)
        self.send_header("Content-Type", res.content_type)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[:stall])
        self.wfile.flush()
        res.release.wait(20)     # until the test is over (the server joins its threads)
        self.close_connection = True


def test_read_timeout_when_the_server_stalls_mid_body(server, keys, store, tmp_path, pki):
    import threading
    import time

    url, dummy_image_id, aci = publish(server, keys, tmp_path, big=50000)
    trust_key(store, keys)
    server.httpd.RequestHandlerClass = _StallingHandler
    res = Resource(file=aci)
    res.stall_after, res.release = 10000, threading.Event()
    server.add("/images/app.aci", res)
    try:
        t0 = time.monotonic()
        with pytest.raises(FetchError) as e:
            fetch(store, src=url, ca_path=pki["ca"], timeout=0.5, retries=1)
        took = time.monotonic() - t0
    finally:
        res.release.set()
    msg = str(e.value)
    assert url in msg and "2 attempts" in msg and "timed out" in msg.lower(), msg
    assert took < 10
    assert server.count("/images/app.aci", "GET") == 2
    assert_nothing_kept(store)


def test_truncated_body(server, keys, store, tmp_path, pki):
    url, dummy_image_id, aci = publish(server, keys, tmp_path, big=20000)
    trust_key(store, keys)
    size = os.path.getsize(aci)
    # With Content-Length: the short body is noticed, retried, then reported.
    server.add("/images/app.aci", Resource(file=aci, ranges=False, drop_after=size // 2, drops=10))
    with pytest.raises(FetchError) as e:
        fetch(store, src=url, ca_path=pki["ca"], retries=1)
    assert "broke after %d bytes and 2 attempts" % (size // 2) in str(e.value) and url in str(e.value)
    assert_nothing_kept(store)
    # Without it the body just ends early: the cut archive is refused, not imported.
    server.add("/images/app.aci", Resource(file=aci, length=False, drop_after=size // 2, drops=10))
    with pytest.raises(ImageError) as e:
        fetch(store, src=url, ca_path=pki["ca"], retries=1)
    assert url in str(e.value) and "nothing was kept" in str(e.value), str(e.value)
    assert_nothing_kept(store)
    # ... also when the signature check is waived.
    with pytest.raises(ImageError) as e:
        fetch(store, src=url, ca_path=pki["ca"], retries=1, insecure=["image"])
    assert url in str(e.value) and "nothing was kept" in str(e.value), str(e.value)
    assert_nothing_kept(store)


def test_html_page_instead_of_an_image(server, keys, store, tmp_path, pki):
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path)
    trust_key(store, keys)
    page = b"<!doctype html><html><head><title>Sign in</title></head><body>Please log in</body></html>\n"
    server.add("/images/app.aci", Resource(body=page, content_type="text/html; charset=utf-8"))
    with pytest.raises(ImageError) as e:
        fetch(store, src=url, ca_path=pki["ca"])
    msg = str(e.value)
    assert url in msg and "HTML page" in msg and "text/html" in msg and "not an ACI" in msg, msg
    assert "nothing was kept" in msg and not isinstance(e.value, trust.SignatureError)
    assert_nothing_kept(store)
    with pytest.raises(ImageError) as e:
        fetch(store, src=url, ca_path=pki["ca"], insecure=["image"])
    assert url in str(e.value) and "HTML page" in str(e.value)
    assert_nothing_kept(store)


def test_concurrent_fetches_of_one_image(server, keys, store, tmp_path, pki, data_dir):
    from concurrent.futures import ThreadPoolExecutor

    url, image_id, dummy_aci = publish(server, keys, tmp_path, big=200000)
    trust_key(store, keys)

    def one(i):
        with Store(data_dir) as s:
            return fetch(s, src=url, ca_path=pki["ca"])

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(one, range(4)))
    assert [rec["id"] for rec, dummy_changed, dummy_info in results] == [image_id] * 4
    assert any(changed for dummy_rec, changed, dummy_info in results)
    assert [r["id"] for r in store.list()] == [image_id]
    assert os.listdir(store.dd.tmp) == []
    assert open(os.path.join(store.render(image_id)["rootfs"], "etc/v"), "rb").read() == b"1.0.0"


def test_check_mode_fetches_no_image_bytes(server, keys, store, tmp_path, pki):
    url, dummy_image_id, dummy_aci = publish(server, keys, tmp_path, big=100000)
    trust_key(store, keys)
    rec, changed, info = fetch(store, src=url, ca_path=pki["ca"], check=True)
    assert changed is True and info["action"] == "would-download" and rec["id"] is None
    assert server.count("/images/app.aci", "GET") == 0
    assert all(m != "GET" or p != "/images/app.aci" for m, p, dummy_headers in server.requests)
    assert_nothing_kept(store)
