"""User and group lookup in an image's own /etc/passwd and /etc/group: the one reader.

stage1 runs it after pivot_root, so every path is the app's; stage0 (an OCI image's user)
and the connection plugin (an app's user name) read a root from outside with read_db_in,
which resolves the path inside that root. The files are untrusted: each is opened with
O_NONBLOCK (and O_NOFOLLOW, or confined to the root), must be a regular file and at most
MAX_DB_SIZE bytes, so a FIFO, a device or a symlink there can neither hang nor redirect
the lookup.
"""
import os
import stat

MAX_DB_SIZE = 4 << 20


class UserLookupError(ValueError):
    pass


def read_db(path, max_size=MAX_DB_SIZE):
    """The lines of a passwd-like file, each split on ':'; [] when it does not exist."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return []
    if not stat.S_ISREG(st.st_mode):
        raise UserLookupError("%s is not a regular file" % path)
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    return read_db_fd(fd, path, max_size)


def read_db_in(root, path, max_size=MAX_DB_SIZE):
    """read_db of ``path`` inside the directory ``root``: symlinks resolve inside it, never out."""
    from . import paths

    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fd = paths.resolve(rootfd, path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return []
    finally:
        os.close(rootfd)
    return read_db_fd(fd, path, max_size)


def read_db_fd(fd, path, max_size=MAX_DB_SIZE):
    """read_db of an open file (closed here); ``path`` names it in errors."""
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserLookupError("%s is not a regular file" % path)
        if st.st_size > max_size:
            raise UserLookupError("%s is larger than %d bytes" % (path, max_size))
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            total += len(chunk)
            if total > max_size:
                raise UserLookupError("%s is larger than %d bytes" % (path, max_size))
            chunks.append(chunk)
    finally:
        os.close(fd)
    out = []
    for line in b"".join(chunks).decode("utf-8", "replace").splitlines():
        if line and not line.startswith("#"):
            out.append(line.split(":"))
    return out


def user_name(entries, uid):
    """The name of ``uid`` in passwd entries, or None."""
    for e in entries:
        if len(e) >= 3 and e[2] == str(uid):
            return e[0]
    return None


def primary_gid(entries, user):
    """The primary gid of ``user`` (a name, or a uid in digits) in passwd entries, or None."""
    for e in entries:
        if len(e) >= 4 and (e[0] == user or (user.isdigit() and e[2] == user)) and e[3].isdigit():
            return int(e[3])
    return None


def _number(text):
    if text.isdigit() and len(text) <= 10:
        n = int(text)
        if n < 2 ** 32 - 1:
            return n
    return None


def resolve_user(user, passwd="/etc/passwd"):
    """(uid, home or None) of user: a name in passwd, a number, or an absolute path (its owner)."""
    n = _number(user)
    if n is None and user.startswith("/"):
        n = os.stat(user).st_uid
    entries = None
    if n is None:
        entries = read_db(passwd)
        for e in entries:
            if len(e) >= 3 and e[0] == user and _number(e[2]) is not None:
                return int(e[2]), (e[5] if len(e) >= 6 and e[5] else None)
        raise UserLookupError("user %r not found in %s" % (user, passwd))
    try:
        entries = read_db(passwd)
    except (OSError, UserLookupError):
        entries = []
    for e in entries:
        if len(e) >= 6 and _number(e[2]) == n and e[5]:
            return n, e[5]
    return n, None


def resolve_group(group, groupdb="/etc/group"):
    """gid of group: a name in the group file, a number, or an absolute path (its group)."""
    n = _number(group)
    if n is not None:
        return n
    if group.startswith("/"):
        return os.stat(group).st_gid
    for e in read_db(groupdb):
        if len(e) >= 3 and e[0] == group and _number(e[2]) is not None:
            return int(e[2])
    raise UserLookupError("group %r not found in %s" % (group, groupdb))


def member_gids(name, groupdb="/etc/group"):
    """gids of the groups that list ``name`` as a member (initgroups' supplementary groups)."""
    out = []
    for e in read_db(groupdb):
        if len(e) >= 4 and name in e[3].split(",") and _number(e[2]) is not None:
            out.append(int(e[2]))
    return out


def resolve_spec(spec, passwd="/etc/passwd", groupdb="/etc/group"):
    """(uid, gid, groups, home) of docker's ``user[:group]`` (names or numbers) in an image's
    files. Without a group: the user's primary one, else the uid's number (no passwd entry);
    groups: the gid and those listing the user by name."""
    user, sep, group = spec.partition(":")
    if not user or user.startswith("/") or (sep and (not group or group.startswith("/"))):
        raise UserLookupError("%r is not user[:group] (a name or a number each)" % spec)
    uid, home = resolve_user(user, passwd)
    entries = read_db(passwd)
    name = user_name(entries, uid) if _number(user) is not None else user
    if sep:
        gid = resolve_group(group, groupdb)
    else:
        gid = primary_gid(entries, name or user)
        gid = uid if gid is None else gid
    groups = [gid] + [g for g in (member_gids(name, groupdb) if name else []) if g != gid]
    return uid, gid, groups, home
