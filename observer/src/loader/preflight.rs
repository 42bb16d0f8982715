//! Checks made before touching the BPF syscall, so a missing privilege or kernel feature gets
//! one clear line instead of an errno from deep inside aya.

use std::path::Path;

/// Capabilities the agent uses: BPF programs/maps, tracing, tc attach and setns/cgroup attach.
const NEEDED_CAPS: [(u32, &str); 4] =
    [(39, "CAP_BPF"), (38, "CAP_PERFMON"), (12, "CAP_NET_ADMIN"), (21, "CAP_SYS_ADMIN")];

pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    #[error(
        "missing capabilities {missing}: observer loads eBPF programs, attaches TC and tracepoints \
         and enters network namespaces; run it as root or grant CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN \
         and CAP_SYS_ADMIN"
    )]
    Capabilities { missing: String },
    #[error(
        "kernel BTF not found at {VMLINUX_BTF}: observer reads struct offsets and drop-reason names \
         from it; use a kernel built with CONFIG_DEBUG_INFO_BTF=y (5.8 or newer)"
    )]
    NoBtf,
}

/// Fails with the list of missing capabilities (read from `/proc/self/status`).
pub fn check_privileges() -> Result<(), PreflightError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    let missing = missing_caps(effective);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(PreflightError::Capabilities { missing: missing.join(", ") })
    }
}

fn missing_caps(effective: u64) -> Vec<&'static str> {
    NEEDED_CAPS.iter().filter(|(bit, _)| effective & (1u64 << bit) == 0).map(|(_, name)| *name).collect()
}

pub fn check_btf() -> Result<(), PreflightError> {
    if Path::new(VMLINUX_BTF).exists() {
        Ok(())
    } else {
        Err(PreflightError::NoBtf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_exactly_the_missing_capabilities() {
        assert_eq!(missing_caps(u64::MAX), Vec::<&str>::new());
        assert_eq!(missing_caps(0), vec!["CAP_BPF", "CAP_PERFMON", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]);
        let only_net_admin = 1u64 << 12;
        assert_eq!(missing_caps(only_net_admin), vec!["CAP_BPF", "CAP_PERFMON", "CAP_SYS_ADMIN"]);
    }
}
