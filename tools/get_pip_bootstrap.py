"""Stand-in for the get-pip script ansible-test downloads (that host is unreachable here).

ansible-test looks for ~/.ansible/test/cache/get_pip_<version>.py before downloading; this
script bootstraps pip with the standard library's ensurepip, then installs the requested
pip from the package registry. ensurepip runs pip with PIP_CONFIG_FILE=/dev/null, which
hides this machine's pip configuration (its CA bundle and index), so the second step runs
with the caller's environment minus that variable.
"""
import os
import subprocess
import sys


def main(argv):
    wanted = [a for a in argv if a.startswith("pip")] or ["pip"]
    subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
    env = {k: v for k, v in os.environ.items() if k != "PIP_CONFIG_FILE"}
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q"] + wanted,
                          env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
