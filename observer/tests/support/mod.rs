//! Shared helpers of observer's privileged tests.
#![allow(dead_code, clippy::panic)]

/// Loading eBPF needs root; without it the test fails loudly unless explicitly skipped.
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if std::env::var_os("OBSERVER_SKIP_PRIVILEGED").is_some() {
        eprintln!("skipping: needs root");
        return false;
    }
    panic!("needs root to load eBPF programs; run `cargo xtask test` as root or set OBSERVER_SKIP_PRIVILEGED=1");
}
