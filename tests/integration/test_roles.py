"""The runtime and pods roles through real playbook runs on this host."""
import json
import os
import signal
import subprocess
import time

from tests.support import pods
from tests.support.ansible_run import module, playbook

RUNTIME = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: appc.rocket.runtime
"""


def recap(out):
    line = [ln for ln in out.splitlines() if ln.startswith("localhost")][-1]
    return {k: int(v) for k, v in (f.split("=") for f in line.split(":", 1)[1].split())}


def write(tmp_path, name, text, **vars_):
    play = tmp_path / (name + ".yml")
    play.write_text(text)
    extra = tmp_path / (name + "-vars.json")
    extra.write_text(json.dumps(vars_))
    return str(play), "@" + str(extra)


def test_runtime_role_readies_the_host_and_undoes_it(tmp_path):
    dd = str(tmp_path / "rocket")
    units = tmp_path / "systemd"
    (units / "multi-user.target.wants").mkdir(parents=True)
    lib = tmp_path / "lib"
    # An ansible-pull unit of an earlier version, which the role replaces.
    (units / "appc-rocket-boot.service").write_text("[Service]\nExecStart=/usr/bin/ansible-pull\n")
    os.symlink(str(units / "appc-rocket-boot.service"), str(units / "multi-user.target.wants" / "appc-rocket-boot.service"))
    v = dict(rocket_data_dir=dd, rocket_runtime_install_packages=False, rocket_runtime_private_networks=True,
             rocket_runtime_library_dir=str(lib),
             rocket_runtime_systemd=True, rocket_runtime_systemd_dir=str(units),
             rocket_runtime_modules_load_file=str(tmp_path / "modules-load.conf"),
             rocket_runtime_sysctl_file=str(tmp_path / "sysctl.conf"))
    play, extra = write(tmp_path, "runtime", RUNTIME, **v)
    # Check mode first: it says what it would do and creates nothing.
    p = playbook(play, "-e", extra, "--check")
    assert p.returncode == 0 and recap(p.stdout)["changed"] > 0, p.stdout
    assert not os.path.exists(dd) and not (tmp_path / "sysctl.conf").exists() and not lib.exists()
    p = playbook(play, "-e", extra)
    assert p.returncode == 0 and recap(p.stdout)["changed"] > 0, p.stdout
    assert os.stat(dd).st_mode & 0o777 == 0o700
    assert (tmp_path / "modules-load.conf").read_text().splitlines()[-1] == "overlay"
    assert "net.ipv4.ip_forward = 1" in (tmp_path / "sysctl.conf").read_text()
    with open("/proc/sys/net/ipv4/ip_forward") as f:  # this test's own network namespace
        assert f.read().strip() == "1"
    unit = (units / "appc-rocket-pods.service").read_text()
    program = "/usr/bin/python3 -I -S %s/current/appc-rocket-pods.pyz" % lib
    assert "ExecStart=%s restore --data-dir %s\n" % (program, dd) in unit, unit
    assert "ExecStop=%s stop --data-dir %s\n" % (program, dd) in unit and "WantedBy=multi-user.target" in unit
    assert "RemainAfterExit=yes" in unit and "Type=oneshot" in unit
    assert os.readlink(str(units / "multi-user.target.wants" / "appc-rocket-pods.service")) == str(
        units / "appc-rocket-pods.service")
    assert not os.path.lexists(str(units / "appc-rocket-boot.service"))
    assert not os.path.lexists(str(units / "multi-user.target.wants" / "appc-rocket-boot.service"))
    version = os.readlink(str(lib / "current"))
    assert sorted(os.listdir(str(lib))) == sorted(["current", version]) and version.startswith("0.")
    # The installed program runs with python3 alone (no ansible, no site-packages).
    ran = subprocess.run(["/usr/bin/python3", "-I", "-S", str(lib / "current" / "appc-rocket-pods.pyz"), "restore",
                          "--data-dir", dd], capture_output=True, text=True, timeout=60, check=False)
    assert ran.returncode == 0 and "restore %s: 0 pod(s)" % dd in ran.stdout, (ran.stdout, ran.stderr)
    # An upgrade: a new version directory, current switched, the old one removed.
    (lib / "0.0.1-000000000000").mkdir()
    os.symlink("0.0.1-000000000000", str(lib / "current.tmp"))
    os.replace(str(lib / "current.tmp"), str(lib / "current"))
    p = playbook(play, "-e", extra)
    assert p.returncode == 0 and recap(p.stdout)["changed"] > 0, p.stdout
    assert sorted(os.listdir(str(lib))) == sorted(["current", version]) and os.readlink(str(lib / "current")) == version
    images = module("cas_image_info", {"data_dir": dd})["images"]
    assert [i["name"] for i in images] == ["appc.rocket/stage1"] or len(images) == 1, images
    p = playbook(play, "-e", extra)
    assert p.returncode == 0 and recap(p.stdout)["changed"] == 0, p.stdout
    p = playbook(play, "-e", extra, "--check")
    assert p.returncode == 0 and recap(p.stdout)["changed"] == 0, p.stdout

    absent, extra2 = write(tmp_path, "absent", RUNTIME, rocket_runtime_state="absent", rocket_runtime_remove_data=True,
                           **{k: x for k, x in v.items() if k != "rocket_runtime_state"})
    p = playbook(absent, "-e", extra2)
    assert p.returncode == 0 and recap(p.stdout)["changed"] > 0, p.stdout
    assert not os.path.exists(dd) and not (units / "appc-rocket-pods.service").exists() and not lib.exists()
    assert not os.path.lexists(str(units / "multi-user.target.wants" / "appc-rocket-pods.service"))
    assert not (tmp_path / "sysctl.conf").exists() and not (tmp_path / "modules-load.conf").exists()
    p = playbook(absent, "-e", extra2)
    assert p.returncode == 0 and recap(p.stdout)["changed"] == 0, p.stdout


def test_runtime_role_package_task_in_check_mode(tmp_path):
    """apt runs for real in check mode (no mirror needed): it answers what it would install."""
    play, extra = write(tmp_path, "pkgs", RUNTIME, rocket_data_dir=str(tmp_path / "rocket"),
                        rocket_runtime_packages=["python3", "nftables"])
    p = playbook(play, "-e", extra, "--check", "-v")
    assert p.returncode == 0, p.stdout
    task = p.stdout.split("Install the Debian packages the modules need on a target", 1)[1].split("TASK [", 1)[0]
    assert "ok: [localhost]" in task or "changed: [localhost]" in task, task
    assert not os.path.exists(str(tmp_path / "rocket"))


PODS = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: appc.rocket.pods
"""


def test_pods_role_converges_purges_and_brings_back_dead_pods(tmp_path):
    dd = str(tmp_path / "rocket")
    aci = pods.busybox_aci(tmp_path)

    def declared(*names, purge=False):
        return dict(rocket_data_dir=dd, rocket_images=[{"src": aci}], rocket_pods_purge=purge,
                    rocket_pods=[{"name": n, "image": "example.com/busybox", "net": "none",
                                  "exec": ["/bin/sh", "-c", "exec sleep 1000"]} for n in names])

    try:
        play, extra = write(tmp_path, "pods", PODS, **declared("one", "two", "three"))
        p = playbook(play, "-e", extra)
        assert p.returncode == 0 and recap(p.stdout)["changed"] == 1, p.stdout
        p = playbook(play, "-e", extra)
        assert p.returncode == 0 and recap(p.stdout)["changed"] == 0, p.stdout

        # A pod whose processes died (as after a reboot) is replaced on the next run.
        info = {x["name"]: x for x in module("pod_info", {"data_dir": dd})["pods"]}
        os.kill(info["two"]["pid"], signal.SIGKILL)
        deadline = time.time() + 30
        while time.time() < deadline and module("pod_info", {"name": "two", "data_dir": dd})["pods"][0]["state"] == "running":
            time.sleep(0.5)
        p = playbook(play, "-e", extra, "--diff")
        assert p.returncode == 0 and recap(p.stdout)["changed"] == 1, p.stdout
        after = {x["name"]: x for x in module("pod_info", {"data_dir": dd})["pods"] if x["state"] == "running"}
        assert after["two"]["uuid"] != info["two"]["uuid"] and after["one"]["uuid"] == info["one"]["uuid"]

        play, extra = write(tmp_path, "pods2", PODS, **declared("one", purge=True))
        p = playbook(play, "-e", extra, "--check")
        assert p.returncode == 0 and recap(p.stdout)["changed"] == 1, p.stdout
        assert len([x for x in module("pod_info", {"data_dir": dd})["pods"] if x["state"] == "running"]) == 3
        p = playbook(play, "-e", extra)
        assert p.returncode == 0 and recap(p.stdout)["changed"] == 1, p.stdout
        p = playbook(play, "-e", extra)
        assert p.returncode == 0 and recap(p.stdout)["changed"] == 0, p.stdout
        assert sorted(x["name"] for x in module("pod_info", {"data_dir": dd})["pods"] if x["state"] == "running") == ["one"]
    finally:
        for x in module("pod_info", {"data_dir": dd}).get("pods") or []:
            module("pod_run", {"uuid": x["uuid"], "state": "absent", "data_dir": dd})
