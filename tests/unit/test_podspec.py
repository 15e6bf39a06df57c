"""The desired-pod normal form, MergeEnvs and the difference tracker."""
import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import podspec
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError


def test_merge_envs_precedence_and_order():
    image = [{"name": "A", "value": "img"}, {"name": "B", "value": "img"}]
    out = podspec.merge_envs(image, True, [("B", "explicit"), ("C", "explicit")], host_env={"A": "host", "D": "host"})
    assert out == [{"name": "A", "value": "img"}, {"name": "B", "value": "explicit"},
                   {"name": "C", "value": "explicit"}, {"name": "D", "value": "host"}]
    assert podspec.merge_envs(image, False, [], host_env={"D": "host"}) == image


@pytest.mark.parametrize("value,err", [
    (["A=1", "A=2"], "twice"),
    (["NOEQUALS"], "NAME=VALUE"),
    ({"1X": "v"}, "environment variable name"),
    ("A=1", "dictionary or a list"),
])
def test_environment_errors(value, err):
    with pytest.raises(ValidationError, match=err):
        podspec.env_pairs(value, "environment")


def test_normalize_fills_defaults_and_names_apps():
    s = podspec.normalize_spec({"apps": ["example.com/Web_Server:1.0"]})
    app = s["apps"][0]
    assert app["name"] == "web-server" and app["image"] == "example.com/Web_Server:1.0"
    assert app["exec"] is None and app["read_only_rootfs"] is False and s["overlay"] == "auto"
    with pytest.raises(ValidationError, match=r"apps\[0\]\.bogus"):
        podspec.normalize_spec({"apps": [{"image": "x", "bogus": 1}]})
    with pytest.raises(ValidationError, match="at least one app"):
        podspec.normalize_spec({"apps": []})


def test_differences_field_by_field_with_secrets_redacted():
    a = podspec.normalize_spec({"apps": [{"image": "i", "exec": ["/a"]}], "secret_environment": {"TOKEN": "s3cr3t-one"}})
    stored = podspec.for_disk(a)
    assert "s3cr3t-one" not in repr(stored)
    assert podspec.differences(a, stored) == []
    b = podspec.normalize_spec({"apps": [{"image": "i", "exec": ["/b"]}], "secret_environment": {"TOKEN": "s3cr3t-two"}})
    diffs = {d["field"]: d for d in podspec.differences(b, stored)}
    assert set(diffs) == {"apps[0].exec", "secret_environment"}
    assert diffs["apps[0].exec"]["before"] == ["/a"] and diffs["apps[0].exec"]["after"] == ["/b"]
    assert "s3cr3t" not in repr(diffs)
    c = podspec.normalize_spec({"apps": [{"image": "i", "exec": ["/a"]}, {"image": "j"}],
                                "secret_environment": {"TOKEN": "s3cr3t-one"}})
    assert [d["field"] for d in podspec.differences(c, stored)] == ["apps[1]"]


# -- bad input fails at prepare, naming the field and the value (issue #13, finding 8) -----
def _one(app=None, volumes=None, **pod):
    return dict({"apps": [dict({"image": "example.com/x", "name": "a"}, **(app or {}))],
                 "volumes": volumes or []}, **pod)


def test_a_volume_with_a_source_but_no_kind_is_refused():
    with pytest.raises(ValidationError, match=r'volumes\[0\]\.source: "/srv/data" is given without kind: '
                       r"kind is required when source is given \(kind: host\)"):
        podspec.normalize_spec(_one(volumes=[{"name": "v", "source": "/srv/data"}]))
    assert podspec.normalize_spec(_one(volumes=[{"name": "v"}]))["volumes"][0]["kind"] == "empty"
    host = podspec.normalize_spec(_one(volumes=[{"name": "v", "kind": "host", "source": "/srv/data"}]))
    assert host["volumes"][0]["source"] == "/srv/data"


def test_the_modules_volume_without_kind_keeps_its_source_to_be_refused():
    from ansible_collections.appc.rocket.plugins.module_utils import pod_options

    params = {"image": "example.com/x", "volumes": [
        {"name": "v", "kind": None, "source": "/srv/data", "read_only": False, "recursive": True,
         "mode": "0755", "uid": 0, "gid": 0}]}
    raw = pod_options.raw_spec(params)
    with pytest.raises(ValidationError, match="kind is required when source is given"):
        podspec.normalize_spec(raw)


@pytest.mark.parametrize("spec, field", [
    (_one(name="p" * 129), "name"),
    (_one(app={"name": "a" * 129}), r"apps\[0\]\.name"),
    (_one(volumes=[{"name": "v" * 129}]), r"volumes\[0\]\.name"),
])
def test_names_too_long_for_a_file_name_are_refused(spec, field):
    with pytest.raises(ValidationError, match=field + r": .* bytes long; names are at most 128 bytes"):
        podspec.normalize_spec(spec)
    podspec.normalize_spec(_one(name="p" * 128, app={"name": "a" * 128}, volumes=[{"name": "v" * 128}]))


@pytest.mark.parametrize("app, volumes, field, why", [
    ({"mounts": [{"volume": "v", "path": "/data/../etc"}]}, [{"name": "v"}], r"apps\[0\]\.mounts\[0\]\.path",
     r'must not have a "\.\." component'),
    ({"working_dir": "/srv/.."}, None, r"apps\[0\]\.working_dir", r'must not have a "\.\." component'),
    ({}, [{"name": "v", "kind": "host", "source": "/srv/../etc"}], r"volumes\[0\]\.source",
     r'must not have a "\.\." component'),
    ({"mounts": [{"volume": "v", "path": "/" + "d" * 256}]}, [{"name": "v"}], r"apps\[0\]\.mounts\[0\]\.path",
     "has a component of more than 255 bytes"),
    ({"mounts": [{"volume": "v", "path": "/d" * 2048}]}, [{"name": "v"}], r"apps\[0\]\.mounts\[0\]\.path",
     "is 4096 bytes long; a path is at most 4095 bytes"),
])
def test_paths_that_climb_or_exceed_the_limits_are_refused(app, volumes, field, why):
    with pytest.raises(ValidationError, match=field + ": .*" + why):
        podspec.normalize_spec(_one(app=app, volumes=volumes))


@pytest.mark.parametrize("field, value, why", [
    ("user", "root:0", "a colon has no place in it; give the group in group"),
    ("group", "0:0", "a colon has no place in it; give the user in user"),
    ("user", "my user", "is not a user name"),
    ("user", "4294967295", "is not a valid uid"),
    ("user", "/etc/../passwd", r'must not have a "\.\." component'),
])
def test_user_and_group_take_what_appc_allows(field, value, why):
    with pytest.raises(ValidationError, match=r"apps\[0\]\.%s: .*%s" % (field, why)):
        podspec.normalize_spec(_one(app={field: value}))
    for ok in ("root", "0", 1000, "/data/owned", "www-data", "user.name"):
        assert podspec.normalize_spec(_one(app={field: ok}))["apps"][0][field] == str(ok)


@pytest.mark.parametrize("value, why", [
    ({"limit": "0"}, "must be a positive quantity"),
    ({"limit": "-1Gi"}, "must be a positive quantity"),
    ({"limit": "1Mi"}, "a memory limit is at least 6291456 bytes"),
    ({"limit": "8Ei"}, "memory amounts are below 2\\^63 bytes|more than 16 times"),
    ({"limit": "1e40"}, "memory amounts are below 2\\^63 bytes|more than 16 times"),
    ({"request": "1Gi", "limit": "9Ei"}, "below 2\\^63 bytes|more than 16 times"),
])
def test_absurd_memory_limits_are_refused(value, why):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare

    iso = [{"name": "resource/memory", "value": value}]
    with pytest.raises(ValidationError, match=why):
        podspec.normalize_spec(_one(app={"isolators": iso}))
        prepare.check_memory("a", value)


def test_a_memory_limit_beyond_what_the_host_has_is_refused_and_one_within_passes():
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import prepare

    host = prepare.host_memory()
    assert host > 0
    with pytest.raises(ValidationError, match=r"apps\[a\]\.isolators\[resource/memory\]\.limit: .*more than 16 times"):
        prepare.check_memory("a", {"limit": str(host * 17)})
    prepare.check_memory("a", {"limit": "64Mi", "request": "16Mi"})
    prepare.check_memory("a", {"limit": str(host * 2)})


def test_cap_add_and_cap_drop_normalize_compare_and_refuse():
    s = podspec.normalize_spec({"apps": [{"image": "i", "cap_add": ["net_raw", "CAP_NET_ADMIN", "NET_RAW"],
                                          "cap_drop": ["kill"]}]})
    assert s["apps"][0]["cap_add"] == ["CAP_NET_ADMIN", "CAP_NET_RAW"]  # kernel order, once
    assert s["apps"][0]["cap_drop"] == ["CAP_KILL"]
    assert podspec.normalize_spec({"apps": [{"image": "i", "cap_drop": ["all", "KILL"]}]})["apps"][0]["cap_drop"] == ["ALL"]
    # a pod recorded before the options existed is as declared when neither is given
    old = podspec.for_disk(podspec.normalize_spec({"apps": [{"image": "i"}]}))
    for a in old["apps"]:
        del a["cap_add"], a["cap_drop"]
    assert podspec.differences(podspec.normalize_spec({"apps": [{"image": "i"}]}), old) == []
    diffs = podspec.differences(s, old)
    assert [d["field"] for d in diffs] == ["apps[0].cap_add", "apps[0].cap_drop"]
    assert diffs[0]["before"] == [] and diffs[0]["after"] == ["CAP_NET_ADMIN", "CAP_NET_RAW"]
    with pytest.raises(ValidationError, match=r"apps\[0\]\.cap_add\[1\].*NET_RWA.*not a Linux capability"):
        podspec.normalize_spec({"apps": [{"image": "i", "cap_add": ["NET_RAW", "NET_RWA"]}]})
    with pytest.raises(ValidationError, match=r"apps\[0\]\.cap_drop.*CAP_KILL.*also in cap_add"):
        podspec.normalize_spec({"apps": [{"image": "i", "cap_add": ["KILL"], "cap_drop": ["KILL"]}]})
    with pytest.raises(ValidationError, match="give one"):
        podspec.normalize_spec({"apps": [{"image": "i", "cap_add": ["KILL"], "isolators": [
            {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_KILL"]}}]}]})


def test_cap_add_and_cap_drop_become_appc_capability_isolators():
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.prepare import capability_isolators
    from ansible_collections.appc.rocket.plugins.module_utils.stage1 import isolators

    def bounding(isos):
        return set(isolators.cap_names(isolators.parse(isos).bounding))

    default = set(isolators.DEFAULT_CAPABILITIES)
    other = {"name": "os/linux/no-new-privileges", "value": True}
    out = capability_isolators([other], ["CAP_NET_RAW"], ["CAP_KILL"])
    assert out[0] == other and out[1]["name"] == "os/linux/capabilities-retain-set"
    assert bounding(out) == default - {"CAP_KILL"} | {"CAP_NET_RAW"}
    out = capability_isolators([], [], ["CAP_KILL"])
    assert out == [{"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_KILL"]}}]
    assert bounding(capability_isolators([], [], ["ALL"])) == set()
    assert bounding(capability_isolators([], ["CAP_NET_ADMIN"], ["ALL"])) == {"CAP_NET_ADMIN"}
    assert len(bounding(capability_isolators([], ["ALL"], []))) == len(isolators.CAP_NUMBERS)
    # the image's retain-set is the base, and stays a retain-set
    image = [{"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_NET_ADMIN", "CAP_KILL"]}}]
    assert capability_isolators(image, [], ["CAP_KILL"]) == [
        {"name": "os/linux/capabilities-retain-set", "value": {"set": ["CAP_NET_ADMIN"]}}]
    image = [{"name": "os/linux/capabilities-remove-set", "value": {"set": ["CAP_CHOWN"]}}]
    assert bounding(capability_isolators(image, [], ["CAP_KILL"])) == default - {"CAP_CHOWN", "CAP_KILL"}


def test_privileged_is_compared_refused_with_cap_drop_and_absent_on_old_pods():
    base = {"apps": [{"image": "example.com/a"}]}
    priv = podspec.normalize_spec(dict(base, privileged=True))
    plain = podspec.normalize_spec(base)
    assert [d["field"] for d in podspec.differences(priv, plain)] == ["privileged"]
    old = dict(plain)
    del old["privileged"]  # spec.json of a pod prepared before the option
    assert podspec.differences(plain, old) == []
    with pytest.raises(ValidationError, match="cap_drop.*privileged"):
        podspec.normalize_spec({"apps": [{"image": "example.com/a", "cap_drop": ["KILL"]}], "privileged": True})
    with pytest.raises(ValidationError, match="seccomp.*privileged"):
        podspec.normalize_spec({"apps": [{"image": "example.com/a", "isolators": [
            {"name": "os/linux/seccomp-retain-set", "value": {"set": ["@appc.io/all"]}}]}], "privileged": True})
    with pytest.raises(ValidationError, match="appc.rocket/privileged"):
        podspec.normalize_spec(dict(base, annotations={"appc.rocket/privileged": "true"}))
    assert podspec.normalize_spec({"apps": [{"image": "example.com/a", "cap_add": ["ALL"]}], "privileged": True})


def test_unsetenv_normalizes_compares_and_refuses():
    s = podspec.normalize_spec({"apps": [{"image": "i", "unsetenv": ["B", "A", "B"]}]})
    assert s["apps"][0]["unsetenv"] == ["A", "B"] and s["apps"][0]["unsetenv_all"] is False
    assert podspec.normalize_spec({"apps": [{"image": "i", "unsetenv": "A"}]})["apps"][0]["unsetenv"] == ["A"]
    # a pod recorded before the options existed is as declared when neither is given
    old = podspec.for_disk(podspec.normalize_spec({"apps": [{"image": "i"}]}))
    for a in old["apps"]:
        del a["unsetenv"], a["unsetenv_all"]
    assert podspec.differences(podspec.normalize_spec({"apps": [{"image": "i"}]}), old) == []
    assert [d["field"] for d in podspec.differences(s, old)] == ["apps[0].unsetenv"]
    every = podspec.normalize_spec({"apps": [{"image": "i", "unsetenv_all": True}]})
    assert [d["field"] for d in podspec.differences(every, old)] == ["apps[0].unsetenv_all"]
    for app, field, why in (
            ({"unsetenv": ["A", "1X"]}, r"apps\[0\]\.unsetenv\[1\]", "not a valid environment variable name"),
            ({"unsetenv": {"A": 1}}, r"apps\[0\]\.unsetenv", "list of environment variable names"),
            ({"unsetenv": [None]}, r"apps\[0\]\.unsetenv\[0\]", ""),
            ({"unsetenv_all": "yes"}, r"apps\[0\]\.unsetenv_all", "true or false"),
            ({"unsetenv_all": True, "unsetenv": ["A"]}, r"apps\[0\]\.unsetenv", "give one of the two")):
        with pytest.raises(ValidationError, match=field + ".*" + why):
            podspec.normalize_spec({"apps": [dict({"image": "i"}, **app)]})


def test_unsetenv_takes_away_only_what_the_image_sets():
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.prepare import _effective_app

    image_app = {"exec": ["/bin/app"], "user": "0", "group": "0",
                 "environment": [{"name": "A", "value": "img"}, {"name": "B", "value": "img"},
                                 {"name": "PATH", "value": "/img/bin"}]}

    def env(app=None, **pod):
        spec = podspec.normalize_spec(dict({"apps": [dict({"image": "i"}, **(app or {}))]}, **pod))
        out = _effective_app(image_app, spec["apps"][0], spec, "i")
        return None if out is None else [(e["name"], e["value"]) for e in out["environment"]]

    assert env() is None  # nothing asked: the image's own app
    assert env({"unsetenv": ["A", "PATH", "NOTSET"]}) == [("B", "img")]
    assert env({"unsetenv_all": True}) == []
    # what the task sets is set anyway, pod-wide or the app's own
    assert env({"unsetenv": ["A", "B"], "environment": {"A": "app"}}, environment={"B": "pod"}) == [
        ("PATH", "/img/bin"), ("B", "pod"), ("A", "app")]
    assert env({"unsetenv_all": True}, secret_environment={"S": "x"}) == [("S", "x")]
    assert image_app["environment"][0] == {"name": "A", "value": "img"}  # the image's app is not touched


def test_sysctls_normalize_compare_and_refuse_what_would_change_the_host():
    s = podspec.normalize_spec({"apps": ["i"], "sysctls": {"net/ipv4/tcp_fin_timeout": 30, "kernel.shmmni": "8192"}})
    assert s["sysctls"] == {"kernel.shmmni": "8192", "net.ipv4.tcp_fin_timeout": "30"}
    old = podspec.for_disk(podspec.normalize_spec({"apps": ["i"]}))
    del old["sysctls"]  # a pod recorded before the option existed
    assert podspec.differences(podspec.normalize_spec({"apps": ["i"]}), old) == []
    diffs = podspec.differences(s, old)
    assert [(d["field"], d["before"]) for d in diffs] == [("sysctls", {})], diffs
    for value, field, why in (
            ({"vm.swappiness": 1}, r"sysctls\.vm\.swappiness", "not namespaced"),
            ({"kernel.panic": 1}, r"sysctls\.kernel\.panic", "whole host"),
            ({"net..x": 1}, r"sysctls\.net\.\.x", "not a sysctl name"),
            ({"net.ipv4.x": True}, r"sysctls\.net\.ipv4\.x", "string or a number"),
            ({"net.ipv4.x": "1\nkernel.panic=1"}, r"sysctls\.net\.ipv4\.x", "one line"),
            ({"net.ipv4.x": ""}, r"sysctls\.net\.ipv4\.x", "not empty"),
            ({"net.ipv4.x": 1, "net/ipv4/x": 2}, r"sysctls\.net/ipv4/x", "given twice"),
            (["net.ipv4.x=1"], r"sysctls", "dictionary")):
        with pytest.raises(ValidationError, match=field + ".*" + why):
            podspec.normalize_spec({"apps": ["i"], "sysctls": value})
    iso = [{"name": "os/unix/sysctl", "value": {"kernel.shmmni": "10"}}]
    with pytest.raises(ValidationError, match=r"sysctls\.kernel\.shmmni.*contradicts app i's os/unix/sysctl"):
        podspec.normalize_spec({"apps": [{"image": "i", "isolators": iso}], "sysctls": {"kernel.shmmni": 11}})
    assert podspec.normalize_spec({"apps": [{"image": "i", "isolators": iso}], "sysctls": {"kernel.shmmni": 10}})
