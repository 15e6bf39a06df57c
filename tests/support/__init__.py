"""Helpers the tests and the benchmarks (bench/) share: root filesystems (stage1_harness),
images and hand-made archives (images, aci_util, python_image), pods (pods), leak checks
(leaks, canary), a key ring and an HTTPS server (gpgtool, https_server), and running real
modules and playbooks (ansible_run).

Importing this package makes the checkout importable as the collection
``ansible_collections.appc.rocket``, and as ``tests.support``. This is the one place where
the tests change sys.path:

- pytest finds the checkout root through tests/__init__.py, and tests/conftest.py imports
  this package first;
- ansible-test units runs pytest with its own ini file and imports tests/conftest.py as
  ``ansible_collections.appc.rocket.tests.conftest``: the checkout root is put on sys.path
  here, so that the tests' ``from tests.support import ...`` works there too;
- bench scripts, run as ``python bench/x.py``, import bench/common.py first, which puts the
  checkout root on sys.path (bench's one place) and imports this package.

Run outside an ``ansible_collections/appc/rocket`` tree (a git checkout), the collection is
found through the link .build/collections/ansible_collections/appc/rocket -> the checkout
(what ``make collection`` makes), created here when missing.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_parent = os.path.dirname(os.path.dirname(ROOT))
if os.path.basename(_parent) == "ansible_collections":
    # A copy laid out as a collection tree (ansible-test's, an installed collection).
    COLLECTIONS = os.path.dirname(_parent)
else:
    COLLECTIONS = os.path.join(ROOT, ".build", "collections")
    _link = os.path.join(COLLECTIONS, "ansible_collections", "appc", "rocket")
    if not os.path.islink(_link):
        os.makedirs(os.path.dirname(_link), exist_ok=True)
        try:
            os.symlink(ROOT, _link)
        except FileExistsError:  # another process made it meanwhile
            pass
for _p in (ROOT, COLLECTIONS):
    if _p not in sys.path:
        sys.path.insert(0, _p)
