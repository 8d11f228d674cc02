//! The `health-flaps` scenario: every job has a health check
//! ([`workload::add_checks`]), and the simulator, standing for the node
//! that runs each task, probes it every [`workload::CHECK_INTERVAL`] and
//! hands the verdict to that node's core (`NodeCore::handle_task_health`),
//! the very path the agent's prober takes. About a third of the tasks,
//! drawn from the seed, fail their check during one window of 3–9 s of
//! the scenario; the rest always pass.
//!
//! Checked: `always_unhealthy_restarted` (a task that a restarting check
//! makes unhealthy is restarted in the same turn of its node: a `Replace`
//! follows the `Health` event); `eventually_tasks_healthy` (once every
//! window has closed and the run settled, every running task with checks
//! is healthy at its holder); `fault_health_flaps_fired` (tasks did turn
//! unhealthy, and some were restarted for it).
//!
//! The `rolling-deploy` scenario probes the same way, with no failure
//! windows ([`World::plan_probes`]): its deployed jobs' tasks become
//! healthy by their checks, as the agent's do.

use std::collections::BTreeSet;
use std::time::Duration;

use rand::RngExt;
use shoal_gossip::Instant;
use shoal_model::OnUnhealthy;
use shoal_placement::{Health, TaskKey, TaskState, Verdict};

use super::{Ev, World};
use crate::report::Check;
use crate::workload::{self, CHECK_INTERVAL};

/// The first probe of a start, after it runs.
const FIRST_PROBE: Duration = Duration::from_millis(100);

/// What the scenario planned and saw.
#[derive(Default)]
pub(super) struct Flaps {
    /// Some tasks fail their check for a while (`health-flaps`); otherwise
    /// every check passes.
    flapping: bool,
    /// Per task number: the window during which its check fails.
    windows: Vec<Option<(Instant, Instant)>>,
    probes: u64,
    unhealthy: u64,
    restarted: u64,
    missed: u64,
    /// Tasks made unhealthy, and tasks replaced, in the drain under way.
    turn_unhealthy: BTreeSet<TaskKey>,
    turn_replaced: BTreeSet<TaskKey>,
    finally: Option<Check>,
}

impl World {
    /// Draws which tasks flap, and when.
    pub(super) fn plan_flaps(&mut self) {
        let began = self.began.unwrap_or(self.now());
        let last = self.p.duration.saturating_sub(Duration::from_secs(15));
        let mut windows = Vec::with_capacity(self.tasks.len());
        for _ in 0..self.tasks.len() {
            if self.rng.random_range(0.0..1.0) < 1.0 / 3.0 && last > Duration::from_secs(10) {
                let from = self.rng.random_range(10_000..last.as_millis() as u64);
                let len = self.rng.random_range(3_000..9_000);
                let start = began + Duration::from_millis(from);
                windows.push(Some((start, start + Duration::from_millis(len))));
            } else {
                windows.push(None);
            }
        }
        self.flaps = Some(Flaps {
            flapping: true,
            windows,
            ..Flaps::default()
        });
    }

    /// Probes the tasks that have checks, every check passing.
    pub(super) fn plan_probes(&mut self) {
        self.flaps = Some(Flaps {
            flapping: false,
            windows: vec![None; self.tasks.len()],
            ..Flaps::default()
        });
    }

    /// A start of `key` runs on node `i`: its checks begin.
    pub(super) fn first_probe(&mut self, i: usize, key: &TaskKey, job_version: u64, attempt: u32) {
        if self.flaps.is_none() {
            return;
        }
        // A task without checks is healthy while it runs: nothing to probe.
        let checked = workload::job_number(&key.job)
            .and_then(|j| self.jobs.get(j))
            .is_some_and(|j| !j.spec.task.checks.is_empty());
        if !checked {
            return;
        }
        let (node, life) = (i as u32, self.nodes[i].life);
        self.q.push(
            self.now() + FIRST_PROBE,
            Ev::Probe {
                node,
                life,
                key: key.clone(),
                job_version,
                attempt,
            },
        );
    }

    /// Probes `key` on node `i` (its start `attempt`), if that start still
    /// runs there, and probes again an interval later.
    pub(super) fn probe(&mut self, i: usize, life: u32, key: TaskKey, version: u64, attempt: u32) {
        let now = self.now();
        let wall = self.wall();
        let Some(t) = self.task_of(&key) else { return };
        let Some(flaps) = self.flaps.as_mut() else {
            return;
        };
        let node = &mut self.nodes[i];
        let me = node.id;
        if node.life != life {
            return;
        }
        let Some(core) = node.core.as_mut() else {
            return;
        };
        let current = core.placer().local_status(&key).is_some_and(|status| {
            status.node == Some(me)
                && status.state == TaskState::Running
                && status.restarts == attempt
        });
        if !current {
            return;
        }
        let failing = flaps.windows[t as usize].is_some_and(|(a, b)| a <= now && now < b);
        flaps.probes += 1;
        let verdict = Verdict {
            job_version: version,
            attempt,
            check: 0,
            passed: !failing,
            output: if failing { "exit 1" } else { "exit 0" }.to_owned(),
        };
        core.handle_task_health(now, wall, &key, verdict);
        self.drain(i, true);
        self.q.push(
            now + CHECK_INTERVAL,
            Ev::Probe {
                node: i as u32,
                life,
                key,
                job_version: version,
                attempt,
            },
        );
    }

    /// A node's core said `key`'s health is now `health`.
    pub(super) fn on_health(&mut self, key: &TaskKey, health: Health) {
        if let Some(f) = self.flaps.as_mut()
            && health == Health::Unhealthy
        {
            f.unhealthy += 1;
            f.turn_unhealthy.insert(key.clone());
        }
    }

    /// A node's core told its runtime to replace `key`'s task.
    pub(super) fn on_replace(&mut self, key: &TaskKey) {
        if let Some(f) = self.flaps.as_mut() {
            f.turn_replaced.insert(key.clone());
        }
    }

    /// `always_unhealthy_restarted`, after each drain of node `i`.
    pub(super) fn after_health_turn(&mut self, i: usize) {
        let Some(f) = self.flaps.as_mut() else {
            return;
        };
        let unhealthy = std::mem::take(&mut f.turn_unhealthy);
        let replaced = std::mem::take(&mut f.turn_replaced);
        for key in unhealthy {
            let restarts = workload::job_number(&key.job)
                .and_then(|j| self.jobs.get(j))
                .and_then(|j| j.spec.task.checks.first())
                .is_some_and(|c| c.on_unhealthy == OnUnhealthy::Restart);
            if !restarts {
                continue;
            }
            if replaced.contains(&key) {
                self.flaps.as_mut().expect("on").restarted += 1;
            } else {
                self.flaps.as_mut().expect("on").missed += 1;
                self.violation(format!(
                    "always_unhealthy_restarted: {key} turned unhealthy on n{i} and was not restarted"
                ));
            }
        }
    }

    /// `eventually_tasks_healthy`, once the run settled.
    pub(super) fn finish_flaps(&mut self) {
        if self.flaps.is_none() {
            return;
        }
        let (mut running, mut healthy, mut example) = (0u64, 0u64, None);
        for n in &self.nodes {
            let Some(core) = n.core.as_ref().filter(|_| n.up) else {
                continue;
            };
            let keys: Vec<TaskKey> = core
                .placer()
                .local_tasks()
                .into_iter()
                .filter(|(_, _, s)| *s == TaskState::Running)
                .map(|(k, _, _)| k)
                .collect();
            for s in keys.iter().filter_map(|k| core.placer().local_status(k)) {
                running += 1;
                if s.health == Health::Healthy {
                    healthy += 1;
                } else if example.is_none() {
                    example = Some(format!("{} is {}", s.key, s.health.as_str()));
                }
            }
        }
        let f = self.flaps.as_mut().expect("on");
        f.finally = Some(Check {
            name: "eventually_tasks_healthy".into(),
            ok: running > 0 && healthy == running,
            detail: format!(
                "{healthy} of {running} running tasks healthy{}",
                example.map(|e| format!(" ({e})")).unwrap_or_default()
            ),
        });
    }

    /// Verdicts handed to cores so far.
    pub(super) fn probes(&self) -> u64 {
        self.flaps.as_ref().map_or(0, |f| f.probes)
    }

    /// The scenario's checks, for the report.
    pub(super) fn flap_checks(&mut self) -> Vec<Check> {
        let Some(f) = self.flaps.as_mut() else {
            return Vec::new();
        };
        let flapping = f.windows.iter().filter(|w| w.is_some()).count();
        let mut checks = vec![Check {
            name: "always_unhealthy_restarted".into(),
            ok: f.missed == 0,
            detail: format!(
                "{} restarts for a failing check, {} missed",
                f.restarted, f.missed
            ),
        }];
        if f.flapping {
            checks.push(Check {
                name: "fault_health_flaps_fired".into(),
                ok: f.unhealthy > 0 && f.restarted > 0,
                detail: format!(
                    "{flapping} of {} tasks flapped; {} probes, {} turned unhealthy",
                    f.windows.len(),
                    f.probes,
                    f.unhealthy
                ),
            });
        }
        checks.extend(f.finally.take());
        checks
    }
}
