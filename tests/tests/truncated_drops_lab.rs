//! Packets the kernel drops because they are truncated are reported without a flow: observer
//! reads only what the skb really holds (network header .. tail), never the stale bytes after
//! it. Frames are written raw (AF_PACKET) from a peer namespace into a watched one.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::{
    netns::{wait_until, Netns},
    require_root, Running,
};

const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
const PEER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const PEER_IP: [u8; 4] = [10, 99, 0, 1];
const NODE_IP: [u8; 4] = [10, 99, 0, 2];

fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = NODE_MAC.to_vec();
    f.extend_from_slice(&PEER_MAC);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// A 20-byte IPv4 header (valid checksum) with the given total length, protocol and IHL.
fn ipv4_header(total: u16, protocol: u8, ihl: u8) -> Vec<u8> {
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    h.extend_from_slice(&PEER_IP);
    h.extend_from_slice(&NODE_IP);
    let sum = h.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let checksum = !(((folded & 0xffff) + (folded >> 16)) as u16);
    h[10..12].copy_from_slice(&checksum.to_be_bytes());
    h
}

fn ipv6_header(payload: u16, next: u8) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&payload.to_be_bytes());
    h.extend_from_slice(&[next, 64]);
    h.extend_from_slice(&[0xfd, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
    h.extend_from_slice(&[0xfd, 0, 0x99, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    h
}

/// A watched namespace (`trb`, 10.99.0.2, MAC :02) and a peer namespace writing frames (`tra`).
fn pair(tag: &str) -> (Netns, Netns) {
    let (node, peer) = (Netns::new(&format!("{tag}n")), Netns::new(&format!("{tag}p")));
    node.ip(&["link", "add", "trb", "type", "veth", "peer", "name", "tra", "netns", &peer.0]);
    // No IPv6 link-local addresses: no router solicitations or MLD reports on the wire.
    node.ip(&["link", "set", "trb", "address", "02:00:00:00:00:02", "addrgenmode", "none"]);
    node.ip(&["addr", "add", "10.99.0.2/24", "dev", "trb"]);
    node.ip(&["link", "set", "trb", "up"]);
    peer.ip(&["link", "set", "tra", "address", "02:00:00:00:00:01", "addrgenmode", "none"]);
    peer.ip(&["link", "set", "tra", "up"]);
    (node, peer)
}

/// A UDP datagram from 10.99.0.1:5555 to the closed port 10.99.0.2:9 with `payload`.
fn udp_to_closed_port(payload: &[u8]) -> Vec<u8> {
    let len = 8 + payload.len() as u16;
    let udp = [5555u16.to_be_bytes(), 9u16.to_be_bytes(), len.to_be_bytes(), [0, 0]].concat();
    eth(0x0800, &[ipv4_header(20 + len, 17, 5), udp, payload.to_vec()].concat())
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn truncated_drops_carry_no_flow() {
    require_root();
    let (node, peer) = pair("tr");
    let observer = Running::start(&["trace", "--netns", &node.0, "--output", "json"]);
    let inode = node.inode();

    let full_v4 = ipv4_header(40, 6, 5);
    let truncated = [
        // An IPv4 header that claims a TCP segment, and nothing after it (PKT_TOO_SMALL).
        eth(0x0800, &full_v4),
        // An IPv4 header cut at 19 bytes (the kernel cannot even pull the header).
        eth(0x0800, &full_v4[..19]),
        // IHL 15 (a 60-byte header) with only 24 bytes of it.
        eth(0x0800, &[ipv4_header(60, 6, 15), vec![1, 1, 1, 1]].concat()),
        // An IPv6 header that claims 20 bytes of TCP, and nothing after it.
        eth(0x86DD, &ipv6_header(20, 6)),
    ];
    // A complete UDP datagram to a closed port (NO_SOCKET): its flow is readable and reported.
    let control = udp_to_closed_port(&[]);
    // Warm the buffers with complete packets first, so stale bytes lie after the cut ones.
    for _ in 0..3 {
        peer.send_frames("tra", std::slice::from_ref(&control));
        peer.send_frames("tra", &truncated);
    }
    let drops_here = || -> Vec<serde_json::Value> {
        observer.json().into_iter().filter(|v| v["type"] == "drop" && v["netns"] == inode).collect()
    };
    wait_until("the drops of 15 frames", Duration::from_secs(10), || {
        let drops = drops_here();
        if drops.len() >= 15 {
            Ok(())
        } else {
            Err(format!("{} drops: {drops:?}", drops.len()))
        }
    });
    let drops = drops_here();
    let (with_flow, without): (Vec<_>, Vec<_>) = drops.iter().partition(|v| !v["flow"].is_null());
    assert_eq!(without.len(), 12, "each truncated frame dropped once, without a flow: {drops:#?}");
    assert_eq!(with_flow.len(), 3, "only the complete datagrams have a flow: {with_flow:#?}");
    for v in with_flow {
        assert_eq!(v["flow"]["protocol"], "UDP", "{v}");
        assert_eq!(v["flow"]["src"], "10.99.0.1", "{v}");
        assert_eq!(v["flow"]["dst"], "10.99.0.2", "{v}");
        assert_eq!((v["flow"]["sport"].as_u64(), v["flow"]["dport"].as_u64()), (Some(5555), Some(9)), "{v}");
        assert_eq!(v["drop_reason"], "NO_SOCKET", "{v}");
    }
    for v in without {
        assert_eq!(v["interface"], "trb", "{v}");
        assert!(v["drop_reason"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    }
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
    // Counted as drops whose headers could not be read (the counter is the kernel's, for every
    // namespace: other drops may add to it, these 12 must be in it).
    let parse_errors = stderr
        .iter()
        .find(|l| l.contains("trace finished"))
        .and_then(|l| l.split_whitespace().find_map(|t| t.strip_prefix("drop_parse_errors=")))
        .and_then(|v| v.trim_matches('"').parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no drop_parse_errors in the summary: {stderr:?}"));
    assert!(parse_errors >= 12, "drop_parse_errors={parse_errors}");
}

/// `--pcap` keeps its bound: a dropped 300-byte datagram is written with its first 128 bytes
/// (`CAPTURE_BYTES`) and its length on the wire; a small one whole.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn pcap_records_keep_the_capture_bound() {
    require_root();
    let (node, peer) = pair("pc");
    let pcap = std::env::temp_dir().join(format!("observer-rb-{}.pcap", std::process::id()));
    let observer = Running::start(&["trace", "--netns", &node.0, "--output", "json", "--pcap", pcap.to_str().unwrap()]);
    peer.send_frames("tra", &[udp_to_closed_port(&[0xAB; 272]), udp_to_closed_port(&[0xCD; 12])]);
    wait_until("two drops", Duration::from_secs(10), || {
        let n = observer.json().iter().filter(|v| v["type"] == "drop" && v["flow"]["dport"] == 9).count();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} drops"))
        }
    });
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
    let bytes = std::fs::read(&pcap).expect("pcap written");
    let _ = std::fs::remove_file(&pcap);
    let mut records = Vec::new();
    let mut at = 24;
    while at + 16 <= bytes.len() {
        let word = |o: usize| u32::from_le_bytes(bytes[at + o..at + o + 4].try_into().unwrap()) as usize;
        let (incl, orig) = (word(8), word(12));
        let data = &bytes[at + 16..at + 16 + incl];
        // Only this test's datagrams (10.99.0.1 -> 10.99.0.2 UDP): the node may drop others.
        if data.get(9) == Some(&17) && data.get(12..20) == Some(&[10, 99, 0, 1, 10, 99, 0, 2][..]) {
            records.push((incl, orig, data[incl - 1]));
        }
        at += 16 + incl;
    }
    assert_eq!(records, vec![(128, 300, 0xAB), (40, 40, 0xCD)], "(captured, on the wire, last byte)");
}
