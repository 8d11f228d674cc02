//! Rolling update benchmark: `--tasks` HTTP servers replaced
//! `--parallel` at a time, start-first, shoal beside Docker Swarm on the
//! same engine and the same local image (`shoal-test/busybox`, built by
//! `scripts/build-test-images.sh`; nothing is pulled).
//!
//! Each run deploys release 1 (busybox `httpd -f -p 80` serving its
//! `RELEASE`, health-checked over HTTP every `--interval`), waits until
//! every task is healthy, then changes the environment to `RELEASE=2` and
//! measures, from the moment the change is sent:
//!
//! - **done**: until the system says the update is over (shoal: the
//!   deployment's status `successful`; Swarm: `UpdateStatus.State`
//!   `completed`, which Swarm writes `--update-monitor`, 5 s by default,
//!   after its last new task runs);
//! - **all new healthy**: until every index (Swarm: slot) has a healthy
//!   task of the new version;
//! - **min healthy**: the fewest indexes (slots) with a healthy task, of
//!   any version, sampled every 200 ms from the change until both of the
//!   above.
//!
//! shoal: `--nodes` agents on loopback, all on the local engine, with
//! `[update] max_parallel = --parallel, min_healthy_time = "0s"` (Swarm
//! moves on as soon as a new task runs, and a task with a health check
//! runs once healthy: no minimum time, see docs/benchmarks.md). Swarm: a
//! one-node swarm (initialized here and left at the end if it was not
//! active), `docker service update --env-add RELEASE=2
//! --update-parallelism N --update-order start-first`. Runs interleave
//! (shoal, Swarm, Swarm, shoal, …) since the machine's load moves the
//! figures; everything is removed between runs.
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-deploy -- --runs 3
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use shoal_tests::{Cluster, KillMarked, docker, docker_images, http_get, marker};

#[derive(Parser, Debug)]
struct Args {
    /// Tasks per job / replicas per service.
    #[arg(long, default_value_t = 20)]
    tasks: u32,
    /// Tasks replaced at a time (`max_parallel`, `--update-parallelism`).
    #[arg(long, default_value_t = 5)]
    parallel: u32,
    /// shoal agents.
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Health check interval of both.
    #[arg(long, default_value = "1s")]
    interval: String,
    /// shoal's `min_healthy_time`.
    #[arg(long, default_value = "0s")]
    min_healthy: String,
    /// Timed runs of each.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip Docker Swarm.
    #[arg(long)]
    no_swarm: bool,
    /// Skip shoal.
    #[arg(long)]
    no_shoal: bool,
    /// Print every sample (and shoal's tasks that are not healthy).
    #[arg(long)]
    verbose: bool,
    /// shoal runs process tasks (busybox httpd on the host) instead of
    /// containers; chosen by itself when the agents offer no docker.
    #[arg(long)]
    process: bool,
}

const IMAGE: &str = "shoal-test/busybox:latest";
const DEADLINE: Duration = Duration::from_secs(300);
const SAMPLE: Duration = Duration::from_millis(200);
/// What each task runs: busybox httpd serving its release at `/`.
const SERVE: &str =
    "mkdir -p /www && echo $RELEASE > /www/index.html && exec httpd -f -p 80 -h /www";

/// One timed rolling update.
#[derive(Clone, Copy, Debug)]
struct Timed {
    /// Change sent → the system says the update is over (s).
    done: f64,
    /// Change sent → every index healthy at the new version (s).
    all_new: f64,
    /// Fewest indexes with a healthy task seen meanwhile.
    min_healthy: usize,
    /// Fewest indexes with a copy that answers HTTP (shoal's
    /// containers, probed through their host ports), when probed.
    min_answering: Option<usize>,
    /// Samples taken.
    samples: usize,
}

/// One sample while an update runs.
struct Sample {
    /// Indexes (slots) with a healthy task, as the system reports them.
    healthy: usize,
    /// Those whose healthy task is of the new version.
    new: usize,
    /// The system says the update is over.
    done: bool,
    /// Indexes with a copy that answers HTTP, when probed.
    answering: Option<usize>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
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

/// Samples `probe` (healthy indexes, healthy indexes of the new version,
/// whether the system says done) every 200 ms until the update is done
/// and every index is new and healthy.
fn watch(
    tasks: u32,
    start: Instant,
    verbose: bool,
    mut probe: impl FnMut() -> anyhow::Result<Sample>,
) -> anyhow::Result<Timed> {
    let mut t = Timed {
        done: f64::NAN,
        all_new: f64::NAN,
        min_healthy: usize::MAX,
        min_answering: None,
        samples: 0,
    };
    loop {
        let before = Instant::now();
        let Sample {
            healthy,
            new,
            done,
            answering,
        } = probe()?;
        let at = start.elapsed().as_secs_f64();
        if verbose {
            eprintln!(
                "    {at:6.2} s: {healthy} healthy, {new} new, done: {done}, answering: {answering:?}"
            );
        }
        t.samples += 1;
        t.min_healthy = t.min_healthy.min(healthy);
        if let Some(a) = answering {
            t.min_answering = Some(t.min_answering.map_or(a, |m| m.min(a)));
        }
        if done && t.done.is_nan() {
            t.done = at;
        }
        if new == tasks as usize && t.all_new.is_nan() {
            t.all_new = at;
        }
        if !t.done.is_nan() && !t.all_new.is_nan() {
            return Ok(t);
        }
        if start.elapsed() > DEADLINE {
            bail!(
                "not done after {DEADLINE:?}: {healthy} healthy, {new} new and healthy, done: {done}"
            );
        }
        std::thread::sleep(SAMPLE.saturating_sub(before.elapsed()));
    }
}

/// Indexes of shoal job `name` with a container that answers `GET /`
/// through its host port (any release).
fn answering(name: &str) -> usize {
    let (_, out, _) = docker(&[
        "ps",
        "--filter",
        &format!("label=shoal.job={name}"),
        "--format",
        "{{.Label \"shoal.task\"}}|{{.Ports}}",
    ]);
    let mut up = BTreeSet::new();
    for line in out.lines() {
        let Some((task, ports)) = line.split_once('|') else {
            continue;
        };
        // `127.0.0.1:20417->80/tcp`
        let port = ports
            .split("->")
            .next()
            .and_then(|p| p.rsplit(':').next())
            .and_then(|p| p.parse::<u16>().ok());
        if let Some(port) = port
            && matches!(
                http_get(&format!("http://127.0.0.1:{port}/"), None),
                Ok((200, _))
            )
        {
            up.insert(task.to_owned());
        }
    }
    up.len()
}

struct Shoal<'a> {
    c: &'a Cluster,
    args: &'a Args,
    marker: &'a str,
    process: bool,
}

impl Shoal<'_> {
    fn spec(&self, name: &str, release: &str) -> Value {
        let a = self.args;
        let check = json!({"type": "http", "port": "http", "path": "/",
                           "interval": a.interval, "timeout": "2s"});
        let task = if self.process {
            json!({
                "command": "/bin/busybox",
                "args": ["sh", "-c", "mkdir -p www && echo $RELEASE > www/index.html && exec busybox httpd -f -p 127.0.0.1:$SHOAL_PORT_HTTP -h www"],
                "env": {"RELEASE": release, "SHOAL_TEST_MARKER": self.marker},
                "ports": [{"name": "http"}],
                "checks": [check],
                "resources": {"cpus": 0.1, "memory_mb": 32},
            })
        } else {
            json!({
                "runtime": "docker",
                "image": IMAGE,
                "command": "sh",
                "args": ["-c", SERVE],
                "env": {"RELEASE": release},
                "ports": [{"name": "http", "container_port": 80}],
                "checks": [check],
                "resources": {"cpus": 0.1, "memory_mb": 32},
            })
        };
        json!({
            "name": name,
            "count": a.tasks,
            "task": task,
            "update": {"max_parallel": a.parallel, "min_healthy_time": a.min_healthy,
                       "healthy_deadline": "120s"},
        })
    }

    /// Healthy indexes, and those of them at `version`.
    fn healthy(&self, name: &str, version: u64) -> (usize, usize) {
        let tasks = self.c.tasks(0, name);
        let healthy: BTreeMap<&str, bool> = tasks
            .iter()
            .filter(|t| t["health"] == "healthy")
            .filter_map(|t| Some((t["task"].as_str()?, t["version"] == version)))
            .collect();
        if self.args.verbose {
            let others: Vec<String> = tasks
                .iter()
                .filter(|t| t["health"] != "healthy")
                .map(|t| {
                    format!(
                        "{} {} {} v{} on {}",
                        t["task"], t["state"], t["health"], t["version"], t["node"]
                    )
                })
                .collect();
            eprintln!(
                "      {} listed, {} healthy; others: {others:?}",
                tasks.len(),
                healthy.len()
            );
        }
        (healthy.len(), healthy.values().filter(|v| **v).count())
    }

    fn submit(&self, spec: &Value) -> anyhow::Result<u64> {
        let (status, body) = self.c.agents[1].post("/v1/jobs", spec)?;
        if status != 200 && status != 201 {
            bail!("submit failed: {status} {body}");
        }
        body["job"]["version"]
            .as_u64()
            .with_context(|| format!("no version in {body}"))
    }

    fn run(&self, name: &str) -> anyhow::Result<Timed> {
        let n = self.args.tasks as usize;
        let v1 = self.submit(&self.spec(name, "1"))?;
        let start = Instant::now();
        while self.healthy(name, v1) != (n, n) {
            if start.elapsed() > DEADLINE {
                bail!("release 1 not healthy after {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "   shoal: {n} healthy in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let spec = self.spec(name, "2");
        let start = Instant::now();
        let v2 = self.submit(&spec)?;
        let t = watch(self.args.tasks, start, self.args.verbose, || {
            let (healthy, new) = self.healthy(name, v2);
            let (status, body) =
                self.c.agents[0].get_any(&format!("/v1/jobs/{name}/deployments"))?;
            let done = status == 200
                && body.as_array().is_some_and(|ds| {
                    ds.iter()
                        .any(|d| d["version"] == v2 && d["status"] == "successful")
                });
            let answering = (!self.process).then(|| answering(name));
            Ok(Sample {
                healthy,
                new,
                done,
                answering,
            })
        })?;
        let (status, body) = self.c.agents[0].get_any(&format!("/v1/jobs/{name}/deployments"))?;
        if status == 200
            && let Some(d) = body
                .as_array()
                .and_then(|ds| ds.iter().find(|d| d["version"] == v2))
        {
            eprintln!("   shoal deployment: {}", d["description"]);
        }
        self.c.agents[1].delete(&format!("/v1/jobs/{name}"))?;
        if self.process {
            let start = Instant::now();
            while !self.c.tasks(0, name).is_empty() && start.elapsed() < DEADLINE {
                std::thread::sleep(Duration::from_millis(100));
            }
        } else {
            wait_gone(&format!("shoal.job={name}"))?;
        }
        Ok(t)
    }
}

/// A one-node swarm on the local engine, with the services of this
/// process removed (and the swarm left, if this process created it) when
/// dropped.
struct Swarm {
    created: bool,
    prefix: String,
}

impl Swarm {
    fn join(prefix: &str) -> anyhow::Result<Swarm> {
        let (_, state, _) = docker(&["info", "--format", "{{.Swarm.LocalNodeState}}"]);
        let created = state.trim() != "active";
        if created {
            let (ok, _, err) = docker(&["swarm", "init", "--advertise-addr", "127.0.0.1"]);
            if !ok {
                bail!("docker swarm init: {err}");
            }
        }
        Ok(Swarm {
            created,
            prefix: prefix.to_owned(),
        })
    }

    /// Containers of service `name`: (id, healthy, slot).
    fn containers(name: &str) -> Vec<(String, bool, String)> {
        let (_, out, _) = docker(&[
            "ps",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
            "--format",
            "{{.ID}}|{{.Status}}|{{.Label \"com.docker.swarm.task.name\"}}",
        ]);
        out.lines()
            .filter_map(|l| {
                let mut f = l.split('|');
                let id = f.next()?.to_owned();
                let healthy = f.next()?.contains("(healthy)");
                let slot = f.next()?.split('.').nth(1)?.to_owned();
                Some((id, healthy, slot))
            })
            .collect()
    }

    /// Healthy slots, and those with a healthy container not in `old`.
    fn healthy(name: &str, old: &BTreeSet<String>) -> (usize, usize) {
        let mut slots = BTreeSet::new();
        let mut new = BTreeSet::new();
        for (id, healthy, slot) in Swarm::containers(name) {
            if healthy {
                if !old.contains(&id) {
                    new.insert(slot.clone());
                }
                slots.insert(slot);
            }
        }
        (slots.len(), new.len())
    }

    fn run(&self, name: &str, args: &Args) -> anyhow::Result<Timed> {
        let n = args.tasks as usize;
        let replicas = args.tasks.to_string();
        let parallel = args.parallel.to_string();
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
            "--env",
            "RELEASE=1",
            "--health-cmd",
            "wget -q -O /dev/null http://127.0.0.1:80/ || exit 1",
            "--health-interval",
            &args.interval,
            "--health-timeout",
            "2s",
            "--health-retries",
            "3",
            "--stop-grace-period",
            "2s",
            "--limit-cpu",
            "0.1",
            "--limit-memory",
            "32m",
            IMAGE,
            "sh",
            "-c",
            SERVE,
        ]);
        if !ok {
            bail!("docker service create: {err}");
        }
        let start = Instant::now();
        while Swarm::healthy(name, &BTreeSet::new()).0 != n {
            if start.elapsed() > DEADLINE {
                bail!("{name}: not {n} healthy after {DEADLINE:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "   swarm: {n} healthy in {:.1} s",
            start.elapsed().as_secs_f64()
        );
        let (_, out, _) = docker(&[
            "ps",
            "-a",
            "-q",
            "--filter",
            &format!("label=com.docker.swarm.service.name={name}"),
        ]);
        let old: BTreeSet<String> = out.lines().map(str::to_owned).collect();
        let start = Instant::now();
        let (ok, _, err) = docker(&[
            "service",
            "update",
            "--detach",
            "--quiet",
            "--no-resolve-image",
            "--env-add",
            "RELEASE=2",
            "--update-parallelism",
            &parallel,
            "--update-order",
            "start-first",
            name,
        ]);
        if !ok {
            bail!("docker service update: {err}");
        }
        let t = watch(args.tasks, start, args.verbose, || {
            let (healthy, new) = Swarm::healthy(name, &old);
            let (_, state, _) = docker(&[
                "service",
                "inspect",
                "--format",
                "{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}",
                name,
            ]);
            Ok(Sample {
                healthy,
                new,
                done: state.trim() == "completed",
                answering: None,
            })
        })?;
        let (ok, _, err) = docker(&["service", "rm", name]);
        if !ok {
            bail!("docker service rm: {err}");
        }
        wait_gone(&format!("com.docker.swarm.service.name={name}"))?;
        Ok(t)
    }
}

impl Drop for Swarm {
    fn drop(&mut self) {
        let (_, out, _) = docker(&[
            "service",
            "ls",
            "-q",
            "--filter",
            &format!("name={}", self.prefix),
        ]);
        for id in out.lines() {
            let _ = docker(&["service", "rm", id]);
        }
        if self.created {
            let _ = docker(&["swarm", "leave", "--force"]);
        }
    }
}

fn summary(v: &[Timed]) -> (String, String, String, String) {
    let list = |f: &dyn Fn(&Timed) -> f64| {
        let all: Vec<String> = v.iter().map(|t| format!("{:.1}", f(t))).collect();
        format!(
            "**{:.1}** ({})",
            median(v.iter().map(f).collect()),
            all.join(", ")
        )
    };
    let done = list(&|t| t.done);
    let all_new = list(&|t| t.all_new);
    let fewest: Vec<String> = v.iter().map(|t| t.min_healthy.to_string()).collect();
    let min = v.iter().map(|t| t.min_healthy).min().unwrap_or(0);
    let answering: Vec<usize> = v.iter().filter_map(|t| t.min_answering).collect();
    let answering = if answering.is_empty() {
        "-".to_owned()
    } else {
        let all: Vec<String> = answering.iter().map(ToString::to_string).collect();
        format!(
            "**{}** ({})",
            answering.iter().min().unwrap_or(&0),
            all.join(", ")
        )
    };
    (
        done,
        all_new,
        format!("**{min}** ({})", fewest.join(", ")),
        answering,
    )
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    docker_images(false).map_err(|e| anyhow::anyhow!("cannot run: {e}"))?;
    let pid = std::process::id();
    let m = marker("deploy");
    let _cleanup = KillMarked(m.clone());
    let cluster = if args.no_shoal {
        None
    } else {
        eprintln!("== shoal: {} agents on loopback, one engine", args.nodes);
        let c = Cluster::of(
            "b",
            args.nodes,
            &["--cpus", "8", "--memory-mb", "8192", "--stop-grace", "2s"],
        );
        Some(c)
    };
    let shoal = cluster.as_ref().map(|c| {
        let (_, me) = c.agents[0].get_any("/v1/self").unwrap_or_default();
        let docker = me["runtimes"]
            .as_array()
            .is_some_and(|rs| rs.iter().any(|r| r["name"] == "docker"));
        if !docker && !args.process {
            eprintln!("   the agents offer no docker runtime: process tasks instead");
        }
        Shoal {
            c,
            args: &args,
            marker: &m,
            process: args.process || !docker,
        }
    });
    let swarm = if args.no_swarm {
        None
    } else {
        Some(Swarm::join(&format!("deploy{pid}"))?)
    };
    let mut shoal_runs = Vec::new();
    let mut swarm_runs = Vec::new();
    for r in 0..args.runs {
        // shoal first on even runs, Swarm first on odd ones.
        for which in [r % 2, 1 - r % 2] {
            if which == 0
                && let Some(s) = &shoal
            {
                let t = s.run(&format!("deploy{pid}r{r}"))?;
                eprintln!(
                    "   run {r} shoal: done {:.2} s, all new healthy {:.2} s, min healthy {}, min answering {:?} ({} samples)",
                    t.done, t.all_new, t.min_healthy, t.min_answering, t.samples
                );
                shoal_runs.push(t);
            }
            if which == 1
                && let Some(s) = &swarm
            {
                let t = s.run(&format!("deploy{pid}s{r}"), &args)?;
                eprintln!(
                    "   run {r} swarm: done {:.2} s, all new healthy {:.2} s, min healthy {} ({} samples)",
                    t.done, t.all_new, t.min_healthy, t.samples
                );
                swarm_runs.push(t);
            }
        }
    }
    let runtime = if shoal.as_ref().is_some_and(|s| s.process) {
        "process tasks"
    } else {
        "containers"
    };
    drop(swarm);
    drop(cluster);
    println!(
        "rolling update of {} tasks, {} at a time, start-first, health checked every {}; median (each run) in s",
        args.tasks, args.parallel, args.interval
    );
    println!(
        "| system | change → done | change → all new healthy | min healthy seen | min answering HTTP |"
    );
    println!("|---|---|---|---|---|");
    if !shoal_runs.is_empty() {
        let (d, a, m, up) = summary(&shoal_runs);
        println!(
            "| shoal, {} agents, {runtime}, min_healthy_time {} | {d} | {a} | {m} | {up} |",
            args.nodes, args.min_healthy
        );
    }
    if !swarm_runs.is_empty() {
        let (d, a, m, up) = summary(&swarm_runs);
        println!("| Docker Swarm, 1 node, same engine | {d} | {a} | {m} | {up} |");
    }
    Ok(())
}
