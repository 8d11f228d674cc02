//! The HTTP API answers what its OpenAPI document (`/v1/openapi.json`,
//! generated from the code) says: every `GET` that answers JSON is called
//! on a real agent that has a job, a package repository list and a node,
//! and its body is validated against the document's schema for a 200,
//! with the document's own `components` to resolve `$ref`s. A field added
//! to a view but not to its schema, or typed otherwise, fails here.

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, marker, wait_until};
use std::time::Duration;

const SETTLE: Duration = Duration::from_secs(60);

/// `path` with its parameters filled in for this cluster, or None when
/// this test has nothing to put there.
fn fill(path: &str, node: &str) -> Option<String> {
    let filled = path
        .replace("/jobs/{name}", "/jobs/web")
        .replace("/packages/{name}", "/packages/redis")
        .replace("/services/{job}", "/services/web")
        .replace("/nodes/{key}", &format!("/nodes/{node}"))
        .replace("/tasks/{task}/logs", "/tasks/web%2F0/logs");
    (!filled.contains('{')).then_some(filled)
}

#[test]
fn every_json_get_answers_what_the_openapi_document_says() {
    let m = marker("openapi");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("o", 1, &["--cpus", "2", "--memory-mb", "1024"]);
    let agent = &c.agents[0];
    let (status, body) = agent
        .post(
            "/v1/jobs",
            &json!({"name": "web", "count": 2, "task": {
                "command": "/bin/sleep", "args": ["600"],
                "env": {"SHOAL_TEST_MARKER": m},
                "ports": [{"name": "http"}],
                "resources": {"cpus": 0.1, "memory_mb": 16}}}),
        )
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_until("both tasks running", SETTLE, || {
        Ok(c.tasks(0, "web")
            .iter()
            .filter(|t| t["state"] == "running")
            .count()
            == 2)
    });
    let node = agent.info.node_id.clone();
    let doc: Value = agent.get("/v1/openapi.json").unwrap();
    let components = doc["components"].clone();
    let mut checked = Vec::new();
    let mut skipped = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        let Some(get) = item.get("get") else { continue };
        let Some(schema) = get
            .pointer("/responses/200/content/application~1json/schema")
            .cloned()
        else {
            continue; // not JSON: logs, events, archives, metrics
        };
        let Some(url) = fill(path, &node) else {
            skipped.push(path.clone());
            continue;
        };
        let mut root = schema;
        root["components"] = components.clone();
        let validator = jsonschema::validator_for(&root)
            .unwrap_or_else(|e| panic!("the schema of GET {path} does not compile: {e}"));
        let (status, body) = agent.get_any(&url).unwrap();
        assert_eq!(status, 200, "GET {url}: {body}");
        let errors: Vec<String> = validator
            .iter_errors(&body)
            .map(|e| format!("{} at {}", e, e.instance_path().as_str()))
            .collect();
        assert!(
            errors.is_empty(),
            "GET {url} does not answer its schema:\n{}\nbody: {body}",
            errors.join("\n")
        );
        checked.push(path.clone());
    }
    // The check can fail: a job list whose job has a number for a name
    // is not what the document says.
    let mut jobs = doc
        .pointer("/paths/~1v1~1jobs/get/responses/200/content/application~1json/schema")
        .cloned()
        .expect("GET /v1/jobs has a schema");
    jobs["components"] = components;
    let validator = jsonschema::validator_for(&jobs).unwrap();
    assert!(!validator.is_valid(&json!([{"name": 5}])));
    // The calls that matter most were made (the document lists them).
    for p in [
        "/v1/jobs",
        "/v1/jobs/{name}",
        "/v1/jobs/{name}/tasks",
        "/v1/nodes",
        "/v1/summary",
        "/v1/services/{job}",
        "/v1/packages/{name}",
    ] {
        assert!(
            checked.iter().any(|c| c == p),
            "{p} not checked: checked {checked:?}, skipped {skipped:?}"
        );
    }
}
