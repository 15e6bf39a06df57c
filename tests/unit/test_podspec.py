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
