"""Push and login against real registries (Debian's docker-registry: basic and token auth).

What is pushed is checked with the tools users have (skopeo reads the manifest and config,
copies the image back into an OCI layout, which the importer turns into an ACI again), and
what the registry was asked is read from its own access log: a second push sends nothing.
"""
import base64
import hashlib
import json
import os
import shutil
import subprocess

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import oci, registry_auth, registry_push
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
from tests.support import ansible_run, images
from tests.support import registry as regsupport

SECRET_MARK = "no-such-Pa55word-"


@pytest.fixture
def store(data_dir):
    s = Store(data_dir)
    yield s
    s.close()


def skopeo(reg, *args, auth_file=None):
    """Run skopeo against ``reg`` with its CA (and an auth file: credentials never on argv)."""
    cmd = ["skopeo", args[0]]
    side = "--src-" if args[0] == "copy" else "--"   # copy reads from the registry
    if reg.cert_dir:
        cmd += [side + "cert-dir", reg.cert_dir]
    if reg.insecure:
        cmd += [side + "tls-verify=false"]
    if auth_file:
        cmd += ["--authfile", auth_file]
    cmd += list(args[1:])
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def login_file(tmp_path, reg):
    """An auth file with the test user's entry for ``reg`` (written by the library, as registry_login does)."""
    path = str(tmp_path / "auth.json")
    if reg.auth != "none":
        registry_auth.write_entry(path, reg.host, regsupport.USERNAME, regsupport.PASSWORD)
    return path


def app_images(store, tmp_path):
    """A base ACI and an app ACI depending on it (two layers once pushed); returns the app's ID."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    base_path, base_id = images.build(tmp_path, name="example.com/base", version="1",
                                      files={"bin/busybox": busybox, "etc/base": b"base\n"}, app=False)
    os.chmod(base_path, 0o644)
    store.import_file(base_path)
    app_path, app_id = images.build(
        tmp_path, name="example.com/pushme", version="1.0.0", files={"etc/msg": b"pushed\n"},
        deps=[{"imageName": "example.com/base", "imageID": base_id}],
        annotations=[{"name": "authors", "value": "rocket tests"}])
    store.import_file(app_path)
    # The app runs busybox from the base layer: what a pull must give back.
    m = store.manifest(app_id)
    assert m["dependencies"][0]["imageID"] == base_id
    return app_id, base_id


def push_args(reg, data_dir, tag, **extra):
    args = {"data_dir": data_dir, "push_to": reg.ref(tag), "ca_path": reg.ca, "name": "example.com/pushme:1.0.0"}
    args.update(extra)
    return args


def writes(entries):
    """The requests of an access log slice that change a registry."""
    return [e for e in entries if e["method"] in ("POST", "PUT", "PATCH", "DELETE")]


def write_layout(exp, root, tag):
    """An OCI image layout holding the export (what a registry would hold), for skopeo and the importer."""
    blobs = os.path.join(root, "blobs", "sha256")
    os.makedirs(blobs)
    for layer in exp.layers:
        shutil.copy(layer.path, os.path.join(blobs, layer.digest.split(":")[1]))
    for data, digest in ((exp.config, exp.config_digest), (exp.manifest, exp.manifest_digest)):
        with open(os.path.join(blobs, digest.split(":")[1]), "wb") as f:
            f.write(data)
    with open(os.path.join(root, "oci-layout"), "w") as f:
        json.dump({"imageLayoutVersion": "1.0.0"}, f)
    with open(os.path.join(root, "index.json"), "w") as f:
        json.dump({"schemaVersion": 2, "manifests": [
            {"mediaType": registry_push.OCI_MANIFEST, "digest": exp.manifest_digest, "size": len(exp.manifest),
             "annotations": {"org.opencontainers.image.ref.name": tag}}]}, f)
    return root


def test_export_round_trips_through_an_oci_layout_and_is_deterministic(store, data_dir, tmp_path):
    """No registry: the export as a layout, read by skopeo and imported back; the same image
    imported from another compression into another store exports to the same digests."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Work

    app_id, base_id = app_images(store, tmp_path)
    work = Work(store.dd.tmp, "test")
    try:
        exp = registry_push.export_image(store, app_id, work.path)
        layout = write_layout(exp, str(tmp_path / "layout"), "1")
    finally:
        work.cleanup()
    p = subprocess.run(["skopeo", "inspect", "--config", "oci:" + layout + ":1"], capture_output=True,
                       text=True, timeout=60, check=False)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["rootfs"]["diff_ids"] == [la.diff_id for la in exp.layers]
    rec, changed = oci.import_oci(store, layout, name="example.com/roundtrip")
    assert changed and store.manifest(rec["id"])["app"]["exec"] == ["/bin/true"]
    rootfs = store.render(rec["id"])["rootfs"]
    for rel in ("bin/busybox", "etc/base", "etc/msg"):
        assert os.path.isfile(os.path.join(rootfs, rel)), rel

    # the same images, xz-compressed, in another store: the same digests
    other = Store(str(tmp_path / "other"))
    try:
        for image_id in (base_id, app_id):
            with open(store.dd.blob_path(image_id), "rb") as f:
                import gzip
                import lzma

                xz = lzma.compress(gzip.decompress(f.read()))
            path = str(tmp_path / ("%s.aci.xz" % image_id[:20]))
            with open(path, "wb") as f:
                f.write(xz)
            assert other.import_file(path)[0]["id"] == image_id
        work = Work(other.dd.tmp, "test")
        try:
            again = registry_push.export_image(other, app_id, work.path)
        finally:
            work.cleanup()
        assert again.manifest_digest == exp.manifest_digest
        assert [la.digest for la in again.layers] == [la.digest for la in exp.layers]
    finally:
        other.close()
    assert os.listdir(store.dd.tmp) == []


# --------------------------------------------------------------------------- login

@pytest.mark.parametrize("kind", ["basic", "token"])
def test_login_verifies_writes_and_removes(registries, tmp_path, kind):
    """Through the module: a refused login, a login, a logout (check mode and diff), with no
    password anywhere in what Ansible shows; the library's converge for the rest."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import registry_login

    reg = getattr(registries, kind)
    auth = str(tmp_path / "containers" / "auth.json")
    base = {"registry": reg.host, "username": regsupport.USERNAME, "auth_file": auth, "ca_path": reg.ca}

    wrong = SECRET_MARK + kind
    r = ansible_run.module("registry_login", dict(base, password=wrong))
    assert r.get("failed") and reg.host in r["msg"], r
    assert not os.path.exists(auth), "a refused login must not write the file"
    assert wrong not in r["_stdout"] and wrong not in json.dumps({k: v for k, v in r.items() if k != "_stdout"})

    r = ansible_run.module("registry_login", dict(base, password=regsupport.PASSWORD), diff=True)
    assert r["changed"] and r["verified"] and not r.get("failed"), r
    assert r["registry"] == reg.host and r["auth_file"] == auth and r["username"] == regsupport.USERNAME
    assert os.stat(auth).st_mode & 0o777 == 0o600
    with open(auth) as f:
        doc = json.load(f)
    assert base64.b64decode(doc["auths"][reg.host]["auth"]).decode() == \
        "%s:%s" % (regsupport.USERNAME, regsupport.PASSWORD)
    everything = json.dumps(r)
    assert regsupport.PASSWORD not in everything, "the password leaked into the result or its output"
    assert r["diff"]["after"]["password"] == "(new)" and r["diff"]["before"] == {}

    # The file is the one containers tools read: skopeo gets in with it.
    p = skopeo(reg, "inspect", "--raw", reg.ref(regsupport.IMAGES["v2s2"]), auth_file=auth)
    assert p.returncode == 0, p.stderr

    params = dict(base, password=regsupport.PASSWORD, state="present", verify=True)
    changed, result, dummy, dummy = registry_login.converge(params, check=False)
    assert not changed and result["verified"]
    before = open(auth, "rb").read()
    # check mode: a new password is verified (and refused here), nothing written
    with pytest.raises(RocketError, match=reg.host):
        registry_login.converge(dict(params, password=wrong), check=True)
    assert open(auth, "rb").read() == before

    # another entry in the same file is kept when this one goes
    registry_auth.write_entry(auth, "127.0.0.1:1", "other", "x")
    r = ansible_run.module("registry_login", {"registry": reg.host, "auth_file": auth, "state": "absent"},
                           check=True, diff=True)
    assert r["changed"] and registry_auth.read_entry(auth, reg.host) is not None
    assert r["diff"]["before"]["username"] == regsupport.USERNAME and "s3cret" not in json.dumps(r["diff"])
    assert registry_login.converge(dict(params, state="absent"), check=False)[0]
    assert registry_auth.read_entry(auth, reg.host) is None
    assert registry_auth.read_entry(auth, "127.0.0.1:1") is not None
    assert not registry_login.converge(dict(params, state="absent"), check=False)[0]


def test_login_refuses_a_bad_registry_value(tmp_path):
    r = ansible_run.module("registry_login", {"registry": "not a host/", "username": "u", "password": "p",
                                              "auth_file": str(tmp_path / "a.json"), "verify": False})
    assert r.get("failed") and "registry" in r["msg"]
    assert not os.path.exists(str(tmp_path / "a.json"))


# --------------------------------------------------------------------------- push

def test_push_is_an_oci_image_others_read_and_a_second_push_sends_nothing(registries, store, data_dir, tmp_path):
    reg = registries.basic
    auth = login_file(tmp_path, reg)
    app_id, base_id = app_images(store, tmp_path)

    mark = reg.mark()
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/pushme:1", auth_file=auth), diff=True)
    assert r["changed"] and not r.get("failed"), r
    push = r["push"]
    assert push["action"] == "pushed" and push["previous_digest"] is None
    assert push["blobs_uploaded"] == 3 and push["blobs_present"] == 0      # two layers + the config
    assert [b["kind"] for b in push["blobs"]] == ["layer", "layer", "config"]
    assert push["bytes_uploaded"] == sum(b["size"] for b in push["blobs"])
    assert r["image"]["id"] == app_id and push["platform"] == "linux/amd64"
    assert r["diff"]["after"]["manifest_digest"] == push["manifest_digest"]
    assert any(e["method"] == "PUT" and "/manifests/" in e["path"] for e in reg.access_log(mark))

    # What skopeo sees is what was computed: the manifest's digest, the config's mapping.
    p = skopeo(reg, "inspect", "--raw", reg.ref("r3/pushme:1"), auth_file=auth)
    assert p.returncode == 0, p.stderr
    assert "sha256:" + hashlib.sha256(p.stdout.encode()).hexdigest() == push["manifest_digest"]
    manifest = json.loads(p.stdout)
    assert manifest["mediaType"] == registry_push.OCI_MANIFEST and len(manifest["layers"]) == 2
    p = skopeo(reg, "inspect", "--config", reg.ref("r3/pushme:1"), auth_file=auth)
    config = json.loads(p.stdout)
    assert config["config"]["Entrypoint"] == ["/bin/true"] and config["author"] == "rocket tests"
    assert config["config"]["Labels"]["org.opencontainers.image.title"] == "example.com/pushme"

    # Idempotent: the same push asks for the manifest (HEAD, then GET: its export key says it
    # is this image), exports nothing and writes nothing.
    mark = reg.mark()
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/pushme:1", auth_file=auth))
    assert not r["changed"] and r["push"]["action"] == "unchanged", r
    assert r["push"]["manifest_digest"] == push["manifest_digest"] and r["push"]["blobs_uploaded"] == 0
    assert r["push"]["config_digest"] == push["config_digest"] and r["push"]["blobs"] == \
        [dict(b, action="exists") for b in push["blobs"]]
    log = reg.access_log(mark)
    assert writes(log) == [] and not [e for e in log if "/blobs/" in e["path"]], log
    assert sorted(e["method"] for e in log if "/manifests/" in e["path"] and e["status"] == "200") == \
        ["GET", "HEAD"], log

    # Another tag of the same image: no blob sent again, only the manifest put.
    mark = reg.mark()
    lib = dict(push_args(reg, data_dir, "r3/pushme:latest", auth_file=auth), id=None, labels={})
    changed, dummy, info = registry_push.push_task(store, lib, False, data_dir)
    assert changed and info["blobs_uploaded"] == 0 and info["blobs_present"] == 3, info
    w = writes(reg.access_log(mark))
    assert [e["method"] for e in w] == ["PUT"] and "/manifests/latest" in w[0]["path"], w

    # A tag holding someone else's image (a Docker schema 2 manifest skopeo pushed) is replaced.
    foreign = registries.images["v2s2"]
    p = subprocess.run(["skopeo", "copy", "--src-cert-dir", reg.cert_dir, "--dest-cert-dir", reg.cert_dir,
                        "--authfile", auth, reg.ref(regsupport.IMAGES["v2s2"]), reg.ref("r3/pushme:foreign")],
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    changed, dummy, info = registry_push.push_task(store, dict(lib, push_to=reg.ref("r3/pushme:foreign")),
                                                   False, data_dir)
    assert changed and info["previous_digest"] == foreign, info
    assert info["manifest_digest"] == push["manifest_digest"]

    # Check mode: says it would push, touches nothing.
    mark = reg.mark()
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/other:1", auth_file=auth), check=True)
    assert r["changed"] and r["push"]["action"] == "would-push", r
    assert {b["action"] for b in r["push"]["blobs"]} == {"would-upload"}
    assert writes(reg.access_log(mark)) == []
    assert os.listdir(store.dd.tmp) == []

    # Back into an appc image: the tree of both layers, the app's exec.
    layout = str(tmp_path / "back")
    p = skopeo(reg, "copy", reg.ref("r3/pushme:1"), "oci:" + layout + ":back", auth_file=auth)
    assert p.returncode == 0, p.stderr
    rec, dummy = oci.import_oci(store, layout, name="example.com/back")
    tree = store.render(rec["id"])
    with open(os.path.join(tree["rootfs"], "etc", "msg"), "rb") as f:
        assert f.read() == b"pushed\n"
    assert os.path.isfile(os.path.join(tree["rootfs"], "bin", "busybox"))
    assert store.manifest(rec["id"])["app"]["exec"] == ["/bin/true"]
    assert os.listdir(store.dd.tmp) == []


def test_push_with_token_auth_and_module_credentials(registries, store, data_dir, tmp_path):
    reg = registries.token
    app_id, dummy = app_images(store, tmp_path)
    creds = {"username": regsupport.USERNAME, "password": regsupport.PASSWORD}
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/tok:1", **creds))
    assert r["changed"] and r["push"]["blobs_uploaded"] == 3, r
    assert regsupport.PASSWORD not in json.dumps(r)
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/tok:1", **creds))
    assert not r["changed"], r

    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/tok:2", username=regsupport.USERNAME,
                                                   password=SECRET_MARK + "push"))
    assert r.get("failed") and reg.host in r["msg"], r
    assert SECRET_MARK not in r["_stdout"].replace("VALUE_SPECIFIED_IN_NO_LOG_PARAMETER", "")
    assert os.listdir(store.dd.tmp) == []


def test_log_in_once_then_push_naming_no_credentials(registries, store, data_dir, tmp_path):
    """The playbook shape the docs promise: registry_login, then image_push with no credentials
    (both find the file through the task's environment, as podman does)."""
    reg = registries.basic
    app_images(store, tmp_path)
    env = {"REGISTRY_AUTH_FILE": str(tmp_path / "run" / "auth.json")}
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/once:1"), extra_env=env)
    assert r.get("failed") and "no credentials" in r["msg"], r   # not logged in yet
    r = ansible_run.module("registry_login", {"registry": reg.host, "username": regsupport.USERNAME,
                                              "password": regsupport.PASSWORD, "ca_path": reg.ca}, extra_env=env)
    assert r["changed"] and r["auth_file"] == env["REGISTRY_AUTH_FILE"], r
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/once:1"), extra_env=env)
    assert r["changed"] and r["push"]["action"] == "pushed", r


def test_push_refusals_are_clear_and_leave_nothing(registries, store, data_dir, tmp_path):
    reg = registries.open
    app_id, dummy = app_images(store, tmp_path)
    p = {"id": app_id, "name": None, "labels": {}, "push_to": "docker://r3/short:1"}
    with pytest.raises(RocketError, match="name the registry"):
        registry_push.push_task(store, p, False, data_dir)
    with pytest.raises(RocketError, match="pinned to"):
        registry_push.push_task(store, dict(p, push_to=reg.ref("r3/pin@sha256:" + "0" * 64), ca_path=reg.ca),
                                False, data_dir)
    with pytest.raises(RocketError, match="example.com/nothere"):
        registry_push.push_task(store, dict(p, id=None, name="example.com/nothere"), False, data_dir)
    with pytest.raises(RocketError, match="platform"):
        registry_push.push_task(store, dict(p, push_to=reg.ref("r3/x:1"), platform="linux"), False, data_dir)
    assert os.listdir(store.dd.tmp) == []
    # plain http only when the registry is marked insecure
    plain = registries.plain
    with pytest.raises(RocketError, match=plain.host):
        registry_push.push_task(store, dict(p, push_to=plain.ref("r3/plain:1")), False, data_dir)
    changed, dummy, info = registry_push.push_task(store, dict(p, push_to=plain.ref("r3/plain:1"), insecure=True),
                                                   False, data_dir)
    assert changed and info["action"] == "pushed"
    conf = tmp_path / "registries.conf"
    conf.write_text('[[registry]]\nlocation = "%s"\ninsecure = true\n' % plain.host)
    changed, dummy, info = registry_push.push_task(
        store, dict(p, push_to=plain.ref("r3/plain:1"), registries_conf=str(conf)), False, data_dir)
    assert not changed and info["action"] == "unchanged"
    # pinned to the right digest: pushed by digest
    pushed = registry_push.push_task(store, dict(p, push_to=reg.ref("r3/pin:1"), ca_path=reg.ca), False, data_dir)
    digest = pushed[2]["manifest_digest"]
    changed, dummy, info = registry_push.push_task(
        store, dict(p, push_to=reg.ref("r3/pin2@" + digest), ca_path=reg.ca), False, data_dir)
    assert changed and info["blobs_uploaded"] == 3
    changed, dummy, info = registry_push.push_task(
        store, dict(p, push_to=reg.ref("r3/pin2@" + digest), ca_path=reg.ca), False, data_dir)
    assert not changed


# --------------------------------------------------------------------------- building with buildah

def test_buildah_build_then_import_push_and_run(registries, store, data_dir, tmp_path, capfd):
    """The documented build path: buildah builds, the archive is imported, the image pushed and
    pulled back by skopeo, and what comes back runs as a pod."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod_gc, prepare, run

    assert shutil.which("buildah"), "buildah is missing: tools/debian-packages.sh installs it"
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    shutil.copy("/bin/busybox", ctx / "busybox")
    (ctx / "Containerfile").write_text(
        "FROM scratch\n"
        "COPY busybox /bin/busybox\n"
        "RUN [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /etc && echo built > /etc/built\"]\n"
        "ENV GREETING=hello\n"
        "ENTRYPOINT [\"/bin/busybox\", \"sh\", \"-c\", \"echo $GREETING $(/bin/busybox cat /etc/built)\"]\n")
    bah = ["buildah", "--root", str(tmp_path / "bah-root"), "--runroot", str(tmp_path / "bah-run"),
           "--storage-driver", "vfs"]
    try:
        p = subprocess.run(bah + ["build", "--isolation", "chroot", "-t", "localhost/r3/built:1", str(ctx)],
                           capture_output=True, text=True, timeout=180, check=False)
        assert p.returncode == 0, p.stdout + p.stderr
        archive = str(tmp_path / "built.tar")
        p = subprocess.run(bah + ["push", "localhost/r3/built:1", "oci-archive:" + archive],
                           capture_output=True, text=True, timeout=120, check=False)
        assert p.returncode == 0, p.stderr
    finally:
        subprocess.run(bah + ["rmi", "--all", "--force"], capture_output=True, timeout=60, check=False)
        # vfs layers are plain directories; buildah may leave mounts of its own in --runroot
        shutil.rmtree(tmp_path / "bah-root", ignore_errors=True)
        shutil.rmtree(tmp_path / "bah-run", ignore_errors=True)

    r = ansible_run.module("cas_image", {"data_dir": data_dir, "src": archive, "name": "example.com/built:1"})
    assert r["changed"] and not r.get("failed"), r
    reg = registries.open
    r = ansible_run.module("image_push", push_args(reg, data_dir, "r3/built:1", name="example.com/built:1"))
    assert r["changed"] and r["push"]["action"] == "pushed", r

    layout = str(tmp_path / "back")
    p = skopeo(reg, "copy", reg.ref("r3/built:1"), "oci:" + layout + ":back")
    assert p.returncode == 0, p.stderr
    rec, dummy = oci.import_oci(store, layout, name="example.com/built-back")
    pod = prepare.prepare(store, {"apps": [{"image": rec["id"], "name": "built"}]})
    try:
        capfd.readouterr()
        rc = run.run_foreground(pod.pod, net="none")
        out = capfd.readouterr().out
        assert rc == 0 and "hello built" in out, out
    finally:
        pod_gc.remove(pod.pod, stop_timeout=2)
