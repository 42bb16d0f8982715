//! The programs' own log lines (aya-log) forwarded to `tracing`, target `observer::kernel`.
//!
//! The programs log only rare paths (a parse bound reached, a failed map insert, a full ring
//! buffer), each at most once per second per CPU (observer-ebpf's `klog` gate). Off by default:
//! the loader then sets the programs' `AYA_LOG_LEVEL` to 0 (every log statement is skipped in
//! the kernel) and shrinks their log ring buffer to one page, and nothing reads it. On
//! (`--kernel-log`): the level lets warnings through and [`KernelLog::flush`] forwards them.

use aya::Ebpf;
use aya_log::EbpfLogger;
use thiserror::Error;

/// The name of the programs' log level global (aya-log-ebpf).
pub const LEVEL_GLOBAL: &str = aya_log::LEVEL;
/// The name of the programs' log ring buffer (aya-log-ebpf).
pub const LOG_MAP: &str = "AYA_LOGS";
/// `AYA_LOG_LEVEL` when kernel logging is on: up to warnings (the only level the programs use);
/// aya-log's levels are Error = 1, Warn = 2, ...
pub const LEVEL_ON: u8 = 2;
/// `AYA_LOG_LEVEL` when off: nothing passes.
pub const LEVEL_OFF: u8 = 0;

#[derive(Debug, Error)]
pub enum KernelLogError {
    #[error("cannot read the programs' log ring buffer ({LOG_MAP}): {0}")]
    Init(#[from] aya_log::Error),
}

/// Reads the programs' log ring buffer and forwards each line to `tracing`.
pub struct KernelLog {
    logger: EbpfLogger<Forward>,
}

impl KernelLog {
    /// Takes the log ring buffer of `ebpf` (loaded with kernel logging on).
    pub fn init(ebpf: &mut Ebpf) -> Result<Self, KernelLogError> {
        Ok(Self { logger: EbpfLogger::init_with_logger(ebpf, Forward)? })
    }

    /// Forwards every line waiting (non-blocking).
    pub fn flush(&mut self) {
        self.logger.flush();
    }
}

/// aya-log's `log::Log` sink: each record becomes a `tracing` event of the same level.
struct Forward;

/// The target of forwarded lines (`OBSERVER_LOG=observer::kernel=debug` etc. filter them).
const TARGET: &str = "observer::kernel";

impl log::Log for Forward {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let program = record.module_path().unwrap_or("observer-ebpf");
        let line = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: TARGET, program, "kernel: {line}"),
            log::Level::Warn => tracing::warn!(target: TARGET, program, "kernel: {line}"),
            log::Level::Info => tracing::info!(target: TARGET, program, "kernel: {line}"),
            log::Level::Debug => tracing::debug!(target: TARGET, program, "kernel: {line}"),
            log::Level::Trace => tracing::trace!(target: TARGET, program, "kernel: {line}"),
        }
    }

    fn flush(&self) {}
}
