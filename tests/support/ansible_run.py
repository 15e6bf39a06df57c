"""Run real modules and playbooks of the collection against localhost."""
import json
import os
import subprocess
import sys
import tempfile

from . import COLLECTIONS

# The controller's ansible binaries: the project venv's (ansible-core 2.19), or the bin/ of a
# matrix venv (tools/matrix-venvs.sh) to run the same tests on another ansible-core. Only the
# controller changes: pytest, and the hosts' Python (ANSIBLE_PYTHON_INTERPRETER), stay ours.
BIN = os.environ.get("ROCKET_ANSIBLE_BIN") or os.path.dirname(sys.executable)
# The managed hosts' Python (the modules, and stage1 under them): ours unless ROCKET_HOST_PYTHON
# names another (a pyenv 3.9 or 3.13, as Debian 11 and 13 have).
HOST_PYTHON = os.environ.get("ROCKET_HOST_PYTHON") or sys.executable

# One task that runs the module with the given arguments, registered in full (diff
# included, which ad hoc output drops), then written out as JSON even in check mode.
_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: the module under test
      action:
        module: "{{ module_name }}"
      args: "{{ module_args }}"
      register: result
      ignore_errors: true
    - name: save the result
      ansible.builtin.copy:
        content: "{{ result | to_json }}"
        dest: "{{ result_file }}"
        mode: "0600"
      check_mode: false
      diff: false
"""


def env():
    e = dict(os.environ)
    e["ANSIBLE_COLLECTIONS_PATH"] = COLLECTIONS
    e["ANSIBLE_PYTHON_INTERPRETER"] = HOST_PYTHON
    e["ANSIBLE_LOCALHOST_WARNING"] = "false"
    e["ANSIBLE_INVENTORY_UNPARSED_WARNING"] = "false"
    e["ANSIBLE_NOCOLOR"] = "1"
    e["ANSIBLE_DEPRECATION_WARNINGS"] = "false"
    return e


def module(name, args, check=False, diff=False, extra_env=None, wrap=None):
    """Run one module through a real playbook; returns its registered result. ``wrap``: a
    command prefix (e.g. nsenter into tests/support/journald.py's namespace)."""
    with tempfile.TemporaryDirectory(prefix="rocket-ansible-") as d:
        play = os.path.join(d, "play.yml")
        with open(play, "w") as f:
            f.write(_PLAY)
        out = os.path.join(d, "result.json")
        extra = os.path.join(d, "vars.json")
        with open(extra, "w") as f:
            json.dump({"module_name": "appc.rocket." + name, "module_args": args, "result_file": out}, f)
        cmd = list(wrap or []) + [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", play,
                                  "-e", "@" + extra]
        if check:
            cmd.append("--check")
        if diff:
            cmd.append("--diff")
        e = env()
        e.update(extra_env or {})
        p = subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
        if not os.path.exists(out):
            raise AssertionError("no result from %s:\n%s" % (cmd, p.stdout))
        with open(out) as f:
            result = json.load(f)
    result["_stdout"] = p.stdout
    return result


def playbook(path, *args, extra_env=None):
    e = env()
    e.update(extra_env or {})
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", path] + list(args)
    return subprocess.run(cmd, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600, check=False)
