//! 3. Detection latency: from the first blocked SYN (just before the client starts) to the
//!    `finding:` line of `observer diagnose`, over repeated trials (each with an observer of its
//!    own, started before the trial's clock): a netfilter drop on node-a (with and without
//!    naming the culprit rule), and a silent drop in the underlay.

use std::{net::SocketAddr, time::Duration, time::Instant};

use anyhow::Context as _;
use serde::Serialize;

use super::{
    procs::{median, quantile},
    Bench, DROPPED_PORT, SILENT_PORT,
};

#[derive(Debug, Serialize)]
pub struct LatencyResult {
    pub case: &'static str,
    pub trials: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub samples_ms: Vec<f64>,
}

pub fn run(b: &Bench<'_>, trials: usize) -> anyhow::Result<Vec<LatencyResult>> {
    Ok(vec![
        measure(b, "netfilter drop (culprit named)", DROPPED_PORT, &[], Duration::from_millis(300), trials)?,
        measure(
            b,
            "netfilter drop (--no-culprit)",
            DROPPED_PORT,
            &["--no-culprit"],
            Duration::from_millis(300),
            trials,
        )?,
        measure(b, "silent drop beyond the node", SILENT_PORT, &[], Duration::from_millis(1300), trials)?,
    ])
}

fn measure(
    b: &Bench<'_>,
    case: &'static str,
    port: u16,
    extra: &[&str],
    client_timeout: Duration,
    trials: usize,
) -> anyhow::Result<LatencyResult> {
    let mut args = vec!["diagnose", "--output", "json"];
    args.extend(extra);
    let target = SocketAddr::from((b.server_ip, port));
    let mut samples = Vec::with_capacity(trials);
    for _ in 0..trials {
        // A fresh observer per trial: a diagnosis announces a finding once (later attempts of the
        // same flow update it silently), so each trial's attempt must be a new finding.
        let observer = b.start_observer(&args, false)?;
        let started = Instant::now();
        b.lab.connect(&b.client_app, target, client_timeout).context("connect")?;
        let needle = format!(":{port}");
        let deadline = started + Duration::from_secs(5);
        let seen = loop {
            if let Some(at) = observer.find_after("finding:", &needle, started) {
                break Some(at);
            }
            if Instant::now() > deadline {
                break None;
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let at = seen.with_context(|| {
            let lines = observer.lines();
            let tail = lines[lines.len().saturating_sub(20)..].join("\n");
            format!("{case}: no finding within 5 s; observer's last lines:\n{tail}")
        })?;
        samples.push(at.duration_since(started).as_secs_f64() * 1e3);
        observer.stop();
    }
    let result = LatencyResult {
        case,
        trials,
        p50_ms: median(&samples),
        p99_ms: quantile(&samples, 0.99),
        max_ms: samples.iter().copied().fold(0.0, f64::max),
        samples_ms: samples,
    };
    println!("   {case:<32} p50 {:>7.1} ms  p99 {:>7.1} ms  ({} trials)", result.p50_ms, result.p99_ms, trials);
    Ok(result)
}
