#!/usr/bin/env python3
"""Hostile frames for observer's packet hooks, written with scapy (a real packet library).

Prints one JSON object per line: name, the frame as hex, and what observer's packet hooks must
do with it when fed through BPF_PROG_TEST_RUN: how many events they emit (`events`) and by how
much the parse-error counter grows (`parse_errors`). The rules behind the numbers (handshake.rs):
an event is a TCP SYN or RST, or an ICMP/ICMPv6 destination-unreachable / fragmentation-needed /
packet-too-big error; a parse error is an IP header, transport header or ICMP header that is
not all there (within the frame and within the IP header's own length), or an ICMP error whose
quoted packet has no readable flow (then the error is still reported, without the quoted flow).
Later fragments, other protocols and VLAN-tagged frames (skb->protocol is the tag's ethertype)
are neither. Tunnels (VXLAN/Geneve on the ports of TUNNEL_PORTS, IP-in-IP 4 and 41): the TC hooks
report the inner TCP SYN/RST (`tc_events`, when it differs from `events`, which the cgroup
hooks, never seeing outer packets, keep); garbage or a cut inner packet is no event and no parse
error (the outer packet itself parsed fine). Frames shorter than the kernel's test-run
accepts are on the wire in the lab test instead.
"""
import json
import sys

from scapy.all import (  # noqa: E402
    AH, GRE, ICMP, IP, TCP, UDP, VXLAN, Dot1AD, Dot1Q, Ether, ICMPv6DestUnreach, ICMPv6EchoRequest,
    ICMPv6PacketTooBig, IPOption_NOP, IPOption_RR, IPv6, IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop, IPv6ExtHdrRouting, Raw, raw,
)
from scapy.contrib.geneve import GENEVE  # noqa: E402

MACS = dict(dst="02:00:00:00:00:02", src="02:00:00:00:00:01")
A4, B4 = "10.244.1.10", "10.244.2.10"
A6, B6 = "fd00:10:244:1::a", "fd00:10:244:2::a"
FRAMES = []


def frame(name, pkt, events, parse_errors, tc_events=None):
    data = pkt if isinstance(pkt, bytes) else raw(pkt)
    f = dict(name=name, hex=data.hex(), events=events, parse_errors=parse_errors)
    if tc_events is not None:
        f["tc_events"] = tc_events
    FRAMES.append(f)


def eth(**kw):
    return Ether(**MACS, **kw)


def syn4(**ip):
    return eth() / IP(src=A4, dst=B4, **ip) / TCP(sport=40000, dport=15012, flags="S", seq=1)


def syn6(*ext):
    pkt = IPv6(src=A6, dst=B6)
    for e in ext:
        pkt = pkt / e
    return eth() / pkt / TCP(sport=40000, dport=15012, flags="S", seq=1)


def garbage(n, seed):
    out = bytearray()
    x = seed
    for _ in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        out.append(x >> 16 & 0xFF)
    return bytes(out)


# Truncated at every header boundary (IPv4: 14 Ethernet + 20 IP + 20 TCP; IPv6: 14 + 40 + 20).
# The IP header keeps its original length: the frame, not the header, is short.
v4 = raw(syn4())
frame("ipv4 syn complete", v4, 1, 0)
for cut, ev, err, what in [(34, 0, 1, "ip header only"), (38, 0, 1, "ports only"), (47, 0, 1, "flags missing"),
                           (48, 1, 0, "flags present, tcp header short")]:
    frame(f"ipv4 syn cut at {cut}: {what}", v4[:cut], ev, err)
v6 = raw(syn6())
frame("ipv6 syn complete", v6, 1, 0)
for cut, ev, err, what in [(54, 0, 1, "ip header only"), (58, 0, 1, "ports only"), (67, 0, 1, "flags missing"),
                           (68, 1, 0, "flags present")]:
    frame(f"ipv6 syn cut at {cut}: {what}", v6[:cut], ev, err)
v6ext = raw(syn6(IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt()))
frame("ipv6 hop-by-hop + destination options + syn", v6ext, 1, 0)
frame("ipv6 cut inside the second extension header", v6ext[:63], 0, 1)
frame("ipv6 cut after the extension headers", v6ext[:70], 0, 1)

# Bad IHL / total length / data offset.
for ihl in range(0, 5):
    frame(f"ipv4 ihl {ihl}", syn4(ihl=ihl), 0, 1)
frame("ipv4 ihl 15 without the options", syn4(ihl=15), 0, 1)
frame("ipv4 total length below the header", syn4(len=19), 0, 1)
frame("ipv4 total length 24 (ports only)", syn4(len=24), 0, 1)
frame("ipv4 total length beyond the frame", syn4(len=1500), 1, 0)
frame("ipv4 version 6 under the ipv4 ethertype", syn4(version=6), 0, 1)
frame("ipv4 ihl 6 eating the tcp header (flags read as 0)",
      eth() / IP(src=A4, dst=B4, ihl=6, len=40, proto=6) / TCP(sport=40000, dport=15012, flags="S", chksum=0, urgptr=0),
      0, 0)
for doff in (0, 4, 15):
    frame(f"tcp data offset {doff}", eth() / IP(src=A4, dst=B4) / TCP(sport=40000, dport=15012, flags="S", dataofs=doff),
          1, 0)
frame("ipv6 payload length 4 (ports only)", eth() / IPv6(src=A6, dst=B6, plen=4) / TCP(sport=1, dport=2, flags="S"), 0, 1)

# IPv4 options at the limit (IHL 15: 40 bytes of options).
frame("ipv4 40 bytes of NOP options", syn4(options=[IPOption_NOP()] * 40), 1, 0)
frame("ipv4 record-route filling the options", syn4(options=[IPOption_RR(routers=["10.0.0.1"] * 9)]), 1, 0)
frame("ipv4 option with a bogus length", syn4(options=[Raw(b"\x07\xff\x04\x00")] ), 1, 0)

# IPv6 extension chains around the parse bound (8 headers).
for n, ev in [(7, 1), (8, 1), (9, 0), (12, 0)]:
    frame(f"ipv6 {n} destination-option headers", syn6(*[IPv6ExtHdrDestOpt() for _ in range(n)]), ev, 0)
frame("ipv6 routing + AH + syn", syn6(IPv6ExtHdrRouting(), AH(nh=6, payloadlen=4, spi=1, seq=1, icv=b"\0" * 12)), 1, 0)
frame("ipv6 extension header longer than the packet",
      eth() / IPv6(src=A6, dst=B6, nh=60) / Raw(bytes([6, 200]) + b"\0" * 30), 0, 1)
frame("ipv6 esp (not walked)", eth() / IPv6(src=A6, dst=B6, nh=50) / Raw(garbage(40, 3)), 0, 0)

# Fragments.
frame("ipv4 first fragment with the syn", syn4(flags="MF", frag=0), 1, 0)
frame("ipv4 later fragment that looks like a syn", syn4(frag=1), 0, 0)
frame("ipv4 last fragment that looks like a syn", syn4(frag=185), 0, 0)
frame("ipv4 first fragment cut after the ports",
      eth() / IP(src=A4, dst=B4, flags="MF", proto=6) / Raw(b"\x9c\x40\x3a\xa4"), 0, 1)
frame("ipv6 atomic fragment with the syn", syn6(IPv6ExtHdrFragment(offset=0, m=0, id=7)), 1, 0)
frame("ipv6 first fragment with the syn", syn6(IPv6ExtHdrFragment(offset=0, m=1, id=7)), 1, 0)
frame("ipv6 later fragment that looks like a syn", syn6(IPv6ExtHdrFragment(offset=1, m=1, id=7)), 0, 0)
frame("ipv6 fragment header cut", raw(syn6(IPv6ExtHdrFragment(offset=0, m=1, id=7)))[:58], 0, 1)

# ICMP / ICMPv6 errors quoting complete, truncated or garbage packets.
quoted4 = raw(IP(src=B4, dst=A4) / TCP(sport=15012, dport=40000, flags="S"))
icmp4 = lambda t, c, q: eth() / IP(src="10.244.2.1", dst=B4) / ICMP(type=t, code=c) / Raw(q)
frame("icmp port unreachable quoting ip + 8 bytes", icmp4(3, 3, quoted4[:28]), 1, 0)
frame("icmp fragmentation needed", eth() / IP(src="10.244.2.1", dst=B4) / ICMP(type=3, code=4, nexthopmtu=1400) / Raw(quoted4[:28]), 1, 0)
frame("icmp unreachable quoting only an ip header", icmp4(3, 1, quoted4[:20]), 1, 1)
frame("icmp unreachable quoting 22 bytes", icmp4(3, 1, quoted4[:22]), 1, 1)
frame("icmp unreachable quoting garbage", icmp4(3, 13, garbage(28, 1)), 1, 1)
frame("icmp unreachable quoting nothing", icmp4(3, 13, b""), 1, 1)
frame("icmp unreachable quoting a lying ihl", icmp4(3, 3, bytes([0x4f]) + quoted4[1:28]), 1, 1)
frame("icmp header cut at 4 bytes", raw(icmp4(3, 3, b""))[:38], 0, 1)
frame("icmp echo request", eth() / IP(src=A4, dst=B4) / ICMP(type=8), 0, 0)
frame("icmp time exceeded", icmp4(11, 0, quoted4[:28]), 0, 0)
quoted6 = raw(IPv6(src=B6, dst=A6) / TCP(sport=15012, dport=40000, flags="S"))
icmp6 = lambda layer, q: eth() / IPv6(src="fd00:10:244:2::1", dst=B6) / layer / Raw(q)
frame("icmpv6 unreachable quoting ipv6 + 8 bytes", icmp6(ICMPv6DestUnreach(code=4), quoted6[:48]), 1, 0)
frame("icmpv6 packet too big", icmp6(ICMPv6PacketTooBig(mtu=1280), quoted6[:48]), 1, 0)
frame("icmpv6 unreachable quoting a cut ipv6 header", icmp6(ICMPv6DestUnreach(code=1), quoted6[:20]), 1, 1)
frame("icmpv6 unreachable quoting garbage", icmp6(ICMPv6DestUnreach(code=1), garbage(48, 2)), 1, 1)
frame("icmpv6 echo request", eth() / IPv6(src=A6, dst=B6) / ICMPv6EchoRequest(), 0, 0)

# VLAN and QinQ tags (skb->protocol is the tag's ethertype: not parsed, not an error).
frame("vlan-tagged syn", eth() / Dot1Q(vlan=10) / IP(src=A4, dst=B4) / TCP(sport=40000, dport=15012, flags="S"), 0, 0)
frame("qinq-tagged syn", eth() / Dot1AD(vlan=20) / Dot1Q(vlan=10) / IP(src=A4, dst=B4) / TCP(flags="S"), 0, 0)
frame("vlan tag with garbage", eth() / Dot1Q(vlan=10, type=0x0800) / Raw(garbage(40, 4)), 0, 0)

# Tunnels: garbage inside is nothing; a SYN inside is the TC hooks' event (the inner flow).
udp4 = lambda port, inner: eth() / IP(src=A4, dst=B4) / UDP(sport=50000, dport=port) / inner
frame("vxlan with garbage", udp4(4789, VXLAN(vni=1) / Raw(garbage(30, 5))), 0, 0)
frame("vxlan with a syn inside", udp4(4789, VXLAN(vni=1) / raw(syn4())), 0, 0, tc_events=1)
frame("vxlan (8472) with a syn inside", udp4(8472, VXLAN(vni=1) / raw(syn4())), 0, 0, tc_events=1)
frame("vxlan with an ipv6 syn inside", udp4(4789, VXLAN(vni=1) / raw(eth() / IPv6(src=A6, dst=B6) / TCP(flags="S"))), 0, 0, tc_events=1)
frame("vxlan over ipv6 with a syn inside", eth() / IPv6(src=A6, dst=B6) / UDP(sport=50000, dport=4789) / VXLAN(vni=1) / raw(syn4()), 0, 0, tc_events=1)
ack4 = eth() / IP(src=A4, dst=B4) / TCP(sport=40000, dport=15012, flags="A") / Raw(b"x")
frame("vxlan with an ack inside (the encapsulated fast path)", udp4(8472, VXLAN(vni=1) / raw(ack4)), 0, 0)
frame("vxlan with an ipv6 ack inside", udp4(8472, VXLAN(vni=1) / raw(eth() / IPv6(src=A6, dst=B6) / TCP(flags="A"))), 0, 0)
frame("vxlan with a rst inside", udp4(8472, VXLAN(vni=1) / raw(eth() / IP(src=A4, dst=B4) / TCP(flags="R"))), 0, 0, tc_events=1)
frame("vxlan with an ipv6 rst inside", udp4(8472, VXLAN(vni=1) / raw(eth() / IPv6(src=A6, dst=B6) / TCP(flags="RA"))), 0, 0, tc_events=1)
frame("vxlan whose inner ethernet type lies", udp4(8472, VXLAN(vni=1) / raw(Ether(type=0x86DD) / IP(src=A4, dst=B4) / TCP(flags="A"))), 0, 0)
frame("vxlan without its vni flag", udp4(4789, VXLAN(flags=0, vni=1) / raw(syn4())), 0, 0)
frame("vxlan on a port that is no tunnel's", udp4(4790, VXLAN(vni=1) / raw(syn4())), 0, 0)
frame("vxlan with the inner ip header cut", raw(udp4(4789, VXLAN(vni=1) / raw(syn4())))[:-28], 0, 0)
frame("vxlan with the inner ethernet header cut", raw(udp4(4789, VXLAN(vni=1) / raw(syn4())))[:14 + 20 + 8 + 8 + 10], 0, 0)
frame("vxlan in a later fragment", eth() / IP(src=A4, dst=B4, proto=17, frag=100) / raw(UDP(sport=1, dport=4789) / VXLAN(vni=1) / raw(syn4())), 0, 0)
frame("geneve with garbage", udp4(6081, GENEVE(vni=2) / Raw(garbage(30, 6))), 0, 0)
frame("geneve with a syn inside", udp4(6081, GENEVE(vni=2, proto=0x6558) / raw(syn4())), 0, 0, tc_events=1)
frame("geneve with options and a syn inside", udp4(6081, GENEVE(vni=2, proto=0x6558, optionlen=2) / Raw(b"\x01\x02\x80\x01" + b"\x09" * 4) / raw(syn4())), 0, 0, tc_events=1)
frame("geneve with options longer than the packet", udp4(6081, GENEVE(vni=2, proto=0x6558, optionlen=63) / Raw(b"\x00" * 16)), 0, 0)
frame("geneve carrying ip directly", udp4(6081, GENEVE(vni=2, proto=0x0800) / raw(IP(src=A4, dst=B4) / TCP(flags="S"))), 0, 0, tc_events=1)
frame("ipip with garbage", eth() / IP(src=A4, dst=B4, proto=4) / Raw(garbage(30, 7)), 0, 0)
frame("ipip with a syn inside", eth() / IP(src=A4, dst=B4) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="S"), 0, 0, tc_events=1)
frame("ipip with an ack inside", eth() / IP(src=A4, dst=B4) / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(flags="A"), 0, 0)
frame("6in4 with an ipv6 syn inside", eth() / IP(src=A4, dst=B4) / IPv6(src=A6, dst=B6) / TCP(flags="S"), 0, 0, tc_events=1)
frame("6in4 with garbage", eth() / IP(src=A4, dst=B4, proto=41) / Raw(garbage(50, 8)), 0, 0)
frame("gre with garbage", eth() / IP(src=A4, dst=B4) / GRE() / Raw(garbage(30, 9)), 0, 0)
frame("udp cut after the ports", raw(udp4(53, Raw(b"")))[:38], 0, 0)
frame("udp header cut before the ports", eth() / IP(src=A4, dst=B4, proto=17) / Raw(b"\x01\x02"), 0, 1)

# TCP with every flag combination (FIN SYN RST PSH ACK URG ECE CWR): SYN or RST is an event.
for flags in range(256):
    pkt = eth() / IP(src=A4, dst=B4) / TCP(sport=40000, dport=15012, flags=flags, seq=flags)
    frame(f"tcp flags {flags:#04x}", pkt, 1 if flags & 0x06 else 0, 0)

for f in FRAMES:
    sys.stdout.write(json.dumps(f) + "\n")
