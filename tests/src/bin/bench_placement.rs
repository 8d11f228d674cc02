//! Placement benchmark on real agents.
//!
//! - a single task: submit → running, p50 and p99 over `--singles` jobs;
//! - a job of `--tasks` tasks on `--nodes` agents: submit → each task
//!   running (p50, p99, all), and balance (max/mean tasks per node);
//! - sustained placements per second: `--burst-jobs` jobs of `--tasks`
//!   tasks submitted at once, through different nodes;
//! - re-placement: `kill -9` the agent holding the most tasks, time until
//!   all of them run elsewhere.
//!
//! "Running" is what the API reports (the process was spawned). Task
//! processes are `/bin/sleep 3600`, killed at the end.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-placement -- --nodes 5 --tasks 100
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::{AgentProc, Spec};

#[derive(Parser, Debug)]
struct Args {
    /// Agents.
    #[arg(long, default_value_t = 5)]
    nodes: usize,
    /// Tasks of the big job.
    #[arg(long, default_value_t = 100)]
    tasks: u32,
    /// Single-task jobs to time.
    #[arg(long, default_value_t = 20)]
    singles: usize,
    /// Jobs submitted at once for the throughput measure.
    #[arg(long, default_value_t = 5)]
    burst_jobs: usize,
    /// CPUs each agent offers.
    #[arg(long, default_value_t = 8.0)]
    cpus: f64,
}

fn job(name: &str, count: u32) -> Value {
    json!({
        "name": name,
        "count": count,
        "task": {"runtime": "process", "command": "/bin/sleep", "args": ["3600"],
                 "env": {"SHOAL_BENCH": "1"},
                 "resources": {"cpus": 0.02, "memory_mb": 8}},
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

fn tasks(a: &AgentProc, job: &str) -> Vec<Value> {
    match a.get_any(&format!("/v1/jobs/{job}/tasks")) {
        Ok((200, v)) => v.as_array().cloned().unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Polls until every task of `job` runs; returns when each was first seen
/// running, in ms after `t0`.
fn watch(
    a: &AgentProc,
    job: &str,
    count: usize,
    t0: Instant,
    limit: Duration,
) -> anyhow::Result<Vec<f64>> {
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    while seen.len() < count {
        for t in tasks(a, job) {
            if t["state"] == "running" {
                let name = t["task"].as_str().unwrap_or_default().to_owned();
                seen.entry(name)
                    .or_insert_with(|| t0.elapsed().as_secs_f64() * 1000.0);
            }
        }
        if t0.elapsed() > limit {
            bail!("{job}: only {}/{count} running after {limit:?}", seen.len());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(seen.into_values().collect())
}

/// Tasks of `job` per node name, as `via` reports them.
fn tasks_per_node(via: &AgentProc, job: &str) -> BTreeMap<String, u32> {
    let mut count = BTreeMap::new();
    for t in tasks(via, job) {
        *count
            .entry(t["node_name"].as_str().unwrap_or("-").to_owned())
            .or_default() += 1;
    }
    count
}

/// Submits `spec` through the first agent and returns, for each task, the
/// time from submission until a second agent reports it running (ms).
fn submit_and_watch(agents: &[AgentProc], spec: &Value) -> anyhow::Result<Vec<f64>> {
    let name = spec["name"].as_str().unwrap_or_default();
    let count = spec["count"].as_u64().unwrap_or(1) as usize;
    let t0 = Instant::now();
    let (status, body) = agents[0].post("/v1/jobs", spec)?;
    if status != 201 {
        bail!("{status} {body}");
    }
    watch(
        &agents[1 % agents.len()],
        name,
        count,
        t0,
        Duration::from_secs(120),
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    shoal_tests::shoal_bin();
    let root = tempfile::tempdir()?;
    let mut agents: Vec<AgentProc> = Vec::new();
    for i in 0..args.nodes {
        let mut spec = Spec::named(&format!("n{i}"));
        spec.gossip = Some("lan".into());
        spec.args = vec![
            "--cpus".into(),
            args.cpus.to_string(),
            "--memory-mb".into(),
            "8192".into(),
        ];
        if i > 0 {
            spec.join = vec![agents[0].info.gossip];
            spec.token = Some(agents[0].token.clone());
        }
        agents.push(AgentProc::start(root.path(), &spec)?);
    }
    let n = args.nodes;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !agents.iter().all(|a| {
        a.nodes()
            .map(|v| {
                v.iter()
                    .filter(|x| x.state == "alive" && x.name.is_some())
                    .count()
                    == n
            })
            .unwrap_or(false)
    }) {
        if Instant::now() > deadline {
            bail!("cluster did not form");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    println!("| measure | setup | result |");
    println!("|---|---|---|");

    // One task.
    let mut single = Vec::new();
    for k in 0..args.singles {
        let name = format!("one-{k}");
        let via = &agents[k % n];
        let t0 = Instant::now();
        let (status, body) = via.post("/v1/jobs", &job(&name, 1))?;
        if status != 201 {
            bail!("{status} {body}");
        }
        single.extend(watch(via, &name, 1, t0, Duration::from_secs(30))?);
        via.delete(&format!("/v1/jobs/{name}"))?;
    }
    println!(
        "| one task: submit → running | {n} agents | p50 {:.0} ms, p99 {:.0} ms ({} jobs) |",
        percentile(single.clone(), 0.5),
        percentile(single, 0.99),
        args.singles
    );

    // A big job.
    let times = submit_and_watch(&agents, &job("big", args.tasks))?;
    let all = times.iter().copied().fold(0.0, f64::max);
    println!(
        "| {} tasks: submit → each running | {n} agents | p50 {:.0} ms, p99 {:.0} ms, all {:.0} ms |",
        args.tasks,
        percentile(times.clone(), 0.5),
        percentile(times, 0.99),
        all
    );
    let per_node = tasks_per_node(&agents[0], "big");
    let max = per_node.values().copied().max().unwrap_or(0) as f64;
    let mean = f64::from(args.tasks) / n as f64;
    println!(
        "| balance of the {} tasks | {n} agents | max/mean {:.2} ({per_node:?}) |",
        args.tasks,
        max / mean
    );

    // The same job asking to spread over nodes.
    let mut spread = job("spread", args.tasks);
    spread["spread"] = json!("name");
    let times = submit_and_watch(&agents, &spread)?;
    let all = times.iter().copied().fold(0.0, f64::max);
    let spread_per_node = tasks_per_node(&agents[0], "spread");
    let max_spread = spread_per_node.values().copied().max().unwrap_or(0) as f64;
    println!(
        "| {} tasks with spread = \"name\": all running; balance | {n} agents | all {all:.0} ms; max/mean {:.2} ({spread_per_node:?}) |",
        args.tasks,
        max_spread / mean
    );
    agents[0].delete("/v1/jobs/spread")?;

    // Re-placement after kill -9 of the busiest agent (of the big job).
    let per_node = tasks_per_node(&agents[0], "big");
    let (victim_name, _) = per_node
        .iter()
        .max_by_key(|(_, c)| **c)
        .map(|(a, b)| (a.clone(), *b))
        .unwrap_or_default();
    let victim = agents
        .iter()
        .position(|a| a.name == victim_name)
        .unwrap_or(1);
    let observer = (victim + 1) % n;
    let moved: BTreeSet<String> = tasks(&agents[observer], "big")
        .iter()
        .filter(|t| t["node_name"] == victim_name.as_str())
        .filter_map(|t| t["task"].as_str().map(str::to_owned))
        .collect();
    let t0 = Instant::now();
    agents[victim].kill9();
    let mut detected: Option<f64> = None;
    loop {
        if detected.is_none()
            && agents[observer]
                .get_any(&format!("/v1/nodes/{victim_name}"))
                .is_ok_and(|(_, v)| v["state"] == "failed")
        {
            detected = Some(t0.elapsed().as_secs_f64());
        }
        let t = tasks(&agents[observer], "big");
        let ok = t
            .iter()
            .filter(|t| moved.contains(t["task"].as_str().unwrap_or_default()))
            .all(|t| t["state"] == "running" && t["node_name"] != victim_name.as_str())
            && t.len() == args.tasks as usize;
        if ok {
            break;
        }
        if t0.elapsed() > Duration::from_secs(120) {
            bail!("the tasks of the killed agent were not placed again within 120 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let all = t0.elapsed().as_secs_f64();
    let detected = detected.unwrap_or(all);
    println!(
        "| kill -9 of the agent holding {} tasks → all running elsewhere | {n} agents, lan gossip | {all:.1} s (failure detected by the observer after {detected:.1} s; re-placed {:.2} s later) |",
        moved.len(),
        all - detected
    );
    agents[victim].restart()?;
    std::thread::sleep(Duration::from_secs(3));
    agents[0].delete("/v1/jobs/big")?;
    std::thread::sleep(Duration::from_secs(3));

    // Throughput: several jobs at once.
    let t0 = Instant::now();
    for j in 0..args.burst_jobs {
        agents[j % n].post("/v1/jobs", &job(&format!("burst-{j}"), args.tasks))?;
    }
    for j in 0..args.burst_jobs {
        watch(
            &agents[(j + 1) % n],
            &format!("burst-{j}"),
            args.tasks as usize,
            t0,
            Duration::from_secs(300),
        )?;
    }
    let total = args.burst_jobs as u32 * args.tasks;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "| sustained placement | {n} agents, {} jobs × {} tasks at once | {total} tasks running in {secs:.1} s: {:.0} placements/s |",
        args.burst_jobs,
        args.tasks,
        f64::from(total) / secs
    );
    for j in 0..args.burst_jobs {
        agents[0].delete(&format!("/v1/jobs/burst-{j}"))?;
    }
    std::thread::sleep(Duration::from_secs(5));
    drop(agents);
    // Tasks outlive agents: clean up the benchmark's processes.
    let _ = std::process::Command::new("pkill")
        .args(["-9", "-f", "^/bin/sleep 3600$"])
        .status();
    Ok(())
}
