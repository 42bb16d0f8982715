//! The netfilter model: rulesets as read (iptables nft/legacy, native nftables, ipsets), their
//! parsers, the evaluator that walks a packet through them, and the culprit a drop is blamed on.
//! Reading live rulesets (subprocesses, namespaces) is not here: it is `observer`'s.

pub mod culprit;
pub mod eval;
pub mod ipset;
pub mod iptables;
pub mod model;
pub mod nft;
pub mod owner;
pub mod route;

pub use culprit::{Confidence, Culprit, RuleNamespace};

#[cfg(test)]
mod tests;
