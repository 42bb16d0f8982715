//! Output sinks: every output of a command (text lines, JSON lines, a pcap file, log lines of
//! findings) consumes observations and finding updates through one trait, so a command is
//! config -> session (or a replay) -> engine -> sinks.

pub mod lines;
pub mod log;
pub mod pcap;

use std::ops::ControlFlow;

use observer_core::{diagnosis::FindingUpdate, model::Observation};

/// A consumer of what a run produces. Every method has a default that ignores its input: a
/// sink implements what it outputs.
pub trait Sink {
    /// One observation (already filtered by the command). `Break` ends the run (e.g. stdout
    /// is closed); the error, if any, is returned by [`Sink::finish`].
    fn observation(&mut self, _observation: &Observation) -> ControlFlow<()> {
        ControlFlow::Continue(())
    }

    /// A finding appeared, gained evidence, or cleared.
    fn finding(&mut self, _update: &FindingUpdate) {}

    /// The run ended: flush, report what was written, return the first error met.
    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}

/// Sends to every sink; breaks when any of them breaks.
pub fn observation(sinks: &mut [Box<dyn Sink>], o: &Observation) -> ControlFlow<()> {
    let mut flow = ControlFlow::Continue(());
    for sink in sinks.iter_mut() {
        if sink.observation(o).is_break() {
            flow = ControlFlow::Break(());
        }
    }
    flow
}

/// Sends a finding update to every sink.
pub fn finding(sinks: &mut [Box<dyn Sink>], update: &FindingUpdate) {
    for sink in sinks.iter_mut() {
        sink.finding(update);
    }
}

/// Finishes every sink; the first error wins, the others still finish.
pub fn finish(sinks: &mut [Box<dyn Sink>]) -> anyhow::Result<()> {
    let mut first = Ok(());
    for sink in sinks.iter_mut() {
        if let Err(err) = sink.finish() {
            if first.is_ok() {
                first = Err(err);
            }
        }
    }
    first
}
