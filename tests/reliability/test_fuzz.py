"""Fuzzing with hypothesis: manifest parsing, name validation and archive extraction.

The promise under test: whatever the input, the library returns a result or raises one of
its own typed errors (stage0.errors), and extraction never writes outside its target (a
canary directory beside it, and /etc/passwd, are checked after every example).

Budgets (examples per target) are set by the hypothesis profile: ``ci`` (default; the
numbers below, a few seconds each) or ``long`` (ROCKET_FUZZ_PROFILE=long: 50 times more),
and ROCKET_FUZZ_SCALE multiplies either. Failing examples are printed with a reproduction
blob; the example database is off so runs leave no files in the checkout.
"""
import gzip
import io
import json
import os
import shutil
import tempfile

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from tests.support import canary as canary_guard
from tests.support import metadata_control
import corpus
from tests.support.aci_util import aci_tar, member
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, errors, schema

settings.register_profile("ci", deadline=None, database=None, print_blob=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                                 HealthCheck.function_scoped_fixture])
settings.register_profile("long", parent=settings.get_profile("ci"))
PROFILE = os.environ.get("ROCKET_FUZZ_PROFILE", "ci")
settings.load_profile(PROFILE)
SCALE = float(os.environ.get("ROCKET_FUZZ_SCALE", "1")) * (50 if PROFILE == "long" else 1)


def budget(n: int):
    return settings(max_examples=max(1, int(n * SCALE)))


# -- manifests ---------------------------------------------------------------------------
JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats() | st.text(max_size=12),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                    max_leaves=8)
IMAGE_KEYS = ["acKind", "acVersion", "name", "labels", "app", "dependencies", "pathWhitelist", "annotations"]
APP_KEYS = ["exec", "user", "group", "supplementaryGIDs", "eventHandlers", "workingDirectory", "environment",
            "isolators", "mountPoints", "ports"]
VALID = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/fuzz",
         "labels": [{"name": "version", "value": "1"}], "app": {"exec": ["/bin/sh"], "user": "0", "group": "0"}}


@st.composite
def image_manifests(draw):
    """A valid manifest with some fields (top level or in the app) replaced or added."""
    doc = json.loads(json.dumps(VALID))
    for key, value in draw(st.dictionaries(st.sampled_from(IMAGE_KEYS) | st.text(max_size=8), JSON, max_size=3)).items():
        doc[key] = value
    if isinstance(doc.get("app"), dict):
        for key, value in draw(st.dictionaries(st.sampled_from(APP_KEYS), JSON, max_size=3)).items():
            doc["app"][key] = value
    return doc


def _parse_or_typed_error(parse, raw):
    try:
        doc = parse(raw)
    except errors.RocketError:
        return None
    # What was accepted is written and read back unchanged (prepare and stage1 rely on it).
    assert parse(schema.dump_manifest(doc)) == doc
    return doc


@budget(1000)
@given(image_manifests())
def test_image_manifest_fields(doc):
    _parse_or_typed_error(schema.parse_image_manifest, doc)


@budget(1000)
@given(st.one_of(st.binary(max_size=300), JSON.map(lambda v: json.dumps(v).encode()),
                 image_manifests().map(lambda d: json.dumps(d).encode())))
def test_image_manifest_bytes(raw):
    _parse_or_typed_error(schema.parse_image_manifest, raw)


@budget(1000)
@given(st.dictionaries(st.sampled_from(["acKind", "acVersion", "apps", "volumes", "isolators", "annotations", "ports"]),
                       JSON, max_size=5).map(lambda d: dict({"acKind": "PodManifest", "acVersion": "0.8.11"}, **d)))
def test_pod_manifest(doc):
    _parse_or_typed_error(schema.parse_pod_manifest, doc)


# -- names -------------------------------------------------------------------------------
NAMEISH = st.text(alphabet="abcz09-._~/:,=AZ \x00é", max_size=40) | st.text(max_size=20)


@budget(2000)
@given(NAMEISH)
def test_names_and_references(text):
    for check in (schema.validate_ac_name, schema.validate_ac_identifier):
        try:
            assert check(text) == text
        except errors.ValidationError:
            pass
    try:
        name, labels = schema.parse_image_reference(text)
    except errors.RocketError:
        pass
    else:  # a reference that parses formats back to one that parses the same
        assert schema.parse_image_reference(schema.format_image_reference(name, labels)) == (name, labels)
    for prefix in (False, True):
        try:
            schema.parse_image_id(text, allow_prefix=prefix)
        except errors.RocketError:
            pass


def test_found_by_fuzzing_version_with_equals_is_refused():
    """`name:1=2` parsed to a version format_image_reference then refused to write."""
    with pytest.raises(errors.ValidationError, match="malformed :version"):
        schema.parse_image_reference("0:=")


# -- archives ----------------------------------------------------------------------------
SEEDS = corpus.seeds()


@st.composite
def mutated(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for dummy in range(draw(st.integers(0, 8))):
        at = draw(st.integers(0, len(data) - 1))
        data[at] = draw(st.integers(0, 255))
    if draw(st.booleans()):
        data = data[:draw(st.integers(0, len(data)))]
    return bytes(data)


PARTS = ["rootfs", "..", ".", "a", "b", "etc", "passwd", "", "tmp", "xyz", "canary", "UP"]


@st.composite
def generated(draw):
    """An ACI from random members: names and link targets built from hostile pieces."""
    def path():
        p = "/".join(draw(st.lists(st.sampled_from(PARTS), min_size=1, max_size=6)))
        return ("/" if draw(st.booleans()) and draw(st.booleans()) else "") + p

    members = []
    for dummy in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["file", "dir", "sym", "link"]))
        name = path() if draw(st.booleans()) else "rootfs/" + path()
        if kind in ("sym", "link"):
            target = path() if draw(st.booleans()) else draw(st.sampled_from(
                [corpus.CANARY, "/etc/passwd", "..", "../..", "rootfs/a", "UP"]))
            members.append((name, kind, target))
        else:
            members.append((name, kind, None))
    return members


@pytest.fixture(scope="module")
def canary():
    yield from canary_guard.guard()


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return str(tmp_path_factory.mktemp("fuzz"))


def _extract(base, data, up):
    dest = tempfile.mkdtemp(dir=base)
    try:
        data = data.replace(b"UP", up.encode()) if b"UP" in data else data
        try:
            aci.import_aci(io.BytesIO(data), dest, max_size=1 << 20)
        except errors.RocketError:
            pass
        _assert_canary()
    finally:
        shutil.rmtree(dest)


def _assert_canary():
    assert os.listdir(corpus.CANARY) == ["file"], "something was written in the canary directory"
    with open(os.path.join(corpus.CANARY, "file")) as f:
        assert f.read() == "canary\n"
    assert not os.path.lexists("/etc/x") and not os.path.lexists("/tmp/xyz/x")


def test_every_seed_is_handled(canary, base):
    up = os.path.relpath(corpus.CANARY, os.path.join(base, "d"))
    for name, data in SEEDS.items():
        _extract(base, data, up)


@budget(2000)
@given(st.one_of(mutated(), st.binary(max_size=2048)))
def test_archive_scanner(data):
    """The parent's scan (hash, headers, manifest) in process: thousands of inputs a second."""
    for blob in (data, gzip.compress(data, mtime=0)):
        try:
            aci.inspect_aci(io.BytesIO(blob), max_size=1 << 20)
        except errors.RocketError:
            pass


@budget(300)
@given(st.one_of(mutated(), generated().map(lambda ms: aci_tar(*[
    member(n, k, linkname=t) if t is not None else member(n, k) for n, k, t in ms]))))
def test_archive_extraction(canary, base, data):
    """The whole import: scan, then the chrooted child extracts; canary checked each time."""
    _extract(base, data, os.path.relpath(corpus.CANARY, os.path.join(base, "d")))


# -- the metadata service's HTTP parser --------------------------------------------------
# The daemon as stage0 runs it (its file, supervised), one pod registered; hostile requests
# on fresh connections; afterwards the same process answers a correct request and its RSS
# has not grown past a bound.
MDS_UUID = "0f0e0d0c-0b0a-4908-8706-050403020100"
MDS_TOKEN = "cd" * 32
GOOD = (b"GET /%s/acMetadata/v1/pod/uuid HTTP/1.1\r\nHost: x\r\nMetadata-Flavor: AppContainer\r\n\r\n"
        % MDS_TOKEN.encode())
SIGN = (b"POST /%s/acMetadata/v1/pod/hmac/sign HTTP/1.1\r\nMetadata-Flavor: AppContainer\r\n"
        b"Content-Length: 9\r\n\r\ncontent=x" % MDS_TOKEN.encode())
HTTP_PIECES = [b"GET ", b"POST ", b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2", b"\r\n", b"\r\n\r\n", b"\n", b":", b" ",
               b"/" + MDS_TOKEN.encode() + b"/acMetadata/v1/", b"pod/uuid", b"pod/hmac/verify", b"pod/manifest",
               b"apps/web/image/id", b"?uuid=%ff&content=&signature=%%", b"Content-Length: ", b"-1", b"99999999999999",
               b"\xb2", b"\xd9\xa3", b"Transfer-Encoding: chunked", b"Connection: close", b"Connection: keep-alive",
               b"Metadata-Flavor: AppContainer", b"\x00", b"\xff\xfe", b"A" * 17000]


@st.composite
def http_requests(draw):
    """A valid request mutated (pieces spliced in, bytes cut), pieces glued, or bytes."""
    kind = draw(st.integers(0, 3))
    if kind == 3:  # a good request line, then hostile header lines
        names = st.sampled_from([b"Content-Length", b"Transfer-Encoding", b"Connection", b"Metadata-Flavor", b"X"])
        values = st.sampled_from(HTTP_PIECES) | st.binary(max_size=12) | st.text(max_size=6).map(
            lambda t: t.encode("utf-8"))
        lines = draw(st.lists(st.tuples(names, values), max_size=4))
        return (GOOD.split(b"\r\n", 1)[0] + b"\r\n" + b"".join(n + b": " + v + b"\r\n" for n, v in lines)
                + b"\r\n" + draw(st.binary(max_size=16)))
    if kind == 0:
        data = bytearray(draw(st.sampled_from([GOOD, SIGN])))
        for dummy in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, len(data)))
            if draw(st.booleans()):
                data[at:at] = draw(st.sampled_from(HTTP_PIECES) | st.binary(max_size=8))
            else:
                del data[at:at + draw(st.integers(1, 16))]
        return bytes(data)
    if kind == 1:
        return b"".join(draw(st.lists(st.sampled_from(HTTP_PIECES) | st.binary(max_size=8), max_size=12)))
    return draw(st.binary(max_size=512))


def _mds_call(data_dir, req):
    return metadata_control.call(data_dir, req)


def _mds_exchange(port, data, timeout=5.0):
    """Send data, end the request side, read until the service closes."""
    import socket

    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # it answered and closed before taking it all
        out = b""
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                return out
            if not b:
                return out
            out += b
    finally:
        s.close()


def _rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(next(line for line in f if line.startswith("VmRSS:")).split()[1])


@pytest.fixture(scope="module")
def mds(tmp_path_factory):
    import signal
    import subprocess
    import sys

    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import metadata_service

    data = tmp_path_factory.mktemp("mds") / "data"
    pod = data / "pods" / "run" / MDS_UUID
    (pod / "apps" / "web").mkdir(parents=True)
    (data / "metadata").mkdir(mode=0o700)
    (pod / "metadata.json").write_text(json.dumps({"port": 0, "token": MDS_TOKEN, "hmac_key": "ef" * 64}))
    (pod / "pod").write_text(json.dumps({"acKind": "PodManifest", "acVersion": "0.8.11", "apps": [
        {"name": "web", "image": {"name": "example.com/web", "id": "sha512-" + "1" * 128}}]}))
    (pod / "apps" / "web" / "manifest").write_text('{"acKind":"ImageManifest","name":"example.com/web"}')
    r, w = os.pipe()
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", metadata_service.__file__, "--data-dir=%s" % data,
                             "--port=0", "--ready-fd=%d" % w], pass_fds=(w,))
    os.close(w)
    with os.fdopen(r) as f:
        line = f.readline().split()
    assert line[0] == "ready", line
    assert _mds_call(str(data), {"op": "register", "uuid": MDS_UUID})["ok"]
    pid = _mds_call(str(data), {"op": "ping"})["pid"]
    for dummy in range(50):  # warm: the RSS bound is on growth, not on the first allocations
        _mds_exchange(int(line[2]), GOOD + SIGN)
    d = {"data": str(data), "port": int(line[2]), "pid": pid, "rss": _rss_kib(pid)}
    yield d
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


@budget(1500)
@given(http_requests())
@example(b"GET /x HTTP/1.1\r\nContent-Length: \xb2\r\n\r\n")  # a digit to str.isdigit, not to int(): it stopped the service
@example(b"POST /" + MDS_TOKEN.encode() + b"/acMetadata/v1/pod/hmac/sign HTTP/1.1\r\nMetadata-Flavor: AppContainer\r\n"
         b"Content-Length: 9\r\n\r\n"
         b"\xff\xfecontent=x")  # a form that is not ASCII: it answered 500
def test_metadata_http_parser(mds, data):
    out = _mds_exchange(mds["port"], data)
    assert out == b"" or out.startswith(b"HTTP/1.1 "), out[:200]
    assert b"500 Internal" not in out, data


def test_metadata_service_answers_after_fuzzing_and_its_memory_is_bounded(mds):
    """Runs after test_metadata_http_parser (file order): the same process, still serving."""
    out = _mds_exchange(mds["port"], GOOD)
    assert out.startswith(b"HTTP/1.1 200 OK") and out.endswith(MDS_UUID.encode()), out
    assert _mds_call(mds["data"], {"op": "ping"})["pid"] == mds["pid"]  # never died and came back
    grown = _rss_kib(mds["pid"]) - mds["rss"]
    assert grown < 16 << 10, "the service's RSS grew by %d KiB" % grown
