"""ACI archives: import, inspect and extract them in two processes; the public API.

An image is untrusted input. Importing it is one streaming pass over the archive, split in
two processes the way runc splits parent and child, so that decompression+hashing and
extraction use both cores and the code that writes files runs confined:

- aci_scan.py, in this process: decompression with a bounded output size, and the tar-header
  scanner that refuses what could make the extractor buffer a lot or disagree with us about
  member boundaries, before the bytes reach the child;
- aci.py (this file), in this process: reads the raw bytes (copying them to the blob if
  asked), hashes the uncompressed tar stream (the image ID) and pumps the scanner's frames
  into the child through a pipe, then reads its report;
- aci_extract.py, in a forked child chrooted into the destination: writes the members
  (numeric owners, no symlink ever followed) and reports as one JSON line;
- aci_build.py: building an archive from a tree (``build_aci``), deterministic.

Callers import this module: ``build_aci``, ``sniff_compression`` and ``DEFAULT_MAX_SIZE``
are available here too. Standard library only; never imports ansible.
"""
import errno
import fcntl
import hashlib
import io
import json
import os
import queue
import stat
import threading
from typing import Any, BinaryIO, Dict, List, Optional, Tuple

from . import errors, schema
from .aci_build import build_aci
from .aci_extract import ACI_LAYER, IMAGE, MODES, OCI_LAYER, run_child, write_all
from .aci_scan import CHUNK, COMPRESSIONS, DEFAULT_MAX_SIZE, Inflater, Readable, TarScanner, sniff_compression
from .errors import ImageError

__all__ = ["DEFAULT_MAX_SIZE", "ImportResult", "build_aci", "extract_layer", "extract_oci_layer",
           "image_id_of", "import_aci", "inspect_aci", "sniff_compression"]

_PIPE_SIZE = 1 << 20      # ask the kernel for a big pipe: fewer context switches
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)   # Python < 3.10 lacks the name


class ImportResult:
    """What an import produced; ``id`` names the uncompressed tar stream."""

    __slots__ = ("id", "size", "compressed_size", "compression", "manifest", "manifest_bytes",
                 "skipped", "tree_digest")

    def __init__(self, id: str, size: int, compressed_size: int, compression: str,
                 manifest: Optional[dict], manifest_bytes: bytes,
                 skipped: List[Tuple[str, str]]) -> None:
        self.id = id
        self.size = size
        self.compressed_size = compressed_size
        self.compression = compression
        self.manifest = manifest
        self.manifest_bytes = manifest_bytes
        self.skipped = skipped
        # tree.tree_digest of dest/rootfs as the extractor computed it (import only), or None
        self.tree_digest: Optional[str] = None

    def __repr__(self) -> str:
        return "ImportResult(id=%r, size=%d, compression=%r, skipped=%d)" % (
            self.id, self.size, self.compression, len(self.skipped))


def _read_head(src: Readable) -> bytes:
    head = b""
    while len(head) < 512:
        b = src.read(CHUNK if not head else 512 - len(head))
        if not b:
            break
        head += b
    return head


class _Pump(threading.Thread):
    """Second stage of the parent: hash, scan and frame the uncompressed stream, feed the child.

    The first stage (the caller's thread) reads and decompresses; zlib/bz2/lzma and sha512
    release the GIL on big buffers, so the two stages use two cores. Errors are kept for the
    caller, which checks ``error`` / ``child_gone`` between chunks and raises in order.
    """

    def __init__(self, fd: int, scanner: TarScanner, h: "hashlib._Hash") -> None:
        super().__init__(name="aci-pump", daemon=True)
        self.fd = fd
        self.scanner = scanner
        self.h = h
        self.q: "queue.Queue[Optional[bytes]]" = queue.Queue(maxsize=8)
        self.error: Optional[BaseException] = None
        self.child_gone = False
        self.abort = False

    def run(self) -> None:
        q, h, scanner, fd = self.q, self.h, self.scanner, self.fd
        while True:
            out = q.get()
            if out is None:
                return
            if self.error is not None or self.abort:
                continue      # drain until the end marker
            try:
                h.update(out)
                scanner.feed(out)
                pieces = scanner.take()
                if not self.child_gone:
                    for p in pieces:
                        write_all(fd, p)
            except BrokenPipeError:
                self.child_gone = True   # it stopped on an error: the caller reads it
            except BaseException as e:  # noqa: B902 - handed to the caller
                self.error = e

    def put(self, out: bytes) -> None:
        self.q.put(out)

    def stop(self) -> None:
        """End of input: wait until everything queued is processed."""
        self.q.put(None)
        self.join()

    def cancel(self) -> None:
        self.abort = True
        while True:
            try:
                self.q.get_nowait()
            except queue.Empty:
                break
        self.q.put(None)
        self.join()


class _BlobCopy(threading.Thread):
    """Copies a regular source file to the blob off the hot loop (copy_file_range).

    Its own fds and explicit offsets: neither the caller's file positions nor its buffers
    are involved. ``finish`` then proves the bytes copied are the bytes hashed: the file's
    size, mtime and ctime did not move during the import and the lengths agree.
    """

    @classmethod
    def maybe(cls, src: Readable, blob: BinaryIO) -> "Optional[_BlobCopy]":
        if not isinstance(src, (io.BufferedReader, io.FileIO)) or \
                (isinstance(src, io.BufferedReader) and not isinstance(src.raw, io.FileIO)):
            return None
        try:
            sfd, bfd = src.fileno(), blob.fileno()
            st = os.fstat(sfd)
            if not stat.S_ISREG(st.st_mode) or not stat.S_ISREG(os.fstat(bfd).st_mode):
                return None
            start = src.tell()
            blob.flush()
            dst = blob.tell()
        except (OSError, ValueError, AttributeError, io.UnsupportedOperation):
            return None
        if start > st.st_size:
            return None
        return cls(sfd, st, start, bfd, dst, getattr(src, "name", None))

    def __init__(self, sfd: int, st: os.stat_result, start: int, bfd: int, dst: int, name: Any) -> None:
        super().__init__(name="aci-blob", daemon=True)
        self.st = st
        self.start_at = start
        self.length = st.st_size - start
        self.dst = dst
        self.name = name if isinstance(name, str) else "the image file"
        self.copied = 0
        self.error: Optional[BaseException] = None
        self.abort = False
        self.sfd = os.dup(sfd)
        try:
            self.bfd = os.dup(bfd)
        except OSError:
            os.close(self.sfd)
            raise

    def run(self) -> None:
        try:
            cfr = getattr(os, "copy_file_range", None)
            while self.copied < self.length and not self.abort:
                n = min(self.length - self.copied, 8 << 20)
                so, do = self.start_at + self.copied, self.dst + self.copied
                k = -1
                if cfr is not None:
                    try:
                        k = cfr(self.sfd, self.bfd, n, so, do)
                    except OSError as e:
                        if e.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP,
                                           errno.ENOTSUP, errno.EBADF, errno.EPERM):
                            raise
                        cfr = None
                if k < 0:
                    buf = os.pread(self.sfd, min(n, CHUNK), so)
                    k = len(buf)
                    mv = memoryview(buf)
                    while mv:
                        w = os.pwrite(self.bfd, mv, do)
                        mv, do = mv[w:], do + w
                if k == 0:
                    break     # the file shrank: finish() says so
                self.copied += k
            if not self.abort:
                # Start the blob's write-back now, while extraction goes on: the caller's
                # fsync then finds little left to do.
                os.fdatasync(self.bfd)
        except BaseException as e:  # noqa: B902 - handed to the caller
            self.error = e

    def finish(self, hashed: int, blob: BinaryIO) -> None:
        """Wait for the copy; raise if it failed or the source changed under us."""
        self.join()
        try:
            if self.error is not None:
                raise self.error
            st = os.fstat(self.sfd)
            before = (self.st.st_size, self.st.st_mtime_ns, self.st.st_ctime_ns)
            if (st.st_size, st.st_mtime_ns, st.st_ctime_ns) != before or \
                    self.copied != self.length or hashed != self.length:
                raise ImageError("%s changed while it was imported" % self.name)
            blob.seek(self.dst + self.copied)
        finally:
            self.close()

    def cancel(self) -> None:
        self.abort = True
        if self.ident is not None:
            self.join()
        self.close()

    def close(self) -> None:
        if self.sfd >= 0:
            os.close(self.sfd)
            os.close(self.bfd)
            self.sfd = self.bfd = -1


class _NoSpace(errors.StoreError, OSError):
    """The disk filled up under the extractor. Also an OSError(ENOSPC): whichever writer hit
    the full disk first (the extractor or the blob copy running beside it), the caller sees
    the same error."""


def _extract(src: Readable, dest: str, *, mode: str, blob: Optional[BinaryIO] = None, max_size: int,
             allow_devices: bool, compression: Optional[str] = None) -> ImportResult:
    """Check the target, start the blob copy, and run the two processes over ``src``.

    ``mode`` (aci_extract.MODES) says what is written: an image into an empty ``dest``, or
    an ACI or OCI layer over the tree there.
    """
    if mode not in MODES:
        raise ValueError("extraction mode must be one of %s" % ", ".join(MODES))
    if not os.path.isdir(dest):
        raise errors.StoreError("extraction target %s is not a directory" % dest)
    if mode == IMAGE and os.listdir(dest):
        raise errors.StoreError("extraction target %s is not empty" % dest)
    copier = _BlobCopy.maybe(src, blob) if blob is not None else None
    try:
        return _stream_to_child(src, dest, mode=mode, blob=blob, copier=copier, max_size=max_size,
                                allow_devices=allow_devices, compression=compression)
    finally:
        if copier is not None:
            copier.cancel()   # no-op after finish()


def _stream_to_child(src: Readable, dest: str, *, mode: str, blob: Optional[BinaryIO],
                     copier: "Optional[_BlobCopy]", max_size: int, allow_devices: bool,
                     compression: Optional[str]) -> ImportResult:
    """Fork the extractor, pump the archive into it, and turn its report into a result."""
    layer = mode != IMAGE
    head = _read_head(src)
    if not head:
        raise ImageError("not an ACI: empty file")
    kind = sniff_compression(head) if compression is None else compression
    if kind not in COMPRESSIONS:
        raise ValueError("compression must be one of %s" % ", ".join(COMPRESSIONS))
    inflater = Inflater(kind)
    scanner = TarScanner(max_size, frames=True)
    h = hashlib.sha512()
    size = csize = 0

    data_r, data_w = os.pipe()
    try:
        res_r, res_w = os.pipe()
    except OSError:
        os.close(data_r)
        os.close(data_w)
        raise
    for fd in (data_r, data_w, res_r, res_w):
        os.set_inheritable(fd, False)
    try:
        fcntl.fcntl(data_w, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        pass
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child, leaves by os._exit
        try:
            os.close(data_w)
            os.close(res_r)
        finally:
            run_child(data_r, res_w, dest, mode=mode, allow_devices=allow_devices)
    os.close(data_r)
    os.close(res_w)
    reaped = False
    pump = _Pump(data_w, scanner, h)
    pumping = False
    try:
        if copier is not None:
            copier.start()
        pump.start()
        pumping = True
        chunk = head
        try:
            while chunk:
                csize += len(chunk)
                if blob is not None and copier is None:
                    blob.write(chunk)
                for out in inflater.feed(chunk):
                    size += len(out)
                    if size > max_size:
                        raise ImageError("uncompressed size exceeds %d bytes (max_size)" % max_size)
                    pump.put(out)
                if pump.error is not None or pump.child_gone:
                    break
                chunk = src.read(CHUNK)
            if pump.error is None and not pump.child_gone:
                inflater.finish()
        except ImageError:
            # An error later in the stream must not hide one the pump finds earlier in it.
            pump.stop()
            pumping = False
            if pump.error is not None:
                raise pump.error from None
            raise
        pump.stop()
        pumping = False
        if pump.error is not None:
            raise pump.error
        child_gone = pump.child_gone
        if not child_gone:
            scanner.finish()
        os.close(data_w)
        data_w = -1
        raw = _read_all(res_r)
        dummy_pid, status = os.waitpid(pid, 0)
        reaped = True
        msg = _parse_report(raw, status)
        if not msg.get("ok"):
            text = msg.get("error") or "extraction failed"
            if msg.get("kind") == "store" and msg.get("errno") == errno.ENOSPC:
                raise _NoSpace(errno.ENOSPC, text)
            if msg.get("kind") in ("setup", "store"):
                raise errors.StoreError(text)
            raise ImageError(text)
        if child_gone:  # pragma: no cover - the child reads to the end marker
            raise ImageError("extraction ended before the archive did")
        if msg.get("members") != scanner.members:
            raise ImageError("tar: the archive's members could not be read consistently "
                             "(%s extracted, %d headers)" % (msg.get("members"), scanner.members))
        if copier is not None and blob is not None:   # a copier is made only for a blob
            copier.finish(csize, blob)
        manifest_bytes = msg["manifest"].encode("latin-1")
        manifest = None
        if not layer:
            try:
                manifest = schema.parse_image_manifest(manifest_bytes)
            except errors.ValidationError as e:
                raise ImageError("manifest: %s" % e) from None
        res = ImportResult("sha512-" + h.hexdigest(), size, csize, kind, manifest, manifest_bytes,
                           [tuple(pair) for pair in msg.get("skipped") or []])  # JSON lists -> pairs
        res.tree_digest = msg.get("digest") if not layer else None
        return res
    finally:
        if not reaped:
            try:
                os.kill(pid, 9)   # also unblocks a pump writing to it (EPIPE)
            except OSError:
                pass
        if pumping:
            pump.cancel()
        if data_w >= 0:
            os.close(data_w)
        if not reaped:
            while True:
                try:
                    os.waitpid(pid, 0)
                    break
                except ChildProcessError:
                    break
                except InterruptedError:  # pragma: no cover
                    continue
        os.close(res_r)


def _read_all(fd: int) -> bytes:
    parts: List[bytes] = []
    while True:
        b = os.read(fd, 1 << 16)
        if not b:
            return b"".join(parts)
        parts.append(b)


def _parse_report(raw: bytes, status: int) -> Dict[str, Any]:
    try:
        msg = json.loads(raw.decode("utf-8", "surrogateescape").splitlines()[0])
        if isinstance(msg, dict):
            return msg
    except (ValueError, IndexError):
        pass
    if os.WIFSIGNALED(status):
        why = "was killed by signal %d" % os.WTERMSIG(status)
    else:
        why = "exited with status %d" % os.WEXITSTATUS(status)
    return {"ok": False, "kind": "internal", "error": "the extraction process %s without a report" % why}


def import_aci(src: Readable, dest: str, *, blob: Optional[BinaryIO] = None,
               max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> ImportResult:
    """Import an ACI read once from ``src`` into the empty directory ``dest``.

    ``dest`` receives ``manifest`` and ``rootfs/``; ``blob`` (if given) the archive bytes as
    received. On error ``dest`` may hold a partial tree: the caller removes it (nothing is
    ever written outside it). Needs root (chroot, chown, mknod).
    """
    return _extract(src, dest, mode=IMAGE, blob=blob, max_size=max_size, allow_devices=allow_devices)


def extract_layer(src: Readable, dest_rootfs: str, *, compression: Optional[str] = None,
                  max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> None:
    """Extract an ACI's ``rootfs/`` over an existing root filesystem (rendering layers).

    Later layers win: an existing node is replaced by the member at its path (a symlink is
    replaced, never followed); a directory over a directory merges.
    """
    _extract(src, dest_rootfs, mode=ACI_LAYER, max_size=max_size, allow_devices=allow_devices,
             compression=compression)


def extract_oci_layer(src: Readable, dest_rootfs: str, *, compression: Optional[str] = None,
                      max_size: int = DEFAULT_MAX_SIZE, allow_devices: bool = False) -> ImportResult:
    """Apply an OCI / Docker layer tar over a root filesystem; whiteouts honoured.

    Same confined child and the same rules as ACI extraction (names, symlinks, hard links
    within the layer, devices, xattrs, sizes); member names have no ``rootfs/`` prefix and
    there is no manifest. ``skipped`` lists devices not created and AUFS metadata. The
    directory mtimes this layer did not describe are kept, so flattening is reproducible.
    """
    return _extract(src, dest_rootfs, mode=OCI_LAYER, max_size=max_size, allow_devices=allow_devices,
                    compression=compression)


def image_id_of(src: Readable) -> str:
    """``sha512-`` + hex digest of the uncompressed stream of an archive."""
    return _hash_stream(src, None)[0]


def inspect_aci(src: Readable, *, max_size: int = DEFAULT_MAX_SIZE) -> Tuple[str, int, dict]:
    """(image ID, uncompressed size, validated manifest) without extracting anything."""
    scanner = TarScanner(max_size, capture_manifest=True)
    image_id, size = _hash_stream(src, scanner)
    if scanner.manifest_error:
        raise ImageError(scanner.manifest_error)
    if scanner.manifest_bytes is None:
        raise ImageError("manifest: missing (an ACI holds exactly manifest and rootfs/)")
    try:
        manifest = schema.parse_image_manifest(scanner.manifest_bytes)
    except errors.ValidationError as e:
        raise ImageError("manifest: %s" % e) from None
    return image_id, size, manifest


def _hash_stream(src: Readable, scanner: Optional[TarScanner]) -> Tuple[str, int]:
    head = _read_head(src)
    if not head:
        raise ImageError("not an ACI: empty file")
    inflater = Inflater(sniff_compression(head))
    h = hashlib.sha512()
    size = 0
    chunk = head
    while chunk:
        for out in inflater.feed(chunk):
            size += len(out)
            if scanner is not None:
                if size > scanner.max_size:
                    raise ImageError("uncompressed size exceeds %d bytes (max_size)" % scanner.max_size)
                scanner.feed(out)
            h.update(out)
        chunk = src.read(CHUNK)
    inflater.finish()
    if scanner is not None:
        scanner.finish()
    return "sha512-" + h.hexdigest(), size
