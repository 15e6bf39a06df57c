"""gc: `gc <uuid>` — undo what run set up outside the pod directory: the pod's networking
(host links, bridge, firewall rules; net.py) and its cgroups.

`gc --many` does the same for many pods in one interpreter (the `gc-many` entrypoint):
removing N pods started N interpreters, most of each removal's time. It reads one pod a
line on stdin, `<uuid> <pod directory>`, and answers each as soon as it is done, in order,
`<uuid> ok` or `<uuid> failed <why>`, so stage0 can send a pod the moment it has stopped
while it still waits for the next. It exits 0 at the end of its input.

Idempotent: a pod with nothing left is a success. Exit 0, or contract.EXIT_STAGE1 (254) naming what stayed.
"""
import os
import sys

from . import cgroups, contract


def _valid(uuid):
    return bool(uuid) and "/" not in uuid and uuid not in (".", "..")


def _undo(uuid):
    """[(what, error)] of what stayed; the cwd is the pod directory."""
    failed = []
    if os.path.exists(contract.NET):  # private networking was planned
        from . import net

        try:
            failed += [("network", e) for e in net.teardown(os.getcwd(), uuid)]
        except OSError as e:
            failed.append(("network", e))
    try:
        cg = cgroups.PodCgroups.of_pod(".", uuid)
    except (OSError, ValueError) as e:
        return failed + [("cgroups", e)]
    return failed + cg.remove()


def _many(inp, out):
    for raw in iter(inp.readline, b""):
        uuid, sep, path = raw.rstrip(b"\n").decode("utf-8", "surrogateescape").partition(" ")
        if not _valid(uuid) or not sep or not path.startswith("/"):
            uuid, failed = "-", [("input", OSError("not `<uuid> <pod directory>`: %r" % raw[:200]))]
        else:
            try:
                os.chdir(path)
                failed = _undo(uuid)
            except OSError as e:
                failed = [(path, e)]
        why = "; ".join("%s: %s" % (p, e) for p, e in failed).replace("\n", " ")
        line = "%s ok\n" % uuid if not failed else "%s failed %s\n" % (uuid, why)
        out.write(line.encode("utf-8", "surrogateescape"))
        out.flush()
    return 0


def main(argv):
    if "--many" in argv:
        return _many(sys.stdin.buffer, sys.stdout.buffer)
    args = [a for a in argv if not a.startswith("--")]
    if len(args) != 1 or not _valid(args[0]):
        sys.stderr.write("usage: gc <uuid> | gc --many\n")
        return contract.EXIT_STAGE1
    failed = _undo(args[0])
    for path, err in failed:
        sys.stderr.write("stage1 gc: %s: %s\n" % (path, err))
    return contract.EXIT_STAGE1 if failed else 0
