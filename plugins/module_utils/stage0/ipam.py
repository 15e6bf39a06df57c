"""Host-local address and host port allocation, persistent under ``<data_dir>/net``.

Layout (all under the flock of ``net/lock``, which stage1 also takes while it changes
bridges and firewall rules, so a start and a gc never interleave):

    net/ipam/<network>/<ip>          the pod UUID holding the address
    net/ipam/<network>/last          the last address handed out (allocation goes round)
    net/ipam/<network>/<ip6>         an IPv6 address (dual-stack networks); last6 goes round
    net/ports/<proto>-<port>-<ip>    the pod UUID forwarding that host port (ip "any": all)

Subnets are one per host: two data directories that gave the same (or an overlapping)
subnet to their networks would route each other's pods into the wrong place. Each data
directory claims the subnets it allocates in, host-wide, under ``/run/rocket/subnets``
(SUBNETS: a file per subnet naming the data directory and network, under its own lock,
taken after ``net/lock``); a claim by another data directory that still holds addresses
there, for a pod that runs (its host link exists), refuses the allocation and names that
data directory. A claim goes with the last address of its network (release), or when no
running pod of its holder uses the subnet any more (a data directory removed, its pods
exited or gone at a reboot, which also empties /run).

One file per address, created with O_EXCL, means parallel starts can never share one;
a pod asks again (a restart by its keeper) and gets the address it holds. release()
returns everything a pod held (at gc). An owner whose pod directory is gone (a data
directory restored, a crash between steps) is reclaimed when a pool runs out.
"""
import os
import socket

from .errors import RocketError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List

from .datadir import DataDir


class PoolExhausted(RocketError):
    """No free address left in a network's subnet."""


class PortInUse(RocketError):
    """A host port another pod forwards already."""


class SubnetInUse(RocketError):
    """A subnet that another data directory's pods use on this host."""


class AddressTaken(RocketError):
    """A fixed address (the ip/ip6 option) that another pod holds."""


SUBNETS = "/run/rocket/subnets"


def net_dir(dd: DataDir) -> str:
    return os.path.join(dd.path, "net")


def lock_path(dd: DataDir) -> str:
    return os.path.join(net_dir(dd), "lock")


class NetLock:
    """The data directory's network lock (exclusive, blocking)."""

    def __init__(self, dd: DataDir) -> None:
        import fcntl

        os.makedirs(net_dir(dd), 0o700, exist_ok=True)
        self.fd = os.open(lock_path(dd), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def __enter__(self) -> "NetLock":
        return self

    def __exit__(self, *exc: "Any") -> None:
        os.close(self.fd)


def _owner(path: str) -> str:
    try:
        with open(path) as f:
            return f.read(64).strip()
    except FileNotFoundError:
        return ""


def _claim(path: str, uuid: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return False
    try:  # no fsync: the state matters while pods run, and a host crash ends them all
        os.write(fd, uuid.encode() + b"\n")
    finally:
        os.close(fd)
    return True


def write_small(path: str, text: str) -> None:
    """Replace a small file by rename (no fsync: see _claim)."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _pod_exists(dd: DataDir, uuid: str) -> bool:
    from .datadir import POD_STATES

    return any(os.path.isdir(os.path.join(dd.pod_state_dir(s), uuid)) for s in POD_STATES)


def _is_addr(name: str) -> bool:
    """An address file (IPv4 names start with a digit; IPv6 ones hold a colon)."""
    return not name.endswith(".tmp") and (name[:1].isdigit() or ":" in name)


def _ip_int(ip: str) -> int:
    import socket
    import struct

    return struct.unpack("!I", socket.inet_aton(ip))[0]


def _int_ip(n: int) -> str:
    return "%d.%d.%d.%d" % (n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255)


def _allocate_one(dd: DataDir, uuid: str, net: "Dict[str, Any]") -> str:
    d = os.path.join(net_dir(dd), "ipam", net["name"])
    os.makedirs(d, 0o700, exist_ok=True)
    names = [n for n in os.listdir(d) if n[0].isdigit() and ":" not in n]
    for n in names:
        if _owner(os.path.join(d, n)) == uuid:
            return n  # already ours (a restarted pod keeps its address)
    if net.get("want_ip"):
        return _fixed(dd, d, uuid, net, net["want_ip"], "ip")
    base, prefix = _ip_int(net["subnet"]), net["prefix"]
    size = 1 << (32 - prefix)
    first, last = base + 1, base + size - 2  # neither the network nor the broadcast address
    gw = _ip_int(net["gateway"])
    try:
        with open(os.path.join(d, "last")) as f:
            start = _ip_int(f.read().strip()) + 1
    except (OSError, ValueError):
        start = first
    count = last - first + 1
    for reclaim in (False, True):
        if reclaim:  # only when full: holders whose pods are gone give their address back
            for n in names:
                owner = _owner(os.path.join(d, n))
                if owner and not _pod_exists(dd, owner):
                    os.unlink(os.path.join(d, n))
        for k in range(max(count, 0)):
            cand = first + (start - first + k) % count
            if cand == gw:
                continue
            ip = _int_ip(cand)
            if _claim(os.path.join(d, ip), uuid):
                write_small(os.path.join(d, "last"), ip)
                return ip
    usable = max(count - (1 if first <= gw <= last else 0), 0)
    raise PoolExhausted("network %s: no free address in %s/%d (%d usable, all held by pods; pod_gc frees those "
                        "of exited pods)" % (net["name"], net["subnet"], prefix, usable))


def _fixed(dd: DataDir, d: str, uuid: str, net: "Dict[str, Any]", ip: str, option: str) -> str:
    """The fixed address ip (the ip or ip6 option), when no other running pod holds it."""
    path = os.path.join(d, ip)
    if _claim(path, uuid):
        return ip
    owner = _owner(path)
    if owner == uuid:
        return ip
    if owner and not _pod_exists(dd, owner):
        os.unlink(path)
        if _claim(path, uuid):
            return ip
        owner = _owner(path)
    raise AddressTaken("%s: %s on network %s is held by pod %s (remove that pod, or pod_gc it when it has exited)"
                       % (option, ip, net["name"], owner))


def _ip6_int(ip: str) -> int:
    return int.from_bytes(socket.inet_pton(socket.AF_INET6, ip), "big")


def _int_ip6(n: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, n.to_bytes(16, "big"))


# An IPv6 pool is huge: allocation looks at this many candidates past the last one handed out.
IP6_TRIES = 4096


def _allocate_one6(dd: DataDir, uuid: str, net: "Dict[str, Any]") -> str:
    d = os.path.join(net_dir(dd), "ipam", net["name"])
    os.makedirs(d, 0o700, exist_ok=True)
    names = [n for n in os.listdir(d) if ":" in n and not n.endswith(".tmp")]
    for n in names:
        if _owner(os.path.join(d, n)) == uuid:
            return n
    if net.get("want_ip6"):
        return _fixed(dd, d, uuid, net, net["want_ip6"], "ip6")
    base, prefix = _ip6_int(net["subnet6"]), net["prefix6"]
    first, last = base + 1, base + (1 << (128 - prefix)) - 1
    gw = _ip6_int(net["gateway6"])
    try:
        with open(os.path.join(d, "last6")) as f:
            start = _ip6_int(f.read().strip()) + 1
    except (OSError, ValueError):
        start = first
    count = last - first + 1
    for reclaim in (False, True):
        if reclaim:
            for n in names:
                owner = _owner(os.path.join(d, n))
                if owner and not _pod_exists(dd, owner):
                    os.unlink(os.path.join(d, n))
        for k in range(min(count, IP6_TRIES)):
            cand = first + (start - first + k) % count
            if cand == gw:
                continue
            ip = _int_ip6(cand)
            if _claim(os.path.join(d, ip), uuid):
                write_small(os.path.join(d, "last6"), ip)
                return ip
    raise PoolExhausted("network %s: no free IPv6 address among %d tried in %s/%d (pod_gc frees those of exited "
                        "pods)" % (net["name"], min(count, IP6_TRIES), net["subnet6"], prefix))


def _free_port(proto: str) -> int:
    """A host port nothing on the host listens on now: the kernel's pick of an ephemeral one."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    try:
        s.bind(("0.0.0.0", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _reserve_port(dd: DataDir, uuid: str, p: "Dict[str, Any]") -> None:
    if p["host_port"] == 0:  # a random host port: the kernel's pick, not forwarded by another pod
        d = os.path.join(net_dir(dd), "ports")
        os.makedirs(d, 0o700, exist_ok=True)
        for dummy_try in range(64):
            port = _free_port(p["protocol"])
            if not [n for n in os.listdir(d) if n.startswith("%s-%d-" % (p["protocol"], port))]:
                break
        else:
            raise PortInUse("host_port 0: no free %s port found" % p["protocol"])
        p["host_port"] = port
    _reserve_port_fixed(dd, uuid, p)


def _port_ip(p: "Dict[str, Any]") -> str:
    ip = p.get("host_ip") or "any"
    return "any" if ip in ("0.0.0.0", "::") else ip


def _reserve_port_fixed(dd: DataDir, uuid: str, p: "Dict[str, Any]") -> None:
    d = os.path.join(net_dir(dd), "ports")
    os.makedirs(d, 0o700, exist_ok=True)
    ip = _port_ip(p)
    prefix = "%s-%d-" % (p["protocol"], p["host_port"])
    for n in os.listdir(d):
        if not n.startswith(prefix):
            continue
        other = n[len(prefix):]
        if other != ip and "any" not in (other, ip):
            continue
        owner = _owner(os.path.join(d, n))
        if owner == uuid:
            continue
        if owner and not _pod_exists(dd, owner):
            os.unlink(os.path.join(d, n))
            continue
        raise PortInUse("host port %s/%d%s is already forwarded to pod %s (remove that pod, or pod_gc it when it "
                        "has exited)" % (p["protocol"], p["host_port"], "" if ip == "any" else " on " + ip, owner))
    _claim(os.path.join(d, prefix + ip), uuid)


def _addresses(dd_path: str, network: str) -> "List[str]":
    try:
        return [n for n in os.listdir(os.path.join(dd_path, "net", "ipam", network)) if _is_addr(n)]
    except OSError:
        return []


def _links() -> "List[str]":
    try:
        return [name for dummy_index, name in socket.if_nameindex()]  # this namespace (not /sys)
    except OSError:
        return []


def _in_use(dd_path: str, network: str) -> "List[str]":
    """The addresses of network that running pods use: those whose pod has its host link (the
    link goes when the pod's network namespace does, so an exited pod's address is not)."""
    from ..stage1 import net

    links = _links()
    out = []
    for ip in _addresses(dd_path, network):
        prefix = net.host_ifname(_owner(os.path.join(dd_path, "net", "ipam", network, ip)), 0)[:-1]
        if any(link.startswith(prefix) for link in links):
            out.append(ip)
    return out


def _claim_name(net: "Dict[str, Any]") -> str:
    return "%s-%d" % (net["subnet"], net["prefix"])


def _overlap(a: str, b: str) -> bool:
    """Whether two claim names ("<subnet>-<prefix>", IPv4 or IPv6) cover a common address."""
    (sa, pa), (sb, pb) = [(x.rsplit("-", 1)[0], int(x.rsplit("-", 1)[1])) for x in (a, b)]
    if (":" in sa) != (":" in sb):
        return False
    p = min(pa, pb)
    if ":" in sa:
        return _ip6_int(sa) >> (128 - p) == _ip6_int(sb) >> (128 - p)
    mask = (0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF
    return _ip_int(sa) & mask == _ip_int(sb) & mask


def _claims() -> "Dict[str, List[str]]":
    """{claim name: [data directory, network]} of the host."""
    out = {}
    for n in os.listdir(SUBNETS):
        if _is_addr(n):  # "<subnet>-<prefix>": IPv4, or IPv6 (a colon)
            try:
                with open(os.path.join(SUBNETS, n)) as f:
                    out[n] = f.read(8192).split("\n")[:2]
            except (OSError, ValueError):
                continue
    return out


def _claim_subnets(dd: DataDir, networks: "List[Dict[str, Any]]") -> None:
    """Claim each network's subnet for this data directory; SubnetInUse when another data
    directory's pods hold addresses in it (or in an overlapping one). Under net/lock."""
    from .locks import locked

    os.makedirs(SUBNETS, 0o700, exist_ok=True)
    with locked(os.path.join(SUBNETS, ".lock")):
        claims = _claims()
        wanted = [(n, _claim_name(n)) for n in networks]
        wanted += [(n, "%s-%d" % (n["subnet6"], n["prefix6"])) for n in networks if n.get("subnet6")]
        for net, mine in wanted:
            for name, (other_dd, other_net) in sorted(claims.items()):
                if other_dd == dd.path or not _overlap(mine, name):
                    continue
                held_there = _in_use(other_dd, other_net)
                if not held_there:  # no running pod there any more: a stale claim
                    os.unlink(os.path.join(SUBNETS, name))
                    del claims[name]
                    continue
                raise SubnetInUse(
                    "network %s: subnet %s overlaps %s (network %s) of the data directory %s, whose "
                    "running pods use %d address(es) there (%s); two data directories on one host need distinct "
                    "subnets: give this one's network another subnet (a network configuration file, "
                    "docs/networking.md), or stop those pods"
                    % (net["name"], mine.replace("-", "/"), name.replace("-", "/"), other_net, other_dd,
                       len(held_there), ", ".join(sorted(held_there)[:3])))
            if claims.get(mine) != [dd.path, net["name"]]:
                write_small(os.path.join(SUBNETS, mine), "%s\n%s\n" % (dd.path, net["name"]))
                claims[mine] = [dd.path, net["name"]]


def _unclaim_empty(dd: DataDir) -> None:
    """Drop this data directory's claims on subnets where it holds no address any more."""
    from .locks import locked

    if not os.path.isdir(SUBNETS):
        return
    with locked(os.path.join(SUBNETS, ".lock")):
        for name, (owner, network) in _claims().items():
            if owner == dd.path and not _addresses(dd.path, network):
                os.unlink(os.path.join(SUBNETS, name))


def allocate(dd: DataDir, uuid: str, networks: "List[Dict[str, Any]]", ports: "List[Dict[str, Any]]") -> "List[str]":
    """An address in each network (in order) and the host ports, for pod ``uuid``.

    A network with ``subnet6`` also gets an IPv6 address (set as its "ip6"); ``want_ip`` and
    ``want_ip6`` ask for fixed addresses; a port with host_port 0 gets a free one (set in
    place). On any error nothing new stays allocated for the pod.
    """
    with NetLock(dd):
        if networks:
            _claim_subnets(dd, networks)
        try:
            ips = [_allocate_one(dd, uuid, n) for n in networks]
            for n in networks:
                if n.get("subnet6"):
                    n["ip6"] = _allocate_one6(dd, uuid, n)
            for p in ports:
                _reserve_port(dd, uuid, p)
        except BaseException:
            _release_locked(dd, uuid)
            raise
    return ips


def _release_locked(dd: DataDir, uuid: str) -> "List[str]":
    freed = []
    base = net_dir(dd)
    dirs = [os.path.join(base, "ports")]
    try:
        dirs += [os.path.join(base, "ipam", n) for n in os.listdir(os.path.join(base, "ipam"))]
    except FileNotFoundError:
        pass
    for d in dirs:
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            if n not in ("last", "last6") and _owner(os.path.join(d, n)) == uuid:
                os.unlink(os.path.join(d, n))
                freed.append(n)
    return freed


def release(dd: DataDir, uuid: str) -> "List[str]":
    """Give back everything pod ``uuid`` holds; idempotent. Returns what was freed."""
    if not os.path.isdir(net_dir(dd)):
        return []
    with NetLock(dd):
        freed = _release_locked(dd, uuid)
        _unclaim_empty(dd)
        return freed


def held(dd: DataDir) -> "Dict[str, str]":
    """{"<network>/<ip>" or "ports/<name>": uuid} — the whole state, for tests and tools."""
    out = {}
    base = net_dir(dd)
    for sub in ("ipam", "ports"):
        top = os.path.join(base, sub)
        if not os.path.isdir(top):
            continue
        if sub == "ports":
            for n in os.listdir(top):
                out["ports/" + n] = _owner(os.path.join(top, n))
            continue
        for net in os.listdir(top):
            for n in os.listdir(os.path.join(top, net)):
                if n not in ("last", "last6"):
                    out["%s/%s" % (net, n)] = _owner(os.path.join(top, net, n))
    return out
