//! Naming the culprit: which netfilter rule dropped or rejected a packet, read from the
//! namespace's own rulesets (iptables nft/legacy, native nftables) without changing them,
//! evaluated against the packet, and confirmed by the rules' counters where they exist.

pub mod attribute;
pub mod conntrack;
pub mod culprit;
pub mod eval;
pub mod ipset;
pub mod iptables;
pub mod model;
pub mod nft;
pub mod owner;
pub mod read;
pub mod route;

pub use attribute::Attributor;
pub use culprit::{Confidence, Culprit};

#[cfg(test)]
mod tests;
