"""pod_export: a running app's root out as an ACI, into another data directory, run, exported again."""
import os
import tarfile

import pytest

from tests.support import pods
from tests.support.ansible_run import module
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store


@pytest.fixture
def dds(tmp_path):
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    with Store(one) as s:
        s.import_file(pods.busybox_aci(tmp_path))
    yield one, two
    for d in (one, two):
        if os.path.isdir(d):
            for p in module("pod_info", {"data_dir": d})["pods"]:
                module("pod_run", {"uuid": p["uuid"], "state": "absent", "data_dir": d})


def _files(path):
    with tarfile.open(path) as tf:
        return {m.name: (m.type, m.mode, m.uid, m.linkname, tf.extractfile(m).read() if m.isfile() else None)
                for m in tf.getmembers()}


def test_export_import_run_and_export_again(dds, tmp_path):
    one, two = dds
    r = module("pod_run", {"name": "src", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"],
                           "net": "none", "data_dir": one})
    assert r["changed"], r
    script = ("mkdir -p /srv/www && echo made-inside > /srv/www/index.html && chown 1000:1000 /srv/www/index.html"
              " && ln -s /etc/passwd /srv/leak && ln -s ../../../../../../etc /srv/up && rm /bin/ls && mkfifo /srv/pipe")
    r = module("pod_enter", {"name": "src", "data_dir": one, "argv": ["/bin/sh", "-c", script]})
    assert r["rc"] == 0, r
    dest = str(tmp_path / "src.aci")
    args = {"name": "src", "dest": dest, "image_name": "example.com/snapshot", "data_dir": one}
    checked = module("pod_export", args, check=True)
    assert checked["changed"] is True and not os.path.exists(dest), checked
    r = module("pod_export", args)
    assert r["changed"] is True and r["image"]["id"] == checked["image"]["id"], r
    image_id = r["image"]["id"]
    assert r["image"]["manifest"]["name"] == "example.com/snapshot" and "dependencies" not in r["image"]["manifest"]
    assert module("pod_export", args)["changed"] is False
    files = _files(dest)
    assert files["rootfs/srv/www/index.html"][4] == b"made-inside\n" and files["rootfs/srv/www/index.html"][2] == 1000
    assert files["rootfs/srv/leak"][3] == "/etc/passwd" and files["rootfs/srv/up"][3] == "../../../../../../etc"
    assert "rootfs/bin/ls" not in files and "rootfs/bin/sh" in files and "rootfs/srv/pipe" not in files
    assert "/srv/pipe" in r["skipped"], r

    # Another data directory imports it with the same ID, and a pod of it sees the files.
    r = module("cas_image", {"src": dest, "data_dir": two})
    assert r["changed"] is True and r["image"]["id"] == image_id, r
    r = module("pod_run", {"name": "copy", "image": "example.com/snapshot", "state": "exited", "net": "none", "data_dir": two,
                           "exec": ["/bin/sh", "-c", "cat /srv/www/index.html; readlink /srv/leak; test -e /bin/ls || echo no-ls"]})
    assert "pod" in r, r
    log = r["pod"]["apps"][0]["log"]
    assert r["pod"]["apps"][0]["exit_code"] == 0 and "made-inside" in log and "/etc/passwd" in log and "no-ls" in log, r

    # The stored image exported again: the same files, the same ID.
    again = str(tmp_path / "again.aci")
    r = module("pod_export", {"image": image_id, "dest": again, "data_dir": two, "compression": "none"})
    assert r["changed"] is True and r["image"]["id"] == image_id, r
    assert _files(again) == files

    # Refusals name the option and leave nothing.
    r = module("pod_export", {"name": "nosuch", "dest": str(tmp_path / "x.aci"), "data_dir": one})
    assert r.get("failed") and "nosuch" in r["msg"]
    r = module("pod_export", {"name": "src", "dest": str(tmp_path / "no" / "x.aci"), "data_dir": one})
    assert r.get("failed") and "dest" in r["msg"]
    r = module("pod_export", {"name": "src", "app": "other", "dest": str(tmp_path / "x.aci"), "data_dir": one})
    assert r.get("failed") and "no app other" in r["msg"]
    left = sorted(n for n in os.listdir(tmp_path) if n.endswith((".aci", ".tmp")) and not n.startswith("example.com"))
    assert left == ["again.aci", "src.aci"], left
