"""Store maintenance: garbage collection and the store check.

gc is rkt's image gc: trees no pod references and images unused for a grace period go.
The check re-hashes every blob and tree and finds what a crash or a disk left behind;
with ``repair`` it removes the broken entries (a removed tree is re-rendered on demand).
Both take the store lock exclusively, so they are safe against imports in flight.
"""
import os
import time
from typing import Any, Dict, List

from . import aci
from . import crashpoint
from .errors import ImageError, RocketError
from .fsutil import remove_tree
from .store import IMAGE_ID_PREFIX, Store, clean_tmp

DEFAULT_GRACE = 24 * 3600


def gc(store: Store, grace: float = DEFAULT_GRACE, images: bool = True, dry_run: bool = False) -> Dict[str, List[str]]:
    """Remove unreferenced trees and images unused for ``grace`` seconds."""
    report: Dict[str, List[str]] = {"trees": [], "images": [], "tmp": [], "files": [], "blobs": []}
    cutoff = time.time() - grace
    with store.store_lock(exclusive=True):
        report["tmp"] = [] if dry_run else clean_tmp(store.dd.tmp)
        crashpoint.hit("store_gc.gc.after_clean_tmp")
        refs = store.pod_references()
        idx = store.index
        doomed_images = set()
        if images:
            for rec in idx.all_images():
                if rec["last_used"] < cutoff and rec["id"] not in refs and \
                        not any(k in refs for k in idx.trees_using(rec["id"])):
                    doomed_images.add(rec["id"])
        for t in idx.all_trees():
            users_gone = t["key"] not in refs
            stale = t["last_used"] < cutoff
            if users_gone and (stale or t["image_id"] in doomed_images or set(t["deps"]) & doomed_images):
                report["trees"].append(t["key"])
        for image_id in sorted(doomed_images):
            report["images"].append(image_id)
        if dry_run:
            return report
        with idx.transaction():
            for k in report["trees"]:
                idx.remove_tree(k)
        crashpoint.hit("store_gc.gc.after_index_update")
        for k in report["trees"]:
            store.delete_tree_files(k)
        for image_id in report["images"]:
            store.delete_image(image_id, [])
        # What a crash left under a final name without its index row (or a removal that
        # died after dropping the row) is garbage too: gc must not need a check --repair.
        images_left = {r["id"] for r in idx.all_images()}
        trees_left = {t["key"] for t in idx.all_trees()}
        for path in _dangling(store, images_left, trees_left):
            remove_tree(path)
            report["files"].append(path)
        report["blobs"] = store.delete_unused_blobs()
    return report


def _dangling(store: Store, images: Any, trees: Any) -> List[str]:
    """Files without an index row: leftovers of a crash or of an interrupted removal.

    Only meaningful under the exclusive store lock: an import renames its files into place
    and commits their row under the shared one, so no commit is half done meanwhile.
    """
    dd = store.dd
    out = []
    for base in (dd.blobs, dd.manifests):
        for sub in sorted(os.listdir(base)) if os.path.isdir(base) else []:
            for n in sorted(os.listdir(os.path.join(base, sub))):
                if n not in images:
                    out.append(os.path.join(base, sub, n))
    for n in sorted(os.listdir(dd.trees)) if os.path.isdir(dd.trees) else []:
        if n not in trees:
            out.append(os.path.join(dd.trees, n))
    return out


def _corrupt_blobs(store: Store) -> List[Any]:
    """Registry blobs of the cache (cas/oci/blobs) whose content is not their digest."""
    import hashlib

    out = []
    base = store.dd.oci_blobs
    for alg in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        for hexd in sorted(os.listdir(os.path.join(base, alg))):
            digest = "%s:%s" % (alg, hexd)
            try:
                h = hashlib.new(alg)
                with open(os.path.join(base, alg, hexd), "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 20), b""):
                        h.update(chunk)
            except (OSError, ValueError) as e:
                out.append((digest, "blob is unreadable: %s" % e))
                continue
            if h.hexdigest() != hexd:
                out.append((digest, "blob is corrupt: it hashes to %s:%s" % (alg, h.hexdigest())))
    return out


def check(store: Store, repair: bool = False) -> List[Dict[str, Any]]:
    """Find dangling and corrupt store entries; with ``repair`` remove them."""
    problems: List[Dict[str, Any]] = []

    def problem(kind: str, what: str, why: str) -> Dict[str, Any]:
        p = {"kind": kind, "what": what, "problem": why, "repaired": False}
        problems.append(p)
        return p

    dd = store.dd
    with store.store_lock(exclusive=True):
        idx = store.index
        images = {r["id"]: r for r in idx.all_images()}
        trees = {t["key"]: t for t in idx.all_trees()}
        bad_images = set()
        for image_id in sorted(images):
            blob = dd.blob_path(image_id)
            try:
                with open(blob, "rb") as f:
                    actual = aci.image_id_of(f)
                if actual != image_id:
                    problem("image", image_id, "blob is corrupt: it hashes to %s" % actual)
                    bad_images.add(image_id)
            except FileNotFoundError:
                problem("image", image_id, "blob is missing")
                bad_images.add(image_id)
            except (OSError, ImageError) as e:
                problem("image", image_id, "blob is unreadable: %s" % e)
                bad_images.add(image_id)
            if image_id not in bad_images:
                try:
                    store.manifest(image_id)
                except RocketError as e:
                    problem("image", image_id, "manifest: %s" % e)
                    bad_images.add(image_id)
        bad_trees = set()
        for key, t in sorted(trees.items()):
            if t["image_id"] in bad_images or set(t["deps"]) & bad_images:
                bad_trees.add(key)
                continue
            if not os.path.isfile(os.path.join(dd.tree_path(key), "rendered")):
                problem("tree", key, "tree is missing or not marked rendered")
                bad_trees.add(key)
            elif not store.verify_tree(key):
                problem("tree", key, "tree content differs from its digest")
                bad_trees.add(key)
        for path in _dangling(store, images, trees):
            p = problem("file", path, "not in the index (left by an interrupted import or removal)")
            if repair:
                remove_tree(path)
                p["repaired"] = True
        bad_blobs = _corrupt_blobs(store)
        for digest, why in bad_blobs:
            p = problem("blob", digest, why)
            if repair:
                os.unlink(dd.oci_blob_path(digest))    # a cache: the next pull downloads it again
                p["repaired"] = True
        for n in sorted(os.listdir(dd.tmp)) if os.path.isdir(dd.tmp) else []:
            if n.endswith(".lock"):
                continue
            lock_path = os.path.join(dd.tmp, n + ".lock")
            from .locks import try_locked

            lock = try_locked(lock_path) if os.path.exists(lock_path) else None
            live = os.path.exists(lock_path) and lock is None
            if lock is not None:
                lock.close()
            if not live:
                p = problem("tmp", os.path.join(dd.tmp, n), "work of a process that is gone")
                if repair:
                    p["repaired"] = True
        if repair:
            clean_tmp(dd.tmp)
            with idx.transaction():
                for key in bad_trees:
                    idx.remove_tree(key)
            for key in bad_trees:
                store.delete_tree_files(key)
            for image_id in bad_images:
                store.delete_image(image_id, idx.trees_using(image_id))
            for p in problems:
                if p["kind"] in ("image", "tree"):
                    p["repaired"] = True
    return problems


__all__ = ["gc", "check", "DEFAULT_GRACE", "IMAGE_ID_PREFIX"]
