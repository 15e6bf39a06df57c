# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Glue shared by every module: the data_dir option, opening the store, mapping errors.

Each module declares ``data_dir`` with DATA_DIR_OPTION and hands its work to ``run``,
the one place where the library's failures become the task's: the runtime library raises
RocketError with messages meant for users, and modules show them as they are. TaskFailed
carries a failure that goes with a partial result. Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

from ansible_collections.appc.rocket.plugins.module_utils.stage0.datadir import DEFAULT_DATA_DIR, DataDir
from ansible_collections.appc.rocket.plugins.module_utils.stage0.errors import RocketError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Callable, Dict, Optional

    from ansible.module_utils.basic import AnsibleModule  # type: ignore[import-untyped]  # ansible has no type information

    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

DATA_DIR_OPTION = {"data_dir": {"type": "path", "default": DEFAULT_DATA_DIR}}


class TaskFailed(Exception):
    """The task fails with ``msg`` and the result gathered so far (``result``)."""

    def __init__(self, msg: str, **result: "Any") -> None:
        super().__init__(msg)
        self.msg = msg
        self.result = result


def run(module: "AnsibleModule", task: "Callable[[AnsibleModule], Dict[str, Any]]") -> None:
    """Exit with ``task(module)``'s result; a RocketError or TaskFailed fails the task instead."""
    try:
        result = task(module)
    except TaskFailed as e:
        module.fail_json(msg=e.msg, **e.result)
    except RocketError as e:
        module.fail_json(msg=str(e))
    module.exit_json(**result)


def data_dir(module: "AnsibleModule") -> DataDir:
    return DataDir(module.params["data_dir"])


def open_store(data_dir: str, create: bool = True) -> "Optional[Store]":
    """The store, or None when it does not exist and must not be created (check mode)."""
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    if not create and not DataDir(data_dir).exists():
        return None
    return Store(data_dir, create=create)
