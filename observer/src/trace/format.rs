//! Trace output: aligned text columns, or one JSON object per line.

use crate::events::{
    clock::time_of_day,
    model::{Detail, Observation, SocketMilestone, TcpStackEvent},
};
use crate::inventory::Endpoint;

pub const TEXT_HEADER: &str =
    "TIME             HOOK           IFACE            FLOW                                              WHAT";

/// `TIME HOOK IFACE FLOW WHAT`, columns aligned for the common (IPv4) case.
pub fn text_line(o: &Observation) -> String {
    let iface = match (&o.interface, o.ifindex) {
        (Some(name), _) => name.clone(),
        // Socket-side hooks have no interface of the watched node to name.
        (None, index) if index == 0 || !o.hook.is_tc() && o.hook != crate::events::model::Hook::KfreeSkb => {
            "-".to_string()
        }
        (None, index) => format!("if#{index}"),
    };
    let flow = o.flow.map_or_else(|| "(headers unreadable)".to_string(), |f| f.to_string());
    let what = match &o.detail {
        Detail::Packet { tcp_flags, .. } => tcp_flags.to_string(),
        Detail::Drop { drop_reason, location, netns, culprit, .. } => match culprit {
            Some(culprit) => {
                let pod = match &culprit.netns {
                    Some(observer_core::netfilter::RuleNamespace::Pod { pod: Some(pod), .. }) => {
                        format!(" (pod {pod}'s own rules)")
                    }
                    _ => String::new(),
                };
                format!("DROP {drop_reason} at {location} netns {netns}{pod} by {}", culprit.summary())
            }
            None => format!("DROP {drop_reason} at {location} netns {netns}"),
        },
        Detail::IcmpError { meaning, quoted, mtu, .. } => {
            let about = quoted.map_or_else(|| "(unreadable quote)".to_string(), |f| f.to_string());
            let mtu = if *mtu > 0 { format!(" mtu {mtu}") } else { String::new() };
            format!("ICMP {meaning}{mtu} for {about}")
        }
        Detail::Connect { pid, comm, cgroup, cgroup_id, pod_uid, container_id, .. } => {
            let who = match (pod_uid, container_id) {
                (Some(pod), Some(c)) => format!("pod {pod} container {}", &c[..c.len().min(12)]),
                (Some(pod), None) => format!("pod {pod}"),
                _ => cgroup.clone().unwrap_or_else(|| format!("cgroup#{cgroup_id}")),
            };
            format!("CONNECT pid {pid} ({comm}) {who}")
        }
        Detail::Tcp { event, state, socket, netns, .. } => {
            let whose = if *socket { format!("socket {state}") } else { "no socket (closed port)".to_string() };
            format!("TCP {} {whose} netns {netns}", event.as_str().to_uppercase())
        }
        Detail::Socket { event, retransmits, .. } => match *event {
            SocketMilestone::Rto => format!("RTO retransmit #{}", retransmits + 1),
            other => other.as_str().to_uppercase(),
        },
    };
    let process = match (&o.process, &o.detail) {
        (
            Some(p),
            Detail::Packet { .. }
            | Detail::Drop { .. }
            | Detail::IcmpError { .. }
            | Detail::Socket { .. }
            | Detail::Tcp { .. },
        ) => {
            format!("  {}[{}]", p.comm, p.pid)
        }
        _ => String::new(),
    };
    // The tunnel an outer packet belonged to (the flow shown is the inner one).
    let what = match &o.encap {
        Some(e) => format!("{what} in {e}"),
        None => what,
    };
    let who = match (&o.src, &o.dst) {
        (None, None) => String::new(),
        (src, dst) => format!(
            "  [{} -> {}]",
            src.as_ref().map_or("?".to_string(), endpoint_name),
            dst.as_ref().map_or("?".to_string(), endpoint_name)
        ),
    };
    format!("{:<16} {:<14} {:<16} {:<49} {what}{process}{who}", time_of_day(o.time), o.hook.as_str(), iface, flow)
}

/// `pod` (or `service`, or `workload`), with the Istio port name when known.
fn endpoint_name(e: &Endpoint) -> String {
    let base = e.pod.clone().or_else(|| e.service.clone()).or_else(|| e.workload.clone()).unwrap_or_else(|| "?".into());
    match e.istio_port {
        Some(port) => format!("{base} ({port})"),
        None => base,
    }
}

/// Red for drops, yellow for rejections (ICMP errors, resets), as terminals show them.
pub fn colourize(o: &Observation, line: String) -> String {
    let code = match &o.detail {
        Detail::Drop { .. } => "31",
        Detail::IcmpError { .. } => "33",
        Detail::Packet { tcp_flags, .. } if tcp_flags.is_rst() => "33",
        Detail::Tcp { event: TcpStackEvent::SendReset, .. } => "33",
        Detail::Socket { event: SocketMilestone::ConnectFailed | SocketMilestone::Rto, .. } => "35",
        _ => return line,
    };
    format!("\x1b[{code}m{line}\x1b[0m")
}

/// Counts of what was printed, for the line that ends a trace.
#[derive(Debug, Default)]
pub struct Summary {
    pub events: u64,
    pub handshake_packets: u64,
    pub drops: u64,
    pub rejections: u64,
    pub connects: u64,
    pub socket_events: u64,
}

impl Summary {
    pub fn add(&mut self, o: &Observation) {
        self.events += 1;
        match &o.detail {
            Detail::Packet { tcp_flags, .. } => {
                self.handshake_packets += 1;
                if tcp_flags.is_rst() {
                    self.rejections += 1;
                }
            }
            Detail::Drop { .. } => self.drops += 1,
            Detail::IcmpError { .. } => self.rejections += 1,
            Detail::Connect { .. } => self.connects += 1,
            Detail::Socket { .. } => self.socket_events += 1,
            Detail::Tcp { event, .. } => {
                self.socket_events += 1;
                if *event == TcpStackEvent::SendReset {
                    self.rejections += 1;
                }
            }
        }
    }

    /// `summary: 12 events (3 dropped, 1 rejected, ...); lost 0; filtered 40`.
    /// The summary line: events by verdict, `lost` (ring buffer full), `filtered` (not shown),
    /// and, when any, `not_attributed`: netfilter drops shown without their culprit rule because
    /// too many were waiting for attribution.
    pub fn line(&self, lost: u64, filtered: u64, not_attributed: u64) -> String {
        let mut line = format!(
            "summary: {} events ({} dropped, {} rejected, {} handshake packets, {} connects, {} socket events); lost {lost}; not shown {filtered}",
            self.events, self.drops, self.rejections, self.handshake_packets, self.connects, self.socket_events
        );
        if not_attributed > 0 {
            line.push_str(&format!("; {not_attributed} drops without culprit rule (too many waiting for attribution)"));
        }
        line
    }
}

/// One JSON object (schema: `docs/trace-json.md`).
pub fn json_line(o: &Observation) -> String {
    let mut line = Vec::new();
    write_json(o, &mut line);
    String::from_utf8(line).unwrap_or_else(crate::json::error_object)
}

/// [`json_line`] into `buf` (cleared first, its allocation reused: a trace writes one object per
/// event). An observation that cannot be serialized becomes the error object.
///
/// Handshake packets and drops (most of a trace's lines) are written field by field with their
/// keys as constants, byte for byte what serde writes (the tests compare both): serde's derived
/// serializer, through `#[serde(flatten)]`, goes through its map machinery and escapes every
/// key, which made serialization a third of the reader's CPU under a SYN flood. Values (names,
/// addresses, culprits) are still written by serde_json.
pub fn write_json(o: &Observation, buf: &mut Vec<u8>) {
    buf.clear();
    let written = match &o.detail {
        Detail::Packet { tcp_flags, tcp_seq } => write_fields(o, buf, |buf| {
            value(buf, b",\"type\":\"packet\",\"tcp_flags\":", tcp_flags)?;
            value(buf, b",\"tcp_seq\":", tcp_seq)
        }),
        Detail::Drop { drop_reason, location, netns, culprit, quoted, packet: _, solicited } => {
            write_fields(o, buf, |buf| {
                value(buf, b",\"type\":\"drop\",\"drop_reason\":", drop_reason)?;
                value(buf, b",\"location\":", location)?;
                value(buf, b",\"netns\":", netns)?;
                if let Some(culprit) = culprit {
                    value(buf, b",\"culprit\":", culprit)?;
                }
                if let Some(quoted) = quoted {
                    value(buf, b",\"quoted\":", quoted)?;
                }
                if let Some(solicited) = solicited {
                    value(buf, b",\"solicited\":", solicited)?;
                }
                Ok(())
            })
        }
        _ => serde_json::to_writer(&mut *buf, o),
    };
    if let Err(err) = written {
        buf.clear();
        buf.extend_from_slice(crate::json::error_object(err).as_bytes());
    }
}

/// `key` (with its leading comma and colon), then `v` as serde_json writes it.
fn value(buf: &mut Vec<u8>, key: &[u8], v: &impl serde::Serialize) -> serde_json::Result<()> {
    buf.extend_from_slice(key);
    serde_json::to_writer(&mut *buf, v)
}

/// An observation as serde writes it: its fields in declaration order, the detail's tag and
/// fields (written by `detail`) in place of `detail`, optional fields only when present.
fn write_fields(
    o: &Observation,
    buf: &mut Vec<u8>,
    detail: impl FnOnce(&mut Vec<u8>) -> serde_json::Result<()>,
) -> serde_json::Result<()> {
    buf.extend_from_slice(b"{\"time\":");
    observer_core::time::serialize_rfc3339(&o.time, &mut serde_json::Serializer::new(&mut *buf))?;
    value(buf, b",\"hook\":", &o.hook)?;
    value(buf, b",\"ifindex\":", &o.ifindex)?;
    value(buf, b",\"interface\":", &o.interface)?;
    match &o.flow {
        Some(f) => {
            value(buf, b",\"flow\":{\"protocol\":", &f.protocol)?;
            value(buf, b",\"src\":", &f.src)?;
            value(buf, b",\"sport\":", &f.sport)?;
            value(buf, b",\"dst\":", &f.dst)?;
            value(buf, b",\"dport\":", &f.dport)?;
            buf.push(b'}');
        }
        None => buf.extend_from_slice(b",\"flow\":null"),
    }
    if let Some(encap) = &o.encap {
        value(buf, b",\"encap\":", encap)?;
    }
    detail(buf)?;
    if let Some(process) = &o.process {
        value(buf, b",\"process\":", process)?;
    }
    if let Some(src) = &o.src {
        value(buf, b",\"src\":", src)?;
    }
    if let Some(dst) = &o.dst {
        value(buf, b",\"dst\":", dst)?;
    }
    buf.push(b'}');
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        net::{IpAddr, Ipv4Addr},
        time::{Duration, UNIX_EPOCH},
    };

    use super::*;
    use crate::events::model::{Flow, Hook, Protocol};

    fn syn() -> Observation {
        Observation {
            encap: None,
            time: UNIX_EPOCH + Duration::from_micros(3_723_000_042),
            hook: Hook::TcIngress,
            ifindex: 5,
            interface: Some("veth1a2b3c4d".into()),
            flow: Some(Flow {
                protocol: Protocol(6),
                src: IpAddr::V4(Ipv4Addr::new(10, 244, 1, 10)),
                sport: 43512,
                dst: IpAddr::V4(Ipv4Addr::new(10, 244, 2, 10)),
                dport: 15012,
            }),
            detail: Detail::Packet { tcp_flags: crate::events::model::TcpFlags::SYN, tcp_seq: 7 },
            src: None,
            dst: None,
            process: None,
        }
    }

    #[test]
    fn text_columns() {
        let line = text_line(&syn());
        assert!(
            line.starts_with(
                "01:02:03.000042  tc-ingress     veth1a2b3c4d     TCP 10.244.1.10:43512 -> 10.244.2.10:15012"
            ),
            "{line}"
        );
        assert!(line.ends_with(" SYN"));
        assert_eq!(line.find("tc-ingress"), TEXT_HEADER.find("HOOK"));
        assert_eq!(line.find("TCP "), TEXT_HEADER.find("FLOW"));
    }

    #[test]
    fn an_outer_packet_shows_its_inner_flow_and_the_tunnel() {
        let mut o = syn();
        o.interface = Some("eth0".into());
        o.encap = Some(crate::events::model::Encapsulation {
            tunnel: crate::events::model::TunnelKind::Vxlan,
            outer_src: IpAddr::V4(Ipv4Addr::new(172, 31, 1, 2)),
            outer_dst: IpAddr::V4(Ipv4Addr::new(172, 31, 2, 2)),
            vni: Some(1),
            udp_port: Some(8472),
        });
        let line = text_line(&o);
        assert!(line.contains("TCP 10.244.1.10:43512 -> 10.244.2.10:15012"), "{line}");
        assert!(line.ends_with(" SYN in vxlan 172.31.1.2 -> 172.31.2.2 udp/8472 vni 1"), "{line}");
    }

    #[test]
    fn socket_side_hooks_name_no_interface() {
        let mut o = syn();
        o.hook = Hook::CgroupEgress;
        o.interface = None;
        o.ifindex = 2;
        assert!(text_line(&o).contains(" cgroup-egress  -  "), "{}", text_line(&o));
        o.hook = Hook::KfreeSkb;
        assert!(text_line(&o).contains(" if#2 "), "a drop in another namespace keeps its ifindex");
    }

    #[test]
    fn summary_counts_by_verdict_and_colours_drops() {
        let mut summary = Summary::default();
        summary.add(&syn());
        let mut drop = syn();
        drop.detail = Detail::Drop {
            drop_reason: crate::events::model::DropReason::new(12, "NETFILTER_DROP"),
            location: "x".into(),
            netns: 1,
            culprit: None,
            quoted: None,
            packet: Default::default(),
            solicited: None,
        };
        summary.add(&drop);
        assert_eq!(
            summary.line(2, 7, 0),
            "summary: 2 events (1 dropped, 0 rejected, 1 handshake packets, 0 connects, 0 socket events); lost 2; not shown 7"
        );
        assert!(
            summary
                .line(2, 7, 3)
                .ends_with("; not shown 7; 3 drops without culprit rule (too many waiting for attribution)"),
            "{}",
            summary.line(2, 7, 3)
        );
        assert_eq!(colourize(&drop, "x".into()), "\x1b[31mx\x1b[0m");
        assert_eq!(colourize(&syn(), "x".into()), "x");
    }

    #[test]
    fn json_fields() {
        let v: serde_json::Value = serde_json::from_str(&json_line(&syn())).expect("json");
        assert_eq!(v["hook"], "tc-ingress");
        assert_eq!(v["type"], "packet");
        assert_eq!(v["tcp_flags"], "SYN");
        assert_eq!(v["flow"]["src"], "10.244.1.10");
        assert_eq!(v["flow"]["dport"], 15012);
        assert_eq!(v["flow"]["protocol"], "TCP");
        assert_eq!(v["time"], "1970-01-01T01:02:03.000042Z");
    }

    /// Handshake packets and drops are written by hand: byte for byte what serde writes,
    /// whatever is present (interface, flow, tunnel, process, inventory names, culprit, quoted
    /// flow, solicited address; names that need escaping).
    #[test]
    fn packets_and_drops_are_written_as_serde_writes_them() {
        use crate::events::model::{Captured, DropReason, Encapsulation, Process, TcpFlags, TunnelKind};
        use crate::inventory::Endpoint;
        let mut cases = Vec::new();
        for hook in [Hook::TcIngress, Hook::TcEgress, Hook::CgroupIngress, Hook::CgroupEgress, Hook::KfreeSkb] {
            let mut o = syn();
            o.hook = hook;
            cases.push(o);
        }
        let mut o = syn();
        o.interface = None;
        o.flow = None;
        o.detail = Detail::Packet { tcp_flags: TcpFlags::SYN | TcpFlags::ACK, tcp_seq: u32::MAX };
        cases.push(o);
        let mut o = syn();
        o.interface = Some("we\"ird\\name\u{1}é".into());
        o.time = UNIX_EPOCH + Duration::from_nanos(1_795_000_000_123_456_789);
        o.flow = o.flow.map(|f| Flow {
            protocol: Protocol(132),
            src: "fd00::1".parse().expect("v6"),
            dst: "fd00::2".parse().expect("v6"),
            ..f
        });
        o.encap = Some(Encapsulation {
            tunnel: TunnelKind::Vxlan,
            outer_src: IpAddr::V4(Ipv4Addr::new(172, 31, 1, 2)),
            outer_dst: IpAddr::V4(Ipv4Addr::new(172, 31, 2, 2)),
            vni: Some(1),
            udp_port: None,
        });
        o.detail = Detail::Packet { tcp_flags: TcpFlags::from_bits_truncate(0xff), tcp_seq: 0 };
        o.process = Some(Process { pid: 4242, comm: "pilot-agent".into() });
        o.src = Some(Endpoint {
            pod: Some("shop/cart".into()),
            port: Some(15008),
            istio_port: Some("hbone"),
            ..Default::default()
        });
        o.dst = Some(Endpoint { service: Some("istiod.istio-system".into()), ..Default::default() });
        cases.push(o.clone());
        o.src = None;
        o.process = None;
        cases.push(o);
        // Drops: plain, with a culprit, a quoted flow (ICMP), a solicited neighbour; the
        // packet's captured bytes are never written.
        let mut drop = cases[0].clone();
        drop.hook = Hook::KfreeSkb;
        drop.detail = Detail::Drop {
            drop_reason: DropReason::new(12, "NETFILTER_DROP"),
            location: "nf_hook_slow+0x10".into(),
            netns: 4026532000,
            culprit: None,
            quoted: None,
            packet: Captured(vec![0x45, 0, 0, 40].into()),
            solicited: None,
        };
        cases.push(drop.clone());
        let culprit = observer_core::netfilter::Culprit::not_identified(Some("FORWARD"), "no \"rule\" matched");
        if let Detail::Drop { culprit: c, quoted, solicited, drop_reason, .. } = &mut drop.detail {
            *c = Some(std::sync::Arc::new(culprit));
            *quoted = drop.flow;
            *solicited = Some("fd00::9".parse().expect("v6"));
            *drop_reason = DropReason::new(999, "SKB_DROP_REASON_999");
        }
        drop.src = Some(Endpoint { pod: Some("shop/cart".into()), ..Default::default() });
        cases.push(drop);
        let mut buf = Vec::new();
        for o in &cases {
            write_json(o, &mut buf);
            let serde = serde_json::to_vec(o).expect("json");
            assert_eq!(String::from_utf8_lossy(&buf), String::from_utf8_lossy(&serde));
        }
    }

    /// The reused buffer holds one object at a time, whatever it held before.
    #[test]
    fn json_into_a_reused_buffer() {
        let mut buf = b"{\"left\":\"over from a longer line\"}".repeat(20);
        write_json(&syn(), &mut buf);
        assert_eq!(buf, serde_json::to_vec(&syn()).expect("json"));
        let mut other = syn();
        other.interface = None;
        write_json(&other, &mut buf);
        let v: serde_json::Value = serde_json::from_slice(&buf).expect("json");
        assert_eq!(v["interface"], serde_json::Value::Null);
        assert_eq!(v["flow"]["sport"], 43512);
    }
}
