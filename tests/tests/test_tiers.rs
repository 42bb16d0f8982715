//! The test tiers hold across the workspace's integration tests: plain `cargo test` runs only
//! host-only tests, and every privileged test is marked so that, when not run, it is reported as
//! ignored, never as passed (see README, "Tests").
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::path::{Path, PathBuf};

/// The exact marker of a privileged test (the text `cargo test` prints next to "ignored").
const PRIVILEGED: &str = "#[ignore = \"privileged: needs root (netns, eBPF); run by cargo xtask test\"]";

/// Calls that make a test privileged: it needs root, or builds a lab (network namespaces).
const PRIVILEGED_CALLS: [&str; 2] = ["require_root()", "lab()"];

fn test_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut files = Vec::new();
    for dir in ["tests/tests", "observer/tests"] {
        for entry in std::fs::read_dir(root.join(dir)).expect("test directory") {
            let path = entry.expect("entry").path();
            // This file holds the patterns it looks for, as test data.
            if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("test_tiers.rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() >= 5, "expected the workspace's test files, found {files:?}");
    files
}

/// One `#[test]` function: its attributes and its body (up to the next test or the file's end).
struct TestFn {
    name: String,
    attributes: Vec<String>,
    body: String,
}

/// Splits a test file into its `#[test]` functions.
fn tests_of(source: &str) -> Vec<TestFn> {
    let mut out = Vec::new();
    for chunk in source.split("#[test]\n").skip(1) {
        let mut attributes = Vec::new();
        let mut lines = chunk.lines();
        let mut name = String::new();
        for line in lines.by_ref() {
            let line = line.trim();
            if line.starts_with("#[") {
                attributes.push(line.to_string());
            } else if let Some(rest) = line.strip_prefix("fn ").or_else(|| line.strip_prefix("async fn ")) {
                name = rest.split('(').next().unwrap_or_default().to_string();
                break;
            }
        }
        out.push(TestFn { name, attributes, body: lines.collect::<Vec<_>>().join("\n") });
    }
    out
}

/// Every test that needs root or a lab is marked privileged and asserts root first; no test
/// passes by returning early when not root.
fn violations(file: &str, source: &str) -> Vec<String> {
    let mut found = Vec::new();
    if source.contains("OBSERVER_SKIP_PRIVILEGED") || source.contains("if !require_root") {
        found.push(format!("{file}: a privileged test returns early (skip = pass); mark it {PRIVILEGED}"));
    }
    for test in tests_of(source) {
        let marked = test.attributes.iter().any(|a| a == PRIVILEGED);
        let needs = PRIVILEGED_CALLS.iter().any(|call| test.body.contains(call));
        if needs && !marked {
            found.push(format!("{file}: {} needs root but is not marked {PRIVILEGED}", test.name));
        }
        let first = test.body.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with("use "));
        if marked && first != Some("require_root();") {
            found.push(format!("{file}: {} is marked privileged but does not start with require_root();", test.name));
        }
    }
    found
}

#[test]
fn every_privileged_test_is_marked_and_fails_loudly_without_root() {
    let mut all = Vec::new();
    let mut privileged = 0;
    for path in test_files() {
        let source = std::fs::read_to_string(&path).expect("read test file");
        privileged += tests_of(&source).iter().filter(|t| t.attributes.iter().any(|a| a == PRIVILEGED)).count();
        all.extend(violations(&path.display().to_string(), &source));
    }
    assert!(all.is_empty(), "test tiers broken:\n{}", all.join("\n"));
    assert!(privileged >= 40, "only {privileged} privileged tests found: is the marker still {PRIVILEGED}?");
}

#[test]
fn the_checker_catches_an_early_return_and_a_missing_marker() {
    let early_return = "#[test]\nfn t() {\n    if !require_root() {\n        return;\n    }\n    let lab = lab();\n}\n";
    let found = violations("x.rs", early_return);
    assert!(found.iter().any(|v| v.contains("skip = pass")), "{found:?}");
    assert!(found.iter().any(|v| v.contains("t needs root but is not marked")), "{found:?}");
    let good = format!("#[test]\n{PRIVILEGED}\nfn t() {{\n    require_root();\n    let lab = lab();\n}}\n");
    assert_eq!(violations("x.rs", &good), Vec::<String>::new());
    let host = "#[test]\nfn parses() {\n    assert_eq!(1 + 1, 2);\n}\n";
    assert_eq!(violations("x.rs", host), Vec::<String>::new());
    let needless = format!("#[test]\n{PRIVILEGED}\nfn t() {{\n    assert!(true);\n}}\n");
    assert!(!violations("x.rs", &needless).is_empty());
}
