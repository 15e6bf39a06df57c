#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: pod_enter
short_description: Run a command inside an app of a running App Container pod
description:
  - Runs a command in an app's namespaces, root, cgroups, user, groups, capabilities and
    no-new-privileges - never with more privilege than the app itself has (unlike C(rkt enter)).
version_added: "0.1.0"
author:
  - appc.rocket developers (@appc-rocket)
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
  - appc.rocket.data_dir
options:
  name:
    description: The pod's name.
    type: str
  uuid:
    description: The pod's UUID or an unambiguous prefix of it.
    type: str
  app:
    description: The app to enter; required when the pod has more than one.
    type: str
  argv:
    description: The command as a list (no shell).
    type: list
    elements: str
  command:
    description: The command as a string, split like a shell would (no shell features).
    type: str
  environment:
    description: Variables added to the app's environment for this command.
    type: dict
    default: {}
  chdir:
    description: Working directory inside the app (default - the app's).
    type: str
  user:
    description:
      - Run the command as this user of the app's image, as C(docker exec --user) - a name or a number,
        with an optional C(:group) (V(postgres), V(1000:1000)). Without a group - the user's primary
        group, or the uid's number when the image's C(/etc/passwd) does not list it; supplementary
        groups from its C(/etc/group). C(HOME) becomes the user's home unless O(environment) sets it.
      - The change happens last, once the command is the app in every way (its capabilities and
        seccomp filter included), so the kernel allows what the app itself could do - a root app
        (with C(CAP_SETUID), as by default) becomes any user and drops its capabilities; an app that
        runs as another user, or without that capability, cannot change and the task fails saying so.
      - Names are looked up in the image's own files, which a root app can rewrite - a name can then
        stand for root, never for more than the app has. Give numbers (V(70:70)) where that matters.
      - Default - the app's user; naming it (without a group) keeps the app's groups as they are. A pod
        prepared before this option (its stage1) refuses it.
    type: str
    version_added: "0.3.0"
  stdin:
    description: Data fed to the command's standard input.
    type: str
  timeout:
    description: Seconds after which the command is killed.
    type: int
  fail_on_error:
    description: Fail the task when the command exits with a non-zero status.
    type: bool
    default: false
  max_output:
    description:
      - The most bytes of standard output, and of standard error, the task takes. A command that
        writes more is killed and the task fails, naming the stream and this option (a pod must not
        fill the controller's memory with a result).
      - V(0) removes the limit.
    type: int
    default: 16777216
    version_added: "0.2.0"
attributes:
  check_mode:
    support: partial
    details: The command is not run in check mode; the task reports changed (it would run) and returns
      no RV(rc), RV(stdout) or RV(stderr).
  diff_mode:
    support: none
  platform:
    platforms: posix
    details: Linux, as root.
notes:
  - The task reports changed whenever the command ran (set C(changed_when) for read-only commands).
    A non-zero exit status fails it only with O(fail_on_error=true). A command that could not start
    (a O(user) or O(chdir) the app does not have) fails the task, saying why, with no RV(rc).
seealso:
  - module: appc.rocket.pod_run
"""

EXAMPLES = r"""
- name: Look inside
  appc.rocket.pod_enter:
    name: web
    command: cat /etc/os-release
  register: inside

- name: Reload, failing when it fails
  appc.rocket.pod_enter:
    name: web
    app: nginx
    argv: [nginx, -s, reload]
    fail_on_error: true

- name: Run psql as the database's own user, not as the app's root
  appc.rocket.pod_enter:
    name: db
    user: postgres
    argv: [psql, -c, "SELECT 1"]
    fail_on_error: true
"""

RETURN = r"""
rc:
  description: The command's exit status (128+N when killed by signal N).
  returned: when the command ran (not in check mode)
  type: int
stdout:
  description: Its standard output.
  returned: when the command ran
  type: str
stderr:
  description: Its standard error.
  returned: when the command ran
  type: str
"""

import shlex

from ansible_collections.appc.rocket.plugins.module_utils import bytecode  # first: it serves the imports after it
from ansible_collections.appc.rocket.plugins.module_utils.rocket_module import DATA_DIR_OPTION, TaskFailed, data_dir, run
from ansible_collections.appc.rocket.plugins.module_utils.stage0 import pod as podmod


def spec():
    """AnsibleModule's arguments; the action checks a task's arguments against them too
    (plugin_utils/module_action.py, the direct path)."""
    return dict(
        argument_spec=dict(
            name=dict(type="str"), uuid=dict(type="str"), app=dict(type="str"),
            argv=dict(type="list", elements="str"), command=dict(type="str"),
            environment=dict(type="dict", default={}), chdir=dict(type="str"), user=dict(type="str"), stdin=dict(type="str"),
            timeout=dict(type="int"), fail_on_error=dict(type="bool", default=False),
            max_output=dict(type="int", default=16 << 20),
            **DATA_DIR_OPTION
        ),
        mutually_exclusive=[("name", "uuid"), ("argv", "command")],
        required_one_of=[("name", "uuid"), ("argv", "command")],
        supports_check_mode=True,
    )


def task(module):
    """The task, given AnsibleModule or the direct path's stand-in (plugin_utils/thin_module.py)."""
    bytecode.save(not module.check_mode)
    run(module, enter_pod)


def main():
    from ansible.module_utils.basic import AnsibleModule  # here: the direct path imports this file without it

    task(AnsibleModule(**spec()))


def enter_pod(module):
    p = module.params
    if module.check_mode:
        return dict(changed=True, msg="not run in check mode")
    argv = p["argv"] or shlex.split(p["command"])
    pod = podmod.lookup(data_dir(module), name=p["name"], uuid=p["uuid"])
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.enter import OutputTooLarge, enter

    env = {str(k): str(v) for k, v in p["environment"].items()}
    stdin = p["stdin"].encode() if p["stdin"] is not None else None
    if p["max_output"] < 0:
        raise TaskFailed("max_output must be 0 (no limit) or a number of bytes, not %d" % p["max_output"])
    try:
        rc, out, err = enter(pod, p["app"], argv, environment=env, chdir=p["chdir"], stdin=stdin,
                             timeout=p["timeout"], output_limit=p["max_output"] or None, user=p["user"])
    except OutputTooLarge as e:
        raise TaskFailed("the command wrote more than max_output (%d bytes) to %s and was killed; raise max_output "
                         "(0: no limit) or write the output to a file in the app" % (e.limit, e.stream))
    result = dict(changed=True, rc=rc, stdout=out.decode("utf-8", "replace"), stderr=err.decode("utf-8", "replace"))
    if p["fail_on_error"] and rc != 0:
        raise TaskFailed("the command exited with status %d" % rc, **result)
    # Ansible fails a task whose result has a non-zero rc unless it says otherwise.
    return dict(failed=False, **result)


if __name__ == "__main__":
    main()
