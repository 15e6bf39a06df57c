"""The metadata service's pure parts: annotation merging, the URL stage1 builds, routing."""
import base64
import json
import os

import pytest

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
