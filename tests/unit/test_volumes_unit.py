"""Named and tmpfs volumes and mount options: normal form, errors naming the option, what
prepare records, and the named volume store (no pods needed)."""
import json
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import volumes
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import InUseError, RocketError, ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.podspec import differences, normalize_spec
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import volumes as s1volumes
from ansible_collections.appc.rocket.plugins.module_utils.stage1.contract import VOLUMES_ANNOTATION


def spec(volumes_=None, mounts=None, **kw):
    app = {"image": "busybox", "mounts": mounts or []}
    return normalize_spec(dict({"apps": [app], "volumes": volumes_ or []}, **kw))


@pytest.mark.parametrize("value,size", [(65536, 65536), ("64m", 64 << 20), ("1G", 1 << 30), ("512k", 512 << 10),
                                        ("8MiB", 8 << 20), ("4096", 4096)])
def test_sizes(value, size):
    assert volumes.parse_size(value, "x") == size


@pytest.mark.parametrize("raw,field,words", [
    ({"name": "t", "kind": "tmpfs", "size": "lots"}, "volumes[0].size", "is not a size"),
    ({"name": "t", "kind": "tmpfs", "size": 100}, "volumes[0].size", "below 4096"),
    ({"name": "t", "kind": "tmpfs", "size": True}, "volumes[0].size", "is not a size"),
    ({"name": "t", "kind": "tmpfs", "mode": "999"}, "volumes[0].mode", "octal"),
    ({"name": "t", "kind": "tmpfs", "uid": -1}, "volumes[0].uid", "0 to"),
    ({"name": "t", "kind": "tmpfs", "source": "/etc"}, "volumes[0].source", "not an option of a tmpfs volume"),
    ({"name": "n", "kind": "named", "volume_name": "../etc"}, "volumes[0].volume_name", "AC Name"),
    ({"name": "n", "kind": "named", "size": "1m"}, "volumes[0].size", "not an option of a named volume"),
    ({"name": "n", "kind": "bind"}, "volumes[0].kind", "host, empty, named or tmpfs"),
])
def test_bad_volumes_name_the_field(raw, field, words):
    with pytest.raises(ValidationError) as e:
        spec([raw])
    assert e.value.path == field and words in str(e.value)


@pytest.mark.parametrize("vol,mount,field,words", [
    ({"name": "h", "kind": "host", "source": "/srv"}, {"read_only": "yes"}, "apps[0].mounts[0].read_only", "true or false"),
    ({"name": "h", "kind": "host", "source": "/srv"}, {"propagation": "bogus"}, "apps[0].mounts[0].propagation", "one of"),
    ({"name": "h", "kind": "host", "source": "/srv"}, {"propagation": "rshared"}, "apps[0].mounts[0].propagation",
     "only a privileged pod"),
    ({"name": "h", "kind": "tmpfs"}, {"propagation": "rslave"}, "apps[0].mounts[0].propagation", "host volumes only"),
    ({"name": "h", "kind": "named"}, {"propagation": "slave"}, "apps[0].mounts[0].propagation", "host volumes only"),
    ({"name": "h", "kind": "host", "source": "/srv"}, {"options": "z"}, "apps[0].mounts[0].options", "not a mount option"),
])
def test_bad_mounts_name_the_field(vol, mount, field, words):
    with pytest.raises(ValidationError) as e:
        spec([vol], [dict({"volume": "h", "path": "/h"}, **mount)])
    assert e.value.path == field and words in str(e.value)


def test_shared_propagation_is_a_privileged_pods_and_mounts_of_a_volume_agree():
    vol = {"name": "h", "kind": "host", "source": "/srv"}
    s = spec([vol], [{"volume": "h", "path": "/h", "propagation": "rshared"}], privileged=True)
    assert volumes.plan(s) == {"propagation": [{"volume": "h", "source": "/srv", "recursive": True, "shared": True}]}
    with pytest.raises(ValidationError) as e:
        spec([vol], [{"volume": "h", "path": "/a", "propagation": "rslave"},
                     {"volume": "h", "path": "/b", "propagation": "shared"}], privileged=True)
    assert e.value.path == "apps[0].mounts[1].propagation"


def test_defaults_keep_the_normal_form_of_before():
    """A pod recorded before read_only/propagation existed compares equal: no replacement on upgrade."""
    old = spec([{"name": "d", "kind": "empty"}], [{"volume": "d", "path": "/d"}])
    new = spec([{"name": "d", "kind": "empty"}], [{"volume": "d", "path": "/d", "read_only": False,
                                                  "propagation": "rprivate"}])
    assert new["apps"][0]["mounts"] == [{"volume": "d", "path": "/d"}] and differences(new, old) == []
    ro = spec([{"name": "d", "kind": "empty"}], [{"volume": "d", "path": "/d", "read_only": True}])
    assert [d["field"] for d in differences(ro, old)] == ["apps[0].mounts"]
    assert volumes.manifest_annotations(old) == {} and volumes.plan(old) == {}


def test_what_prepare_records_and_stage1_reads(tmp_path):
    s = spec([{"name": "data", "kind": "named", "volume_name": "pg", "uid": 999},
              {"name": "t", "kind": "tmpfs", "size": "64m", "uid": 5}],
             [{"volume": "data", "path": "/data", "read_only": True}, {"volume": "t", "path": "/tmp"}])
    assert s["volumes"][0] == {"name": "data", "kind": "named", "read_only": False, "volume_name": "pg",
                               "mode": "0755", "uid": 999, "gid": 0}
    assert s["volumes"][1]["mode"] == "1777" and s["volumes"][1]["size"] == 64 << 20
    dd = DataDir(str(tmp_path / "rocket"))
    assert volumes.manifest_volume(dd, s["volumes"][0]) == {"name": "data", "kind": "host", "recursive": False,
                                                            "source": str(tmp_path / "rocket/volumes/pg/data")}
    assert volumes.manifest_volume(dd, s["volumes"][1])["kind"] == "empty"
    ann = volumes.manifest_annotations(s)
    doc = json.loads(ann[VOLUMES_ANNOTATION])
    assert doc == {"named": {"data": "pg"}, "tmpfs": {"t": {"size": 64 << 20, "mode": "1777", "uid": 5, "gid": 0}},
                   "mounts": {"busybox": {"/data": {"read_only": True}}}}
    manifest = {"annotations": [{"name": VOLUMES_ANNOTATION, "value": ann[VOLUMES_ANNOTATION]}]}
    assert s1volumes.options(manifest) == doc and s1volumes.options({}) == {}
    with pytest.raises(ValidationError) as e:
        spec(annotations={VOLUMES_ANNOTATION: "{}"})
    assert e.value.path == "annotations"


def test_the_named_volume_store(tmp_path):
    dd = DataDir(str(tmp_path / "rocket")).ensure()
    created, rec = volumes.create(dd, "web", "0700", 33, 34, {"a": "b"})
    assert created and (rec["mode"], rec["uid"], rec["gid"], rec["labels"]) == ("0700", 33, 34, {"a": "b"})
    assert volumes.create(dd, "web", "0755")[0] is False  # an existing volume keeps its options
    assert volumes.list_volumes(dd) == ["web"] and volumes.users(dd, "web") == []
    volumes.update(dd, "web", {"mode": "0750", "labels": {}})
    assert volumes.inspect(dd, "web")["mode"] == "0750" and volumes.inspect(dd, "web")["labels"] == {}
    assert volumes.remove(dd, "web", dry_run=True) and volumes.list_volumes(dd) == ["web"]
    assert volumes.remove(dd, "web") and volumes.list_volumes(dd) == [] and os.listdir(volumes.root(dd)) == []
    assert volumes.remove(dd, "web") is False
    with pytest.raises(ValidationError):
        volumes.create(dd, "UP")
    with pytest.raises(ValidationError) as e:
        volumes.options("rwx", 0, 0, {})
    assert e.value.path == "mode"
    with pytest.raises(ValidationError) as e:
        volumes.options("0755", -1, 0, {})
    assert e.value.path == "uid"
    volumes.create(dd, "link")
    os.rmdir(volumes.data_path(dd, "link"))
    os.symlink("/etc", volumes.data_path(dd, "link"))
    with pytest.raises(RocketError) as e:
        volumes.inspect(dd, "link")
    assert "symlink" in str(e.value)
    assert issubclass(InUseError, RocketError)
    os.mkdir(os.path.join(volumes.root(dd), ".new-half-123"))  # a crash's leftover
    assert volumes.prune(dd, dry_run=True) == ["link"] and len(os.listdir(volumes.root(dd))) == 2
    assert volumes.prune(dd) == ["link"] and os.listdir(volumes.root(dd)) == []
