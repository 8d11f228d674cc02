//! Batch jobs that finish, with real agents: a batch task that exited 0 is
//! complete for good (recorded in the job's replicated document), so
//! killing and restarting agents afterwards, the coordinators and the
//! nodes that ran the tasks included, runs none of its tasks again; and
//! `shoal run --wait` waits for a batch job to complete, failing when it
//! fails.
//!
//! Each task appends a line to a file of the test's own and exits: the file
//! shows every run, including re-runs.

use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{
    Cluster, KillMarked, appender, marker, run_shoal, runs_per_index, wait_job_status,
};

const SETTLE: Duration = Duration::from_secs(60);

fn cluster(n: usize) -> Cluster {
    // `Cluster::of` waits until every placement ring holds every member:
    // two nodes whose rings still differ can both coordinate a key and
    // place its task once each (seen once in CI: every index ran twice).
    Cluster::of(
        "n",
        n,
        &["--fault-injection", "--cpus", "2", "--memory-mb", "1024"],
    )
}

#[test]
fn a_complete_batch_job_runs_none_of_its_tasks_again_after_agents_restart() {
    let m = marker("batchonce");
    let _cleanup = KillMarked(m.clone());
    let mut c = cluster(3);
    let file = c.root.path().join("runs");
    let (status, body) = c.agents[0]
        .post("/v1/jobs", &appender("once", 4, &file, &m))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_job_status(&mut c, "once", "complete", SETTLE);
    let done = runs_per_index(&file);
    assert_eq!(done.len(), 4, "every index ran: {done:?}");
    assert!(done.values().all(|n| *n == 1), "each once: {done:?}");
    let (_, job) = c.agents[1].get_any("/v1/jobs/once").unwrap();
    assert_eq!(
        (job["tasks_complete"].clone(), job["tasks_failed"].clone()),
        (json!(4), json!(0)),
        "{job}"
    );
    // Every task shows as exited, from its coordinator.
    let (_, tasks) = c.agents[2].get_any("/v1/jobs/once/tasks").unwrap();
    let states: Vec<&str> = tasks
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["state"].as_str())
        .collect();
    assert_eq!(states, ["exited"; 4], "{tasks}");

    // One agent dies and is declared failed (its keys move to new
    // coordinators, which never heard of the tasks), then comes back.
    let gone = c.agents[1].info.node_id.clone();
    c.agents[1].kill9();
    c.wait_report_by(&[0, 2], std::slice::from_ref(&gone), "failed", SETTLE);
    c.agents[1].restart().unwrap();
    c.wait_all_alive(3, SETTLE);
    // Then every agent dies at once, and all come back from their disks.
    for a in &mut c.agents {
        a.kill9();
    }
    for a in &mut c.agents {
        a.restart().unwrap();
    }
    c.wait_all_alive(3, SETTLE);

    // A later job runs to completion: the cluster places tasks again, and
    // every key of the first job has had time to be auctioned, had it been
    // placeable.
    let later = c.root.path().join("later");
    let (status, body) = c.agents[2]
        .post("/v1/jobs", &appender("later", 3, &later, &m))
        .unwrap();
    assert_eq!(status, 201, "{body}");
    wait_job_status(&mut c, "later", "complete", SETTLE);
    wait_job_status(&mut c, "once", "complete", SETTLE);
    assert_eq!(
        runs_per_index(&file),
        done,
        "no task of the first job ran again"
    );
    assert!(runs_per_index(&later).values().all(|n| *n == 1));

    // The CLI shows it.
    let env = [
        ("SHOAL_ADDR", c.agents[0].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (status, out, err) = run_shoal(&["jobs"], &env);
    assert!(status.success(), "{err}");
    let header = out.lines().next().unwrap_or_default();
    assert!(header.contains("STATUS"), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("once"))
        .unwrap_or_default();
    assert!(line.contains("complete 4/4"), "{out}");
    let (status, out, err) = run_shoal(&["job", "show", "once", "--json"], &env);
    assert!(status.success(), "{err}");
    let shown: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(shown["status"], "complete");
}

#[test]
fn run_wait_exits_0_on_a_complete_batch_job_and_non_zero_on_a_failed_one() {
    let m = marker("batchwait");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(1);
    let dir = c.root.path();
    let env = [
        ("SHOAL_ADDR", c.agents[0].url()),
        ("SHOAL_TOKEN", c.token()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let ok = dir.join("ok.toml");
    std::fs::write(
        &ok,
        format!(
            r#"name = "ok"
type = "batch"
count = 2

[task]
command = "/bin/sh"
args = ["-c", "sleep 1"]
env = {{ SHOAL_TEST_MARKER = "{m}" }}
resources = {{ cpus = 0.25, memory_mb = 32 }}
"#
        ),
    )
    .unwrap();
    let ok = ok.display().to_string();
    let (status, out, err) = run_shoal(&["run", &ok, "--wait", "--timeout", "60s"], &env);
    assert!(status.success(), "{out}\n{err}");
    let (_, job) = c.agents[0].get_any("/v1/jobs/ok").unwrap();
    assert_eq!(job["status"], "complete", "{job}");

    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            r#"name = "bad"
type = "batch"
count = 1

[task]
command = "/bin/sh"
args = ["-c", "exit 3"]
env = {{ SHOAL_TEST_MARKER = "{m}" }}
resources = {{ cpus = 0.25, memory_mb = 32 }}

[restart]
attempts = 1
delay = "200ms"
"#
        ),
    )
    .unwrap();
    let bad = bad.display().to_string();
    let (status, out, err) = run_shoal(&["run", &bad, "--wait", "--timeout", "60s"], &env);
    assert!(!status.success(), "{out}\n{err}");
    assert!(
        err.contains("bad failed") && err.contains("restart attempts"),
        "{err}"
    );
    let (_, job) = c.agents[0].get_any("/v1/jobs/bad").unwrap();
    assert_eq!(
        (job["status"].clone(), job["tasks_failed"].clone()),
        (json!("failed"), json!(1)),
        "{job}"
    );
}
