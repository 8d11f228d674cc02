//! The runner role: the tasks this node runs.
//!
//! It takes the tasks awarded to it (and, after an agent restart, adopts
//! those found still running), tells the runtime what to start, replace
//! and stop ([`Command`]), hears back when a task runs or ends, applies
//! the restart policy, and renews each task's lease with the key's current
//! coordinator in its own view of the ring, which is how a new coordinator
//! learns who holds a key. It also acts on its own from the desired state,
//! which every node holds: it stops tasks of deleted jobs and indexes
//! beyond a job's count, follows spec changes, and runs one task of each
//! system job this node is eligible for.
//!
//! Contract: a task counts against this node's capacity from the award
//! until the runtime reports it ended (and still while a restart is due).
//! A task being stopped is not restarted and renews no lease; once stopped
//! for good (scaled down, drained, deleted) its coordinator is told
//! ([`Msg::Release`]). A runner acts on its copy of a job only when that
//! copy is at least as new as the one the task was awarded with.

use std::collections::BTreeMap;
use std::sync::Arc;

use shoal_gossip::{Instant, NodeId};
use shoal_model::{JobSpec, JobType, RestartMode};

use super::bidder::Bidder;
use super::health::{Checks, Health, Verdict};
use super::msg::{Command, Event, ExitReason, Msg, Outcome};
use super::status::{Report, TaskState, TaskStatus};
use super::{Finished, Job, Outbox, Shared, demand_of, earliest, held};
use crate::types::{Hlc, Resources, Slot, Stamp, TaskKey};

/// A task found running after an agent restart.
#[derive(Clone, Debug, PartialEq)]
pub struct Adopted {
    /// Task.
    pub key: TaskKey,
    /// Its award.
    pub stamp: Stamp,
    /// Job version it runs.
    pub job_version: u64,
    /// Its spec.
    pub spec: Arc<JobSpec>,
    /// Restarts so far.
    pub restarts: u32,
    /// Running since (ms since the Unix epoch).
    pub since_ms: u64,
    /// Its host ports, by port name.
    pub ports: BTreeMap<String, u16>,
    /// It ended while the agent was away (the machine rebooted, say): it
    /// is held again and restarted by its restart policy, as if it had
    /// exited (exit code unknown) under this node's watch. So a node that
    /// comes back with no network starts its own tasks again.
    pub ended: bool,
}

/// A task this node holds.
#[derive(Clone, Debug)]
struct Local {
    stamp: Stamp,
    spec: Arc<JobSpec>,
    job_version: u64,
    demand: Resources,
    state: TaskState,
    restarts: u32,
    exit_code: Option<i32>,
    reason: Option<String>,
    since_ms: u64,
    restart_at: Option<Instant>,
    last_lease: Option<Instant>,
    /// Being stopped: `release` tells the coordinator once stopped.
    stopping: Option<bool>,
    /// What its checks said since it last started.
    checks: Checks,
    /// Host ports the runtime gave it (while it runs).
    ports: BTreeMap<String, u16>,
    /// The job version up to which it keeps running its own spec: a job
    /// with `[update]` replaces its tasks by a rolling deployment (its
    /// coordinators place new ones and stop this one), never in place.
    pinned: u64,
}

impl Local {
    /// Whether the task still holds its resources (running, starting, or
    /// about to restart).
    fn holds(&self) -> bool {
        // A task being stopped still runs until the runtime says so.
        self.stopping.is_some()
            || self.restart_at.is_some()
            || matches!(
                self.state,
                TaskState::Assigned | TaskState::Starting | TaskState::Running
            )
    }

    fn report(&self) -> Report {
        Report {
            state: self.state,
            restarts: self.restarts,
            exit_code: self.exit_code,
            reason: self.reason.clone(),
            since_ms: self.since_ms,
            job_version: self.job_version,
            health: self.health(),
            check: self.checks.output().map(str::to_owned),
            ports: self.ports.clone(),
        }
    }

    fn health(&self) -> Health {
        let running = self.state == TaskState::Running && self.stopping.is_none();
        self.checks.health(&self.spec.task.checks, running)
    }

    /// A new start of the task: its checks know nothing yet.
    fn restart_checks(&mut self) {
        self.checks.restart(self.spec.task.checks.len());
    }

    /// A new local task, being started (`Starting`) since `wall_ms`.
    fn starting(
        stamp: Stamp,
        spec: Arc<JobSpec>,
        job_version: u64,
        wall_ms: u64,
        last_lease: Option<Instant>,
    ) -> Local {
        let mut l = Local {
            stamp,
            demand: demand_of(&spec),
            spec,
            job_version,
            state: TaskState::Starting,
            restarts: 0,
            exit_code: None,
            reason: None,
            since_ms: wall_ms,
            restart_at: None,
            last_lease,
            stopping: None,
            checks: Checks::default(),
            ports: BTreeMap::new(),
            pinned: 0,
        };
        l.restart_checks();
        l
    }

    /// The host ports it holds or will hold: those the runtime gave it,
    /// and its static ones.
    fn host_ports(&self) -> impl Iterator<Item = (u16, &str)> + '_ {
        let fixed = self
            .spec
            .task
            .ports
            .iter()
            .filter_map(|p| p.static_port.map(|n| (n, p.name.as_str())));
        self.ports
            .iter()
            .map(|(name, n)| (*n, name.as_str()))
            .chain(fixed)
    }
}

/// What [`Runner::flush`] did.
pub(super) struct Flushed {
    /// It acted on a local task (or started one).
    pub(super) acted: bool,
    /// The earliest restart due among the tasks it left alone.
    pub(super) next: Option<Instant>,
}

/// What [`Runner::exited`] made of a task's end.
pub(super) enum Exit {
    /// No task of that key is held here.
    NotHeld,
    /// It was being stopped: it is gone (and released, if it was to be).
    Gone,
    /// It ended by itself: kept with its outcome, to restart or not as its
    /// policy says.
    Ended,
}

/// The tasks this node holds.
#[derive(Debug, Default)]
pub(super) struct Runner {
    local: BTreeMap<TaskKey, Local>,
}

/// Whether two specs differ in what the task runs (everything but `count`).
fn runs_differently(a: &JobSpec, b: &JobSpec) -> bool {
    let mut a = a.clone();
    let mut b = b.clone();
    a.count = None;
    b.count = None;
    a != b
}

/// Why a finished task is not run again: `already complete (on n2)`.
pub(super) fn finished_reason(shared: &Shared, f: &Finished) -> String {
    let what = if f.ok { "complete" } else { "failed" };
    match f.node {
        Some(n) => format!("already {what} (on {})", shared.name_of(n)),
        None => format!("already {what}"),
    }
}

impl Runner {
    /// Holds `tasks` again, as running since `now` (their awards seen by
    /// `hlc`).
    pub(super) fn adopt(&mut self, hlc: &mut Hlc, now: Instant, tasks: Vec<Adopted>) {
        for t in tasks {
            hlc.observe(&t.stamp);
            let mut l = Local::starting(t.stamp, t.spec, t.job_version, t.since_ms, None);
            l.state = TaskState::Running;
            l.restarts = t.restarts;
            l.checks.running(now);
            l.ports = t.ports;
            self.local.insert(t.key, l);
        }
    }

    /// The runtime started `key`'s task with host `ports`: running since
    /// `wall_ms` (`now`), its lease due at once.
    pub(super) fn started(
        &mut self,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        ports: BTreeMap<String, u16>,
    ) {
        if let Some(l) = self.local.get_mut(key)
            && l.stopping.is_none()
        {
            l.state = TaskState::Running;
            l.since_ms = wall_ms;
            l.last_lease = None;
            l.checks.running(now);
            l.ports = ports;
        }
    }

    /// A check of `key`'s task said `verdict`: its health follows (an
    /// [`Event::Health`] when it changes), and a task found unhealthy by a
    /// check with `on_unhealthy = "restart"` is restarted in place (within
    /// its policy's `attempts`). Whether its coordinator should hear of it
    /// at once.
    pub(super) fn checked(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        verdict: Verdict,
    ) -> bool {
        let Some(l) = self.local.get_mut(key) else {
            return false;
        };
        if l.stopping.is_some()
            || l.state != TaskState::Running
            || l.job_version != verdict.job_version
            || l.restarts != verdict.attempt
        {
            return false;
        }
        let before = l.health();
        let spec = l.spec.clone();
        if !l.checks.record(&spec.task.checks, now, verdict) {
            return false;
        }
        let health = l.health();
        let output = l.checks.output().map(str::to_owned);
        if health != before {
            shared.out.events.push_back(Event::Health {
                key: key.clone(),
                health,
                check: output.clone(),
            });
        }
        let may_restart = spec.restart.attempts.is_none_or(|a| l.restarts < a);
        if health == Health::Unhealthy && l.checks.restart_wanted(&spec.task.checks) && may_restart
        {
            l.restarts += 1;
            l.reason = Some(format!("unhealthy: {}", output.unwrap_or_default()));
            l.state = TaskState::Starting;
            l.since_ms = wall_ms;
            l.restart_at = None;
            l.restart_checks();
            shared.out.commands.push_back(Command::Replace {
                key: key.clone(),
                spec: l.spec.clone(),
                job_version: l.job_version,
                stamp: l.stamp,
                attempt: l.restarts,
            });
            shared.out.events.push_back(Event::Health {
                key: key.clone(),
                health: Health::Unknown,
                check: l.checks.output().map(str::to_owned),
            });
        }
        true
    }

    /// The runtime saw `key`'s task end, `why`.
    pub(super) fn exited(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        why: ExitReason,
    ) -> Exit {
        let Some(l) = self.local.get_mut(key) else {
            return Exit::NotHeld;
        };
        if let Some(release) = l.stopping {
            let stamp = l.stamp;
            self.local.remove(key);
            if release && let Some(c) = shared.ring().owner(key.hash()) {
                shared.out.messages.push_back((
                    c,
                    Msg::Release {
                        key: key.clone(),
                        stamp,
                    },
                ));
            }
            return Exit::Gone;
        }
        l.ports.clear();
        if let ExitReason::PortInUse { .. } = &why {
            // Not a failure of the task: this node cannot run it now.
            // Given up so that its coordinator places it elsewhere.
            let stamp = l.stamp;
            self.local.remove(key);
            if let Some(c) = shared.ring().owner(key.hash()) {
                shared.out.messages.push_back((
                    c,
                    Msg::Release {
                        key: key.clone(),
                        stamp,
                    },
                ));
            }
            return Exit::Gone;
        }
        let (state, code, reason, success) = match &why {
            ExitReason::Exited(0) => (TaskState::Exited, Some(0), "exited".to_owned(), true),
            ExitReason::Exited(c) => (
                TaskState::Failed,
                Some(*c),
                format!("exited with code {c}"),
                false,
            ),
            ExitReason::Signaled(s) => (
                TaskState::Killed,
                None,
                format!("killed by signal {s}"),
                false,
            ),
            ExitReason::Oom => (TaskState::Killed, None, "oom".to_owned(), false),
            ExitReason::StartFailed(m) => (
                TaskState::Failed,
                Some(127),
                format!("start failed: {m}"),
                false,
            ),
            ExitReason::Stopped => (TaskState::Killed, None, "stopped".to_owned(), false),
            ExitReason::PortInUse { reason, .. } => (
                TaskState::Failed,
                Some(127),
                format!("start failed: {reason}"),
                false,
            ),
            ExitReason::Unknown => (
                TaskState::Failed,
                None,
                "ended while the agent was away (exit code unknown)".to_owned(),
                false,
            ),
        };
        l.state = state;
        l.exit_code = code;
        l.reason = Some(reason.clone());
        l.since_ms = wall_ms;
        let policy = &l.spec.restart;
        // A batch task that exited 0 is complete: never run again,
        // whatever the restart mode says.
        let batch = l.spec.kind == JobType::Batch && key.index_number().is_some();
        let restart = match policy.mode {
            RestartMode::Never => false,
            RestartMode::OnFailure => !success,
            RestartMode::Always => !(success && batch),
        } && policy.attempts.is_none_or(|a| l.restarts < a);
        if batch && !restart {
            // Finished for good: complete, or failed with no restart left.
            shared.out.events.push_back(Event::Finished(Outcome {
                key: key.clone(),
                job_version: l.job_version,
                node: shared.me,
                ok: success,
                exit_code: code,
                reason: Some(reason),
                at_ms: wall_ms,
            }));
        }
        if restart {
            let exp = l.restarts.min(20);
            let delay = policy
                .delay()
                .saturating_mul(1u32 << exp.min(16))
                .min(policy.max_delay());
            l.restart_at = Some(now + delay);
        } else {
            l.restart_at = None;
        }
        Exit::Ended
    }

    /// Takes the award of `key` (`stamp`, to run `spec` at `job_version`):
    /// `Ok` to accept it (started, or already held here and kept under the
    /// newer award), or why not. A reservation the bidder made for it ends
    /// here, whatever the answer.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn take_award(
        &mut self,
        shared: &mut Shared,
        bidder: &mut Bidder,
        now: Instant,
        wall_ms: u64,
        key: &TaskKey,
        stamp: Stamp,
        job_version: u64,
        spec: Arc<JobSpec>,
    ) -> Result<(), String> {
        shared.hlc.observe(&stamp);
        if let Some(l) = self.local.get_mut(key)
            && l.stopping.is_none()
        {
            // Already held here: keep running, under the newer award.
            if stamp > l.stamp {
                l.stamp = stamp;
            }
            return Ok(());
        }
        bidder.release(key);
        if let Some(f) = shared.finished(key) {
            // A coordinator whose replica lacks the record yet.
            return Err(finished_reason(shared, f));
        }
        let demand = demand_of(&spec);
        let free = shared.capacity.minus(&held(self, bidder, Some(key)));
        let fits = free.fits(&demand);
        if shared.draining {
            return Err("draining".to_owned());
        }
        fits?;
        self.local.insert(
            key.clone(),
            Local::starting(stamp, spec.clone(), job_version, wall_ms, Some(now)),
        );
        shared.out.commands.push_back(Command::Start {
            key: key.clone(),
            spec,
            job_version,
            stamp,
            attempt: 0,
        });
        Ok(())
    }

    /// A coordinator says to stop `key`'s award `stamp`: stopped unless
    /// this node holds a newer award of it.
    pub(super) fn on_stop(&mut self, out: &mut Outbox, key: &TaskKey, stamp: Stamp, reason: &str) {
        if self.local.get(key).is_some_and(|l| l.stamp <= stamp) {
            self.stop(out, key, reason, false);
        }
    }

    /// Stops every task here, releasing their keys (the node drains).
    pub(super) fn stop_all(&mut self, out: &mut Outbox, reason: &str) {
        let keys: Vec<TaskKey> = self.local.keys().cloned().collect();
        for k in keys {
            self.stop(out, &k, reason, true);
        }
    }

    /// Tells the runtime to stop `key`'s task (once); with `release`, its
    /// coordinator is told when it has stopped.
    fn stop(&mut self, out: &mut Outbox, key: &TaskKey, reason: &str, release: bool) {
        if let Some(l) = self.local.get_mut(key) {
            if l.stopping.is_some() {
                return;
            }
            l.stopping = Some(release);
            l.restart_at = None;
            out.commands.push_back(Command::Stop {
                key: key.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Runner duties: stop what is no longer wanted, restart what the
    /// policy says, follow spec changes, run system jobs.
    pub(super) fn flush(
        &mut self,
        shared: &mut Shared,
        bidder: &Bidder,
        now: Instant,
        wall_ms: u64,
    ) -> Flushed {
        // The keys with something to do (most have nothing, most of the
        // time): checked in place, so that only those are copied.
        let mut keys = Vec::new();
        let mut next = None;
        for (key, l) in &self.local {
            if l.stopping.is_some() {
                continue;
            }
            let job = shared.jobs.get(&key.job);
            let (wanted, version) = shared.wants_in(job, key, false);
            let finished = job.is_some_and(|j| {
                !j.deleted
                    && key
                        .index_number()
                        .is_some_and(|i| j.finished.contains_key(&i))
            });
            if (!wanted && version >= l.job_version)
                || job.is_some_and(|j| j.version > l.job_version.max(l.pinned) && !j.deleted)
                || l.restart_at.is_some_and(|at| now >= at)
                || finished
            {
                keys.push(key.clone());
            } else {
                next = earliest(next, l.restart_at);
            }
        }
        let mut acted = !keys.is_empty();
        for key in keys {
            let (wanted, version) = shared.wanted(&key);
            let Some(l) = self.local.get(&key) else {
                continue;
            };
            if l.stopping.is_some() {
                continue;
            }
            if !wanted && version >= l.job_version {
                self.stop(&mut shared.out, &key, "no longer wanted", true);
                continue;
            }
            if let Some(f) = shared.finished(&key).cloned() {
                // Recorded as finished for this run: nothing here runs it
                // again. A copy still running (placed again before the
                // record reached its coordinator) stops if it is complete;
                // one that ended is forgotten, so that it renews no lease.
                let ended = !matches!(
                    l.state,
                    TaskState::Assigned | TaskState::Starting | TaskState::Running
                );
                if ended {
                    self.local.remove(&key);
                } else if f.ok {
                    let why = finished_reason(shared, &f);
                    self.stop(&mut shared.out, &key, &why, true);
                }
                continue;
            }
            // A newer spec: restart in place if it still fits, else give
            // the task up so that it is placed again.
            if let Some(job) = shared.jobs.get(&key.job).cloned()
                && job.version > l.job_version
                && !job.deleted
            {
                let ended = !matches!(
                    l.state,
                    TaskState::Assigned | TaskState::Starting | TaskState::Running
                ) && l.restart_at.is_none();
                if runs_differently(&job.spec, &l.spec) && ended && job.spec.kind == JobType::Batch
                {
                    // A new run of a batch job: its coordinator places the
                    // task again, as it does one this node forgot.
                    let stamp = l.stamp;
                    self.local.remove(&key);
                    if let Some(c) = shared.ring().owner(key.hash()) {
                        shared.out.messages.push_back((
                            c,
                            Msg::Release {
                                key: key.clone(),
                                stamp,
                            },
                        ));
                    }
                    continue;
                }
                let rolling = job.spec.kind == JobType::Service
                    && job.spec.update.is_some()
                    && key.index_number().is_some();
                if rolling && runs_differently(&job.spec, &l.spec) {
                    // Replaced by the job's rolling deployment, not here.
                    let l = self.local.get_mut(&key).expect("present");
                    l.pinned = job.version;
                } else if runs_differently(&job.spec, &l.spec) {
                    let demand = demand_of(&job.spec);
                    let free = shared.capacity.minus(&held(self, bidder, Some(&key)));
                    if free.fits(&demand).is_err() {
                        self.stop(
                            &mut shared.out,
                            &key,
                            "the new spec does not fit here",
                            true,
                        );
                        continue;
                    }
                    let l = self.local.get_mut(&key).expect("present");
                    l.spec = job.spec.clone();
                    l.demand = demand;
                    l.job_version = job.version;
                    l.state = TaskState::Starting;
                    l.since_ms = wall_ms;
                    l.restart_at = None;
                    l.restart_checks();
                    let (stamp, attempt) = (l.stamp, l.restarts);
                    shared.out.commands.push_back(Command::Replace {
                        key: key.clone(),
                        spec: job.spec.clone(),
                        job_version: job.version,
                        stamp,
                        attempt,
                    });
                } else {
                    let l = self.local.get_mut(&key).expect("present");
                    l.job_version = job.version;
                    l.spec = job.spec.clone();
                }
            }
            let l = self.local.get_mut(&key).expect("present");
            if let Some(at) = l.restart_at
                && now >= at
            {
                l.restart_at = None;
                l.restarts += 1;
                l.state = TaskState::Starting;
                l.since_ms = wall_ms;
                l.restart_checks();
                shared.out.commands.push_back(Command::Start {
                    key: key.clone(),
                    spec: l.spec.clone(),
                    job_version: l.job_version,
                    stamp: l.stamp,
                    attempt: l.restarts,
                });
            }
        }
        // System jobs: one task here per eligible job.
        let systems: Vec<Job> = if shared.draining {
            Vec::new()
        } else {
            shared
                .jobs
                .jobs()
                .filter(|j| !j.deleted && j.spec.kind == JobType::System)
                .cloned()
                .collect()
        };
        if !systems.is_empty()
            && let Some(me) = shared.view.member(shared.me).cloned()
        {
            for job in systems {
                let key = TaskKey::system(&job.spec.name, shared.me);
                if self.local.contains_key(&key) {
                    continue;
                }
                let demand = demand_of(&job.spec);
                let mut exact = me.clone();
                exact.free_class = 8;
                if shared.view.eligible(&exact, &job.spec, &demand).is_err()
                    || shared
                        .capacity
                        .minus(&held(self, bidder, None))
                        .fits(&demand)
                        .is_err()
                {
                    continue;
                }
                let stamp = shared.hlc.tick(wall_ms, shared.me);
                self.local.insert(
                    key.clone(),
                    Local::starting(stamp, job.spec.clone(), job.version, wall_ms, None),
                );
                shared.out.commands.push_back(Command::Start {
                    key,
                    spec: job.spec.clone(),
                    job_version: job.version,
                    stamp,
                    attempt: 0,
                });
                acted = true;
            }
        }
        Flushed { acted, next }
    }

    /// Sends the leases that are due to each key's coordinator; the
    /// earliest renewal due next, if any.
    pub(super) fn renew_leases(&mut self, shared: &mut Shared, now: Instant) -> Option<Instant> {
        let period = shared.config.lease_period;
        let mut out = Vec::new();
        let mut next = None;
        for (key, l) in self.local.iter_mut() {
            // System tasks have no coordinator: their node answers for them.
            if l.stopping.is_some() || matches!(key.slot, Slot::Node(_)) {
                continue;
            }
            let due = l
                .last_lease
                .is_none_or(|t| now.saturating_duration_since(t) >= period);
            if !due {
                next = earliest(next, l.last_lease.map(|t| t + period));
                continue;
            }
            let Some(coordinator) = shared.ring().owner(key.hash()) else {
                continue;
            };
            l.last_lease = Some(now);
            next = earliest(next, Some(now + period));
            out.push((
                coordinator,
                Msg::Lease {
                    key: key.clone(),
                    stamp: l.stamp,
                    report: l.report(),
                },
            ));
        }
        shared.out.messages.extend(out);
        next
    }

    /// Sends `key`'s lease now, out of turn (its state changed: the
    /// coordinator should know at once); when its next renewal is due.
    pub(super) fn renew_lease_of(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        key: &TaskKey,
    ) -> Option<Instant> {
        let l = self.local.get_mut(key)?;
        if l.stopping.is_some() || matches!(key.slot, Slot::Node(_)) {
            return None;
        }
        let coordinator = shared.ring().owner(key.hash())?;
        l.last_lease = Some(now);
        shared.out.messages.push_back((
            coordinator,
            Msg::Lease {
                key: key.clone(),
                stamp: l.stamp,
                report: l.report(),
            },
        ));
        Some(now + shared.config.lease_period)
    }

    /// Resources held by the tasks here (but `except`'s).
    pub(super) fn held(&self, except: Option<&TaskKey>) -> Resources {
        let mut used = Resources::default();
        for (k, l) in &self.local {
            if l.holds() && Some(k) != except {
                used = used.plus(&l.demand);
            }
        }
        used
    }

    /// The first host port of `wanted` that a task held here (other than
    /// `key`'s, even one being stopped: it still runs) holds or will hold:
    /// the port and that task.
    pub(super) fn port_taken(&self, key: &TaskKey, wanted: &[u16]) -> Option<(u16, &TaskKey)> {
        self.local
            .iter()
            .filter(|(k, _)| *k != key)
            .find_map(|(k, l)| {
                l.host_ports()
                    .find(|(p, _)| wanted.contains(p))
                    .map(|(p, _)| (p, k))
            })
    }

    /// Host ports from the node's range the tasks held here (but `key`)
    /// take, those being stopped included (they hold theirs until they end).
    pub(super) fn ranged_ports_held(&self, key: &TaskKey) -> usize {
        self.local
            .iter()
            .filter(|(k, _)| *k != key)
            .map(|(_, l)| super::bidder::ranged_ports(&l.spec))
            .sum()
    }

    /// Whether a task of `key` is held here (even while being stopped).
    pub(super) fn has(&self, key: &TaskKey) -> bool {
        self.local.contains_key(key)
    }

    /// Whether a task of `key` is held here and not being stopped.
    pub(super) fn runs(&self, key: &TaskKey) -> bool {
        self.local.get(key).is_some_and(|l| l.stopping.is_none())
    }

    /// How many tasks of job `job` are held here.
    pub(super) fn tasks_of(&self, job: &str) -> usize {
        self.local.keys().filter(|k| k.job == job).count()
    }

    /// How many tasks are held here.
    pub(super) fn len(&self) -> usize {
        self.local.len()
    }

    /// The status of `key`'s task, if it is held here (by `me`).
    pub(super) fn status(&self, me: NodeId, key: &TaskKey) -> Option<TaskStatus> {
        self.local
            .get(key)
            .map(|l| TaskStatus::held(key, me, l.report()))
    }

    /// Every task held here: its key, award and state.
    pub(super) fn tasks(&self) -> Vec<(TaskKey, Stamp, TaskState)> {
        self.local
            .iter()
            .map(|(k, l)| (k.clone(), l.stamp, l.state))
            .collect()
    }

    /// The award of `key`'s task held here.
    pub(super) fn stamp(&self, key: &TaskKey) -> Option<Stamp> {
        self.local.get(key).map(|l| l.stamp)
    }
}
