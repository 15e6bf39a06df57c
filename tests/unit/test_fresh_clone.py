"""The project carries everything its tests need: a fresh clone, with nothing beside it,
collects every test and passes the tests that read data files (tests/fixtures/).

A checkout used to read conformance data from a ../shared/ folder that only CI had; a new
user's `make test` then failed. This clones the committed HEAD (not the working tree) into
an empty temporary folder and runs pytest there with this interpreter.
"""
import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The tests that read files of the checkout's own (tests/fixtures/).
FIXTURE_READERS = ("tests/unit/test_discovery.py", "tests/unit/test_schema.py")
# What points a run at files outside the clone, or at another copy of the collection.
_OUTSIDE = ("ROCKET_SHARED_DIR", "ANSIBLE_COLLECTIONS_PATH", "PYTHONPATH", "PYTEST_PLUGINS", "PYTEST_ADDOPTS",
            "ROCKET_BYTECODE_CACHE")


def _git(*args, cwd=ROOT):
    return subprocess.run(["git"] + list(args), cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.skipif("ansible_pytest_collections" in os.environ.get("PYTEST_PLUGINS", ""),
                    reason="ansible-test units runs a copy in its own venv; make unit and make test run this")
@pytest.mark.skipif(shutil.which("git") is None or not os.path.exists(os.path.join(ROOT, ".git")),
                    reason="not a git checkout")
def test_a_fresh_clone_needs_nothing_beside_it(tmp_path):
    head = _git("rev-parse", "HEAD")
    clone = tmp_path / "rocket"
    _git("clone", "-q", "--no-checkout", ROOT, str(clone), cwd=str(tmp_path))
    _git("checkout", "-q", head, cwd=str(clone))
    assert sorted(os.listdir(tmp_path)) == ["rocket"]
    env = {k: v for k, v in os.environ.items() if k not in _OUTSIDE}
    for args in (["--collect-only", "tests"], list(FIXTURE_READERS)):
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"] + args, cwd=str(clone),
                           env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300,
                           check=False)
        assert p.returncode == 0, "pytest %s in a fresh clone of %s failed:\n%s" % (" ".join(args), head, p.stdout[-4000:])
