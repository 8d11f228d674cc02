//! A harness that starts real `shoal agent` processes.
//!
//! Every agent binds 127.0.0.1 with port 0 (its DNS server too) and lives in a temporary dir; the
//! harness learns its addresses from `<data-dir>/agent.json`. Tests wait on
//! conditions with deadlines ([`wait_until`]); nothing sleeps a fixed time
//! and no port is fixed. When a test panics, the tail of every agent's log
//! is printed.
//!
//! Nothing outlives a test: tasks outlive a `kill -9`ed agent by design, so
//! when an [`AgentProc`] (or a [`Cluster`]) is dropped, the harness kills
//! every process that names the agent's data dir (its tasks, their log
//! shippers and what they started, found through `/proc`, and each task's
//! process group from `tasks/*/task.json`) and removes the Docker
//! containers labelled with its node id; then the temporary dir goes.
//! `.ci/run` checks after the tests that nothing is left
//! (`scripts/leftovers.sh`).

#![allow(clippy::print_stdout, clippy::print_stderr)]

pub mod browser;
pub mod dns;
pub mod hosts;
pub mod packages;

use std::fs;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use serde::de::DeserializeOwned;
use shoal_client::{Client, Method};
use shoal_node::api::types::NodeView;
use shoal_node::datadir::AgentFile;

/// The `shoal` binary next to the running test or bench executable, built
/// once per process (`cargo build` is a no-op when it is fresh). `SHOAL_BIN`
/// overrides it.
pub fn shoal_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("SHOAL_BIN") {
            return PathBuf::from(p);
        }
        let exe = std::env::current_exe().expect("current exe");
        let mut dir = exe.parent().expect("exe has a parent").to_path_buf();
        if dir.file_name().is_some_and(|n| n == "deps") {
            dir.pop();
        }
        let release = dir.file_name().is_some_and(|n| n == "release");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "-p", "shoal-cli", "--bin", "shoal"]);
        if release {
            cmd.arg("--release");
        }
        let status = cmd
            .status()
            .expect("running cargo build for the shoal binary");
        assert!(status.success(), "cargo build of the shoal binary failed");
        let bin = dir.join("shoal");
        assert!(bin.exists(), "{} missing after cargo build", bin.display());
        bin
    })
}

/// Polls `check` every 50 ms until it returns `Ok(true)`, or panics after
/// `timeout` with `what` and the last error.
pub fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> anyhow::Result<bool>) {
    let deadline = Instant::now() + timeout;
    let mut last;
    loop {
        match check() {
            Ok(true) => return,
            Ok(false) => last = "condition false".into(),
            Err(e) => last = format!("{e:#}"),
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}: {last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The harness's API client: 5 s per call, one connection pool for every
/// agent ([`Client::at`] gives each node's client).
fn http() -> &'static Client {
    static CLIENT: OnceLock<Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| Client::new("http://127.0.0.1", None).with_timeout(Duration::from_secs(5)))
}

/// `GET` with an optional bearer token: status and body.
pub fn http_get(url: &str, token: Option<&str>) -> anyhow::Result<(u16, String)> {
    http_send("GET", url, token, None)
}

/// Sends `method url` with an optional JSON body: status and body.
pub fn http_send(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let method = match method {
        "POST" => Method::Post,
        "DELETE" => Method::Delete,
        _ => Method::Get,
    };
    let r = http()
        .at(url, token.map(str::to_owned))
        .send(method, "", body)
        .with_context(|| format!("{method} {url}"))?;
    Ok((r.status, r.body))
}

/// Starts `n` agents with the `lan` preset, each joining through the
/// previous one and the first, and waits (2 minutes at most) until every
/// one sees all `n` alive: the benchmarks' clusters.
pub fn bench_cluster(root: &Path, n: usize) -> anyhow::Result<Vec<AgentProc>> {
    let mut agents: Vec<AgentProc> = Vec::new();
    for i in 0..n {
        let mut spec = Spec::named(&format!("n{i}"));
        spec.gossip = Some("lan".into());
        if i > 0 {
            spec.join = vec![agents[i - 1].info.gossip, agents[0].info.gossip];
            spec.token = Some(agents[0].token.clone());
        }
        agents.push(AgentProc::start(root, &spec)?);
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ok = agents.iter().all(|a| {
            a.nodes()
                .map(|ns| {
                    ns.iter()
                        .filter(|x| x.state == "alive" && x.name.is_some())
                        .count()
                        == n
                })
                .unwrap_or(false)
        });
        if ok {
            return Ok(agents);
        }
        if Instant::now() > deadline {
            bail!("cluster of {n} did not form");
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// How to start an agent.
#[derive(Clone, Debug, Default)]
pub struct Spec {
    /// `--name`.
    pub name: String,
    /// `--join` addresses.
    pub join: Vec<SocketAddr>,
    /// `--token`.
    pub token: Option<String>,
    /// More flags.
    pub args: Vec<String>,
    /// Gossip preset (default `test`).
    pub gossip: Option<String>,
    /// Environment variables set for the agent process (kept on restart).
    pub env: Vec<(String, String)>,
}

impl Spec {
    /// An agent named `name`.
    pub fn named(name: &str) -> Spec {
        Spec {
            name: name.to_owned(),
            ..Default::default()
        }
    }
}

/// One agent process.
#[derive(Debug)]
pub struct AgentProc {
    /// Its name.
    pub name: String,
    /// Its data dir.
    pub dir: PathBuf,
    /// What it bound (from `agent.json`).
    pub info: AgentFile,
    /// The cluster token it uses.
    pub token: String,
    log: PathBuf,
    out: PathBuf,
    child: Option<Child>,
    env: Vec<(String, String)>,
    starts: u32,
    /// Its tasks and containers were cleaned up.
    cleaned: bool,
}

impl AgentProc {
    /// Starts `shoal agent` with `args` (besides the data dir, loopback
    /// addresses with port 0 and the `test` gossip preset) and waits for
    /// `agent.json`.
    pub fn start(root: &Path, spec: &Spec) -> anyhow::Result<AgentProc> {
        let dir = root.join(&spec.name);
        let mut args: Vec<String> = vec!["--bind".into(), "127.0.0.1:0".into()];
        // A test may put the API elsewhere (`--api 0.0.0.0:0`).
        if !spec.args.iter().any(|a| a == "--api") {
            args.extend(["--api".into(), "127.0.0.1:0".into()]);
        }
        args.extend([
            "--dns".into(),
            "127.0.0.1:0".into(),
            "--name".into(),
            spec.name.clone(),
        ]);
        if !spec.args.iter().any(|a| a == "--gossip") {
            args.extend([
                "--gossip".into(),
                spec.gossip.clone().unwrap_or_else(|| "test".into()),
            ]);
        }
        for j in &spec.join {
            args.push("--join".into());
            args.push(j.to_string());
        }
        if let Some(t) = &spec.token {
            args.push("--token".into());
            args.push(t.clone());
        }
        args.extend(spec.args.iter().cloned());
        let mut p = AgentProc {
            name: spec.name.clone(),
            log: root.join(format!("{}.log", spec.name)),
            out: root.join(format!("{}.out", spec.name)),
            dir,
            info: AgentFile {
                node_id: String::new(),
                name: String::new(),
                gossip: "0.0.0.0:0".parse().expect("literal"),
                rpc: "0.0.0.0:0".parse().expect("literal"),
                api: "0.0.0.0:0".parse().expect("literal"),
                dns: None,
                pid: 0,
            },
            token: String::new(),
            child: None,
            env: spec.env.clone(),
            starts: 0,
            cleaned: false,
        };
        p.spawn(&args)?;
        Ok(p)
    }

    fn spawn(&mut self, args: &[String]) -> anyhow::Result<()> {
        self.starts += 1;
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let out_path = if self.starts == 1 {
            self.out.clone()
        } else {
            self.out.with_extension(format!("out.{}", self.starts))
        };
        let out = fs::File::create(&out_path)?;
        let mut cmd = Command::new(shoal_bin());
        cmd.arg("agent")
            .arg("--data-dir")
            .arg(&self.dir)
            .args(args)
            .env("SHOAL_LOG", "info,shoal_node=debug")
            .env_remove("SHOAL_TOKEN")
            .env_remove("SHOAL_ADDR")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(log);
        let child = cmd.spawn().context("spawning shoal agent")?;
        let pid = child.id();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!(
                    "agent {} exited with {status} before serving; log:\n{}",
                    self.name,
                    self.log_tail(30)
                );
            }
            if let Ok(text) = fs::read_to_string(self.dir.join("agent.json"))
                && let Ok(info) = serde_json::from_str::<AgentFile>(&text)
                && info.pid == pid
            {
                self.info = info;
                break;
            }
            if Instant::now() > deadline {
                bail!("agent {} did not write agent.json within 30 s", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.token = fs::read_to_string(self.dir.join("token"))?
            .trim()
            .to_owned();
        Ok(())
    }

    /// Starts it again from its data dir with no flags but the loopback
    /// addresses (the data dir remembers the rest).
    pub fn restart(&mut self) -> anyhow::Result<()> {
        assert!(self.child.is_none(), "restart of a running agent");
        self.spawn(&[])
    }

    /// Whether the process runs.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `signal` and waits (up to 20 s) for the exit status.
    pub fn stop_with(&mut self, signal: nix::sys::signal::Signal) -> anyhow::Result<ExitStatus> {
        let mut c = self
            .child
            .take()
            .ok_or_else(|| anyhow!("{} is not running", self.name))?;
        let pid = nix::unistd::Pid::from_raw(i32::try_from(c.id())?);
        nix::sys::signal::kill(pid, signal)?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = c.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("{} did not exit within 20 s of {signal}", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `SIGTERM` and wait.
    pub fn terminate(&mut self) -> anyhow::Result<ExitStatus> {
        self.stop_with(nix::sys::signal::Signal::SIGTERM)
    }

    /// The API base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.info.api)
    }

    /// A client of its API, with its token.
    pub fn client(&self) -> Client {
        http().at(&self.url(), Some(self.token.clone()))
    }

    /// `GET path` with the token, decoded; an HTTP error is an error.
    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.client()
            .get(path)
            .with_context(|| format!("GET {path} on {}", self.name))
    }

    /// `GET /v1/nodes`.
    pub fn nodes(&self) -> anyhow::Result<Vec<NodeView>> {
        self.get("/v1/nodes")
    }

    /// `GET path` with the token: status and JSON (null when not JSON).
    pub fn get_any(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.client().send(Method::Get, path, None::<&()>)?;
        Ok((r.status, r.json()))
    }

    /// `POST path` with a JSON body and the token: status and JSON.
    pub fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.client().send(Method::Post, path, Some(body))?;
        Ok((r.status, r.json()))
    }

    /// `DELETE path` with the token: status and JSON.
    pub fn delete(&self, path: &str) -> anyhow::Result<(u16, serde_json::Value)> {
        let r = self.client().send(Method::Delete, path, None::<&()>)?;
        Ok((r.status, r.json()))
    }

    /// Cuts this agent off from `others` (node ids); an empty list heals.
    /// The agent must run with `--fault-injection`.
    pub fn block(&self, others: &[String]) -> anyhow::Result<()> {
        let (status, body) =
            self.post("/v1/debug/faults", &serde_json::json!({ "block": others }))?;
        if status != 200 {
            bail!("fault injection on {}: {status} {body}", self.name);
        }
        Ok(())
    }

    /// `GET /metrics` as text.
    pub fn metrics(&self) -> anyhow::Result<String> {
        let r = self.client().send(Method::Get, "/metrics", None::<&()>)?;
        if r.status != 200 {
            bail!("GET /metrics: {}: {}", r.status, r.body);
        }
        Ok(r.body)
    }

    /// The value of one sample of `/metrics`, e.g.
    /// `shoal_gossip_dropped_packets_total{reason="replay"}`.
    pub fn metric(&self, sample: &str) -> anyhow::Result<f64> {
        let text = self.metrics()?;
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix(sample)
                && let Some(v) = rest.strip_prefix(' ')
            {
                return Ok(v.trim().parse()?);
            }
        }
        bail!("no sample {sample} in /metrics")
    }

    /// What the agent printed on stdout (of its latest start).
    pub fn stdout(&self) -> String {
        let path = if self.starts <= 1 {
            self.out.clone()
        } else {
            self.out.with_extension(format!("out.{}", self.starts))
        };
        fs::read_to_string(path).unwrap_or_default()
    }

    /// Its whole log.
    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// The last `n` lines of its log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        self.kill9();
        if !self.cleaned {
            clean_up(&[&self.dir], std::slice::from_ref(&self.info.node_id));
        }
    }
}

/// Kills every process left of agents whose data dirs are `dirs` and
/// removes the containers of `nodes` (node ids): see the crate docs.
fn clean_up(dirs: &[&Path], nodes: &[String]) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut left = Vec::new();
        for dir in dirs {
            left.extend(processes_naming(dir));
            left.extend(task_groups(dir));
        }
        if left.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            eprintln!("warning: processes of a test agent survive SIGKILL: {left:?}");
            break;
        }
        let own_group = nix::unistd::getpgrp();
        for pid in left {
            let pid = nix::unistd::Pid::from_raw(pid);
            // Tasks and log shippers lead groups of their own; agents run
            // in the test's group, which must live on.
            if let Ok(group) = nix::unistd::getpgid(Some(pid))
                && group != own_group
                && group.as_raw() > 1
            {
                let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            }
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    remove_containers(nodes);
}

/// Live processes (not this one, not zombies) whose command line,
/// environment or working dir names something inside `dir`.
pub fn processes_naming(dir: &Path) -> Vec<i32> {
    use std::os::unix::ffi::OsStrExt;
    // `…/n1/`, so that `…/n10/…` is not taken for it.
    let mut needle = dir.as_os_str().as_bytes().to_vec();
    needle.push(b'/');
    let needle = needle.as_slice();
    let contains =
        |hay: &[u8]| !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle);
    let me = std::process::id();
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let path = e.path();
        let zombie = fs::read_to_string(path.join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .map(|(_, r)| r.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if zombie {
            continue;
        }
        let named = fs::read(path.join("cmdline")).is_ok_and(|b| contains(&b))
            || fs::read(path.join("environ")).is_ok_and(|b| contains(&b))
            || fs::read_link(path.join("cwd")).is_ok_and(|c| c.starts_with(dir));
        if named {
            out.push(pid);
        }
    }
    out
}

/// Task processes recorded in `dir/tasks/*/task.json` that still run (the
/// pid with the recorded start time): a task that changed its working dir
/// and cleared its environment is found this way.
fn task_groups(dir: &Path) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(entries) = fs::read_dir(dir.join("tasks")) else {
        return out;
    };
    for e in entries.filter_map(Result::ok) {
        let Ok(text) = fs::read_to_string(e.path().join("task.json")) else {
            continue;
        };
        let Ok(record) = serde_json::from_str::<serde_json::Value>(&text) else {
            continue;
        };
        let Some(pid) = record["pid"].as_i64().and_then(|p| i32::try_from(p).ok()) else {
            continue;
        };
        let started = fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(19)?
                    .parse::<u64>()
                    .ok()
            });
        let zombie = fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        });
        if started.is_some() && started == record["pid_start"].as_u64() && !zombie {
            out.push(pid);
        }
    }
    out
}

/// Removes the Docker containers labelled with one of `nodes` (node ids),
/// where a Docker engine answers.
fn remove_containers(nodes: &[String]) {
    let nodes: Vec<&String> = nodes.iter().filter(|n| !n.is_empty()).collect();
    if nodes.is_empty() {
        return;
    }
    let (ok, out, _) = docker(&[
        "ps",
        "-a",
        "--filter",
        "label=shoal.node",
        "--format",
        "{{.ID}} {{.Label \"shoal.node\"}}",
    ]);
    if !ok {
        return;
    }
    for line in out.lines() {
        if let Some((id, node)) = line.split_once(' ')
            && nodes.iter().any(|n| *n == node)
        {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}

/// A set of agents under one temporary root.
pub struct Cluster {
    /// The root dir (kept with `SHOAL_KEEP_TEST_DIRS=1`).
    pub root: tempfile::TempDir,
    /// The agents, in the order they were started.
    pub agents: Vec<AgentProc>,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster::new()
    }
}

impl Cluster {
    /// No agents yet.
    pub fn new() -> Cluster {
        let mut root = tempfile::Builder::new()
            .prefix("shoal-test-")
            .tempdir()
            .expect("temporary dir");
        if std::env::var_os("SHOAL_KEEP_TEST_DIRS").is_some() {
            root.disable_cleanup(true);
        }
        Cluster {
            root,
            agents: Vec::new(),
        }
    }

    /// The cluster token (of the first agent).
    pub fn token(&self) -> String {
        self.agents[0].token.clone()
    }

    /// Starts an agent from `spec`; returns its index.
    pub fn start(&mut self, spec: &Spec) -> usize {
        let agent = AgentProc::start(self.root.path(), spec)
            .unwrap_or_else(|e| panic!("starting {}: {e:#}", spec.name));
        self.agents.push(agent);
        self.agents.len() - 1
    }

    /// Founds the cluster with agent `name`.
    pub fn found(&mut self, name: &str) -> usize {
        self.start(&Spec::named(name))
    }

    /// Starts `n` agents with fault injection on, each joining through the
    /// previous ones, and waits until all see all.
    pub fn with_agents(n: usize) -> Cluster {
        let mut c = Cluster::new();
        for i in 0..n {
            let mut spec = Spec::named(&format!("n{i}"));
            spec.args.push("--fault-injection".into());
            if i > 0 {
                spec.join = vec![c.agents[i - 1].info.gossip, c.agents[0].info.gossip];
                spec.token = Some(c.token());
            }
            c.start(&spec);
        }
        c.wait_all_alive(n, Duration::from_secs(60));
        c.wait_placement_members(n, Duration::from_secs(60));
        c
    }

    /// Waits until every running agent places tasks among `n` members
    /// (`placement_members` of `/v1/summary`): a job submitted before then
    /// can have two coordinators for a key, each placing it once.
    pub fn wait_placement_members(&mut self, n: usize, timeout: Duration) {
        let running = self.running();
        let agents = &self.agents;
        wait_until(
            &format!("{n} members on every placement ring"),
            timeout,
            || {
                for i in &running {
                    let s: serde_json::Value = agents[*i].get("/v1/summary")?;
                    let placing = s["placement_members"].as_u64().unwrap_or(0);
                    if placing != n as u64 {
                        bail!("{} places among {placing}", agents[*i].name);
                    }
                }
                Ok(true)
            },
        );
    }

    /// Starts `n` agents named `<prefix>0`, `<prefix>1`… with `args`,
    /// each joining through the first, and waits until all see all and
    /// every one places among all (a job submitted before could be placed
    /// twice, by two nodes that each think they coordinate its key).
    pub fn of(prefix: &str, n: usize, args: &[&str]) -> Cluster {
        let mut c = Cluster::new();
        for i in 0..n {
            let mut spec = Spec::named(&format!("{prefix}{i}"));
            spec.args = args.iter().map(|s| (*s).to_owned()).collect();
            if i > 0 {
                spec.join = vec![c.agents[0].info.gossip];
                spec.token = Some(c.token());
            }
            c.start(&spec);
        }
        c.wait_all_alive(n, Duration::from_secs(60));
        c.wait_placement_members(n, Duration::from_secs(60));
        c
    }

    /// Agents named and placed as `places` (name, `--dc`, `--zone`),
    /// each after the first joining it; waits until all are alive.
    pub fn placed(places: &[(&str, &str, &str)]) -> Cluster {
        let mut c = Cluster::new();
        for (i, (name, dc, zone)) in places.iter().enumerate() {
            let mut spec = Spec::named(name);
            spec.args = vec!["--dc".into(), (*dc).into(), "--zone".into(), (*zone).into()];
            if i > 0 {
                spec.join = vec![c.agents[0].info.gossip];
                spec.token = Some(c.token());
            }
            c.start(&spec);
        }
        c.wait_all_alive(places.len(), Duration::from_secs(60));
        c
    }

    /// The tasks of `job` as agent `via` reports them (none while the job
    /// has not reached that agent yet, or it does not answer).
    pub fn tasks(&self, via: usize, job: &str) -> Vec<serde_json::Value> {
        match self.agents[via].get_any(&format!("/v1/jobs/{}/tasks", job.replace('/', "%2F"))) {
            Ok((200, body)) => body.as_array().cloned().unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Starts `name`, joining through agent `via`.
    pub fn join(&mut self, name: &str, via: usize) -> usize {
        let spec = Spec {
            name: name.to_owned(),
            join: vec![self.agents[via].info.gossip],
            token: Some(self.token()),
            ..Default::default()
        };
        self.start(&spec)
    }

    /// Indexes of running agents.
    pub fn running(&mut self) -> Vec<usize> {
        (0..self.agents.len())
            .filter(|i| self.agents[*i].is_running())
            .collect()
    }

    /// Waits until every running agent reports every agent in `ids` in
    /// `state` (checked through `/v1/nodes`).
    pub fn wait_all_report(&mut self, ids: &[String], state: &str, timeout: Duration) {
        let running = self.running();
        self.wait_report_by(&running, ids, state, timeout);
    }

    /// Waits until each agent of `observers` reports every agent in `ids` in
    /// `state`.
    pub fn wait_report_by(
        &self,
        observers: &[usize],
        ids: &[String],
        state: &str,
        timeout: Duration,
    ) {
        let running = observers;
        let agents = &self.agents;
        let what = format!("every running agent to report {ids:?} {state}");
        wait_until(&what, timeout, || {
            for i in running {
                let nodes = agents[*i].nodes()?;
                for id in ids {
                    if &agents[*i].info.node_id == id {
                        continue;
                    }
                    let Some(n) = nodes.iter().find(|n| &n.id == id) else {
                        bail!("{} does not know {id}", agents[*i].name);
                    };
                    if n.state != state {
                        bail!("{} reports {id} {}", agents[*i].name, n.state);
                    }
                }
            }
            Ok(true)
        });
    }

    /// Waits until every running agent reports exactly `n` members alive,
    /// each with its metadata.
    pub fn wait_all_alive(&mut self, n: usize, timeout: Duration) {
        let running = self.running();
        let agents = &self.agents;
        wait_until(&format!("{n} members alive everywhere"), timeout, || {
            for i in &running {
                let nodes = agents[*i].nodes()?;
                let alive = nodes
                    .iter()
                    .filter(|x| x.state == "alive" && x.name.is_some())
                    .count();
                if alive != n {
                    bail!("{} sees {alive} alive", agents[*i].name);
                }
            }
            Ok(true)
        });
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for a in &self.agents {
                eprintln!(
                    "----- log of {} (last 40 lines) -----\n{}",
                    a.name,
                    a.log_tail(40)
                );
            }
        }
        // Every agent first, so that none starts anything meanwhile.
        for a in &mut self.agents {
            a.kill9();
        }
        let nodes: Vec<String> = self.agents.iter().map(|a| a.info.node_id.clone()).collect();
        clean_up(&[self.root.path()], &nodes);
        for a in &mut self.agents {
            a.cleaned = true;
        }
    }
}

/// Runs the `shoal` binary with `args` and `env`, returns (status, stdout,
/// stderr).
pub fn run_shoal(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let mut cmd = Command::new(shoal_bin());
    cmd.args(args)
        .env_remove("SHOAL_TOKEN")
        .env_remove("SHOAL_ADDR")
        .env_remove("SHOAL_CACERT")
        .env_remove("SHOAL_INSECURE");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("running shoal");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A seed for random choices: `SHOAL_TEST_SEED`, or one drawn from the
/// clock; printed so a failure can be replayed.
pub fn test_seed() -> u64 {
    let seed = std::env::var("SHOAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("test seed: {seed} (replay with SHOAL_TEST_SEED={seed})");
    seed
}

/// Runs `docker` with `args`: (success, stdout, stderr).
pub fn docker(args: &[&str]) -> (bool, String, String) {
    match Command::new("docker").args(args).output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), format!("cannot run docker: {e}")),
    }
}

/// Whether tests can use the local Docker engine with the test images
/// (`scripts/build-test-images.sh`, built once per test process, with the
/// agent image when `agent` is set); `Err` says why not, for the skip
/// message.
pub fn docker_images(agent: bool) -> Result<(), String> {
    static PLAIN: OnceLock<Result<(), String>> = OnceLock::new();
    static WITH_AGENT: OnceLock<Result<(), String>> = OnceLock::new();
    let cell = if agent { &WITH_AGENT } else { &PLAIN };
    cell.get_or_init(|| {
        let (ok, _, err) = docker(&["info", "--format", "{{.ServerVersion}}"]);
        if !ok {
            return Err(format!("no Docker engine answers: {}", err.trim()));
        }
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/build-test-images.sh");
        let mut cmd = Command::new(&script);
        if agent {
            cmd.arg("--agent").arg(shoal_bin());
        }
        let out = cmd
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} failed: {}",
                script.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    })
    .clone()
}

/// A marker unique to this test process, for `test`'s task processes
/// (their `SHOAL_TEST_MARKER`; see [`marked`]).
pub fn marker(test: &str) -> String {
    format!("shoaltest{}{}", test, std::process::id())
}

/// Kills, when dropped, every process [`marked`] with the marker: tasks
/// outlive agents on purpose, and a test must leave none.
pub struct KillMarked(pub String);

impl Drop for KillMarked {
    fn drop(&mut self) {
        for (pid, _) in marked(&self.0) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Pids of the processes whose environment has
/// `SHOAL_TEST_MARKER=<marker>`, with their task index (host-wide: task
/// processes of agents running in containers too).
pub fn marked(marker: &str) -> Vec<(i32, u32)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    let tag = format!("SHOAL_TEST_MARKER={marker}");
    for e in dir.filter_map(Result::ok) {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(env) = std::fs::read(e.path().join("environ")) else {
            continue;
        };
        let vars: Vec<String> = env
            .split(|b| *b == 0)
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        if !vars.contains(&tag) {
            continue;
        }
        let index = vars
            .iter()
            .find_map(|v| v.strip_prefix("SHOAL_TASK_INDEX="))
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        out.push((pid, index));
    }
    out
}

/// Processes carrying `marker`, counted by task index.
pub fn processes(marker: &str) -> std::collections::BTreeMap<u32, usize> {
    let mut out = std::collections::BTreeMap::new();
    for (_, i) in marked(marker) {
        *out.entry(i).or_default() += 1;
    }
    out
}

/// Exactly one process per index below `count`, and no other.
pub fn exactly_once(marker: &str, count: u32) -> bool {
    let p = processes(marker);
    p.len() == count as usize && p.values().all(|n| *n == 1) && p.keys().all(|i| *i < count)
}

/// A batch job whose every run appends `<index> <node>` to `runs` and
/// exits 0 (see [`runs_per_index`]).
pub fn appender(name: &str, count: u32, runs: &Path, marker: &str) -> serde_json::Value {
    serde_json::json!({
        "name": name,
        "type": "batch",
        "count": count,
        "task": {
            "runtime": "process",
            "command": "/bin/sh",
            "args": ["-c", format!("echo $SHOAL_TASK_INDEX $SHOAL_NODE >> {}", runs.display())],
            "env": {"SHOAL_TEST_MARKER": marker},
            "resources": {"cpus": 0.25, "memory_mb": 32}
        }
    })
}

/// Runs per index, from the file an [`appender`] job's tasks append to.
pub fn runs_per_index(path: &Path) -> std::collections::BTreeMap<u32, usize> {
    let mut out = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        if let Some(i) = line.split(' ').next().and_then(|i| i.parse().ok()) {
            *out.entry(i).or_default() += 1;
        }
    }
    out
}

/// Waits until every running agent says batch job `job` is `status`.
pub fn wait_job_status(c: &mut Cluster, job: &str, status: &str, timeout: Duration) {
    let running = c.running();
    let agents = &c.agents;
    wait_until(&format!("{job} {status} on every agent"), timeout, || {
        for i in &running {
            let (code, v) = agents[*i].get_any(&format!("/v1/jobs/{job}"))?;
            if code != 200 || v["status"] != status {
                bail!("{} says {code} {}", agents[*i].name, v["status"]);
            }
        }
        Ok(true)
    });
}
