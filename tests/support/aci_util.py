"""Hand-made tar archives for the ACI tests, including hostile ones tarfile would not write."""
import hashlib
import io
import json
import tarfile

MANIFEST = {"acKind": "ImageManifest", "acVersion": "0.8.11", "name": "example.com/t"}
MANIFEST_BYTES = json.dumps(MANIFEST).encode()
END = b"\0" * 1024


def header(name, kind="file", size=0, fmt=tarfile.PAX_FORMAT, **attrs):
    """One header block (plus any pax/GNU extension blocks) as bytes."""
    ti = tarfile.TarInfo(name)
    ti.type = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "sym": tarfile.SYMTYPE,
               "link": tarfile.LNKTYPE, "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE,
               "blk": tarfile.BLKTYPE}.get(kind, kind)
    ti.size = size
    ti.mode = attrs.pop("mode", 0o755 if kind == "dir" else 0o644)
    for k, v in attrs.items():
        setattr(ti, k, v)
    return ti.tobuf(fmt, "utf-8", "surrogateescape")


def pad(data):
    return data + b"\0" * (-len(data) % 512)


def member(name, kind="file", data=b"", **attrs):
    return header(name, kind, len(data) if kind == "file" else 0, **attrs) + (pad(data) if kind == "file" else b"")


def aci_tar(*members, manifest=MANIFEST_BYTES, rootfs=True, end=True):
    """manifest + rootfs/ + members (each bytes from member()/header() or raw) + end marker."""
    out = b""
    if manifest is not None:
        out += member("manifest", data=manifest)
    if rootfs:
        out += member("rootfs", "dir")
    out += b"".join(members)
    return out + (END if end else b"")


def sha(data):
    return "sha512-" + hashlib.sha512(data).hexdigest()


def compress(data, kind):
    if kind == "gzip":
        import gzip
        return gzip.compress(data, mtime=0)
    if kind == "bzip2":
        import bz2
        return bz2.compress(data)
    if kind == "xz":
        import lzma
        return lzma.compress(data)
    return data


def src(data):
    return io.BytesIO(data)
