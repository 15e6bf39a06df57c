"""The user namespace range store: stable per key, distinct between keys, released."""
import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import idrange
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError


@pytest.fixture(autouse=True)
def store(tmp_path, monkeypatch):
    """The host-wide store, private to the test."""
    monkeypatch.setattr(idrange, "STORE", str(tmp_path / "host-idranges"), raising=False)
    return tmp_path / "host-idranges"


def test_allocation_is_stable_distinct_and_released(tmp_path, store):
    dd = DataDir(str(tmp_path / "dd"))
    a = idrange.allocate(dd, "name:web")
    assert a == idrange.allocate(dd, "name:web")
    assert a >= idrange.FIRST and (a - idrange.FIRST) % idrange.RANGE == 0
    assert a + idrange.RANGE - 1 < 0xFFFFFFFF
    # A taken slot moves the next key on: occupy the slot "name:db" hashes to first.
    db = idrange.allocate(dd, "name:db")
    idrange.release(dd, "name:db")
    (store / str(db)).write_text("%s\tname:squatter\n" % dd.path)
    assert idrange.allocate(dd, "name:db") != db
    ranges = {idrange.allocate(dd, "uuid:%d" % i) for i in range(50)}
    assert len(ranges) == 50 and a not in ranges
    idrange.release(dd, "uuid:3")
    assert len(list(store.glob("[0-9]*"))) == 52  # web, the squatter, db, 49 uuids


def test_ranges_are_unique_per_host_not_per_data_dir(tmp_path, store):
    """Issue #13 finding 9: two data directories each kept a store and handed the same pod
    name the same range, so their pods' root mapped onto one host uid."""
    one, two = DataDir(str(tmp_path / "one")), DataDir(str(tmp_path / "two"))
    a, b = idrange.allocate(one, "name:web"), idrange.allocate(two, "name:web")
    assert a != b
    assert (a, b) == (idrange.allocate(one, "name:web"), idrange.allocate(two, "name:web"))
    idrange.release(one, "name:web")
    assert idrange.allocate(two, "name:web") == b
    assert not (tmp_path / "one" / "userns").exists() and not (tmp_path / "two" / "userns").exists()


def test_a_range_recorded_in_the_data_dir_is_kept(tmp_path, store):
    """Upgrade: the data directory's own store (older versions) keeps a named pod's range."""
    dd = DataDir(str(tmp_path / "dd"))
    old = tmp_path / "dd" / "userns"
    old.mkdir(parents=True)
    base = idrange.FIRST + 77 * idrange.RANGE
    (old / str(base)).write_text("name:web\n")
    assert idrange.allocate(dd, "name:web") == base
    # another data directory's old record of the same range: taken on this host, so a new one
    dd2 = DataDir(str(tmp_path / "dd2"))
    (tmp_path / "dd2" / "userns").mkdir(parents=True)
    (tmp_path / "dd2" / "userns" / str(base)).write_text("name:web\n")
    assert idrange.allocate(dd2, "name:web") not in (base, None)
    idrange.release(dd, "name:web")
    assert not (old / str(base)).exists() and not (store / str(base)).exists()


def test_normalize():
    assert idrange.normalize(None) is False and idrange.normalize("no") is False
    assert idrange.normalize(True) is True and idrange.normalize("yes") is True
    assert idrange.normalize("3000000000") == 3000000000
    for bad in ("-1", "0", "4294967295", "many"):
        with pytest.raises(RocketError, match="private_users"):
            idrange.normalize(bad)
