"""SIGKILL a process doing import, render, prepare, run, stop, pod removal and image removal
at a random moment, many times; after each kill, recovery leaves a clean store and host.

Half the kills come at a uniformly random time in the cycle. Uniform time lands mostly where
the cycle waits (interpreter start, the pod's start, the stop), so the other half first wait
for a crash point drawn from those the calibration run passed, then kill after a random
few milliseconds: every phase is hit, whatever the machine's speed.

ROCKET_CRASH_TRIALS (default 100) sets the number of kills, ROCKET_CRASH_SEED the seed
(printed on failure, so a failing trial can be replayed).
"""
import collections
import os
import random
import signal
import time

import harness
from tests.support import images, leaks, pods

TRIALS = int(os.environ.get("ROCKET_CRASH_TRIALS", "100"))
SEED = int(os.environ.get("ROCKET_CRASH_SEED", str(int(time.time()))))


def wait_for_point(proc, log, name, timeout=60.0):
    """Poll the crash log until ``name`` is in it or the process has ended."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if name in log.read_text().split():
                return
        except FileNotFoundError:
            pass
        time.sleep(0.0005)


def test_random_sigkills(tmp_path, image_dir):
    data_dir = str(tmp_path / "rocket")
    from ansible_collections.appc.rocket.plugins.module_utils.stage0 import stage1_image
    from ansible_collections.appc.rocket.plugins.module_utils.stage0.store import Store

    with Store(data_dir) as s:
        s.import_file(pods.busybox_aci(image_dir))
        stage1_image.ensure(s, None)
    children = leaks.snapshot()["children"]

    def fresh():
        return images.build(tmp_path, name="example.com/fresh", version=os.urandom(4).hex(),
                            files={"etc/f": os.urandom(4096), "d/x": b"x"})[0]

    log = tmp_path / "reached.log"
    t0 = time.monotonic()
    rc, dummy_out, err = harness.drive(data_dir, "cycle", fresh(), "example.com/busybox", crash_log=log)
    assert rc == 0, err[-2000:]  # calibrate: a whole cycle, and the points it passes
    whole = time.monotonic() - t0
    points = sorted(set(log.read_text().split()))
    assert len(points) >= 10, points
    rng = random.Random(SEED)
    last_points = collections.Counter()  # where each kill landed: the last crash point passed
    for trial in range(TRIALS):
        aci = fresh()
        if log.exists():
            log.unlink()
        t0 = time.monotonic()
        p = harness.spawn(data_dir, "cycle", aci, "example.com/busybox", crash_log=log)
        if trial % 2:
            target = rng.choice(points)
            delay = rng.uniform(0, 0.005)
            when = "%.4fs after %s" % (delay, target)
            wait_for_point(p, log, target)
        else:
            delay = rng.uniform(0, whole)
            when = "after %.3fs of a %.3fs cycle" % (delay, whole)
        time.sleep(delay)
        p.send_signal(signal.SIGKILL)
        p.communicate()
        os.unlink(aci)
        what = "trial %d (seed %d, kill %s)" % (trial, SEED, when)
        assert p.returncode in (0, -9), what
        if p.returncode == 0:  # finished first: cycles got faster than the calibration
            if not trial % 2:
                whole = min(whole, time.monotonic() - t0) * 0.9
            last_points["(finished)"] += 1
        else:
            reached = log.read_text().split() if log.exists() else []
            last_points[reached[-1] if reached else "(start)"] += 1
        try:
            harness.settle(data_dir)
        except AssertionError as e:
            raise AssertionError("%s: %s" % (what, e)) from None
        assert leaks.snapshot()["children"] == children, what
    print("where the kills landed:", dict(last_points))
    assert TRIALS - last_points["(finished)"] >= TRIALS * 0.6, last_points
    assert len(last_points) >= min(8, TRIALS // 4), last_points  # spread over the whole cycle
