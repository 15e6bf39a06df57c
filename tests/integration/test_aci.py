"""stage0.aci as root: real imports and layer extraction. The hostile-archive suite (security
test list 1 of the anchors) is the table in test_hostile_images.py."""
import hashlib
import os
import shutil
import stat
import subprocess

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, errors

from tests.support import canary as canary_guard
from tests.support.aci_util import MANIFEST, MANIFEST_BYTES, aci_tar, compress, member, sha, src
from tests.support.canary import CANARY

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="extraction chroots and chowns: root only")


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


@pytest.fixture
def canary():
    yield from canary_guard.guard()


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

# The hostile-archive corpus is one table: tests/integration/test_hostile_images.py.


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
