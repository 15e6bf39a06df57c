"""The hostile-image corpus: one table, each case imported (and rendered) by a real store.

Every row: a case name, a builder, and the fragment (a regular expression) the error must
contain — it names the archive member (or manifest field) that was wrong. ``None`` means the
image is harmless once handled right and must import and render. Each case also asserts that
the canary outside the store is untouched (the ``canary`` fixture), that nothing is left in
``cas/tmp``, that the store check finds nothing, and the leak checker that no child process,
mount or fd is left.

A builder gets ``up`` (the relative path from the archive's root to the canary, as the
extractor will see it), and returns the archive bytes, or a list of layers
``[(name, bytes), ...]`` parents first: they are imported in order and the last is rendered,
so its dependencies are applied under it (cross-layer tricks).
"""
import io
import json
import os
import re
import tarfile

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, errors, store_gc
from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

from tests.support.aci_util import MANIFEST, aci_tar, compress, header, member
from tests.support import canary as canary_guard
from tests.support.canary import CANARY


def _manifest(name, deps=(), **extra):
    m = dict(MANIFEST, name=name, **extra)
    if deps:
        m["dependencies"] = [{"imageName": d} for d in deps]
    return json.dumps(m).encode()


def layers(*specs):
    """``(name, deps, members, extra manifest fields)`` per layer, parents first."""
    return [(name, aci_tar(*members, manifest=_manifest(name, deps, **extra)))
            for name, deps, members, extra in specs]


def _bad_checksum(up):
    data = bytearray(aci_tar(member("rootfs/a", data=b"x")))
    data[1536 + 3] ^= 1
    return bytes(data)


def _big_gnu_long_name(up):
    big = header("././@LongLink", tarfile.GNUTYPE_LONGNAME, size=5 << 30, fmt=tarfile.GNU_FORMAT)
    return aci_tar(big + b"a" * 8192, end=False)


def _bomb(up):  # 64 MiB of zeros; the store imports it with max_size 8 MiB
    return compress(aci_tar(*[member("rootfs/z%d" % i, data=b"\0" * (256 << 10)) for i in range(256)]), "gzip")


# name, builder(up), expected error fragment (None: must import and render cleanly)
CASES = [
    # -- names
    ("dotdot", lambda up: aci_tar(member("../../x"), member(up + "/pwned")), r"\.\./\.\./x: '\.\.' in member name"),
    ("dotdot_to_canary", lambda up: aci_tar(member(up + "/pwned")), r"canary/pwned: '\.\.' in member name"),
    ("rootfs_dotdot", lambda up: aci_tar(member("rootfs/../../x")), r"rootfs/\.\./\.\./x: '\.\.' in member name"),
    ("abs_etc", lambda up: aci_tar(member("/etc/x")), r"/etc/x: absolute member name"),
    ("abs_rootfs", lambda up: aci_tar(member("/rootfs/x")), r"/rootfs/x: absolute member name"),
    ("abs_canary", lambda up: aci_tar(member(CANARY + "/pwned")), r"canary/pwned: absolute member name"),
    ("pax_path_dotdot", lambda up: aci_tar(member("rootfs/ok", pax_headers={"path": "rootfs/../../../x"})),
     r"rootfs/\.\./\.\./\.\./x: '\.\.' in member name"),
    ("gnu_long_name_dotdot", lambda up: aci_tar(member("rootfs/" + "d/" * 60 + "../" * 70 + "x", fmt=tarfile.GNU_FORMAT)),
     r"'\.\.' in member name"),
    # -- symlinks inside one archive
    ("symlink_abs_then_write", lambda up: aci_tar(member("rootfs/a", "sym", linkname=CANARY),
                                                  member("rootfs/a/passwd", data=b"pwned")),
     r"rootfs/a/passwd: refusing to write through symlink rootfs/a"),
    ("symlink_rel_then_write", lambda up: aci_tar(member("rootfs/a", "sym", linkname="../" + up),
                                                  member("rootfs/a/file", data=b"pwned")),
     r"rootfs/a/file: refusing to write through symlink rootfs/a"),
    ("symlink_then_dir", lambda up: aci_tar(member("rootfs/a", "sym", linkname=CANARY), member("rootfs/a/sub", "dir")),
     r"rootfs/a/sub: refusing to write through symlink rootfs/a"),
    ("symlink_dotdot_chain", lambda up: aci_tar(member("rootfs/a", "sym", linkname=".."),
                                                member("rootfs/a/b", "sym", linkname=".."),
                                                member("rootfs/a/b/" + up + "/pwned", data=b"x")),
     r"rootfs/a/b: refusing to write through symlink rootfs/a"),
    ("symlink_chain_separate", lambda up: aci_tar(member("rootfs/a", "sym", linkname=".."),
                                                  member("rootfs/b", "sym", linkname="a/.."),
                                                  member("rootfs/b/pwned", data=b"x")),
     r"rootfs/b/pwned: refusing to write through symlink rootfs/b"),
    ("pax_linkpath_then_write", lambda up: aci_tar(member("rootfs/a", "sym", linkname="x", pax_headers={"linkpath": CANARY}),
                                                   member("rootfs/a/pwned", data=b"x")),
     r"rootfs/a/pwned: refusing to write through symlink rootfs/a"),
    # -- hard links
    ("hardlink_etc_passwd", lambda up: aci_tar(member("rootfs/h", "link", linkname="/etc/passwd")),
     r"/etc/passwd: absolute hard link target name"),
    ("hardlink_dotdot", lambda up: aci_tar(member("rootfs/h", "link", linkname="../../x")),
     r"\.\./\.\./x: '\.\.' in hard link target name"),
    ("hardlink_canary", lambda up: aci_tar(member("rootfs/h", "link", linkname=up + "/file")),
     r"canary/file: '\.\.' in hard link target name"),
    ("gnu_long_link_outside", lambda up: aci_tar(member("rootfs/h", "link", fmt=tarfile.GNU_FORMAT,
                                                        linkname="rootfs/" + "../" * 40 + "etc/passwd")),
     r"'\.\.' in hard link target name"),
    ("hardlink_to_symlink", lambda up: aci_tar(member("rootfs/s", "sym", linkname="/etc/passwd"),
                                               member("rootfs/h", "link", linkname="rootfs/s")),
     r"rootfs/h: hard link target rootfs/s is not a regular file"),
    ("hardlink_to_dir", lambda up: aci_tar(member("rootfs/d", "dir"), member("rootfs/h", "link", linkname="rootfs/d")),
     r"rootfs/h: hard link target rootfs/d is not a regular file"),
    ("hardlink_missing", lambda up: aci_tar(member("rootfs/h", "link", linkname="rootfs/nope")),
     r"rootfs/h: hard link target rootfs/nope is not an earlier member"),
    ("hardlink_to_manifest", lambda up: aci_tar(member("rootfs/h", "link", linkname="manifest")),
     r"rootfs/h: hard link target manifest is outside rootfs/"),
    # -- conflicting or odd members
    ("duplicate", lambda up: aci_tar(member("rootfs/f", data=b"1"), member("rootfs/f", data=b"2")),
     r"rootfs/f: duplicate member"),
    ("duplicate_dot_slash", lambda up: aci_tar(member("rootfs/f", data=b"1"), member("./rootfs//f", data=b"2")),
     r"\./rootfs//f: duplicate member"),
    ("under_regular_file", lambda up: aci_tar(member("rootfs/f", data=b"1"), member("rootfs/f/x", data=b"2")),
     r"rootfs/f/x: parent rootfs/f is not a directory"),
    ("file_over_implicit_dir", lambda up: aci_tar(member("rootfs/d/x", data=b"1"), member("rootfs/d", data=b"2")),
     r"rootfs/d: conflicts with the directory"),
    ("absurd_member_type", lambda up: aci_tar(header("rootfs/v", b"V")), r"rootfs/v: unsupported tar member type 'V'"),
    ("top_level_other", lambda up: aci_tar(member("other", data=b"x")), r"other: unexpected top-level entry"),
    ("top_level_other_dir", lambda up: aci_tar(member("etc", "dir")), r"etc: unexpected top-level entry"),
    ("trusted_overlay_opaque", lambda up: aci_tar(member("rootfs/d", "dir", pax_headers={
        "SCHILY.xattr.trusted.overlay.opaque": "y"})),
     r"rootfs/d: extended attribute trusted.overlay.opaque is not allowed"),
    ("security_selinux", lambda up: aci_tar(member("rootfs/f", data=b"x", pax_headers={
        "SCHILY.xattr.security.selinux": "system_u:object_r:shadow_t:s0"})),
     r"rootfs/f: extended attribute security.selinux is not allowed"),
    # -- sizes, headers, streams
    ("pax_100_gib", lambda up: aci_tar(header("rootfs/big", pax_headers={"size": str(100 << 30)}) + b"x" * 4096, end=False),
     r"member size 107374182400 exceeds \d+ bytes \(max_size\)"),
    ("gnu_long_name_huge", _big_gnu_long_name, r"GNU long name header at byte 1536 is 5368709120 bytes"),
    ("bad_checksum", _bad_checksum, r"bad tar header at byte 1536: bad checksum"),
    ("truncated", lambda up: aci_tar(member("rootfs/a", data=b"a" * 100000))[:50000], r"truncated tar archive"),
    ("truncated_gzip", lambda up: compress(aci_tar(member("rootfs/a", data=os.urandom(100000))), "gzip")[:50000],
     r"truncated gzip data"),
    ("decompression_bomb", _bomb, r"uncompressed size exceeds 8388608 bytes \(max_size\)"),
    # -- the manifest member
    ("missing_manifest", lambda up: aci_tar(member("rootfs/a", data=b"a"), manifest=None), r"manifest: missing"),
    ("missing_rootfs", lambda up: aci_tar(rootfs=False), r"rootfs: missing"),
    ("rootfs_is_file", lambda up: aci_tar(member("rootfs", data=b"x"), rootfs=False), r"rootfs: rootfs must be a directory"),
    ("manifest_not_json", lambda up: aci_tar(manifest=b"{not json"), r"manifest: .*not valid JSON"),
    ("manifest_wrong_kind", lambda up: aci_tar(manifest=b'{"acKind": "PodManifest", "acVersion": "0.8.11"}'),
     r"manifest: acKind"),
    ("manifest_symlink", lambda up: member("manifest", "sym", linkname="/etc/passwd") + member("rootfs", "dir") + b"\0" * 1024,
     r"manifest: must be a regular file, not a symlink"),
    ("manifest_fifo", lambda up: member("manifest", "fifo") + member("rootfs", "dir") + b"\0" * 1024,
     r"manifest: must be a regular file"),
    ("manifest_too_big", lambda up: aci_tar(manifest=b" " * ((1 << 20) + 1)), r"manifest: 1048577 bytes is more than 1048576"),
    # -- across layers: a dependency's symlink, a child writing through it
    ("dep_symlink_etc_to_root", lambda up: layers(
        ("example.com/base", (), [member("rootfs/etc", "sym", linkname="/")], {}),
        ("example.com/app", ["example.com/base"], [member("rootfs/etc/passwd", data=b"root::0:0::/:/bin/sh\n")], {})),
     r"rootfs/etc/passwd: refusing to write through symlink rootfs/etc"),
    ("dep_symlink_dotdot_up", lambda up: layers(
        ("example.com/base", (), [member("rootfs/x", "sym", linkname="../../..")], {}),
        ("example.com/app", ["example.com/base"], [member("rootfs/x/evil", data=b"evil")], {})),
     r"rootfs/x/evil: refusing to write through symlink rootfs/x"),
    ("dep_symlink_to_canary_mkdir", lambda up: layers(
        ("example.com/base", (), [member("rootfs/d", "sym", linkname=CANARY)], {}),
        ("example.com/app", ["example.com/base"], [member("rootfs/d/sub", "dir"), member("rootfs/d/sub/f", data=b"x")], {})),
     r"rootfs/d/sub: refusing to write through symlink rootfs/d"),
    ("dir_replaced_by_symlink_then_written", lambda up: layers(
        ("example.com/g", (), [member("rootfs/d", "dir"), member("rootfs/d/keep", data=b"k")], {}),
        ("example.com/p", ["example.com/g"], [member("rootfs/d", "sym", linkname=CANARY)], {}),
        ("example.com/app", ["example.com/p"], [member("rootfs/d/pwned", data=b"x")], {})),
     r"rootfs/d/pwned: refusing to write through symlink rootfs/d"),
    ("dep_hardlink_to_lower_layer_file", lambda up: layers(
        ("example.com/base", (), [member("rootfs/etc", "dir"), member("rootfs/etc/shadow", data=b"s")], {}),
        ("example.com/app", ["example.com/base"], [member("rootfs/h", "link", linkname="rootfs/etc/shadow")], {})),
     r"rootfs/h: hard link target rootfs/etc/shadow is not an earlier member"),
    # -- pathWhitelist tricks: nothing outside may be kept, followed or removed
    ("whitelist_through_symlink", lambda up: layers(
        ("example.com/base", (), [member("rootfs/keep", "sym", linkname=CANARY), member("rootfs/drop", data=b"d")], {}),
        ("example.com/app", ["example.com/base"], [member("rootfs/own", data=b"o")],
         {"pathWhitelist": ["/keep/file", "/own"]})),
     None),
    ("whitelist_dotdot", lambda up: layers(
        ("example.com/base", (), [member("rootfs/etc", "dir"), member("rootfs/etc/f", data=b"f")], {}),
        ("example.com/app", ["example.com/base"], [member("rootfs/own", data=b"o")],
         {"pathWhitelist": ["/etc/../../../../tmp/xyz/canary/file", "/own"]})),
     None),
    ("dependency_whitelist_dotdot", lambda up: layers(
        ("example.com/base", (), [member("rootfs/b", data=b"b")],
         {"pathWhitelist": ["/../../../tmp/xyz/canary", "/b"]}),
        ("example.com/app", ["example.com/base"], [member("rootfs/own", data=b"o")], {})),
     None),
]
NAMES = [c[0] for c in CASES]


@pytest.fixture
def canary():
    yield from canary_guard.guard()


def test_table_is_unique():
    assert len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize("case", CASES, ids=NAMES)
def test_hostile_image(case, canary, data_dir):
    name, builder, fragment = case
    with Store(data_dir) as store:
        # the extractor's archive root is cas/tmp/<work>/tree: reach the canary from there
        up = os.path.relpath(CANARY, os.path.join(store.dd.tmp, "work", "tree"))
        built = builder(up)
        try:
            if isinstance(built, bytes):
                store.import_stream(io.BytesIO(built), source=name, max_size=8 << 20)
            else:
                for layer_name, data in built:
                    store.import_stream(io.BytesIO(data), source=layer_name)
                tree = store.render(built[-1][0])
                _inside(tree["rootfs"])
        except errors.RocketError as e:
            assert fragment is not None, "%s: a harmless image was refused: %s" % (name, e)
            assert isinstance(e, errors.ImageError), "%s: %r is not an ImageError" % (name, e)
            assert re.search(fragment, str(e)), "%s: %r does not match %r" % (name, str(e), fragment)
        else:
            assert fragment is None, "%s was accepted" % name
        assert os.listdir(store.dd.tmp) == [], "cas/tmp is not empty"
        assert store_gc.check(store) == []


def _inside(rootfs):
    """Every symlink a render kept is still a symlink, and nothing under it is a mount."""
    for dirpath, dirnames, filenames in os.walk(rootfs):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            assert os.path.realpath(p).startswith(rootfs + "/") or os.path.islink(p), p


# Single archives applied as a layer over an existing root (aci.extract_layer, what a render
# does for each dependency): the same refusals, the same messages.
LAYER_CASES = [c for c in CASES if c[0] in (
    "dotdot_to_canary", "abs_canary", "symlink_abs_then_write", "symlink_dotdot_chain", "pax_linkpath_then_write",
    "hardlink_etc_passwd", "hardlink_to_symlink", "gnu_long_link_outside", "trusted_overlay_opaque", "bad_checksum")]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c[0] for c in LAYER_CASES])
def test_hostile_layer(case, canary, tmp_path):
    name, builder, fragment = case
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "lower").write_bytes(b"from a lower layer")
    with pytest.raises(errors.ImageError) as e:
        aci.extract_layer(io.BytesIO(builder(os.path.relpath(CANARY, str(tmp_path)))), str(rootfs))
    assert re.search(fragment, str(e.value)), "%s: %r does not match %r" % (name, str(e.value), fragment)
