//! `--kernel-log`: the programs' log lines of rare paths reach `tracing`, gated (never one per
//! packet), and nothing is logged when it is off. The rare path is driven with a crafted frame
//! through BPF_PROG_TEST_RUN (as the hostile-frame tests do): an IPv6 SYN behind 9 destination
//! options headers, one more than the programs' bounded extension-header walk.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::sync::{Arc, Mutex};

use aya::{
    programs::{SchedClassifier, TestRun, TestRunOptions},
    Ebpf,
};
use observer::loader::{
    kernel_log::{KernelLog, LOG_MAP},
    programs::{load, load_options, program_mut, LoadOptions, TC_INGRESS},
};
use support::require_root;

const TC_ACT_PIPE: u32 = 3;
/// Runs of the frame per test (one BPF_PROG_TEST_RUN with `repeat`: one CPU, well within 1 s).
const REPEAT: u32 = 1000;

/// Ethernet + IPv6 (next header 60) + `n` 8-byte destination options headers (PadN) + a TCP SYN
/// from [fd00::1]:40000 to [fd00::2]:15012.
fn ipv6_syn_behind_destination_options(n: usize) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x86, 0xdd];
    let payload = (n * 8 + 20) as u16;
    frame.extend([0x60, 0, 0, 0]);
    frame.extend(payload.to_be_bytes());
    frame.extend([if n == 0 { 6 } else { 60 }, 64]);
    frame.extend("fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
    frame.extend("fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets());
    for i in 0..n {
        let next = if i + 1 == n { 6 } else { 60 };
        // Next header, length 0 (8 bytes), PadN of 4 bytes.
        frame.extend([next, 0, 1, 4, 0, 0, 0, 0]);
    }
    frame.extend(40000u16.to_be_bytes());
    frame.extend(15012u16.to_be_bytes());
    frame.extend(1u32.to_be_bytes()); // seq
    frame.extend(0u32.to_be_bytes()); // ack
    frame.extend([0x50, 0x02]); // data offset 5, SYN
    frame.extend(65535u16.to_be_bytes());
    frame.extend([0, 0, 0, 0]); // checksum, urgent
    frame
}

/// A `tracing` writer into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Runs the crafted frame `REPEAT` times through tc ingress, then forwards the programs' log
/// lines to a capturing `tracing` subscriber; returns what it printed.
fn run_and_forward(ebpf: &mut Ebpf, log: &mut KernelLog) -> String {
    run_frame_and_forward(ebpf, log, &ipv6_syn_behind_destination_options(9), REPEAT)
}

/// Runs `frame` `repeat` times through tc ingress (one test run: one CPU), then forwards the
/// log lines; returns what the subscriber printed.
fn run_frame_and_forward(ebpf: &mut Ebpf, log: &mut KernelLog, frame: &[u8], repeat: u32) -> String {
    let options = TestRunOptions { data_in: Some(frame), repeat, ..Default::default() };
    let program: &mut SchedClassifier = program_mut(ebpf, TC_INGRESS).expect("program");
    let result = program.test_run(options).expect("test run");
    assert_eq!(result.return_value, TC_ACT_PIPE, "the programs never change a packet's fate");
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::with_default(subscriber, || log.flush());
    captured.text()
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn with_kernel_log_on_a_parse_bound_reached_is_one_warning_in_tracing_for_a_thousand_packets() {
    require_root();
    let (mut ebpf, _) =
        load_options(LoadOptions { kernel_log: true, ..Default::default() }).expect("load with kernel log lines");
    let mut log = KernelLog::init(&mut ebpf).expect("the log ring buffer");
    let text = run_and_forward(&mut ebpf, &mut log);
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("extension header walk limit")).collect();
    assert_eq!(lines.len(), 1, "one line per second per CPU and site, not one per packet:\n{text}");
    let line = lines[0];
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("observer::kernel"), "the target operators filter on: {line}");
    assert!(
        line.contains("kernel: IPv6 extension header walk limit (8) reached (next header 60)"),
        "the bound and the header it stopped at: {line}"
    );
    // The gate holds on: within the second, another thousand packets log nothing more.
    let again = run_and_forward(&mut ebpf, &mut log);
    assert!(!again.contains("extension header walk limit"), "{again}");
    // A frame within the bound logs nothing.
    let within = ipv6_syn_behind_destination_options(8);
    let options = TestRunOptions { data_in: Some(&within), repeat: 10, ..Default::default() };
    let program: &mut SchedClassifier = program_mut(&mut ebpf, TC_INGRESS).expect("program");
    program.test_run(options).expect("test run");
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt().with_writer(move || writer.clone()).with_ansi(false).finish();
    tracing::subscriber::with_default(subscriber, || log.flush());
    assert_eq!(captured.text(), "", "8 headers are walked: nothing to log");
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn with_kernel_log_off_nothing_is_logged_and_the_log_buffer_is_one_page() {
    require_root();
    let (mut ebpf, _) = load().expect("load (kernel log off by default)");
    let map = ebpf.map(LOG_MAP).expect("the log ring buffer exists in the object");
    let aya::maps::Map::RingBuf(data) = map else { panic!("{LOG_MAP} is not a ring buffer") };
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u32;
    assert_eq!(data.info().expect("map info").max_entries(), page, "off: the log ring buffer is one page");
    // Read the buffer anyway (observer does not when off): the programs wrote nothing to it.
    let mut log = KernelLog::init(&mut ebpf).expect("the log ring buffer");
    let text = run_and_forward(&mut ebpf, &mut log);
    assert_eq!(text, "", "kernel log lines off: nothing logged");
}

/// Ethernet + IPv4 + a TCP SYN from 10.244.1.10:40000 to 10.244.2.10:15012.
fn ipv4_syn() -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1, 0x08, 0x00];
    frame.extend([0x45, 0, 0, 40, 0, 1, 0x40, 0, 64, 6, 0, 0, 10, 244, 1, 10, 10, 244, 2, 10]);
    frame.extend(40000u16.to_be_bytes());
    frame.extend(15012u16.to_be_bytes());
    frame.extend([0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    frame
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn with_kernel_log_on_a_full_event_ring_buffer_is_logged_once_not_per_lost_event() {
    require_root();
    let (mut ebpf, _) =
        load_options(LoadOptions { kernel_log: true, ..Default::default() }).expect("load with kernel log lines");
    let mut log = KernelLog::init(&mut ebpf).expect("the log ring buffer");
    let counter = |ebpf: &Ebpf| {
        let counters = observer::events::ringbuf::read_counters(ebpf).expect("counters");
        counters.named().into_iter().find(|(n, _)| *n == "ringbuf_full").map(|(_, v)| v).expect("ringbuf_full")
    };
    // Nothing reads the event ring buffer: 200,000 SYN events overflow it (a few MiB).
    let text = run_frame_and_forward(&mut ebpf, &mut log, &ipv4_syn(), 200_000);
    let lost = counter(&ebpf);
    assert!(lost > 1000, "the ring buffer overflowed: {lost} lost");
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("event ring buffer full")).collect();
    // One per second per CPU: the run takes well under a few seconds.
    assert!((1..=3).contains(&lines.len()), "{} lines for {lost} lost events:\n{text}", lines.len());
    assert!(lines[0].contains("WARN") && lines[0].contains("counted in ringbuf_full"), "{}", lines[0]);
}
