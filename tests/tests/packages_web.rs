//! The built-in `nginx` package (nginx behind haproxy) on 3 real agents:
//! haproxy finds the nginx servers through the agent's DNS (SRV records,
//! `server-template`), requests through it reach every server (each answers
//! with its own task id), and after `shoal scale` of the servers the new one
//! answers through haproxy too, with no reinstall. Needs Debian's `nginx`
//! and `haproxy` (`.ci/run` installs them); skips without them.

#![allow(clippy::print_stderr)]

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_tests::packages::{cli_env, endpoints, install_healthy, missing, shoal};
use shoal_tests::{Cluster, http_get, wait_until};

const SETTLE: Duration = Duration::from_secs(90);

/// The task ids that answered `n` requests through haproxy at `port`.
fn served_by(port: u16, n: usize) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        if let Ok((200, body)) = http_get(&format!("http://127.0.0.1:{port}/"), None) {
            // "nginx <task id> on <node>"
            if let Some(task) = body.split_whitespace().nth(1) {
                seen.insert(task.to_owned());
            }
        }
    }
    seen
}

#[test]
fn nginx_behind_haproxy_reaches_every_server_and_follows_a_scale() {
    if let Some(bin) = missing(&["/usr/sbin/nginx", "/usr/sbin/haproxy"]) {
        eprintln!("skipped: needs {bin} (Debian nginx, haproxy)");
        return;
    }
    let c = Cluster::of("w", 3, &["--cpus", "2", "--memory-mb", "2048"]);
    let dns = c.agents[0].info.dns.expect("agent 0 serves DNS");
    let env = cli_env(&c, 1);
    install_healthy(
        &env,
        "nginx",
        "web1",
        &["servers=2".into(), format!("dns={dns}")],
        SETTLE,
    );
    wait_until("haproxy in the service's endpoints", SETTLE, || {
        Ok(endpoints(&c, "web1/lb", "http").len() == 1)
    });
    let lb = endpoints(&c, "web1/lb", "http");
    let port = lb[0].2;
    // Answers follow health within a refresh (services.md).
    wait_until("2 nginx servers in the service's endpoints", SETTLE, || {
        Ok(endpoints(&c, "web1/web", "http").len() == 2)
    });
    let servers: BTreeSet<String> = endpoints(&c, "web1/web", "http")
        .into_iter()
        .map(|e| e.0)
        .collect();
    wait_until("haproxy reaching both nginx servers", SETTLE, || {
        let seen = served_by(port, 8);
        anyhow::ensure!(seen.is_subset(&servers), "answered by {seen:?}");
        Ok(seen == servers)
    });

    // Scaled: haproxy learns the third from DNS, no reinstall.
    let (ok, out, err) = shoal(&env, &["scale", "web1/web", "3"]);
    assert!(ok, "{out}{err}");
    wait_until("3 healthy nginx servers", SETTLE, || {
        Ok(endpoints(&c, "web1/web", "http").len() == 3)
    });
    let servers: BTreeSet<String> = endpoints(&c, "web1/web", "http")
        .into_iter()
        .map(|e| e.0)
        .collect();
    let stats = endpoints(&c, "web1/lb", "stats")[0].2;
    wait_until("haproxy reaching the third server", SETTLE, || {
        let seen = served_by(port, 12);
        if seen == servers {
            return Ok(true);
        }
        // haproxy's view of its backend, to tell why.
        let csv = http_get(&format!("http://127.0.0.1:{stats}/;csv"), None)
            .map(|r| r.1)
            .unwrap_or_default();
        let backend: Vec<&str> = csv.lines().filter(|l| l.starts_with("servers,")).collect();
        anyhow::bail!("answered by {seen:?}, want {servers:?}; haproxy: {backend:#?}")
    });
    let (_, out, _) = shoal(&env, &["--json", "package", "list"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["revision"], 1, "no reinstall: {list}");

    let (ok, out, err) = shoal(&env, &["package", "uninstall", "web1"]);
    assert!(ok, "{out}{err}");
    wait_until("haproxy gone", SETTLE, || {
        Ok(http_get(&format!("http://127.0.0.1:{port}/"), None).is_err())
    });
}
