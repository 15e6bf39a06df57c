"""The pod modules through real ansible runs: check, apply, apply again, check again."""
import json
import os
import subprocess

import pytest

from tests.support import pods
from tests.support.ansible_run import BIN, env, module


def four_steps(args, expect_action):
    r = module("pod_run", args, check=True, diff=True)
    assert r["changed"] is True and r["action"] == expect_action, r
    checked = r
    r = module("pod_run", args, diff=True)
    assert r["changed"] is True and r["action"] == expect_action, r
    applied = r
    r = module("pod_run", args)
    assert r["changed"] is False and r["action"] == "none", r
    r = module("pod_run", args, check=True)
    assert r["changed"] is False, r
    return checked, applied


def documented_pod_fields():
    import yaml
    from ansible_collections.appc.rocket.plugins.modules import pod_run

    return set(yaml.safe_load(pod_run.RETURN)["pod"]["contains"])


def test_pod_run_converges_and_replaces_on_change(dd):
    base = {"name": "web", "image": "example.com/busybox", "net": "none", "data_dir": dd,
            "exec": ["/bin/sh", "-c", "echo v1; exec sleep 1000"]}
    checked, applied = four_steps(base, "run")
    assert checked["diff"]["before"] == {} and checked["diff"]["after"]["state"] == "running"
    pod1 = applied["pod"]
    assert pod1["state"] == "running" and pod1["pid"] and pod1["name"] == "web"
    assert set(pod1) == documented_pod_fields()  # RETURN, written by tools/module_docs.py

    changed = dict(base, exec=["/bin/sh", "-c", "echo v2; exec sleep 1000"])
    checked, applied = four_steps(changed, "replace")
    assert checked["diff"] == {"before": {"apps[0].exec": base["exec"]}, "after": {"apps[0].exec": changed["exec"]}}
    assert "apps[0].exec" in " ".join(applied["reasons"])
    assert applied["pod"]["uuid"] != pod1["uuid"]

    # A secret: changed and reported, never shown.
    secret = dict(changed, secret_environment={"TOKEN": "hunter2-secret"})
    checked, applied = four_steps(secret, "replace")
    assert "hunter2" not in json.dumps(checked) and "hunter2" not in json.dumps(applied)
    assert checked["diff"]["after"]["secret_environment"] == [["TOKEN", "********"]]
    spec_files = [os.path.join(r, f) for r, dummy_dirs, fs in os.walk(os.path.join(dd, "pods", "run")) for f in fs
                  if f in ("spec.json", "pod")]
    for f in spec_files:
        assert os.stat(f).st_mode & 0o077 == 0, f
    with open([f for f in spec_files if f.endswith("spec.json")][0]) as fh:
        assert "hunter2" not in fh.read()
    r = module("pod_enter", {"name": "web", "command": "sh -c 'echo $TOKEN'", "data_dir": dd})
    assert r["rc"] == 0 and r["stdout"] == "hunter2-secret\n", r

    info = module("pod_info", {"name": "web", "data_dir": dd})
    assert [p["state"] for p in info["pods"]] == ["running"]
    assert set(info["pods"][0]) == documented_pod_fields()
    assert "v2" in info["pods"][0]["apps"][0]["log"]

    r = module("pod_run", {"name": "web", "state": "absent", "data_dir": dd}, check=True)
    assert r["changed"] is True
    r = module("pod_run", {"name": "web", "state": "absent", "data_dir": dd})
    assert r["changed"] is True and r["action"] == "remove"
    assert module("pod_run", {"name": "web", "state": "absent", "data_dir": dd})["changed"] is False
    assert module("pod_info", {"data_dir": dd})["pods"] == [] or all(
        p["state"] != "running" for p in module("pod_info", {"data_dir": dd})["pods"])


def test_job_runs_once_and_wait_reports_failure(dd):
    job = {"name": "job", "image": "example.com/busybox", "exec": ["/bin/sh", "-c", "echo did-it"],
           "state": "exited", "net": "none", "data_dir": dd}
    r = module("pod_run", job)
    assert r["changed"] is True and r["pod"]["state"] == "exited"
    assert r["pod"]["apps"][0]["exit_code"] == 0 and "did-it" in r["pod"]["apps"][0]["log"]
    assert module("pod_run", job)["changed"] is False

    bad = {"name": "bad", "image": "example.com/busybox", "exec": ["/bin/sh", "-c", "echo oops >&2; exit 5"],
           "wait": True, "net": "none", "data_dir": dd}
    r = module("pod_run", bad)
    assert r.get("failed") and "exit code 5" in r["msg"] and "bad" in r["msg"]
    assert "oops" in r["pod"]["apps"][0]["log"]
    r = module("pod_run", dict(bad, name="bad2", fail_on_app_error=False))
    assert not r.get("failed") and r["pod"]["apps"][0]["exit_code"] == 5

    missing = {"name": "nobin", "image": "example.com/busybox", "exec": ["/bin/nope"], "net": "none", "data_dir": dd}
    r = module("pod_run", missing)
    assert r.get("failed") and "/bin/nope" in r["msg"]


def test_enter_does_not_run_in_check_mode(dd):
    module("pod_run", {"name": "e", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"],
                       "net": "none", "data_dir": dd})
    marker = "/tmp/rocket-enter-check-%d" % os.getpid()
    r = module("pod_enter", {"name": "e", "argv": ["/bin/touch", "/x"], "data_dir": dd}, check=True)
    assert r["changed"] is True and "rc" not in r
    r = module("pod_enter", {"name": "e", "argv": ["/bin/sh", "-c", "ls /x; exit 3"], "data_dir": dd})
    assert r["rc"] == 3 and not r.get("failed")
    r = module("pod_enter", {"name": "e", "argv": ["/bin/false"], "fail_on_error": True, "data_dir": dd})
    assert r.get("failed") and r["rc"] == 1
    assert not os.path.exists(marker)


def test_enter_output_is_capped_by_max_output(dd):
    """A pod cannot fill the controller's memory through pod_enter's result: past max_output
    on either stream the command is killed and the task fails naming the stream and option."""
    module("pod_run", {"name": "big", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"],
                       "net": "none", "data_dir": dd})
    r = module("pod_enter", {"name": "big", "argv": ["/bin/cat", "/dev/zero"], "max_output": 1 << 20,
                             "timeout": 60, "data_dir": dd})
    assert r.get("failed") and "more than max_output (1048576 bytes) to stdout" in r["msg"], r
    r = module("pod_enter", {"name": "big", "argv": ["/bin/sh", "-c", "head -c 2000000 /dev/zero >&2"],
                             "max_output": 1 << 20, "timeout": 60, "data_dir": dd})
    assert r.get("failed") and "to stderr" in r["msg"], r
    script = "head -c 1048576 /dev/zero; cat"  # exactly the limit, and stdin fed back
    r = module("pod_enter", {"name": "big", "argv": ["/bin/sh", "-c", script], "stdin": "", "max_output": 1 << 20,
                             "data_dir": dd})
    assert not r.get("failed") and r["rc"] == 0 and len(r["stdout"]) == 1 << 20, {k: r[k] for k in r if k != "stdout"}
    r = module("pod_enter", {"name": "big", "argv": ["/bin/cat"], "stdin": "x" * 300000, "data_dir": dd})
    assert r["rc"] == 0 and r["stdout"] == "x" * 300000


def test_enter_as_another_user_is_what_the_app_itself_could_do(dd):
    """pod_enter's user (docker exec -u): a root app's command becomes the user and loses its
    capabilities; an app of another user cannot become root; a user the image lacks, or a
    group, fails the task naming it, and no command ran."""
    probe = ["/bin/sh", "-c", "id; echo HOME=$HOME; grep CapEff /proc/self/status"]
    module("pod_run", {"name": "eu", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"],
                       "net": "none", "data_dir": dd})
    r = module("pod_enter", {"name": "eu", "argv": probe, "data_dir": dd})
    assert r["rc"] == 0 and "uid=0(root)" in r["stdout"] and "CapEff:\t0000000000000000" not in r["stdout"], r
    r = module("pod_enter", {"name": "eu", "argv": probe, "user": "nobody", "data_dir": dd})
    assert r["rc"] == 0, r
    assert "uid=65534(nobody) gid=65534(nogroup) groups=65534(nogroup)" in r["stdout"], r["stdout"]
    assert "HOME=/nonexistent" in r["stdout"] and "CapEff:\t0000000000000000" in r["stdout"], r["stdout"]
    # a group given, the image's /etc/group, and HOME left as the task sets it
    r = module("pod_enter", {"name": "eu", "argv": probe, "user": "app:extra", "environment": {"HOME": "/tmp"},
                             "data_dir": dd})
    assert "uid=1000(app) gid=2000(extra) groups=2000(extra)" in r["stdout"] and "HOME=/tmp" in r["stdout"], r
    # a number the image does not list: its own number as the group, / as home
    r = module("pod_enter", {"name": "eu", "argv": probe, "user": "1234", "data_dir": dd})
    assert "uid=1234 gid=1234 groups=1234" in r["stdout"] and "HOME=/\n" in r["stdout"], r["stdout"]
    for bad, words in (("nosuch", "user 'nosuch' not found"), ("app:nosuch", "group 'nosuch' not found"),
                       ("/etc/passwd", "is not user[:group]")):
        r = module("pod_enter", {"name": "eu", "argv": ["/bin/touch", "/ran"], "user": bad, "data_dir": dd})
        assert r.get("failed") and "did not run" in r["msg"] and words in r["msg"] and "rc" not in r, (bad, r)
    r = module("pod_enter", {"name": "eu", "argv": ["/bin/sh", "-c", "ls /ran"], "data_dir": dd})
    assert r["rc"] != 0, r  # none of them ran
    r = module("pod_enter", {"name": "eu", "argv": ["/bin/nope"], "data_dir": dd})  # no rc=254 as if it had run
    assert r.get("failed") and "exec /bin/nope: No such file" in r["msg"] and "rc" not in r, r

    module("pod_run", {"name": "eu2", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"],
                       "user": "app", "group": "app", "net": "none", "data_dir": dd})
    r = module("pod_enter", {"name": "eu2", "argv": probe, "user": "app", "data_dir": dd})
    assert r.get("rc") == 0 and "uid=1000(app) gid=1000(app)" in r["stdout"], r
    r = module("pod_enter", {"name": "eu2", "argv": ["/bin/touch", "/tmp/ran"], "user": "root", "data_dir": dd})
    assert r.get("failed") and "user root (the app's own privileges decide)" in r["msg"], r
    assert "Operation not permitted" in r["msg"], r
    r = module("pod_enter", {"name": "eu2", "argv": ["/bin/sh", "-c", "ls /tmp/ran"], "data_dir": dd})
    assert r["rc"] != 0, r


PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - appc.rocket.pod_run:
        name: race
        image: example.com/busybox
        exec: [/bin/sleep, "1000"]
        net: none
        data_dir: %s
"""


def test_two_playbooks_at_once_end_with_one_pod(dd, tmp_path):
    play = tmp_path / "race.yml"
    play.write_text(PLAY % dd)
    cmd = [os.path.join(BIN, "ansible-playbook"), "-i", "localhost,", "-c", "local", str(play)]
    procs = [subprocess.Popen(cmd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for dummy in range(3)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert sum("changed=1" in o for o in outs) == 1, outs
    running = [p for p in module("pod_info", {"data_dir": dd})["pods"] if p["state"] == "running"]
    assert len(running) == 1


def test_ad_hoc_on_a_fresh_data_dir(tmp_path):
    d = str(tmp_path / "fresh")
    aci = pods.busybox_aci(tmp_path)
    e = env()
    p = subprocess.run([os.path.join(BIN, "ansible"), "localhost", "-c", "local", "-m", "appc.rocket.cas_image",
                        "-a", "src=%s data_dir=%s" % (aci, d)], env=e, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    p = subprocess.run([os.path.join(BIN, "ansible"), "localhost", "-c", "local", "-m", "appc.rocket.pod_run",
                        "-a", "name=hello image=example.com/busybox state=exited net=none data_dir=%s" % d],
                       env=e, capture_output=True, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "hello from busybox" in p.stdout
    r = module("pod_gc", {"grace": 0, "data_dir": d})
    assert r["removed"], r


@pytest.mark.parametrize("change", [
    {"environment": {"MODE": "two"}},
    {"volumes": [{"name": "data", "kind": "empty", "mode": "0700"}], "mounts": [{"volume": "data", "path": "/data"}]},
    {"isolators": [{"name": "resource/memory", "value": {"limit": "64M"}}]},
    {"read_only_rootfs": True},
])
def test_each_option_group_four_steps(dd, change):
    base = {"name": "grp", "image": "example.com/busybox", "exec": ["/bin/sleep", "1000"], "net": "none",
            "data_dir": dd, "environment": {"MODE": "one"}}
    r = module("pod_run", base)
    assert r["changed"] is True
    checked, applied = four_steps(dict(base, **change), "replace")
    fields = set(checked["diff"]["after"])
    assert fields and all(any(f.endswith(k) or f == k for k in change) for f in fields), checked["diff"]
    assert applied["pod"]["state"] == "running"


def test_hostname_and_domainname_inside_the_pod_and_bad_names_refused_up_front(dd):
    args = {"name": "uts", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
            "hostname": "web-1", "domainname": "corp.example",
            "exec": ["/bin/sh", "-c", "echo host=$(hostname) domain=$(cat /proc/sys/kernel/domainname)"]}
    checked, applied = four_steps(args, "run")
    assert checked["diff"]["after"]["run"]["domainname"] == "corp.example", checked["diff"]
    assert "host=web-1 domain=corp.example" in applied["pod"]["apps"][0]["log"], applied["pod"]["apps"][0]["log"]
    assert (applied["pod"]["hostname"], applied["pod"]["domainname"]) == ("web-1", "corp.example")
    # a pod that sets neither has the kernel's "(none)" and the runtime's rkt-<uuid> host name
    r = module("pod_run", dict(args, name="plain", hostname=None, domainname=None))
    log = r["pod"]["apps"][0]["log"]
    assert "host=rkt-%s domain=(none)" % r["pod"]["uuid"].replace("-", "")[:8] in log, log
    info = module("pod_info", {"name": "plain", "data_dir": dd})["pods"][0]
    assert "host=%s " % info["hostname"] in log and info["domainname"] is None, info
    r = module("pod_run", dict(args, domainname="other"), diff=True)
    assert r["action"] == "replace" and r["diff"]["after"] == {"run.domainname": "other"}, r

    # A name that would forge /etc/hosts lines or that the kernel refuses fails before any
    # pod is made (a 100-character host name once left a failed pod behind).
    before = [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]]
    for bad, where in ((dict(args, name="bad", hostname="x" * 100), "hostname"),
                       (dict(args, name="bad", hostname="a\n10.0.0.1 evil"), "hostname"),
                       (dict(args, name="bad", domainname="two words"), "domainname")):
        for check in (True, False):
            r = module("pod_run", bad, check=check)
            assert r.get("failed") and r["msg"].startswith(where + ":"), (where, r.get("msg"))
    assert [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]] == before


def _host_sysctl(name):
    with open("/proc/sys/" + name.replace(".", "/")) as f:
        return f.read().strip()


def test_sysctls_are_the_pods_and_never_the_hosts(dd):
    host = (_host_sysctl("net.ipv4.ip_default_ttl"), _host_sysctl("kernel.shmmni"))
    want = ("33" if host[0] != "33" else "34", "1234" if host[1] != "1234" else "1235")
    args = {"name": "sys", "image": "example.com/busybox", "net": "none", "data_dir": dd, "state": "exited",
            "sysctls": {"net.ipv4.ip_default_ttl": int(want[0]), "kernel/shmmni": want[1]},
            "exec": ["/bin/sh", "-c", "echo ttl=$(cat /proc/sys/net/ipv4/ip_default_ttl) "
                     "shmmni=$(cat /proc/sys/kernel/shmmni)"]}
    checked, applied = four_steps(args, "run")
    assert checked["diff"]["after"]["spec"]["sysctls"] == {"kernel.shmmni": want[1], "net.ipv4.ip_default_ttl": want[0]}
    log = applied["pod"]["apps"][0]["log"]
    assert "ttl=%s shmmni=%s" % want in log, log
    assert (_host_sysctl("net.ipv4.ip_default_ttl"), _host_sysctl("kernel.shmmni")) == host
    r = module("pod_run", dict(args, sysctls={"kernel.shmmni": want[1]}), diff=True)
    assert r["action"] == "replace" and list(r["diff"]["after"]) == ["sysctls"], r
    # With its own user namespace the pod's root owns its IPC namespace: Linux 5.17+ lets
    # only that root write the IPC sysctls, and stage1 writes them from inside (net=host too).
    for net in ("none", "host"):
        sysctls = {"kernel.shmmni": want[1]} if net == "host" else args["sysctls"]
        r = module("pod_run", dict(args, name="userns-" + net, net=net, private_users=True, sysctls=sysctls))
        log = r["pod"]["apps"][0]["log"] if r.get("pod") else r.get("msg")
        assert not r.get("failed") and "shmmni=%s" % want[1] in log, (net, log)
        assert net == "host" or "ttl=%s" % want[0] in log, log

    # What would change the host, or contradict an app's own isolator, fails before anything changes.
    before = [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]]
    iso = [{"name": "os/unix/sysctl", "value": {"kernel.shmmni": "999"}}]
    for bad, why in ((dict(args, name="bad", net="host"), "sysctls: net.ipv4.ip_default_ttl needs the pod's own network"),
                     (dict(args, name="bad", sysctls={"vm.swappiness": 10}), "sysctls.vm.swappiness"),
                     (dict(args, name="bad", isolators=iso), "sysctls.kernel.shmmni")):
        for check in (True, False):
            r = module("pod_run", bad, check=check)
            assert r.get("failed") and r["msg"].startswith(why), (why, check, r.get("msg"))
    # an image's own isolator is known only at prepare (check mode cannot see it)
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    with Store(dd) as st:
        st.import_file(pods.busybox_aci(os.path.join(dd, "..", "img"), name="example.com/sysimg", app={
            "exec": ["/bin/true"], "user": "0", "group": "0", "isolators": iso}))
    r = module("pod_run", dict(args, name="bad", image="example.com/sysimg"))
    assert r.get("failed") and r["msg"].startswith("sysctls.kernel.shmmni") and "app sysimg's" in r["msg"], r
    assert [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]] == before
    assert (_host_sysctl("net.ipv4.ip_default_ttl"), _host_sysctl("kernel.shmmni")) == host


def test_check_mode_reports_an_image_an_earlier_task_would_import(tmp_path):
    d = str(tmp_path / "empty")
    r = module("pod_run", {"name": "later", "image": "example.com/not-yet", "data_dir": d}, check=True)
    assert r["changed"] is True and not r.get("failed")
    assert any("not in the store yet" in x for x in r["reasons"])
    assert not os.path.exists(d)


def test_pod_prepare_four_steps_then_run_it(dd):
    args = {"name": "prep", "image": "example.com/busybox", "exec": ["/bin/sh", "-c", "echo prepared-ran"],
            "data_dir": dd}
    r = module("pod_prepare", args, check=True)
    assert r["changed"] is True and r["action"] == "create"
    r = module("pod_prepare", args)
    assert r["changed"] is True and r["pod"]["state"] == "prepared"
    uuid = r["pod"]["uuid"]
    assert module("pod_prepare", args)["changed"] is False
    assert module("pod_prepare", args, check=True)["changed"] is False
    r = module("pod_run", {"uuid": uuid[:8], "state": "exited", "net": "none", "data_dir": dd})
    assert r["changed"] is True and "prepared-ran" in r["pod"]["apps"][0]["log"]
    r = module("pod_prepare", dict(args, state="absent"))
    assert r["changed"] is True


def test_modules_keep_their_compiled_code_between_runs_but_not_in_check_mode(dd, tmp_path):
    """module_utils/bytecode.py through real playbooks: the first real run keeps the code of
    every module_utils file it imported, the next reads it back (nothing rewritten)."""
    parent = tmp_path / "cache"
    parent.mkdir(mode=0o755)
    os.chmod(parent, 0o755)
    cache = parent / "pyc"
    env_ = {"ROCKET_BYTECODE_CACHE": str(cache)}
    args = {"name": "cached", "image": "example.com/busybox", "exec": ["/bin/sleep", "300"], "net": "none",
            "data_dir": dd}
    r = module("pod_run", args, check=True, extra_env=env_)
    assert r["changed"] is True, r
    assert not cache.exists()
    r = module("pod_run", args, extra_env=env_)
    assert r["changed"] is True and r["pod"]["state"] == "running", r
    kept = {n: os.stat(cache / n).st_mtime_ns for n in os.listdir(cache)}
    assert len(kept) >= 10, kept  # pod_options, pod_runner, converge, podspec, schema, pod, ...
    r = module("pod_run", args, extra_env=env_)
    assert r["changed"] is False, r
    assert {n: os.stat(cache / n).st_mtime_ns for n in os.listdir(cache)} == kept
    r = module("pod_run", dict(args, state="absent"), extra_env=env_)
    assert r["changed"] is True, r


def test_a_pod_named_alone_keeps_its_run_options(dd):
    """Without image or apps a task acts on the pod as declared: the defaults of the run
    options it leaves out (net=host) are not compared, and restart=true prepares the new pod
    from the recorded spec (both used to replace it and fail with "no pod to replace")."""
    base = {"name": "alone", "image": "example.com/busybox", "net": "none", "data_dir": dd,
            "exec": ["/bin/sh", "-c", "exec sleep 1000"]}
    first = module("pod_run", base)["pod"]
    r = module("pod_run", {"name": "alone", "data_dir": dd})
    assert r["changed"] is False and r["action"] == "none", r
    r = module("pod_run", {"name": "alone", "data_dir": dd, "restart": True})
    assert r["changed"] and r["action"] == "replace" and r["pod"]["uuid"] != first["uuid"], r
    assert r["pod"]["state"] == "running" and r["pod"]["networks"] == first["networks"], r
    assert module("pod_run", base)["changed"] is False  # the declared pod, as it was
