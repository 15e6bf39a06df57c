"""Every module's documentation renders with ansible-doc (fragments included)."""
import os
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.ansible_run import env

MODULES = sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, "plugins", "modules")) if f.endswith(".py"))


@pytest.mark.parametrize("name", MODULES)
def test_ansible_doc_renders(name):
    # ansible-doc through the interpreter: ansible-test units' venv has ansible but no scripts.
    p = subprocess.run([sys.executable, "-m", "ansible.cli.doc", "appc.rocket." + name],
                       env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and "[WARNING]" not in p.stderr and "[ERROR]" not in p.stderr, p.stderr
    assert "EXAMPLES" in p.stdout and "RETURN VALUES" in p.stdout


def test_connection_plugin_doc_renders():
    p = subprocess.run([sys.executable, "-m", "ansible.cli.doc", "-t", "connection",
                        "appc.rocket.pod"], env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and "[WARNING]" not in p.stderr and "[ERROR]" not in p.stderr, p.stderr
    for option in ("remote_addr", "rocket_app", "data_dir", "pipelining", "EXAMPLES"):
        assert option in p.stdout, option
