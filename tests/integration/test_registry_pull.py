"""Pulling docker:// images into the store, against real registries (Debian's docker-registry).

The registries and the images in them are real (tests.support.registry: skopeo pushes OCI
layouts); what the registry served is read from its own access log. A small fake registry is
used only for answers a real one cannot be made to give (a blob that is not what its digest
says, a body cut short). Every failure must leave the store as it was and cas/tmp empty.
"""
import gzip
import hashlib
import io
import json
import os
import sqlite3
import tarfile

import pytest

from tests.support import registry as R
from tests.support.ansible_run import module
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_pull, store_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

pytestmark = pytest.mark.skipif(bool(R.missing_tools()), reason="registry tools missing: %s" % R.missing_tools())


@pytest.fixture(scope="module")
def regs(tmp_path_factory):
    rs = R.RegistrySet(str(tmp_path_factory.mktemp("registries")))
    try:
        for name in ("multi", "layers", "shared_a", "shared_b", "v2s2"):
            rs.push(name)
        yield rs
    finally:
        rs.stop()


@pytest.fixture
def store(tmp_path):
    with Store(str(tmp_path / "rocket")) as s:
        yield s


def opts(reg, **kw):
    return registry_pull.Options(ca_path=reg.ca, **kw)


def snapshot(store):
    """Everything a pull could change: files under cas/ (but tmp) and the index rows."""
    store.index.all_images()        # the index exists (it is created on first use)
    files = []
    for root, dirs, names in os.walk(store.dd.cas):
        if root.startswith(store.dd.tmp):
            continue
        files += [os.path.relpath(os.path.join(root, n), store.dd.cas) for n in names
                  if not n.startswith("index.db")]
    db = sqlite3.connect(store.dd.index_path)
    try:
        rows = {t: sorted(db.execute("SELECT * FROM %s" % t).fetchall())
                for t in ("images", "trees", "sources", "image_blobs")}
    finally:
        db.close()
    return sorted(files), rows


def assert_untouched(store, before):
    assert snapshot(store) == before
    assert os.listdir(store.dd.tmp) == []


def cached(store):
    base = store.dd.oci_blobs
    return {"%s:%s" % (a, h) for a in (os.listdir(base) if os.path.isdir(base) else [])
            for h in os.listdir(os.path.join(base, a))}


# --------------------------------------------------------------------------- pulls

def test_index_followed_to_this_platform_and_converted(regs, store):
    reg = regs.open
    mark = reg.mark()
    rec, changed, info = registry_pull.pull(store, reg.ref(R.IMAGES["multi"]), opts(reg))
    assert changed and info["action"] == "pulled" and info["platform"] == "linux/amd64"
    assert info["digest"] == regs.images["multi"] and info["manifest"] != info["digest"]
    assert rec["labels"] == {"version": "1", "os": "linux", "arch": "amd64"}
    assert rec["name"] == "127.0.0.1-%s/test/multi" % reg.host.split(":")[1]
    tree = store.render(rec["id"])
    assert os.path.exists(os.path.join(tree["rootfs"], "etc", "multi-amd64-00.txt"))
    assert not os.path.exists(os.path.join(tree["rootfs"], "etc", "multi-arm64-00.txt"))
    # The image keeps what it was made from: manifest, config, layer; all in the cache.
    listed = set(store.index.image_blobs(rec["id"]))
    assert listed == {info["manifest"]} | set(reg.blob_gets(mark))     # config + the amd64 layer
    assert listed <= cached(store) and os.listdir(store.dd.tmp) == []
    assert store.resolve(reg.ref(R.IMAGES["multi"]))["id"] == rec["id"]

    arm, dummy, ainfo = registry_pull.pull(store, reg.ref(R.IMAGES["multi"]), opts(reg, platform="linux/arm64"))
    assert ainfo["platform"] == "linux/arm64/v8" and arm["labels"]["arch"] == "aarch64" and arm["id"] != rec["id"]


def test_second_pull_downloads_nothing_and_update_asks_only_the_digest(regs, store):
    reg = regs.open
    ref = reg.ref(R.IMAGES["layers"])
    mark = reg.mark()
    rec, changed, info = registry_pull.pull(store, ref, opts(reg))
    assert changed and info["layers"] == {"total": 12, "downloaded": 12, "reused": 0}
    assert len(reg.blob_gets(mark)) == 13            # 12 layers and the config, each once

    mark = reg.mark()
    again, changed, info = registry_pull.pull(store, ref, opts(reg))
    assert (again["id"], changed, info["action"]) == (rec["id"], False, "store")
    assert reg.access_log(mark) == []                # pull=new: the store answers

    before = snapshot(store)
    mark = reg.mark()
    again, changed, info = registry_pull.pull(store, ref, opts(reg, pull="always"))
    assert (again["id"], changed, info["action"]) == (rec["id"], False, "not-modified")
    served = [(e["method"], e["path"]) for e in reg.access_log(mark) if e["path"] != "/v2/"]
    assert served == [("HEAD", "/v2/test/layers/manifests/12")]
    assert snapshot(store) == before


def test_shared_layer_downloaded_once_and_collected_when_unused(regs, store):
    reg = regs.open
    a, dummy, ia = registry_pull.pull(store, reg.ref(R.IMAGES["shared_a"]), opts(reg))
    mark = reg.mark()
    b, dummy, ib = registry_pull.pull(store, reg.ref(R.IMAGES["shared_b"]), opts(reg))
    assert ib["layers"] == {"total": 2, "downloaded": 1, "reused": 1}
    shared = set(store.index.image_blobs(a["id"])) & set(store.index.image_blobs(b["id"]))
    assert len(shared) == 1 and not shared & set(reg.blob_gets(mark))
    only_a = set(store.index.image_blobs(a["id"])) - shared

    store.remove(a["id"])                            # cas_image absent: a's own blobs go
    assert not only_a & cached(store) and shared <= cached(store)
    store.remove(b["id"])
    assert cached(store) == set()

    # gc collects what no image lists, e.g. blobs of a pull that died after landing them.
    registry_pull.pull(store, reg.ref(R.IMAGES["v2s2"]), opts(reg))
    with store.index.transaction() as db:
        db.execute("DELETE FROM image_blobs")
    report = store_gc.gc(store, grace=3600)
    assert report["images"] == [] and len(report["blobs"]) == 4 and cached(store) == set()


def test_store_check_finds_a_corrupt_cached_blob_and_the_next_pull_heals_it(regs, store):
    reg = regs.open
    rec, dummy, info = registry_pull.pull(store, reg.ref(R.IMAGES["shared_a"]), opts(reg))
    layer = sorted(set(store.index.image_blobs(rec["id"])) - {info["manifest"], info["config"]})[0]
    with open(store.dd.oci_blob_path(layer), "r+b") as f:
        f.write(b"X")
    problems = store_gc.check(store)
    assert [(p["kind"], p["what"]) for p in problems] == [("blob", layer)]
    assert store_gc.check(store, repair=True)[0]["repaired"] and store_gc.check(store) == []
    store.remove(rec["id"])
    again, changed, info = registry_pull.pull(store, reg.ref(R.IMAGES["shared_a"]), opts(reg))
    assert changed and info["layers"]["downloaded"] == 2 and store_gc.check(store) == []


def test_docker_schema2_and_basic_and_token_auth(regs, store):
    rec, changed, info = registry_pull.pull(store, regs.open.ref(R.IMAGES["v2s2"]), opts(regs.open))
    assert changed and rec["labels"]["version"] == "1"
    for reg in (regs.basic, regs.token):
        with pytest.raises(RocketError):
            registry_pull.pull(store, reg.ref(R.IMAGES["shared_a"]), opts(reg))
        got, dummy, info = registry_pull.pull(store, reg.ref(R.IMAGES["shared_a"]),
                                              opts(reg, username=R.USERNAME, password=R.PASSWORD))
        assert info["action"] == "pulled" and info["registry"] == reg.host


def test_mirror_first_then_source(regs, store, tmp_path):
    conf = tmp_path / "registries.conf"
    # The source is a port nobody listens on: the image can only come from the mirror.
    conf.write_text('[[registry]]\nprefix = "127.0.0.1:9/test"\nlocation = "127.0.0.1:9/test"\n'
                    '[[registry.mirror]]\nlocation = "%s/test"\n' % regs.open.host)
    rec, changed, info = registry_pull.pull(store, "docker://127.0.0.1:9/test/multi:1",
                                            opts(regs.open, registries_conf=str(conf)))
    assert changed and info["mirror"] is True and info["registry"] == regs.open.host
    assert store.resolve("docker://127.0.0.1:9/test/multi:1")["id"] == rec["id"]


def test_check_mode_reads_no_layer(regs, store):
    reg = regs.open
    mark = reg.mark()
    rec, changed, info = registry_pull.pull(store, reg.ref(R.IMAGES["layers"]), opts(reg), check=True)
    assert changed and rec["id"] is None and info["action"] == "would-pull"
    assert reg.blob_gets(mark) == [info["config"]]     # the config (small), never a layer
    assert cached(store) == set() and store.index.all_images() == []


# --------------------------------------------------------------------------- trust and refusals

def test_digest_pin_and_require_digest(regs, store):
    reg = regs.open
    before = snapshot(store)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(RocketError, match="pinned"):
        registry_pull.pull(store, reg.ref(R.IMAGES["multi"]), opts(reg, digest=wrong))
    assert_untouched(store, before)
    with pytest.raises(RocketError, match="require_digest"):
        registry_pull.pull(store, reg.ref(R.IMAGES["multi"]), opts(reg, require_digest=[reg.host]))
    with pytest.raises(RocketError, match="no image for platform linux/s390x"):
        registry_pull.pull(store, reg.ref(R.IMAGES["multi"]), opts(reg, platform="linux/s390x"))
    assert_untouched(store, before)
    rec, dummy, info = registry_pull.pull(store, reg.ref(R.IMAGES["multi"]),
                                          opts(reg, digest=regs.images["multi"], require_digest=[reg.host]))
    assert info["verified"].startswith("manifest digest %s pinned" % regs.images["multi"])
    pinned = "%s@%s" % (reg.ref("test/multi"), regs.images["multi"])
    again, changed, info = registry_pull.pull(store, pinned, opts(reg, pull="update"))
    # Untagged: the same content labelled version "latest" (docs/oci.md), so another image ID.
    assert changed and info["digest"] == regs.images["multi"] and again["labels"]["version"] == "latest"
    mark = reg.mark()
    same, changed, info = registry_pull.pull(store, pinned, opts(reg, pull="update"))
    assert (same["id"], changed, info["action"]) == (again["id"], False, "store")
    assert reg.access_log(mark) == []       # what a digest names never moves: not even a HEAD


def _layer(*members):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


def _serve_image(fake, repo, layer, config_extra=None, serve_layer=None):
    """An OCI image in the fake registry; ``serve_layer`` replaces the layer's bytes on the wire."""
    diff = "sha256:" + hashlib.sha256(gzip.decompress(layer)).hexdigest()
    config = json.dumps(dict({"os": "linux", "architecture": "amd64", "config": {},
                              "rootfs": {"type": "layers", "diff_ids": [diff]}}, **(config_extra or {}))).encode()
    ld = "sha256:" + hashlib.sha256(layer).hexdigest()
    cd = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ld,
                                       "size": len(layer)}]}).encode()
    md = "sha256:" + hashlib.sha256(manifest).hexdigest()
    mt = {"Content-Type": "application/vnd.oci.image.manifest.v1+json", "Docker-Content-Digest": md}
    fake.routes["/v2/"] = lambda h: (200, {}, b"{}")
    fake.routes["/v2/%s/manifests/1" % repo] = lambda h: (200, mt, manifest)
    fake.routes["/v2/%s/manifests/%s" % (repo, md)] = lambda h: (200, mt, manifest)
    fake.routes["/v2/%s/blobs/%s" % (repo, cd)] = lambda h: (200, {}, config)
    body = layer if serve_layer is None else serve_layer
    fake.routes["/v2/%s/blobs/%s" % (repo, ld)] = lambda h: (200, {"Content-Length": str(len(layer))}, body)
    return ld


def _stall(w):
    import time

    w.write(b"\x1f\x8b")
    w.flush()
    time.sleep(3)


@pytest.mark.parametrize("case", ["wrong-bytes", "truncated", "hostile-tar", "stall", "429"])
def test_hostile_blobs_leave_the_store_as_it_was(regs, store, case):
    registry_pull.pull(store, regs.open.ref(R.IMAGES["shared_a"]), opts(regs.open))   # a store with content
    before = snapshot(store)
    good = _layer(("etc/ok", b"fine\n"))
    with R.FakeRegistry() as fake:
        if case == "wrong-bytes":
            _serve_image(fake, "x/img", good, serve_layer=_layer(("etc/ok", b"evil\n")).ljust(len(good), b"\0")[:len(good)])
            match = "digest|sha256"
        elif case == "truncated":
            _serve_image(fake, "x/img", good, serve_layer=lambda w: w.write(good[:len(good) // 2]))
            match = None
        elif case == "stall":
            _serve_image(fake, "x/img", good, serve_layer=_stall)
            match = "timed out|timeout|stall"
        elif case == "429":
            ld = _serve_image(fake, "x/img", good)
            fake.routes["/v2/x/img/blobs/%s" % ld] = lambda h: (429, {"Retry-After": "0"}, b"slow down")
            match = "429"
        else:
            _serve_image(fake, "x/img", _layer(("../escape", b"out\n")))
            match = r"\.\."
        with pytest.raises(RocketError, match=match):
            registry_pull.pull(store, "docker://%s/x/img:1" % fake.host,
                               registry_pull.Options(insecure=True, retries=1, timeout=1))
    assert_untouched(store, before)


# --------------------------------------------------------------------------- modules, end to end

def _app_layout(tmp_path, message):
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    return R.build_layout(str(tmp_path / ("layout-" + message)), [{"bin/sh": busybox}, {"etc/msg": message.encode()}])


def test_pod_run_from_a_registry_twice_check_mode_and_tag_moved(regs, tmp_path):
    reg = regs.open
    R.skopeo_push(_app_layout(tmp_path, "one"), reg, "e2e/app:1")
    dd = str(tmp_path / "rocket")
    args = {"name": "reg", "image": reg.ref("e2e/app:1"), "net": "none", "data_dir": dd,
            "exec": ["/bin/sh", "-c", "cat /etc/msg; exec sleep 1000"], "pull": "update",
            "registry": {"ca_path": reg.ca}}
    try:
        r = module("pod_run", args, check=True)
        assert r["changed"] is True and r["pulled"][0]["action"] == "would-pull", r
        assert not os.path.exists(os.path.join(dd, "cas", "oci"))

        first = module("pod_run", args)
        assert first["changed"] is True and first["action"] == "run", first
        pulled = first["pulled"][0]
        assert pulled["action"] == "pulled" and pulled["layers"]["downloaded"] == 2 and pulled["image"]
        assert first["pod"]["state"] == "running"

        mark = reg.mark()
        second = module("pod_run", args)
        assert second["changed"] is False and second["pulled"][0]["action"] == "not-modified", second
        assert reg.blob_gets(mark) == []

        R.skopeo_push(_app_layout(tmp_path, "two"), reg, "e2e/app:1")   # the tag moves
        mark = reg.mark()
        checked = module("pod_run", args, check=True)
        assert checked["changed"] is True and checked["action"] == "replace", checked
        gets = reg.blob_gets(mark)
        assert gets == [checked["pulled"][0]["config"]]                   # no layer read in check mode

        moved = module("pod_run", args)
        assert moved["changed"] is True and moved["action"] == "replace", moved
        assert moved["pulled"][0]["layers"] == {"total": 2, "downloaded": 1, "reused": 1}
        assert moved["pod"]["uuid"] != first["pod"]["uuid"]
        assert moved["pulled"][0]["image"] != pulled["image"]
    finally:
        module("pod_run", {"name": "reg", "state": "absent", "data_dir": dd})


def test_cas_image_pulls_and_removes(regs, tmp_path):
    reg = regs.open
    dd = str(tmp_path / "rocket")
    args = {"src": reg.ref(R.IMAGES["shared_a"]), "ca_path": reg.ca, "data_dir": dd}
    r = module("cas_image", args)
    assert r["changed"] is True and r["registry"]["action"] == "pulled" and r["image"]["id"], r
    assert r["registry"]["verified"].startswith("not verified")
    r2 = module("cas_image", args)
    assert r2["changed"] is False and r2["image"]["id"] == r["image"]["id"], r2
    gone = module("cas_image", dict(args, state="absent"))
    assert gone["changed"] is True and gone["image"]["id"] == r["image"]["id"], gone
    assert os.listdir(os.path.join(dd, "cas", "oci", "blobs", "sha256")) == []


def test_pod_set_pulls_its_images_and_pods(regs, tmp_path):
    reg = regs.open
    R.skopeo_push(_app_layout(tmp_path, "set"), reg, "e2e/set:1")
    dd = str(tmp_path / "rocket")
    args = {"data_dir": dd,
            "images": [{"src": reg.ref(R.IMAGES["shared_b"]), "ca_path": reg.ca}],
            "pods": [{"name": "regset", "image": reg.ref("e2e/set:1"), "net": ["none"], "state": "exited",
                      "exec": ["/bin/sh", "-c", "cat /etc/msg"], "registry": {"ca_path": reg.ca}}]}
    try:
        r = module("pod_set", args)
        assert r["changed"] is True, r
        assert r["images"][0]["registry"]["action"] == "pulled"
        pod = r["pods"][0]
        assert pod["pulled"][0]["action"] == "pulled" and pod["pod"]["apps"][0]["exit_code"] == 0, pod
        mark = reg.mark()
        again = module("pod_set", args)
        assert again["changed"] is False, again
        assert reg.access_log(mark) == []
    finally:
        module("pod_run", {"name": "regset", "state": "absent", "data_dir": dd})
