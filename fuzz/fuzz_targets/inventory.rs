//! The inventory parser (Kubernetes List JSON): any text is an inventory or an InventoryError.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(inventory) = observer::inventory::Inventory::from_json(text) {
            // Lookups on whatever was parsed must not panic either.
            for pod in &inventory.pods {
                let _ = inventory.describe_pod(pod);
            }
        }
    }
});
