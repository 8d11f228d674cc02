//! Docker benchmark: submit → all containers running for a job of
//! `--tasks` containers on the local engine, shoal beside Docker Swarm on the
//! same engine and the same local image (`shoal-test/busybox`, built by
//! `scripts/build-test-images.sh`; nothing is pulled).
//!
//! shoal: one agent; the job is posted to its API and the clock stops when
//! the API reports every task running (the container was started).
//! Swarm: `docker service create --replicas N --no-resolve-image`; the clock
//! stops when `docker service ps` shows N tasks Running. Both are timed
//! `--runs` times (everything removed between runs); the swarm is left if
//! this benchmark created it.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-docker -- --tasks 20 --runs 5
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::json;
use shoal_tests::{AgentProc, Spec, docker, docker_images};

#[derive(Parser, Debug)]
struct Args {
    /// Containers per job / replicas per service.
    #[arg(long, default_value_t = 20)]
    tasks: u32,
    /// Timed runs of each.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Skip Docker Swarm.
    #[arg(long)]
    no_swarm: bool,
}

const IMAGE: &str = "shoal-test/busybox:latest";
const DEADLINE: Duration = Duration::from_secs(180);

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)]
}

fn containers_with(label: &str) -> usize {
    let (_, out, _) = docker(&["ps", "-a", "-q", "--filter", &format!("label={label}")]);
    out.lines().count()
}

fn wait_gone(label: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while containers_with(label) > 0 {
        if start.elapsed() > DEADLINE {
            bail!("containers labelled {label} still there after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn shoal_run(agent: &AgentProc, name: &str, tasks: u32) -> anyhow::Result<f64> {
    let spec = json!({
        "name": name,
        "count": tasks,
        "task": {"runtime": "docker", "image": IMAGE, "command": "sleep", "args": ["3600"],
                 "resources": {"cpus": 0.05, "memory_mb": 16}},
    });
    let start = Instant::now();
    let (status, body) = agent.post("/v1/jobs", &spec)?;
    if status != 201 {
        bail!("submit failed: {status} {body}");
    }
    loop {
        let (_, t) = agent.get_any(&format!("/v1/jobs/{name}/tasks"))?;
        let running = t
            .as_array()
            .map_or(0, |a| a.iter().filter(|t| t["state"] == "running").count());
        if running == tasks as usize {
            break;
        }
        if start.elapsed() > DEADLINE {
            bail!("{running} of {tasks} running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed().as_secs_f64() * 1000.0;
    agent.delete(&format!("/v1/jobs/{name}"))?;
    wait_gone(&format!("shoal.job={name}"))?;
    Ok(took)
}

fn swarm_run(name: &str, tasks: u32) -> anyhow::Result<f64> {
    let replicas = tasks.to_string();
    let start = Instant::now();
    let (ok, _, err) = docker(&[
        "service",
        "create",
        "--detach",
        "--quiet",
        "--no-resolve-image",
        "--name",
        name,
        "--replicas",
        &replicas,
        "--limit-cpu",
        "0.05",
        "--limit-memory",
        "16m",
        IMAGE,
        "sleep",
        "3600",
    ]);
    if !ok {
        bail!("docker service create: {err}");
    }
    loop {
        let (_, out, _) = docker(&[
            "service",
            "ps",
            name,
            "--filter",
            "desired-state=running",
            "--format",
            "{{.CurrentState}}",
        ]);
        let running = out.lines().filter(|l| l.starts_with("Running")).count();
        if running == tasks as usize {
            break;
        }
        if start.elapsed() > DEADLINE {
            bail!("{running} of {tasks} replicas running after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let took = start.elapsed().as_secs_f64() * 1000.0;
    let (ok, _, err) = docker(&["service", "rm", name]);
    if !ok {
        bail!("docker service rm: {err}");
    }
    wait_gone(&format!("com.docker.swarm.service.name={name}"))?;
    Ok(took)
}

fn summary(v: &[f64]) -> String {
    format!(
        "p50 {:.0} ms, min {:.0} ms, max {:.0} ms ({} runs)",
        percentile(v.to_vec(), 0.5),
        v.iter().copied().fold(f64::INFINITY, f64::min),
        v.iter().copied().fold(0.0, f64::max),
        v.len()
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    docker_images(false).map_err(|e| anyhow::anyhow!("cannot run: {e}"))?;
    let root = tempfile::tempdir()?;
    eprintln!("== shoal: one agent, {} containers per job", args.tasks);
    let mut spec = Spec::named("bench");
    spec.args = vec![
        "--cpus".into(),
        "8".into(),
        "--memory-mb".into(),
        "8192".into(),
    ];
    let agent = AgentProc::start(root.path(), &spec).context("starting the agent")?;
    let pid = std::process::id();
    let mut shoal = Vec::new();
    for r in 0..args.runs {
        let t = shoal_run(&agent, &format!("bench{pid}r{r}"), args.tasks)?;
        eprintln!("   run {r}: {t:.0} ms");
        shoal.push(t);
    }
    drop(agent);
    let mut swarm = Vec::new();
    if !args.no_swarm {
        eprintln!("== docker swarm: {} replicas per service", args.tasks);
        let (_, state, _) = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let created = state.trim() != "active";
        if created {
            let (ok, _, err) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            if !ok {
                bail!("docker swarm init: {err}");
            }
        }
        let result = (|| -> anyhow::Result<()> {
            for r in 0..args.runs {
                let t = swarm_run(&format!("bench{pid}s{r}"), args.tasks)?;
                eprintln!("   run {r}: {t:.0} ms");
                swarm.push(t);
            }
            Ok(())
        })();
        if created {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
        result?;
    }
    println!("| measure | setup | result |");
    println!("|---|---|---|");
    println!(
        "| submit → all {} containers running, shoal | 1 agent, local engine | {} |",
        args.tasks,
        summary(&shoal)
    );
    if !swarm.is_empty() {
        println!(
            "| submit → all {} replicas running, Docker Swarm | 1-node swarm, same engine | {} |",
            args.tasks,
            summary(&swarm)
        );
        let ratio = percentile(shoal.clone(), 0.5) / percentile(swarm.clone(), 0.5);
        println!("| shoal / Swarm (p50) | | {ratio:.2} |");
    }
    Ok(())
}
