//! The trigger driver: every node runs one, and it evaluates the triggers
//! whose key (`@trigger/<name>`) this node owns on the ring — the same
//! ownership test as `after` checks and deployments
//! ([`CoreHandle::drivers`]). No node is the scheduler; when the ring
//! changes, another node's driver finds that it owns the trigger and
//! resumes it from the ledger in the replicated state.
//!
//! One pass, for each trigger owned here:
//!
//! 1. its state ([`TriggerState`]) is the one kept here since this node
//!    took it over, or, the first time, [`TriggerState::resume`]d from the
//!    last slot handled in the trigger's ledger (whoever wrote it);
//! 2. when its wake-up time has come ([`TriggerState::next_wake`]), or a
//!    run of one of its `after` parents ended ([`parent_ends`]), the
//!    signals are gathered — `http_json` feeds fetched here (blocking
//!    `ureq` on the blocking pool, at most every `every`), label
//!    aggregates, free capacity and `nodes_alive` from the members'
//!    gossiped metadata, `tasks_pending`/`tasks_running` from the active
//!    jobs' coordinators — and [`TriggerState::evaluate`] and
//!    [`TriggerState::parent_finished`] decide;
//! 3. a decision is written to the ledger **before** it is acted on (the
//!    fire record), then the run is started ([`start_run`]): a fired run's
//!    batch job is submitted like any job, named after the run id and
//!    created only if no job of that name exists (`if_version = 0`); a
//!    scale or an install is carried out;
//! 4. runs whose batch job completed or failed are reported back
//!    ([`TriggerState::run_finished`]) and recorded, and finished runs
//!    beyond the trigger's `history` are deleted.
//!
//! The loop sleeps until the earliest wake-up of the triggers it owns, and
//! at most [`POLL_EVERY`] (ownership and specs are looked at again then),
//! or until the desired state changes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shoal_gossip::NodeId;
use shoal_model::{JobSpec, JobType};
use shoal_placement::{NodeInfo, Resources, TaskState};
use shoal_state::{BatchStatus, JobView, TriggerOp, TriggerRecord, Write, WriteError, WriteOp};
use shoal_trigger::{
    Action, Decision, Explain, Fire, HistoryLimits, Metric, Outcome, OutcomeKind, Resource,
    RunResult, Signal, SignalValue, TriggerSpec, TriggerState, json_pointer_f64,
};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::api::ApiState;
use crate::clock::unix_ms;
use crate::core_task::CoreHandle;
use crate::services::Services;
use crate::state::{Peer, StateHandle, SubmitError, TriggerReply, TriggerRequest};

/// How often ownership and specs are looked at, at the latest.
pub const POLL_EVERY: Duration = Duration::from_secs(1);
pub use shoal_trigger::LEDGER_OUTCOMES;
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

/// A trigger this node evaluates.
struct Owned {
    spec_json: Value,
    spec: TriggerSpec,
    state: TriggerState,
    wake: Option<DateTime<Utc>>,
    /// Runs fired and not yet seen finished.
    unfinished: BTreeSet<String>,
}

/// What the API reads of the driver: the triggers this node evaluates.
#[derive(Clone, Default)]
pub struct Triggers {
    owned: Arc<Mutex<BTreeMap<String, Owned>>>,
}

impl Triggers {
    /// `explain` of trigger `name` if this node evaluates it now.
    pub fn explain(&self, name: &str) -> Option<Explain> {
        let owned = self.owned.lock().expect("not poisoned");
        let o = owned.get(name)?;
        Some(o.state.explain(now(), &o.spec))
    }
}

/// The ledger a trigger's evaluator keeps in the replicated state.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Ledger {
    /// The last slot handled by anyone: what a new owner resumes from.
    #[serde(default)]
    pub last_handled: Option<String>,
    /// The node that wrote it.
    #[serde(default)]
    pub evaluated_by: Option<String>,
    /// When it was last evaluated.
    #[serde(default)]
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Each condition as it stood then.
    #[serde(default)]
    pub conditions: Vec<shoal_trigger::ConditionReport>,
    /// Recent outcomes, oldest first (at most [`LEDGER_OUTCOMES`]).
    #[serde(default)]
    pub outcomes: Vec<Outcome>,
}

impl Ledger {
    /// The ledger of a stored trigger (empty if none yet).
    pub fn of(record: &TriggerRecord) -> Ledger {
        serde_json::from_value(record.ledger.clone()).unwrap_or_default()
    }

    /// Merges `outcomes` in (the newer account of a slot wins), oldest
    /// first, bounded.
    pub fn merge(&mut self, outcomes: impl IntoIterator<Item = Outcome>) {
        for o in outcomes {
            match self.outcomes.iter_mut().find(|e| e.slot == o.slot) {
                Some(e) => *e = o,
                None => self.outcomes.push(o),
            }
        }
        self.outcomes.sort_by_key(|a| a.decided_at);
        let extra = self.outcomes.len().saturating_sub(LEDGER_OUTCOMES);
        self.outcomes.drain(..extra);
    }
}

/// A run's job from `job` (the inline `[run]` or the named job of
/// `run_job`, renamed after the run): `SHOAL_RUN_ID`, the labels naming
/// the trigger, the run and the parent run that started it (`after`), and
/// the placement constraints of the conditions that held.
fn dress_run(mut job: JobSpec, spec: &TriggerSpec, fire: &Fire, parent: Option<&str>) -> JobSpec {
    job.task
        .env
        .insert("SHOAL_RUN_ID".to_owned(), fire.run_id.clone());
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

/// The jobs of finished runs that `history` does not keep: all but the
/// newest `history.success` complete ones and `history.failed` failed
/// ones (by creation time). Runs still running are kept.
pub fn runs_beyond_history(runs: &[&JobView], history: &HistoryLimits) -> Vec<String> {
    let mut finished: Vec<&JobView> = runs
        .iter()
        .copied()
        .filter(|j| matches!(j.status, Some(BatchStatus::Complete | BatchStatus::Failed)))
        .collect();
    finished.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(b.name.cmp(&a.name)));
    let (mut ok, mut failed) = (0u32, 0u32);
    finished
        .into_iter()
        .filter(|j| {
            let n = if j.status == Some(BatchStatus::Complete) {
                &mut ok
            } else {
                &mut failed
            };
            *n += 1;
            let keep = if j.status == Some(BatchStatus::Complete) {
                history.success
            } else {
                history.failed
            };
            *n > keep
        })
        .map(|j| j.name.clone())
        .collect()
}

/// A run's id, from its job.
pub fn run_id_of(job: &JobView) -> String {
    job.spec["labels"][RUN_LABEL]
        .as_str()
        .unwrap_or(&job.name)
        .to_owned()
}

/// How far back a parent's run may have ended for an `after` trigger to
/// still start on it: bounds what a new evaluator (which does not know
/// what the previous one handled beyond the ledger and the runs' jobs)
/// looks at.
pub const AFTER_WINDOW: Duration = Duration::from_secs(3600);

/// The runs of `parent` that ended at or after `since_ms` (ms since the
/// epoch), oldest first, as `(run id, succeeded)`: a trigger's runs (the
/// jobs labelled with it), and a batch job's current run
/// (`<job>@v<version>`, the version its run began at). A run that has not
/// ended, or whose end is unknown, is not listed.
pub fn parent_ends(jobs: &[Arc<JobView>], parent: &str, since_ms: u64) -> Vec<(String, bool)> {
    let mut out: Vec<(u64, String, bool)> = Vec::new();
    for j in jobs {
        if j.deleted {
            continue;
        }
        let label = j.spec["labels"][TRIGGER_LABEL].as_str();
        let run = if label == Some(parent) {
            run_id_of(j)
        } else if j.name == parent && label.is_none() && j.kind == Some(JobType::Batch) {
            format!("{}@v{}", j.name, j.run_version)
        } else {
            continue;
        };
        let ok = match j.status {
            Some(BatchStatus::Complete) => true,
            Some(BatchStatus::Failed) => false,
            _ => continue,
        };
        let at = j.finished.values().map(|f| f.at_ms).max().unwrap_or(0);
        if at >= since_ms && at > 0 {
            out.push((at, run, ok));
        }
    }
    out.sort();
    out.into_iter().map(|(_, run, ok)| (run, ok)).collect()
}

/// The parents' run ends an `after` trigger has not handled yet, as
/// `(parent, parent run, succeeded)`: those that match an edge's `on`,
/// ended after the trigger was created and within [`AFTER_WINDOW`], and
/// whose child run is neither a job nor in the ledger.
fn unhandled_parent_ends(
    spec: &TriggerSpec,
    record: &TriggerRecord,
    jobs: &[Arc<JobView>],
    runs: &[&JobView],
    ledger: &Ledger,
) -> Vec<(String, String, bool)> {
    let handled: BTreeSet<String> = runs
        .iter()
        .map(|j| run_id_of(j))
        .chain(ledger.outcomes.iter().map(|o| o.slot.clone()))
        .collect();
    let since = record
        .created_at_ms
        .max(unix_ms().saturating_sub(AFTER_WINDOW.as_millis() as u64));
    spec.after
        .iter()
        .flat_map(|a| {
            parent_ends(jobs, &a.job, since)
                .into_iter()
                .filter(|(_, ok)| a.on.matches(*ok))
                .map(|(run, ok)| (a.job.clone(), run, ok))
        })
        .filter(|(_, run, _)| !handled.contains(&shoal_trigger::after_run_id(&spec.name, run)))
        .collect()
}

/// Deletes job `name` (a run's); one already gone is no error.
async fn delete_run_job(state: &StateHandle, name: String) -> Result<(), SubmitError> {
    let w = Write {
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
    let (triggers, state, core, services, live) = (
        api.triggers.clone(),
        api.state.clone(),
        api.core.clone(),
        api.services.clone(),
        api.live.clone(),
    );
    let mut events = state.subscribe();
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
        match pass(
            &api, &triggers, &state, &core, &services, &live, me, &mut feeds,
        )
        .await
        {
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

/// One pass over the triggers (see the module's doc); the earliest
/// wake-up of those owned here. `Err`: the node is stopping.
#[allow(clippy::too_many_arguments)]
async fn pass(
    api: &ApiState,
    triggers: &Triggers,
    state: &StateHandle,
    core: &CoreHandle,
    services: &Services,
    live: &watch::Receiver<Arc<Vec<Peer>>>,
    me: NodeId,
    feeds: &mut Feeds,
) -> Result<Option<DateTime<Utc>>, ()> {
    let records = match state.trigger(TriggerRequest::List(false)).await {
        Ok(TriggerReply::List(r)) => r,
        Ok(_) => return Ok(None),
        Err(_) => return Err(()),
    };
    let keys: Vec<String> = records
        .iter()
        .map(|r| shoal_state::trigger_doc(&r.name))
        .collect();
    let drivers = core.drivers(keys).await.map_err(|_| ())?;
    let mine: Vec<&TriggerRecord> = records
        .iter()
        .zip(&drivers)
        .filter(|(_, d)| **d == Some(me))
        .map(|(r, _)| r)
        .collect();
    // Triggers no longer owned here are forgotten: if this node owns one
    // again later, it resumes from the ledger like any new owner.
    {
        let names: BTreeSet<&str> = mine.iter().map(|r| r.name.as_str()).collect();
        let mut owned = triggers.owned.lock().expect("not poisoned");
        owned.retain(|n, _| names.contains(n.as_str()));
    }
    if mine.is_empty() {
        return Ok(None);
    }
    let jobs = state.jobs_shared(false).await.map_err(|_| ())?;
    let nodes: Vec<NodeInfo> = live
        .borrow()
        .iter()
        .map(|p| NodeInfo::from_meta(p.id, &p.meta))
        .collect();
    let mut earliest: Option<DateTime<Utc>> = None;
    for record in mine {
        let wake = evaluate_one(
            api, triggers, state, services, record, &jobs, &nodes, me, feeds,
        )
        .await;
        earliest = match (earliest, wake) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(earliest)
}

/// Evaluates one trigger owned here if it is due; its next wake-up.
#[allow(clippy::too_many_arguments)]
async fn evaluate_one(
    api: &ApiState,
    triggers: &Triggers,
    state: &StateHandle,
    services: &Services,
    record: &TriggerRecord,
    jobs: &[Arc<JobView>],
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
    let ledger = Ledger::of(record);
    let runs = runs_of(jobs, &record.name);
    let active: Vec<String> = runs
        .iter()
        .filter(|j| !matches!(j.status, Some(BatchStatus::Complete | BatchStatus::Failed)))
        .map(|j| run_id_of(j))
        .collect();
    let t = now();
    // Take (or resume) the state, without holding the lock across awaits.
    let mut o = {
        let mut owned = triggers.owned.lock().expect("not poisoned");
        let stale = owned
            .get(&record.name)
            .is_some_and(|o| o.spec_json != record.spec || o.spec.enabled != spec.enabled);
        if stale {
            owned.remove(&record.name);
        }
        match owned.remove(&record.name) {
            Some(o) => o,
            None => {
                let created = DateTime::from_timestamp_millis(
                    i64::try_from(record.created_at_ms).unwrap_or(0),
                )
                .unwrap_or_default();
                let state = TriggerState::resume(&spec, created, ledger.last_handled.as_deref());
                info!(trigger = %record.name, last_handled = ?ledger.last_handled, "evaluating here (resumed from the ledger)");
                let unfinished = ledger
                    .outcomes
                    .iter()
                    .filter_map(|o| match &o.kind {
                        OutcomeKind::Fired {
                            run_id,
                            result: None,
                            ..
                        } => Some(run_id.clone()),
                        _ => None,
                    })
                    .collect();
                Owned {
                    spec_json: record.spec.clone(),
                    spec: spec.clone(),
                    state,
                    wake: None,
                    unfinished,
                }
            }
        }
    };
    let mut what: Vec<&'static str> = Vec::new();
    let mut changed: Vec<Outcome> = Vec::new();
    // Runs that ended.
    for run in &runs {
        let id = run_id_of(run);
        let result = match run.status {
            Some(BatchStatus::Complete) => RunResult::Success,
            Some(BatchStatus::Failed) => RunResult::Failed,
            _ => continue,
        };
        let in_ledger = ledger.outcomes.iter().any(
            |e| matches!(&e.kind, OutcomeKind::Fired { run_id, result: None, .. } if *run_id == id),
        );
        if o.unfinished.remove(&id) || in_ledger {
            o.state.run_finished(&spec, &id, result);
            what.push("finished");
            let mut entry = ledger
                .outcomes
                .iter()
                .chain(o.state.history())
                .filter(|e| {
                    e.slot == id
                        || matches!(&e.kind, OutcomeKind::Fired { run_id, .. } if *run_id == id)
                })
                .last()
                .cloned();
            if let Some(e) = &mut entry
                && let OutcomeKind::Fired { result: r, .. } = &mut e.kind
            {
                *r = Some(result);
            }
            changed.extend(entry);
        }
    }
    let mut fires: Vec<Fire> = Vec::new();
    // The child runs of `after` fires, with the parent run that started each.
    let mut parents: BTreeMap<String, String> = BTreeMap::new();
    let ends = if spec.after.is_empty() {
        Vec::new()
    } else {
        unhandled_parent_ends(&spec, record, jobs, &runs, &ledger)
    };
    let due = o.wake.is_none_or(|w| w <= t);
    if due || !ends.is_empty() {
        // Gather the signals: feeds due are fetched first.
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
        let signals = Signals {
            tasks: feeds.tasks.clone(),
            at: now(),
            nodes: nodes.to_vec(),
            feeds: feeds
                .values
                .iter()
                .map(|(k, (v, _))| (k.clone(), v.clone()))
                .collect(),
            job: spec.job_for_run(&format!("{}@probe", spec.name)),
        };
        let t = now();
        let mut decisions = Vec::new();
        for (parent, run, ok) in &ends {
            let d =
                o.state
                    .parent_finished(t, &spec, parent, run, *ok, &|s| signals.value(s), &active);
            if let Some(Decision::Fire(f)) = &d {
                parents.insert(f.run_id.clone(), run.clone());
            }
            decisions.extend(d);
        }
        if due {
            decisions.extend(o.state.evaluate(t, &spec, &|s| signals.value(s), &active));
        }
        for d in decisions {
            match d {
                Decision::Fire(f) => {
                    what.push("fired");
                    o.unfinished.insert(f.run_id.clone());
                    fires.push(f);
                }
                Decision::Record(outcome) => {
                    what.push(match outcome.kind {
                        OutcomeKind::Missed { .. } => "missed",
                        _ => "skipped",
                    });
                    changed.push(outcome);
                }
            }
        }
        o.wake = o.state.next_wake(now(), &spec);
    }
    // The fire record first: written (and persisted) before the run starts.
    if !what.is_empty() {
        let fired: Vec<Outcome> = o
            .state
            .history()
            .filter(|h| {
                fires.iter().any(
                    |f| matches!(&h.kind, OutcomeKind::Fired { run_id, .. } if *run_id == f.run_id),
                )
            })
            .cloned()
            .collect();
        let mut next = ledger.clone();
        next.merge(changed.into_iter().chain(fired));
        if let Some(l) = o.state.last_handled() {
            next.last_handled = Some(l.to_owned());
        }
        let explain = o.state.explain(now(), &spec);
        next.evaluated_by = Some(me.to_string());
        next.evaluated_at = explain.evaluated_at;
        next.conditions = explain.conditions;
        let op = what.first().copied().unwrap_or("changed").to_owned();
        let value = serde_json::to_value(&next).unwrap_or(json!(null));
        let written = state
            .trigger(TriggerRequest::Write(
                record.name.clone(),
                TriggerOp::Ledger(value, op),
            ))
            .await;
        if let Err(e) = written {
            // No fire record, no run: the slot is retried by whoever owns
            // the trigger next (within its deadline).
            warn!(trigger = %record.name, error = %e, "could not write the ledger; runs not started");
            return o.wake;
        }
    }
    for f in &fires {
        let parent = parents.get(&f.run_id).map(String::as_str);
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
    // Finished runs beyond `history` go, oldest first: a trigger that
    // fires every few seconds would otherwise leave a job per run forever.
    // After the ledger write, so that their results are recorded first.
    for name in runs_beyond_history(&runs, &spec.history) {
        if let Err(e) = delete_run_job(state, name.clone()).await {
            warn!(trigger = %record.name, job = %name, error = %e, "could not delete a run beyond the trigger's history");
        }
    }
    let wake = o.wake;
    triggers
        .owned
        .lock()
        .expect("not poisoned")
        .insert(record.name.clone(), o);
    wake
}
