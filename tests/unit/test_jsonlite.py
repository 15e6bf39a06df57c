"""stage1.jsonlite reads and writes what json does, byte for byte, and fails where json
fails; and importing it (with the start path's modules) does not import json or re."""
import json
import random
import subprocess
import sys

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage1 import jsonlite
from tests.support import COLLECTIONS

DOCS = [
    {}, [], "", 0, -1, 10 ** 30, 1.5, -0.0, 1e-300, 1e300, True, False, None,
    {"exit_code": 0, "signal": None, "error": "boom \"quoted\"\n\ttab é 漢 \U0001F600", "started": 1764345600.123},
    {"apps": [{"name": "a", "image": {"id": "sha512-" + "0" * 64}, "app": {"exec": ["/bin/sh", "-c", "x"]}}]},
    [[[[]]], {"": {"": ""}}, "\x00\x1f\x7f"],
]


def _random_doc(rng, depth=0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.randint(-10 ** 12, 10 ** 12)
    if kind == 1:
        return rng.uniform(-1e6, 1e6)
    if kind == 2:
        return "".join(chr(rng.choice((rng.randrange(32, 127), rng.randrange(0, 0x3000)))) for dummy in range(rng.randrange(8)))
    if kind == 3:
        return rng.choice((True, False, None))
    if kind == 4:
        return str(rng.random())
    if kind in (5, 6):
        return {"k%d" % rng.randrange(50): _random_doc(rng, depth + 1) for dummy in range(rng.randrange(5))}
    return [_random_doc(rng, depth + 1) for dummy in range(rng.randrange(5))]


@pytest.mark.parametrize("sort_keys", [False, True])
def test_round_trip_matches_json(sort_keys):
    rng = random.Random(7)
    for doc in DOCS + [_random_doc(rng) for dummy in range(300)]:
        text = jsonlite.dumps(doc, sort_keys=sort_keys)
        assert text == json.dumps(doc, sort_keys=sort_keys)
        assert jsonlite.loads(text) == json.loads(text)
        assert jsonlite.loads(text.encode("utf-8")) == json.loads(text.encode("utf-8"))
        pretty = json.dumps(doc, indent=1, ensure_ascii=False)
        assert jsonlite.loads(" \n" + pretty + "\n\t") == doc


def test_bad_input_fails_as_json_does():
    for bad in ("", " ", "{", "[1,]", "{'a': 1}", "nul", "1 2", "[1] x", "\ufeff{}", '"\x01"', "{\"a\" 1}"):
        with pytest.raises(json.JSONDecodeError):
            json.loads(bad)
        with pytest.raises(json.JSONDecodeError):
            jsonlite.loads(bad)
    with pytest.raises(UnicodeDecodeError):
        jsonlite.loads(b"\"\xff\"")


def test_what_it_does_not_do_goes_to_json():
    doc = {"b": [1, 2], "a": float("nan"), 3: "int key"}
    assert jsonlite.dumps(doc) == json.dumps(doc)
    assert jsonlite.dumps({"a": [1]}, indent=2) == json.dumps({"a": [1]}, indent=2)
    assert jsonlite.dumps({"a": 1}, separators=(",", ":")) == '{"a":1}'
    assert jsonlite.loads('{"a": 1.5}', parse_float=str) == {"a": "1.5"}
    assert jsonlite.loads('[NaN, Infinity]')[1] == float("inf")
    assert jsonlite.loads(json.dumps({"x": 1}).encode("utf-16")) == {"x": 1}
    assert jsonlite.JSONDecodeError is json.JSONDecodeError
    with pytest.raises(TypeError):
        jsonlite.dumps({"a": object()})
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError):
        jsonlite.dumps(loop)


def test_file_helpers(tmp_path):
    p = tmp_path / "x.json"
    with open(p, "w") as f:
        jsonlite.dump({"a": [1, None]}, f)
    assert p.read_text() == '{"a": [1, null]}'
    with open(p) as f:
        assert jsonlite.load(f) == {"a": [1, None]}


def test_start_path_imports_neither_json_nor_re():
    """What the start path costs in imports: the point of jsonlite (and of _signal)."""
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod, run, daemon\n"
            "from ansible_collections.appc.rocket.plugins.module_utils.stage1 import (launch, init, app, keeper, contract,\n"
            "    pod as p1, health, net)\n"
            "print(sorted(m for m in ('json', 're', 'enum', 'signal') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code % COLLECTIONS],
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", ("the start path imports %s again: in stage1 and stage0.pod/run use "
                                 "`from . import jsonlite`, `import _signal`, `import _socket`"
                                 % out.strip())
