//! A job file (TOML) or API body (JSON) as a user writes it: parsing and
//! validation never panic, whatever the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_model::JobSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = JobSpec::from_toml(text) {
            // What validated can be written out and read back.
            let json = serde_json::to_value(&spec).expect("a spec serializes");
            JobSpec::from_json(json).expect("a validated spec validates again");
        }
    }
    if let Ok(value) = serde_json::from_slice(data) {
        let _ = JobSpec::from_json(value);
    }
});
