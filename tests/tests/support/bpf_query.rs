//! The kernel's own listing of what is attached where (`BPF_PROG_QUERY`), independent of any
//! process that may have attached it: the program count on an interface's tcx hooks, or on a
//! cgroup's hooks.

use std::os::fd::AsRawFd as _;

const BPF_PROG_QUERY: libc::c_long = 16;
/// `enum bpf_attach_type` values (uapi/linux/bpf.h, stable ABI).
pub const BPF_CGROUP_INET_INGRESS: u32 = 0;
pub const BPF_CGROUP_INET_EGRESS: u32 = 1;
pub const BPF_CGROUP_SOCK_OPS: u32 = 3;
pub const BPF_CGROUP_INET4_CONNECT: u32 = 10;
pub const BPF_CGROUP_INET6_CONNECT: u32 = 11;
pub const BPF_TCX_INGRESS: u32 = 46;
pub const BPF_TCX_EGRESS: u32 = 47;

/// Programs attached to `target` (an ifindex of the calling thread's namespace, or a cgroup fd)
/// for `attach_type`.
fn query(target: u32, attach_type: u32) -> std::io::Result<u32> {
    // The `query` member of union bpf_attr: target(0) attach_type(4) query_flags(8)
    // attach_flags(12) prog_ids(16) prog_cnt(24) ... revision(56); 64 bytes.
    let mut attr = [0u8; 64];
    attr[0..4].copy_from_slice(&target.to_ne_bytes());
    attr[4..8].copy_from_slice(&attach_type.to_ne_bytes());
    // SAFETY: bpf(2) with a zeroed, correctly sized attr; no pointers passed (prog_ids = 0).
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_PROG_QUERY, attr.as_mut_ptr(), attr.len() as u32) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(u32::from_ne_bytes(attr[24..28].try_into().expect("4 bytes")))
}

/// (ingress, egress) tcx programs on interface `iface` of namespace `/run/netns/NS`.
pub fn tcx_programs(netns: &str, iface: &str) -> (u32, u32) {
    let (path, iface) = (format!("/run/netns/{netns}"), iface.to_string());
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path).expect("open netns");
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        let index = nix::net::if_::if_nametoindex(iface.as_str()).expect("ifindex");
        let count = |t| query(index, t).unwrap_or_else(|e| panic!("BPF_PROG_QUERY {iface} type {t}: {e}"));
        (count(BPF_TCX_INGRESS), count(BPF_TCX_EGRESS))
    })
    .join()
    .expect("query thread")
}

/// Programs attached directly to cgroup `dir` for each of `types`.
pub fn cgroup_programs(dir: &std::path::Path, types: &[u32]) -> Vec<u32> {
    let file = std::fs::File::open(dir).expect("open cgroup");
    types
        .iter()
        .map(|t| query(file.as_raw_fd() as u32, *t).unwrap_or_else(|e| panic!("BPF_PROG_QUERY {dir:?} type {t}: {e}")))
        .collect()
}
