//! `observer trace` in a real terminal (tmux): aligned columns, colour, and the exit summary
//! after Ctrl-C.
#![allow(clippy::expect_used, clippy::panic)]

mod support;

use std::{
    net::SocketAddr,
    process::Command,
    time::{Duration, Instant},
};

use observer_lab::{FirewallRule, Hook};
use support::{lab, observer_bin, require_root};

/// A tmux server of our own (its own socket), killed at the end.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let out = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux (installed by cargo xtask setup)");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pane(&self, escapes: bool) -> String {
        let mut args = vec!["capture-pane", "-p", "-J", "-t", "trace"];
        if escapes {
            args.push("-e");
        }
        self.run(&args)
    }

    fn wait_for(&self, what: &str, limit: Duration) -> String {
        let start = Instant::now();
        loop {
            let pane = self.pane(false);
            if pane.contains(what) {
                return pane;
            }
            assert!(start.elapsed() < limit, "`{what}` not on the terminal within {limit:?}:\n{pane}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["-L", &self.socket, "kill-server"]).output();
    }
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn trace_in_a_terminal_has_aligned_columns_colour_and_a_summary() {
    require_root();
    let lab = lab();
    let istiod = lab.pod("istiod").expect("pod").clone();
    let tmux = Tmux { socket: format!("{}-tmux", lab.name) };
    let command = format!(
        "{} trace --netns {} --port 15012 --inventory {}; sleep 30",
        observer_bin().display(),
        lab.node_netns("node-a"),
        lab.inventory_path().display()
    );
    tmux.run(&["new-session", "-d", "-s", "trace", "-x", "260", "-y", "60", &command]);
    tmux.wait_for("ready", Duration::from_secs(30));
    lab.inject("node-a", &FirewallRule::drop_tcp_to(Hook::Forward, istiod.ip.into(), 15012)).expect("inject");
    let out = lab
        .connect_as_proxy("productpage", SocketAddr::from((istiod.ip, 15012)), Duration::from_millis(1200))
        .expect("connect");
    assert_eq!(out.result, "timeout");
    let pane = tmux.wait_for("NETFILTER_DROP", Duration::from_secs(10));

    let header = pane.lines().find(|l| l.starts_with("TIME ")).expect("header line");
    let columns = ["HOOK", "IFACE", "FLOW", "WHAT"].map(|c| header.find(c).expect("column"));
    let rows: Vec<&str> =
        pane.lines().filter(|l| l.len() > 20 && l.as_bytes()[2] == b':' && l.contains(" TCP ")).collect();
    assert!(rows.len() >= 3, "{pane}");
    for row in &rows {
        // Each field starts right where its header does.
        for (col, name) in columns.iter().zip(["HOOK", "IFACE", "FLOW", "WHAT"]).take(3) {
            assert_ne!(row.as_bytes()[*col], b' ', "column {name} misaligned in:\n{row}\n{header}");
            assert_eq!(row.as_bytes()[*col - 1], b' ', "column {name} misaligned in:\n{row}\n{header}");
        }
    }
    let drop_row = rows.iter().find(|r| r.contains("NETFILTER_DROP")).expect("drop row");
    assert!(drop_row[columns[2]..].starts_with("TCP 10.244.1.10:"), "{drop_row}");
    assert!(drop_row.contains("istio-system/istiod-") && drop_row.contains("(xds-tls)"), "{drop_row}");
    let coloured = tmux.pane(true);
    assert!(
        coloured.lines().any(|l| l.contains("NETFILTER_DROP") && l.contains("\u{1b}[31m")),
        "drops are red on a terminal"
    );

    tmux.run(&["send-keys", "-t", "trace", "C-c"]);
    let pane = tmux.wait_for("summary:", Duration::from_secs(10));
    let summary = pane.lines().find(|l| l.starts_with("summary:")).expect("summary");
    assert!(summary.contains(" dropped") && summary.contains("; lost 0;"), "{summary}");
    let dropped: u64 = summary
        .split(['(', ','])
        .find_map(|p| p.trim().strip_suffix(" dropped"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(dropped >= 1, "{summary}");
}
