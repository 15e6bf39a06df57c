"""The content-addressable image store: import, look up, render, remove.

Layout and crash-safety rules are in DESIGN.md. In short: an import works in ``cas/tmp``
under a lock of its own, and only at the end, under the image's key lock, renames the blob,
manifest and tree into place and commits the index row. The index row is what makes an
image exist; files without one are garbage that gc and the store check remove.

Deviation from rkt, on purpose: the blob is the archive as received (compressed when it was
compressed), not the uncompressed tar. The image ID is still the SHA-512 of the
uncompressed tar, computed in the same pass; keeping the compressed bytes halves what an
import writes and what the store occupies, and the tree is rendered during that same pass.
"""
from __future__ import annotations

import errno
import os
import time
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, BinaryIO, Dict, Iterable, List, Optional, Tuple

from . import schema
from . import crashpoint
from .datadir import DataDir
from .errors import AmbiguousError, ImageError, InUseError, NotFoundError, RocketError, StoreError
from .fsutil import atomic_write, fsync_dir, read_small, remove_tree, syncfs
from .index import Index
from .locks import Lock, locked, try_locked
from .tree import apply_path_whitelist, tree_digest, tree_key

IMAGE_ID_PREFIX = "sha512-"


class Work:
    """A private directory in ``cas/tmp``, locked for as long as its owner lives.

    The lock lets a later process tell a crashed import's leftovers (lock free: delete)
    from a live import's work (lock held: never touch).
    """

    def __init__(self, tmp_dir: str, kind: str) -> None:
        for dummy in range(100):
            name = "%s-%d-%s" % (kind, os.getpid(), os.urandom(6).hex())
            lock_path = os.path.join(tmp_dir, name + ".lock")
            try:
                fd = os.open(lock_path, os.O_RDONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
            except FileExistsError:
                continue
            lock = Lock.__new__(Lock)
            lock.path, lock.fd = lock_path, fd
            if not lock.exclusive(block=False):
                lock.close()
                continue
            # A cleaner may have unlinked the lock between creation and flock: then retry.
            try:
                if os.stat(lock_path).st_ino != os.fstat(fd).st_ino:
                    raise FileNotFoundError
            except FileNotFoundError:
                lock.close()
                continue
            self.lock = lock
            self.path = os.path.join(tmp_dir, name)
            os.mkdir(self.path, 0o700)
            return
        raise StoreError("cannot create a work directory in %s" % tmp_dir)

    def cleanup(self) -> None:
        try:
            remove_tree(self.path)
        finally:
            try:
                os.unlink(self.lock.path)
            except FileNotFoundError:
                pass
            self.lock.close()


def clean_tmp(tmp_dir: str) -> List[str]:
    """Remove what crashed imports left in ``cas/tmp``; never a live one's work."""
    removed: List[str] = []
    try:
        names = os.listdir(tmp_dir)
    except FileNotFoundError:
        return removed
    locks = {n[:-5] for n in names if n.endswith(".lock")}
    for base in sorted(locks):
        lock = try_locked(os.path.join(tmp_dir, base + ".lock"))
        if lock is None:
            continue  # a live process holds it
        try:
            remove_tree(os.path.join(tmp_dir, base))
            os.unlink(lock.path)
            removed.append(base)
        finally:
            lock.close()
    for n in names:
        if n.endswith(".lock") or n in locks:
            continue
        # Work without a lock file: its owner was found dead by another cleaner.
        remove_tree(os.path.join(tmp_dir, n))
        removed.append(n)
    return removed


def _stat_key(st: os.stat_result) -> str:
    return "%d:%d:%d:%d:%d" % (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _public(rec: Dict[str, Any], manifest: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    out = {k: rec.get(k) for k in ("id", "name", "labels", "size", "blob_size", "compression",
                                   "import_time", "last_used", "source")}
    if manifest is not None:
        out["manifest"] = manifest
    return out


class Store:
    """The image store under ``data_dir``; cheap to construct, opens the index lazily."""

    def __init__(self, data_dir: Optional[str] = None, create: bool = True) -> None:
        self.dd = DataDir(data_dir)
        if create:
            self.dd.ensure()
        elif not self.dd.exists():
            raise NotFoundError("no appc.rocket data directory at %s" % self.dd.path)
        else:
            self.dd.check_format()
        self._index: Optional[Index] = None

    @property
    def index(self) -> Index:
        if self._index is None:
            self._index = Index(self.dd.index_path)
        return self._index

    def close(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def store_lock(self, exclusive: bool) -> Lock:
        """Shared by whatever adds to or reads the store, exclusive for whatever removes from it."""
        return locked(self.dd.lock_path("store"), exclusive=exclusive)

    def _key_lock(self, key: str) -> Lock:
        return locked(self.dd.lock_path("key-" + key), exclusive=True)

    # -- lookup --------------------------------------------------------------------------
    def get(self, ref: str) -> Dict[str, Any]:
        """An image by full ID or unambiguous prefix (``sha512-`` + at least 2 hex digits)."""
        ref = schema.parse_image_id(ref, "id", allow_prefix=True)
        if len(ref) == len(IMAGE_ID_PREFIX) + 128:
            rec = self.index.get_image(ref)
            if rec is None:
                raise NotFoundError("no image %s in the store %s" % (ref, self.dd.path))
            return rec
        found = self.index.images_with_prefix(ref)
        if not found:
            raise NotFoundError("no image matches the prefix %s in the store %s" % (ref, self.dd.path))
        if len(found) > 1:
            ids = [r["id"] for r in found]
            raise AmbiguousError("image prefix %s is ambiguous: it matches %s" % (ref, ", ".join(ids)), ids)
        return found[0]

    def find(self, name: str, labels: Optional[Dict[str, str]] = None) -> Dict[str, Any]:
        """An image by name and labels: the label match; ``latest`` first, else the newest."""
        matches = self.find_all(name, labels)
        if not matches:
            want = schema.format_image_reference(name, labels or {})
            raise NotFoundError("no image %s in the store %s" % (want, self.dd.path))
        return matches[0]

    def find_all(self, name: str, labels: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
        schema.validate_ac_identifier(name, "name")
        labels = labels or {}
        out = [r for r in self.index.images_named(name)
               if all(r["labels"].get(k) == v for k, v in labels.items())]
        out.sort(key=lambda r: (r["labels"].get("version") != "latest" if "version" not in labels else False,
                                -r["import_time"]))
        return out

    def resolve(self, ref: str) -> Dict[str, Any]:
        """An image by ID, ID prefix, ``name[:version][,label=value...]`` or ``docker://...``
        (the image that registry reference gave when it was last pulled)."""
        if ref.startswith(IMAGE_ID_PREFIX):
            return self.get(ref)
        if ref.startswith("docker://"):
            from . import registry_pull

            rec = registry_pull.stored(self, ref)
            if rec is None:
                raise NotFoundError("image %s has not been pulled into the store %s" % (ref, self.dd.path))
            return rec
        name, labels = schema.parse_image_reference(ref)
        return self.find(name, labels)

    def list(self, prefix: Optional[str] = None, name: Optional[str] = None,
             labels: Optional[Dict[str, str]] = None) -> List[Dict[str, Any]]:
        if prefix:
            prefix = schema.parse_image_id(prefix, "id", allow_prefix=True)
            recs = self.index.images_with_prefix(prefix)
        else:
            recs = self.index.all_images()
        if name:
            recs = [r for r in recs if r["name"] == name]
        if labels:
            recs = [r for r in recs if all(r["labels"].get(k) == v for k, v in labels.items())]
        return recs

    def manifest(self, image_id: str) -> Dict[str, Any]:
        try:
            raw = read_small(self.dd.manifest_path(image_id), 1 << 20)
        except OSError as e:
            raise StoreError("cannot read the manifest of %s: %s" % (image_id, e.strerror or e))
        return schema.parse_image_manifest(raw)

    def describe(self, rec: Dict[str, Any], with_manifest: bool = True) -> Dict[str, Any]:
        return _public(rec, self.manifest(rec["id"]) if with_manifest else None)

    # -- import --------------------------------------------------------------------------
    def import_file(self, path: str, allow_devices: bool = False,
                    max_size: Optional[int] = None) -> Tuple[Dict[str, Any], bool]:
        """Import a local ACI; returns (record, changed). Re-importing is a cheap no-op."""
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError as e:
            raise ImageError("cannot read %s: %s" % (path, e.strerror or e))
        known = self.index.source_image(path, _stat_key(st))
        if known:
            rec = self.index.get_image(known)
            if rec is not None:
                return rec, False
        try:
            f = open(path, "rb")
        except OSError as e:
            raise ImageError("cannot read %s: %s" % (path, e.strerror or e))
        with f:
            rec, changed = self.import_stream(f, source=path, allow_devices=allow_devices, max_size=max_size)
        with self.index.transaction():
            self.index.set_source(path, _stat_key(st), rec["id"])
        return rec, changed

    def import_stream(self, src: BinaryIO, source: Optional[str] = None, allow_devices: bool = False,
                      max_size: Optional[int] = None,
                      extra: Optional[Dict[str, Any]] = None) -> Tuple[Dict[str, Any], bool]:
        """Import an ACI read from ``src`` (streamed once); returns (record, changed)."""
        clean_tmp(self.dd.tmp)
        work = Work(self.dd.tmp, "import")
        what = source or "the image"
        try:
            blob_tmp = os.path.join(work.path, "blob")
            tree_tmp = os.path.join(work.path, "tree")
            os.mkdir(tree_tmp, 0o700)
            with open(blob_tmp, "wb") as bf:
                from . import aci  # heavy: only the paths that read archives import it

                res = aci.import_aci(src, tree_tmp, blob=bf, max_size=max_size or aci.DEFAULT_MAX_SIZE,
                                     allow_devices=allow_devices)
                bf.flush()
                os.fsync(bf.fileno())
            manifest = res.manifest
            if manifest is None:  # import_aci refuses an archive without one: never here
                raise ImageError("%s has no manifest" % what)
            tree = None  # (its directory, its digest) when the image is its own tree
            if not manifest.get("dependencies") and not manifest.get("pathWhitelist"):
                # The extractor hashed every file it wrote and walked the result with
                # tree_digest's own code; only when it could not is the tree read again.
                digest = res.tree_digest or tree_digest(os.path.join(tree_tmp, "rootfs"))
                atomic_write(os.path.join(tree_tmp, "rendered"), (digest + "\n").encode(), 0o600)
                tree = (tree_tmp, digest)
            syncfs(work.path)
            crashpoint.hit("store.import.after_tmp_write")
            rec, changed = self._commit_import(res, blob_tmp, tree, source, extra)
            return dict(rec, skipped=[list(s) for s in res.skipped]), changed
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise StoreError("no space left on device in %s while importing %s; nothing was kept"
                                 % (self.dd.path, what))
            raise StoreError("importing %s failed: %s" % (what, e))
        finally:
            work.cleanup()

    def _commit_import(self, res: Any, blob_tmp: str, tree: Optional[Tuple[str, str]], source: Optional[str],
                       extra: Optional[Dict[str, Any]]) -> Tuple[Dict[str, Any], bool]:
        image_id = res.id
        with self.store_lock(exclusive=False), self._key_lock(image_id):
            existing = self.index.get_image(image_id)
            if existing is not None and os.path.exists(self.dd.blob_path(image_id)):
                return existing, False
            blob = self.dd.blob_path(image_id)
            os.makedirs(os.path.dirname(blob), 0o700, exist_ok=True)
            os.rename(blob_tmp, blob)
            fsync_dir(os.path.dirname(blob))
            crashpoint.hit("store.import.after_blob_rename")
            mpath = self.dd.manifest_path(image_id)
            os.makedirs(os.path.dirname(mpath), 0o700, exist_ok=True)
            atomic_write(mpath, res.manifest_bytes, 0o600)
            crashpoint.hit("store.import.after_manifest_write")
            if tree is not None:
                final = self.dd.tree_path(image_id)
                remove_tree(final)  # a leftover without an index row is garbage
                os.rename(tree[0], final)
                fsync_dir(self.dd.trees)
                crashpoint.hit("store.import.after_tree_rename")
            now = time.time()
            m = res.manifest
            rec = {"id": image_id, "name": m["name"], "labels": schema.labels_to_dict(m.get("labels") or []),
                   "size": res.size, "blob_size": res.compressed_size, "compression": res.compression,
                   "import_time": now, "last_used": now, "source": source}
            rec.update(extra or {})
            with self.index.transaction():
                self.index.add_image(rec)
                if tree is not None:
                    self.index.add_tree(image_id, image_id, [], tree[1])
            crashpoint.hit("store.import.after_index_update")
            added = self.index.get_image(image_id)
            if added is None:  # added under the key lock just above
                raise StoreError("image %s is missing from the index it was just added to" % image_id)
            return added, True

    def known_source(self, path: str) -> Optional[Dict[str, Any]]:
        """The image imported earlier from this very ACI file (same inode, size and times), if any.

        Costs a stat and an index read: no archive module is imported, nothing is hashed.
        """
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError:
            return None
        if not self.dd.exists():
            return None
        known = self.index.source_image(path, _stat_key(st))
        return self.index.get_image(known) if known else None

    def inspect_file(self, path: str) -> Dict[str, Any]:
        """What importing ``path`` would give (ID, name, labels, manifest), writing nothing.

        Check mode uses it: the archive is hashed and its manifest read, nothing extracted.
        """
        path = os.path.abspath(path)
        try:
            st = os.stat(path)
        except OSError as e:
            raise ImageError("cannot read %s: %s" % (path, e.strerror or e))
        if self.dd.exists():
            known = self.index.source_image(path, _stat_key(st))
            rec = self.index.get_image(known) if known else None
            if rec is not None:
                return dict(rec, present=True)
        with open(path, "rb") as f:
            from . import aci

            image_id, size, manifest = aci.inspect_aci(f)
        rec = self.index.get_image(image_id) if self.dd.exists() else None
        if rec is not None:
            return dict(rec, present=True)
        return {"id": image_id, "name": manifest["name"], "labels": schema.labels_to_dict(manifest.get("labels") or []),
                "size": size, "manifest": manifest, "present": False}

    # -- trees ---------------------------------------------------------------------------
    def dependency_chain(self, image_id: str) -> List[str]:
        """Resolved dependency IDs in layer order (depth-first, list order), each once."""
        chain: List[str] = []

        def visit(iid: str, stack: List[str]) -> None:
            m = self.manifest(iid)
            for i, dep in enumerate(m.get("dependencies") or []):
                want = dep.get("imageID")
                if want and want != schema.PLACEHOLDER_IMAGE_ID:
                    try:
                        rec = self.get(want)
                    except RocketError:
                        raise NotFoundError("dependency %s (%s) of %s is not in the store"
                                            % (dep["imageName"], want, m["name"]))
                    if rec["name"] != dep["imageName"]:
                        raise ImageError("dependency %s of %s: image %s is named %s"
                                         % (dep["imageName"], m["name"], want, rec["name"]))
                else:
                    try:
                        rec = self.find(dep["imageName"], schema.labels_to_dict(dep.get("labels") or []))
                    except NotFoundError:
                        raise NotFoundError("dependency %s of %s is not in the store"
                                            % (schema.format_image_reference(dep["imageName"], schema.labels_to_dict(dep.get("labels") or [])), m["name"]))
                did = rec["id"]
                if did in stack or did == iid:
                    names = [str((self.index.get_image(x) or {}).get("name", x)) for x in stack + [iid, did]]
                    raise ImageError("dependency cycle: %s" % " -> ".join(names))
                visit(did, stack + [iid])
                if did not in chain:
                    chain.append(did)

        visit(image_id, [])
        return chain

    def render(self, ref: str, allow_devices: bool = False) -> Dict[str, Any]:
        """The rendered tree of an image (rendering it once); ``{key, path, rootfs, ...}``."""
        # Shared store lock throughout: gc and removal must not delete a blob being read.
        with self.store_lock(exclusive=False):
            return self._render(ref, allow_devices)

    def _render(self, ref: str, allow_devices: bool) -> Dict[str, Any]:
        rec = self.get(ref) if ref.startswith(IMAGE_ID_PREFIX) else self.resolve(ref)
        image_id = rec["id"]
        chain = self.dependency_chain(image_id)
        key = tree_key(image_id, chain)
        t = self.index.get_tree(key)
        path = self.dd.tree_path(key)
        if t is not None and os.path.isfile(os.path.join(path, "rendered")):
            return dict(t, path=path, rootfs=os.path.join(path, "rootfs"))
        manifest = self.manifest(image_id)
        work = Work(self.dd.tmp, "render")
        try:
            tree_tmp = os.path.join(work.path, "tree")
            rootfs = os.path.join(tree_tmp, "rootfs")
            os.makedirs(rootfs, 0o755)
            for layer in chain + [image_id]:
                with open(self.dd.blob_path(layer), "rb") as f:
                    from . import aci

                    aci.extract_layer(f, rootfs, allow_devices=allow_devices)
            if manifest.get("pathWhitelist"):
                apply_path_whitelist(rootfs, manifest["pathWhitelist"])
            with open(self.dd.manifest_path(image_id), "rb") as f:
                atomic_write(os.path.join(tree_tmp, "manifest"), f.read(), 0o600)
            digest = tree_digest(rootfs)
            atomic_write(os.path.join(tree_tmp, "rendered"), (digest + "\n").encode(), 0o600)
            syncfs(work.path)
            crashpoint.hit("store.render.after_tmp_write")
            with self.store_lock(exclusive=False), self._key_lock(key):
                t = self.index.get_tree(key)
                if t is None or not os.path.isfile(os.path.join(path, "rendered")):
                    remove_tree(path)
                    os.rename(tree_tmp, path)
                    fsync_dir(self.dd.trees)
                    crashpoint.hit("store.render.after_tree_rename")
                    with self.index.transaction():
                        self.index.add_tree(key, image_id, chain, digest)
                    t = self.index.get_tree(key)
                    crashpoint.hit("store.render.after_index_update")
            if t is None:  # added under the key lock just above
                raise StoreError("tree %s is missing from the index it was just added to" % key)
            return dict(t, path=path, rootfs=os.path.join(path, "rootfs"))
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise StoreError("no space left on device in %s while rendering %s" % (self.dd.path, image_id))
            raise
        finally:
            work.cleanup()

    def verify_tree(self, key: str) -> bool:
        t = self.index.get_tree(key)
        if t is None:
            raise NotFoundError("no tree %s in the store" % key)
        rootfs = os.path.join(self.dd.tree_path(key), "rootfs")
        try:
            return tree_digest(rootfs) == t["digest"]
        except (OSError, StoreError):
            return False

    # -- references from pods ------------------------------------------------------------
    def pod_references(self) -> Dict[str, List[str]]:
        """Image IDs and tree keys used by pods: ``{id_or_key: [pod uuid, ...]}``.

        Each pod directory lists what it uses in a ``refs`` file (``image <id>`` and
        ``tree <key>`` lines) written when it is prepared.
        """
        refs: Dict[str, List[str]] = {}
        for state in os.listdir(self.dd.pods) if os.path.isdir(self.dd.pods) else []:
            sdir = os.path.join(self.dd.pods, state)
            try:
                uuids = os.listdir(sdir)
            except OSError:
                continue
            for uuid in uuids:
                try:
                    text = read_small(os.path.join(sdir, uuid, "refs"), 1 << 20).decode()
                except OSError:
                    continue
                for line in text.splitlines():
                    parts = line.split()
                    if len(parts) == 2:
                        refs.setdefault(parts[1], []).append(uuid)
        return refs

    # -- removal -------------------------------------------------------------------------
    def remove(self, ref: str, force: bool = False) -> Dict[str, Any]:
        """Remove an image, its manifest and every tree built from it."""
        rec = self.get(ref) if ref.startswith(IMAGE_ID_PREFIX) else self.resolve(ref)
        image_id = rec["id"]
        with self.store_lock(exclusive=True):
            trees = self.index.trees_using(image_id)
            refs = self.pod_references()
            users = sorted({u for k in [image_id] + trees for u in refs.get(k, [])})
            if users and not force:
                raise InUseError("image %s (%s) is used by pod(s) %s; use force to remove it anyway"
                                 % (rec["name"], image_id, ", ".join(users)))
            self.delete_image(image_id, trees)
            self.delete_unused_blobs()
        return rec

    def delete_unused_blobs(self) -> List[str]:
        """Delete the registry blobs (cas/oci/blobs) that no image lists; hold the store lock exclusively.

        Under the exclusive lock no pull is between landing a blob and committing the image
        that lists it (a pull holds the shared lock throughout), so what no row lists is garbage.
        """
        keep = self.index.blobs_in_use()
        removed: List[str] = []
        base = self.dd.oci_blobs
        for alg in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            for hexd in sorted(os.listdir(os.path.join(base, alg))):
                if "%s:%s" % (alg, hexd) not in keep:
                    remove_tree(os.path.join(base, alg, hexd))
                    removed.append("%s:%s" % (alg, hexd))
        return removed

    def delete_image(self, image_id: str, trees: Iterable[str]) -> None:
        """Forget an image and its trees, then delete their files; hold the store lock exclusively."""
        trees = list(trees)
        with self.index.transaction():
            self.index.remove_image(image_id)
            for k in trees:
                self.index.remove_tree(k)
        crashpoint.hit("store.remove.after_index_update")
        for k in trees:
            self.delete_tree_files(k)
        for p in (self.dd.manifest_path(image_id), self.dd.blob_path(image_id)):
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    def delete_tree_files(self, key: str) -> None:
        """Delete a tree's files, unmarking it first; the index entry is the caller's."""
        path = self.dd.tree_path(key)
        try:
            os.unlink(os.path.join(path, "rendered"))  # first: a half-removed tree is never "rendered"
            crashpoint.hit("store.remove.after_tree_unmark")
        except FileNotFoundError:
            pass
        remove_tree(path)
