//! ipsets as `ipset save` prints them, for `-m set --match-set NAME src|dst` rules: the members
//! of address sets (`hash:ip`, `hash:net`, their `list:set` unions) become address matches;
//! sets keyed on more than an address (`hash:ip,port`, ...) stay undecided.

use std::collections::HashMap;

use super::{iptables::parse_net, model::Value};

/// One set: its type (`hash:net`, ...) and its members, parsed when they are addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSet {
    pub kind: String,
    /// Member texts as printed (`10.0.0.0/24`, `10.0.0.1,tcp:80`, another set's name).
    pub members: Vec<String>,
}

/// The sets of one namespace by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpSets {
    pub sets: HashMap<String, IpSet>,
}

impl IpSets {
    /// Parses `ipset save` output (`create NAME TYPE ...`, `add NAME MEMBER ...`); lines it does
    /// not know are skipped.
    pub fn parse(save: &str) -> Self {
        let mut sets: HashMap<String, IpSet> = HashMap::new();
        for line in save.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("create"), Some(name), Some(kind)) => {
                    sets.entry(name.to_string()).or_default().kind = kind.to_string();
                }
                (Some("add"), Some(name), Some(member)) => {
                    sets.entry(name.to_string()).or_default().members.push(member.to_string());
                }
                _ => {}
            }
        }
        Self { sets }
    }

    /// The addresses of `name` for a one-dimension match (`src` or `dst`), or why not.
    pub fn addresses(&self, name: &str) -> Result<Vec<Value>, String> {
        self.addresses_at(name, 0)
    }

    fn addresses_at(&self, name: &str, depth: usize) -> Result<Vec<Value>, String> {
        let set = self.sets.get(name).ok_or_else(|| format!("ipset {name} was not read (is `ipset` installed?)"))?;
        match set.kind.as_str() {
            "hash:ip" | "hash:net" => {
                set.members.iter().map(|m| parse_net(m).map_err(|e| format!("ipset {name}: {e}"))).collect()
            }
            "list:set" if depth < 8 => {
                let mut out = Vec::new();
                for member in &set.members {
                    out.extend(self.addresses_at(member, depth + 1)?);
                }
                Ok(out)
            }
            other => Err(format!("ipset {name} of type {other} is not an address set")),
        }
    }
}
