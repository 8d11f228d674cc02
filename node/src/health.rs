//! Health checks of the tasks this node runs: the probing, which is I/O.
//! What a verdict means (grace, consecutive failures, a restart) is
//! decided by the node core (`NodeCore::handle_task_health`, the rule in
//! `shoal-placement`'s `placer/health.rs`), so the simulator, which feeds
//! verdicts of its own, decides alike.
//!
//! One tokio task per running task that has checks, started when the
//! runtime reports it running and aborted when it stops, is replaced or
//! restarts; inside it, one loop per check: probe at once, then every
//! `interval`, each probe bounded by `timeout`. A probe reads the task's
//! record (`task.json`, written by its runtime before it reports the task
//! running) for its host ports, its environment and the start it belongs
//! to; every verdict goes to the core task as a [`RuntimeEvent::Checked`].
//!
//! - `http`: `GET http://127.0.0.1:<host port><path>`; 2xx and 3xx pass
//!   (redirects are not followed).
//! - `tcp`: a connection to `127.0.0.1:<host port>`.
//! - `command`: `/bin/sh -c <command>`; exit code 0 passes. A process
//!   task's runs on the node in the task's environment and working dir,
//!   in a process group of its own that a timeout kills whole. A docker
//!   task's runs inside its container (`docker exec`, the container's
//!   environment; the image needs a `/bin/sh`); a timeout fails the probe
//!   but cannot kill the exec'd process (the engine has no API for it).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use shoal_model::{Check, CheckType};
use shoal_placement::{CHECK_OUTPUT_MAX, TaskKey, Verdict};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::debug;

use crate::docker::DockerRuntime;
use crate::runtime::{RuntimeEvent, TaskRecord, dir_name, read_record, task_env};

/// The probers of the tasks running here. Owned by the core task.
pub struct HealthChecks {
    tasks_dir: PathBuf,
    docker: Option<DockerRuntime>,
    node: String,
    host: String,
    secrets: Option<crate::secrets::Secrets>,
    events: mpsc::Sender<RuntimeEvent>,
    probers: BTreeMap<TaskKey, JoinHandle<()>>,
}

impl Drop for HealthChecks {
    fn drop(&mut self) {
        for (_, p) in std::mem::take(&mut self.probers) {
            p.abort();
        }
    }
}

impl HealthChecks {
    /// Probers for tasks kept under `tasks_dir` on node `node` (which
    /// advertises `host`), reporting to `events`; `docker` runs the
    /// command checks of docker tasks; `secrets` opens the secrets of the
    /// environment command checks of process tasks get.
    pub fn new(
        tasks_dir: PathBuf,
        docker: Option<DockerRuntime>,
        (node, host): (String, String),
        secrets: Option<crate::secrets::Secrets>,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> Self {
        HealthChecks {
            tasks_dir,
            docker,
            node,
            host,
            secrets,
            events,
            probers: BTreeMap::new(),
        }
    }

    /// `key`'s task runs (again): its checks start over, from its record.
    pub fn start(&mut self, key: &TaskKey) {
        self.stop(key);
        let dir = self.tasks_dir.join(dir_name(key));
        let (node, host) = (self.node.clone(), self.host.clone());
        let docker = self.docker.clone();
        let secrets = self.secrets.clone();
        let (events, task) = (self.events.clone(), key.clone());
        let prober = tokio::spawn(async move {
            let read = dir.clone();
            let record = tokio::task::spawn_blocking(move || read_record(&read))
                .await
                .ok()
                .flatten();
            let Some(record) = record.filter(|r| !r.spec.task.checks.is_empty()) else {
                return;
            };
            let mut loops = tokio::task::JoinSet::new();
            for (i, check) in record.spec.task.checks.iter().enumerate() {
                let probe = Probe {
                    key: task.clone(),
                    index: i,
                    check: check.clone(),
                    record: record.clone(),
                    dir: dir.clone(),
                    node: node.clone(),
                    host: host.clone(),
                    docker: docker.clone(),
                    secrets: secrets.clone(),
                };
                loops.spawn(probe.run(events.clone()));
            }
            // Aborting this task drops the set, which aborts every loop.
            while loops.join_next().await.is_some() {}
        });
        self.probers.insert(key.clone(), prober);
    }

    /// `key`'s task stopped, or is being replaced: no more probes of it.
    pub fn stop(&mut self, key: &TaskKey) {
        if let Some(p) = self.probers.remove(key) {
            p.abort();
        }
    }
}

/// One check of one start of a task.
struct Probe {
    key: TaskKey,
    index: usize,
    check: Check,
    record: TaskRecord,
    dir: PathBuf,
    node: String,
    host: String,
    docker: Option<DockerRuntime>,
    secrets: Option<crate::secrets::Secrets>,
}

impl Probe {
    async fn run(self, events: mpsc::Sender<RuntimeEvent>) {
        let (interval, timeout) = (self.check.interval(), self.check.timeout());
        loop {
            let (passed, output) = match tokio::time::timeout(timeout, self.probe(timeout)).await {
                Ok(r) => r,
                Err(_) => (
                    false,
                    format!("timed out after {}", humantime::format_duration(timeout)),
                ),
            };
            debug!(task = %self.key, check = self.index, passed, %output, "health check");
            let verdict = Verdict {
                job_version: self.record.job_version,
                attempt: self.record.restarts,
                check: self.index,
                passed,
                output: cut(output),
            };
            if events
                .send(RuntimeEvent::Checked(self.key.clone(), verdict))
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(interval).await;
        }
    }

    fn port(&self) -> Result<u16, String> {
        let name = self.check.port.as_deref().unwrap_or_default();
        self.record
            .ports
            .get(name)
            .copied()
            .ok_or_else(|| format!("the task has no host port named {name:?} (see its task.ports)"))
    }

    async fn probe(&self, timeout: Duration) -> (bool, String) {
        let port = match self.check.kind {
            CheckType::Command => 0,
            CheckType::Http | CheckType::Tcp => match self.port() {
                Ok(p) => p,
                Err(e) => return (false, e),
            },
        };
        match self.check.kind {
            CheckType::Tcp => match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(_) => (true, format!("connected to 127.0.0.1:{port}")),
                Err(e) => (false, format!("connect to 127.0.0.1:{port}: {e}")),
            },
            CheckType::Http => {
                let path = self.check.path.clone().unwrap_or_else(|| "/".into());
                http_get(format!("http://127.0.0.1:{port}{path}"), timeout).await
            }
            CheckType::Command => {
                let command = self.check.command.clone().unwrap_or_default();
                match &self.record.container {
                    Some(container) => self.exec(container, &command).await,
                    None => self.command(&command).await,
                }
            }
        }
    }

    /// Runs `command` with `/bin/sh -c` as the task runs: its environment,
    /// its working dir. The caller's timeout drops this future; the
    /// command's process group goes with it.
    async fn command(&self, command: &str) -> (bool, String) {
        let spec = &self.record.spec;
        let workdir = spec
            .task
            .workdir
            .as_ref()
            .map_or_else(|| self.dir.clone(), PathBuf::from);
        let job_env = match crate::secrets::resolve_env(self.secrets.as_ref(), &spec.task.env) {
            Ok(env) => env,
            Err(why) => return (false, why),
        };
        let mut cmd = tokio::process::Command::new("/bin/sh");
        cmd.arg("-c").arg(command).env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", &self.dir)
            .envs(task_env(
                job_env,
                &self.key,
                &self.node,
                &self.host,
                &self.dir,
                &self.record.ports,
            ))
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return (false, format!("cannot run /bin/sh: {e}")),
        };
        let group = child.id().and_then(|p| i32::try_from(p).ok());
        let _kill = KillGroup(group);
        match child.wait_with_output().await {
            Ok(out) => {
                let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&out.stderr));
                exited(out.status.code().map(i64::from), &text)
            }
            Err(e) => (false, format!("cannot wait for the command: {e}")),
        }
    }

    /// Runs `command` inside the task's container.
    async fn exec(&self, container: &str, command: &str) -> (bool, String) {
        let Some(docker) = &self.docker else {
            return (
                false,
                "no Docker runtime on this node to run the check".into(),
            );
        };
        match docker.exec(container, command, 4 * CHECK_OUTPUT_MAX).await {
            Ok((code, text)) => exited(code, &text),
            Err(e) => (false, e),
        }
    }
}

/// A command check's verdict from its exit code (none: killed) and output.
fn exited(code: Option<i64>, text: &str) -> (bool, String) {
    let text = text.trim();
    match code {
        Some(0) if text.is_empty() => (true, "exit 0".into()),
        Some(0) => (true, text.to_owned()),
        Some(c) if text.is_empty() => (false, format!("exit {c}")),
        Some(c) => (false, format!("exit {c}: {text}")),
        None => (false, "killed by a signal".into()),
    }
}

/// Kills a command check's process group when the probe ends, however it
/// ends (a timeout drops the probe).
struct KillGroup(Option<i32>);

impl Drop for KillGroup {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// One `GET` (ureq, on a blocking thread), redirects not followed.
async fn http_get(url: String, timeout: Duration) -> (bool, String) {
    let got = tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(timeout))
            .build()
            .into();
        match agent.get(&url).call() {
            Ok(r) => {
                let status = r.status();
                let passed = status.is_success() || status.is_redirection();
                (passed, format!("HTTP {status}"))
            }
            Err(e) => (false, format!("GET {url}: {e}")),
        }
    })
    .await;
    got.unwrap_or_else(|e| (false, format!("the probe failed: {e}")))
}

fn cut(s: String) -> String {
    if s.len() <= CHECK_OUTPUT_MAX {
        return s;
    }
    let mut end = CHECK_OUTPUT_MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}
