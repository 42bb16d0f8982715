//! Shared helpers of observer's privileged tests.
#![allow(dead_code, clippy::panic)]

/// The first statement of every privileged test (loading eBPF): such a test is marked
/// `#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]`, so plain
/// `cargo test` reports it as ignored; run with `--include-ignored` by a non-root user, it fails
/// here, loudly, instead of passing without testing anything.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this privileged test loads eBPF programs and needs root, but runs as uid {euid}: run \
         `cargo xtask test` as root, or plain `cargo test` for the host-only tier"
    );
}
