"""CNI configurations (net.d/*.conflist, *.conf), the plugin search, stdin and the result's summary."""
import json
import os

import pytest

from ansible_collections.appc.rocket.plugins.module_utils.stage0 import netconf
from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import ValidationError
from ansible_collections.appc.rocket.plugins.module_utils.stage1 import cni


def test_conflist_and_conf_are_loaded_beside_json(tmp_path):
    d = tmp_path / "net.d"
    d.mkdir()
    (d / "a.conflist").write_text(json.dumps({"cniVersion": "1.0.0", "name": "a", "plugins": [
        {"type": "bridge"}, {"type": "portmap", "capabilities": {"portMappings": True}}]}))
    (d / "b.conf").write_text(json.dumps({"cniVersion": "0.4.0", "name": "b", "type": "macvlan", "master": "x"}))
    nets = netconf.load(DataDir(str(tmp_path)))
    assert nets["a"]["type"] == "cni" and [p["type"] for p in nets["a"]["cni"]["plugins"]] == ["bridge", "portmap"]
    assert nets["b"]["cni"] == {"name": "b", "cniVersion": "0.4.0", "plugins": [{"type": "macvlan", "master": "x"}]}
    assert nets["b"]["file"].endswith("b.conf") and "default" in nets


@pytest.mark.parametrize("doc, words", [
    ({"cniVersion": "1.0.0", "name": "x", "plugins": []}, "plugins"),
    ({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": "../../bin/sh"}]}, r"plugins\[0\]\.type"),
    ({"cniVersion": "1.0.0", "name": "x", "plugins": [{"type": ".hidden"}]}, "type"),
    ({"cniVersion": "1.0.0", "name": "x", "plugins": ["bridge"]}, "JSON object"),
    ({"cniVersion": "one", "name": "x", "plugins": [{"type": "bridge"}]}, "cniVersion"),
    ({"cniVersion": "1.0.0", "name": "host", "plugins": [{"type": "bridge"}]}, "reserved"),
    ({"cniVersion": "1.0.0", "name": "Bad Name", "plugins": [{"type": "bridge"}]}, "name"),
])
def test_bad_cni_configs_name_the_field(doc, words):
    with pytest.raises(ValidationError, match=words):
        netconf.validate_cni(doc, "f.conflist", False)


def test_plugin_search_and_missing_plugin(tmp_path):
    net_dir = str(tmp_path / "net")
    path = cni.search_path(net_dir)
    assert path == [str(tmp_path / "cni" / "bin"), "/opt/cni/bin", "/usr/lib/cni"]
    (tmp_path / "cni" / "bin").mkdir(parents=True)
    exe = tmp_path / "cni" / "bin" / "mine"
    exe.write_text("#!/bin/sh\n")
    with pytest.raises(cni.CNIError, match="CNI plugin mine not found"):
        cni.find_plugin("mine", path)  # not executable
    os.chmod(str(exe), 0o755)
    assert cni.find_plugin("mine", path) == str(exe)


def test_stdin_carries_name_version_prev_result_and_declared_capabilities_only():
    conflist = {"name": "n", "cniVersion": "1.0.0", "plugins": []}
    runtime = {"portMappings": [{"hostPort": 1}], "bandwidth": {"ingressRate": 8}}
    doc = json.loads(cni._stdin(conflist, {"type": "portmap", "capabilities": {"portMappings": True}}, {"ips": []},
                                runtime))
    assert doc == {"type": "portmap", "capabilities": {"portMappings": True}, "name": "n", "cniVersion": "1.0.0",
                   "prevResult": {"ips": []}, "runtimeConfig": {"portMappings": [{"hostPort": 1}]}}
    assert "runtimeConfig" not in json.loads(cni._stdin(conflist, {"type": "bridge"}, None, runtime))


def test_a_failing_plugin_reports_its_cni_error(tmp_path):
    bindir = tmp_path / "cni" / "bin"
    bindir.mkdir(parents=True)
    (bindir / "bad").write_text('#!/bin/sh\necho \'{"code": 11, "msg": "no way", "details": "why"}\'; exit 3\n')
    os.chmod(str(bindir / "bad"), 0o755)
    conflist = {"name": "n", "cniVersion": "1.0.0", "plugins": [{"type": "bad"}]}
    with pytest.raises(cni.CNIError, match=r"CNI plugin bad \(ADD of network n\) failed with status 3: no way \(why\)"):
        cni.add(str(tmp_path / "net"), "u-1", "/proc/self/ns/net", "eth0", conflist)
    cached = cni.read_cache(str(tmp_path / "net"), "u-1", "eth0")
    assert cached["config"] == conflist and cached["result"] is None  # written before the first plugin
    errors = cni.delete(str(tmp_path / "net"), "u-1", "eth0")  # DEL fails too: the cache stays for a retry
    assert len(errors) == 1 and "DEL of network n" in errors[0]
    assert cni.read_cache(str(tmp_path / "net"), "u-1", "eth0") is not None
    os.unlink(cni.cache_path(str(tmp_path / "net"), "u-1", "eth0"))


def test_summary_of_a_bridge_result():
    result = {"interfaces": [{"name": "cni0", "mac": "aa"}, {"name": "veth1234", "mac": "bb"},
                             {"name": "eth0", "mac": "02:00:00:00:00:01", "sandbox": "/x"}],
              "ips": [{"address": "10.1.0.5/24", "gateway": "10.1.0.1", "interface": 2},
                      {"address": "fd00::5/64", "interface": 2}]}
    s = cni.summary(result, "eth0")
    assert s == {"ip": "10.1.0.5", "prefix": 24, "gateway": "10.1.0.1", "mac": "02:00:00:00:00:01",
                 "host_ifname": "veth1234", "ips": ["10.1.0.5/24", "fd00::5/64"]}
