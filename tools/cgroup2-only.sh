#!/bin/sh
# Run a command on a simulated cgroup-v2-only host (Debian 12+, Ubuntu 22.04+, Fedora, RHEL 9):
# in a private mount namespace whose /sys/fs/cgroup holds only the cgroup2 hierarchy, none of
# the v1 ones (devices included) that this host mounts. The host's own mounts do not change.
# ROCKET_TEST_CGROUP=v2only tells the tests (tests/integration/conftest.py checks the mounts).
# Usage: tools/cgroup2-only.sh .venv/bin/python -m pytest tests/integration/test_isolation.py
set -eu
exec unshare --mount --propagation private -- sh -c '
    set -e
    umount --recursive /sys/fs/cgroup 2>/dev/null || umount --recursive --lazy /sys/fs/cgroup
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
    ROCKET_TEST_CGROUP=v2only exec "$@"' cgroup2-only "$@"
