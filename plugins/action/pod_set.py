# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The action of appc.rocket.pod_set: Ansible's normal one (plugin_utils/module_action.py)."""
from __future__ import annotations

from ansible_collections.appc.rocket.plugins.plugin_utils.module_action import ActionModule

__all__ = ["ActionModule"]
