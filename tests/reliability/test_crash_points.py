"""SIGKILL at every named crash point of stage0, then recover: nothing dangling, nothing leaked.

The points are read from the source (every ``crashpoint.hit("...")``), so a point added
without a scenario fails ``test_every_point_has_a_scenario``; each point's test asserts the
driver reached it (ROCKET_CRASH_LOG) and died there (SIGKILL), then ``harness.settle``.
"""
import glob
import json
import os
import re

import pytest

import harness
from tests.support import ROOT, images, pods
from tests.support.https_server import Resource, Server

MODULE_UTILS = os.path.join(ROOT, "plugins", "module_utils")


def source_points():
    """Every crashpoint.hit("...") of stage0 and linux.crash_point("...") of stage1."""
    points = set()
    for path in glob.glob(os.path.join(MODULE_UTILS, "stage[01]", "*.py")):
        with open(path) as f:
            points.update(re.findall(r'(?:crashpoint\.hit|linux\.crash_point)\("([^"]+)"\)', f.read()))
    return sorted(points)


POINTS = source_points()
BUSYBOX = "example.com/busybox"


def base(data_dir, image_dir, stage1=False):
    """A store with the busybox image (and the stage1 image, for pod scenarios)."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import stage1_image
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    with Store(data_dir) as s:
        rec = s.import_file(pods.busybox_aci(image_dir))[0]
        if stage1:
            stage1_image.ensure(s, None)
    return rec["id"]


def fresh_aci(tmp_path, **kw):
    return images.build(tmp_path, name="example.com/fresh", version=os.urandom(4).hex(),
                        files={"etc/f": os.urandom(64), "d/x": b"x"}, **kw)


def prepared(data_dir, image_dir, script=None):
    base(data_dir, image_dir, stage1=True)
    args = ["prepare", BUSYBOX] + ([script] if script else [])
    return harness.ok(data_dir, *args)


# Each scenario sets a store up (in this process) and returns the driver's arguments for
# the operation that passes the points named by its prefixes.
def _import(data_dir, image_dir, tmp_path, server):
    base(data_dir, image_dir)
    return ["import", fresh_aci(tmp_path)[0]]


def _render(data_dir, image_dir, tmp_path, server):
    base(data_dir, image_dir)
    aci, image_id = fresh_aci(tmp_path, app=False, deps=[{"imageName": BUSYBOX}])
    harness.ok(data_dir, "import", aci)
    return ["render", image_id]


def _rmi(data_dir, image_dir, tmp_path, server):
    return ["rmi", base(data_dir, image_dir)]


def _prepare(data_dir, image_dir, tmp_path, server):
    base(data_dir, image_dir, stage1=True)
    return ["prepare", BUSYBOX]


def _run(data_dir, image_dir, tmp_path, server):
    return ["run", prepared(data_dir, image_dir)]


def _foreground(data_dir, image_dir, tmp_path, server):
    return ["foreground", prepared(data_dir, image_dir, "true")]


def _running(data_dir, image_dir):
    uuid = prepared(data_dir, image_dir)
    harness.ok(data_dir, "run", uuid)
    return uuid


def _stop(data_dir, image_dir, tmp_path, server):
    return ["stop", _running(data_dir, image_dir)]


def _remove(data_dir, image_dir, tmp_path, server):
    return ["remove", _running(data_dir, image_dir)]


def _remove_many(data_dir, image_dir, tmp_path, server):
    return ["remove_many", _running(data_dir, image_dir), _running(data_dir, image_dir)]


def _podgc(data_dir, image_dir, tmp_path, server):
    harness.ok(data_dir, "foreground", prepared(data_dir, image_dir, "true"))
    return ["podgc"]


def _storegc(data_dir, image_dir, tmp_path, server):
    base(data_dir, image_dir)
    harness.ok(data_dir, "import", fresh_aci(tmp_path)[0])
    return ["storegc", "0"]


def _fetch(data_dir, image_dir, tmp_path, server):
    base(data_dir, image_dir)
    return ["fetch", server.add("/fresh.aci", Resource(file=fresh_aci(tmp_path)[0]))]


_REGISTRY = {}


def _serve_image(fake, repo_tag, layers):
    """An OCI image (gzip layers of {path: bytes}) answered by a FakeRegistry (threads of this
    process: a registry process would be a child every settle waits for)."""
    import gzip
    import hashlib
    import io
    import tarfile

    def blob(data, media_type):
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        fake.routes["/v2/%s/blobs/%s" % (repo, d)] = lambda h: (200, {}, data)
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    repo, tag = repo_tag.split(":")
    descs, diffs = [], []
    for files in layers:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
            for name, data in sorted(files.items()):
                ti = tarfile.TarInfo(name)
                ti.size = len(data)
                tf.addfile(ti, io.BytesIO(data))
        diffs.append("sha256:" + hashlib.sha256(raw.getvalue()).hexdigest())
        descs.append(blob(gzip.compress(raw.getvalue(), mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"))
    config = json.dumps({"os": "linux", "architecture": "amd64", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diffs}}).encode()
    mt = "application/vnd.oci.image.manifest.v1+json"
    manifest = json.dumps({"schemaVersion": 2, "mediaType": mt, "layers": descs,
                           "config": blob(config, "application/vnd.oci.image.config.v1+json")}).encode()
    digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    headers = {"Content-Type": mt, "Docker-Content-Digest": digest}
    fake.routes["/v2/"] = lambda h: (200, {}, b"{}")
    for r in (tag, digest):
        fake.routes["/v2/%s/manifests/%s" % (repo, r)] = lambda h: (200, headers, manifest)


@pytest.fixture(scope="module", autouse=True)
def crash_registry():
    """A plain-http registry with one image, for the pull scenario."""
    from tests.support.registry import FakeRegistry

    with FakeRegistry() as fake:
        _serve_image(fake, "crash/img:1", [{"etc/a": b"a" * 4096}, {"etc/b": b"b" * 4096}])
        _REGISTRY["ref"] = "docker://%s/crash/img:1" % fake.host
        yield fake
        _REGISTRY.clear()


def _pull(data_dir, image_dir, tmp_path, server):
    base(data_dir, image_dir)
    return ["pull", _REGISTRY["ref"]]


SCENARIOS = [
    (("store.import.",), _import), (("store.render.",), _render), (("store.remove.",), _rmi),
    (("pod.create.", "prepare."), _prepare), (("run.detached.",), _run),
    (("run.foreground.", "launch."), _foreground), (("run.stop.",), _stop),
    (("pod_gc.remove.", "pod_gc.delete."), _remove), (("pod_gc.mark.",), _podgc),
    (("store_gc.gc.",), _storegc), (("pod_gc.batch.",), _remove_many), (("fetch.",), _fetch), (("registry_pull.",), _pull),
]


def scenario(point):
    return next((fn for prefixes, fn in SCENARIOS if point.startswith(prefixes)), None)


def test_points_are_found():
    assert len(POINTS) >= 30, POINTS


def test_every_point_has_a_scenario():
    assert [p for p in POINTS if scenario(p) is None] == []


@pytest.fixture
def server():
    with Server() as s:
        yield s


@pytest.mark.parametrize("point", POINTS)
def test_crash_at(point, tmp_path, image_dir, server):
    data_dir = str(tmp_path / "rocket")
    args = scenario(point)(data_dir, image_dir, tmp_path, server)
    log = tmp_path / "crash.log"
    rc, out, err = harness.drive(data_dir, *args, crash_at=point, crash_log=log)
    reached = log.read_text().split() if log.exists() else []
    assert point in reached, "%s not reached by %s (rc %s): %s" % (point, args, rc, err[-2000:])
    if point.startswith("launch."):  # in the pod's stage1 process: the driver sees it killed
        assert rc == 0 and json.loads(out.splitlines()[-1]) == 128 + 9, (rc, out, err[-2000:])
    else:
        assert rc == -9, "expected SIGKILL at %s, got rc %s: %s" % (point, rc, err[-2000:])
    harness.settle(data_dir)
