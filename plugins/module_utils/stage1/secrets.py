"""Secrets as files: from stage0's memfd to a tmpfs of the pod's mount namespace, then bound
read-only at each app's targets. Their data is never written to the pod directory or any
other persistent file.

stage0 packs the pod's secrets (pack) into a sealed memfd and passes its fd to the keeper
(or its foreground child) as ROCKET_SECRETS_FD. At every start of the pod (the keeper's
restarts included) launch unpacks it (unpack) into a root-only tmpfs mounted at
<pod>/secrets in the pod's own mount namespace: on the host that directory stays empty.
Each app's supervisor binds its files, owned and moded as asked, read-only at their
targets (mount_app). Nothing else holds the data: once the keeper has gone (a reboot, a
keeper killed) the pod cannot start again until stage0 is given the secrets again.

The format: b"RSEC1\\n", then per secret the NUL-terminated fields app, name, target,
mode (octal), uid, gid, size, followed by size bytes of content.
"""
import os

from . import contract, linux
from .linux import MS_NODEV, MS_NOEXEC, MS_NOSUID

MAGIC = b"RSEC1\n"
TARGETS = "targets"   # <dir>/targets/<app>: "<name>\t<target>\n" per secret
FILES = "files"       # <dir>/files/<app>/<name>


class SecretError(RuntimeError):
    pass


def pack(items):
    """bytes for the memfd from [(app, name, target, mode, uid, gid, content bytes)]."""
    out = [MAGIC]
    for app, name, target, mode, uid, gid, content in items:
        for field in (app, name, target, "%o" % mode, str(uid), str(gid), str(len(content))):
            out.append(field.encode("utf-8", "surrogateescape") + b"\0")
        out.append(content)
    return b"".join(out)


def parse(data):
    """The items of pack's bytes."""
    if not data.startswith(MAGIC):
        raise SecretError("the secrets passed to stage1 are not in its format")
    pos, items = len(MAGIC), []
    while pos < len(data):
        fields = []
        for dummy in range(7):
            end = data.index(b"\0", pos)
            fields.append(data[pos:end].decode("utf-8", "surrogateescape"))
            pos = end + 1
        size = int(fields[6])
        items.append((fields[0], fields[1], fields[2], int(fields[3], 8), int(fields[4]), int(fields[5]),
                      data[pos:pos + size]))
        pos += size
    return items


def read_fd(fd):
    """The whole memfd, from its start whatever its offset (one fd serves every restart)."""
    chunks, pos = [], 0  # type: list, int
    while True:
        chunk = os.pread(fd, 1 << 20, pos)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)
        pos += len(chunk)


def unpack(fd, pod_dir, id_base=0):
    """Mount the secrets' tmpfs at <pod_dir>/secrets (this mount namespace only) and write
    them there, owned by uid/gid (shifted by the pod's private_users base)."""
    data = read_fd(fd)
    items = parse(data)
    top = os.path.join(pod_dir, contract.SECRETS_DIR)
    try:
        os.mkdir(top, 0o700)
    except FileExistsError:
        pass
    size = len(data) + 4096 * (2 * len(items) + 8)
    linux.mount("tmpfs", top, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0700,size=%d" % size)
    for d in (FILES, TARGETS):
        os.mkdir(os.path.join(top, d), 0o700)
    targets = {}  # type: dict
    for app, name, target, mode, uid, gid, content in items:
        adir = os.path.join(top, FILES, app)
        if app not in targets:
            os.mkdir(adir, 0o700)
            targets[app] = []
        fd2 = os.open(os.path.join(adir, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                      | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(content)
            while view:
                view = view[os.write(fd2, view):]
            os.fchown(fd2, uid + id_base, gid + id_base)
            os.fchmod(fd2, mode)
        finally:
            os.close(fd2)
        targets[app].append("%s\t%s\n" % (name, target))
    for app, lines in targets.items():
        with open(os.path.join(top, TARGETS, app), "w") as f:
            f.write("".join(lines))


def app_files(pod_dir, app, names):
    """[(file in the tmpfs, target)] of the app's secrets; SecretError when one is missing
    (the pod was started without them)."""
    top = os.path.join(pod_dir, contract.SECRETS_DIR)
    found = {}
    try:
        with open(os.path.join(top, TARGETS, app)) as f:
            for line in f:
                name, dummy_tab, target = line.rstrip("\n").partition("\t")
                found[name] = target
    except FileNotFoundError:
        pass
    missing = [n for n in names if n not in found]
    if missing:
        raise SecretError("secret %s is not available: secrets live in memory only (never on disk), so a "
                          "pod with secrets starts only from the task that gives them (pod_run with its spec)"
                          % missing[0])
    return [(os.path.join(top, FILES, app, n), found[n]) for n in names]
