"""Named and tmpfs volumes, per-mount read_only and propagation, as stage1 applies them.

stage0 writes them into the pod manifest (appc host and empty volumes) and the annotation
``appc.rocket/volumes`` (stage0/volumes.py); this reads that annotation and mounts:

- tmpfs: one tmpfs per volume, mounted by init over the volume's directory in the pod's
  mount namespace (nosuid, nodev, size/mode/uid/gid; under private_users the ids are the
  pod's, shifted to the host's), so every app of the pod binds the same one and it
  disappears with the pod's namespace;
- named: a host volume whose source is the volume's data directory, reached like any host
  source (paths.open_host: no symlink in any component); under private_users an idmapped
  clone, so files keep the pod's ids on disk and another pod, with another range or none,
  sees the same owners;
- propagation slave/rslave (shared/rshared: privileged pods only, stage0 refuses them
  otherwise): every namespace on the way (launcher, init, app) makes its mounts private
  first, which would cut the volume from the host's peer group. So the launcher clones the
  source before that (open_tree: a clone of a shared mount is its peer), attaches the
  clone at <pod>/propagation/<volume> and makes it a slave (recursively: no submount
  stays a peer that could send a mount out); init and each app supervisor clone it again
  before their own rprivate and attach it back (a clone of a slave is a slave of the same
  master). A host mount that is not shared sends nothing, which is the host's choice.
"""
import ctypes
import os

from . import contract, linux, paths

SYS_OPEN_TREE = 428
SYS_MOVE_MOUNT = 429
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_IDMAP = 0x00100000
STASH = "propagation"


def options(manifest):
    """The annotation's document ({} when the pod has none)."""
    for ann in manifest.get("annotations") or ():
        if ann.get("name") == contract.VOLUMES_ANNOTATION:
            from . import jsonlite

            doc = jsonlite.loads(ann.get("value") or "{}")
            return doc if isinstance(doc, dict) else {}
    return {}


def _clone(fd, recursive):
    """A detached clone of the mount tree at fd (O_PATH)."""
    flags = OPEN_TREE_CLONE | os.O_CLOEXEC | linux.AT_EMPTY_PATH | (linux.AT_RECURSIVE if recursive else 0)
    return linux.syscall(ctypes.c_long(SYS_OPEN_TREE), ctypes.c_int(fd), ctypes.c_char_p(b""), ctypes.c_uint(flags))


def _attach(tree_fd, target_fd):
    """Attach a detached tree on target_fd (O_PATH): what was checked is what gets mounted on."""
    linux.syscall(ctypes.c_long(SYS_MOVE_MOUNT), ctypes.c_int(tree_fd), ctypes.c_char_p(b""), ctypes.c_int(target_fd),
                  ctypes.c_char_p(b""), ctypes.c_uint(MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH))


# -- the launcher ------------------------------------------------------------------------
def clone_sources(plan):
    """Before the launcher's rprivate: [(volume, tree fd, shared)] of mounts.json's "propagation"."""
    out = []
    for p in plan.get("propagation") or ():
        try:
            sfd = paths.open_host(p["source"])
        except paths.HostPathError as e:
            raise RuntimeError("volume %s: source %s: %s %s; refusing to mount it" % (
                p["volume"], p["source"], e.component, e.why))
        try:
            out.append((p["volume"], _clone(sfd, p.get("recursive", True)), bool(p.get("shared"))))
        finally:
            os.close(sfd)
    return out


def attach_sources(pod_dir, held):
    """After the launcher's rprivate: each clone at <pod>/propagation/<volume>, made a slave
    of the host's peer group (or left its peer: shared, privileged only)."""
    if not held:
        return
    base = os.path.join(pod_dir, STASH)
    os.makedirs(base, mode=0o700, exist_ok=True)
    for name, tree, shared in held:
        try:
            target = os.path.join(base, name)
            if _is_dir(os.fstat(tree)):
                if not os.path.isdir(target):
                    os.mkdir(target, 0o700)
            elif not os.path.isfile(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))
            tfd = os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                _attach(tree, tfd)
            finally:
                os.close(tfd)
            if not shared:
                linux.mount(None, target, None, linux.MS_SLAVE | linux.MS_REC)
        finally:
            os.close(tree)


def _is_dir(st):
    import stat

    return stat.S_ISDIR(st.st_mode)


# -- init and the supervisors ----------------------------------------------------------
def hold(pod_dir, names=None):
    """Before an rprivate of / in a fresh namespace: {volume: [clones of its stash]}, one
    clone per name in names (an app's propagated mounts), or one per stash (init)."""
    base = os.path.join(pod_dir, STASH)
    if names is None:
        try:
            names = os.listdir(base)
        except FileNotFoundError:
            return {}
    out: dict = {}
    for name in names:
        fd = os.open(os.path.join(base, name), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            out.setdefault(name, []).append(_clone(fd, True))
        finally:
            os.close(fd)
    return out


def propagated(opts, app):
    """The volumes of the app's mounts that ask for a propagation, once per mount."""
    own = (opts.get("mounts") or {}).get(app.name) or {}
    return [m.volume["name"] for m in app.mounts if (own.get(m.target) or {}).get("propagation")]


def restore(pod_dir, held):
    """init, after its rprivate: each clone back at its stash, for the supervisors to clone."""
    for name, trees in held.items():
        for tree in trees:
            fd = os.open(os.path.join(pod_dir, STASH, name), os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                _attach(tree, fd)
            finally:
                os.close(fd)
                os.close(tree)
    held.clear()


def mount_tmpfs(pod_dir, opts, id_shift=0):
    """init: a tmpfs over volumes/<name> (made by pod.create_empty_volumes) per tmpfs volume."""
    for name, t in (opts.get("tmpfs") or {}).items():
        data = "mode=%s,uid=%d,gid=%d" % (t["mode"], id_shift + int(t["uid"]), id_shift + int(t["gid"]))
        if t.get("size"):
            data += ",size=%d" % int(t["size"])
        fd = os.open(os.path.join(pod_dir, "volumes", name), os.O_PATH | os.O_NOFOLLOW | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            linux.mount("tmpfs", paths.fd_path(fd), "tmpfs", linux.MS_NOSUID | linux.MS_NODEV, data)
        finally:
            os.close(fd)


def read_only(opts, app_name, mount):
    """The mount's own read_only, or the volume's (either makes it read-only)."""
    own = ((opts.get("mounts") or {}).get(app_name) or {}).get(mount.target) or {}
    return bool(mount.read_only or own.get("read_only"))


def mount(rootfd, ctx, opts, app_name, m, held):
    """One of an app's mounts, inside its root (before pivot_root)."""
    from . import mounts

    vol = m.volume
    ro = read_only(opts, app_name, m)
    own = ((opts.get("mounts") or {}).get(app_name) or {}).get(m.target) or {}
    trees = held.get(vol["name"]) if own.get("propagation") else None
    tree = trees.pop() if trees else None
    named = vol["name"] in (opts.get("named") or {})
    if tree is None and not (named and ctx.userns_base is not None):
        host = vol["kind"] == "host"
        recursive = host and vol.get("recursive", True) is not False
        mounts.mount_volume(rootfd, ctx.volume_source(vol), m.target, ro, recursive,
                            volume=vol["name"] if host else None)
        return
    if tree is None:  # named, private_users: an idmapped clone of its data directory
        try:
            sfd = paths.open_host(vol["source"])
        except paths.HostPathError as e:
            raise mounts.MountError("volume %s: source %s: %s %s; refusing to mount it (a named volume is never "
                                    "reached through a symlink)" % (vol["name"], vol["source"], e.component, e.why))
        try:
            tree = _clone(sfd, False)
        finally:
            os.close(sfd)
        try:
            linux.mount_setattr(tree, MOUNT_ATTR_IDMAP, userns_fd=ctx.userns_fd)
        except OSError as e:
            os.close(tree)
            raise mounts.MountError("volume %s: idmapped mount: %s (private_users with a named volume needs a file "
                                    "system with idmapped mounts)" % (vol["name"], os.strerror(e.errno or 0)))
    try:
        tfd = paths.mkdirs(rootfd, m.target) if _is_dir(os.fstat(tree)) else paths.mkfile(rootfd, m.target)
        try:
            if paths.same_file(tfd, rootfd):
                raise mounts.MountError("mount target %s resolves to the app's root" % m.target)
            _attach(tree, tfd)
        finally:
            os.close(tfd)
    finally:
        os.close(tree)
    fd = paths.resolve(rootfd, m.target)
    try:
        linux.mount_setattr(fd, linux.MOUNT_ATTR_NODEV | (linux.MOUNT_ATTR_RDONLY if ro else 0), 0, True)
    finally:
        os.close(fd)


def release(held):
    for trees in held.values():
        for tree in trees:
            os.close(tree)
    held.clear()


def describe(opts, app, private_users=False):
    """isolation.json "mounts": what each of the app's mounts is and how it was mounted."""
    named = opts.get("named") or {}
    tmpfs = opts.get("tmpfs") or {}
    own = (opts.get("mounts") or {}).get(app.name) or {}
    out = []
    for m in app.mounts:
        vol = m.volume
        item = {"volume": vol["name"], "path": m.target, "read_only": read_only(opts, app.name, m),
                "propagation": (own.get(m.target) or {}).get("propagation") or "rprivate", "nodev": True}
        if vol["name"] in named:
            item.update(kind="named", volume_name=named[vol["name"]], source=vol["source"],
                        idmapped=bool(private_users))
        elif vol["name"] in tmpfs:
            t = tmpfs[vol["name"]]
            item.update(kind="tmpfs", size=t.get("size"), mode=t["mode"], uid=t["uid"], gid=t["gid"], nosuid=True)
        else:
            item["kind"] = vol["kind"]
            if vol["kind"] == "host":
                item["source"] = vol["source"]
        out.append(item)
    return out
