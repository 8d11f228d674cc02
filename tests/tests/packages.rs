//! The built-in `redis` package on real agents, installed with the CLI: a
//! primary and 2 replicas that find it through shoal's DNS; a key written
//! to the primary read from a replica; a second instance beside it,
//! uninstalled without touching the first; an upgrade plan that keeps the
//! user's options. Needs Debian's `redis-server`, `redis-tools` and
//! `dnsutils` (`.ci/run` installs them); skips without them.

#![allow(clippy::print_stderr)]

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::{Cluster, run_shoal, wait_until};

const SETTLE: Duration = Duration::from_secs(90);

fn have(bin: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The healthy endpoints of `job`, as ports.
fn ports(c: &Cluster, job: &str) -> anyhow::Result<Vec<u16>> {
    let (status, body) =
        c.agents[0].get_any(&format!("/v1/services/{}", job.replace('/', "%2F")))?;
    anyhow::ensure!(status == 200, "{status} {body}");
    Ok(body["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["port"].as_u64().map(|p| p as u16))
        .collect())
}

/// Uninstalls what is left and waits until none of its ports answers, so
/// that no redis outlives the test.
struct Uninstall<'a>(
    &'a Cluster,
    Vec<&'static str>,
    Vec<(&'static str, &'static str)>,
);

impl Drop for Uninstall<'_> {
    fn drop(&mut self) {
        let env: Vec<(&str, &str)> = self.2.clone();
        let mut ports = Vec::new();
        for i in &self.1 {
            for job in ["primary", "replicas"] {
                ports.extend(ports_of(self.0, &format!("{i}/{job}")));
            }
            let _ = run_shoal(&["package", "uninstall", i], &env);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while std::time::Instant::now() < deadline
            && ports
                .iter()
                .any(|p| redis_cli(*p, &["PING"]).contains("PONG"))
        {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn ports_of(c: &Cluster, job: &str) -> Vec<u16> {
    ports(c, job).unwrap_or_default()
}

#[test]
fn redis_with_two_replicas_installs_replicates_and_uninstalls_only_its_own() {
    if !(have("redis-server") && have("redis-cli") && have("dig")) {
        eprintln!(
            "skipped: needs redis-server, redis-cli and dig (Debian redis-server, redis-tools, dnsutils)"
        );
        return;
    }
    let c = Cluster::of("p", 3, &["--cpus", "2", "--memory-mb", "2048"]);
    let dns = c.agents[0]
        .info
        .dns
        .expect("agent 0 serves DNS")
        .to_string();
    let addr = c.agents[1].url();
    let token = c.agents[1].token.clone();
    let env = [
        ("SHOAL_ADDR", addr.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];
    // Leaked: the guard needs them for as long as the test runs.
    let env_static: Vec<(&'static str, &'static str)> = vec![
        ("SHOAL_ADDR", Box::leak(addr.clone().into_boxed_str())),
        ("SHOAL_TOKEN", Box::leak(token.clone().into_boxed_str())),
    ];
    let _cleanup = Uninstall(&c, vec!["r1", "r2"], env_static);
    let dns_set = format!("dns={dns}");
    let (ok, out, err) = run_shoal(
        &[
            "package",
            "install",
            "redis",
            "--instance",
            "r1",
            "--set",
            "replicas=2",
            "--set",
            &dns_set,
        ],
        &env,
    );
    assert!(ok.success(), "{out}{err}");
    assert!(out.contains("installed redis@"), "{out}");
    wait_until("r1 healthy", SETTLE, || {
        let (ok, out, _) = run_shoal(&["--json", "package", "list"], &env);
        let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        Ok(ok.success() && list[0]["status"] == "healthy")
    });
    let primary = ports(&c, "r1/primary").unwrap()[0];
    wait_until("2 replicas connected to the primary", SETTLE, || {
        Ok(redis_cli(primary, &["INFO", "replication"]).contains("connected_slaves:2"))
    });
    assert!(redis_cli(primary, &["SET", "greeting", "hello"]).contains("OK"));
    let replicas = ports(&c, "r1/replicas").unwrap();
    assert_eq!(replicas.len(), 2, "{replicas:?}");
    for r in &replicas {
        wait_until("the key on a replica", SETTLE, || {
            Ok(redis_cli(*r, &["GET", "greeting"]).trim() == "hello")
        });
    }

    // A second instance beside it; uninstalling it leaves r1 alone.
    let (ok, out, err) = run_shoal(
        &[
            "package",
            "install",
            "redis",
            "--instance",
            "r2",
            "--set",
            "replicas=0",
            "--set",
            &dns_set,
        ],
        &env,
    );
    assert!(ok.success(), "{out}{err}");
    wait_until("r2 healthy", SETTLE, || {
        let (_, out, _) = run_shoal(&["--json", "package", "list"], &env);
        let list: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
        Ok(list.as_array().is_some_and(|l| {
            l.iter()
                .any(|i| i["instance"] == "r2" && i["status"] == "healthy")
        }))
    });
    let (ok, out, err) = run_shoal(&["package", "uninstall", "r2"], &env);
    assert!(ok.success(), "{out}{err}");
    let (_, out, _) = run_shoal(&["--json", "package", "list"], &env);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["instance"], "r1");
    assert_eq!(
        redis_cli(primary, &["GET", "greeting"]).trim(),
        "hello",
        "r1 untouched"
    );

    // An upgrade plan: the user's options kept, the change shown, nothing
    // written.
    let (ok, out, err) = run_shoal(
        &[
            "package",
            "upgrade",
            "r1",
            "--plan",
            "--set",
            "maxmemory=100mb",
        ],
        &env,
    );
    assert!(ok.success(), "{out}{err}");
    assert!(
        out.contains("\"replicas\":2") && out.contains("REDIS_MAXMEMORY"),
        "{out}"
    );
    let (_, out, _) = run_shoal(&["--json", "package", "list"], &env);
    let list: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["revision"], 1, "a plan writes nothing");

    // Bad input: refused naming the option, nothing written.
    let (ok, _, err) = run_shoal(
        &[
            "package",
            "install",
            "redis",
            "--instance",
            "r3",
            "--set",
            "replica=2",
        ],
        &env,
    );
    assert!(!ok.success());
    assert!(
        err.contains("/replica") && err.contains("replicas"),
        "{err}"
    );
    let (status, _) = c.agents[0].get_any("/v1/installations/r3").unwrap();
    assert_eq!(status, 404);
}
