"""The appc.rocket.pods inventory over three fleet hosts: ssh to each, list its pods, group them.

The pods are made locally with pod_set on each host's data directory (the hosts share this
machine's disk); the listing itself goes over each host's own sshd, as a user's would.
"""
import json
import os
import subprocess

from tests.support import pods
from tests.support.ansible_run import BIN, module
from tests.support.fleet import HOSTS, recap

PLAY = """
- name: Every running pod of the fleet, found by the inventory
  hosts: pods_running
  gather_facts: false
  tasks:
    - name: A file inside the pod, by raw (busybox has no Python)
      ansible.builtin.raw: echo {{ inventory_hostname }} > /tmp/from-inventory
"""

SSH = ["-o", "UserKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=no", "-o", "ControlMaster=no",
       "-o", "LogLevel=ERROR"]


def converge(data_dir, images, pod_list):
    r = module("pod_set", {"data_dir": data_dir, "images": [{"src": i} for i in images], "pods": pod_list})
    assert not r.get("failed"), r


def sleeper(name, image, **extra):
    p = {"name": name, "image": image, "net": "none", "stop_timeout": 2,
         "exec": ["/bin/sh", "-c", "exec sleep 100000"]}
    p.update(extra)
    return p


def inventory(tmp_path, fleet, config, *args, strict=False):
    hosts = fleet.write_inventory(tmp_path / "10-hosts.json", group="podhosts")
    cfg = tmp_path / "20-fleet.pods.yml"
    cfg.write_text(json.dumps(dict({"plugin": "appc.rocket.pods", "hosts_group": "podhosts", "ssh_args": SSH}, **config)))
    e = fleet.env()
    if strict:  # an inventory source that fails is otherwise a warning to Ansible
        e["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "1"
    p = subprocess.run([os.path.join(BIN, "ansible-inventory"), "-i", hosts, "-i", str(cfg)] + list(args),
                       env=e, capture_output=True, text=True, timeout=120, check=False)
    return p


def test_inventory_lists_and_groups_the_pods_of_three_hosts(tmp_path, fleet):
    busybox = pods.busybox_aci(tmp_path)
    tools = pods.busybox_aci(tmp_path, name="example.com/tools", version="2.0.0")
    converge(fleet.data_dir("alpha"), [busybox], [sleeper("web", "example.com/busybox", annotations={"tier": "front"}),
                                                  sleeper("worker", "example.com/busybox")])
    converge(fleet.data_dir("beta"), [busybox, tools], [sleeper("web", "example.com/busybox", annotations={"tier": "front"}),
                                                        sleeper("tools", "example.com/tools:2.0.0")])
    converge(fleet.data_dir("gamma"), [tools], [sleeper("tools", "example.com/tools:2.0.0"),
                                                dict(sleeper("job", "example.com/tools:2.0.0"), state="exited",
                                                     exec=["/bin/true"])])
    # gamma's data dir is not the default: the plugin must take the host's rocket_data_dir.
    p = inventory(tmp_path, fleet, {"keyed_groups": [{"key": "rocket_pod_name", "prefix": "name"}],
                                    "groups": {"tooling": "'example.com/tools' in rocket_pod_images"},
                                    "compose": {"pod_short": "rocket_pod_uuid[:8]"}}, "--list")
    assert p.returncode == 0, p.stderr
    inv = json.loads(p.stdout, object_hook=_safe)
    hv = inv["_meta"]["hostvars"]
    pod_hosts = sorted(h for h in hv if "rocket_pod_uuid" in hv[h])
    assert pod_hosts == ["alpha-web", "alpha-worker", "beta-tools", "beta-web", "gamma-job", "gamma-tools"], pod_hosts

    def members(g):
        return sorted(inv.get(g, {}).get("hosts", []))

    assert members("pods_running") == ["alpha-web", "alpha-worker", "beta-tools", "beta-web", "gamma-tools"]
    assert members("pods_exited") == ["gamma-job"]
    assert members("pods_image_example_com_tools") == ["beta-tools", "gamma-job", "gamma-tools"]
    assert members("pods_image_example_com_busybox") == ["alpha-web", "alpha-worker", "beta-web"]
    assert members("pods_label_version_2_0_0") == ["beta-tools", "gamma-job", "gamma-tools"]
    assert members("pods_annotation_tier_front") == ["alpha-web", "beta-web"]
    assert members("pods_host_gamma") == ["gamma-job", "gamma-tools"]
    assert members("name_web") == ["alpha-web", "beta-web"]                      # keyed_groups
    assert members("tooling") == ["beta-tools", "gamma-job", "gamma-tools"]     # groups
    web = hv["beta-web"]
    uuid = {v: k for k, v in _names(fleet.data_dir("beta")).items()}["web"]
    assert web["ansible_connection"] == "appc.rocket.pod" and web["ansible_rocket_pod"] == uuid, web
    assert web["pod_short"] == uuid[:8]                                          # compose
    assert web["ansible_rocket_app"] == "busybox" and web["ansible_rocket_pod_host"] == "beta", web
    assert web["ansible_rocket_data_dir"] == fleet.data_dir("beta") and web["ansible_host"] == HOSTS["beta"], web
    assert isinstance(web["rocket_pod_pid"], int) and web["rocket_pod_pid"] > 1, web
    # Listing started nothing in any pod: each pod's PID 1 still has its one child (sleep) and no other.
    for name in HOSTS:
        for u in _names(fleet.data_dir(name)):
            pid = hv["%s-%s" % (name, _names(fleet.data_dir(name))[u])]["rocket_pod_pid"]
            if pid:
                assert len(_descendants(pid)) <= 2, (name, u, _descendants(pid))

    # A play against pods_running, through the pod connection's remote mode, writes a file in each running pod.
    play = tmp_path / "touch.yml"
    play.write_text(PLAY)
    hosts_inv = str(tmp_path / "10-hosts.json")
    p = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", hosts_inv, "-i", str(tmp_path / "20-fleet.pods.yml"),
                        "--forks", "3", str(play)], env=fleet.env(), capture_output=True, text=True, timeout=300,
                       check=False)
    running = members("pods_running")
    rows = recap(p.stdout, running)
    assert p.returncode == 0 and sorted(rows) == running, p.stdout + p.stderr
    assert all(r["changed"] == 1 and r["failed"] == 0 for r in rows.values()), p.stdout
    for h in running:
        host, pod = hv[h]["rocket_pod_host"], hv[h]["rocket_pod_name"]
        r = module("pod_enter", {"data_dir": fleet.data_dir(host), "name": pod, "argv": ["cat", "/tmp/from-inventory"]})
        assert not r.get("failed") and r["stdout"].strip() == h, (h, r)

    # cache: a listing kept by a cache plugin is used again (with gamma down, its pods are still there).
    cache = {"cache": True, "cache_plugin": "ansible.builtin.jsonfile", "cache_connection": str(tmp_path / "cache"),
             "cache_timeout": 600}
    p = inventory(tmp_path, fleet, cache, "--list")
    assert p.returncode == 0 and os.listdir(str(tmp_path / "cache")), p.stderr
    fleet.stop_sshd("gamma")
    p = inventory(tmp_path, fleet, cache, "--list")
    assert p.returncode == 0 and "cannot list" not in p.stderr, p.stderr
    assert "gamma-tools" in json.loads(p.stdout, object_hook=_safe)["pods_running"]["hosts"], p.stdout

    # --graph, states/filters/per_app, and a host that is down (a warning, not a failure).
    p = inventory(tmp_path, fleet, {"states": ["running"], "per_app": True,
                                    "filters": [{"exclude": "rocket_pod_name == 'worker'"}]}, "--graph")
    assert p.returncode == 0, p.stderr
    assert "cannot list the pods of gamma" in p.stderr, p.stderr
    graph = p.stdout
    assert "@pods_running:" in graph and "alpha-web-busybox" in graph and "beta-tools-tools" in graph, graph
    assert "alpha-worker" not in graph and "gamma-" not in graph, graph
    p = inventory(tmp_path, fleet, {"unreachable": "error"}, "--list", strict=True)
    assert p.returncode != 0 and "cannot list the pods of gamma" in p.stderr, p.stderr
    p = inventory(tmp_path, fleet, {"hosts_group": "nosuch"}, "--list", strict=True)
    assert p.returncode != 0 and "hosts_group nosuch" in p.stderr, p.stderr


def _safe(d):
    """--list marks values from an inventory plugin unsafe ({"__ansible_unsafe": value})."""
    return d["__ansible_unsafe"] if list(d) == ["__ansible_unsafe"] else d


def _names(data_dir):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
    return podmod.pod_names(DataDir(data_dir))


def _descendants(pid):
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            kids = []
        out += kids
        todo += kids
    return out
