//! The agent's edge of the trigger driver: every node runs one, and it
//! drives the node core's [`TriggerDriver`] over the triggers whose key
//! (`@trigger/<name>`) this node owns on the ring — the same ownership test
//! as `after` checks and deployments ([`crate::core_task::CoreHandle::drivers`]). No node is
//! the scheduler; when the ring changes, another node's driver finds that
//! it owns the trigger and resumes it from the ledger in the replicated
//! state. What a pass decides is the core's ([`shoal_core::triggers`]);
//! what is here is the I/O around it:
//!
//! - the inputs: the trigger records and the jobs from the replica, and,
//!   when the core wants the signals of a trigger
//!   ([`TriggerDriver::wants_signals`]), their values — `http_json` feeds
//!   fetched here (blocking `ureq` on the blocking pool, at most every
//!   `every`), label aggregates, free capacity and `nodes_alive` from the
//!   members' gossiped metadata, `tasks_pending`/`tasks_running` from the
//!   active jobs' coordinators;
//! - the outputs ([`shoal_core::Step`]), in order: the ledger written **before** it is
//!   acted on (the fire record), then each run started ([`start_run`]): a
//!   fired run's batch job is submitted like any job, named after the run
//!   id and created only if no job of that name exists (`if_version = 0`);
//!   a scale or an install is carried out; then finished runs beyond the
//!   trigger's `history` deleted.
//!
//! The loop sleeps until the earliest wake-up of the triggers it owns, and
//! at most [`POLL_EVERY`] (ownership and specs are looked at again then),
//! or until the desired state changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shoal_core::{RunJob, TriggerDriver, TriggerInput};
use shoal_gossip::NodeId;
use shoal_model::{JobSpec, JobType};
use shoal_placement::{NodeInfo, Resources, TaskState};
use shoal_state::{BatchStatus, JobView, TriggerOp, TriggerRecord, Write, WriteError, WriteOp};
pub use shoal_trigger::Ledger;
use shoal_trigger::{
    Action, Explain, Fire, Metric, Resource, RunResult, Signal, SignalValue, TriggerSpec,
    json_pointer_f64,
};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::ApiState;
use crate::clock::unix_ms;
use crate::services::Services;
use crate::state::{StateHandle, SubmitError, TriggerReply, TriggerRequest};

/// How often ownership and specs are looked at, at the latest.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
/// How long one `http_json` fetch may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The label naming the trigger on a run's job.
pub const TRIGGER_LABEL: &str = "shoal.trigger";
/// The label naming the run on a run's job.
pub const RUN_LABEL: &str = "shoal.run";
/// The label naming the parent run that started a run (`after`).
pub const PARENT_LABEL: &str = "shoal.parent_run";

/// Wall-clock now, from the node's clock.
pub fn now() -> DateTime<Utc> {
    DateTime::from_timestamp_millis(i64::try_from(unix_ms()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

/// What the API reads of the driver: the triggers this node evaluates.
#[derive(Clone, Default)]
pub struct Triggers {
    /// Locked only for the core's calls, never across an await.
    driver: Arc<Mutex<TriggerDriver>>,
}

impl Triggers {
    /// `explain` of trigger `name` if this node evaluates it now.
    pub fn explain(&self, name: &str) -> Option<Explain> {
        self.lock().explain(name, now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TriggerDriver> {
        self.driver.lock().expect("not poisoned")
    }
}

/// Job `j` as the trigger driver sees it.
fn run_job(j: &JobView) -> RunJob<'_> {
    let label = |key: &str| j.spec["labels"][key].as_str();
    RunJob {
        name: &j.name,
        trigger: label(TRIGGER_LABEL),
        run_id: label(RUN_LABEL).unwrap_or(&j.name),
        batch: j.kind == Some(JobType::Batch),
        run_version: j.run_version,
        result: match j.status {
            Some(BatchStatus::Complete) => Some(RunResult::Success),
            Some(BatchStatus::Failed) => Some(RunResult::Failed),
            _ => None,
        },
        created_at: &j.created_at,
        ended_ms: j.finished.values().map(|f| f.at_ms).max().unwrap_or(0),
    }
}

/// A run's job from `job` (the inline `[run]` or the named job of
/// `run_job`, renamed after the run): `SHOAL_RUN_ID`, the labels naming
/// the trigger, the run and the parent run that started it (`after`), and
/// the placement constraints of the conditions that held.
fn dress_run(mut job: JobSpec, spec: &TriggerSpec, fire: &Fire, parent: Option<&str>) -> JobSpec {
    job.task
        .env
        .insert("SHOAL_RUN_ID".to_owned(), fire.run_id.clone().into());
    job.labels
        .insert(TRIGGER_LABEL.to_owned(), spec.name.clone());
    job.labels.insert(RUN_LABEL.to_owned(), fire.run_id.clone());
    if let Some(p) = parent {
        job.labels.insert(PARENT_LABEL.to_owned(), p.to_owned());
    }
    for c in &fire.constraints {
        if !job.constraints.contains(c) {
            job.constraints.push(c.clone());
        }
    }
    job
}

/// The job `run_job = NAME` runs once more, as run `fire`: a copy of the
/// named batch job under the run's name (so that a run id is one job
/// whoever fires it, as for `[run]`); the named job itself is left as it
/// is.
fn template_run(
    view: Option<JobView>,
    name: &str,
    spec: &TriggerSpec,
    fire: &Fire,
    parent: Option<&str>,
) -> Result<JobSpec, String> {
    let view = view.filter(|v| !v.deleted).ok_or_else(|| {
        format!("run_job = {name:?}: no such job; submit it (a batch job) or change the trigger")
    })?;
    let mut job = JobSpec::from_json(view.spec.clone())
        .map_err(|e| format!("run_job = {name:?}: its spec does not validate: {e}"))?;
    if job.kind != shoal_model::JobType::Batch {
        return Err(format!(
            "run_job = {name:?} is a {} job; only a batch job can be run once more (use [scale] for a service)",
            job.kind.as_str()
        ));
    }
    job.name = shoal_trigger::run_job_name(&fire.run_id);
    job.labels.remove(TRIGGER_LABEL);
    job.labels.remove(RUN_LABEL);
    job.labels.remove(PARENT_LABEL);
    Ok(dress_run(job, spec, fire, parent))
}

/// The runs of trigger `name`: the jobs labelled with it.
pub fn runs_of<'a>(jobs: &'a [Arc<JobView>], name: &str) -> Vec<&'a JobView> {
    jobs.iter()
        .map(|j| &**j)
        .filter(|j| j.spec["labels"][TRIGGER_LABEL].as_str() == Some(name))
        .collect()
}

/// A run's id, from its job.
pub fn run_id_of(job: &JobView) -> String {
    job.spec["labels"][RUN_LABEL]
        .as_str()
        .unwrap_or(&job.name)
        .to_owned()
}

/// Deletes job `name` (a run's); one already gone is no error.
async fn delete_run_job(state: &StateHandle, name: String) -> Result<(), SubmitError> {
    let w = Write {
        by: None,
        name,
        op: WriteOp::Delete,
        if_version: None,
        now_ms: unix_ms(),
    };
    match state.write(w).await {
        Ok(_) | Err(SubmitError::Rejected(WriteError::NotFound(_))) => Ok(()),
        Err(e) => Err(e),
    }
}

/// Starts what a fired run does: submits its job (`Ok(false)`: a job of
/// that name exists already, so another evaluator started it).
pub async fn start_run(
    api: &ApiState,
    spec: &TriggerSpec,
    fire: &Fire,
    parent: Option<&str>,
) -> Result<bool, String> {
    let state = &api.state;
    for stop in &fire.stop {
        if let Err(e) = delete_run_job(state, shoal_trigger::run_job_name(stop)).await {
            warn!(run = %stop, error = %e, "could not stop a run (concurrency = replace)");
        }
    }
    let run = |job: JobSpec| Write {
        by: None,
        // Created only if absent: a run id is one job whoever fires it.
        name: job.name.clone(),
        op: WriteOp::Put(Box::new(job)),
        if_version: Some(0),
        now_ms: unix_ms(),
    };
    let write = match &spec.action {
        Action::Run(_) => {
            let job = spec.job_for_run(&fire.run_id).expect("a [run] action");
            run(dress_run(job, spec, fire, parent))
        }
        Action::RunJob(name) => {
            let view = state.job(name).await.map_err(|e| e.to_string())?;
            run(template_run(view, name, spec, fire, parent)?)
        }
        Action::Scale { job, count } => Write {
            by: None,
            name: job.clone(),
            op: WriteOp::Scale(*count),
            if_version: None,
            now_ms: unix_ms(),
        },
        Action::Install {
            package,
            instance,
            version,
            options,
        } => {
            return crate::api::installations::install_or_upgrade(
                api,
                package,
                instance,
                version.as_deref(),
                options,
            )
            .await
            .map_err(|e| format!("[install] {package} as {instance}: {e}"));
        }
    };
    match state.write(write).await {
        Ok(_) => Ok(true),
        Err(SubmitError::Rejected(WriteError::VersionMismatch { .. })) => Ok(false),
        Err(e) => Err(e.to_string()),
    }
}

/// The signals' values, gathered once per evaluation.
struct Signals {
    at: DateTime<Utc>,
    nodes: Vec<NodeInfo>,
    feeds: BTreeMap<(String, String), SignalValue>,
    tasks: Option<TaskCount>,
    job: Option<JobSpec>,
}

/// The cluster's task counts, as the coordinators of the active jobs
/// reported them: `(pending, running, jobs asked)` or why they are not
/// known, and when they were taken.
#[derive(Clone)]
struct TaskCount {
    at: DateTime<Utc>,
    counts: Result<(u64, u64, usize), String>,
}

/// Active jobs above which `tasks_pending` and `tasks_running` are not
/// counted (each sample asks every active job's coordinators).
pub const MAX_COUNTED_JOBS: usize = 1000;

/// Counts the tasks pending (waiting for a node, or lost with their node)
/// and running of every active job, through the service lookups (each
/// job's coordinators answer for its tasks).
async fn count_tasks(
    services: &Services,
    jobs: &[Arc<JobView>],
) -> Result<(u64, u64, usize), String> {
    let active: Vec<&str> = jobs
        .iter()
        .filter(|j| {
            !j.deleted
                && j.invalid.is_none()
                && !matches!(j.status, Some(BatchStatus::Complete | BatchStatus::Failed))
        })
        .map(|j| j.name.as_str())
        .collect();
    if active.len() > MAX_COUNTED_JOBS {
        return Err(format!(
            "{} active jobs, more than the {MAX_COUNTED_JOBS} whose coordinators are asked for their tasks",
            active.len()
        ));
    }
    let (mut pending, mut running) = (0, 0);
    for job in &active {
        let entry = services
            .lookup(job)
            .await
            .map_err(|e| format!("the tasks of {job}: {e}"))?;
        for t in entry.statuses() {
            match t.state {
                TaskState::Pending | TaskState::Lost => pending += 1,
                TaskState::Running => running += 1,
                _ => {}
            }
        }
    }
    Ok((pending, running, active.len()))
}

impl Signals {
    fn eligible(&self) -> Vec<&NodeInfo> {
        let demand = self
            .job
            .as_ref()
            .map(|j| Resources::of_task(&j.task.resources))
            .unwrap_or_default();
        self.nodes
            .iter()
            .filter(|n| match &self.job {
                Some(j) => {
                    (j.datacenters.is_empty() || j.datacenters.contains(&n.dc))
                        && n.eligible(j, &demand).is_ok()
                }
                None => !n.draining && n.free_class > 0,
            })
            .collect()
    }

    fn value(&self, signal: &Signal) -> SignalValue {
        let at = self.at;
        match signal {
            Signal::HttpJson { url, pointer, .. } => self
                .feeds
                .get(&(url.clone(), pointer.clone()))
                .cloned()
                .unwrap_or_else(|| SignalValue::unknown(signal.describe())),
            Signal::Label { aggregate, label } => {
                let nodes = self.eligible();
                let values: Vec<f64> = nodes
                    .iter()
                    .filter_map(|n| n.labels.get(label)?.trim().parse::<f64>().ok())
                    .collect();
                let source = format!(
                    "{} of {} nodes with room carry label {label}",
                    values.len(),
                    nodes.len()
                );
                match aggregate.apply(values) {
                    Some(v) => SignalValue::new(v, source, at),
                    None => SignalValue::error("no node with room carries the label", source, at),
                }
            }
            Signal::Free(r) => {
                let nodes = self.eligible();
                let eighths = |total: u64, n: &NodeInfo| total * u64::from(n.free_class) / 8;
                let sum: u64 = nodes
                    .iter()
                    .map(|n| match r {
                        Resource::Cpu => eighths(n.capacity.cpus_milli, n) / 1000,
                        Resource::Memory => eighths(n.capacity.memory_mb, n),
                        Resource::Disk => n.capacity.disk_mb,
                        Resource::Gpu => n.capacity.gpus,
                    })
                    .sum();
                #[allow(clippy::cast_precision_loss)]
                let v = sum as f64;
                SignalValue::new(
                    v,
                    format!(
                        "{} nodes with room, from their gossiped free class (eighths)",
                        nodes.len()
                    ),
                    at,
                )
            }
            Signal::Metric(Metric::NodesAlive) => {
                #[allow(clippy::cast_precision_loss)]
                let v = self.nodes.len() as f64;
                SignalValue::new(v, "members alive, as this node sees them", at)
            }
            Signal::Metric(m) => match &self.tasks {
                Some(TaskCount {
                    at,
                    counts: Ok((pending, running, jobs)),
                }) => {
                    let v = if *m == Metric::TasksPending {
                        *pending
                    } else {
                        *running
                    };
                    #[allow(clippy::cast_precision_loss)]
                    let v = v as f64;
                    SignalValue::new(
                        v,
                        format!(
                            "the tasks of {jobs} active jobs, as their coordinators report them"
                        ),
                        *at,
                    )
                }
                Some(TaskCount { at, counts: Err(e) }) => {
                    SignalValue::error(e.clone(), m.as_str(), *at)
                }
                None => SignalValue::unknown(m.as_str()),
            },
        }
    }
}

/// Fetches one feed (blocking: run it on the blocking pool).
fn fetch(url: &str, pointer: &str, at: DateTime<Utc>) -> SignalValue {
    let source = format!("{url}#{pointer}");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .tls_config(crate::http::tls())
        .timeout_global(Some(FETCH_TIMEOUT))
        .build()
        .into();
    let body = agent
        .get(url)
        .call()
        .map_err(|e| e.to_string())
        .and_then(|mut r| r.body_mut().read_to_string().map_err(|e| e.to_string()));
    match body.and_then(|b| serde_json::from_str::<Value>(&b).map_err(|e| e.to_string())) {
        Ok(doc) => match json_pointer_f64(&doc, pointer) {
            Ok(v) => SignalValue::new(v, source, at),
            Err(e) => SignalValue::error(e.to_string(), source, at),
        },
        Err(e) => SignalValue::error(e, source, at),
    }
}

/// The driver's own memory across passes.
#[derive(Default)]
struct Feeds {
    /// Each feed's last value, and when it may be fetched again.
    values: BTreeMap<(String, String), (SignalValue, DateTime<Utc>)>,
    /// The last task counts.
    tasks: Option<TaskCount>,
}

/// Runs until shutdown (or until the core or the replica stops).
pub async fn drive(api: ApiState, me: NodeId, shutdown: CancellationToken) {
    let mut events = api.state.subscribe();
    let mut feeds = Feeds::default();
    let mut sleep_for = POLL_EVERY;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(sleep_for) => {}
            ev = events.recv() => {
                if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
        }
        match pass(&api, me, &mut feeds).await {
            Ok(next) => {
                let until = next.map_or(POLL_EVERY, |at| {
                    (at - now()).to_std().unwrap_or(Duration::ZERO)
                });
                sleep_for = until.clamp(Duration::from_millis(50), POLL_EVERY);
            }
            Err(()) => return,
        }
    }
}

/// One pass over the triggers owned here; the earliest wake-up among
/// them. `Err`: the node is stopping.
async fn pass(api: &ApiState, me: NodeId, feeds: &mut Feeds) -> Result<Option<DateTime<Utc>>, ()> {
    let records = match api.state.trigger(TriggerRequest::List(false)).await {
        Ok(TriggerReply::List(r)) => r,
        Ok(_) => return Ok(None),
        Err(_) => return Err(()),
    };
    let keys: Vec<String> = records
        .iter()
        .map(|r| shoal_state::trigger_doc(&r.name))
        .collect();
    let drivers = api.core.drivers(keys).await.map_err(|_| ())?;
    let mine: Vec<&TriggerRecord> = records
        .iter()
        .zip(&drivers)
        .filter(|(_, d)| **d == Some(me))
        .map(|(r, _)| r)
        .collect();
    {
        let names: BTreeSet<&str> = mine.iter().map(|r| r.name.as_str()).collect();
        api.triggers.lock().retain(|n| names.contains(n));
    }
    if mine.is_empty() {
        return Ok(None);
    }
    let jobs = api.state.jobs_shared(false).await.map_err(|_| ())?;
    let runs: Vec<RunJob<'_>> = jobs
        .iter()
        .filter(|j| !j.deleted)
        .map(|j| run_job(j))
        .collect();
    let nodes: Vec<NodeInfo> = api
        .live
        .borrow()
        .iter()
        .map(|p| NodeInfo::from_meta(p.id, &p.meta))
        .collect();
    let mut earliest: Option<DateTime<Utc>> = None;
    for record in mine {
        let wake = evaluate_one(api, record, &jobs, &runs, &nodes, me, feeds).await;
        earliest = match (earliest, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

/// One pass of the core's driver over a trigger owned here, and what it
/// asks for carried out; its next wake-up.
async fn evaluate_one(
    api: &ApiState,
    record: &TriggerRecord,
    jobs: &[Arc<JobView>],
    runs: &[RunJob<'_>],
    nodes: &[NodeInfo],
    me: NodeId,
    feeds: &mut Feeds,
) -> Option<DateTime<Utc>> {
    let mut spec = match TriggerSpec::from_json(record.spec.clone()) {
        Ok(s) => s,
        Err(e) => {
            warn!(trigger = %record.name, error = %e, "a stored trigger does not validate; not evaluated");
            return None;
        }
    };
    if record.paused {
        spec.enabled = false;
    }
    let ledger = Ledger::from_value(&record.ledger);
    let input = TriggerInput {
        name: &record.name,
        spec: &spec,
        created_at_ms: record.created_at_ms,
        ledger: &ledger,
    };
    let wants = api.triggers.lock().wants_signals(now(), &input, runs);
    let signals = if wants {
        Some(gather(&api.services, &spec, jobs, nodes, feeds).await)
    } else {
        None
    };
    let value = signals.as_ref().map(|s| move |sig: &Signal| s.value(sig));
    let step = api.triggers.lock().pass(
        now(),
        &me.to_string(),
        &input,
        runs,
        value.as_ref().map(|f| f as &dyn Fn(&Signal) -> SignalValue),
    );
    if let Some(last) = &step.resumed {
        info!(trigger = %record.name, last_handled = ?last, "evaluating here (resumed from the ledger)");
    }
    // The fire record first: written (and persisted) before the run starts.
    if let Some((next, op)) = step.ledger {
        let value = serde_json::to_value(&next).unwrap_or(json!(null));
        let written = api
            .state
            .trigger(TriggerRequest::Write(
                record.name.clone(),
                TriggerOp::Ledger(value, op),
            ))
            .await;
        if let Err(e) = written {
            // No fire record, no run: whoever owns the trigger next
            // (this node, at its next pass) resumes from the ledger and
            // decides the slot again (within its deadline).
            warn!(trigger = %record.name, error = %e, "could not write the ledger; runs not started");
            api.triggers.lock().forget(&record.name);
            return step.wake;
        }
    }
    for start in &step.starts {
        let (f, parent) = (&start.fire, start.parent.as_deref());
        match start_run(api, &spec, f, parent).await {
            Ok(true) => info!(trigger = %record.name, run = %f.run_id, "fired"),
            Ok(false) => {
                info!(trigger = %record.name, run = %f.run_id, "fired already (its job exists)")
            }
            Err(e) => {
                warn!(trigger = %record.name, run = %f.run_id, error = %e, "could not start the run")
            }
        }
    }
    for name in step.delete {
        if let Err(e) = delete_run_job(&api.state, name.clone()).await {
            warn!(trigger = %record.name, job = %name, error = %e, "could not delete a run beyond the trigger's history");
        }
    }
    step.wake
}

/// The values of the signals of `spec`'s conditions, now: the feeds that
/// are due fetched first, the task counts taken if stale.
async fn gather(
    services: &Services,
    spec: &TriggerSpec,
    jobs: &[Arc<JobView>],
    nodes: &[NodeInfo],
    feeds: &mut Feeds,
) -> Signals {
    let t = now();
    for c in &spec.when {
        if let Signal::HttpJson {
            url,
            pointer,
            every,
        } = &c.signal
        {
            let key = (url.clone(), pointer.clone());
            let due = feeds.values.get(&key).is_none_or(|(_, next)| *next <= t);
            if due {
                let (u, p) = key.clone();
                let v = tokio::task::spawn_blocking(move || fetch(&u, &p, now()))
                    .await
                    .unwrap_or_else(|e| SignalValue::error(e.to_string(), url.clone(), t));
                let next = now() + chrono::TimeDelta::from_std(*every).unwrap_or_default();
                feeds.values.insert(key, (v, next));
            }
        }
    }
    let counted = spec.when.iter().any(|c| {
        matches!(
            c.signal,
            Signal::Metric(Metric::TasksPending | Metric::TasksRunning)
        )
    });
    let stale = feeds.tasks.as_ref().is_none_or(|c| {
        (t - c.at).to_std().unwrap_or_default() >= shoal_trigger::signal::DEFAULT_SAMPLE_EVERY
    });
    if counted && stale {
        feeds.tasks = Some(TaskCount {
            at: now(),
            counts: count_tasks(services, jobs).await,
        });
    }
    Signals {
        tasks: feeds.tasks.clone(),
        at: now(),
        nodes: nodes.to_vec(),
        feeds: feeds
            .values
            .iter()
            .map(|(k, (v, _))| (k.clone(), v.clone()))
            .collect(),
        job: spec.job_for_run(&format!("{}@probe", spec.name)),
    }
}
