//! Active checks (`--probe`): one bounded TCP handshake per required flow, from inside the
//! source's network namespace, while the eBPF datapath watches; the outcome comes from what the
//! handshake returned and what the kernel showed (drop with reason and rule, ICMP error).

use std::{
    io,
    net::{IpAddr, SocketAddr},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

use serde::Serialize;

use super::paths::Status;
use crate::{diagnosis::Outcome, netfilter::Culprit};

/// How long one handshake may take: the first SYN and one retransmission.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// The uid Istio's proxies run as: istio-iptables lets its traffic out uncaptured.
const ISTIO_PROXY_UID: u32 = 1337;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeOutcome {
    /// The handshake completed.
    Pass,
    /// The destination's own stack refused it (closed port): the network let it through.
    Refused,
    /// Dropped on this node (reason and rule in the probe).
    Dropped,
    /// A firewall answered (ICMP error or a REJECT's reset).
    Rejected,
    /// No answer and no drop on this node: blocked beyond it.
    Silent,
    /// No route.
    NoRoute,
    /// The source is not on this node (or cannot be reproduced here).
    NotProbed,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ProbeResult {
    pub outcome: ProbeOutcome,
    /// Whether it agrees with the static verdict (`None` when the static verdict is unknown
    /// or the flow was not probed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agrees: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub culprit: Option<Culprit>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The probe's source port (to find its events in a trace).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
}

impl ProbeResult {
    pub fn not_probed(note: impl Into<String>) -> Self {
        Self {
            outcome: ProbeOutcome::NotProbed,
            agrees: None,
            drop_reason: None,
            culprit: None,
            note: Some(note.into()),
            sport: None,
        }
    }

    pub fn summary(&self) -> String {
        let outcome =
            serde_json::to_value(self.outcome).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default();
        let mut out = outcome;
        if let Some(reason) = &self.drop_reason {
            out.push_str(&format!(" ({reason})"));
        }
        if let Some(c) = &self.culprit {
            out.push_str(&format!(" by {}", c.summary()));
        }
        match self.agrees {
            Some(true) => out.push_str("; agrees with the static check"),
            Some(false) => out.push_str("; DISAGREES with the static check"),
            None => {}
        }
        if let Some(note) = &self.note {
            out.push_str(&format!(" — {note}"));
        }
        out
    }
}

/// What the handshake itself returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Handshake {
    Established,
    Refused,
    Unreachable,
    Timeout,
}

/// One handshake from `src` (bound, inside the namespace at `netns`) to `dst`, as uid 1337
/// when `as_proxy`. Returns the source port used and what happened.
pub fn handshake(
    netns: &std::path::Path,
    src: IpAddr,
    dst: SocketAddr,
    as_proxy: bool,
) -> anyhow::Result<(u16, Handshake)> {
    let target = crate::loader::NetnsTarget::resolve(netns.to_str())?;
    Ok(target.run_inside(|| {
        let _uid = as_proxy.then(ThreadUid::become_proxy).transpose()?;
        connect_bounded(src, dst, PROBE_TIMEOUT)
    })??)
}

/// Switches this thread's effective uid (raw syscall: glibc would switch every thread) and
/// back on drop.
struct ThreadUid;

impl ThreadUid {
    fn become_proxy() -> io::Result<Self> {
        // SAFETY: setresuid(-1, 1337, -1) on the calling thread only; restored on drop.
        let rc = unsafe { libc::syscall(libc::SYS_setresuid, -1i32, ISTIO_PROXY_UID, -1i32) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self)
    }
}

impl Drop for ThreadUid {
    fn drop(&mut self) {
        // SAFETY: back to euid 0 (the saved uid is still 0).
        unsafe { libc::syscall(libc::SYS_setresuid, -1i32, 0u32, -1i32) };
    }
}

fn connect_bounded(src: IpAddr, dst: SocketAddr, timeout: Duration) -> io::Result<(u16, Handshake)> {
    let family = if dst.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: plain socket(2); owned right after.
    let raw = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let (bind_addr, bind_len) = sockaddr(SocketAddr::new(src, 0));
    // SAFETY: `bind_addr` is a valid sockaddr of `bind_len` bytes.
    if unsafe { libc::bind(fd.as_raw_fd(), (&bind_addr as *const libc::sockaddr_storage).cast(), bind_len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let (dst_addr, dst_len) = sockaddr(dst);
    // SAFETY: as above.
    let rc = unsafe { libc::connect(fd.as_raw_fd(), (&dst_addr as *const libc::sockaddr_storage).cast(), dst_len) };
    let sport = local_port(&fd)?;
    if rc != 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Ok((sport, classify_error(&err)));
        }
    }
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok((sport, Handshake::Timeout));
        }
        let mut pfd = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLOUT, revents: 0 };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err);
        }
        if n == 0 {
            return Ok((sport, Handshake::Timeout));
        }
        let mut so_error: libc::c_int = 0;
        let mut len = size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: getsockopt into an int of the given size.
        unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut so_error as *mut libc::c_int).cast(),
                &mut len,
            )
        };
        return Ok((
            sport,
            if so_error == 0 {
                Handshake::Established
            } else {
                classify_error(&io::Error::from_raw_os_error(so_error))
            },
        ));
    }
}

fn classify_error(err: &io::Error) -> Handshake {
    match err.raw_os_error() {
        Some(libc::ECONNREFUSED) => Handshake::Refused,
        Some(libc::EHOSTUNREACH | libc::ENETUNREACH | libc::EACCES | libc::EPERM) => Handshake::Unreachable,
        _ => Handshake::Timeout,
    }
}

fn sockaddr(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(a.ip().octets()) },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr { s6_addr: a.ip().octets() },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn local_port(fd: &OwnedFd) -> io::Result<u16> {
    // SAFETY: all-zero is a valid sockaddr_storage; getsockname fills at most `len` bytes.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    if unsafe { libc::getsockname(fd.as_raw_fd(), (&mut storage as *mut libc::sockaddr_storage).cast(), &mut len) } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // Both sockaddr_in and sockaddr_in6 keep the port right after the family.
    // SAFETY: reading the port field of the filled structure.
    let port = unsafe { (*(&storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>()).sin_port };
    Ok(u16::from_be(port))
}

/// Combines the handshake's result with the kernel's view of the connection.
pub fn outcome(
    handshake: Handshake,
    seen: Option<&crate::diagnosis::Connection>,
    static_status: Status,
) -> ProbeResult {
    let kernel = seen.map(|c| c.outcome());
    let culprit = seen.and_then(|c| c.culprit.as_deref().cloned());
    let dropped = match &kernel {
        Some(Outcome::Dropped { reason, .. }) => Some(reason.name.to_string()),
        _ => seen.and_then(|c| c.drops.first().map(|d| d.reason.name.to_string())),
    };
    let outcome = match handshake {
        Handshake::Established => ProbeOutcome::Pass,
        // A REJECT with tcp-reset is a reset too: the netfilter drop of the SYN tells them apart.
        Handshake::Refused if dropped.is_some() => ProbeOutcome::Rejected,
        Handshake::Refused => ProbeOutcome::Refused,
        Handshake::Unreachable => match kernel {
            Some(Outcome::NoRoute(_)) => ProbeOutcome::NoRoute,
            _ => ProbeOutcome::Rejected,
        },
        Handshake::Timeout if dropped.is_some() => ProbeOutcome::Dropped,
        Handshake::Timeout => ProbeOutcome::Silent,
    };
    let agrees = match static_status {
        Status::Unknown => None,
        Status::Pass => Some(matches!(outcome, ProbeOutcome::Pass | ProbeOutcome::Refused)),
        Status::Blocked => Some(matches!(outcome, ProbeOutcome::Dropped | ProbeOutcome::Rejected)),
    };
    let note = match (agrees, outcome) {
        (Some(false), ProbeOutcome::Silent) => {
            Some("no drop on this node: blocked beyond it (another node, the underlay, a cloud firewall)".to_string())
        }
        (Some(false), ProbeOutcome::Pass | ProbeOutcome::Refused) => {
            Some("the static check expected a block: a rule it evaluated did not apply to the real packet".to_string())
        }
        _ => None,
    };
    let culprit = culprit.filter(|_| matches!(outcome, ProbeOutcome::Dropped | ProbeOutcome::Rejected));
    let drop_reason = dropped.filter(|_| matches!(outcome, ProbeOutcome::Dropped | ProbeOutcome::Rejected));
    ProbeResult { outcome, agrees, drop_reason, culprit, note, sport: None }
}
