"""Private networking: the pod's network namespace joined to the networks of `net.json`.

stage0 resolved the networks and allocated the addresses and host ports (under the data
directory's network lock) and wrote `net.json`; this module only carries it out:

* setup() (init's outer process, before its other namespaces): creates the pod's network
  namespace, and for each network a veth pair whose pod end is created directly inside
  it (`eth0`, `eth1`, ...) with a MAC derived from the pod UUID, its host end guarded
  (linkguard.py: only the pod's MAC and address, never 127/8); `ptp` networks route the
  pod's /32 to its host end (which carries the gateway address), `bridge` networks
  enslave the host end to the network's bridge (created with the gateway address when
  missing); then addresses, routes (default via the gateway), the NAT and port forward
  rules (firewall.py), `net-info.json`, and the pod's `/etc/hosts` and `/etc/resolv.conf`
  under `net/`. A failure undoes what was done and raises.
* teardown() (gc, and setup's own failure path): deletes the host ends (the pod ends go
  with them, or with the namespace when the pod's last process died), the pod's firewall
  rules, and a bridge no pod uses any more. Idempotent; host link names derive from the
  pod UUID, so it works from the UUID alone.
"""
import os
import _socket  # the C module: `socket` imports enum, and net none would pay it in every PID 1

from . import contract, firewall, linux
from . import jsonlite  # the json package imports re: memory in every pod's PID 1 (net none too)

IFNAMSIZ = 15
# The alias of the bridges we create: only those are deleted when their last pod goes (a
# bridge the administrator made and named in a network configuration is left alone).
BRIDGE_ALIAS = "appc.rocket network "


def host_ifname(uuid, index):
    """The host end of the pod's index-th network: `rkt` + 11 hex digits of the UUID + index."""
    return "rkt%s%x" % (uuid.replace("-", "")[:11], index % 16)


def pod_mac(uuid, index):
    """A locally administered unicast MAC, stable for the pod and network."""
    h = uuid.replace("-", "")
    return "02:%s:%s:%s:%s:%02x" % (h[0:2], h[2:4], h[4:6], h[6:8], index)


def write_small(path, text, mode=0o644):
    """Replace a small file in a pod directory by rename; never through a symlink."""
    tmp = "%s.%d.tmp" % (path, os.getpid())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW, mode)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.rename(tmp, path)


def load_plan(pod_dir):
    with open(os.path.join(pod_dir, contract.NET), "rb") as f:
        return jsonlite.loads(f.read())


def _lock(plan):
    """The data directory's network lock, then the host's firewall lock (firewall.py: the nft
    table is one for every data directory), always in this order; _unlock releases both."""
    import fcntl

    fd = os.open(plan["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        return [fd, firewall.host_lock()]
    except BaseException:
        os.close(fd)
        raise


def _unlock(fds):
    for fd in reversed(fds):
        os.close(fd)


def _sysctl(path, value):
    with open(path, "w") as f:
        f.write(value)


def _mac(uuid, i, n):
    """The pod end's MAC: the plan's (the mac option, or derived by stage0), else derived."""
    return n.get("mac") or pod_mac(uuid, i)


def _host_side(nl, uuid, i, n, pod_ns, ports):
    name = host_ifname(uuid, i)
    nl.add_veth(name, n["ifname"], pod_ns, _mac(uuid, i, n), n.get("mtu"))
    index = _socket.if_nametoindex(name)
    # Before the link is up or joins a bridge: the pod sends nothing unguarded.
    from . import linkguard

    linkguard.attach(nl, index, name, _mac(uuid, i, n), n["ip"], n.get("ip6"))
    if n["type"] == "bridge":
        br = n["bridge"]
        if not nl.add_bridge(br, n.get("mtu"), BRIDGE_ALIAS + n["name"]):
            kind = [k for dummy_i, nm, dummy_m, k, dummy_a in nl.dump_links() if nm == br]
            if kind != ["bridge"]:
                raise OSError(17, "network %s: %s exists and is not a bridge" % (n["name"], br))
        br_index = _socket.if_nametoindex(br)
        nl.add_addr(br_index, n["gateway"], n["prefix"])
        if n.get("ip6"):
            nl.add_addr(br_index, n["gateway6"], n["prefix6"])
        nl.set_link(br_index, up=True)
        nl.set_link(index, up=True, master=br_index)
        local_if = br
    else:
        nl.add_addr(index, n["gateway"], 32)
        nl.set_link(index, up=True)
        nl.add_route(n["ip"], 32, oif=index)
        if n.get("ip6"):
            nl.add_addr(index, n["gateway6"], 128)
            nl.add_route(n["ip6"], 128, oif=index)
        local_if = name
    if i == 0 and ports:
        _sysctl("/proc/sys/net/ipv4/conf/%s/route_localnet" % local_if, "1")


NETNS = "netns"  # in the pod directory: the pod's network namespace, pinned for CNI's DEL


def is_netns(path):
    """Whether path is a network namespace (a pinned one), not the empty file under it."""
    try:
        return os.stat(path).st_dev == os.stat("/proc/self/ns/net").st_dev
    except OSError:
        return False


def _in_host_mounts(fn):
    """Run fn in the host's mount namespace: here when this process is in it, else in a
    child that joins it (launch gave the pod its own; its parent, stage0 or the keeper, is
    in the host's). The child's failure raises OSError."""
    parent = "/proc/%d/ns/mnt" % os.getppid()
    if os.stat(parent).st_ino == os.stat("/proc/self/ns/mnt").st_ino:
        fn()
        return
    host_mnt = os.open(parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.close(r)
                linux.setns(host_mnt, linux.CLONE_NEWNS)
                fn()
            except BaseException as e:  # noqa: BLE001
                os.write(w, str(getattr(e, "strerror", None) or e).encode("utf-8", "replace")[:3000])
                code = 1
            os._exit(code)
        os.close(w)
        try:
            msg = os.read(r, 4096).decode("utf-8", "replace")
        finally:
            os.close(r)
        dummy, status = os.waitpid(pid, 0)
        if status != 0:
            raise OSError(1, msg or "status %d" % status)
    finally:
        os.close(host_mnt)


def _pin_netns(pod_dir, source):
    """Bind-mount the pod's network namespace on <pod_dir>/netns (in the host's mount
    namespace), as rkt did: CNI plugins need a path, and a DEL at gc needs the namespace
    even after the pod's last process died (the bridge plugin finds its NAT rules from the
    addresses inside it). pod_gc unmounts it after stage1's gc."""
    target = os.path.join(pod_dir, NETNS)
    os.close(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600))
    if is_netns(target):  # a restart: the last run's namespace
        linux.umount2(target, 2)
    try:
        linux.mount(source, target, None, linux.MS_BIND)
    except OSError as e:
        raise OSError(e.errno, "could not pin the pod's network namespace at %s: %s" % (target, e.strerror or e))


def _cni_add(plan, uuid, nets, pod_ns, pod_dir, ports):
    """Pin the namespace, then ADD each CNI network, in the host's mount namespace (where the
    pin is, and where the plugins must find it again at DEL). {index: net-info entry}."""
    from . import cni

    net_dir = os.path.dirname(plan["lock"])
    source = "/proc/%d/fd/%d" % (os.getpid(), pod_ns)
    netns = os.path.join(pod_dir, NETNS)

    def add():
        _pin_netns(pod_dir, source)
        for i, n in enumerate(nets):
            if n["type"] != "cni":
                continue
            runtime = {}
            if i == 0 and ports:
                runtime["portMappings"] = [{"hostPort": p["host_port"], "containerPort": p["port"],
                                            "protocol": p["protocol"], "hostIP": p.get("host_ip") or ""}
                                           for p in ports]
            if n.get("bandwidth"):
                runtime["bandwidth"] = n["bandwidth"]
            cni.add(net_dir, uuid, netns, n["ifname"], n["cni"], runtime)

    _in_host_mounts(add)
    out = {}
    for i, n in enumerate(nets):
        if n["type"] == "cni":
            s = cni.summary(cni.read_cache(net_dir, uuid, n["ifname"])["result"] or {}, n["ifname"])
            out[i] = {"name": n["name"], "ifname": n["ifname"], "ip": s["ip"], "prefix": s["prefix"],
                      "gateway": s["gateway"], "mac": s["mac"], "host_ifname": s["host_ifname"], "ips": s["ips"],
                      "cni": True, "guarded": bool(s["host_ifname"] and s["mac"] and s["ip"])}
    return out


def _cni_guard(nl, entry):
    """The link guard on the host end a CNI result names (a veth: bridge, ptp); a macvlan
    pod has none (its link is on the parent's segment, like any host there)."""
    if entry["guarded"]:
        index = _socket.if_nametoindex(entry["host_ifname"])
        from . import linkguard

        linkguard.attach(nl, index, entry["host_ifname"], entry["mac"], entry["ip"])


def _cni_del(pod_dir, uuid, plan):
    """DEL every CNI network of the plan (reverse order), in the host's mount namespace; the
    error texts."""
    from . import cni

    errors = []

    def delete():
        netns = os.path.join(pod_dir, NETNS)
        for n in reversed(plan["networks"]):
            if n["type"] == "cni":
                errors.extend(cni.delete(os.path.dirname(plan["lock"]), uuid, n["ifname"],
                                         netns if is_netns(netns) else ""))
        if errors:
            raise OSError(5, " / ".join(errors))

    try:
        _in_host_mounts(delete)
    except OSError as e:
        return ["CNI: %s" % (e.strerror or e)]
    return []


def _pod_side(nl, n):
    index = _socket.if_nametoindex(n["ifname"])
    nl.set_link(index, up=True)
    if n["type"] == "bridge":
        nl.add_addr(index, n["ip"], n["prefix"])
    else:
        # The subnet is not on this link (other pods sit behind the host): only the
        # gateway is, and everything else goes through it.
        nl.add_addr(index, n["ip"], n["prefix"], noprefixroute=True)
        nl.add_route(n["gateway"], 32, oif=index)
    for r in n["routes"]:
        nl.add_route(r["dst"], r["prefix"], gateway=r.get("gw") or n["gateway"], oif=index)
    if n.get("ip6"):
        if n["type"] == "bridge":
            nl.add_addr(index, n["ip6"], n["prefix6"])
        else:
            nl.add_addr(index, n["ip6"], n["prefix6"], noprefixroute=True)
            nl.add_route(n["gateway6"], 128, oif=index)
        for r in n.get("routes6") or []:
            nl.add_route(r["dst"], r["prefix"], gateway=r.get("gw") or n["gateway6"], oif=index)


def setup(pod_dir, uuid, hostname, net="default", host_ns=None):
    """Create the pod's network namespace (this process is in it on return) and join it to
    its networks (none: loopback only); returns the names of the files under net/ for the
    apps' /etc.

    host_ns: with private users, this process is already in the pod's namespace (made by
    userns.create, owned by the pod's user namespace, so the pod's root administers it);
    host_ns is then an fd of the host's, where the host ends of the links go."""
    if net == "none":  # net-info.json says "no network"; the apps' /etc stays theirs
        if host_ns is None:
            linux.unshare(linux.CLONE_NEWNET)
        write_small(os.path.join(pod_dir, contract.NET_INFO), "[]")
        return []
    from . import netlink

    given = host_ns is not None
    pod_ns = -1
    if given:  # back to the host's namespace: the host's links, rules and nft live there
        pod_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        linux.setns(host_ns, linux.CLONE_NEWNET)
    else:
        host_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    plan = load_plan(pod_dir)
    nets = [dict(n, host_ifname=host_ifname(uuid, i)) for i, n in enumerate(plan["networks"])]
    if os.path.exists(os.path.join(pod_dir, contract.NET_INFO)):
        teardown(pod_dir, uuid, plan)  # a restart (keeper): what the last run left goes first
    builtin = [n for n in nets if n["type"] != "cni"]
    ports = plan.get("ports") or []
    lock = _lock(plan)
    fw = None
    results = {}
    try:
        # nft (a child, in the host's namespace) runs while we make the links.
        if builtin:
            fw = firewall.start_add(uuid, builtin, ports if nets[0]["type"] != "cni" else [])
        if pod_ns < 0:
            linux.unshare(linux.CLONE_NEWNET)
            pod_ns = os.open("/proc/self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
            linux.setns(host_ns, linux.CLONE_NEWNET)
        if len(builtin) < len(nets):
            results = _cni_add(plan, uuid, nets, pod_ns, pod_dir, ports)
        with netlink.Netlink() as nl:
            for i, n in enumerate(nets):
                if i in results:
                    _cni_guard(nl, results[i])
                else:
                    _host_side(nl, uuid, i, n, pod_ns, plan.get("ports"))
        linux.setns(pod_ns, linux.CLONE_NEWNET)
        with netlink.Netlink() as nl:
            for n in builtin:
                _pod_side(nl, n)
        fw, handle = None, fw
        if handle is not None:
            firewall.finish(handle)
    except BaseException:
        if fw is not None:
            try:
                firewall.finish(fw)
            except OSError:
                pass
        if pod_ns >= 0:
            linux.setns(host_ns, linux.CLONE_NEWNET)
        teardown(pod_dir, uuid, plan, locked=True)
        if pod_ns >= 0:
            linux.setns(pod_ns, linux.CLONE_NEWNET)
        raise
    finally:
        _unlock(lock)
        if not given:
            os.close(host_ns)
        if pod_ns >= 0:
            os.close(pod_ns)
    info = [results[i] if i in results else
            {"name": n["name"], "ifname": n["ifname"], "ip": n["ip"], "prefix": n["prefix"],
             "gateway": n["gateway"], "mac": _mac(uuid, i, n), "host_ifname": host_ifname(uuid, i)}
            for i, n in enumerate(nets)]
    for entry, n in zip(info, nets):
        if n.get("ip6"):
            entry.update(ip6=n["ip6"], prefix6=n["prefix6"], gateway6=n["gateway6"])
    if info:  # what the first network carries: the forwards (host_port as chosen) and the aliases
        info[0]["ports"] = [{k: p.get(k) for k in ("name", "protocol", "port", "host_port", "host_ip")}
                            for p in plan.get("ports") or []]
        info[0]["aliases"] = list(plan.get("aliases") or [])
    names = write_files(pod_dir, plan, hostname, info)
    _announce(pod_dir, plan, uuid, hostname)
    return names


def _announce(pod_dir, plan, uuid, hostname):
    """Pods on a bridge network resolve each other's names (peers.py): record this pod, then
    rewrite the hosts file of every running pod on its bridge networks, its own included."""
    from . import peers

    nets = peers.bridge_networks(plan)
    if not nets:
        return
    import fcntl

    peers.write_self(pod_dir, plan, uuid, hostname)
    fd = os.open(plan["lock"], os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        errors = peers.refresh(peers.data_dir(plan), nets)
    finally:
        os.close(fd)
    mine = [e for e in errors if e.startswith("pod %s:" % uuid)]
    if mine:  # another pod's broken file is that pod's business; ours stops the start
        raise OSError(5, mine[0])


def write_files(pod_dir, plan, hostname, info):
    """net-info.json, net/hosts and (with a network) net/resolv.conf; the latter names."""
    d = os.path.join(pod_dir, "net")
    os.makedirs(d, 0o755, exist_ok=True)
    hosts = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    own = " ".join([hostname] + list(plan.get("aliases") or []))
    if info:
        hosts += "%s\t%s\n" % (info[0]["ip"], own)
        if info[0].get("ip6"):
            hosts += "%s\t%s\n" % (info[0]["ip6"], own)
    else:
        hosts += "127.0.1.1\t%s\n" % own
    for host, addr in sorted((plan.get("extra_hosts") or {}).items()):
        hosts += "%s\t%s\n" % (addr, host)
    write_small(os.path.join(d, "hosts"), hosts)
    names = ["hosts"]
    dns = plan.get("dns")
    if dns and dns.get("nameservers"):
        text = "".join("nameserver %s\n" % s for s in dns["nameservers"])
        if dns.get("search"):
            text += "search %s\n" % " ".join(dns["search"])
        if dns.get("options"):
            text += "options %s\n" % " ".join(dns["options"])
        write_small(os.path.join(d, "resolv.conf"), text)
        names.append("resolv.conf")
    write_small(os.path.join(pod_dir, contract.NET_INFO), jsonlite.dumps(info, sort_keys=True))
    return names


def teardown(pod_dir, uuid, plan=None, locked=False):
    """Undo setup on the host (run in the host's network namespace). Idempotent."""
    from . import netlink

    if plan is None:
        try:
            plan = load_plan(pod_dir)
        except FileNotFoundError:
            return []  # never set up (net=host or none, or stage0 failed before)
    errors = []
    lock = [] if locked else _lock(plan)
    try:
        if any(n["type"] == "cni" for n in plan["networks"]):
            errors += _cni_del(pod_dir, uuid, plan)
        with netlink.Netlink() as nl:
            for i, n in enumerate(plan["networks"]):
                if n["type"] == "cni":
                    continue
                try:
                    nl.del_link(host_ifname(uuid, i))
                except OSError as e:
                    errors.append("link %s: %s" % (host_ifname(uuid, i), e))
            bridges = {n["bridge"] for n in plan["networks"] if n["type"] == "bridge"}
            if bridges:
                links = nl.dump_links()
                ours = {name: idx for idx, name, dummy_master, kind, alias in links
                        if kind == "bridge" and alias.startswith(BRIDGE_ALIAS)}
                for br in sorted(bridges):
                    if br in ours and not any(link[2] == ours[br] for link in links):
                        try:
                            nl.del_link(br)
                        except OSError as e:
                            errors.append("bridge %s: %s" % (br, e))
        try:
            if any(n["type"] != "cni" for n in plan["networks"]):
                firewall.remove(uuid, ip6=any(n.get("ip6") for n in plan["networks"]))
        except OSError as e:
            errors.append("firewall: %s" % e)
        _forget(plan, uuid)
    finally:
        _unlock(lock)
    return errors


def _forget(plan, uuid):
    """The pod leaves its bridge networks: its peers' hosts files lose its line (peers.py).
    A peer whose file cannot be rewritten does not fail this pod's teardown."""
    if any(n.get("type") == "bridge" for n in plan["networks"]):
        from . import peers

        peers.refresh(peers.data_dir(plan), peers.bridge_networks(plan), exclude=uuid)
