"""cas_image and cas_image_info through real ansible runs: the four steps of every change."""
import os

from tests.support import images
from tests.support import ROOT
from tests.support.ansible_run import module, playbook


def test_import_four_steps_and_absent(data_dir, tmp_path):
    path, image_id = images.build(tmp_path)
    args = {"src": path, "data_dir": data_dir}
    r = module("cas_image", args, check=True, diff=True)
    assert r["changed"] is True and r["image"]["id"] == image_id
    assert not os.path.exists(data_dir), "check mode must not create the data directory"
    r = module("cas_image", args, diff=True)
    assert r["changed"] is True and r["image"]["id"] == image_id
    assert r["image"]["manifest"]["name"] == "example.com/test"
    assert r["diff"]["before"] == {} and r["diff"]["after"]["id"] == image_id
    r = module("cas_image", args)
    assert r["changed"] is False and r["image"]["id"] == image_id
    r = module("cas_image", args, check=True)
    assert r["changed"] is False

    info = module("cas_image_info", {"data_dir": data_dir, "name": "example.com/test:1.0.0", "verify": True})
    assert [i["id"] for i in info["images"]] == [image_id]
    assert info["problems"] == []
    info = module("cas_image_info", {"data_dir": data_dir, "id": image_id[:12]})
    assert [i["id"] for i in info["images"]] == [image_id]

    absent = {"name": "example.com/test", "labels": {"version": "1.0.0"}, "state": "absent", "data_dir": data_dir}
    r = module("cas_image", absent, check=True)
    assert r["changed"] is True
    assert module("cas_image_info", {"data_dir": data_dir})["images"] != []
    r = module("cas_image", absent, diff=True)
    assert r["changed"] is True and r["diff"]["before"]["id"] == image_id and r["diff"]["after"] == {}
    r = module("cas_image", absent)
    assert r["changed"] is False
    assert module("cas_image_info", {"data_dir": data_dir})["images"] == []


def test_build_from_rootfs_is_deterministic(data_dir, tmp_path):
    rootfs = images.make_rootfs(str(tmp_path / "rootfs"), {"bin/hello": b"#!/bin/sh\necho hi\n"})
    args = {"rootfs": rootfs, "data_dir": data_dir,
            "manifest": {"name": "example.com/built", "app": {"exec": ["/bin/hello"], "user": "0", "group": "0"}}}
    r1 = module("cas_image", args)
    assert r1["changed"] is True
    os.utime(os.path.join(rootfs, "bin/hello"), (1, 1))  # mtimes do not change the ID
    r2 = module("cas_image", args)
    assert r2["changed"] is False and r2["image"]["id"] == r1["image"]["id"]


def test_errors_are_clear(data_dir, tmp_path):
    bad = tmp_path / "bad.aci"
    bad.write_bytes(b"this is not an image" * 40)
    r = module("cas_image", {"src": str(bad), "data_dir": data_dir})
    assert r.get("failed") and "not an ACI" in r["msg"]
    r = module("cas_image", {"name": "example.com/missing", "pull": "never", "data_dir": data_dir})
    assert r.get("failed") and "example.com/missing" in r["msg"]
    r = module("cas_image", {"rootfs": str(tmp_path), "data_dir": data_dir,
                             "manifest": {"name": "Bad Name", "app": {"exec": ["/x"], "user": "0", "group": "0"}}})
    assert r.get("failed") and "name" in r["msg"] and "Bad Name" in r["msg"]


def test_demo_playbook_runs_twice_unchanged(tmp_path):
    d = str(tmp_path / "rocket")
    e = {"ROCKET_DATA_DIR": d}
    try:
        p = playbook(os.path.join(ROOT, "demo", "demo.yml"), extra_env=e)
        assert p.returncode == 0, p.stdout
        assert "Hello from an appc.rocket pod" in p.stdout
        assert "pid1=" in p.stdout and "hostname=rkt-" in p.stdout  # the entered command's view
        p = playbook(os.path.join(ROOT, "demo", "demo.yml"), extra_env=e)
        assert p.returncode == 0, p.stdout
        assert "changed=0" in p.stdout, p.stdout
    finally:
        for name in ("sleeper", "hello"):
            module("pod_run", {"name": name, "state": "absent", "data_dir": d})
        module("pod_gc", {"grace": 0, "data_dir": d})


def test_cas_image_imports_a_docker_archive_and_an_oci_layout(data_dir, tmp_path):
    """src detects the kind; check mode predicts without writing; a second run is unchanged."""
    import test_oci

    layers = test_oci.app_layers()
    config = test_oci.config_for(layers, **test_oci.APP_CONFIG)
    archive = test_oci.docker_archive(str(tmp_path / "saved.tar"), [(["example.com/app:1.2"], layers, config)])
    args = {"src": archive, "data_dir": data_dir}
    r = module("cas_image", args, check=True)
    assert r["changed"] is True and r["image"]["name"] == "example.com/app"
    assert not os.path.exists(data_dir)
    r = module("cas_image", args)
    assert r["changed"] is True and r["image"]["labels"]["version"] == "1.2"
    image_id = r["image"]["id"]
    assert module("cas_image", args)["changed"] is False
    assert module("cas_image", args, check=True)["changed"] is False
    # The same image as an OCI layout, renamed: a new image name, its own entry.
    lay = test_oci.app_layout(tmp_path)
    r = module("cas_image", {"src": str(lay.root), "name": "example.com/renamed", "data_dir": data_dir})
    assert r["changed"] is True and r["image"]["name"] == "example.com/renamed" and r["image"]["id"] != image_id
    # An ACI whose manifest carries another name than the task says is refused.
    path, dummy = images.build(tmp_path)
    r = module("cas_image", {"src": path, "name": "example.com/other", "data_dir": data_dir})
    assert r.get("failed") and "not example.com/other" in r["msg"]


def test_device_nodes_left_out_are_listed_without_marking_the_task_skipped(data_dir, tmp_path):
    """Ansible reads a truthy `skipped` in a result as "this task was skipped" (and hides the
    rest): what the import left out is `skipped_members`."""
    from tests.support.aci_util import aci_tar, member

    path = tmp_path / "dev.aci"
    path.write_bytes(aci_tar(member("rootfs/dev", "dir"),
                             member("rootfs/dev/null", "chr", devmajor=1, devminor=3, mode=0o666)))
    r = module("cas_image", {"src": str(path), "data_dir": data_dir})
    assert r["changed"] is True and "skipped" not in r, r
    assert r["skipped_members"] == [["rootfs/dev/null", "char"]]
