"""The few rtnetlink requests private networking needs, with the standard library only.

Why not pyroute2: stage1 runs as `python -I -S` (no site-packages), and importing
pyroute2 costs more per start than this whole module's work (docs/networking.md has the
measured figures). What is needed is
small: create a veth pair with its peer in another namespace, a bridge, set links up or
enslave them, add addresses and routes, delete links, list a bridge's ports, and
attach the XDP program that guards a pod's link (linkguard.py). Each request
is acknowledged; an error raises OSError with the kernel's errno.
A socket belongs to the network namespace it was created in.
"""
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 18, 20, 24
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK, NLM_F_DUMP = 1, 2, 4, 0x300
NLM_F_EXCL, NLM_F_CREATE = 0x200, 0x400
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_MASTER, IFLA_LINKINFO, IFLA_IFALIAS, IFLA_NET_NS_FD = 1, 3, 4, 10, 18, 20, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_FLAGS, IFA_F_NOPREFIXROUTE = 1, 2, 8, 0x200
IFA_F_NODAD = 0x02  # IPv6: usable at once (addresses are unique by allocation; no 1-2 s wait)
RTA_DST, RTA_OIF, RTA_GATEWAY = 1, 4, 5
RT_TABLE_MAIN, RTPROT_STATIC, RTN_UNICAST = 254, 4, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
IFF_UP = 1
NLA_F_NESTED = 0x8000

_IFINFO = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFLA_XDP, IFLA_XDP_FD, IFLA_XDP_FLAGS, XDP_FLAGS_SKB_MODE = 43, 1, 3, 2


def attr(kind, payload):
    """One rtattr: payload bytes, str (NUL-terminated), int (u32) or a list of attrs (nested)."""
    if isinstance(payload, str):
        payload = payload.encode() + b"\0"
    elif isinstance(payload, int):
        payload = struct.pack("=I", payload)
    elif isinstance(payload, list):
        payload = b"".join(payload)
        kind |= NLA_F_NESTED
    n = 4 + len(payload)
    return struct.pack("=HH", n, kind) + payload + b"\0" * (-n % 4)


def ifinfo(index=0, flags=0, change=0):
    return _IFINFO.pack(socket.AF_UNSPEC, 0, index, flags, change)


def mac_bytes(mac):
    return bytes(int(x, 16) for x in mac.split(":"))


def _attrs(data):
    """{type: payload} of a flat run of rtattrs."""
    out = {}
    while len(data) >= 4:
        n, kind = struct.unpack_from("=HH", data)
        if n < 4:
            break
        out[kind & ~NLA_F_NESTED] = data[4:n]
        data = data[(n + 3) & ~3:]
    return out


def _family(ip):
    """(address family, packed address) of an IPv4 or IPv6 address string."""
    if ":" in ip:
        return socket.AF_INET6, socket.inet_pton(socket.AF_INET6, ip)
    return socket.AF_INET, socket.inet_aton(ip)


class Netlink:
    """An rtnetlink socket in the network namespace of the process that creates it."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self):
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, msgtype, flags, body):
        self.seq += 1
        self.sock.send(struct.pack("=IHHII", 16 + len(body), msgtype, flags | NLM_F_REQUEST, self.seq, 0) + body)
        return self.seq

    def request(self, msgtype, body, flags=0, what=""):
        """Send one request and wait for its acknowledgement; OSError on a negative one."""
        seq = self._send(msgtype, flags | NLM_F_ACK, body)
        while True:
            data = self.sock.recv(65536)
            while len(data) >= 16:
                n, kind, dummy_flags, mseq, dummy_pid = struct.unpack_from("=IHHII", data)
                if kind == NLMSG_ERROR and mseq == seq:
                    err = -struct.unpack_from("=i", data, 16)[0]
                    if err:
                        raise OSError(err, "netlink: %s: %s" % (what or msgtype, os.strerror(err)))
                    return
                data = data[(n + 3) & ~3:]

    def dump_links(self):
        """[(index, name, master index or 0, kind, alias)] of every link in this namespace."""
        seq = self._send(RTM_GETLINK, NLM_F_DUMP, ifinfo())
        out = []  # type: list
        while True:
            data = self.sock.recv(1 << 16)
            while len(data) >= 16:
                n, kind, dummy_flags, mseq, dummy_pid = struct.unpack_from("=IHHII", data)
                if mseq != seq:
                    data = data[(n + 3) & ~3:]
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", data, 16)[0]
                    raise OSError(err, "netlink: list links: %s" % os.strerror(err))
                index = _IFINFO.unpack_from(data, 16)[2]
                a = _attrs(data[16 + _IFINFO.size:n])
                name = a.get(IFLA_IFNAME, b"").rstrip(b"\0").decode()
                master = struct.unpack("=I", a[IFLA_MASTER])[0] if IFLA_MASTER in a else 0
                kind = _attrs(a.get(IFLA_LINKINFO, b"")).get(IFLA_INFO_KIND, b"").rstrip(b"\0").decode()
                alias = a.get(IFLA_IFALIAS, b"").rstrip(b"\0").decode("utf-8", "replace")
                out.append((index, name, master, kind, alias))
                data = data[(n + 3) & ~3:]

    # -- links -------------------------------------------------------------------------
    def add_veth(self, name, peer, peer_ns_fd, peer_mac=None, mtu=None):
        """A veth pair: `name` here, `peer` created directly in the namespace of peer_ns_fd."""
        peer_attrs = [attr(IFLA_IFNAME, peer), attr(IFLA_NET_NS_FD, peer_ns_fd)]
        if peer_mac:
            peer_attrs.append(attr(IFLA_ADDRESS, mac_bytes(peer_mac)))
        if mtu:
            peer_attrs.append(attr(IFLA_MTU, mtu))
        info = [attr(IFLA_INFO_KIND, "veth"),
                attr(IFLA_INFO_DATA, [attr(VETH_INFO_PEER, ifinfo() + b"".join(peer_attrs))])]
        attrs = [attr(IFLA_IFNAME, name), attr(IFLA_LINKINFO, info)]
        if mtu:
            attrs.append(attr(IFLA_MTU, mtu))
        self.request(RTM_NEWLINK, ifinfo() + b"".join(attrs), NLM_F_CREATE | NLM_F_EXCL, "add veth %s" % name)

    def add_bridge(self, name, mtu=None, alias=None):
        """Create a bridge (with an alias saying whose it is); False when it exists already."""
        attrs = [attr(IFLA_IFNAME, name), attr(IFLA_LINKINFO, [attr(IFLA_INFO_KIND, "bridge")])]
        if mtu:
            attrs.append(attr(IFLA_MTU, mtu))
        try:
            self.request(RTM_NEWLINK, ifinfo() + b"".join(attrs), NLM_F_CREATE | NLM_F_EXCL, "add bridge %s" % name)
        except FileExistsError:
            return False
        if alias:  # a creation ignores IFLA_IFALIAS: set it on the new link
            index = socket.if_nametoindex(name)
            self.request(RTM_NEWLINK, ifinfo(index) + attr(IFLA_IFALIAS, alias), 0, "alias of %s" % name)
        return True

    def set_link(self, index, up=None, master=None):
        attrs = []
        if master is not None:
            attrs.append(attr(IFLA_MASTER, master))
        flags = IFF_UP if up else 0
        change = IFF_UP if up is not None else 0
        self.request(RTM_NEWLINK, ifinfo(index, flags, change) + b"".join(attrs), 0, "set link %d" % index)

    def del_link(self, name):
        """Delete a link by name; False when there is none."""
        try:
            index = socket.if_nametoindex(name)
        except OSError:
            return False
        try:
            self.request(RTM_DELLINK, ifinfo(index), 0, "delete link %s" % name)
        except OSError as e:
            if e.errno in (19, 2):  # ENODEV, ENOENT: gone meanwhile
                return False
            raise
        return True

    # -- addresses and routes -------------------------------------------------------------
    def add_addr(self, index, ip, prefix, noprefixroute=False):
        """An IPv4 or (a colon in ip) IPv6 address, the latter without duplicate detection."""
        family, raw = _family(ip)
        flags = IFA_F_NOPREFIXROUTE if noprefixroute else 0
        if family == socket.AF_INET6:
            flags |= IFA_F_NODAD
        body = struct.pack("=BBBBI", family, prefix, flags & 0xFF, RT_SCOPE_UNIVERSE, index)
        if family == socket.AF_INET:
            body += attr(IFA_LOCAL, raw)
        body += attr(IFA_ADDRESS, raw)
        if flags:
            body += attr(IFA_FLAGS, flags)
        try:
            self.request(RTM_NEWADDR, body, NLM_F_CREATE | NLM_F_EXCL, "add address %s/%d" % (ip, prefix))
        except FileExistsError:
            pass  # the same gateway address on another pod's link, or a bridge that has it

    def add_route(self, dst, prefix, gateway=None, oif=None):
        family, raw = _family(dst)
        scope = RT_SCOPE_UNIVERSE if gateway or family == socket.AF_INET6 else RT_SCOPE_LINK
        body = struct.pack("=BBBBBBBBI", family, prefix, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, scope,
                           RTN_UNICAST, 0)
        if prefix:
            body += attr(RTA_DST, raw)
        if gateway:
            body += attr(RTA_GATEWAY, _family(gateway)[1])
        if oif:
            body += attr(RTA_OIF, oif)
        self.request(RTM_NEWROUTE, body, NLM_F_CREATE | NLM_F_EXCL,
                     "add route %s/%d%s" % (dst, prefix, " via %s" % gateway if gateway else ""))

    def set_xdp(self, index, prog_fd):
        """Attach an XDP program (generic mode: every driver, veth included) to a link."""
        xdp = [attr(IFLA_XDP_FD, prog_fd), attr(IFLA_XDP_FLAGS, XDP_FLAGS_SKB_MODE)]
        self.request(RTM_NEWLINK, ifinfo(index) + attr(IFLA_XDP, xdp), 0, "attach XDP to link %d" % index)
