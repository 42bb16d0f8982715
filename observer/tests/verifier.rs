//! Every program passes the verifier on this kernel: the release build embedded in the binary
//! (what aya-build produces) and the debug-profile build that `cargo xtask test` makes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use observer::loader::programs::{load, KernelInfo, OPTIONAL_PROGRAMS};
use support::require_root;

/// On this kernel (6.18 with BTF) every optional hook must load, not just degrade.
fn assert_all_hooks(info: &KernelInfo, build: &str) {
    assert!(info.drops_available, "{build}: kfree_skb tracepoint refused");
    assert!(info.connect_available, "{build}: connect4/connect6 refused");
    assert!(info.sockops_available, "{build}: sock_ops refused");
    assert!(info.cgroup_skb_available, "{build}: cgroup_skb refused");
    assert!(info.tcp_tracepoints_available, "{build}: tcp_retransmit_skb/tcp_send_reset refused");
    let missing: Vec<&str> = OPTIONAL_PROGRAMS.iter().map(|p| p.name).filter(|name| !info.has(name)).collect();
    assert!(missing.is_empty(), "{build}: optional programs refused: {missing:?}");
    assert_eq!(info.offsets.valid, 1);
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn release_build_passes_the_verifier() {
    require_root();
    let (_ebpf, info) = load().expect("load the embedded release build");
    assert_all_hooks(&info, "release");
}

/// `--cgroup-skb off` (diagnose's and the agent's default): the two cgroup_skb programs are not
/// even loaded (no verifier time at start-up); every other hook still is.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn without_cgroup_skb_the_socket_packet_programs_are_not_loaded() {
    use observer::loader::programs::{load_options, LoadOptions, CGROUP_SKB_PROGRAMS};
    require_root();
    let (ebpf, info) =
        load_options(LoadOptions { cgroup_skb: false, ..Default::default() }).expect("load without cgroup_skb");
    assert!(!info.cgroup_skb_available);
    for name in CGROUP_SKB_PROGRAMS {
        assert!(!info.has(name), "{name} reported loaded");
        let program = ebpf.program(name).expect("the program is in the object");
        assert!(program.fd().is_err(), "{name} has a kernel fd: it was loaded");
    }
    assert!(info.drops_available && info.connect_available && info.sockops_available && info.tcp_tracepoints_available);
    let others: Vec<&str> =
        OPTIONAL_PROGRAMS.iter().map(|p| p.name).filter(|n| !CGROUP_SKB_PROGRAMS.contains(n)).collect();
    assert!(others.iter().all(|n| info.has(n)), "other optional programs missing: {:?}", info.loaded);
}

/// With `--kernel-log` the programs' log statements are live code (off, `AYA_LOG_LEVEL` is a
/// read-only 0 and the verifier may treat them as dead code): they must pass too.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn release_build_with_kernel_log_lines_passes_the_verifier() {
    require_root();
    let options = observer::loader::programs::LoadOptions { kernel_log: true, ..Default::default() };
    let (_ebpf, info) = observer::loader::programs::load_options(options).expect("load with kernel log lines on");
    assert_all_hooks(&info, "release, kernel log on");
}

/// The environment variable naming the debug-profile eBPF object (set by `cargo xtask test`).
const DEBUG_OBJECT_VAR: &str = "OBSERVER_EBPF_DEBUG_OBJECT";

/// The debug-profile object, built by `cargo xtask test` (dev profile: full debug info; optimized
/// and without overflow/UB-check panic paths, as every BPF build must be — see the workspace
/// Cargo.toml) and named by `OBSERVER_EBPF_DEBUG_OBJECT`, loaded like the release build. Building
/// it takes a nested nightly cargo, which is xtask's job, not `cargo test`'s.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn debug_build_passes_the_verifier() {
    require_root();
    let path = std::env::var_os(DEBUG_OBJECT_VAR).unwrap_or_else(|| {
        panic!("{DEBUG_OBJECT_VAR} is not set: `cargo xtask test` builds the debug-profile eBPF object and sets it")
    });
    let object = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("reading the debug eBPF object {}: {e}", std::path::Path::new(&path).display()));
    let (ebpf, info) = observer::loader::programs::load_object(&object).expect("load the debug build");
    assert_all_hooks(&info, "debug");
    drop(ebpf);
    let options = observer::loader::programs::LoadOptions { kernel_log: true, ..Default::default() };
    let (_ebpf, info) =
        observer::loader::programs::load_with(&object, options).expect("load the debug build, kernel log on");
    assert_all_hooks(&info, "debug, kernel log on");
}
