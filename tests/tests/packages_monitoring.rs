//! The built-in `prometheus` package on 3 real agents: node-exporter runs
//! as a system job, one on every node, and Prometheus, finding them
//! through shoal DNS, shows all three up in `/api/v1/targets`. Needs
//! Debian's `prometheus`, `prometheus-node-exporter` and `dnsutils`
//! (`.ci/run` installs them); skips without them.

#![allow(clippy::print_stderr)]

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use shoal_tests::packages::{cli_env, install_healthy, missing, wait_endpoints};
use shoal_tests::{Cluster, http_get, wait_until};

const SETTLE: Duration = Duration::from_secs(120);

#[test]
fn prometheus_scrapes_node_exporter_on_every_node() {
    if let Some(bin) = missing(&[
        "/usr/bin/prometheus",
        "/usr/bin/prometheus-node-exporter",
        "dig",
    ]) {
        eprintln!("skipped: needs {bin} (Debian prometheus, prometheus-node-exporter, dnsutils)");
        return;
    }
    let c = Cluster::of("mo", 3, &["--cpus", "2", "--memory-mb", "2048"]);
    let dns = c.agents[0].info.dns.expect("agent 0 serves DNS");
    let env = cli_env(&c, 1);
    install_healthy(
        &env,
        "prometheus",
        "m1",
        &[
            format!("dns={dns}"),
            "refresh=2s".into(),
            "scrape_interval=2s".into(),
            "memory_mb=512".into(),
            "cpus=0.5".into(),
        ],
        SETTLE,
    );
    // One exporter per node.
    let exporters = wait_endpoints(&c, "m1/node-exporter", "metrics", 3, SETTLE);
    let nodes: BTreeSet<&str> = exporters.iter().map(|e| e.0.as_str()).collect();
    assert_eq!(nodes.len(), 3, "{exporters:?}");
    let want: BTreeSet<String> = exporters
        .iter()
        .map(|(_, h, p)| format!("{h}:{p}"))
        .collect();
    let server = wait_endpoints(&c, "m1/server", "http", 1, SETTLE);
    let url = format!("http://127.0.0.1:{}/api/v1/targets", server[0].2);
    wait_until("every node's exporter up in Prometheus", SETTLE, || {
        let (status, body) = http_get(&url, None)?;
        anyhow::ensure!(status == 200, "{status} {body}");
        let v: Value = serde_json::from_str(&body)?;
        let up: BTreeSet<String> = v["data"]["activeTargets"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|t| t["labels"]["job"] == "node" && t["health"] == "up")
            .filter_map(|t| t["labels"]["instance"].as_str().map(str::to_owned))
            .collect();
        Ok(up == want)
    });
}
