# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue shared by the modules: the data_dir option, opening the store, mapping errors.

The runtime library raises RocketError with messages meant for users; modules show them
as they are. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import os

from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

DATA_DIR_OPTION = {"data_dir": {"type": "path", "default": "/var/lib/rocket"}}


def open_store(module, create=True):
    """The store, or None when it does not exist and must not be created (check mode)."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    path = module.params["data_dir"]
    if not create and not DataDir(path).exists():
        return None
    return Store(path, create=create)


def fail(module, err, **extra):
    """Fail the task with a library error's message."""
    if isinstance(err, RocketError):
        module.fail_json(msg=str(err), **extra)
    raise err


def abspath(path):
    return os.path.abspath(os.path.expanduser(path))
