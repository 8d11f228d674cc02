//! The process runtime: tasks as plain processes.
//!
//! Each task runs in `<data-dir>/tasks/<task>/` (its sandbox: working dir by
//! default, `stdout.log` and `stderr.log`, `task.json`), in its own process
//! group, in its own cgroup when the host has them (see [`crate::cgroups`]),
//! with `SHOAL_TASK_ID`, `SHOAL_JOB`, `SHOAL_TASK_INDEX`, `SHOAL_NODE`,
//! `SHOAL_TASK_DIR`, `SHOAL_HOST` (the node's advertised address) and a
//! `SHOAL_PORT_<NAME>` per named port (a host port from the node's pool,
//! [`HostPorts`], which the docker runtime shares) added to the job's
//! environment.
//!
//! The agent does not exec the command itself: it starts its own binary as
//! `shoal __exec`, which joins the task's cgroups and then becomes the
//! command (`exec`), so that nothing the task starts escapes its limits; a
//! command that cannot be started is reported as such.
//!
//! The task's stdout and stderr are pipes into its log shipper (`shoal
//! __log`, see [`crate::tasklog`]), a small process the agent starts per
//! task in a process group of its own: it writes `stdout.log` and
//! `stderr.log` and rotates them by rename at [`LOG_MAX_BYTES`], losing
//! nothing, and it lives as long as the task's pipes, agent or no agent.
//!
//! Stopping sends SIGTERM to the whole group, waits a grace period, then
//! SIGKILLs it. Tasks outlive the agent: after a restart, [`scan`] finds
//! those still running (by pid and process start time) so they can be
//! adopted, and cleans up the rest.
//!
//! [`scan`]: ProcessRuntime::scan

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use shoal_model::JobSpec;
use shoal_placement::{Adopted, ExitReason, Slot, Stamp, TaskKey};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::cgroups::{Isolation, TaskGroup};
use crate::ports::{HostPorts, PortError};
use crate::tasklog::LOG_KEEP;
pub use crate::tasklog::LOG_MAX_BYTES;
use crate::tasktable::{Ended, TaskTable};

/// How long a task's end waits for its log shipper to write the last of
/// its output.
const LOG_DRAIN: Duration = Duration::from_secs(2);
/// Process-count limit per task.
const PIDS_MAX: u64 = 4096;

/// What the runtime tells the placement task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuntimeEvent {
    /// The task's process runs, with these host ports (by port name).
    Running(TaskKey, BTreeMap<String, u16>),
    /// It ended.
    Exited(TaskKey, ExitReason),
    /// One of its health checks said this (see [`crate::health`]).
    Checked(TaskKey, shoal_placement::Verdict),
}

/// `task.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TaskRecord {
    /// `job/index` or `job@node`.
    pub task: String,
    /// The award.
    pub stamp: Stamp,
    /// Job version.
    pub job_version: u64,
    /// What runs.
    pub spec: JobSpec,
    /// Restarts so far.
    pub restarts: u32,
    /// Process id while running.
    pub pid: Option<i32>,
    /// The process's start time (clock ticks since boot, from
    /// `/proc/<pid>/stat`), to tell it from a recycled pid.
    pub pid_start: Option<u64>,
    /// Started (ms since the Unix epoch).
    pub started_ms: u64,
    /// Container id while running (docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    /// Host port of each named port.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u16>,
}

impl TaskRecord {
    /// The task as the placer adopts it after an agent restart: running
    /// (with its ports), or `ended` while the agent was away (it holds no
    /// port any more).
    pub fn adopted(&self, key: TaskKey, ended: bool) -> Adopted {
        Adopted {
            key,
            stamp: self.stamp,
            job_version: self.job_version,
            spec: Arc::new(self.spec.clone()),
            restarts: self.restarts,
            since_ms: self.started_ms,
            ports: if ended {
                BTreeMap::new()
            } else {
                self.ports.clone()
            },
            ended,
        }
    }
}

/// What every task runtime does. The placement task drives them through
/// [`Runtimes`], which picks one by the task's `runtime`; each reports
/// through the same [`RuntimeEvent`] channel and keeps its task's logs in
/// the same sandbox files.
pub trait Runtime: Send + Sync {
    /// Its name in gossip and job specs (`process`, `docker`).
    fn name(&self) -> &'static str;
    /// Starts (or restarts, replacing what runs) a task in the background;
    /// progress comes as events.
    fn start(&self, key: TaskKey, spec: Arc<JobSpec>, job_version: u64, stamp: Stamp, attempt: u32);
    /// Stops a task; its end comes as an event (at once when it does not
    /// run here).
    fn stop(&self, key: &TaskKey);
    /// Stops a task without reporting its end: it moves to another runtime.
    fn retire(&self, key: &TaskKey);
    /// Whether it runs the task now.
    fn holds(&self, key: &TaskKey) -> bool;
    /// Tasks running now.
    fn running(&self) -> Vec<TaskKey>;
}

struct Inner {
    tasks_dir: PathBuf,
    isolation: Isolation,
    shim: PathBuf,
    node: String,
    events: mpsc::Sender<RuntimeEvent>,
    /// Running tasks; the handle is the process (group) id.
    table: TaskTable<i32>,
    stop_grace: Duration,
    /// The node's host ports, shared with the docker runtime.
    ports: HostPorts,
    /// The address the node advertises (`SHOAL_HOST`).
    host: String,
    secrets: Option<crate::secrets::Secrets>,
}

/// Runs tasks as processes. Cheap to clone.
#[derive(Clone)]
pub struct ProcessRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("isolation", &self.inner.isolation)
            .finish_non_exhaustive()
    }
}

/// Writes a task's `[[task.files]]` into its sandbox `dir` (parents
/// made, each file replaced whole); the error names the file.
fn write_files(dir: &Path, files: &[shoal_model::TaskFile]) -> Result<(), String> {
    for (i, f) in files.iter().enumerate() {
        let path = dir.join(&f.path);
        let written = path
            .parent()
            .map_or(Ok(()), fs::create_dir_all)
            .and_then(|()| fs::write(&path, &f.content));
        if let Err(e) = written {
            return Err(format!(
                "task.files[{i}] ({}): cannot write {}: {e}",
                f.path,
                path.display()
            ));
        }
    }
    Ok(())
}

/// The sandbox dir name of a task: `/` becomes `_` (job names have no `_`).
pub fn dir_name(key: &TaskKey) -> String {
    key.to_string().replace('/', "_")
}

fn pid_start(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')')?.1;
    // Field 22 of the whole line, the 20th after the command name.
    after.split_whitespace().nth(19)?.parse().ok()
}

fn alive(pid: i32, start: Option<u64>) -> bool {
    kill(Pid::from_raw(pid), None).is_ok() && (start.is_none() || pid_start(pid) == start)
}

fn now_ms() -> u64 {
    crate::clock::unix_ms()
}

/// How a process task's environment and ports are set up, besides its spec.
#[derive(Clone, Debug)]
pub struct ProcessSettings {
    /// Where the node keeps its state; tasks go under `tasks/`.
    pub data_dir: PathBuf,
    /// How tasks are isolated.
    pub isolation: Isolation,
    /// This node's name (`SHOAL_NODE`).
    pub node: String,
    /// Between SIGTERM and SIGKILL.
    pub stop_grace: Duration,
    /// The node's host ports, shared with the docker runtime.
    pub ports: HostPorts,
    /// The address the node advertises (`SHOAL_HOST`).
    pub host: String,
    /// Opens the secrets tasks' environments refer to.
    pub secrets: Option<crate::secrets::Secrets>,
}

/// What a task that could not get its ports reports: a static port taken
/// on this host sends it elsewhere; a range used up is a start failure.
pub(crate) fn port_failure(e: PortError) -> ExitReason {
    match e {
        PortError::InUse { port, .. } => ExitReason::PortInUse {
            port,
            reason: e.to_string(),
        },
        other => ExitReason::StartFailed(other.to_string()),
    }
}

impl ProcessRuntime {
    /// A runtime keeping tasks under `data_dir/tasks`.
    pub fn new(
        settings: ProcessSettings,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> std::io::Result<ProcessRuntime> {
        let ProcessSettings {
            data_dir,
            isolation,
            node,
            stop_grace,
            ports,
            host,
            secrets,
        } = settings;
        let tasks_dir = data_dir.join("tasks");
        fs::create_dir_all(&tasks_dir)?;
        let shim = std::env::current_exe()?;
        Ok(ProcessRuntime {
            inner: Arc::new(Inner {
                tasks_dir,
                isolation,
                shim,
                node,
                events,
                table: TaskTable::new(),
                stop_grace,
                ports,
                host,
                secrets,
            }),
        })
    }

    /// How tasks are isolated.
    pub fn isolation(&self) -> &Isolation {
        &self.inner.isolation
    }

    /// The sandbox of a task.
    pub fn task_dir(&self, key: &TaskKey) -> PathBuf {
        self.inner.tasks_dir.join(dir_name(key))
    }

    async fn run(
        &self,
        key: TaskKey,
        spec: Arc<JobSpec>,
        job_version: u64,
        stamp: Stamp,
        attempt: u32,
    ) {
        // A process still there for this task is replaced: stopped first,
        // its end unreported.
        if let Some((old, pid)) = self.inner.table.retire(&key) {
            self.terminate(&key, old, pid).await;
        }
        let generation = self.inner.table.begin(&key, None);
        let dir = self.task_dir(&key);
        let name = dir_name(&key);
        let fail = |why: String| {
            self.inner.table.forget(&key, generation);
            RuntimeEvent::Exited(key.clone(), ExitReason::StartFailed(why))
        };
        if let Err(e) = fs::create_dir_all(&dir) {
            let _ = self
                .inner
                .events
                .send(fail(format!("cannot create {}: {e}", dir.display())))
                .await;
            return;
        }
        let ports = match self.inner.ports.allocate(&spec.task.ports) {
            Ok(p) => p,
            Err(e) => {
                self.inner.table.forget(&key, generation);
                let _ = self
                    .inner
                    .events
                    .send(RuntimeEvent::Exited(key.clone(), port_failure(e)))
                    .await;
                return;
            }
        };
        // From here on, a start that fails gives its ports back.
        let fail = |why: String| {
            self.inner.ports.give_back(&ports);
            fail(why)
        };
        // Secrets are opened here, into the process's environment only:
        // never into the task record or any other file.
        let job_env = match crate::secrets::resolve_env(self.inner.secrets.as_ref(), &spec.task.env)
        {
            Ok(env) => env,
            Err(why) => {
                let _ = self.inner.events.send(fail(why)).await;
                return;
            }
        };
        let error_file = dir.join("start-error");
        let _ = fs::remove_file(&error_file);
        let isolation = self.inner.isolation.clone();
        let demand = shoal_placement::Resources::of_task(&spec.task.resources);
        let group = tokio::task::spawn_blocking(move || -> std::io::Result<Option<TaskGroup>> {
            let g = isolation.create(&name)?;
            if let Some(g) = &g {
                g.limit(demand.cpus_milli, demand.memory_mb, PIDS_MAX)?;
            }
            Ok(g)
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(e.to_string())));
        let group = match group {
            Ok(g) => g,
            Err(e) => {
                let _ = self
                    .inner
                    .events
                    .send(fail(format!("cannot set up its cgroup: {e}")))
                    .await;
                return;
            }
        };
        let Some(command) = spec.task.command.clone() else {
            if let Some(g) = group {
                let _ = tokio::task::spawn_blocking(move || g.remove()).await;
            }
            let _ = self
                .inner
                .events
                .send(fail("the task has no command".into()))
                .await;
            return;
        };
        let (shipper, stdout, stderr) = match self.start_shipper(&dir) {
            Ok(s) => s,
            Err(e) => {
                if let Some(g) = group {
                    let _ = tokio::task::spawn_blocking(move || g.remove()).await;
                }
                let _ = self
                    .inner
                    .events
                    .send(fail(format!("cannot start its log shipper: {e}")))
                    .await;
                return;
            }
        };
        // Reaped whatever happens; the task's end waits for it a moment.
        let mut shipped = tokio::spawn(reap(shipper));
        let workdir = spec
            .task
            .workdir
            .as_ref()
            .map_or_else(|| dir.clone(), PathBuf::from);
        let mut cmd = tokio::process::Command::new(&self.inner.shim);
        cmd.arg("__exec").arg("--error-file").arg(&error_file);
        if let Some(g) = &group {
            for f in g.procs_files() {
                cmd.arg("--cgroup").arg(f);
            }
        }
        cmd.arg("--").arg(&command).args(&spec.task.args);
        cmd.env_clear();
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd.env("HOME", &dir)
            .envs(task_env(
                job_env,
                &key,
                &self.inner.node,
                &self.inner.host,
                &dir,
                &ports,
            ))
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            .kill_on_drop(false);
        let spawned = cmd.spawn();
        // The task holds the write ends of its pipes now; the agent must
        // not, or the shipper would never see them close.
        drop(cmd);
        let mut child = match spawned {
            Ok(c) => c,
            Err(e) => {
                if let Some(g) = group {
                    let _ = tokio::task::spawn_blocking(move || g.remove()).await;
                }
                let _ = self
                    .inner
                    .events
                    .send(fail(format!("cannot run {}: {e}", workdir.display())))
                    .await;
                return;
            }
        };
        let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
        if self.inner.table.started(&key, generation, pid) {
            // Told to stop while it was being started.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let record = TaskRecord {
            task: key.to_string(),
            stamp,
            job_version,
            spec: (*spec).clone(),
            restarts: attempt,
            pid: Some(pid),
            pid_start: pid_start(pid),
            started_ms: now_ms(),
            container: None,
            ports: ports.clone(),
        };
        write_record(&dir, &record);
        debug!(task = %key, pid, "task started");
        let _ = self
            .inner
            .events
            .send(RuntimeEvent::Running(key.clone(), ports.clone()))
            .await;
        let status = child.wait().await;
        let Ended { stopping, replaced } = self.inner.table.end(&key, generation);
        // Nothing of the task outlives it.
        let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        self.inner.ports.give_back(&ports);
        // Its last output reaches the files before its end is told (a
        // process that left the group may hold the pipes longer: the
        // shipper then goes on with it).
        let _ = tokio::time::timeout(LOG_DRAIN, &mut shipped).await;
        let inner = self.inner.clone();
        let this_key = key.clone();
        let oom = match group.clone() {
            Some(g) => tokio::task::spawn_blocking(move || {
                let oom = g.oom_killed();
                // A newer start of the task (a restart that replaced this
                // one while it ended) uses the same group name and has
                // begun, so it may have made the group already: removing
                // it then would make that start fail to join it ("cannot
                // join cgroup … No such file"). The newer start's end
                // removes it.
                if !inner.table.holds(&this_key) {
                    g.remove();
                }
                oom
            })
            .await
            .unwrap_or(false),
            None => false,
        };
        let start_error = fs::read_to_string(&error_file).ok();
        let reason = if let Some(e) = start_error {
            ExitReason::StartFailed(e.trim().to_owned())
        } else if stopping {
            ExitReason::Stopped
        } else if oom {
            ExitReason::Oom
        } else {
            use std::os::unix::process::ExitStatusExt;
            match status {
                Ok(s) => match (s.code(), s.signal()) {
                    (Some(c), _) => ExitReason::Exited(c),
                    (None, Some(sig)) => ExitReason::Signaled(sig),
                    (None, None) => ExitReason::Exited(-1),
                },
                Err(e) => ExitReason::StartFailed(format!("cannot wait for it: {e}")),
            }
        };
        let mut record = record;
        record.pid = None;
        record.pid_start = None;
        write_record(&dir, &record);
        debug!(task = %key, ?reason, replaced, "task ended");
        if !replaced {
            let _ = self
                .inner
                .events
                .send(RuntimeEvent::Exited(key, reason))
                .await;
        }
    }

    /// Starts the log shipper of the task sandboxed in `dir`: its
    /// descriptors 0 and 1 are the read ends of the task's stdout and
    /// stderr pipes (see [`crate::tasklog::ship`]); returns it and the
    /// write ends, for the task.
    fn start_shipper(
        &self,
        dir: &Path,
    ) -> std::io::Result<(
        tokio::process::Child,
        std::io::PipeWriter,
        std::io::PipeWriter,
    )> {
        let (out_read, out_write) = std::io::pipe()?;
        let (err_read, err_write) = std::io::pipe()?;
        let shipper = tokio::process::Command::new(&self.inner.shim)
            .arg("__log")
            .arg("--dir")
            .arg(dir)
            .arg("--max-bytes")
            .arg(LOG_MAX_BYTES.to_string())
            .arg("--keep")
            .arg(LOG_KEEP.to_string())
            .env_clear()
            .env("SHOAL_TASK_DIR", dir)
            .current_dir(dir)
            .stdin(Stdio::from(out_read))
            .stdout(Stdio::from(err_read))
            .stderr(Stdio::null())
            // Not in the task's group (a stop must not cut its output
            // short), nor in the agent's (it outlives the agent).
            .process_group(0)
            .kill_on_drop(false)
            .spawn()?;
        Ok((shipper, out_write, err_write))
    }

    /// SIGTERM to the group of start `generation`, SIGKILL after the grace
    /// period; returns once it is gone (or the entry changed).
    async fn terminate(&self, key: &TaskKey, generation: u64, pid: Option<i32>) {
        let gone = || self.inner.table.gone(key, generation);
        if let Some(pid) = pid {
            let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let deadline = tokio::time::Instant::now() + self.inner.stop_grace;
        while tokio::time::Instant::now() < deadline {
            if gone() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        if let Some(pid) = pid {
            warn!(task = %key, "task did not stop within the grace period; killing it");
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline && !gone() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After an agent restart: tasks still running are returned (to be
    /// adopted) and watched; the sandboxes of dead ones stay for their logs.
    pub fn scan(&self) -> Vec<Adopted> {
        let mut adopted = Vec::new();
        let Ok(entries) = fs::read_dir(&self.inner.tasks_dir) else {
            return adopted;
        };
        for entry in entries.filter_map(Result::ok) {
            let dir = entry.path();
            let Some(record) = read_record(&dir) else {
                continue;
            };
            let Some(key) = TaskKey::parse(&record.task) else {
                continue;
            };
            let Some(pid) = record.pid else { continue };
            if !alive(pid, record.pid_start) {
                // Died while the agent was away: clean its group.
                if let Some(g) = self.inner.isolation.existing(&dir_name(&key)) {
                    g.remove();
                }
                let mut r = record.clone();
                r.pid = None;
                write_record(&dir, &r);
                // A service's or a system job's task (the machine rebooted,
                // say) is held again and restarted by its policy, so that a
                // node back with no network runs its own tasks; a batch
                // task may have completed, and is left to its coordinator.
                if record.spec.kind != shoal_model::JobType::Batch {
                    info!(task = %key, "found a task that ended while the agent was away; restarting it");
                    adopted.push(record.adopted(key, true));
                }
                continue;
            }
            info!(task = %key, pid, "found a task still running; adopting it");
            let generation = self.inner.table.begin(&key, Some(pid));
            self.inner.ports.hold(&record.ports);
            adopted.push(record.adopted(key.clone(), false));
            self.watch_adopted(key, generation, pid, record.pid_start, dir, record.ports);
        }
        adopted
    }

    /// An adopted task is not a child of this agent: poll it.
    fn watch_adopted(
        &self,
        key: TaskKey,
        generation: u64,
        pid: i32,
        start: Option<u64>,
        dir: PathBuf,
        ports: BTreeMap<String, u16>,
    ) {
        let this = self.clone();
        tokio::spawn(async move {
            while alive(pid, start) {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let Ended { stopping, replaced } = this.inner.table.end(&key, generation);
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            this.inner.ports.give_back(&ports);
            let name = dir_name(&key);
            let isolation = this.inner.isolation.clone();
            let oom = tokio::task::spawn_blocking(move || {
                isolation.existing(&name).is_some_and(|g| {
                    let oom = g.oom_killed();
                    g.remove();
                    oom
                })
            })
            .await
            .unwrap_or(false);
            if let Some(mut r) = read_record(&dir) {
                r.pid = None;
                write_record(&dir, &r);
            }
            let reason = if stopping {
                ExitReason::Stopped
            } else if oom {
                ExitReason::Oom
            } else {
                ExitReason::Unknown
            };
            if !replaced {
                let _ = this
                    .inner
                    .events
                    .send(RuntimeEvent::Exited(key, reason))
                    .await;
            }
        });
    }
}

impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start(
        &self,
        key: TaskKey,
        spec: Arc<JobSpec>,
        job_version: u64,
        stamp: Stamp,
        attempt: u32,
    ) {
        // Held from now on: a stop before the start begins is kept for it.
        self.inner.table.will_start(&key);
        let this = self.clone();
        tokio::spawn(async move {
            this.run(key, spec, job_version, stamp, attempt).await;
        });
    }

    /// SIGTERM to the task's group, then SIGKILL after the grace period.
    fn stop(&self, key: &TaskKey) {
        let Some((generation, pid)) = self.inner.table.stopping(key) else {
            // Not running (between restarts, or never started): tell the
            // placer at once.
            report_stopped(&self.inner.events, key);
            return;
        };
        // Still spawning: the start sees `stopping` and terminates it.
        if pid.is_some() {
            let this = self.clone();
            let key = key.clone();
            tokio::spawn(async move { this.terminate(&key, generation, pid).await });
        }
    }

    fn retire(&self, key: &TaskKey) {
        if let Some((generation, pid)) = self.inner.table.retire(key) {
            let this = self.clone();
            let key = key.clone();
            tokio::spawn(async move { this.terminate(&key, generation, pid).await });
        }
    }

    fn holds(&self, key: &TaskKey) -> bool {
        self.inner.table.holds(key)
    }

    fn running(&self) -> Vec<TaskKey> {
        self.inner.table.keys()
    }
}

/// A task running on this node, as its runtime knows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalTask {
    /// Container id (docker).
    pub container: Option<String>,
    /// Host port of each named port.
    pub ports: BTreeMap<String, u16>,
}

/// Every runtime of this node: the process runtime always, Docker when the
/// engine answered at start-up. Tasks go to the one their spec names; logs
/// live in the same sandbox files for both. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Runtimes {
    tasks_dir: PathBuf,
    process: ProcessRuntime,
    docker: Option<crate::docker::DockerRuntime>,
    events: mpsc::Sender<RuntimeEvent>,
    artifacts: Option<crate::artifacts::Artifacts>,
    /// Tasks whose artifacts are being fetched, with the generation of
    /// that start (a stop or a newer start makes it moot).
    preparing: Arc<std::sync::Mutex<(u64, BTreeMap<TaskKey, u64>)>>,
}

impl Runtimes {
    /// The runtimes of a node.
    pub fn new(
        process: ProcessRuntime,
        docker: Option<crate::docker::DockerRuntime>,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> Runtimes {
        Runtimes {
            tasks_dir: process.inner.tasks_dir.clone(),
            process,
            docker,
            events,
            artifacts: None,
            preparing: Arc::default(),
        }
    }

    /// Fetches tasks' `[[task.artifacts]]` into their sandboxes with
    /// `artifacts` before they start.
    pub fn with_artifacts(mut self, artifacts: crate::artifacts::Artifacts) -> Runtimes {
        self.artifacts = Some(artifacts);
        self
    }

    fn preparing(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<TaskKey, u64>)> {
        self.preparing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The process runtime.
    pub fn process(&self) -> &ProcessRuntime {
        &self.process
    }

    /// The Docker runtime, when this node has one.
    pub fn docker(&self) -> Option<&crate::docker::DockerRuntime> {
        self.docker.as_ref()
    }

    fn all(&self) -> Vec<&dyn Runtime> {
        let mut all: Vec<&dyn Runtime> = vec![&self.process];
        if let Some(d) = &self.docker {
            all.push(d);
        }
        all
    }

    /// Starts a task on the runtime its spec names (retiring what runs for
    /// it on another one).
    pub fn start(
        &self,
        key: TaskKey,
        spec: Arc<JobSpec>,
        job_version: u64,
        stamp: Stamp,
        attempt: u32,
    ) {
        let wanted = spec.task.runtime.as_str();
        let Some(target) = self.all().into_iter().find(|r| r.name() == wanted) else {
            let events = self.events.clone();
            let why = format!("this node has no {wanted} runtime");
            tokio::spawn(async move {
                let _ = events
                    .send(RuntimeEvent::Exited(key, ExitReason::StartFailed(why)))
                    .await;
            });
            return;
        };
        for other in self.all() {
            if other.name() != wanted && other.holds(&key) {
                other.retire(&key);
            }
        }
        if spec.task.artifacts.is_empty() && spec.task.files.is_empty() {
            target.start(key, spec, job_version, stamp, attempt);
            return;
        }
        let artifacts = self.artifacts.clone();
        // The artifacts and files first, then the runtime's start; a stop
        // (or a newer start) meanwhile makes this one moot.
        let generation = {
            let mut p = self.preparing();
            p.0 += 1;
            let g = p.0;
            p.1.insert(key.clone(), g);
            g
        };
        let this = self.clone();
        let dir = self.tasks_dir.join(dir_name(&key));
        tokio::spawn(async move {
            let prepared = match fs::create_dir_all(&dir) {
                Ok(()) => match &artifacts {
                    _ if spec.task.artifacts.is_empty() => Ok(()),
                    Some(a) => a.prepare(&dir, &spec.task.artifacts).await,
                    None => Err("this node has no artifact store to fetch task.artifacts".into()),
                }
                .and_then(|()| write_files(&dir, &spec.task.files)),
                Err(e) => Err(format!("cannot create {}: {e}", dir.display())),
            };
            {
                let mut p = this.preparing();
                if p.1.get(&key) != Some(&generation) {
                    return;
                }
                p.1.remove(&key);
            }
            match prepared {
                Ok(()) => {
                    let wanted = spec.task.runtime.as_str();
                    if let Some(target) = this.all().into_iter().find(|r| r.name() == wanted) {
                        target.start(key, spec, job_version, stamp, attempt);
                    }
                }
                Err(why) => {
                    warn!(task = %key, reason = %why, "the sandbox could not be prepared");
                    let _ = this
                        .events
                        .send(RuntimeEvent::Exited(key, ExitReason::StartFailed(why)))
                        .await;
                }
            }
        });
    }

    /// Stops a task wherever it runs. One that runs nowhere here is
    /// reported stopped at once, and when it was (or may have been) a
    /// container, any container of it left on the engine is removed.
    pub fn stop(&self, key: &TaskKey) {
        // Still fetching its artifacts: it will not start.
        self.preparing().1.remove(key);
        match self.all().into_iter().find(|r| r.holds(key)) {
            Some(r) => r.stop(key),
            None => {
                self.process.stop(key);
                let record = read_record(&self.tasks_dir.join(dir_name(key)));
                if let Some(d) = &self.docker
                    && record.is_none_or(|r| r.spec.task.runtime.as_str() == d.name())
                {
                    d.remove_leftovers(key);
                }
            }
        }
    }

    /// Tasks running now, on any runtime.
    pub fn running(&self) -> Vec<TaskKey> {
        self.all().iter().flat_map(|r| r.running()).collect()
    }

    /// Container and ports of a task running here.
    pub fn local_info(&self, key: &TaskKey) -> Option<LocalTask> {
        let (container, ports) = self.docker.as_ref()?.local_info(key)?;
        Some(LocalTask {
            container: Some(container),
            ports,
        })
    }

    /// Reads up to `max` bytes of a task's log from stream offset `offset`
    /// (offsets run on across rotations; one whose bytes were dropped
    /// with the oldest file, or one past the end, reads from the oldest
    /// byte kept: see [`crate::tasklog`]). Returns the bytes, the offset to
    /// read from next, and the offset of the end of the log.
    pub fn read_log(
        &self,
        key: &TaskKey,
        stderr: bool,
        offset: u64,
        max: u64,
    ) -> std::io::Result<(Vec<u8>, u64, u64)> {
        let path = self.tasks_dir.join(dir_name(key)).join(if stderr {
            "stderr.log"
        } else {
            "stdout.log"
        });
        let piece = crate::tasklog::read(&path, offset, max)?;
        Ok((piece.data, piece.next, piece.size))
    }

    /// Rotates the logs of running tasks that grew past `max` bytes, where
    /// the agent writes them (containers' logs). A process task's log
    /// shipper rotates its files itself, at [`LOG_MAX_BYTES`], whether the
    /// agent runs or not.
    pub fn rotate_logs(&self, max: u64) {
        if let Some(d) = &self.docker {
            d.rotate_logs(max);
        }
    }
}

/// Waits for a process the agent started (so that it leaves no zombie).
async fn reap(mut child: tokio::process::Child) {
    let _ = child.wait().await;
}

/// Tells the placer a task it asked to stop does not run here.
pub(crate) fn report_stopped(events: &mpsc::Sender<RuntimeEvent>, key: &TaskKey) {
    let events = events.clone();
    let key = key.clone();
    tokio::spawn(async move {
        let _ = events
            .send(RuntimeEvent::Exited(key, ExitReason::Stopped))
            .await;
    });
}

pub(crate) fn write_record(dir: &Path, record: &TaskRecord) {
    let tmp = dir.join(".task.json.tmp");
    if let Ok(bytes) = serde_json::to_vec_pretty(record)
        && fs::write(&tmp, bytes).is_ok()
    {
        let _ = fs::rename(&tmp, dir.join("task.json"));
    }
}

pub(crate) fn read_record(dir: &Path) -> Option<TaskRecord> {
    serde_json::from_slice(&fs::read(dir.join("task.json")).ok()?).ok()
}

/// `shoal __exec --error-file F [--cgroup P]… -- COMMAND ARGS…`: joins the
/// cgroups, then becomes COMMAND. Run by the agent, not by people.
pub fn exec_shim(args: &[String]) -> std::process::ExitCode {
    use std::os::unix::process::CommandExt;
    let mut error_file: Option<PathBuf> = None;
    let mut groups: Vec<PathBuf> = Vec::new();
    let mut i = 0;
    while i < args.len() {
        match args[i].as_str() {
            "--error-file" if i + 1 < args.len() => {
                error_file = Some(PathBuf::from(&args[i + 1]));
                i += 2;
            }
            "--cgroup" if i + 1 < args.len() => {
                groups.push(PathBuf::from(&args[i + 1]));
                i += 2;
            }
            "--" => {
                i += 1;
                break;
            }
            _ => break,
        }
    }
    let fail = |msg: String| {
        if let Some(f) = &error_file {
            let _ = fs::write(f, &msg);
        }
        #[allow(clippy::print_stderr)]
        {
            eprintln!("shoal: {msg}");
        }
        std::process::ExitCode::from(127)
    };
    let Some(command) = args.get(i) else {
        return fail("no command given".into());
    };
    let pid = std::process::id().to_string();
    for g in &groups {
        if let Err(e) = fs::write(g, &pid) {
            return fail(format!("cannot join cgroup {}: {e}", g.display()));
        }
    }
    let err = std::process::Command::new(command)
        .args(&args[i + 1..])
        .exec();
    fail(format!("cannot run {command}: {err}"))
}

/// The variables shoal adds to a process task's own environment (and to
/// its command checks'): the job's `env` (`job_env`, secrets opened), `SHOAL_TASK_ID`, `SHOAL_JOB`,
/// `SHOAL_TASK_INDEX`, `SHOAL_NODE`, `SHOAL_TASK_DIR`, `SHOAL_HOST` and
/// `SHOAL_PORT_<NAME>` for each host port in `ports`.
pub(crate) fn task_env(
    job_env: Vec<(String, String)>,
    key: &TaskKey,
    node: &str,
    host: &str,
    dir: &Path,
    ports: &BTreeMap<String, u16>,
) -> Vec<(String, String)> {
    let mut env = job_env;
    let index = match &key.slot {
        Slot::Index(i) => i.to_string(),
        Slot::Node(_) => "0".into(),
    };
    env.extend([
        ("SHOAL_TASK_ID".to_owned(), key.to_string()),
        ("SHOAL_JOB".to_owned(), key.job.clone()),
        ("SHOAL_TASK_INDEX".to_owned(), index),
        ("SHOAL_NODE".to_owned(), node.to_owned()),
        ("SHOAL_TASK_DIR".to_owned(), dir.display().to_string()),
        ("SHOAL_HOST".to_owned(), host.to_owned()),
    ]);
    for (name, port) in ports {
        env.push((
            format!("SHOAL_PORT_{}", shoal_model::port_env_name(name)),
            port.to_string(),
        ));
    }
    env
}
