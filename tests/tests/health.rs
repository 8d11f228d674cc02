//! Health checks, with real agents: each node probes the tasks it runs,
//! the coordinators answer with their health, a failing check restarts
//! its task, and a check on a port the task does not declare is refused.
//!
//! Every task carries a marker unique to the test in its environment
//! (`SHOAL_TEST_MARKER`), so that none outlives it.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, wait_until};

const SETTLE: Duration = Duration::from_secs(60);

fn cluster(n: usize) -> Cluster {
    Cluster::of(
        "n",
        n,
        &["--cpus", "2", "--memory-mb", "1024", "--stop-grace", "2s"],
    )
}

/// The python interpreter itself (not a shim that needs the caller's
/// HOME), or `None` when the machine has none.
fn python() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .ok()?;
    let path = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && Path::new(&path).exists()).then_some(path)
}

fn submit(c: &Cluster, job: &Value) {
    let (status, body) = c.agents[0].post("/v1/jobs", job).unwrap();
    assert_eq!(status, 201, "{body}");
}

fn all(tasks: &[Value], count: usize, what: impl Fn(&Value) -> bool) -> bool {
    tasks.len() == count && tasks.iter().all(what)
}

#[test]
fn http_checks_find_a_service_healthy_and_a_failing_check_restarts_its_task() {
    let Some(python) = python() else {
        eprintln!("skipped: no python3 on this machine");
        return;
    };
    let m = format!("shoaltesthealth{}", std::process::id());
    let _cleanup = KillMarked(m.clone());
    let dir = tempfile::tempdir().unwrap();
    let c = cluster(3);

    // Three web servers on the host ports their nodes gave them, each
    // probed over HTTP by its own node.
    submit(
        &c,
        &json!({
            "name": "web",
            "count": 3,
            "task": {
                "command": "/bin/sh",
                "args": ["-c", format!("exec {python} -m http.server $SHOAL_PORT_HTTP --bind 127.0.0.1")],
                "env": {"SHOAL_TEST_MARKER": m},
                "ports": [{"name": "http"}],
                "checks": [{"type": "http", "port": "http", "path": "/", "interval": "1s", "timeout": "1s"}],
                "resources": {"cpus": 0.1, "memory_mb": 64}
            }
        }),
    );
    // Asked of the node that founded the cluster, the answers come from
    // each task's coordinator.
    let mut last = Vec::new();
    wait_until("every web task healthy", SETTLE, || {
        last = c.tasks(0, "web");
        Ok(all(&last, 3, |t| {
            t["state"] == "running" && t["health"] == "healthy"
        }))
    });
    for t in &last {
        assert!(
            t["check"]
                .as_str()
                .is_some_and(|o| o.starts_with("HTTP 200")),
            "{t}"
        );
        assert_eq!(t["restarts"], 0, "{t}");
    }

    // Two sleepers whose command check looks for a file: one restarts
    // when it goes, the other is only shown unhealthy.
    let flag = dir.path().join("ready");
    std::fs::write(&flag, "").unwrap();
    let starts = dir.path().join("starts");
    for (name, on_unhealthy) in [("flaky", "restart"), ("watched", "none")] {
        submit(
            &c,
            &json!({
                "name": name,
                "task": {
                    "command": "/bin/sh",
                    "args": ["-c", "echo $SHOAL_JOB >> $STARTS; exec sleep 3600"],
                    "env": {
                        "SHOAL_TEST_MARKER": m,
                        "FLAG": flag.display().to_string(),
                        "STARTS": starts.display().to_string(),
                    },
                    "checks": [{"type": "command", "command": "test -f \"$FLAG\" || { echo no $FLAG; exit 1; }",
                                "interval": "500ms", "failures": 2, "on_unhealthy": on_unhealthy}],
                    "resources": {"cpus": 0.1, "memory_mb": 64}
                }
            }),
        );
    }
    for job in ["flaky", "watched"] {
        wait_until(&format!("{job} healthy"), SETTLE, || {
            Ok(all(&c.tasks(1, job), 1, |t| t["health"] == "healthy"))
        });
    }
    std::fs::remove_file(&flag).unwrap();
    wait_until("watched unhealthy, still running", SETTLE, || {
        Ok(all(&c.tasks(2, "watched"), 1, |t| {
            t["health"] == "unhealthy" && t["state"] == "running" && t["restarts"] == 0
        }))
    });
    let mut flaky = Vec::new();
    wait_until("flaky restarted for its failing check", SETTLE, || {
        flaky = c.tasks(2, "flaky");
        Ok(all(&flaky, 1, |t| t["restarts"].as_u64() >= Some(1)))
    });
    let reason = flaky[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.starts_with("unhealthy: exit 1: no "), "{}", flaky[0]);
    let started = || {
        std::fs::read_to_string(&starts)
            .unwrap_or_default()
            .lines()
            .filter(|l| *l == "flaky")
            .count()
    };
    wait_until("flaky's process ran again", SETTLE, || Ok(started() >= 2));

    // Back: healthy again, the restarts counted.
    std::fs::write(&flag, "").unwrap();
    for job in ["flaky", "watched"] {
        wait_until(&format!("{job} healthy again"), SETTLE, || {
            Ok(all(&c.tasks(0, job), 1, |t| {
                t["health"] == "healthy" && t["state"] == "running"
            }))
        });
    }
    assert!(c.tasks(0, "flaky")[0]["restarts"].as_u64() >= Some(1));

    // A check on a port the task does not declare: refused, naming the
    // field, and nothing written.
    let (status, body) = c.agents[1]
        .post(
            "/v1/jobs",
            &json!({
                "name": "bad",
                "task": {
                    "command": "/bin/true",
                    "ports": [{"name": "http"}],
                    "checks": [{"type": "http", "port": "admin"}]
                }
            }),
        )
        .unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "task.checks[0].port", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no port named \"admin\"")),
        "{body}"
    );
    let (status, _) = c.agents[1].get_any("/v1/jobs/bad").unwrap();
    assert_eq!(status, 404, "nothing was written");
}
