"""stage0.aci as root: real imports and layer extraction, and the hostile-archive suite
(security test list 1 of the anchors): each hostile archive fails with an error naming the
member, writes nothing outside the destination, and leaves no child process behind."""
import hashlib
import os
import shutil
import stat
import subprocess
import tarfile

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, errors

from aci_util import MANIFEST, MANIFEST_BYTES, aci_tar, compress, header, member, sha, src

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extraction chroots and chowns: root only")

CANARY = "/tmp/xyz/canary"


def _children():
    me = str(os.getpid())
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[1] == me:
                        out.append(pid)
            except OSError:
                pass
    return out


def _snapshot(top):
    snap = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            st = os.lstat(p)
            content = open(p, "rb").read() if stat.S_ISREG(st.st_mode) else None
            snap[p] = (st.st_mode, st.st_uid, st.st_nlink, st.st_mtime_ns, content)
    st = os.lstat(top)
    snap[top] = (st.st_mode, st.st_mtime_ns)
    return snap


@pytest.fixture
def canary():
    shutil.rmtree("/tmp/xyz", ignore_errors=True)
    os.makedirs(CANARY)
    with open(os.path.join(CANARY, "file"), "w") as f:
        f.write("canary\n")
    before = _snapshot("/tmp/xyz")
    passwd = os.stat("/etc/passwd")
    yield
    assert _snapshot("/tmp/xyz") == before, "something was written outside the destination"
    assert not os.path.exists("/etc/x")
    assert os.stat("/etc/passwd").st_nlink == passwd.st_nlink
    shutil.rmtree("/tmp/xyz")


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / "dest"
    d.mkdir()
    return str(d)


def _import(data, dest, **kw):
    return aci.import_aci(src(data), dest, **kw)


# ---------------------------------------------------------------- good images

@pytest.mark.parametrize("kind", ["tar", "gzip", "bzip2", "xz"])
def test_import_each_compression(dest, kind):
    payload = os.urandom(3 << 20)
    tar = aci_tar(member("rootfs/etc", "dir"), member("rootfs/etc/hello", data=b"hello\n"),
                  member("rootfs/big", data=payload))
    blob = compress(tar, kind)
    out = open(os.path.join(dest, "..", "blob"), "wb")
    with out:
        res = _import(blob, dest, blob=out)
    assert res.id == sha(tar) == "sha512-" + hashlib.sha512(tar).hexdigest()
    assert (res.size, res.compressed_size, res.compression) == (len(tar), len(blob), kind)
    assert res.manifest == MANIFEST and res.skipped == []
    assert open(os.path.join(dest, "..", "blob"), "rb").read() == blob
    assert sorted(os.listdir(dest)) == ["manifest", "rootfs"]
    assert open(os.path.join(dest, "manifest"), "rb").read() == res.manifest_bytes
    assert open(os.path.join(dest, "rootfs/etc/hello"), "rb").read() == b"hello\n"
    assert open(os.path.join(dest, "rootfs/big"), "rb").read() == payload
    assert _children() == []


def test_multi_member_gzip(dest):
    tar = aci_tar(member("rootfs/a", data=os.urandom(200000)), member("rootfs/b", data=b"b" * 5000))
    blob = b"".join(compress(tar[i:i + 70000], "gzip") for i in range(0, len(tar), 70000))
    res = _import(blob, dest)
    assert res.id == sha(tar)
    assert open(os.path.join(dest, "rootfs/b"), "rb").read() == b"b" * 5000


def test_leading_dot_slash_and_implicit_parents(dest):
    tar = (member("./manifest", data=MANIFEST_BYTES) + member("./", "dir")
           + member("./rootfs/usr/bin/x", data=b"x", mode=0o755) + b"\0" * 1024)
    res = _import(tar, dest)
    assert res.manifest == MANIFEST
    assert os.stat(os.path.join(dest, "rootfs/usr/bin/x")).st_mode & 0o777 == 0o755
    assert os.stat(os.path.join(dest, "rootfs/usr")).st_mode & 0o777 == 0o755


def test_owners_modes_mtimes_xattrs_preserved(dest):
    tar = aci_tar(
        member("rootfs/d", "dir", mode=0o1750, uid=1001, gid=1002, mtime=111111,
               pax_headers={"SCHILY.xattr.user.dir": "dv"}),
        member("rootfs/d/suid", data=b"#!x", mode=0o4755, uid=0, gid=0, mtime=222222),
        member("rootfs/d/sgid", data=b"s", mode=0o2711, uid=33, gid=44, mtime=333333),
        member("rootfs/ping", data=b"\x7fELF", mode=0o755, mtime=444444,
               pax_headers={"SCHILY.xattr.security.capability":
                            # VFS_CAP_REVISION_2, cap_net_raw (13) permitted+effective
                            (b"\x01\x00\x00\x02" + b"\x00\x20\x00\x00" + b"\0" * 12).decode("utf-8", "surrogateescape"),
                            "SCHILY.xattr.user.bin": b"\xff\x00z".decode("utf-8", "surrogateescape")}),
        member("rootfs/owned", data=b"o", mode=0o640, uid=65534, gid=65533, mtime=555555),
        member("rootfs/abs", "sym", linkname="/etc/passwd", uid=7, gid=8, mtime=666666),
        member("rootfs/hard", "link", linkname="rootfs/owned"),
    )
    res = _import(tar, dest)
    r = os.path.join(dest, "rootfs")
    st = os.lstat(r + "/d")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime) == (0o1750, 1001, 1002, 111111)
    assert os.getxattr(r + "/d", "user.dir") == b"dv"
    st = os.lstat(r + "/d/suid")
    assert (stat.S_IMODE(st.st_mode), st.st_mtime) == (0o4755, 222222)
    st = os.lstat(r + "/d/sgid")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o2711, 33, 44)
    assert os.getxattr(r + "/ping", "security.capability")[:8] == b"\x01\x00\x00\x02\x00\x20\x00\x00"
    assert os.getxattr(r + "/ping", "user.bin") == b"\xff\x00z"
    if shutil.which("getcap"):
        out = subprocess.run(["getcap", r + "/ping"], capture_output=True, text=True, check=False).stdout
        assert "cap_net_raw" in out
    st = os.lstat(r + "/owned")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_nlink) == (65534, 65533, 0o640, 2)
    assert os.lstat(r + "/hard").st_ino == st.st_ino
    st = os.lstat(r + "/abs")
    assert stat.S_ISLNK(st.st_mode) and os.readlink(r + "/abs") == "/etc/passwd"
    assert (st.st_uid, st.st_gid, st.st_mtime) == (7, 8, 666666)
    assert res.skipped == []


def test_build_then_import_round_trip_with_setcap(tmp_path, dest):
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    tool = root / "bin" / "tool"
    tool.write_bytes(b"\x7fELF tool")
    os.chmod(tool, 0o4755)
    os.chown(tool, 0, 0)
    os.chmod(tool, 0o4755)
    if shutil.which("setcap"):
        subprocess.run(["setcap", "cap_net_bind_service=ep", str(tool)], check=True)
    else:
        os.setxattr(str(tool), "security.capability", b"\x01\x00\x00\x02" + b"\x00\x04\x00\x00" + b"\0" * 12)
    os.setxattr(str(tool), "user.origin", b"test")
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_bytes(b"c")
    os.chown(root / "etc" / "conf", 1234, 5678)
    os.utime(root / "etc" / "conf", (987654, 987654))
    os.symlink("/bin/tool", root / "abs")
    out = str(tmp_path / "img.aci")
    iid = aci.build_aci(str(root), MANIFEST, out, mtime=None, owner=None)
    with open(out, "rb") as f:
        res = aci.import_aci(f, dest)
    assert res.id == iid
    r = os.path.join(dest, "rootfs")
    st = os.lstat(r + "/bin/tool")
    assert stat.S_IMODE(st.st_mode) == 0o4755
    assert os.getxattr(r + "/bin/tool", "security.capability") == os.getxattr(str(tool), "security.capability")
    assert os.getxattr(r + "/bin/tool", "user.origin") == b"test"
    st = os.lstat(r + "/etc/conf")
    assert (st.st_uid, st.st_gid, st.st_mtime) == (1234, 5678, 987654)
    assert os.readlink(r + "/abs") == "/bin/tool"


def test_devices_and_fifos_skipped_unless_allowed(tmp_path):
    tar = aci_tar(member("rootfs/dev", "dir"), member("rootfs/dev/null", "chr", devmajor=1, devminor=3, mode=0o666),
                  member("rootfs/dev/sda", "blk", devmajor=8, devminor=0), member("rootfs/fifo", "fifo", mode=0o600))
    d1 = tmp_path / "d1"
    d1.mkdir()
    res = _import(tar, str(d1))
    assert res.skipped == [("rootfs/dev/null", "char"), ("rootfs/dev/sda", "block"), ("rootfs/fifo", "fifo")]
    assert os.listdir(d1 / "rootfs" / "dev") == [] and not os.path.lexists(d1 / "rootfs" / "fifo")
    d2 = tmp_path / "d2"
    d2.mkdir()
    res = _import(tar, str(d2), allow_devices=True)
    assert res.skipped == []
    st = os.lstat(d2 / "rootfs" / "dev" / "null")
    assert stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) == 1 and os.minor(st.st_rdev) == 3
    assert stat.S_IMODE(st.st_mode) == 0o666
    assert stat.S_ISBLK(os.lstat(d2 / "rootfs" / "dev" / "sda").st_mode)
    assert stat.S_ISFIFO(os.lstat(d2 / "rootfs" / "fifo").st_mode)


def test_process_state_unchanged_and_no_fd_leak(dest, tmp_path):
    tar = aci_tar(member("rootfs/a", data=b"a"))
    cwd, root = os.getcwd(), os.stat("/")
    fds = sorted(os.listdir("/proc/self/fd"))
    for i in range(5):
        d = tmp_path / ("ok%d" % i)
        d.mkdir()
        _import(compress(tar, "gzip"), str(d))
        d = tmp_path / ("bad%d" % i)
        d.mkdir()
        with pytest.raises(errors.ImageError):
            _import(aci_tar(member("../x")), str(d))
    assert sorted(os.listdir("/proc/self/fd")) == fds
    assert os.getcwd() == cwd and os.readlink("/proc/self/root") == "/"
    assert (os.stat("/").st_ino, os.stat("/").st_dev) == (root.st_ino, root.st_dev)
    assert _children() == []


def test_dest_must_be_empty_directory(dest):
    open(os.path.join(dest, "x"), "w").close()
    with pytest.raises(errors.StoreError, match="not empty"):
        _import(aci_tar(), dest)


# ---------------------------------------------------------------- hostile images

def _rel_canary(dest, sub=""):
    return os.path.relpath(CANARY, os.path.join(dest, sub))


def _hostile(dest):
    up = _rel_canary(dest)                 # from dest (the archive root)
    up_root = _rel_canary(dest, "rootfs")  # from rootfs/
    big_gnu = header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size=5 << 30, fmt=tarfile.GNU_FORMAT)
    bad_sum = bytearray(aci_tar(member("rootfs/a", data=b"x")))
    bad_sum[1536 + 3] ^= 1
    return {
        "dotdot": (aci_tar(member("../../x"), member(up + "/pwned")), r"'\.\.' in member name"),
        "dotdot_canary": (aci_tar(member(up + "/pwned")), r"\.\./.*canary/pwned: '\.\.' in member name"),
        "rootfs_dotdot": (aci_tar(member("rootfs/../../x"), member("rootfs/" + up_root + "/pwned")),
                          r"rootfs/\.\./\.\./x: '\.\.' in member name"),
        "abs_etc": (aci_tar(member("/etc/x")), r"/etc/x: absolute member name"),
        "abs_rootfs": (aci_tar(member("/rootfs/x")), r"/rootfs/x: absolute member name"),
        "abs_canary": (aci_tar(member(CANARY + "/pwned")), r"absolute member name"),
        "symlink_abs_then_write": (
            aci_tar(member("rootfs/a", "sym", linkname=CANARY), member("rootfs/a/passwd", data=b"pwned")),
            r"rootfs/a/passwd: refusing to write through symlink rootfs/a"),
        "symlink_rel_then_write": (
            aci_tar(member("rootfs/a", "sym", linkname=up_root), member("rootfs/a/file", data=b"pwned")),
            r"rootfs/a/file: refusing to write through symlink rootfs/a"),
        "symlink_then_dir": (
            aci_tar(member("rootfs/a", "sym", linkname=CANARY), member("rootfs/a/sub", "dir")),
            r"rootfs/a/sub: refusing to write through symlink rootfs/a"),
        "symlink_dotdot_chain": (
            aci_tar(member("rootfs/a", "sym", linkname=".."), member("rootfs/a/b", "sym", linkname=".."),
                    member("rootfs/a/b/" + up_root[3:] + "/pwned", data=b"x")),
            r"rootfs/a/b: refusing to write through symlink rootfs/a"),
        "symlink_chain_separate": (
            aci_tar(member("rootfs/a", "sym", linkname=".."), member("rootfs/b", "sym", linkname="a/.."),
                    member("rootfs/b/pwned", data=b"x")),
            r"rootfs/b/pwned: refusing to write through symlink rootfs/b"),
        "hardlink_etc_passwd": (aci_tar(member("rootfs/h", "link", linkname="/etc/passwd")),
                                r"/etc/passwd: absolute hard link target name"),
        "hardlink_dotdot": (aci_tar(member("rootfs/h", "link", linkname="../../x")),
                            r"\.\./\.\./x: '\.\.' in hard link target name"),
        "hardlink_canary": (aci_tar(member("rootfs/h", "link", linkname=up + "/file")),
                            r"'\.\.' in hard link target name"),
        "hardlink_to_symlink": (
            aci_tar(member("rootfs/s", "sym", linkname="/etc/passwd"), member("rootfs/h", "link", linkname="rootfs/s")),
            r"rootfs/h: hard link target rootfs/s is not a regular file"),
        "hardlink_to_dir": (
            aci_tar(member("rootfs/d", "dir"), member("rootfs/h", "link", linkname="rootfs/d")),
            r"rootfs/h: hard link target rootfs/d is not a regular file"),
        "hardlink_missing": (aci_tar(member("rootfs/h", "link", linkname="rootfs/nope")),
                             r"rootfs/h: hard link target rootfs/nope is not an earlier member"),
        "hardlink_to_manifest": (aci_tar(member("rootfs/h", "link", linkname="manifest")),
                                 r"rootfs/h: hard link target manifest is outside rootfs/"),
        "duplicate": (aci_tar(member("rootfs/f", data=b"1"), member("rootfs/f", data=b"2")),
                      r"rootfs/f: duplicate member"),
        "duplicate_dot_slash": (aci_tar(member("rootfs/f", data=b"1"), member("./rootfs//f", data=b"2")),
                                r"\./rootfs//f: duplicate member"),
        "under_regular_file": (aci_tar(member("rootfs/f", data=b"1"), member("rootfs/f/x", data=b"2")),
                               r"rootfs/f/x: parent rootfs/f is not a directory"),
        "file_over_implicit_dir": (aci_tar(member("rootfs/d/x", data=b"1"), member("rootfs/d", data=b"2")),
                                   r"rootfs/d: conflicts with the directory"),
        "pax_100_gib": (aci_tar(header("rootfs/big", pax_headers={"size": str(100 << 30)}) + b"x" * 4096, end=False),
                        r"member size 107374182400 exceeds \d+ bytes \(max_size\)"),
        "gnu_long_name_huge": (aci_tar(big_gnu + b"a" * 8192, end=False),
                               r"GNU long name header at byte 1536 is 5368709120 bytes"),
        "bad_checksum": (bytes(bad_sum), r"bad tar header at byte 1536: bad checksum"),
        "truncated": (aci_tar(member("rootfs/a", data=os.urandom(100000)))[:50000], r"truncated tar archive"),
        "truncated_gzip": (compress(aci_tar(member("rootfs/a", data=os.urandom(100000))), "gzip")[:50000],
                           r"truncated gzip data"),
        "trusted_overlay_opaque": (
            aci_tar(member("rootfs/d", "dir", pax_headers={"SCHILY.xattr.trusted.overlay.opaque": "y"})),
            r"rootfs/d: extended attribute trusted.overlay.opaque is not allowed"),
        "security_selinux": (
            aci_tar(member("rootfs/f", data=b"x", pax_headers={"SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0"})),
            r"rootfs/f: extended attribute security.selinux is not allowed"),
        "top_level_other": (aci_tar(member("other", data=b"x")), r"other: unexpected top-level entry"),
        "top_level_other_dir": (aci_tar(member("etc", "dir")), r"etc: unexpected top-level entry"),
        "missing_manifest": (aci_tar(member("rootfs/a", data=b"a"), manifest=None), r"manifest: missing"),
        "missing_rootfs": (aci_tar(rootfs=False), r"rootfs: missing"),
        "rootfs_is_file": (aci_tar(member("rootfs", data=b"x"), rootfs=False), r"rootfs: rootfs must be a directory"),
        "invalid_manifest_json": (aci_tar(manifest=b"{not json"), r"manifest: .*not valid JSON"),
        "invalid_manifest_schema": (aci_tar(manifest=b'{"acKind": "PodManifest", "acVersion": "0.8.11"}'),
                                    r"manifest: acKind"),
        "manifest_symlink": (member("manifest", "sym", linkname="/etc/passwd") + member("rootfs", "dir") + b"\0" * 1024,
                             r"manifest: must be a regular file, not a symlink"),
        "manifest_too_big": (aci_tar(manifest=b" " * ((1 << 20) + 1)), r"manifest: 1048577 bytes is more than 1048576"),
        "member_is_absurd_type": (aci_tar(header("rootfs/v", b"V")), r"rootfs/v: unsupported tar member type 'V'"),
    }


HOSTILE = sorted(_hostile("/tmp/placeholder/dest"))


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_archive_refused(case, canary, dest):
    data, pattern = _hostile(dest)[case]
    with pytest.raises(errors.ImageError, match=pattern):
        _import(data, dest)
    assert _children() == []


@pytest.mark.parametrize("case", ["symlink_abs_then_write", "hardlink_etc_passwd", "dotdot_canary",
                                  "symlink_dotdot_chain", "trusted_overlay_opaque"])
def test_hostile_archive_refused_by_extract_layer(case, canary, tmp_path):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    data, pattern = _hostile(str(tmp_path))[case]
    with pytest.raises(errors.ImageError):
        aci.extract_layer(src(data), str(rootfs))
    assert _children() == []


def test_decompression_bomb(canary, dest):
    tar = aci_tar(*[member("rootfs/z%d" % i, data=b"\0" * (256 << 10)) for i in range(256)])   # 64 MiB
    blob = compress(tar, "gzip")
    with pytest.raises(errors.ImageError, match=r"uncompressed size exceeds 8388608 bytes \(max_size\)"):
        _import(blob, dest, max_size=8 << 20)
    assert _children() == []


def test_fifo_at_manifest_does_not_hang(canary, dest):
    data = member("manifest", "fifo") + member("rootfs", "dir") + b"\0" * 1024
    with pytest.raises(errors.ImageError, match="manifest: must be a regular file"):
        _import(data, dest, allow_devices=True)


# ---------------------------------------------------------------- layers

def test_extract_layer_later_layers_win(tmp_path, canary):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    base = aci_tar(
        member("rootfs/usr", "dir"), member("rootfs/usr/lib", "dir"), member("rootfs/usr/lib/libc.so", data=b"libc"),
        member("rootfs/lib", "sym", linkname="usr/lib"),
        member("rootfs/etc", "dir", mode=0o755), member("rootfs/etc/keep", data=b"keep"),
        member("rootfs/etc/conf", data=b"old"),
        member("rootfs/bin", "dir"), member("rootfs/bin/sh", data=b"sh"),
        member("rootfs/tmp", "sym", linkname=CANARY),
    )
    aci.extract_layer(src(compress(base, "xz")), str(rootfs))
    top = aci_tar(
        member("rootfs/lib", "dir"), member("rootfs/lib/libnew.so", data=b"new"),       # symlink -> dir: replaced
        member("rootfs/etc", "dir", mode=0o750), member("rootfs/etc/conf", data=b"new"),  # merge + replace file
        member("rootfs/bin", "sym", linkname="usr/bin"),                                  # dir -> symlink
        member("rootfs/tmp", "dir", mode=0o1777),                                         # symlink to outside -> dir
        member("rootfs/tmp/x", data=b"x"),
    )
    aci.extract_layer(src(top), str(rootfs), compression="tar")
    r = str(rootfs)
    assert os.path.isdir(r + "/lib") and not os.path.islink(r + "/lib")
    assert sorted(os.listdir(r + "/lib")) == ["libnew.so"]
    assert sorted(os.listdir(r + "/usr/lib")) == ["libc.so"]     # the old target was not written through
    assert open(r + "/etc/keep").read() == "keep" and open(r + "/etc/conf").read() == "new"
    assert stat.S_IMODE(os.stat(r + "/etc").st_mode) == 0o750
    assert os.readlink(r + "/bin") == "usr/bin"
    assert stat.S_IMODE(os.lstat(r + "/tmp").st_mode) == 0o1777 and os.listdir(r + "/tmp") == ["x"]
    assert not os.path.exists(r + "/manifest")
    assert _children() == []


def test_extract_layer_refuses_writing_through_lower_symlink(tmp_path, canary):
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    aci.extract_layer(src(aci_tar(member("rootfs/x", "sym", linkname=CANARY))), str(rootfs))
    with pytest.raises(errors.ImageError, match=r"rootfs/x/pwned: refusing to write through symlink rootfs/x"):
        aci.extract_layer(src(aci_tar(member("rootfs/x/pwned", data=b"p"))), str(rootfs))


# ---------------------------------------------------------------- tree digest and blob copy

def _varied_tar():
    cap = (b"\x01\x00\x00\x02" + b"\x00\x20\x00\x00" + b"\0" * 12).decode("utf-8", "surrogateescape")
    big = os.urandom(200000)
    return aci_tar(
        member("rootfs/d", "dir", mode=0o1750, uid=1001, gid=1002,
               pax_headers={"SCHILY.xattr.user.dir": "dv"}),
        member("rootfs/d/suid", data=b"#!x", mode=0o4755),
        member("rootfs/d/sgid", data=b"s", mode=0o2711, uid=33, gid=44),
        member("rootfs/d/ro", data=b"", mode=0o444),
        member("rootfs/ping", data=b"\x7fELF", mode=0o755,
               pax_headers={"SCHILY.xattr.security.capability": cap,
                            "SCHILY.xattr.user.bin": b"\xff\x00z".decode("utf-8", "surrogateescape")}),
        member("rootfs/implicit/deeper/file", data=b"implicit parents", uid=7, gid=8),
        member("rootfs/big", data=big, mode=0o600),
        member("rootfs/hard", "link", linkname="rootfs/big"),
        member("rootfs/d/hard2", "link", linkname="rootfs/d/suid"),
        member("rootfs/abs", "sym", linkname="/etc/passwd", uid=7, gid=8),
        member("rootfs/rel", "sym", linkname="d/suid"),
        member("rootfs/" + "long" * 40, data=b"pax long name"),
        member("rootfs/\udcff-latin1", data=b"not utf-8 name"),
        member("rootfs/dev", "dir"),
        member("rootfs/dev/null", "chr", devmajor=1, devminor=3, mode=0o666),
        member("rootfs/dev/sda", "blk", devmajor=8, devminor=0, mode=0o660, gid=6),
        member("rootfs/fifo", "fifo", mode=0o620),
        member("rootfs/zz", "dir", mode=0o700),
    )


@pytest.mark.parametrize("allow_devices,setgid_dest", [(False, False), (True, False), (True, True)])
def test_child_tree_digest_matches_tree_digest(dest, allow_devices, setgid_dest):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import tree
    if setgid_dest:   # no fresh-node shortcuts then: every owner and mode is set explicitly
        os.chown(dest, 0, 5)
        os.chmod(dest, 0o2755)
    res = _import(compress(_varied_tar(), "gzip"), dest, allow_devices=allow_devices)
    r = os.path.join(dest, "rootfs")
    assert res.tree_digest is not None
    assert res.tree_digest == tree.tree_digest(r)
    assert stat.S_IMODE(os.lstat(r + "/d/suid").st_mode) == 0o4755
    assert stat.S_IMODE(os.lstat(r + "/d").st_mode) == 0o1750
    assert os.lstat(r + "/hard").st_ino == os.lstat(r + "/big").st_ino
    assert os.path.lexists(r + "/dev/null") == allow_devices
    # the digest covers content: a changed byte gives another digest
    with open(r + "/implicit/deeper/file", "r+b") as f:
        f.write(b"I")
    assert tree.tree_digest(r) != res.tree_digest


def test_blob_copied_from_a_real_file_at_its_offset(tmp_path, dest):
    tar = aci_tar(member("rootfs/a", data=os.urandom(3 << 20)))
    blob = compress(tar, "gzip")
    path = tmp_path / "img"
    path.write_bytes(b"junk before the image" + blob)
    out = tmp_path / "blob"
    with open(path, "rb") as f, open(out, "wb") as b:
        f.seek(len(b"junk before the image"))
        res = aci.import_aci(f, dest, blob=b)
        assert b.tell() == len(blob)
    assert res.id == sha(tar) and res.compressed_size == len(blob)
    assert out.read_bytes() == blob


def test_source_file_changing_during_import_is_refused(tmp_path, dest):
    import io

    class Growing(io.BufferedReader):
        calls = 0

        def read(self, n=-1):
            data = super().read(n)
            self.calls += 1
            if self.calls == 2:
                with open(self.name, "ab") as g:
                    g.write(b"\0" * 4096)    # gzip tolerates zero padding: only the copy can tell
            return data

    path = tmp_path / "img"
    path.write_bytes(compress(aci_tar(member("rootfs/a", data=os.urandom(3 << 20))), "gzip"))
    with Growing(io.FileIO(str(path), "rb")) as f, open(tmp_path / "blob", "wb") as b:
        with pytest.raises(errors.ImageError, match="changed while it was imported"):
            aci.import_aci(f, dest, blob=b)
    assert _children() == []
