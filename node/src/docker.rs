//! The Docker runtime: tasks as containers of the local Docker engine
//! (through bollard).
//!
//! Every container carries the labels `shoal.task`, `shoal.job` and
//! `shoal.node` (this node's id), the task's limits (`NanoCpus`, `Memory`
//! with no extra swap, `PidsLimit`), its environment plus the same
//! `SHOAL_*` variables as a process task, and one host port per declared
//! port, from the node's pool ([`HostPorts`]: its static port or one of the
//! node's range), passed as `SHOAL_PORT_<NAME>`. Docker's own restart policy is off: shoal's policy
//! applies, as for processes.
//!
//! The container's output is followed into the task's sandbox dir
//! (`stdout.log`, `stderr.log`), so logs are read, rotated and proxied the
//! same way whatever the runtime. After an agent restart, [`DockerRuntime::scan`]
//! adopts the containers of this node that still run and belong to a task it
//! knows, and removes the rest (orphans, by label).
//!
//! A stopped task leaves no container behind, whatever state it reached: a
//! container that was created but could not start is removed at once, and
//! when a task ends, fails to start, or is stopped while it does not run,
//! every container labelled with it and this node is removed too (see
//! `sweep`), which catches one the runtime lost track of.

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions, WaitContainerOptions,
};
use futures_util::StreamExt;
use shoal_model::{JobSpec, Protocol};
use shoal_placement::{Adopted, ExitReason, Slot, Stamp, TaskKey};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::runtime::{
    Runtime, RuntimeEvent, TaskRecord, dir_name, port_failure, read_record, report_stopped,
    write_record,
};
use crate::tasklog::{LOG_KEEP, LOG_MAX_BYTES, LogFile};
use crate::tasktable::{Ended, TaskTable};

use crate::ports::{HostPorts, PortError};
pub use shoal_model::port_env_name;

/// Where a task with artifacts or files finds its sandbox inside its
/// container.
pub const SANDBOX_IN_CONTAINER: &str = "/shoal/task";
/// Tries at starting a container when its host port was taken meanwhile.
const PORT_ATTEMPTS: u32 = 3;

/// Why a container did not start.
enum Launch {
    /// A host port was taken between the check and the start.
    PortTaken(String),
    /// A static port is taken on this host: the task goes elsewhere.
    PortInUse(PortError),
    /// Anything else: the task fails with this.
    Failed(String),
}

/// What runs for a task: its container and the host ports it was given.
#[derive(Clone, Debug)]
struct Container {
    id: String,
    ports: BTreeMap<String, u16>,
}

/// Process-count limit per container.
const PIDS_MAX: i64 = 4096;
/// Tries at removing a container the engine refuses to remove (one being
/// started or removed meanwhile).
const REMOVE_ATTEMPTS: u32 = 5;
/// Between those tries.
const REMOVE_RETRY: Duration = Duration::from_millis(200);
/// How long to wait for the engine to answer at start-up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Label keys.
pub const LABEL_TASK: &str = "shoal.task";
/// The job.
pub const LABEL_JOB: &str = "shoal.job";
/// The node (id) that runs the container.
pub const LABEL_NODE: &str = "shoal.node";

struct Inner {
    docker: Docker,
    engine_version: String,
    tasks_dir: PathBuf,
    node_id: String,
    node_name: String,
    events: mpsc::Sender<RuntimeEvent>,
    /// Running tasks and their containers.
    table: TaskTable<Container>,
    stop_grace: Duration,
    /// The node's host ports, shared with the process runtime.
    ports: HostPorts,
    /// The address the node advertises (`SHOAL_HOST`).
    host: String,
    /// The log files of the containers followed now.
    logs: Mutex<BTreeMap<TaskKey, Arc<Mutex<TaskLogs>>>>,
    /// Opens the secrets tasks' environments refer to (set once the
    /// replica runs: [`DockerRuntime::set_secrets`]).
    secrets: std::sync::OnceLock<crate::secrets::Secrets>,
}

/// A container's two log streams, written by its follower.
#[derive(Debug)]
struct TaskLogs {
    out: LogFile,
    err: LogFile,
}

/// Runs tasks as Docker containers. Cheap to clone.
#[derive(Clone)]
pub struct DockerRuntime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for DockerRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerRuntime")
            .field("engine", &self.inner.engine_version)
            .finish_non_exhaustive()
    }
}

/// Settings of the Docker runtime.
#[derive(Clone, Debug)]
pub struct DockerSettings {
    /// Where task sandboxes live (`<data-dir>/tasks`).
    pub tasks_dir: PathBuf,
    /// This node's id (the `shoal.node` label).
    pub node_id: String,
    /// This node's name (`SHOAL_NODE`).
    pub node_name: String,
    /// Between the stop signal and the kill.
    pub stop_grace: Duration,
    /// The node's host ports, shared with the process runtime.
    pub ports: HostPorts,
    /// The address the node advertises, given to tasks as `SHOAL_HOST`.
    pub host: String,
}

impl DockerRuntime {
    /// Connects to the local engine; `Err` says why there is no Docker
    /// runtime on this node (no socket, no answer in time, …).
    pub async fn connect(
        settings: DockerSettings,
        events: mpsc::Sender<RuntimeEvent>,
    ) -> Result<DockerRuntime, String> {
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| format!("cannot connect to the Docker engine: {e}"))?;
        let version = tokio::time::timeout(PROBE_TIMEOUT, docker.version())
            .await
            .map_err(|_| {
                format!(
                    "the Docker engine did not answer within {}s",
                    PROBE_TIMEOUT.as_secs()
                )
            })?
            .map_err(|e| format!("the Docker engine does not answer: {e}"))?;
        Ok(DockerRuntime {
            inner: Arc::new(Inner {
                docker,
                engine_version: version.version.unwrap_or_else(|| "unknown".into()),
                tasks_dir: settings.tasks_dir,
                node_id: settings.node_id,
                node_name: settings.node_name,
                events,
                table: TaskTable::new(),
                stop_grace: settings.stop_grace,
                ports: settings.ports,
                host: settings.host,
                logs: Mutex::new(BTreeMap::new()),
                secrets: std::sync::OnceLock::new(),
            }),
        })
    }

    /// Gives the runtime what opens secrets (once; later calls are
    /// ignored).
    pub fn set_secrets(&self, secrets: crate::secrets::Secrets) {
        let _ = self.inner.secrets.set(secrets);
    }

    /// The engine's version, as it reported it.
    pub fn engine_version(&self) -> &str {
        &self.inner.engine_version
    }

    /// Runs `command` with `/bin/sh -c` inside running container
    /// `container`, in the container's environment (a command health
    /// check): its exit code and its output, stdout then stderr
    /// interleaved as they came, at most `limit` bytes kept.
    pub async fn exec(
        &self,
        container: &str,
        command: &str,
        limit: usize,
    ) -> Result<(Option<i64>, String), String> {
        let short = &container[..container.len().min(12)];
        let docker = &self.inner.docker;
        let config = bollard::models::ExecConfig {
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            cmd: Some(vec!["/bin/sh".into(), "-c".into(), command.into()]),
            ..Default::default()
        };
        let created = docker
            .create_exec(container, config)
            .await
            .map_err(|e| format!("docker exec in container {short}: {e}"))?;
        let started = docker
            .start_exec(
                &created.id,
                Some(bollard::exec::StartExecOptions {
                    detach: false,
                    tty: false,
                    output_capacity: None,
                }),
            )
            .await
            .map_err(|e| format!("docker exec in container {short}: {e}"))?;
        let mut text = Vec::new();
        if let bollard::exec::StartExecResults::Attached { mut output, .. } = started {
            while let Some(chunk) = output.next().await {
                let Ok(chunk) = chunk else { break };
                let bytes = chunk.into_bytes();
                let room = limit.saturating_sub(text.len());
                text.extend_from_slice(&bytes[..bytes.len().min(room)]);
            }
        }
        let inspected = docker
            .inspect_exec(&created.id)
            .await
            .map_err(|e| format!("docker exec in container {short}: {e}"))?;
        Ok((
            inspected.exit_code,
            String::from_utf8_lossy(&text).into_owned(),
        ))
    }

    /// Whether the engine answers now.
    pub async fn answers(&self) -> bool {
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, self.inner.docker.ping()).await,
            Ok(Ok(_))
        )
    }

    fn task_dir(&self, key: &TaskKey) -> PathBuf {
        self.inner.tasks_dir.join(dir_name(key))
    }

    async fn send(&self, ev: RuntimeEvent) {
        let _ = self.inner.events.send(ev).await;
    }

    /// The image, present locally or pulled; the error is the one the task
    /// fails with.
    async fn ensure_image(&self, image: &str) -> Result<(), String> {
        if self.inner.docker.inspect_image(image).await.is_ok() {
            return Ok(());
        }
        let (repo, tag) = split_image(image);
        let mut pull = self.inner.docker.create_image(
            Some(CreateImageOptions {
                from_image: Some(repo.to_owned()),
                tag: Some(tag.to_owned()),
                ..Default::default()
            }),
            None,
            None,
        );
        let mut failure = None;
        while let Some(step) = pull.next().await {
            match step {
                Ok(info) => {
                    if let Some(e) = info.error_detail.and_then(|d| d.message) {
                        failure = Some(e);
                    }
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        let why = match failure {
            None if self.inner.docker.inspect_image(image).await.is_ok() => return Ok(()),
            None => "the pull ended without the image".to_owned(),
            Some(why) => why,
        };
        Err(missing_image(image, &why))
    }

    async fn run(
        &self,
        key: TaskKey,
        spec: Arc<JobSpec>,
        job_version: u64,
        stamp: Stamp,
        attempt: u32,
    ) {
        // A container still there for this task is replaced: stopped
        // first, its end unreported.
        if let Some((old, container)) = self.inner.table.retire(&key) {
            self.terminate(&key, old, container).await;
        }
        let generation = self.inner.table.begin(&key, None);
        let dir = self.task_dir(&key);
        let started = self.launch(&key, &spec, &dir, generation).await;
        let (container, ports) = match started {
            Ok(c) => c,
            Err(why) => {
                self.inner.table.forget(&key, generation);
                // The failed container was removed; anything else the
                // engine holds for the task goes too.
                self.sweep(&key).await;
                self.send(RuntimeEvent::Exited(key, why)).await;
                return;
            }
        };
        let record = TaskRecord {
            task: key.to_string(),
            stamp,
            job_version,
            spec: (*spec).clone(),
            restarts: attempt,
            pid: None,
            pid_start: None,
            started_ms: crate::clock::unix_ms(),
            container: Some(container.clone()),
            ports: ports.clone(),
        };
        write_record(&dir, &record);
        debug!(task = %key, %container, "container started");
        self.send(RuntimeEvent::Running(key.clone(), ports.clone()))
            .await;
        let logs = self.follow_logs(&key, &container, &dir, 0);
        self.watch(key, generation, container, ports, dir, logs)
            .await;
    }

    /// Creates and starts the container; returns its id and host ports.
    async fn launch(
        &self,
        key: &TaskKey,
        spec: &JobSpec,
        dir: &Path,
        generation: u64,
    ) -> Result<(String, BTreeMap<String, u16>), ExitReason> {
        fs::create_dir_all(dir).map_err(|e| {
            ExitReason::StartFailed(format!("cannot create {}: {e}", dir.display()))
        })?;
        let image = spec
            .task
            .image
            .clone()
            .ok_or_else(|| ExitReason::StartFailed("the task has no image".to_owned()))?;
        self.ensure_image(&image)
            .await
            .map_err(ExitReason::StartFailed)?;
        // Another program (or another agent on this engine) may take a host
        // port between the check and the container's start: try again with
        // other ports.
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self
                .create_and_start(key, spec, &image, generation, attempt)
                .await
            {
                Err(Launch::PortTaken(why)) if attempt < PORT_ATTEMPTS => {
                    debug!(task = %key, reason = %why, "host port taken; trying others");
                }
                Err(Launch::PortTaken(why) | Launch::Failed(why)) => {
                    return Err(ExitReason::StartFailed(why));
                }
                Err(Launch::PortInUse(e)) => return Err(port_failure(e)),
                Ok(started) => return Ok(started),
            }
        }
    }

    /// One try at creating and starting the container, with host ports
    /// taken from the pool.
    async fn create_and_start(
        &self,
        key: &TaskKey,
        spec: &JobSpec,
        image: &str,
        generation: u64,
        attempt: u32,
    ) -> Result<(String, BTreeMap<String, u16>), Launch> {
        let ports = match self.inner.ports.allocate(&spec.task.ports) {
            Ok(p) => p,
            Err(e @ PortError::InUse { .. }) => return Err(Launch::PortInUse(e)),
            Err(e) => return Err(Launch::Failed(e.to_string())),
        };
        let give_back = |ports: &BTreeMap<String, u16>| self.inner.ports.give_back(ports);
        // Secrets are opened into the container's configuration only (the
        // engine keeps it; `docker inspect` shows it to whoever may use
        // the engine), never into the task record.
        let mut env: Vec<String> =
            match crate::secrets::resolve_env(self.inner.secrets.get(), &spec.task.env) {
                Ok(env) => env.into_iter().map(|(k, v)| format!("{k}={v}")).collect(),
                Err(why) => {
                    give_back(&ports);
                    return Err(Launch::Failed(why));
                }
            };
        env.push(format!("SHOAL_TASK_ID={key}"));
        env.push(format!("SHOAL_JOB={}", key.job));
        env.push(format!(
            "SHOAL_TASK_INDEX={}",
            match &key.slot {
                Slot::Index(i) => i.to_string(),
                Slot::Node(_) => "0".into(),
            }
        ));
        env.push(format!("SHOAL_NODE={}", self.inner.node_name));
        env.push(format!("SHOAL_HOST={}", self.inner.host));
        for (name, host) in &ports {
            env.push(format!("SHOAL_PORT_{}={host}", port_env_name(name)));
        }
        let mut bindings = HashMap::new();
        let mut exposed = Vec::new();
        for p in &spec.task.ports {
            let proto = match p.protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            // Validation requires it of docker tasks.
            let Some(container_port) = p.container_port else {
                continue;
            };
            let inside = format!("{container_port}/{proto}");
            exposed.push(inside.clone());
            bindings.insert(
                inside,
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(ports[&p.name].to_string()),
                }]),
            );
        }
        let resources = shoal_placement::Resources::of_task(&spec.task.resources);
        let memory = i64::try_from(resources.memory_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX);
        let labels = HashMap::from([
            (LABEL_TASK.to_owned(), key.to_string()),
            (LABEL_JOB.to_owned(), key.job.clone()),
            (LABEL_NODE.to_owned(), self.inner.node_id.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            entrypoint: spec.task.command.clone().map(|c| vec![c]),
            cmd: (!spec.task.args.is_empty()).then(|| spec.task.args.clone()),
            env: Some(env),
            labels: Some(labels),
            exposed_ports: (!exposed.is_empty()).then_some(exposed),
            host_config: Some(HostConfig {
                nano_cpus: Some(
                    i64::try_from(resources.cpus_milli.saturating_mul(1_000_000))
                        .unwrap_or(i64::MAX),
                ),
                memory: (memory > 0).then_some(memory),
                memory_swap: (memory > 0).then_some(memory),
                pids_limit: Some(PIDS_MAX),
                port_bindings: (!bindings.is_empty()).then_some(bindings),
                // The sandbox, where the task's artifacts were fetched
                // and its files written.
                binds: (!spec.task.artifacts.is_empty() || !spec.task.files.is_empty()).then(
                    || {
                        vec![format!(
                            "{}:{SANDBOX_IN_CONTAINER}",
                            self.task_dir(key).display()
                        )]
                    },
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "shoal-{}-{}-{generation}-{attempt}",
            dir_name(key).replace('@', "."),
            &self.inner.node_id[..self.inner.node_id.len().min(8)]
        );
        let created = self
            .inner
            .docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| {
                give_back(&ports);
                Launch::Failed(format!("cannot create a container of {image}: {e}"))
            })?;
        let id = created.id;
        let stop_now = self.inner.table.started(
            key,
            generation,
            Container {
                id: id.clone(),
                ports: ports.clone(),
            },
        );
        if let Err(e) = self.inner.docker.start_container(&id, None).await {
            self.remove(&id).await;
            give_back(&ports);
            let why = format!("cannot start the container of {image}: {e}");
            let text = e.to_string();
            return Err(
                if !ports.is_empty()
                    && (text.contains("port is already allocated")
                        || text.contains("address already in use")
                        || text.contains("external connectivity"))
                {
                    Launch::PortTaken(why)
                } else {
                    Launch::Failed(why)
                },
            );
        }
        if stop_now {
            // Told to stop while it was being created.
            let _ = self.stop_container(&id).await;
        }
        Ok((id, ports))
    }

    /// Appends the container's output to the sandbox's log files until it
    /// ends; `since` (Unix seconds) skips what was already written. The
    /// files rotate by rename (see [`crate::tasklog`]) at
    /// [`LOG_MAX_BYTES`], or when [`rotate_logs`](Self::rotate_logs) says.
    fn follow_logs(
        &self,
        key: &TaskKey,
        container: &str,
        dir: &Path,
        since: i32,
    ) -> tokio::task::JoinHandle<()> {
        let docker = self.inner.docker.clone();
        let container = container.to_owned();
        let opened =
            LogFile::open(&dir.join("stdout.log"), LOG_MAX_BYTES, LOG_KEEP).and_then(|out| {
                let err = LogFile::open(&dir.join("stderr.log"), LOG_MAX_BYTES, LOG_KEEP)?;
                Ok(Arc::new(Mutex::new(TaskLogs { out, err })))
            });
        let logs = match opened {
            Ok(l) => l,
            Err(e) => {
                warn!(%container, error = %e, "cannot open the task's log files");
                return tokio::spawn(async {});
            }
        };
        self.inner
            .logs
            .lock()
            .expect("lock")
            .insert(key.clone(), logs.clone());
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move {
            let mut stream = docker.logs(
                &container,
                Some(LogsOptions {
                    follow: true,
                    stdout: true,
                    stderr: true,
                    since,
                    ..Default::default()
                }),
            );
            while let Some(piece) = stream.next().await {
                let written = {
                    let mut files = logs.lock().expect("lock");
                    match piece {
                        Ok(LogOutput::StdErr { message }) => files.err.write_all(&message),
                        Ok(
                            LogOutput::StdOut { message }
                            | LogOutput::Console { message }
                            | LogOutput::StdIn { message },
                        ) => files.out.write_all(&message),
                        Err(e) => {
                            debug!(%container, error = %e, "log stream ended");
                            break;
                        }
                    }
                };
                if let Err(e) = written {
                    warn!(%container, error = %e, "cannot write the task's log");
                    break;
                }
            }
            let mut all = this.inner.logs.lock().expect("lock");
            if all.get(&key).is_some_and(|l| Arc::ptr_eq(l, &logs)) {
                all.remove(&key);
            }
        })
    }

    /// Rotates the log files of this runtime's tasks that grew past `max`
    /// bytes.
    pub fn rotate_logs(&self, max: u64) {
        let all: Vec<Arc<Mutex<TaskLogs>>> = self
            .inner
            .logs
            .lock()
            .expect("lock")
            .values()
            .cloned()
            .collect();
        for logs in all {
            let mut files = logs.lock().expect("lock");
            let TaskLogs { out, err } = &mut *files;
            for f in [out, err] {
                if let Err(e) = f.rotate_over(max) {
                    warn!(file = %f.path().display(), error = %e, "cannot rotate a task's log");
                }
            }
        }
    }

    /// Waits for the container to end, reports how, and removes it.
    async fn watch(
        &self,
        key: TaskKey,
        generation: u64,
        container: String,
        ports: BTreeMap<String, u16>,
        dir: PathBuf,
        logs: tokio::task::JoinHandle<()>,
    ) {
        let mut wait = self.inner.docker.wait_container(
            &container,
            Some(WaitContainerOptions {
                condition: "not-running".into(),
            }),
        );
        // A non-zero exit comes as an error of the wait; the state below
        // tells the code either way.
        let waited = wait.next().await;
        let engine_error = match waited {
            Some(Err(bollard::errors::Error::DockerContainerWaitError { .. })) | Some(Ok(_)) => {
                None
            }
            Some(Err(e)) => Some(e.to_string()),
            None => None,
        };
        let state = self
            .inner
            .docker
            .inspect_container(&container, None)
            .await
            .ok()
            .and_then(|c| c.state);
        let Ended { stopping, replaced } = self.inner.table.end(&key, generation);
        // The log stream ends with the container; let it drain.
        let _ = tokio::time::timeout(Duration::from_secs(2), logs).await;
        self.remove(&container).await;
        self.inner.ports.give_back(&ports);
        let reason = if stopping {
            ExitReason::Stopped
        } else if let Some(s) = &state {
            if s.oom_killed == Some(true) {
                ExitReason::Oom
            } else {
                let code = s.exit_code.unwrap_or(-1);
                ExitReason::Exited(i32::try_from(code).unwrap_or(-1))
            }
        } else if let Some(e) = engine_error {
            ExitReason::StartFailed(format!("lost the container: {e}"))
        } else {
            ExitReason::Unknown
        };
        if let Some(mut r) = read_record(&dir) {
            r.container = None;
            write_record(&dir, &r);
        }
        self.sweep(&key).await;
        debug!(task = %key, ?reason, replaced, "container ended");
        if !replaced {
            self.send(RuntimeEvent::Exited(key, reason)).await;
        }
    }

    async fn stop_container(&self, id: &str) -> Result<(), bollard::errors::Error> {
        let t = i32::try_from(self.inner.stop_grace.as_secs()).unwrap_or(i32::MAX);
        self.inner
            .docker
            .stop_container(
                id,
                Some(StopContainerOptions {
                    t: Some(t),
                    signal: None,
                }),
            )
            .await
    }

    /// Removes a container whatever its state (created, running, exited,
    /// restarting), trying again while the engine refuses (a removal or a
    /// start of it in progress); true once the engine no longer has it.
    async fn remove(&self, id: &str) -> bool {
        let mut last = String::new();
        for attempt in 0..REMOVE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(REMOVE_RETRY).await;
            }
            let removed = self
                .inner
                .docker
                .remove_container(
                    id,
                    Some(RemoveContainerOptions {
                        force: true,
                        v: true,
                        ..Default::default()
                    }),
                )
                .await;
            match removed {
                Ok(()) => return true,
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => return true,
                Err(e) => {
                    debug!(container = %id, error = %e, attempt, "cannot remove container yet");
                    last = e.to_string();
                }
            }
        }
        warn!(
            container = %id,
            error = %last,
            "cannot remove a container of this node; remove it with `docker rm -f {id}`"
        );
        false
    }

    /// Removes every container the engine holds for `key` on this node,
    /// unless a start of the task is under way or runs here now (that start
    /// owns its container and removes it when it ends). Catches what a
    /// start lost track of: a container whose creation answered too late,
    /// or one whose removal the engine refused, in any state.
    ///
    /// The listing comes first and the check after it: a container listed
    /// that belongs to a live start means the task is held at the check.
    async fn sweep(&self, key: &TaskKey) {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![
                format!("{LABEL_NODE}={}", self.inner.node_id),
                format!("{LABEL_TASK}={key}"),
            ],
        )]);
        let listed = self
            .inner
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await;
        let ids: Vec<String> = match listed {
            Ok(list) => list.into_iter().filter_map(|c| c.id).collect(),
            Err(e) => {
                warn!(task = %key, error = %e, "cannot list the task's containers to remove leftovers");
                return;
            }
        };
        if ids.is_empty() || self.inner.table.holds(key) {
            return;
        }
        for id in ids {
            info!(task = %key, container = %id, "removing a container of a task that no longer runs here");
            self.remove(&id).await;
        }
    }

    /// Stops the container of start `generation` (the engine sends SIGTERM,
    /// then SIGKILL after the grace period) and waits until its watcher saw
    /// it end.
    async fn terminate(&self, key: &TaskKey, generation: u64, container: Option<Container>) {
        let gone = || self.inner.table.gone(key, generation);
        if let Some(c) = &container
            && let Err(e) = self.stop_container(&c.id).await
        {
            debug!(task = %key, error = %e, "cannot stop container; removing it");
            self.remove(&c.id).await;
        }
        let deadline =
            tokio::time::Instant::now() + self.inner.stop_grace + Duration::from_secs(10);
        while tokio::time::Instant::now() < deadline && !gone() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// After an agent restart: this node's containers that still run for a
    /// task it recorded are adopted and watched; those of a service or
    /// system task that ended meanwhile are removed and their task adopted
    /// as ended (restarted by its policy); every other container labelled
    /// with this node is removed.
    pub async fn scan(&self) -> Vec<Adopted> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("{LABEL_NODE}={}", self.inner.node_id)],
        )]);
        let listed = self
            .inner
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(filters),
                ..Default::default()
            }))
            .await;
        let containers = match listed {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "cannot list this node's containers; none adopted");
                return Vec::new();
            }
        };
        let mut adopted = Vec::new();
        for c in containers {
            let Some(id) = c.id.clone() else { continue };
            let running = c
                .state
                .as_ref()
                .is_some_and(|s| s.to_string().eq_ignore_ascii_case("running"));
            let key = c
                .labels
                .as_ref()
                .and_then(|l| l.get(LABEL_TASK))
                .and_then(|t| TaskKey::parse(t));
            let dir = key.as_ref().map(|k| self.task_dir(k));
            let record = dir.as_deref().and_then(read_record);
            let ours = record
                .as_ref()
                .is_some_and(|r| r.container.as_deref() == Some(id.as_str()));
            // A service's or a system job's container that ended while
            // the agent was away (the machine lost power, say): removed,
            // and its task held again and restarted by its policy, as the
            // process runtime does, so that a node back with no network
            // runs its own tasks. Its log is in the task's files already.
            // A batch task may have completed: left to its coordinator.
            if let (Some(key), Some(record), false, true) = (&key, &record, running, ours)
                && record.spec.kind != shoal_model::JobType::Batch
            {
                info!(task = %key, container = %id, "found a container that ended while the agent was away; restarting its task");
                self.remove(&id).await;
                let mut r = record.clone();
                r.container = None;
                if let Some(dir) = &dir {
                    crate::runtime::write_record(dir, &r);
                }
                adopted.push(record.adopted(key.clone(), true));
                continue;
            }
            let (Some(key), Some(dir), Some(record), true, true) =
                (key, dir, record, running, ours)
            else {
                info!(container = %id, "removing a container of this node that no task owns");
                self.remove(&id).await;
                continue;
            };
            info!(task = %key, container = %id, "found a container still running; adopting it");
            let generation = self.inner.table.begin(
                &key,
                Some(Container {
                    id: id.clone(),
                    ports: record.ports.clone(),
                }),
            );
            self.inner.ports.hold(&record.ports);
            adopted.push(record.adopted(key.clone(), false));
            // Only what it writes from now on: what came before is in the
            // files already.
            let since = i32::try_from(crate::clock::unix_ms() / 1000).unwrap_or(0);
            let logs = self.follow_logs(&key, &id, &dir, since);
            let this = self.clone();
            let ports = record.ports.clone();
            tokio::spawn(async move {
                this.watch(key, generation, id, ports, dir, logs).await;
            });
        }
        adopted
    }

    /// A task stopped while it does not run here (between restarts, or
    /// never started): removes, in the background, any container of it
    /// this node's engine still holds (see `sweep`).
    pub fn remove_leftovers(&self, key: &TaskKey) {
        let this = self.clone();
        let key = key.clone();
        tokio::spawn(async move { this.sweep(&key).await });
    }

    /// Host ports and container of a task running here.
    pub fn local_info(&self, key: &TaskKey) -> Option<(String, BTreeMap<String, u16>)> {
        let c = self.inner.table.handle(key)?;
        Some((c.id, c.ports))
    }
}

impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
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

    fn stop(&self, key: &TaskKey) {
        let Some((generation, container)) = self.inner.table.stopping(key) else {
            report_stopped(&self.inner.events, key);
            self.remove_leftovers(key);
            return;
        };
        // Still being created: the launch sees `stopping` and stops it.
        if container.is_some() {
            let this = self.clone();
            let key = key.clone();
            tokio::spawn(async move { this.terminate(&key, generation, container).await });
        }
    }

    fn retire(&self, key: &TaskKey) {
        if let Some((generation, container)) = self.inner.table.retire(key) {
            let this = self.clone();
            let key = key.clone();
            tokio::spawn(async move { this.terminate(&key, generation, container).await });
        }
    }

    fn holds(&self, key: &TaskKey) -> bool {
        self.inner.table.holds(key)
    }

    fn running(&self) -> Vec<TaskKey> {
        self.inner.table.keys()
    }
}

/// Why a task whose image is neither here nor pullable cannot start, and
/// what to do about it: on a node with no registry in reach, the image has
/// to be loaded by hand.
fn missing_image(image: &str, why: &str) -> String {
    format!(
        "image {image} not found locally and could not be pulled: {why}; \
         load it on this node (`docker save {image} -o image.tar` where it exists, \
         then `docker load -i image.tar` here) or make its registry reachable"
    )
}

/// `repo[:tag]` (a registry host with a port keeps its colon); `latest`
/// when no tag is given. A digest (`@sha256:…`) stays in the repo part.
fn split_image(image: &str) -> (&str, &str) {
    if image.contains('@') {
        return (image, "");
    }
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => (repo, tag),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_names_split_into_repo_and_tag() {
        assert_eq!(split_image("busybox"), ("busybox", "latest"));
        assert_eq!(split_image("busybox:1.36"), ("busybox", "1.36"));
        assert_eq!(
            split_image("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
        assert_eq!(
            split_image("registry:5000/team/app:v2"),
            ("registry:5000/team/app", "v2")
        );
        assert_eq!(split_image("app@sha256:abcd"), ("app@sha256:abcd", ""));
    }
}
