//! `cls_bpf` filters of observer's classifiers that a killed observer left behind (a filter is
//! no file the kernel closes with the process, unlike a tcx link): found by their program's
//! name, and removed when no running process holds their program (a live observer holds its
//! programs' fds, so its filters are never taken).
//!
//! Kernel facts: rtnetlink RTM_GETTFILTER/RTM_DELTFILTER on the clsact hooks
//! (`TC_H_MAKE(TC_H_CLSACT, TC_H_MIN_INGRESS/EGRESS)`), `struct tcmsg`, the `TCA_BPF_*`
//! attributes of include/uapi/linux/pkt_cls.h, and the `prog_id:` line of a BPF fd's
//! /proc/PID/fdinfo entry.

use std::{
    collections::HashSet,
    io,
    sync::Mutex,
    time::{Duration, Instant},
};

use tracing::{debug, info, warn};

use super::{
    netlink::{attrs, RouteSocket},
    programs::{TC_EGRESS, TC_INGRESS},
};

const RTM_NEWTFILTER: u16 = 44;
const RTM_DELTFILTER: u16 = 45;
const RTM_GETTFILTER: u16 = 46;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_DUMP: u16 = 0x300;
const TCA_KIND: u16 = 1;
const TCA_OPTIONS: u16 = 2;
const TCA_BPF_NAME: u16 = 7;
const TCA_BPF_ID: u16 = 11;
/// clsact's ingress and egress hooks as filter parents.
const CLSACT_PARENTS: [u32; 2] = [0xFFFF_FFF2, 0xFFFF_FFF3];
/// Size of `struct tcmsg`.
const TCMSG_LEN: usize = 20;

/// One `cls_bpf` filter on a clsact hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfFilter {
    pub parent: u32,
    /// `tcm_info`: priority (high 16 bits) and protocol (low 16 bits, network order).
    pub info: u32,
    pub handle: u32,
    pub name: String,
    pub prog_id: u32,
}

/// Parses one RTM_NEWTFILTER payload: a `cls_bpf` filter with a program, else None.
pub fn parse_filter(payload: &[u8]) -> Option<BpfFilter> {
    let word = |at: usize| payload.get(at..at + 4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes);
    let (handle, parent, info) = (word(8)?, word(12)?, word(16)?);
    let mut kind_is_bpf = false;
    let (mut name, mut prog_id) = (None, None);
    for (kind, value) in attrs(payload.get(TCMSG_LEN..)?) {
        match kind {
            TCA_KIND => kind_is_bpf = value.split(|b| *b == 0).next() == Some(b"bpf"),
            TCA_OPTIONS => {
                for (kind, value) in attrs(value) {
                    match kind {
                        TCA_BPF_NAME => {
                            let text = value.split(|b| *b == 0).next().unwrap_or_default();
                            name = Some(String::from_utf8_lossy(text).into_owned());
                        }
                        TCA_BPF_ID => prog_id = value.get(..4).and_then(|b| b.try_into().ok()).map(u32::from_ne_bytes),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    kind_is_bpf.then_some(())?;
    Some(BpfFilter { parent, info, handle, name: name?, prog_id: prog_id? })
}

fn tcmsg(ifindex: u32, handle: u32, parent: u32, info: u32) -> Vec<u8> {
    let mut body = vec![0u8; 4];
    body.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    body.extend_from_slice(&handle.to_ne_bytes());
    body.extend_from_slice(&parent.to_ne_bytes());
    body.extend_from_slice(&info.to_ne_bytes());
    body
}

/// The `cls_bpf` filters on both clsact hooks of interface `ifindex` (current thread's namespace).
pub fn bpf_filters(socket: &mut RouteSocket, ifindex: u32) -> io::Result<Vec<BpfFilter>> {
    let mut found = Vec::new();
    for parent in CLSACT_PARENTS {
        let request = tcmsg(ifindex, 0, parent, 0);
        let listed = socket.exchange(RTM_GETTFILTER, NLM_F_REQUEST | NLM_F_DUMP, &request, |kind, payload| {
            if kind == RTM_NEWTFILTER {
                found.extend(parse_filter(payload));
            }
        });
        match listed {
            Ok(()) => {}
            // No clsact qdisc (nothing to list) answers EINVAL or ENOENT.
            Err(err) if matches!(err.raw_os_error(), Some(libc::EINVAL) | Some(libc::ENOENT)) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(found)
}

/// Program ids some process holds an fd of (prog or link fds), read from /proc/*/fdinfo.
fn held_program_ids() -> HashSet<u32> {
    let mut held = HashSet::new();
    let Ok(processes) = std::fs::read_dir("/proc") else { return held };
    for process in processes.flatten() {
        if !process.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(process.path().join("fd")) else { continue };
        for fd in fds.flatten() {
            // Only BPF objects are worth reading the fdinfo of.
            let is_bpf = std::fs::read_link(fd.path())
                .is_ok_and(|target| target.to_string_lossy().starts_with("anon_inode:bpf-"));
            if !is_bpf {
                continue;
            }
            let info = process.path().join("fdinfo").join(fd.file_name());
            let Ok(text) = std::fs::read_to_string(info) else { continue };
            held.extend(
                text.lines().filter_map(|l| l.strip_prefix("prog_id:")).filter_map(|v| v.trim().parse::<u32>().ok()),
            );
        }
    }
    held
}

/// The held program ids, read at most once per [`HELD_FRESH`] (a node's worth of interfaces
/// attached in a row share one walk of /proc).
static HELD: Mutex<Option<(Instant, HashSet<u32>)>> = Mutex::new(None);
const HELD_FRESH: Duration = Duration::from_secs(1);

fn is_held(prog_id: u32) -> bool {
    let Ok(mut cache) = HELD.lock() else { return true };
    let fresh = cache.as_ref().is_some_and(|(at, _)| at.elapsed() < HELD_FRESH);
    if !fresh {
        *cache = Some((Instant::now(), held_program_ids()));
    }
    cache.as_ref().is_none_or(|(_, held)| held.contains(&prog_id))
}

/// Which of `filters` are orphans of observer's classifiers: named like them, with a program
/// that `held` says no process holds.
pub fn orphans(filters: &[BpfFilter], held: impl Fn(u32) -> bool) -> Vec<&BpfFilter> {
    filters.iter().filter(|f| (f.name == TC_INGRESS || f.name == TC_EGRESS) && !held(f.prog_id)).collect()
}

/// Removes the orphaned observer filters of interface `name` (current thread's namespace).
/// Failures are logged: an orphan left costs its program's run per packet, nothing else.
pub fn remove_here(name: &str) {
    let Ok(ifindex) = nix::net::if_::if_nametoindex(name) else { return };
    let removed = (|| -> io::Result<usize> {
        let mut socket = RouteSocket::open()?;
        let filters = bpf_filters(&mut socket, ifindex)?;
        let orphans = orphans(&filters, is_held);
        for orphan in &orphans {
            let request = tcmsg(ifindex, orphan.handle, orphan.parent, orphan.info);
            socket.exchange(RTM_DELTFILTER, NLM_F_REQUEST | NLM_F_ACK, &request, |_, _| {})?;
        }
        Ok(orphans.len())
    })();
    match removed {
        Ok(0) => debug!(iface = %name, "no orphaned classifier filters"),
        Ok(n) => info!(iface = %name, filters = n, "removed classifier filters a stopped observer left behind"),
        Err(err) => warn!(iface = %name, "looking for orphaned classifier filters: {err}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::netlink::push_attr;

    fn payload(kind: &str, name: Option<&str>, id: Option<u32>) -> Vec<u8> {
        let mut p = tcmsg(7, 1, CLSACT_PARENTS[0], (49152 << 16) | 0x0300);
        push_attr(&mut p, TCA_KIND, format!("{kind}\0").as_bytes());
        let mut options = Vec::new();
        if let Some(name) = name {
            push_attr(&mut options, TCA_BPF_NAME, format!("{name}\0").as_bytes());
        }
        if let Some(id) = id {
            push_attr(&mut options, TCA_BPF_ID, &id.to_ne_bytes());
        }
        push_attr(&mut p, TCA_OPTIONS | 0x8000, &options);
        p
    }

    #[test]
    fn a_bpf_filter_is_parsed_with_its_program_and_place() {
        let f = parse_filter(&payload("bpf", Some(TC_INGRESS), Some(42))).expect("a bpf filter");
        assert_eq!(
            f,
            BpfFilter {
                parent: 0xFFFF_FFF2,
                info: (49152 << 16) | 0x0300,
                handle: 1,
                name: TC_INGRESS.into(),
                prog_id: 42
            }
        );
        assert_eq!(parse_filter(&payload("u32", Some(TC_INGRESS), Some(42))), None, "not cls_bpf");
        assert_eq!(parse_filter(&payload("bpf", None, None)), None, "a chain head without a program");
        assert_eq!(parse_filter(&[0u8; 10]), None, "truncated");
    }

    #[test]
    fn only_observers_filters_whose_program_nobody_holds_are_orphans() {
        let filter = |name: &str, prog_id| BpfFilter { parent: 0, info: 0, handle: 1, name: name.into(), prog_id };
        let filters =
            [filter(TC_INGRESS, 1), filter(TC_EGRESS, 2), filter("cil_from_container", 3), filter(TC_INGRESS, 4)];
        let held = |id| id == 4;
        let ids: Vec<u32> = orphans(&filters, held).iter().map(|f| f.prog_id).collect();
        assert_eq!(ids, [1, 2], "another tool's filter and a live observer's stay");
    }
}
