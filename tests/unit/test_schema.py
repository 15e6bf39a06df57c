"""Tests of stage0.schema: appc names, labels, quantities, isolators and manifests."""
import copy
import json
import os
from decimal import Decimal
from pathlib import Path

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import schema
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError

# The spec's examples and names, carried in the checkout (tests/fixtures/appc/NOTICE).
CONFORMANCE = Path(__file__).resolve().parents[1] / "fixtures" / "appc"


def _names():
    return json.loads((CONFORMANCE / "names.json").read_text())


def _examples():
    return sorted((CONFORMANCE / "examples").glob("*.json"))


def _example(name):
    return json.loads((CONFORMANCE / "examples" / name).read_text())


def _parse(doc):
    """Parse with the parser the document's acKind calls for (doc: dict, str or bytes)."""
    probe = doc if isinstance(doc, dict) else json.loads(doc)
    kind = probe.get("acKind")
    return schema.parse_pod_manifest(doc) if kind == "PodManifest" else schema.parse_image_manifest(doc)


def _fails(func, *args, path=None, value=None, **kwargs):
    """Call func expecting a ValidationError; check it names the path and the value."""
    with pytest.raises(ValidationError) as info:
        func(*args, **kwargs)
    err = info.value
    text = str(err)
    if path is not None:
        assert path in err.path, (err.path, text)
        assert text.startswith(err.path + ": "), text
    if value is not None:
        assert value in text, text
    return err


def test_conformance_data_present():
    assert (CONFORMANCE / "names.json").is_file(), f"no conformance data under {CONFORMANCE}"
    assert len(_examples()) >= 3


# --------------------------------------------------------------------------- names

_N = _names() if (CONFORMANCE / "names.json").is_file() else {"ac_identifier": {"good": [], "bad": []},
                                                              "ac_name": {"good": [], "bad": []}}


@pytest.mark.parametrize("name", _N["ac_identifier"]["good"])
def test_ac_identifier_good(name):
    assert schema.validate_ac_identifier(name) == name
    assert schema.AC_IDENTIFIER_RE.match(name)


@pytest.mark.parametrize("name", _N["ac_identifier"]["bad"])
def test_ac_identifier_bad(name):
    _fails(schema.validate_ac_identifier, name, "labels[0].name", path="labels[0].name",
           value=json.dumps(name))


@pytest.mark.parametrize("name", _N["ac_name"]["good"])
def test_ac_name_good(name):
    assert schema.validate_ac_name(name) == name


@pytest.mark.parametrize("name", _N["ac_name"]["bad"])
def test_ac_name_bad(name):
    _fails(schema.validate_ac_name, name, "apps[1].name", path="apps[1].name", value=json.dumps(name))


@pytest.mark.parametrize("name", ["a//b", "a..b", "a/-b", "a~/b", "a-~b", "a/~", "~a/b"])
def test_ac_identifier_no_separator_runs(name):
    """The spec regex allows one separator between alphanumerics; "/~" is the only pair allowed."""
    _fails(schema.validate_ac_identifier, name, path="name")


@pytest.mark.parametrize("regex,good", [
    (schema.AC_IDENTIFIER_RE, "example.com/app"),
    (schema.AC_NAME_RE, "app"),
    (schema.ENV_NAME_RE, "PATH"),
])
def test_regexes_reject_trailing_newline(regex, good):
    assert regex.match(good)
    assert not regex.match(good + "\n")


@pytest.mark.parametrize("func", [schema.validate_ac_identifier, schema.validate_ac_name])
@pytest.mark.parametrize("value", [None, 1, ["a"], {"a": 1}, True])
def test_names_wrong_type(func, value):
    _fails(func, value, "x.name", path="x.name")


@pytest.mark.parametrize("name", ["PATH", "_x", "a.b-c", "A1"])
def test_env_name_good(name):
    assert schema.validate_env_name(name, "env") == name


@pytest.mark.parametrize("name", ["1X", "", "A B", "A=B", "-A", "A\n", "é"])
def test_env_name_bad(name):
    _fails(schema.validate_env_name, name, "app.environment[2].name", path="app.environment[2].name")


def test_env_name_message_exact():
    err = _fails(schema.validate_env_name, "1X", "app.environment[2].name")
    assert str(err) == 'app.environment[2].name: "1X" is not a valid environment variable name'
    assert err.value == "1X"


# --------------------------------------------------------------------------- image IDs

FULL_ID = "sha512-" + "ab" * 64


def test_image_id():
    assert schema.parse_image_id(FULL_ID) == FULL_ID
    assert schema.parse_image_id("sha512-ab", allow_prefix=True) == "sha512-ab"
    assert schema.parse_image_id(FULL_ID, allow_prefix=True) == FULL_ID


@pytest.mark.parametrize("text,prefix", [
    ("sha512-ab", False), ("sha512-a", True), (FULL_ID.upper(), False), ("SHA512-" + "ab" * 64, True),
    ("sha256-" + "ab" * 32, True), ("ab" * 64, False), (FULL_ID + "a", False), (FULL_ID + "\n", False),
    ("sha512-" + "g" * 128, False), ("sha512-" + "ab" * 64 + "00", True), (None, False), (12, True),
])
def test_image_id_bad(text, prefix):
    _fails(schema.parse_image_id, text, "apps[0].image.id", allow_prefix=prefix, path="apps[0].image.id")


# --------------------------------------------------------------------------- labels

def _labels(**kw):
    return [{"name": k, "value": v} for k, v in kw.items()]


@pytest.mark.parametrize("labels", [
    _labels(os="linux", arch="amd64"), _labels(os="linux", arch="s390x"), _labels(os="freebsd", arch="arm"),
    _labels(os="darwin", arch="x86_64"), _labels(arch="anything"), _labels(os="linux"),
    _labels(version="1.0.0", env="canary"), [],
])
def test_labels_good(labels):
    assert schema.validate_labels(labels) is labels


@pytest.mark.parametrize("labels,path,value", [
    (_labels(os="linux", arch="x86_64"), "labels[1].value", '"x86_64"'),
    (_labels(arch="arm", os="darwin"), "labels[0].value", '"arm"'),
    (_labels(os="windows"), "labels[0].value", '"windows"'),
    ([{"name": "name", "value": "x"}], "labels[0].name", '"name"'),
    ([{"name": "a", "value": "1"}, {"name": "a", "value": "2"}], "labels[1].name", '"a"'),
    ([{"name": "A", "value": "1"}], "labels[0].name", '"A"'),
    ([{"name": "a", "value": 1}], "labels[0].value", "1"),
    ([{"name": "a"}], "labels[0].value", "<missing>"),
    ([{"name": "a", "value": None}], "labels[0].value", "null"),
    (["os=linux"], "labels[0]", '"os=linux"'),
    ({"os": "linux"}, "labels", '"os"'),
    ("os=linux", "labels", '"os=linux"'),
])
def test_labels_bad(labels, path, value):
    _fails(schema.validate_labels, labels, path=path, value=value)


def test_labels_dict_round_trip():
    labels = {"version": "1.0", "os": "linux", "arch": "amd64", "z": "", "a": "x"}
    as_list = schema.dict_to_labels(labels)
    assert [item["name"] for item in as_list] == ["version", "os", "arch", "z", "a"]
    assert schema.labels_to_dict(as_list) == labels
    assert list(schema.labels_to_dict(as_list)) == list(labels)
    assert schema.labels_to_dict(None) == {} and schema.dict_to_labels(None) == []
    _fails(schema.dict_to_labels, {"os": "linux", "arch": "sparc"}, path="labels[1].value")
    _fails(schema.labels_to_dict, [{"name": "x"}], path="labels[0].value")


# --------------------------------------------------------------------------- annotations

@pytest.mark.parametrize("name,value", [
    ("created", "2014-10-27T19:32:27.67021798Z"), ("created", "2014-10-27T19:32:27+02:00"),
    ("created", "2016-12-31T23:59:60Z"), ("homepage", "http://example.com/x"),
    ("documentation", "https://example.com/docs"), ("authors", "anything at all"),
])
def test_annotations_good(name, value):
    anns = [{"name": name, "value": value}]
    assert schema.validate_annotations(anns, "annotations") is anns


@pytest.mark.parametrize("name,value", [
    ("created", "2014-10-27"), ("created", "yesterday"), ("created", "2014-13-27T19:32:27Z"),
    ("created", "2014-02-30T19:32:27Z"), ("created", "2014-10-27T25:32:27Z"), ("created", "2014-10-27T19:32:27"),
    ("created", "2014-10-27T19:32:27Z\n"), ("homepage", "ftp://example.com"), ("homepage", "example.com"),
    ("documentation", "https://"), ("documentation", "javascript:alert(1)"),
])
def test_annotations_bad_format(name, value):
    _fails(schema.validate_annotations, [{"name": "x", "value": "y"}, {"name": name, "value": value}],
           "apps[0].annotations", path="apps[0].annotations[1].value", value=json.dumps(value)[:20])


def test_annotations_duplicate_and_types():
    dup = [{"name": "a", "value": "1"}, {"name": "a", "value": "2"}]
    _fails(schema.validate_annotations, dup, "annotations", path="annotations[1].name", value='"a"')
    _fails(schema.validate_annotations, [{"name": "a", "value": ["x"]}], "annotations",
           path="annotations[0].value")
    _fails(schema.validate_annotations, {"a": "b"}, "annotations", path="annotations")


# --------------------------------------------------------------------------- quantities

@pytest.mark.parametrize("text,expected", [
    ("1", Decimal(1)), ("1G", Decimal(10 ** 9)), ("1Gi", Decimal(2 ** 30)), ("128M", Decimal(128 * 10 ** 6)),
    ("128Mi", Decimal(128 * 2 ** 20)), ("1k", Decimal(1000)), ("1Ki", Decimal(1024)), ("500m", Decimal("0.5")),
    ("20m", Decimal("0.02")), ("100u", Decimal("0.0001")), ("5n", Decimal("0.000000005")),
    ("1e3", Decimal(1000)), ("1E3", Decimal(1000)), ("1e-3", Decimal("0.001")), ("2e+2", Decimal(200)),
    ("1T", Decimal(10 ** 12)), ("1P", Decimal(10 ** 15)), ("1E", Decimal(10 ** 18)), ("1Ei", Decimal(2 ** 60)),
    ("1.5Gi", Decimal(3 * 2 ** 29)), (".5", Decimal("0.5")), ("+4", Decimal(4)), ("-1", Decimal(-1)),
    ("0.1Ki", Decimal("102.4")),
])
def test_quantity(text, expected):
    assert schema.parse_quantity(text, "q") == expected


def test_quantity_is_exact_and_integral_form():
    assert str(schema.parse_quantity("1G", "q")) == "1000000000"
    assert schema.parse_quantity("123456789012345678901234567890123Ei", "q") == \
        Decimal(123456789012345678901234567890123 * 2 ** 60)


@pytest.mark.parametrize("text", [
    "", "G", "1.2.3", "1Gi2", "1K", "1Kb", "1gi", "1e", "1 G", " 1", "1G\n", "1..2", "--1", "abc", "1ee3",
    "1e99999", "0x10",
])
def test_quantity_bad(text):
    _fails(schema.parse_quantity, text, "app.isolators[0].value.limit", path="app.isolators[0].value.limit",
           value=json.dumps(text))


@pytest.mark.parametrize("value", [None, 1, 1.5, ["1G"]])
def test_quantity_wrong_type(value):
    _fails(schema.parse_quantity, value, "limit", path="limit")


# --------------------------------------------------------------------------- isolators

def _iso(name, value):
    return {"name": name, "value": value}


@pytest.mark.parametrize("iso", [
    _iso("resource/cpu", {"limit": "500m"}), _iso("resource/cpu", {"request": "100m", "limit": "2"}),
    _iso("resource/memory", {"request": "128M", "limit": "1G"}), _iso("resource/memory", {"limit": "1.5Gi"}),
    _iso("resource/memory", {"limit": "1G", "default": False}),
    _iso("resource/block-bandwidth", {"default": True, "limit": "10M"}),
    _iso("resource/block-iops", {"default": True, "limit": "1000"}),
    _iso("resource/network-bandwidth", {"default": True, "limit": "1G"}),
    _iso("os/linux/capabilities-retain-set", {"set": ["CAP_NET_ADMIN", "CAP_CHECKPOINT_RESTORE"]}),
    _iso("os/linux/capabilities-remove-set", {"set": ["CAP_SYS_ADMIN"]}),
    _iso("os/linux/no-new-privileges", True),
    _iso("os/linux/seccomp-remove-set", {"set": ["reboot", "@appc.io/all"], "errno": "EPERM"}),
    _iso("os/linux/seccomp-retain-set", {"set": ["@rkt/default-whitelist"]}),
    _iso("os/linux/oom-score-adj", -1000), _iso("os/linux/oom-score-adj", 1000),
    _iso("os/linux/cpu-shares", 2), _iso("os/linux/cpu-shares", 1024),
    _iso("os/linux/selinux-context", {"user": "system_u", "role": "system_r", "type": "svirt_lxc_net_t",
                                      "level": "s0:c1,c2"}),
    _iso("os/linux/apparmor-profile", {"name": "docker-default"}), _iso("os/linux/apparmor-profile", {}),
    _iso("os/unix/sysctl", {"net.ipv4.tcp_fin_timeout": "6"}),
    _iso("example.com/custom", {"anything": [1, 2]}), _iso("example.com/custom", None),
])
def test_isolator_good(iso):
    before = copy.deepcopy(iso)
    assert schema.validate_isolator(iso, "isolators[0]") is iso
    assert iso == before


@pytest.mark.parametrize("iso,path", [
    (_iso("resource/memory", {"limit": "-1G"}), "value.limit"),
    (_iso("resource/memory", {"limit": "0"}), "value.limit"),
    (_iso("resource/memory", {"limit": "500m"}), "value.limit"),
    (_iso("resource/memory", {"limit": "1.5"}), "value.limit"),
    (_iso("resource/memory", {"request": "2G", "limit": "1G"}), "value.request"),
    (_iso("resource/memory", {"limit": 1024}), "value.limit"),
    (_iso("resource/memory", {"limit": "1G", "default": True}), "value.default"),
    (_iso("resource/memory", "1G"), "value"),
    (_iso("resource/memory", ["1G"]), "value"),
    (_iso("resource/cpu", {"limit": "-500m"}), "value.limit"),
    (_iso("resource/cpu", {"limit": "lots"}), "value.limit"),
    (_iso("resource/block-bandwidth", {"limit": "10M"}), "value.default"),
    (_iso("resource/block-iops", {"default": "true", "limit": "10"}), "value.default"),
    (_iso("resource/network-bandwidth", {"default": True}), "value.limit"),
    (_iso("resource/network-bandwidth", {"default": True, "limit": "1G", "request": "1M"}), "value.request"),
    (_iso("os/linux/capabilities-retain-set", {"set": ["CAP_NOPE"]}), "value.set[0]"),
    (_iso("os/linux/capabilities-retain-set", {"set": ["cap_chown"]}), "value.set[0]"),
    (_iso("os/linux/capabilities-retain-set", {"set": []}), "value.set"),
    (_iso("os/linux/capabilities-retain-set", {"set": "CAP_CHOWN"}), "value.set"),
    (_iso("os/linux/capabilities-remove-set", {}), "value.set"),
    (_iso("os/linux/capabilities-remove-set", ["CAP_CHOWN"]), "value"),
    (_iso("os/linux/no-new-privileges", "true"), "value"),
    (_iso("os/linux/no-new-privileges", 1), "value"),
    (_iso("os/linux/seccomp-remove-set", {"set": ["Reboot"]}), "value.set[0]"),
    (_iso("os/linux/seccomp-remove-set", {"set": ["reboot"], "errno": "eperm"}), "value.errno"),
    (_iso("os/linux/seccomp-retain-set", {"set": []}), "value.set"),
    (_iso("os/linux/oom-score-adj", 1001), "value"),
    (_iso("os/linux/oom-score-adj", "5"), "value"),
    (_iso("os/linux/oom-score-adj", 5.0), "value"),
    (_iso("os/linux/oom-score-adj", True), "value"),
    (_iso("os/linux/cpu-shares", 1), "value"),
    (_iso("os/linux/selinux-context", {"user": "u", "role": "r", "type": "t"}), "value.level"),
    (_iso("os/linux/selinux-context", {"user": "u:x", "role": "r", "type": "t", "level": "s0"}), "value.user"),
    (_iso("os/linux/selinux-context", "u:r:t:s0"), "value"),
    (_iso("os/linux/apparmor-profile", "docker-default"), "value"),
    (_iso("os/unix/sysctl", {"kernel.x": 6}), "value.kernel.x"),
    (_iso("os/unix/sysctl", ["a=b"]), "value"),
    ({"name": "Resource/CPU", "value": {}}, "name"),
    ({"name": "resource/cpu"}, "value"),
    ({"value": True}, "name"),
    ("resource/cpu", ""),
])
def test_isolator_bad(iso, path):
    full = "app.isolators[3]" + ("." + path if path else "")
    _fails(schema.validate_isolator, iso, "app.isolators[3]", path=full)


def test_isolators_mutually_exclusive():
    caps = [_iso("os/linux/capabilities-retain-set", {"set": ["CAP_CHOWN"]}),
            _iso("os/linux/no-new-privileges", True),
            _iso("os/linux/capabilities-remove-set", {"set": ["CAP_KILL"]})]
    err = _fails(schema.validate_isolators, caps, "app.isolators", path="app.isolators[2].name",
                 value="os/linux/capabilities-remove-set")
    assert "capabilities-retain-set" in str(err)
    seccomp = [_iso("os/linux/seccomp-remove-set", {"set": ["reboot"]}),
               _iso("os/linux/seccomp-retain-set", {"set": ["read"]})]
    _fails(schema.validate_isolators, seccomp, "isolators", path="isolators[1].name")
    # one of each pair is fine, and retain+remove across pair kinds is fine
    ok = [caps[0], seccomp[0], caps[1]]
    assert schema.validate_isolators(ok, "isolators") is ok


def test_isolators_duplicate_and_type():
    dup = [_iso("resource/memory", {"limit": "1G"}), _iso("resource/memory", {"limit": "2G"})]
    _fails(schema.validate_isolators, dup, "isolators", path="isolators[1].name", value="resource/memory")
    _fails(schema.validate_isolators, {"resource/memory": {}}, "isolators", path="isolators")
    _fails(schema.validate_isolators, [None], "isolators", path="isolators[0]")


def test_constants():
    assert schema.AC_VERSION == "0.8.11"
    assert set(schema.DEFAULT_CAPABILITIES) <= schema.LINUX_CAPABILITIES
    assert len(schema.DEFAULT_CAPABILITIES) == 14
    assert len(schema.LINUX_CAPABILITIES) == 41 and "CAP_CHECKPOINT_RESTORE" in schema.LINUX_CAPABILITIES
    assert schema.CAPABILITY_NUMBERS["CAP_SYS_ADMIN"] == 21
    assert schema.CAPABILITY_NUMBERS["CAP_CHECKPOINT_RESTORE"] == 40
    assert len(schema.KNOWN_ISOLATORS) == 15
    assert schema.OS_ARCH["linux"] >= {"amd64", "aarch64", "s390x"} and "x86_64" not in schema.OS_ARCH["linux"]
    assert schema.OS_ARCH["darwin"] == frozenset({"x86_64", "i386"})


# --------------------------------------------------------------------------- app

def _app(**kw):
    app = {"exec": ["/bin/sh"], "user": "0", "group": "0"}
    app.update(kw)
    return app


@pytest.mark.parametrize("app", [
    _app(), _app(exec=["sh", "-c", ""]), {"user": "root", "group": "root"}, _app(exec=None),
    _app(workingDirectory="/srv"), _app(supplementaryGIDs=[0, 10]),
    _app(ports=[{"name": "http", "protocol": "tcp", "port": 65535}],
         mountPoints=[{"name": "data", "path": "/data", "readOnly": True}]),
    _app(ports=[{"name": "range", "protocol": "udp", "port": 65000, "count": 536}]),
    _app(eventHandlers=[{"name": "pre-start", "exec": ["/x"]}, {"name": "post-stop", "exec": ["y"]}]),
    _app(environment=[{"name": "A", "value": ""}, {"name": "B", "value": "1"}]),
])
def test_app_good(app):
    assert schema.validate_app(app) is app


@pytest.mark.parametrize("app,path", [
    (_app(user=""), "app.user"), ({"exec": ["/x"], "group": "0"}, "app.user"), (_app(group=None), "app.group"),
    (_app(user=0), "app.user"), (_app(exec="/bin/sh"), "app.exec"), (_app(exec=[""]), "app.exec[0]"),
    (_app(exec=["/bin/sh", 1]), "app.exec[1]"), (_app(workingDirectory="srv"), "app.workingDirectory"),
    (_app(workingDirectory=""), "app.workingDirectory"), (_app(supplementaryGIDs=[-1]), "app.supplementaryGIDs[0]"),
    (_app(supplementaryGIDs=["1"]), "app.supplementaryGIDs[0]"), (_app(supplementaryGIDs=5), "app.supplementaryGIDs"),
    (_app(eventHandlers=[{"name": "pre-start", "exec": ["/a"]}, {"name": "pre-start", "exec": ["/b"]}]),
     "app.eventHandlers[1].name"),
    (_app(eventHandlers=[{"name": "post-start", "exec": ["/a"]}]), "app.eventHandlers[0].name"),
    (_app(eventHandlers=[{"name": "pre-start", "exec": []}]), "app.eventHandlers[0].exec"),
    (_app(eventHandlers=[{"name": "pre-start"}]), "app.eventHandlers[0].exec"),
    (_app(environment=[{"name": "A", "value": "1"}, {"name": "A", "value": "2"}]), "app.environment[1].name"),
    (_app(environment={"A": "1"}), "app.environment"),
    (_app(environment=[{"name": "A", "value": 1}]), "app.environment[0].value"),
    (_app(mountPoints=[{"name": "data", "path": "data"}]), "app.mountPoints[0].path"),
    (_app(mountPoints=[{"name": "Data", "path": "/data"}]), "app.mountPoints[0].name"),
    (_app(mountPoints=[{"name": "d", "path": "/a"}, {"name": "d", "path": "/b"}]), "app.mountPoints[1].name"),
    (_app(mountPoints=[{"name": "d", "path": "/a", "readOnly": "yes"}]), "app.mountPoints[0].readOnly"),
    (_app(ports=[{"name": "p", "protocol": "tcp", "port": 0}]), "app.ports[0].port"),
    (_app(ports=[{"name": "p", "protocol": "tcp", "port": 65536}]), "app.ports[0].port"),
    (_app(ports=[{"name": "p", "protocol": "tcp", "port": 65000, "count": 537}]), "app.ports[0].count"),
    (_app(ports=[{"name": "p", "protocol": "tcp", "port": 80, "count": 0}]), "app.ports[0].count"),
    (_app(ports=[{"name": "p", "protocol": "icmp", "port": 80}]), "app.ports[0].protocol"),
    (_app(ports=[{"name": "p", "protocol": "tcp", "port": "80"}]), "app.ports[0].port"),
    (_app(ports=[{"name": "p", "protocol": "tcp", "port": 80},
                 {"name": "p", "protocol": "udp", "port": 81}]), "app.ports[1].name"),
    (_app(ports=[{"name": "p", "protocol": "tcp", "port": 80, "socketActivated": 1}]),
     "app.ports[0].socketActivated"),
    (_app(isolators=[{"name": "resource/memory", "value": {"limit": "-5"}}]), "app.isolators[0].value.limit"),
    ("app", "app"), ([], "app"),
])
def test_app_bad(app, path):
    _fails(schema.validate_app, app, path=path)


# --------------------------------------------------------------------------- examples, round trip

@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_examples_validate(path):
    raw = path.read_bytes()
    doc = _parse(raw)
    assert doc == json.loads(raw)  # nothing added, nothing dropped
    assert _parse(raw.decode("utf-8")) == doc
    as_dict = json.loads(raw)
    assert _parse(as_dict) is as_dict


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_round_trip(path):
    doc = _parse(path.read_bytes())
    dumped = schema.dump_manifest(doc)
    assert isinstance(dumped, bytes)
    again = _parse(dumped)
    assert again == doc
    assert list(again) == list(doc)  # key order kept
    assert schema.dump_manifest(again) == dumped  # deterministic
    assert schema.dump_manifest(copy.deepcopy(doc)) == dumped


def test_dump_manifest_format():
    doc = {"b": 1, "a": ["é", None, True]}
    assert schema.dump_manifest(doc) == '{"b":1,"a":["é",null,true]}'.encode("utf-8")
    _fails(schema.dump_manifest, {"a": float("nan")})
    _fails(schema.dump_manifest, {"a": {1, 2}})


def test_unknown_keys_and_isolators_kept():
    doc = _example("image.json")
    doc["x-extension"] = {"nested": [1, 2, {"k": None}]}
    doc["app"]["criLabels"] = {"a": "b"}
    doc["app"]["isolators"].append({"name": "example.com/gpu", "value": {"count": 1}})
    doc["labels"][0]["extra"] = True
    expected = copy.deepcopy(doc)
    out = schema.parse_image_manifest(schema.dump_manifest(doc))
    assert out == expected
    assert out["x-extension"] == {"nested": [1, 2, {"k": None}]}


def test_null_optional_fields_accepted_and_kept():
    pod = _example("pod_runtime.json")
    pod["annotations"] = None
    pod["isolators"] = None
    pod["apps"][1]["mounts"].append({"volume": "dbvolume", "path": "/mnt/other", "readOnly": None})
    out = schema.parse_pod_manifest(schema.dump_manifest(pod))
    assert out["annotations"] is None
    image = _example("image.json")
    image["app"] = None
    image["annotations"] = []
    assert schema.parse_image_manifest(image)["app"] is None


def test_dependency_image_ids():
    image = _example("image.json")
    assert image["dependencies"][0]["imageID"] == schema.PLACEHOLDER_IMAGE_ID
    for good in (FULL_ID, "sha512-8d3f"):
        image["dependencies"][0]["imageID"] = good
        schema.parse_image_manifest(image)
    for bad in ("sha512-", "sha512-xyz", "sha512-....", "md5-abc", 5):
        image["dependencies"][0]["imageID"] = bad
        _fails(schema.parse_image_manifest, image, path="dependencies[0].imageID")


# Bad documents: (example file, mutation, expected path, expected value text).
def _set(keys, value):
    def mutate(doc):
        target = doc
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value
    return mutate


def _delete(keys):
    def mutate(doc):
        target = doc
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]
    return mutate


def _append(keys, value):
    def mutate(doc):
        target = doc
        for key in keys:
            target = target[key]
        target.append(value)
    return mutate


BAD_DOCS = [
    ("image.json", _set(["acKind"], "PodManifest"), "acKind", '"PodManifest"'),
    ("image.json", _delete(["acKind"]), "acKind", "<missing>"),
    ("image.json", _set(["acVersion"], "0.8"), "acVersion", '"0.8"'),
    ("image.json", _set(["acVersion"], "v0.8.11"), "acVersion", '"v0.8.11"'),
    ("image.json", _set(["acVersion"], 0.8), "acVersion", "0.8"),
    ("image.json", _delete(["name"]), "name", "<missing>"),
    ("image.json", _set(["name"], None), "name", "null"),
    ("image.json", _set(["name"], "Example.com/app"), "name", '"Example.com/app"'),
    ("image.json", _set(["labels"], "os=linux"), "labels", '"os=linux"'),
    ("image.json", _set(["labels", 1, "value"], "x86_64"), "labels[1].value", '"x86_64"'),
    ("image.json", _append(["labels"], {"name": "os", "value": "linux"}), "labels[3].name", '"os"'),
    ("image.json", _set(["app", "user"], ""), "app.user", '""'),
    ("image.json", _delete(["app", "group"]), "app.group", "<missing>"),
    ("image.json", _set(["app", "environment", 0, "name"], "1X"), "app.environment[0].name", '"1X"'),
    ("image.json", _set(["app", "isolators", 1, "value", "limit"], "-1G"), "app.isolators[1].value.limit", '"-1G"'),
    ("image.json", _append(["app", "isolators"], {"name": "os/linux/capabilities-remove-set",
                                                  "value": {"set": ["CAP_KILL"]}}),
     "app.isolators[5].name", "capabilities-remove-set"),
    ("image.json", _append(["app", "isolators"], {"name": "resource/cpu", "value": {"limit": "1"}}),
     "app.isolators[5].name", '"resource/cpu"'),
    ("image.json", _set(["app", "ports", 0, "port"], 70000), "app.ports[0].port", "70000"),
    ("image.json", _set(["app", "mountPoints", 0, "path"], "var/lib/db"), "app.mountPoints[0].path", '"var/lib/db"'),
    ("image.json", _set(["app", "eventHandlers", 1, "name"], "pre-start"), "app.eventHandlers[1].name",
     '"pre-start"'),
    ("image.json", _set(["dependencies"], {"imageName": "x"}), "dependencies", "imageName"),
    ("image.json", _delete(["dependencies", 0, "imageName"]), "dependencies[0].imageName", "<missing>"),
    ("image.json", _set(["dependencies", 0, "size"], -1), "dependencies[0].size", "-1"),
    ("image.json", _set(["dependencies", 0, "labels", 0, "value"], "plan9"), "dependencies[0].labels[0].value",
     '"plan9"'),
    ("image.json", _set(["pathWhitelist", 2], "opt/libs"), "pathWhitelist[2]", '"opt/libs"'),
    ("image.json", _set(["annotations", 1, "value"], "last tuesday"), "annotations[1].value", '"last tuesday"'),
    ("image.json", _set(["annotations", 3, "value"], "example.com"), "annotations[3].value", '"example.com"'),
    ("pod_runtime.json", _set(["acKind"], "ImageManifest"), "acKind", '"ImageManifest"'),
    ("pod_runtime.json", _delete(["apps"]), "apps", "<missing>"),
    ("pod_runtime.json", _set(["apps"], []), "apps", "[]"),
    ("pod_runtime.json", _set(["apps"], {"name": "x"}), "apps", '"name"'),
    ("pod_runtime.json", _set(["apps", 1, "name"], "reduce-worker"), "apps[1].name", '"reduce-worker"'),
    ("pod_runtime.json", _set(["apps", 0, "name"], "reduce_worker"), "apps[0].name", '"reduce_worker"'),
    ("pod_runtime.json", _delete(["apps", 0, "image"]), "apps[0].image", "<missing>"),
    ("pod_runtime.json", _set(["apps", 0, "image", "id"], "sha512-abc"), "apps[0].image.id", '"sha512-abc"'),
    ("pod_runtime.json", _set(["apps", 0, "app", "exec"], "/usr/bin/reduce-worker"), "apps[0].app.exec",
     "reduce-worker"),
    ("pod_runtime.json", _set(["apps", 0, "readOnlyRootFS"], "true"), "apps[0].readOnlyRootFS", '"true"'),
    ("pod_runtime.json", _set(["apps", 1, "mounts", 1, "volume"], "nothere"), "apps[1].mounts[1].volume",
     '"nothere"'),
    ("pod_runtime.json", _set(["apps", 1, "mounts", 1, "path"], "mnt/out"), "apps[1].mounts[1].path", '"mnt/out"'),
    ("pod_runtime.json", _set(["apps", 1, "mounts", 1, "path"], "/mnt/db"), "apps[1].mounts[1].path", '"/mnt/db"'),
    ("pod_runtime.json", _set(["volumes", 0, "kind"], "tmpfs"), "volumes[0].kind", '"tmpfs"'),
    ("pod_runtime.json", _delete(["volumes", 0, "source"]), "volumes[0].source", "<missing>"),
    ("pod_runtime.json", _set(["volumes", 0, "source"], "opt/db"), "volumes[0].source", '"opt/db"'),
    ("pod_runtime.json", _set(["volumes", 1, "source"], "/tmp"), "volumes[1].source", '"/tmp"'),
    ("pod_runtime.json", _set(["volumes", 1, "mode"], "0999"), "volumes[1].mode", '"0999"'),
    ("pod_runtime.json", _set(["volumes", 1, "mode"], 755), "volumes[1].mode", "755"),
    ("pod_runtime.json", _set(["volumes", 1, "uid"], -1), "volumes[1].uid", "-1"),
    ("pod_runtime.json", _set(["volumes", 1, "recursive"], True), "volumes[1].recursive", "true"),
    ("pod_runtime.json", _set(["volumes", 0, "mode"], "0755"), "volumes[0].mode", '"0755"'),
    ("pod_runtime.json", _set(["volumes", 0, "readOnly"], "yes"), "volumes[0].readOnly", '"yes"'),
    ("pod_runtime.json", _set(["volumes", 1, "name"], "dbvolume"), "volumes[1].name", '"dbvolume"'),
    ("pod_runtime.json", _set(["isolators", 1, "value"], {"net.x": 6}), "isolators[1].value.net.x", "6"),
    ("pod_runtime.json", _set(["annotations", 0, "name"], "IP"), "annotations[0].name", '"IP"'),
    ("pod_runtime.json", _set(["ports"], [{"name": "http", "hostPort": 0}]), "ports[0].hostPort", "0"),
    ("pod_runtime.json", _set(["ports"], [{"name": "http", "hostPort": 80, "hostIP": "300.1.1.1"}]),
     "ports[0].hostIP", '"300.1.1.1"'),
    ("pod_runtime.json", _set(["ports"], [{"name": "http", "hostPort": 80}, {"name": "http", "hostPort": 81}]),
     "ports[1].name", '"http"'),
    ("pod_runtime.json", _set(["ports"], [{"name": "http"}]), "ports[0].hostPort", "<missing>"),
    ("pod_template.json", _delete(["apps", 1, "image", "name"]), "apps[1].image.id", "<missing>"),
    ("pod_template.json", _set(["apps", 2, "image", "labels"], [{"name": "version", "value": 3}]),
     "apps[2].image.labels[0].value", "3"),
]


@pytest.mark.parametrize("example,mutate,path,value", BAD_DOCS,
                         ids=[f"{e}:{p}" for e, dummy_mutate, p, dummy_value in BAD_DOCS])
def test_bad_documents(example, mutate, path, value):
    doc = _example(example)
    mutate(doc)
    kind = json.loads((CONFORMANCE / "examples" / example).read_text())["acKind"]
    parser = schema.parse_pod_manifest if kind == "PodManifest" else schema.parse_image_manifest
    err = _fails(parser, doc, path=path, value=value)
    assert err.path == path, str(err)
    # the same document as bytes fails the same way
    err2 = _fails(parser, json.dumps(doc).encode("utf-8"))
    assert str(err2) == str(err)


def test_pod_good_variants():
    pod = _example("pod_runtime.json")
    pod["ports"] = [{"name": "health", "hostPort": 8080, "hostIP": "::1"},
                    {"name": "other", "hostPort": 8081, "hostIP": "127.0.0.1",
                     "podPort": {"name": "other", "protocol": "tcp", "port": 81}}]
    pod["volumes"][0]["recursive"] = False
    # a mount may name a mount point (older spec) instead of an absolute path
    pod["apps"][0]["mounts"] = [{"volume": "dbvolume", "path": "database"}]
    # an app-only volume
    pod["apps"][2]["mounts"] = [{"volume": "scratch", "path": "/tmp/s",
                                 "appVolume": {"name": "scratch", "kind": "empty"}}]
    assert schema.parse_pod_manifest(pod) is pod
    pod["apps"][2]["mounts"][0]["appVolume"]["name"] = "other"
    _fails(schema.parse_pod_manifest, pod, path="apps[2].mounts[0].appVolume.name")


@pytest.mark.parametrize("raw,text", [
    (b"\xff\xfe{}", "UTF-8"),
    (b"not json", "JSON"),
    (b"", "JSON"),
    (b'{"acKind": "ImageManifest",', "JSON"),
    (b"[]", "object"),
    (b'"ImageManifest"', "object"),
    (b"null", "object"),
    (b'{"acKind":"ImageManifest","acKind":"ImageManifest"}', "duplicate"),
    (b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"a","x":NaN}', "NaN"),
    (b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"a","x":Infinity}', "Infinity"),
    (b"[" * 100000 + b"]" * 100000, ""),
    (12, "number"),
    (None, "null"),
    (["acKind"], "list"),
])
def test_not_json(raw, text):
    for parser in (schema.parse_image_manifest, schema.parse_pod_manifest):
        err = _fails(parser, raw)
        assert text in str(err)


def test_dict_input_must_be_json():
    doc = _example("image.json")
    doc["x"] = (1, 2)
    _fails(schema.parse_image_manifest, doc, path="x")
    doc["x"] = {1: "a"}
    _fails(schema.parse_image_manifest, doc, path="x")
    doc["x"] = float("nan")
    _fails(schema.parse_image_manifest, doc, path="x")


def _paths(value, prefix=()):
    yield prefix
    if isinstance(value, dict):
        for key, sub in value.items():
            yield from _paths(sub, prefix + (key,))
    elif isinstance(value, list):
        for i, sub in enumerate(value):
            yield from _paths(sub, prefix + (i,))


@pytest.mark.parametrize("path", _examples(), ids=lambda p: p.name)
def test_wrong_types_anywhere_raise_validation_error_only(path):
    """Put every JSON type at every place of the examples: ValidationError or success, nothing else."""
    original = json.loads(path.read_bytes())
    failures = 0
    for keys in _paths(original):
        if not keys:
            continue
        for replacement in (None, 0, -1, 1.5, True, "", "x", [], [None], {}, {"name": None}):
            doc = copy.deepcopy(original)
            target = doc
            for key in keys[:-1]:
                target = target[key]
            target[keys[-1]] = replacement
            try:
                _parse(doc)
            except ValidationError:
                failures += 1
    assert failures > 100  # the sweep really exercised the error paths


# --------------------------------------------------------------------------- image references

@pytest.mark.parametrize("text,name,labels", [
    ("example.com/app:1.0.0,os=linux,arch=amd64", "example.com/app",
     {"version": "1.0.0", "os": "linux", "arch": "amd64"}),
    ("example.com/app", "example.com/app", {}),
    ("example.com/app:latest", "example.com/app", {"version": "latest"}),
    ("coreos.com/etcd,version=v3.1.0", "coreos.com/etcd", {"version": "v3.1.0"}),
    ("a,arch=whatever,env=canary", "a", {"arch": "whatever", "env": "canary"}),
    ("a:1.0.0+build.1-x,os=darwin,arch=x86_64", "a", {"version": "1.0.0+build.1-x", "os": "darwin",
                                                      "arch": "x86_64"}),
])
def test_image_reference(text, name, labels):
    got_name, got_labels = schema.parse_image_reference(text)
    assert (got_name, got_labels) == (name, labels)
    assert list(got_labels) == list(labels)
    formatted = schema.format_image_reference(got_name, got_labels)
    assert schema.parse_image_reference(formatted) == (name, labels)
    assert formatted.split(",", maxsplit=1)[0].startswith(name)
    if "version" in labels:
        assert formatted.split(",", maxsplit=1)[0] == f"{name}:{labels['version']}"


def test_format_image_reference_version_first():
    ref = schema.format_image_reference("example.com/app", {"os": "linux", "version": "2", "arch": "amd64"})
    assert ref == "example.com/app:2,os=linux,arch=amd64"
    assert schema.format_image_reference("a", None) == "a"
    _fails(schema.format_image_reference, "a", {"env": "x,y"}, path="image labels.env")
    _fails(schema.format_image_reference, "a", {"env": ""}, path="image labels.env")
    _fails(schema.format_image_reference, "A", {}, path="image")
    _fails(schema.format_image_reference, "a", {"os": "linux", "arch": "x86_64"}, path="image labels")


@pytest.mark.parametrize("text,path", [
    ("", "image"), ("Example.com/app", "image"), ("example.com/app:", "image"),
    ("example.com/app:1:2", "image"), ("example.com/app:1,version=1", "image labels.version"),
    ("example.com/app,os=linux,os=linux", "image labels.os"), ("example.com/app,os=", "image labels.os"),
    ("example.com/app,os", "image"), ("example.com/app,=x", "image labels"),
    ("example.com/app,Os=linux", "image labels.Os"), ("example.com/app,name=x", "image labels.name"),
    ("example.com/app,os=linux,arch=x86_64", "image labels.arch"), ("example.com/app,os=plan9", "image labels.os"),
    ("example.com/app,", "image"), ("example.com/app,a=b=c", "image"), ("example.com/app,env=a b", "image labels.env"),
    ("example.com/app:1.0 ", "image labels.version"), (None, "image"), (["a"], "image"),
])
def test_image_reference_bad(text, path):
    err = _fails(schema.parse_image_reference, text)
    assert err.path == path, str(err)


# --------------------------------------------------------------------------- import cost

def test_module_import_is_light():
    import subprocess
    import sys

    code = ("import sys; from ansible_collections.appc.rocket.plugins.module_utils.stage0 import schema; "
            "heavy = [m for m in ('decimal', 'ipaddress', 'urllib.parse', 'datetime', 'ansible') "
            "if m in sys.modules]; print(','.join(heavy))")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
