//! Names of protocol values, as operators know them.

use observer_common::event::{PROTO_ICMP, PROTO_ICMPV6, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN};

/// Kernel TCP state names (include/net/tcp_states.h).
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        0 => "-",
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "UNKNOWN",
    }
}

/// What an ICMP (RFC 792/1812) or ICMPv6 (RFC 4443) error says, as an operator would name it.
pub fn icmp_meaning(protocol: u8, icmp_type: u8, code: u8) -> &'static str {
    match (protocol, icmp_type, code) {
        (PROTO_ICMP, 3, 0) => "net-unreachable",
        (PROTO_ICMP, 3, 1) => "host-unreachable",
        (PROTO_ICMP, 3, 2) => "protocol-unreachable",
        (PROTO_ICMP, 3, 3) => "port-unreachable",
        (PROTO_ICMP, 3, 4) => "fragmentation-needed",
        (PROTO_ICMP, 3, 9) | (PROTO_ICMP, 3, 10) => "net-or-host-prohibited",
        (PROTO_ICMP, 3, 13) => "admin-prohibited",
        (PROTO_ICMP, 3, _) => "unreachable",
        (PROTO_ICMPV6, 1, 0) => "no-route",
        (PROTO_ICMPV6, 1, 1) => "admin-prohibited",
        (PROTO_ICMPV6, 1, 3) => "address-unreachable",
        (PROTO_ICMPV6, 1, 4) => "port-unreachable",
        (PROTO_ICMPV6, 1, 5) => "source-policy-failed",
        (PROTO_ICMPV6, 1, 6) => "reject-route",
        (PROTO_ICMPV6, 1, _) => "unreachable",
        (PROTO_ICMPV6, 2, _) => "packet-too-big",
        _ => "icmp-error",
    }
}

/// `SYN`, `SYN|ACK`, `RST|ACK`...
pub fn tcp_flags(flags: u8) -> String {
    let names = [(TCP_SYN, "SYN"), (TCP_RST, "RST"), (TCP_FIN, "FIN"), (TCP_PSH, "PSH"), (TCP_ACK, "ACK")];
    let set: Vec<&str> = names.iter().filter(|(bit, _)| flags & bit != 0).map(|(_, n)| *n).collect();
    if set.is_empty() {
        "-".into()
    } else {
        set.join("|")
    }
}
