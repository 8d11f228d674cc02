//! The job spec, its parsing and its validation.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::artifact::{Artifact, RawArtifact, validate_artifacts};
use crate::check::{Check, RawCheck, validate_checks};
use crate::constraint::{Constraint, RawConstraint};
use crate::env::EnvValue;
use crate::files::{RawTaskFile, TaskFile, validate_files};
use crate::ports::{Port, RawPort, validate_ports};
use crate::update::{RawUpdate, UpdatePolicy};
use crate::{FieldError, SpecError};

/// Largest `count`.
pub const MAX_COUNT: u32 = 100_000;
/// Largest number of cores a task may ask for.
pub const MAX_CPUS: f64 = 1024.0;
const MAX_NAME: usize = 253;
const MAX_ITEMS: usize = 1000;
const MAX_LABELS: usize = 64;
const MAX_CONSTRAINTS: usize = 32;
const MAX_STRING: usize = 4096;
const DEFAULT_CPUS: f64 = 0.25;
const DEFAULT_MEMORY_MB: u64 = 128;

/// What kind of job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum JobType {
    /// Long-running tasks, restarted and kept at `count`.
    Service,
    /// Tasks that run to completion.
    Batch,
    /// One task on every eligible node.
    System,
}

impl JobType {
    fn parse(s: &str) -> Option<JobType> {
        match s {
            "service" => Some(JobType::Service),
            "batch" => Some(JobType::Batch),
            "system" => Some(JobType::System),
            _ => None,
        }
    }

    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobType::Service => "service",
            JobType::Batch => "batch",
            JobType::System => "system",
        }
    }
}

/// How a task runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Runtime {
    /// A plain process in a sandbox dir.
    Process,
    /// A Docker container.
    Docker,
}

impl Runtime {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Process => "process",
            Runtime::Docker => "docker",
        }
    }
}

/// Resources one task reserves on its node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Resources {
    /// Cores, fractional (`0.5`).
    pub cpus: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Disk, MiB.
    pub disk_mb: u64,
    /// GPUs.
    pub gpus: u32,
}

impl Resources {
    /// CPUs in thousandths of a core, as nodes count them.
    pub fn cpus_milli(&self) -> u32 {
        (self.cpus * 1000.0).round().clamp(1.0, f64::from(u32::MAX)) as u32
    }
}

/// What runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskSpec {
    /// `process` or `docker`. May be omitted in a job file or the API's
    /// JSON: `docker` when `image` is set, `process` otherwise; the
    /// validated spec always names it.
    pub runtime: Runtime,
    /// Program (process) or entrypoint override (docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// Arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Environment: values, or secrets' names (`{ secret = "db/password" }`).
    #[serde(default)]
    pub env: BTreeMap<String, EnvValue>,
    /// Working dir (process; default: the task's sandbox dir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// Image (docker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Named ports: the node gives each a host port.
    #[serde(default)]
    pub ports: Vec<Port>,
    /// Reserved resources.
    pub resources: Resources,
    /// Health checks, run by the node that runs the task.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<Check>,
    /// Files fetched into the sandbox before the task starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub artifacts: Vec<Artifact>,
    /// Small text files written into the sandbox before the task starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<TaskFile>,
}

/// When a task that stopped is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum RestartMode {
    /// Never.
    Never,
    /// When it exits with a failure.
    OnFailure,
    /// Whenever it exits.
    Always,
}

/// Restart policy: `attempts` restarts at most (absent = no limit), waiting
/// `delay`, doubling up to `max_delay`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RestartPolicy {
    /// When.
    pub mode: RestartMode,
    /// Restarts at most; absent means no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// First delay (`1s`, `500ms`).
    pub delay: String,
    /// Longest delay.
    pub max_delay: String,
}

impl RestartPolicy {
    /// The first delay.
    pub fn delay(&self) -> Duration {
        parse_duration(&self.delay).unwrap_or(Duration::from_secs(1))
    }

    /// The longest delay.
    pub fn max_delay(&self) -> Duration {
        parse_duration(&self.max_delay).unwrap_or(Duration::from_secs(30))
    }
}

/// A validated job spec, with every default filled in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSpec {
    /// Name: DNS-label words, `/`-separated (`web/frontend`).
    pub name: String,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: JobType,
    /// Tasks wanted (absent for system jobs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// The task.
    pub task: TaskSpec,
    /// Where tasks may run.
    #[serde(default)]
    pub constraints: Vec<Constraint>,
    /// Restart policy.
    pub restart: RestartPolicy,
    /// Spread tasks over the values of this node attribute (`zone`,
    /// `rack`, …) instead of packing them (the default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<String>,
    /// Free-form labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Service jobs: replace tasks by rolling deployments when what they
    /// run changes (see [`UpdatePolicy`]); without it, every task is
    /// restarted in place at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<UpdatePolicy>,
    /// Jobs that must be ready before this one's tasks are first placed:
    /// every task of a service healthy, every node's task of a system job
    /// healthy, a batch job complete. Once they were, the job runs like
    /// any other (a later failure of one of them stops nothing).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub after: Vec<String>,
    /// The datacenters its tasks may run in (empty: any). A node of
    /// another datacenter takes none of them, unless every one of these has
    /// no live node and [`JobSpec::on_dc_loss`] is `move`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub datacenters: Vec<String>,
    /// When none of [`JobSpec::datacenters`] has a live node: `wait` (the
    /// default: tasks stay pending, saying why) or `move` (they may run in
    /// any other datacenter, within capacity).
    #[serde(default, skip_serializing_if = "DcLoss::is_wait")]
    pub on_dc_loss: DcLoss,
    /// What the nodes that still reach each other do with a task whose
    /// node they lost (crashed, or cut off): see [`Disconnect`].
    #[serde(default, skip_serializing_if = "Disconnect::is_default")]
    pub disconnect: Disconnect,
}

/// `[disconnect]`: when a task whose node is lost is replaced elsewhere.
/// A node that is itself cut off from most of the members it knew never
/// replaces anyone's task, whatever this says (docs/placement.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Disconnect {
    /// How long after its node was last heard from a task is replaced on
    /// another node: a duration (`0s`, the default: at once; `5m`).
    pub replace_after: String,
}

impl Default for Disconnect {
    fn default() -> Disconnect {
        Disconnect {
            replace_after: "0s".into(),
        }
    }
}

impl Disconnect {
    /// The default (replace at once).
    pub fn is_default(&self) -> bool {
        *self == Disconnect::default()
    }

    /// How long to wait before replacing.
    pub fn replace_after(&self) -> Duration {
        parse_duration(&self.replace_after).unwrap_or_default()
    }
}

/// What a job's tasks do when none of its datacenters has a live node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum DcLoss {
    /// Stay pending until one of them has a live node again.
    #[default]
    Wait,
    /// Run in the other datacenters meanwhile.
    Move,
}

impl DcLoss {
    /// The default.
    pub fn is_wait(&self) -> bool {
        *self == DcLoss::Wait
    }
}

/// Datacenters one job may name.
pub const MAX_DATACENTERS: usize = 64;

/// Jobs one job may wait for (`after`).
pub const MAX_AFTER: usize = 16;

/// Parses `1s`, `500ms`, `2m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    humantime::parse_duration(s.trim()).ok()
}

pub(crate) fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// Checks a job name: 1–253 characters of `/`-separated DNS labels
/// (lower-case letters, digits, `-` inside).
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!(
            "is {} characters, more than {MAX_NAME}",
            name.len()
        ));
    }
    for word in name.split('/') {
        let ok = !word.is_empty()
            && word.len() <= 63
            && word
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !word.starts_with('-')
            && !word.ends_with('-');
        if !ok {
            return Err(format!(
                "{name:?} is not a job name: use lower-case letters, digits and '-' (not at either end), in '/'-separated words of 1-63 characters"
            ));
        }
    }
    Ok(())
}

// ------------------------------------------------------------------ input

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJob {
    name: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    count: Option<i64>,
    task: Option<RawTask>,
    #[serde(default)]
    constraints: Vec<RawConstraint>,
    restart: Option<RawRestart>,
    spread: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    update: Option<RawUpdate>,
    #[serde(default)]
    after: Vec<String>,
    #[serde(default)]
    datacenters: Vec<String>,
    on_dc_loss: Option<String>,
    disconnect: Option<RawDisconnect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDisconnect {
    replace_after: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTask {
    runtime: Option<String>,
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, Value>,
    workdir: Option<String>,
    image: Option<String>,
    #[serde(default)]
    ports: Vec<RawPort>,
    resources: Option<RawResources>,
    #[serde(default)]
    checks: Vec<RawCheck>,
    #[serde(default)]
    artifacts: Vec<RawArtifact>,
    #[serde(default)]
    files: Vec<RawTaskFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpus: Option<f64>,
    memory_mb: Option<i64>,
    disk_mb: Option<i64>,
    gpus: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    mode: Option<String>,
    attempts: Option<i64>,
    delay: Option<String>,
    max_delay: Option<String>,
}

/// Collects problems while building the validated spec.
#[derive(Default)]
pub(crate) struct Problems(Vec<FieldError>);

impl Problems {
    /// How many so far.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError::new(field, message));
    }

    pub(crate) fn text(&mut self, field: &str, s: &str) {
        if s.len() > MAX_STRING {
            self.add(
                field,
                format!("is {} bytes, more than {MAX_STRING}", s.len()),
            );
        }
        if s.contains('\0') {
            self.add(field, "must not contain a NUL byte");
        }
    }
}

impl JobSpec {
    /// Parses and validates a spec from JSON (the API's form).
    pub fn from_json(value: Value) -> Result<JobSpec, SpecError> {
        let raw: RawJob = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." || path.is_empty() {
                "spec".to_owned()
            } else {
                path
            };
            SpecError::one(field, e.into_inner().to_string())
        })?;
        raw.validate()
    }

    /// Parses and validates a spec from TOML (a job file).
    pub fn from_toml(text: &str) -> Result<JobSpec, SpecError> {
        JobSpec::from_json(toml_to_json(text)?)
    }

    /// The canonical JSON form.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("a spec serializes")
    }

    /// Tasks this job wants (0 for system jobs, which run per node).
    pub fn count(&self) -> u32 {
        self.count.unwrap_or(0)
    }
}

/// Parses TOML into the JSON form (checked later by
/// [`JobSpec::from_json`]). A syntax error names its line and column.
pub fn toml_to_json(text: &str) -> Result<Value, SpecError> {
    let value: toml::Value = toml::from_str(text).map_err(|e| {
        let msg = e.to_string();
        let msg = msg.trim().replace('\n', " ");
        SpecError::one("spec", format!("not valid TOML: {msg}"))
    })?;
    serde_json::to_value(value).map_err(|e| SpecError::one("spec", e.to_string()))
}

impl RawJob {
    fn validate(self) -> Result<JobSpec, SpecError> {
        let mut p = Problems::default();

        let name = self.name.unwrap_or_default();
        if let Err(e) = validate_name(&name) {
            p.add("name", e);
        }

        let kind = match self.kind.as_deref() {
            None => JobType::Service,
            Some(k) => JobType::parse(k).unwrap_or_else(|| {
                p.add(
                    "type",
                    format!("must be service, batch or system (got {k:?})"),
                );
                JobType::Service
            }),
        };

        let count = match (kind, self.count) {
            (JobType::System, Some(_)) => {
                p.add(
                    "count",
                    "system jobs run one task on every eligible node; remove count",
                );
                None
            }
            (JobType::System, None) => None,
            (_, None) => Some(1),
            (_, Some(c)) if c < 0 || c > i64::from(MAX_COUNT) => {
                p.add(
                    "count",
                    format!("must be between 0 and {MAX_COUNT} (got {c})"),
                );
                Some(1)
            }
            (_, Some(c)) => Some(u32::try_from(c).unwrap_or(1)),
        };

        let task = match self.task {
            None => {
                p.add(
                    "task",
                    "is required: give task.command (a process) or task.image (a container)",
                );
                None
            }
            Some(t) => Some(t.validate(&mut p)),
        };

        if self.constraints.len() > MAX_CONSTRAINTS {
            p.add(
                "constraints",
                format!("at most {MAX_CONSTRAINTS} constraints"),
            );
        }
        let constraints: Vec<Constraint> = self
            .constraints
            .into_iter()
            .enumerate()
            .filter_map(|(i, c)| c.validate(&format!("constraints[{i}]"), &mut p))
            .collect();

        let restart = validate_restart(self.restart, kind, &mut p);

        if let Some(s) = &self.spread
            && (s.is_empty() || s == "label.")
        {
            p.add(
                "spread",
                "names a node attribute: name, dc, zone, region or a label key",
            );
        }

        if self.labels.len() > MAX_LABELS {
            p.add("labels", format!("at most {MAX_LABELS} labels"));
        }
        for (k, v) in &self.labels {
            if k.is_empty() || k.len() > 63 {
                p.add(format!("labels.{k}"), "keys are 1-63 characters");
            }
            if v.len() > 256 {
                p.add(format!("labels.{k}"), "values are at most 256 characters");
            }
        }

        let update = self.update.map(|u| u.validate(&mut p));
        if update.is_some() && kind != JobType::Service {
            p.add(
                "update",
                format!(
                    "rolling deployments are for service jobs; a {} job's tasks are restarted in place when it changes: remove [update]",
                    kind.as_str()
                ),
            );
        }

        if self.after.len() > MAX_AFTER {
            p.add("after", format!("at most {MAX_AFTER} jobs"));
        }
        for (i, dep) in self.after.iter().enumerate() {
            if let Err(e) = validate_name(dep) {
                p.add(format!("after[{i}]"), e);
            } else if *dep == name {
                p.add(format!("after[{i}]"), "a job cannot wait for itself");
            } else if self.after[..i].contains(dep) {
                p.add(format!("after[{i}]"), format!("{dep:?} is listed twice"));
            }
        }

        if self.datacenters.len() > MAX_DATACENTERS {
            p.add(
                "datacenters",
                format!("at most {MAX_DATACENTERS} datacenters"),
            );
        }
        for (i, dc) in self.datacenters.iter().enumerate() {
            if dc.trim().is_empty() || dc.trim() != dc {
                p.add(
                    format!("datacenters[{i}]"),
                    format!("{dc:?} is not a datacenter name: write it as the agents' --dc"),
                );
            } else if self.datacenters[..i].contains(dc) {
                p.add(
                    format!("datacenters[{i}]"),
                    format!("{dc:?} is listed twice"),
                );
            }
        }
        let on_dc_loss = match self.on_dc_loss.as_deref() {
            None | Some("wait") => DcLoss::Wait,
            Some("move") => DcLoss::Move,
            Some(other) => {
                p.add(
                    "on_dc_loss",
                    format!("unknown value {other:?}: use \"wait\" (stay pending) or \"move\" (run in other datacenters)"),
                );
                DcLoss::Wait
            }
        };
        if on_dc_loss == DcLoss::Move && self.datacenters.is_empty() {
            p.add(
                "on_dc_loss",
                "applies to a job with datacenters: name them, or remove on_dc_loss",
            );
        }

        let mut disconnect = Disconnect::default();
        if let Some(after) = self.disconnect.and_then(|d| d.replace_after) {
            match parse_duration(&after) {
                Some(d) => disconnect.replace_after = format_duration(d),
                None => p.add(
                    "disconnect.replace_after",
                    format!(
                        "{after:?} is not a duration: write \"0s\" (at once, the default), \"90s\", \"10m\" or \"1h\""
                    ),
                ),
            }
        }

        match (p.0.is_empty(), task) {
            (true, Some(task)) => Ok(JobSpec {
                name,
                kind,
                count,
                task,
                constraints,
                restart,
                spread: self.spread,
                labels: self.labels,
                update,
                after: self.after,
                datacenters: self.datacenters,
                on_dc_loss,
                disconnect,
            }),
            _ => Err(SpecError { errors: p.0 }),
        }
    }
}

impl RawTask {
    fn validate(self, p: &mut Problems) -> TaskSpec {
        let runtime = match self.runtime.as_deref() {
            Some("process") => Runtime::Process,
            Some("docker") => Runtime::Docker,
            Some(other) => {
                p.add(
                    "task.runtime",
                    format!("unknown runtime {other:?}: use process or docker"),
                );
                Runtime::Process
            }
            // Omitted: a container when there is an image, else a process.
            // The validated spec names it, so every node and every later
            // version reads the same runtime.
            None if self.image.is_some() => Runtime::Docker,
            None => Runtime::Process,
        };
        match runtime {
            Runtime::Process => {
                if self.command.as_deref().is_none_or(|c| c.trim().is_empty()) {
                    p.add("task.command", "is required for a process task");
                }
                if self.image.is_some() {
                    p.add("task.image", "only docker tasks have an image");
                }
                if let Some(w) = &self.workdir
                    && !w.starts_with('/')
                {
                    p.add(
                        "task.workdir",
                        format!("must be an absolute path (got {w:?})"),
                    );
                }
            }
            Runtime::Docker => {
                if self.image.as_deref().is_none_or(|i| i.trim().is_empty()) {
                    p.add("task.image", "is required for a docker task");
                }
                if self.workdir.is_some() {
                    p.add("task.workdir", "only process tasks have a workdir");
                }
            }
        }
        if let Some(c) = &self.command {
            p.text("task.command", c);
        }
        if self.args.len() > MAX_ITEMS {
            p.add("task.args", format!("at most {MAX_ITEMS} arguments"));
        }
        for (i, a) in self.args.iter().enumerate() {
            p.text(&format!("task.args[{i}]"), a);
        }
        if self.env.len() > MAX_ITEMS {
            p.add("task.env", format!("at most {MAX_ITEMS} variables"));
        }
        let mut env = BTreeMap::new();
        for (k, v) in self.env {
            let field = format!("task.env.{k}");
            if k.is_empty() || k.contains('=') || k.contains('\0') {
                p.add(&field, "names are non-empty, without '=' or NUL");
            }
            match EnvValue::from_value(v) {
                Ok(v) => {
                    if let Some(text) = v.plain() {
                        p.text(&field, text);
                    }
                    env.insert(k, v);
                }
                Err(e) => p.add(&field, e),
            }
        }
        let ports = validate_ports(self.ports, runtime, &mut |field, message| {
            p.add(field, message);
        });
        let checks = validate_checks(self.checks, &ports, p);
        let artifacts = validate_artifacts(self.artifacts, p);
        let files = validate_files(self.files, p);
        let r = self.resources.unwrap_or(RawResources {
            cpus: None,
            memory_mb: None,
            disk_mb: None,
            gpus: None,
        });
        let cpus = match r.cpus {
            None => DEFAULT_CPUS,
            Some(c) if c.is_finite() && c > 0.0 && c <= MAX_CPUS => c,
            Some(c) if c.is_finite() && c > MAX_CPUS => {
                p.add(
                    "task.resources.cpus",
                    format!("must be at most {MAX_CPUS} (got {c})"),
                );
                DEFAULT_CPUS
            }
            Some(c) => {
                p.add("task.resources.cpus", format!("must be > 0 (got {c})"));
                DEFAULT_CPUS
            }
        };
        let memory_mb = match r.memory_mb {
            None => DEFAULT_MEMORY_MB,
            Some(m) if m > 0 => m.unsigned_abs(),
            Some(m) => {
                p.add("task.resources.memory_mb", format!("must be > 0 (got {m})"));
                DEFAULT_MEMORY_MB
            }
        };
        let disk_mb = match r.disk_mb {
            None => 0,
            Some(d) if d >= 0 => d.unsigned_abs(),
            Some(d) => {
                p.add("task.resources.disk_mb", format!("must be >= 0 (got {d})"));
                0
            }
        };
        let gpus = match r.gpus {
            None => 0,
            Some(g) if (0..=1024).contains(&g) => u32::try_from(g).unwrap_or(0),
            Some(g) => {
                p.add("task.resources.gpus", format!("must be 0-1024 (got {g})"));
                0
            }
        };
        TaskSpec {
            runtime,
            command: self.command,
            args: self.args,
            env,
            workdir: self.workdir,
            image: self.image,
            ports,
            resources: Resources {
                cpus,
                memory_mb,
                disk_mb,
                gpus,
            },
            checks,
            artifacts,
            files,
        }
    }
}

fn validate_restart(raw: Option<RawRestart>, kind: JobType, p: &mut Problems) -> RestartPolicy {
    let default_mode = match kind {
        JobType::Batch => RestartMode::OnFailure,
        JobType::Service | JobType::System => RestartMode::Always,
    };
    let raw = raw.unwrap_or(RawRestart {
        mode: None,
        attempts: None,
        delay: None,
        max_delay: None,
    });
    let mode = match raw.mode.as_deref() {
        None => default_mode,
        Some("never") => RestartMode::Never,
        Some("on_failure") => RestartMode::OnFailure,
        Some("always") => RestartMode::Always,
        Some(other) => {
            p.add(
                "restart.mode",
                format!("must be never, on_failure or always (got {other:?})"),
            );
            default_mode
        }
    };
    let attempts = match raw.attempts {
        None => None,
        Some(a) if (0..=1_000_000).contains(&a) => u32::try_from(a).ok(),
        Some(a) => {
            p.add("restart.attempts", format!("must be 0-1000000 (got {a})"));
            None
        }
    };
    let mut duration = |field: &str, text: Option<String>, default: Duration| -> Duration {
        match text {
            None => default,
            Some(t) => parse_duration(&t).unwrap_or_else(|| {
                p.add(field, format!("not a duration: {t:?} (use 1s, 500ms, 2m)"));
                default
            }),
        }
    };
    let delay = duration("restart.delay", raw.delay, Duration::from_secs(1));
    let max_delay = duration(
        "restart.max_delay",
        raw.max_delay,
        Duration::from_secs(30).max(delay),
    );
    if max_delay < delay {
        p.add(
            "restart.max_delay",
            format!(
                "must be at least restart.delay ({} < {})",
                format_duration(max_delay),
                format_duration(delay)
            ),
        );
    }
    RestartPolicy {
        mode,
        attempts,
        delay: format_duration(delay),
        max_delay: format_duration(max_delay),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::constraint::{ConstraintOp, ConstraintValue};
    use serde_json::json;

    fn minimal() -> Value {
        json!({"name": "web", "task": {"runtime": "process", "command": "/bin/true"}})
    }

    fn err(v: Value) -> SpecError {
        JobSpec::from_json(v).unwrap_err()
    }

    #[test]
    fn defaults_are_filled_in() {
        let s = JobSpec::from_json(minimal()).unwrap();
        assert_eq!(s.kind, JobType::Service);
        assert_eq!(s.count, Some(1));
        assert_eq!(s.task.resources.cpus, 0.25);
        assert_eq!(s.task.resources.memory_mb, 128);
        assert_eq!(s.restart.mode, RestartMode::Always);
        assert_eq!(s.restart.delay, "1s");
        assert_eq!(s.restart.max_delay, "30s");
        // Canonical: the canonical form parses to itself.
        assert_eq!(JobSpec::from_json(s.to_json()).unwrap(), s);
    }

    #[test]
    fn the_runtime_follows_from_the_image_and_is_written_out() {
        let process = json!({"name": "web", "task": {"command": "/bin/true"}});
        let s = JobSpec::from_json(process).unwrap();
        assert_eq!(s.task.runtime, Runtime::Process);
        assert_eq!(s.to_json()["task"]["runtime"], "process");

        let docker = json!({"name": "web", "task": {"image": "busybox"}});
        let s = JobSpec::from_json(docker).unwrap();
        assert_eq!(s.task.runtime, Runtime::Docker);
        assert_eq!(s.to_json()["task"]["runtime"], "docker");
        // The canonical form, runtime written, reads back the same.
        assert_eq!(JobSpec::from_json(s.to_json()).unwrap(), s);

        // Given, it is obeyed: an image on a process task is an error.
        let e = err(
            json!({"name": "web", "task": {"runtime": "process", "command": "x", "image": "busybox"}}),
        );
        assert_eq!(e.field(), "task.image");
        // Neither command nor image: the process task lacks its command.
        let e = err(json!({"name": "web", "task": {}}));
        assert_eq!(e.field(), "task.command");
        let e = err(json!({"name": "web"}));
        assert!(e.to_string().contains("task.command"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let mut v = minimal();
        v["task"]["resources"] = json!({"cpus": -1});
        let e = err(v);
        assert_eq!(e.to_string(), "task.resources.cpus: must be > 0 (got -1)");

        let mut v = minimal();
        v["task"]["resources"] = json!({"cpu": 1});
        let e = err(v);
        assert_eq!(e.field(), "task.resources.cpu");
        assert!(e.to_string().contains("unknown field"), "{e}");

        let mut v = minimal();
        v["task"]["runtime"] = json!("vm");
        assert_eq!(err(v).field(), "task.runtime");

        let e = err(json!({"name": "Web!", "task": {"runtime": "docker"}}));
        let fields: Vec<&str> = e.errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "task.image"]);

        let mut v = minimal();
        v["count"] = json!(-3);
        assert_eq!(
            err(v).to_string(),
            "count: must be between 0 and 100000 (got -3)"
        );

        let mut v = minimal();
        v["type"] = json!("system");
        v["count"] = json!(2);
        assert_eq!(err(v).field(), "count");

        let mut v = minimal();
        v["restart"] = json!({"delay": "10s", "max_delay": "1s"});
        assert_eq!(err(v).field(), "restart.max_delay");

        let mut v = minimal();
        v["constraints"] = json!([{"attribute": "dc", "op": "~", "value": "x"}]);
        assert_eq!(err(v).field(), "constraints[0].op");
    }

    #[test]
    fn toml_job_file() {
        let text = r#"
name = "web/frontend"
type = "service"
count = 3

[task]
runtime = "process"
command = "/usr/bin/python3"
args = ["-m", "http.server"]
env = { GREETING = "hi" }

[task.resources]
cpus = 0.5
memory_mb = 256

[[constraints]]
attribute = "dc"
op = "in"
value = ["east", "west"]

[restart]
mode = "on_failure"
attempts = 3
delay = "500ms"

[labels]
team = "web"
"#;
        let s = JobSpec::from_toml(text).unwrap();
        assert_eq!(s.name, "web/frontend");
        assert_eq!(s.count, Some(3));
        assert_eq!(s.task.env["GREETING"], "hi");
        assert_eq!(s.constraints[0].op, ConstraintOp::In);
        assert_eq!(s.restart.delay, "500ms");
        let broken = JobSpec::from_toml("name = \"x\"\n[task\n").unwrap_err();
        assert!(broken.to_string().contains("not valid TOML"), "{broken}");
    }

    #[test]
    fn names() {
        for ok in ["web", "web/frontend", "a-b/c1/d", "0"] {
            validate_name(ok).unwrap();
        }
        for bad in ["", "Web", "-a", "a-", "a//b", "a/", "a_b", "a b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn constraints_check_nodes() {
        let attrs = |k: &str| match k {
            "dc" => Some("east".to_owned()),
            "rack" => Some("r2".to_owned()),
            _ => None,
        };
        let c = |attribute: &str, op, value: Option<ConstraintValue>| Constraint {
            attribute: attribute.into(),
            op,
            value,
        };
        let one = |s: &str| Some(ConstraintValue::One(s.into()));
        assert!(c("dc", ConstraintOp::Eq, one("east")).check(attrs).is_ok());
        let e = c("dc", ConstraintOp::Eq, one("eu"))
            .check(attrs)
            .unwrap_err();
        assert_eq!(e, "constraint dc = eu failed (east)");
        assert!(
            c("label.rack", ConstraintOp::Regex, one("r[0-9]"))
                .check(attrs)
                .is_ok()
        );
        assert!(
            c("rack", ConstraintOp::Regex, one("r"))
                .check(attrs)
                .is_err()
        );
        assert!(c("gpu", ConstraintOp::Exists, None).check(attrs).is_err());
        assert!(c("gpu", ConstraintOp::Ne, one("x")).check(attrs).is_ok());
        let many = Some(ConstraintValue::Many(vec!["west".into(), "east".into()]));
        assert!(c("dc", ConstraintOp::In, many.clone()).check(attrs).is_ok());
        assert!(c("dc", ConstraintOp::NotIn, many).check(attrs).is_err());
    }
}
