"""module_utils/bytecode.py for real: a zip laid out as Ansible ships a module's payload,
imported by fresh interpreters, with the cache it reads and writes on disk.

The copy under test is our file as it is, in a package of another name (pkgz.module_utils),
so the finder serves that package only and this test process is never touched.
"""
import json
import marshal
import os
import subprocess
import sys
import zipfile

import pytest

from ansible_collections.appc.rocket.plugins.module_utils import bytecode

SOURCE = os.path.join(os.path.dirname(bytecode.__file__), "bytecode.py")
FILES = {
    "pkgz/__init__.py": "",
    "pkgz/module_utils/__init__.py": "",
    "pkgz/module_utils/a.py": "X = 'from source'\n",
    "pkgz/module_utils/sub/__init__.py": "",
    "pkgz/module_utils/sub/b.py": "from pkgz.module_utils.a import X\nY = X + '/b'\n",
    "pkgz/module_utils/sub/data.txt": "beside b\n",
    "pkgz/module_utils/boom.py": "\n\nraise RuntimeError('boom')\n",
}
RUN = r"""
import json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
from pkgz.module_utils import bytecode
out = {"finder": bytecode._finder is not None and sys.meta_path[0] is bytecode._finder}
from pkgz.module_utils import a
from pkgz.module_utils.sub import b
out["X"], out["Y"] = a.X, b.Y
out["file"] = b.__file__
out["data"] = b.__loader__.get_data(os.path.join(os.path.dirname(b.__file__), "data.txt")).decode()
try:
    from pkgz.module_utils import boom
except RuntimeError:
    out["tb"] = traceback.extract_tb(sys.exc_info()[2])[-1][:2]
bytecode.save(sys.argv[2] == "save")
print(json.dumps(out))
"""


def build(z, **changed):
    with zipfile.ZipFile(z, "w") as f:
        for name, text in FILES.items():
            f.writestr(name, changed.get(os.path.basename(name), text))
        with open(SOURCE, "rb") as src:
            f.writestr("pkgz/module_utils/bytecode.py", src.read())


@pytest.fixture
def payload(tmp_path):
    z = tmp_path / "payload" / "ansible_pkgz_payload.zip"
    z.parent.mkdir()
    build(z)
    return z


@pytest.fixture
def cache(tmp_path):
    parent = tmp_path / "cache"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    return parent / "pyc"


def run(payload, cache, save=True):
    env = dict(os.environ, ROCKET_BYTECODE_CACHE=str(cache))
    p = subprocess.run([sys.executable, "-I", "-c", RUN, str(payload), "save" if save else "check"],
                       env=env, capture_output=True, text=True, check=False)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def key_of(name):
    return bytecode.cache_key(FILES[name].encode())


def plant(cache, name, text):
    """Put code compiled from ``text`` where the cache keeps the code of file ``name``."""
    (cache / key_of(name)).write_bytes(marshal.dumps(compile(text, "planted", "exec")))
    os.chmod(cache / key_of(name), 0o600)


def test_first_run_compiles_and_keeps_every_module_it_served(payload, cache):
    out = run(payload, cache)
    assert out["finder"] is True
    assert (out["X"], out["Y"]) == ("from source", "from source/b")
    assert out["data"] == "beside b\n"  # stage1 and the metadata service read their sources so
    assert out["file"] == os.path.join(str(payload), "pkgz/module_utils/sub/b.py")
    assert out["tb"] == [os.path.join(str(payload), "pkgz/module_utils/boom.py"), 3]
    served = {key_of(n) for n in ("pkgz/module_utils/a.py", "pkgz/module_utils/sub/__init__.py",
                                  "pkgz/module_utils/sub/b.py", "pkgz/module_utils/boom.py")}
    assert set(os.listdir(cache)) == served
    assert oct(os.stat(cache).st_mode & 0o777) == oct(0o700)
    assert all(os.stat(cache / k).st_mode & 0o777 == 0o600 for k in served)


def test_a_later_run_executes_the_cached_code_not_the_source(payload, cache):
    run(payload, cache)
    plant(cache, "pkgz/module_utils/a.py", "X = 'from cache'\n")
    out = run(payload, cache)
    assert (out["X"], out["Y"]) == ("from cache", "from cache/b")


def test_a_run_from_another_place_shows_its_own_paths_in_tracebacks(payload, cache, tmp_path):
    run(payload, cache)
    moved = tmp_path / "elsewhere.zip"
    os.rename(payload, moved)
    out = run(moved, cache)
    assert out["tb"] == [os.path.join(str(moved), "pkgz/module_utils/boom.py"), 3]


def test_check_mode_writes_nothing_not_even_the_directory(payload, cache):
    out = run(payload, cache, save=False)
    assert out["X"] == "from source"
    assert not cache.exists()


@pytest.mark.parametrize("mode", [0o770, 0o707, 0o777])
def test_a_cache_others_can_write_is_neither_read_nor_written(payload, cache, mode):
    cache.mkdir(mode=0o700)
    plant(cache, "pkgz/module_utils/a.py", "X = 'planted'\n")
    os.chmod(cache, mode)
    out = run(payload, cache)
    assert out["X"] == "from source"
    assert os.listdir(cache) == [key_of("pkgz/module_utils/a.py")]


def test_a_parent_others_can_write_disables_the_cache(payload, cache):
    cache.mkdir(mode=0o700)
    plant(cache, "pkgz/module_utils/a.py", "X = 'planted'\n")
    os.chmod(cache.parent, 0o777)
    out = run(payload, cache)
    assert out["X"] == "from source"
    assert os.listdir(cache) == [key_of("pkgz/module_utils/a.py")]


def test_a_symlinked_cache_or_entry_is_not_followed(payload, cache, tmp_path):
    real = tmp_path / "real"
    real.mkdir(mode=0o700)
    cache.symlink_to(real)
    assert run(payload, cache)["X"] == "from source"
    assert os.listdir(real) == []
    cache.unlink()
    cache.mkdir(mode=0o700)
    (real / "code").write_bytes(marshal.dumps(compile("X = 'linked'\n", "x", "exec")))
    (cache / key_of("pkgz/module_utils/a.py")).symlink_to(real / "code")
    assert run(payload, cache)["X"] == "from source"


@pytest.mark.parametrize("blob", [b"", b"\xe3garbage", marshal.dumps("a string, not code")])
def test_a_damaged_entry_is_compiled_again_and_replaced(payload, cache, blob):
    run(payload, cache)
    entry = cache / key_of("pkgz/module_utils/a.py")
    entry.write_bytes(blob)
    assert run(payload, cache)["X"] == "from source"
    assert marshal.loads(entry.read_bytes()).co_filename.endswith("a.py")


def test_another_source_is_another_entry(payload, cache, tmp_path):
    run(payload, cache)
    before = set(os.listdir(cache))
    build(payload, **{"a.py": "X = 'version 2'\n"})  # a newer collection
    assert run(payload, cache)["X"] == "version 2"
    assert len(set(os.listdir(cache)) - before) == 1


def test_off_turns_the_cache_off(payload, tmp_path):
    env = dict(os.environ, ROCKET_BYTECODE_CACHE="off", HOME=str(tmp_path), XDG_CACHE_HOME=str(tmp_path / "x"))
    p = subprocess.run([sys.executable, "-I", "-c", RUN, str(payload), "save"], env=env, capture_output=True,
                       text=True, check=False)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["X"] == "from source"
    assert sorted(os.listdir(tmp_path)) == ["payload"]


def test_outside_a_zip_nothing_is_installed(tmp_path):
    tree = tmp_path / "tree"
    for name, text in FILES.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    with open(SOURCE, "rb") as src:
        (tree / "pkgz/module_utils/bytecode.py").write_bytes(src.read())
    out = run(tree, tmp_path / "never")
    assert out["finder"] is False and out["X"] == "from source"
    assert not (tmp_path / "never").exists()


def test_the_default_place_is_per_user(monkeypatch, tmp_path):
    monkeypatch.delenv("ROCKET_BYTECODE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    if os.geteuid() == 0:
        assert bytecode.cache_dir() == "/var/cache/appc.rocket/pyc"
    else:
        assert bytecode.cache_dir() == str(tmp_path / "appc.rocket" / "pyc")
    monkeypatch.setenv("ROCKET_BYTECODE_CACHE", "relative/dir")
    assert bytecode.cache_dir() == os.path.abspath("relative/dir")
