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
loopback guard holds without the table.
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


HOST_LOCK = "/run/rocket/firewall.lock"


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
    if ports and networks:
        n = networks[0]
        for p in ports:
            proto, hp, target = p["protocol"], p["host_port"], "%s:%d" % (n["ip"], p["port"])
            host_ip = p.get("host_ip") or ""
            match = "fib daddr type local" if host_ip in ("", "0.0.0.0") else "ip daddr %s" % host_ip
            for chain in ("prerouting", "output"):
                lines.append("add rule ip rocket %s %s %s dport %d dnat to %s %s\n" % (chain, match, proto, hp, target, c))
            if host_ip in ("", "0.0.0.0") or host_ip.startswith("127."):
                lines.append("add rule ip rocket postrouting ip saddr 127.0.0.0/8 ip daddr %s %s dport %d "
                             "masquerade %s\n" % (n["ip"], proto, p["port"], c))
    return "".join(lines)


def start_add(uuid, networks, ports):
    """Start adding the pod's rules (nft runs while the caller sets up links); finish() it."""
    return spawn(rules(uuid, networks, ports))


def remove(uuid):
    """Delete the pod's rules, and the table once it holds no pod's rule. Idempotent."""
    if nft_path() is None:
        return
    try:
        listing = nft(["-a", "list", "table", "ip", TABLE], want_output=True)
    except FirewallError as e:
        if "No such file" in str(e):
            return  # no table: nothing of ours
        raise
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
                deletes.append("delete rule ip rocket %s handle %s\n" % (chain, words[-1]))
            else:
                others = True
    if not others:
        nft("delete table ip rocket\n")
    elif deletes:
        nft("".join(deletes))
