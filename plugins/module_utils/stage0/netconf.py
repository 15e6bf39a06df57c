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
CONF_KEYS = ("name", "type", "subnet", "gateway", "routes", "ipMasq", "bridge", "mtu")
# When the host's resolv.conf names only loopback resolvers (a local stub such as
# systemd-resolved's 127.0.0.53, unreachable from a pod) and no upstream list is found,
# pods get these (as Docker does); the `dns` option overrides them.
FALLBACK_NAMESERVERS = ("8.8.8.8", "8.8.4.4")
SYSTEMD_UPSTREAM = "/run/systemd/resolve/resolv.conf"
MAX_NETWORKS = 8
# DEFAULT_NETWORK, normalized (what validate() returns for it; a unit test checks they agree).
_BUILTIN_DEFAULT: "Dict[str, Any]" = {
    "name": "default", "type": "ptp", "subnet": "172.16.28.0", "prefix": 24, "gateway": "172.16.28.1",
    "routes": [{"dst": "0.0.0.0", "prefix": 0}], "ip_masq": True, "bridge": None, "mtu": None}


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
    routes = []
    for i, r in enumerate(doc.get("routes", [{"dst": "0.0.0.0/0"}])):
        rp = "%s: routes[%d]" % (where, i)
        if not isinstance(r, dict) or set(r) - {"dst", "gw"}:
            raise ValidationError(rp, r, "must be {dst: a.b.c.d/len, gw: optional a.b.c.d}")
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
    return {"name": name, "type": kind, "subnet": _fmt(base), "prefix": prefix, "gateway": _fmt(gw),
            "routes": routes, "ip_masq": masq, "bridge": bridge, "mtu": mtu}


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
        upstream: str = SYSTEMD_UPSTREAM) -> "Dict[str, Any]":
    """The pod's resolv.conf content: `servers` when given, else the host's non-loopback
    nameservers, else those of systemd-resolved's upstream list, else the fallback."""
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


def resolve_ports(pod: "podmod.Pod", ports: "List[Dict[str, Any]]") -> "List[Dict[str, Any]]":
    """The pod's forwards: named ones resolved against its apps' declared ports."""
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
        out.append(q)
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


def plan(pod: "podmod.Pod", names: "List[str]", dns_servers: "Optional[List[str]]" = None) -> "Dict[str, Any]":
    """Resolve, allocate and write ``net.json`` for a start on private networks.

    Errors (an unknown network, a full pool, a host port in use, no nft) leave nothing
    allocated.
    """
    dd = pod.dd
    confs = load(dd)
    nets = []
    for i, n in enumerate(names):
        if n not in confs:
            raise RocketError("net: no network %s (known: %s; configuration files go in %s)"
                              % (n, ", ".join(sorted(confs)), " or ".join(conf_dirs(dd))))
        nets.append(dict(confs[n], ifname="eth%d" % i))
    builtin = [n for n in nets if n["type"] != "cni"]
    if builtin and not _nft_present():
        raise RocketError("private networking needs nft (Debian package: nftables)")
    spec = pod.spec().get("spec") or {}
    ports = resolve_ports(pod, spec.get("ports") or [])
    resolv = dns(dns_servers)
    cnis = [n for n in nets if n["type"] == "cni"]
    if cnis:
        _cni_checks(pod, cnis)
    ips = ipam.allocate(dd, pod.uuid, builtin, ports)
    try:
        _ip_forward()
        for net, ip in zip(builtin, ips):
            net["ip"] = ip
        doc = {"networks": nets, "ports": ports, "dns": resolv, "lock": ipam.lock_path(dd)}
        ipam.write_small(pod.file(contract.NET), json.dumps(doc, sort_keys=True))  # read by stage1 only: no fsync
    except BaseException:
        ipam.release(dd, pod.uuid)
        raise
    return doc


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
