//! The check behind `after`: a job that waits for others is not placed
//! until each was found ready, and this node finds it for the waiting
//! jobs it drives (those whose job key it owns; one node per job, as for
//! deployments), then records it in the waiting job's document, from
//! which every coordinator of the job's keys learns that it may place
//! them.
//!
//! Ready means: a batch job complete (every task of its current run
//! exited 0); a service with as many healthy tasks as its `count` (or a
//! count of 0); a system job with at least one task placed and every
//! placed one healthy. Health comes from the job's coordinators, through
//! the same lookup as service discovery ([`Services`]).
//!
//! The check runs every [`CHECK_EVERY`] while some job waits here, and at
//! once when the desired state changes. A job that never becomes ready
//! keeps the waiting one pending, which says what it waits for.

use std::time::Duration;

use shoal_gossip::NodeId;
use shoal_model::JobType;
use shoal_placement::{Health, TaskState};
use shoal_state::BatchStatus;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::clock::unix_ms;
use crate::core_task::CoreHandle;
use crate::services::Services;
use crate::state::{Ready, StateHandle};

/// How often the jobs waited for are looked at while some job waits.
pub const CHECK_EVERY: Duration = Duration::from_secs(1);

/// Runs until shutdown (or until the core or the replica stops).
pub async fn check_after(
    state: StateHandle,
    core: CoreHandle,
    services: Services,
    me: NodeId,
    shutdown: CancellationToken,
) {
    let mut events = state.subscribe();
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
            ev = events.recv() => {
                if matches!(ev, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
        }
        let Ok(waiting) = core.waiting().await else {
            return;
        };
        for (job, deps) in waiting {
            for dep in deps {
                match ready(&state, &services, &dep).await {
                    Ok(true) => {}
                    Ok(false) => continue,
                    Err(why) => {
                        debug!(job = %job, after = %dep, "{why}");
                        continue;
                    }
                }
                let r = Ready {
                    job: job.clone(),
                    dep: dep.clone(),
                    node: me.to_string(),
                    at_ms: unix_ms(),
                };
                match state.mark_ready(r).await {
                    Ok(true) => info!(job = %job, after = %dep, "ready: placing may begin"),
                    Ok(false) => {}
                    Err(e) => {
                        warn!(job = %job, after = %dep, error = %e, "could not record a job ready")
                    }
                }
            }
        }
    }
}

/// Whether job `dep` is ready (see the module's doc).
async fn ready(state: &StateHandle, services: &Services, dep: &str) -> Result<bool, String> {
    let view = state.job(dep).await.map_err(|e| e.to_string())?;
    let Some(view) = view.filter(|v| !v.deleted) else {
        return Ok(false);
    };
    let kind = view.kind.unwrap_or(JobType::Service);
    if kind == JobType::Batch {
        return Ok(view.status == Some(BatchStatus::Complete));
    }
    let want = view.count.unwrap_or(0);
    if kind == JobType::Service && want == 0 {
        return Ok(true);
    }
    let entry = services.lookup(dep).await.map_err(|e| e.to_string())?;
    let healthy = |s: &&shoal_placement::TaskStatus| {
        s.state == TaskState::Running && s.health == Health::Healthy
    };
    let statuses = entry.statuses();
    Ok(match kind {
        JobType::System => {
            let placed: Vec<_> = statuses.iter().filter(|s| s.node.is_some()).collect();
            !placed.is_empty() && placed.iter().all(healthy)
        }
        _ => statuses.iter().filter(healthy).count() >= want as usize,
    })
}
