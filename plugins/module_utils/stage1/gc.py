"""gc: `gc <uuid>` — undo what run set up outside the pod directory: the pod's networking
(host links, bridge, firewall rules; net.py) and its cgroups.

Idempotent: a pod with nothing left is a success. Exit 0, or contract.EXIT_STAGE1 (254) naming what stayed.
"""
import os
import sys

from . import cgroups, contract


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1 or not args[0] or "/" in args[0] or args[0] in (".", ".."):
        sys.stderr.write("usage: gc <uuid>\n")
        return contract.EXIT_STAGE1
    failed = []
    if os.path.exists(contract.NET):  # private networking was planned (cwd: the pod directory)
        from . import net

        try:
            failed += [("network", e) for e in net.teardown(os.getcwd(), args[0])]
        except OSError as e:
            failed.append(("network", e))
    failed += cgroups.PodCgroups(args[0]).remove()
    for path, err in failed:
        sys.stderr.write("stage1 gc: %s: %s\n" % (path, err))
    return contract.EXIT_STAGE1 if failed else 0
