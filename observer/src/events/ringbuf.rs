//! Reading records from the kernel's ring buffer and the per-CPU counters.

use std::os::fd::{AsFd, BorrowedFd};

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

/// The ring buffer, plus a count of records that failed to decode.
pub struct EventSource {
    ring: RingBuf<MapData>,
    pub undecodable: u64,
}

impl EventSource {
    pub fn new(ebpf: &mut Ebpf) -> Result<Self, RingError> {
        let map = ebpf.take_map(EVENTS_MAP).ok_or(RingError::MissingMap(EVENTS_MAP))?;
        let ring = RingBuf::try_from(map).map_err(|source| RingError::Map { name: EVENTS_MAP, source })?;
        Ok(Self { ring, undecodable: 0 })
    }

    /// Waits up to `timeout_ms` for data (or for `wake`, another fd, to become readable: a link
    /// monitor whose news should not wait for the timeout), then hands every available event to
    /// `sink`. Returns how many were handed on.
    ///
    /// # Errors
    /// [`RingError::Poll`] when poll(2) fails for another reason than a signal.
    pub fn poll(
        &mut self,
        timeout_ms: u16,
        wake: Option<BorrowedFd<'_>>,
        mut sink: impl FnMut(Event),
    ) -> Result<usize, RingError> {
        let ring = self.ring.as_fd();
        let readable = nix::poll::PollFlags::POLLIN;
        let mut fds = [nix::poll::PollFd::new(ring, readable), nix::poll::PollFd::new(wake.unwrap_or(ring), readable)];
        let fds = &mut fds[..if wake.is_some() { 2 } else { 1 }];
        match nix::poll::poll(fds, nix::poll::PollTimeout::from(timeout_ms)) {
            Ok(_) | Err(nix::Error::EINTR) => {}
            Err(err) => return Err(RingError::Poll(err)),
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
