"""The metadata service's pure parts: annotation merging, the URL stage1 builds, routing."""
import base64
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support import metadata_control

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import metadata_service as ms
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import pod as s1pod

UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"


def test_app_annotations_overridden_in_place_then_extended():
    image = [{"name": "a", "value": "1"}, {"name": "b", "value": "2"}]
    pod_app = [{"name": "c", "value": "3"}, {"name": "a", "value": "9"}]
    assert ms.merge_annotations(image, pod_app) == [{"name": "a", "value": "9"}, {"name": "b", "value": "2"},
                                                    {"name": "c", "value": "3"}]
    assert ms.merge_annotations(None, None) == []
    assert image[0]["value"] == "1"  # inputs untouched


def test_metadata_url_from_metadata_json_and_net_info(tmp_path):
    d = str(tmp_path)
    assert s1pod.metadata_url(d) is None
    (tmp_path / "metadata.json").write_text(json.dumps({"port": 18112, "token": "ab" * 16}))
    assert s1pod.metadata_url(d) == "http://127.0.0.1:18112/" + "ab" * 16
    (tmp_path / "net-info.json").write_text("[]")
    assert s1pod.metadata_url(d) == "http://127.0.0.1:18112/" + "ab" * 16
    (tmp_path / "net-info.json").write_text(json.dumps([{"name": "default", "gateway": "172.16.28.1"},
                                                        {"name": "other", "gateway": "10.0.0.1"}]))
    assert s1pod.metadata_url(d) == "http://172.16.28.1:18112/" + "ab" * 16
    (tmp_path / "net-info.json").write_text(json.dumps([{"name": "v6", "gateway": "fd00::1"}]))
    assert s1pod.metadata_url(d) == "http://[fd00::1]:18112/" + "ab" * 16


@pytest.fixture
def service(tmp_path):
    """A service on a free loopback port over a hand-written pod directory (no root needed)."""
    data = tmp_path / "data"
    pod = data / "pods" / "run" / UUID
    (pod / "apps" / "web").mkdir(parents=True)
    (data / "metadata").mkdir(mode=0o700)
    (pod / "metadata.json").write_text(json.dumps({"port": 0, "token": "cd" * 32, "hmac_key": "ef" * 64}))
    (pod / "pod").write_bytes(b'{"acKind":"PodManifest","acVersion":"0.8.11","apps":[{"name":"web","image":'
                              b'{"name":"example.com/web","id":"sha512-' + b"1" * 128 + b'"}}],"annotations":[]}')
    (pod / "apps" / "web" / "manifest").write_bytes(b'{"acKind":"ImageManifest","name":"example.com/web"}')
    s = ms.Service(str(data), "127.0.0.1", 0)
    s.register(UUID)
    yield s
    s.close()


def route(s, method, path, body=b"", token="cd" * 32, flavor="AppContainer"):
    return s._route(method, "/%s/acMetadata/v1/%s" % (token, path), flavor, body)


def test_routes(service):
    assert route(service, "GET", "pod/annotations") == (200, ms.JSON, b"[]")
    assert route(service, "GET", "pod/uuid") == (200, ms.TEXT, UUID.encode())
    assert route(service, "GET", "apps/web/image/id") == (200, ms.TEXT, b"sha512-" + b"1" * 128)
    assert route(service, "GET", "apps/web/annotations") == (200, ms.JSON, b"[]")
    assert route(service, "GET", "apps/web/image/manifest")[2] == b'{"acKind":"ImageManifest","name":"example.com/web"}'
    assert route(service, "GET", "pod/uuid?x=1")[0] == 200
    assert route(service, "GET", "pod/uuid", flavor=None)[0] == 400
    assert route(service, "GET", "pod/uuid", token="cd" * 31 + "ce")[0] == 401
    assert route(service, "GET", "apps/other/image/id")[0] == 404
    assert route(service, "DELETE", "pod/uuid")[0] == 405
    assert service._route("GET", "/pod/uuid", "AppContainer", b"")[0] == 404


def test_sign_and_verify_by_form(service):
    status, ctype, sig = route(service, "POST", "pod/hmac/sign", b"content=a%20b%26c")
    assert status == 200 and ctype == ms.TEXT
    raw = base64.b64decode(sig)
    assert len(raw) == 64
    ok = b"content=a%20b%26c&uuid=" + UUID.encode() + b"&signature=" + sig.replace(b"+", b"%2B").replace(b"/", b"%2F")
    assert route(service, "POST", "pod/hmac/verify", ok)[0] == 200
    assert route(service, "POST", "pod/hmac/verify", ok.replace(b"a%20b", b"a%20c"))[0] == 403
    # The old spec's field name for the UUID is accepted too.
    assert route(service, "POST", "pod/hmac/verify", ok.replace(b"uuid=", b"uid="))[0] == 200
    assert route(service, "POST", "pod/hmac/sign", b"")[0] == 400
    assert route(service, "POST", "pod/hmac/sign", b"content=")[0] == 200  # empty content is content


def test_rebuild_registers_only_locked_pods(service, tmp_path):
    import fcntl

    s2 = None
    fd = os.open(os.path.join(service.run_dir, UUID), os.O_RDONLY | os.O_DIRECTORY)
    try:
        service.close()
        s2 = ms.Service(service.data_dir, "127.0.0.1", 0)
        s2.rebuild()
        assert s2.by_uuid == {}  # nobody holds the pod's lock: it has exited
        s2.close()
        fcntl.flock(fd, fcntl.LOCK_EX)
        s2 = ms.Service(service.data_dir, "127.0.0.1", 0)
        s2.rebuild()
        assert list(s2.by_uuid) == [UUID]
    finally:
        os.close(fd)
        if s2 is not None:
            s2.close()


# -- hostile clients, against the daemon as it runs (a subprocess: its supervisor and it) ----
SERVICE_PY = ms.__file__
TOKEN = "cd" * 32


def _pod_dir(data, uuid=UUID, net=None, spec=None, env=None):
    pod = data / "pods" / "run" / uuid
    (pod / "apps" / "web").mkdir(parents=True)
    (pod / "metadata.json").write_text(json.dumps({"port": 0, "token": TOKEN if uuid == UUID else "ab" * 32,
                                                   "hmac_key": "ef" * 64}))
    app = {"name": "web", "image": {"name": "example.com/web", "id": "sha512-" + "1" * 128}}
    if env is not None:
        app["app"] = {"exec": ["/bin/true"], "user": "0", "group": "0", "environment": env}
    (pod / "pod").write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [app],
                                         "annotations": []}))
    (pod / "apps" / "web" / "manifest").write_bytes(b'{"acKind":"ImageManifest","name":"example.com/web"}')
    if net is not None:
        (pod / "net.json").write_text(json.dumps(net))
    if spec is not None:
        (pod / "spec.json").write_text(json.dumps(spec))
    return pod


def _control(data, req):
    return metadata_control.call(data, req)


@pytest.fixture
def daemon(tmp_path):
    """The service file run as stage0 runs it (supervised), one pod registered."""
    data = tmp_path / "data"
    (data / "metadata").mkdir(parents=True, mode=0o700)
    _pod_dir(data)
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", SERVICE_PY, "--data-dir=%s" % data, "--port=0",
                             "--ready-fd=%d" % w], pass_fds=(w,))
    os.close(w)
    with os.fdopen(r) as f:
        line = f.readline().split()
    assert line[0] == "ready", line
    assert int(line[1]) == proc.pid  # the supervisor's PID: the one stop() signals
    assert _control(data, {"op": "register", "uuid": UUID})["ok"]
    d = {"data": data, "port": int(line[2]), "proc": proc}
    yield d
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert not (data / "metadata" / "pid").exists()


def _get(port, path="pod/uuid", token=TOKEN, extra=b""):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(b"GET /%s/acMetadata/v1/%s HTTP/1.1\r\nMetadata-Flavor: AppContainer\r\nConnection: close\r\n%s\r\n"
              % (token.encode(), path.encode(), extra))
    data = b""
    while True:
        b = s.recv(65536)
        if not b:
            break
        data += b
    s.close()
    return data


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)


def _service_pid(d):
    return _control(d["data"], {"op": "ping"})["pid"]


@pytest.mark.parametrize("request_bytes", [
    b"GET /x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n",  # a digit to str.isdigit, not to int()
    b"GET /x HTTP/1.1\r\nContent-Length: \xd9\xa3\r\n\r\n",
    b"GET /x HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
    b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"\r\n\r\n",
    b"GET\x00 / HTTP/1.1\r\n\r\n",
    b"GET /%s/acMetadata/v1/pod/hmac/verify?uuid=%%ff%%fe HTTP/1.1\r\nMetadata-Flavor: AppContainer\r\n\r\n" % TOKEN.encode(),
])
def test_a_malformed_request_is_answered_and_stops_nothing(daemon, request_bytes):
    pid = _service_pid(daemon)
    s = socket.create_connection(("127.0.0.1", daemon["port"]), timeout=5)
    s.sendall(request_bytes)
    answer = s.recv(65536)
    s.close()
    assert answer.startswith(b"HTTP/1.1 4"), answer
    assert _get(daemon["port"]).endswith(b"\r\n\r\n" + UUID.encode())
    assert _service_pid(daemon) == pid  # the same process: nothing died and came back


def test_pipelined_requests_wait_while_answers_are_unread(daemon):
    """A client that sends and never reads: the service stops reading it, its RSS stays."""
    pid = _service_pid(daemon)
    before = _rss_kib(pid)
    req = (b"GET /%s/acMetadata/v1/pod/manifest HTTP/1.1\r\nMetadata-Flavor: AppContainer\r\n\r\n"
           % TOKEN.encode()) * 1000
    s = socket.create_connection(("127.0.0.1", daemon["port"]), timeout=5)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.setblocking(False)
    sent, deadline = 0, time.monotonic() + 5
    while time.monotonic() < deadline and sent < (64 << 20):
        try:
            sent += s.send(req)
        except BlockingIOError:
            time.sleep(0.05)
    grown = _rss_kib(pid) - before
    assert sent < (16 << 20), "the service kept reading: %d bytes taken" % sent
    assert grown < 8 << 10, "RSS grew by %d KiB" % grown
    s.close()
    assert _get(daemon["port"]).endswith(UUID.encode())


def test_slow_heads_time_out_and_peers_are_limited(daemon):
    port = daemon["port"]
    slow = socket.create_connection(("127.0.0.1", port), timeout=ms.REQUEST_TIMEOUT + 5)
    slow.sendall(b"GET /")
    conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for dummy in range(ms.MAX_PER_PEER - 1)]
    extra = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert extra.recv(100) == b""  # over the limit: closed at once
    extra.close()
    # The slots come back once the service has read each EOF (its FIN answers it): the
    # kernel may deliver a new connection before queued FINs on a busy machine.
    for c in conns:
        c.shutdown(socket.SHUT_WR)
    for c in conns:
        assert c.recv(100) == b""
        c.close()
    assert _get(port).endswith(UUID.encode())
    t0 = time.monotonic()
    answer = slow.recv(65536)
    assert answer.startswith(b"HTTP/1.1 408 ") and time.monotonic() - t0 < ms.REQUEST_TIMEOUT + 3
    slow.close()


def test_the_supervisor_brings_it_back_on_its_port(daemon):
    pid = _service_pid(daemon)
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while True:
        try:
            st = _control(daemon["data"], {"op": "ping"})
            if st["pid"] != pid:
                break
        except OSError:
            pass
        assert time.monotonic() < deadline, "not back within 5 s"
        time.sleep(0.05)
    assert st["port"] == daemon["port"] and st["supervisor"] == daemon["proc"].pid
    # The pod's lock is not held here, so the new service did not register it: do it.
    assert _control(daemon["data"], {"op": "register", "uuid": UUID})["ok"]
    assert _get(daemon["port"]).endswith(UUID.encode())


def test_it_listens_on_loopback_and_gateways_only(tmp_path, daemon):
    listening = set()
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            local, st = line.split()[1], line.split()[3]
            if st == "0A" and int(local.split(":")[1], 16) == daemon["port"]:
                listening.add(local.split(":")[0])
    assert listening == {"0100007F"}  # 127.0.0.1, not 0.0.0.0
    other = "11111111-2222-4333-8444-555555555555"
    _pod_dir(daemon["data"], other, net={"networks": [{"ip": "10.99.0.2", "gateway": "10.99.0.1"}]})
    assert _control(daemon["data"], {"op": "register", "uuid": other})["ok"]
    assert "10.99.0.1" in _control(daemon["data"], {"op": "ping"})["addresses"]
    assert _control(daemon["data"], {"op": "deregister", "uuid": other})["known"]
    assert "10.99.0.1" not in _control(daemon["data"], {"op": "ping"})["addresses"]


def test_a_token_counts_only_from_its_pods_addresses(tmp_path):
    data = tmp_path / "data"
    (data / "metadata").mkdir(parents=True, mode=0o700)
    _pod_dir(data, net={"networks": [{"ip": "10.99.0.2", "gateway": "10.99.0.1"}]})
    s = ms.Service(str(data), "127.0.0.1", 0)
    try:
        s.register(UUID)
        path = "/%s/acMetadata/v1/pod/uuid" % TOKEN
        assert s._route("GET", path, "AppContainer", b"", "10.99.0.2")[0] == 200
        assert s._route("GET", path, "AppContainer", b"", "10.99.0.3")[0] == 403  # another pod, same token
        assert s._route("GET", path, "AppContainer", b"", "127.0.0.1")[0] == 403  # the host
    finally:
        s.close()


def test_secret_environment_is_not_served(tmp_path):
    data = tmp_path / "data"
    (data / "metadata").mkdir(parents=True, mode=0o700)
    digest = "sha256:" + hashlib.sha256(b"hunter2").hexdigest()
    env = [{"name": "PASSWORD", "value": "hunter2"}, {"name": "PLAIN", "value": "visible"},
           {"name": "PASSWORD2", "value": "hunter2"}]
    _pod_dir(data, spec={"spec": {"secret_environment": [["PASSWORD", digest]]}}, env=env)
    s = ms.Service(str(data), "127.0.0.1", 0)
    try:
        s.register(UUID)
        status, dummy, body = s._route("GET", "/%s/acMetadata/v1/pod/manifest" % TOKEN, "AppContainer", b"")
        assert status == 200 and b"visible" in body and b"PASSWORD2" in body
        assert json.loads(body)["apps"][0]["app"]["environment"] == [env[1], env[2]]
    finally:
        s.close()
