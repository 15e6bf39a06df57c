"""Resolve paths inside an app's root, never on the host.

Every path an image controls (mount targets, /proc, /sys, /dev) is looked up relative to
an O_PATH fd of the app's root, with symlinks (absolute ones and "..") confined to that
root: openat2(RESOLVE_IN_ROOT) where the kernel has it (5.6+), else a component-by-component
walk with O_NOFOLLOW and our own symlink resolution. Callers mount through
/proc/self/fd/N of the fd returned, so what was checked is what gets mounted on.
"""
import os
import stat

from . import linux

_MAX_LINKS = 40
_have_openat2 = None


def fd_path(fd):
    return "/proc/self/fd/%d" % fd


def _components(path):
    return [c for c in path.split("/") if c not in ("", ".")]


def resolve(rootfd, path, flags=os.O_PATH, walker=None):
    """An fd (flags | O_CLOEXEC) of path resolved inside rootfd; symlinks stay inside."""
    global _have_openat2
    rel = "/".join(_components(path)) or "."
    if walker is None and _have_openat2 is not False:
        try:
            return linux.openat2(rootfd, rel, flags,
                                 linux.RESOLVE_IN_ROOT | linux.RESOLVE_NO_MAGICLINKS)
        except OSError as e:
            if e.errno not in (38, 1):  # ENOSYS, or EPERM from a seccomp filter
                raise
            _have_openat2 = False
    return walk(rootfd, rel, flags)


def walk(rootfd, path, flags=os.O_PATH):
    """resolve() without openat2: one component at a time, symlinks resolved by us."""
    todo = list(reversed(_components(path)))
    stack = [os.dup(rootfd)]
    links = 0
    try:
        while todo:
            name = todo.pop()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                continue
            fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=stack[-1])
            st = os.fstat(fd)
            if stat.S_ISLNK(st.st_mode):
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise OSError(40, os.strerror(40), path)
                target = os.readlink(name, dir_fd=stack[-1])
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop())
                todo.extend(reversed(_components(target)))
                continue
            if todo and not stat.S_ISDIR(st.st_mode):
                os.close(fd)
                raise OSError(20, os.strerror(20), path)
            stack.append(fd)
        last = stack.pop()
        if flags & ~os.O_CLOEXEC == os.O_PATH:
            return last
        try:
            if flags & os.O_DIRECTORY and not stat.S_ISDIR(os.fstat(last).st_mode):
                raise OSError(20, os.strerror(20), path)
            return os.open(fd_path(last), (flags & ~os.O_DIRECTORY) | os.O_CLOEXEC)
        finally:
            os.close(last)
    finally:
        for fd in stack:
            os.close(fd)


class HostPathError(OSError):
    """A host path refused: ``component`` is the path up to the component at fault."""

    def __init__(self, path, component, why):
        OSError.__init__(self, "%s: %s %s" % (path, component, why))
        self.path, self.component, self.why = path, component, why


def open_host(path):
    """O_PATH fd of an absolute host path in which no component is a symlink or "..".

    A host volume's source is walked from the host's / one component at a time with
    O_NOFOLLOW, and a symlink anywhere is refused whoever owns it: a root app in a pod
    without private_users is root on the files of a host volume it can write, so neither
    ownership nor a root-only parent tells a link the host's root made from one the pod
    planted. Callers mount through /proc/self/fd/N of this fd: what was checked is what
    gets mounted.
    """
    if not path.startswith("/"):
        raise HostPathError(path, path, "is not an absolute path")
    fd = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    done = ""
    try:
        for name in path.split("/"):
            if name in ("", "."):
                continue
            if name == "..":
                raise HostPathError(path, done + "/..", "is a \"..\" component")
            try:
                nfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            except FileNotFoundError:
                raise HostPathError(path, done + "/" + name, "does not exist")
            except NotADirectoryError:
                raise HostPathError(path, done or "/", "is not a directory")
            done += "/" + name
            if stat.S_ISLNK(os.fstat(nfd).st_mode):
                os.close(nfd)
                raise HostPathError(path, done, "is a symlink (to %s)" % os.readlink(name, dir_fd=fd))
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def _split(path):
    parts = _components(path)
    if ".." in parts:
        raise ValueError("%s: a mount point may not contain \"..\"" % path)
    if not parts:
        return None, None
    return "/" + "/".join(parts[:-1]), parts[-1]


def mkdirs(rootfd, path, mode=0o755):
    """O_PATH fd of directory path inside rootfd, creating missing ones (root-owned)."""
    for dummy in range(8):
        try:
            return resolve(rootfd, path, os.O_PATH | os.O_DIRECTORY)
        except FileNotFoundError:
            parent, name = _split(path)
            if name is None:
                raise
            pfd = mkdirs(rootfd, parent, mode)
            try:
                os.mkdir(name, mode, dir_fd=pfd)
            except FileExistsError:
                pass
            finally:
                os.close(pfd)
    raise OSError(2, "cannot create directory inside the root", path)


def mkfile(rootfd, path, mode=0o644):
    """O_PATH fd of a non-directory path inside rootfd, creating an empty file if missing."""
    for dummy in range(8):
        try:
            return resolve(rootfd, path, os.O_PATH)
        except FileNotFoundError:
            parent, name = _split(path)
            if name is None:
                raise
            pfd = mkdirs(rootfd, parent)
            try:
                os.close(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                 | os.O_CLOEXEC, mode, dir_fd=pfd))
            except FileExistsError:
                pass
            finally:
                os.close(pfd)
    raise OSError(2, "cannot create file inside the root", path)


def same_file(fd1, fd2):
    a, b = os.fstat(fd1), os.fstat(fd2)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
