//! observer-core: what observer decides, without the kernel. The observation model, the mesh's
//! inventory, the diagnosis engine (correlation, classification, aggregation, a clock), and the
//! netfilter model with its parsers and evaluator. No aya, nix or libc: everything here runs
//! on any host, e.g. replaying a recording without root.

pub mod diagnosis;
pub mod inventory;
pub mod json;
pub mod model;
pub mod netfilter;
pub mod recording;
pub mod time;
