//! Host tier: the lab's recorded scenarios (observer/tests/recordings/NAME/, written by the
//! privileged tests/tests/replay_lab.rs) replayed through the engine without root or eBPF give
//! the findings the live `observer diagnose` gave (requirement, kind, mechanism, endpoints,
//! culprit) and the same counts.
#![allow(clippy::expect_used, clippy::panic)]

use std::{path::Path, sync::Arc};

use observer::{diagnose::diagnose_recording, inventory::Inventory};

fn essentials(findings: &[serde_json::Value]) -> Vec<serde_json::Value> {
    let mut out: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "requirement": f["requirement"],
                "kind": f["kind"],
                "mechanism": f["mechanism"],
                "src": f["src"],
                "dst": f["dst"],
                "culprit": f["culprit"],
            })
        })
        .collect();
    out.sort_by_key(|v| v.to_string());
    out
}

fn check(dir: &Path) -> usize {
    let inventory = Arc::new(Inventory::from_file(&dir.join("inventory.json")).expect("inventory"));
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).expect("expected.json"))
            .expect("expected.json is JSON");
    let replayed = diagnose_recording(&dir.join("recording.jsonl"), &inventory, None).expect("replay");
    assert_eq!(replayed.node, expected["node"].as_str().expect("node"), "{}", dir.display());
    let findings: Vec<serde_json::Value> =
        replayed.findings.iter().map(|f| serde_json::to_value(f).expect("finding JSON")).collect();
    let want = expected["findings"].as_array().cloned().unwrap_or_default();
    assert_eq!(essentials(&findings), want, "{}: findings differ from the live run", dir.display());
    let stats = serde_json::to_value(&replayed.stats).expect("stats");
    for stat in ["connections", "established", "refused_by_application", "unresolved", "events"] {
        assert_eq!(stats[stat], expected["stats"][stat], "{}: stats.{stat}", dir.display());
    }
    want.len()
}

#[test]
fn every_recorded_lab_scenario_replays_to_the_live_findings() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings");
    let mut dirs: Vec<_> = std::fs::read_dir(&root)
        .expect("recordings directory")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("recording.jsonl").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 8, "at least 8 recorded scenarios: {dirs:?}");
    let with_findings: usize = dirs.iter().map(|d| usize::from(check(d) > 0)).sum();
    assert!(with_findings >= 6, "most scenarios have findings to compare: {with_findings}");
}

#[test]
fn the_recorded_xds_drop_replays_with_its_confirmed_culprit() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/recordings/xds-dropped");
    let inventory = Arc::new(Inventory::from_file(&dir.join("inventory.json")).expect("inventory"));
    let r = diagnose_recording(&dir.join("recording.jsonl"), &inventory, Some("node-x")).expect("replay");
    assert_eq!(r.findings.len(), 1);
    let f = &r.findings[0];
    assert_eq!(f.node, "node-x", "--node-name overrides the recording's");
    let c = f.culprit.as_ref().expect("culprit");
    assert_eq!(c.confidence, observer::netfilter::Confidence::Confirmed);
    assert_eq!((c.table.as_deref(), c.chain.as_deref()), (Some("filter"), Some("FORWARD")));
    assert!(c.rule.as_deref().is_some_and(|r| r.ends_with("--dport 15012 -j DROP")), "{c:?}");
    assert!(f.remediation.contains("-A FORWARD -d"), "the remediation names the rule: {}", f.remediation);
}

#[test]
fn a_broken_recording_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("observer-bad-recording-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("bad.jsonl");
    std::fs::write(&path, "{\"format\":\"something-else\",\"version\":1}\n").expect("write");
    let inventory = Arc::new(Inventory::default());
    let err = diagnose_recording(&path, &inventory, None).err().expect("refused").to_string();
    assert!(err.contains("not an observer recording"), "{err}");
    std::fs::write(&path, "").expect("write");
    let err = diagnose_recording(&path, &inventory, None).err().expect("refused").to_string();
    assert!(err.contains("empty"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
