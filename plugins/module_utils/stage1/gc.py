"""gc: `gc <uuid>` — undo what run set up outside the pod directory (the pod's cgroups).

Idempotent: a pod with nothing left is a success. Exit 0, or 254 naming what stayed.
"""
import sys

from . import cgroups


def main(argv):
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1 or not args[0] or "/" in args[0] or args[0] in (".", ".."):
        sys.stderr.write("usage: gc <uuid>\n")
        return 254
    failed = cgroups.PodCgroups(args[0]).remove()
    for path, err in failed:
        sys.stderr.write("stage1 gc: %s: %s\n" % (path, err))
    return 254 if failed else 0
