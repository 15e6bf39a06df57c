"""The session's registries are children of pytest that outlive every test: reap() must
neither wait for them nor collect them, and must still wait for and collect the rest."""
import subprocess
import time

from tests.support import pods


def test_reap_waits_for_short_children_only(registries):
    short = subprocess.Popen(["sleep", "0.3"])
    t0 = time.monotonic()
    n = pods.reap(timeout=20)
    took = time.monotonic() - t0
    assert n == 1, "reap collected %d children, expected the one that exited" % n
    assert 0.25 <= took < 5, "reap took %.2f s with the registries alive" % took
    short.returncode = 0   # reaped above: Popen cannot wait for it any more
    assert [r.proc.poll() for r in registries.all()] == [None] * len(registries.all()), \
        "reap collected or stopped a registry"
