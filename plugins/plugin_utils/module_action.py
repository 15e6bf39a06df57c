# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action behind every appc.rocket module: Ansible's normal one, with the cyclic
garbage collector paused while it runs.

Before a module first runs in a playbook, the controller builds its payload: it parses
every module_utils file the module can import into an AST (53 of ours for pod_run). Those
allocations set off collections that walk the worker's whole heap again and again; they
more than doubled the build (pod_run: 491 ms with the collector, 315 ms without; our
files' ASTs 246 ms against 98). The worker is a fork that runs this one task and exits,
and ASTs are trees that reference counting frees, so the pause costs no memory to speak of.
"""
from __future__ import annotations

import gc

from ansible.plugins.action.normal import ActionModule as NormalAction


class ActionModule(NormalAction):
    def run(self, tmp=None, task_vars=None):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return super().run(tmp, task_vars)
        finally:
            if was_enabled:
                gc.enable()
