"""The built collection: the tarball leaves out local output, installs into an empty
collections path, and the demo runs from the installed copy (twice: the second run changes nothing)."""
import os
import re
import subprocess
import sys
import tarfile

from tests.support import ROOT
from tests.support.ansible_run import BIN, module

# Local output that must never ship: virtualenvs, build products, test and benchmark output.
LOCAL = (".venv/", ".build/", ".ansible/", ".cache/", "tests/output/", "bench/results/", ".pytest_cache/")


def run(cmd, env, cwd):
    p = subprocess.run(cmd, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                       timeout=600, check=False)
    assert p.returncode == 0, "%s:\n%s" % (cmd, p.stdout)
    return p.stdout


def test_build_install_and_run_the_demo_from_the_tarball(tmp_path):
    colls = str(tmp_path / "collections")
    data = str(tmp_path / "rocket")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    # Only the fresh collections path: not the checkout's link, not sys.path.
    env.update(ANSIBLE_COLLECTIONS_PATH=colls, ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="false",
               ANSIBLE_PYTHON_INTERPRETER=sys.executable, ANSIBLE_NOCOLOR="1", ANSIBLE_LOCALHOST_WARNING="false",
               ANSIBLE_INVENTORY_UNPARSED_WARNING="false", ROCKET_DATA_DIR=data)
    run([os.path.join(BIN, "ansible-galaxy"), "collection", "build", "--output-path", str(tmp_path), ROOT],
        env, str(tmp_path))
    tarballs = [n for n in os.listdir(str(tmp_path)) if n.endswith(".tar.gz")]
    assert len(tarballs) == 1 and tarballs[0].startswith("appc-rocket-"), tarballs
    tarball = str(tmp_path / tarballs[0])
    with tarfile.open(tarball) as t:
        names = t.getnames()
    assert "MANIFEST.json" in names and "plugins/modules/pod_run.py" in names and "demo/demo.yml" in names
    assert "playbooks/molecule_create.yml" in names and "playbooks/molecule_destroy.yml" in names  # import_playbook appc.rocket.*
    shipped = [n for n in names if n.startswith(LOCAL) or "__pycache__" in n or n.endswith(".pyc")]
    assert not shipped, shipped

    run([os.path.join(BIN, "ansible-galaxy"), "collection", "install", "-p", colls, tarball], env, str(tmp_path))
    installed = os.path.join(colls, "ansible_collections", "appc", "rocket")
    listing = run([os.path.join(BIN, "ansible-galaxy"), "collection", "list", "appc.rocket"], env, str(tmp_path))
    assert os.path.realpath(os.path.join(colls, "ansible_collections")) in listing, listing
    assert not os.path.islink(installed) and os.path.isfile(os.path.join(installed, "plugins", "modules", "pod_run.py"))

    demo = os.path.join(installed, "demo", "demo.yml")
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", demo,
           "-e", "demo_dir=%s" % (tmp_path / "demo")]
    try:
        first = run(cmd, env, str(tmp_path))
        assert "Hello from an appc.rocket pod" in first
        assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=[1-9]", first), first
        second = run(cmd, env, str(tmp_path))
        assert re.search(r"localhost\s*:\s*ok=\d+\s+changed=0\s+unreachable=0\s+failed=0", second), second
        assert os.path.isdir(os.path.join(data, "cas")) and os.path.isdir(os.path.join(data, "pods"))
    finally:
        # The demo keeps a pod running; its keeper is no child of ours, so stop it by pod.
        for pod in module("pod_info", {"data_dir": data})["pods"]:
            module("pod_run", {"uuid": pod["uuid"], "state": "absent", "data_dir": data})
