//! The kernel struct offsets the drop tracepoint needs, resolved from the running kernel's BTF.

use observer_common::KernelOffsets;

use super::btf::{Btf, BtfError, MemberInfo};

#[derive(Debug, thiserror::Error)]
pub enum OffsetsError {
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("BTF member `{path}` is {found} bytes, expected {expected}")]
    Size { path: String, found: u32, expected: u32 },
}

/// Resolves every offset in [`KernelOffsets`]; `reason_consumed` is the value of
/// `SKB_CONSUMED` in `enum skb_drop_reason` (u32::MAX if the kernel has none).
pub fn resolve(btf: &Btf) -> Result<KernelOffsets, OffsetsError> {
    let reason_consumed = btf
        .enum_values("skb_drop_reason")
        .ok()
        .and_then(|values| values.into_iter().find(|(name, _)| name == "SKB_CONSUMED"))
        .map_or(u32::MAX, |(_, value)| value as u32);
    Ok(KernelOffsets {
        skb_head: sized(btf, "sk_buff", "head", 8)?,
        skb_network_header: sized(btf, "sk_buff", "network_header", 2)?,
        skb_transport_header: sized(btf, "sk_buff", "transport_header", 2)?,
        skb_tail: sized(btf, "sk_buff", "tail", 4)?,
        skb_protocol: sized(btf, "sk_buff", "protocol", 2)?,
        skb_dev: sized(btf, "sk_buff", "dev", 8)?,
        skb_sk: sized(btf, "sk_buff", "sk", 8)?,
        dev_ifindex: sized(btf, "net_device", "ifindex", 4)?,
        // possible_net_t holds a single `struct net *` (CONFIG_NET_NS) at offset 0.
        dev_nd_net: sized(btf, "net_device", "nd_net", 8)?,
        sk_net: sized(btf, "sock", "__sk_common.skc_net", 8)?,
        net_ns_inum: sized(btf, "net", "ns.inum", 4)?,
        sk_family: sized(btf, "sock", "__sk_common.skc_family", 2)?,
        sk_state: sized(btf, "sock", "__sk_common.skc_state", 1)?,
        sk_num: sized(btf, "sock", "__sk_common.skc_num", 2)?,
        sk_dport: sized(btf, "sock", "__sk_common.skc_dport", 2)?,
        sk_rcv_saddr: sized(btf, "sock", "__sk_common.skc_rcv_saddr", 4)?,
        sk_daddr: sized(btf, "sock", "__sk_common.skc_daddr", 4)?,
        sk_v6_rcv_saddr: sized(btf, "sock", "__sk_common.skc_v6_rcv_saddr", 16)?,
        sk_v6_daddr: sized(btf, "sock", "__sk_common.skc_v6_daddr", 16)?,
        reason_consumed,
        valid: 1,
        // Optional (segment sizes of retransmissions): a kernel without them still loads.
        skb_len: optional(sized(btf, "sk_buff", "len", 4)),
        skb_tcp_seq: optional(
            btf.member("sk_buff", "cb")
                .and_then(|cb| btf.member("tcp_skb_cb", "seq").map(|seq| cb.offset + seq.offset))
                .map_err(OffsetsError::from),
        ),
        tcp_mss_cache: optional(sized(btf, "tcp_sock", "mss_cache", 4)),
    })
}

/// The offset, or `u32::MAX` ("not available": the kernel side skips the read) with a warning.
fn optional(found: Result<u32, OffsetsError>) -> u32 {
    found.unwrap_or_else(|err| {
        tracing::warn!("{err}: retransmitted segment sizes will be missing");
        u32::MAX
    })
}

fn sized(btf: &Btf, ty: &str, path: &str, expected: u32) -> Result<u32, OffsetsError> {
    let MemberInfo { offset, size } = btf.member(ty, path)?;
    if size != expected {
        return Err(OffsetsError::Size { path: format!("{ty}.{path}"), found: size, expected });
    }
    Ok(offset)
}
