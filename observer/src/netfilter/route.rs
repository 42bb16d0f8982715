//! Which hooks and interfaces a packet meets in a namespace, from that namespace's own routing
//! (rtnetlink in the calling thread's namespace): the drop attribution and `verify` both ask.

use std::{collections::HashMap, io, net::IpAddr};

use crate::loader::netlink::RouteSocket;

/// What the namespace's routes say about one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The source is (or the packet starts in) this namespace: OUTPUT, not PREROUTING.
    pub src_local: bool,
    /// The destination is an address of this namespace: INPUT, not FORWARD.
    pub dst_local: bool,
    pub iif: Option<String>,
    pub oif: Option<String>,
}

/// An rtnetlink socket in the calling thread's namespace and its interface names.
pub struct NamespaceRoutes {
    rtnl: RouteSocket,
    names: HashMap<u32, String>,
}

impl NamespaceRoutes {
    /// Opens the socket in the calling thread's namespace.
    pub fn here() -> io::Result<Self> {
        let mut rtnl = RouteSocket::open()?;
        let names = rtnl.links()?.into_iter().map(|l| (l.index, l.name)).collect();
        Ok(Self { rtnl, names })
    }

    /// `input_ifindex`: the device the packet was seen on (`skb->dev` of a drop), when known;
    /// `from_here`: the packet starts in this namespace whatever its source address (an SNAT
    /// source such as 169.254.7.127). Interfaces otherwise come from route lookups.
    pub fn route(&mut self, src: IpAddr, dst: IpAddr, input_ifindex: Option<u32>, from_here: bool) -> Route {
        let to_dst = self.rtnl.route_get(dst).ok().flatten();
        let to_src = self.rtnl.route_get(src).ok().flatten();
        let src_local = from_here || to_src.is_some_and(|r| r.local);
        let dst_local = to_dst.is_some_and(|r| r.local);
        let name = |index: Option<u32>| index.and_then(|i| self.names.get(&i).cloned());
        let iif = if src_local { None } else { name(input_ifindex.filter(|i| *i != 0).or(to_src.and_then(|r| r.oif))) };
        let oif = if dst_local { None } else { name(to_dst.and_then(|r| r.oif)) };
        Route { src_local, dst_local, iif, oif }
    }
}
