//! The driver role: rolling deployments of the jobs whose job key this
//! node owns.
//!
//! A deployment's step lives in the job's replicated document (which
//! indexes are being replaced, which are done; see
//! `shoal_model::Deployment`), so every node knows it and the coordinators
//! of the job's keys act on it: for an index being replaced they place a
//! new task beside the old one and, once the index is done, stop the old
//! one (`coordinator/mod.rs`). What moves the step on is decided by one
//! node, the **driver**: the owner on the ring of the job's key `job/0`
//! (the job key). It hears from the coordinators of the indexes being
//! replaced how each new task is doing ([`Msg::Progress`], with each lease
//! renewal), and decides:
//!
//! - an index whose new task has been healthy for `min_healthy_time` is
//!   done (with no old task beside it, healthy is enough); the next index
//!   starts, keeping at most `max_parallel` in flight;
//! - with `canary = N`, indexes `0..N` are replaced first and the rest
//!   wait until the deployment is promoted (`auto_promote`, or by hand);
//!   a canary's old task keeps running until then;
//! - a new task not healthy long enough within `healthy_deadline` of its
//!   index starting fails the deployment (with `auto_revert`, the node
//!   writes the last version that deployed healthily as a new version);
//! - every index done: successful.
//!
//! Contract: what the driver keeps is soft state (when it saw each index
//! start, since when each new task is healthy). A node that becomes the
//! driver (the previous one died, or the ring moved the job key) starts
//! those clocks afresh from what it hears: an index in flight gets a
//! whole `healthy_deadline` again, never less. Two nodes may drive at
//! once while their views of the ring differ; each writes only the fields
//! it changes, and they decide alike from the same record and the same
//! reports, so the deployment still never has more than `max_parallel`
//! indexes in flight once the record merges.
//!
//! [`Msg::Progress`]: super::Msg::Progress

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::Instant;
use shoal_model::{Deployment, DeploymentPatch, DeploymentStatus};

use super::health::Health;
use super::msg::{DeployStep, Event};
use super::{Job, Shared, earliest};
use crate::types::TaskKey;

/// While the record on this node does not show the last step written, no
/// step is decided, for this long after it was written.
const REWRITE_AFTER: Duration = Duration::from_secs(5);

/// What the driver saw of one index being replaced.
#[derive(Clone, Debug, Default)]
struct Seen {
    /// When this driver first saw the index in flight.
    since: Option<Instant>,
    /// Since when its new task is healthy, continuously.
    healthy_since: Option<Instant>,
    /// The new task's last reported health.
    health: Health,
    /// An old task still runs beside the new one.
    replacing: bool,
    /// It was ready once (healthy long enough): a canary that waits for
    /// promotion stays ready.
    ready: bool,
}

/// One deployment this node drives.
#[derive(Clone, Debug)]
struct Drive {
    version: u64,
    seen: BTreeMap<u32, Seen>,
    /// The last step written, and when.
    sent: Option<(DeploymentPatch, Instant)>,
}

impl Drive {
    fn new(version: u64) -> Drive {
        Drive {
            version,
            seen: BTreeMap::new(),
            sent: None,
        }
    }
}

/// The deployments this node drives.
#[derive(Debug, Default)]
pub(super) struct Deployer {
    drives: BTreeMap<String, Drive>,
}

impl Deployer {
    /// How many deployments this node drives now.
    pub(super) fn len(&self) -> usize {
        self.drives.len()
    }

    /// Whether this node drives a deployment of `job`.
    pub(super) fn drives(&self, job: &str) -> bool {
        self.drives.contains_key(job)
    }

    /// A coordinator's report on the new task of `key`, which deployment
    /// `version` replaces.
    pub(super) fn on_progress(
        &mut self,
        now: Instant,
        key: &TaskKey,
        version: u64,
        health: Health,
        replacing: bool,
    ) {
        let Some(i) = key.index_number() else {
            return;
        };
        let drive = self
            .drives
            .entry(key.job.clone())
            .or_insert_with(|| Drive::new(version));
        if drive.version < version {
            *drive = Drive::new(version);
        } else if drive.version > version {
            return;
        }
        let seen = drive.seen.entry(i).or_default();
        seen.health = health;
        seen.replacing = replacing;
        if health == Health::Healthy {
            seen.healthy_since.get_or_insert(now);
        } else {
            seen.healthy_since = None;
        }
    }

    /// Moves on every deployment this node drives; when time alone next
    /// changes one.
    pub(super) fn drive(&mut self, shared: &mut Shared, now: Instant) -> Option<Instant> {
        let mine: Vec<(Job, Arc<Deployment>)> = shared
            .jobs
            .jobs()
            .filter_map(|j| {
                let d = shared.deployment(&j.spec.name)?;
                Some((j.clone(), Arc::new(d.clone())))
            })
            .filter(|(j, _)| shared.driver_of(&j.spec.name) == Some(shared.me))
            .collect();
        let mut next = None;
        let mut driven = BTreeSet::new();
        for (job, d) in mine {
            let name = job.spec.name.clone();
            driven.insert(name.clone());
            let drive = self
                .drives
                .entry(name.clone())
                .or_insert_with(|| Drive::new(d.version));
            if drive.version != d.version {
                *drive = Drive::new(d.version);
            }
            // The record here does not show the last step written yet
            // (replication takes a while, even back to this node): a step
            // decided from it would undo that one, as `active` and `done`
            // are written whole (an index done would be replaced again, and
            // one in flight abandoned). Wait for it, a while.
            if let Some((sent, at)) = &drive.sent
                && sent.changes(&d)
                && now < *at + REWRITE_AFTER
            {
                next = earliest(next, Some(*at + REWRITE_AFTER));
                continue;
            }
            let (patch, revert, wake) = step(&job, &d, drive, now);
            next = earliest(next, wake);
            if !patch.changes(&d) {
                drive.sent = None;
                continue;
            }
            drive.sent = Some((patch.clone(), now));
            shared.out.events.push_back(Event::Deployment(DeployStep {
                job: name,
                version: d.version,
                patch,
                revert,
            }));
        }
        self.drives.retain(|name, _| driven.contains(name));
        next
    }
}

/// The next step of deployment `d` of `job`: what changes in its record,
/// whether to revert, and when time alone changes the answer.
fn step(
    job: &Job,
    d: &Deployment,
    drive: &mut Drive,
    now: Instant,
) -> (DeploymentPatch, bool, Option<Instant>) {
    let policy = job.spec.update.clone().unwrap_or_default();
    let count = job.spec.count();
    let mut active: BTreeSet<u32> = d.active.range(..count).copied().collect();
    let mut done: BTreeSet<u32> = d.done.range(..count).copied().collect();
    drive.seen.retain(|i, _| active.contains(i));
    if d.status == DeploymentStatus::Paused {
        // Nothing moves, and no deadline runs, while paused.
        for i in &active {
            drive.seen.entry(*i).or_default().since = Some(now);
        }
        return (DeploymentPatch::default(), false, None);
    }
    let min_healthy = policy.min_healthy();
    let mut next = None;
    let mut ready = BTreeSet::new();
    let mut failed = None;
    for i in &active {
        let seen = drive.seen.entry(*i).or_default();
        let since = *seen.since.get_or_insert(now);
        if !seen.ready {
            seen.ready = seen
                .healthy_since
                .is_some_and(|t| !seen.replacing || now >= t + min_healthy);
        }
        if seen.ready {
            ready.insert(*i);
            continue;
        }
        if let Some(t) = seen.healthy_since {
            next = earliest(next, Some(t + min_healthy));
        }
        let deadline = since + policy.deadline();
        if now >= deadline {
            failed.get_or_insert_with(|| {
                format!(
                    "task {}/{i} was not healthy for {} within {} (health: {})",
                    job.spec.name,
                    policy.min_healthy_time,
                    policy.healthy_deadline,
                    seen.health.as_str()
                )
            });
        } else {
            next = earliest(next, Some(deadline));
        }
    }
    let healthy = u32::try_from(done.union(&ready).count()).unwrap_or(u32::MAX);
    if let Some(why) = failed {
        let patch = DeploymentPatch {
            status: Some(DeploymentStatus::Failed),
            active: Some(BTreeSet::new()),
            healthy: Some(healthy),
            description: Some(why),
            ..DeploymentPatch::default()
        };
        return (patch, policy.auto_revert, None);
    }
    let canaries = d.canary.min(count);
    let mut promoted = d.promoted;
    let mut description = None;
    if canaries > 0 && !promoted {
        active.extend((0..canaries).filter(|i| !done.contains(i)));
        let all_ready = (0..canaries).all(|i| done.contains(&i) || ready.contains(&i));
        if all_ready && policy.auto_promote {
            promoted = true;
        } else if all_ready {
            description = Some(format!(
                "{canaries} canaries healthy: promote with `shoal deployment promote {}`",
                job.spec.name
            ));
        } else {
            description = Some(format!("placing {canaries} canaries beside the old tasks"));
        }
    }
    if promoted {
        for i in &ready {
            active.remove(i);
            done.insert(*i);
            drive.seen.remove(i);
        }
        let max = usize::try_from(policy.max_parallel).unwrap_or(1).max(1);
        let mut i = 0;
        while active.len() < max && i < count {
            if !done.contains(&i) {
                active.insert(i);
            }
            i += 1;
        }
    }
    let mut patch = DeploymentPatch {
        promoted: (promoted != d.promoted).then_some(promoted),
        active: Some(active.clone()),
        done: Some(done.clone()),
        healthy: Some(healthy),
        ..DeploymentPatch::default()
    };
    if u32::try_from(done.len()).unwrap_or(u32::MAX) >= count {
        patch.status = Some(DeploymentStatus::Successful);
        patch.active = Some(BTreeSet::new());
        patch.description = Some(format!(
            "all {count} tasks run version {}, healthy",
            d.version
        ));
        return (patch, false, None);
    }
    patch.description = Some(description.unwrap_or_else(|| {
        format!(
            "replacing {} of {count} tasks, {} done",
            active.len(),
            done.len()
        )
    }));
    (patch, false, next)
}
