//! The test API server (observer-test-apiserver) speaks the protocol clients rely on: bearer
//! tokens, TLS with its CA, list pages with continue tokens, watches resuming from a
//! resourceVersion (chunked JSON lines) or answered with 410 Gone, Events validated like a real
//! server. Host-only: no root, no lab (loopback only).
#![allow(clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead as _, BufReader},
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::{json, Value};

struct Server {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(inventory: &Value) -> Server {
    let dir = std::env::temp_dir().join(format!("observer-apiserver-protocol-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("inventory.json"), inventory.to_string()).expect("inventory");
    let port = TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
    // Cargo builds the package's binary for its integration tests and names it here.
    let bin = env!("CARGO_BIN_EXE_observer-test-apiserver");
    let mut child = Command::new(bin)
        .arg("--dir")
        .arg(&dir)
        .arg("--inventory")
        .arg(dir.join("inventory.json"))
        .args(["--listen", &format!("127.0.0.1:{port}"), "--rv-start", "100", "--history", "3"])
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let start = Instant::now();
    loop {
        let line = lines.next().expect("server ended").expect("line");
        if line.contains("listening on https://") {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "not listening");
    }
    std::thread::spawn(move || for _ in lines {});
    Server { child, dir, port }
}

fn curl(dir: &Path, port: u16, token: Option<&str>, args: &[&str], path: &str) -> String {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "5", "--cacert"]).arg(dir.join("ca.crt"));
    if let Some(token) = token {
        cmd.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    cmd.args(args).arg(format!("https://127.0.0.1:{port}{path}"));
    let out = cmd.output().expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "shop"},
           "status": {"podIP": "10.244.1.9"}})
}

#[test]
fn lists_page_watches_resume_or_are_gone_and_events_are_validated() {
    let inventory = json!({"kind": "List", "apiVersion": "v1", "items": [pod("a"), pod("b"), pod("c")]});
    let s = start(&inventory);
    let token = std::fs::read_to_string(s.dir.join("token")).expect("token");
    let token = Some(token.trim());
    let get = |path: &str| -> Value { serde_json::from_str(&curl(&s.dir, s.port, token, &[], path)).expect("json") };

    // No token: 401 Status.
    let denied: Value = serde_json::from_str(&curl(&s.dir, s.port, None, &[], "/api/v1/pods")).expect("json");
    assert_eq!((denied["kind"].as_str(), denied["code"].as_u64()), (Some("Status"), Some(401)));

    // Pages of 2 with a continue token, at the list's resourceVersion.
    let first = get("/api/v1/pods?limit=2");
    assert_eq!(first["kind"], "PodList");
    assert_eq!(first["metadata"]["resourceVersion"], "103");
    assert_eq!(first["items"].as_array().expect("items").len(), 2);
    let token_next = first["metadata"]["continue"].as_str().expect("continue");
    let second = get(&format!("/api/v1/pods?limit=2&continue={token_next}"));
    assert_eq!(second["items"].as_array().expect("items").len(), 1);
    assert_eq!(second["items"][0]["metadata"]["name"], "c");
    assert!(second["metadata"]["continue"].is_null());

    // A watch from 101 replays what came after it (chunked JSON lines), then ends on timeout.
    let lines = curl(&s.dir, s.port, token, &[], "/api/v1/pods?watch=true&resourceVersion=101&timeoutSeconds=1");
    let events: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).expect("json line")).collect();
    assert_eq!(events.iter().map(|e| e["type"].as_str().unwrap_or("")).collect::<Vec<_>>(), ["ADDED", "ADDED"]);
    assert_eq!(events[1]["object"]["metadata"]["resourceVersion"], "103");

    // More changes push 101 out of the 3-change history: 410 Gone as a watch ERROR event.
    for name in ["d", "e"] {
        let created = curl(
            &s.dir,
            s.port,
            token,
            &["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &pod(name).to_string()],
            "/api/v1/namespaces/shop/pods",
        );
        assert!(created.contains(&format!("\"name\":\"{name}\"")), "{created}");
    }
    let gone = curl(&s.dir, s.port, token, &[], "/api/v1/pods?watch=true&resourceVersion=101&timeoutSeconds=1");
    let gone: Value = serde_json::from_str(gone.lines().next().expect("a line")).expect("json");
    assert_eq!((gone["type"].as_str(), gone["object"]["code"].as_u64()), (Some("ERROR"), Some(410)));
    assert_eq!(gone["object"]["reason"], "Expired");

    // Events: required fields enforced; series-only updates; the core/v1 view by reportingComponent.
    let mut event = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"name": "a.observer-1", "namespace": "shop"},
        "eventTime": "2026-11-30T00:00:00.000000Z", "reportingController": "observer",
        "reportingInstance": "node-a", "action": "Diagnosed", "reason": "ControlPlaneBlocked",
        "type": "Warning", "note": "R5", "regarding": {"kind": "Pod", "namespace": "shop", "name": "a"}
    });
    let post = |body: &Value| -> Value {
        let args = ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &body.to_string()];
        serde_json::from_str(&curl(&s.dir, s.port, token, &args, "/apis/events.k8s.io/v1/namespaces/shop/events"))
            .expect("json")
    };
    let mut no_action = event.clone();
    no_action.as_object_mut().expect("object").remove("action");
    assert_eq!(post(&no_action)["code"], 422);
    assert_eq!(post(&event)["metadata"]["name"], "a.observer-1");
    assert_eq!(post(&event)["reason"], "AlreadyExists");
    let patch = |body: &Value| -> Value {
        let args =
            ["-X", "PATCH", "-H", "Content-Type: application/merge-patch+json", "--data-binary", &body.to_string()];
        serde_json::from_str(&curl(
            &s.dir,
            s.port,
            token,
            &args,
            "/apis/events.k8s.io/v1/namespaces/shop/events/a.observer-1",
        ))
        .expect("json")
    };
    assert_eq!(patch(&json!({"note": "changed"}))["code"], 422, "only the series may change");
    let patched = patch(&json!({"series": {"count": 7, "lastObservedTime": "2026-11-30T00:01:00.000000Z"}}));
    assert_eq!(patched["series"]["count"], 7);
    event["metadata"]["name"] = json!("other");
    event["reportingController"] = json!("someone-else");
    post(&event);
    let core = get("/api/v1/events?fieldSelector=reportingComponent%3Dobserver");
    let items = core["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{core:#}");
    assert_eq!(items[0]["involvedObject"]["name"], "a");
    assert_eq!(items[0]["series"]["count"], 7);

    // Cross-node inquiries: Events about a Node live in `default`, and an agent selects those
    // about its own Node with one reason (core/v1 field selectors on involvedObject and reason).
    let inquiry = |name: &str, node: &str| {
        json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": name, "namespace": "default"},
            "eventTime": "2026-11-30T00:00:00.000000Z", "reportingController": "observer",
            "reportingInstance": "node-a", "action": "Inquire", "reason": "FlowInquiry", "type": "Normal",
            "note": "?", "regarding": {"apiVersion": "v1", "kind": "Node", "name": node}
        })
    };
    let post_default = |body: &Value| -> Value {
        let args = ["-X", "POST", "-H", "Content-Type: application/json", "--data-binary", &body.to_string()];
        serde_json::from_str(&curl(&s.dir, s.port, token, &args, "/apis/events.k8s.io/v1/namespaces/default/events"))
            .expect("json")
    };
    assert_eq!(post_default(&inquiry("q1", "node-b"))["metadata"]["name"], "q1");
    assert_eq!(post_default(&inquiry("q2", "node-c"))["metadata"]["name"], "q2");
    let mut elsewhere = inquiry("q3", "node-b");
    elsewhere["metadata"]["namespace"] = json!("shop");
    assert_eq!(post(&elsewhere)["code"], 422, "an Event about a Node lives in default");
    let selected = get(
        "/api/v1/events?fieldSelector=involvedObject.kind%3DNode%2CinvolvedObject.name%3Dnode-b%2Creason%3DFlowInquiry",
    );
    let names: Vec<&str> =
        selected["items"].as_array().expect("items").iter().filter_map(|e| e["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["q1"], "{selected:#}");
}
