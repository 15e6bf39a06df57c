"""The image index: what images the store holds, by ID, name and labels.

sqlite3 from the standard library: transactions and cross-process locking for free, and a
crash mid-write rolls back instead of leaving a torn file. The index is the source of truth
for "this image is in the store": blobs and trees become visible only once their row is
committed, and files without a row are garbage for the store check.
"""
from __future__ import annotations

import json
import sqlite3
import time
TYPE_CHECKING = False  # typing costs milliseconds per module run: annotations stay unevaluated
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, Iterable, List, Optional, Set

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    labels       TEXT NOT NULL,
    size         INTEGER NOT NULL,
    blob_size    INTEGER NOT NULL,
    compression  TEXT NOT NULL,
    import_time  REAL NOT NULL,
    last_used    REAL NOT NULL,
    source       TEXT,
    remote_url   TEXT,
    etag         TEXT,
    max_age      INTEGER,
    cache_time   REAL
);
CREATE INDEX IF NOT EXISTS images_name ON images(name);
CREATE TABLE IF NOT EXISTS trees (
    key          TEXT PRIMARY KEY,
    image_id     TEXT NOT NULL,
    deps         TEXT NOT NULL,
    digest       TEXT NOT NULL,
    render_time  REAL NOT NULL,
    last_used    REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS trees_image ON trees(image_id);
CREATE TABLE IF NOT EXISTS sources (
    path         TEXT PRIMARY KEY,
    stat         TEXT NOT NULL,
    image_id     TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS image_blobs (
    image_id     TEXT NOT NULL,
    digest       TEXT NOT NULL,
    PRIMARY KEY (image_id, digest)
);
"""

IMAGE_COLUMNS = ("id", "name", "labels", "size", "blob_size", "compression", "import_time",
                 "last_used", "source", "remote_url", "etag", "max_age", "cache_time")


def _use_wal(db: sqlite3.Connection, path: str, deadline: float) -> None:
    """Switch a new index to WAL, racing other first opens of it.

    The switch needs the exclusive lock from a connection that already reads, and SQLite
    answers such an upgrade "locked" at once rather than wait (it could deadlock), so the
    busy timeout does not cover it. WAL persists in the file: the losers find it on re-read.
    """
    delay = 0.001
    while True:
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
                return
            if db.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal":
                return
        except sqlite3.OperationalError as e:
            if "locked" not in str(e):  # SQLITE_BUSY and SQLITE_LOCKED both read "... is locked"
                raise
        if time.monotonic() > deadline:
            raise sqlite3.OperationalError("cannot switch the index %s to WAL: it stayed locked" % path)
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


class Index:
    def __init__(self, path: str) -> None:
        self.path = path
        self.db = sqlite3.connect(path, timeout=60, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA busy_timeout = 60000")
        _use_wal(self.db, path, time.monotonic() + 60)
        self.db.execute("PRAGMA synchronous = FULL")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        self.db.close()

    def transaction(self):
        """BEGIN IMMEDIATE: take the write lock up front so two writers never deadlock."""
        return _Tx(self.db)

    # -- images --------------------------------------------------------------------------
    @staticmethod
    def _image(row) -> Dict[str, Any]:
        rec = dict(zip(IMAGE_COLUMNS, row))
        rec["labels"] = json.loads(rec["labels"])
        return rec

    def get_image(self, image_id: str) -> Optional[Dict[str, Any]]:
        row = self.db.execute("SELECT %s FROM images WHERE id = ?" % ",".join(IMAGE_COLUMNS), (image_id,)).fetchone()
        return self._image(row) if row else None

    def images_with_prefix(self, prefix: str) -> List[Dict[str, Any]]:
        # The prefix is validated hex by the caller; range query instead of LIKE.
        rows = self.db.execute(
            "SELECT %s FROM images WHERE id >= ? AND id < ? ORDER BY id" % ",".join(IMAGE_COLUMNS),
            (prefix, prefix + "\x7f")).fetchall()
        return [self._image(r) for r in rows]

    def images_named(self, name: str) -> List[Dict[str, Any]]:
        rows = self.db.execute("SELECT %s FROM images WHERE name = ?" % ",".join(IMAGE_COLUMNS), (name,)).fetchall()
        return [self._image(r) for r in rows]

    def all_images(self) -> List[Dict[str, Any]]:
        rows = self.db.execute("SELECT %s FROM images ORDER BY name, import_time" % ",".join(IMAGE_COLUMNS)).fetchall()
        return [self._image(r) for r in rows]

    def add_image(self, rec: Dict[str, Any]) -> None:
        values = dict(rec)
        values["labels"] = json.dumps(rec.get("labels") or {}, sort_keys=True)
        self.db.execute(
            "INSERT OR REPLACE INTO images (%s) VALUES (%s)" % (",".join(IMAGE_COLUMNS), ",".join("?" * len(IMAGE_COLUMNS))),
            tuple(values.get(c) for c in IMAGE_COLUMNS))

    def remove_image(self, image_id: str) -> None:
        self.db.execute("DELETE FROM images WHERE id = ?", (image_id,))
        self.db.execute("DELETE FROM sources WHERE image_id = ?", (image_id,))
        self.db.execute("DELETE FROM image_blobs WHERE image_id = ?", (image_id,))

    def touch_image(self, image_id: str, when: Optional[float] = None) -> None:
        self.db.execute("UPDATE images SET last_used = ? WHERE id = ?", (when or time.time(), image_id))

    # -- trees ---------------------------------------------------------------------------
    def get_tree(self, key: str) -> Optional[Dict[str, Any]]:
        row = self.db.execute("SELECT key, image_id, deps, digest, render_time, last_used FROM trees WHERE key = ?",
                              (key,)).fetchone()
        if not row:
            return None
        return {"key": row[0], "image_id": row[1], "deps": json.loads(row[2]), "digest": row[3],
                "render_time": row[4], "last_used": row[5]}

    def all_trees(self) -> List[Dict[str, Any]]:
        rows = self.db.execute("SELECT key FROM trees ORDER BY key").fetchall()
        return [t for t in (self.get_tree(r[0]) for r in rows) if t]

    def trees_using(self, image_id: str) -> List[str]:
        """Keys of trees built from ``image_id``, as the image or as a dependency."""
        rows = self.db.execute("SELECT key, image_id, deps FROM trees").fetchall()
        return [r[0] for r in rows if r[1] == image_id or image_id in json.loads(r[2])]

    def add_tree(self, key: str, image_id: str, deps: Iterable[str], digest: str) -> None:
        now = time.time()
        self.db.execute("INSERT OR REPLACE INTO trees VALUES (?, ?, ?, ?, ?, ?)",
                        (key, image_id, json.dumps(list(deps)), digest, now, now))

    def remove_tree(self, key: str) -> None:
        self.db.execute("DELETE FROM trees WHERE key = ?", (key,))

    def touch_tree(self, key: str) -> None:
        self.db.execute("UPDATE trees SET last_used = ? WHERE key = ?", (time.time(), key))

    # -- source cache: skip re-hashing a local file that has not changed ------------------
    def source_image(self, path: str, stat_key: str) -> Optional[str]:
        row = self.db.execute("SELECT stat, image_id FROM sources WHERE path = ?", (path,)).fetchone()
        if row and row[0] == stat_key:
            return row[1]
        return None

    def set_source(self, path: str, stat_key: str, image_id: str) -> None:
        self.db.execute("INSERT OR REPLACE INTO sources VALUES (?, ?, ?)", (path, stat_key, image_id))

    def source_entry(self, path: str) -> Optional[Dict[str, str]]:
        """The source row whatever its stat: ``{"stat", "image_id"}`` (a registry reference's digest)."""
        row = self.db.execute("SELECT stat, image_id FROM sources WHERE path = ?", (path,)).fetchone()
        return {"stat": row[0], "image_id": row[1]} if row else None

    # -- registry blobs an image was made from: what the blob cache keeps ------------------
    def add_image_blobs(self, image_id: str, digests: Iterable[str]) -> None:
        self.db.executemany("INSERT OR IGNORE INTO image_blobs VALUES (?, ?)", [(image_id, d) for d in digests])

    def image_blobs(self, image_id: str) -> List[str]:
        rows = self.db.execute("SELECT digest FROM image_blobs WHERE image_id = ? ORDER BY digest",
                               (image_id,)).fetchall()
        return [r[0] for r in rows]

    def blobs_in_use(self) -> Set[str]:
        """Digests some image of the index lists (rows of removed images are gone with them)."""
        rows = self.db.execute("SELECT DISTINCT b.digest FROM image_blobs b JOIN images i ON i.id = b.image_id")
        return {r[0] for r in rows.fetchall()}


class _Tx:
    def __init__(self, db) -> None:
        self.db = db

    def __enter__(self):
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.db.execute("COMMIT")
        else:
            self.db.execute("ROLLBACK")
