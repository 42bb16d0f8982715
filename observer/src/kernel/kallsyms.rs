//! Symbolizes kernel text addresses (the drop location) from `/proc/kallsyms`.

/// Sorted (address, symbol) pairs of the kernel's text symbols.
#[derive(Clone, Debug, Default)]
pub struct Kallsyms {
    symbols: Vec<(u64, String)>,
}

impl Kallsyms {
    /// Reads `/proc/kallsyms`; empty (addresses shown raw) when unreadable or when
    /// `kptr_restrict` hides the addresses.
    pub fn load() -> Self {
        std::fs::read_to_string("/proc/kallsyms").map(|text| Self::parse(&text)).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Self {
        let mut symbols: Vec<(u64, String)> = text
            .lines()
            .filter_map(|line| {
                let mut parts = line.split_whitespace();
                let addr = u64::from_str_radix(parts.next()?, 16).ok()?;
                let kind = parts.next()?;
                let name = parts.next()?;
                (addr != 0 && matches!(kind, "t" | "T" | "w" | "W")).then(|| (addr, name.to_string()))
            })
            .collect();
        symbols.sort_unstable_by_key(|(addr, _)| *addr);
        Self { symbols }
    }

    /// `symbol+0xoff`, or the raw address when no symbol covers it.
    pub fn symbolize(&self, addr: u64) -> String {
        let idx = self.symbols.partition_point(|(a, _)| *a <= addr);
        match idx.checked_sub(1).and_then(|i| self.symbols.get(i)) {
            Some((start, name)) if addr > 0 => format!("{name}+{:#x}", addr - start),
            _ => format!("{addr:#x}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbolizes_inside_the_nearest_lower_symbol() {
        let syms = Kallsyms::parse(
            "ffffffff81000000 T _stext\nffffffff81a00000 t nf_hook_slow\nffffffff81a00400 T ip_rcv\n0000000000000000 T hidden\n",
        );
        assert_eq!(syms.symbolize(0xffffffff81a00010), "nf_hook_slow+0x10");
        assert_eq!(syms.symbolize(0xffffffff81a00400), "ip_rcv+0x0");
        assert_eq!(syms.symbolize(0x1000), "0x1000");
    }
}
