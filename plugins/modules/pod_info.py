#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_info
short_description: Show the App Container pods on a host
description:
  - Lists pods with their state, apps, image IDs, exit codes, created and started times and the
    last lines of each app's log.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description: Only the pod of this name.
    type: str
  uuid:
    description: Only the pod with this UUID or UUID prefix.
    type: str
  state:
    description: Only pods in these states.
    type: list
    elements: str
  log_lines:
    description: How many lines of each app's log to return.
    type: int
    default: 20
attributes:
  check_mode:
    support: full
    details: The module never changes anything.
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux; reading the pods needs the data directory's owner (root).
notes:
  - A data directory that does not exist is reported as having no pods; it is not created.
"""

EXAMPLES = r"""
- name: What runs here
  appc.rocket.pod_info:
  register: pods

- name: One pod, with more of its logs
  appc.rocket.pod_info:
    name: web
    log_lines: 200
"""

RETURN = r"""
pods:
  description: The pods that match, each as M(appc.rocket.pod_run) returns one; empty when the data directory does not exist.
  returned: always
  type: list
  elements: dict
  contains:
    uuid:
      description: The pod's UUID.
      returned: always
      type: str
      sample: 5b2c0a7e-8a55-4f0b-9d1e-3f6a2c1d4e70
    name:
      description: The pod's name (null for a pod that has none).
      returned: always
      type: str
      sample: web
    state:
      description: V(prepared), V(running), V(exited), V(exited-garbage), V(garbage) or V(aborted).
      returned: always
      type: str
      sample: running
    paused:
      description: Whether the pod is paused (O(appc.rocket.pod_run#module:paused) of M(appc.rocket.pod_run)); V(false) unless it is running.
      returned: always
      type: bool
      sample: false
    hostname:
      description:
        - The host name the pod last started with - O(appc.rocket.pod_run#module:hostname), or C(rkt-) and the first
          8 hex digits of its UUID by default. Null until it has started.
      returned: always
      type: str
      sample: rkt-5b2c0a7e
    domainname:
      description: The NIS domain name the pod last started with (O(appc.rocket.pod_run#module:domainname)); null when none.
      returned: always
      type: str
    pid:
      description: Host PID of the pod's PID 1; null unless the pod is running.
      returned: always
      type: int
    lsm:
      description:
        - The LSM profile the apps run under - C(unconfined) (stage1 sets no AppArmor or SELinux label).
        - Null until the pod has run.
      returned: always
      type: str
    created:
      description: When the pod was prepared (seconds since the epoch).
      returned: always
      type: float
    started:
      description: When the pod was started (seconds since the epoch); null if it never was.
      returned: always
      type: float
    exit_code:
      description: The pod's exit status; null until it has exited.
      returned: always
      type: int
    restart:
      description:
        - The keeper's restart rule and record - C(policy) (V(no), V(always), V(on-failure),
          V(unless-stopped); null before the pod ran detached), C(retries) (on-failure's cap, 0 for none),
          C(count) (restarts so far, those of keepers started again included) and C(stopped_by_user)
          (the user stopped it - V(unless-stopped) then stays stopped when a keeper is started again).
      returned: always
      type: dict
    apps:
      description: The pod's apps, in the order of its manifest.
      returned: always
      type: list
      elements: dict
      contains:
        name:
          description: The app's name in the pod.
          type: str
        image_id:
          description: The ID of the image the app runs.
          type: str
        exit_code:
          description: The app's exit status; null until it has exited.
          type: int
        signal:
          description: The signal that ended the app, when one did.
          type: int
        error:
          description:
            - Why the app could not be started, when it could not.
            - For an app with no recorded status in a pod that ran and ended with nobody to record its end,
              the cause as far as it can be told - its PID 1 was killed (SIGKILL, the OOM killer, or the stop
              after its timeout; C(signal) is then 9) or the host went down.
          type: str
        started:
          description: When the app started (seconds since the epoch); null before.
          type: float
        finished:
          description: When the app exited (seconds since the epoch); null before.
          type: float
        oom_killed:
          description: Whether the kernel's OOM killer ended the app (its memory limit was hit).
          type: bool
        isolation:
          description:
            - Once the pod ran, the isolators C(enforced), those C(ignored) with a C(reason) each, the C(seccomp)
              filter (C(mode), C(set), C(errno), C(source) - C(default) or C(isolator)), C(sysctls),
              C(no_new_privileges), C(capabilities) (the bounding set, by name), C(privileged),
              C(user_namespace) (C(uid_base), C(gid_base), C(size)), C(lsm) and C(limits) (the resource limits the
              app asks for, by option name - C(memory), C(pids_limit), C(ulimits)...; whether each holds is in
              C(enforced) and C(ignored)).
            - C(proc_guard), whether the app runs in a Landlock domain of its own, so that the pod's other apps
              cannot reach its processes through /proc or ptrace - C(enforced), C(abi) and C(by) (C(landlock)), or
              C(enforced=false) with a C(reason) (a host without Landlock, an app that may hold CAP_SYS_ADMIN or
              CAP_SYS_PTRACE).
            - C(mounts), one per volume mount - C(volume), C(path), C(kind) (C(host), C(empty), C(named), C(tmpfs)),
              C(source), C(read_only), C(propagation), C(nodev); a tmpfs's C(size), C(mode), C(uid), C(gid), C(nosuid);
              a named volume's C(volume_name) and C(idmapped).
          type: dict
        health:
          description:
            - Only for an app with a healthcheck, once the pod ran - C(status) (C(starting), C(healthy) or
              C(unhealthy)), C(failing_streak) (failed probes in a row), C(last) (the last probe's C(exit_code),
              C(output) - its first 4096 bytes of stdout and stderr - and C(started)/C(ended) times, or null
              before one finished), C(restarts) (pod restarts it caused, with C(on_failure=restart)) and C(check)
              (the check that runs - C(test), C(interval), C(timeout), C(start_period), C(retries), C(on_failure),
              and C(source) - C(image), C(option) or C(image+option)).
            - A probe that overran its C(timeout) has exit code 137 and says so in its output.
          type: dict
        log:
          description:
            - The last lines of the app's output (O(log_lines) lines), each after its UTC time, from the pod's
              log files or, for a pod of C(log_driver=journald), from the journal (C(journalctl)); see C(docs/logs.md).
          type: str
        stop:
          description:
            - How the app is stopped - C(signal) (its name), C(timeout) (seconds of its own, null for the
              pod's stop timeout) - and what the last stop did - C(sent) (when the signal was sent, null
              before a stop) and C(killed) (true when its timeout ran out and it got SIGKILL).
          type: dict
    ignored_isolators:
      description: Isolators the stage1 did not enforce, by app name; empty when it enforced them all.
      returned: always
      type: dict
    images:
      description: The image ID each app's image reference resolved to when the pod was prepared, by app name.
      returned: always
      type: dict
    overlay:
      description: Whether the image trees are mounted with overlayfs (false - they were copied).
      returned: always
      type: bool
    networks:
      description:
        - Each network the pod joined, in order - C(name), C(ifname) (in the pod), C(ip), C(prefix),
          C(gateway), C(mac) and C(host_ifname) (the host end of its veth pair); on a dual-stack
          network also C(ip6), C(prefix6) and C(gateway6).
        - The first network also has C(ports) (the forwards, one per port of a range, with the
          C(host_port) chosen for V(0)) and C(aliases) (M(appc.rocket.pod_run)'s C(hostname_aliases)).
        - An empty list for a pod run with C(net=none); null for C(net=host).
        - A CNI network's entry also has C(cni=true), C(ips) (every address of the CNI result), C(guarded)
          (whether the host end carries the link guard) and, from pod_info for a running pod,
          C(check) - C(ok) or why CNI's CHECK failed.
      returned: always
      type: list
      elements: dict
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, data_dir, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import converge
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import NotFoundError


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(name=dict(type="str"), uuid=dict(type="str"), state=dict(type="list", elements="str"),
                           log_lines=dict(type="int", default=20), **DATA_DIR_OPTION),
        mutually_exclusive=[("name", "uuid")],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, describe)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def describe(module):
    p = module.params
    dd = data_dir(module)
    pods = []
    if not dd.exists():
        return dict(changed=False, pods=pods)
    names = podmod.pod_names(dd)
    if p["name"] or p["uuid"]:
        try:
            candidates = [podmod.lookup(dd, name=p["name"], uuid=p["uuid"])]
        except NotFoundError:
            if p["uuid"]:
                raise
            candidates = []  # a name no pod has: nothing matches, as for a state no pod is in
    else:
        candidates = podmod.list_pods(dd)
    for pod in candidates:
        d = converge.describe(pod, names.get(pod.uuid), log_lines=p["log_lines"], check_networks=True)
        if d and (not p["state"] or d["state"] in p["state"]):
            pods.append(d)
    return dict(changed=False, pods=pods)


if __name__ == "__main__":
    main()
