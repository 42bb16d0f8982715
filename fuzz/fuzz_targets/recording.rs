//! The recording reader (`trace --record` files, replayed by `--replay`): any text is a
//! recording or a RecordingError; the events inside decode or are refused, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use observer_core::recording::{from_hex, Record, Recording};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(recording) = Recording::parse(text) else { return };
    for (_, record) in &recording.records {
        if let Record::Event { wire, culprit, .. } = record {
            if let Ok(bytes) = from_hex(wire) {
                let _ = observer_common::decode::decode(&bytes);
            }
            if let Some(culprit) = culprit {
                let _ = culprit.to_culprit();
            }
        }
    }
});
