"""The target-side unit tests, gathered where ansible-test runs them on every host Python.

ansible-test units runs tests/unit/*.py on controller Pythons only (3.11+ for ansible-core
2.19), and only tests under tests/unit/plugins/module_utils on the others: Debian 11's 3.9
would go untested. This file imports the unit tests of module_utils (stage0, stage1, the
module glue) so that `ansible-test units --python 3.9` runs them there too. On controller
Pythons it holds nothing, since the originals run there already (pytest's "no tests" status
is no failure for ansible-test).
Controller-only tests (docs, architecture, the inventory plugin) stay out.
"""
import sys

# pylint: disable=wildcard-import,unused-wildcard-import
if sys.version_info < (3, 11):
    from tests.unit.test_aci_unit import *  # noqa: F401,F403
    from tests.unit.test_bytecode import *  # noqa: F401,F403
    from tests.unit.test_devices_bpf import *  # noqa: F401,F403
    from tests.unit.test_devsec_options import *  # noqa: F401,F403
    from tests.unit.test_discovery import *  # noqa: F401,F403
    from tests.unit.test_healthcheck import *  # noqa: F401,F403
    from tests.unit.test_idrange import *  # noqa: F401,F403
    from tests.unit.test_jsonlite import *  # noqa: F401,F403
    from tests.unit.test_limits_unit import *  # noqa: F401,F403
    from tests.unit.test_metadata_unit import *  # noqa: F401,F403
    from tests.unit.test_module_glue import *  # noqa: F401,F403
    from tests.unit.test_net_unit import *  # noqa: F401,F403
    from tests.unit.test_oci_unit import *  # noqa: F401,F403
    from tests.unit.test_pod_export_unit import *  # noqa: F401,F403
    from tests.unit.test_podspec import *  # noqa: F401,F403
    from tests.unit.test_registry_pull_unit import *  # noqa: F401,F403
    from tests.unit.test_registry_push_unit import *  # noqa: F401,F403
    from tests.unit.test_registry_unit import *  # noqa: F401,F403
    from tests.unit.test_remote_enter_unit import *  # noqa: F401,F403
    from tests.unit.test_restart_stop_unit import *  # noqa: F401,F403
    from tests.unit.test_schema import *  # noqa: F401,F403
    from tests.unit.test_seccomp import *  # noqa: F401,F403
    from tests.unit.test_stage1_unit import *  # noqa: F401,F403
    from tests.unit.test_volumes_unit import *  # noqa: F401,F403
