//! Helpers for the tests of the built-in package library on real agents:
//! is a program here, a cluster's CLI environment, install and wait until
//! healthy, a job's healthy endpoints.
//!
//! What a package starts outlives nothing: its task processes carry
//! `SHOAL_TASK_DIR` (inside the agent's data dir) in their environment, so
//! dropping the [`Cluster`] kills them, children included.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::{Cluster, run_shoal, wait_until};

/// Whether `bin` is a program on `PATH` (or an executable path).
pub fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The first of `bins` that is missing, if any.
pub fn missing<'a>(bins: &[&'a str]) -> Option<&'a str> {
    bins.iter().copied().find(|b| !have(b))
}

/// The CLI environment to talk to agent `via` of `c`.
pub fn cli_env(c: &Cluster, via: usize) -> Vec<(String, String)> {
    vec![
        ("SHOAL_ADDR".to_owned(), c.agents[via].url()),
        ("SHOAL_TOKEN".to_owned(), c.agents[via].token.clone()),
    ]
}

/// Runs `shoal args` with `env`: (success, stdout, stderr).
pub fn shoal(env: &[(String, String)], args: &[&str]) -> (bool, String, String) {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let (s, out, err) = run_shoal(args, &env);
    (s.success(), out, err)
}

/// `shoal package install PKG --instance INSTANCE --set …`, asserting it
/// is accepted, then waits until the installation is `healthy`.
pub fn install_healthy(
    env: &[(String, String)],
    package: &str,
    instance: &str,
    sets: &[String],
    timeout: Duration,
) {
    install(env, package, instance, sets);
    wait_healthy(env, instance, timeout);
}

/// `shoal package install PKG --instance INSTANCE --set …`, asserting it
/// is accepted.
pub fn install(env: &[(String, String)], package: &str, instance: &str, sets: &[String]) {
    let mut args = vec!["package", "install", package, "--instance", instance];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    let (ok, out, err) = shoal(env, &args);
    assert!(ok, "install {package}: {out}{err}");
}

/// Waits until installation `instance` is `healthy` (and fails at once if
/// it is `failed`).
pub fn wait_healthy(env: &[(String, String)], instance: &str, timeout: Duration) {
    wait_until(&format!("{instance} healthy"), timeout, || {
        let (_, out, _) = shoal(env, &["--json", "package", "list"]);
        let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        let status = list
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["instance"] == instance)
            .map(|i| i["status"].clone());
        Ok(status.is_some_and(|s| s == "healthy"))
    });
}

/// The healthy endpoints of `job` as agent 0 answers them: (task, host,
/// port) of its port named `port`.
pub fn endpoints(c: &Cluster, job: &str, port: &str) -> Vec<(String, String, u16)> {
    let Ok((200, body)) = c.agents[0].get_any(&format!(
        "/v1/services/{}?port={port}",
        job.replace('/', "%2F")
    )) else {
        return Vec::new();
    };
    body["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            Some((
                e["task"].as_str()?.to_owned(),
                e["host"].as_str()?.to_owned(),
                u16::try_from(e["port"].as_u64()?).ok()?,
            ))
        })
        .collect()
}

/// Waits until `job` has exactly `n` healthy endpoints (answers follow
/// health within a refresh: see services.md) and returns them.
pub fn wait_endpoints(
    c: &Cluster,
    job: &str,
    port: &str,
    n: usize,
    timeout: Duration,
) -> Vec<(String, String, u16)> {
    wait_until(&format!("{n} endpoints of {job}"), timeout, || {
        Ok(endpoints(c, job, port).len() == n)
    });
    endpoints(c, job, port)
}
