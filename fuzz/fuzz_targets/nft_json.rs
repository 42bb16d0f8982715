//! The `nft -j list ruleset` parser: any JSON text (and, after a NUL byte, the plain-text
//! listing it is matched against) is tables or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::netfilter::nft::parse_ruleset;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (json, listing) = text.split_once('\0').unwrap_or((text, ""));
        let _ = parse_ruleset(json, listing, &[]);
    }
});
