"""The guard on a pod's host-side link: an XDP program that binds the link to the pod's addresses.

Every frame a pod sends enters the host through the host end of its veth, before any
bridge, route or nftables hook sees it. The program attached there passes only:

* IPv4 from the pod's MAC and the pod's address, to anything but 127.0.0.0/8;
* ARP from the pod's MAC whose sender hardware and protocol addresses are the pod's;

* on a dual-stack network, IPv6 from the pod's MAC and from the pod's IPv6 address or its
  link-local one (EUI-64 of the MAC), carrying TCP, UDP or ICMPv6 directly (no extension
  headers, behind which a forged message could hide); of ICMPv6, no router advertisement
  or redirect (a pod must not become the others' router), and neighbour advertisements
  only for the pod's own two addresses (as ARP: no poisoning of neighbour tables);

and drops everything else (another pod's address or MAC, forged ARP answers that would
poison the bridge's or the host's neighbour tables, loopback destinations, IPv6 on an
IPv4-only network, VLAN tags).

Why XDP and not nftables: it belongs to the link, lives and dies with it (nothing to clean
up, nothing left behind), and an operator's `nft flush ruleset` does not remove it, so the
loopback guard holds while `route_localnet` is set on the link for a 127.0.0.1 port
forward (firewall.py keeps its nft guard too: two layers). Why not tc: many kernels build
the u32 classifier without actions (this project's test VM among them), and a classifier
alone cannot drop. The program runs in generic (skb) mode, which every veth supports.

The program is assembled here (eBPF, host byte order for the loaded words) and loaded
through devices_bpf.load; attaching it is a netlink request (netlink.set_xdp).
"""
import _socket  # socket's C module: `socket` imports enum, on every start
import struct
import sys

BPF_PROG_TYPE_XDP = 6
XDP_DROP, XDP_PASS = 1, 2

# eBPF opcodes
_LDX_W, _LDX_H, _LDX_B = 0x61, 0x69, 0x71
_MOV64_REG, _ADD64_IMM, _MOV32_IMM = 0xbf, 0x07, 0xb4
_JGT_REG, _JNE_REG, _JEQ_IMM, _JNE_IMM, _JA = 0x2d, 0x5d, 0x15, 0x55, 0x05
_EXIT = 0x95
R0, R1, R2, R3, R4, R5, R6 = range(7)


def _encode(code, dst=0, src=0, off=0, imm=0):
    regs = (dst | (src << 4)) if sys.byteorder == "little" else ((dst << 4) | src)
    if imm >= 1 << 31:
        imm -= 1 << 32
    return struct.pack("=BBhi", code, regs, off, imm)


def _word(raw):
    """The value a 1, 2 or 4-byte load of raw gives on this host."""
    return struct.unpack({1: "=B", 2: "=H", 4: "=I"}[len(raw)], raw)[0]


def link_local(mac):
    """The pod end's IPv6 link-local address (EUI-64 of its MAC, the kernel's default)."""
    m = bytes(int(x, 16) for x in mac.split(":"))
    return b"\xfe\x80" + b"\0" * 6 + bytes([m[0] ^ 2]) + m[1:3] + b"\xff\xfe" + m[3:6]


def program(mac, ip, ip6=None):
    """The guard for a link whose pod end has mac ("02:..") and IPv4 address ip (and, on a
    dual-stack network, IPv6 address ip6)."""
    m = bytes(int(x, 16) for x in mac.split(":"))
    a = _socket.inet_aton(ip)
    code = []  # (opcode, dst, src, off or a label, imm)
    labels = {}

    def emit(*insn):
        code.append(insn + (0,) * (5 - len(insn)))

    def need(length):  # drop a frame shorter than length
        emit(_MOV64_REG, R4, R2)
        emit(_ADD64_IMM, R4, 0, 0, length)
        emit(_JGT_REG, R4, R3, "drop")

    def expect(offset, raw, fail="drop"):  # go to fail unless the frame holds raw at offset
        for i in range(0, len(raw), 4):
            part = raw[i:i + 4]
            load = {1: _LDX_B, 2: _LDX_H, 4: _LDX_W}[len(part)]
            emit(load, R5, R2, offset + i)
            if len(part) == 4:
                emit(_MOV32_IMM, R6, 0, 0, _word(part))
                emit(_JNE_REG, R5, R6, fail)
            else:
                emit(_JNE_IMM, R5, 0, fail, _word(part))

    emit(_LDX_W, R2, R1, 0)  # xdp_md.data
    emit(_LDX_W, R3, R1, 4)  # xdp_md.data_end
    need(14)
    expect(6, m)  # the Ethernet source
    emit(_LDX_H, R5, R2, 12)
    emit(_JEQ_IMM, R5, 0, "ip", _word(b"\x08\x00"))
    emit(_JEQ_IMM, R5, 0, "arp", _word(b"\x08\x06"))
    if ip6:
        emit(_JEQ_IMM, R5, 0, "ip6", _word(b"\x86\xdd"))
    emit(_JA, 0, 0, "drop")
    labels["ip"] = len(code)
    need(34)
    expect(26, a)  # the IPv4 source
    emit(_LDX_B, R5, R2, 30)  # the first byte of the destination
    emit(_JEQ_IMM, R5, 0, "drop", 127)
    emit(_MOV32_IMM, R0, 0, 0, XDP_PASS)
    emit(_EXIT)
    labels["arp"] = len(code)
    need(42)
    expect(22, m + a)  # the sender hardware and protocol addresses
    emit(_MOV32_IMM, R0, 0, 0, XDP_PASS)
    emit(_EXIT)
    if ip6:
        a6, ll = _socket.inet_pton(_socket.AF_INET6, ip6), link_local(mac)
        labels["ip6"] = len(code)
        need(54)
        expect(22, a6, "src_ll")  # the IPv6 source: the pod's address ...
        emit(_JA, 0, 0, "src_ok")
        labels["src_ll"] = len(code)
        expect(22, ll)  # ... or its link-local one
        labels["src_ok"] = len(code)
        emit(_LDX_B, R5, R2, 20)  # the next header
        emit(_JEQ_IMM, R5, 0, "pass", 6)
        emit(_JEQ_IMM, R5, 0, "pass", 17)
        emit(_JNE_IMM, R5, 0, "drop", 58)
        need(55)
        emit(_LDX_B, R5, R2, 54)  # the ICMPv6 type
        emit(_JEQ_IMM, R5, 0, "drop", 134)  # router advertisement
        emit(_JEQ_IMM, R5, 0, "drop", 137)  # redirect
        emit(_JNE_IMM, R5, 0, "pass", 136)  # not a neighbour advertisement
        need(78)
        expect(62, a6, "na_ll")  # its target: the pod's address ...
        emit(_JA, 0, 0, "pass")
        labels["na_ll"] = len(code)
        expect(62, ll)  # ... or its link-local one
        labels["pass"] = len(code)
        emit(_MOV32_IMM, R0, 0, 0, XDP_PASS)
        emit(_EXIT)
    labels["drop"] = len(code)
    emit(_MOV32_IMM, R0, 0, 0, XDP_DROP)
    emit(_EXIT)
    out = []
    for pc, (op, dst, src, off, imm) in enumerate(code):
        if isinstance(off, str):
            off = labels[off] - pc - 1
        out.append(_encode(op, dst, src, off, imm))
    return b"".join(out)


def attach(nl, index, name, mac, ip, ip6=None):
    """Load the guard for (mac, ip, ip6) and attach it to link index (name, for errors)."""
    import os

    from . import devices_bpf

    try:
        fd = devices_bpf.load(program(mac, ip, ip6), BPF_PROG_TYPE_XDP, 0, b"rocket_link")
    except (OSError, RuntimeError) as e:  # DeviceFilterError is a RuntimeError
        raise OSError(getattr(e, "errno", None) or 1, "the guard of pod link %s (an XDP program) could not "
                      "be loaded: %s" % (name, getattr(e, "strerror", None) or e))
    try:
        try:
            nl.set_xdp(index, fd)
        except OSError as e:
            raise OSError(e.errno, "the guard of pod link %s (XDP, generic mode) could not be attached: %s "
                          "(the kernel needs CONFIG_BPF_SYSCALL and XDP)" % (name, e.strerror))
    finally:
        os.close(fd)  # the link holds the program now, until it is deleted
