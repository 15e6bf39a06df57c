#!/bin/sh
# Run a command in private mount and network namespaces, for developers who run tests while
# others use the same machine: mounts, network namespaces, links and firewall rules made by
# one run are not seen by the leak checker of another. (CI runs alone and does not need it.)
# Usage: tools/isolated.sh .venv/bin/python -m pytest tests/integration/test_x.py
set -eu
exec unshare --mount --net --propagation private -- sh -c '
    mkdir -p /run/netns && mount -t tmpfs -o mode=0755 rocket-netns /run/netns
    ip link set lo up
    exec "$@"' isolated "$@"
