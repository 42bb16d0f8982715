//! 5. Userspace decode/name/correlate throughput: `cargo bench -p observer --bench pipeline`
//!    (divan), parsed from its table.

use serde::Serialize;

use crate::shell;

#[derive(Debug, Serialize)]
pub struct UserspaceResult {
    pub bench: String,
    /// Median time per 10,000 records.
    pub median: String,
    /// Median throughput (records per second).
    pub median_items_per_sec: f64,
}

pub fn run() -> anyhow::Result<Vec<UserspaceResult>> {
    let out = super::procs::output_of({
        let mut cmd = shell::command("cargo");
        cmd.args(["bench", "-p", "observer", "--bench", "pipeline"]);
        cmd
    })?;
    let results = parse(&out);
    for r in &results {
        println!("   {:<36} median {:>10}  {:>6.2} M records/s", r.bench, r.median, r.median_items_per_sec / 1e6);
    }
    if results.is_empty() {
        anyhow::bail!("no divan results in:\n{out}");
    }
    Ok(results)
}

/// divan prints `├─ name  fastest │ slowest │ median │ mean │ ...` and on the next line the
/// same columns as throughput.
fn parse(out: &str) -> Vec<UserspaceResult> {
    let lines: Vec<&str> = out.lines().collect();
    let mut results = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("├─ ").or_else(|| line.trim_start().strip_prefix("╰─ "))
        else {
            continue;
        };
        let columns: Vec<&str> = rest.split('│').map(str::trim).collect();
        let Some(name) = columns.first().and_then(|c| c.split_whitespace().next()) else { continue };
        let median = columns.get(2).copied().unwrap_or_default().to_string();
        // The throughput line may start with the tree's `│`.
        let throughput: Vec<&str> = lines
            .get(i + 1)
            .map(|l| l.trim_start().trim_start_matches('│').split('│').map(str::trim).collect())
            .unwrap_or_default();
        results.push(UserspaceResult {
            bench: name.to_string(),
            median,
            median_items_per_sec: throughput.get(2).map(|t| items_per_sec(t)).unwrap_or(0.0),
        });
    }
    results
}

/// `146.6 Mitem/s` -> 146.6e6.
fn items_per_sec(text: &str) -> f64 {
    let mut words = text.split_whitespace();
    let value: f64 = words.next().and_then(|v| v.parse().ok()).unwrap_or(0.0);
    let scale = match words.next().unwrap_or_default().chars().next() {
        Some('G') => 1e9,
        Some('M') => 1e6,
        Some('K') | Some('k') => 1e3,
        _ => 1.0,
    };
    value * scale
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_divans_table() {
        let out = "pipeline                              fastest       │ slowest       │ median        │ mean          │ samples │ iters\n\
├─ decode_10k_records                 65.97 µs      │ 146.8 µs      │ 68.2 µs       │ 72.23 µs      │ 30      │ 30\n\
│                                     151.5 Mitem/s │ 68.07 Mitem/s │ 146.6 Mitem/s │ 138.4 Mitem/s │         │\n\
╰─ decode_name_correlate_10k_records  3.415 ms      │ 7.377 ms      │ 4.032 ms      │ 4.394 ms      │ 30      │ 30\n\
                                      2.928 Mitem/s │ 1.355 Mitem/s │ 2.479 Mitem/s │ 2.275 Mitem/s │         │\n";
        let r = super::parse(out);
        assert_eq!(r.len(), 2);
        assert_eq!((r[0].bench.as_str(), r[0].median.as_str()), ("decode_10k_records", "68.2 µs"));
        assert!((r[0].median_items_per_sec - 146.6e6).abs() < 1.0);
        assert!((r[1].median_items_per_sec - 2.479e6).abs() < 1.0);
    }
}
