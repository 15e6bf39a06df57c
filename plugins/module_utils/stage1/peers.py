"""Pod names between pods on one bridge network: each running pod's /etc/hosts lists its peers.

No daemon: whoever changes a bridge network's membership rewrites the files, under the data
directory's network lock (`net/lock`). A start (net.setup, once the pod's own files exist)
and a teardown (gc, a failed start, a restart) call refresh() for the bridge networks they
touch; refresh() rewrites every running pod on them. A pod that exits without being
collected stays listed until the next change on its networks: its address is still its own
(ipam keeps it until gc), so the stale line names nobody else.

Per pod, under `<pod>/net/` (never visible inside the pod: the apps see only the bound
`hosts` file, and the pod directory is gone after their pivot):

* `hosts.base`: the pod's own hosts file as setup wrote it, before any app ran;
* `peer`: what peers learn of it: `names <pod name> <hostname> <aliases...>` (the
  hostname_aliases option) and one `net <network>` line per bridge network it is on.

Peers' addresses come from ipam (`<data_dir>/net/ipam/<network>/<ip>` holds the UUID; on a
dual-stack network a pod holds an IPv6 address there too, and gets a line for each); a pod
counts as running while its directory is in `pods/run` and its lock is held (the probe
rkt's state uses). Everything read is checked (names, addresses) before it is written into
another pod's file.

The apps bind `hosts` read-only by inode, so it is rewritten in place, never renamed:
_write() opens the pod directory, `net` and `hosts` without following symlinks (O_NOFOLLOW
on each component, through directory fds), refuses anything but a regular file with one
link (a hard link to a host file, a FIFO), and writes the new text with one pwrite at
offset 0, padded with a comment line to the old length when shorter, so a reader never
sees an empty file nor lines of the old one. A pod cannot redirect the write: it sees
neither the path nor the directory, and can at most (a privileged app remounting its
`/etc/hosts` writable) scribble over its own file, which the next rewrite replaces.

Standard library only, no json (stage1's start path).
"""
import os

PEER = "peer"
BASE = "hosts.base"
HEADER = "# pods on the same bridge networks (appc.rocket; rewritten as they come and go)\n"
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-_")
_LIMIT = 1 << 16


def data_dir(plan: "dict") -> str:
    """The data directory of a net.json plan: its lock is `<data_dir>/net/lock`."""
    return os.path.dirname(os.path.dirname(plan["lock"]))


def bridge_networks(plan: "dict") -> "list":
    return [n["name"] for n in plan["networks"] if n.get("type") == "bridge"]


def _valid_name(name: str) -> bool:
    return 0 < len(name) <= 253 and set(name) <= _NAME_CHARS and not name.startswith(("-", "."))


def _valid_ip(ip: str) -> bool:
    parts = ip.split(".")
    return len(parts) == 4 and all(p.isdigit() and len(p) <= 3 and int(p) < 256 for p in parts)


def _key6(ip: str) -> "bytes | None":
    """The sort key of an IPv6 allocation file's name (its 16 bytes), None when it is not one."""
    import socket

    if ":" not in ip or len(ip) > 39:
        return None
    try:
        return socket.inet_pton(socket.AF_INET6, ip)
    except (OSError, ValueError):
        return None


def pod_name(dd: str, uuid: str) -> "str | None":
    """The pod's name (`<data_dir>/names/<name>` holds its UUID), or None."""
    d = os.path.join(dd, "names")
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return None
    for n in names:
        if n.startswith("."):
            continue
        try:
            with open(os.path.join(d, n), "rb") as f:
                if f.read(128).decode("ascii", "replace").strip() == uuid:
                    return n
        except OSError:
            continue
    return None


def write_self(pod_dir: str, plan: "dict", uuid: str, hostname: str) -> None:
    """Record what peers learn of this pod, and its own hosts file as the base of its rewrites.
    Called by setup after write_files, before any app runs (so `hosts` is still ours)."""
    d = os.path.join(pod_dir, "net")
    names = []
    for n in [pod_name(data_dir(plan), uuid), hostname] + list(plan.get("aliases") or []):
        if n and _valid_name(n) and n not in names:
            names.append(n)
    text = "names %s\n" % " ".join(names) + "".join("net %s\n" % n for n in bridge_networks(plan))
    from .net import write_small  # net imports this module lazily: no cycle at load

    write_small(os.path.join(d, BASE), _read(pod_dir, "hosts", _LIMIT))
    write_small(os.path.join(d, PEER), text)


def _net_dir(pod_dir: str) -> int:
    """An fd of `<pod_dir>/net`, reached without following a symlink."""
    dfd = os.open(pod_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        return os.open("net", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
    finally:
        os.close(dfd)


def _read(pod_dir: str, name: str, limit: int) -> str:
    """A small regular file of `<pod_dir>/net`, read without following a symlink on the way."""
    import stat

    nfd = _net_dir(pod_dir)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=nfd)
    finally:
        os.close(nfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(1, "net/%s is not a regular file" % name)
        return os.read(fd, limit).decode("utf-8", "replace")
    finally:
        os.close(fd)


def _read_peer(pod_dir: str) -> "tuple | None":
    """(names, networks) of a pod's `peer` file, or None."""
    try:
        lines = _read(pod_dir, PEER, 4096).splitlines()
    except OSError:
        return None
    names, nets = [], []
    for line in lines:
        w = line.split()
        if w[:1] == ["names"]:
            names = [n for n in w[1:] if _valid_name(n)]
        elif w[:1] == ["net"] and len(w) == 2:
            nets.append(w[1])
    return names, nets


def members(dd: str, network: str) -> "list":
    """[(ip, uuid)] of the addresses held on network: IPv4 then IPv6, each in address order."""
    d = os.path.join(dd, "net", "ipam", network)
    try:
        names = os.listdir(d)
    except OSError:
        return []
    out = []
    for ip in names:
        key = (4, tuple(int(p) for p in ip.split("."))) if _valid_ip(ip) else (6, _key6(ip))
        if key[1] is None:
            continue
        try:
            with open(os.path.join(d, ip), "rb") as f:
                uuid = f.read(64).decode("ascii", "replace").strip()
        except OSError:
            continue
        if uuid:
            out.append((key, ip, uuid))
    return [(ip, uuid) for dummy_key, ip, uuid in sorted(out)]


def running(dd: str, uuid: str) -> "str | None":
    """The pod's directory when it runs (in pods/run, its lock held by its keeper or run), else None."""
    import fcntl

    if not uuid or "/" in uuid or uuid.startswith("."):
        return None
    path = os.path.join(dd, "pods", "run", uuid)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return path  # held: it runs
    finally:
        os.close(fd)  # closing releases our probe's shared lock
    return None


def hosts_text(base: str, peers: "list") -> str:
    """The pod's hosts file: its base, then a line per peer ([(ip, names)])."""
    if not peers:
        return base
    if base and not base.endswith("\n"):
        base += "\n"
    return base + HEADER + "".join("%s\t%s\n" % (ip, " ".join(names)) for ip, names in peers)


def refresh(dd: str, networks: "list", exclude: "str | None" = None) -> "list":
    """Rewrite the hosts file of every running pod on the given networks (call under net/lock).
    exclude: a pod that is going (its teardown), listed nowhere. Returns the errors, as text."""
    errors: "list" = []
    if not networks:
        return errors
    cache: "dict" = {}

    def info(uuid: str) -> "tuple | None":  # (pod dir, names, networks) of a running pod with a peer file, else None
        if uuid not in cache:
            path = None if uuid == exclude else running(dd, uuid)
            peer = _read_peer(path) if path else None
            cache[uuid] = (path,) + peer if peer else None
        return cache[uuid]

    on: "dict" = {}
    todo: "list" = []
    for net in networks:
        on[net] = members(dd, net)
        for dummy_ip, uuid in on[net]:
            if uuid not in todo:
                todo.append(uuid)
    for uuid in todo:
        me = info(uuid)
        if me is None:
            continue
        path, dummy_names, my_nets = me
        peers = []
        for net in my_nets:
            if net not in on:
                on[net] = members(dd, net)
            for ip, other in on[net]:
                o = info(other) if other != uuid else None
                if o is not None and o[1] and net in o[2]:
                    peers.append((ip, o[1]))
        try:
            _write(path, hosts_text(_read(path, BASE, _LIMIT), peers))
        except OSError as e:
            errors.append("pod %s: /etc/hosts not rewritten: %s" % (uuid, e))
    return errors


def _write(pod_dir: str, text: str) -> bool:
    """Replace the content of `<pod_dir>/net/hosts` in place (see the module's docstring)."""
    import stat

    data = text.encode()
    nfd = _net_dir(pod_dir)
    try:
        fd = os.open("hosts", os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, dir_fd=nfd)
    finally:
        os.close(nfd)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            raise OSError(1, "net/hosts is not a regular file with one link: refused")
        size = st.st_size
        shrink = size > _LIMIT  # scribbled over by its own pod (a privileged app): truncated
        if len(data) < size and not shrink:  # pad: the file never shrinks, no reader sees old lines
            pad = size - len(data)
            data += b"\n" if pad == 1 else b"#" + b" " * (pad - 2) + b"\n"
        if not shrink and os.pread(fd, size + 1, 0) == data:
            return False
        if os.pwrite(fd, data, 0) != len(data):
            raise OSError(5, "net/hosts: short write")
        if shrink:
            os.ftruncate(fd, len(data))
        return True
    finally:
        os.close(fd)
