"""appc -> OCI export rules: the config mapping (the inverse of oci.py's) and the layer (no root needed)."""
import gzip
import hashlib
import io
import os
import tarfile

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, oci, registry_auth, registry_login, registry_push, schema
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ImageError, RocketError


def _manifest(**app):
    m = {"acKind": "ImageManifest", "acVersion": schema.AC_VERSION, "name": "example.com/web",
         "labels": [{"name": "version", "value": "1.2"}, {"name": "os", "value": "linux"},
                    {"name": "arch", "value": "aarch64"}],
         "app": dict({"exec": ["/bin/web", "--port", "80"], "user": "1000", "group": "100"}, **app),
         "annotations": [{"name": "created", "value": "2024-01-02T03:04:05Z"},
                         {"name": "authors", "value": "someone"},
                         {"name": "homepage", "value": "https://example.com/web"},
                         {"name": "appc.rocket/oci/stop-signal", "value": "SIGQUIT"},
                         {"name": "appc.rocket/oci/config", "value": "sha256:" + "1" * 64},
                         {"name": "maintainer", "value": "ops"}]}
    return schema.parse_image_manifest(m)


@pytest.mark.parametrize("labels, platform, want", [
    ({"os": "linux", "arch": "amd64"}, None, ("linux", "amd64", "")),
    ({"os": "linux", "arch": "aarch64"}, None, ("linux", "arm64", "")),
    ({"os": "linux", "arch": "armv7l"}, None, ("linux", "arm", "v7")),
    ({"os": "linux", "arch": "armv6l"}, None, ("linux", "arm", "v6")),
    ({"os": "linux", "arch": "i386"}, None, ("linux", "386", "")),
    ({"os": "linux", "arch": "amd64"}, "linux/arm/v7", ("linux", "arm", "v7")),
])
def test_platform_is_the_inverse_of_the_import(labels, platform, want):
    got = registry_push.image_platform(labels, platform)
    assert got == want
    if platform is None:  # and the import maps it back to the same label
        assert oci.map_arch(got[1], got[2] or None) == labels["arch"]


@pytest.mark.parametrize("labels, platform, needle", [
    ({"os": "freebsd", "arch": "amd64"}, None, "os=freebsd"),
    ({"os": "linux", "arch": "armv7b"}, None, "arch=armv7b"),
    ({}, "windows/amd64", "platform"),
    ({}, "linux", "platform"),
    ({}, "linux/arm/v7/x", "platform"),
])
def test_platform_refusals_name_the_field(labels, platform, needle):
    with pytest.raises(ImageError, match=needle):
        registry_push.image_platform(labels, platform)


def test_config_mapping_round_trips_through_the_import():
    m = _manifest(workingDirectory="/srv",
                  environment=[{"name": "PATH", "value": "/bin"}, {"name": "A", "value": "x=y"}],
                  ports=[{"name": "http", "protocol": "tcp", "port": 80},
                         {"name": "range", "protocol": "udp", "port": 9000, "count": 3}],
                  mountPoints=[{"name": "data", "path": "/var/lib/data"}])
    config, dropped = registry_push.oci_config(m, ["sha256:" + "a" * 64], ("linux", "arm64", ""), ["h"])
    c = config["config"]
    assert c["Entrypoint"] == ["/bin/web", "--port", "80"] and "Cmd" not in c
    assert c["User"] == "1000:100" and c["WorkingDir"] == "/srv"
    assert c["Env"] == ["PATH=/bin", "A=x=y"]
    assert c["ExposedPorts"] == {"80/tcp": {}, "9000-9002/udp": {}}
    assert c["Volumes"] == {"/var/lib/data": {}}
    assert c["StopSignal"] == "SIGQUIT"
    assert c["Labels"]["org.opencontainers.image.url"] == "https://example.com/web"
    assert c["Labels"]["maintainer"] == "ops"
    assert c["Labels"]["org.opencontainers.image.title"] == "example.com/web"
    assert c["Labels"]["org.opencontainers.image.version"] == "1.2"
    assert "appc.rocket/oci/config" not in c["Labels"]
    assert any("appc.rocket/oci/config" in d for d in dropped)
    assert config["created"] == "2024-01-02T03:04:05Z" and config["author"] == "someone"
    assert (config["os"], config["architecture"]) == ("linux", "arm64") and "variant" not in config
    assert config["rootfs"] == {"type": "layers", "diff_ids": ["sha256:" + "a" * 64]}

    back, dummy = oci.image_manifest(config, "example.com/web", {"version": "1.2"})
    app = back["app"]
    assert app["exec"] == m["app"]["exec"]
    assert (app["user"], app["group"]) == ("1000", "100")
    assert app["workingDirectory"] == "/srv"
    assert app["environment"] == m["app"]["environment"]
    assert sorted((p["protocol"], p["port"], p.get("count", 1)) for p in app["ports"]) == \
        [("tcp", 80, 1), ("udp", 9000, 3)]
    assert [mp["path"] for mp in app["mountPoints"]] == ["/var/lib/data"]
    ann = schema.labels_to_dict(back["annotations"], "annotations")
    assert ann["created"] == "2024-01-02T03:04:05Z" and ann["authors"] == "someone"
    assert ann["homepage"] == "https://example.com/web" and ann["maintainer"] == "ops"
    assert ann["appc.rocket/oci/stop-signal"] == "SIGQUIT"


def test_what_oci_cannot_say_is_reported():
    m = _manifest(isolators=[{"name": "os/linux/no-new-privileges", "value": True}],
                  mountPoints=[{"name": "ro", "path": "/ro", "readOnly": True}])
    m["labels"].append({"name": "channel", "value": "beta"})
    dummy, dropped = registry_push.oci_config(m, [], ("linux", "amd64", ""), [])
    text = "\n".join(dropped)
    assert "app.isolators" in text and "readOnly" in text and "label channel" in text


def test_path_whitelist_is_refused():
    m = _manifest()
    m["pathWhitelist"] = ["/bin/web"]
    with pytest.raises(ImageError, match="pathWhitelist"):
        registry_push.oci_config(m, [], ("linux", "amd64", ""), [])


def test_canonical_json_is_order_independent():
    assert registry_push.canonical_json({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == \
        registry_push.canonical_json({"a": [1, {"c": 3, "d": 2}], "b": 1})


def _aci(tmp_path, compression="gzip", mtime=0):
    root = tmp_path / ("rootfs-" + compression)
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hello").write_bytes(b"hello\n")
    os.link(root / "etc" / "hello", root / "etc" / "hello2")
    os.symlink("hello", root / "etc" / "hello.link")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "bin" / "tool", 0o4755)
    out = tmp_path / ("image-%s.aci" % compression)
    m = schema.parse_image_manifest({"acKind": "ImageManifest", "acVersion": schema.AC_VERSION,
                                     "name": "example.com/t"})
    aci.build_aci(str(root), m, str(out), compression=compression, mtime=mtime)
    return out


@pytest.mark.parametrize("compression", ["gzip", "xz", "none"])
def test_layer_is_the_rootfs_without_prefix_and_deterministic(tmp_path, compression):
    src = _aci(tmp_path, compression)
    outs = []
    for dummy in range(2):
        buf = io.BytesIO()
        with open(src, "rb") as f:
            digest, size, diff_id = registry_push.layer_from_aci(f, buf, "test")
        data = buf.getvalue()
        assert digest == "sha256:" + hashlib.sha256(data).hexdigest() and size == len(data)
        plain = gzip.decompress(data)
        assert diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()
        assert data[4:8] == b"\0\0\0\0"  # gzip header mtime: zero
        outs.append(data)
    assert outs[0] == outs[1]
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(outs[0]))) as t:
        members = {m.name: m for m in t.getmembers()}
        assert sorted(members) == ["bin", "bin/tool", "etc", "etc/hello", "etc/hello.link", "etc/hello2"]
        assert members["etc/hello2"].islnk() and members["etc/hello2"].linkname == "etc/hello"
        assert members["etc/hello.link"].issym() and members["etc/hello.link"].linkname == "hello"
        assert members["bin/tool"].mode == 0o4755
        assert all(m.uid == 0 and m.uname == "" for m in members.values())
        assert t.extractfile("etc/hello").read() == b"hello\n"


def test_same_tree_in_another_compression_gives_the_same_layer(tmp_path):
    layers = set()
    for compression in ("gzip", "bzip2", "none"):
        buf = io.BytesIO()
        with open(_aci(tmp_path, compression), "rb") as f:
            layers.add(registry_push.layer_from_aci(f, buf, "test"))
    assert len(layers) == 1


def test_garbage_is_a_clear_error(tmp_path):
    with pytest.raises(ImageError, match="not a readable ACI|cannot read the ACI"):
        registry_push.layer_from_aci(io.BytesIO(b"garbage" * 100), io.BytesIO(), "image x")


# --------------------------------------------------------------------------- registry_login

@pytest.mark.parametrize("text, key", [
    ("127.0.0.1:5000", "127.0.0.1:5000"), ("docker://127.0.0.1:5000/", "127.0.0.1:5000"),
    ("https://Registry.Example:443/team/app", "registry.example:443/team/app"),
    ("index.docker.io", "docker.io"), ("registry-1.docker.io", "docker.io"), ("docker.io", "docker.io"),
    ("localhost", "localhost"), ("[::1]:5000", "[::1]:5000"),
])
def test_registry_key(text, key):
    assert registry_login.registry_key(text) == key


@pytest.mark.parametrize("text", ["", "a b", "host:port", "host//x", "-bad.host", "host:5000/UP per", "ftp://x/y z"])
def test_registry_key_refusals_name_the_option(text):
    with pytest.raises(RocketError, match="registry"):
        registry_login.registry_key(text)


def _login(tmp_path, **kw):
    p = {"registry": "127.0.0.1:5000", "username": "u", "password": "pw-1", "auth_file": str(tmp_path / "d" / "auth.json"),
         "state": "present", "verify": False}
    p.update(kw)
    return p


def test_login_converge_without_verification(tmp_path):
    p = _login(tmp_path)
    changed, result, before, after = registry_login.converge(p, check=True)
    assert changed and not os.path.exists(p["auth_file"]) and before == {}
    assert after == {"registry": "127.0.0.1:5000", "username": "u", "password": "(new)"}
    assert result == {"registry": "127.0.0.1:5000", "auth_file": p["auth_file"], "verified": False, "username": "u"}
    changed, dummy, dummy, dummy = registry_login.converge(p, check=False)
    assert changed and os.stat(p["auth_file"]).st_mode & 0o777 == 0o600
    assert os.stat(os.path.dirname(p["auth_file"])).st_mode & 0o777 == 0o700
    assert registry_auth.read_entry(p["auth_file"], "127.0.0.1:5000")[:2] == ("u", "pw-1")
    changed, dummy, before, after = registry_login.converge(p, check=False)
    assert not changed and before == after == {"registry": "127.0.0.1:5000", "username": "u", "password": "(set)"}
    changed, dummy, before, after = registry_login.converge(dict(p, password="pw-2"), check=False)
    assert changed and after["password"] == "(new)"
    assert "pw-" not in repr((before, after))
    changed, result, before, after = registry_login.converge(dict(p, state="absent"), check=False)
    assert changed and after == {} and registry_auth.read_entry(p["auth_file"], "127.0.0.1:5000") is None
    assert not registry_login.converge(dict(p, state="absent"), check=False)[0]


def test_login_present_needs_both(tmp_path):
    with pytest.raises(RocketError, match="username and password"):
        registry_login.converge(_login(tmp_path, password=""), check=False)


def test_login_default_file_is_podmans(tmp_path, monkeypatch):
    target = tmp_path / "env" / "auth.json"
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(target))
    changed, result, dummy, dummy = registry_login.converge(_login(tmp_path, auth_file=None), check=False)
    assert changed and result["auth_file"] == str(target) and target.exists()
