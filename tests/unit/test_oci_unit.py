"""OCI -> appc mapping rules, verified blob streams and the archive index (no root needed)."""
import gzip
import hashlib
import io
import json
import tarfile

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import oci, oci_layout, schema
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ImageError


@pytest.mark.parametrize("ref, name, version", [
    ("alpine", "docker.io/library/alpine", "latest"),
    ("alpine:3.19", "docker.io/library/alpine", "3.19"),
    ("library/alpine:3.19", "docker.io/library/alpine", "3.19"),
    ("index.docker.io/user/app:v1", "docker.io/user/app", "v1"),
    ("Quay.IO/Org/App:1.0", "quay.io/org/app", "1.0"),
    ("localhost:5000/my__app:dev", "localhost-5000/my_app", "dev"),
    ("ghcr.io/a/b@sha256:" + "0" * 64, "ghcr.io/a/b", "latest"),
    ("registry.example.com:443/x/y:tag@sha256:" + "1" * 64, "registry.example.com-443/x/y", "tag"),
])
def test_name_from_reference(ref, name, version):
    assert oci.name_from_reference(ref) == (name, version)
    assert schema.AC_IDENTIFIER_RE.match(name)


def test_sanitize_and_ac_name():
    assert oci.sanitize_identifier("A--B..c/_x_/") == "a-b.c/x"
    assert oci.sanitize_identifier("!!!") == ""
    assert oci.ac_name("/var/lib/My_Data") == "var-lib-my-data"
    assert oci.ac_name("/") == ""


@pytest.mark.parametrize("arch, variant, want", [
    ("amd64", None, "amd64"), ("arm64", None, "aarch64"), ("arm64", "v8", "aarch64"),
    ("arm", "v7", "armv7l"), ("arm", None, "armv7l"), ("arm", "v6", "armv6l"), ("arm", "v5", None),
    ("386", None, "i386"), ("ppc64le", None, "ppc64le"), ("s390x", None, "s390x"),
    ("riscv64", None, None), ("mips64le", None, None),
])
def test_map_arch(arch, variant, want):
    assert oci.map_arch(arch, variant) == want
    if want:
        assert want in schema.OS_ARCH["linux"]


def test_map_user():
    passwd = {"app": 1001, "1000": 1001, "nobody": 65534}.get
    assert oci.map_user("") == ("0", "0")
    assert oci.map_user(None) == ("0", "0")
    assert oci.map_user("1000") == ("1000", "0")
    assert oci.map_user("1000", passwd) == ("1000", "1001")
    assert oci.map_user("1000:50", passwd) == ("1000", "50")
    assert oci.map_user("nobody", passwd) == ("nobody", "65534")
    assert oci.map_user("www:staff") == ("www", "staff")
    assert oci.map_user("ghost", passwd) == ("ghost", "0")
    assert oci.map_user(":12") == ("0", "12")


def test_map_ports_volumes_env():
    ports, dropped = oci.map_ports({"80/tcp": {}, "53/udp": {}, "443": {}, "9000-9002/tcp": {},
                                    "1/icmp": {}, "x/tcp": {}, "70000/tcp": {}})
    assert ports == [{"name": "udp-53", "protocol": "udp", "port": 53},
                     {"name": "tcp-80", "protocol": "tcp", "port": 80},
                     {"name": "tcp-443", "protocol": "tcp", "port": 443},
                     {"name": "tcp-9000-9002", "protocol": "tcp", "port": 9000, "count": 3}]
    assert len(dropped) == 3
    for p in ports:
        schema.validate_ac_name(p["name"])
    mounts = oci.map_volumes({"/var/lib/data": {}, "/var/lib/data/": {}, "/var-lib/data": {}, "/": {}, "cache": {}})
    assert mounts == [{"name": "root", "path": "/", "readOnly": False},
                      {"name": "cache", "path": "/cache", "readOnly": False},
                      {"name": "var-lib-data", "path": "/var-lib/data", "readOnly": False},
                      {"name": "var-lib-data-2", "path": "/var/lib/data", "readOnly": False}]
    env, dropped = oci.map_env(["A=1", "B=x=y", "A=2", "NOEQ", "1BAD=z", "EMPTY="])
    assert env == [{"name": "B", "value": "x=y"}, {"name": "A", "value": "2"}, {"name": "EMPTY", "value": ""}]
    assert len(dropped) == 2


def test_labels_and_manifest():
    config = {"architecture": "arm", "variant": "v7", "os": "linux", "created": "not a date",
              "author": "Ann <ann@example.com>",
              "config": {"Entrypoint": ["/app"], "Cmd": None, "User": "7:8", "OnBuild": ["RUN x"],
                         "Shell": ["/bin/bash", "-c"], "Labels": {"org.opencontainers.image.version": "1",
                                                                  "UPPER": "x", "homepage": "ftp://no"}}}
    labels, dropped = oci.image_labels(config, "1.0", {"channel": "beta"})
    assert labels == {"version": "1.0", "os": "linux", "arch": "armv7l", "channel": "beta"}
    m, more = oci.image_manifest(config, "example.com/x", labels, "sha256:" + "a" * 64)
    schema.parse_image_manifest(m)
    assert m["app"] == {"exec": ["/app"], "user": "7", "group": "8"}
    ann = {a["name"]: a["value"] for a in m["annotations"]}
    assert ann == {"authors": "Ann <ann@example.com>", "org.opencontainers.image.version": "1",
                   "appc.rocket/oci/config": "sha256:" + "a" * 64}
    text = " | ".join(more)
    for word in ("created", "UPPER", "homepage", "OnBuild", "Shell"):
        assert word in text
    labels, dropped = oci.image_labels({"os": "linux", "architecture": "riscv64"}, "latest")
    assert labels == {"version": "latest", "os": "linux"} and "riscv64" in dropped[0]
    with pytest.raises(ImageError, match="windows"):
        oci.image_labels({"os": "windows", "architecture": "amd64"}, "latest")


def _stream(data, **kw):
    args = dict(digest=None, size=None, diff_id=None, max_size=1 << 30)
    args.update(kw)
    return oci_layout.VerifiedStream(io.BytesIO(data), "blob-under-test", args["digest"], args["size"],
                                     args["diff_id"], args["max_size"])


def _tar(**files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for name, data in files.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_verified_stream():
    plain = _tar(a=b"x" * 5000)
    gz = gzip.compress(plain)
    s = _stream(gz, digest=sha(gz), size=len(gz), diff_id=sha(plain))
    out = b""
    while True:
        b = s.read(1000)
        if not b:
            break
        out += b
    assert out == plain
    s.drain()
    with pytest.raises(ImageError, match="blob blob-under-test: digest mismatch"):
        _stream(gz, digest=sha(b"other"), size=len(gz)).drain()
    with pytest.raises(ImageError, match="descriptor says"):
        _stream(gz, digest=sha(gz), size=len(gz) - 1).drain()
    with pytest.raises(ImageError, match="diff_id"):
        _stream(gz, digest=sha(gz), diff_id=sha(b"other")).drain()
    with pytest.raises(ImageError, match="zstd"):
        _stream(b"\x28\xb5\x2f\xfd" + b"\0" * 600).drain()
    with pytest.raises(ImageError, match="max_size"):
        _stream(gz, max_size=1000).drain()
    with pytest.raises(ImageError, match="blob blob-under-test: truncated gzip"):
        _stream(gz[:-20]).drain()


def test_tar_source_links_and_bounds(tmp_path):
    path = str(tmp_path / "a.tar")
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        ti = tarfile.TarInfo("one/layer.tar")
        ti.size = 3
        tf.addfile(ti, io.BytesIO(b"abc"))
        for name, kind, target in (("two/layer.tar", tarfile.SYMTYPE, "../one/layer.tar"),
                                   ("hard", tarfile.LNKTYPE, "one/layer.tar"),
                                   ("out", tarfile.SYMTYPE, "../../etc/passwd"),
                                   ("abs", tarfile.SYMTYPE, "/etc/passwd")):
            ti = tarfile.TarInfo(name)
            ti.type, ti.linkname = kind, target
            tf.addfile(ti)
    src = oci_layout._TarSource(path, path)
    for name in ("one/layer.tar", "./two/layer.tar", "hard"):
        with src.open(name) as f:
            assert f.read() == b"abc"
    for name in ("out", "abs", "missing", "../one/layer.tar"):
        with pytest.raises(ImageError):
            src.open(name)
    big = str(tmp_path / "big.tar")
    with open(big, "wb") as f:
        ti = tarfile.TarInfo("x")
        ti.pax_headers = {"comment": "y" * (2 << 20)}
        f.write(ti.tobuf(tarfile.PAX_FORMAT))
    with pytest.raises(ImageError, match="too big"):
        oci_layout._TarSource(big, big)


def test_candidate_matching():
    c = oci_layout._Candidate(["alpine:3.19"], None, "sha256:" + "a" * 64)
    assert c.matches("alpine:3.19") and c.matches("docker.io/library/alpine:3.19")
    assert c.matches("sha256:" + "a" * 64)
    assert not c.matches("alpine") and not c.matches("3.19")
    assert oci_layout._Candidate(["alpine:latest"], None).matches("docker.io/library/alpine")
    t = oci_layout._Candidate(["3.19"], None)
    assert t.matches("3.19") and not t.matches("alpine:3.19")
    with pytest.raises(Exception, match="holds 2 images"):
        oci_layout._select([c, t], None, "x")
    assert json.dumps(oci_layout._pick_ref(["3.19", "docker.io/library/alpine:3.19"], "3.19")) == \
        '"docker.io/library/alpine:3.19"'
