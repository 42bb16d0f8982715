//! observer under interface churn: what it holds in the kernel follows the interfaces.
//! Removed interfaces give their tcx links and fds back; a burst of new interfaces (more
//! notifications than the monitor socket queues) is attached to in full, without exiting.
//! The kernel's own account is read from /proc/PID/fdinfo (every bpf link fd names its type,
//! id and ifindex there).

#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::{thread, time::Duration};

use support::{
    netns::{wait_until, Netns},
    require_root, Running,
};

/// A tcx link held by a process, as its fdinfo shows it.
#[derive(Debug)]
struct TcxLink {
    id: u64,
    ifindex: i64,
}

/// The tcx links the process holds (`link_type: tcx` in /proc/PID/fdinfo).
fn tcx_links(pid: u32) -> Vec<TcxLink> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else { return Vec::new() };
    dir.flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter(|info| info.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["link_type:", "tcx"]))
        .map(|info| {
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name).map(str::trim))
                    .and_then(|v| v.parse::<i64>().ok())
                    .unwrap_or(-1)
            };
            TcxLink { id: field("link_id:") as u64, ifindex: field("ifindex:") }
        })
        .collect()
}

fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

/// Starts observer on a namespace holding one veth pair (no dummy driver on every kernel);
/// returns it with its fd count once steady (4 tcx links: 2 interfaces, 2 directions).
fn observer_on(ns: &Netns, env: &[(&str, &str)]) -> (Running, usize) {
    ns.add_veths("base", 1);
    let observer = Running::start_with_env(&["trace", "--netns", &ns.0, "--output", "json"], env);
    let pid = observer.pid();
    wait_until("four tcx links on the base pair", Duration::from_secs(5), || {
        let links = tcx_links(pid);
        if links.len() == 4 {
            Ok(())
        } else {
            Err(format!("{links:?}"))
        }
    });
    thread::sleep(Duration::from_millis(300));
    (observer, fd_count(pid))
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn removed_interfaces_give_back_their_tcx_links_and_fds() {
    require_root();
    let ns = Netns::new("leak");
    let (mut observer, fds_before) = observer_on(&ns, &[]);
    let pid = observer.pid();
    let base_links: Vec<u64> = tcx_links(pid).iter().map(|l| l.id).collect();
    for round in 0..3 {
        ns.add_veths("lk", 10);
        wait_until(&format!("round {round}: 4 + 40 tcx links"), Duration::from_secs(15), || {
            let n = tcx_links(pid).len();
            if n == 44 {
                Ok(())
            } else {
                Err(format!("{n} links"))
            }
        });
        ns.delete_veths("lk", 10);
        wait_until(&format!("round {round}: back to the baseline"), Duration::from_secs(15), || {
            let (links, fds) = (tcx_links(pid), fd_count(pid));
            let ids: Vec<u64> = links.iter().map(|l| l.id).collect();
            if ids == base_links && fds == fds_before {
                Ok(())
            } else {
                Err(format!("fds {fds} (baseline {fds_before}), links {links:?} (baseline ids {base_links:?})"))
            }
        });
        assert!(observer.alive(), "observer exited: {:?}", observer.stderr());
    }
    assert!(tcx_links(pid).iter().all(|l| l.ifindex > 0), "no defunct link (ifindex 0) held");
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
    let detached = stderr.iter().filter(|l| l.contains("interface removed: classifiers detached")).count();
    assert_eq!(detached, 3 * 20, "every removed interface detached once:\n{}", stderr.join("\n"));
}

#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn a_burst_of_new_interfaces_is_attached_in_full() {
    require_root();
    let stderr = burst(&Netns::new("burst"), &[]);
    assert!(!stderr.iter().any(|l| l.contains("link notifications lost")), "the 4 MiB buffer held the burst");
}

/// With a monitor buffer far too small for the burst, notifications are lost (ENOBUFS):
/// observer relists the interfaces and ends up attached to all of them, as without the loss.
#[test]
#[ignore = "privileged: needs root (netns, eBPF); run by cargo xtask test"]
fn lost_link_notifications_are_recovered_by_relisting() {
    require_root();
    let stderr = burst(&Netns::new("ovf"), &[("OBSERVER_LINK_MONITOR_RCVBUF", "4096")]);
    assert!(
        stderr.iter().any(|l| l.contains("link notifications lost")),
        "the overflow was seen and reported: {stderr:?}"
    );
}

/// 60 veth pairs added at once, then deleted at once: observer follows to the exact link and
/// fd count, and keeps running. Returns its stderr.
fn burst(ns: &Netns, env: &[(&str, &str)]) -> Vec<String> {
    let (mut observer, fds_before) = observer_on(ns, env);
    let pid = observer.pid();
    // 60 veth pairs at once: 120 interfaces, several hundred link notifications in one burst.
    ns.add_veths("bu", 60);
    wait_until("4 + 240 tcx links", Duration::from_secs(60), || {
        assert!(observer.alive(), "observer exited during the burst: {:?}", observer.stderr());
        let n = tcx_links(pid).len();
        if n == 244 {
            Ok(())
        } else {
            Err(format!("{n} links"))
        }
    });
    assert!(observer.alive(), "observer exited: {:?}", observer.stderr());
    let mut ifindexes: Vec<i64> = tcx_links(pid).iter().map(|l| l.ifindex).collect();
    ifindexes.sort_unstable();
    ifindexes.dedup();
    assert_eq!(ifindexes.len(), 122, "every interface has its own two links");
    // And the same burst the other way.
    ns.delete_veths("bu", 60);
    wait_until("back to the baseline", Duration::from_secs(60), || {
        let (n, fds) = (tcx_links(pid).len(), fd_count(pid));
        if n == 4 && fds == fds_before {
            Ok(())
        } else {
            Err(format!("{n} links, {fds} fds (baseline {fds_before})"))
        }
    });
    assert!(observer.alive(), "observer exited: {:?}", observer.stderr());
    let (status, stderr) = observer.stop_with_stderr();
    assert!(status.success(), "observer exit {status}: {stderr:?}");
    stderr
}
