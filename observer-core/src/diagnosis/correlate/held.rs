//! The connections a correlator holds, bounded, with O(1) eviction: an LRU of connections
//! still being decided (`active`), and an LRU of established connections gone quiet (`quiet`,
//! kept so that a later stall of a long-lived connection is still seen on it). A connection
//! pushed out of either by a newer one is handed to the engine to be concluded.

use std::{
    net::IpAddr,
    num::NonZeroUsize,
    time::{Duration, SystemTime},
};

use lru::LruCache;

use super::{Connection, Outcome};

type Key = (IpAddr, u16);

/// Connections followed at once (each LRU), unless configured otherwise.
pub const DEFAULT_CAPACITY: usize = 131_072;

#[derive(Debug)]
pub(super) struct Held {
    active: LruCache<Key, Connection>,
    quiet: LruCache<Key, Connection>,
    /// Pushed out by newer connections, waiting to be concluded.
    evicted: Vec<Connection>,
}

impl Default for Held {
    fn default() -> Self {
        Self::with_capacity(DEFAULT_CAPACITY)
    }
}

impl Held {
    pub(super) fn with_capacity(capacity: usize) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        Self { active: LruCache::new(cap), quiet: LruCache::new(cap), evicted: Vec::new() }
    }

    pub(super) fn contains(&self, key: &Key) -> bool {
        self.active.contains(key) || self.quiet.contains(key)
    }

    pub(super) fn peek(&self, key: &Key) -> Option<&Connection> {
        self.active.peek(key).or_else(|| self.quiet.peek(key))
    }

    /// The connection of `key`, without making it more recent.
    pub(super) fn get_mut(&mut self, key: &Key) -> Option<&mut Connection> {
        if self.active.contains(key) {
            self.active.peek_mut(key)
        } else {
            self.quiet.peek_mut(key)
        }
    }

    /// The connection of `key`, most recently used now (a quiet one becomes active again).
    pub(super) fn get_or_insert(&mut self, key: Key, new: impl FnOnce() -> Connection) -> &mut Connection {
        if !self.active.contains(&key) {
            let c = self.quiet.pop(&key).unwrap_or_else(new);
            if let Some((old_key, old)) = self.active.push(key, c) {
                if old_key != key {
                    self.evicted.push(old);
                }
            }
        }
        // Present: just pushed, or already there.
        self.active.get_or_insert_mut(key, || Connection::new(key, SystemTime::UNIX_EPOCH))
    }

    pub(super) fn len(&self) -> usize {
        self.active.len() + self.quiet.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.active.iter().chain(self.quiet.iter()).map(|(_, c)| c)
    }

    pub(super) fn take_evicted(&mut self) -> Vec<Connection> {
        std::mem::take(&mut self.evicted)
    }

    /// Connections with nothing seen for `idle` at `now`, least recently used first. Healthy
    /// established ones move to the quiet LRU instead (a stall may still come): their keys are
    /// added to `quieted`.
    pub(super) fn take_idle(&mut self, now: SystemTime, idle: Duration, quieted: &mut Vec<Key>) -> Vec<Connection> {
        let mut out = Vec::new();
        while let Some((_, c)) = self.active.peek_lru() {
            if c.last_seen + idle > now {
                break;
            }
            let Some((key, c)) = self.active.pop_lru() else { break };
            if c.outcome() == Outcome::Established {
                quieted.push(key);
                if let Some((old_key, old)) = self.quiet.push(key, c) {
                    if old_key != key {
                        out.push(old);
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    /// Every connection, emptying the store.
    pub(super) fn drain(&mut self) -> Vec<Connection> {
        let mut out = self.take_evicted();
        while let Some((_, c)) = self.active.pop_lru() {
            out.push(c);
        }
        while let Some((_, c)) = self.quiet.pop_lru() {
            out.push(c);
        }
        out
    }
}
