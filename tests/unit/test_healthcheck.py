"""The healthcheck option's normal form, docker's forms, durations, the OCI import and the
merge with the image's check; the stage1 side's status rules."""
import json

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import healthcheck as hc
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import podspec
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import health


@pytest.mark.parametrize("text, seconds", [
    (30, 30.0), (1.5, 1.5), ("30", 30.0), ("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5),
    ("2h", 7200.0), ("1.5s", 1.5), ("1h2m3s", 3723.0), ("250us", 0.00025), (" 10s ", 10.0)])
def test_durations(text, seconds):
    assert hc.duration(text, "x") == seconds


@pytest.mark.parametrize("bad", ["", "s", "5 parsecs", "1x", "-1", "1..5s", True, None, [1], "nan", "inf", -3])
def test_bad_durations_are_named(bad):
    with pytest.raises(ValidationError) as e:
        hc.duration(bad, "apps[0].healthcheck.interval")
    assert "apps[0].healthcheck.interval" in str(e.value)


@pytest.mark.parametrize("test, argv", [
    ("curl -f localhost", ["/bin/sh", "-c", "curl -f localhost"]),
    (["CMD", "curl", "-f", "x"], ["curl", "-f", "x"]),
    (["CMD-SHELL", "exit 0"], ["/bin/sh", "-c", "exit 0"]),
    (["/bin/true"], ["/bin/true"]),
    (["NONE"], None)])
def test_docker_test_forms(test, argv):
    assert hc.test_argv(test, "t") == argv


def test_normal_form_keeps_only_what_was_given():
    assert hc.normalize(None, "p") is None
    assert hc.normalize({"test": "true", "interval": "1m", "retries": "4", "on_failure": "restart"}, "p") == \
        {"test": ["/bin/sh", "-c", "true"], "interval": 60.0, "retries": 4, "on_failure": "restart"}
    assert hc.normalize({"disable": True}, "p") == {"disable": True}
    assert hc.normalize({"test": ["NONE"]}, "p") == {"disable": True}
    assert hc.normalize({"test": "true", "timeout": None}, "p") == {"test": ["/bin/sh", "-c", "true"]}


@pytest.mark.parametrize("raw, field", [
    ("true", "p"), ({"test": ""}, "p.test"), ({"test": []}, "p.test"), ({"test": ["CMD"]}, "p.test"),
    ({"test": ["CMD-SHELL", "a", "b"]}, "p.test"), ({"test": ["NONE", "x"]}, "p.test"),
    ({"test": [1, 2]}, "p.test"), ({"test": ["a\0b"]}, "p.test"),
    ({"test": "true", "interval": "50ms"}, "p.interval"), ({"test": "true", "timeout": 0}, "p.timeout"),
    ({"test": "true", "start_period": "soon"}, "p.start_period"),
    ({"test": "true", "retries": 0}, "p.retries"), ({"test": "true", "retries": True}, "p.retries"),
    ({"test": "true", "retries": 1.5}, "p.retries"),
    ({"test": "true", "on_failure": "kill"}, "p.on_failure"), ({"test": "true", "disable": "yes"}, "p.disable"),
    ({"disable": True, "interval": 5}, "p.interval"), ({"test": ["NONE"], "retries": 2}, "p.retries"),
    ({"test": "true", "start_interval": 1}, "p.start_interval")])
def test_bad_values_name_the_field(raw, field):
    with pytest.raises(ValidationError) as e:
        hc.normalize(raw, "p")
    assert str(e.value).startswith(field + " ") or str(e.value).startswith(field + ":"), str(e.value)


def test_podspec_takes_it_and_old_pods_see_no_difference():
    spec = podspec.normalize_spec({"apps": [{"image": "x", "healthcheck": {"test": "true"}}]})
    assert spec["apps"][0]["healthcheck"] == {"test": ["/bin/sh", "-c", "true"]}
    plain = podspec.normalize_spec({"apps": [{"image": "x"}]})
    old = json.loads(json.dumps(plain))
    del old["apps"][0]["healthcheck"]           # recorded before the option existed
    assert podspec.differences(plain, old) == []
    assert [d["field"] for d in podspec.differences(spec, old)] == ["apps[0].healthcheck"]
    with pytest.raises(ValidationError) as e:
        podspec.normalize_spec({"apps": [{"image": "x", "annotations": {hc.ANNOTATION: "{}"}}]})
    assert "apps[0].annotations" in str(e.value)
    with pytest.raises(ValidationError) as e:
        podspec.normalize_spec({"apps": [{"image": "x"}, {"image": "y", "healthcheck": {"test": "t", "retries": -1}}]})
    assert str(e.value).startswith("apps[1].healthcheck.retries")


def test_oci_import():
    value, why = hc.from_oci({"Test": ["CMD-SHELL", "pg_isready"], "Interval": 5000000000, "Timeout": 0,
                              "StartPeriod": 1500000000, "Retries": 4})
    assert why is None and json.loads(value) == {"test": ["/bin/sh", "-c", "pg_isready"], "interval": 5.0,
                                                 "start_period": 1.5, "retries": 4}
    assert hc.from_oci({"Test": ["NONE"]}) == (None, None)
    assert hc.from_oci(None) == (None, None)
    assert hc.from_oci({"Interval": 1000000000}) == (None, None)    # timings alone run nothing
    value, why = hc.from_oci({"Test": ["CMD"], "Retries": 2})
    assert value is None and why.startswith("Healthcheck: not a valid check")
    value, why = hc.from_oci({"Test": "x", "Interval": "5s"})
    assert value is None and "Interval" in why


def image(check):
    return {"annotations": [{"name": hc.ANNOTATION, "value": json.dumps(check)}]} if check else {}


def test_effective_check_option_over_image_over_defaults():
    img = image({"test": ["check"], "interval": 5.0, "retries": 4})
    assert hc.effective(None, {}, "p") is None
    assert hc.effective({"disable": True}, img, "p") is None
    e = hc.effective({"retries": 2, "on_failure": "restart"}, img, "p")
    assert e == {"test": ["check"], "interval": 5.0, "timeout": 30.0, "start_period": 0.0, "retries": 2,
                 "on_failure": "restart", "source": "image+option"}
    assert hc.effective(None, img, "p")["source"] == "image"
    assert hc.effective({"test": ["/bin/true"]}, {}, "p")["source"] == "option"
    with pytest.raises(ValidationError) as e:
        hc.effective({"interval": 1.0}, {}, "apps[0].healthcheck")
    assert str(e.value).startswith("apps[0].healthcheck.test")
    with pytest.raises(ValidationError) as e:
        hc.effective(None, {"annotations": [{"name": hc.ANNOTATION, "value": "{not json"}]}, "apps[0].healthcheck")
    assert "apps[0].healthcheck" in str(e.value) and "not JSON" in str(e.value)


def check(**conf):
    base = {"test": ["t"], "interval": 1.0, "timeout": 1.0, "start_period": 0.0, "retries": 3}
    base.update(conf)
    return health.Check("a", base, 0.0, None)


def test_status_rules_as_docker():
    c = check(retries=2)
    assert c.status == "starting"
    assert c.done(1, "no", 0.0) is False and (c.status, c.streak) == ("starting", 1)
    assert c.done(1, "no", 0.0) is True and (c.status, c.streak) == ("unhealthy", 2)
    assert c.done(1, "no", 0.0) is False and c.streak == 3     # unhealthy once, not again
    assert c.done(0, "", 0.0) is False and (c.status, c.streak) == ("healthy", 0)
    assert c.last["exit_code"] == 0


def test_start_period_failures_do_not_count_until_a_pass(monkeypatch):
    c = check(retries=1, start_period=100.0)
    c.since = health.time.monotonic()
    assert c.done(1, "x", 0.0) is False and (c.status, c.streak) == ("starting", 0)
    c.done(0, "", 0.0)
    assert c.status == "healthy"
    assert c.done(1, "x", 0.0) is True and c.status == "unhealthy"    # after a pass, every failure counts
