//! Every program passes the verifier on this kernel (the release build embedded in the binary,
//! the only build aya-build produces).
//!
//! A debug-profile build is not loadable yet: its BTF keeps Rust `Option<..>` types of
//! non-inlined closures, which the kernel rejects ("Invalid member bits_offset") before the
//! verifier runs.
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
