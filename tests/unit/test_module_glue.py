"""The one module glue (rocket_module.run) and the one pod lookup every module and the
connection use: library errors become the task's failure with their message, and the
lookups fail with the same words wherever they are called from."""
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils import rocket_module
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DEFAULT_DATA_DIR, DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import NotFoundError, RocketError


class Exited(Exception):
    pass


class FakeModule:
    """What run needs of an AnsibleModule; exits raise, as Ansible's exit by SystemExit."""

    def __init__(self):
        self.params = {"data_dir": DEFAULT_DATA_DIR}
        self.outcome = None

    def exit_json(self, **result):
        self.outcome = ("exit", result)
        raise Exited

    def fail_json(self, **result):
        self.outcome = ("fail", result)
        raise Exited


def outcome(task):
    m = FakeModule()
    with pytest.raises(Exited):
        rocket_module.run(m, task)
    return m.outcome


def raising(error):
    def task(dummy_module):
        raise error

    return task


def test_run_maps_results_and_library_errors():
    assert outcome(lambda m: {"changed": True}) == ("exit", {"changed": True})
    assert outcome(raising(NotFoundError("no pod x"))) == ("fail", {"msg": "no pod x"})
    failed = rocket_module.TaskFailed("app a failed", changed=True, pod={"uuid": "u"})
    assert outcome(raising(failed)) == ("fail", {"msg": "app a failed", "changed": True, "pod": {"uuid": "u"}})


def test_run_lets_bugs_keep_their_traceback():
    with pytest.raises(KeyError):
        rocket_module.run(FakeModule(), lambda m: {}["missing"])


def test_one_data_dir_default():
    assert rocket_module.DATA_DIR_OPTION == {"data_dir": {"type": "path", "default": DEFAULT_DATA_DIR}}


def test_lookup_messages(tmp_path):
    dd = DataDir(str(tmp_path / "none"))
    with pytest.raises(NotFoundError, match="^no pod named web in %s$" % dd.path):
        podmod.lookup(dd, name="web")
    with pytest.raises(NotFoundError, match="data directory %s does not exist" % dd.path):
        podmod.lookup_ref(dd, "web")
    dd = DataDir(str(tmp_path / "dd")).ensure()
    with pytest.raises(NotFoundError, match=r"^no pod named web and none with that UUID in .* \(named pods: none\)$"):
        podmod.lookup_ref(dd, "web")
    with pytest.raises(NotFoundError, match="is not a pod UUID"):
        podmod.lookup(dd, uuid="not-a-uuid")


class _Pod:
    uuid = "0123"

    def __init__(self, *apps):
        self.apps = apps

    def manifest(self):
        return {"apps": [{"name": a} for a in self.apps]}


def test_choose_app():
    assert podmod.choose_app(_Pod("a"), None) == "a"
    assert podmod.choose_app(_Pod("a", "b"), "b") == "b"
    with pytest.raises(RocketError, match="^pod 0123 has apps a, b: say which one to enter$"):
        podmod.choose_app(_Pod("a", "b"), None)
    with pytest.raises(RocketError, match=r"^pod web has no app c \(apps: a, b\)$"):
        podmod.choose_app(_Pod("a", "b"), "c", label="web")
    with pytest.raises(RocketError, match="^pod web has apps a, b: set x$"):
        podmod.choose_app(_Pod("a", "b"), None, label="web", hint="set x")


def test_image_build_happens_in_the_store_tmp(tmp_path, monkeypatch):
    """A rootfs build writes its archive under cas/tmp, never the system's temporary directory."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import aci, image_converge
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    seen = []
    real = aci.build_aci

    def build(rootfs, manifest, out, **kw):
        seen.append(out)
        return real(rootfs, manifest, out, **kw)

    monkeypatch.setattr(aci, "build_aci", build)
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    (rootfs / "hello").write_text("hi")
    params = {"state": "present", "default_stage1": None, "src": None, "rootfs": str(rootfs), "name": None,
              "manifest": {"name": "example.com/glue", "labels": [{"name": "version", "value": "1"}]},
              "labels": {}, "id": None, "pull": "new"}
    with Store(str(tmp_path / "dd")) as store:
        changed, before, after, extra = image_converge.converge(store, params, True, str(tmp_path / "dd"))
        assert changed and before == {} and after["name"] == "example.com/glue"
        assert os.path.dirname(os.path.dirname(seen[0])) == store.dd.tmp
        assert not os.listdir(store.dd.tmp)
