"""The metadata service for real: a daemon, pods registered with it, HTTP from the host and
from inside apps, HMAC identity, tokens, deregistration, restarts, the root-only socket.

The daemon double-forks: this test process is a subreaper while the module runs, so the
daemon is our child and stop() reaps it (PID 1 here reaps nothing).
"""
import base64
import json
import os
import socket
import stat
import time

import pytest
import requests

from tests.support import pods
from tests.support.ansible_run import module
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import metadata, pod_gc, prepare, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

H = {"Metadata-Flavor": "AppContainer"}
JSON = "application/json"
TEXT = "text/plain; charset=us-ascii"
IMAGE_ANNOTATIONS = [{"name": "authors", "value": "the image"}, {"name": "role", "value": "image-role"},
                     {"name": "created", "value": "2026-01-01T00:00:00Z"}]
_subreaper = pods.subreaper
_reap = pods.reap


@pytest.fixture(scope="module")
def reaper():
    _subreaper(True)
    yield
    _reap()
    _subreaper(False)


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("mds-images")


def _store(path, image_dir):
    s = Store(path)
    s.import_file(pods.busybox_aci(image_dir))
    s.import_file(pods.busybox_aci(image_dir, name="example.com/annotated", annotations=IMAGE_ANNOTATIONS))
    return s


def _cleanup(s):
    for p in podmod.list_pods(s.dd):
        try:
            pod_gc.remove(p, stop_timeout=2)
        except RocketError:
            pass
    metadata.stop(s.dd)
    _reap()
    s.close()


@pytest.fixture(scope="module")
def shared_store(reaper, tmp_path_factory, image_dir):
    """One store and one service (any free port) for the module: started before the leak
    checker's first snapshot, stopped after its last."""
    s = _store(str(tmp_path_factory.mktemp("mds") / "rocket"), image_dir)
    metadata.ensure_running(s.dd, port=0)
    yield s
    _cleanup(s)


@pytest.fixture
def store(shared_store):
    """The shared store; the pods a test made are removed after it (cgroups and all)."""
    yield shared_store
    pods.remove_all(shared_store.dd)  # and reaps the PID 1s of pods without a keeper: we are a subreaper


@pytest.fixture
def own_store(reaper, tmp_path, image_dir):
    """A store with a service of its own, for tests that stop or restart it."""
    s = _store(str(tmp_path / "rocket"), image_dir)
    yield s
    _cleanup(s)


def sh(script, **kw):
    return dict({"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script]}, **kw)


SLEEP = "exec sleep 300"


def start(s, spec, **kw):
    p = prepare.prepare(s, spec).pod
    run.start_detached(p, net="host", metadata_service=True, metadata_port=0, **kw)
    return p


def base_url(p):
    conf = metadata.pod_config(p)
    return "http://127.0.0.1:%d/%s/acMetadata/v1/" % (conf["port"], conf["token"])


def get(p, path, **kw):
    return requests.get(base_url(p) + path, headers=H, timeout=10, **kw)


def post(p, path, data):
    return requests.post(base_url(p) + path, data=data, headers=H, timeout=10)


def check(r, status, ctype, body=None):
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"] == ctype
    if body is not None:
        assert r.content == body


def test_endpoints_from_the_host(store):
    p = start(store, {"name": "web", "annotations": {"tier": "front", "owner": "ops"},
                      "apps": [sh(SLEEP, name="main", image="example.com/annotated",
                                  annotations={"role": "pod-role", "extra": "x"}),
                               sh(SLEEP, name="side")]})
    with open(p.file("pod"), "rb") as f:
        raw_pod = f.read()
    manifest = json.loads(raw_pod)
    conf = metadata.pod_config(p)
    assert len(conf["token"]) * 4 >= 128 and stat.S_IMODE(os.stat(p.file("metadata.json")).st_mode) == 0o600

    r = get(p, "pod/annotations")
    check(r, 200, JSON)
    assert r.json() == manifest["annotations"]
    assert {"name": "tier", "value": "front"} in r.json()
    check(get(p, "pod/manifest"), 200, JSON, raw_pod)
    check(get(p, "pod/uuid"), 200, TEXT, p.uuid.encode())  # no trailing newline
    # The image's annotations, overridden in place and extended by the pod app's, in order.
    r = get(p, "apps/main/annotations")
    check(r, 200, JSON)
    assert r.json() == [{"name": "authors", "value": "the image"}, {"name": "role", "value": "pod-role"},
                        {"name": "created", "value": "2026-01-01T00:00:00Z"}, {"name": "extra", "value": "x"}]
    check(get(p, "apps/side/annotations"), 200, JSON, b"[]")
    for app in manifest["apps"]:
        with open(p.file("apps", app["name"], "manifest"), "rb") as f:
            check(get(p, "apps/%s/image/manifest" % app["name"]), 200, JSON, f.read())
        check(get(p, "apps/%s/image/id" % app["name"]), 200, TEXT, app["image"]["id"].encode())
    check(get(p, "apps/nosuch/image/id"), 404, TEXT)
    check(get(p, "pod/nosuch"), 404, TEXT)
    r = requests.post(base_url(p) + "pod/uuid", headers=H, timeout=10)
    assert r.status_code == 405 and r.headers["Allow"] == "GET"
    # The header the spec requires of clients.
    r = requests.get(base_url(p) + "pod/uuid", timeout=10)
    assert r.status_code == 400 and "Metadata-Flavor" in r.text
    assert p.uuid in metadata.registered(store.dd)
    run.stop(p, 10)
    # The keeper deregistered it before the pod's lock was free.
    assert p.uuid not in metadata.registered(store.dd)
    check(get(p, "pod/uuid"), 401, TEXT)


def test_null_and_empty_annotations_stay_as_written(store):
    p = prepare.prepare(store, {"apps": [sh(SLEEP, name="a")]}).pod  # no name: no annotations at all
    run.start_detached(p, net="host", metadata_service=True, metadata_port=0)
    assert "annotations" not in p.manifest()
    check(get(p, "pod/annotations"), 200, JSON, b"null")
    check(get(p, "apps/a/annotations"), 200, JSON, b"[]")
    run.stop(p, 10)

    q = prepare.prepare(store, {"apps": [sh(SLEEP, name="a")]}).pod
    doc = q.manifest()
    doc["annotations"] = []
    q.write_json("pod", doc, 0o600)
    run.start_detached(q, net="host", metadata_service=True, metadata_port=0)
    check(get(q, "pod/annotations"), 200, JSON, b"[]")
    run.stop(q, 10)


def test_hmac_sign_and_verify(store):
    a = start(store, {"apps": [sh(SLEEP, name="a")]})
    b = start(store, {"apps": [sh(SLEEP, name="b")]})
    r = post(a, "pod/hmac/sign", {"content": "I am a"})
    check(r, 200, TEXT)
    sig = r.text
    assert len(base64.b64decode(sig, validate=True)) == 64 and not sig.endswith("\n")
    assert post(a, "pod/hmac/sign", {"content": "I am a"}).text == sig  # deterministic
    assert post(b, "pod/hmac/sign", {"content": "I am a"}).text != sig  # per-pod key
    # Any pod verifies another's signature by its UUID.
    assert post(b, "pod/hmac/verify", {"content": "I am a", "uuid": a.uuid, "signature": sig}).status_code == 200
    assert post(a, "pod/hmac/verify", {"content": "I am a", "uuid": a.uuid, "signature": sig}).status_code == 200
    assert post(b, "pod/hmac/verify", {"content": "I am b", "uuid": a.uuid, "signature": sig}).status_code == 403
    assert post(b, "pod/hmac/verify", {"content": "I am a", "uuid": b.uuid, "signature": sig}).status_code == 403
    bad = base64.b64encode(b"x" * 64).decode()
    assert post(b, "pod/hmac/verify", {"content": "I am a", "uuid": a.uuid, "signature": bad}).status_code == 403
    unknown = "00000000-0000-4000-8000-000000000000"
    assert post(b, "pod/hmac/verify", {"content": "I am a", "uuid": unknown, "signature": sig}).status_code == 403
    assert post(b, "pod/hmac/verify", {"content": "I am a", "uuid": "nope", "signature": sig}).status_code == 400
    assert post(b, "pod/hmac/verify", {"content": "I am a", "uuid": a.uuid, "signature": "%%"}).status_code == 400
    assert post(b, "pod/hmac/verify", {"uuid": a.uuid, "signature": sig}).status_code == 400
    assert post(a, "pod/hmac/sign", {"other": "x"}).status_code == 400
    assert get(a, "pod/hmac/sign").status_code == 405
    run.stop(a, 10)
    # a is gone: its key with it.
    assert post(b, "pod/hmac/verify", {"content": "I am a", "uuid": a.uuid, "signature": sig}).status_code == 403
    run.stop(b, 10)


def test_a_token_reaches_only_its_own_pod(store):
    a = start(store, {"apps": [sh(SLEEP, name="alpha")], "annotations": {"who": "a"}})
    b = start(store, {"apps": [sh(SLEEP, name="beta")], "annotations": {"who": "b"}})
    assert get(a, "pod/uuid").text == a.uuid and get(b, "pod/uuid").text == b.uuid
    assert {"name": "who", "value": "a"} in get(a, "pod/annotations").json()
    assert get(a, "apps/beta/image/id").status_code == 404  # b's app, asked with a's token
    assert b.uuid.encode() not in get(a, "pod/manifest").content
    port = metadata.pod_config(a)["port"]
    for token in ("", "0" * 64, metadata.pod_config(a)["token"][:-1] + "x", metadata.pod_config(a)["token"].upper()):
        r = requests.get("http://127.0.0.1:%d/%s/acMetadata/v1/pod/uuid" % (port, token), headers=H, timeout=10)
        assert r.status_code in (401, 404) and a.uuid not in r.text and b.uuid not in r.text
    r = requests.get("http://127.0.0.1:%d/acMetadata/v1/pod/uuid" % port, headers=H, timeout=10)
    assert r.status_code in (401, 404)
    run.stop(a, 10)
    run.stop(b, 10)


def test_apps_reach_it_with_wget(store, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    script = r'''
set -e
H='Metadata-Flavor: AppContainer'
for p in pod/annotations pod/manifest pod/uuid apps/$AC_APP_NAME/annotations apps/$AC_APP_NAME/image/manifest \
         apps/$AC_APP_NAME/image/id; do
    f=/out/$(echo $p | tr / _)
    wget -q -S -O $f --header "$H" "$AC_METADATA_URL/acMetadata/v1/$p" 2> $f.headers
done
wget -q -O /out/sig --header "$H" --post-data 'content=from-inside' "$AC_METADATA_URL/acMetadata/v1/pod/hmac/sign"
echo "$AC_METADATA_URL" > /out/url
'''
    spec = {"name": "inside", "annotations": {"k": "v"}, "volumes": [{"name": "out", "kind": "host", "source": str(out)}],
            "apps": [sh(script, name="app", image="example.com/annotated", mounts=[{"volume": "out", "path": "/out"}])]}
    p = prepare.prepare(store, spec).pod
    assert run.run_foreground(p, net="host", metadata_service=True, metadata_port=0) == 0
    conf = metadata.pod_config(p)
    assert (out / "url").read_text() == "http://127.0.0.1:%d/%s\n" % (conf["port"], conf["token"])
    manifest = p.manifest()
    assert (out / "pod_uuid").read_bytes() == p.uuid.encode()
    assert (out / "apps_app_image_id").read_bytes() == manifest["apps"][0]["image"]["id"].encode()
    with open(p.file("pod"), "rb") as f:
        assert (out / "pod_manifest").read_bytes() == f.read()
    assert json.loads((out / "pod_annotations").read_bytes()) == manifest["annotations"]
    assert json.loads((out / "apps_app_annotations").read_bytes()) == IMAGE_ANNOTATIONS
    assert "Content-Type: text/plain; charset=us-ascii" in (out / "pod_uuid.headers").read_text()
    assert "Content-Type: application/json" in (out / "apps_app_image_manifest.headers").read_text()
    sig = (out / "sig").read_text()
    # The pod is deregistered once it exited: its signature no longer verifies, nor its token.
    assert p.uuid not in metadata.registered(store.dd)
    q = start(store, {"apps": [sh(SLEEP, name="q")]})
    assert post(q, "pod/hmac/verify", {"content": "from-inside", "uuid": p.uuid, "signature": sig}).status_code == 403
    assert requests.get(base_url(p) + "pod/uuid", headers=H, timeout=10).status_code == 401
    run.stop(q, 10)


def test_an_exited_pod_is_deregistered(store):
    p = start(store, {"apps": [sh("sleep 5", name="a")]})
    assert p.uuid in metadata.registered(store.dd)
    assert run.wait(p, 30)
    assert p.uuid not in metadata.registered(store.dd)
    assert get(p, "pod/uuid").status_code == 401


def test_a_restarted_service_serves_the_running_pods_again(own_store):
    s = own_store
    st = metadata.ensure_running(s.dd, port=0)
    port = st["port"]
    running = start(s, {"apps": [sh(SLEEP, name="a")]})
    exited = start(s, {"apps": [sh("exit 0", name="b")]})
    assert run.wait(exited, 30)
    sig = post(running, "pod/hmac/sign", {"content": "c"}).text
    assert metadata.stop(s.dd) is True
    assert metadata.status(s.dd) is None and metadata.service_pid(s.dd) is None
    with pytest.raises(requests.ConnectionError):
        get(running, "pod/uuid")
    st2 = metadata.ensure_running(s.dd, port=port)
    assert st2["port"] == port and st2["pid"] != st["pid"]
    assert metadata.registered(s.dd) == [running.uuid]
    check(get(running, "pod/uuid"), 200, TEXT, running.uuid.encode())
    # The same key after the restart: the earlier signature still verifies.
    assert post(running, "pod/hmac/verify", {"content": "c", "uuid": running.uuid, "signature": sig}).status_code == 200
    # Asking for another port while a pod uses it is refused, with the reason.
    with pytest.raises(metadata.MetadataError, match="serves 1 pods"):
        metadata.ensure_running(s.dd, port=port + 1 if port < 65535 else port - 1)
    run.stop(running, 10)
    # gc removes the pods and stops the service nobody uses any more.
    report = pod_gc.gc(s.dd, grace=0)
    assert report["metadata_service_stopped"] and metadata.status(s.dd) is None
    _reap()


def test_the_control_socket_is_root_only(store):
    d = metadata.service_dir(store.dd)
    path = metadata.socket_path(store.dd)
    st = os.stat(path)
    assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
    assert stat.S_IMODE(os.stat(d).st_mode) == 0o700

    def as_nobody(fn):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - leaves by _exit
            try:
                os.close(r)
                os.chdir(d)  # the data directory's parents are 0700 too: connect by a relative name
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                os.write(w, fn().encode())
            except BaseException as e:  # noqa: BLE001
                os.write(w, ("raised %r" % e).encode())
            finally:
                os._exit(0)
        os.close(w)
        data = b""
        while True:
            b = os.read(r, 4096)
            if not b:
                break
            data += b
        os.close(r)
        os.waitpid(pid, 0)
        return data.decode()

    def connect_and_register():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect("control.sock")
        except PermissionError:
            return "refused"
        try:
            s.sendall(b'{"op": "register", "uuid": "00000000-0000-4000-8000-000000000000"}\n')
        except OSError:
            pass  # the service may have answered and closed already
        return s.recv(4096).decode()

    assert as_nobody(connect_and_register) == "refused"
    # Even with the file modes opened up, the service itself refuses a non-root peer.
    os.chmod(d, 0o711)
    os.chmod(path, 0o666)
    try:
        answer = as_nobody(connect_and_register)
    finally:
        os.chmod(path, 0o600)
        os.chmod(d, 0o700)
    assert "only root" in answer and '"ok": false' in answer


def test_http_edge_cases(store):
    p = start(store, {"apps": [sh(SLEEP, name="a")]})
    port = metadata.pod_config(p)["port"]
    token = metadata.pod_config(p)["token"]

    def raw(data):
        """Send data, read until the server closes."""
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            s.sendall(data)
            out = b""
            while True:
                b = s.recv(65536)
                if not b:
                    return out
                out += b
        finally:
            s.close()

    assert raw(b"garbage\r\n\r\n").startswith(b"HTTP/1.1 400 ")
    assert raw(b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n").startswith(b"HTTP/1.1 431 ")
    assert raw(b"POST /%s/acMetadata/v1/pod/hmac/sign HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
               % token.encode()).startswith(b"HTTP/1.1 501 ")
    # Two requests on one connection (keep-alive, pipelined), then HTTP/1.0 closes.
    req = b"GET /%s/acMetadata/v1/pod/uuid HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: AppContainer\r\n\r\n" % token.encode()
    out = raw(req + req.replace(b"HTTP/1.1", b"HTTP/1.0"))
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.endswith(p.uuid.encode())
    assert b"Content-Length: 36\r\n" in out
    run.stop(p, 10)


def test_net_none_is_refused_and_leaves_the_pod_prepared(store):
    p = prepare.prepare(store, {"apps": [sh(SLEEP, name="a")]}).pod
    with pytest.raises(RocketError, match="net=none"):
        run.start_detached(p, net="none", metadata_service=True, metadata_port=0)
    assert p.state() == "prepared" and not os.path.exists(p.file("metadata.json"))


def test_a_port_in_use_or_out_of_range_fails_clearly_and_leaves_the_pod_prepared(own_store):
    s = own_store
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        p = prepare.prepare(s, {"apps": [sh(SLEEP, name="a")]}).pod
        with pytest.raises(metadata.MetadataError, match="could not start on 127.0.0.1:%d: .*in use"
                           % busy.getsockname()[1]):
            run.start_detached(p, net="host", metadata_service=True, metadata_port=busy.getsockname()[1])
        with pytest.raises(metadata.MetadataError, match="not a TCP port"):
            run.start_detached(p, net="host", metadata_service=True, metadata_port=70000)
        assert p.state() == "prepared" and not os.path.exists(p.file("metadata.json"))
        assert metadata.status(s.dd) is None and metadata.service_pid(s.dd) is None
    finally:
        busy.close()


def test_pod_run_module_with_metadata_service(reaper, tmp_path, image_dir):
    d = str(tmp_path / "rocket")
    _store(d, image_dir).close()
    out = tmp_path / "out"
    out.mkdir()
    args = {"name": "mds", "image": "example.com/annotated", "data_dir": d, "metadata_service": True,
            "metadata_port": 0, "annotations": {"from": "ansible"},
            "volumes": [{"name": "out", "kind": "host", "source": str(out)}],
            "mounts": [{"volume": "out", "path": "/out"}],
            "exec": ["/bin/sh", "-c", "wget -q -O /out/a --header 'Metadata-Flavor: AppContainer' "
                     "$AC_METADATA_URL/acMetadata/v1/pod/annotations; exec sleep 300"]}
    try:
        r = module("pod_run", args)
        assert r["changed"] is True and r["pod"]["state"] == "running", r
        uuid = r["pod"]["uuid"]
        deadline = time.time() + 20
        while not (out / "a").exists() or not (out / "a").read_bytes():
            assert time.time() < deadline, r
            time.sleep(0.1)
        assert {"name": "from", "value": "ansible"} in json.loads((out / "a").read_bytes())
        dd = Store(d, create=False)
        try:
            assert metadata.registered(dd.dd) == [uuid]
        finally:
            dd.close()
        r = module("pod_run", args)
        assert r["changed"] is False, r
        r = module("pod_run", dict(args, metadata_service=False), diff=True)
        assert r["changed"] is True and r["action"] == "replace" and "run.metadata_service" in " ".join(r["reasons"])
        r = module("pod_run", dict(args, state="absent"))
        assert r["changed"] is True
        r = module("pod_gc", {"data_dir": d, "grace": 0})
        assert r["metadata_service_stopped"] is True, r
    finally:
        s = Store(d, create=False)
        _cleanup(s)


def test_sigkill_the_service_it_is_back_on_its_port_serving_the_running_pods(own_store):
    """The supervisor (the PID stop() knows) starts the service again; the service
    re-registers the running pods (their locks are held); pod_gc still stops it all."""
    s = own_store
    p = start(s, {"apps": [sh(SLEEP, name="a")]})
    st = metadata.status(s.dd)
    supervisor = metadata.service_pid(s.dd)
    assert supervisor == st["supervisor"] != st["pid"]
    os.kill(st["pid"], 9)
    deadline = time.monotonic() + 5
    while True:
        st2 = metadata.status(s.dd)
        if st2 is not None and st2["pid"] != st["pid"]:
            break
        assert time.monotonic() < deadline, "the service is not back within 5 s"
        time.sleep(0.05)
    assert st2["port"] == st["port"] and metadata.service_pid(s.dd) == supervisor
    check(get(p, "pod/uuid"), 200, TEXT, p.uuid.encode())
    run.stop(p, 10)
    report = pod_gc.gc(s.dd, grace=0)
    assert report["metadata_service_stopped"] and metadata.status(s.dd) is None
    for pid in (supervisor, st2["pid"]):
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/stat" % pid).read().split(") ")[1][0] in "ZX"
    _reap()


def test_secret_environment_is_not_served(store):
    p = prepare.prepare(store, {"secret_environment": {"DB_PASSWORD": "s3cr3t-value"}, "environment": {"PLAIN": "seen"},
                                "apps": [sh(SLEEP, name="a")]}).pod
    with open(p.file("pod"), "rb") as f:
        assert b"s3cr3t-value" in f.read()  # root's only file: what stage1 starts the app with
    run.start_detached(p, net="host", metadata_service=True, metadata_port=0)
    for path in ("pod/manifest", "pod/annotations", "apps/a/annotations", "apps/a/image/manifest"):
        r = get(p, path)
        assert r.status_code == 200 and b"s3cr3t-value" not in r.content, path
    assert b"PLAIN" in get(p, "pod/manifest").content
    run.stop(p, 10)


def test_private_network_pods_are_known_by_their_address(store, tmp_path):
    """From inside a pod on the default network, as root: its own token answers at its
    gateway; another pod's token does not, nor does its token from the host's loopback;
    the service does not listen on 0.0.0.0."""
    out = tmp_path / "out"
    out.mkdir()
    vol = {"volumes": [{"name": "out", "kind": "host", "source": str(out)}]}
    a = prepare.prepare(store, dict(vol, apps=[sh("echo $AC_METADATA_URL > /out/a-url; exec sleep 300", name="a",
                                                  mounts=[{"volume": "out", "path": "/out"}])])).pod
    run.start_detached(a, net="default", metadata_service=True, metadata_port=0)
    deadline = time.monotonic() + 20
    while not (out / "a-url").exists() or not (out / "a-url").read_text().strip():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    a_url = (out / "a-url").read_text().strip()
    script = ('H="Metadata-Flavor: AppContainer"; wget -q -O /out/own --header "$H" "$AC_METADATA_URL/acMetadata/v1/pod/uuid"; '
              'wget -q -O /out/other --header "$H" "%s/acMetadata/v1/pod/uuid"; echo $? > /out/other-rc' % a_url)
    b = prepare.prepare(store, dict(vol, apps=[sh(script, name="b", mounts=[{"volume": "out", "path": "/out"}])])).pod
    assert run.run_foreground(b, net="default", metadata_service=True, metadata_port=0) == 0
    assert (out / "own").read_text() == b.uuid
    assert (out / "other-rc").read_text().strip() != "0"  # busybox wget: the 403 leaves no file
    assert not (out / "other").exists() or not (out / "other").read_text()
    # a's token from the host, on loopback or at the gateway: the host is not the pod.
    conf = metadata.pod_config(a)
    assert get(a, "pod/uuid").status_code == 403
    r = requests.get(a_url + "/acMetadata/v1/pod/uuid", headers=H, timeout=10)
    assert r.status_code == 403 and a.uuid not in r.text
    with open("/proc/net/tcp") as f:
        listening = {line.split()[1].split(":")[0] for line in f.readlines()[1:]
                     if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == conf["port"]}
    assert "00000000" not in listening and "0100007F" in listening
    run.stop(a, 10)
