//! `after`: a job waits until the jobs it names are ready, with real
//! agents. In a binary of its own, so that its cluster does not share the
//! machine with the batch tests' clusters.

use std::time::Duration;

use serde_json::json;
use shoal_tests::{
    Cluster, KillMarked, appender, marker, runs_per_index, wait_job_status, wait_until,
};

const SETTLE: Duration = Duration::from_secs(60);

fn cluster(n: usize) -> Cluster {
    Cluster::of("w", n, &["--cpus", "2", "--memory-mb", "1024"])
}

/// A job with `after` is not placed until the jobs it names are ready: a
/// batch job waiting for a service whose check passes only once the test
/// creates a file stays pending, saying what it waits for; once the
/// service is healthy it runs, once. A job waiting for a batch job runs
/// once that one is complete.
#[test]
fn a_job_after_others_waits_until_they_are_ready_then_runs_once() {
    let m = marker("after");
    let _cleanup = KillMarked(m.clone());
    let mut c = cluster(2);
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("ready");
    let service = json!({
        "name": "db",
        "count": 2,
        "task": {
            "command": "/bin/sleep",
            "args": ["3600"],
            "env": {"SHOAL_TEST_MARKER": m},
            "checks": [{"type": "command", "command": format!("test -e {}", flag.display()), "interval": "500ms"}],
            "resources": {"cpus": 0.05, "memory_mb": 16}
        }
    });
    let log = dir.path().join("runs");
    let mut setup = appender("db-setup", 1, &log, &m);
    setup["after"] = json!(["db"]);
    let mut report = appender("report", 1, &dir.path().join("report-runs"), &m);
    report["after"] = json!(["db-setup"]);
    // Waiting for itself, or for a job named wrongly: refused.
    let mut selfish = setup.clone();
    selfish["after"] = json!(["db-setup"]);
    let (status, body) = c.agents[0].post("/v1/jobs", &selfish).unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "after[0]", "{body}");

    for spec in [&report, &setup, &service] {
        let (status, body) = c.agents[1].post("/v1/jobs", spec).unwrap();
        assert!(status == 200 || status == 201, "{status} {body}");
    }
    wait_until("db-setup pending, waiting for db", SETTLE, || {
        let tasks = c.tasks(0, "db-setup");
        Ok(tasks.len() == 1
            && tasks[0]["state"] == "pending"
            && tasks[0]["pending"]
                .to_string()
                .contains("waiting for db to be ready"))
    });
    let (_, job) = c.agents[0].get_any("/v1/jobs/db-setup").unwrap();
    assert_eq!(job["waiting_for"], json!(["db"]), "{job}");
    assert!(runs_per_index(&log).is_empty(), "ran before db was ready");

    std::fs::write(&flag, b"").unwrap();
    wait_job_status(&mut c, "db-setup", "complete", SETTLE);
    wait_job_status(&mut c, "report", "complete", SETTLE);
    assert_eq!(runs_per_index(&log), [(0, 1)].into(), "db-setup ran once");
    let (_, job) = c.agents[1].get_any("/v1/jobs/db-setup").unwrap();
    assert!(job.get("waiting_for").is_none(), "{job}");
}
