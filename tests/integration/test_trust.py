"""The trust store and signature checks, with real gpg keys; cas_trust through ansible."""
import os

import pytest

from ansible_run import module
from gpgtool import Keys
from https_server import Resource, Server, make_pki

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
    assert trust.list_keys(dd) == [
        {"fingerprint": keys.fpr["other"], "prefix": None, "root": True, "path": r["path"]},
        {"fingerprint": keys.fpr["trusted"], "prefix": "example.com/app", "root": False,
         "path": os.path.join(dd.trust, "prefix.d", "example.com,app", keys.fpr["trusted"])},
    ]
    # The same key armoured differently (headers, line lengths) is the same key.
    with open(keys.public["trusted"]) as f:
        text = f.read()
    alt = dd.path + "-alt.asc"
    with open(alt, "w") as f:
        f.write(text.replace("-----\n\n", "-----\nComment: same key\n\n", 1))
    assert trust.add_key(dd, alt, prefix="example.com/app")["changed"] is False

    assert trust.remove_key(dd, keys.fpr["trusted"], prefix="example.com/app", check=True) is True
    assert len(trust.list_keys(dd)) == 2
    assert trust.remove_key(dd, keys.fpr["trusted"].upper(), prefix="example.com/app") is True
    assert trust.remove_key(dd, keys.fpr["trusted"], prefix="example.com/app") is False
    assert not os.path.exists(os.path.join(dd.trust, "prefix.d", "example.com,app"))
    assert trust.remove_key(dd, "0x" + keys.fpr["other"], root=True) is True
    assert trust.list_keys(dd) == []


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
    assert trust.list_keys(dd) == []


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
    args = {"key": keys.public["trusted"], "prefix": "example.com/app", "data_dir": data_dir}
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
    assert trust.list_keys(data_dir) == []

    r = module("cas_trust", {"key": keys.public["trusted"], "data_dir": data_dir})
    assert r.get("failed") and "prefix" in r["msg"] and "root" in r["msg"]
    r = module("cas_trust", {"key": keys.public["trusted"], "root": True, "fingerprint": keys.fpr["other"],
                             "data_dir": data_dir})
    assert r.get("failed") and keys.fpr["other"] in r["msg"]
    r = module("cas_trust", {"key": keys.public["other"], "root": True, "state": "absent", "data_dir": data_dir})
    assert r["changed"] is False and r["key"]["fingerprint"] == keys.fpr["other"]
