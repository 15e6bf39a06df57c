"""pod_export across hosts: exported on one fleet host, carried over the controller, imported with
cas_image over ssh on another, run there; the same files and the same image ID come back."""
import json
import os
import subprocess
import tarfile

from tests.support import pods
from tests.support.ansible_run import BIN
from tests.support.fleet import recap

PLAY = """
- hosts: alpha
  gather_facts: false
  vars: {dd: "{{ rocket_data_dir }}", out: "{{ rocket_data_dir | dirname }}/export"}
  tasks:
    - appc.rocket.cas_image: {src: "%(busybox)s", data_dir: "{{ dd }}"}
    - appc.rocket.pod_run:
        name: src
        image: example.com/busybox
        exec: [/bin/sleep, "1000"]
        net: none
        data_dir: "{{ dd }}"
    - appc.rocket.pod_enter:
        name: src
        data_dir: "{{ dd }}"
        argv: [/bin/sh, -c, "mkdir -p /srv/www && echo made-on-alpha > /srv/www/index.html && rm /bin/ls"]
    - ansible.builtin.file: {path: "{{ out }}", state: directory, mode: "0700"}
    - appc.rocket.pod_export:
        name: src
        dest: "{{ out }}/snapshot.aci"
        image_name: example.com/snapshot
        data_dir: "{{ dd }}"
      register: exported
    - ansible.builtin.fetch: {src: "{{ out }}/snapshot.aci", dest: "%(carry)s/", flat: true}
    - ansible.builtin.copy:
        content: "{{ exported.image.id }}"
        dest: "%(carry)s/alpha.id"
      delegate_to: localhost

- hosts: beta
  gather_facts: false
  vars: {dd: "{{ rocket_data_dir }}", out: "{{ rocket_data_dir | dirname }}/import"}
  tasks:
    - ansible.builtin.file: {path: "{{ out }}", state: directory, mode: "0700"}
    - ansible.builtin.copy: {src: "%(carry)s/snapshot.aci", dest: "{{ out }}/snapshot.aci", mode: "0600"}
    - appc.rocket.cas_image: {src: "{{ out }}/snapshot.aci", data_dir: "{{ dd }}"}
      register: imported
    - appc.rocket.pod_run:
        name: copy
        image: example.com/snapshot
        state: exited
        net: none
        data_dir: "{{ dd }}"
        exec: [/bin/sh, -c, "cat /srv/www/index.html; test -e /bin/ls || echo no-ls"]
      register: ran
    - appc.rocket.pod_export:
        image: "{{ imported.image.id }}"
        dest: "{{ out }}/again.aci"
        data_dir: "{{ dd }}"
      register: again
    - ansible.builtin.copy:
        content: "{{ {'imported': imported.image.id, 'again': again.image.id, 'exit': ran.pod.apps[0].exit_code,
                      'log': ran.pod.apps[0].log} | to_json }}"
        dest: "%(carry)s/beta.json"
      delegate_to: localhost
"""


def _files(path):
    with tarfile.open(path) as tf:
        return {m.name: (m.type, m.mode, m.uid, m.linkname, tf.extractfile(m).read() if m.isfile() else None)
                for m in tf.getmembers()}


def test_export_on_one_host_import_and_run_on_another(fleet, tmp_path):
    carry = tmp_path / "carry"
    carry.mkdir()
    play = tmp_path / "export.yml"
    play.write_text(PLAY % {"busybox": pods.busybox_aci(tmp_path), "carry": str(carry)})
    inv = fleet.write_inventory(tmp_path / "fleet.json")
    p = subprocess.run([os.path.join(BIN, "ansible-playbook"), "-i", inv, str(play)], env=fleet.env(),
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300, check=False)
    assert p.returncode == 0, p.stdout[-6000:]
    rows = recap(p.stdout)
    assert rows["alpha"]["failed"] == 0 and rows["beta"]["failed"] == 0, p.stdout[-3000:]
    exported = (carry / "alpha.id").read_text()
    beta = json.loads((carry / "beta.json").read_text())
    assert exported.startswith("sha512-") and beta["imported"] == exported and beta["again"] == exported, (exported, beta)
    assert beta["exit"] == 0 and "made-on-alpha" in beta["log"] and "no-ls" in beta["log"], beta
    # Exported again on beta: byte for byte the tree alpha exported.
    again = os.path.join(os.path.dirname(fleet.data_dir("beta")), "import", "again.aci")
    assert _files(again) == _files(str(carry / "snapshot.aci"))
