//! Desired-state benchmark on real agents.
//!
//! - propagation: with N agents, time from a submit on one node until every
//!   node has the job (each node's `job.created` server-sent event, read by
//!   one thread per node), median over `--submits`;
//! - durable submissions per second through one node (`--clients` threads
//!   posting distinct jobs; each answer comes after an fsync);
//! - payload bytes of an anti-entropy round between replicas in sync, and
//!   of all state traffic per job change;
//! - state size on disk and start-up load time with `--jobs` jobs.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-state -- --nodes 10,50
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::AgentProc;

#[derive(Parser, Debug)]
struct Args {
    /// Cluster sizes for the propagation measurement.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    nodes: Vec<usize>,
    /// Submits per size.
    #[arg(long, default_value_t = 10)]
    submits: usize,
    /// Client threads for the throughput measurement.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Seconds of the throughput measurement.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Jobs for the load-time measurement.
    #[arg(long, default_value_t = 10_000)]
    jobs: usize,
    /// Skip parts: any of propagation, throughput, traffic, load.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

fn job(name: &str, cpus: f64) -> Value {
    json!({
        "name": name,
        "count": 3,
        "task": {"runtime": "process", "command": "/bin/sleep", "args": ["3600"],
                 "env": {"MODE": "bench"},
                 "resources": {"cpus": cpus, "memory_mb": 128}},
        "constraints": [{"attribute": "dc", "op": "=", "value": "dc1"}],
        "labels": {"team": "bench", "tier": "web"}
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

/// Spawns a reader of `/v1/events` on each agent; each sends the instant it
/// sees `job.created` for a job name.
fn event_listeners(agents: &[AgentProc]) -> std::sync::mpsc::Receiver<(usize, String, Instant)> {
    let (tx, rx) = std::sync::mpsc::channel();
    for (i, a) in agents.iter().enumerate() {
        let addr = a.info.api.to_string();
        let token = a.token.clone();
        let tx = tx.clone();
        std::thread::spawn(move || {
            let Ok(mut s) = TcpStream::connect(&addr) else {
                return;
            };
            let _ = write!(
                s,
                "GET /v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\r\n"
            );
            let mut r = BufReader::new(s);
            let mut line = String::new();
            let mut created = false;
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                if line.starts_with("event: job.created") {
                    created = true;
                } else if created && line.starts_with("data:") {
                    created = false;
                    let v: Value = serde_json::from_str(line.trim_start_matches("data:").trim())
                        .unwrap_or(Value::Null);
                    let name = v["name"].as_str().unwrap_or_default().to_owned();
                    if tx.send((i, name, Instant::now())).is_err() {
                        return;
                    }
                }
            }
        });
    }
    rx
}

fn propagation(args: &Args) -> anyhow::Result<()> {
    for &n in &args.nodes {
        let root = tempfile::tempdir()?;
        eprintln!("== propagation: {n} agents");
        let agents = shoal_tests::bench_cluster(root.path(), n)?;
        let events = event_listeners(&agents);
        std::thread::sleep(Duration::from_millis(500));
        let mut times = Vec::new();
        for k in 0..args.submits {
            let name = format!("prop-{k}");
            let origin = k % n;
            let t0 = Instant::now();
            let (status, body) = agents[origin].post("/v1/jobs", &job(&name, 0.25))?;
            if status != 201 {
                bail!("submit: {status} {body}");
            }
            let mut seen = vec![false; n];
            let mut last = t0;
            let deadline = t0 + Duration::from_secs(30);
            while seen.iter().any(|s| !s) {
                let left = deadline.saturating_duration_since(Instant::now());
                let (i, got, at) = events
                    .recv_timeout(left)
                    .context("waiting for job.created events")?;
                if got == name && !seen[i] {
                    seen[i] = true;
                    last = last.max(at);
                }
            }
            let ms = (last - t0).as_secs_f64() * 1000.0;
            eprintln!("   submit {k} on n{origin}: on all {n} nodes after {ms:.1} ms");
            times.push(ms);
        }
        println!(
            "| propagation to all nodes | {n} agents | median {:.1} ms, max {:.1} ms ({} submits) |",
            median(times.clone()),
            times.iter().copied().fold(0.0, f64::max),
            times.len()
        );
    }
    Ok(())
}

fn throughput(args: &Args) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    eprintln!(
        "== throughput: {} clients, {} s, one node",
        args.clients, args.seconds
    );
    let agents = shoal_tests::bench_cluster(root.path(), 1)?;
    let a = Arc::new(agents);
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop_at = Instant::now() + Duration::from_secs(args.seconds);
    let mut handles = Vec::new();
    for c in 0..args.clients {
        let a = a.clone();
        let done = done.clone();
        let failed = failed.clone();
        handles.push(std::thread::spawn(move || {
            let mut k = 0u64;
            while Instant::now() < stop_at {
                k += 1;
                match a[0].post("/v1/jobs", &job(&format!("tp-{c}-{k}"), 0.25)) {
                    Ok((201, _)) => done.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    let t0 = Instant::now();
    for h in handles {
        let _ = h.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let n = done.load(Ordering::Relaxed);
    println!(
        "| durable submissions through one node | {} clients | {:.0} per second ({n} in {secs:.1} s, {} failed) |",
        args.clients,
        n as f64 / secs,
        failed.load(Ordering::Relaxed)
    );
    Ok(())
}

fn sum_metric(agents: &[AgentProc], sample: &str) -> f64 {
    agents.iter().map(|a| a.metric(sample).unwrap_or(0.0)).sum()
}

fn traffic() -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    let n = 10;
    eprintln!("== traffic: {n} agents");
    let agents = shoal_tests::bench_cluster(root.path(), n)?;
    for k in 0..50 {
        agents[k % n].post("/v1/jobs", &job(&format!("t-{k}"), 0.25))?;
    }
    // Let the cluster settle in sync, then watch it idle: rounds run only
    // as the 10-minute safety net (gossip carries the digests).
    std::thread::sleep(Duration::from_secs(5));
    let idle = 60.0;
    let state_bytes = |a: &[AgentProc]| {
        sum_metric(a, "shoal_state_round_bytes_total{kind=\"all\"}")
            + sum_metric(a, "shoal_state_push_bytes_total")
    };
    let rounds0 = sum_metric(&agents, "shoal_state_rounds_total{result=\"in_sync\"}");
    let bytes0 = sum_metric(&agents, "shoal_state_round_bytes_total{kind=\"in_sync\"}");
    let all0 = state_bytes(&agents);
    std::thread::sleep(Duration::from_secs_f64(idle));
    let rounds1 = sum_metric(&agents, "shoal_state_rounds_total{result=\"in_sync\"}");
    let bytes1 = sum_metric(&agents, "shoal_state_round_bytes_total{kind=\"in_sync\"}");
    let all1 = state_bytes(&agents);
    println!(
        "| anti-entropy round in sync (50 jobs) | {n} agents | {:.0} payload bytes per round, both ways |",
        (bytes1 - bytes0) / (rounds1 - rounds0).max(1.0),
    );
    println!(
        "| state traffic while in sync (50 jobs) | {n} agents | {:.1} payload bytes/s per node; {:.1} rounds per node per minute |",
        (all1 - all0) / idle / n as f64,
        (rounds1 - rounds0) / n as f64 * 60.0 / idle
    );
    // All state traffic caused by changes: pushes, forwards, and the rounds
    // that carried them.
    let out0 = sum_metric(&agents, "shoal_rpc_bytes_total{direction=\"out\"}");
    let changes = 100;
    for k in 0..changes {
        agents[k % n].post(
            &format!("/v1/jobs/t-{}/scale", k % 50),
            &json!({"count": 10 + k}),
        )?;
    }
    std::thread::sleep(Duration::from_secs(10));
    let out1 = sum_metric(&agents, "shoal_rpc_bytes_total{direction=\"out\"}");
    // Subtract the in-sync background of the same window (counted both
    // ways; `out` is one way).
    let background = (all1 - all0) / idle * 10.0 / 2.0;
    println!(
        "| one job change, all nodes | {n} agents | {:.0} payload bytes sent cluster-wide per change ({:.0} per node) |",
        (out1 - out0 - background) / changes as f64,
        (out1 - out0 - background) / changes as f64 / n as f64
    );
    Ok(())
}

fn load(args: &Args) -> anyhow::Result<()> {
    let root = tempfile::tempdir()?;
    eprintln!("== load: {} jobs", args.jobs);
    let mut agents = shoal_tests::bench_cluster(root.path(), 1)?;
    let chunks = args.clients.max(1);
    std::thread::scope(|s| {
        for c in 0..chunks {
            let agent = &agents[0];
            let jobs = args.jobs;
            s.spawn(move || {
                for k in (c..jobs).step_by(chunks) {
                    let _ = agent.post("/v1/jobs", &job(&format!("load-{k}"), 0.25));
                }
            });
        }
    });
    let (_, list) = agents[0].get_any("/v1/jobs")?;
    let count = list.as_array().map_or(0, Vec::len);
    agents[0].terminate()?;
    let state_dir = agents[0].dir.join("state");
    let size: u64 = std::fs::read_dir(&state_dir)?
        .filter_map(Result::ok)
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();
    let t0 = Instant::now();
    agents[0].restart()?;
    let serving = t0.elapsed();
    let log = agents[0].log();
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("desired state loaded"))
        .unwrap_or_default()
        .to_owned();
    println!(
        "| state of {count} jobs | 1 agent | {:.1} MB on disk; restart to serving {:.2} s ({line}) |",
        size as f64 / 1e6,
        serving.as_secs_f64()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shoal_tests::shoal_bin();
    println!("| measure | setup | result |");
    println!("|---|---|---|");
    let skip = |s: &str| args.skip.iter().any(|x| x == s);
    if !skip("propagation") {
        propagation(&args)?;
    }
    if !skip("throughput") {
        throughput(&args)?;
    }
    if !skip("traffic") {
        traffic()?;
    }
    if !skip("load") {
        load(&args)?;
    }
    Ok(())
}
