//! Every program passes the verifier on this kernel: the release build embedded in the binary
//! (what aya-build produces) and a debug-profile build made here with `cargo build`.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use observer::loader::programs::{load, KernelInfo};
use support::require_root;

/// On this kernel (6.18 with BTF) every optional hook must load, not just degrade.
fn assert_all_hooks(info: &KernelInfo, build: &str) {
    assert!(info.drops_available, "{build}: kfree_skb tracepoint refused");
    assert!(info.connect_available, "{build}: connect4/connect6 refused");
    assert!(info.sockops_available, "{build}: sock_ops refused");
    assert!(info.cgroup_skb_available, "{build}: cgroup_skb refused");
    assert!(info.tcp_tracepoints_available, "{build}: tcp_retransmit_skb/tcp_send_reset refused");
    assert_eq!(info.offsets.valid, 1);
}

#[test]
fn release_build_passes_the_verifier() {
    if !require_root() {
        return;
    }
    let (_ebpf, info) = load().expect("load the embedded release build");
    assert_all_hooks(&info, "release");
}

/// The debug-profile object, built with `cargo build` (dev profile: full debug info; optimized
/// and without overflow/UB-check panic paths, as every BPF build must be — see the workspace
/// Cargo.toml) into its own target directory, then loaded like the release build.
#[test]
fn debug_build_passes_the_verifier() {
    if !require_root() {
        return;
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let target_dir = root.join("target/ebpf-debug");
    let mut cmd = std::process::Command::new("cargo");
    cmd.current_dir(&root).env("CARGO_TARGET_DIR", &target_dir).args([
        "+nightly",
        "build",
        "-p",
        "observer-ebpf",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
    ]);
    // The dependencies (core, aya-ebpf, observer-common) get the same BPF-safe dev settings as
    // observer-ebpf itself has in the workspace manifest.
    for package in ["\"*\"", "observer-common"] {
        for setting in ["opt-level=3", "debug-assertions=false", "overflow-checks=false"] {
            cmd.args(["--config", &format!("profile.dev.package.{package}.{setting}")]);
        }
    }
    // Let the nested cargo find rustup's nightly and bpf-linker.
    for var in ["RUSTC", "RUSTC_WRAPPER", "CARGO_ENCODED_RUSTFLAGS", "RUSTFLAGS", "RUSTUP_TOOLCHAIN"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("run cargo +nightly build for the debug eBPF object");
    assert!(status.success(), "building the debug-profile eBPF object failed: {status}");
    let object = std::fs::read(target_dir.join("bpfel-unknown-none/debug/observer")).expect("debug object");
    let (_ebpf, info) = observer::loader::programs::load_object(&object).expect("load the debug build");
    assert_all_hooks(&info, "debug");
}
