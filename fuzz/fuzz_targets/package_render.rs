//! A package's job template and a user's options: loading the package
//! (template parsing) and rendering (Jinja, the TOML value formatter, the
//! job validation after it) never panic. The input is the template, then
//! a NUL byte, then the options as JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_package::{Files, Package};

const MANIFEST: &str = r#"name = "fuzz"
version = "1.0.0"
app_version = "1"
description = "fuzzed"
"#;
const SCHEMA: &str = r#"{"type": "object", "properties": {
  "replicas": {"type": "integer", "default": 1, "minimum": 0},
  "name": {"type": "string", "default": "x"},
  "flags": {"type": "array", "items": {"type": "string"}, "default": []},
  "extra": {"type": "object", "default": {}}
}}"#;

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(2, |b| *b == 0);
    let template = parts.next().unwrap_or_default();
    let options = parts
        .next()
        .and_then(|o| serde_json::from_slice(o).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    let mut files = Files::new();
    files.insert("package.toml".into(), MANIFEST.as_bytes().to_vec());
    files.insert("options.schema.json".into(), SCHEMA.as_bytes().to_vec());
    files.insert("jobs/main.toml.j2".into(), template.to_vec());
    if let Ok(package) = Package::from_files(files) {
        let _ = package.render("fz", &options);
    }
});
