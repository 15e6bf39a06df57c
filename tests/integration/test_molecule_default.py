"""molecule test -s default: the pods role on this host, converge, idempotence, verify, cleanup."""
import os
import shutil
import subprocess
import sys

import pytest

from tests.support import ROOT
from tests.support.ansible_run import env

MOLECULE = os.path.join(os.path.dirname(sys.executable), "molecule")


@pytest.mark.skipif(not os.path.exists(MOLECULE), reason="molecule is not installed (requirements-test.txt)")
def test_molecule_default_scenario(tmp_path):
    if not os.path.exists("/bin/busybox"):
        pytest.skip("the scenario builds its image from /bin/busybox (Debian busybox-static)")
    e = env()
    e.update(ROCKET_MOLECULE_DATA_DIR=str(tmp_path / "rocket"), ANSIBLE_NOCOLOR="1", NO_COLOR="1",
             PATH=os.path.dirname(sys.executable) + os.pathsep + e.get("PATH", ""),
             MOLECULE_EPHEMERAL_DIRECTORY=str(tmp_path / "molecule"))
    installed = os.path.expanduser("~/.ansible/collections/ansible_collections/appc")
    was_installed = os.path.exists(installed)
    p = subprocess.run([MOLECULE, "test", "-s", "default"], cwd=ROOT, env=e, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True, timeout=900, check=False)
    tail = p.stdout[-6000:]
    assert p.returncode == 0, tail
    # molecule's prerun would install the collection there, to shadow every later checkout run
    assert was_installed or not os.path.exists(installed), "molecule installed appc.rocket into ~/.ansible"
    for step in ("converge", "idempotence", "verify", "cleanup", "destroy"):
        assert "%s: Executed: Successful" % step in p.stdout, (step, tail)
    # Destroy removed the pods and the data directory.
    assert not os.path.exists(str(tmp_path / "rocket")), tail
    shutil.rmtree(str(tmp_path / "molecule"), ignore_errors=True)
