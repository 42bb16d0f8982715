//! Userspace throughput on a recorded-shape event stream (`cargo xtask bench`, section 5):
//! decoding ring-buffer records, naming them, and folding them into connections, or writing
//! them as `observer trace --output json` does (the per-event path of a trace's reader).
//!
//! The stream is what the kernel side emits for blocked xDS connections: per connection a SYN at
//! the pod veth, the SYN at the bridge, its NETFILTER_DROP, and a retransmission timeout.
#![allow(clippy::expect_used, missing_docs)]

use std::collections::BTreeMap;

use observer::{
    diagnosis::Correlator,
    events::{clock::MonotonicClock, namer::Namer},
    kernel::{drop_reasons::DropReasons, kallsyms::Kallsyms},
    trace::format::write_json,
};
use observer_common::{
    decode::{decode, encode},
    event::{
        DropEvent, EventHeader, FlowTuple, PacketEvent, SockOpsEvent, EVENT_KIND_DROP, EVENT_KIND_PACKET,
        EVENT_KIND_SOCKOPS, EVENT_VERSION, FAMILY_IPV4, HOOK_TC_INGRESS, PROTO_TCP, SOCKOPS_RTO, TCP_SYN,
    },
};

const CONNECTIONS: u32 = 2_500;

fn main() {
    divan::main();
}

fn header(kind: u16, size: usize, t: u64) -> EventHeader {
    EventHeader { kind, version: EVENT_VERSION, size: size as u32, timestamp_ns: t }
}

fn tuple(i: u32) -> FlowTuple {
    let mut t = FlowTuple {
        family: FAMILY_IPV4,
        protocol: PROTO_TCP,
        sport: 20_000 + (i % 40_000) as u16,
        dport: 15012,
        ..Default::default()
    };
    t.saddr[..4].copy_from_slice(&[10, 244, 1, 10 + (i / 40_000) as u8]);
    t.daddr[..4].copy_from_slice(&[10, 244, 2, 10]);
    t
}

/// Four records per connection (10,000 records).
/// The namer the benchmarks name records with: a node namespace 77 with cni0 and veth1, the
/// monotonic clock `offset_ns` behind the wall clock.
fn namer<'a>(offset_ns: i128, reasons: &'a DropReasons, syms: &'a Kallsyms) -> Namer<'a> {
    Namer {
        clock: MonotonicClock::with_offset_ns(offset_ns),
        interfaces: BTreeMap::from([(4, "cni0".to_string()), (5, "veth1".to_string())]),
        watched_netns: 77,
        drop_reasons: reasons,
        kallsyms: syms,
        cgroups: None,
        inventory: None,
        processes: Default::default(),
    }
}

fn records() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for i in 0..CONNECTIONS {
        let t = u64::from(i) * 1_000;
        for ifindex in [5, 4] {
            out.push(encode(&PacketEvent {
                header: header(EVENT_KIND_PACKET, size_of::<PacketEvent>(), t),
                flow: tuple(i),
                ifindex,
                hook: HOOK_TC_INGRESS,
                tcp_flags: TCP_SYN,
                ..Default::default()
            }));
        }
        out.push(encode(&DropEvent {
            header: header(EVENT_KIND_DROP, size_of::<DropEvent>(), t + 1),
            flow: tuple(i),
            flow_valid: 1,
            reason: 12,
            ifindex: 4,
            netns_ino: 77,
            location: 0xffff_ffff_81a0_0010,
            ..Default::default()
        }));
        out.push(encode(&SockOpsEvent {
            header: header(EVENT_KIND_SOCKOPS, size_of::<SockOpsEvent>(), t + 2),
            flow: tuple(i),
            op: SOCKOPS_RTO,
            ..Default::default()
        }));
    }
    out
}

#[divan::bench(sample_count = 30)]
fn decode_10k_records(bencher: divan::Bencher) {
    let records = records();
    bencher
        .counter(divan::counter::ItemsCount::new(records.len()))
        .bench(|| records.iter().filter(|r| decode(divan::black_box(r)).is_ok()).count());
}

#[divan::bench(sample_count = 30)]
fn decode_name_correlate_10k_records(bencher: divan::Bencher) {
    let records = records();
    let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP")]);
    let syms = Kallsyms::parse("ffffffff81a00000 t nf_hook_slow\n");
    bencher.counter(divan::counter::ItemsCount::new(records.len())).bench(|| {
        let namer = namer(0, &reasons, &syms);
        let mut correlator = Correlator::default();
        for r in &records {
            if let Ok(event) = decode(r) {
                correlator.add(&namer.observe(&event));
            }
        }
        correlator.connections().count()
    });
}

/// What `observer trace --output json` does per record: decode, name, write the JSON line into
/// a reused buffer, appended to the output buffer.
#[divan::bench(sample_count = 30)]
fn decode_name_json_10k_records(bencher: divan::Bencher) {
    let records = records();
    let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP")]);
    let syms = Kallsyms::parse("ffffffff81a00000 t nf_hook_slow\n");
    let namer = namer(1_795_000_000_000_000_000, &reasons, &syms);
    let (mut line, mut out) = (Vec::with_capacity(1024), Vec::with_capacity(1 << 20));
    bencher.counter(divan::counter::ItemsCount::new(records.len())).bench_local(|| {
        // Lines are buffered as the trace's stdout is (then written once per drain).
        out.clear();
        for r in &records {
            if let Ok(event) = decode(r) {
                write_json(&namer.observe(&event), &mut line);
                out.extend_from_slice(&line);
                out.push(b'\n');
            }
        }
        out.len()
    });
}
