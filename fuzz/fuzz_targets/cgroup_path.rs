//! The kubelet cgroup-path parser (pod uid, QoS class, container id from a cgroup path).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(path) = std::str::from_utf8(data) {
        let _ = observer::events::cgroups::pod_of(path);
    }
});
