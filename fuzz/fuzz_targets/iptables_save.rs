//! The iptables-save parser: any text, for every backend and family, is tables or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::netfilter::{
    iptables::parse_save,
    model::{Backend, Family},
};

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        for family in [Family::Ip, Family::Ip6] {
            let _ = parse_save(text, Backend::IptablesNft, family);
        }
    }
});
