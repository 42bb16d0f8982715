//! Load-time configuration handed to the eBPF programs as global constants.

/// Byte offsets of kernel struct members, resolved from the running kernel's BTF in userspace
/// (Rust eBPF programs get no CO-RE relocations). A zero `valid` disables the skb decoding.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct KernelOffsets {
    /// `sk_buff.head` (pointer).
    pub skb_head: u32,
    /// `sk_buff.network_header` (u16 offset from head).
    pub skb_network_header: u32,
    /// `sk_buff.transport_header` (u16 offset from head).
    pub skb_transport_header: u32,
    /// `sk_buff.tail` (offset of the end of the linear data from head, u32 on 64-bit).
    pub skb_tail: u32,
    /// `sk_buff.protocol` (__be16 ethertype).
    pub skb_protocol: u32,
    /// `sk_buff.dev` (pointer to net_device).
    pub skb_dev: u32,
    /// `sk_buff.sk` (pointer to sock).
    pub skb_sk: u32,
    /// `net_device.ifindex` (int).
    pub dev_ifindex: u32,
    /// `net_device.nd_net` (possible_net_t, holding `struct net *`).
    pub dev_nd_net: u32,
    /// `sock.__sk_common.skc_net` (possible_net_t).
    pub sk_net: u32,
    /// `net.ns.inum` (unsigned int).
    pub net_ns_inum: u32,
    /// `sock.__sk_common` members: family (u16), state (u8), local port (`skc_num`, host order
    /// u16), remote port (`skc_dport`, be16), IPv4 local/remote (be32), IPv6 local/remote (16 bytes).
    pub sk_family: u32,
    pub sk_state: u32,
    pub sk_num: u32,
    pub sk_dport: u32,
    pub sk_rcv_saddr: u32,
    pub sk_daddr: u32,
    pub sk_v6_rcv_saddr: u32,
    pub sk_v6_daddr: u32,
    /// `enum skb_drop_reason` value meaning "consumed, not dropped" (skipped), or u32::MAX.
    pub reason_consumed: u32,
    /// Non-zero once userspace filled the offsets in.
    pub valid: u32,
    /// `sk_buff.len` (u32: bytes of the packet or, for a TCP write-queue skb, of its payload).
    /// `u32::MAX` when BTF lacks it (then not read), as for the two below.
    pub skb_len: u32,
    /// `sk_buff.cb` + `tcp_skb_cb.seq`: the first sequence number of a TCP skb (u32).
    pub skb_tcp_seq: u32,
    /// `tcp_sock.mss_cache` (u32): the sender's current MSS.
    pub tcp_mss_cache: u32,
}
