//! Length-checked decoding of ring-buffer records (userspace only).

use crate::event::{
    ConnectEvent, DropEvent, Encap, EventHeader, IcmpErrorEvent, PacketEvent, SockOpsEvent, TcpEvent,
    EVENT_KIND_CONNECT, EVENT_KIND_DROP, EVENT_KIND_ICMP_ERROR, EVENT_KIND_PACKET, EVENT_KIND_SOCKOPS, EVENT_KIND_TCP,
    EVENT_VERSION, EVENT_VERSION_V2,
};

/// A decoded ring-buffer record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Packet(PacketEvent),
    Drop(DropEvent),
    IcmpError(IcmpErrorEvent),
    Connect(ConnectEvent),
    SockOps(SockOpsEvent),
    Tcp(TcpEvent),
}

/// Why a record could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {len} bytes is shorter than the {header}-byte event header")]
    ShortHeader { len: usize, header: usize },
    #[error("record kind {kind} is unknown (this build knows kinds 1..=6)")]
    UnknownKind { kind: u16 },
    #[error("record kind {kind} has wire version {found}, this build reads version {expected}")]
    Version { kind: u16, found: u16, expected: u16 },
    #[error("record kind {kind} declares {declared} bytes but a {kind_name} is {expected} bytes")]
    DeclaredSize { kind: u16, kind_name: &'static str, declared: u32, expected: usize },
    #[error("record kind {kind} ({kind_name}) is {len} bytes, expected exactly {expected}")]
    Length { kind: u16, kind_name: &'static str, len: usize, expected: usize },
}

/// Decodes one record, checking its header, kind, version and length before reading it.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader =
        read_prefix(bytes).ok_or(DecodeError::ShortHeader { len: bytes.len(), header: size_of::<EventHeader>() })?;
    match header.kind {
        // Version 3 appended an `Encap` to these two: a version-2 record lacks it (zeroed: not
        // encapsulated).
        EVENT_KIND_PACKET => read_exact(bytes, &header, "PacketEvent", size_of::<Encap>()).map(Event::Packet),
        EVENT_KIND_DROP => read_exact(bytes, &header, "DropEvent", size_of::<Encap>()).map(Event::Drop),
        EVENT_KIND_ICMP_ERROR => read_exact(bytes, &header, "IcmpErrorEvent", 0).map(Event::IcmpError),
        EVENT_KIND_CONNECT => read_exact(bytes, &header, "ConnectEvent", 0).map(Event::Connect),
        EVENT_KIND_SOCKOPS => read_exact(bytes, &header, "SockOpsEvent", 0).map(Event::SockOps),
        EVENT_KIND_TCP => read_exact(bytes, &header, "TcpEvent", 0).map(Event::Tcp),
        kind => Err(DecodeError::UnknownKind { kind }),
    }
}

/// Reads a `T` of this wire version, or of version 2 (`v2_missing` bytes shorter: the fields
/// version 3 appended, read as zero).
fn read_exact<T: Copy>(
    bytes: &[u8],
    header: &EventHeader,
    kind_name: &'static str,
    v2_missing: usize,
) -> Result<T, DecodeError> {
    let kind = header.kind;
    let expected = match header.version {
        EVENT_VERSION => size_of::<T>(),
        EVENT_VERSION_V2 => size_of::<T>() - v2_missing,
        found => return Err(DecodeError::Version { kind, found, expected: EVENT_VERSION }),
    };
    if header.size as usize != expected {
        return Err(DecodeError::DeclaredSize { kind, kind_name, declared: header.size, expected });
    }
    if bytes.len() != expected {
        return Err(DecodeError::Length { kind, kind_name, len: bytes.len(), expected });
    }
    let mut full = bytes.to_vec();
    full.resize(size_of::<T>(), 0);
    read_prefix(&full).ok_or(DecodeError::Length { kind, kind_name, len: bytes.len(), expected })
}

/// Reads a `T` from the start of `bytes` if there are enough of them.
///
/// Only used with the `#[repr(C)]` integer-only structs of [`crate::event`], for which every bit
/// pattern is a valid value.
fn read_prefix<T: Copy>(bytes: &[u8]) -> Option<T> {
    if bytes.len() < size_of::<T>() {
        return None;
    }
    // SAFETY: the length was checked above, `read_unaligned` has no alignment requirement, and
    // the event structs hold only integers and byte arrays (any bit pattern is valid).
    Some(unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// The bytes of an event, as the kernel side writes them (for tests and replay fixtures).
pub fn encode<T: Copy>(event: &T) -> Vec<u8> {
    let len = size_of::<T>();
    let mut out = vec![0u8; len];
    // SAFETY: `out` holds exactly `len` bytes and `T` is a plain-data event struct.
    unsafe { core::ptr::copy_nonoverlapping((event as *const T).cast::<u8>(), out.as_mut_ptr(), len) };
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{FlowTuple, FAMILY_IPV4, HOOK_TC_INGRESS, PROTO_TCP, TCP_SYN};
    use crate::EVENT_VERSION_V2;

    fn packet() -> PacketEvent {
        let mut flow =
            FlowTuple { sport: 40000, dport: 15012, family: FAMILY_IPV4, protocol: PROTO_TCP, ..Default::default() };
        flow.saddr[..4].copy_from_slice(&[10, 244, 1, 10]);
        flow.daddr[..4].copy_from_slice(&[10, 244, 2, 10]);
        PacketEvent {
            header: EventHeader {
                kind: EVENT_KIND_PACKET,
                version: EVENT_VERSION,
                size: size_of::<PacketEvent>() as u32,
                timestamp_ns: 42,
            },
            flow,
            ifindex: 7,
            hook: HOOK_TC_INGRESS,
            tcp_flags: TCP_SYN,
            tcp_seq: 1234,
            ..Default::default()
        }
    }

    fn drop_event() -> DropEvent {
        DropEvent {
            header: EventHeader {
                kind: EVENT_KIND_DROP,
                version: EVENT_VERSION,
                size: size_of::<DropEvent>() as u32,
                timestamp_ns: 43,
            },
            flow: packet().flow,
            reason: 12,
            ifindex: 3,
            netns_ino: 4026532000,
            flow_valid: 1,
            location: 0xffff_ffff_8100_0000,
            ..Default::default()
        }
    }

    #[test]
    fn round_trips_a_packet_event_field_for_field() {
        let event = packet();
        assert_eq!(decode(&encode(&event)), Ok(Event::Packet(event)));
    }

    #[test]
    fn round_trips_a_drop_event_field_for_field() {
        let event = drop_event();
        let Ok(Event::Drop(decoded)) = decode(&encode(&event)) else { panic!("not a drop") };
        assert_eq!(decoded.reason, 12);
        assert_eq!(decoded.netns_ino, 4026532000);
        assert_eq!(decoded.flow.dport, 15012);
        assert_eq!(decoded, event);
    }

    #[test]
    fn round_trips_an_icmp_error_event() {
        let event = IcmpErrorEvent {
            header: EventHeader {
                kind: EVENT_KIND_ICMP_ERROR,
                version: EVENT_VERSION,
                size: size_of::<IcmpErrorEvent>() as u32,
                timestamp_ns: 44,
            },
            flow: packet().flow,
            quoted: drop_event().flow,
            icmp_type: 3,
            icmp_code: 13,
            quoted_valid: 1,
            mtu: 0,
            ..Default::default()
        };
        assert_eq!(size_of::<IcmpErrorEvent>(), 240);
        assert_eq!(decode(&encode(&event)), Ok(Event::IcmpError(event)));
    }

    #[test]
    fn round_trips_connect_and_sockops_events() {
        let header = |kind, size| EventHeader { kind, version: EVENT_VERSION, size, timestamp_ns: 45 };
        let mut comm = [0u8; 16];
        comm[..7].copy_from_slice(b"envoy-x");
        let connect = ConnectEvent {
            header: header(EVENT_KIND_CONNECT, size_of::<ConnectEvent>() as u32),
            flow: packet().flow,
            pid: 4242,
            tid: 4243,
            cgroup_id: 9_999,
            socket_cookie: 77,
            comm,
        };
        assert_eq!(decode(&encode(&connect)), Ok(Event::Connect(connect)));
        let ops = SockOpsEvent {
            header: header(EVENT_KIND_SOCKOPS, size_of::<SockOpsEvent>() as u32),
            flow: packet().flow,
            socket_cookie: 77,
            op: crate::event::SOCKOPS_CONNECT_FAILED,
            old_state: 2,
            new_state: 7,
            retransmits: 0,
            _pad: 0,
        };
        assert_eq!(decode(&encode(&ops)), Ok(Event::SockOps(ops)));
        let tcp = TcpEvent {
            header: header(EVENT_KIND_TCP, size_of::<TcpEvent>() as u32),
            flow: packet().flow,
            netns_ino: 4026532000,
            kind: crate::event::TCP_EVENT_SEND_RESET,
            state: 0,
            has_socket: 0,
            reason: 2,
            ..Default::default()
        };
        assert_eq!(decode(&encode(&tcp)), Ok(Event::Tcp(tcp)));
    }

    #[test]
    fn round_trips_an_encapsulated_packet_and_reads_version_2_records_as_not_encapsulated() {
        let mut event = packet();
        event.encap = Encap {
            outer_saddr: [172, 31, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            outer_daddr: [172, 31, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            vni: 1,
            outer_dport: 8472,
            kind: crate::event::TUNNEL_VXLAN,
            outer_family: FAMILY_IPV4,
        };
        assert_eq!(decode(&encode(&event)), Ok(Event::Packet(event)));
        // A version-2 record: the same bytes without the trailing Encap.
        let mut v2 = packet();
        v2.header.version = EVENT_VERSION_V2;
        v2.header.size = (size_of::<PacketEvent>() - size_of::<Encap>()) as u32;
        let bytes = encode(&v2);
        let decoded = decode(&bytes[..v2.header.size as usize]);
        let Ok(Event::Packet(p)) = decoded else { panic!("{decoded:?}") };
        assert_eq!((p.flow, p.tcp_seq, p.encap), (v2.flow, 1234, Encap::default()));
        let mut d = drop_event();
        d.header.version = EVENT_VERSION_V2;
        d.header.size = 216;
        let decoded = decode(&encode(&d)[..216]);
        assert!(matches!(decoded, Ok(Event::Drop(e)) if e.encap == Encap::default() && e.reason == 12), "{decoded:?}");
        // A version-2 record of the new size is a lie.
        assert!(decode(&encode(&d)).is_err());
    }

    #[test]
    fn rejects_records_shorter_than_the_header() {
        for len in 0..size_of::<EventHeader>() {
            assert_eq!(decode(&vec![0u8; len]), Err(DecodeError::ShortHeader { len, header: 16 }), "len {len}");
        }
    }

    #[test]
    fn rejects_a_truncated_body() {
        let bytes = encode(&packet());
        let short = &bytes[..bytes.len() - 1];
        let err = decode(short).err();
        assert_eq!(err, Some(DecodeError::Length { kind: 1, kind_name: "PacketEvent", len: 111, expected: 112 }));
        assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("111 bytes"));
    }

    #[test]
    fn rejects_an_oversized_record() {
        let mut bytes = encode(&drop_event());
        bytes.extend_from_slice(&[0xAA; 8]);
        assert_eq!(
            decode(&bytes),
            Err(DecodeError::Length { kind: 2, kind_name: "DropEvent", len: 264, expected: 256 })
        );
    }

    #[test]
    fn rejects_a_header_that_lies_about_its_size() {
        let mut event = packet();
        event.header.size = 4096;
        assert_eq!(
            decode(&encode(&event)),
            Err(DecodeError::DeclaredSize { kind: 1, kind_name: "PacketEvent", declared: 4096, expected: 112 })
        );
    }

    #[test]
    fn rejects_unknown_kinds_and_versions() {
        let mut event = packet();
        event.header.kind = 99;
        assert_eq!(decode(&encode(&event)), Err(DecodeError::UnknownKind { kind: 99 }));
        let mut event = packet();
        event.header.version = 7;
        assert_eq!(decode(&encode(&event)), Err(DecodeError::Version { kind: 1, found: 7, expected: EVENT_VERSION }));
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_u32;
        for len in 0..200usize {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed & 0xff) as u8
                })
                .collect();
            let _ = decode(&bytes);
        }
    }
}
