//! One conntrack entry read through ctnetlink (NETLINK_NETFILTER, subsystem CTNETLINK,
//! `IPCTNL_MSG_CT_GET` with a tuple: `include/uapi/linux/netfilter/nfnetlink_conntrack.h`): the
//! connection a NATed packet belongs to, in the namespace that did the NAT. A packet seen after
//! source NAT is the reply direction's destination; the entry's original direction is the
//! socket's own address and port, whatever port the SNAT picked (`--random`, `--to-source
//! IP:PORTS`, a clash).

use std::{io, net::IpAddr};

use crate::loader::netlink::{attrs, push_attr, RouteSocket};

const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_GET: u16 = 1;
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const NLA_F_NESTED: u16 = 0x8000;
const NLM_F_REQUEST: u16 = 1;
/// Ask for an acknowledgement: ctnetlink marks its one answer to a GET `NLM_F_MULTI` (as in a
/// dump) without a closing NLMSG_DONE; the ACK ends the exchange.
const NLM_F_ACK: u16 = 4;
/// No lookup waits longer than this for the kernel's answer.
const ANSWER_TIMEOUT: libc::timeval = libc::timeval { tv_sec: 0, tv_usec: 200_000 };
/// struct nfgenmsg: family, version, res_id (big endian).
const NFGENMSG_LEN: usize = 4;

/// One direction of a conntrack entry (ports in host order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuple {
    pub protocol: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
}

/// A ctnetlink socket in the namespace of the thread that opened it (it stays there).
pub struct Conntrack {
    socket: RouteSocket,
}

impl Conntrack {
    /// Opens a ctnetlink socket in the current thread's namespace.
    ///
    /// # Errors
    /// The socket cannot be opened (no CAP_NET_ADMIN, or nf_conntrack_netlink unavailable).
    pub fn open() -> io::Result<Self> {
        let socket = RouteSocket::netfilter()?;
        // SAFETY: setsockopt on a socket we own, with a valid timeval of the given size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&socket.as_fd()),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&ANSWER_TIMEOUT as *const libc::timeval).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { socket })
    }

    /// The original direction of the entry whose reply direction is `reply`; None when there
    /// is no such entry (or the addresses' families differ).
    ///
    /// # Errors
    /// The request fails otherwise (socket error, kernel refusal other than "no entry").
    pub fn original_of_reply(&mut self, reply: Tuple) -> io::Result<Option<Tuple>> {
        let Some((family, tuple)) = encode_tuple(&reply) else { return Ok(None) };
        let mut body = vec![family, 0, 0, 0];
        push_attr(&mut body, CTA_TUPLE_REPLY | NLA_F_NESTED, &tuple);
        let mut found = None;
        let kind = (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_GET;
        let answer = self.socket.exchange(kind, NLM_F_REQUEST | NLM_F_ACK, &body, |kind, payload| {
            if kind == (NFNL_SUBSYS_CTNETLINK << 8) | IPCTNL_MSG_CT_NEW {
                found = parse_original(payload);
            }
        });
        match answer {
            Ok(()) => Ok(found),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// (family, nested CTA_TUPLE_IP + CTA_TUPLE_PROTO) of `t`.
fn encode_tuple(t: &Tuple) -> Option<(u8, Vec<u8>)> {
    let mut ip = Vec::new();
    let family = match (t.src, t.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            push_attr(&mut ip, CTA_IP_V4_SRC, &s.octets());
            push_attr(&mut ip, CTA_IP_V4_DST, &d.octets());
            libc::AF_INET as u8
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            push_attr(&mut ip, CTA_IP_V6_SRC, &s.octets());
            push_attr(&mut ip, CTA_IP_V6_DST, &d.octets());
            libc::AF_INET6 as u8
        }
        _ => return None,
    };
    let mut proto = Vec::new();
    push_attr(&mut proto, CTA_PROTO_NUM, &[t.protocol]);
    push_attr(&mut proto, CTA_PROTO_SRC_PORT, &t.sport.to_be_bytes());
    push_attr(&mut proto, CTA_PROTO_DST_PORT, &t.dport.to_be_bytes());
    let mut tuple = Vec::new();
    push_attr(&mut tuple, CTA_TUPLE_IP | NLA_F_NESTED, &ip);
    push_attr(&mut tuple, CTA_TUPLE_PROTO | NLA_F_NESTED, &proto);
    Some((family, tuple))
}

/// The original tuple of an IPCTNL_MSG_CT_NEW payload (nfgenmsg + attributes).
fn parse_original(payload: &[u8]) -> Option<Tuple> {
    let (_, orig) = attrs(payload.get(NFGENMSG_LEN..)?).find(|(kind, _)| *kind == CTA_TUPLE_ORIG)?;
    parse_tuple(orig)
}

/// A tuple from its nested attributes.
fn parse_tuple(value: &[u8]) -> Option<Tuple> {
    let (mut src, mut dst, mut protocol, mut sport, mut dport) = (None, None, None, None, None);
    for (kind, inner) in attrs(value) {
        match kind {
            CTA_TUPLE_IP => {
                for (k, v) in attrs(inner) {
                    let addr = match v.len() {
                        4 => IpAddr::from(<[u8; 4]>::try_from(v).ok()?),
                        16 => IpAddr::from(<[u8; 16]>::try_from(v).ok()?),
                        _ => continue,
                    };
                    match k {
                        CTA_IP_V4_SRC | CTA_IP_V6_SRC => src = Some(addr),
                        CTA_IP_V4_DST | CTA_IP_V6_DST => dst = Some(addr),
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for (k, v) in attrs(inner) {
                    match k {
                        CTA_PROTO_NUM => protocol = v.first().copied(),
                        CTA_PROTO_SRC_PORT => sport = Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)),
                        CTA_PROTO_DST_PORT => dport = Some(u16::from_be_bytes(v.get(..2)?.try_into().ok()?)),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(Tuple { protocol: protocol?, src: src?, sport: sport?, dst: dst?, dport: dport? })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, sport: u16, dst: &str, dport: u16) -> Tuple {
        Tuple { protocol: 6, src: src.parse().expect("ip"), sport, dst: dst.parse().expect("ip"), dport }
    }

    #[test]
    fn a_tuple_encodes_as_ctnetlink_nests_it_and_parses_back() {
        for t in [
            tuple("10.244.1.12", 8080, "169.254.7.127", 20417),
            tuple("fd00:10:244:1::c", 8080, "fd16:9254:7127:1337:ffff:ffff:ffff:ffff", 33000),
        ] {
            let (family, encoded) = encode_tuple(&t).expect("same family");
            assert_eq!(i32::from(family), if t.src.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 });
            assert_eq!(parse_tuple(&encoded), Some(t));
            // The answer: nfgenmsg, then the original tuple among other attributes.
            let mut payload = vec![family, 0, 0, 0];
            push_attr(&mut payload, CTA_TUPLE_REPLY | NLA_F_NESTED, &encoded);
            let orig = tuple(if t.src.is_ipv4() { "10.244.1.1" } else { "fd00:10:244:1::1" }, 41000, "::", 8080);
            let orig = Tuple { dst: t.src, ..orig };
            push_attr(&mut payload, CTA_TUPLE_ORIG | NLA_F_NESTED, &encode_tuple(&orig).expect("enc").1);
            assert_eq!(parse_original(&payload), Some(orig));
        }
    }

    #[test]
    fn mixed_families_and_short_answers_give_nothing() {
        let mixed = tuple("10.244.1.12", 1, "fd00::1", 2);
        assert_eq!(encode_tuple(&mixed), None);
        assert_eq!(parse_original(&[2, 0, 0, 0]), None);
        assert_eq!(parse_original(&[]), None);
        let mut no_ports = Vec::new();
        push_attr(&mut no_ports, CTA_TUPLE_IP | NLA_F_NESTED, &[]);
        assert_eq!(parse_tuple(&no_ports), None);
    }
}
