"""The index opens in WAL mode however many processes open a new store at once."""
import sqlite3
import threading

from ansible_collections.appc.rocket.plugins.module_utils.stage0.index import Index


def test_first_open_waits_out_a_writer_instead_of_failing_locked(tmp_path):
    # A writer on the still non-WAL file makes SQLite refuse the switch at once, busy
    # timeout or not: the CI saw one of six parallel first imports die of it.
    path = str(tmp_path / "index.db")
    writer = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    writer.execute("CREATE TABLE t (x)")
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("INSERT INTO t VALUES (1)")
    timer = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    timer.start()
    try:
        index = Index(path)
    finally:
        timer.join()
        writer.close()
    assert index.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert index.all_images() == []
    index.close()


def test_an_index_already_in_wal_opens_beside_a_writer(tmp_path):
    path = str(tmp_path / "index.db")
    Index(path).close()
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        index = Index(path)  # readers never wait on a WAL writer
        assert index.all_images() == []
        index.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()
