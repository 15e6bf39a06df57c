"""The seed corpus of the archive fuzzers: hand-crafted tar bytes the fuzzers start from
and mutate. Each seed exercises one tricky corner of the tar format an extractor must get
right: pax ``path=``/``linkpath=`` records, GNU long names and long links, sparse members
(old GNU and pax 0.1/1.0), bad checksums, global headers, and name tricks.
"""
import tarfile

from tests.support.aci_util import aci_tar, header, member, pad

CANARY = "/tmp/xyz/canary"


def _checksum_broken(data: bytes, at: int) -> bytes:
    b = bytearray(data)
    b[at + 148] ^= 0x11  # inside the chksum field
    return bytes(b)


def _pax_record(key: str, value: str) -> bytes:
    body = " %s=%s\n" % (key, value)
    n = len(body) + 1
    while len(str(n)) + len(body) != n:
        n = len(str(n)) + len(body)
    return ("%d%s" % (n, body)).encode()


def _ext(kind: bytes, payload: bytes, name: str = "././@PaxHeader") -> bytes:
    """A pax ('x', 'g') or GNU ('L', 'K') extension header with its payload."""
    fmt = tarfile.GNU_FORMAT if kind in (b"L", b"K") else tarfile.USTAR_FORMAT
    return header(name, kind, size=len(payload), fmt=fmt) + pad(payload)


def _old_gnu_sparse(name: str) -> bytes:
    """An old-GNU sparse member ('S'): one 512-byte data chunk at offset 0 of a 4 KiB file."""
    ti = tarfile.TarInfo(name)
    ti.type = tarfile.GNUTYPE_SPARSE
    ti.size = 512
    block = bytearray(ti.tobuf(tarfile.GNU_FORMAT))
    block[386:398] = b"%011o\0" % 0        # sparse[0].offset
    block[398:410] = b"%011o\0" % 512      # sparse[0].numbytes
    block[483:495] = b"%011o\0" % 4096     # realsize
    block[148:156] = b"        "
    block[148:156] = b"%06o\0 " % sum(block[:512])
    return bytes(block) + b"s" * 512


def seeds() -> dict:
    long_name = "rootfs/" + "long/" * 30 + "file"
    return {
        "plain": aci_tar(member("rootfs/etc", "dir"), member("rootfs/etc/hostname", data=b"fuzz\n"),
                         member("rootfs/bin", "sym", linkname="usr/bin")),
        "pax_path": aci_tar(member("rootfs/short", data=b"p", pax_headers={"path": "rootfs/via/pax/" + "x" * 120})),
        "pax_path_dotdot": aci_tar(member("rootfs/ok", data=b"p", pax_headers={"path": "rootfs/../../../tmp/xyz/x"})),
        "pax_linkpath": aci_tar(member("rootfs/l", "sym", linkname="t", pax_headers={"linkpath": CANARY})),
        "pax_linkpath_then_write": aci_tar(member("rootfs/l", "sym", linkname="t", pax_headers={"linkpath": CANARY}),
                                           member("rootfs/l/pwned", data=b"x")),
        "pax_raw_records": aci_tar(_ext(b"x", _pax_record("path", "rootfs/raw") + _pax_record("mtime", "1.5"))
                                   + header("rootfs/ignored", size=1) + pad(b"r")),
        "pax_global": aci_tar(_ext(b"g", _pax_record("path", "rootfs/global"), "././@GlobalHead")
                              + member("rootfs/g", data=b"g")),
        "gnu_long_name": aci_tar(member(long_name, data=b"long", fmt=tarfile.GNU_FORMAT)),
        "gnu_long_link": aci_tar(member("rootfs/target", data=b"t"),
                                 member("rootfs/h", "link", linkname="rootfs/" + "t/../" * 30 + "target",
                                        fmt=tarfile.GNU_FORMAT)),
        "gnu_long_symlink": aci_tar(member("rootfs/s", "sym", linkname="/" + "a/" * 80, fmt=tarfile.GNU_FORMAT)),
        "gnu_raw_long_name_dotdot": aci_tar(_ext(b"L", b"rootfs/../../x\0", "././@LongLink")
                                            + header("rootfs/placeholder", size=1, fmt=tarfile.GNU_FORMAT)
                                            + pad(b"x")),
        "gnu_sparse_old": aci_tar(_old_gnu_sparse("rootfs/sparse")),
        "pax_sparse_01": aci_tar(member("rootfs/sp", data=b"d" * 512, pax_headers={
            "GNU.sparse.size": "4096", "GNU.sparse.numblocks": "1", "GNU.sparse.offset": "0",
            "GNU.sparse.numbytes": "512"})),
        "pax_sparse_10": aci_tar(member("rootfs/GNUSparseFile.0/sp", data=b"1\n0\n512\n".ljust(512, b"\0") + b"d" * 512,
                                        pax_headers={"GNU.sparse.major": "1", "GNU.sparse.minor": "0",
                                                     "GNU.sparse.name": "../../escaped", "GNU.sparse.realsize": "4096"})),
        "bad_checksum_first": _checksum_broken(aci_tar(member("rootfs/a", data=b"a")), 0),
        "bad_checksum_member": _checksum_broken(aci_tar(member("rootfs/a", data=b"a")), 1024),
        "symlink_chain": aci_tar(member("rootfs/a", "sym", linkname=".."), member("rootfs/a/b", "sym", linkname=".."),
                                 member("rootfs/a/b/c", data=b"x")),
        "hardlink_out": aci_tar(member("rootfs/h", "link", linkname="/etc/passwd")),
        "devices": aci_tar(member("rootfs/dev", "dir"), member("rootfs/dev/null", "chr", devmajor=1, devminor=3),
                           member("rootfs/fifo", "fifo")),
        "xattrs": aci_tar(member("rootfs/x", data=b"x", pax_headers={"SCHILY.xattr.user.k": "v",
                                                                     "SCHILY.xattr.trusted.overlay.opaque": "y"})),
        "duplicate": aci_tar(member("rootfs/f", data=b"1"), member("./rootfs//f", data=b"2")),
        "truncated": aci_tar(member("rootfs/a", data=b"a" * 3000))[:2200],
    }
