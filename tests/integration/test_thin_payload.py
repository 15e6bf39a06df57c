"""The thin payload through real playbook runs: with this collection's library on the host the
modules run from it (and give exactly the results of the full payload: changes, no-ops,
check mode with diff, errors, no_log), the pod modules directly, without Ansible's module
code on the host; with an unsafe library they say why, leave it as it was and run from the
full payload, asking the host once per playbook run; without one an ad-hoc run works as
before."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

from tests.support import pods, thin_library
from tests.support.ansible_run import BIN, env, playbook

THIN_RAN = "appc.rocket: thin payload, the module ran from "
DIRECT_RAN = "appc.rocket: direct, the module ran from "
REFUSED = "appc.rocket: the host's library is not used, the full module payload follows: "

SAME = """
- hosts: localhost
  gather_facts: false
  vars:
    pod: {name: thin-web, data_dir: "{{ dd }}", state: running, restart_policy: "no",
          apps: [{image: example.com/busybox, exec: [/bin/sleep, "1000"]}]}
    changed_pod: "{{ pod | combine({'apps': [{'image': 'example.com/busybox', 'exec': ['/bin/sleep', '2000']}],
                                    'secret_environment': {'TOKEN': 's3cret-w0rd'}}) }}"
    set_item: {name: thin-set, apps: [{image: example.com/busybox, exec: [/bin/true]}]}
    broken_pod: "{{ pod | combine({'apps': [{'image': 'example.com/nowhere', 'exec': ['/bin/true']}]}) }}"
  tasks:
    - {name: create, appc.rocket.pod_run: "{{ pod }}", register: created}
    - {name: no-op thin, appc.rocket.pod_run: "{{ pod }}", register: thin_noop}
    - {name: no-op full, appc.rocket.pod_run: "{{ pod }}", register: full_noop, vars: {rocket_thin_payload: false}}
    - {name: check thin, appc.rocket.pod_run: "{{ changed_pod }}", register: thin_check, check_mode: true, diff: true}
    - name: check full
      appc.rocket.pod_run: "{{ changed_pod }}"
      register: full_check
      check_mode: true
      diff: true
      vars: {rocket_thin_payload: false}
    - {name: error thin, appc.rocket.pod_run: "{{ broken_pod }}", register: thin_error, ignore_errors: true}
    - name: error full
      appc.rocket.pod_run: "{{ broken_pod }}"
      register: full_error
      ignore_errors: true
      vars: {rocket_thin_payload: false}
    - name: set thin
      appc.rocket.pod_set: {data_dir: "{{ dd }}", pods: ["{{ set_item }}"]}
      register: thin_set
      check_mode: true
      diff: true
    - name: set full
      appc.rocket.pod_set: {data_dir: "{{ dd }}", pods: ["{{ set_item }}"]}
      register: full_set
      check_mode: true
      diff: true
      vars: {rocket_thin_payload: false}
    - {name: prepare thin, appc.rocket.pod_prepare: "{{ set_item | combine({'data_dir': dd}) }}", register: thin_prepare}
    - name: prepare full
      appc.rocket.pod_prepare: "{{ set_item | combine({'data_dir': dd}) }}"
      register: full_prepare
      vars: {rocket_thin_payload: false}
    - name: unknown option, thin (the module's own error)
      appc.rocket.pod_run: {name: thin-web, data_dir: "{{ dd }}", bogus: 1}
      register: thin_unknown
      ignore_errors: true
    - name: unknown option, full
      appc.rocket.pod_run: {name: thin-web, data_dir: "{{ dd }}", bogus: 1}
      register: full_unknown
      ignore_errors: true
      vars: {rocket_thin_payload: false}
    - name: a path for the host to expand, thin
      appc.rocket.pod_run: {name: thin-nothing, data_dir: "~/rocket-thin-test-nothing", state: absent}
      register: thin_home
      check_mode: true
    - {name: image thin, appc.rocket.cas_image: {src: "{{ aci }}", data_dir: "{{ dd }}"}, register: thin_image, diff: true}
    - name: image full
      appc.rocket.cas_image: {src: "{{ aci }}", data_dir: "{{ dd }}"}
      register: full_image
      diff: true
      vars: {rocket_thin_payload: false}
    - {name: secret thin, appc.rocket.pod_info: {data_dir: "{{ dd }}"}, register: thin_secret, no_log: true}
    - {name: secret full, appc.rocket.pod_info: {data_dir: "{{ dd }}"}, register: full_secret, no_log: true,
       vars: {rocket_thin_payload: false}}
    - name: warn thin
      appc.rocket.cas_trust: &warns {mask: true, root: true, fingerprint: 0123456789ABCDEF0123456789ABCDEF01234567,
                                     system_dir: /nonexistent/rocket-system-keys, data_dir: "{{ dd }}"}
      register: thin_warn
      check_mode: true
    - {name: warn full, appc.rocket.cas_trust: *warns, register: full_warn, check_mode: true,
       vars: {rocket_thin_payload: false}}
    - {name: gc thin, appc.rocket.pod_gc: {data_dir: "{{ dd }}", images: true}, register: thin_gc, check_mode: true}
    - {name: gc full, appc.rocket.pod_gc: {data_dir: "{{ dd }}", images: true}, register: full_gc, check_mode: true,
       vars: {rocket_thin_payload: false}}
    - {name: remove, appc.rocket.pod_run: {name: thin-web, data_dir: "{{ dd }}", state: absent}, register: removed}
    - {name: remove prepared, appc.rocket.pod_prepare: {name: thin-set, data_dir: "{{ dd }}", state: absent}}
    - name: save
      ansible.builtin.copy:
        dest: "{{ out }}"
        mode: "0600"
        content: >-
          {{ {'created': created, 'thin_noop': thin_noop, 'full_noop': full_noop, 'thin_check': thin_check,
              'full_check': full_check, 'thin_error': thin_error, 'full_error': full_error,
              'thin_secret': thin_secret, 'full_secret': full_secret, 'removed': removed,
              'thin_set': thin_set, 'full_set': full_set, 'thin_prepare': thin_prepare,
              'full_prepare': full_prepare, 'thin_unknown': thin_unknown, 'full_unknown': full_unknown,
              'thin_home': thin_home, 'thin_image': thin_image, 'full_image': full_image,
              'thin_warn': thin_warn, 'full_warn': full_warn, 'thin_gc': thin_gc, 'full_gc': full_gc} | to_json }}
"""

TWO_TASKS = """
- hosts: localhost
  gather_facts: false
  tasks:
    - {name: one, appc.rocket.pod_info: {data_dir: "{{ dd }}"}}
    - {name: two, appc.rocket.pod_info: {data_dir: "{{ dd }}"}}
"""


def run(tmp_path, text, **vars_):
    play = tmp_path / "play.yml"
    play.write_text(text)
    extra = tmp_path / "vars.json"
    extra.write_text(json.dumps(vars_))
    p = playbook(str(play), "-e", "@" + str(extra), "-vvv")
    assert p.returncode == 0, p.stdout[-4000:]
    return p.stdout


def test_the_thin_path_gives_the_full_paths_results(dd, tmp_path):
    out = tmp_path / "results.json"
    with thin_library.installed() as (lib, path, dummy):
        log = run(tmp_path, SAME, dd=dd, out=str(out), rocket_runtime_library_dir=lib, aci=pods.busybox_aci(tmp_path))
    text = out.read_text()
    r = json.loads(text)
    # Direct: create, no-op, check, error, remove (pod_run), set (pod_set), prepare and its
    # removal (pod_prepare), pod_info, cas_image, cas_trust and pod_gc (which warn). Thin: the
    # unknown option and the ~ path (the module's own handling).
    assert log.count(DIRECT_RAN + path) == 12 and log.count(THIN_RAN + path) == 2 and REFUSED not in log, log[-4000:]
    assert (ran(log, "thin_module"), ran(log, "pod_run"), ran(log, "pod_info")) == (14, 4, 1), log[-4000:]
    assert (ran(log, "cas_trust"), ran(log, "pod_gc")) == (1, 1), log[-4000:]
    assert r["thin_warn"] == r["full_warn"] and r["thin_warn"]["changed"] is True, (r["thin_warn"], r["full_warn"])
    assert "the mask masks nothing for now" in r["thin_warn"]["warnings"][0], r["thin_warn"]
    # shown once, from the direct run (the first; Ansible shows a warning it has shown once only)
    assert sum(1 for ln in log.splitlines() if "[WARNING]" in ln and "the mask masks nothing for now" in ln) == 1
    assert r["thin_gc"] == r["full_gc"] and r["thin_gc"]["changed"] is False, (r["thin_gc"], r["full_gc"])
    assert ran(log, "cas_image") == 1, log[-4000:]
    # The thin payload's environment goes to the two thin runs only: the direct program carries it.
    assert sum(1 for ln in log.splitlines() if "ROCKET_THIN_LIBRARY=" in ln and "EXEC" in ln) == 2, log[-4000:]
    assert r["thin_image"]["changed"] is False and r["thin_image"]["image"] and r["thin_image"] == r["full_image"]
    assert ran(log, "pod_set") == 1 and ran(log, "pod_prepare") == 1, log[-4000:]
    assert r["created"]["changed"] is True and r["created"]["pod"]["state"] == "running"
    assert r["thin_noop"]["changed"] is False and r["thin_noop"] == r["full_noop"]
    assert r["thin_check"]["changed"] is True and r["thin_check"]["diff"] and r["thin_check"] == r["full_check"]
    assert "s3cret-w0rd" not in text and "s3cret" not in json.dumps(r["thin_check"])
    assert r["thin_set"]["changed"] is True and r["thin_set"] == r["full_set"]
    assert r["thin_prepare"]["changed"] is True and r["full_prepare"]["changed"] is False
    assert r["thin_prepare"]["pod"]["uuid"] == r["full_prepare"]["pod"]["uuid"]
    assert r["thin_unknown"]["failed"] is True and "bogus" in r["thin_unknown"]["msg"]
    assert r["thin_unknown"] == r["full_unknown"]
    assert r["thin_home"]["changed"] is False and r["thin_home"]["failed"] is False
    assert not os.path.exists(os.path.expanduser("~/rocket-thin-test-nothing"))
    assert r["thin_error"]["failed"] is True and "example.com/nowhere" in r["thin_error"]["msg"]
    assert r["thin_error"] == r["full_error"]
    assert r["thin_secret"] == r["full_secret"] and r["thin_secret"]["pods"]
    assert log.count("'no_log: true' was specified for this result") == 2  # both shown censored
    assert r["removed"]["changed"] is True


def ran(log, payload):
    """How many times a payload was run (not copied or made executable)."""
    # ansible-core 2.19 ends the command with "&& sleep 0", 2.21 with the path's closing quote.
    run = re.compile(r"EXEC .*/AnsiballZ_%s\.py( && sleep 0)?'$" % re.escape(payload))
    return sum(1 for ln in log.splitlines() if run.search(ln) and "chmod" not in ln)


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


@pytest.mark.parametrize("harm, says", [
    ("mode", "is writable by its group or others (mode 0666)"),
    ("digest", "has SHA-256"),
    ("link", "is a symbolic link"),
])
def test_an_unsafe_library_is_left_alone_and_the_full_payload_runs(dd, tmp_path, harm, says):
    with thin_library.installed() as (lib, path, dummy):
        version = os.path.dirname(path)
        if harm == "mode":
            os.chmod(path, 0o666)
        elif harm == "digest":
            with open(path, "ab") as f:
                f.write(b"\n")
        else:
            os.rename(version, version + ".real")
            os.symlink(os.path.basename(version) + ".real", version)
        before = os.lstat(path), _digest(path)
        log = run(tmp_path, TWO_TASKS, dd=dd, rocket_runtime_library_dir=lib)
        assert (os.lstat(path), _digest(path)) == before, "the library was touched"
    warnings = [ln for ln in log.splitlines() if REFUSED in ln]
    assert len(warnings) == 1 and says in warnings[0] and "[WARNING]" in warnings[0], log[-4000:]
    # Asked once: the second task went straight to the full payload.
    assert ran(log, "thin_module") == 1 and ran(log, "pod_info") == 2, log[-4000:]
    assert THIN_RAN not in log and log.count("ok: [localhost]") == 2


def test_ad_hoc_without_a_library(dd, tmp_path):
    lib = os.path.join(thin_library.PARENT, "no-library-" + uuid.uuid4().hex)  # not /tmp: unsafe
    p = subprocess.run([os.path.join(BIN, "ansible"), "localhost", "-i", "localhost,", "-c", "local", "-vvv",
                        "-m", "appc.rocket.pod_info", "-a", "data_dir=" + dd, "-e", "rocket_runtime_library_dir=" + lib],
                       env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert p.returncode == 0 and "localhost | SUCCESS" in p.stdout, p.stdout[-4000:]
    assert REFUSED + lib + " does not exist" in p.stdout and "[WARNING]" not in p.stdout
    assert not os.path.exists(lib)


def test_a_missing_library_is_asked_for_once_across_runs(dd, tmp_path):
    """The thin attempt costs a host without the library a round trip: the next playbook runs
    (within the hour) send the full payload straight away, until the runtime role says it
    installed one."""
    lib = os.path.join(thin_library.PARENT, "no-library-" + uuid.uuid4().hex)
    first = run(tmp_path, TWO_TASKS, dd=dd, rocket_runtime_library_dir=lib)
    again = run(tmp_path, TWO_TASKS, dd=dd, rocket_runtime_library_dir=lib)
    installed = run(tmp_path, TWO_TASKS, dd=dd, rocket_runtime_library_dir=lib, rocket_runtime_library_version="x")
    assert [ran(log, "thin_module") for log in (first, again, installed)] == [1, 0, 1]
    assert [ran(log, "pod_info") for log in (first, again, installed)] == [2, 2, 2]


ROLE_THEN_TASK = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: appc.rocket.runtime
  tasks:
    - {name: after the role, appc.rocket.pod_info: {data_dir: "{{ rocket_data_dir }}"}}
"""


def test_the_runtime_roles_library_is_used_in_the_same_play(tmp_path):
    """The role installs the library; its first module task had found none (remembered), and
    the fact it sets makes the next task ask again and run from the library."""
    units = tmp_path / "systemd"
    (units / "multi-user.target.wants").mkdir(parents=True)
    os.makedirs(thin_library.PARENT, 0o755, exist_ok=True)
    top = tempfile.mkdtemp(prefix="thin-role-", dir=thin_library.PARENT)
    os.chmod(top, 0o755)
    lib = os.path.join(top, "lib")
    try:
        log = run(tmp_path, ROLE_THEN_TASK, rocket_data_dir=str(tmp_path / "rocket"),
                  rocket_runtime_install_packages=False, rocket_runtime_library_dir=lib,
                  rocket_runtime_systemd=True, rocket_runtime_systemd_dir=str(units),
                  rocket_runtime_modules_load_file=str(tmp_path / "modules-load.conf"))
        installed = [os.path.join(lib, v, "appc-rocket-pods.pyz") for v in os.listdir(lib) if v != "current"]
        assert len(installed) == 1
        assert REFUSED + lib + " does not exist" in log, log[-4000:]  # the role's cas_image task, before the copy
        assert DIRECT_RAN + installed[0] in log and "[WARNING]" not in log, log[-4000:]
    finally:
        shutil.rmtree(top)


def test_the_direct_program_imports_no_ansible_on_the_host(dd):
    """What makes the direct path fast: the host runs the library, not Ansible's module code
    (whose basic.py this interpreter could import: it is the controller's)."""
    from ansible_collections.appc.rocket.plugins.plugin_utils import module_action

    args = {"name": "direct-nothing", "data_dir": dd, "state": "absent", "_ansible_check_mode": True,
            "_ansible_module_name": "appc.rocket.pod_run", "_ansible_no_log": True}
    with thin_library.installed() as (dummy, path, sha256):
        plan = {"module": "pod_run", "library": path, "sha256": sha256}
        program = module_action.direct_program(plan, args)
        assert program is not None
        p = subprocess.run([sys.executable, "-X", "importtime", "-"], input=program["program"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=60, check=False)
        bogus = module_action.direct_program(plan, dict(args, bogus=1))
    result = json.loads(p.stdout.decode().strip().splitlines()[-1])
    assert p.returncode == 0 and result["changed"] is False, (p.stdout, p.stderr[-2000:])
    imported = [ln.rsplit("|", 1)[-1].strip() for ln in p.stderr.decode().splitlines() if ln.startswith("import time:")]
    assert "ansible_collections.appc.rocket.plugins.module_utils.pod_runner" in imported  # the module ran
    assert [m for m in imported if m == "ansible" or m.startswith("ansible.")] == []
    assert bogus is None  # an argument the module would refuse: the module itself says so (thin)
