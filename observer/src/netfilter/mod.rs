//! Naming the culprit live: reading a namespace's rulesets (iptables nft/legacy, native
//! nftables, ipsets) without changing them, its routes, and attributing each netfilter drop.
//! The model, parsers and evaluator are observer-core's (re-exported here).

pub mod attribute;
pub mod conntrack;
pub mod read;
pub mod route;

pub use attribute::Attributor;
pub use observer_core::netfilter::{culprit, eval, ipset, iptables, model, nft, owner, Confidence, Culprit};
