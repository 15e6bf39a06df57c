"""Every role's argument spec renders with ansible-doc -t role, and names its defaults."""
import os
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.ansible_run import env

ROLES = sorted(os.listdir(os.path.join(ROOT, "roles")))


@pytest.mark.parametrize("name", ROLES)
def test_role_doc_renders(name):
    assert os.path.exists(os.path.join(ROOT, "roles", name, "meta", "argument_specs.yml"))
    assert os.path.exists(os.path.join(ROOT, "roles", name, "README.md"))
    p = subprocess.run([sys.executable, "-m", "ansible.cli.doc", "-t", "role", "appc.rocket." + name],
                       env=env(), capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0 and "[WARNING]" not in p.stderr and "[ERROR]" not in p.stderr, p.stderr
    assert "ENTRY POINT: *main*" in p.stdout and "default:" in p.stdout


def test_roles_are_pods_and_runtime():
    assert ROLES == ["pods", "runtime"]
