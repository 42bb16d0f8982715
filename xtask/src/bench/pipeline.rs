//! 2. Event pipeline: bounded SYN floods from a lab pod to a port node-a drops, at increasing
//!    rates, each under a fresh `observer trace`: events handled per second, ring-buffer losses,
//!    observer's CPU time per event.

use std::{thread, time::Duration};

use serde::Serialize;

use super::{procs::cpu_seconds, Bench, DROPPED_PORT};

#[derive(Debug, Serialize)]
pub struct FloodResult {
    /// Requested SYNs per second (0: as fast as the generator goes).
    pub target_rate: u64,
    pub syns_sent: u64,
    pub syn_rate: f64,
    /// Events observer printed (SYN at the pod veth and the bridge, the NETFILTER_DROP, ...).
    pub events: u64,
    pub events_per_sec: f64,
    /// Events the kernel could not queue (ring buffer full): counted, never silent.
    pub ringbuf_full: u64,
    pub cpu_secs: f64,
    pub cpu_us_per_event: f64,
}

/// SYN/s offered (0: as fast as the generator goes). Each dropped SYN makes 3 events (TC at the
/// pod's veth and at the uplink, kfree_skb; bridges carry no classifiers): 135k SYN/s is the
/// goal's 400k events/s.
pub const RATES: [u64; 5] = [10_000, 50_000, 100_000, 135_000, 0];
const FLOOD_SECS: f64 = 2.0;

pub fn run(b: &Bench<'_>) -> anyhow::Result<Vec<FloodResult>> {
    let mut out = Vec::new();
    for rate in RATES {
        let port = DROPPED_PORT.to_string();
        let observer = b.start_observer(&["trace", "--output", "json", "--port", &port], false)?;
        let cpu0 = cpu_seconds(observer.pid());
        let flood = b.syn_flood(rate, FLOOD_SECS)?;
        // Let the ring buffer drain and the held-back drops get their culprit.
        thread::sleep(Duration::from_millis(1500));
        let cpu = cpu_seconds(observer.pid()) - cpu0;
        let lines = observer.stop();
        let summary = lines.iter().rev().find(|l| l.contains("trace finished")).cloned().unwrap_or_default();
        let field = |name: &str| -> u64 {
            summary
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|v| v.trim_matches(|c: char| !c.is_ascii_digit()).parse().ok())
                .unwrap_or(0)
        };
        let events = field("events");
        let result = FloodResult {
            target_rate: rate,
            syns_sent: flood.0,
            syn_rate: flood.1,
            events,
            events_per_sec: events as f64 / FLOOD_SECS,
            ringbuf_full: field("ringbuf_full"),
            cpu_secs: cpu,
            cpu_us_per_event: if events > 0 { cpu * 1e6 / events as f64 } else { 0.0 },
        };
        println!(
            "   flood {:>7}/s: sent {:>7} ({:>8.0}/s), {:>7} events ({:>8.0}/s), ring buffer full {:>6}, {:.2} µs CPU/event",
            if rate == 0 { "max".to_string() } else { rate.to_string() },
            result.syns_sent,
            result.syn_rate,
            result.events,
            result.events_per_sec,
            result.ringbuf_full,
            result.cpu_us_per_event
        );
        out.push(result);
    }
    Ok(out)
}
