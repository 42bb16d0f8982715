//! Names of the running kernel's `enum skb_drop_reason` values (they differ between kernels).

use std::collections::HashMap;

use super::btf::Btf;
use observer_core::model::DropReason;

const PREFIX: &str = "SKB_DROP_REASON_";

/// Maps drop-reason numbers to names such as `NETFILTER_DROP`, each classified once
/// ([`observer_core::model::DropClass`]) when read.
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: HashMap<u32, DropReason>,
}

impl DropReasons {
    /// Reads the enum from BTF; an empty table (numbers shown raw) when the kernel has none.
    pub fn from_btf(btf: &Btf) -> Self {
        let names = btf
            .enum_values("skb_drop_reason")
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| {
                let short = name.strip_prefix(PREFIX).unwrap_or(&name);
                (value as u32, DropReason::new(value as u32, short))
            })
            .collect();
        Self { names }
    }

    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (u32, &'a str)>) -> Self {
        Self { names: pairs.into_iter().map(|(v, n)| (v, DropReason::new(v, n))).collect() }
    }

    /// The reason (named `reason#N`, class other, when the kernel does not name it).
    pub fn reason(&self, code: u32) -> DropReason {
        self.names.get(&code).cloned().unwrap_or_else(|| DropReason::unnamed(code))
    }

    /// The reason's name, or `reason#N` when unknown.
    pub fn name(&self, code: u32) -> String {
        self.reason(code).name.to_string()
    }

    /// Every (number, name) pair, in numeric order.
    pub fn pairs(&self) -> Vec<(u32, String)> {
        let mut all: Vec<(u32, String)> = self.names.iter().map(|(v, r)| (*v, r.name.to_string())).collect();
        all.sort();
        all
    }

    /// Every name, in numeric order.
    pub fn names(&self) -> Vec<String> {
        self.pairs().into_iter().map(|(_, n)| n).collect()
    }

    /// The number of a named reason (with or without the `SKB_DROP_REASON_` prefix).
    pub fn value(&self, name: &str) -> Option<u32> {
        let short = name.strip_prefix(PREFIX).unwrap_or(name);
        self.names.iter().find(|(_, n)| n.name.eq_ignore_ascii_case(short)).map(|(v, _)| *v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_known_and_unknown_reasons() {
        let reasons = DropReasons::from_pairs([(12, "NETFILTER_DROP"), (2, "NOT_SPECIFIED")]);
        assert_eq!(reasons.name(12), "NETFILTER_DROP");
        assert_eq!(reasons.name(999), "reason#999");
        assert_eq!(reasons.value("SKB_DROP_REASON_NETFILTER_DROP"), Some(12));
        assert_eq!(reasons.value("netfilter_drop"), Some(12));
    }
}
