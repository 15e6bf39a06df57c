"""Issue #16's secrets and env_file through real ansible runs of pod_run: the four-step
pattern, what the app sees from inside the pod, and what must never be seen outside it;
and hostile values of devices, secrets and env_file refused with the option named (the
unit tests, tests/unit/test_devsec_options.py, hold every case; these hold the module path)."""
import json
import os

from tests.support.ansible_run import module
from tests.integration import test_devices
from tests.integration.test_devices import facts, no_pods, wait_log
from tests.integration.test_pod_modules import four_steps

loops = test_devices.loops  # the fixture (dd is conftest's)


# --------------------------------------------------------------------------- secrets
SECRET = "hunter2-s3cr3t-%d" % os.getpid()


def sha(text):
    import hashlib

    return hashlib.sha256(text.encode()).hexdigest()


def everything_under(path):
    """Every byte of every regular file under path (the host's view), as one blob."""
    blob = []
    for top, dirs, files in os.walk(path):
        for name in files:
            p = os.path.join(top, name)
            try:
                with open(p, "rb") as f:
                    blob.append(f.read())
            except OSError:
                pass
    return b"".join(blob)


def environ_of_every_process():
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open("/proc/%s/environ" % pid, "rb") as f:
                    out.append(f.read())
            except OSError:
                pass
    return b"".join(out)


def test_a_secret_file_is_readable_by_the_app_and_nowhere_else(dd, tmp_path):
    src = tmp_path / "from-host"
    src.write_text(SECRET + "-file")
    # The app prints digests, not the secrets: its log is in the results.
    script = ("id -u | sed 's/^/uid=/'; echo \"token=$(sha256sum </run/secrets/token | cut -c1-64)\"; "
              "echo \"file=$(sha256sum </etc/app/key | cut -c1-64)\"; cat /run/secrets/root-only >/dev/null 2>&1; "
              "echo \"rootonly=$?\"; "
              "ls -ln /run/secrets/token | awk '{print \"perm=\" $1 \"/\" $3 \"/\" $4}'; "
              "echo x 2>/dev/null >/run/secrets/token; echo \"write=$?\"; exec sleep 1000")
    args = {"name": "sec", "image": "example.com/busybox", "net": "none", "data_dir": dd, "user": "1000",
            "group": "1000", "exec": ["/bin/sh", "-c", script],
            "secrets": [{"name": "token", "content": SECRET, "uid": 1000, "mode": "0440"},
                        {"name": "key", "source": str(src), "target": "/etc/app/key", "uid": 1000},
                        {"name": "root-only", "content": SECRET + "-root"}]}
    checked, applied = four_steps(args, "run")
    info, log = wait_log(dd, "sec", "write=")
    f = facts(log)
    assert f["uid"] == "1000" and f["token"] == sha(SECRET) and f["file"] == sha(SECRET + "-file"), log
    assert f["rootonly"] == "1" and f["perm"] == "-r--r-----/1000/0" and f["write"] != "0", log
    pod = info["pods"][0]
    # Nowhere else: the results and ansible's output, every file under the pod directory
    # (the manifest, spec.json, logs, status), any process's environment.
    for r in (checked, applied, info):
        assert SECRET not in json.dumps(r), r
    pod_dir = os.path.join(dd, "pods", "run", pod["uuid"])
    assert os.path.isdir(pod_dir)
    assert SECRET.encode() not in everything_under(pod_dir)
    assert os.listdir(os.path.join(pod_dir, "secrets")) == []  # the tmpfs is the pod's own
    assert SECRET.encode() not in environ_of_every_process()
    with open(os.path.join(pod_dir, "spec.json")) as fp:
        stored = json.load(fp)["spec"]["apps"][0]["secrets"][0]
    assert stored["digest"].startswith("sha256:") and "content" not in stored
    assert checked["diff"]["after"]["spec"]["apps"][0]["secrets"][0]["digest"] == "********"
    assert pod["apps"][0]["isolation"]["secrets"] == [
        {"name": "token", "target": "/run/secrets/token"}, {"name": "key", "target": "/etc/app/key"},
        {"name": "root-only", "target": "/run/secrets/root-only"}]

    # A changed content replaces the pod; the diff names the option, redacted.
    changed = dict(args, secrets=[dict(args["secrets"][0], content=SECRET + "-v2")] + args["secrets"][1:])
    checked, applied = four_steps(changed, "replace")
    assert list(checked["diff"]["after"]) == ["apps[0].secrets"], checked["diff"]
    assert SECRET not in json.dumps(checked) + json.dumps(applied)
    info, log = wait_log(dd, "sec", "write=")
    assert facts(log)["token"] == sha(SECRET + "-v2"), log
    # The data lives in memory only: a start that does not give it is refused, clearly.
    module("pod_run", {"name": "sec", "data_dir": dd, "state": "absent"})
    prepared = module("pod_prepare", {k: v for k, v in changed.items() if k not in ("net", "state")})
    assert prepared["changed"] and SECRET not in json.dumps(prepared), prepared
    r = module("pod_run", {"name": "sec", "data_dir": dd, "state": "running"})
    assert r.get("failed") and "secrets are kept in memory only" in r["msg"], r


def test_hostile_secrets_are_refused_naming_the_option(dd, tmp_path):
    os.symlink("/etc/shadow", str(tmp_path / "link"))
    cases = [({"name": "a", "content": "v", "target": "/proc/self/x"}, "apps[0].secrets[0].target"),
             ({"name": "a", "source": str(tmp_path / "link")}, "apps[0].secrets[0].source")]
    for item, field in cases:
        r = module("pod_run", {"name": "bad", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                               "secrets": [item]})
        assert r.get("failed") and field in r["msg"], (item, r["msg"])
    assert no_pods(dd)


# --------------------------------------------------------------------------- env_file
DOTENV = """# the pod's settings
export GREETING=hello world   # trailing comment
QUOTED='single $HOME # kept'
DOUBLE="two\\nlines \\"q\\""
EMPTY=
OVERRIDDEN=from-file
"""


def test_env_files_at_pod_and_app_level(dd, tmp_path):
    pod_file, app_file = tmp_path / "pod.env", tmp_path / "app.env"
    pod_file.write_text(DOTENV)
    app_file.write_text("APP_ONLY=yes\nGREETING=from-app-file\nTOKEN='%s-env'\n" % SECRET)
    script = ('for v in GREETING QUOTED DOUBLE EMPTY OVERRIDDEN APP_ONLY; do eval "printf \\"%s=%s|\\" $v \\"\\$$v\\""; done;'
              ' echo; echo "token=$(printf %s "$TOKEN" | sha256sum | cut -c1-64)"')
    args = {"name": "envf", "data_dir": dd, "net": "none", "state": "exited", "env_file": [str(pod_file)],
            "environment": {"OVERRIDDEN": "from-option"},
            "apps": [{"image": "example.com/busybox", "exec": ["/bin/sh", "-c", script],
                      "env_file": [str(app_file)], "env_file_secret": True}]}
    checked, applied = four_steps(args, "run")
    log = applied["pod"]["apps"][0]["log"]
    assert ("GREETING=from-app-file|QUOTED=single $HOME # kept|DOUBLE=two\n" in log
            and 'lines "q"|EMPTY=|OVERRIDDEN=from-option|APP_ONLY=yes|' in log), log
    assert facts(log)["token"] == sha(SECRET + "-env"), log
    assert SECRET not in json.dumps(checked) + json.dumps(applied)
    pod_dir = os.path.join(dd, "pods")
    with open(os.path.join(dd, "pods", [s for s in os.listdir(pod_dir) if os.listdir(os.path.join(pod_dir, s))][0],
                           applied["pod"]["uuid"], "spec.json")) as f:
        assert SECRET not in f.read()
    assert checked["diff"]["after"]["spec"]["env_file"] == [{"path": str(pod_file), "environment": [
        ["GREETING", "hello world"], ["QUOTED", "single $HOME # kept"], ["DOUBLE", 'two\nlines "q"'],
        ["EMPTY", ""], ["OVERRIDDEN", "from-file"]]}]
    assert checked["diff"]["after"]["spec"]["apps"][0]["env_file"][0]["environment"][2] == ["TOKEN", "********"]

    # A changed file replaces the pod, the diff names the option (the app's, redacted).
    app_file.write_text("APP_ONLY=yes\nGREETING=from-app-file\nTOKEN='%s-v2'\n" % SECRET)
    checked, applied = four_steps(args, "replace")
    assert list(checked["diff"]["after"]) == ["apps[0].env_file"], checked["diff"]
    assert SECRET not in json.dumps(checked) + json.dumps(applied)


def test_unsetenv_takes_the_images_variables_away(dd, tmp_path):
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store
    from tests.support import pods

    with Store(dd) as s:
        s.import_file(pods.busybox_aci(tmp_path / "img", name="example.com/envy", app={
            "exec": ["/bin/true"], "user": "0", "group": "0", "environment": [
                {"name": "KEEP", "value": "image"}, {"name": "DROP", "value": "image"},
                {"name": "PATH", "value": "/nowhere:/bin"}]}))
    script = 'echo "KEEP=${KEEP-unset} DROP=${DROP-unset} SET=${SET-unset} PATH=$PATH APP=$AC_APP_NAME"'
    args = {"name": "unset", "data_dir": dd, "net": "none", "state": "exited", "image": "example.com/envy",
            "exec": ["/bin/sh", "-c", script], "unsetenv": ["DROP", "PATH", "SET"], "environment": {"SET": "task"}}
    checked, applied = four_steps(args, "run")
    assert checked["diff"]["after"]["spec"]["apps"][0]["unsetenv"] == ["DROP", "PATH", "SET"], checked["diff"]
    log = applied["pod"]["apps"][0]["log"]
    # the image's DROP and PATH are gone (PATH is the spec's default again); what the task sets stays
    assert "KEEP=image DROP=unset SET=task PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin " \
           "APP=envy" in log, log

    every = dict(args, unsetenv=None, unsetenv_all=True)
    checked, applied = four_steps(every, "replace")
    assert checked["diff"] == {"before": {"apps[0].unsetenv": ["DROP", "PATH", "SET"], "apps[0].unsetenv_all": False},
                               "after": {"apps[0].unsetenv": [], "apps[0].unsetenv_all": True}}, checked["diff"]
    assert "KEEP=unset DROP=unset SET=task " in applied["pod"]["apps"][0]["log"], applied["pod"]["apps"][0]["log"]

    before = [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]]
    for bad, where in ((dict(args, name="bad", unsetenv=["OK", "9BAD"]), "apps[0].unsetenv[1]"),
                       (dict(every, name="bad", unsetenv=["DROP"]), "apps[0].unsetenv")):
        r = module("pod_run", bad)
        assert r.get("failed") and where in r["msg"], (where, r.get("msg"))
    assert [(p["uuid"], p["state"]) for p in module("pod_info", {"data_dir": dd})["pods"]] == before


def test_env_file_errors_name_the_option_the_file_and_the_line(dd, tmp_path):
    bad = tmp_path / "bad.env"
    bad.write_text("# ok\nGOOD=1\nexport 9BAD=%s\n" % SECRET)
    r = module("pod_run", {"name": "bad", "image": "example.com/busybox", "data_dir": dd, "env_file": [str(bad)]})
    assert r.get("failed") and r["msg"].startswith("env_file[0]: \"%s\" line 3:" % bad), r["msg"]
    unclosed = tmp_path / "unclosed.env"
    unclosed.write_text("A='%s\n" % SECRET)
    r = module("pod_run", {"name": "bad", "data_dir": dd, "apps": [
        {"image": "example.com/busybox", "env_file": [str(unclosed)]}]})
    assert r.get("failed") and "apps[0].env_file[0]" in r["msg"] and "line 1: the quoted value of A is never closed" in r["msg"], r
    assert SECRET not in json.dumps(r)
    assert no_pods(dd)


# --------------------------------------------------------------------------- hostile devices
HOSTILE_DEVICES = [
    ("/etc/passwd", "apps[0].devices[0].path", "must be a device node under /dev on the host"),
    ("/dev/shm:/dev/myshm", "apps[0].devices[0].path", "is not a device node"),
    ("/dev/null:/etc/null", "apps[0].devices[0].container_path", "must be a path under /dev"),
    ("/dev/null:/dev/x:rwx", "apps[0].devices[0].permissions", "subset"),
]


def test_hostile_devices_are_refused_naming_the_option(dd):
    for device, field, why in HOSTILE_DEVICES:
        r = module("pod_run", {"name": "bad", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                               "devices": [device]})
        assert r.get("failed") and field in r["msg"] and why in r["msg"], (device, r["msg"])
    assert no_pods(dd)


def test_a_symlink_to_a_device_is_refused(dd, loops):
    link = "/dev/rocket-test-link-%d" % os.getpid()
    os.symlink(loops[0], link)
    try:
        r = module("pod_run", {"name": "bad", "image": "example.com/busybox", "net": "none", "data_dir": dd,
                               "devices": [link]})
    finally:
        os.unlink(link)
    assert r.get("failed") and "apps[0].devices[0].path" in r["msg"] and "symlink" in r["msg"], r["msg"]
    assert "give the real path (%s)" % loops[0] in r["msg"], r["msg"]
    assert no_pods(dd)
