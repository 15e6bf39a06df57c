"""The user namespace range store: stable per key, distinct between keys, released."""
import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import idrange
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError


def test_allocation_is_stable_distinct_and_released(tmp_path):
    dd = DataDir(str(tmp_path / "dd"))
    a = idrange.allocate(dd, "name:web")
    assert a == idrange.allocate(dd, "name:web")
    assert a >= idrange.FIRST and (a - idrange.FIRST) % idrange.RANGE == 0
    assert a + idrange.RANGE - 1 < 0xFFFFFFFF
    # The same key in another store picks the same slot (deterministic).
    assert idrange.allocate(DataDir(str(tmp_path / "other")), "name:web") == a
    # A taken slot moves the next key on: occupy the slot "name:db" hashes to first.
    d2 = DataDir(str(tmp_path / "d2"))
    db = idrange.allocate(d2, "name:db")
    idrange.release(d2, "name:db")
    squatter_dir = tmp_path / "d2" / "userns"
    (squatter_dir / str(db)).write_text("name:squatter\n")
    assert idrange.allocate(d2, "name:db") != db
    ranges = {idrange.allocate(dd, "uuid:%d" % i) for i in range(50)}
    assert len(ranges) == 50 and a not in ranges
    idrange.release(dd, "uuid:3")
    assert len(list((tmp_path / "dd" / "userns").glob("[0-9]*"))) == 50


def test_normalize():
    assert idrange.normalize(None) is False and idrange.normalize("no") is False
    assert idrange.normalize(True) is True and idrange.normalize("yes") is True
    assert idrange.normalize("3000000000") == 3000000000
    for bad in ("-1", "0", "4294967295", "many"):
        with pytest.raises(RocketError, match="private_users"):
            idrange.normalize(bad)
