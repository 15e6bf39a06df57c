"""The thin payload's safety check (plugins/plugin_utils/thin_module.py) and the controller's
expected library (plugins/plugin_utils/module_action.py): a library is imported only when it
is exactly this collection's zip and only root could have written it."""
import hashlib
import json
import os
import re
import subprocess
import sys

import pytest

from ansible_collections.appc.rocket.plugins.plugin_utils import module_action, thin_module
from tests.support import thin_library

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the owner checks are root's: run as root")


@pytest.fixture
def library():
    with thin_library.installed() as (dummy, path, sha256):
        yield path, sha256


def test_the_controller_expects_what_the_runtime_role_installs(library):
    path, sha256 = library
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    assert digest == sha256 and os.path.basename(os.path.dirname(path)).endswith("-" + digest[:12])
    assert thin_module.check(path, sha256) is None


def test_a_missing_library_is_missing(library):
    path, sha256 = library
    gone = os.path.join(os.path.dirname(os.path.dirname(path)), "0.0.0-000000000000", "appc-rocket-pods.pyz")
    assert thin_module.check(gone, sha256) == (thin_module.MISSING, "%s does not exist" % os.path.dirname(gone))
    os.unlink(path)
    assert thin_module.check(path, sha256) == (thin_module.MISSING, "%s does not exist" % path)


@pytest.mark.parametrize("harm, says", [
    ("digest", "has SHA-256"),
    ("file_mode", "writable by its group or others (mode 0666)"),
    ("dir_mode", "writable by its group or others (mode 0775)"),
    ("file_owner", "owned by uid 4321, not root"),
    ("dir_owner", "owned by uid 4321, not root"),
    ("file_link", "is a symbolic link"),
    ("dir_link", "is a symbolic link"),
    ("not_a_file", "is not a regular file"),
])
def test_an_unsafe_library_is_refused_and_said_why(library, harm, says):
    path, sha256 = library
    version = os.path.dirname(path)
    target = path
    if harm == "digest":
        with open(path, "ab") as f:
            f.write(b"\0")
    elif harm == "file_mode":
        os.chmod(path, 0o666)
    elif harm == "dir_mode":
        os.chmod(version, 0o775)
        target = version
    elif harm == "file_owner":
        os.chown(path, 4321, 0)
    elif harm == "dir_owner":
        os.chown(os.path.dirname(version), 4321, 0)
        target = os.path.dirname(version)
    elif harm == "file_link":
        os.rename(path, path + ".real")
        os.symlink(path + ".real", path)
    elif harm == "dir_link":
        os.rename(version, version + ".real")
        os.symlink(os.path.basename(version) + ".real", version)
        target = version
    elif harm == "not_a_file":
        os.unlink(path)
        os.mkdir(path, 0o755)
    kind, why = thin_module.check(path, sha256)
    assert kind == thin_module.UNSAFE and why.startswith(target + " ") and says in why, why


@pytest.mark.parametrize("path", ["relative/appc-rocket-pods.pyz", "/usr/lib/../lib/appc-rocket-pods.pyz",
                                  "/usr//lib/appc-rocket-pods.pyz", "/usr/lib/appc.rocket/x/not-a-zip"])
def test_a_path_that_is_not_plainly_absolute_is_refused(path):
    kind, why = thin_module.check(path, "0" * 64)
    assert kind == thin_module.UNSAFE and "not an absolute path to a .pyz" in why


def test_the_loader_answers_why_and_imports_nothing(library):
    """Run as the host runs it: the environment names an unsafe library; the answer is the
    reason alone, and no module of the collection was imported."""
    path, sha256 = library
    os.chmod(path, 0o664)
    code = ("import runpy, sys\n"
            "try:\n"
            "    runpy.run_path(%r, run_name='__main__')\n"
            "except SystemExit:\n"
            "    pass\n"
            "print(sorted(m for m in sys.modules if m.startswith('ansible_collections')))\n"
            % thin_module.__file__)
    env = dict(os.environ, **{thin_module.ENV_LIBRARY: path, thin_module.ENV_SHA256: sha256,
                              thin_module.ENV_MODULE: "pod_info"})
    # Ansible's own package importable (ansible-test units finds it through PYTHONPATH), and
    # nothing of the collection's beside it, as on a host.
    import ansible

    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(ansible.__file__))
    p = subprocess.run([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True, check=False)
    answer, imported = p.stdout.splitlines()
    assert json.loads(answer) == {thin_module.FALLBACK: {
        "kind": "unsafe", "reason": "%s is writable by its group or others (mode 0664)" % path}}
    assert imported == "[]"


def test_the_expected_library_is_cached_per_source_state_where_only_this_user_writes(monkeypatch, tmp_path):
    base = tmp_path / "tmp"
    base.mkdir(mode=0o700)
    (base / "ansible-local-1").mkdir()
    monkeypatch.setattr(module_action.C, "DEFAULT_LOCAL_TMP", str(base / "ansible-local-1"))
    first = module_action.expected_library()
    cached = [n for n in os.listdir(base) if n.startswith("appc-rocket-library-")]
    assert len(cached) == 1 and json.loads((base / cached[0]).read_text()) == first
    assert module_action.expected_library() == first and len(os.listdir(base)) == 2
    base.chmod(0o777)  # someone else could write the cache: only the run's own directory is used
    assert module_action.expected_library() == first
    assert len([n for n in os.listdir(base / "ansible-local-1") if n.startswith("appc-rocket-library-")]) == 1


DIRECT_PLAN = {"module": "pod_run", "library": "/usr/lib/appc.rocket/x/appc-rocket-pods.pyz", "sha256": "0" * 64}


def _direct(**args):
    from ansible_collections.appc.rocket.plugins.plugin_utils import module_action

    return module_action.direct_program(DIRECT_PLAN, dict({"_ansible_module_name": "appc.rocket.pod_run"}, **args))


def test_the_direct_path_sends_what_the_module_would_have_validated():
    d = _direct(name="web", image="example.com/busybox", exec="/bin/true", secret_environment={"T": "s3cret"},
                _ansible_check_mode=True, _ansible_diff=True)
    assert d is not None
    assert d["params"]["exec"] == ["/bin/true"] and d["params"]["state"] == "running"  # types and defaults
    assert d["no_log_values"] == {"s3cret"}
    program = d["program"].decode()
    assert '"check_mode": true' in program and '"diff": true' in program
    assert "NOT_LOGGING_PARAMETER" in program and program.count("s3cret") == 1  # in the params, not in the log line


@pytest.mark.parametrize("args", [
    {"name": "web", "bogus": 1},                                     # the module's own "Unsupported parameters"
    {"name": "web", "image": "a", "apps": [{"image": "b"}]},          # mutually exclusive
    {"name": "web", "data_dir": "~/rocket"},                          # expanded on the host, for its user
    {"name": "web", "volumes": [{"name": "v", "source": "$HOME/v"}]},  # at any depth
    {"name": "web", "apps": '[{"image": "b", "mounts": [{"volume": "v", "path": "~/x"}]}]'},  # a JSON string
    {"name": "web", "_ansible_ignore_unknown_opts": True},
])
def test_the_direct_path_leaves_to_the_module_what_it_would_say_itself(args):
    assert _direct(**args) is None


def test_the_direct_path_is_only_for_modules_that_need_no_more_of_ansible():
    import importlib

    from ansible_collections.appc.rocket.plugins.plugin_utils import module_action

    assert module_action.direct_program(dict(DIRECT_PLAN, module="pod_info"), {"data_dir": "/x"}) is not None
    assert module_action.direct_program(dict(DIRECT_PLAN, module="ping"), {"data": "x"}) is None  # not ours
    modules = os.path.join(os.path.dirname(thin_module.__file__), "..", "modules")
    every = {n[:-3] for n in os.listdir(modules) if n.endswith(".py") and not n.startswith("_")}
    assert set(thin_module.DIRECT_MODULES) == every  # warnings too: no module needs Ansible on the host
    for name in thin_module.DIRECT_MODULES:
        module = importlib.import_module("ansible_collections.appc.rocket.plugins.modules." + name)
        assert callable(module.task) and module.spec()["argument_spec"], name
        with open(os.path.join(modules, name + ".py")) as f:
            used = set(re.findall(r"\bmodule\.(\w+)", f.read()))
        assert used <= {"params", "check_mode", "_diff", "exit_json", "fail_json", "warn"}, (name, used)
    utils = os.path.join(modules, "..", "module_utils")  # the tasks' helpers (rocket_module.run, pod_runner...)
    for name in os.listdir(utils):
        if name.endswith(".py"):
            with open(os.path.join(utils, name)) as f:
                used = {u for u in re.findall(r"\bmodule\.(\w+)", f.read()) if not u.startswith("__")}
            assert used <= {"params", "check_mode", "_diff", "exit_json", "fail_json", "warn"}, (name, used)
    assert _direct(name="web", exec=["/bin/sh", "-c", "echo $HOME ~"]) is not None  # not a path: as given


def test_what_the_host_would_decide_is_left_to_it():
    from ansible.module_utils.basic import env_fallback

    from ansible_collections.appc.rocket.plugins.plugin_utils import module_action

    spec = {"dir": {"type": "path"}, "token": {"type": "str", "fallback": (env_fallback, ["TOKEN"])},
            "items": {"type": "list", "elements": "dict", "options": {"where": {"type": "path", "aliases": ["at"]}}}}
    assert module_action._host_dependent(spec, {"dir": "/x"}) is True  # the fallback reads the host's environment
    del spec["token"]
    assert module_action._host_dependent(spec, {"dir": "/x", "items": [{"at": "/y"}]}) is False
    assert module_action._host_dependent(spec, {"items": [{"at": "~/y"}]}) is True  # an alias, nested
    assert module_action._host_dependent(spec, {"dir": "$HOME"}) is True


def test_the_direct_modules_warnings_reach_the_result_once_each(capsys):
    """AnsibleModule.warn's stand-in: the result's ``warnings``, which the controller shows."""
    m = thin_module.DirectModule({}, False, False)
    m.warn("the mask masks nothing for now")
    m.warn("the mask masks nothing for now")
    m.warn(ValueError("second"))
    with pytest.raises(SystemExit) as e:
        m.exit_json(changed=True)
    assert e.value.code == 0
    result = json.loads(capsys.readouterr().out)
    assert result == {"changed": True, "warnings": ["the mask masks nothing for now", "second"]}
    quiet = thin_module.DirectModule({}, False, False)
    with pytest.raises(SystemExit):
        quiet.fail_json("bad", changed=False)
    assert json.loads(capsys.readouterr().out) == {"changed": False, "failed": True, "msg": "bad"}
