//! Membership benchmark: real agents on this machine, shoal and HashiCorp
//! Serf side by side.
//!
//! For each N it starts N agents (each joining through a random earlier one),
//! waits until everyone sees everyone, then measures over an idle window:
//! CPU% and RSS per agent (from /proc), datagrams and bytes per agent per
//! second (loopback interface counters, the same way for both systems; for
//! shoal also its own /metrics). Then, `--runs` times: `kill -9` a random
//! agent and time until every survivor reports it failed (from the time
//! stamps each agent writes when it declares the failure: shoal's log line,
//! a Serf member-failed event handler), restart it, wait for the cluster to
//! heal.
//!
//! `--stability 100,200,300 --minutes 10` instead runs each N idle for that
//! long and counts false positives (failures declared while nothing failed).
//!
//! ```sh
//! cargo run --release -p shoal-tests --bin bench-membership -- --nodes 20,50,100 --runs 5 --serf
//! cargo run --release -p shoal-tests --bin bench-membership -- --stability 100,200,300 --minutes 10 --serf
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::collections::BTreeMap;
use std::fs;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use base64::Engine;
use clap::Parser;
use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_tests::{AgentProc, Spec, wait_until};

#[derive(Parser, Debug)]
struct Args {
    /// Cluster sizes to measure.
    #[arg(long, value_delimiter = ',', default_value = "20,50,100")]
    nodes: Vec<usize>,
    /// Kill/detect runs per size.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Idle measurement window, seconds.
    #[arg(long, default_value_t = 30)]
    idle_secs: u64,
    /// Also run HashiCorp Serf (`apt-get install serf`).
    #[arg(long)]
    serf: bool,
    /// Stability mode: sizes to keep idle for `--minutes`.
    #[arg(long, value_delimiter = ',')]
    stability: Vec<usize>,
    /// Minutes per stability run.
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// shoal gossip preset.
    #[arg(long, default_value = "lan")]
    gossip: String,
    /// Seed of the random choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// CPU ticks (user + system) and RSS (KiB) of a process.
fn proc_usage(pid: u32) -> anyhow::Result<(u64, u64)> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the command name: state is field 3, utime 14, stime 15.
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Ok((utime + stime, rss))
}

fn lo_counters() -> (u64, u64) {
    let read = |f: &str| {
        fs::read_to_string(format!("/sys/class/net/lo/statistics/{f}"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    (read("tx_packets"), read("tx_bytes"))
}

fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// An agent's own counters (from `/metrics`), summed over agents.
#[derive(Debug, Default, Clone, Copy)]
struct Own {
    gossip_pkts: f64,
    gossip_bytes: f64,
    rpc_bytes: f64,
    connects: f64,
}

#[derive(Debug, Default, Clone)]
struct Idle {
    cpu_pct: f64,
    rss_mb: f64,
    pkts_s: f64,
    bytes_s: f64,
    own_pkts_s: Option<f64>,
    own_bytes_s: Option<f64>,
    /// RPC (QUIC) payload bytes sent per agent per second, own count.
    rpc_bytes_s: Option<f64>,
    /// QUIC connections opened per agent per minute (each a TLS
    /// handshake with certificates: a few KB on the wire).
    connects_min: Option<f64>,
}

fn measure_idle(pids: &[u32], secs: u64, own: Option<&dyn Fn() -> Own>) -> anyhow::Result<Idle> {
    let n = pids.len() as f64;
    // Scraping /metrics is loopback traffic too: keep it outside the window
    // of the interface counters.
    let own0 = own.map(|f| f());
    let before: Vec<(u64, u64)> = pids
        .iter()
        .map(|p| proc_usage(*p))
        .collect::<Result<_, _>>()?;
    let (p0, b0) = lo_counters();
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(secs));
    let (p1, b1) = lo_counters();
    let dt = t0.elapsed().as_secs_f64();
    let after: Vec<(u64, u64)> = pids
        .iter()
        .map(|p| proc_usage(*p))
        .collect::<Result<_, _>>()?;
    let own1 = own.map(|f| f());
    let ticks: u64 = after.iter().zip(&before).map(|(a, b)| a.0 - b.0).sum();
    let rss: u64 = after.iter().map(|a| a.1).sum();
    let mut idle = Idle {
        cpu_pct: ticks as f64 / clock_ticks() / dt / n * 100.0,
        rss_mb: rss as f64 / 1024.0 / n,
        pkts_s: (p1 - p0) as f64 / dt / n,
        bytes_s: (b1 - b0) as f64 / dt / n,
        ..Default::default()
    };
    if let (Some(a), Some(b)) = (own0, own1) {
        idle.own_pkts_s = Some((b.gossip_pkts - a.gossip_pkts) / dt / n);
        idle.own_bytes_s = Some((b.gossip_bytes - a.gossip_bytes) / dt / n);
        idle.rpc_bytes_s = Some((b.rpc_bytes - a.rpc_bytes) / dt / n);
        idle.connects_min = Some((b.connects - a.connects) / dt / n * 60.0);
    }
    Ok(idle)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

// ---------------------------------------------------------------- shoal

struct ShoalCluster {
    _root: tempfile::TempDir,
    agents: Vec<AgentProc>,
}

fn shoal_cluster(n: usize, gossip: &str, rng: &mut ChaCha8Rng) -> anyhow::Result<ShoalCluster> {
    let root_dir = tempfile::Builder::new().prefix("shoal-bench-").tempdir()?;
    let root = root_dir.path().to_owned();
    let mut agents: Vec<AgentProc> = Vec::new();
    for i in 0..n {
        let mut spec = Spec::named(&format!("n{i}"));
        spec.gossip = Some(gossip.to_owned());
        if i > 0 {
            let via = rng.random_range(0..i);
            spec.join = vec![agents[via].info.gossip];
            spec.token = Some(agents[0].token.clone());
        }
        agents.push(AgentProc::start(&root, &spec)?);
    }
    let c = ShoalCluster {
        _root: root_dir,
        agents,
    };
    c.wait_all_alive(n, Duration::from_secs(300))?;
    Ok(c)
}

impl ShoalCluster {
    fn wait_all_alive(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // The members gauge, not /v1/nodes: at hundreds of agents, the
            // member lists of all of them every round would load the machine
            // being measured.
            let mut ok = true;
            for a in &self.agents {
                let alive = a
                    .metric("shoal_gossip_members{state=\"alive\"}")
                    .unwrap_or(0.0);
                if alive as usize != n {
                    ok = false;
                    break;
                }
            }
            if ok {
                return Ok(());
            }
            if Instant::now() > deadline {
                let seen: Vec<usize> = self
                    .agents
                    .iter()
                    .map(|a| {
                        a.metric("shoal_gossip_members{state=\"alive\"}")
                            .unwrap_or(0.0) as usize
                    })
                    .collect();
                let min = seen.iter().min().copied().unwrap_or(0);
                bail!(
                    "shoal cluster of {n} did not converge within {timeout:?} (fewest alive seen by an agent: {min})"
                );
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.agents.iter().filter_map(AgentProc::pid).collect()
    }

    /// Own counters, summed over agents.
    fn own_counters(&self) -> Own {
        let mut own = Own::default();
        for a in &self.agents {
            let m = |name: &str| a.metric(name).unwrap_or(0.0);
            own.gossip_pkts += m("shoal_gossip_packets_total{direction=\"out\"}");
            own.gossip_bytes += m("shoal_gossip_bytes_total{direction=\"out\"}");
            own.rpc_bytes += m("shoal_rpc_bytes_total{direction=\"out\"}");
            own.connects += m("shoal_rpc_connects_total");
        }
        own
    }

    /// When each survivor logged `member failed member=<id>` after `since`.
    fn failure_times(&self, id: &str, victim: usize, since: SystemTime) -> Vec<Option<SystemTime>> {
        let needle = format!("member failed member={id}");
        self.agents
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, a)| {
                a.log()
                    .lines()
                    .filter(|l| l.contains(&needle))
                    .filter_map(|l| l.split_whitespace().next())
                    .filter_map(|ts| humantime::parse_rfc3339_weak(ts.trim_end_matches('Z')).ok())
                    .find(|t| *t >= since)
            })
            .collect()
    }

    fn count_false_positives(&self) -> usize {
        self.agents
            .iter()
            .map(|a| {
                let log = a.log();
                log.matches("member failed").count()
                    + log.matches("declared this node down").count()
            })
            .sum()
    }
}

fn shoal_detect(c: &mut ShoalCluster, rng: &mut ChaCha8Rng) -> anyhow::Result<f64> {
    let n = c.agents.len();
    let victim = 1 + rng.random_range(0..n - 1);
    let id = c.agents[victim].info.node_id.clone();
    let t0 = SystemTime::now();
    c.agents[victim].kill9();
    let deadline = Instant::now() + Duration::from_secs(120);
    let worst = loop {
        let times = c.failure_times(&id, victim, t0);
        if times.iter().all(Option::is_some) {
            break times
                .into_iter()
                .flatten()
                .map(|t| t.duration_since(t0).unwrap_or_default().as_secs_f64())
                .fold(0.0, f64::max);
        }
        if Instant::now() > deadline {
            bail!("not every survivor reported {id} failed within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    c.agents[victim].restart()?;
    c.wait_all_alive(n, Duration::from_secs(120))?;
    Ok(worst)
}

// ---------------------------------------------------------------- serf

struct SerfAgent {
    name: String,
    child: Option<Child>,
    args: Vec<String>,
    log: PathBuf,
    rpc: SocketAddr,
}

struct SerfCluster {
    _root: tempfile::TempDir,
    root: PathBuf,
    agents: Vec<SerfAgent>,
}

impl Drop for SerfCluster {
    fn drop(&mut self) {
        for a in &mut self.agents {
            if let Some(mut c) = a.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// A port free for both TCP and UDP (Serf binds both on one port).
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0")?;
        let port = t.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

fn spawn_serf(a: &mut SerfAgent) -> anyhow::Result<()> {
    let log = fs::File::create(&a.log)?;
    let child = Command::new("serf")
        .arg("agent")
        .args(&a.args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("spawning serf (apt-get install serf)")?;
    a.child = Some(child);
    Ok(())
}

fn serf_members_alive(rpc: SocketAddr) -> usize {
    Command::new("serf")
        .args(["members", "-status", "alive", &format!("-rpc-addr={rpc}")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().count())
        .unwrap_or(0)
}

fn serf_cluster(n: usize, rng: &mut ChaCha8Rng) -> anyhow::Result<SerfCluster> {
    let root_dir = tempfile::Builder::new().prefix("serf-bench-").tempdir()?;
    let root = root_dir.path().to_owned();
    let handler = root.join("failed.sh");
    fs::write(
        &handler,
        format!(
            "#!/bin/sh\nt=$(date +%s.%N)\nwhile read name addr rest; do echo \"$t $name\" >> {}/\"$SERF_SELF_NAME\".failed; done\n",
            root.display()
        ),
    )?;
    Command::new("chmod").arg("+x").arg(&handler).status()?;
    let mut key = [0u8; 32];
    rng.fill(&mut key);
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let mut agents: Vec<SerfAgent> = Vec::new();
    let mut binds = Vec::new();
    for i in 0..n {
        let port = free_port()?;
        let rpc_port = free_port()?;
        let bind: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let rpc: SocketAddr = format!("127.0.0.1:{rpc_port}").parse()?;
        let mut args = vec![
            format!("-node=s{i}"),
            format!("-bind={bind}"),
            format!("-rpc-addr={rpc}"),
            format!("-encrypt={key}"),
            format!("-event-handler=member-failed={}", handler.display()),
            "-log-level=info".to_owned(),
        ];
        if i > 0 {
            let via: SocketAddr = binds[rng.random_range(0..i)];
            args.push(format!("-retry-join={via}"));
            args.push("-retry-interval=1s".to_owned());
        }
        let mut a = SerfAgent {
            name: format!("s{i}"),
            child: None,
            args,
            log: root.join(format!("s{i}.log")),
            rpc,
        };
        spawn_serf(&mut a)?;
        binds.push(bind);
        agents.push(a);
        // Serf needs its RPC port up before the next one joins through it.
        let rpc = agents[i].rpc;
        wait_until(&format!("serf s{i} RPC"), Duration::from_secs(30), || {
            Ok(std::net::TcpStream::connect(rpc).is_ok())
        });
    }
    let c = SerfCluster {
        _root: root_dir,
        root,
        agents,
    };
    c.wait_all_alive(n, Duration::from_secs(180))?;
    Ok(c)
}

impl SerfCluster {
    fn wait_all_alive(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            // Every agent's view (one process spawn each: slow at large N,
            // so sample a few plus the first and last).
            let mut idx: Vec<usize> = vec![0, self.agents.len() - 1];
            idx.extend((0..self.agents.len()).step_by((self.agents.len() / 8).max(1)));
            if idx
                .iter()
                .all(|i| serf_members_alive(self.agents[*i].rpc) == n)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("serf cluster of {n} did not converge within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn pids(&self) -> Vec<u32> {
        self.agents
            .iter()
            .filter_map(|a| a.child.as_ref().map(Child::id))
            .collect()
    }

    fn failure_times(&self, name: &str, victim: usize) -> Vec<Option<f64>> {
        self.agents
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != victim)
            .map(|(_, a)| {
                let text = fs::read_to_string(self.root.join(format!("{}.failed", a.name)))
                    .unwrap_or_default();
                text.lines()
                    .filter_map(|l| l.split_once(' '))
                    .filter(|(_, who)| *who == name)
                    .filter_map(|(t, _)| t.parse::<f64>().ok())
                    .next_back()
            })
            .collect()
    }

    fn clear_failures(&self) {
        for a in &self.agents {
            let _ = fs::remove_file(self.root.join(format!("{}.failed", a.name)));
        }
    }

    fn count_false_positives(&self) -> usize {
        self.agents
            .iter()
            .map(|a| {
                fs::read_to_string(self.root.join(format!("{}.failed", a.name)))
                    .map(|t| t.lines().count())
                    .unwrap_or(0)
            })
            .sum()
    }
}

fn serf_detect(c: &mut SerfCluster, rng: &mut ChaCha8Rng) -> anyhow::Result<f64> {
    let n = c.agents.len();
    let victim = 1 + rng.random_range(0..n - 1);
    c.clear_failures();
    let name = c.agents[victim].name.clone();
    let t0 = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs_f64();
    if let Some(mut child) = c.agents[victim].child.take() {
        child.kill()?;
        child.wait()?;
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let worst = loop {
        let times = c.failure_times(&name, victim);
        if times.iter().all(Option::is_some) {
            break times
                .into_iter()
                .flatten()
                .map(|t| t - t0)
                .fold(0.0, f64::max);
        }
        if Instant::now() > deadline {
            bail!("not every serf survivor reported {name} failed within 120 s");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    spawn_serf(&mut c.agents[victim])?;
    c.wait_all_alive(n, Duration::from_secs(120))?;
    Ok(worst)
}

// ---------------------------------------------------------------- main

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = ChaCha8Rng::seed_from_u64(args.seed);
    shoal_tests::shoal_bin();
    if !args.stability.is_empty() {
        return stability(&args, &mut rng);
    }
    let mut rows: BTreeMap<(usize, &str), (Idle, Vec<f64>)> = BTreeMap::new();
    for &n in &args.nodes {
        eprintln!("== shoal, {n} agents ({} preset)", args.gossip);
        let mut c = shoal_cluster(n, &args.gossip, &mut rng)?;
        let own = || c.own_counters();
        let idle = measure_idle(&c.pids(), args.idle_secs, Some(&own))?;
        eprintln!("   idle: {idle:?}");
        let mut det = Vec::new();
        for run in 0..args.runs {
            let d = shoal_detect(&mut c, &mut rng)?;
            eprintln!("   run {run}: every survivor reported the failure after {d:.2} s");
            det.push(d);
        }
        drop(c);
        rows.insert((n, "shoal"), (idle, det));

        if args.serf {
            eprintln!("== serf, {n} agents");
            let mut c = serf_cluster(n, &mut rng)?;
            let idle = measure_idle(&c.pids(), args.idle_secs, None)?;
            eprintln!("   idle: {idle:?}");
            let mut det = Vec::new();
            for run in 0..args.runs {
                let d = serf_detect(&mut c, &mut rng)?;
                eprintln!("   run {run}: every survivor reported the failure after {d:.2} s");
                det.push(d);
            }
            rows.insert((n, "serf"), (idle, det));
        }
    }
    println!(
        "| N | system | detection median (s) | min–max (s) | CPU % per agent | RSS MB per agent | datagrams/s per agent | bytes/s per agent (lo) | gossip bytes/s per agent (own count) | RPC payload bytes/s, QUIC connects/min per agent (own count) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for ((n, system), (idle, det)) in &rows {
        let min = det.iter().copied().fold(f64::INFINITY, f64::min);
        let max = det.iter().copied().fold(0.0, f64::max);
        println!(
            "| {n} | {system} | {:.2} | {min:.2}–{max:.2} | {:.2} | {:.1} | {:.1} | {:.0} | {} | {} |",
            median(det.clone()),
            idle.cpu_pct,
            idle.rss_mb,
            idle.pkts_s,
            idle.bytes_s,
            idle.own_bytes_s.map_or("-".into(), |b| format!("{b:.0}")),
            match (idle.rpc_bytes_s, idle.connects_min) {
                (Some(b), Some(c)) => format!("{b:.0}, {c:.2}"),
                _ => "-".into(),
            },
        );
    }
    Ok(())
}

fn stability(args: &Args, rng: &mut ChaCha8Rng) -> anyhow::Result<()> {
    println!("| N | system | minutes | false positives | CPU % per agent | RSS MB per agent |");
    println!("|---|---|---|---|---|---|");
    for &n in &args.stability {
        eprintln!("== shoal stability, {n} agents, {} min", args.minutes);
        match shoal_cluster(n, &args.gossip, rng) {
            Ok(c) => {
                let before = c.count_false_positives();
                let idle = measure_idle(&c.pids(), args.minutes * 60, None)?;
                let fp = c.count_false_positives() - before;
                println!(
                    "| {n} | shoal | {} | {fp} | {:.2} | {:.1} |",
                    args.minutes, idle.cpu_pct, idle.rss_mb
                );
            }
            Err(e) => println!("| {n} | shoal | - | did not form: {e} | - | - |"),
        }
        if args.serf {
            eprintln!("== serf stability, {n} agents, {} min", args.minutes);
            match serf_cluster(n, rng) {
                Ok(c) => {
                    let before = c.count_false_positives();
                    let idle = measure_idle(&c.pids(), args.minutes * 60, None)?;
                    let fp = c.count_false_positives() - before;
                    println!(
                        "| {n} | serf | {} | {fp} | {:.2} | {:.1} |",
                        args.minutes, idle.cpu_pct, idle.rss_mb
                    );
                }
                Err(e) => println!("| {n} | serf | - | did not form: {e} | - | - |"),
            }
        }
    }
    Ok(())
}
