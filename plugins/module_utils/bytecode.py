# -*- coding: utf-8 -*-
# Copyright: appc.rocket developers
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Compiled code for this collection's module_utils, kept between module runs.

Ansible ships a module and its module_utils to the host as sources in a zip, and zipimport
compiles every one on every run (Python 3.11's twice: once to find it, once to load it),
a large part of a no-op task (docs/performance.md has the figures). Importing this
module (the first of ours a module imports) puts a finder in front of zipimport for this
package only: it reads each source from the zip and runs the code compiled from exactly
that source by exactly this kind of interpreter on an earlier run, or compiles it once.

Cached code runs as the module's user, so a cache is used only when that user owns it and
nobody else can write it or its parent. Files are named by the SHA-256 of the bytecode
magic, the optimization level and the source: another collection version or Python never
reads them. Nothing is written until save(True): a module in check mode writes nothing.
Outside a zip (tests, an unpacked module) this module does nothing.

``ROCKET_BYTECODE_CACHE`` in the module's environment names another directory, or ``off``.
"""
from __future__ import annotations

import marshal
import os
import stat
import sys
import types

PACKAGE = __name__.rpartition(".")[0]
MAX_ENTRIES = 512  # more (many collection versions) and the oldest half is dropped
MAX_SIZE = 4 << 20

_finder = None


def cache_dir() -> "str | None":
    """Where compiled code is kept for this user; None when the cache is turned off."""
    chosen = os.environ.get("ROCKET_BYTECODE_CACHE")
    if chosen:
        return None if chosen == "off" else os.path.abspath(chosen)
    if os.geteuid() == 0:
        return "/var/cache/appc.rocket/pyc"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "appc.rocket", "pyc")


def cache_key(source: bytes) -> str:
    import hashlib
    from importlib.util import MAGIC_NUMBER

    return hashlib.sha256(MAGIC_NUMBER + b"%d\0" % sys.flags.optimize + source).hexdigest()


def private_dir(path: str, create: bool = False) -> bool:
    """True when ``path`` is a directory (not a link) of this user that only it can write,
    in a parent that no one else can write; created 0700 when ``create``."""
    if create:
        try:
            os.makedirs(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            return False
    uid = os.geteuid()
    try:
        st, parent = os.lstat(path), os.lstat(os.path.dirname(path))
    except OSError:
        return False
    return (stat.S_ISDIR(st.st_mode) and st.st_uid == uid and not st.st_mode & 0o077
            and stat.S_ISDIR(parent.st_mode) and parent.st_uid in (0, uid) and not parent.st_mode & 0o022)


class _Finder:
    def __init__(self, directory: "str | None") -> None:
        self.dir = directory
        self.readable = directory is not None and private_dir(directory)
        self.writable = False
        self.pending: "dict[str, bytes]" = {}  # key -> marshalled code, written by save(True)

    def find_spec(self, fullname, path=None, target=None):
        if not fullname.startswith(PACKAGE + ".") or not path:
            return None
        import zipimport
        from importlib.machinery import ModuleSpec

        tail = fullname.rpartition(".")[2]
        for entry in path:
            if os.path.isdir(entry):
                return None  # a real tree: the path finder and its __pycache__ do this
            try:
                zi = zipimport.zipimporter(entry)
                ispkg = zi.is_package(fullname)
            except zipimport.ZipImportError:
                continue
            origin = os.path.join(entry, tail, "__init__.py") if ispkg else os.path.join(entry, tail + ".py")
            # _Loader has what a loader needs without importlib.abc's cost at every module start.
            spec = ModuleSpec(fullname, _Loader(self, zi, origin),  # type: ignore[arg-type]
                              origin=origin, is_package=ispkg)
            spec.has_location = True
            if ispkg:
                spec.submodule_search_locations = [os.path.join(entry, tail)]
            return spec
        return None

    def code(self, source: bytes, origin: str):
        key = cache_key(source)
        if self.readable and self.dir is not None:
            data = _read(os.path.join(self.dir, key))
            if data is not None:
                try:
                    code = marshal.loads(data)
                except (EOFError, ValueError, TypeError):
                    code = None
                if isinstance(code, types.CodeType):
                    import _imp

                    # as importlib does for a .pyc; _imp's private helper has no stub
                    _imp._fix_co_filename(code, origin)  # type: ignore[attr-defined]
                    return code
        code = compile(source, origin, "exec", dont_inherit=True)
        if self.dir is not None:
            self.pending[key] = marshal.dumps(code)
            if self.writable:
                self.flush()
        return code

    def flush(self) -> None:
        if self.dir is None:
            return
        for key, blob in self.pending.items():
            _write(self.dir, key, blob)
        self.pending.clear()
        try:
            names = os.listdir(self.dir)
        except OSError:
            return
        if len(names) > MAX_ENTRIES:
            _prune(self.dir, names)


class _Loader:
    """Loads one module of the package from the zip; also answers get_data for the files
    beside it (stage1's and the metadata service's sources are read that way)."""

    def __init__(self, finder: _Finder, zi, origin: str) -> None:
        self.finder, self.zi, self.origin = finder, zi, origin

    def create_module(self, spec):
        return None

    def exec_module(self, module) -> None:
        exec(self.get_code(module.__name__), module.__dict__)  # pylint: disable=exec-used

    def get_code(self, fullname):
        return self.finder.code(self.zi.get_data(self.origin), self.origin)

    def get_source(self, fullname):
        from importlib.util import decode_source

        return decode_source(self.zi.get_data(self.origin))

    def get_data(self, path):
        return self.zi.get_data(path)

    def get_filename(self, fullname):
        return self.origin

    def is_package(self, fullname):
        return self.zi.is_package(fullname)


def _read(path: str) -> "bytes | None":
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022 or st.st_size > MAX_SIZE:
            return None
        return os.read(fd, st.st_size + 1)
    except OSError:
        return None
    finally:
        os.close(fd)


def _write(directory: str, key: str, blob: bytes) -> None:
    """Best effort (a read-only or full disk only costs the next run a compile)."""
    tmp = os.path.join(directory, ".%s.%d.tmp" % (key, os.getpid()))
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, blob)
        finally:
            os.close(fd)
        os.replace(tmp, os.path.join(directory, key))
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _prune(directory: str, names) -> None:
    aged = []
    for n in names:
        try:
            aged.append((os.lstat(os.path.join(directory, n)).st_mtime, n))
        except OSError:
            pass
    for dummy_mtime, n in sorted(aged)[:len(aged) // 2]:
        try:
            os.unlink(os.path.join(directory, n))
        except OSError:
            pass


def save(allowed: bool) -> None:
    """Keep what was compiled so far, and from now on as it is compiled, unless ``allowed``
    is false (check mode: the host is not touched, not even its cache)."""
    f = _finder
    if f is None or not allowed or f.dir is None:
        return
    if not private_dir(f.dir, create=True):
        f.dir = None
        f.pending.clear()
        return
    f.readable = f.writable = True
    f.flush()


def _install() -> None:
    global _finder
    if _finder is not None or os.path.isdir(os.path.dirname(os.path.abspath(__file__))):
        return  # not from a zip: imports are served (and cached) as usual
    _finder = _Finder(cache_dir())
    sys.meta_path.insert(0, _finder)


_install()
