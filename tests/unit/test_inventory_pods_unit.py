"""The pods inventory's lister, run as it is on a pod host (python3 -, script on stdin), on a
data directory laid out by hand: states from the directory and its lock, names, manifests."""
import fcntl
import json
import os
import subprocess
import sys

from tests.support.ansible_run import env

from ansible_collections.appc.rocket.plugins.inventory import pods as inv

RUN, EXITED, PREP = ("%08x-0000-4000-8000-000000000000" % i for i in (1, 2, 3))


def lay_out(dd):
    def pod(state, uuid, manifest):
        p = os.path.join(dd, "pods", state, uuid)
        os.makedirs(p)
        with open(os.path.join(p, "pod"), "w") as f:
            json.dump(manifest, f)
        return p

    app = {"name": "web", "image": {"name": "example.com/web", "id": "sha512-aa",
                                    "labels": [{"name": "version", "value": "1.2"}]}}
    run = pod("run", RUN, {"apps": [app], "annotations": [{"name": "tier", "value": "front"}]})
    with open(os.path.join(run, "pid"), "w") as f:
        f.write("4242\n")
    pod("run", EXITED, {"apps": [app]})
    pod("prepared", PREP, {"apps": [app, dict(app, name="side")]})
    os.makedirs(os.path.join(dd, "pods", "garbage", "not-a-uuid"))
    os.makedirs(os.path.join(dd, "names"))
    for name, uuid in (("web", RUN), ("old", EXITED)):
        with open(os.path.join(dd, "names", name), "w") as f:
            f.write(uuid + "\n")
    return run


def lister(*args):
    p = subprocess.run([sys.executable, "-I", "-"] + list(args), input=inv.LISTER.encode(), capture_output=True,
                       check=True, timeout=60)
    return {x["uuid"]: x for x in json.loads(p.stdout)["pods"]}


def test_lister_reads_states_names_and_manifests(tmp_path):
    dd = str(tmp_path / "rocket")
    run = lay_out(dd)
    fd = os.open(run, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what stage1 holds while the pod runs
        pods = lister(dd)
        running = lister(dd, "running")
    finally:
        os.close(fd)
    assert sorted(pods) == [RUN, EXITED, PREP]
    assert pods[RUN]["state"] == "running" and pods[RUN]["name"] == "web" and pods[RUN]["pid"] == 4242
    assert pods[RUN]["annotations"] == {"tier": "front"}
    assert pods[RUN]["apps"] == [{"name": "web", "image_name": "example.com/web", "image_id": "sha512-aa",
                                  "labels": {"version": "1.2"}}]
    assert pods[EXITED]["state"] == "exited" and pods[EXITED]["name"] == "old" and pods[EXITED]["pid"] is None
    assert pods[PREP]["state"] == "prepared" and pods[PREP]["name"] is None and len(pods[PREP]["apps"]) == 2
    assert list(running) == [RUN]
    assert lister(dd)[RUN]["state"] == "exited"  # the lock is gone: stage1 no longer runs it


def test_lister_on_a_missing_data_dir_lists_nothing(tmp_path):
    assert lister(str(tmp_path / "nothing")) == {}


def test_group_names_are_identifiers():
    assert inv._group_name("pods_image_example.com/web-app") == "pods_image_example_com_web_app"


def test_a_local_pod_host_is_listed_without_ssh_and_grouped(tmp_path):
    dd = str(tmp_path / "rocket")
    lay_out(dd)
    hosts = tmp_path / "10-hosts.yml"
    hosts.write_text(json.dumps({"here": {"hosts": {"ctl": {"ansible_connection": "local", "rocket_data_dir": dd,
                                                            "ansible_python_interpreter": sys.executable}}}}))
    cfg = tmp_path / "20-here.pods.yml"
    cfg.write_text(json.dumps({"plugin": "appc.rocket.pods", "hosts_group": "here", "ssh_executable": "/nonexistent",
                               "per_app": True, "filters": [{"exclude": "rocket_pod_state == 'exited'"}]}))
    e = env()
    e["ANSIBLE_INVENTORY_ANY_UNPARSED_IS_FAILED"] = "1"
    p = subprocess.run([sys.executable, "-m", "ansible.cli.inventory", "-i", str(hosts), "-i", str(cfg), "--list"], env=e,
                       capture_output=True, text=True, timeout=120, check=False)
    assert p.returncode == 0, p.stderr
    inv = json.loads(p.stdout, object_hook=lambda d: d["__ansible_unsafe"] if list(d) == ["__ansible_unsafe"] else d)
    short = PREP[:8]
    assert sorted(inv["pods"]["hosts"]) == ["ctl-%s-side" % short, "ctl-%s-web" % short], inv  # exited one filtered
    assert sorted(inv["pods_prepared"]["hosts"]) == sorted(inv["pods"]["hosts"])
    assert sorted(inv["pods_label_version_1_2"]["hosts"]) == sorted(inv["pods"]["hosts"])
    side = inv["_meta"]["hostvars"]["ctl-%s-side" % short]
    assert side["ansible_rocket_app"] == "side" and side["ansible_rocket_pod"] == PREP, side
    assert side["ansible_rocket_data_dir"] == dd and side["rocket_pod_host"] == "ctl", side
