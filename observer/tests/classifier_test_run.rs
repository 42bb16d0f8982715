//! BPF_PROG_TEST_RUN: crafted frames fed to the TC classifier without any interface; the
//! emitted events' fields are asserted exactly (or that nothing is emitted).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::net::{Ipv4Addr, Ipv6Addr};

use aya::{
    programs::{CgroupSkb, SchedClassifier, TestRun, TestRunOptions},
    Ebpf,
};
use observer::{
    events::ringbuf::{read_counters, EventSource},
    loader::programs::{program_mut, CGROUP_INGRESS, TC_EGRESS, TC_INGRESS},
};
use observer_common::{
    decode::Event,
    event::{FAMILY_IPV4, FAMILY_IPV6, HOOK_TC_INGRESS, PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN},
    FlowTuple,
};
use support::require_root;

const TC_ACT_PIPE: u32 = 3;

struct Harness {
    ebpf: Ebpf,
    events: EventSource,
}

impl Harness {
    fn new() -> Self {
        let (mut ebpf, _info) = observer::loader::load().expect("load programs");
        let events = EventSource::new(&mut ebpf).expect("ring buffer");
        Self { ebpf, events }
    }

    /// Runs the ingress classifier on `frame`; returns the events it emitted.
    fn run(&mut self, frame: &[u8]) -> Vec<Event> {
        self.run_program(TC_INGRESS, frame)
    }

    fn run_program(&mut self, name: &'static str, frame: &[u8]) -> Vec<Event> {
        let program: &mut SchedClassifier = program_mut(&mut self.ebpf, name).expect("program");
        let result = program
            .test_run(TestRunOptions { data_in: Some(frame), repeat: 1, ..Default::default() })
            .unwrap_or_else(|e| panic!("test run of a {}-byte frame: {e:?}", frame.len()));
        assert_eq!(result.return_value, TC_ACT_PIPE, "the classifier must always let the packet continue");
        let mut out = Vec::new();
        self.events.poll(0, None, |e| out.push(e)).expect("poll");
        out
    }

    fn counter(&self, name: &str) -> u64 {
        read_counters(&self.ebpf)
            .expect("counters")
            .named()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .expect("counter")
    }
}

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn tcp(sport: u16, dport: u16, seq: u32, flags: u8) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&0u32.to_be_bytes());
    t.extend_from_slice(&[0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t
}

/// IPv4 header with `options` (padded to 4 bytes) and fragment field `frag`.
fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, options: &[u8], frag: u16, payload: &[u8]) -> Vec<u8> {
    let opt_len = options.len().div_ceil(4) * 4;
    let ihl = 5 + opt_len / 4;
    let total = (ihl * 4 + payload.len()) as u16;
    let mut h = vec![0x40 | ihl as u8, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(options);
    h.resize(ihl * 4, 0);
    h.extend_from_slice(payload);
    h
}

/// IPv6 header; `ext` is a chain of (next header value of this ext, bytes) already encoded.
fn ipv6(src: Ipv6Addr, dst: Ipv6Addr, first_next: u8, rest: &[u8]) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&(rest.len() as u16).to_be_bytes());
    h.extend_from_slice(&[first_next, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend_from_slice(rest);
    h
}

fn v4_flow(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, protocol: u8) -> FlowTuple {
    let mut f = FlowTuple { family: FAMILY_IPV4, protocol, sport, dport, ..Default::default() };
    f.saddr[..4].copy_from_slice(&src);
    f.daddr[..4].copy_from_slice(&dst);
    f
}

fn v6_flow(src: Ipv6Addr, sport: u16, dst: Ipv6Addr, dport: u16, protocol: u8) -> FlowTuple {
    FlowTuple { family: FAMILY_IPV6, protocol, sport, dport, saddr: src.octets(), daddr: dst.octets(), _pad: [0; 2] }
}

const POD_A: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 10);
const ISTIOD: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 10);

fn only_packet(events: &[Event]) -> observer_common::PacketEvent {
    match events {
        [Event::Packet(p)] => *p,
        other => panic!("expected exactly one packet event, got {other:?}"),
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn ipv4_syn_with_and_without_options() {
    require_root();
    let mut h = Harness::new();
    let syn = tcp(40000, 15012, 0xdead_beef, TCP_SYN);
    let p = only_packet(&h.run(&eth(0x0800, &ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &syn))));
    assert_eq!(p.flow, v4_flow([10, 244, 1, 10], 40000, [10, 244, 2, 10], 15012, PROTO_TCP));
    assert_eq!((p.tcp_flags, p.tcp_seq, p.hook, p.ifindex), (TCP_SYN, 0xdead_beef, HOOK_TC_INGRESS, 1));

    // 12 bytes of IP options (record-route style): the TCP header moves, the ports must not.
    let options = [7u8, 11, 4, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let p = only_packet(&h.run(&eth(0x0800, &ipv4(POD_A, ISTIOD, PROTO_TCP, &options, 0x4000, &syn))));
    assert_eq!(p.flow, v4_flow([10, 244, 1, 10], 40000, [10, 244, 2, 10], 15012, PROTO_TCP));
    assert_eq!(p.tcp_seq, 0xdead_beef);

    // The egress program reports the same packet with the egress hook.
    let events = h.run_program(
        TC_EGRESS,
        &eth(0x0800, &ipv4(ISTIOD, POD_A, PROTO_TCP, &[], 0, &tcp(15012, 40000, 7, TCP_SYN | TCP_ACK))),
    );
    let p = only_packet(&events);
    assert_eq!(p.hook, observer_common::event::HOOK_TC_EGRESS);
    assert_eq!(p.tcp_flags, TCP_SYN | TCP_ACK);
    assert_eq!(p.flow.sport, 15012);
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn ipv6_with_extension_headers_and_fragments() {
    require_root();
    let mut h = Harness::new();
    let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00:10:244:1::a".parse().unwrap(), "fd00:10:244:2::a".parse().unwrap());
    let synack = tcp(15012, 41000, 99, TCP_SYN | TCP_ACK);
    // Hop-by-hop (8 bytes) -> destination options (16 bytes) -> TCP.
    let mut rest = vec![60, 0, 1, 4, 0, 0, 0, 0];
    rest.extend_from_slice(&[PROTO_TCP, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    rest.extend_from_slice(&synack);
    let p = only_packet(&h.run(&eth(0x86DD, &ipv6(b, a, 0, &rest))));
    assert_eq!(p.flow, v6_flow(b, 15012, a, 41000, PROTO_TCP));
    assert_eq!(p.tcp_flags, TCP_SYN | TCP_ACK);

    // First fragment (offset 0, more-fragments) carries the TCP header: reported.
    let mut first = vec![PROTO_TCP, 0, 0x00, 0x01, 0, 0, 0, 42];
    first.extend_from_slice(&tcp(41000, 15012, 5, TCP_SYN));
    let p = only_packet(&h.run(&eth(0x86DD, &ipv6(a, b, 44, &first))));
    assert_eq!(p.flow, v6_flow(a, 41000, b, 15012, PROTO_TCP));

    // A later fragment (offset 8 octets) has no TCP header: nothing, even if its bytes look like one.
    let mut later = vec![PROTO_TCP, 0, 0x00, 0x40, 0, 0, 0, 42];
    later.extend_from_slice(&tcp(41000, 15012, 5, TCP_SYN));
    assert!(h.run(&eth(0x86DD, &ipv6(a, b, 44, &later))).is_empty());
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn ipv4_later_fragments_non_handshake_and_udp_emit_nothing() {
    require_root();
    let mut h = Harness::new();
    let syn = tcp(40000, 15012, 1, TCP_SYN);
    assert!(
        h.run(&eth(0x0800, &ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0x2001, &syn))).is_empty(),
        "offset 8: later fragment"
    );
    assert!(h.run(&eth(0x0800, &ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &tcp(40000, 15012, 1, TCP_ACK)))).is_empty());
    assert!(h.run(&eth(0x0800, &ipv4(POD_A, ISTIOD, PROTO_UDP, &[], 0, &[0x9c, 0x40, 0, 53, 0, 8, 0, 0]))).is_empty());
    assert!(h.run(&eth(0x0806, &[0u8; 28])).is_empty(), "ARP");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn truncated_and_garbage_packets_emit_nothing_and_are_counted() {
    require_root();
    let mut h = Harness::new();
    let full = ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &tcp(40000, 15012, 1, TCP_SYN));
    // An IPv4 header and no transport header at all. (Frames shorter than an IP header are
    // refused by the kernel's test-run itself with EINVAL, so they cannot be fed here.)
    assert!(h.run(&eth(0x0800, &full[..20])).is_empty());
    // TCP header cut after the ports: flags unreadable.
    assert!(h.run(&eth(0x0800, &full[..24])).is_empty());
    // IHL claims 60 bytes of header that are not there.
    let mut lying = full.clone();
    lying[0] = 0x4f;
    assert!(h.run(&eth(0x0800, &lying[..30])).is_empty());
    // Version nibble 5 under an IPv4 ethertype, IHL below 5, random bytes.
    let mut bad_version = full.clone();
    bad_version[0] = 0x55;
    assert!(h.run(&eth(0x0800, &bad_version)).is_empty());
    let mut short_ihl = full.clone();
    short_ihl[0] = 0x43;
    assert!(h.run(&eth(0x0800, &short_ihl)).is_empty());
    let mut seed = 0x1234_5678u32;
    for len in [40usize, 41, 47, 60, 80, 120] {
        let junk: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 17;
                seed ^= seed << 5;
                seed as u8
            })
            .collect();
        assert!(h.run(&eth(0x86DD, &junk)).is_empty(), "junk of {len} bytes");
    }
    assert!(h.counter("tc_parse_errors") >= 5, "parse errors counted: {}", h.counter("tc_parse_errors"));
}

/// Bytes after the IP packet's own end (Ethernet padding, a lying frame) are not its transport
/// header: a SYN there is not reported, and each such frame counts one parse error exactly.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn bytes_beyond_the_ip_length_are_not_a_header() {
    require_root();
    let mut h = Harness::new();
    let syn = tcp(40000, 15012, 1, TCP_SYN);
    let errors = |h: &Harness| h.counter("tc_parse_errors");
    // IPv4 total length 20 (no transport), followed by what looks like a SYN.
    let mut padded = ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &[]);
    padded.extend_from_slice(&syn);
    let before = errors(&h);
    assert!(h.run(&eth(0x0800, &padded)).is_empty(), "SYN-looking padding reported");
    assert_eq!(errors(&h) - before, 1);
    // Total length 24: the ports are in, the flags are not.
    let mut short = ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &syn[..4]);
    short.extend_from_slice(&syn[4..]);
    let before = errors(&h);
    assert!(h.run(&eth(0x0800, &short)).is_empty());
    assert_eq!(errors(&h) - before, 1);
    // Total length below the header length: malformed.
    let mut tiny = ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &syn);
    tiny[2..4].copy_from_slice(&16u16.to_be_bytes());
    let before = errors(&h);
    assert!(h.run(&eth(0x0800, &tiny)).is_empty());
    assert_eq!(errors(&h) - before, 1);
    // IPv6 payload length 4: the ports only.
    let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00:10:244:1::a".parse().unwrap(), "fd00:10:244:2::a".parse().unwrap());
    let mut v6 = ipv6(a, b, PROTO_TCP, &syn);
    v6[4..6].copy_from_slice(&4u16.to_be_bytes());
    let before = errors(&h);
    assert!(h.run(&eth(0x86DD, &v6)).is_empty());
    assert_eq!(errors(&h) - before, 1);
    // The same frames with honest lengths are reported (the bound is not too tight).
    let p = only_packet(&h.run(&eth(0x0800, &ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &syn))));
    assert_eq!(p.flow, v4_flow([10, 244, 1, 10], 40000, [10, 244, 2, 10], 15012, PROTO_TCP));
    let p = only_packet(&h.run(&eth(0x86DD, &ipv6(a, b, PROTO_TCP, &syn))));
    assert_eq!(p.flow, v6_flow(a, 40000, b, 15012, PROTO_TCP));
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn icmp_errors_are_tied_to_the_flow_they_quote() {
    require_root();
    let mut h = Harness::new();
    let node = Ipv4Addr::new(10, 244, 1, 1);
    // The SYN that was rejected, as quoted: IP header + the first 8 bytes of TCP.
    let quoted = ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0x4000, &tcp(40000, 15017, 9, TCP_SYN)[..8]);
    let mut icmp = vec![3, 13, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let events = h.run(&eth(0x0800, &ipv4(node, POD_A, 1, &[], 0, &icmp)));
    let [Event::IcmpError(e)] = events.as_slice() else { panic!("expected one ICMP error event: {events:?}") };
    assert_eq!((e.icmp_type, e.icmp_code, e.quoted_valid, e.mtu), (3, 13, 1, 0));
    assert_eq!(e.flow, v4_flow([10, 244, 1, 1], 0, [10, 244, 1, 10], 0, 1));
    assert_eq!(e.quoted, v4_flow([10, 244, 1, 10], 40000, [10, 244, 2, 10], 15017, PROTO_TCP));

    // Fragmentation needed carries the next-hop MTU.
    let mut frag_needed = vec![3, 4, 0, 0, 0, 0, 0x05, 0x78];
    frag_needed.extend_from_slice(&quoted);
    let events = h.run(&eth(0x0800, &ipv4(node, POD_A, 1, &[], 0, &frag_needed)));
    let [Event::IcmpError(e)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((e.icmp_code, e.mtu), (4, 1400));

    // ICMPv6 packet-too-big quoting an IPv6 TCP segment.
    let (a, b): (Ipv6Addr, Ipv6Addr) = ("fd00::a".parse().unwrap(), "fd00::b".parse().unwrap());
    let inner = ipv6(a, b, PROTO_TCP, &tcp(42000, 9080, 1, TCP_ACK)[..8]);
    let mut ptb = vec![2, 0, 0, 0, 0, 0, 0x05, 0x00];
    ptb.extend_from_slice(&inner);
    let router: Ipv6Addr = "fd00::1".parse().unwrap();
    let events = h.run(&eth(0x86DD, &ipv6(router, a, 58, &ptb)));
    let [Event::IcmpError(e)] = events.as_slice() else { panic!("{events:?}") };
    assert_eq!((e.icmp_type, e.mtu, e.quoted_valid), (2, 1280, 1));
    assert_eq!(e.quoted, v6_flow(a, 42000, b, 9080, PROTO_TCP));

    // Echo requests are not errors.
    assert!(h.run(&eth(0x0800, &ipv4(node, POD_A, 1, &[], 0, &[8, 0, 0, 0, 0, 1, 0, 1]))).is_empty());
}

/// No payload leaves the kernel unless asked: an ICMP error quoting a whole segment with data
/// carries its headers only (ICMP 8 + quoted IP 20 + 8 bytes = 56 after the 20-byte IP header);
/// with the packet capture on (`trace --pcap`) it carries at most `CAPTURE_BYTES`.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn captured_bytes_stop_at_the_headers_unless_the_packet_is_asked_for() {
    use observer::loader::filter::KernelFilter;
    use observer_common::event::CAPTURE_BYTES;
    require_root();
    let mut h = Harness::new();
    let mut segment = tcp(40000, 15017, 9, TCP_SYN | TCP_ACK);
    segment.extend_from_slice(&[0xAB; 200]);
    let quoted = ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0x4000, &segment);
    let mut icmp = vec![3, 3, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&quoted);
    let frame = eth(0x0800, &ipv4(Ipv4Addr::new(10, 244, 1, 1), POD_A, 1, &[], 0, &icmp));
    let captured = |h: &mut Harness| {
        let events = h.run(&frame);
        let [Event::IcmpError(e)] = events.as_slice() else { panic!("expected one ICMP error event: {events:?}") };
        (e.packet_len as usize, e.packet)
    };
    let (len, bytes) = captured(&mut h);
    assert_eq!(len, 20 + 8 + 20 + 8, "headers only by default");
    assert!(bytes[len..].iter().all(|b| *b == 0), "nothing after the headers");
    KernelFilter { capture_payload: true, ..Default::default() }.apply(&mut h.ebpf).expect("filter");
    let (len, bytes) = captured(&mut h);
    assert_eq!(len, CAPTURE_BYTES, "the pcap bound");
    assert_eq!(bytes[CAPTURE_BYTES - 1], 0xAB, "payload copied when asked");
    KernelFilter::default().apply(&mut h.ebpf).expect("filter");
    assert_eq!(captured(&mut h).0, 56, "and headers only again");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn cgroup_skb_parses_packets_without_a_link_header() {
    require_root();
    let mut h = Harness::new();
    // The test-run consumes the Ethernet header for non-TC programs: the program sees the packet
    // starting at its IP header, as cgroup_skb does on a real socket.
    let packet = eth(0x0800, &ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &tcp(40000, 15012, 3, TCP_SYN)));
    let program: &mut CgroupSkb = program_mut(&mut h.ebpf, CGROUP_INGRESS).expect("program");
    let result =
        program.test_run(TestRunOptions { data_in: Some(&packet), repeat: 1, ..Default::default() }).expect("test run");
    assert_eq!(result.return_value, 1, "cgroup_skb must always allow");
    let mut events = Vec::new();
    h.events.poll(0, None, |e| events.push(e)).expect("poll");
    let p = only_packet(&events);
    assert_eq!(p.hook, observer_common::event::HOOK_CGROUP_INGRESS);
    assert_eq!(p.flow, v4_flow([10, 244, 1, 10], 40000, [10, 244, 2, 10], 15012, PROTO_TCP));
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn the_kernel_filter_selects_by_port_and_cidr() {
    use observer::loader::filter::KernelFilter;
    require_root();
    let svc = Ipv4Addr::new(10, 96, 0, 10);
    let syn_to =
        |dst: Ipv4Addr, port: u16| eth(0x0800, &ipv4(POD_A, dst, PROTO_TCP, &[], 0, &tcp(40000, port, 1, TCP_SYN)));

    let mut h = Harness::new();
    KernelFilter { ports: vec![15012], cidrs: vec![], either: false, capture_payload: false }
        .apply(&mut h.ebpf)
        .expect("filter");
    assert_eq!(only_packet(&h.run(&syn_to(ISTIOD, 15012))).flow.dport, 15012);
    assert!(h.run(&syn_to(ISTIOD, 9080)).is_empty());
    // The source port counts too (replies from 15012).
    let reply = eth(0x0800, &ipv4(ISTIOD, POD_A, PROTO_TCP, &[], 0, &tcp(15012, 40000, 1, TCP_SYN | TCP_ACK)));
    assert_eq!(only_packet(&h.run(&reply)).flow.sport, 15012);
    assert_eq!(h.counter("filtered_out"), 1);

    let mut h = Harness::new();
    let pods = "10.244.2.0/24".parse().expect("cidr");
    KernelFilter { ports: vec![], cidrs: vec![pods], either: false, capture_payload: false }
        .apply(&mut h.ebpf)
        .expect("filter");
    assert_eq!(only_packet(&h.run(&syn_to(ISTIOD, 9080))).flow.dport, 9080);
    assert!(h.run(&syn_to(svc, 9080)).is_empty(), "10.96.0.10 is outside 10.244.2.0/24");

    // Both: port AND prefix must match; with `either`, one is enough.
    let mut h = Harness::new();
    KernelFilter { ports: vec![15012], cidrs: vec![pods], either: false, capture_payload: false }
        .apply(&mut h.ebpf)
        .expect("filter");
    assert!(h.run(&syn_to(svc, 15012)).is_empty());
    assert!(h.run(&syn_to(ISTIOD, 9080)).is_empty());
    assert_eq!(h.run(&syn_to(ISTIOD, 15012)).len(), 1);
    let mut h = Harness::new();
    KernelFilter { ports: vec![15012], cidrs: vec![pods], either: true, capture_payload: false }
        .apply(&mut h.ebpf)
        .expect("filter");
    assert_eq!(h.run(&syn_to(svc, 15012)).len(), 1);
    assert_eq!(h.run(&syn_to(ISTIOD, 9080)).len(), 1);
    assert!(h.run(&syn_to(svc, 9080)).is_empty());

    // ICMP errors are filtered on the flow they quote.
    let mut h = Harness::new();
    KernelFilter { ports: vec![15017], cidrs: vec![], either: false, capture_payload: false }
        .apply(&mut h.ebpf)
        .expect("filter");
    let icmp_about = |port: u16| {
        let quoted = ipv4(POD_A, ISTIOD, PROTO_TCP, &[], 0, &tcp(40000, port, 9, TCP_SYN)[..8]);
        let mut icmp = vec![3, 13, 0, 0, 0, 0, 0, 0];
        icmp.extend_from_slice(&quoted);
        eth(0x0800, &ipv4(Ipv4Addr::new(10, 244, 1, 1), POD_A, 1, &[], 0, &icmp))
    };
    assert_eq!(h.run(&icmp_about(15017)).len(), 1);
    assert!(h.run(&icmp_about(15012)).is_empty());
}
