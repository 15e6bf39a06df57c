"""The pod's NAT and port forwards: rules in the nftables table `ip rocket`, ours alone.

Every rule of a pod carries the comment `rocket-pod <uuid>`; removal deletes those rules by
handle and the table itself once no pod has a rule left, so a host without pods has no
trace of us. The table is one per host, shared by every data directory: callers hold the
host's firewall lock (HOST_LOCK, taken after the data directory's `net/lock`), which orders
any start's additions against any gc's removals (a removal that saw no other pod's rule
deletes the whole table). `nft` runs as a child (`nft -f -`): one
transaction per start, applied atomically or not at all.

Localhost forwards (127.0.0.1:hostPort) are DNATed in the output hook; the packet then
leaves with a loopback source, which the kernel only routes to an interface with
`route_localnet` (set by net.py on the pod's host-side link, never host-wide), and is
masqueraded so the app can answer. Packets from any pod's link towards 127.0.0.0/8 are
dropped (a route_localnet link would otherwise let a pod reach the host's loopback-only
services); every pod has that rule, so the table lives exactly as long as some pod does.
That rule is the second layer: an operator's `nft flush ruleset` removes it (and the
forwards), so the first is outside nftables, on the link itself (linkguard.py), and the
loopback guard holds without the table. What a flush removes comes back at the next start
or removal of any pod (REGISTRY keeps each running pod's script, per network namespace).
"""
import os

TABLE = "rocket"
NFT_PATHS = ("/usr/sbin/nft", "/sbin/nft", "/usr/bin/nft", "/usr/local/sbin/nft")
_BASE = (
    "add table ip rocket\n"
    "add chain ip rocket guard { type filter hook prerouting priority -300; policy accept; }\n"
    "add chain ip rocket prerouting { type nat hook prerouting priority -100; policy accept; }\n"
    "add chain ip rocket output { type nat hook output priority -100; policy accept; }\n"
    "add chain ip rocket postrouting { type nat hook postrouting priority 100; policy accept; }\n"
)
# Dual-stack networks: the IPv6 forwards and NAT, in a table of their own (only while some
# pod has an IPv6 address: an IPv4-only host sees no ip6 table of ours).
_BASE6 = (
    "add table ip6 rocket\n"
    "add chain ip6 rocket prerouting { type nat hook prerouting priority -100; policy accept; }\n"
    "add chain ip6 rocket output { type nat hook output priority -100; policy accept; }\n"
    "add chain ip6 rocket postrouting { type nat hook postrouting priority 100; policy accept; }\n"
)

HOST_LOCK = "/run/rocket/firewall.lock"
REGISTRY = "/run/rocket/firewall"


class FirewallError(OSError):
    pass


def host_lock():
    """Take the host's firewall lock (blocking); returns its fd, which the caller closes."""
    import fcntl

    os.makedirs(os.path.dirname(HOST_LOCK), 0o700, exist_ok=True)
    fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except BaseException:
        os.close(fd)
        raise
    return fd


def nft_path():
    for p in NFT_PATHS:
        if os.access(p, os.X_OK):
            return p
    return None


def spawn(script, argv=None):
    """Start `nft -f -` on script (or nft with argv); finish() waits for it. The script is
    small (a pipe's capacity), so writing it never blocks."""
    path = nft_path()
    if path is None:
        raise FirewallError(2, "nft is not installed (Debian: nftables)")
    argv = [path] + (argv or ["-f", "-"])
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1), (os.POSIX_SPAWN_DUP2, out_w, 2)]
    try:
        pid = os.posix_spawn(path, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"},
                             file_actions=actions)
    except BaseException:
        for fd in (in_w, out_r):
            os.close(fd)
        raise
    finally:
        os.close(in_r)
        os.close(out_w)
    try:
        os.write(in_w, script.encode())
    except OSError:
        pass  # nft exited early: finish() reports why
    finally:
        os.close(in_w)
    return pid, out_r


def finish(handle):
    """Wait for a spawned nft; its output, or FirewallError with its first lines."""
    pid, out_r = handle
    chunks = []
    try:
        while True:
            b = os.read(out_r, 65536)
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(out_r)
        dummy_pid, status = os.waitpid(pid, 0)
    out = b"".join(chunks).decode("utf-8", "replace")
    if status != 0:
        raise FirewallError(5, "nft failed: %s" % " / ".join(out.strip().splitlines()[:6]))
    return out


def nft(script, want_output=False):
    """Run `nft -f -` on script (or, with want_output, nft with the argv list script)."""
    if want_output:
        return finish(spawn("", script))
    return finish(spawn(script))


def _comment(uuid):
    return 'comment "rocket-pod %s"' % uuid


def rules(uuid, networks, ports):
    """The pod's rules as an nft script (with the table and its chains)."""
    c = _comment(uuid)
    lines = [_BASE]
    for n in networks:
        # Every pod guards its link (a bridge is shared: route_localnet set on it for one
        # pod's forwards must not open the host's loopback to the others).
        lines.append('add rule ip rocket guard iifname "%s" ip daddr 127.0.0.0/8 drop %s\n'
                     % (n.get("bridge") or n["host_ifname"], c))
        if n.get("ip_masq"):
            lines.append("add rule ip rocket postrouting ip saddr %s ip daddr != %s/%d masquerade %s\n"
                         % (n["ip"], n["subnet"], n["prefix"], c))
    if any(n.get("ip6") for n in networks):
        lines.append(_rules6(c, networks, ports))
    if ports and networks:
        n = networks[0]
        for p in ports:
            proto, hp, target = p["protocol"], p["host_port"], "%s:%d" % (n["ip"], p["port"])
            host_ip = p.get("host_ip") or ""
            if ":" in host_ip and host_ip != "::":
                continue  # an IPv6 host address: _rules6's
            match = "fib daddr type local" if host_ip in ("", "0.0.0.0", "::") else "ip daddr %s" % host_ip
            for chain in ("prerouting", "output"):
                lines.append("add rule ip rocket %s %s %s dport %d dnat to %s %s\n" % (chain, match, proto, hp, target, c))
            if host_ip in ("", "0.0.0.0") or host_ip.startswith("127."):
                lines.append("add rule ip rocket postrouting ip saddr 127.0.0.0/8 ip daddr %s %s dport %d "
                             "masquerade %s\n" % (n["ip"], proto, p["port"], c))
    return "".join(lines)


def _rules6(c, networks, ports):
    """The IPv6 part: egress NAT of the pods' IPv6 addresses, and the forwards without an IPv4
    host_ip to the first network's IPv6 address. There is no route_localnet for IPv6: a
    forward is reached on the host's other addresses, not on ::1."""
    lines = [_BASE6]
    for n in networks:
        if n.get("ip6") and n.get("ip_masq"):
            lines.append("add rule ip6 rocket postrouting ip6 saddr %s ip6 daddr != %s/%d masquerade %s\n"
                         % (n["ip6"], n["subnet6"], n["prefix6"], c))
    n = networks[0]
    for p in ports if n.get("ip6") else ():
        host_ip = p.get("host_ip") or ""
        if host_ip and ":" not in host_ip and host_ip != "0.0.0.0":
            continue  # an IPv4 host address
        match = "fib daddr type local" if host_ip in ("", "0.0.0.0", "::") else "ip6 daddr %s" % host_ip
        for chain in ("prerouting", "output"):
            lines.append("add rule ip6 rocket %s %s %s dport %d dnat to [%s]:%d %s\n"
                         % (chain, match, p["protocol"], p["host_port"], n["ip6"], p["port"], c))
    return "".join(lines)


def _registry():
    """Where the rules of this network namespace's running pods are kept, a file per pod (the
    script that added them), to put back what an `nft flush ruleset` removed."""
    return os.path.join(REGISTRY, str(os.stat("/proc/self/ns/net").st_ino))


def _listing(family="ip"):
    """`nft -a list table <family> rocket`, or "" when there is no table."""
    try:
        return nft(["-a", "list", "table", family, TABLE], want_output=True)
    except FirewallError as e:
        if "No such file" in str(e):
            return ""
        raise


def _missing(listing, skip):
    """The scripts of registered pods (but skip) whose rules the table lacks; registrations of
    pods whose host link is gone (the pod died and nobody removed it yet) are dropped."""
    import socket

    d = _registry()
    try:
        names = os.listdir(d)
    except FileNotFoundError:
        return []
    out = []
    for uuid in names:
        if uuid == skip or uuid.endswith(".tmp") or _comment(uuid) in listing:
            continue
        try:
            socket.if_nametoindex("rkt%s0" % uuid.replace("-", "")[:11])
        except OSError:
            _unregister(uuid)
            continue
        try:
            with open(os.path.join(d, uuid)) as f:
                out.append(f.read())
        except FileNotFoundError:
            continue
    return out


def _register(uuid, script):
    d = _registry()
    os.makedirs(d, 0o700, exist_ok=True)
    tmp = os.path.join(d, "%s.tmp" % uuid)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, script.encode())
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(d, uuid))


def _unregister(uuid):
    d = _registry()
    try:
        os.unlink(os.path.join(d, uuid))
        os.rmdir(d)  # the last one: no trace of a network namespace without pods
    except OSError:
        pass


def start_add(uuid, networks, ports):
    """Start adding the pod's rules (nft runs while the caller sets up links); finish() it.
    The same transaction puts back the rules of other running pods that the table lacks
    (an operator's flush): a listing first, only when other pods are registered."""
    script = rules(uuid, networks, ports)
    _register(uuid, script)
    d = _registry()
    others = [n for n in os.listdir(d) if n != uuid and not n.endswith(".tmp")]
    if others and nft_path() is not None:
        script += "".join(_missing(_listing(), uuid))
    return spawn(script)


def _remove6(uuid):
    """The pod's IPv6 rules, and the ip6 table once no pod has a rule there."""
    listing = _listing("ip6")
    if not listing:
        return
    deletes, others = _ours(listing, uuid, "ip6")
    if not others:
        nft("delete table ip6 rocket\n")
    elif deletes:
        nft("".join(deletes))


def _ours(listing, uuid, family):
    """(delete commands for uuid's rules, whether other pods have rules) of a table listing."""
    mine = _comment(uuid)
    chain = None
    deletes = []
    others = False
    for line in listing.splitlines():
        words = line.split()
        if words[:1] == ["chain"]:
            chain = words[1]
        elif "# handle" in line and 'comment "rocket-pod ' in line:
            if mine in line:
                deletes.append("delete rule %s rocket %s handle %s\n" % (family, chain, words[-1]))
            else:
                others = True
    return deletes, others


def remove(uuid, ip6=True):
    """Delete the pod's rules, and the table once it holds no pod's rule; put back other
    running pods' rules that the table lacks. Idempotent. ip6: the pod had IPv6 rules (or
    may have: gc without its plan)."""
    if nft_path() is None:
        return
    if ip6:
        _remove6(uuid)
    listing = _listing()
    restore = _missing(listing, uuid)
    _unregister(uuid)
    if not listing:
        if restore:
            nft("".join(restore))
        return  # no table: nothing of ours
    deletes, others = _ours(listing, uuid, "ip")
    if not others and not restore:
        nft("delete table ip rocket\n")
    elif deletes or restore:
        nft("".join(deletes + restore))
