# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
name: pods
short_description: The App Container pods of a fleet's hosts as inventory hosts
description:
  - Lists the pods of every host of a group of the inventory already loaded, over plain C(ssh)
    with the user's SSH configuration, and adds one inventory host per pod (or per app of a
    pod with O(per_app)) that the P(appc.rocket.pod#connection) connection reaches.
  - Inventory plugins cannot use connection plugins, so the pod hosts are reached by the
    C(ssh) program itself, with the C(ansible_host), C(ansible_user), C(ansible_port),
    C(ansible_ssh_private_key_file) and C(ansible_ssh_common_args) of each pod host taken from
    the inventory. This source must therefore come B(after) the source that defines the pod
    hosts (a later C(-i), or a later file of an inventory directory, which loads in
    alphabetical order).
  - On each pod host a small lister, sent on the standard input of C(python3 -) (no file is
    written, nothing but the Python standard library is needed), reads the data directory
    the way M(appc.rocket.pod_info) does - pod directories, manifests, names, the state lock
    probed with a non-blocking shared flock - and starts no process in any pod.
  - Reading a data directory needs its owner (root); log in as root or set O(become).
  - A pod host whose C(ansible_connection) is C(local) is listed on the controller, without C(ssh).
  - The configuration file's name ends in C(pods.yml), C(pods.yaml), C(appc_rocket.yml) or C(appc_rocket.yaml);
    Ansible's C(auto) inventory plugin (enabled by default) loads this one from its C(plugin) key.
  - Groups made for every pod (names sanitized as Ansible does) - C(pods), C(pods_<state>)
    (for example C(pods_running)), C(pods_host_<host>), C(pods_image_<image name>),
    C(pods_label_<name>_<value>) for each label of each app's image, and
    C(pods_annotation_<name>_<value>) for each pod annotation.
version_added: "0.2.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.constructed
  - ansible.builtin.inventory_cache
options:
  plugin:
    description: Marks the file as this plugin's configuration.
    required: true
    type: str
    choices: [appc.rocket.pods]
  hosts_group:
    description: The group of the inventory whose hosts are pod hosts.
    type: str
    default: all
  data_dir:
    description:
      - The data directory of the pods on each host, unless that host sets C(rocket_data_dir)
        (the variable the C(appc.rocket.pods) role uses).
    type: path
    default: /var/lib/rocket
  per_app:
    description: One inventory host per app of each pod (C(<host>-<pod>-<app>)) instead of one per pod (C(<host>-<pod>)).
    type: bool
    default: false
  states:
    description: Only pods in these states (for example V(running)); all pods when empty.
    type: list
    elements: str
    default: []
  filters:
    description:
      - Which pods become hosts, decided by the first entry whose condition is true for the
        pod's variables (the C(rocket_pod_*) ones and the pod host's); a pod no entry matches
        is kept.
      - Each entry has one key, C(include) or C(exclude), whose value is a Jinja2 conditional.
    type: list
    elements: dict
    default: []
  ssh_executable:
    description: The C(ssh) program.
    type: str
    default: ssh
  ssh_args:
    description: More arguments for C(ssh), before the host (for example C(-F) and a config file).
    type: list
    elements: str
    default: []
  timeout:
    description: Seconds to wait for one pod host's listing (connection included).
    type: int
    default: 30
  python:
    description: The Python 3 on the pod hosts, unless a host sets C(ansible_python_interpreter).
    type: str
    default: python3
  become:
    description: Run the lister with C(sudo -n) (the login user needs password-less sudo).
    type: bool
    default: false
  unreachable:
    description:
      - What a pod host that cannot be listed does - V(warn) leaves its pods out with a warning, V(error) fails the inventory.
    type: str
    choices: [warn, error]
    default: warn
notes:
  - Each pod host gets C(ansible_connection=appc.rocket.pod) and C(ansible_rocket_pod) (the pod's UUID),
    C(ansible_rocket_app) (with O(per_app), or when the pod has one app), C(ansible_rocket_data_dir),
    C(ansible_rocket_pod_host) (the inventory name of its host), the host's SSH variables, and the host's
    C(ansible_python_interpreter) as C(ansible_rocket_host_python) (a pod's own Python is the image's); and
    C(rocket_pod_uuid), C(rocket_pod_name), C(rocket_pod_state), C(rocket_pod_host), C(rocket_pod_apps),
    C(rocket_pod_images), C(rocket_pod_labels), C(rocket_pod_annotations), C(rocket_pod_pid),
    C(rocket_pod_created) and, with O(per_app), C(rocket_pod_app).
"""

EXAMPLES = r"""
# inventory/10-hosts.yml defines the pod hosts; this file sorts after it.
# inventory/20-pods.appc_rocket.yml
plugin: appc.rocket.pods
hosts_group: podhosts
states: [running]
keyed_groups:
  - key: rocket_pod_name
    prefix: app
groups:
  databases: "'postgres' in rocket_pod_images"
compose:
  ansible_python_interpreter: "'/usr/bin/python3'"
filters:
  - exclude: rocket_pod_name is none
"""

import json
import re
import shlex
import subprocess

from ansible.errors import AnsibleParserError
from ansible.inventory.helpers import get_group_vars
from ansible.module_utils.common.text.converters import to_native
from ansible.plugins.inventory import BaseInventoryPlugin, Cacheable, Constructable
from ansible.utils.vars import combine_vars

# Sent to `python3 -` on each pod host: standard library only, reads the data directory and
# prints JSON. It mirrors module_utils/stage0/pod.py's on-disk protocol (pods/<state>/<uuid>,
# names/<name>, a shared flock probe on run/ and prepare/ directories) without importing it,
# since nothing of the collection is on the host. It never enters or signals a pod.
LISTER = r'''
import fcntl, json, os, sys
dd, want = sys.argv[1], set(sys.argv[2:])
out = {"pods": []}
def small(p, limit):
    with open(p, "rb") as f:
        return f.read(limit)
def probe(path):
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
names = {}
try:
    for n in os.listdir(os.path.join(dd, "names")):
        try:
            u = small(os.path.join(dd, "names", n), 128).decode().strip()
        except (OSError, UnicodeError):
            continue
        names[u] = n
except OSError:
    pass
for s in ("embryo", "prepare", "prepared", "run", "exited-garbage", "garbage"):
    try:
        uuids = sorted(os.listdir(os.path.join(dd, "pods", s)))
    except OSError:
        continue
    for u in uuids:
        p = os.path.join(dd, "pods", s, u)
        if len(u) != 36 or u.count("-") != 4:
            continue
        state = s
        try:
            if s in ("run", "prepare"):
                free = probe(p)
                state = {"run": ("exited", "running"), "prepare": ("aborted", "preparing")}[s][0 if free else 1]
            created = os.stat(p).st_ctime
        except OSError:
            continue
        if want and state not in want:
            continue
        try:
            man = json.loads(small(os.path.join(p, "pod"), 16 << 20))
        except (OSError, ValueError):
            man = {}
        pid = None
        if state == "running":
            try:
                pid = int(small(os.path.join(p, "pid"), 64).decode().strip())
            except (OSError, ValueError):
                pid = None
        apps = []
        for a in man.get("apps") or []:
            img = a.get("image") or {}
            apps.append({"name": a.get("name"), "image_name": img.get("name"), "image_id": img.get("id"),
                         "labels": {l.get("name"): l.get("value") for l in img.get("labels") or []}})
        out["pods"].append({"uuid": u, "name": names.get(u), "state": state, "pid": pid, "created": created,
                            "apps": apps,
                            "annotations": {x.get("name"): x.get("value") for x in man.get("annotations") or []}})
json.dump(out, sys.stdout)
'''

SSH_VARS = ("ansible_host", "ansible_user", "ansible_port", "ansible_ssh_private_key_file", "ansible_ssh_common_args",
            "ansible_ssh_extra_args", "ansible_rocket_host_sudo", "ansible_rocket_host_user")


def _group_name(name):
    """Group names are identifiers whatever TRANSFORM_INVALID_GROUP_CHARS says: image names have dots and slashes."""
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


class InventoryModule(BaseInventoryPlugin, Constructable, Cacheable):
    """Pods become hosts so plays target them by what they run, wherever they run."""

    NAME = "appc.rocket.pods"

    def verify_file(self, path):
        return super().verify_file(path) and path.endswith(
            ("pods.yml", "pods.yaml", "appc_rocket.yml", "appc_rocket.yaml"))

    def parse(self, inventory, loader, path, cache=True):
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        group = self.get_option("hosts_group")
        if group not in self.inventory.groups:
            raise AnsibleParserError("appc.rocket.pods: hosts_group %s is not a group of the inventory loaded before this "
                                     "source (%s); put this source after the one that defines the pod hosts"
                                     % (group, path))
        filters = self.get_option("filters") or []
        for i, f in enumerate(filters):
            if not isinstance(f, dict) or len(f) != 1 or list(f)[0] not in ("include", "exclude"):
                raise AnsibleParserError("appc.rocket.pods: filters[%d] must have one key, include or exclude: %r" % (i, f))
        hosts = sorted(self.inventory.groups[group].get_hosts(), key=lambda h: h.name)
        key = self.get_cache_key(path)
        use_cache = self.get_option("cache") and cache
        listing = None
        if use_cache:
            try:
                listing = self._cache[key]
            except KeyError:
                listing = None
        if listing is None:
            listing = {}
            for h in hosts:
                if h.name.startswith("__"):
                    continue
                hv = combine_vars(get_group_vars(h.get_groups()), h.get_vars())
                hvars = {k: hv[k] for k in SSH_VARS if k in hv}
                if hv.get("ansible_python_interpreter"):  # the host's Python, not the pod's: the connection's own name
                    hvars["ansible_rocket_host_python"] = hv["ansible_python_interpreter"]
                listing[h.name] = {"vars": hvars,
                                   "data_dir": hv.get("rocket_data_dir") or self.get_option("data_dir"),
                                   "pods": self._list(h.name, hv)}
            if self.get_option("cache"):
                self._cache[key] = listing
        for hname in sorted(listing):
            for pod in listing[hname]["pods"] or []:
                self._add(hname, listing[hname], pod, filters)

    def _list(self, hname, hv):
        """Run the lister on one pod host; None when it cannot be reached (and unreachable=warn)."""
        cmd = [self.get_option("ssh_executable"), "-o", "BatchMode=yes"]
        if hv.get("ansible_port"):
            cmd += ["-p", str(hv["ansible_port"])]
        if hv.get("ansible_user"):
            cmd += ["-l", str(hv["ansible_user"])]
        if hv.get("ansible_ssh_private_key_file"):
            cmd += ["-i", str(hv["ansible_ssh_private_key_file"])]
        for v in ("ansible_ssh_common_args", "ansible_ssh_extra_args"):
            cmd += shlex.split(str(hv.get(v) or ""))
        cmd += [str(a) for a in self.get_option("ssh_args")]
        dd = hv.get("rocket_data_dir") or self.get_option("data_dir")
        python = str(hv.get("ansible_python_interpreter") or self.get_option("python"))
        remote = [python, "-", str(dd)] + [str(s) for s in self.get_option("states")]
        if self.get_option("become"):
            remote = ["sudo", "-n"] + remote
        cmd += ["--", str(hv.get("ansible_host") or hname), " ".join(shlex.quote(a) for a in remote)]
        if hv.get("ansible_connection") in ("local", "ansible.builtin.local"):
            cmd = remote  # the controller is the pod host: no ssh
        try:
            p = subprocess.run(cmd, input=LISTER.encode(), capture_output=True, timeout=self.get_option("timeout"),
                               check=False)
            err = p.stderr.decode(errors="replace").strip()[-500:]
            if p.returncode == 0:
                return json.loads(p.stdout)["pods"]
            why = "ssh exited %d: %s" % (p.returncode, err)
        except subprocess.TimeoutExpired:
            why = "no answer in %s s" % self.get_option("timeout")
        except (OSError, ValueError, KeyError, TypeError) as e:
            why = to_native(e)
        msg = "appc.rocket.pods: cannot list the pods of %s: %s" % (hname, why)
        if self.get_option("unreachable") == "error":
            raise AnsibleParserError(msg)
        self.display.warning(msg)
        return None

    def _add(self, hname, src, pod, filters):
        apps = pod.get("apps") or []
        label = pod.get("name") or pod["uuid"][:8]
        images = sorted({a["image_name"] for a in apps if a.get("image_name")})
        labels = {}
        for a in apps:
            labels.update(a.get("labels") or {})
        base = {"rocket_pod_uuid": pod["uuid"], "rocket_pod_name": pod.get("name"), "rocket_pod_state": pod["state"],
                "rocket_pod_host": hname, "rocket_pod_apps": [a["name"] for a in apps], "rocket_pod_images": images,
                "rocket_pod_labels": labels, "rocket_pod_annotations": pod.get("annotations") or {},
                "rocket_pod_pid": pod.get("pid"), "rocket_pod_created": pod.get("created"),
                "ansible_connection": "appc.rocket.pod", "ansible_rocket_pod": pod["uuid"],
                "ansible_rocket_pod_host": hname, "ansible_rocket_data_dir": src["data_dir"]}
        targets = [(label, None)]
        if self.get_option("per_app"):
            targets = [("%s-%s" % (label, a["name"]), a) for a in apps]
        elif len(apps) == 1:
            base["ansible_rocket_app"] = apps[0]["name"]
        strict = self.get_option("strict")
        for suffix, app in targets:
            hv = combine_vars(src["vars"], base)
            if app is not None:
                hv.update(ansible_rocket_app=app["name"], rocket_pod_app=app["name"],
                          rocket_pod_images=[app["image_name"]] if app.get("image_name") else [],
                          rocket_pod_labels=app.get("labels") or {})
            if not self._keep(hv, filters):
                continue
            host = self.inventory.add_host("%s-%s" % (hname, suffix))
            for k, v in hv.items():
                self.inventory.set_variable(host, k, v)
            self.inventory.add_child(self.inventory.add_group("pods"), host)
            groups = ["pods_" + hv["rocket_pod_state"], "pods_host_" + hname]
            groups += ["pods_image_" + i for i in hv["rocket_pod_images"]]
            groups += ["pods_label_%s_%s" % (k, v) for k, v in sorted(hv["rocket_pod_labels"].items())]
            groups += ["pods_annotation_%s_%s" % (k, v) for k, v in sorted(hv["rocket_pod_annotations"].items())]
            for g in groups:
                self.inventory.add_child(self.inventory.add_group(_group_name(g)), host)
            self._set_composite_vars(self.get_option("compose"), hv, host, strict)
            self._add_host_to_composed_groups(self.get_option("groups"), hv, host, strict)
            self._add_host_to_keyed_groups(self.get_option("keyed_groups"), hv, host, strict)

    def _keep(self, hv, filters):
        self.templar.available_variables = hv
        for f in filters:
            kind, cond = next(iter(f.items()))
            try:
                hit = self.templar.evaluate_conditional(cond)
            except Exception as e:  # a filter that cannot be evaluated names itself
                raise AnsibleParserError("appc.rocket.pods: filter %s %r: %s" % (kind, cond, to_native(e)))
            if hit:
                return kind == "include"
        return True
