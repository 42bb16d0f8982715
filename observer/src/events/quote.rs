//! The flow an ICMP/ICMPv6 error quotes, read from a captured packet (a dropped packet's first
//! bytes, from its IP header on). An ICMP error carries the IP header and the first 8 bytes of
//! the packet it is about (RFC 792; ICMPv6: as much as fits, RFC 4443), enough for the ports.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use observer_common::event::{PROTO_ICMP, PROTO_ICMPV6};

use super::model::{Flow, Protocol};

/// ICMP error types (RFC 792): destination unreachable, source quench, redirect, time
/// exceeded, parameter problem.
const ICMP_ERRORS: [u8; 5] = [3, 4, 5, 11, 12];
/// ICMPv6 error types (RFC 4443): destination unreachable, packet too big, time exceeded,
/// parameter problem. (Informational messages, 128 and up, quote nothing.)
const ICMPV6_ERRORS: [u8; 4] = [1, 2, 3, 4];

/// The flow quoted by the ICMP/ICMPv6 error in `packet`, or None when `packet` is no ICMP
/// error (an echo, a neighbour solicitation...) or is cut short.
pub fn quoted_flow(packet: &[u8]) -> Option<Flow> {
    let (protocol, icmp) = match packet.first()? >> 4 {
        4 => {
            let ihl = usize::from(packet.first()? & 0x0f) * 4;
            (*packet.get(9)?, packet.get(ihl..)?)
        }
        6 => (*packet.get(6)?, packet.get(40..)?),
        _ => return None,
    };
    let is_error = match protocol {
        PROTO_ICMP => ICMP_ERRORS.contains(icmp.first()?),
        PROTO_ICMPV6 => ICMPV6_ERRORS.contains(icmp.first()?),
        _ => false,
    };
    if !is_error {
        return None;
    }
    inner_flow(icmp.get(8..)?)
}

/// ICMPv6 neighbour solicitation (RFC 4861 4.3).
const ICMPV6_NEIGHBOR_SOLICIT: u8 = 135;

/// The target address of the IPv6 neighbour solicitation in `packet` (the address whose
/// link-layer address is asked for, at bytes 8..24 of the ICMPv6 message, RFC 4861 4.3), or
/// None when `packet` is no solicitation (or is cut short). Solicitations carry no extension
/// headers in practice (RFC 4861 sends them as plain ICMPv6 with hop limit 255).
pub fn solicited_target(packet: &[u8]) -> Option<IpAddr> {
    if packet.first()? >> 4 != 6 || *packet.get(6)? != PROTO_ICMPV6 {
        return None;
    }
    let icmp = packet.get(40..)?;
    if *icmp.first()? != ICMPV6_NEIGHBOR_SOLICIT {
        return None;
    }
    let target: [u8; 16] = icmp.get(8..24)?.try_into().ok()?;
    Some(IpAddr::V6(Ipv6Addr::from(target)))
}

/// The 5-tuple of a quoted IP header followed by at least 4 bytes of its transport header.
fn inner_flow(ip: &[u8]) -> Option<Flow> {
    let (protocol, src, dst, transport) = match ip.first()? >> 4 {
        4 => {
            let ihl = usize::from(ip.first()? & 0x0f) * 4;
            let addr = |at: usize| -> Option<IpAddr> {
                let b: [u8; 4] = ip.get(at..at + 4)?.try_into().ok()?;
                Some(IpAddr::V4(Ipv4Addr::from(b)))
            };
            (*ip.get(9)?, addr(12)?, addr(16)?, ip.get(ihl..)?)
        }
        6 => {
            let addr = |at: usize| -> Option<IpAddr> {
                let b: [u8; 16] = ip.get(at..at + 16)?.try_into().ok()?;
                let a = Ipv6Addr::from(b);
                Some(a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4))
            };
            (*ip.get(6)?, addr(8)?, addr(24)?, ip.get(40..)?)
        }
        _ => return None,
    };
    let port = |at: usize| -> Option<u16> { Some(u16::from_be_bytes([*transport.get(at)?, *transport.get(at + 1)?])) };
    Some(Flow { protocol: Protocol(protocol), src, sport: port(0)?, dst, dport: port(2)? })
}

#[cfg(test)]
mod tests {
    use observer_common::event::PROTO_TCP;

    use super::*;

    /// IPv4 header (20 bytes) with `proto`, from `src` to `dst`.
    fn v4(proto: u8, src: [u8; 4], dst: [u8; 4]) -> Vec<u8> {
        let mut h = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, proto, 0, 0];
        h.extend(src);
        h.extend(dst);
        h
    }

    fn v6(next: u8, src: &str, dst: &str) -> Vec<u8> {
        let mut h = vec![0x60, 0, 0, 0, 0, 0, next, 64];
        h.extend(src.parse::<Ipv6Addr>().expect("ip").octets());
        h.extend(dst.parse::<Ipv6Addr>().expect("ip").octets());
        h
    }

    fn tcp_head(sport: u16, dport: u16) -> Vec<u8> {
        let mut t = sport.to_be_bytes().to_vec();
        t.extend(dport.to_be_bytes());
        t.extend([0, 0, 0, 1]);
        t
    }

    #[test]
    fn an_admin_prohibited_error_quotes_the_rejected_syn() {
        let mut p = v4(PROTO_ICMP, [172, 31, 1, 1], [10, 244, 1, 10]);
        p.extend([3, 13, 0, 0, 0, 0, 0, 0]);
        p.extend(v4(PROTO_TCP, [10, 244, 1, 10], [10, 244, 2, 11]));
        p.extend(tcp_head(40000, 9080));
        let q = quoted_flow(&p).expect("quote");
        assert_eq!(q.protocol, Protocol(PROTO_TCP));
        assert_eq!(
            (q.src, q.sport, q.dst, q.dport),
            ("10.244.1.10".parse().expect("ip"), 40000, "10.244.2.11".parse().expect("ip"), 9080)
        );
    }

    #[test]
    fn a_packet_too_big_quotes_the_ipv6_segment() {
        let mut p = v6(PROTO_ICMPV6, "fd00:172:31:1::1", "fd00:10:244:2::a");
        p.extend([2, 0, 0, 0, 0, 0, 0x05, 0x00]);
        p.extend(v6(PROTO_TCP, "fd00:10:244:2::a", "fd00:10:244:1::14"));
        p.extend(tcp_head(15012, 41000));
        let q = quoted_flow(&p).expect("quote");
        assert_eq!((q.sport, q.dport, q.protocol), (15012, 41000, Protocol(PROTO_TCP)));
    }

    #[test]
    fn a_neighbour_solicitation_names_its_target_and_nothing_else_does() {
        let mut ns = v6(PROTO_ICMPV6, "fe80::1", "ff02::1:ff00:b");
        ns.extend([135, 0, 0, 0, 0, 0, 0, 0]);
        ns.extend("fd00:10:244:1::b".parse::<Ipv6Addr>().expect("ip").octets());
        assert_eq!(solicited_target(&ns), Some("fd00:10:244:1::b".parse().expect("ip")));
        // Cut short before the whole target; an advertisement (136); an ICMP echo over IPv4.
        assert_eq!(solicited_target(&ns[..60]), None);
        let mut na = ns.clone();
        na[40] = 136;
        assert_eq!(solicited_target(&na), None);
        let mut echo = v4(PROTO_ICMP, [10, 244, 1, 1], [10, 244, 1, 10]);
        echo.extend([8, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(solicited_target(&echo), None);
        assert_eq!(solicited_target(&[]), None);
    }

    #[test]
    fn echoes_solicitations_and_short_captures_quote_nothing() {
        let mut echo = v4(PROTO_ICMP, [10, 244, 1, 1], [10, 244, 1, 10]);
        echo.extend([8, 0, 0, 0, 0, 1, 0, 1]);
        assert_eq!(quoted_flow(&echo), None);
        let mut ns = v6(PROTO_ICMPV6, "fd00:10:244:1::1", "ff02::1:ff00:a");
        ns.extend([135, 0, 0, 0, 0, 0, 0, 0]);
        ns.extend("fd00:10:244:1::a".parse::<Ipv6Addr>().expect("ip").octets());
        assert_eq!(quoted_flow(&ns), None);
        let mut cut = v4(PROTO_ICMP, [172, 31, 1, 1], [10, 244, 1, 10]);
        cut.extend([3, 13, 0, 0, 0, 0, 0, 0, 0x45]);
        assert_eq!(quoted_flow(&cut), None);
        assert_eq!(quoted_flow(&[]), None);
        let mut tcp = v4(PROTO_TCP, [10, 244, 1, 10], [10, 244, 2, 11]);
        tcp.extend(tcp_head(1, 2));
        assert_eq!(quoted_flow(&tcp), None);
    }
}
