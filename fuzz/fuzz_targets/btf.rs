//! The BTF reader: any bytes are a BTF or a BtfError; lookups and the offset resolution on a
//! parsed one return values or errors.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer::kernel::{btf::Btf, drop_reasons::DropReasons, offsets};

fuzz_target!(|data: &[u8]| {
    if let Ok(btf) = Btf::parse(data) {
        let _ = offsets::resolve(&btf);
        let _ = DropReasons::from_btf(&btf);
        let _ = btf.member("sk_buff", "head");
    }
});
