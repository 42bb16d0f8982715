//! The ring-buffer event decoder: any bytes decode to an event or a DecodeError, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer_common::decode::decode;

fuzz_target!(|data: &[u8]| {
    let _ = decode(data);
});
