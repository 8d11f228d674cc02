//! Feeds the desired state's jobs to the core: every job at start-up and
//! after missed changes, then the jobs named by each change. A task of its
//! own, so that reading the replica never holds up the core's loop (whose
//! turns gossip depends on).

use std::collections::BTreeSet;

use shoal_core::placeable;
use shoal_placement::Job;
use shoal_state::JobView;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::CoreHandle;
use crate::state::StateHandle;

fn job_of(view: JobView) -> Option<Job> {
    placeable(
        &view.spec,
        view.version,
        view.deleted,
        view.invalid.is_some(),
    )
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
