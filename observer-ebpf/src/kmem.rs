//! Reading kernel objects (sk_buff, sock, net_device) through the offsets userspace resolved
//! from BTF, with `bpf_probe_read_kernel` (a bad pointer fails the read instead of faulting).

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_kernel_buf};
use observer_common::event::{Encap, FlowTuple, CAPTURE_BYTES, FAMILY_IPV4, FAMILY_IPV6, PROTO_TCP};

use crate::{
    encap::parse_inner,
    maps::offset,
    packet::{headers_len, parse_ip, PacketSource, Within},
};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;

/// Packet bytes in kernel memory starting at the skb's network header, `len` of them: up to the
/// end of the linear data (`head + tail`). What lies beyond is not this packet (a truncated
/// frame's buffer still holds an earlier packet's bytes there), or sits in page fragments that
/// a header parse never needs.
struct KernelBytes {
    base: *const u8,
    len: usize,
}

impl PacketSource for KernelBytes {
    #[inline(always)]
    fn read<T: Copy>(&self, offset: usize) -> Option<T> {
        if offset + core::mem::size_of::<T>() > self.len {
            return None;
        }
        // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
        unsafe { bpf_probe_read_kernel(self.base.wrapping_add(offset).cast::<T>()).ok() }
    }
}

/// `value` with everything the verifier knows about it forgotten (copied through a helper, so
/// it is an unknown scalar again). A length computed along many parse paths would otherwise keep
/// those paths apart all the way to its use, past the verifier's complexity limit; the use
/// re-checks its bounds anyway.
#[inline(always)]
pub fn opaque(value: u32) -> u32 {
    let kept = value;
    // SAFETY: reads our own stack variable; bpf_probe_read_kernel fails instead of faulting.
    unsafe { bpf_probe_read_kernel(&kept as *const u32) }.unwrap_or(0)
}

#[inline(always)]
pub fn read_at<T: Copy>(base: *const u8, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel validates the address and fails instead of faulting.
    unsafe { bpf_probe_read_kernel(base.wrapping_add(offset as usize).cast::<T>()).ok() }
}

#[inline(always)]
pub fn read_ptr(base: *const u8, offset: u32) -> *const u8 {
    read_at(base, offset).unwrap_or(core::ptr::null())
}

/// The 5-tuple of the packet held by `skb`, parsed from its network header within the linear
/// data (`network_header..tail`), and the length of its headers (see `headers_len`); `None`
/// when the headers are not all there.
#[inline(always)]
pub fn skb_flow(skb: *const u8, flow: &mut FlowTuple) -> Option<usize> {
    let head = read_ptr(skb, offset!(skb_head));
    let network_header: u16 = read_at(skb, offset!(skb_network_header))?;
    let tail: u32 = read_at(skb, offset!(skb_tail))?;
    let ethertype = u16::from_be(read_at::<u16>(skb, offset!(skb_protocol))?);
    if head.is_null() || network_header == u16::MAX || tail <= network_header as u32 {
        return None;
    }
    let len = (tail - network_header as u32) as usize;
    let bytes = KernelBytes { base: head.wrapping_add(network_header as usize), len };
    let l4 = parse_ip(&bytes, 0, ethertype, flow)?;
    Some(headers_len(&Within { src: &bytes, end: l4.end }, 0, &l4, flow.protocol))
}

/// [`skb_flow`] looking through one level of encapsulation: for an outer packet (VXLAN,
/// Geneve, IP-in-IP) `flow` is the inner packet's 5-tuple, `encap` describes the outer one, and
/// the headers' length runs from the outer IP header to the end of the inner headers.
#[inline(always)]
pub fn skb_flow_encap(skb: *const u8, flow: &mut FlowTuple, encap: &mut Encap) -> Option<usize> {
    let head = read_ptr(skb, offset!(skb_head));
    let network_header: u16 = read_at(skb, offset!(skb_network_header))?;
    let tail: u32 = read_at(skb, offset!(skb_tail))?;
    let ethertype = u16::from_be(read_at::<u16>(skb, offset!(skb_protocol))?);
    if head.is_null() || network_header == u16::MAX || tail <= network_header as u32 {
        return None;
    }
    let len = (tail - network_header as u32) as usize;
    let bytes = KernelBytes { base: head.wrapping_add(network_header as usize), len };
    let l4 = parse_ip(&bytes, 0, ethertype, flow)?;
    if let Some((il3, il4)) = parse_inner(&bytes, flow, &l4, encap) {
        return Some(il3 + headers_len(&Within { src: &bytes, end: il4.end }, il3, &il4, flow.protocol));
    }
    Some(headers_len(&Within { src: &bytes, end: l4.end }, 0, &l4, flow.protocol))
}

/// Copies the packet from its network header on (at most `limit` <= `out.len()` bytes of the
/// linear data) into `out`; returns how many bytes were copied.
#[inline(always)]
pub fn skb_capture(skb: *const u8, out: &mut [u8; CAPTURE_BYTES], limit: usize) -> u16 {
    let head = read_ptr(skb, offset!(skb_head));
    let (Some(network_header), Some(tail)) =
        (read_at::<u16>(skb, offset!(skb_network_header)), read_at::<u32>(skb, offset!(skb_tail)))
    else {
        return 0;
    };
    if head.is_null() || network_header == u16::MAX || tail <= network_header as u32 {
        return 0;
    }
    let available = (tail - network_header as u32) as usize;
    let n = if available < limit { available } else { limit };
    if n == 0 || n > CAPTURE_BYTES {
        return 0;
    }
    let src = head.wrapping_add(network_header as usize);
    // SAFETY: bpf_probe_read_kernel validates the address; `n` is bounded by the buffer.
    match unsafe { bpf_probe_read_kernel_buf(src, &mut out[..n]) } {
        Ok(()) => n as u16,
        Err(_) => 0,
    }
}

/// `obj->...possible_net_t.net->ns.inum`, 0 when any pointer on the way is unreadable.
#[inline(always)]
pub fn netns_inum(obj: *const u8, net_field: u32) -> u32 {
    let net = read_ptr(obj, net_field);
    if net.is_null() {
        return 0;
    }
    read_at::<u32>(net, offset!(net_ns_inum)).unwrap_or(0)
}

/// The namespace of a socket.
#[inline(always)]
pub fn sock_netns(sk: *const u8) -> u32 {
    netns_inum(sk, offset!(sk_net))
}

/// The namespace of an skb: its device's, else its socket's.
#[inline(always)]
pub fn skb_netns(skb: *const u8) -> u32 {
    let dev = read_ptr(skb, offset!(skb_dev));
    let from_dev = if dev.is_null() { 0 } else { netns_inum(dev, offset!(dev_nd_net)) };
    if from_dev != 0 {
        return from_dev;
    }
    let sk = read_ptr(skb, offset!(skb_sk));
    if sk.is_null() {
        0
    } else {
        sock_netns(sk)
    }
}

/// A TCP socket's local -> remote tuple and state.
#[inline(always)]
pub fn sock_flow(sk: *const u8, flow: &mut FlowTuple) -> Option<u8> {
    let family: u16 = read_at(sk, offset!(sk_family))?;
    flow.protocol = PROTO_TCP;
    match family {
        AF_INET => {
            flow.family = FAMILY_IPV4;
            let local: [u8; 4] = read_at(sk, offset!(sk_rcv_saddr))?;
            let remote: [u8; 4] = read_at(sk, offset!(sk_daddr))?;
            flow.saddr[..4].copy_from_slice(&local);
            flow.daddr[..4].copy_from_slice(&remote);
        }
        AF_INET6 => {
            flow.family = FAMILY_IPV6;
            flow.saddr = read_at(sk, offset!(sk_v6_rcv_saddr))?;
            flow.daddr = read_at(sk, offset!(sk_v6_daddr))?;
        }
        _ => return None,
    }
    flow.sport = read_at(sk, offset!(sk_num))?;
    flow.dport = u16::from_be(read_at(sk, offset!(sk_dport))?);
    read_at(sk, offset!(sk_state))
}
