//! Programs run on synthetic packets with `BPF_PROG_TEST_RUN`, to separate what observer's
//! packet programs cost from what the kernel's run-time statistics add to every run: an empty
//! program (`r0 = TC_ACT_PIPE; exit`) measured the same way is the statistics' own floor.
//!
//! Raw `bpf(2)` calls (the `bpf_attr` layouts of include/uapi/linux/bpf.h): loading the empty
//! program, opening a loaded program by id, and test runs. Nothing here is attached anywhere.

use std::{
    fs,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
};

use anyhow::{bail, Context as _};
use serde::Serialize;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `bpf_attr` is a union; 160 bytes hold every field used here (the kernel accepts a shorter
/// attr when the rest would be zero).
const ATTR_WORDS: usize = 20;

/// One program's cost on one synthetic packet.
#[derive(Debug, Clone, Serialize)]
pub struct SyntheticCost {
    pub program: String,
    pub packet: &'static str,
    /// ns per run by the kernel's run-time statistics (run_time_ns / run_cnt) during the test run.
    pub stats_ns_per_run: Option<f64>,
    /// ns per run by BPF_PROG_TEST_RUN's own clock with the statistics off (the loop's average).
    pub test_run_ns: Option<f64>,
}

/// An ordinary TCP segment (ACK|PSH, one payload byte) between two addresses, as an Ethernet
/// frame: what almost every packet of an established connection looks like.
pub fn ordinary_segment() -> Vec<u8> {
    frame(0x18)
}

fn frame(tcp_flags: u8) -> Vec<u8> {
    let mut f = Vec::with_capacity(55);
    f.extend_from_slice(&[0x02; 6]);
    f.extend_from_slice(&[0x04; 6]);
    f.extend_from_slice(&0x0800u16.to_be_bytes());
    // IPv4: version 4, IHL 5, total length 41, DF, TTL 64, TCP, 192.0.2.1 -> 192.0.2.2 (TEST-NET-1).
    f.extend_from_slice(&[0x45, 0, 0, 41, 0, 1, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1, 192, 0, 2, 2]);
    // TCP: 40000 -> 7100, seq 1, ack 1, data offset 5, flags, window 65535.
    f.extend_from_slice(&[0x9c, 0x40, 0x1b, 0xbc, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
    f.push(b'x');
    f
}

fn bpf(cmd: libc::c_long, attr: &mut [u64; ATTR_WORDS]) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, writable buffer of the size passed; the kernel reads and writes
    // only within it.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), size_of_val(attr)) };
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

fn put_u32(attr: &mut [u64; ATTR_WORDS], offset: usize, value: u32) {
    let word = &mut attr[offset / 8];
    let shift = (offset % 8) * 8;
    *word = (*word & !(0xffff_ffffu64 << shift)) | (u64::from(value) << shift);
}

fn get_u32(attr: &[u64; ATTR_WORDS], offset: usize) -> u32 {
    (attr[offset / 8] >> ((offset % 8) * 8)) as u32
}

fn owned(rc: libc::c_long) -> anyhow::Result<OwnedFd> {
    let fd = i32::try_from(rc).context("bpf returned an fd out of range")?;
    // SAFETY: the kernel just returned this new descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Loads `r0 = 3 (TC_ACT_PIPE); exit` as a classifier (never attached).
pub fn load_empty() -> anyhow::Result<OwnedFd> {
    // BPF_ALU64|BPF_MOV|BPF_K to r0, imm 3; BPF_JMP|BPF_EXIT.
    let insns: [u64; 2] = [0xb7 | (3u64 << 32), 0x95];
    let license = c"GPL";
    let mut attr = [0u64; ATTR_WORDS];
    put_u32(&mut attr, 0, BPF_PROG_TYPE_SCHED_CLS);
    put_u32(&mut attr, 4, insns.len() as u32);
    attr[1] = insns.as_ptr() as u64;
    attr[2] = license.as_ptr() as u64;
    // prog_name at offset 48 (16 bytes).
    attr[6] = u64::from_le_bytes(*b"bench_em");
    attr[7] = u64::from_le_bytes(*b"pty\0\0\0\0\0");
    owned(bpf(BPF_PROG_LOAD, &mut attr).context("loading the empty classifier")?)
}

/// Opens a loaded program by its id.
pub fn open_by_id(id: u64) -> anyhow::Result<OwnedFd> {
    let mut attr = [0u64; ATTR_WORDS];
    put_u32(&mut attr, 0, u32::try_from(id)?);
    owned(bpf(BPF_PROG_GET_FD_BY_ID, &mut attr).with_context(|| format!("opening program id {id}"))?)
}

/// Runs `prog` `repeat` times on `data`: the test run's average ns per run.
pub fn test_run(prog: &OwnedFd, data: &[u8], repeat: u32) -> anyhow::Result<u32> {
    test_run_full(prog, data, repeat).map(|(_, ns)| ns)
}

/// Runs `prog` `repeat` times on `data`: (the program's return value, average ns per run).
fn test_run_full(prog: &OwnedFd, data: &[u8], repeat: u32) -> anyhow::Result<(u32, u32)> {
    let mut attr = [0u64; ATTR_WORDS];
    put_u32(&mut attr, 0, prog.as_raw_fd() as u32);
    put_u32(&mut attr, 8, data.len() as u32);
    attr[2] = data.as_ptr() as u64;
    put_u32(&mut attr, 32, repeat);
    bpf(BPF_PROG_TEST_RUN, &mut attr).context("BPF_PROG_TEST_RUN")?;
    Ok((get_u32(&attr, 4), get_u32(&attr, 36)))
}

/// Attaches `prog` with tcx links, ingress and egress, to the interfaces `ifindexes` of the
/// network namespace at `netns` (entered on a thread of its own, which then ends). Closing the
/// returned links detaches it again.
pub fn attach_tcx(prog: &OwnedFd, netns: &std::path::Path, ifindexes: &[u32]) -> anyhow::Result<Vec<OwnedFd>> {
    let ns = fs::File::open(netns).with_context(|| format!("opening {}", netns.display()))?;
    let (prog_fd, ifindexes) = (prog.as_raw_fd(), ifindexes.to_vec());
    std::thread::spawn(move || -> anyhow::Result<Vec<OwnedFd>> {
        // SAFETY: moves only this thread (which ends right after) into the namespace.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("entering the namespace: {}", std::io::Error::last_os_error());
        }
        let mut links = Vec::new();
        for ifindex in ifindexes {
            for attach_type in [BPF_TCX_INGRESS, BPF_TCX_EGRESS] {
                let mut attr = [0u64; ATTR_WORDS];
                put_u32(&mut attr, 0, prog_fd as u32);
                put_u32(&mut attr, 4, ifindex);
                put_u32(&mut attr, 8, attach_type);
                links.push(owned(
                    bpf(BPF_LINK_CREATE, &mut attr).with_context(|| format!("tcx on ifindex {ifindex}"))?,
                )?);
            }
        }
        Ok(links)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the attaching thread panicked"))?
}

/// (run_time_ns, run_cnt) of a program descriptor of this process.
pub fn stats_of(prog: &OwnedFd) -> anyhow::Result<(u64, u64)> {
    let text = fs::read_to_string(format!("/proc/self/fdinfo/{}", prog.as_raw_fd()))?;
    let field = |name: &str| {
        text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim_start_matches(':').trim().parse().ok()))
    };
    match (field("run_time_ns"), field("run_cnt")) {
        (Some(t), Some(n)) => Ok((t, n)),
        _ => bail!("no run-time statistics in fdinfo"),
    }
}

/// Measures `prog` on `packet`: the statistics' ns per run (they must be on) and, with
/// `stats_off` switching them off first, the test run's own average.
pub fn measure(
    program: &str,
    prog: &OwnedFd,
    packet: (&'static str, &[u8]),
    repeat: u32,
    set_stats: &dyn Fn(bool) -> anyhow::Result<()>,
) -> anyhow::Result<SyntheticCost> {
    set_stats(true)?;
    // A warm-up round, then the measured one.
    test_run(prog, packet.1, repeat / 10 + 1)?;
    let (t0, n0) = stats_of(prog)?;
    test_run(prog, packet.1, repeat)?;
    let (t1, n1) = stats_of(prog)?;
    set_stats(false)?;
    test_run(prog, packet.1, repeat / 10 + 1)?;
    let plain = test_run(prog, packet.1, repeat)?;
    let runs = n1.saturating_sub(n0);
    Ok(SyntheticCost {
        program: program.to_string(),
        packet: packet.0,
        stats_ns_per_run: (runs > 0).then(|| t1.saturating_sub(t0) as f64 / runs as f64),
        test_run_ns: Some(f64::from(plain)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_synthetic_frames_are_ipv4_tcp_with_the_asked_flags() {
        let seg = ordinary_segment();
        assert_eq!(seg.len(), 14 + 20 + 20 + 1);
        assert_eq!(u16::from_be_bytes([seg[16], seg[17]]) as usize, seg.len() - 14);
        assert_eq!(seg[23], 6);
        assert_eq!(seg[14 + 20 + 13], 0x18);
        assert_eq!(frame(0x02)[14 + 20 + 13], 0x02);
    }

    #[test]
    #[ignore = "privileged: loads a BPF program"]
    fn the_empty_classifier_loads_and_returns_tc_act_pipe() {
        let prog = load_empty().expect("load");
        let (retval, ns) = test_run_full(&prog, &ordinary_segment(), 1000).expect("test run");
        assert_eq!(retval, 3);
        assert!(ns < 1_000_000, "an empty program takes {ns} ns per run");
    }

    #[test]
    fn attr_fields_land_at_their_byte_offsets() {
        let mut attr = [0u64; ATTR_WORDS];
        put_u32(&mut attr, 4, 7);
        put_u32(&mut attr, 36, 9);
        assert_eq!(attr[0], 7 << 32);
        assert_eq!(get_u32(&attr, 36), 9);
        assert_eq!(get_u32(&attr, 32), 0);
    }
}
