//! Rolling deployments with real agents on loopback: HTTP servers (process
//! tasks with an http check) replaced two at a time, start-first, never
//! fewer than `count - max_parallel` healthy; a canary that waits for
//! `shoal deployment promote`; a version whose check never passes failing
//! its deployment and `auto_revert` bringing the previous one back,
//! healthy; the driver's agent killed mid-deployment and the deployment
//! completing; bad `[update]` values refused naming the field.
//!
//! Every task carries a marker unique to the test (`SHOAL_TEST_MARKER`)
//! so that the test kills what is left of them, including those that
//! outlive their `kill -9`ed agent.

#![allow(clippy::print_stderr)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, http_get, marker, processes, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(90);
const JOB: &str = "web";

fn cluster(n: usize) -> Cluster {
    Cluster::of(
        "d",
        n,
        &["--cpus", "2", "--memory-mb", "1024", "--stop-grace", "2s"],
    )
}

/// `count` HTTP servers that serve their `RELEASE` at `/release`, with an
/// http check on `path`, rolled out by `update`. Half a core each, and a
/// grace period: Python needs about 0.15 s of CPU to start listening,
/// which a tenth of a core stretches past three failed checks, and the
/// check then restarts it before it ever listens.
fn web(marker: &str, count: u32, release: &str, path: &str, update: Value) -> Value {
    json!({
        "name": JOB,
        "count": count,
        "task": {
            "command": "/bin/sh",
            "args": ["-c", "echo $RELEASE > release && exec python3 -m http.server --bind 127.0.0.1 $SHOAL_PORT_HTTP"],
            "env": {"SHOAL_TEST_MARKER": marker, "RELEASE": release},
            "ports": [{"name": "http"}],
            "checks": [{"type": "http", "port": "http", "path": path, "interval": "500ms", "timeout": "1s", "grace": "5s"}],
            "resources": {"cpus": 0.5, "memory_mb": 64}
        },
        "restart": {"mode": "always", "delay": "200ms"},
        "update": update
    })
}

/// The job's deployments, newest first, as agent `via` reports them.
fn deployments(c: &Cluster, via: usize) -> anyhow::Result<Vec<Value>> {
    let (status, body) = c.agents[via].get_any(&format!("/v1/jobs/{JOB}/deployments"))?;
    anyhow::ensure!(status == 200, "{status} {body}");
    Ok(body.as_array().cloned().unwrap_or_default())
}

/// The deployment of `version`.
fn deployment(c: &Cluster, via: usize, version: u64) -> anyhow::Result<Value> {
    deployments(c, via)?
        .into_iter()
        .find(|d| d["version"] == version)
        .ok_or_else(|| anyhow::anyhow!("no deployment of version {version} yet"))
}

/// Healthy tasks, and the releases their servers answer with.
fn healthy(c: &Cluster, via: usize) -> (usize, BTreeMap<String, usize>) {
    let mut releases = BTreeMap::new();
    let mut n = 0;
    for t in c.tasks(via, JOB) {
        if t["health"] != "healthy" {
            continue;
        }
        n += 1;
        if let Some(port) = t["ports"]["http"]["port"].as_u64()
            && let Ok((200, body)) = http_get(&format!("http://127.0.0.1:{port}/release"), None)
        {
            *releases.entry(body.trim().to_owned()).or_default() += 1;
        }
    }
    (n, releases)
}

/// Posts `spec` through agent `via`: the new version.
fn submit(c: &Cluster, via: usize, spec: &Value) -> u64 {
    let (status, body) = c.agents[via].post("/v1/jobs", spec).unwrap();
    assert!(status == 200 || status == 201, "{status} {body}");
    body["job"]["version"].as_u64().unwrap()
}

/// Waits for the deployment of `version` to reach `status`, sampling the
/// healthy tasks every 200 ms: the fewest seen.
fn watch(c: &Cluster, version: u64, status: &str) -> usize {
    let mut fewest = usize::MAX;
    let mut last = Instant::now() - Duration::from_secs(1);
    wait_until(
        &format!("the deployment of version {version} {status}"),
        SETTLE,
        || {
            if last.elapsed() >= Duration::from_millis(200) {
                last = Instant::now();
                fewest = fewest.min(healthy(c, 0).0);
            }
            Ok(deployment(c, 1, version)?["status"] == status)
        },
    );
    fewest
}

#[test]
fn a_rolling_update_keeps_the_service_up_canaries_wait_and_a_bad_version_reverts() {
    let m = marker("deploy");
    let _cleanup = KillMarked(m.clone());
    let c = cluster(3);
    let update = json!({"max_parallel": 2, "min_healthy_time": "2s", "healthy_deadline": "40s"});
    let v1 = submit(&c, 1, &web(&m, 6, "1", "/", update.clone()));
    wait_until("6 healthy tasks of release 1", SETTLE, || {
        Ok(healthy(&c, 0) == (6, [("1".to_owned(), 6)].into()))
    });

    // Bad input: refused naming the field, nothing written.
    let bad = web(&m, 6, "2", "/", json!({"max_parallel": 0}));
    let (status, body) = c.agents[1].post("/v1/jobs", &bad).unwrap();
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "update.max_parallel", "{body}");
    let (_, job) = c.agents[1].get_any(&format!("/v1/jobs/{JOB}")).unwrap();
    assert_eq!(job["version"], v1, "nothing written");

    // Release 2, two at a time: sampled every 200 ms, never fewer than 4
    // healthy (start-first keeps all 6 answering).
    let v2 = submit(&c, 1, &web(&m, 6, "2", "/", update.clone()));
    let fewest = watch(&c, v2, "successful");
    eprintln!("release 2: fewest healthy while deploying: {fewest}");
    assert!(
        fewest >= 4,
        "fewer than count - max_parallel healthy: {fewest}"
    );
    wait_until("6 healthy tasks of release 2", SETTLE, || {
        Ok(healthy(&c, 0) == (6, [("2".to_owned(), 6)].into()))
    });
    for t in c.tasks(2, JOB) {
        assert_eq!(t["version"], v2, "{t}");
    }
    let addr = c.agents[2].url();
    let token = c.agents[2].token.clone();
    let env = [
        ("SHOAL_ADDR", addr.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];
    let (ok, out, err) = run_shoal(&["--json", "deployments", JOB], &env);
    assert!(ok.success(), "{err}");
    let listed: Value = serde_json::from_str(&out).unwrap();
    let d = &listed[0];
    assert_eq!(
        (
            &d["job"],
            &d["version"],
            &d["status"],
            &d["healthy"],
            &d["desired"],
            &d["canaries"]
        ),
        (
            &json!(JOB),
            &json!(v2),
            &json!("successful"),
            &json!(6),
            &json!(6),
            &json!(0)
        ),
        "{d}"
    );

    // Release 3 with a canary: it runs beside the old tasks until promoted.
    let mut canary = update.clone();
    canary["canary"] = json!(1);
    let v3 = submit(&c, 1, &web(&m, 6, "3", "/", canary.clone()));
    wait_until("the canary healthy, waiting for promote", SETTLE, || {
        let d = deployment(&c, 0, v3)?;
        Ok(d["status"] == "running"
            && d["healthy"] == 1
            && d["description"]
                .as_str()
                .unwrap_or_default()
                .contains("promote"))
    });
    // Listed: the canary for index 0 (healthy), the old tasks for the
    // rest; running: all 6 old tasks and the canary beside them.
    let (_, releases) = healthy(&c, 0);
    assert_eq!(
        releases,
        [("2".to_owned(), 5), ("3".to_owned(), 1)].into(),
        "{releases:?}"
    );
    let procs = processes(&m);
    assert_eq!(procs.values().sum::<usize>(), 7, "{procs:?}");
    assert_eq!(procs.get(&0), Some(&2), "{procs:?}");
    let (ok, table, err) = run_shoal(&["deployments"], &env);
    assert!(ok.success(), "{err}");
    assert!(
        table.contains("running") && table.contains("1/6") && table.contains("promote"),
        "{table}"
    );
    let (ok, out, err) = run_shoal(&["deployment", "promote", JOB], &env);
    assert!(ok.success(), "{err}");
    assert!(out.contains("promoted"), "{out}");
    let (ok, _, err) = run_shoal(&["deployment", "promote", JOB], &env);
    assert!(!ok.success(), "promoting twice is refused");
    assert!(err.contains("no canaries waiting"), "{err}");
    watch(&c, v3, "successful");
    wait_until("6 healthy tasks of release 3", SETTLE, || {
        Ok(healthy(&c, 0) == (6, [("3".to_owned(), 6)].into()))
    });

    // Release 4 never passes its check: its deployment fails after the
    // deadline, and auto_revert writes release 3 back as a new version.
    let mut reverting = update;
    reverting["auto_revert"] = json!(true);
    reverting["healthy_deadline"] = json!("8s");
    let v4 = submit(&c, 1, &web(&m, 6, "4", "/nope", reverting));
    let fewest = watch(&c, v4, "reverted");
    assert!(
        fewest >= 4,
        "a failing version took the service down: {fewest}"
    );
    let failed = deployment(&c, 0, v4).unwrap();
    let why = failed["description"].as_str().unwrap();
    assert!(
        why.contains("not healthy") && why.contains(&format!("reverted to version {v3}")),
        "{failed}"
    );
    let (_, job) = c.agents[0].get_any(&format!("/v1/jobs/{JOB}")).unwrap();
    let v5 = job["version"].as_u64().unwrap();
    assert_eq!(v5, v4 + 1);
    assert_eq!(job["spec"]["task"]["env"]["RELEASE"], "3");
    watch(&c, v5, "successful");
    wait_until("6 healthy tasks of release 3 again", SETTLE, || {
        Ok(healthy(&c, 0) == (6, [("3".to_owned(), 6)].into()))
    });

    // By hand: `shoal job revert` to version 2.
    let (ok, out, err) = run_shoal(&["job", "revert", JOB, &v2.to_string()], &env);
    assert!(ok.success(), "{err}");
    assert!(out.contains("rolling deployment"), "{out}");
    let (ok, _, err) = run_shoal(&["job", "revert", JOB, "999"], &env);
    assert!(!ok.success());
    assert!(err.contains("no version 999"), "{err}");
}

#[test]
fn killing_the_driver_mid_deployment_the_deployment_completes() {
    let m = marker("driver");
    let _cleanup = KillMarked(m.clone());
    let mut c = cluster(4);
    let update = json!({"max_parallel": 1, "min_healthy_time": "2s", "healthy_deadline": "40s"});
    submit(&c, 0, &web(&m, 6, "1", "/", update.clone()));
    wait_until("6 healthy tasks", SETTLE, || Ok(healthy(&c, 0).0 == 6));
    let v2 = submit(&c, 0, &web(&m, 6, "2", "/", update));
    let mut driver = None;
    wait_until("two tasks replaced, and who drives", SETTLE, || {
        let d = deployment(&c, 0, v2)?;
        driver = d["driver"].as_str().map(str::to_owned);
        Ok(d["replaced"].as_u64() >= Some(2) && driver.is_some())
    });
    let driver = driver.unwrap();
    let victim = c
        .agents
        .iter()
        .position(|a| a.info.node_id == driver)
        .expect("the driver is one of the agents");
    eprintln!("killing d{victim}, the driver");
    c.agents[victim].kill9();
    let others: Vec<usize> = (0..4).filter(|i| *i != victim).collect();
    wait_until(
        "the deployment successful after its driver died",
        SETTLE,
        || Ok(deployment(&c, others[0], v2)?["status"] == "successful"),
    );
    wait_until(
        "6 healthy tasks of release 2 on the live nodes",
        SETTLE,
        || {
            let (n, releases) = healthy(&c, others[1]);
            Ok(n == 6 && releases.get("2") == Some(&6))
        },
    );
}
