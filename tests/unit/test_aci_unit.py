"""stage0.aci without root: sniffing, streaming decompression and hashing, the tar-header
scanner (through inspect_aci, which never extracts; aci_scan), the frames the child reads
(aci_extract) and the deterministic builder (aci_build)."""
import gzip
import io
import os
import tarfile

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, aci_extract, aci_scan, errors

from tests.support.aci_util import MANIFEST, MANIFEST_BYTES, aci_tar, compress, header, member, pad, sha, src


def test_sniff_magic_bytes():
    tar = aci_tar()
    assert aci.sniff_compression(tar) == "tar"
    assert aci.sniff_compression(compress(tar, "gzip")) == "gzip"
    assert aci.sniff_compression(compress(tar, "bzip2")) == "bzip2"
    assert aci.sniff_compression(compress(tar, "xz")) == "xz"
    for junk in (b"", b"PK\x03\x04" + b"\0" * 600, b"{}"):
        with pytest.raises(errors.ImageError, match="not an ACI: neither a tar archive nor gzip/bzip2/xz data"):
            aci.sniff_compression(junk)


@pytest.mark.parametrize("kind", ["tar", "gzip", "bzip2", "xz"])
def test_image_id_is_sha512_of_uncompressed_stream(kind):
    tar = aci_tar(member("rootfs/a", data=os.urandom(300000)))
    assert aci.image_id_of(src(compress(tar, kind))) == sha(tar)
    iid, size, manifest = aci.inspect_aci(src(compress(tar, kind)))
    assert (iid, size, manifest) == (sha(tar), len(tar), MANIFEST)


@pytest.mark.parametrize("kind", ["gzip", "bzip2", "xz"])
def test_concatenated_streams_and_zero_padding(kind):
    tar = aci_tar(member("rootfs/a", data=b"x" * 100000))
    cut = 7777
    blob = compress(tar[:cut], kind) + compress(tar[cut:], kind) + b"\0" * 100
    assert aci.image_id_of(src(blob)) == sha(tar)


def test_truncated_and_corrupt_compressed_data():
    blob = compress(aci_tar(member("rootfs/a", data=os.urandom(50000))), "gzip")
    with pytest.raises(errors.ImageError, match="truncated gzip data"):
        aci.image_id_of(src(blob[:-100]))
    with pytest.raises(errors.ImageError, match="corrupt gzip data"):
        aci.image_id_of(src(blob + b"garbage that is not gzip"))


def test_bomb_refused_with_bounded_memory():
    # 64 MiB of zeros in 64 KiB members: no single member is too big, the total is.
    tar = aci_tar(*[member("rootfs/z%d" % i, data=b"\0" * 65536) for i in range(1024)])
    blob = gzip.compress(tar, compresslevel=9, mtime=0)
    assert len(blob) < len(tar) // 100
    with pytest.raises(errors.ImageError, match=r"uncompressed size exceeds 4194304 bytes \(max_size\)"):
        aci.inspect_aci(src(blob), max_size=4 << 20)


def test_inflater_output_is_chunked():
    inf = aci_scan.Inflater("gzip")
    chunks = list(inf.feed(gzip.compress(b"\0" * (10 << 20))))
    inf.finish()
    assert sum(map(len, chunks)) == 10 << 20
    assert max(map(len, chunks)) <= 1 << 20


# ---------------------------------------------------------------- hostile headers (parent scanner)

def test_pax_header_claiming_100_gib_refused():
    tar = aci_tar(header("rootfs/big" + "g" * 100, pax_headers={"size": str(100 << 30)}) + b"x" * 512)
    with pytest.raises(errors.ImageError, match=r"rootfs/bigg+: member size 107374182400 exceeds \d+ bytes \(max_size\)"):
        aci.inspect_aci(src(tar))


def test_huge_gnu_long_name_refused_before_buffering():
    raw = header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size=5 << 30, fmt=tarfile.GNU_FORMAT)
    tar = aci_tar(raw + b"a" * 4096, end=False)
    with pytest.raises(errors.ImageError, match=r"GNU long name header at byte 1536 is 5368709120 bytes"):
        aci.inspect_aci(src(tar))


def test_huge_pax_header_refused():
    raw = header("PaxHeader", tarfile.XHDTYPE, size=2 << 20)
    with pytest.raises(errors.ImageError, match=r"pax header at byte 1536 is 2097152 bytes"):
        aci.inspect_aci(src(aci_tar(raw + b"9" * 4096, end=False)))


def test_bad_checksum_refused():
    tar = bytearray(aci_tar(member("rootfs/a", data=b"hello")))
    tar[1536 + 5] ^= 0x20   # a byte of the third header's name
    with pytest.raises(errors.ImageError, match=r"bad tar header at byte 1536: bad checksum"):
        aci.inspect_aci(src(bytes(tar)))


def test_truncated_tar_refused():
    tar = aci_tar(member("rootfs/a", data=os.urandom(10000)))
    with pytest.raises(errors.ImageError, match="truncated tar archive"):
        aci.inspect_aci(src(tar[:3000]))


def test_malformed_pax_record_refused():
    data = b"999 path=x\n"
    raw = header("PaxHeader", tarfile.XHDTYPE, size=len(data)) + pad(data) + member("rootfs/a")
    with pytest.raises(errors.ImageError, match="malformed pax record"):
        aci.inspect_aci(src(aci_tar(raw)))


def test_global_pax_size_and_sparse_refused():
    data = b"16 size=1000000\n"
    raw = header("GlobalHead", tarfile.XGLTYPE, size=len(data)) + pad(data) + member("rootfs/a")
    with pytest.raises(errors.ImageError, match="global size record"):
        aci.inspect_aci(src(aci_tar(raw)))
    raw = header("rootfs/s", tarfile.GNUTYPE_SPARSE, fmt=tarfile.GNU_FORMAT)
    with pytest.raises(errors.ImageError, match="unsupported tar member type 'S'"):
        aci.inspect_aci(src(aci_tar(raw)))


def test_inspect_manifest_errors():
    with pytest.raises(errors.ImageError, match="manifest: missing"):
        aci.inspect_aci(src(aci_tar(manifest=None)))
    with pytest.raises(errors.ImageError, match="manifest: .*not valid JSON"):
        aci.inspect_aci(src(aci_tar(manifest=b"{nope")))


# ---------------------------------------------------------------- build

def _tree(root, order, mtime):
    files = {"etc/hello": b"hello\n", "bin/tool": b"\x7fELF" + b"\0" * 100, "a/b/c/deep": b"deep",
             "etc/long-" + "n" * 150: b"long name"}
    for rel in (sorted(files) if order else sorted(files, reverse=True)):
        p = os.path.join(root, rel)
        os.makedirs(os.path.dirname(p), exist_ok=True)
        with open(p, "wb") as f:
            f.write(files[rel])
        os.chmod(p, 0o755 if rel.startswith("bin/") else 0o644)
        os.utime(p, (mtime, mtime))
    os.symlink("hello", os.path.join(root, "etc/link"))
    os.link(os.path.join(root, "etc/hello"), os.path.join(root, "etc/hard"))
    for d, dummy_dirs, dummy_files in os.walk(root):
        os.chmod(d, 0o755)
    return root


@pytest.mark.parametrize("compression", ["gzip", "none", "bzip2", "xz"])
def test_build_is_deterministic(tmp_path, compression):
    a = _tree(str(tmp_path / "a"), True, 1000000)
    b = _tree(str(tmp_path / "b"), False, 2000000)
    ida = aci.build_aci(a, MANIFEST, str(tmp_path / "a.aci"), compression=compression)
    idb = aci.build_aci(b, MANIFEST, str(tmp_path / "b.aci"), compression=compression)
    assert ida == idb
    assert aci.image_id_of(open(tmp_path / "a.aci", "rb")) == ida
    assert aci.sniff_compression(open(tmp_path / "a.aci", "rb").read(512)) == \
        {"none": "tar"}.get(compression, compression)
    if compression == "gzip":
        assert (tmp_path / "a.aci").read_bytes() == (tmp_path / "b.aci").read_bytes()
    # a rebuild of the same tree gives the same ID too; a content change does not
    assert aci.build_aci(a, MANIFEST, str(tmp_path / "a2.aci"), compression=compression) == ida
    with open(os.path.join(a, "etc/hello"), "ab") as f:
        f.write(b"!")
    assert aci.build_aci(a, MANIFEST, str(tmp_path / "a3.aci"), compression=compression) != ida
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]


def test_build_layout_and_fields(tmp_path):
    root = _tree(str(tmp_path / "r"), True, 1234567)
    out = str(tmp_path / "x.aci")
    aci.build_aci(root, MANIFEST, out, compression="none")
    with tarfile.open(out) as tf:
        members = tf.getmembers()
        names = [m.name for m in members]
        assert names[:2] == ["manifest", "rootfs"]
        assert names.index("rootfs/a") < names.index("rootfs/a/b") < names.index("rootfs/a/b/c/deep") \
            < names.index("rootfs/bin")
        assert all(m.uid == 0 and m.gid == 0 and m.uname == "" and m.gname == "" and m.mtime == 0
                   for m in members)
        byname = {m.name: m for m in members}
        # the first name in order is the file, later names of the same inode link to it
        assert byname["rootfs/etc/hello"].islnk() and byname["rootfs/etc/hello"].linkname == "rootfs/etc/hard"
        assert byname["rootfs/etc/link"].issym() and byname["rootfs/etc/link"].linkname == "hello"
        assert byname["rootfs/bin/tool"].mode == 0o755
        assert tf.extractfile("manifest").read() == b'{"acKind":"ImageManifest","acVersion":"0.8.11","name":"example.com/t"}'
    aci.build_aci(root, MANIFEST, out, compression="none", mtime=None, owner=None)
    with tarfile.open(out) as tf:
        m = tf.getmember("rootfs/etc/hard")
        assert m.mtime == 1234567 and m.uid == os.getuid()


def test_build_gzip_header_has_no_name_or_time(tmp_path):
    root = _tree(str(tmp_path / "r"), True, 1)
    out = str(tmp_path / "named-file.aci")
    aci.build_aci(root, MANIFEST, out)
    head = open(out, "rb").read(10)
    assert head[:3] == b"\x1f\x8b\x08" and head[3] & 0x08 == 0 and head[4:8] == b"\0\0\0\0"


def test_build_refuses_invalid_manifest_and_leaves_nothing(tmp_path):
    root = _tree(str(tmp_path / "r"), True, 1)
    with pytest.raises(errors.ImageError, match="manifest: .*name"):
        aci.build_aci(root, dict(MANIFEST, name="Bad Name"), str(tmp_path / "x.aci"))
    assert not os.path.exists(tmp_path / "x.aci")
    assert aci.build_aci(root, MANIFEST_BYTES, str(tmp_path / "y.aci")).startswith("sha512-")
    assert sorted(os.listdir(tmp_path)) == ["r", "y.aci"]


def test_build_keeps_user_xattrs(tmp_path):
    root = _tree(str(tmp_path / "r"), True, 1)
    p = os.path.join(root, "bin/tool")
    try:
        os.setxattr(p, "user.note", b"\xff\x00bin")
    except OSError:
        pytest.skip("no user xattrs on this filesystem")
    out = str(tmp_path / "x.aci")
    aci.build_aci(root, MANIFEST, out, compression="none")
    with tarfile.open(out) as tf:
        val = tf.getmember("rootfs/bin/tool").pax_headers["SCHILY.xattr.user.note"]
    assert val.encode("utf-8", "surrogateescape") == b"\xff\x00bin"


# ---------------------------------------------------------------- frames (what the child is sent)

def _frames(tar):
    sc = aci_scan.TarScanner(1 << 30, frames=True)
    sc.feed(tar)
    sc.finish()
    rd = io.BufferedReader(io.BytesIO(b"".join(bytes(p) for p in sc.take())))
    out = []
    while True:
        m = aci_extract._read_frame(rd)
        if m is None:
            return out
        data = rd.read(m.size)
        out.append((m.name, m.type, m.mode, m.uid, m.gid, m.mtime_ns, m.linkname,
                    sorted(m.xattrs), data))


def _tarfile_view(tar):
    out = []
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r|", encoding="utf-8", errors="surrogateescape") as tf:
        for ti in tf:
            data = tf.extractfile(ti).read() if ti.isreg() else b""
            xattrs = sorted((k[13:], v.encode("utf-8", "surrogateescape"))
                            for k, v in ti.pax_headers.items() if k.startswith("SCHILY.xattr."))
            out.append((ti.name, ti.type, ti.mode & 0o7777, ti.uid, ti.gid, aci_scan._ns(ti.mtime),
                        ti.linkname, xattrs, data))
    return out


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT])
def test_frames_agree_with_tarfile(fmt):
    long = "rootfs/" + "/".join(["d%d" % i + "x" * 40 for i in range(3)])
    members = [("rootfs/a", "file", b"a" * 70000, {}), ("rootfs/d", "dir", b"", {"mode": 0o2750}),
               ("rootfs/s", "sym", b"", {"linkname": "a"}), ("rootfs/h", "link", b"", {"linkname": "rootfs/a"}),
               ("rootfs/c", "chr", b"", {"devmajor": 1, "devminor": 5}),
               ("rootfs/o", "file", b"o", {"uid": 123, "gid": 456, "mtime": 987654})]
    if fmt != tarfile.USTAR_FORMAT:
        members += [(long, "file", b"long", {}), ("rootfs/l", "sym", b"", {"linkname": "t" * 150})]
    if fmt == tarfile.PAX_FORMAT:
        members += [("rootfs/x", "file", b"x", {"pax_headers": {"SCHILY.xattr.user.k": "v", "mtime": "12.5",
                                                                "uid": "70000"}})]
    tar = b"".join(header(n, k, len(d), fmt=fmt, **a) + (pad(d) if k == "file" else b"")
                   for n, k, d, a in members) + b"\0" * 1024
    assert _frames(tar) == _tarfile_view(tar)


def test_frames_pax_global_and_long_name_precedence():
    glob = b"14 uid=424242\n" + b"26 SCHILY.xattr.user.g=gv\n"
    raw = header("GlobalHead", tarfile.XGLTYPE, size=len(glob)) + pad(glob)
    # GNU long name first, then a pax path: the outermost (first) one names the member
    longname = b"rootfs/from-gnu\0"
    raw += header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size=len(longname), fmt=tarfile.GNU_FORMAT) + pad(longname)
    raw += header("rootfs/short", pax_headers={"path": "rootfs/from-pax"}, size=1) + pad(b"1")
    raw += member("rootfs/plain", data=b"2") + b"\0" * 1024
    assert _frames(raw) == _tarfile_view(raw)
    assert [f[0] for f in _frames(raw)] == ["rootfs/from-gnu", "rootfs/plain"]
    assert all(f[3] == 424242 and f[7] == [("user.g", b"gv")] for f in _frames(raw))


_FIELDS = ("name", "mode", "uid", "gid", "size", "mtime", "type", "linkname", "devmajor", "devminor")


def _parsed(block):
    """(fields, None) or (None, the error) for a parser: what the scanner gets from it."""
    try:
        ti = aci_scan.parse_header(block)
    except tarfile.HeaderError as e:
        return None, (type(e), str(e))
    return tuple(getattr(ti, f) for f in _FIELDS), None


def _tarfiles(block):
    try:
        ti = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
    except tarfile.HeaderError as e:
        return None, (type(e), str(e))
    return tuple(getattr(ti, f) for f in _FIELDS), None


def _with_checksum(block, signed=False):
    """The header with its checksum field set right (unsigned, or the signed sum old tars wrote)."""
    b = bytearray(block)
    b[148:156] = b" " * 8
    total = sum((x - 256 if signed and x > 127 else x) for x in b)
    b[148:156] = b"%06o\0 " % (total & 0o777777)
    return bytes(b)


def test_header_fast_path_is_taken_for_plain_headers():
    """The scanner's own header parser answers for what tar and our builder write (the win)."""
    for fmt in (tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT):
        ti = tarfile.TarInfo("rootfs/usr/share/d001/f00123")
        ti.size, ti.mtime, ti.mode, ti.uid, ti.gid = 4000, 1700000000, 0o4755, 1000, 100
        block = ti.tobuf(fmt)[-512:]
        assert not isinstance(aci_scan.parse_header(block), tarfile.TarInfo)
        assert _parsed(block) == _tarfiles(block)


def test_header_parser_agrees_with_tarfile_on_generated_and_mutated_headers():
    """Same fields, or the same error, as tarfile for every header: the scanner's boundaries
    and owners must not depend on which parser answered."""
    rng = __import__("random").Random(19)
    seeds = []
    kinds = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
             tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.GNUTYPE_SPARSE,
             tarfile.GNUTYPE_LONGNAME, tarfile.XHDTYPE, b"Z")
    for i in range(60):
        ti = tarfile.TarInfo("rootfs/" + "d/" * rng.randint(0, 3) + "f%d" % i + "/" * rng.randint(0, 2))
        ti.type = rng.choice(kinds)
        ti.size = rng.choice((0, 1, 511, 4000, 8 ** 11 - 1))
        ti.mtime = rng.choice((0, 1700000000, 8 ** 11 - 1))
        ti.mode = rng.randint(0, 0o7777)
        ti.uid, ti.gid = rng.randint(0, 70000), rng.randint(0, 70000)
        ti.linkname = "t" * rng.randint(0, 99)
        ti.devmajor, ti.devminor = rng.randint(0, 255), rng.randint(0, 255)
        seeds.append(ti.tobuf(tarfile.USTAR_FORMAT)[-512:])
        ti.name = "p/" * 60 + "f%d" % i      # a ustar prefix
        seeds.append(ti.tobuf(tarfile.USTAR_FORMAT)[-512:])
        ti.uid = 8 ** 8                       # base-256 in GNU format
        seeds.append(ti.tobuf(tarfile.GNU_FORMAT)[-512:])
    fields = [(100, 108), (108, 116), (116, 124), (124, 136), (136, 148), (329, 337), (337, 345),
              (148, 156)]
    odd = [b" ", b"\0", b"\t", b"8", b"9", b"x", b"-", b"+", b"_", b"\x80", b"\xff", b"o", b"7"]
    blocks = list(seeds)
    for block in seeds:
        for dummy in range(12):
            b = bytearray(block)
            lo, hi = rng.choice(fields)
            for dummy2 in range(rng.randint(1, 3)):
                b[rng.randrange(lo, hi)] = rng.choice(odd)[0]
            if rng.random() < 0.3:
                b[rng.randrange(0, 100)] = rng.randint(128, 255)   # non-ASCII name: signed sums differ
            if rng.random() < 0.3:
                b[345:345 + rng.randint(0, 20)] = b"\xc3\xa9pre/" * 4
                b = b[:512]
            mutated = bytes(b)
            blocks += [mutated, _with_checksum(mutated), _with_checksum(mutated, signed=True)]
    blocks += [b"\0" * 512, b"\0" * 511, _with_checksum(b"\0" * 512)]
    fast = 0
    for block in blocks:
        assert _parsed(block) == _tarfiles(block), block
        try:
            fast += not isinstance(aci_scan.parse_header(block), tarfile.TarInfo)
        except tarfile.HeaderError:
            pass
    assert fast > len(blocks) // 10   # the comparison covers the fast path, not only tarfile's


def _run_child(tmp_path, stream):
    """The extractor child over a frame stream (forked, chrooted into a fresh directory): its report."""
    import json
    dest = tmp_path / ("dest%d" % len(list(tmp_path.iterdir())))
    dest.mkdir()
    frames = tmp_path / "frames"
    frames.write_bytes(stream)
    fd = os.open(frames, os.O_RDONLY)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - leaves by os._exit
        os.close(r)
        aci_extract.run_child(fd, w, str(dest), mode=aci_extract.IMAGE, allow_devices=False)
    os.close(fd)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        report = json.loads(f.read())
    os.waitpid(pid, 0)
    return dest, report


@pytest.mark.skipif(os.geteuid() != 0, reason="the extractor chroots")
def test_extractor_child_sizes_around_the_small_file_path(tmp_path):
    """Files read whole (up to 64 KiB) and in pieces land intact with the digest a walk gives;
    a stream that ends inside a small file's data names that member."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import tree
    sizes = (0, 1, 65535, 65536, 65537, 200000)
    datas = {n: os.urandom(n) for n in sizes}
    tar = aci_tar(*[member("rootfs/f%d" % n, data=datas[n]) for n in sizes],
                  member("rootfs/hl", "link", linkname="rootfs/f65536"))
    sc = aci_scan.TarScanner(1 << 30, frames=True)
    sc.feed(tar)
    sc.finish()
    stream = b"".join(bytes(p) for p in sc.take())
    dest, report = _run_child(tmp_path, stream)
    assert report["ok"], report
    for n in sizes:
        assert (dest / "rootfs" / ("f%d" % n)).read_bytes() == datas[n]
    assert (dest / "rootfs" / "hl").stat().st_ino == (dest / "rootfs" / "f65536").stat().st_ino
    assert report["digest"] == tree.tree_digest(str(dest / "rootfs"))
    cut = stream.index(datas[65536][:64]) + 1000
    dest, report = _run_child(tmp_path, stream[:cut])
    assert not report["ok"] and report["error"] == "rootfs/f65536: unexpected end of data", report
