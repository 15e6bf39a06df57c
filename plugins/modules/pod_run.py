#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_run
short_description: Keep an App Container pod running (or run it to completion, or remove it)
description:
  - Converges the pod of a name to the declared apps, volumes and options - prepares it from
    images in the store and runs it under a keeper process, like C(rkt run) made idempotent.
  - The declared spec is compared with the pod on disk field by field, and with the image IDs
    the references resolve to now. The same task twice reports no change. A changed option
    replaces the pod, and RV(reasons) says which fields changed.
  - A pod that exited is not restarted in place (a pod runs once); a new pod with the same
    spec replaces it.
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
  - appc.rocket.pod_options
options:
  state:
    description:
      - V(running) keeps the pod running.
      - V(exited) runs the pod once to completion (a job) or stops it when it runs.
      - V(absent) stops and removes the pod.
    type: str
    choices: [running, exited, absent]
    default: running
  wait:
    description: With O(state=running), wait until the pod exits and return each app's exit code and output.
    type: bool
    default: false
  wait_timeout:
    description: Seconds to wait for the pod to exit (with O(wait) or O(state=exited)); no limit when unset.
    type: int
  stop_timeout:
    description: Seconds between SIGTERM to the apps and SIGKILL when the pod is stopped or replaced.
    type: int
    default: 10
  restart:
    description: Replace a running pod even when nothing changed.
    type: bool
    default: false
  restart_policy:
    description:
      - What the keeper does when the pod exits - V(no), V(on-failure) (a non-zero exit) or V(always),
        with a backoff from 1 to 60 seconds. A stop never triggers it.
    type: str
    choices: ['no', on-failure, always]
    default: 'no'
  net:
    description: V(host) shares the host's network; V(none) gives the pod only a loopback interface.
    type: str
    choices: [host, none]
    default: host
  hostname:
    description: The pod's host name (default - C(rkt-) and the first 8 characters of its UUID).
    type: str
  debug:
    description: Ask stage1 to log what it does (to the pod's stage1 log).
    type: bool
    default: false
  fail_on_app_error:
    description: After waiting, fail the task when an app exited with a non-zero status.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    details:
      - Computes the same comparison and reports what would change; imports, prepares, runs and stops nothing.
      - An image that an earlier task would import is reported as a change.
  diff_mode:
    support: full
    details: Shows only the fields that differ (secret values redacted).
  platform:
    platforms: posix
    details: Linux, as root.
notes:
  - Runs on the target host with Python 3.8 or newer and its standard library.
  - Ansible gives a module no terminal, so interactive pods are not offered here; the library's
    C(run_foreground(interactive=True)) is for that.
  - Pods do not come back after a reboot by themselves on hosts without systemd; a second run of
    the playbook brings them back (pods whose processes are gone are seen as exited).
seealso:
  - module: appc.rocket.pod_prepare
  - module: appc.rocket.pod_info
  - module: appc.rocket.pod_enter
"""

EXAMPLES = r"""
- name: Keep a web pod running
  appc.rocket.pod_run:
    name: web
    image: example.com/nginx:1.25
    volumes:
      - {name: html, kind: host, source: /srv/html, read_only: true}
    mounts:
      - {volume: html, path: /usr/share/nginx/html}
    restart_policy: always

- name: Run a job once and collect its output
  appc.rocket.pod_run:
    name: migrate
    image: example.com/app:2.0
    exec: [/app/migrate, --yes]
    secret_environment:
      DB_PASSWORD: "{{ vault_db_password }}"
    state: exited
  register: job

- name: Two apps sharing a volume
  appc.rocket.pod_run:
    name: pipeline
    apps:
      - {image: example.com/producer, mounts: [{volume: spool, path: /spool}]}
      - {image: example.com/consumer, mounts: [{volume: spool, path: /spool}]}
    volumes:
      - {name: spool}

- name: Remove it
  appc.rocket.pod_run:
    name: web
    state: absent
"""

RETURN = r"""
pod:
  description: The pod after the task (before removal for O(state=absent); empty when there is none).
  returned: always
  type: dict
  contains:
    uuid:
      description: The pod's UUID.
      type: str
    name:
      description: The pod's name.
      type: str
    state:
      description: C(prepared), C(running), C(exited), ...
      type: str
    pid:
      description: Host PID of the pod's PID 1, while it runs.
      type: int
    apps:
      description: Each app's C(name), C(image_id), C(exit_code), C(signal), C(error) and the last lines of its C(log).
      type: list
      elements: dict
    ignored_isolators:
      description: Isolators the stage1 did not enforce, by app.
      type: dict
action:
  description: What was done - C(none), C(run), C(replace), C(start), C(restart), C(stop) or C(remove).
  returned: always
  type: str
reasons:
  description: Why the action was needed (e.g. the changed fields).
  returned: always
  type: list
  elements: str
stage1_update_available:
  description: The ID of a newer default stage1 that O(update_stage1) would move the pod to.
  returned: when one exists
  type: str
"""

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.appc.rocket.plugins.module_utils import pod_options


def main():
    module = AnsibleModule(
        argument_spec=pod_options.run_argument_spec(),
        mutually_exclusive=pod_options.MUTUALLY_EXCLUSIVE,
        required_one_of=[("name", "uuid", "image", "apps")],
        supports_check_mode=True,
    )
    from ansible_collections.appc.rocket.plugins.module_utils.pod_runner import converge_task

    converge_task(module, mode="run")


if __name__ == "__main__":
    main()
