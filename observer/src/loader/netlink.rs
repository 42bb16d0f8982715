//! A small rtnetlink client: list links (with veth peers' namespace ids), map a namespace file
//! to its id, and follow links appearing and disappearing. Sockets belong to the network
//! namespace of the thread that creates them.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd},
};

const NETLINK_ROUTE: i32 = 0;
const RTMGRP_LINK: u32 = 1;

const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWROUTE: u16 = 24;
const RTM_GETROUTE: u16 = 26;
const RTM_NEWADDR: u16 = 20;
const RTM_GETADDR: u16 = 22;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const RTM_NEWNSID: u16 = 88;
const RTM_GETNSID: u16 = 90;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_DUMP: u16 = 0x300;

const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_LINK: u16 = 5;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_LINK_NETNSID: u16 = 37;
const RTA_DST: u16 = 1;
const RTA_OIF: u16 = 4;
const RTN_LOCAL: u8 = 2;
const RTN_UNICAST: u8 = 1;
const RTA_GATEWAY: u16 = 5;
const RTA_MULTIPATH: u16 = 9;
const RTA_TABLE: u16 = 15;
const RTA_VIA: u16 = 18;
const RT_TABLE_MAIN: u32 = 254;
const RTMSG_LEN: usize = 12;
const NETNSA_NSID: u16 = 1;
const NETNSA_FD: u16 = 3;

const NLMSG_HDRLEN: usize = 16;
const IFINFOMSG_LEN: usize = 16;

/// One network interface as rtnetlink describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `veth`, `bridge`, ... (IFLA_INFO_KIND), when the kernel says.
    pub kind: Option<String>,
    /// For a veth: the peer's ifindex (in the peer's namespace).
    pub peer_index: Option<u32>,
    /// For a link whose peer lives in another namespace: that namespace's id here.
    pub link_netnsid: Option<i32>,
    /// The interface's MTU (IFLA_MTU), in bytes.
    pub mtu: Option<u32>,
    /// The bridge (or bond) this link is a port of (IFLA_MASTER).
    pub master: Option<u32>,
    /// Hardware type (`ifi_type`, ARPHRD_*: 1 ether, 772 loopback, 65534 none for tun/wireguard).
    pub hw_type: u16,
}

/// A change reported by the link monitor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkChange {
    New(Link),
    Deleted { index: u32, name: String },
}

/// What a link monitor read: the changes, and whether the kernel dropped notifications since
/// the last read (ENOBUFS: the socket's buffer overflowed). After an overflow the changes are
/// incomplete: the caller relists the links.
#[derive(Debug, Default)]
pub struct LinkChanges {
    pub changes: Vec<LinkChange>,
    pub overflowed: bool,
}

/// Receive buffer asked for the link monitor: a burst of new interfaces (a node booting, a
/// deployment scaling) queues ~1-2 KiB of notifications per link while attaches run.
const MONITOR_RCVBUF: libc::c_int = 4 << 20;

/// Environment variable overriding [`MONITOR_RCVBUF`] (bytes): a larger buffer for nodes with
/// bigger bursts; a tiny one makes overflows (and the relisting that follows) easy to test.
pub const MONITOR_RCVBUF_ENV: &str = "OBSERVER_LINK_MONITOR_RCVBUF";

/// A NETLINK_ROUTE socket in the namespace of the thread that opened it.
pub struct RouteSocket {
    fd: OwnedFd,
    seq: u32,
}

impl RouteSocket {
    /// A request/response socket.
    pub fn open() -> io::Result<Self> {
        Self::open_with_groups(0)
    }

    /// A non-blocking socket subscribed to link notifications (RTMGRP_LINK), with a receive
    /// buffer of [`MONITOR_RCVBUF`] or [`MONITOR_RCVBUF_ENV`] (SO_RCVBUFFORCE, as root; else
    /// whatever SO_RCVBUF allows).
    /// Overflows still happen in larger bursts: [`Self::changes`] reports them.
    pub fn link_monitor() -> io::Result<Self> {
        let socket = Self::open_with_groups(RTMGRP_LINK)?;
        let fd = socket.fd.as_raw_fd();
        let size = std::env::var(MONITOR_RCVBUF_ENV).ok().and_then(|v| v.parse().ok()).unwrap_or(MONITOR_RCVBUF);
        let len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: fcntl and setsockopt on a socket we own, with a c_int option value.
        unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let value = (&size as *const libc::c_int).cast();
            if libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, value, len) != 0 {
                libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVBUF, value, len);
            }
        }
        Ok(socket)
    }

    /// A request/response NETLINK_NETFILTER socket (ctnetlink), for
    /// [`crate::netfilter::conntrack`].
    pub fn netfilter() -> io::Result<Self> {
        Self::open_protocol(libc::NETLINK_NETFILTER, 0)
    }

    /// Sends one request (`kind`, `flags`, `body` after the netlink header) and hands each
    /// answer's (type, payload) to `each`; an error answer is an `io::Error` (e.g. ENOENT).
    pub fn exchange(&mut self, kind: u16, flags: u16, body: &[u8], each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let seq = self.send(kind, flags, body)?;
        self.receive(seq, each)
    }

    fn open_with_groups(groups: u32) -> io::Result<Self> {
        Self::open_protocol(NETLINK_ROUTE, groups)
    }

    fn open_protocol(protocol: i32, groups: u32) -> io::Result<Self> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let raw = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, protocol) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor we own.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: all-zero is a valid sockaddr_nl; we set family and groups.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = groups;
        // SAFETY: `addr` is a valid sockaddr_nl of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_nl).cast(),
                size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self { fd, seq: 1 })
    }

    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Every link of the namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let mut body = vec![0u8; IFINFOMSG_LEN];
        body[0] = libc::AF_UNSPEC as u8;
        let seq = self.send(RTM_GETLINK, NLM_F_REQUEST | NLM_F_DUMP, &body)?;
        let mut links = Vec::new();
        self.receive(seq, |kind, payload| {
            if kind == RTM_NEWLINK {
                links.extend(parse_link(payload));
            }
        })?;
        Ok(links)
    }

    /// Interfaces that carry a default route (IPv4 or IPv6): the node's uplinks.
    pub fn default_route_interfaces(&mut self) -> io::Result<Vec<u32>> {
        let mut body = vec![0u8; RTMSG_LEN];
        body[0] = libc::AF_UNSPEC as u8;
        let seq = self.send(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &body)?;
        let mut out = Vec::new();
        self.receive(seq, |kind, payload| {
            if kind == RTM_NEWROUTE {
                out.extend(default_route_oif(payload));
            }
        })?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Whether the namespace's main table routes a specific prefix (not the default route) via
    /// a gateway: what a router or a node holds, and a pod does not (a pod has its connected
    /// prefix or a host route to its gateway, and a default route via it).
    pub fn has_specific_gateway_route(&mut self) -> io::Result<bool> {
        let mut body = vec![0u8; RTMSG_LEN];
        body[0] = libc::AF_UNSPEC as u8;
        let seq = self.send(RTM_GETROUTE, NLM_F_REQUEST | NLM_F_DUMP, &body)?;
        let mut found = false;
        self.receive(seq, |kind, payload| {
            found |= kind == RTM_NEWROUTE && is_specific_gateway_route(payload);
        })?;
        Ok(found)
    }

    /// Every address of the namespace with its interface index (IFA_LOCAL, else IFA_ADDRESS).
    pub fn addresses(&mut self) -> io::Result<Vec<(u32, std::net::IpAddr)>> {
        let mut body = vec![0u8; 8]; // struct ifaddrmsg
        body[0] = libc::AF_UNSPEC as u8;
        let seq = self.send(RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, &body)?;
        let mut out = Vec::new();
        self.receive(seq, |kind, payload| {
            if kind == RTM_NEWADDR {
                out.extend(parse_address(payload));
            }
        })?;
        Ok(out)
    }

    /// How this namespace routes a packet to `dst`: whether `dst` is one of its own addresses,
    /// and the output interface. `None` when it has no route (unreachable, prohibited).
    pub fn route_get(&mut self, dst: std::net::IpAddr) -> io::Result<Option<RouteLookup>> {
        let (family, bytes, bits) = match dst {
            std::net::IpAddr::V4(a) => (libc::AF_INET, a.octets().to_vec(), 32u8),
            std::net::IpAddr::V6(a) => (libc::AF_INET6, a.octets().to_vec(), 128u8),
        };
        let mut body = vec![0u8; RTMSG_LEN];
        body[0] = family as u8;
        body[1] = bits;
        push_attr(&mut body, RTA_DST, &bytes);
        let seq = self.send(RTM_GETROUTE, NLM_F_REQUEST, &body)?;
        let mut found = None;
        let answer = self.receive(seq, |kind, payload| {
            if kind == RTM_NEWROUTE {
                found = parse_route_lookup(payload);
            }
        });
        match answer {
            Ok(()) => Ok(found),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH | libc::EACCES | libc::EINVAL)
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// The id this namespace gives to the namespace behind `netns` (None if it has none).
    pub fn nsid_of(&mut self, netns: BorrowedFd<'_>) -> io::Result<Option<i32>> {
        let mut body = vec![0u8; 4]; // struct rtgenmsg, aligned
        body[0] = libc::AF_UNSPEC as u8;
        push_attr(&mut body, NETNSA_FD, &(netns.as_raw_fd() as u32).to_ne_bytes());
        let seq = self.send(RTM_GETNSID, NLM_F_REQUEST, &body)?;
        let mut nsid = None;
        self.receive(seq, |kind, payload| {
            if kind == RTM_NEWNSID {
                nsid = attrs(payload.get(4..).unwrap_or_default())
                    .find(|(t, _)| *t == NETNSA_NSID)
                    .and_then(|(_, v)| Some(i32::from_ne_bytes(v.get(..4)?.try_into().ok()?)))
                    .filter(|id| *id >= 0);
            }
        })?;
        Ok(nsid)
    }

    /// Link notifications received so far (non-blocking; for a `link_monitor` socket). An
    /// overflow (ENOBUFS) is not an error: it is flagged, and reading goes on.
    pub fn changes(&mut self) -> io::Result<LinkChanges> {
        let mut out = LinkChanges::default();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let err = io::Error::last_os_error();
                match err.raw_os_error() {
                    Some(libc::ENOBUFS) => {
                        out.overflowed = true;
                        continue;
                    }
                    Some(libc::EINTR) => continue,
                    _ if err.kind() == io::ErrorKind::WouldBlock => return Ok(out),
                    _ => return Err(err),
                }
            }
            for (kind, payload) in messages(&buf[..n as usize]) {
                match kind {
                    RTM_NEWLINK => out.changes.extend(parse_link(payload).map(LinkChange::New)),
                    RTM_DELLINK => out
                        .changes
                        .extend(parse_link(payload).map(|l| LinkChange::Deleted { index: l.index, name: l.name })),
                    _ => {}
                }
            }
        }
    }

    fn send(&mut self, kind: u16, flags: u16, body: &[u8]) -> io::Result<u32> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(NLMSG_HDRLEN + body.len());
        msg.extend_from_slice(&((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&flags.to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(body);
        // SAFETY: `msg` is readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(self.seq)
    }

    /// Reads replies to `seq` until DONE (dumps) or the single answer; NLMSG_ERROR with a
    /// non-zero code is an error (ENOENT-like answers for unknown ids included).
    fn receive(&mut self, seq: u32, mut each: impl FnMut(u16, &[u8])) -> io::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut finished = false;
            for (kind, payload, msg_seq, multi) in messages_with_seq(&buf[..n as usize]) {
                if msg_seq != seq {
                    continue;
                }
                match kind {
                    NLMSG_DONE => finished = true,
                    NLMSG_ERROR => {
                        let code = payload.get(..4).and_then(|b| b.try_into().ok()).map_or(0, i32::from_ne_bytes);
                        if code != 0 {
                            return Err(io::Error::from_raw_os_error(-code));
                        }
                        finished = true;
                    }
                    other => {
                        each(other, payload);
                        if !multi {
                            finished = true;
                        }
                    }
                }
            }
            if finished {
                return Ok(());
            }
        }
    }
}

fn align4(n: usize) -> usize {
    (n + 3) & !3
}

pub(crate) fn push_attr(buf: &mut Vec<u8>, kind: u16, value: &[u8]) {
    buf.extend_from_slice(&((4 + value.len()) as u16).to_ne_bytes());
    buf.extend_from_slice(&kind.to_ne_bytes());
    buf.extend_from_slice(value);
    buf.resize(align4(buf.len()), 0);
}

/// (type, payload) of each netlink message in a datagram.
fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    messages_with_seq(buf).map(|(k, p, _, _)| (k, p))
}

/// (type, payload, seq, multipart) of each message; stops at the first malformed header.
fn messages_with_seq(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8], u32, bool)> {
    std::iter::from_fn(move || {
        let header = buf.get(..NLMSG_HDRLEN)?;
        let len = u32::from_ne_bytes(header[0..4].try_into().ok()?) as usize;
        if len < NLMSG_HDRLEN || len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes(header[4..6].try_into().ok()?);
        let flags = u16::from_ne_bytes(header[6..8].try_into().ok()?);
        let seq = u32::from_ne_bytes(header[8..12].try_into().ok()?);
        let payload = &buf[NLMSG_HDRLEN..len];
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some((kind, payload, seq, flags & 0x2 != 0))
    })
}

/// (type, value) of each route attribute; stops at the first malformed one.
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16::from_ne_bytes(buf.get(0..2)?.try_into().ok()?) as usize;
        let kind = u16::from_ne_bytes(buf.get(2..4)?.try_into().ok()?) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = buf.get(align4(len)..).unwrap_or_default();
        Some((kind, value))
    })
}

/// The output interface of a default route (rtmsg with `dst_len == 0`), if this is one.
pub fn default_route_oif(payload: &[u8]) -> Option<u32> {
    let dst_len = *payload.get(1)?;
    if dst_len != 0 {
        return None;
    }
    attrs(payload.get(RTMSG_LEN..)?)
        .find(|(t, _)| *t == RTA_OIF)
        .and_then(|(_, v)| Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?)))
}

/// Whether an RTM_NEWROUTE payload is a unicast route of the main table to a prefix other
/// than the default, through a gateway (RTA_GATEWAY, RTA_VIA or multipath nexthops).
pub fn is_specific_gateway_route(payload: &[u8]) -> bool {
    let (Some(&dst_len), Some(&table), Some(&kind)) = (payload.get(1), payload.get(4), payload.get(7)) else {
        return false;
    };
    let Some(rest) = payload.get(RTMSG_LEN..) else { return false };
    let mut table = u32::from(table);
    let mut gateway = false;
    for (t, v) in attrs(rest) {
        match t {
            RTA_TABLE => table = v.get(..4).and_then(|b| b.try_into().ok()).map_or(table, u32::from_ne_bytes),
            RTA_GATEWAY | RTA_VIA | RTA_MULTIPATH => gateway = true,
            _ => {}
        }
    }
    dst_len > 0 && kind == RTN_UNICAST && table == RT_TABLE_MAIN && gateway
}

/// `(ifindex, address)` from an RTM_NEWADDR payload (ifaddrmsg + attributes).
pub fn parse_address(payload: &[u8]) -> Option<(u32, std::net::IpAddr)> {
    let family = *payload.first()?;
    let index = u32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut address = None;
    for (kind, value) in attrs(payload.get(8..)?) {
        let ip = match (i32::from(family), value.len()) {
            (libc::AF_INET, 4) => std::net::IpAddr::from(<[u8; 4]>::try_from(value).ok()?),
            (libc::AF_INET6, 16) => std::net::IpAddr::from(<[u8; 16]>::try_from(value).ok()?),
            _ => continue,
        };
        if kind == IFA_LOCAL || (kind == IFA_ADDRESS && address.is_none()) {
            address = Some(ip);
        }
    }
    Some((index, address?))
}

/// The answer to a route lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteLookup {
    /// The destination is an address of this namespace (route type `local`).
    pub local: bool,
    pub oif: Option<u32>,
}

pub fn parse_route_lookup(payload: &[u8]) -> Option<RouteLookup> {
    let kind = *payload.get(7)?;
    let oif = attrs(payload.get(RTMSG_LEN..)?)
        .find(|(t, _)| *t == RTA_OIF)
        .and_then(|(_, v)| Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?)));
    Some(RouteLookup { local: kind == RTN_LOCAL, oif })
}

/// A link from an RTM_NEWLINK/RTM_DELLINK payload (ifinfomsg + attributes).
pub fn parse_link(payload: &[u8]) -> Option<Link> {
    let index = i32::from_ne_bytes(payload.get(4..8)?.try_into().ok()?);
    let mut link = Link {
        index: u32::try_from(index).ok()?,
        name: String::new(),
        kind: None,
        peer_index: None,
        link_netnsid: None,
        mtu: None,
        master: None,
        hw_type: u16::from_ne_bytes(payload.get(2..4)?.try_into().ok()?),
    };
    let u32_of = |v: &[u8]| v.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
    for (kind, value) in attrs(payload.get(IFINFOMSG_LEN..)?) {
        match kind {
            IFLA_IFNAME => link.name = String::from_utf8_lossy(value).trim_end_matches('\0').to_string(),
            IFLA_LINK => link.peer_index = u32_of(value),
            IFLA_MTU => link.mtu = u32_of(value),
            IFLA_LINK_NETNSID => link.link_netnsid = u32_of(value).map(|v| v as i32),
            IFLA_MASTER => link.master = u32_of(value),
            IFLA_LINKINFO => {
                link.kind = attrs(value)
                    .find(|(t, _)| *t == IFLA_INFO_KIND)
                    .map(|(_, v)| String::from_utf8_lossy(v).trim_end_matches('\0').to_string());
            }
            _ => {}
        }
    }
    Some(link)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link_payload(index: i32, name: &str, kind: &str, peer: u32, nsid: i32) -> Vec<u8> {
        let mut p = vec![0u8; IFINFOMSG_LEN];
        p[4..8].copy_from_slice(&index.to_ne_bytes());
        push_attr(&mut p, IFLA_IFNAME, format!("{name}\0").as_bytes());
        push_attr(&mut p, IFLA_LINK, &peer.to_ne_bytes());
        let mut info = Vec::new();
        push_attr(&mut info, IFLA_INFO_KIND, format!("{kind}\0").as_bytes());
        push_attr(&mut p, IFLA_LINKINFO | 0x8000, &info); // nested flag set, as the kernel does
        push_attr(&mut p, IFLA_LINK_NETNSID, &nsid.to_ne_bytes());
        p
    }

    #[test]
    fn parses_a_veth_with_its_peer_namespace() {
        let link = parse_link(&link_payload(7, "veth1a2b3c4d", "veth", 2, 3)).expect("link");
        assert_eq!(
            link,
            Link {
                index: 7,
                name: "veth1a2b3c4d".into(),
                kind: Some("veth".into()),
                peer_index: Some(2),
                link_netnsid: Some(3),
                mtu: None,
                master: None,
                hw_type: 0,
            }
        );
    }

    #[test]
    fn finds_the_default_routes_interface() {
        let mut default = vec![0u8; RTMSG_LEN];
        push_attr(&mut default, RTA_OIF, &3u32.to_ne_bytes());
        assert_eq!(default_route_oif(&default), Some(3));
        let mut subnet = vec![0u8; RTMSG_LEN];
        subnet[1] = 24;
        push_attr(&mut subnet, RTA_OIF, &4u32.to_ne_bytes());
        assert_eq!(default_route_oif(&subnet), None);
        assert_eq!(default_route_oif(&[0]), None);
    }

    #[test]
    fn tells_specific_gateway_routes_from_default_connected_and_other_tables() {
        let route = |dst_len: u8, table: u8, kind: u8, gateway: bool| {
            let mut p = vec![0u8; RTMSG_LEN];
            (p[1], p[4], p[7]) = (dst_len, table, kind);
            push_attr(&mut p, RTA_OIF, &3u32.to_ne_bytes());
            if gateway {
                push_attr(&mut p, RTA_GATEWAY, &[10, 244, 1, 1]);
            }
            p
        };
        assert!(is_specific_gateway_route(&route(24, 254, RTN_UNICAST, true)), "10.244.2.0/24 via a router");
        assert!(!is_specific_gateway_route(&route(0, 254, RTN_UNICAST, true)), "a pod's default route");
        assert!(!is_specific_gateway_route(&route(24, 254, RTN_UNICAST, false)), "a connected prefix");
        assert!(!is_specific_gateway_route(&route(32, 254, RTN_UNICAST, false)), "Calico's host route to 169.254.1.1");
        assert!(!is_specific_gateway_route(&route(24, 100, RTN_UNICAST, true)), "another table");
        assert!(!is_specific_gateway_route(&route(32, 255, RTN_LOCAL, false)), "a local address");
        let mut big_table = route(24, 252, RTN_UNICAST, true);
        push_attr(&mut big_table, RTA_TABLE, &254u32.to_ne_bytes());
        assert!(is_specific_gateway_route(&big_table), "RTA_TABLE decides");
        assert!(!is_specific_gateway_route(&[0, 24]));
    }

    #[test]
    fn walks_messages_and_survives_truncation() {
        let payload = link_payload(9, "eth0", "veth", 1, 0);
        let mut msg = Vec::new();
        msg.extend_from_slice(&((NLMSG_HDRLEN + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes());
        msg.extend_from_slice(&2u16.to_ne_bytes());
        msg.extend_from_slice(&5u32.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(&payload);
        let all: Vec<_> = messages_with_seq(&msg).collect();
        assert_eq!(all.len(), 1);
        assert_eq!((all[0].0, all[0].2, all[0].3), (RTM_NEWLINK, 5, true));
        for cut in 0..msg.len() {
            let _ = messages(&msg[..cut]).filter_map(|(_, p)| parse_link(p)).count();
        }
        assert_eq!(messages(&msg[..msg.len() - 1]).count(), 0, "a message longer than the datagram is dropped");
        assert!(parse_link(&payload[..3]).is_none());
    }
}
