# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  data_dir:
    description:
      - The appc.rocket data directory on the target host (image store, pods, trust store).
      - Created mode 0700 when missing; a directory written by a newer, incompatible
        version of the collection is refused.
      - Set it once for all modules with C(module_defaults) and the C(group/appc.rocket.rocket) action group.
    type: path
    default: /var/lib/rocket
"""
