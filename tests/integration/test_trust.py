"""The trust store and signature checks, with real gpg keys; cas_trust through ansible."""
import os

import pytest

from tests.support.ansible_run import module
from tests.support.gpgtool import Keys
from tests.support.https_server import Resource, Server, make_pki

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import trust
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir


@pytest.fixture(scope="module")
def keys():
    k = Keys()
    yield k
    k.close()


@pytest.fixture
def dd(data_dir):
    return DataDir(data_dir).ensure()


def signed_file(keys, tmp_path, content=b"image bytes", key="trusted"):
    path = str(tmp_path / ("f-%s" % os.urandom(3).hex()))
    with open(path, "wb") as f:
        f.write(content)
    return path, keys.sign([path], key)[0]


def test_add_list_remove(dd, keys):
    r = trust.add_key(dd, keys.public["trusted"], prefix="example.com/app")
    assert r["changed"] and r["fingerprint"] == keys.fpr["trusted"] and r["prefix"] == "example.com/app"
    assert r["path"] == os.path.join(dd.trust, "prefix.d", "example.com,app", keys.fpr["trusted"])
    assert r["uids"] == ["trusted <trusted@rocket.test>"]
    assert trust.add_key(dd, keys.public["trusted"], prefix="example.com/app")["changed"] is False
    r = trust.add_key(dd, keys.public["other"], root=True)
    assert r["path"] == os.path.join(dd.trust, "root.d", keys.fpr["other"])
    assert trust.list_keys(dd, system_dir=None) == [
        {"fingerprint": keys.fpr["other"], "prefix": None, "root": True, "path": r["path"],
         "source": "local", "masked": False},
        {"fingerprint": keys.fpr["trusted"], "prefix": "example.com/app", "root": False,
         "path": os.path.join(dd.trust, "prefix.d", "example.com,app", keys.fpr["trusted"]),
         "source": "local", "masked": False},
    ]
    # The same key armoured differently (headers, line lengths) is the same key.
    with open(keys.public["trusted"]) as f:
        text = f.read()
    alt = dd.path + "-alt.asc"
    with open(alt, "w") as f:
        f.write(text.replace("-----\n\n", "-----\nComment: same key\n\n", 1))
    assert trust.add_key(dd, alt, prefix="example.com/app")["changed"] is False

    assert trust.remove_key(dd, keys.fpr["trusted"], prefix="example.com/app", check=True) is True
    assert len(trust.list_keys(dd, system_dir=None)) == 2
    assert trust.remove_key(dd, keys.fpr["trusted"].upper(), prefix="example.com/app") is True
    assert trust.remove_key(dd, keys.fpr["trusted"], prefix="example.com/app") is False
    assert not os.path.exists(os.path.join(dd.trust, "prefix.d", "example.com,app"))
    assert trust.remove_key(dd, "0x" + keys.fpr["other"], root=True) is True
    assert trust.list_keys(dd, system_dir=None) == []


def test_check_mode_and_pins(data_dir, keys):
    r = trust.add_key(data_dir, keys.public["trusted"], prefix="example.com", check=True)
    assert r["changed"] is True and not os.path.exists(data_dir)
    with pytest.raises(trust.TrustError) as e:
        trust.add_key(data_dir, keys.public["trusted"], prefix="example.com", fingerprint=keys.fpr["other"])
    assert keys.fpr["trusted"] in str(e.value) and keys.fpr["other"] in str(e.value)
    r = trust.add_key(data_dir, keys.public["trusted"], prefix="example.com", fingerprint=keys.fpr["trusted"].upper())
    assert r["changed"] and os.path.isfile(r["path"])


def test_bad_keys_are_refused(dd, keys, tmp_path):
    cases = {
        "secret": keys.export_secret("trusted", str(tmp_path / "secret.asc")),
        "garbage": str(tmp_path / "garbage.asc"),
        "binary": str(tmp_path / "binary.gpg"),
        "two": str(tmp_path / "two.asc"),
    }
    with open(cases["garbage"], "w") as f:
        f.write("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nnot base64 at all!\n-----END PGP PUBLIC KEY BLOCK-----\n")
    with open(cases["binary"], "wb") as f:
        f.write(b"\x99\x01\xff" + os.urandom(50))
    with open(cases["two"], "w") as f:
        f.write(open(keys.public["trusted"]).read() + open(keys.public["other"]).read())
    msgs = {}
    for what, path in cases.items():
        with pytest.raises(trust.TrustError) as e:
            trust.add_key(dd, path, prefix="example.com")
        msgs[what] = str(e.value)
        assert path in msgs[what]
    assert "secret key" in msgs["secret"]
    assert "base64" in msgs["garbage"]
    assert "ASCII-armoured" in msgs["binary"]
    assert "one key per file" in msgs["two"]
    with pytest.raises(trust.TrustError) as e:
        trust.add_key(dd, keys.public["trusted"])
    assert "prefix, or root" in str(e.value)
    with pytest.raises(trust.TrustError):
        trust.add_key(dd, keys.public["trusted"], prefix="example.com", root=True)
    with pytest.raises(Exception) as e:
        trust.add_key(dd, keys.public["trusted"], prefix="Not A Prefix")
    assert "Not A Prefix" in str(e.value)
    with pytest.raises(trust.TrustError) as e:
        trust.remove_key(dd, "89F2D7878D7F4B3D", root=True)
    assert "short key IDs" in str(e.value)
    assert trust.list_keys(dd, system_dir=None) == []


def test_verify_scopes(dd, keys, tmp_path):
    path, asc = signed_file(keys, tmp_path)
    trust.add_key(dd, keys.public["trusted"], prefix="example.com/app")
    assert trust.verify(dd, path, asc, "example.com/app") == keys.fpr["trusted"]
    assert trust.verify(dd, path, asc, "example.com/app/db") == keys.fpr["trusted"]
    for name in ("example.com/apple", "example.com", "other.org/app"):
        with pytest.raises(trust.SignatureError) as e:
            trust.verify(dd, path, asc, name)
        assert name in str(e.value) and keys.fpr["trusted"] in str(e.value)
        assert "trusted only for prefix example.com/app" in str(e.value)
    trust.add_key(dd, keys.public["trusted"], root=True)
    assert trust.verify(dd, path, asc, "other.org/app") == keys.fpr["trusted"]


def test_verify_refusals(dd, keys, tmp_path):
    trust.add_key(dd, keys.public["trusted"], root=True)
    path, asc = signed_file(keys, tmp_path)
    with open(path, "ab") as f:
        f.write(b"tampered")
    with pytest.raises(trust.SignatureError) as e:
        trust.verify(dd, path, asc, "example.com/app")
    assert "BAD signature" in str(e.value) and e.value.fingerprint == keys.fpr["trusted"]

    path, asc = signed_file(keys, tmp_path, key="other")
    with pytest.raises(trust.SignatureError) as e:
        trust.verify(dd, path, asc, "example.com/app")
    assert e.value.fingerprint == keys.fpr["other"] and "not trusted" in str(e.value)
    assert e.value.image == "example.com/app"

    # A key file named after one key but holding another trusts nothing.
    os.rename(os.path.join(dd.trust, "root.d", keys.fpr["trusted"]), os.path.join(dd.trust, "root.d", keys.fpr["other"]))
    path, asc = signed_file(keys, tmp_path)
    with pytest.raises(trust.SignatureError) as e:
        trust.verify(dd, path, asc, "example.com/app")
    assert "not one of the keys trusted" in str(e.value)


def test_key_from_an_https_url(dd, keys, tmp_path):
    pki = make_pki(tmp_path / "pki")
    with Server(pki) as server:
        url = server.add("/key.asc", Resource(file=keys.public["trusted"]))
        r = trust.add_key(dd, url, prefix="example.com", http={"ca_path": pki["ca"]},
                          fingerprint=keys.fpr["trusted"])
        assert r["changed"] and r["fingerprint"] == keys.fpr["trusted"]
        with pytest.raises(trust.TrustError) as e:
            trust.add_key(dd, url.replace("https:", "http:"), prefix="example.com")
        assert "plain http" in str(e.value)
        with pytest.raises(trust.TrustError) as e:
            trust.add_key(dd, server.url + "/missing.asc", prefix="example.com", http={"ca_path": pki["ca"]})
        assert "HTTP 404" in str(e.value)


def test_cas_trust_module(data_dir, keys):
    args = {"key": keys.public["trusted"], "prefix": "example.com/app", "data_dir": data_dir,
            "fingerprint": keys.fpr["trusted"]}
    r = module("cas_trust", args, check=True)
    assert r["changed"] is True and r["key"]["fingerprint"] == keys.fpr["trusted"], r
    assert not os.path.exists(data_dir)
    r = module("cas_trust", args)
    assert r["changed"] is True and os.path.isfile(r["key"]["path"])
    assert module("cas_trust", args)["changed"] is False
    assert module("cas_trust", args, check=True)["changed"] is False

    absent = {"fingerprint": keys.fpr["trusted"].upper(), "prefix": "example.com/app", "state": "absent",
              "data_dir": data_dir}
    assert module("cas_trust", absent, check=True)["changed"] is True
    assert os.path.isfile(r["key"]["path"])
    assert module("cas_trust", absent)["changed"] is True
    assert module("cas_trust", absent)["changed"] is False
    assert trust.list_keys(data_dir, system_dir=None) == []

    r = module("cas_trust", {"key": keys.public["trusted"], "data_dir": data_dir, "accept_unreviewed": True})
    assert r.get("failed") and "prefix" in r["msg"] and "root" in r["msg"]
    r = module("cas_trust", {"key": keys.public["trusted"], "root": True, "fingerprint": keys.fpr["other"],
                             "data_dir": data_dir})
    assert r.get("failed") and keys.fpr["other"] in r["msg"] and keys.fpr["trusted"] in r["msg"]
    assert not os.path.exists(os.path.join(data_dir, "trust", "root.d", keys.fpr["trusted"]))
    r = module("cas_trust", {"key": keys.public["other"], "root": True, "state": "absent", "data_dir": data_dir})
    assert r["changed"] is False and r["key"]["fingerprint"] == keys.fpr["other"]


def system_store(tmp_path, keys, who, prefix=None):
    """A system trust store (instead of /etc/rocket/trustedkeys) holding key ``who``."""
    sysdir = str(tmp_path / "system-trust")
    rel = "root.d" if prefix is None else os.path.join("prefix.d", prefix.replace("/", ","))
    os.makedirs(os.path.join(sysdir, rel), exist_ok=True)
    with open(keys.public[who], "rb") as src, open(os.path.join(sysdir, rel, keys.fpr[who]), "wb") as dst:
        dst.write(src.read())
    return sysdir, os.path.join(sysdir, rel, keys.fpr[who])


def test_system_store_trusts_and_masks(dd, keys, tmp_path):
    sysdir, sys_key = system_store(tmp_path, keys, "trusted")
    system_store(tmp_path, keys, "other", prefix="example.com/app")
    path, asc = signed_file(keys, tmp_path)
    assert trust.verify(dd, path, asc, "other.org/x", system_dir=sysdir) == keys.fpr["trusted"]
    with pytest.raises(trust.SignatureError):
        trust.verify(dd, path, asc, "other.org/x", system_dir=None)
    listed = trust.list_keys(dd, system_dir=sysdir)
    assert [(k["fingerprint"], k["prefix"], k["source"], k["masked"]) for k in listed] == [
        (keys.fpr["trusted"], None, "system", False), (keys.fpr["other"], "example.com/app", "system", False)]
    assert listed[0]["path"] == sys_key
    # System prefix keys cover whole path components, as local ones do.
    opath, oasc = signed_file(keys, tmp_path, key="other")
    assert trust.verify(dd, opath, oasc, "example.com/app/db", system_dir=sysdir) == keys.fpr["other"]
    with pytest.raises(trust.SignatureError) as e:
        trust.verify(dd, opath, oasc, "example.com/apple", system_dir=sysdir)
    assert "system store" in str(e.value)

    # Masking: an empty file at the same path in the data_dir store.
    r = trust.mask_key(dd, keys.fpr["trusted"].upper(), root=True, system_dir=sysdir, check=True)
    assert r["changed"] and not os.path.exists(r["path"])
    r = trust.mask_key(dd, keys.fpr["trusted"], root=True, system_dir=sysdir)
    assert r["changed"] and r["system_key"] == sys_key and os.path.getsize(r["path"]) == 0
    assert r["path"] == os.path.join(dd.trust, "root.d", keys.fpr["trusted"])
    assert trust.mask_key(dd, keys.fpr["trusted"], root=True, system_dir=sysdir)["changed"] is False
    assert os.path.getsize(sys_key) > 0  # the system store is never written
    with pytest.raises(trust.SignatureError) as e:
        trust.verify(dd, path, asc, "other.org/x", system_dir=sysdir)
    assert "masked" in str(e.value) and r["path"] in str(e.value) and e.value.fingerprint == keys.fpr["trusted"]
    assert trust.keys_for(dd, "other.org/x", system_dir=sysdir) == []
    masked = trust.list_keys(dd, system_dir=sysdir)[0]
    assert masked["masked"] is True and masked["masked_by"] == r["path"] and masked["source"] == "system"
    # A mask masks only its own scope: a local prefix key still trusts.
    trust.add_key(dd, keys.public["trusted"], prefix="other.org")
    assert trust.verify(dd, path, asc, "other.org/x", system_dir=sysdir) == keys.fpr["trusted"]
    # Removing the mask unmasks; adding the key at the masked path replaces the mask.
    assert trust.remove_key(dd, keys.fpr["trusted"], root=True) is True
    assert trust.verify(dd, path, asc, "example.com/x", system_dir=sysdir) == keys.fpr["trusted"]
    trust.mask_key(dd, keys.fpr["trusted"], root=True, system_dir=sysdir)
    assert trust.add_key(dd, keys.public["trusted"], root=True)["changed"] is True
    entry = [k for k in trust.list_keys(dd, system_dir=sysdir) if k["root"]]
    assert [(k["source"], k["masked"]) for k in entry] == [("local", False)]
    assert trust.verify(dd, path, asc, "example.com/x", system_dir=sysdir) == keys.fpr["trusted"]


def test_cas_trust_review_and_mask(data_dir, keys, tmp_path):
    base = {"key": keys.public["trusted"], "prefix": "example.com", "data_dir": data_dir}
    r = module("cas_trust", base)
    assert r.get("failed") and "fingerprint" in r["msg"] and "accept_unreviewed" in r["msg"], r
    assert keys.fpr["trusted"] in r["msg"] and "trusted <trusted@rocket.test>" in r["msg"]
    assert not os.path.exists(data_dir)
    r = module("cas_trust", dict(base, fingerprint=keys.fpr["other"]))
    assert r.get("failed") and keys.fpr["other"] in r["msg"] and keys.fpr["trusted"] in r["msg"]
    r = module("cas_trust", dict(base, accept_unreviewed=True), check=True)
    assert r["changed"] and not os.path.exists(data_dir)
    r = module("cas_trust", dict(base, accept_unreviewed=True))
    assert r["changed"] and r["key"]["fingerprint"] == keys.fpr["trusted"]
    assert r["key"]["uids"] == ["trusted <trusted@rocket.test>"] and r["keys"] == [r["key"]]
    assert module("cas_trust", dict(base, accept_unreviewed=True))["changed"] is False
    assert module("cas_trust", dict(base, fingerprint=keys.fpr["trusted"]))["changed"] is False

    sysdir, sys_key = system_store(tmp_path, keys, "other")
    mask = {"mask": True, "fingerprint": keys.fpr["other"], "root": True, "data_dir": data_dir,
            "system_dir": sysdir}
    r = module("cas_trust", mask, check=True)
    assert r["changed"] and not os.path.exists(r["key"]["path"])
    r = module("cas_trust", mask)
    assert r["changed"] and r["key"]["system_key"] == sys_key and os.path.getsize(r["key"]["path"]) == 0
    assert module("cas_trust", mask)["changed"] is False
    assert [k["masked"] for k in trust.list_keys(data_dir, system_dir=sysdir) if k["root"]] == [True]
    r = module("cas_trust", {"mask": True, "root": True, "data_dir": data_dir})
    assert r.get("failed") and "fingerprint" in r["msg"]
    r = module("cas_trust", {"mask": True, "key": keys.public["other"], "fingerprint": keys.fpr["other"],
                             "root": True, "data_dir": data_dir})
    assert r.get("failed") and "mutually exclusive" in r["msg"]
    absent = {"fingerprint": keys.fpr["other"], "root": True, "state": "absent", "data_dir": data_dir,
              "system_dir": sysdir}
    r = module("cas_trust", absent)
    assert r["changed"] and any("system trust store" in w for w in r.get("warnings", [])), r
    assert [k["masked"] for k in trust.list_keys(data_dir, system_dir=sysdir) if k["root"]] == [False]


def discovery_keys_site(server, keys):
    page = ("<html><head>"
            "<meta name='ac-discovery-pubkeys' content='example.com https://example.com/pubkeys.asc'>"
            "<meta name='ac-discovery-pubkeys' content='example.com https://example.com/other.asc'>"
            "</head></html>")
    server.add("/org?ac-discovery=1", Resource(body=page.encode(), content_type="text/html"))
    server.add("/pubkeys.asc", Resource(file=keys.public["trusted"]))
    server.add("/other.asc", Resource(file=keys.public["other"]))


def test_keys_from_discovery(dd, keys, tmp_path):
    pki = make_pki(tmp_path / "pki")
    with Server(pki) as server:
        discovery_keys_site(server, keys)
        http = {"ca_path": pki["ca"], "overrides": {"example.com": server.url}}
        found = trust.discover_keys("example.com/org/app", http)
        assert found["keys"] == ["https://example.com/pubkeys.asc", "https://example.com/other.asc"]
        assert found["page"] == "https://example.com/org?ac-discovery=1"
        assert [t[0] for t in found["tried"]] == ["https://example.com/org/app?ac-discovery=1"]
        with pytest.raises(trust.TrustError) as e:
            trust.add_discovered(dd, "example.com/org/app", http=http)
        assert keys.fpr["trusted"] in str(e.value) and keys.fpr["other"] in str(e.value)
        assert "accept_unreviewed" in str(e.value) and trust.list_keys(dd, system_dir=None) == []
        with pytest.raises(trust.TrustError) as e:
            trust.add_discovered(dd, "example.com/org/app", fingerprint="ab" * 20, http=http)
        assert "ab" * 20 in str(e.value) and keys.fpr["trusted"] in str(e.value)
        r = trust.add_discovered(dd, "example.com/org/app", fingerprint=keys.fpr["trusted"], http=http, check=True)
        assert r["changed"] and trust.list_keys(dd, system_dir=None) == []
        r = trust.add_discovered(dd, "example.com/org/app", fingerprint=keys.fpr["trusted"], http=http)
        assert r["changed"] and [k["fingerprint"] for k in r["keys"]] == [keys.fpr["trusted"]]
        assert r["skipped"] == [{"url": "https://example.com/other.asc", "fingerprint": keys.fpr["other"]}]
        assert r["keys"][0]["path"] == os.path.join(dd.trust, "prefix.d", "example.com,org,app", keys.fpr["trusted"])
        assert trust.add_discovered(dd, "example.com/org/app", fingerprint=keys.fpr["trusted"], http=http)[
            "changed"] is False
        r = trust.add_discovered(dd, "example.com/org/app", accept_unreviewed=True, http=http)
        assert r["changed"] and sorted(k["fingerprint"] for k in r["keys"]) == sorted(keys.fpr.values())
        with pytest.raises(trust.TrustError) as e:
            trust.discover_keys("example.com/none",
                                {"ca_path": pki["ca"], "overrides": {"example.com": "https://127.0.0.1:1"}, "retries": 0})
        assert "example.com/none" in str(e.value)


def test_cas_trust_discover_module(data_dir, keys, tmp_path):
    pki = make_pki(tmp_path / "pki")
    with Server(pki) as server:
        discovery_keys_site(server, keys)
        args = {"discover": True, "prefix": "example.com/org", "fingerprint": keys.fpr["other"],
                "ca_path": pki["ca"], "discovery_overrides": {"example.com": server.url}, "data_dir": data_dir}
        r = module("cas_trust", args, check=True)
        assert r["changed"] and r["key"]["fingerprint"] == keys.fpr["other"] and not os.path.exists(data_dir), r
        r = module("cas_trust", args)
        assert r["changed"] and r["key"]["uids"] == ["other <other@rocket.test>"], r
        assert r["discovery_page"] == "https://example.com/org?ac-discovery=1"
        assert r["skipped_keys"] == [{"url": "https://example.com/pubkeys.asc", "fingerprint": keys.fpr["trusted"]}]
        assert module("cas_trust", args)["changed"] is False
        no_fpr = dict(args)
        del no_fpr["fingerprint"]
        r = module("cas_trust", no_fpr)
        assert r.get("failed") and "accept_unreviewed" in r["msg"], r
        r = module("cas_trust", dict(no_fpr, accept_unreviewed=True))
        assert r["changed"] and len(r["keys"]) == 2
        r = module("cas_trust", dict(no_fpr, prefix=None, root=True))
        assert r.get("failed") and "prefix" in r["msg"]
