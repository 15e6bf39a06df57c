"""On a controller Python (3.11+), tests/unit/*.py run themselves: gathering them again in
test_on_host_pythons.py would run each twice (make unit, make units, make test)."""
import sys

collect_ignore = ["test_on_host_pythons.py"] if sys.version_info >= (3, 11) else []
