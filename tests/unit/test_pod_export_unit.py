"""pod_export's archive writer on trees made here: determinism, the overlay merge, hostile trees."""
import os
import socket
import stat
import tarfile
import time

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, pod_export
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ImageError, RocketError

MANIFEST = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/exported",
            "labels": [{"name": "version", "value": "1"}]}


def _tree(root, mtime):
    os.makedirs(os.path.join(root, "etc", "app"))
    os.makedirs(os.path.join(root, "srv"))
    for rel, data, mode in (("etc/app/conf", b"a=1\n", 0o640), ("srv/index.html", b"hi\n", 0o644), ("b", b"", 0o755)):
        p = os.path.join(root, rel)
        with open(p, "wb") as f:
            f.write(data)
        os.chmod(p, mode)
    os.chown(os.path.join(root, "srv", "index.html"), 1000, 1000)
    os.link(os.path.join(root, "b"), os.path.join(root, "srv", "b-again"))
    os.symlink("/etc/shadow", os.path.join(root, "escape"))          # out of the tree: kept as text
    os.symlink("../../../../..", os.path.join(root, "srv", "up"))
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            os.utime(os.path.join(dirpath, n), (mtime, mtime), follow_symlinks=False)


def _members(path):
    with tarfile.open(path) as tf:
        return [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.uname, m.linkname, m.size) for m in tf.getmembers()]


def test_same_tree_same_id_whatever_the_mtimes_and_paths(tmp_path):
    _tree(str(tmp_path / "one"), 1000000)
    _tree(str(tmp_path / "two" / "deeper"), time.time())
    c1, r1 = pod_export.export([str(tmp_path / "one")], MANIFEST, str(tmp_path / "one.aci"))
    c2, r2 = pod_export.export([str(tmp_path / "two" / "deeper")], MANIFEST, str(tmp_path / "two.aci"),
                               compression="xz")
    assert c1 and c2 and r1.id == r2.id and r1.id.startswith("sha512-")
    with open(tmp_path / "one.aci", "rb") as f:
        assert aci.image_id_of(f) == r1.id
    m = _members(str(tmp_path / "one.aci"))
    names = [x[0] for x in m]
    assert names == ["manifest", "rootfs", "rootfs/b", "rootfs/escape", "rootfs/etc", "rootfs/etc/app",
                     "rootfs/etc/app/conf", "rootfs/srv", "rootfs/srv/b-again", "rootfs/srv/index.html",
                     "rootfs/srv/up"]
    assert {x[5] for x in m} == {0} and {x[6] for x in m} == {""}
    by = {x[0]: x for x in m}
    assert by["rootfs/escape"][1] == tarfile.SYMTYPE and by["rootfs/escape"][7] == "/etc/shadow"
    assert by["rootfs/srv/b-again"][1] == tarfile.LNKTYPE and by["rootfs/srv/b-again"][7] == "rootfs/b"
    assert by["rootfs/srv/index.html"][3:5] == (1000, 1000) and by["rootfs/etc/app/conf"][2] == 0o640
    # Written again: the same image is there, nothing changes; check mode agrees and writes nothing.
    before = os.stat(tmp_path / "one.aci")
    assert pod_export.export([str(tmp_path / "one")], MANIFEST, str(tmp_path / "one.aci"))[0] is False
    assert os.stat(tmp_path / "one.aci").st_mtime_ns == before.st_mtime_ns
    changed, r = pod_export.export([str(tmp_path / "one")], MANIFEST, str(tmp_path / "one.aci"), check_mode=True)
    assert changed is False and r.id == r1.id
    changed, r = pod_export.export([str(tmp_path / "one")], MANIFEST, str(tmp_path / "new.aci"), check_mode=True)
    assert changed is True and r.id == r1.id and not os.path.exists(tmp_path / "new.aci")
    assert sorted(os.listdir(tmp_path)) == ["one", "one.aci", "two", "two.aci"]


def test_overlay_merge_whiteouts_and_opaque_directories(tmp_path):
    lower, upper = str(tmp_path / "lower"), str(tmp_path / "upper")
    for d in ("lower/keep", "lower/gone", "lower/opaque", "lower/replaced", "upper/opaque", "upper/keep"):
        os.makedirs(tmp_path / d)
    for f in ("lower/keep/a", "lower/gone/x", "lower/opaque/old", "lower/replaced/y", "lower/deleted"):
        (tmp_path / f).write_text("lower")
    (tmp_path / "upper/keep/b").write_text("upper")
    (tmp_path / "upper/opaque/new").write_text("upper")
    (tmp_path / "upper/replaced").write_text("now a file")
    os.setxattr(upper + "/opaque", "trusted.overlay.opaque", b"y")
    os.mknod(upper + "/gone", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    os.mknod(upper + "/deleted", stat.S_IFCHR | 0o000, os.makedev(0, 0))
    changed, r = pod_export.export([upper, lower], MANIFEST, str(tmp_path / "m.aci"))
    names = [x[0] for x in _members(str(tmp_path / "m.aci"))]
    assert names == ["manifest", "rootfs", "rootfs/keep", "rootfs/keep/a", "rootfs/keep/b", "rootfs/opaque",
                     "rootfs/opaque/new", "rootfs/replaced"], names
    with tarfile.open(tmp_path / "m.aci") as tf:
        assert tf.extractfile("rootfs/replaced").read() == b"now a file"
        assert not any("overlay" in k for m in tf.getmembers() for k in m.pax_headers)
    # The same files in one plain tree give the same image.
    flat = tmp_path / "flat"
    for d in ("keep", "opaque"):
        os.makedirs(flat / d)
    (flat / "keep/a").write_text("lower")
    (flat / "keep/b").write_text("upper")
    (flat / "opaque/new").write_text("upper")
    (flat / "replaced").write_text("now a file")
    for p in (upper, lower, str(flat)):
        os.chmod(p, 0o755)
    assert pod_export.write_tree([str(flat)], MANIFEST, None).id == pod_export.write_tree([upper, lower], MANIFEST, None).id


def test_special_files_left_out_and_listed(tmp_path):
    root = tmp_path / "root"
    os.makedirs(root / "dev")
    os.mknod(str(root / "dev" / "sda"), stat.S_IFBLK | 0o600, os.makedev(8, 0))
    os.mknod(str(root / "dev" / "mem"), stat.S_IFCHR | 0o600, os.makedev(1, 1))
    os.mkfifo(str(root / "fifo"))
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(root / "sock"))
    s.close()
    changed, r = pod_export.export([str(root)], MANIFEST, str(tmp_path / "s.aci"))
    assert sorted(r.skipped) == ["/dev/mem", "/dev/sda", "/fifo", "/sock"]
    assert [x[0] for x in _members(str(tmp_path / "s.aci"))] == ["manifest", "rootfs", "rootfs/dev"]


def test_refusals_leave_nothing(tmp_path):
    with pytest.raises(RocketError, match="compression"):
        pod_export.export([str(tmp_path)], MANIFEST, str(tmp_path / "x.aci"), compression="zstd")
    with pytest.raises(RocketError, match="dest: directory"):
        pod_export.export([str(tmp_path)], MANIFEST, str(tmp_path / "no" / "x.aci"))
    with pytest.raises(RocketError, match="dest: .* is a directory"):
        pod_export.export([str(tmp_path)], MANIFEST, str(tmp_path))
    with pytest.raises(RocketError, match="image_name"):
        pod_export.export_manifest(MANIFEST, "Not A Name")
    (tmp_path / "real").mkdir()
    os.symlink(str(tmp_path / "real"), str(tmp_path / "link"))
    with pytest.raises(OSError):
        pod_export.export([str(tmp_path / "link")], MANIFEST, str(tmp_path / "l.aci"))   # a root that is a link
    with pytest.raises(ImageError, match="nothing to export"):
        pod_export.export([str(tmp_path / "absent")], MANIFEST, str(tmp_path / "a.aci"))
    assert sorted(os.listdir(tmp_path)) == ["link", "real"]


def test_a_directory_swapped_for_a_link_is_refused_not_followed(tmp_path, monkeypatch):
    root = tmp_path / "root"
    os.makedirs(root / "d")
    (root / "d" / "f").write_text("x")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    real_lstat = os.lstat

    def swapping_lstat(name, *a, **kw):
        st = real_lstat(name, *a, **kw)
        if name == "d" and stat.S_ISDIR(st.st_mode):   # the app swaps it right after we looked
            os.rename(str(root / "d"), str(tmp_path / "moved"))
            os.symlink(str(outside), str(root / "d"))
        return st

    monkeypatch.setattr(pod_export.os, "lstat", swapping_lstat)
    with pytest.raises(ImageError, match="rootfs/d changed while it was exported"):
        pod_export.export([str(root)], MANIFEST, str(tmp_path / "r.aci"))
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".aci") or n.endswith(".tmp")]


def test_round_trip_through_a_store_keeps_the_id(tmp_path):
    """A pod-like overlay exported, imported into another store, rendered, exported again: same ID."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    base = tmp_path / "base"
    _tree(str(base), 5)
    os.makedirs(base / "bin")
    (base / "bin" / "ls").write_text("#!/bin/sh\n")
    aci.build_aci(str(base), MANIFEST, str(tmp_path / "base.aci"))
    with Store(str(tmp_path / "one")) as st:
        iid = st.import_file(str(tmp_path / "base.aci"))[0]["id"]
        lower = st.render(iid)["rootfs"]
        manifest = pod_export.export_manifest(st.manifest(iid), "example.com/snapshot")
    up = tmp_path / "upper"
    os.makedirs(up / "srv" / "www")
    os.makedirs(up / "bin")
    (up / "srv" / "www" / "index.html").write_text("made\n")
    os.chown(str(up / "srv" / "www" / "index.html"), 1000, 1000)
    os.symlink("/etc/passwd", str(up / "srv" / "leak"))
    os.mkfifo(str(up / "srv" / "pipe"))
    os.mknod(str(up / "bin" / "ls"), stat.S_IFCHR, os.makedev(0, 0))
    changed, first = pod_export.export([str(up), lower], manifest, str(tmp_path / "a.aci"))
    assert first.skipped == ["/srv/pipe"]
    with Store(str(tmp_path / "two")) as st:
        rec = st.import_file(str(tmp_path / "a.aci"))[0]
        assert rec["id"] == first.id
        tree = st.render(rec["id"])
        changed, again = pod_export.export([tree["rootfs"]], pod_export.export_manifest(st.manifest(rec["id"])),
                                           str(tmp_path / "b.aci"), compression="none")
    assert again.id == first.id and _members(str(tmp_path / "a.aci")) == _members(str(tmp_path / "b.aci"))


def test_a_stored_image_is_flattened_with_its_dependencies(tmp_path):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    base, top = tmp_path / "base", tmp_path / "top"
    _tree(str(base), 5)
    os.makedirs(top / "srv")
    (top / "srv" / "added").write_text("from the top image\n")
    aci.build_aci(str(base), dict(MANIFEST, name="example.com/base"), str(tmp_path / "base.aci"))
    derived = dict(MANIFEST, name="example.com/derived", pathWhitelist=["/srv/added", "/etc/app/conf"],
                   dependencies=[{"imageName": "example.com/base", "labels": [{"name": "version", "value": "1"}]}])
    aci.build_aci(str(top), derived, str(tmp_path / "top.aci"))
    with Store(str(tmp_path / "dd")) as st:
        st.import_file(str(tmp_path / "base.aci"))
        iid = st.import_file(str(tmp_path / "top.aci"))[0]["id"]
        tree = st.render(iid)
        m = pod_export.export_manifest(st.manifest(iid))
        changed, r = pod_export.export([tree["rootfs"]], m, str(tmp_path / "flat.aci"))
    assert "dependencies" not in r.manifest and "pathWhitelist" not in r.manifest and r.manifest["name"] == "example.com/derived"
    files = [x[0] for x in _members(str(tmp_path / "flat.aci")) if x[1] != tarfile.DIRTYPE]
    assert files == ["manifest", "rootfs/etc/app/conf", "rootfs/srv/added"], files
