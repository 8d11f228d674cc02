//! Package install benchmark: the built-in `redis` package (a primary and
//! `--replicas` replicas) installed with the CLI on `--nodes` agents on
//! loopback, timed from the moment `shoal package install` is started:
//!
//! - **healthy**: until `GET /v1/installations/{instance}` says `healthy`
//!   (every task of every job running and passing its checks);
//! - **replicating**: until the primary's `INFO replication` shows every
//!   replica connected (what a user of the cache waits for).
//!
//! Each run installs a new instance and uninstalls it afterwards (waiting
//! until its servers are gone). Needs Debian's `redis-server`,
//! `redis-tools` and `dnsutils`.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-install -- --runs 5
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use shoal_tests::{Cluster, run_shoal};

#[derive(Parser, Debug)]
struct Args {
    /// shoal agents.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Redis replicas.
    #[arg(long, default_value_t = 2)]
    replicas: u32,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

const DEADLINE: Duration = Duration::from_secs(120);

fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

fn ports(c: &Cluster, job: &str) -> Vec<u16> {
    match c.agents[0].get_any(&format!(
        "/v1/services/{}?all=true",
        job.replace('/', "%2F")
    )) {
        Ok((200, body)) => body["endpoints"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["port"].as_u64().and_then(|p| u16::try_from(p).ok()))
            .collect(),
        _ => Vec::new(),
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for bin in ["redis-server", "redis-cli", "dig"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            bail!("{bin} is missing: apt-get install redis-server redis-tools dnsutils");
        }
    }
    let c = Cluster::of("b", args.nodes, &["--cpus", "2", "--memory-mb", "2048"]);
    let dns = c.agents[0].info.dns.context("agent 0 serves no DNS")?;
    let addr = c.agents[1].url();
    let token = c.agents[1].token.clone();
    let env = [
        ("SHOAL_ADDR", addr.as_str()),
        ("SHOAL_TOKEN", token.as_str()),
    ];
    let (mut healthy, mut replicating) = (Vec::new(), Vec::new());
    for run in 0..args.runs {
        let instance = format!("bench-{run}");
        let started = Instant::now();
        let (ok, out, err) = run_shoal(
            &[
                "package",
                "install",
                "redis",
                "--instance",
                &instance,
                "--set",
                &format!("replicas={}", args.replicas),
                "--set",
                &format!("dns={dns}"),
            ],
            &env,
        );
        if !ok.success() {
            bail!("install failed: {out}{err}");
        }
        let (mut h, mut r) = (None, None);
        while (h.is_none() || r.is_none()) && started.elapsed() < DEADLINE {
            if h.is_none()
                && let Ok((200, v)) = c.agents[0].get_any(&format!("/v1/installations/{instance}"))
                && v["status"] == "healthy"
            {
                h = Some(started.elapsed());
            }
            if r.is_none()
                && let Some(p) = ports(&c, &format!("{instance}/primary")).first()
                && redis_cli(*p, &["INFO", "replication"])
                    .contains(&format!("connected_slaves:{}", args.replicas))
            {
                r = Some(started.elapsed());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let (Some(h), Some(r)) = (h, r) else {
            bail!("run {run}: not healthy and replicating within {DEADLINE:?}");
        };
        println!(
            "run {run}: healthy {:.2} s, replicating {:.2} s",
            h.as_secs_f64(),
            r.as_secs_f64()
        );
        healthy.push(h.as_secs_f64());
        replicating.push(r.as_secs_f64());
        let mut servers: Vec<u16> = ports(&c, &format!("{instance}/primary"));
        servers.extend(ports(&c, &format!("{instance}/replicas")));
        let (ok, _, err) = run_shoal(&["package", "uninstall", &instance], &env);
        if !ok.success() {
            bail!("uninstall failed: {err}");
        }
        let gone = Instant::now();
        while servers
            .iter()
            .any(|p| redis_cli(*p, &["PING"]).contains("PONG"))
        {
            if gone.elapsed() > DEADLINE {
                bail!("{instance}'s servers still answer after the uninstall");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    for v in [&mut healthy, &mut replicating] {
        v.sort_by(f64::total_cmp);
    }
    println!(
        "redis, 1 primary + {} replicas on {} agents, {} runs: install -> healthy median {:.2} s (min {:.2}, max {:.2}); -> replicating median {:.2} s (min {:.2}, max {:.2})",
        args.replicas,
        args.nodes,
        args.runs,
        percentile(&healthy, 0.5),
        healthy[0],
        healthy[healthy.len() - 1],
        percentile(&replicating, 0.5),
        replicating[0],
        replicating[replicating.len() - 1],
    );
    Ok(())
}
