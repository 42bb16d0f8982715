//! Stopping a running session: a token the caller owns and sets. The library installs no signal
//! handler; the CLI (main.rs) connects SIGINT/SIGTERM to its token.

use std::sync::{
    atomic::{AtomicBool, Ordering},
    Arc,
};

/// A shared "stop now" flag. Clones share the flag: setting any clone stops every session run
/// with it (checked at least every 100 ms while the session waits for events).
#[derive(Debug, Clone, Default)]
pub struct StopToken(Arc<AtomicBool>);

impl StopToken {
    /// A token not yet stopped.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks every session run with this token (or a clone) to stop.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub fn is_stopped(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for a signal handler to set (`signal_hook::flag::register`).
    pub fn flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_and_the_flag_share_one_state() {
        let token = StopToken::new();
        let clone = token.clone();
        assert!(!clone.is_stopped());
        token.stop();
        assert!(clone.is_stopped());
        let other = StopToken::new();
        other.flag().store(true, Ordering::Relaxed);
        assert!(other.is_stopped(), "what a signal handler sets through flag() stops the token");
    }
}
