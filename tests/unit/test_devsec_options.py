"""devices, secrets and env_file (issue #16): normal forms, errors naming the option,
what is kept on disk and shown, and the stage1 side's formats."""
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import devices, envfile, podspec, secrets
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import hostdevices
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import secrets as s1_secrets


def test_device_forms_as_docker_takes_them():
    assert devices.normalize(["/dev/loop3", "/dev/loop4:/dev/disk", "/dev/loop5:/dev/d5:wr", "/dev/loop6:r",
                              {"path": "/dev/net/tun"}], "devices") == [
        {"path": "/dev/loop3", "container_path": "/dev/loop3", "permissions": "rwm"},
        {"path": "/dev/loop4", "container_path": "/dev/disk", "permissions": "rwm"},
        {"path": "/dev/loop5", "container_path": "/dev/d5", "permissions": "rw"},
        {"path": "/dev/loop6", "container_path": "/dev/loop6", "permissions": "r"},
        {"path": "/dev/net/tun", "container_path": "/dev/net/tun", "permissions": "rwm"}]
    ann = devices.annotation(devices.normalize(["/dev/loop3:/dev/x:r"], "d"))
    assert hostdevices.parse([ann]) == [("/dev/loop3", "/dev/x", "r")]


@pytest.mark.parametrize("value, field", [
    (["/dev/a:/dev/b:/dev/c:r"], "devices[0]"),
    ([{"path": "/dev/a", "size": 1}], "devices[0].size"),
    (["/dev/a:/dev/b", "/dev/c:/dev/b"], "devices[1].container_path"),
    (["/dev/a b"], "devices[0].path"),
    (["/dev/a:/dev/console"], "devices[0].container_path"),
    (["/dev/a:/dev/x/../y"], "devices[0].container_path"),
    (["/dev/a:/dev/x:rr"], "devices[0].permissions"),
    (["/sys/a"], "devices[0].path"),
    ([7], "devices[0]"),
])
def test_bad_devices_name_the_item(value, field):
    with pytest.raises(ValidationError) as e:
        devices.normalize(value, "devices")
    assert e.value.path == field


def test_a_host_path_must_be_a_device_without_symlinks(tmp_path):
    devices.check_host(devices.normalize(["/dev/null:/dev/mynull"], "d"), "d")
    with pytest.raises(ValidationError, match="is not a device node"):
        devices.check_host(devices.normalize(["/dev/shm:/dev/x"], "d"), "d")
    with pytest.raises(hostdevices.DeviceError, match="not a path under /dev"):
        hostdevices.open_node("/tmp/../dev/null")


def test_secrets_keep_content_in_memory_and_digests_on_disk(tmp_path):
    src = tmp_path / "s"
    src.write_bytes(b"from-file\xff")
    items = secrets.normalize([{"name": "a", "content": "v1"},
                               {"name": "b.key", "source": str(src), "target": "keys/b", "mode": "0440", "uid": 7}], "s")
    assert [(i["target"], i["mode"], i["uid"], i["gid"]) for i in items] == [
        ("/run/secrets/a", 0o400, 0, 0), ("/run/secrets/keys/b", 0o440, 7, 0)]
    disk = secrets.for_disk(items)
    assert all("content" not in d and d["digest"].startswith("sha256:") for d in disk)
    assert secrets.for_disk(disk) == disk  # idempotent: spec.json's own form
    # The recorded form: a given content is known by its digest only; a source is read again.
    assert secrets.normalize(disk, "s") == [disk[0], dict(items[1])]
    assert [r["digest"] for r in secrets.redact(items)] == ["********"] * 2
    with pytest.raises(Exception, match="kept in memory only"):
        secrets.memfd({"apps": [{"name": "x", "secrets": disk}]})
    # The memfd round trip, bytes as they were.
    fd = secrets.memfd({"apps": [{"name": "x", "secrets": items}]}, {"apps": [{"secrets": disk}]})
    try:
        got = s1_secrets.parse(s1_secrets.read_fd(fd))
        with pytest.raises(OSError):
            os.write(fd, b"x")  # sealed
    finally:
        os.close(fd)
    assert got == [("x", "a", "/run/secrets/a", 0o400, 0, 0, b"v1"),
                   ("x", "b.key", "/run/secrets/keys/b", 0o440, 7, 0, b"from-file\xff")]
    with pytest.raises(Exception, match="differ"):
        secrets.memfd({"apps": [{"name": "x", "secrets": items}]}, {"apps": [{"secrets": disk[:1]}]})


@pytest.mark.parametrize("item, field", [
    ({"name": "a"}, "s[0]"),
    ({"name": "a", "content": "x", "source": "/etc/hostname"}, "s[0]"),
    ({"name": "-a", "content": "x"}, "s[0].name"),
    ({"name": "a", "content": "x", "target": "/dev/x"}, "s[0].target"),
    ({"name": "a", "content": "x", "target": "/sys"}, "s[0].target"),
    ({"name": "a", "content": "x", "target": "/a/../b"}, "s[0].target"),
    ({"name": "a", "content": "x", "mode": "8"}, "s[0].mode"),
    ({"name": "a", "content": "x", "uid": -1}, "s[0].uid"),
    ({"name": "a", "source": "relative"}, "s[0].source"),
    ({"name": "a", "source": "/nonexistent/x"}, "s[0].source"),
    ({"name": "a", "content": "x", "other": 1}, "s[0].other"),
])
def test_bad_secrets_name_the_field_never_the_content(item, field):
    with pytest.raises(ValidationError) as e:
        secrets.normalize([item], "s")
    assert e.value.path == field and "x" != e.value.value


DOTENV = r'''# comment
  export A=1
B = spaced value  # comment
C='single # $x \n'
D="double\t\"q\" \\ \$x"
E="multi
line"
F=
G=a#b
'''


def test_dotenv_syntax():
    assert envfile.parse(DOTENV, "f", "env_file[0]") == [
        ("A", "1"), ("B", "spaced value"), ("C", "single # $x \\n"), ("D", 'double\t"q" \\ $x'),
        ("E", "multi\nline"), ("F", ""), ("G", "a#b")]


@pytest.mark.parametrize("text, line, why", [
    ("A=1\nNOEQ\n", 2, "no '='"),
    ("1A=x\n", 1, "is not a variable name"),
    ("A='x\n", 1, "never closed"),
    ("A='x' y\n", 1, "after the closing quote"),
    ("A=1\nA=2\n", 2, "first set on line 1"),
])
def test_dotenv_errors_name_file_and_line_not_the_value(text, line, why):
    with pytest.raises(ValidationError) as e:
        envfile.parse(text, "/etc/app.env", "apps[0].env_file[1]")
    assert e.value.path == "apps[0].env_file[1]" and e.value.value == "/etc/app.env"
    assert str(e.value).startswith('apps[0].env_file[1]: "/etc/app.env" line %d: ' % line) and why in str(e.value)


def test_secret_env_files_are_digests_on_disk_and_redacted_in_diffs(tmp_path):
    f = tmp_path / "a.env"
    f.write_text("TOKEN=hunter2\n")
    spec = podspec.normalize_spec({"apps": [{"image": "x", "env_file": [str(f)], "env_file_secret": True}]})
    disk = podspec.for_disk(spec)
    assert disk["apps"][0]["env_file"][0]["environment"][0][1].startswith("sha256:")
    assert "hunter2" not in repr(podspec.redacted(spec)) and "hunter2" not in repr(disk)
    f.write_text("TOKEN=hunter3\n")
    again = podspec.normalize_spec({"apps": [{"image": "x", "env_file": [str(f)], "env_file_secret": True}]})
    diff = podspec.differences(again, disk)
    assert [d["field"] for d in diff] == ["apps[0].env_file"] and "hunter" not in repr(diff)


def test_pods_recorded_before_these_options_see_no_difference():
    spec = podspec.normalize_spec({"apps": [{"image": "x"}]})
    old = podspec.for_disk(spec)
    for k in ("env_file", "env_file_secret"):
        del old[k]
    old["apps"] = [{k: v for k, v in old["apps"][0].items()
                    if k not in ("devices", "secrets", "env_file", "env_file_secret")}]
    assert podspec.differences(spec, old) == []


def test_the_annotations_are_the_options_own():
    for name in ("appc.rocket/devices", "appc.rocket/secrets"):
        with pytest.raises(ValidationError, match="not by hand"):
            podspec.normalize_spec({"apps": [{"image": "x", "annotations": {name: "/dev/sda /dev/sda rwm"}}]})


def test_an_env_file_that_cannot_be_read_is_named(tmp_path):
    with pytest.raises(ValidationError, match="No such file") as e:
        envfile.normalize([str(tmp_path / "missing.env")], "apps[0].env_file")
    assert e.value.path == "apps[0].env_file[0]"
    with pytest.raises(ValidationError, match="is not a regular file"):
        envfile.normalize(str(tmp_path), "env_file")
