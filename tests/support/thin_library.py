"""This collection's library laid out on this host as the runtime role lays it out
(``<dir>/<version>-<sha12>/appc-rocket-pods.pyz``, root's, 0755 directories and a 0644 zip),
for the thin payload's tests and benchmarks, in a directory that only root can write (the
tests' tmp_path is under /tmp, which everyone can write, so the thin path would refuse it)."""
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

from . import ROOT

PARENT = "/var/cache/appc-rocket-test"


@contextlib.contextmanager
def installed():
    """Yields (library directory, the zip's path, its SHA-256); removes it all afterwards."""
    from ansible_collections.appc.rocket.plugins.plugin_utils import module_action

    os.makedirs(PARENT, 0o755, exist_ok=True)
    top = tempfile.mkdtemp(prefix="thin-", dir=PARENT)
    try:
        os.chmod(top, 0o755)
        expected = module_action.expected_library()
        assert expected is not None
        lib = os.path.join(top, "lib")
        version = os.path.join(lib, expected["version"])
        os.makedirs(version, 0o755)
        out = subprocess.run([sys.executable, module_action.PROGRAM, ROOT, version], stdout=subprocess.PIPE, check=True)
        path = json.loads(out.stdout)["path"]
        os.chmod(path, 0o644)
        yield lib, path, expected["sha256"]
    finally:
        shutil.rmtree(top)
