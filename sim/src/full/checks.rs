//! The checkers, named by when they hold: `always_*` after every event
//! (no node overcommitted; no task with two holders once views are stable),
//! `eventually_*` once the network has healed and settled (live nodes
//! agree on membership; every placeable task runs, once), and the
//! bookkeeping they read (who runs what, which views the placers hold,
//! which crashes were detected by whom).

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_core::NodeCore;
use shoal_gossip::{Config, DownReason, MemberState, NodeId, NodeIdentity};
use shoal_placement::{Resources, TaskKey};

use super::{STABLE_GRACE, World, secs};
use crate::report::Check;
use crate::workload;

impl World {
    pub(super) fn violation(&mut self, what: String) {
        if self.first_violation.is_none() {
            self.first_violation = Some(format!("{:?}: {what}", self.now()));
        }
    }

    pub(super) fn task_of(&self, key: &TaskKey) -> Option<u32> {
        let job = workload::job_number(&key.job)?;
        let plan = self.jobs.get(job)?;
        let idx = key.index_number()?;
        (idx < plan.count).then_some(plan.first_task + idx)
    }

    pub(super) fn add_runner(&mut self, t: u32, node: u32, version: u64) {
        let now = self.now();
        let task = &mut self.tasks[t as usize];
        task.runners.push((node, version));
        if task.first_run.is_none() {
            task.first_run = Some(now);
            if let Some(s) = task.submitted {
                self.placement_ms.push(secs(now - s) * 1000.0);
            }
            self.last_first_run = Some(now);
        }
        if let Some(lost) = task.lost_at.take() {
            self.replace_ms.push(secs(now - lost) * 1000.0);
        }
        self.note_duplicate(t);
    }

    pub(super) fn remove_runner(&mut self, t: u32, node: u32, lost: bool) {
        let now = self.now();
        let task = &mut self.tasks[t as usize];
        task.runners.retain(|(n, _)| *n != node);
        if task.runners.is_empty() && lost {
            task.lost_at = Some(now);
        }
        self.note_duplicate(t);
    }

    /// Task `t` started or stopped being a duplicate ([`Task::duplicated`]).
    fn note_duplicate(&mut self, t: u32) {
        let now = self.now();
        let task = &mut self.tasks[t as usize];
        match (task.duplicated(), task.dup_since) {
            (true, None) => {
                task.dup_since = Some(now);
                task.ever_dup = true;
                self.dup_watch.insert((now, t));
            }
            (false, Some(since)) => {
                task.dup_since = None;
                self.duplicate_max = self.duplicate_max.max(now - since);
                self.dup_watch.remove(&(since, t));
            }
            _ => {}
        }
    }

    /// `always_one_winner_when_stable`: once every live node's placer has
    /// had the same member list (so every node computes the same
    /// coordinator for every key) and the network has been whole for
    /// [`STABLE_GRACE`], no task runs twice.
    pub(super) fn always_one_winner_when_stable(&mut self) {
        let Some(&(since, t)) = self.dup_watch.first() else {
            return;
        };
        if self.net.is_partitioned() {
            return;
        }
        let Some(agreed) = self.agreed_since else {
            return;
        };
        let stable_since = since.max(agreed).max(self.last_heal);
        let now = self.now();
        if now - stable_since > STABLE_GRACE {
            self.two_winners += 1;
            self.dup_watch.remove(&(since, t));
            let runners: Vec<u32> = self.tasks[t as usize]
                .runners
                .iter()
                .map(|(n, _)| *n)
                .collect();
            self.violation(format!(
                "always_one_winner_when_stable: task #{t} runs on nodes {runners:?} since {since:?}, views stable since {stable_since:?}"
            ));
        }
    }

    pub(super) fn always_no_overcommit(&mut self, i: usize) {
        let Some(p) = self.nodes[i].core.as_ref().map(NodeCore::placer) else {
            return;
        };
        let (used, cap) = (p.used_resources(), p.capacity());
        if used.cpus_milli > cap.cpus_milli || used.memory_mb > cap.memory_mb {
            self.overcommits += 1;
            self.violation(format!(
                "always_no_overcommit: placer of n{i} holds {used:?} of {cap:?}"
            ));
        }
    }

    pub(super) fn view_left(&mut self, view: u64) {
        if let Some(c) = self.views.get_mut(&view) {
            *c -= 1;
            if *c == 0 {
                self.views.remove(&view);
            }
        }
        self.note_agreement();
    }

    pub(super) fn view_joined(&mut self, view: u64) {
        *self.views.entry(view).or_default() += 1;
        self.note_agreement();
    }

    pub(super) fn note_agreement(&mut self) {
        if self.views.len() == 1 {
            self.agreed_since.get_or_insert(self.q.now());
        } else {
            self.agreed_since = None;
        }
    }

    pub(super) fn on_member_down(
        &mut self,
        observer: usize,
        identity: &NodeIdentity,
        reason: DownReason,
    ) {
        let Some(t) = (identity.id.0 as usize).checked_sub(1) else {
            return;
        };
        if t >= self.nodes.len() {
            return;
        }
        if let Some(&c) = self.open_crash.get(&(t as u32)) {
            let crash = &mut self.crashes[c];
            if crash.bump == identity.bump {
                let delay = secs(self.q.now() - crash.at);
                crash.seen.entry(observer as u32).or_insert(delay);
                return;
            }
        }
        let target = &self.nodes[t];
        if reason == DownReason::Failed && target.up && target.bump == identity.bump {
            // A down decided during a partition may still be spreading
            // after the heal: within a suspicion timeout and some gossip
            // of the heal it counts as the partition's.
            let aftermath = self.heals > 0
                && self.q.now()
                    < self.last_heal
                        + self
                            .gossip
                            .suspicion_timeout(Config::size_class(self.nodes.len()))
                        + Duration::from_secs(10);
            if self.net.connected(observer, t) && !aftermath {
                self.false_positives.insert((t as u32, identity.bump));
            } else {
                self.partition_downs += 1;
            }
        }
    }

    /// The `eventually_*` checks and the end-of-run measures.
    pub(super) fn finish(&mut self) {
        let up = self.up_nodes();
        let truth: BTreeSet<NodeId> = up.iter().map(|i| self.nodes[*i].id).collect();
        let mut wrong = 0;
        let mut example = None;
        for &i in &up {
            let Some(m) = self.nodes[i].core.as_ref().map(NodeCore::membership) else {
                continue;
            };
            let seen: BTreeSet<NodeId> = m
                .members()
                .into_iter()
                .filter(|x| x.state == MemberState::Alive)
                .map(|x| x.identity.id)
                .collect();
            if seen != truth {
                wrong += 1;
                if example.is_none() {
                    let missing: Vec<NodeId> = truth.difference(&seen).copied().collect();
                    let extra = seen.difference(&truth).count();
                    let how: Vec<String> = missing
                        .iter()
                        .take(3)
                        .map(|id| {
                            let known_by = up
                                .iter()
                                .filter(|o| {
                                    self.nodes[**o]
                                        .core
                                        .as_ref()
                                        .is_some_and(|oc| oc.membership().member(*id).is_some())
                                })
                                .count();
                            match m.member(*id) {
                                Some(x) => format!(
                                    "n{} {} here, known to {known_by} nodes",
                                    id.0 - 1,
                                    x.state.as_str()
                                ),
                                None => {
                                    format!("n{} unknown here, known to {known_by} nodes", id.0 - 1)
                                }
                            }
                        })
                        .collect();
                    example = Some(format!(
                        "n{i} misses {} live members ({}) and lists {extra} dead ones as alive",
                        missing.len(),
                        how.join(", ")
                    ));
                }
            }
        }
        self.end_state.views_wrong = wrong;
        self.final_checks.push(Check {
            name: "eventually_membership_agrees".into(),
            ok: wrong == 0,
            detail: match example {
                None => format!("all {} live nodes see exactly the live nodes", up.len()),
                Some(e) => format!("{wrong} of {} live nodes disagree; {e}", up.len()),
            },
        });

        // Tasks: what runs, what could run.
        let duplicates = self.tasks.iter().filter(|t| t.duplicated()).count() as u64;
        self.end_state.duplicates = duplicates;
        // Waiting tasks that the room left on live nodes could still take
        // (a best fit of them into that room).
        let room: Vec<Resources> = up
            .iter()
            .map(|i| self.nodes[*i].cap.minus(&self.nodes[*i].used))
            .collect();
        let waiting: Vec<Resources> = self
            .tasks
            .iter()
            .filter(|t| t.submitted.is_some() && t.runners.is_empty())
            .map(|t| t.demand)
            .collect();
        let fit = workload::best_fit(&room, &waiting);
        let (unplaced, no_room) = (fit.placed, fit.unplaced);
        self.end_state.unplaced = unplaced;
        self.end_state.unplaced_no_room = no_room;
        let submitted: Vec<Resources> = self
            .tasks
            .iter()
            .filter(|t| t.submitted.is_some())
            .map(|t| t.demand)
            .collect();
        if !submitted.is_empty() {
            let caps: Vec<Resources> = up.iter().map(|i| self.nodes[*i].cap).collect();
            let bf = workload::best_fit(&caps, &submitted);
            let running_cpu: u64 = self
                .tasks
                .iter()
                .filter(|t| !t.runners.is_empty())
                .map(|t| t.demand.cpus_milli)
                .sum();
            self.end_state.bestfit_placed = bf.placed;
            if bf.placed_cpus_milli > 0 {
                self.end_state.packing = Some(running_cpu as f64 / bf.placed_cpus_milli as f64);
            }
            let shares: Vec<f64> = up
                .iter()
                .map(|i| {
                    let n = &self.nodes[*i];
                    n.used.cpus_milli as f64 / n.cap.cpus_milli.max(1) as f64
                })
                .collect();
            let mean = shares.iter().sum::<f64>() / shares.len().max(1) as f64;
            let max = shares.iter().copied().fold(0.0, f64::max);
            if mean > 0.0 {
                self.end_state.imbalance = Some(max / mean);
            }
        }
        if self.p.with_jobs() {
            self.final_checks.push(Check {
                name: "eventually_placeable_tasks_run".into(),
                ok: unplaced == 0,
                detail: format!(
                    "{unplaced} tasks wait while a live node has room ({no_room} have none)"
                ),
            });
            self.final_checks.push(Check {
                name: "eventually_one_copy_per_task".into(),
                ok: duplicates == 0,
                detail: format!("{duplicates} tasks run twice after the heal"),
            });
        }
    }

    /// The fake runtime started `key` (job version `version`) on node `i`:
    /// it now runs there (the overcommit of the node's real resources is
    /// checked here). A replacement in place keeps the task and takes the
    /// new version.
    pub(super) fn runtime_started(&mut self, i: usize, key: &TaskKey, version: u64) {
        let Some(t) = self.task_of(key) else { return };
        if self.nodes[i].procs.contains_key(key) {
            let runners = &mut self.tasks[t as usize].runners;
            if let Some(r) = runners.iter_mut().find(|(n, _)| *n == i as u32) {
                r.1 = version;
            }
            self.note_duplicate(t);
            return;
        }
        self.nodes[i].procs.insert(key.clone(), t);
        let d = self.tasks[t as usize].demand;
        self.nodes[i].used = self.nodes[i].used.plus(&d);
        self.add_runner(t, i as u32, version);
        let (used, cap) = (self.nodes[i].used, self.nodes[i].cap);
        if used.cpus_milli > cap.cpus_milli || used.memory_mb > cap.memory_mb {
            self.overcommits += 1;
            self.violation(format!(
                "always_no_overcommit: n{i} runs {used:?} with capacity {cap:?}"
            ));
        }
    }

    /// The fake runtime stopped `key` on node `i`.
    pub(super) fn runtime_stopped(&mut self, i: usize, key: &TaskKey) {
        if let Some(t) = self.nodes[i].procs.remove(key) {
            let d = self.tasks[t as usize].demand;
            self.nodes[i].used = self.nodes[i].used.minus(&d);
            self.remove_runner(t, i as u32, false);
        }
    }
}
