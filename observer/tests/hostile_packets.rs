//! Hostile frames (observer/tests/hostile/frames.py, written with scapy) fed through
//! BPF_PROG_TEST_RUN to all four packet hooks: each run returns "continue", emits exactly the
//! expected number of events (all decodable), and grows the parse-error counter by exactly the
//! expected amount. Needs `python3` with scapy (`cargo xtask setup` installs it).
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use aya::{
    programs::{CgroupSkb, SchedClassifier, TestRun, TestRunOptions},
    Ebpf,
};
use observer::{
    events::ringbuf::{read_counters, EventSource},
    loader::programs::{program_mut, CGROUP_EGRESS, CGROUP_INGRESS, TC_EGRESS, TC_INGRESS},
};
use support::require_root;

const TC_ACT_PIPE: u32 = 3;
const CGROUP_ALLOW: u32 = 1;

#[derive(serde::Deserialize)]
struct Frame {
    name: String,
    hex: String,
    events: u64,
    parse_errors: u64,
    /// The TC hooks' events when they differ (a tunnel's inner SYN: only TC sees outer packets).
    #[serde(default)]
    tc_events: Option<u64>,
}

fn frames() -> Vec<Frame> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/hostile/frames.py");
    let out = std::process::Command::new("python3").arg(script).output().expect("run python3");
    assert!(
        out.status.success(),
        "{script} failed (scapy missing? `cargo xtask setup` installs it): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn bytes(hex: &str) -> Vec<u8> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect()
}

fn counter(ebpf: &Ebpf, name: &str) -> u64 {
    read_counters(ebpf)
        .expect("counters")
        .named()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .expect("counter")
}

/// Runs `program` on `data`; returns its return value.
fn run(ebpf: &mut Ebpf, program: &'static str, data: &[u8]) -> Result<u32, String> {
    let options = TestRunOptions { data_in: Some(data), repeat: 1, ..Default::default() };
    let result = if program.starts_with("observer_tc") {
        program_mut::<SchedClassifier>(ebpf, program).expect("program").test_run(options)
    } else {
        program_mut::<CgroupSkb>(ebpf, program).expect("program").test_run(options)
    };
    result.map(|r| r.return_value).map_err(|e| format!("{e:?}"))
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn hostile_frames_continue_and_are_counted_exactly() {
    require_root();
    let frames = frames();
    assert!(frames.len() >= 60, "at least 60 hostile frames, got {}", frames.len());
    let (mut ebpf, _) = observer::loader::load().expect("load programs");
    let mut events = EventSource::new(&mut ebpf).expect("ring buffer");
    // The tunnel ports a session writes at start (VXLAN 4789/8472, Geneve 6081).
    observer::loader::tunnel_ports::apply(&mut ebpf, &observer_common::filter::DEFAULT_TUNNEL_PORTS)
        .expect("tunnel ports");
    let mut failures = Vec::new();
    for program in [TC_INGRESS, TC_EGRESS, CGROUP_INGRESS, CGROUP_EGRESS] {
        let pass = if program.starts_with("observer_tc") { TC_ACT_PIPE } else { CGROUP_ALLOW };
        for frame in &frames {
            let data = bytes(&frame.hex);
            let before = (counter(&ebpf, "tc_packets"), counter(&ebpf, "tc_events"), counter(&ebpf, "tc_parse_errors"));
            let rc = run(&mut ebpf, program, &data);
            let mut emitted = 0u64;
            events.poll(0, None, |_| emitted += 1).expect("poll");
            let after = (counter(&ebpf, "tc_packets"), counter(&ebpf, "tc_events"), counter(&ebpf, "tc_parse_errors"));
            let got = (rc, after.0 - before.0, emitted, after.1 - before.1, after.2 - before.2);
            let events_want =
                if program.starts_with("observer_tc") { frame.tc_events.unwrap_or(frame.events) } else { frame.events };
            let want = (Ok(pass), 1, events_want, events_want, frame.parse_errors);
            if got != want {
                failures.push(format!(
                    "{program} `{}` ({} bytes): (rc, seen, events, tc_events, parse_errors) = {got:?}, want {want:?}",
                    frame.name,
                    data.len()
                ));
            }
        }
    }
    assert_eq!(events.undecodable, 0, "every emitted record decodes");
    assert!(failures.is_empty(), "{} of {} runs differ:\n{}", failures.len(), 4 * frames.len(), failures.join("\n"));
}
