//! Every API path the CLI and the `shoal-client` crate ask for is in the
//! agent's OpenAPI document (`GET /v1/openapi.json`): the string literals
//! that begin with `/v1/` or `/metrics` in their sources, with each
//! `{…}`-formatted segment standing for a path parameter.

use std::path::Path;

/// `(file, path)` of every API path literal in the CLI's and the client's
/// sources, without its query.
fn paths_used() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(root.join("src"))
        .expect("cli/src")
        .map(|e| e.expect("an entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter(|p| !p.ends_with("doc_examples.rs") && !p.ends_with("api_paths.rs"))
        .collect();
    files.push(root.join("../client/src/lib.rs"));
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("a source file");
        for line in text.lines() {
            if line.trim_start().starts_with("//") {
                continue;
            }
            for piece in line.split('"').skip(1).step_by(2) {
                if piece.starts_with("/v1/") || piece == "/metrics" {
                    let path = piece.split('?').next().unwrap_or(piece);
                    out.push((file.display().to_string(), path.to_owned()));
                }
            }
        }
    }
    out
}

/// Whether a path the CLI formats is one of the document's templates (a
/// template's `{param}` stands for any segment).
fn matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && !p.is_empty()))
}

#[test]
fn every_path_the_cli_uses_is_in_the_openapi_document() {
    let json = serde_json::to_value(shoal_node::api::openapi::document()).expect("encodes");
    let templates: Vec<&String> = json["paths"].as_object().expect("paths").keys().collect();
    let used = paths_used();
    assert!(
        used.len() > 30,
        "found only {} API paths: {used:?}",
        used.len()
    );
    for (file, path) in &used {
        assert!(
            templates.iter().any(|t| matches(t, path)),
            "{file} asks for {path}, which the OpenAPI document does not have"
        );
    }
}
