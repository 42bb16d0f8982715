//! observer's one-line errors for missing privileges, unknown namespaces and bad flags.

mod support;

use std::process::Command;

use support::{observer_bin, require_root, run_observer_as};

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn without_privileges_it_names_the_missing_capabilities() {
    require_root();
    let (code, stderr) = run_observer_as(65534, &["trace", "--duration", "1"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("missing capabilities CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN, CAP_SYS_ADMIN"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one clear line: {stderr}");
}

#[test]
fn an_unknown_namespace_is_named() {
    let out = Command::new(observer_bin()).args(["trace", "--netns", "no-such-ns-4242"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("network namespace `no-such-ns-4242` not found at /run/netns/no-such-ns-4242"), "{stderr}");
}

/// review5 12: a file that exists but is no network namespace is named as such, not as a
/// missing capability (setns answers EINVAL).
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_file_that_is_no_network_namespace_is_named_so() {
    require_root();
    let path = std::env::temp_dir().join(format!("observer-not-a-netns-{}", std::process::id()));
    std::fs::write(&path, "node-a\n").expect("write");
    let out =
        Command::new(observer_bin()).args(["trace", "--duration", "1", "--netns"]).arg(&path).output().expect("run");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{} is not a network namespace file", path.display())), "{stderr}");
    assert!(!stderr.contains("CAP_SYS_ADMIN"), "{stderr}");
}

#[test]
fn unknown_flags_and_values_are_rejected_with_the_valid_ones() {
    let out = Command::new(observer_bin()).args(["trace", "--output", "yaml"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("possible values: text, json"), "{stderr}");
}

#[test]
fn a_bad_inventory_is_named_with_the_item_and_field() {
    let path = std::env::temp_dir().join(format!("observer-bad-inventory-{}.json", std::process::id()));
    std::fs::write(&path, r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p","namespace":"ns"},"status":{"podIP":"10.0.0.999"}}]}"#)
        .expect("write");
    let out = Command::new(observer_bin()).args(["trace", "--inventory"]).arg(&path).output().expect("run");
    let _ = std::fs::remove_file(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("items[0] (Pod ns/p): status.podIP: `10.0.0.999` is not an IP address"), "{stderr}");
    let out = Command::new(observer_bin()).args(["trace", "--cidr", "10.0.0.0/40"]).output().expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr.contains("`10.0.0.0/40` is not a CIDR"), "{stderr}");
}

#[test]
fn verify_names_a_missing_inventory_and_an_unknown_namespace() {
    let out = Command::new(observer_bin())
        .args(["verify", "--inventory", "/nonexistent/inventory.json"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("/nonexistent/inventory.json"), "{stderr}");
    let inventory = concat!(env!("CARGO_MANIFEST_DIR"), "/../observer/tests/fixtures/lab-inventory.json");
    let out = Command::new(observer_bin())
        .args(["verify", "--inventory", inventory, "--netns", "no-such-ns-4242"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr.contains("network namespace `no-such-ns-4242` not found"), "{stderr}");
}
