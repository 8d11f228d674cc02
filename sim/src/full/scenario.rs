//! The scenarios: when nodes crash, restart, are cut apart and healed,
//! when job waves are submitted; and the per-second sample of the run.

use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use shoal_gossip::Instant;
use shoal_placement::{DeployStep, Finished, Job, Outcome};

use super::{Action, Ev, FORM_MARGIN, Task, Traffic, World, secs};
use crate::params::Scenario;
use crate::report::Sample;
use crate::workload;
use crate::workload::JOB_DELAY_US;

impl World {
    pub(super) fn up_nodes(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .collect()
    }

    pub(super) fn pick(&mut self, from: &[usize], k: usize) -> Vec<u32> {
        let mut pool: Vec<usize> = from.to_vec();
        let mut out = Vec::new();
        for _ in 0..k.min(pool.len()) {
            let j = self.rng.random_range(0..pool.len());
            out.push(pool.swap_remove(j) as u32);
        }
        out.sort_unstable();
        out
    }

    pub(super) fn at(&mut self, after_begin: Duration, a: Action) {
        let t = self.began.unwrap_or(self.now()) + after_begin;
        self.q.push(t, Ev::Action(a));
    }

    /// The scenario starts: the cluster has formed.
    pub(super) fn begin(&mut self) {
        let now = self.now();
        self.began = Some(now);
        self.traffic = Traffic::default();
        self.net.set_loss(self.p.effective_loss());
        let n = self.p.nodes;
        // Slow nodes.
        let k = (self.p.slow_fraction * n as f64).round() as usize;
        let all: Vec<usize> = (0..n).collect();
        for s in self.pick(&all, k) {
            self.net.set_slow(s as usize, self.p.slow);
            self.slow_nodes += 1;
        }
        // Jobs.
        if self.p.with_jobs() {
            let cpus: u64 = self.nodes.iter().map(|x| x.cap.cpus_milli).sum();
            self.jobs = workload::plan_jobs(&mut self.rng, cpus, self.p.fill);
            if self.p.scenario == Scenario::HealthFlaps {
                workload::add_checks(&mut self.jobs);
            }
            if self.p.scenario == Scenario::RollingDeploy {
                self.add_deploy_jobs();
            }
            let total: u32 = self.jobs.iter().map(|j| j.count).sum();
            self.tasks = (0..total).map(|_| Task::default()).collect();
            for j in &self.jobs {
                for k in 0..j.count {
                    self.tasks[(j.first_task + k) as usize].demand = j.demand;
                }
            }
            self.at(Duration::from_secs(2), Action::Submit);
        }
        let d = self.p.duration;
        let up = self.up_nodes();
        match self.p.scenario {
            Scenario::Default | Scenario::Loss => {
                let victims = self.pick(&up, self.p.crashes.max(1));
                for (k, v) in victims.into_iter().enumerate() {
                    let t = Duration::from_secs(20 + 5 * k as u64).min(d / 2);
                    self.planned_crashes += 1;
                    self.at(t, Action::Crash(vec![v]));
                }
            }
            Scenario::JoinStorm | Scenario::Jobs | Scenario::Triggers => {}
            Scenario::HealthFlaps => self.plan_flaps(),
            Scenario::RollingDeploy => self.plan_rollout(),
            Scenario::Churn => {
                let per_sec = self.p.churn_per_min / 100.0 * n as f64 / 60.0;
                if per_sec > 0.0 {
                    let mut t = 5.0;
                    let mut pool = up.clone();
                    while t < secs(d) && !pool.is_empty() {
                        let v = self.pick(&pool, 1)[0];
                        pool.retain(|x| *x != v as usize);
                        self.planned_crashes += 1;
                        self.planned_restarts += 1;
                        self.at(Duration::from_secs_f64(t), Action::Crash(vec![v]));
                        self.at(
                            Duration::from_secs_f64(t) + self.p.churn_down,
                            Action::Restart(vec![v]),
                        );
                        t += 1.0 / per_sec;
                    }
                }
            }
            Scenario::MassFailure => {
                let k = ((self.p.fail_fraction * n as f64).round() as usize).max(1);
                let victims = self.pick(&up, k);
                self.planned_crashes += victims.len();
                self.at(Duration::from_secs(20).min(d / 2), Action::Crash(victims));
            }
            Scenario::Partition => {
                let (cut, heal) = self.p.partition_window();
                self.at(cut, Action::Partition);
                self.at(heal, Action::Heal);
            }
            Scenario::DcLoss => {
                let last = self.net.topology().dcs() - 1;
                let victims: Vec<u32> = up
                    .iter()
                    .filter(|i| self.net.topology().dc(**i) == last)
                    .map(|i| *i as u32)
                    .collect();
                self.planned_crashes += victims.len();
                self.at(Duration::from_secs(20).min(d / 2), Action::Crash(victims));
            }
        }
        self.at(d, Action::End);
        self.at(d + self.p.settle, Action::Finish);
        self.end_at = Some(self.now() + d + self.p.settle);
    }

    pub(super) fn act(&mut self, a: Action) {
        let now = self.now();
        match a {
            Action::Begin => self.begin(),
            Action::Crash(v) => {
                for i in v {
                    self.crash(i as usize);
                }
            }
            Action::Restart(v) => {
                for i in v {
                    if !self.nodes[i as usize].up {
                        self.restarts += 1;
                        // Detections of the old life stop counting.
                        self.open_crash.remove(&i);
                        self.start_node(i as usize, false);
                    }
                }
            }
            Action::Partition => {
                let sides = self.p.partition_sides(self.net.topology().dcs());
                let dc = |i: usize| self.net.topology().dc(i);
                let side = (0..self.nodes.len()).map(|i| sides[dc(i)]).collect();
                let live: Vec<usize> = (0..self.nodes.len())
                    .filter(|&i| self.nodes[i].up)
                    .map(dc)
                    .collect();
                self.reach.cut(now, sides, &live);
                self.net.partition(side);
                self.partitions += 1;
            }
            Action::Heal => self.heal(now),
            Action::Submit => self.submit(),
            Action::Deploy => self.begin_deployments(),
            Action::End => {
                self.ended = true;
                self.heal(now);
            }
            Action::Finish => {
                self.finish();
                self.finish_flaps();
                self.finish_rollout();
                self.finished = true;
            }
        }
    }

    /// Submits one second's worth of the wave, and schedules the next.
    /// Heals the partition, if there is one.
    fn heal(&mut self, now: Instant) {
        if self.net.is_partitioned() {
            self.net.heal();
            self.reach.heal(now);
            self.heals += 1;
            self.last_heal = now;
        }
    }

    pub(super) fn submit(&mut self) {
        let now = self.now();
        let total: usize = self.tasks.len();
        let rate = self.p.effective_tasks_per_sec(total);
        let mut budget = rate.round().max(1.0) as usize;
        let mut batch = Vec::new();
        while self.submitted_jobs < self.jobs.len() && budget > 0 {
            let j = &self.jobs[self.submitted_jobs];
            budget = budget.saturating_sub(j.count as usize);
            for k in 0..j.count {
                self.tasks[(j.first_task + k) as usize].submitted = Some(now);
            }
            batch.push(Job {
                spec: j.spec.clone(),
                version: 1,
                deleted: false,
                run_version: 1,
                finished: Arc::default(),
                deployment: None,
                waiting: Default::default(),
            });
            self.submitted_jobs += 1;
        }
        if batch.is_empty() {
            return;
        }
        self.first_submit.get_or_insert(now);
        self.replicate(batch);
        if self.submitted_jobs < self.jobs.len() {
            self.q
                .push(now + Duration::from_secs(1), Ev::Action(Action::Submit));
        }
    }

    /// The desired state changed by `batch` (jobs, as written): it reaches
    /// every node up now after a replication delay, and every node that
    /// starts later from its disk.
    pub(super) fn replicate(&mut self, batch: Vec<Job>) {
        let now = self.now();
        let b = self.batches.len() as u32;
        self.batches.push(batch);
        for i in 0..self.nodes.len() {
            if self.nodes[i].up {
                let d = self.rng.random_range(JOB_DELAY_US.0..JOB_DELAY_US.1);
                let life = self.nodes[i].life;
                self.q.push(
                    now + Duration::from_micros(d),
                    Ev::JobsArrive {
                        node: i as u32,
                        life,
                        batch: b,
                    },
                );
            }
        }
    }

    /// Job `name` as last written.
    pub(super) fn latest_job(&self, name: &str) -> Option<Job> {
        self.batches
            .iter()
            .rev()
            .flatten()
            .find(|j| j.spec.name == name)
            .cloned()
    }

    /// A node asked for a batch task's end to be recorded: written into
    /// its job (once; asking again changes nothing), which replicates like
    /// any change of the desired state. The fake runtime ends no task by
    /// itself, so no scenario yet has a task finish.
    pub(super) fn record_finished(&mut self, o: Outcome) {
        let Some(i) = o.key.index_number() else {
            return;
        };
        // The job as last written.
        let Some(mut job) = self.latest_job(&o.key.job) else {
            return;
        };
        if job.version != o.job_version || job.finished.contains_key(&i) {
            return;
        }
        Arc::make_mut(&mut job.finished).insert(
            i,
            Finished {
                ok: o.ok,
                node: Some(o.node),
                exit_code: o.exit_code,
                at_ms: o.at_ms,
            },
        );
        self.replicate(vec![job]);
    }

    /// A deployment's driver moved it on: the step written into its job
    /// (unless the deployment ended meanwhile), which replicates like any
    /// change of the desired state. The simulator keeps no job history,
    /// so a failed deployment is not reverted.
    pub(super) fn record_deployment(&mut self, step: DeployStep) {
        let Some(mut job) = self.latest_job(&step.job) else {
            return;
        };
        let Some(d) = job
            .deployment
            .as_deref()
            .filter(|d| d.version == step.version && d.status.in_progress())
        else {
            return;
        };
        if !step.patch.changes(d) {
            return;
        }
        let next = step.patch.apply(d, self.wall());
        self.deployment_steps += 1;
        self.on_deploy_step(&step.job, d, &next);
        job.deployment = Some(Arc::new(next));
        self.replicate(vec![job]);
    }

    pub(super) fn sample(&mut self) {
        let now = self.now();
        let up = self.nodes.iter().filter(|n| n.up).count();
        if self.began.is_some() && !self.finished {
            self.node_seconds += up as f64;
        }
        let running = self.tasks.iter().filter(|t| !t.runners.is_empty()).count() as u64;
        let waiting = self
            .tasks
            .iter()
            .filter(|t| t.submitted.is_some() && t.runners.is_empty())
            .count() as u64;
        let duplicates = self.tasks.iter().filter(|t| t.duplicated()).count() as u64;
        self.series.push(Sample {
            t_s: secs(now - Instant::ZERO),
            up,
            running,
            waiting,
            duplicates,
            gossip_bytes_per_node: self.second.gossip_bytes() as f64 / up.max(1) as f64,
            placement_msgs_per_node: self.second.place_msgs as f64 / up.max(1) as f64,
        });
        self.second = Traffic::default();
        // Formation: everyone started and everyone knows everyone.
        if self.formed.is_none() && self.started == self.nodes.len() {
            let expected = up - 1;
            let all = self.nodes.iter().filter(|n| n.up).all(|n| {
                n.core
                    .as_ref()
                    .is_some_and(|c| c.membership().num_active() == expected)
            });
            if all {
                self.formed = Some(now);
                if self.began.is_none() {
                    self.q.push(now + FORM_MARGIN, Ev::Action(Action::Begin));
                }
            } else if self.began.is_none() && now > Instant::ZERO + self.p.form_timeout {
                // Go on regardless: the report shows it never formed.
                self.q.push(now, Ev::Action(Action::Begin));
            }
        }
        self.q.push(now + Duration::from_secs(1), Ev::Sample);
    }
}
