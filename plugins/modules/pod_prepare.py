#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_prepare
short_description: Keep an App Container pod prepared (rkt prepare, idempotent)
description:
  - Converges the pod of a name to a prepared pod with the declared apps, volumes and
    options - its pod manifest written, its images' trees mounted on demand - ready for
    M(appc.rocket.pod_run) to start.
  - A pod of that name that already has the declared spec (running or not) is left alone;
    one with a different spec is replaced, and RV(reasons) says which fields differ.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
  - appc.rocket.pod_options
options:
  state:
    description: V(present) keeps the pod prepared; V(absent) removes it (stopping it if it runs).
    type: str
    choices: [present, absent]
    default: present
  recreate:
    description: Replace the pod even when nothing changed.
    type: bool
    default: false
  stop_timeout:
    description: Seconds between SIGTERM and SIGKILL when a running pod is replaced or removed.
    type: int
    default: 10
attributes:
  check_mode:
    support: full
    details: Compares and reports; prepares and removes nothing.
  diff_mode:
    support: full
    details: Shows only the fields that differ (secret values redacted).
  platform:
    platforms: posix
    details: Linux, as root.
seealso:
  - module: appc.rocket.pod_run
"""

EXAMPLES = r"""
- name: Prepare a pod to start later
  appc.rocket.pod_prepare:
    name: batch
    image: example.com/worker:1.0
    exec_append: [--queue, nightly]
  register: prepared

- name: Start it
  appc.rocket.pod_run:
    uuid: "{{ prepared.pod.uuid }}"
    state: exited
"""

RETURN = r"""
pod:
  description:
    - The pod after the task. Empty when there is none.
    - With O(state=absent), empty; in check mode, the C(uuid) and C(name) of the pod that would be removed.
    - In check mode, empty when a new pod would be made.
  returned: always
  type: dict
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
            - The last lines of the app's output (20 lines), each after its UTC time, from the pod's
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
action:
  description: What was done (or would be, in check mode).
  returned: always
  type: str
  choices: [none, create, replace, remove]
reasons:
  description: Why the action was needed - the fields that changed, a missing pod.
  returned: always
  type: list
  elements: str
  sample: ["changed: apps[0].exec"]
overlay_fallback:
  description: Why the image trees were copied instead of mounted with overlayfs.
  returned: when a pod was prepared without overlayfs with O(overlay=auto)
  type: str
pulled:
  description:
    - The registry images (C(docker://...)) of the pod, one entry each, as M(appc.rocket.cas_image)
      returns its C(registry) result, plus C(image) (the image ID, none in check
      mode before a pull) and C(changed) (whether the reference now gives another image).
  returned: when the pod names a registry image
  type: list
  elements: dict
stage1_update_available:
  description: The ID of a newer default stage1 that O(update_stage1) would move the pod to.
  returned: when the pod has an older default stage1 and O(update_stage1) is false
  type: str
"""

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils import pod_options


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=pod_options.argument_spec(
            state={"type": "str", "choices": ["present", "absent"], "default": "present"},
            recreate={"type": "bool", "default": False},
            stop_timeout={"type": "int", "default": 10},
        ),
        mutually_exclusive=pod_options.MUTUALLY_EXCLUSIVE,
        required_one_of=[("name", "uuid", "image", "apps")],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    from ansible_collections.appc.rocket.plugins.module_utils.pod_runner import converge_task

    converge_task(module, mode="prepare")


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


if __name__ == "__main__":
    main()
