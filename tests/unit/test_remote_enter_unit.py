"""The enter program shipped to remote pod hosts: deterministic, complete, and its host-side checks."""
import os
import subprocess
import sys

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import remote_enter


def test_the_bundle_is_deterministic_and_runs_on_its_own(tmp_path):
    data, digest = remote_enter.bundle()
    assert remote_enter.bundle() == (data, digest)
    path = tmp_path / (digest + ".zip")
    path.write_bytes(data)
    # -I and nothing of this checkout on the path: every module main() needs is in the zip.
    p = subprocess.run([sys.executable, "-I", "-c",
                        "import sys; sys.path.insert(0, sys.argv[1])\n"
                        "from ansible_collections.appc.rocket.plugins.module_utils.stage0 import remote_enter as m\n"
                        "assert m.__file__.startswith(sys.argv[1]), m.__file__\n"
                        "sys.exit(m.main([sys.argv[2], 'web', '', '', 'true']))", str(path), str(tmp_path / "none")],
                       capture_output=True, text=True, timeout=60, check=False, cwd=str(tmp_path))
    assert p.returncode == remote_enter.EXIT_ENTER, p.stderr
    assert p.stderr.startswith("enter: pod web: ") and "does not exist" in p.stderr, p.stderr


def test_main_wants_a_command():
    assert remote_enter.main(["/x", "web", ""]) == remote_enter.EXIT_ENTER
    assert remote_enter.main(["/x", "web", "", ""]) == remote_enter.EXIT_ENTER  # app and user, no command


@pytest.mark.skipif(os.geteuid() != 0, reason="the cache's owner checks are root's: run as root")
def test_the_bootstrap_reports_a_missing_program_or_an_unsafe_cache(tmp_path):
    code = remote_enter.BOOTSTRAP.replace(repr(remote_enter.CACHE_DIR), repr(str(tmp_path / "c" / "enter")))

    def run():
        return subprocess.run([sys.executable, "-I", "-c", code, "0" * 64, "/x", "web", "", "", "true"],
                              capture_output=True, text=True, timeout=60, check=False)

    os.chmod(tmp_path, 0o755)
    os.makedirs(str(tmp_path / "c" / "enter"), 0o700)
    os.chmod(str(tmp_path / "c"), 0o755)
    p = run()
    assert p.returncode == remote_enter.EXIT_MISSING and p.stderr.strip() == remote_enter.MISSING, p.stderr
    os.chmod(str(tmp_path / "c" / "enter"), 0o777)
    p = run()
    assert p.returncode == remote_enter.EXIT_ENTER and "only root can write" in p.stderr, p.stderr
    os.chmod(str(tmp_path / "c" / "enter"), 0o700)
    os.symlink("/etc/hostname", str(tmp_path / "c" / "enter" / ("0" * 64 + ".zip")))
    p = run()
    assert p.returncode == remote_enter.EXIT_ENTER and "is not a file of root" in p.stderr, p.stderr


def test_install_checks_the_hash_and_compiles_on_the_host(tmp_path):
    data, digest = remote_enter.bundle()
    os.chmod(str(tmp_path), 0o755)
    code = remote_enter.INSTALL.replace(repr(remote_enter.CACHE_DIR), repr(str(tmp_path / "c" / "enter")))
    p = subprocess.run([sys.executable, "-I", "-c", code, "0" * 64], input=data, capture_output=True, check=False)
    assert p.returncode == remote_enter.EXIT_ENTER and b"damaged" in p.stderr
    p = subprocess.run([sys.executable, "-I", "-c", code, digest], input=data, capture_output=True, check=False)
    assert p.returncode == 0, p.stderr
    path = tmp_path / "c" / "enter" / (digest + ".zip")
    assert oct(path.stat().st_mode & 0o777) == "0o600" and os.listdir(str(tmp_path / "c" / "enter")) == [path.name]
    p = subprocess.run([sys.executable, "-I", "-c", "import sys; sys.path.insert(0, sys.argv[1])\n"
                        "from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod\n"
                        "print(pod.__file__)", str(path)], capture_output=True, text=True, check=False)
    # __file__, not __cached__: Python 3.9's zipimport leaves __cached__ None even for a .pyc.
    assert p.returncode == 0 and p.stdout.strip().endswith("stage0/pod.pyc"), p.stderr
