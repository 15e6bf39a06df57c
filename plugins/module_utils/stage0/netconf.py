"""Network configurations, the pod's DNS, and the network plan a start hands to stage1.

Networks: `default` (built in: point-to-point, 172.16.28.0/24, egress NAT) and JSON files
in ``<data_dir>/net.d/*.json`` then ``/etc/rocket/net.d/*.json`` (the first definition of a
name wins; a file may redefine `default`). See docs/networking.md for the format.
plan() resolves the pod's networks, allocates its addresses and host ports (ipam), and
writes ``net.json`` in the pod directory; stage1 (net.py) carries it out.
Imported only when a pod asks for a private network.
"""
import json
import os
import socket
import struct

from ..stage1 import contract
from . import ipam
from .datadir import DataDir
from .errors import RocketError, ValidationError

TYPE_CHECKING = False
if TYPE_CHECKING:  # pragma: no cover
    from typing import Any, Dict, List, Optional

from . import pod as podmod

SYSTEM_CONF_DIR = "/etc/rocket/net.d"
DEFAULT_NETWORK = {"name": "default", "type": "ptp", "subnet": "172.16.28.0/24", "ipMasq": True}
CONF_KEYS: "tuple" = ("name", "type", "subnet", "gateway", "routes", "ipMasq", "bridge", "mtu")
CONF_KEYS += ("subnet6", "gateway6")  # dual stack (IPv6 next to the IPv4 subnet)
# When the host's resolv.conf names only loopback resolvers (a local stub such as
# systemd-resolved's 127.0.0.53, unreachable from a pod) and no upstream list is found,
# pods get these (as Docker does); the `dns` option overrides them.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
SYSTEMD_UPSTREAM = "/run/systemd/resolve/resolv.conf"
MAX_NETWORKS = 8
# DEFAULT_NETWORK, normalized (what validate() returns for it; a unit test checks they agree).
_BUILTIN_DEFAULT: "Dict[str, Any]" = {
    "name": "default", "type": "ptp", "subnet": "172.16.28.0", "prefix": 24, "gateway": "172.16.28.1",
    "routes": [{"dst": "0.0.0.0", "prefix": 0}], "ip_masq": True, "bridge": None, "mtu": None,
    "subnet6": None, "prefix6": None, "gateway6": None, "routes6": []}


def _ip(value: "Any", path: str) -> int:
    try:
        if not isinstance(value, str) or value.count(".") != 3:
            raise OSError
        return struct.unpack("!I", socket.inet_aton(value))[0]
    except OSError:
        raise ValidationError(path, value, "is not an IPv4 address")


def _fmt(n: int) -> str:
    return socket.inet_ntoa(struct.pack("!I", n))


def _cidr(value: "Any", path: str) -> "tuple":
    if not isinstance(value, str) or "/" not in value:
        raise ValidationError(path, value, "is not an IPv4 subnet (a.b.c.d/len)")
    addr, plen = value.split("/", 1)
    if not plen.isdigit() or not 0 <= int(plen) <= 32:
        raise ValidationError(path, value, "has no prefix length between 0 and 32")
    n, p = _ip(addr, path), int(plen)
    mask = (0xFFFFFFFF << (32 - p)) & 0xFFFFFFFF
    if n & ~mask & 0xFFFFFFFF:
        raise ValidationError(path, value, "has host bits set (the subnet is %s/%d)" % (_fmt(n & mask), p))
    return n, p


def _ip6(value: "Any", path: str) -> int:
    try:
        if not isinstance(value, str) or ":" not in value:
            raise OSError
        return int.from_bytes(socket.inet_pton(socket.AF_INET6, value), "big")
    except (OSError, ValueError):
        raise ValidationError(path, value, "is not an IPv6 address")


def _fmt6(n: int) -> str:
    return socket.inet_ntop(socket.AF_INET6, n.to_bytes(16, "big"))


def _cidr6(value: "Any", path: str) -> "tuple":
    if not isinstance(value, str) or "/" not in value:
        raise ValidationError(path, value, "is not an IPv6 subnet (fd00::/64)")
    addr, plen = value.split("/", 1)
    if not plen.isdigit() or not 0 <= int(plen) <= 128:
        raise ValidationError(path, value, "has no prefix length between 0 and 128")
    n, p = _ip6(addr, path), int(plen)
    if n & ((1 << (128 - p)) - 1):
        raise ValidationError(path, value, "has host bits set (the subnet is %s/%d)"
                              % (_fmt6(n >> (128 - p) << (128 - p)), p))
    return n, p


def _v6(doc: "Dict[str, Any]", where: str) -> "Dict[str, Any]":
    """subnet6 and gateway6 normalized (None without subnet6)."""
    if doc.get("subnet6") is None:
        if doc.get("gateway6") is not None:
            raise ValidationError("%s: gateway6" % where, doc["gateway6"], "needs subnet6")
        return {"subnet6": None, "prefix6": None, "gateway6": None}
    base, prefix = _cidr6(doc["subnet6"], "%s: subnet6" % where)
    if not 64 <= prefix <= 120:
        raise ValidationError("%s: subnet6" % where, doc["subnet6"], "must have a prefix length from 64 to 120")
    if base >> 118 == 0x3FA:  # fe80::/10
        raise ValidationError("%s: subnet6" % where, doc["subnet6"], "is link-local (use a ULA, fd00::/8, or a global prefix)")
    gw = _ip6(doc["gateway6"], "%s: gateway6" % where) if doc.get("gateway6") is not None else base + 1
    if not base < gw < base + (1 << (128 - prefix)):
        raise ValidationError("%s: gateway6" % where, doc.get("gateway6"), "is not a host address of subnet6")
    return {"subnet6": _fmt6(base), "prefix6": prefix, "gateway6": _fmt6(gw)}


def validate(doc: "Any", where: str) -> "Dict[str, Any]":
    """A network configuration, normalized; ValidationError names the file and field."""
    if not isinstance(doc, dict):
        raise ValidationError(where, doc, "a network configuration must be a JSON object")
    unknown = sorted(set(doc) - set(CONF_KEYS))
    if unknown:
        raise ValidationError("%s: %s" % (where, unknown[0]), doc[unknown[0]],
                              "is not a network setting (%s)" % ", ".join(CONF_KEYS))
    name = doc.get("name")
    from .schema import validate_ac_name

    validate_ac_name(name, "%s: name" % where)
    kind = doc.get("type", "ptp")
    if kind not in ("ptp", "bridge"):
        raise ValidationError("%s: type" % where, kind, "must be ptp or bridge")
    if name in ("host", "none"):
        raise ValidationError("%s: name" % where, name, "is reserved")
    base, prefix = _cidr(doc.get("subnet"), "%s: subnet" % where)
    if prefix > 30:
        raise ValidationError("%s: subnet" % where, doc["subnet"], "is too small (the largest prefix is /30)")
    size = 1 << (32 - prefix)
    gw = _ip(doc["gateway"], "%s: gateway" % where) if "gateway" in doc else base + 1
    if not base < gw < base + size - 1:
        raise ValidationError("%s: gateway" % where, doc.get("gateway"), "is not a host address of the subnet")
    v6 = _v6(doc, where)
    routes, routes6 = [], []
    given = doc.get("routes", [{"dst": "0.0.0.0/0"}] + ([{"dst": "::/0"}] if v6["subnet6"] else []))
    for i, r in enumerate(given):
        rp = "%s: routes[%d]" % (where, i)
        if not isinstance(r, dict) or set(r) - {"dst", "gw"}:
            raise ValidationError(rp, r, "must be {dst: a.b.c.d/len, gw: optional a.b.c.d}")
        if isinstance(r.get("dst"), str) and ":" in r["dst"]:
            if not v6["subnet6"]:
                raise ValidationError(rp + ".dst", r["dst"], "is an IPv6 route on a network without subnet6")
            d6, l6 = _cidr6(r["dst"], rp + ".dst")
            route6 = {"dst": _fmt6(d6), "prefix": l6}
            if r.get("gw") is not None:
                route6["gw"] = _fmt6(_ip6(r["gw"], rp + ".gw"))
            routes6.append(route6)
            continue
        dst, dlen = _cidr(r.get("dst"), rp + ".dst")
        route = {"dst": _fmt(dst), "prefix": dlen}
        if r.get("gw") is not None:
            route["gw"] = _fmt(_ip(r["gw"], rp + ".gw"))
        routes.append(route)
    bridge = None
    if kind == "bridge":
        bridge = doc.get("bridge") or ("rkt-%s" % name)[:15]
        if not isinstance(bridge, str) or len(bridge) > 15 or not bridge or "/" in bridge or " " in bridge:
            raise ValidationError("%s: bridge" % where, bridge, "is not an interface name (1-15 characters)")
    elif "bridge" in doc:
        raise ValidationError("%s: bridge" % where, doc["bridge"], "is only for type bridge")
    mtu = doc.get("mtu")
    if mtu is not None and (not isinstance(mtu, int) or isinstance(mtu, bool) or not 576 <= mtu <= 65535):
        raise ValidationError("%s: mtu" % where, mtu, "must be an integer from 576 to 65535")
    masq = doc.get("ipMasq", True)
    if not isinstance(masq, bool):
        raise ValidationError("%s: ipMasq" % where, masq, "must be true or false")
    return dict({"name": name, "type": kind, "subnet": _fmt(base), "prefix": prefix, "gateway": _fmt(gw),
                 "routes": routes, "ip_masq": masq, "bridge": bridge, "mtu": mtu, "routes6": routes6}, **v6)


CNI_SUFFIXES = (".conflist", ".conf")


def validate_cni(doc: "Any", where: str, single: bool) -> "Dict[str, Any]":
    """A CNI configuration (a .conflist, or a .conf: one plugin), checked as far as we use
    it; the plugins check the rest at ADD."""
    if not isinstance(doc, dict):
        raise ValidationError(where, doc, "a CNI configuration must be a JSON object")
    from .schema import validate_ac_name

    validate_ac_name(doc.get("name"), "%s: name" % where)
    if doc["name"] in ("host", "none"):
        raise ValidationError("%s: name" % where, doc["name"], "is reserved")
    version = doc.get("cniVersion")
    if not isinstance(version, str) or not all(x.isdigit() for x in version.split(".")) or version.count(".") != 2:
        raise ValidationError("%s: cniVersion" % where, version, "must be a CNI version such as 1.0.0")
    plugins: "Any" = doc.get("plugins")
    if single:
        plugins = [{k: v for k, v in doc.items() if k not in ("name", "cniVersion")}]
    else:
        if not isinstance(plugins, list) or not plugins:
            raise ValidationError("%s: plugins" % where, plugins, "must be a non-empty list of plugin objects")
    for i, pl in enumerate(plugins):
        path = "%s: plugins[%d]" % (where, i) if not single else where
        if not isinstance(pl, dict):
            raise ValidationError(path, pl, "must be a JSON object")
        kind = pl.get("type")
        if not isinstance(kind, str) or not kind or kind[0] == "." or set(kind) - set(
                "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_."):
            raise ValidationError(path + ".type", kind, "must be a plugin's file name (letters, digits, - _ .)")
    conflist = {"name": doc["name"], "cniVersion": version, "plugins": plugins}
    return {"name": doc["name"], "type": "cni", "cni": conflist}


def _bandwidth(pod: "podmod.Pod") -> "Optional[Dict[str, int]]":
    """The pod's resource/network-bandwidth isolators (the smallest limit of its apps, in
    bytes per second as resource/block-bandwidth) as the bandwidth plugin's runtimeConfig
    (bits per second; the burst: 1/10 s at the rate, at least 64 KiB, as the plugin needs
    room for a frame)."""
    from ..stage1 import isolators

    limits = []
    for a in pod.manifest()["apps"]:
        app = a.get("app")
        if app is None:  # the image's app, unchanged
            with open(pod.file(contract.app_file(a["name"], "manifest")), "rb") as f:
                app = json.loads(f.read()).get("app") or {}
        for iso in app.get("isolators") or []:
            if iso.get("name") == "resource/network-bandwidth":
                value = iso.get("value") or {}
                if value.get("limit") is not None:
                    limits.append(int(isolators.quantity(value["limit"])))
    if not limits:
        return None
    rate = min(limits) * 8
    burst = max(rate // 10, 64 * 1024 * 8)
    return {"ingressRate": rate, "ingressBurst": burst, "egressRate": rate, "egressBurst": burst}


def conf_dirs(dd: DataDir) -> "List[str]":
    return [os.path.join(dd.path, "net.d"), SYSTEM_CONF_DIR]


def load(dd: DataDir) -> "Dict[str, Dict[str, Any]]":
    """Every network by name: the configuration files', then the built-in default."""
    out: "Dict[str, Dict[str, Any]]" = {}
    for d in conf_dirs(dd):
        try:
            names = sorted(n for n in os.listdir(d) if n.endswith((".json",) + CNI_SUFFIXES))
        except FileNotFoundError:
            continue
        here: "Dict[str, str]" = {}
        for n in names:
            path = os.path.join(d, n)
            try:
                with open(path, "rb") as f:
                    doc = json.loads(f.read(1 << 16).decode("utf-8"))
            except (OSError, ValueError) as e:
                raise RocketError("network configuration %s: %s" % (path, e))
            conf = validate(doc, path) if n.endswith(".json") else validate_cni(doc, path, n.endswith(".conf"))
            if conf["name"] in here:
                raise RocketError("network %s is defined twice: in %s and %s" % (conf["name"], here[conf["name"]], path))
            here[conf["name"]] = path
            out.setdefault(conf["name"], dict(conf, file=path))
    if "default" not in out:
        out["default"] = dict(_BUILTIN_DEFAULT, routes=[dict(r) for r in _BUILTIN_DEFAULT["routes"]])
    return out


def parse_net(value: "Any") -> "List[str]":
    """The `net` option: host, none, or network names (a list or a comma-separated string)."""
    if value is None:
        return ["host"]
    names = value.split(",") if isinstance(value, str) else list(value)
    names = [str(n).strip() for n in names]
    if not names or any(not n for n in names):
        raise ValidationError("net", value, "must be host, none or one or more network names")
    if len(set(names)) != len(names):
        raise ValidationError("net", value, "names a network twice")
    if ("host" in names or "none" in names) and len(names) > 1:
        raise ValidationError("net", value, "host and none cannot be combined with networks")
    if len(names) > MAX_NETWORKS:
        raise ValidationError("net", value, "joins more than %d networks" % MAX_NETWORKS)
    return names


def _nameservers(path: str) -> "tuple":
    servers, search, options = [], [], []
    try:
        with open(path) as f:
            for line in f:
                w = line.split()
                if len(w) >= 2 and w[0] == "nameserver":
                    servers.append(w[1])
                elif w[:1] in (["search"], ["domain"]):
                    search = w[1:]
                elif w[:1] == ["options"]:
                    options += w[1:]
    except OSError:
        pass
    return servers, search, options


def _loopback(ip: str) -> bool:
    return ip.startswith("127.") or ip in ("::1", "0.0.0.0")


def dns(servers: "Optional[List[str]]" = None, resolv: str = "/etc/resolv.conf",
        upstream: str = SYSTEMD_UPSTREAM, search: "Optional[List[str]]" = None,
        options: "Optional[List[str]]" = None) -> "Dict[str, Any]":
    """The pod's resolv.conf content: `servers` when given, else the host's non-loopback
    nameservers, else those of systemd-resolved's upstream list, else the fallback.
    `search` and `options` (dns_search, dns_options), when given, replace what that source had."""
    out = _dns(servers, resolv, upstream)
    if search is not None:
        out["search"] = list(search)
    if options is not None:
        out["options"] = list(options)
    return out


def _dns(servers: "Optional[List[str]]", resolv: str, upstream: str) -> "Dict[str, Any]":
    if servers:
        for i, s in enumerate(servers):
            try:
                socket.inet_pton(socket.AF_INET6 if ":" in s else socket.AF_INET, s)
            except (OSError, TypeError):
                raise ValidationError("dns[%d]" % i, s, "is not an IP address")
        return {"nameservers": list(servers), "search": [], "options": []}
    found, search, options = _nameservers(resolv)
    usable = [s for s in found if not _loopback(s)]
    if not usable:
        up, up_search, dummy_options = _nameservers(upstream)
        usable = [s for s in up if not _loopback(s)]
        search = search or up_search
        options = [o for o in options if not o.startswith("trust-ad")]
    if not usable:
        usable = list(FALLBACK_NAMESERVERS)
    return {"nameservers": usable[:3], "search": search, "options": options}


# The network run options (pod_options: ip, ip6, mac, dns_search, dns_options, extra_hosts,
# hostname_aliases), recorded together as the run option net_options.
NET_OPTIONS = ("ip", "ip6", "mac", "dns_search", "dns_options", "extra_hosts", "hostname_aliases")
MAX_SEARCH = 6  # the resolver's limit of search domains


def _hostname(value: "Any", path: str) -> str:
    """A host name for /etc/hosts or a search domain (the pod's own: stage0/uts.py)."""
    from .uts import check_name

    return check_name(value, path, 253)


def _addr_any(value: "Any", path: str) -> str:
    """An IPv4 or IPv6 address, in its canonical form."""
    if isinstance(value, str) and ":" in value:
        return _fmt6(_ip6(value, path))
    return _fmt(_ip(value, path))


def normalize_options(opts: "Optional[Dict[str, Any]]") -> "Dict[str, Any]":
    """The network run options checked and in one form (only those given); errors name the option."""
    out: "Dict[str, Any]" = {}
    opts = opts or {}
    unknown = sorted(set(opts) - set(NET_OPTIONS))
    if unknown:
        raise ValidationError(unknown[0], opts[unknown[0]], "is not a network option (%s)" % ", ".join(NET_OPTIONS))
    if opts.get("ip") is not None:
        out["ip"] = _fmt(_ip(opts["ip"], "ip"))
    if opts.get("ip6") is not None:
        out["ip6"] = _fmt6(_ip6(opts["ip6"], "ip6"))
    if opts.get("mac") is not None:
        mac = opts["mac"]
        parts = mac.split(":") if isinstance(mac, str) else []
        if len(parts) != 6 or not all(len(x) == 2 and all(c in "0123456789abcdefABCDEF" for c in x) for x in parts):
            raise ValidationError("mac", mac, "is not a MAC address (six hex pairs: 02:42:ac:11:00:02)")
        if int(parts[0], 16) & 1:
            raise ValidationError("mac", mac, "is a multicast address (the first byte's lowest bit is set)")
        if mac.lower() == "00:00:00:00:00:00":
            raise ValidationError("mac", mac, "is all zeros")
        out["mac"] = mac.lower()
    for k in ("dns_search", "dns_options"):
        v = opts.get(k)
        if v is None:
            continue
        if not isinstance(v, list):
            raise ValidationError(k, v, "must be a list")
        for i, item in enumerate(v):
            if k == "dns_search":
                _hostname(item, "%s[%d]" % (k, i))
            elif not isinstance(item, str) or not item or any(c.isspace() for c in item) or len(item) > 64:
                raise ValidationError("%s[%d]" % (k, i), item, "is not a resolver option (one word, e.g. ndots:2)")
        if k == "dns_search" and len(v) > MAX_SEARCH:
            raise ValidationError(k, v, "has more than %d domains (the resolver's limit)" % MAX_SEARCH)
        out[k] = list(v)
    if opts.get("extra_hosts") is not None:
        eh = opts["extra_hosts"]
        if not isinstance(eh, dict):
            raise ValidationError("extra_hosts", eh, "must be a dictionary {host name: address}")
        out["extra_hosts"] = {_hostname(h, "extra_hosts"): _addr_any(a, "extra_hosts.%s" % h) for h, a in sorted(eh.items())}
    if opts.get("hostname_aliases") is not None:
        al = opts["hostname_aliases"]
        if not isinstance(al, list):
            raise ValidationError("hostname_aliases", al, "must be a list of host names")
        out["hostname_aliases"] = [_hostname(a, "hostname_aliases[%d]" % i) for i, a in enumerate(al)]
    return out


def check_options(dd: DataDir, names: "List[str]", opts: "Dict[str, Any]") -> "Dict[str, Any]":
    """normalize_options, and the fixed addresses against the first network's pool: in its
    subnet, not its network, gateway or broadcast address. Before anything is created (a
    fixed address another pod holds is refused again, under the lock, at the start)."""
    out = normalize_options(opts)
    if not any(k in out for k in ("ip", "ip6", "mac")):
        return out
    if names[0] in ("host", "none"):
        k = [k for k in ("ip", "ip6", "mac") if k in out][0]
        raise ValidationError(k, out[k], "needs a private network (net: default or a network name), not %s" % names[0])
    confs = load(dd)
    if names[0] not in confs:
        raise RocketError("net: no network %s (known: %s)" % (names[0], ", ".join(sorted(confs))))
    n = confs[names[0]]
    if n.get("type") == "cni":
        k = [k for k in ("ip", "ip6", "mac") if k in out][0]
        raise ValidationError(k, out[k], "network %s is a CNI configuration: its plugins (IPAM) choose the address; "
                              "set it in the configuration instead" % n["name"])
    if "ip" in out:
        a, base, size = _ip(out["ip"], "ip"), _ip(n["subnet"], "subnet"), 1 << (32 - n["prefix"])
        if not base < a < base + size - 1 or a == _ip(n["gateway"], "gateway"):
            raise ValidationError("ip", out["ip"], "is not in the pool of network %s (%s/%d without its gateway %s, "
                                  "network and broadcast addresses)" % (n["name"], n["subnet"], n["prefix"], n["gateway"]))
    if "ip6" in out:
        if not n.get("subnet6"):
            raise ValidationError("ip6", out["ip6"], "network %s has no IPv6 subnet (subnet6)" % n["name"])
        a, base = _ip6(out["ip6"], "ip6"), _ip6(n["subnet6"], "subnet6")
        if not base < a < base + (1 << (128 - n["prefix6"])) or a == _ip6(n["gateway6"], "gateway6"):
            raise ValidationError("ip6", out["ip6"], "is not in the pool of network %s (%s/%d without its gateway %s)"
                                  % (n["name"], n["subnet6"], n["prefix6"], n["gateway6"]))
    return out


def _app_ports(pod: "podmod.Pod") -> "Dict[str, Dict[str, Any]]":
    """{port name: {protocol, port, app}} over every app (the effective app's ports)."""
    out: "Dict[str, Dict[str, Any]]" = {}
    for a in pod.manifest()["apps"]:
        app = a.get("app")
        if app is None:
            with open(pod.file(contract.app_file(a["name"], "manifest")), "rb") as f:
                app = json.loads(f.read()).get("app") or {}
        for p in app.get("ports") or []:
            out.setdefault(p["name"], {"protocol": p.get("protocol", "tcp"), "port": int(p["port"]), "app": a["name"]})
    return out


def _span(v: "Any") -> "tuple":
    """(first, count) of a port or an "a-b" range (podspec.normalize_port checked it)."""
    if isinstance(v, str):
        a, b = v.split("-")
        return int(a), int(b) - int(a) + 1
    return int(v), 1


def resolve_ports(pod: "podmod.Pod", ports: "List[Dict[str, Any]]") -> "List[Dict[str, Any]]":
    """The pod's forwards: named ones resolved against its apps' declared ports, ranges
    expanded to one forward per port (host port i of the range to port i)."""
    declared = None
    out = []
    for i, p in enumerate(ports):
        q = {"host_port": p["host_port"], "host_ip": p.get("host_ip")}
        if p.get("name") and p.get("port") is None:
            if declared is None:
                declared = _app_ports(pod)
            if p["name"] not in declared:
                raise ValidationError("ports[%d].name" % i, p["name"], "is not a port any app of the pod declares (%s)"
                                      % (", ".join(sorted(declared)) or "none declared"))
            d = declared[p["name"]]
            q.update(name=p["name"], protocol=d["protocol"], port=d["port"])
        else:
            q.update(name=p.get("name"), protocol=p.get("protocol") or "tcp", port=p["port"])
        first, count = _span(q["port"])
        host_first = _span(q["host_port"])[0]
        for k in range(count):
            out.append(dict(q, port=first + k, host_port=host_first + k if host_first else 0))
    return out


def _nft_present() -> bool:
    from ..stage1 import firewall

    return firewall.nft_path() is not None


def _ip_forward() -> None:
    """Pods reach beyond the host only with IPv4 forwarding on (host-wide; said in docs)."""
    path = "/proc/sys/net/ipv4/ip_forward"
    with open(path) as f:
        if f.read().strip() == "1":
            return
    with open(path, "w") as f:
        f.write("1")


def plan(pod: "podmod.Pod", names: "List[str]", dns_servers: "Optional[List[str]]" = None,
         options: "Optional[Dict[str, Any]]" = None) -> "Dict[str, Any]":
    """Resolve, allocate and write ``net.json`` for a start on private networks.

    options: the network run options (NET_OPTIONS); ip, ip6 and mac apply to the first
    network. Errors (an unknown network, a full pool, a fixed address or host port in use,
    no nft) leave nothing allocated.
    """
    dd = pod.dd
    opts = check_options(dd, names, options or {})
    confs = load(dd)
    nets = []
    for i, n in enumerate(names):
        if n not in confs:
            raise RocketError("net: no network %s (known: %s; configuration files go in %s)"
                              % (n, ", ".join(sorted(confs)), " or ".join(conf_dirs(dd))))
        nets.append(dict(confs[n], ifname="eth%d" % i, mac=pod_mac(pod.uuid, i)))
    if "ip" in opts:
        nets[0]["want_ip"] = opts["ip"]
    if "ip6" in opts:
        nets[0]["want_ip6"] = opts["ip6"]
    if "mac" in opts:
        nets[0]["mac"] = opts["mac"]
    builtin = [n for n in nets if n["type"] != "cni"]
    if builtin and not _nft_present():
        raise RocketError("private networking needs nft (Debian package: nftables)")
    if any(n.get("subnet6") for n in nets) and not os.path.isdir("/proc/sys/net/ipv6"):
        raise RocketError("network %s has subnet6, but IPv6 is disabled on this host"
                          % [n["name"] for n in nets if n.get("subnet6")][0])
    spec = pod.spec().get("spec") or {}
    ports = resolve_ports(pod, spec.get("ports") or [])
    resolv = dns(dns_servers, search=opts.get("dns_search"), options=opts.get("dns_options"))
    cnis = [n for n in nets if n["type"] == "cni"]
    if cnis:
        _cni_checks(pod, cnis)
    ips = ipam.allocate(dd, pod.uuid, builtin, ports)
    try:
        _ip_forward()
        for net, ip in zip(builtin, ips):
            net["ip"] = ip
            net.pop("want_ip", None)
            net.pop("want_ip6", None)
        doc = {"networks": nets, "ports": ports, "dns": resolv, "lock": ipam.lock_path(dd),
               "extra_hosts": opts.get("extra_hosts") or {}, "aliases": opts.get("hostname_aliases") or []}
        ipam.write_small(pod.file(contract.NET), json.dumps(doc, sort_keys=True))  # read by stage1 only: no fsync
    except BaseException:
        ipam.release(dd, pod.uuid)
        raise
    return doc


def pod_mac(uuid: str, index: int) -> str:
    """The pod end's MAC when the mac option does not fix it (stage1/net.py's derivation)."""
    from ..stage1 import net

    return net.pod_mac(uuid, index)


def _cni_checks(pod: "podmod.Pod", cnis: "List[Dict[str, Any]]") -> None:
    """Before anything is allocated: every plugin is found (a missing one is an error naming
    it, not a half-made network), and the bandwidth isolators go to the first network whose
    plugins take them."""
    from ..stage1 import cni

    path = cni.search_path(ipam.net_dir(pod.dd))
    for n in cnis:
        for pl in n["cni"]["plugins"]:
            try:
                cni.find_plugin(pl["type"], path)
            except cni.CNIError as e:
                raise RocketError("network %s (%s): %s" % (n["name"], n.get("file"), e.strerror))
    rate = _bandwidth(pod)
    if rate:
        for n in cnis:
            if any((pl.get("capabilities") or {}).get("bandwidth") for pl in n["cni"]["plugins"]):
                n["bandwidth"] = rate
                break
