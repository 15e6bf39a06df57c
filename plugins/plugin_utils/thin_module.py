# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The thin payload: what the action plugins (module_action.py) send a host instead of a
module with all its module_utils, when the host may have this collection's library.

Building a full payload makes the controller parse every source a module can reach (1.1 MB
for pod_run); this file reaches only Ansible's own module code, as ping does. On the host
it runs the module from the zip the runtime role installs
(``<library dir>/<version>-<sha12>/appc-rocket-pods.pyz``), which carries the modules and
module_utils, but only a zip whose every byte the controller vouches for (its SHA-256) and
that only root could have written: the file and every directory above it root's, none of
them a symbolic link or writable by group or others; and it imports those very bytes, from a
sealed in-memory copy, not the path again. Anything else, and a missing zip, is
answered with the reason alone, having imported and touched nothing; the action plugin then
sends the full payload as usual. Once the module is imported it runs exactly as it does from
a full payload: same arguments, check mode, diff, no_log and result.

The controller passes the zip's path, its digest and the module's name in the environment
(the arguments are the module's own, untouched); they are removed before the module runs,
so nothing the module starts inherits them.

For most modules (DIRECT_MODULES), the controller can go further and send
this file's source itself as the program (``direct``), with the arguments it has already
checked against the module's own spec: the host then runs the module from the library
without Ansible's module code, whose import alone costs more than the module's work
(module_action.py says when, docs/performance.md what it saves).
"""
from __future__ import annotations

import hashlib
import json
import os
import stat
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:  # never run: AnsiballZ's loader has imported it, and ``direct`` must not
    # Ansible treats a file as a new-style module when it sees such an import.
    from ansible.module_utils import basic  # noqa: F401  # pylint: disable=unused-import

ENV_LIBRARY = "ROCKET_THIN_LIBRARY"
ENV_SHA256 = "ROCKET_THIN_SHA256"
ENV_MODULE = "ROCKET_THIN_MODULE"
FALLBACK = "appc_rocket_thin_fallback"  # the one key of the answer when the zip is not used
MISSING = "missing"
UNSAFE = "unsafe"
PACKAGE = "ansible_collections.appc.rocket.plugins.modules."
# Each has spec() and task(module), and its task uses no more of AnsibleModule than DirectModule
# has (params, check and diff mode, warn, the exits): every module of the collection.
DIRECT_MODULES = ("cas_image", "cas_image_info", "cas_trust", "image_push", "pod_enter", "pod_export", "pod_gc",
                  "pod_info", "pod_network", "pod_prepare", "pod_run", "pod_set", "pod_volume", "pod_volume_info",
                  "registry_login")


def check(path: str, sha256: str, keep: "list[bytes] | None" = None) -> "tuple[str, str] | None":
    """(MISSING or UNSAFE, why) when the zip at ``path`` must not be imported; None when it may.
    ``keep`` receives the bytes hashed: what is imported must be them, not the path read again
    (a pod with a volume onto the library's directory writes there as root: red team #19)."""
    if not path.startswith("/") or os.path.normpath(path) != path or not path.endswith(".pyz"):
        return UNSAFE, "the library path %r is not an absolute path to a .pyz" % path
    current = "/"
    for part in [""] + path.split("/")[1:-1]:
        current = os.path.join(current, part) if part else "/"
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            return MISSING, "%s does not exist" % current
        except OSError as e:
            return UNSAFE, "%s cannot be examined: %s" % (current, e.strerror)
        if stat.S_ISLNK(st.st_mode):
            return UNSAFE, "%s is a symbolic link" % current
        why = _unsafe(current, st, "directory", stat.S_ISDIR)
        if why:
            return UNSAFE, why
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return MISSING, "%s does not exist" % path
    except OSError as e:
        if os.path.islink(path):
            return UNSAFE, "%s is a symbolic link" % path
        return UNSAFE, "%s cannot be opened: %s" % (path, e.strerror)
    try:
        why = _unsafe(path, os.fstat(fd), "regular file", stat.S_ISREG)
        if why:
            return UNSAFE, why
        digest, chunks = hashlib.sha256(), []
        while True:
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                break
            digest.update(chunk)
            chunks.append(chunk)
    finally:
        os.close(fd)
    if digest.hexdigest() != sha256:
        return UNSAFE, "%s has SHA-256 %s, not this collection's %s" % (path, digest.hexdigest(), sha256)
    if keep is not None:
        keep.append(b"".join(chunks))
    return None


def _sealed(data: bytes) -> str:
    """A path to a sealed in-memory copy of ``data`` for zipimport, which reopens its archive by
    path at every read: the verified bytes are imported whatever happens to the file after."""
    import fcntl

    fd = os.memfd_create("appc-rocket-pods.pyz", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
    return "/proc/self/fd/%d" % fd  # open for the process's life: every import reads it


def _unsafe(path: str, st: os.stat_result, kind: str, is_kind) -> "str | None":
    if not is_kind(st.st_mode):
        return "%s is not a %s" % (path, kind)
    if st.st_uid != 0:
        return "%s is owned by uid %d, not root" % (path, st.st_uid)
    if st.st_mode & 0o022:
        return "%s is writable by its group or others (mode %04o)" % (path, stat.S_IMODE(st.st_mode))
    return None


def _library(path: str, sha256: str, name: str) -> "tuple[tuple[str, str] | None, str]":
    """(problem, "") when the module must not come from the zip, else (None, the sealed copy's path)."""
    verified: "list[bytes]" = []
    if not name.isidentifier():
        problem: "tuple[str, str] | None" = (UNSAFE, "no module name %r" % name)
    elif any(m == "ansible_collections" or m.startswith("ansible_collections.") for m in sys.modules):
        problem = (UNSAFE, "a collection package is already imported")
    else:
        problem = check(path, sha256, verified)
    if problem:
        return problem, ""
    try:
        return None, _sealed(verified[0])
    except OSError as e:  # no memfd (an old kernel, a filter): the full payload then
        return (UNSAFE, "no sealed copy of %s to import: %s" % (path, e.strerror)), ""


def _fall_back(problem: "tuple[str, str]") -> None:
    sys.stdout.write(json.dumps({FALLBACK: {"kind": problem[0], "reason": problem[1]}}) + "\n")
    sys.exit(0)


def main() -> None:
    path = os.environ.pop(ENV_LIBRARY, "")
    sha256 = os.environ.pop(ENV_SHA256, "")
    name = os.environ.pop(ENV_MODULE, "")
    problem, copy = _library(path, sha256, name)
    if problem:
        _fall_back(problem)
    sys.path.insert(0, copy)
    import importlib

    importlib.import_module(PACKAGE + name).main()


class DirectModule:
    """What the modules' tasks use of AnsibleModule, for ``direct``: the arguments as
    the controller validated them (defaults, types, aliases resolved), check and diff mode,
    and the exits. The controller adds ``invocation`` and hides no_log values in the result,
    as AnsibleModule would have done here."""

    def __init__(self, params: "dict", check_mode: bool, diff: bool) -> None:
        self.params = params
        self.check_mode = check_mode
        self._diff = diff
        self._warnings: "list[str]" = []

    def warn(self, warning: object) -> None:
        """As AnsibleModule.warn: the result's ``warnings``, which the controller shows (as it
        takes them from any module that writes the list itself)."""
        if str(warning) not in self._warnings:
            self._warnings.append(str(warning))

    def exit_json(self, **result: object) -> None:
        self._answer(result, 0)

    def fail_json(self, msg: object, **result: object) -> None:
        result.update(failed=True, msg=str(msg))
        self._answer(result, 1)

    def _answer(self, result: "dict", code: int) -> None:
        if self._warnings:
            result["warnings"] = list(self._warnings)
        sys.stdout.write("\n" + json.dumps(result) + "\n")
        sys.stdout.flush()
        sys.exit(code)


def direct(payload: "dict") -> None:
    """Run a module of DIRECT_MODULES from the library, as the program the controller sent
    (module_action.direct_program): no Ansible code is imported here."""
    name = payload.get("module", "")
    if name not in DIRECT_MODULES:
        _fall_back((UNSAFE, "%r is not a module that runs without Ansible's module code" % name))
    problem, copy = _library(payload.get("library", ""), payload.get("sha256", ""), name)
    if problem:
        _fall_back(problem)
    log = payload.get("log")
    if log:  # AnsibleModule's "Invoked with ...", written by the controller with no_log values hidden
        try:
            import syslog

            syslog.openlog(log["ident"], 0, getattr(syslog, log["facility"], syslog.LOG_USER))
            syslog.syslog(syslog.LOG_INFO, log["message"])
        except (ImportError, TypeError, ValueError):
            pass
    try:
        os.getcwd()
    except OSError:  # a directory this user may not enter (become): as AnsibleModule does
        os.chdir(os.environ.get("HOME") or "/")
    sys.path.insert(0, copy)
    import importlib

    module = DirectModule(payload["params"], bool(payload["check_mode"]), bool(payload["diff"]))
    importlib.import_module(PACKAGE + name).task(module)
    raise RuntimeError("module %s did not exit" % name)


if __name__ == "__main__":
    main()
