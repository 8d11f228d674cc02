//! Trigger benchmark on real agents: **slot-to-running latency**, from the
//! instant a slot is due to the instant its run's task process runs.
//!
//! A trigger fires `every` (default 2 s) on a cluster of `--agents`
//! agents; each run's task appends `SHOAL_RUN_ID` and the wall-clock time
//! it started (`date +%s%N`, taken by the task itself) to a file. The slot's
//! due time is read from the run id (`tick@2026-12-03T14:00:02`, UTC for
//! `every`), so the latency covers the evaluator's wake-up, the fire
//! record, the run's job written and replicated, its coordinator's
//! auction, and the task's start on the winning node. Every agent runs on
//! this machine, so clocks agree.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-triggers -- --agents 3 --slots 60
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use shoal_tests::{Cluster, KillMarked, marker};

#[derive(Parser, Debug)]
struct Args {
    /// Agents in the cluster.
    #[arg(long, default_value_t = 3)]
    agents: usize,
    /// Slots (runs) measured.
    #[arg(long, default_value_t = 60)]
    slots: usize,
    /// The trigger's period, in whole seconds.
    #[arg(long, default_value_t = 2)]
    every: u64,
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let m = marker("benchtrig");
    let _cleanup = KillMarked(m.clone());
    let c = Cluster::of("bt", args.agents, &["--cpus", "2", "--memory-mb", "1024"]);
    let log = c.root.path().join("runs.log");
    let script = format!("echo \"$SHOAL_RUN_ID $(date +%s%N)\" >> {}", log.display());
    let trigger = json!({
        "name": "tick",
        "every": format!("{}s", args.every),
        "starting_deadline": "1m",
        "concurrency": "allow",
        "run": {
            "count": 1,
            "task": {
                "runtime": "process",
                "command": "/bin/sh",
                "args": ["-c", script],
                "env": {"SHOAL_TEST_MARKER": m},
                "resources": {"cpus": 0.1, "memory_mb": 16}
            }
        }
    });
    let (status, body) = c.agents[0].post("/v1/triggers", &trigger)?;
    if status != 201 {
        bail!("creating the trigger: {status} {body}");
    }
    let started = Instant::now();
    let deadline = Duration::from_secs(args.every * args.slots as u64 + 120);
    let lines = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_owned).collect();
        // The first run may be a slot due before the trigger was created.
        if lines.len() > args.slots {
            break lines;
        }
        if started.elapsed() > deadline {
            bail!("{} runs after {deadline:?}", lines.len());
        }
        eprint!("\r{} of {} runs", lines.len(), args.slots + 1);
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!();
    c.agents[0].delete("/v1/triggers/tick")?;
    let mut ms: Vec<f64> = Vec::new();
    for line in lines.iter().skip(1).take(args.slots) {
        let (id, ns) = line.split_once(' ').context("a line")?;
        let (_, at) = id.split_once('@').context("a run id")?;
        let due = humantime::parse_rfc3339_weak(at)
            .with_context(|| format!("slot of {id}"))?
            .duration_since(UNIX_EPOCH)?
            .as_nanos() as f64;
        let ran: f64 = ns.trim().parse().with_context(|| format!("time of {id}"))?;
        ms.push((ran - due) / 1e6);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "slot-to-running latency over {} runs, {} agents, every {} s: p50 {:.0} ms, p99 {:.0} ms, min {:.0} ms, max {:.0} ms",
        ms.len(),
        args.agents,
        args.every,
        quantile(&ms, 0.5),
        quantile(&ms, 0.99),
        ms[0],
        ms[ms.len() - 1]
    );
    Ok(())
}
