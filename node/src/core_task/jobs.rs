//! Feeds the desired state's jobs to the core: every job at start-up and
//! after missed changes, then the jobs named by each change (a batch
//! task's record of how it finished is such a change). A task of its
//! own, so that reading the replica never holds up the core's loop (whose
//! turns gossip depends on). Beside it, the task that writes those
//! records into the desired state when the core asks.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use shoal_core::placeable;
use shoal_placement::{DeployStep, Finished, Job, Outcome};
use shoal_state::{JobView, TaskOutcome};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::CoreHandle;
use crate::state::{DeployReply, DeployRequest, Record, StateHandle};

fn job_of(view: JobView) -> Option<Job> {
    let mut job = placeable(
        &view.spec,
        view.version,
        view.deleted,
        view.invalid.is_some(),
    )?;
    job.run_version = view.run_version;
    job.deployment = view.deployment.map(Arc::new);
    if !view.waiting_for.is_empty() {
        job.waiting = Arc::new(view.waiting_for);
    }
    if !view.finished.is_empty() {
        let finished: BTreeMap<u32, Finished> = view
            .finished
            .into_iter()
            .map(|(i, o)| {
                let f = Finished {
                    ok: o.ok,
                    node: o.node.parse().ok(),
                    exit_code: o.exit_code,
                    at_ms: o.at_ms,
                };
                (i, f)
            })
            .collect();
        job.finished = Arc::new(finished);
    }
    Some(job)
}

/// Writes into the desired state each batch task's end that the core asks
/// to record, until shutdown. A record that fails to be written is
/// logged: the task's coordinator asks again when it next learns the
/// task's exit from a lease (after a ring change), and the holder keeps
/// renewing that lease until the record reaches it.
pub async fn record_finished(
    state: StateHandle,
    mut rx: mpsc::Receiver<Outcome>,
    shutdown: CancellationToken,
) {
    loop {
        let o = tokio::select! {
            () = shutdown.cancelled() => return,
            o = rx.recv() => match o {
                Some(o) => o,
                None => return,
            },
        };
        let Some(index) = o.key.index_number() else {
            continue;
        };
        let record = Record {
            job: o.key.job.clone(),
            index,
            outcome: TaskOutcome {
                ok: o.ok,
                version: o.job_version,
                node: o.node.to_string(),
                at_ms: o.at_ms,
                exit_code: o.exit_code,
                reason: o.reason,
            },
        };
        let what = if o.ok { "complete" } else { "failed" };
        match state.record(record).await {
            Ok(true) => info!(task = %o.key, node = %o.node, "batch task {what}: recorded"),
            Ok(false) => debug!(task = %o.key, "batch task {what}: already recorded"),
            Err(e) => {
                warn!(task = %o.key, error = %e, "could not record that a batch task finished")
            }
        }
    }
}

/// Writes into the desired state each step of the rolling deployments
/// this node drives, until shutdown. A step that fails to be written is
/// logged: the driver decides it again a few seconds later.
pub async fn record_deployments(
    state: StateHandle,
    mut rx: mpsc::Receiver<DeployStep>,
    shutdown: CancellationToken,
) {
    loop {
        let step = tokio::select! {
            () = shutdown.cancelled() => return,
            s = rx.recv() => match s {
                Some(s) => s,
                None => return,
            },
        };
        let (job, version) = (step.job.clone(), step.version);
        let status = step.patch.status;
        let description = step.patch.description.clone().unwrap_or_default();
        match state.deploy(DeployRequest::Step(step)).await {
            Ok(DeployReply::Stepped(true)) => match status {
                Some(s) => info!(job = %job, version, status = %s, "{description}"),
                None => debug!(job = %job, version, "deployment: {description}"),
            },
            Ok(_) => debug!(job = %job, version, "deployment step: nothing to write"),
            Err(e) => warn!(job = %job, version, error = %e, "could not write a deployment step"),
        }
    }
}

/// Runs until shutdown (or until the state or the core stops).
pub async fn feed_jobs(state: StateHandle, core: CoreHandle, shutdown: CancellationToken) {
    // Subscribed before the first read, so no change falls in between.
    let mut events = state.subscribe();
    if send_all(&state, &core).await.is_err() {
        return;
    }
    loop {
        let ev = tokio::select! {
            () = shutdown.cancelled() => return,
            ev = events.recv() => ev,
        };
        // Several changes at once make one update of the jobs they name;
        // missed changes (a lagging receiver), one update of every job.
        let mut names = BTreeSet::new();
        let mut lagged = false;
        match ev {
            Ok(ev) => {
                names.insert(ev.name().to_owned());
            }
            Err(RecvError::Lagged(_)) => lagged = true,
            Err(RecvError::Closed) => return,
        }
        loop {
            match events.try_recv() {
                Ok(ev) => {
                    names.insert(ev.name().to_owned());
                }
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        let sent = if lagged {
            send_all(&state, &core).await
        } else {
            send_named(&state, &core, names.into_iter().collect()).await
        };
        if sent.is_err() {
            return;
        }
    }
}

/// Stopped: the state task or the core is gone.
struct Gone;

async fn send_all(state: &StateHandle, core: &CoreHandle) -> Result<(), Gone> {
    let views = state.jobs(true).await.map_err(|_| Gone)?;
    let jobs: Vec<Job> = views.into_iter().filter_map(job_of).collect();
    debug!(jobs = jobs.len(), "every job handed to the core");
    core.all_jobs(jobs).await.map_err(|_| Gone)
}

async fn send_named(
    state: &StateHandle,
    core: &CoreHandle,
    names: Vec<String>,
) -> Result<(), Gone> {
    let views = state.jobs_named(names).await.map_err(|_| Gone)?;
    let mut changed = Vec::new();
    let mut removed = Vec::new();
    for (name, view) in views {
        match view.and_then(job_of) {
            Some(job) => changed.push(job),
            None => removed.push(name),
        }
    }
    core.jobs(changed, removed).await.map_err(|_| Gone)
}
