//! Package installations through the API with real agents: two instances
//! side by side, an upgrade that drops a job, a rollback, an uninstall
//! that stops exactly its own jobs, and bad input refused with nothing
//! written. (The jobs here are given rendered; rendering packages is the
//! CLI's, tested with the package crate.)

use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, marker, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn job(marker: &str, name: &str, count: u32) -> Value {
    json!({
        "name": name,
        "count": count,
        "task": {
            "command": "/bin/sleep",
            "args": ["3600"],
            "env": {"SHOAL_TEST_MARKER": marker},
            "resources": {"cpus": 0.05, "memory_mb": 16}
        }
    })
}

fn install(c: &Cluster, via: usize, instance: &str, jobs: Vec<Value>) -> (u16, Value) {
    c.agents[via]
        .post(
            "/v1/installations",
            &json!({
                "instance": instance,
                "package": "demo",
                "version": "1.0.0",
                "repository": "builtin",
                "options": {"workers": 2},
                "jobs": jobs,
            }),
        )
        .unwrap()
}

fn status(c: &Cluster, via: usize, instance: &str) -> anyhow::Result<Value> {
    let (code, body) = c.agents[via].get_any(&format!("/v1/installations/{instance}"))?;
    anyhow::ensure!(code == 200, "{code} {body}");
    Ok(body)
}

fn live_jobs(c: &Cluster, via: usize) -> Vec<String> {
    let jobs: Vec<Value> = c.agents[via].get("/v1/jobs").unwrap();
    jobs.iter()
        .map(|j| j["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn installations_side_by_side_upgrade_rollback_and_uninstall_their_own_jobs() {
    let m = marker("install");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("i", 2, &["--cpus", "2", "--memory-mb", "1024"]);

    let (code, body) = install(
        &c,
        0,
        "demo-1",
        vec![job(&m, "demo-1/master", 1), job(&m, "demo-1/workers", 2)],
    );
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["revision"], 1);
    let (code, body) = install(&c, 1, "demo-2", vec![job(&m, "demo-2/master", 1)]);
    assert_eq!(code, 201, "{body}");
    for instance in ["demo-1", "demo-2"] {
        wait_until(&format!("{instance} healthy"), SETTLE, || {
            Ok(status(&c, 1, instance)?["status"] == "healthy")
        });
    }
    let (_, jobs) = c.agents[0].get_any("/v1/jobs/demo-1%2Fworkers").unwrap();
    assert_eq!(jobs["spec"]["labels"]["shoal.package.instance"], "demo-1");

    // Bad input: nothing written.
    let (code, body) = install(&c, 0, "demo-3", vec![job(&m, "other/x", 1)]);
    assert_eq!(code, 422, "{body}");
    assert_eq!(body["error"]["field"], "jobs[0].name", "{body}");
    let (code, body) = install(
        &c,
        0,
        "demo-3",
        vec![json!({"name": "demo-3", "count": -1})],
    );
    assert_eq!(code, 422, "{body}");
    let (code, body) = install(&c, 0, "demo-1", vec![job(&m, "demo-1", 1)]);
    assert_eq!(code, 422, "an existing instance: {body}");
    let (code, body) = c.agents[0].post("/v1/jobs", &job(&m, "mine", 1)).unwrap();
    assert_eq!(code, 201, "{body}");
    let (code, body) = install(&c, 0, "mine", vec![job(&m, "mine", 1)]);
    assert_eq!(code, 409, "a job of someone else: {body}");
    let (code, _) = c.agents[0].get_any("/v1/installations/demo-3").unwrap();
    assert_eq!(code, 404, "nothing written");
    assert!(!live_jobs(&c, 0).iter().any(|j| j.starts_with("demo-3")));

    // Upgrade demo-1: workers gone, master scaled; the user's options kept.
    let (code, body) = c.agents[1]
        .post(
            "/v1/installations/demo-1/upgrade",
            &json!({"version": "1.1.0", "options": {"workers": 2}, "jobs": [job(&m, "demo-1/master", 2)]}),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["revision"], &body["version"]),
        (&json!(2), &json!("1.1.0"))
    );
    wait_until("demo-1/workers stopped", SETTLE, || {
        Ok(!live_jobs(&c, 0).contains(&"demo-1/workers".to_owned()))
    });
    // Rollback to revision 1: workers back.
    let (code, body) = c.agents[0]
        .post("/v1/installations/demo-1/rollback", &json!({"revision": 1}))
        .unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        (&body["revision"], &body["version"]),
        (&json!(3), &json!("1.0.0"))
    );
    wait_until("demo-1 healthy again, with its workers", SETTLE, || {
        let s = status(&c, 0, "demo-1")?;
        Ok(s["status"] == "healthy" && s["jobs"].as_array().map(Vec::len) == Some(2))
    });

    // Uninstall demo-1 through agent 1: its jobs go, demo-2's and the
    // user's stay. Agent 0 sees it once the deletion has replicated there.
    let (code, body) = c.agents[1].delete("/v1/installations/demo-1").unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["status"], "uninstalled");
    wait_until("demo-1 and its jobs gone at agent 0", SETTLE, || {
        let list: Vec<Value> = c.agents[0].get("/v1/installations")?;
        Ok(list.len() == 1 && !live_jobs(&c, 0).iter().any(|j| j.starts_with("demo-1")))
    });
    let jobs = live_jobs(&c, 0);
    assert!(jobs.contains(&"demo-2/master".to_owned()) && jobs.contains(&"mine".to_owned()));
    assert_eq!(status(&c, 0, "demo-2").unwrap()["status"], "healthy");
    let list: Vec<Value> = c.agents[0].get("/v1/installations").unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
}

#[test]
fn the_built_in_library_is_browsed_and_rendered_through_the_api() {
    let c = Cluster::of("l", 1, &[]);
    let all: Vec<Value> = c.agents[0].get("/v1/packages").unwrap();
    assert!(all.iter().any(|p| p["name"] == "redis"), "{all:?}");
    let none: Vec<Value> = c.agents[0].get("/v1/packages?q=no-such-thing").unwrap();
    assert!(none.is_empty());
    let redis: Value = c.agents[0].get("/v1/packages/redis").unwrap();
    assert!(
        redis["options_schema"]["properties"]["replicas"].is_object(),
        "{redis}"
    );
    assert!(redis["defaults"]["replicas"].is_number(), "{redis}");
    let (code, body) = c.agents[0]
        .post(
            "/v1/packages/redis/render",
            &json!({"instance": "r9", "options": {"replicas": 3}}),
        )
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let jobs = body["jobs"].as_array().unwrap();
    assert!(
        jobs.iter()
            .all(|j| j["name"].as_str().unwrap().starts_with("r9/")),
        "{body}"
    );
    assert!(jobs.iter().any(|j| j["count"] == 3), "{body}");
    let (code, body) = c.agents[0]
        .post(
            "/v1/packages/redis/render",
            &json!({"options": {"replica": 3}}),
        )
        .unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/replica"),
        "{body}"
    );
    let (code, _) = c.agents[0].get_any("/v1/packages/nope").unwrap();
    assert_eq!(code, 404);
    // Nothing was installed by rendering.
    let list: Vec<Value> = c.agents[0].get("/v1/installations").unwrap();
    assert!(list.is_empty());
}

/// A local package directory: `schema` for its options, `job` its one
/// job template.
fn local_package(dir: &std::path::Path, schema: &str, job: &str) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    std::fs::write(
        dir.join("package.toml"),
        "name = \"bad\"\nversion = \"1.0.0\"\ndescription = \"A package for bad input.\"\n",
    )
    .unwrap();
    std::fs::write(dir.join("options.schema.json"), schema).unwrap();
    std::fs::write(dir.join("jobs/server.toml.j2"), job).unwrap();
}

/// Bad input to an install, through the API and the CLI: a wrong type, a
/// missing required value and a template's undefined variable are each
/// refused naming what and where, and nothing is written.
#[test]
fn bad_install_input_is_refused_naming_it_and_nothing_is_written() {
    let c = Cluster::of("b", 1, &[]);
    let agent = &c.agents[0];
    // A wrong type, through the API (the built-in redis).
    let (code, body) = agent
        .post(
            "/v1/installations",
            &json!({"instance": "bad1", "package": "redis", "options": {"replicas": "two"}}),
        )
        .unwrap();
    assert_eq!(code, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("/replicas") && message.contains("\"two\""),
        "{body}"
    );

    // A missing required value and an undefined variable, through the
    // CLI with local packages (rendered by the CLI).
    let dir = tempfile::tempdir().unwrap();
    let job = "name = {{ instance ~ \"/server\" }}\n[task]\ncommand = \"/bin/true\"\n";
    local_package(
        &dir.path().join("required"),
        r#"{"type": "object", "properties": {"password": {"type": "string"}}, "required": ["password"]}"#,
        job,
    );
    local_package(
        &dir.path().join("undefined"),
        r#"{"type": "object", "properties": {"count": {"type": "integer", "default": 1}}}"#,
        "name = {{ instance ~ \"/server\" }}\ncount = {{ options.cuont }}\n[task]\ncommand = \"/bin/true\"\n",
    );
    let url = agent.url();
    let env = [
        ("SHOAL_ADDR", url.as_str()),
        ("SHOAL_TOKEN", agent.token.as_str()),
    ];
    let path = |p: &str| dir.path().join(p).display().to_string();
    let (status, out, err) = shoal_tests::run_shoal(
        &[
            "package",
            "install",
            &path("required"),
            "--instance",
            "bad2",
        ],
        &env,
    );
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("password") && err.contains("required"),
        "{err}"
    );
    let (status, out, err) = shoal_tests::run_shoal(
        &[
            "package",
            "install",
            &path("undefined"),
            "--instance",
            "bad3",
        ],
        &env,
    );
    assert!(!status.success(), "{out}");
    assert!(
        err.contains("jobs/server.toml.j2") && err.contains("undefined") && err.contains("cuont"),
        "{err}"
    );

    // Nothing was written.
    let list: Vec<Value> = agent.get("/v1/installations?all=true").unwrap();
    assert!(list.is_empty(), "{list:?}");
    let jobs: Vec<Value> = agent.get("/v1/jobs").unwrap();
    assert!(jobs.is_empty(), "{jobs:?}");
}
