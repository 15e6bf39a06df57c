"""OCI image layouts and docker save archives imported as ACIs, for real (root)."""
import gzip
import hashlib
import io
import json
import os
import tarfile

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import oci, oci_layout
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import (
    AmbiguousError, ImageError, NotFoundError)
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
PASSWD = b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001::/home/app:/bin/sh\n"


# --------------------------------------------------------------------------- builders

def layer(*entries):
    """A layer tar: entries (name, kind, payload, attrs); kind file|dir|sym|link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for e in entries:
            name, kind, payload = e[0], e[1], e[2] if len(e) > 2 else b""
            attrs = e[3] if len(e) > 3 else {}
            ti = tarfile.TarInfo(name)
            ti.mtime = 1700000000
            ti.mode = 0o755 if kind == "dir" else 0o644
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, payload
            elif kind == "link":
                ti.type, ti.linkname = tarfile.LNKTYPE, payload
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
            else:
                ti.size = len(payload)
            for k, v in attrs.items():
                setattr(ti, k, v)
            tf.addfile(ti, io.BytesIO(payload) if kind == "file" else None)
    return buf.getvalue()


def digest(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_for(layers, **cfg):
    c = {"created": "2024-05-01T10:00:00.123456789Z", "architecture": "amd64", "os": "linux",
         "config": cfg, "rootfs": {"type": "layers", "diff_ids": [digest(x) for x in layers]},
         "history": [{"created_by": "test"}]}
    return json.dumps(c).encode()


APP_CONFIG = dict(
    Entrypoint=["/bin/tool"], Cmd=["--serve", "x"], Env=["PATH=/usr/bin:/bin", "GREETING=a=b", "BAD NAME=1"],
    User="app", WorkingDir="/srv", ExposedPorts={"8080/tcp": {}, "53/udp": {}},
    Volumes={"/var/lib/data": {}}, StopSignal="SIGQUIT",
    Healthcheck={"Test": ["CMD", "true"]},
    Labels={"org.opencontainers.image.url": "https://example.com/app", "maintainer": "me",
            "Com.Example.Bad": "x"})


def app_layers():
    l1 = layer(("etc", "dir"), ("etc/passwd", "file", PASSWD), ("etc/keep", "file", b"keep"),
               ("etc/gone", "file", b"gone"), ("data", "dir"), ("data/old1", "file", b"o"),
               ("data/sub", "dir"), ("data/sub/old2", "file", b"o"), ("bin", "dir"),
               ("bin/tool", "file", b"v1", {"mode": 0o755}), ("bin/tool2", "link", "bin/tool"),
               ("usr/lib/x", "file", b"x"), ("home/app/f", "file", b"mine", {"uid": 1000, "gid": 1001}))
    l2 = layer(("bin/tool", "file", b"v2", {"mode": 0o755}), ("etc/.wh.gone", "file"),
               ("data", "dir"), ("data/.wh..wh..opq", "file"), ("data/new", "file", b"new"),
               ("bin/sh", "sym", "tool"))
    l3 = layer(("usr/lib/.wh.x", "file"), ("etc/.wh.keep", "file"), ("etc/keep", "file", b"recreated"),
               ("etc/same", "file", b"same"), ("etc/.wh.same", "file"), ("srv", "dir"))
    return [l1, l2, l3]


class Layout:
    """An OCI image layout directory written blob by blob."""

    def __init__(self, root):
        self.root = str(root)
        os.makedirs(os.path.join(self.root, "blobs", "sha256"), exist_ok=True)
        with open(os.path.join(self.root, "oci-layout"), "w") as f:
            json.dump({"imageLayoutVersion": "1.0.0"}, f)
        self.index = []

    def blob(self, data, media_type):
        d = digest(data)
        with open(os.path.join(self.root, "blobs", "sha256", d[7:]), "wb") as f:
            f.write(data)
        return {"mediaType": media_type, "digest": d, "size": len(data)}

    def image(self, layers, config, compress=True, arch=None):
        blobs = []
        for x in layers:
            if compress:
                blobs.append(self.blob(gzip.compress(x, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip"))
            else:
                blobs.append(self.blob(x, "application/vnd.oci.image.layer.v1.tar"))
        cdesc = self.blob(config, "application/vnd.oci.image.config.v1+json")
        m = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cdesc, "layers": blobs}).encode()
        desc = self.blob(m, OCI_MANIFEST)
        if arch:
            desc["platform"] = {"os": "linux", "architecture": arch}
        return desc

    def add(self, desc, ref=None):
        if ref:
            desc = dict(desc, annotations={oci_layout.REF_NAME: ref})
        self.index.append(desc)
        with open(os.path.join(self.root, "index.json"), "w") as f:
            json.dump({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index}, f)


def docker_archive(path, images, legacy=True):
    """A docker save tar; images: [(repo_tags, layers, config)]."""
    entries, files = [], {}
    for tags, layers, config in images:
        if legacy:
            cname = hashlib.sha256(config).hexdigest() + ".json"
            lnames = []
            for x in layers:
                lid = hashlib.sha256(b"id" + x).hexdigest()
                lnames.append(lid + "/layer.tar")
                files[lid + "/layer.tar"] = x
        else:
            cname = "blobs/sha256/" + hashlib.sha256(config).hexdigest()
            lnames = ["blobs/sha256/" + hashlib.sha256(x).hexdigest() for x in layers]
            files.update(zip(lnames, layers))
        files[cname] = config
        entries.append({"Config": cname, "RepoTags": tags, "Layers": lnames})
    files["manifest.json"] = json.dumps(entries).encode()
    with tarfile.open(path, "w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return path


@pytest.fixture
def store(data_dir):
    s = Store(data_dir)
    yield s
    s.close()


def tmp_is_empty(store):
    return os.listdir(store.dd.tmp) == []


def read(root, rel):
    with open(os.path.join(root, rel), "rb") as f:
        return f.read()


def app_layout(tmp_path, compress=True, ref="example.com/app:1.2"):
    layers = app_layers()
    lay = Layout(tmp_path / "layout")
    lay.add(lay.image(layers, config_for(layers, **APP_CONFIG), compress=compress), ref)
    return lay


# --------------------------------------------------------------------------- tests

def test_oci_layout_flattened_with_whiteouts_and_mapped(store, tmp_path):
    lay = app_layout(tmp_path)
    before = oci.inspect_oci(store, lay.root)
    assert not before["present"] and before["name"] == "example.com/app"
    assert before["labels"] == {"version": "1.2", "os": "linux", "arch": "amd64"}
    rec, changed = oci.import_oci(store, lay.root)
    assert changed and rec["name"] == "example.com/app"
    assert oci.inspect_oci(store, lay.root)["id"] == rec["id"]
    assert rec["labels"] == {"version": "1.2", "os": "linux", "arch": "amd64"}
    r = store.render(rec["id"])["rootfs"]
    assert read(r, "bin/tool") == b"v2"
    assert read(r, "bin/tool2") == b"v1"           # the hard link keeps layer 1's file
    assert os.readlink(os.path.join(r, "bin/sh")) == "tool"
    assert not os.path.lexists(os.path.join(r, "etc/gone"))
    assert read(r, "etc/keep") == b"recreated"      # whiteout, then the same layer's new file
    assert read(r, "etc/same") == b"same"           # a whiteout never hides its own layer's file
    assert sorted(os.listdir(os.path.join(r, "data"))) == ["new"]   # opaque directory
    assert os.listdir(os.path.join(r, "usr/lib")) == []
    st = os.stat(os.path.join(r, "home/app/f"))
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    assert os.stat(os.path.join(r, "bin/tool")).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(r, "bin/tool")).st_mtime == 1700000000
    for dirpath, dirnames, filenames in os.walk(r):
        assert not [n for n in dirnames + filenames if n.startswith(".wh.")], dirpath

    m = store.manifest(rec["id"])
    app = m["app"]
    assert app["exec"] == ["/bin/tool", "--serve", "x"]
    assert (app["user"], app["group"]) == ("app", "1001")       # primary group from /etc/passwd
    assert app["workingDirectory"] == "/srv"
    assert app["environment"] == [{"name": "PATH", "value": "/usr/bin:/bin"},
                                  {"name": "GREETING", "value": "a=b"}]
    assert app["ports"] == [{"name": "udp-53", "protocol": "udp", "port": 53},
                            {"name": "tcp-8080", "protocol": "tcp", "port": 8080}]
    assert app["mountPoints"] == [{"name": "var-lib-data", "path": "/var/lib/data", "readOnly": False}]
    ann = {a["name"]: a["value"] for a in m["annotations"]}
    assert ann["created"] == "2024-05-01T10:00:00.123456789Z"
    assert ann["homepage"] == "https://example.com/app" and ann["maintainer"] == "me"
    assert ann["appc.rocket/oci/stop-signal"] == "SIGQUIT"
    assert "Com.Example.Bad" not in ann
    dropped = " | ".join(rec["dropped"])
    assert "Com.Example.Bad" in dropped and "BAD NAME" in dropped
    assert "Healthcheck" not in dropped and ann["appc.rocket/healthcheck"] == '{"test":["true"]}'
    assert rec["oci"]["format"] == "oci" and rec["oci"]["ref"] == "example.com/app:1.2"
    assert tmp_is_empty(store)

    again, changed2 = oci.import_oci(store, lay.root)
    assert not changed2 and again["id"] == rec["id"]
    assert len(store.list()) == 1 and tmp_is_empty(store)


def test_same_image_same_id_whatever_the_packaging(tmp_path):
    """Deterministic conversion: gzip or not, OCI or docker save, dir or tar, any host."""
    layers = app_layers()
    config = config_for(layers, **APP_CONFIG)
    ids = []
    for i, make in enumerate(("oci-gz", "oci-plain", "oci-tar", "docker-legacy", "docker-new")):
        if make.startswith("oci"):
            lay = Layout(tmp_path / make)
            lay.add(lay.image(layers, config, compress=make == "oci-gz"), "example.com/app:1.2")
            src = lay.root
            if make == "oci-tar":
                src = str(tmp_path / "layout.tar")
                with tarfile.open(src, "w") as tf:
                    tf.add(lay.root, arcname=".")
        else:
            src = docker_archive(str(tmp_path / (make + ".tar")), [(["example.com/app:1.2"], layers, config)],
                                 legacy=make == "docker-legacy")
        with Store(str(tmp_path / ("store%d" % i))) as s:
            rec, changed = oci.import_oci(s, src)
            assert changed and rec["labels"]["version"] == "1.2", make
            assert rec["oci"]["format"] == ("docker" if make.startswith("docker") else "oci")
            ids.append(rec["id"])
            assert tmp_is_empty(s)
    assert len(set(ids)) == 1, ids


@pytest.mark.parametrize("compress", [True, False])
def test_digest_mismatch_leaves_nothing(store, tmp_path, compress):
    lay = app_layout(tmp_path, compress=compress)
    with open(os.path.join(lay.root, "index.json")) as f:
        mdesc = json.load(f)["manifests"][0]
    with open(os.path.join(lay.root, "blobs/sha256", mdesc["digest"][7:])) as f:
        ldigest = json.load(f)["layers"][1]["digest"]
    path = os.path.join(lay.root, "blobs/sha256", ldigest[7:])
    data = bytearray(open(path, "rb").read())
    if compress:
        data[-6] ^= 0xFF        # gzip's CRC: the decompressor fails before the end
    else:
        data[data.index(b"v2")] ^= 0x01   # a file's content: a valid tar, another digest
    open(path, "wb").write(bytes(data))
    with pytest.raises(ImageError, match="blob %s.*digest mismatch" % ldigest[:20]):
        oci.import_oci(store, lay.root)
    assert store.list() == [] and tmp_is_empty(store)


def test_diff_id_mismatch_in_legacy_docker_archive(store, tmp_path):
    layers = app_layers()
    config = config_for(layers, **APP_CONFIG)
    bad = layers[:2] + [layer(("evil", "file", b"not what the config says"))]
    src = docker_archive(str(tmp_path / "d.tar"), [(["example.com/app:1.2"], bad, config)])
    with pytest.raises(ImageError, match="diff_id"):
        oci.import_oci(store, src)
    assert store.list() == [] and tmp_is_empty(store)


@pytest.mark.parametrize("entries, why", [
    ([("../x", "file", b"x")], "'..'"),
    ([("esc", "sym", "CANARY"), ("esc/pwned", "file", b"x")], "through symlink"),
    ([("esc", "sym", "CANARY"), ("esc/.wh.keep", "file")], "through symlink"),
    ([("etc/.wh..", "file")], "whiteout must name a file"),
    ([("x", "file", b"x", {"pax_headers": {"SCHILY.xattr.trusted.overlay.opaque": "y"}})], "trusted.overlay"),
])
def test_hostile_layer_refused_canary_untouched(store, tmp_path, entries, why):
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "keep").write_bytes(b"canary")
    entries = [(e[0], e[1], str(canary) if e[2:3] == ("CANARY",) else (e[2] if len(e) > 2 else b""))
               + tuple(e[3:]) for e in entries]
    layers = [layer(("etc", "dir")), layer(*entries)]
    lay = Layout(tmp_path / "layout")
    lay.add(lay.image(layers, config_for(layers)), "example.com/evil:1")
    with pytest.raises(ImageError, match=why):
        oci.import_oci(store, lay.root)
    assert sorted(os.listdir(canary)) == ["keep"] and (canary / "keep").read_bytes() == b"canary"
    assert not os.path.exists(tmp_path / "x")
    assert store.list() == [] and tmp_is_empty(store)


def test_select_by_ref_and_ambiguity(store, tmp_path):
    lay = Layout(tmp_path / "layout")
    for v in ("1.0", "2.0"):
        ls = [layer(("version", "file", v.encode()))]
        lay.add(lay.image(ls, config_for(ls, Cmd=["/bin/v"])), "example.com/multi:" + v)
    with pytest.raises(AmbiguousError) as e:
        oci.import_oci(store, lay.root)
    assert e.value.candidates == ["example.com/multi:1.0", "example.com/multi:2.0"]
    with pytest.raises(NotFoundError, match="example.com/multi:1.0"):
        oci.import_oci(store, lay.root, ref="example.com/multi:3.0")
    rec, dummy = oci.import_oci(store, lay.root, ref="example.com/multi:2.0")
    assert rec["labels"]["version"] == "2.0"
    assert read(store.render(rec["id"])["rootfs"], "version") == b"2.0"
    # docker save with two images: by RepoTag, Docker-normalised; name and labels given.
    ls = [layer(("a", "file", b"a"))]
    lt = [layer(("b", "file", b"b"))]
    src = docker_archive(str(tmp_path / "two.tar"), [(["alpine:3.19"], ls, config_for(ls)),
                                                     (["busybox:1"], lt, config_for(lt))])
    with pytest.raises(AmbiguousError, match="alpine:3.19.*busybox:1"):
        oci.import_oci(store, src)
    rec, dummy = oci.import_oci(store, src, ref="docker.io/library/busybox:1")
    assert rec["name"] == "docker.io/library/busybox" and rec["labels"]["version"] == "1"
    rec, dummy = oci.import_oci(store, src, ref="alpine:3.19", name="example.com/mine", labels={"version": "x"})
    assert rec["name"] == "example.com/mine" and rec["labels"]["version"] == "x"
    assert os.path.exists(os.path.join(store.render(rec["id"])["rootfs"], "a"))
    assert tmp_is_empty(store)


def test_image_index_platform(store, tmp_path):
    lay = Layout(tmp_path / "layout")
    descs = []
    for arch in ("amd64", "arm64"):
        ls = [layer(("arch", "file", arch.encode()))]
        c = json.loads(config_for(ls))
        c["architecture"] = arch
        descs.append(lay.image(ls, json.dumps(c).encode(), arch=arch))
    idx = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descs}).encode()
    lay.add(lay.blob(idx, OCI_INDEX), "example.com/multiarch:1")
    host = oci_layout.host_platform()[1]
    if host in ("amd64", "arm64"):
        rec, dummy = oci.import_oci(store, lay.root)
        assert read(store.render(rec["id"])["rootfs"], "arch") == host.encode()
    rec, dummy = oci.import_oci(store, lay.root, platform="linux/arm64")
    assert rec["labels"]["arch"] == "aarch64"
    with pytest.raises(ImageError, match="no image for linux/s390x.*linux/amd64, linux/arm64"):
        oci.import_oci(store, lay.root, platform="linux/s390x")
    assert tmp_is_empty(store)


def test_tag_only_reference_needs_a_name(store, tmp_path):
    ls = [layer(("f", "file", b"f"))]
    lay = Layout(tmp_path / "layout")
    lay.add(lay.image(ls, config_for(ls)), "3.19")
    with pytest.raises(ImageError, match="give name"):
        oci.import_oci(store, lay.root)
    rec, dummy = oci.import_oci(store, lay.root, name="example.com/tagged")
    assert rec["name"] == "example.com/tagged" and rec["labels"]["version"] == "3.19"
    assert tmp_is_empty(store)


def test_gzipped_legacy_docker_archive_with_shared_layer_links(store, tmp_path):
    """`docker save a b | gzip`: the second image's layer.tar is a symlink to the first's."""
    base = layer(("etc", "dir"), ("etc/base", "file", b"base"), ("dev", "dir"),
                 ("dev/null", "chr", b"", {"devmajor": 1, "devminor": 3}))
    top = layer(("etc/top", "file", b"top"))
    ca, cb = config_for([base]), config_for([base, top], Cmd=["/bin/b"])
    ida = hashlib.sha256(b"a").hexdigest()
    idb = hashlib.sha256(b"b").hexdigest()
    files = [(hashlib.sha256(ca).hexdigest() + ".json", ca), (hashlib.sha256(cb).hexdigest() + ".json", cb),
             (ida + "/layer.tar", base), (idb + "/layer.tar", top)]
    manifest = [{"Config": files[0][0], "RepoTags": ["example.com/a:1"], "Layers": [ida + "/layer.tar"]},
                {"Config": files[1][0], "RepoTags": ["example.com/b:2"],
                 "Layers": ["shared/layer.tar", idb + "/layer.tar"]}]
    files.append(("manifest.json", json.dumps(manifest).encode()))
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tf:
        for name, data in files:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
        ti = tarfile.TarInfo("shared/layer.tar")
        ti.type, ti.linkname = tarfile.SYMTYPE, "../%s/layer.tar" % ida
        tf.addfile(ti)
    path = str(tmp_path / "save.tar.gz")
    with open(path, "wb") as f:
        f.write(gzip.compress(raw.getvalue()))
    rec, changed = oci.import_oci(store, path, ref="example.com/b:2")
    assert changed and rec["name"] == "example.com/b" and rec["labels"]["version"] == "2"
    assert rec["source"] == "docker-archive:" + path
    r = store.render(rec["id"])["rootfs"]
    assert read(r, "etc/base") == b"base" and read(r, "etc/top") == b"top"
    assert not os.path.exists(os.path.join(r, "dev/null"))       # devices only when allowed
    assert any("dev/null" in s[0] and s[1] == "char" for s in rec["skipped"])
    assert store.manifest(rec["id"])["app"]["exec"] == ["/bin/b"]
    assert tmp_is_empty(store)


def test_oci_layout_imports_and_runs_as_a_pod(store, tmp_path, capfd):
    """Whiteouts, an opaque directory and the config's entrypoint/cmd/env/user/workdir, run for real."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run

    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    group = b"root:x:0:\napp:x:1001:\n"
    l1 = layer(("bin", "dir"), ("bin/busybox", "file", busybox, {"mode": 0o755}), ("bin/sh", "sym", "busybox"),
               ("etc", "dir"), ("etc/passwd", "file", PASSWD), ("etc/group", "file", group),
               ("etc/gone", "file", b"gone"), ("etc/msg", "file", b"v1"),
               ("data", "dir"), ("data/old", "file", b"o"), ("data/sub", "dir"), ("data/sub/old2", "file", b"o"),
               ("tmp", "dir", b"", {"mode": 0o1777}), ("srv", "dir"),
               ("home", "dir"), ("home/app", "dir", b"", {"uid": 1000, "gid": 1001}))
    l2 = layer(("etc/.wh.gone", "file"), ("etc/msg", "file", b"v2"),
               ("data", "dir"), ("data/.wh..wh..opq", "file"), ("data/new", "file", b"new"))
    script = ('echo "greet=$GREETING path=$PATH user=$(busybox id -u):$(busybox id -g) cwd=$(pwd)"; '
              'echo "msg=$(busybox cat /etc/msg) args=$0,$1"; '
              'if busybox test -e /etc/gone; then echo gone=present; else echo gone=absent; fi; '
              'echo "data=$(busybox ls -A /data | busybox tr "\\n" " ")"; exit 5')
    cfg = dict(Entrypoint=["/bin/busybox", "sh", "-c"], Cmd=[script, "zero", "one"],
               Env=["PATH=/bin", "GREETING=hello=world"], User="app", WorkingDir="/srv")
    lay = Layout(tmp_path / "layout")
    lay.add(lay.image([l1, l2], config_for([l1, l2], **cfg)), "example.com/runme:1")
    rec, changed = oci.import_oci(store, lay.root)
    assert changed and rec["name"] == "example.com/runme" and tmp_is_empty(store)
    app = store.manifest(rec["id"])["app"]
    assert app["exec"] == ["/bin/busybox", "sh", "-c", script, "zero", "one"]
    assert (app["user"], app["group"]) == ("app", "1001")

    p = prepare.prepare(store, {"apps": [{"image": "example.com/runme", "name": "runme"}]})
    try:
        capfd.readouterr()
        rc = run.run_foreground(p.pod, net="none")
        out = capfd.readouterr().out
        assert rc == 5, out
        assert "greet=hello=world path=/bin user=1000:1001 cwd=/srv" in out
        assert "msg=v2 args=zero,one" in out
        assert "gone=absent" in out
        assert "data=new " in out
    finally:
        pod_gc.remove(p.pod, stop_timeout=2)
    assert store.list() and tmp_is_empty(store)
