//! A trigger file (TOML) or API body (JSON): parsing and validation
//! (cron expressions, time zones, conditions, actions) never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_trigger::TriggerSpec;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = TriggerSpec::from_toml(text);
    }
    if let Ok(value) = serde_json::from_slice(data) {
        let _ = TriggerSpec::from_json(value);
    }
});
