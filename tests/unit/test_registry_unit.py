"""Registry references, registries.conf, auth files and challenges, platform choice (no network)."""
import base64
import json
import os
import stat

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registries_conf as rc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_auth as ra
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_client as cl
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_ref as rr
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

D1 = "sha256:" + "a" * 64
D2 = "sha256:" + "b" * 64


# --------------------------------------------------------------------------- references

@pytest.mark.parametrize("text, registry, repository, tag, digest, short", [
    ("docker://nginx", "docker.io", "library/nginx", "latest", None, True),
    ("docker://nginx:1.27", "docker.io", "library/nginx", "1.27", None, True),
    ("docker://library/nginx:1.27", "docker.io", "library/nginx", "1.27", None, True),
    ("docker://someone/app", "docker.io", "someone/app", "latest", None, True),
    ("docker://docker.io/nginx", "docker.io", "library/nginx", "latest", None, False),
    ("docker://index.docker.io/someone/app:v1", "docker.io", "someone/app", "v1", None, False),
    ("docker://registry.example/org/app@" + D1, "registry.example", "org/app", None, D1, False),
    ("docker://registry.example/org/app:v2@" + D1, "registry.example", "org/app", "v2", D1, False),
    ("docker://127.0.0.1:5000/repo:tag", "127.0.0.1:5000", "repo", "tag", None, False),
    ("docker://localhost/a/b/c", "localhost", "a/b/c", "latest", None, False),
    ("docker://Registry.Example:8443/a-b/c__d.e:T_1", "registry.example:8443", "a-b/c__d.e", "T_1", None, False),
    ("docker://[::1]:5000/repo", "[::1]:5000", "repo", "latest", None, False),
])
def test_reference_normalisation(text, registry, repository, tag, digest, short):
    ref = rr.parse_reference(text)
    assert (ref.registry, ref.repository, ref.tag, ref.digest, ref.short) == (registry, repository, tag, digest, short)
    assert ref.reference == (digest or tag)
    # What str() gives parses back to the same reference.
    assert rr.parse_reference(ref.uri()) == ref
    assert ref.uri().startswith("docker://" + registry + "/" + repository)


@pytest.mark.parametrize("text, fragment", [
    ("nginx:1.27", "must start with docker://"),
    ("example.com/hello:1.0.0", "appc name"),
    ("docker://", "not a valid"),
    ("docker://Nginx", "lower case"),
    ("docker://a//b", "is not valid"),
    ("docker://a/b:", "tag ''"),
    ("docker://a/b:-x", "tag '-x'"),
    ("docker://a/b:" + "t" * 129, "at most 128"),
    ("docker://a/b@sha256:1234", "not a digest"),
    ("docker://a/b@md5:" + "a" * 32, "not a digest"),
    ("docker://a/b@sha256:" + "A" * 64, "not a digest"),
    ("docker://host.example:99999/a", "out of range"),
    ("docker://host.example/", "names no repository"),
    ("docker://a b", "not a valid"),
    ("docker://registry.example/" + "a" * 300, "longer than"),
    ("docker://bad_host.example/x", "not a valid host"),
])
def test_reference_refused(text, fragment):
    with pytest.raises(RocketError) as e:
        rr.parse_reference(text, what="apps[0].image")
    assert fragment in str(e.value)
    assert str(e.value).startswith("apps[0].image")


def test_reference_parts():
    ref = rr.parse_reference("docker://registry.example/org/app:1")
    assert ref.name == "registry.example/org/app"
    assert str(ref) == "registry.example/org/app:1"
    pinned = ref.replace(digest=D1)
    assert str(pinned) == "registry.example/org/app:1@" + D1 and pinned.reference == D1
    moved = ref.replace(registry="127.0.0.1:5000", repository="cache/org/app")
    assert str(moved) == "127.0.0.1:5000/cache/org/app:1" and not moved.short
    assert rr.is_registry_reference("docker://x") and not rr.is_registry_reference("example.com/x")
    assert rr.api_host("docker.io") != "docker.io" and rr.api_host("127.0.0.1:5000") == "127.0.0.1:5000"


# --------------------------------------------------------------------------- registries.conf

CONF = '''
# a fleet's mirror
unqualified-search-registries = ["registry.example", # first
                                 "docker.io"]
short-name-mode = "permissive"

[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "127.0.0.1:5001/hub"
insecure = true

[[registry.mirror]]
location = 'mirror.example/hub'

[[registry]]
prefix = "docker.io/library"
location = "docker.io/library"
mirror-by-digest-only = true

[[registry.mirror]]
location = "127.0.0.1:5002/official"

[[registry]]
location = "registry.example:5000"
insecure = true

[[registry]]
prefix = "*.blocked.example"
blocked = true

[[registry]]
prefix = "old.example/team"
location = "new.example/moved/team"
'''


def _conf():
    return rc.parse_registries_conf(CONF, "/etc/containers/registries.conf")


def test_conf_mirrors_first_then_source():
    conf = _conf()
    ref = rr.parse_reference("docker://docker.io/someone/app:1")
    eps = conf.endpoints(ref)
    assert [(str(e.ref), e.insecure, e.mirror) for e in eps] == [
        ("127.0.0.1:5001/hub/someone/app:1", True, True),
        ("mirror.example/hub/someone/app:1", False, True),
        ("docker.io/someone/app:1", False, False)]


def test_conf_longest_prefix_and_digest_only_mirrors():
    conf = _conf()
    by_tag = conf.endpoints(rr.parse_reference("docker://nginx:1.27"))
    assert [str(e.ref) for e in by_tag] == ["docker.io/library/nginx:1.27"]   # mirror-by-digest-only
    by_digest = conf.endpoints(rr.parse_reference("docker://nginx@" + D1))
    assert [str(e.ref) for e in by_digest] == ["127.0.0.1:5002/official/nginx@" + D1, "docker.io/library/nginx@" + D1]


def test_conf_location_rewrite_insecure_blocked():
    conf = _conf()
    eps = conf.endpoints(rr.parse_reference("docker://old.example/team/app:3"))
    assert [str(e.ref) for e in eps] == ["new.example/moved/team/app:3"]
    assert conf.endpoints(rr.parse_reference("docker://registry.example:5000/x"))[0].insecure
    assert conf.is_insecure("registry.example:5000") and conf.is_insecure("127.0.0.1:5001")
    assert not conf.is_insecure("docker.io")
    with pytest.raises(rr.RegistryError, match="blocked by registries.conf"):
        conf.endpoints(rr.parse_reference("docker://a.blocked.example/x"))
    # Not configured: itself.
    other = rr.parse_reference("docker://elsewhere.example/x:1")
    assert conf.endpoints(other) == [rc.Endpoint(other, False, False)]


def test_conf_wildcard_prefix():
    conf = rc.parse_registries_conf('[[registry]]\nprefix = "*.lab.example"\ninsecure = true\n'
                                    '[[registry.mirror]]\nlocation = "127.0.0.1:5000/lab"\n', "w.conf")
    ref = rr.parse_reference("docker://reg.lab.example:8443/team/app:1")
    assert [(str(e.ref), e.insecure, e.mirror) for e in conf.endpoints(ref)] == [
        ("127.0.0.1:5000/lab/team/app:1", False, True), ("reg.lab.example:8443/team/app:1", True, False)]
    assert conf.is_insecure("reg.lab.example:8443") and not conf.is_insecure("lab.example.other")
    other = rr.parse_reference("docker://lab.example/x")   # the wildcard needs a subdomain
    assert conf.endpoints(other) == [rc.Endpoint(other, False, False)]
    with pytest.raises(RocketError, match="a wildcard prefix .* takes no location"):
        rc.parse_registries_conf('[[registry]]\nprefix = "*.lab.example"\nlocation = "x.example"\n', "w.conf")


def test_conf_short_names():
    conf = _conf()
    short = rr.parse_reference("docker://nginx:1")
    assert [str(r) for r in conf.candidates(short)] == ["registry.example/nginx:1", "docker.io/library/nginx:1"]
    qualified = rr.parse_reference("docker://docker.io/nginx:1")
    assert conf.candidates(qualified) == [qualified]
    enforcing = rc.parse_registries_conf(CONF.replace('"permissive"', '"enforcing"'), "x.conf")
    with pytest.raises(rr.RegistryError, match="ambiguous.*enforcing"):
        enforcing.candidates(short)
    # Without unqualified-search-registries, Docker's documented rule.
    assert rc.RegistriesConf().candidates(short) == [short]


@pytest.mark.parametrize("text, fragment", [
    ("foo = 1", "line 1: key 'foo' is not understood in the top level"),
    ("[[registry]]\nlocation = 3", "line 2: only strings, booleans and arrays"),
    ("[registry]\n", "table [registry] is not understood"),
    ("[[registry]]\nlocation = \"a b\"", "line 2: location 'a b' is not host[:port][/path]"),
    ("[[registry]]\ninsecure = true", "needs a location or a prefix"),
    ("[[registry.mirror]]\nlocation = \"x.example\"", "before any [[registry]]"),
    ("[[registry]]\nlocation = \"x.example\"\n[[registry.mirror]]\ninsecure = true", "needs a location"),
    ("[[registry]]\nlocation = \"x.example\"\nlocation = \"y.example\"", "location is set twice"),
    ("[[registry]]\nlocation = \"x.example\"\n[[registry]]\nlocation = \"x.example\"", "two [[registry]]"),
    ("short-name-mode = \"sometimes\"", "not one of enforcing"),
    ("unqualified-search-registries = \"docker.io\"", "must be an array of strings"),
    ("unqualified-search-registries = [\"a.example/b\"]", "is not a registry host"),
    ("[[registry]]\nlocation = \"x.example\" junk", "unexpected text"),
    ("short-name-mode = \"unterminated", "unterminated string"),
    ("[[registry]]\ninsecure = yes", "only strings, booleans"),
])
def test_conf_refused(text, fragment):
    with pytest.raises(RocketError) as e:
        rc.parse_registries_conf(text, "/tmp/r.conf")
    assert fragment in str(e.value) and "/tmp/r.conf" in str(e.value)


def test_conf_load(tmp_path):
    p = tmp_path / "registries.conf"
    p.write_text(CONF)
    assert len(rc.load_registries_conf(str(p)).registries) == 5
    with pytest.raises(RocketError, match="registries_conf: cannot read .*missing"):
        rc.load_registries_conf(str(tmp_path / "missing"))
    p.write_bytes(b"\xff\xfe")
    with pytest.raises(RocketError, match="not UTF-8"):
        rc.load_registries_conf(str(p))


# --------------------------------------------------------------------------- auth

def _auth(user, password):
    return base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def test_auth_files_in_order(tmp_path, monkeypatch):
    xdg = tmp_path / "run"
    home = tmp_path / "home"
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    monkeypatch.setenv("HOME", str(home))
    assert ra.auth_file_paths()[0] == str(xdg / "containers" / "auth.json")
    assert ra.auth_file_paths()[-1] == str(home / ".docker" / "config.json")
    assert ra.default_auth_file() == str(xdg / "containers" / "auth.json")
    assert ra.find_credentials("registry.example") is None
    (home / ".docker").mkdir(parents=True)
    (home / ".docker" / "config.json").write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _auth("hub", "pw1")},
        "registry.example": {"auth": _auth("docker", "pw2")},
        "registry.example/team": {"auth": _auth("team", "pw3")}}}))
    assert ra.find_credentials("docker.io")[:2] == ("hub", "pw1")
    assert ra.find_credentials("registry.example")[:2] == ("docker", "pw2")
    assert ra.find_credentials("registry.example", "team/app")[:2] == ("team", "pw3")
    assert ra.find_credentials("registry.example", "other/app")[:2] == ("docker", "pw2")
    # containers' file comes first.
    (xdg / "containers").mkdir(parents=True)
    (xdg / "containers" / "auth.json").write_text(json.dumps({"auths": {"registry.example": {"auth": _auth("podman", "x")}}}))
    creds = ra.find_credentials("registry.example")
    assert creds[:2] == ("podman", "x") and creds.source == str(xdg / "containers" / "auth.json")
    # An explicit file is the only one read.
    only = tmp_path / "only.json"
    only.write_text(json.dumps({"auths": {}}))
    assert ra.find_credentials("registry.example", auth_file=str(only)) is None
    # $REGISTRY_AUTH_FILE: read first, and where registry_login writes by default.
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(tmp_path / "env.json"))
    assert ra.default_auth_file() == str(tmp_path / "env.json")
    assert ra.auth_file_paths()[:2] == [str(tmp_path / "env.json"), str(xdg / "containers" / "auth.json")]
    ra.write_entry(ra.default_auth_file(), "registry.example", "env", "pw")
    assert ra.find_credentials("registry.example")[:2] == ("env", "pw")
    with pytest.raises(rr.RegistryError, match="auth_file .* does not exist"):
        ra.find_credentials("registry.example", auth_file=str(tmp_path / "nope.json"))


@pytest.mark.parametrize("content, fragment", [
    ("{not json", "is not valid JSON"),
    ("[]", "is not a JSON object"),
    ('{"auths": []}', "'auths' is not an object"),
    ('{"auths": {"registry.example": {"auth": "!!!"}}}', "not base64 of user:password"),
    ('{"auths": {"registry.example": {"auth": "%s"}}}' % base64.b64encode(b"nocolon").decode(), "not base64"),
    ('{"auths": {}, "credHelpers": {"registry.example": "secretservice"}}', "credential helpers are not run"),
])
def test_auth_file_refused(tmp_path, content, fragment):
    p = tmp_path / "auth.json"
    p.write_text(content)
    with pytest.raises(rr.RegistryError) as e:
        ra.find_credentials("registry.example", auth_file=str(p))
    assert fragment in str(e.value) and str(p) in str(e.value)
    assert "secretservice" not in str(e.value) or "credential helpers" in str(e.value)


def test_auth_write_remove(tmp_path):
    f = tmp_path / "dir" / "auth.json"
    assert ra.read_entry(str(f), "127.0.0.1:5000") is None
    assert ra.write_entry(str(f), "127.0.0.1:5000", "u", "p:w") is True
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(f.parent).st_mode) == 0o700
    assert ra.write_entry(str(f), "127.0.0.1:5000", "u", "p:w") is False   # unchanged
    assert ra.read_entry(str(f), "127.0.0.1:5000")[:2] == ("u", "p:w")
    # Other entries and keys survive; a changed password rewrites.
    doc = json.loads(f.read_text())
    doc["auths"]["other.example"] = {"auth": _auth("o", "o")}
    doc["credHelpers"] = {"x.example": "helper"}
    f.write_text(json.dumps(doc))
    assert ra.write_entry(str(f), "127.0.0.1:5000", "u", "new") is True
    doc = json.loads(f.read_text())
    assert set(doc["auths"]) == {"127.0.0.1:5000", "other.example"} and doc["credHelpers"] == {"x.example": "helper"}
    assert ra.remove_entry(str(f), "127.0.0.1:5000") is True
    assert ra.remove_entry(str(f), "127.0.0.1:5000") is False
    assert set(json.loads(f.read_text())["auths"]) == {"other.example"}
    assert stat.S_IMODE(os.stat(f).st_mode) == 0o600
    assert [n for n in os.listdir(f.parent) if n != "auth.json"] == []   # no temporary file left
    assert ra.remove_entry(str(tmp_path / "absent.json"), "x.example") is False
    with pytest.raises(rr.RegistryError, match="username"):
        ra.write_entry(str(f), "x.example", "a:b", "p")


def test_credentials_never_shown():
    creds = ra.Credentials("user", "hunter2", "module")
    for text in (repr(creds), str(creds), "%s" % (creds,), repr([creds])):
        assert "hunter2" not in text
    assert ra.basic_header(creds) == "Basic " + _auth("user", "hunter2")


@pytest.mark.parametrize("header, expected", [
    ('Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
     [("bearer", {"realm": "https://auth.example/token", "service": "registry.example",
                  "scope": "repository:a/b:pull,push"})]),
    ('Basic realm="Registry Realm"', [("basic", {"realm": "Registry Realm"})]),
    ('basic realm=simple, Bearer realm="r", error="insufficient_scope"',
     [("basic", {"realm": "simple"}), ("bearer", {"realm": "r", "error": "insufficient_scope"})]),
    ('Bearer realm="with \\"quote\\", comma"', [("bearer", {"realm": 'with "quote", comma'})]),
    ("Basic", [("basic", {})]),
    ("", []),
    ('Bearer realm="unterminated', []),
    ("=,=,", []),
])
def test_challenges(header, expected):
    assert [(c.scheme, c.params) for c in ra.parse_challenges(header)] == expected


def test_token_cache_lifetimes():
    now = [1000.0]
    cache = ra.TokenCache(clock=lambda: now[0])
    key = ("https://auth.example/token", "svc", "repository:a:pull", "u")
    cache.put(key, "t1", 300)
    assert cache.get(key) == "t1"
    assert cache.get(key[:2] + ("repository:b:pull", "u")) is None   # per scope
    now[0] += 269
    assert cache.get(key) == "t1"
    now[0] += 22   # within the safety margin (10 s) of its end
    assert cache.get(key) is None
    cache.put(key, "t2", None)   # the spec's default of 60 s
    now[0] += 55
    assert cache.get(key) is None


# --------------------------------------------------------------------------- platforms

INDEX = {"schemaVersion": 2, "mediaType": cl.OCI_INDEX, "manifests": [
    {"mediaType": cl.OCI_MANIFEST, "digest": D1, "size": 1, "platform": {"os": "linux", "architecture": "amd64"}},
    {"mediaType": cl.OCI_MANIFEST, "digest": D2, "size": 1,
     "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
    {"mediaType": cl.OCI_MANIFEST, "digest": "sha256:" + "c" * 64, "size": 1,
     "platform": {"os": "linux", "architecture": "arm", "variant": "v6"}},
    {"mediaType": cl.OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 1,
     "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
    {"mediaType": cl.OCI_MANIFEST, "digest": "sha256:" + "e" * 64, "size": 1,
     "platform": {"os": "unknown", "architecture": "unknown"}},
]}


def test_select_platform():
    assert cl.select_platform(INDEX, "linux", "amd64")["digest"] == D1
    assert cl.select_platform(INDEX, "linux", "arm64")["digest"] == D2        # v8 is arm64's only variant
    assert cl.select_platform(INDEX, "linux", "arm64", "v8")["digest"] == D2
    assert cl.select_platform(INDEX, "linux", "arm", "v7")["digest"] == "sha256:" + "d" * 64
    assert cl.select_platform(INDEX, "linux", "arm", "v6")["digest"] == "sha256:" + "c" * 64
    host = cl.parse_platform(None)
    if (host.os, host.architecture) in (("linux", "amd64"), ("linux", "arm64")):
        assert cl.select_platform(INDEX)["digest"] in (D1, D2)
    with pytest.raises(RocketError) as e:
        cl.select_platform(INDEX, "linux", "s390x", what="index of docker://x/y:1")
    text = str(e.value)
    assert "index of docker://x/y:1 has no image for platform linux/s390x" in text
    assert "linux/amd64, linux/arm64, linux/arm/v6, linux/arm/v7" in text and "unknown" not in text
    with pytest.raises(RocketError, match="has no image for platform linux/arm/v5"):
        cl.select_platform(INDEX, "linux", "arm", "v5")
    bad = {"manifests": [{"mediaType": cl.OCI_MANIFEST, "digest": "sha256:12",
                          "platform": {"os": "linux", "architecture": "amd64"}}]}
    with pytest.raises(RocketError, match="not a digest"):
        cl.select_platform(bad, "linux", "amd64")
    with pytest.raises(RocketError, match="'manifests' is not a list"):
        cl.select_platform({"manifests": {}}, "linux", "amd64")


@pytest.mark.parametrize("text, expected", [
    ("linux/amd64", ("linux", "amd64", "")),
    ("linux/arm64/v8", ("linux", "arm64", "v8")),
    ("Linux/ARM/v7", ("linux", "arm", "v7")),
])
def test_parse_platform(text, expected):
    assert tuple(cl.parse_platform(text)) == expected


@pytest.mark.parametrize("text", ["linux", "linux/", "/amd64", "linux/amd64/v8/x", "linux/am d64"])
def test_parse_platform_refused(text):
    with pytest.raises(RocketError, match="platform: .* is not os/architecture"):
        cl.parse_platform(text)


def test_make_deps_installs_the_registry_tools():
    """A CI machine that happens to have them must not hide a missing install step."""
    from tests.support import ROOT

    with open(os.path.join(ROOT, "tools", "debian-packages.sh")) as f:
        text = f.read()
    pkgs = text.split('PKGS="', 1)[1].split('"', 1)[0].split()
    for pkg in ("docker-registry", "skopeo", "apache2-utils", "openssl"):
        assert pkg in pkgs
        assert "#   " in text and pkg in text.split("set -eu", 1)[0]   # and the reason is written
