//! Reading records from the kernel's ring buffer and the per-CPU counters.

use std::os::fd::AsFd;

use aya::{
    maps::{MapData, MapError, PerCpuArray, RingBuf},
    Ebpf,
};
use observer_common::{
    decode::{decode, Event},
    maps::{COUNTERS_MAP, EVENTS_MAP},
};
use tracing::warn;

use super::counters::KernelCounters;

#[derive(Debug, thiserror::Error)]
pub enum RingError {
    #[error("map `{0}` missing from the eBPF object (build mismatch)")]
    MissingMap(&'static str),
    #[error("opening map `{name}`: {source}")]
    Map { name: &'static str, source: MapError },
    #[error("waiting for events: {0}")]
    Poll(nix::Error),
}

/// Records in one drain from which the reader counts as busy (see [`EventSource::poll`]).
const BUSY_BATCH: usize = 256;

/// How long a busy reader lets records gather before the next drain.
const BUSY_NAP: std::time::Duration = std::time::Duration::from_millis(1);

/// The ring buffer, plus a count of records that failed to decode.
pub struct EventSource {
    ring: RingBuf<MapData>,
    pub undecodable: u64,
    /// Records handed on by the last drain.
    last_batch: usize,
}

impl EventSource {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, RingError> {
        let map = ebpf.take_map(EVENTS_MAP).ok_or(RingError::MissingMap(EVENTS_MAP))?;
        let ring = RingBuf::try_from(map).map_err(|source| RingError::Map { name: EVENTS_MAP, source })?;
        Ok(Self { ring, undecodable: 0, last_batch: 0 })
    }

    /// Waits up to `timeout_ms` for data, then hands every available event to `sink`.
    ///
    /// Wake-ups are bounded under load: the kernel wakes a waiting reader for the first record
    /// written after the reader caught up (`bpf_ringbuf_commit` without flags), so a reader that
    /// keeps up with a flood pays a wake-up (irq_work, a context switch, `poll(2)`) every few
    /// records. When the last drain handed on at least [`BUSY_BATCH`] records, the reader
    /// instead sleeps [`BUSY_NAP`] (at most `timeout_ms`) and drains whatever gathered: at most
    /// 1 ms later under load, never later when quiet. The nap cannot cause a loss the kernel does
    /// not count: a full ring buffer is counted in `ringbuf_full` as before.
    pub fn poll(&mut self, timeout_ms: u16, mut sink: impl FnMut(Event)) -> Result<usize, RingError> {
        if self.last_batch >= BUSY_BATCH {
            std::thread::sleep(BUSY_NAP.min(std::time::Duration::from_millis(u64::from(timeout_ms))));
        } else {
            let mut fds = [nix::poll::PollFd::new(self.ring.as_fd(), nix::poll::PollFlags::POLLIN)];
            match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(timeout_ms)) {
                Ok(_) | Err(nix::Error::EINTR) => {}
                Err(err) => return Err(RingError::Poll(err)),
            }
        }
        let mut n = 0;
        while let Some(item) = self.ring.next() {
            match decode(&item) {
                Ok(event) => {
                    sink(event);
                    n += 1;
                }
                Err(err) => {
                    self.undecodable += 1;
                    warn!("dropping undecodable ring-buffer record: {err}");
                }
            }
        }
        self.last_batch = n;
        Ok(n)
    }
}

/// The per-CPU counters, summed over the CPUs and decoded into their fields.
pub fn read_counters(ebpf: &Ebpf) -> Result<KernelCounters, RingError> {
    let map = ebpf.map(COUNTERS_MAP).ok_or(RingError::MissingMap(COUNTERS_MAP))?;
    let array = PerCpuArray::<_, u64>::try_from(map).map_err(|source| RingError::Map { name: COUNTERS_MAP, source })?;
    KernelCounters::decode(|index| {
        let values = array.get(&index, 0).map_err(|source| RingError::Map { name: COUNTERS_MAP, source })?;
        Ok(values.iter().sum())
    })
}
