//! Service discovery benchmark on real agents.
//!
//! - lookup latency from a node that runs no instance (`n0`): through the
//!   API (`GET /v1/services/{job}`) and DNS (an SRV query over UDP), cold
//!   (the first lookup of a job on that node: its coordinators are asked)
//!   and warm (repeated lookups of one job, answered from the node's cache
//!   and refreshed in the background), p50 and p99;
//! - an instance's crash: `kill -9` the agent holding the most instances,
//!   then the time until every other node's answers (API and DNS) leave
//!   its endpoints out, beside the time each node's membership declared
//!   it failed.
//!
//! Tasks are `/bin/sleep` with a named port (nothing listens: lookups do
//! not connect), kept off `n0`.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-services -- --nodes 3 --jobs 10 --warm 2000
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::dns::srv;
use shoal_tests::{Cluster, Spec};

#[derive(Parser, Debug)]
struct Args {
    /// Agents (n0 runs no instance).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Jobs looked up cold, through each of the API and DNS.
    #[arg(long, default_value_t = 10)]
    jobs: usize,
    /// Tasks per job.
    #[arg(long, default_value_t = 3)]
    tasks: u32,
    /// Warm lookups, through each of the API and DNS.
    #[arg(long, default_value_t = 2000)]
    warm: usize,
    /// Gossip preset of the agents (the crash's detection time follows it).
    #[arg(long, default_value = "test")]
    gossip: String,
}

fn job(name: &str, count: u32) -> Value {
    json!({
        "name": name,
        "count": count,
        "task": {"command": "/bin/sleep", "args": ["3600"],
                 "env": {"SHOAL_BENCH": "1"},
                 "ports": [{"name": "http"}],
                 "resources": {"cpus": 0.02, "memory_mb": 8}},
        "constraints": [{"attribute": "name", "op": "!=", "value": "n0"}],
    })
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn summary(what: &str, v: Vec<f64>) {
    println!(
        "{what:<28} n={:<5} p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms",
        v.len(),
        percentile(v.clone(), 0.5),
        percentile(v.clone(), 0.99),
        percentile(v, 1.0)
    );
}

/// The DNS name of SRV `_http._tcp` for `job` (`bench/j3` ->
/// `_http._tcp.j3.bench.service.shoal.`).
fn srv_name(job: &str) -> String {
    let mut words: Vec<&str> = job.split('/').collect();
    words.reverse();
    format!("_http._tcp.{}.service.shoal.", words.join("."))
}

/// Node ids of the healthy endpoints agent `via` lists for `job`.
fn api_nodes(c: &Cluster, via: usize, job: &str) -> anyhow::Result<BTreeSet<String>> {
    let (status, body) =
        c.agents[via].get_any(&format!("/v1/services/{}", job.replace('/', "%2F")))?;
    if status != 200 {
        bail!("{status} {body}");
    }
    Ok(body["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["port"].is_u64())
        .filter_map(|e| e["node"].as_str().map(str::to_owned))
        .collect())
}

fn dns_nodes(dns: SocketAddr, job: &str) -> anyhow::Result<BTreeSet<String>> {
    Ok(srv(dns, &srv_name(job), false)?
        .into_iter()
        .map(|s| s.target.trim_end_matches(".node.shoal.").to_owned())
        .collect())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(args.nodes >= 3, "--nodes must be at least 3");
    let mut c = Cluster::new();
    for i in 0..args.nodes {
        let mut spec = Spec::named(&format!("n{i}"));
        spec.gossip = Some(args.gossip.clone());
        spec.args = vec![
            "--cpus".into(),
            "8".into(),
            "--memory-mb".into(),
            "8192".into(),
        ];
        if i > 0 {
            spec.join = vec![c.agents[0].info.gossip];
            spec.token = Some(c.token());
        }
        c.start(&spec);
    }
    c.wait_all_alive(args.nodes, Duration::from_secs(60));
    let names: Vec<String> = (0..2 * args.jobs + 1)
        .map(|i| format!("bench/j{i}"))
        .collect();
    for n in &names {
        let (status, body) = c.agents[1].post("/v1/jobs", &job(n, args.tasks))?;
        anyhow::ensure!(status == 201, "{status} {body}");
    }
    // Every instance runs, as its coordinator knows (asked from n1, so
    // that n0's cache stays cold).
    let deadline = Instant::now() + Duration::from_secs(120);
    for n in &names {
        loop {
            if api_nodes(&c, 1, n).map(|_| ()).is_ok() {
                let (_, tasks) =
                    c.agents[1].get_any(&format!("/v1/jobs/{}/tasks", n.replace('/', "%2F")))?;
                let running = tasks
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|t| t["state"] == "running" && t["ports"]["http"]["port"].is_u64())
                    .count();
                if running == args.tasks as usize {
                    break;
                }
            }
            anyhow::ensure!(Instant::now() < deadline, "{n} did not start in 120 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    let dns0 = c.agents[0].info.dns.context("n0 has no DNS address")?;
    println!(
        "{} agents, {} jobs of {} tasks (none on n0); lookups from n0",
        args.nodes,
        names.len(),
        args.tasks
    );

    // Cold: the first lookup of each job on n0.
    let mut cold_api = Vec::new();
    for n in &names[..args.jobs] {
        let t = Instant::now();
        let got = api_nodes(&c, 0, n)?;
        cold_api.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(!got.is_empty(), "no endpoint of {n}");
    }
    let mut cold_dns = Vec::new();
    for n in &names[args.jobs..2 * args.jobs] {
        let t = Instant::now();
        let got = dns_nodes(dns0, n)?;
        cold_dns.push(t.elapsed().as_secs_f64() * 1e3);
        anyhow::ensure!(!got.is_empty(), "no SRV record of {n}");
    }
    // Warm: one job, asked again and again.
    let warm_job = &names[2 * args.jobs];
    api_nodes(&c, 0, warm_job)?;
    let mut warm_api = Vec::new();
    for _ in 0..args.warm {
        let t = Instant::now();
        api_nodes(&c, 0, warm_job)?;
        warm_api.push(t.elapsed().as_secs_f64() * 1e3);
    }
    let mut warm_dns = Vec::new();
    for _ in 0..args.warm {
        let t = Instant::now();
        dns_nodes(dns0, warm_job)?;
        warm_dns.push(t.elapsed().as_secs_f64() * 1e3);
    }
    summary("API cold", cold_api);
    summary("API warm", warm_api);
    summary("DNS SRV (UDP) cold", cold_dns);
    summary("DNS SRV (UDP) warm", warm_dns);

    // A crash: the agent holding the most instances of the warm job.
    let holders = api_nodes(&c, 0, warm_job)?;
    let victim = (1..args.nodes)
        .find(|i| holders.contains(&c.agents[*i].info.node_id))
        .context("no agent holds the warm job")?;
    let victim_id = c.agents[victim].info.node_id.clone();
    let others: Vec<usize> = (0..args.nodes).filter(|i| *i != victim).collect();
    c.agents[victim].kill9();
    let killed = Instant::now();
    let mut detected = vec![None; args.nodes];
    let mut gone = vec![None; args.nodes];
    while others
        .iter()
        .any(|i| gone[*i].is_none() || detected[*i].is_none())
    {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(120),
            "not gone in 120 s"
        );
        for &i in &others {
            if detected[i].is_none()
                && c.agents[i]
                    .nodes()?
                    .iter()
                    .any(|n| n.id == victim_id && n.state == "failed")
            {
                detected[i] = Some(killed.elapsed());
            }
            let dns = c.agents[i].info.dns.context("no DNS address")?;
            if gone[i].is_none()
                && !api_nodes(&c, i, warm_job)?.contains(&victim_id)
                && !dns_nodes(dns, warm_job)?.contains(&victim_id)
            {
                gone[i] = Some(killed.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for &i in &others {
        println!(
            "n{i}: kill -9 of n{victim} -> declared failed after {:.2} s, its endpoint gone from API and DNS after {:.2} s",
            detected[i].unwrap_or_default().as_secs_f64(),
            gone[i].unwrap_or_default().as_secs_f64()
        );
    }
    Ok(())
}
