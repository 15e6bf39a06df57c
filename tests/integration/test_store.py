"""The image store, for real: imports, lookups, trees, removal, gc, check, crashes."""
import os
import signal
import subprocess
import sys
import time

import pytest

from tests.support import COLLECTIONS, images
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, store_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import (
    AmbiguousError, ImageError, InUseError, NotFoundError, StoreError, ValidationError)
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store


@pytest.fixture
def store(data_dir):
    s = Store(data_dir)
    yield s
    s.close()


def tmp_is_empty(store):
    return os.listdir(store.dd.tmp) == []


def test_data_dir_is_private_and_versioned(data_dir):
    Store(data_dir).close()
    assert os.stat(data_dir).st_mode & 0o777 == 0o700
    with open(os.path.join(data_dir, "format")) as f:
        assert f.read() == "appc.rocket-data 1\n"
    with open(os.path.join(data_dir, "format"), "w") as f:
        f.write("appc.rocket-data 99\n")
    with pytest.raises(StoreError, match="newer than this version"):
        Store(data_dir)


def test_import_is_idempotent_and_keyed_by_uncompressed_hash(store, tmp_path):
    path, image_id = images.build(tmp_path, compression="xz")
    rec, changed = store.import_file(path)
    assert changed and rec["id"] == image_id
    assert rec["name"] == "example.com/test" and rec["labels"]["version"] == "1.0.0"
    # The store keeps the archive as received; its ID is still the hash of the tar.
    with open(store.dd.blob_path(image_id), "rb") as f:
        assert aci.image_id_of(f) == image_id
    tree = store.render(image_id)
    with open(os.path.join(tree["rootfs"], "etc/hello"), "rb") as f:
        assert f.read() == b"hello\n"
    rec2, changed2 = store.import_file(path)
    assert not changed2 and rec2["id"] == image_id
    # Same content in another file: found by hash, still unchanged.
    other = str(tmp_path / "copy.aci")
    with open(path, "rb") as a, open(other, "wb") as b:
        b.write(a.read())
    assert store.import_file(other)[1] is False
    assert tmp_is_empty(store)
    assert len(store.list()) == 1


def test_lookup_by_prefix_and_ambiguity(store, tmp_path):
    ids = []
    by_prefix = {}
    for i in range(60):
        path, image_id = images.build(tmp_path, version="1.%d" % i)
        store.import_file(path)
        ids.append(image_id)
        by_prefix.setdefault(image_id[:9], []).append(image_id)
        if any(len(v) > 1 for v in by_prefix.values()):
            break
    full = ids[0]
    assert store.get(full[:20])["id"] == full
    assert store.get(full)["id"] == full
    shared = next(k for k, v in by_prefix.items() if len(v) > 1)
    with pytest.raises(AmbiguousError) as e:
        store.get(shared)
    assert set(by_prefix[shared]) <= set(e.value.candidates)
    assert by_prefix[shared][0] in str(e.value)
    with pytest.raises(NotFoundError):
        store.get("sha512-" + ("0" * 128))
    with pytest.raises(ValidationError):
        store.get("sha512-z")
    with pytest.raises(ValidationError):
        store.get("sha512-a")  # one hex digit is not enough


def test_lookup_by_name_prefers_latest_then_newest(store, tmp_path):
    a, id_a = images.build(tmp_path, version="1.0.0")
    b, id_b = images.build(tmp_path, version="2.0.0")
    store.import_file(a)
    time.sleep(0.01)
    store.import_file(b)
    assert store.find("example.com/test")["id"] == id_b  # newest
    assert store.find("example.com/test", {"version": "1.0.0"})["id"] == id_a
    assert store.resolve("example.com/test:1.0.0,os=linux")["id"] == id_a
    c, id_c = images.build(tmp_path, version="latest")
    store.import_file(c)
    d, id_d = images.build(tmp_path, version="3.0.0")
    store.import_file(d)
    assert store.find("example.com/test")["id"] == id_c  # latest wins over newer
    with pytest.raises(NotFoundError, match="example.com/test:9"):
        store.find("example.com/test", {"version": "9"})


def test_render_with_dependencies_later_layers_win(store, tmp_path):
    base, base_id = images.build(tmp_path, name="example.com/base", version="latest", app=False, files={
        "etc/base": b"base\n", "etc/shared": b"from base\n", "lib": ("dir",), "lib/x": b"x",
        "etc/dirlink": ("link", "/lib")})
    app, app_id = images.build(tmp_path, name="example.com/app", files={
        "etc/shared": b"from app\n", "etc/dirlink": ("dir",), "etc/dirlink/own": b"own"},
        deps=[{"imageName": "example.com/base"}])
    store.import_file(base)
    store.import_file(app)
    tree = store.render(app_id)
    r = tree["rootfs"]
    assert open(os.path.join(r, "etc/base"), "rb").read() == b"base\n"
    assert open(os.path.join(r, "etc/shared"), "rb").read() == b"from app\n"
    # The symlink to a directory was replaced by the directory, not followed.
    assert not os.path.islink(os.path.join(r, "etc/dirlink"))
    assert os.path.exists(os.path.join(r, "etc/dirlink/own"))
    assert not os.path.exists(os.path.join(r, "lib/own"))
    assert tree["key"].startswith("deps-sha512-") and tree["deps"] == [base_id]
    assert store.render(app_id)["key"] == tree["key"]  # rendered once
    assert store.verify_tree(tree["key"])
    # base:latest moves: a new tree, not the stale one.
    base2, base2_id = images.build(tmp_path, name="example.com/base", version="latest", app=False,
                                   files={"etc/base": b"base v2\n"})
    time.sleep(0.01)
    store.import_file(base2)
    tree2 = store.render(app_id)
    assert tree2["key"] != tree["key"] and tree2["deps"] == [base2_id]
    assert open(os.path.join(tree2["rootfs"], "etc/base"), "rb").read() == b"base v2\n"
    assert tmp_is_empty(store)


def test_path_whitelist(store, tmp_path):
    path, image_id = images.build(tmp_path, files={"usr/bin/keep": b"k", "usr/bin/drop": b"d", "etc/drop": b"d"},
                                  whitelist=["/usr/bin/keep"])
    store.import_file(path)
    r = store.render(image_id)["rootfs"]
    assert os.path.exists(os.path.join(r, "usr/bin/keep"))
    assert not os.path.exists(os.path.join(r, "usr/bin/drop"))
    assert not os.path.exists(os.path.join(r, "etc"))


def test_missing_and_cyclic_dependencies(store, tmp_path):
    path, image_id = images.build(tmp_path, name="example.com/lonely", deps=[{"imageName": "example.com/nowhere"}])
    store.import_file(path)
    with pytest.raises(NotFoundError, match="example.com/nowhere"):
        store.render(image_id)
    a, a_id = images.build(tmp_path, name="example.com/a", deps=[{"imageName": "example.com/b"}])
    b, b_id = images.build(tmp_path, name="example.com/b", deps=[{"imageName": "example.com/a"}])
    store.import_file(a)
    store.import_file(b)
    with pytest.raises(ImageError, match="dependency cycle: example.com/a -> example.com/b -> example.com/a"):
        store.render(a_id)
    assert tmp_is_empty(store)


def _fake_pod(store, uuid, *refs):
    d = os.path.join(store.dd.pods, "prepared", uuid)
    os.makedirs(d)
    with open(os.path.join(d, "refs"), "w") as f:
        f.write("".join("%s %s\n" % r for r in refs))


def test_remove_refuses_while_used_unless_forced(store, tmp_path):
    path, image_id = images.build(tmp_path)
    store.import_file(path)
    _fake_pod(store, "2b1e7c3a-0000-4000-8000-000000000001", ("image", image_id), ("tree", image_id))
    with pytest.raises(InUseError, match="2b1e7c3a"):
        store.remove(image_id)
    assert store.get(image_id)
    store.remove(image_id, force=True)
    with pytest.raises(NotFoundError):
        store.get(image_id)
    assert not os.path.exists(store.dd.blob_path(image_id))
    assert not os.path.exists(store.dd.manifest_path(image_id))
    assert not os.path.exists(store.dd.tree_path(image_id))
    assert store_gc.check(store) == []


def test_gc_keeps_what_pods_use(store, tmp_path):
    used, used_id = images.build(tmp_path, version="1")
    unused, unused_id = images.build(tmp_path, version="2")
    store.import_file(used)
    store.import_file(unused)
    _fake_pod(store, "2b1e7c3a-0000-4000-8000-000000000002", ("image", used_id), ("tree", used_id))
    report = store_gc.gc(store, grace=3600)
    assert report["images"] == [] and report["trees"] == []
    report = store_gc.gc(store, grace=0)
    assert report["images"] == [unused_id]
    assert store.get(used_id)
    with pytest.raises(NotFoundError):
        store.get(unused_id)
    assert store_gc.check(store) == []


def test_check_finds_and_repairs_corruption(store, tmp_path):
    path, image_id = images.build(tmp_path, files={"etc/a": b"a" * 1000})
    store.import_file(path)
    assert store_gc.check(store) == []
    # A tree file changed behind our back.
    with open(os.path.join(store.dd.tree_path(image_id), "rootfs/etc/a"), "r+b") as f:
        f.write(b"b")
    # A dangling blob, as an interrupted import would leave.
    stray = store.dd.blob_path("sha512-" + "ab" * 64)
    os.makedirs(os.path.dirname(stray), exist_ok=True)
    open(stray, "wb").close()
    problems = store_gc.check(store)
    kinds = sorted((p["kind"], p["what"]) for p in problems)
    assert ("tree", image_id) in kinds and ("file", stray) in kinds
    store_gc.check(store, repair=True)
    assert store_gc.check(store) == []
    # The tree is re-rendered on demand, correct again.
    r = store.render(image_id)["rootfs"]
    assert open(os.path.join(r, "etc/a"), "rb").read() == b"a" * 1000
    # A corrupt blob makes the image go on repair.
    blob = store.dd.blob_path(image_id)
    data = bytearray(open(blob, "rb").read())
    data[len(data) // 2] ^= 0xFF
    open(blob, "wb").write(bytes(data))
    assert any(p["kind"] == "image" for p in store_gc.check(store))
    store_gc.check(store, repair=True)
    assert store.list() == []


IMPORT_SNIPPET = """
import sys
sys.path.insert(0, %r)
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
rec, changed = Store(sys.argv[1]).import_file(sys.argv[2])
print(rec["id"], changed)
"""


def _import_proc(data_dir, path):
    code = IMPORT_SNIPPET % COLLECTIONS
    return subprocess.Popen([sys.executable, "-c", code, data_dir, path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_parallel_imports_of_one_image_leave_one_copy(data_dir, tmp_path):
    path, image_id = images.build(tmp_path, files={"big": os.urandom(4 << 20)})
    procs = [_import_proc(data_dir, path) for dummy in range(6)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [o[0].split() for o in outs]
    assert {r[0] for r in results} == {image_id}
    assert sum(r[1] == "True" for r in results) == 1
    with Store(data_dir) as s:
        assert [r["id"] for r in s.list()] == [image_id]
        assert os.listdir(s.dd.tmp) == []
        assert store_gc.check(s) == []


def test_sigkill_during_import_leaves_nothing_visible(data_dir, tmp_path):
    path, image_id = images.build(tmp_path, files={"f%d" % i: os.urandom(1 << 20) for i in range(64)})
    Store(data_dir).close()
    p = _import_proc(data_dir, path)
    tmp = os.path.join(data_dir, "cas", "tmp")
    deadline = time.time() + 30
    while time.time() < deadline and not any(n.endswith(".lock") for n in os.listdir(tmp)):
        time.sleep(0.002)
    time.sleep(0.05)
    p.send_signal(signal.SIGKILL)
    p.communicate()
    # The confined extraction child may outlive its parent for a moment; it is not ours to reap
    # (its parent is gone), so wait for it to notice the closed pipe and exit.
    time.sleep(0.5)
    with Store(data_dir) as s:
        with pytest.raises(NotFoundError):
            s.get(image_id)
        leftovers = store_gc.check(s)
        assert all(pr["kind"] in ("tmp", "file") for pr in leftovers), leftovers
        store_gc.check(s, repair=True)
        assert os.listdir(s.dd.tmp) == []
        assert store_gc.check(s) == []
        # And the image imports fine afterwards.
        assert s.import_file(path)[0]["id"] == image_id


def test_live_import_work_is_never_cleaned(store, tmp_path):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Work, clean_tmp

    w = Work(store.dd.tmp, "import")
    try:
        assert clean_tmp(store.dd.tmp) == []
        assert os.path.isdir(w.path)
    finally:
        w.cleanup()
    assert tmp_is_empty(store)


def test_full_disk_fails_cleanly(tmp_path):
    mnt = str(tmp_path / "small")
    os.mkdir(mnt)
    subprocess.check_call(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", mnt])
    try:
        path, image_id = images.build(tmp_path, files={"big": os.urandom(8 << 20)})
        with Store(os.path.join(mnt, "rocket")) as s:
            with pytest.raises(StoreError, match="no space left on device"):
                s.import_file(path)
            assert os.listdir(s.dd.tmp) == []
            assert s.list() == []
    finally:
        subprocess.check_call(["umount", mnt])
