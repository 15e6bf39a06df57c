"""The test suites (unit/, integration/, reliability/) and their shared helpers (support/).

A package, so that pytest imports tests/conftest.py as ``tests.conftest`` with the checkout
root on sys.path (its rootdir arrangement), and every test can say ``from tests.support
import ...``.
"""
