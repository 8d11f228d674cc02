//! The `rolling-deploy` scenario: a wave of jobs, among them a few service
//! jobs with `[update]` and a health check ([`workload::deploy_jobs`]);
//! once every task of those runs healthy (and [`DEPLOY_AT`] into the
//! scenario at the earliest), the simulator writes a new version of each
//! (the task's environment changed) with the record of a deployment that
//! begins, as the agent's API does. From then on the cores do it all: the
//! owner of each job's key `job/0` drives its deployment, the coordinators
//! place each new task beside the old one and stop the old one once the
//! driver marks the index done; every step a driver writes is applied to
//! the job and replicated ([`World::record_deployment`]). The tasks become
//! healthy by their checks, probed as in `health-flaps` (every check
//! passes). When a third of the largest job is done, its driver crashes,
//! and the next owner of the job key must finish it.
//!
//! Checked, every [`SAMPLE_EVERY`] while a deployment is in progress:
//!
//! - `always_deploy_min_healthy`: the indexes with a healthy running task,
//!   by their holders' account, never fall below `count - max_parallel`
//!   (what the update allows; start-first should keep them at `count`),
//!   less the indexes whose copy died in a crash and that do not run
//!   healthy again yet (a crash is not the deployment's doing);
//! - `always_one_driver_when_stable`: once every live node's placer has
//!   held the same member list, that of the live nodes, for
//!   [`DRIVER_GRACE`], exactly one live node drives the deployment
//!   (`Placer::drives`);
//!
//! at every step written: `always_deploy_in_flight`, the record never has
//! more indexes in flight than `max_parallel` (the canaries, before they
//! are promoted); and at the end: `eventually_deployed` (each deployment
//! successful, every index run once, healthy, by the new version) and
//! `fault_driver_crashed` (the driver did crash mid-deployment).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::Instant;
use shoal_model::{Deployment, DeploymentStatus};
use shoal_placement::{Health, Job, TaskKey, TaskState};

use super::{Action, Ev, World, fingerprint, secs};
use crate::report::Check;
use crate::workload;

/// Deployments are sampled this often.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// The deployments begin this long into the scenario at the earliest, and
/// only once every task of the deployed jobs runs healthy.
const DEPLOY_AT: Duration = Duration::from_secs(20);
/// Once the live nodes' placers have agreed on the live nodes this long
/// (and a deployment's record has been out this long), exactly one node
/// drives it: a placer's tick (100 ms) after its view or the record
/// changed, and the replication of the record (up to 300 ms), with room.
const DRIVER_GRACE: Duration = Duration::from_secs(2);
/// The release the deployments roll out (the first is 1).
const RELEASE: u64 = 2;

/// The scenario's plan and findings.
pub(super) struct Rollout {
    deploying: Vec<Deploying>,
    /// The task numbers of the deployed jobs.
    tasks: std::ops::Range<u32>,
    /// Task numbers whose copy died in a crash during a deployment, until
    /// they run healthy again.
    hit: BTreeSet<u32>,
    crash: Option<DriverCrash>,
    /// Samples taken with views settled; those that found other than one
    /// driver.
    settled_samples: u64,
    driver_breaks: u64,
    /// Most drivers of one deployment seen while views were not settled.
    unsettled_max: usize,
    /// Times the deployments waited for the deployed jobs to run healthy.
    waited: u32,
    finally: Vec<Check>,
}

/// The crash of the largest deployment's driver.
struct DriverCrash {
    node: u32,
    done: usize,
    at: Instant,
    /// The node seen driving it next, once views settled.
    next: Option<u32>,
}

/// One deployed job, and what its deployment did.
struct Deploying {
    /// Its number in the workload.
    job: usize,
    name: String,
    count: u32,
    max_parallel: u32,
    canary: u32,
    /// The version deployed, once begun.
    version: Option<u64>,
    begun: Option<Instant>,
    ended: Option<(Instant, DeploymentStatus)>,
    /// The fewest healthy indexes seen, with the floor then.
    fewest: Option<(u32, u32)>,
    floor_breaks: u64,
    samples: u64,
    max_active: usize,
    in_flight_breaks: u64,
    /// Indexes a step took out of `done`.
    undone: u64,
    steps: u64,
    /// Nodes seen driving it.
    drivers: BTreeSet<u32>,
}

impl Deploying {
    fn in_progress(&self) -> bool {
        self.begun.is_some() && self.ended.is_none()
    }

    /// Most indexes the record may have in flight.
    fn in_flight_limit(&self, d: &Deployment) -> usize {
        let max = self.max_parallel as usize;
        if d.promoted {
            max
        } else {
            max.max(self.canary as usize)
        }
    }
}

impl World {
    /// Adds the jobs the scenario deploys to the workload (before its
    /// tasks are numbered).
    pub(super) fn add_deploy_jobs(&mut self) {
        let first_job = self.jobs.len();
        let first_task: u32 = self.jobs.iter().map(|j| j.count).sum();
        let plans = workload::deploy_jobs(first_job, first_task, self.p.nodes);
        let end = first_task + plans.iter().map(|j| j.count).sum::<u32>();
        let deploying = plans
            .iter()
            .enumerate()
            .map(|(k, j)| {
                let u = j.spec.update.clone().unwrap_or_default();
                Deploying {
                    job: first_job + k,
                    name: j.spec.name.clone(),
                    count: j.count,
                    max_parallel: u.max_parallel,
                    canary: u.canary,
                    version: None,
                    begun: None,
                    ended: None,
                    fewest: None,
                    floor_breaks: 0,
                    samples: 0,
                    max_active: 0,
                    in_flight_breaks: 0,
                    undone: 0,
                    steps: 0,
                    drivers: BTreeSet::new(),
                }
            })
            .collect();
        self.jobs.extend(plans);
        self.rollout = Some(Rollout {
            deploying,
            tasks: first_task..end,
            hit: BTreeSet::new(),
            crash: None,
            settled_samples: 0,
            driver_breaks: 0,
            unsettled_max: 0,
            waited: 0,
            finally: Vec::new(),
        });
    }

    /// Plans the scenario's faults: checks probed, the deployments and the
    /// driver's crash.
    pub(super) fn plan_rollout(&mut self) {
        if self.rollout.is_none() {
            return;
        }
        self.plan_probes();
        self.planned_crashes += 1;
        self.at(DEPLOY_AT, Action::Deploy);
    }

    /// Begins the deployments if every task of the deployed jobs runs
    /// healthy; otherwise tries again a second later.
    pub(super) fn begin_deployments(&mut self) {
        let Some(r) = self.rollout.as_ref() else {
            return;
        };
        let now = self.now();
        let wall = self.wall();
        let jobs: Vec<(usize, String, u32)> = r
            .deploying
            .iter()
            .map(|d| (d.job, d.name.clone(), d.count))
            .collect();
        let ready = jobs
            .iter()
            .all(|(j, _, count)| self.healthy_indexes(*j).0 == *count);
        if !ready && !self.ended {
            self.rollout.as_mut().expect("on").waited += 1;
            self.q
                .push(now + Duration::from_secs(1), Ev::Action(Action::Deploy));
            return;
        }
        let mut batch = Vec::new();
        for (k, (j, name, _)) in jobs.iter().enumerate() {
            let Some(old) = self.latest_job(name) else {
                continue;
            };
            let version = old.version + 1;
            let spec = Arc::new(workload::new_release(&old.spec, RELEASE));
            let canary = spec.update.as_ref().map_or(0, |u| u.canary);
            self.jobs[*j].spec = Arc::clone(&spec);
            batch.push(Job {
                spec,
                version,
                deleted: false,
                run_version: version,
                finished: Arc::default(),
                waiting: Arc::default(),
                deployment: Some(Arc::new(Deployment::begin(
                    version,
                    old.run_version,
                    canary,
                    wall,
                ))),
            });
            let d = &mut self.rollout.as_mut().expect("on").deploying[k];
            d.version = Some(version);
            d.begun = Some(now);
        }
        self.replicate(batch);
        self.q.push(now + SAMPLE_EVERY, Ev::DeploySample);
    }

    /// How many indexes of job number `j` have a running task that its
    /// holder finds healthy, and how many of those run `version` or later.
    fn healthy_indexes_of(&self, j: usize, version: u64) -> (u32, u32, Vec<u32>) {
        let Some(plan) = self.jobs.get(j) else {
            return (0, 0, Vec::new());
        };
        let (mut healthy, mut new, mut which) = (0, 0, Vec::new());
        for k in 0..plan.count {
            let t = plan.first_task + k;
            let key = TaskKey::index(&plan.spec.name, k);
            let mut best = None;
            for &(n, v) in &self.tasks[t as usize].runners {
                let node = &self.nodes[n as usize];
                let Some(core) = node.core.as_ref().filter(|_| node.up) else {
                    continue;
                };
                let healthy = core.placer().local_status(&key).is_some_and(|s| {
                    s.node == Some(node.id)
                        && s.state == TaskState::Running
                        && s.health == Health::Healthy
                });
                if healthy {
                    best = best.max(Some(v));
                }
            }
            if let Some(v) = best {
                healthy += 1;
                which.push(t);
                if v >= version {
                    new += 1;
                }
            }
        }
        (healthy, new, which)
    }

    /// [`healthy_indexes_of`](Self::healthy_indexes_of) counting any
    /// version.
    fn healthy_indexes(&self, j: usize) -> (u32, u32) {
        let (h, n, _) = self.healthy_indexes_of(j, 0);
        (h, n)
    }

    /// Whether every live node's placer has held the same member list,
    /// that of the live nodes, for [`DRIVER_GRACE`].
    fn views_settled(&self) -> bool {
        let Some(since) = self.agreed_since else {
            return false;
        };
        let live = self
            .nodes
            .iter()
            .filter(|n| n.up)
            .fold(0, |v, n| v ^ fingerprint(n.id));
        self.views.len() == 1
            && self.views.keys().next() == Some(&live)
            && !self.net.is_partitioned()
            && self.now() >= since + DRIVER_GRACE
    }

    /// The live nodes that drive a deployment of `job` now.
    fn drivers_of(&self, job: &str) -> Vec<u32> {
        (0..self.nodes.len())
            .filter(|i| {
                let n = &self.nodes[*i];
                n.up && n.core.as_ref().is_some_and(|c| c.placer().drives(job))
            })
            .map(|i| i as u32)
            .collect()
    }

    /// The deployments' sample: healthy indexes, drivers, the driver's
    /// crash.
    pub(super) fn deploy_sample(&mut self) {
        let now = self.now();
        let settled = self.views_settled();
        let Some(r) = self.rollout.as_ref() else {
            return;
        };
        let jobs: Vec<(usize, usize, String, u64)> = r
            .deploying
            .iter()
            .enumerate()
            .filter(|(_, d)| d.in_progress())
            .filter_map(|(k, d)| Some((k, d.job, d.name.clone(), d.version?)))
            .collect();
        if jobs.is_empty() {
            return;
        }
        for (k, j, name, version) in jobs {
            let (healthy, _, which) = self.healthy_indexes_of(j, version);
            let drivers = self.drivers_of(&name);
            let done = self
                .latest_job(&name)
                .and_then(|job| job.deployment)
                .map_or(0, |d| d.done.len());
            let r = self.rollout.as_mut().expect("on");
            for t in which {
                r.hit.remove(&t);
            }
            let d = &mut r.deploying[k];
            let range = self.jobs[j].first_task..self.jobs[j].first_task + d.count;
            let hit = r.hit.range(range).count() as u32;
            let floor = d.count.saturating_sub(d.max_parallel).saturating_sub(hit);
            d.samples += 1;
            if d.fewest.is_none_or(|(h, _)| healthy < h) {
                d.fewest = Some((healthy, floor));
            }
            d.drivers.extend(drivers.iter().copied());
            let mut broke = None;
            if healthy < floor {
                d.floor_breaks += 1;
                broke = Some(format!(
                    "always_deploy_min_healthy: {name} has {healthy} of {} indexes healthy, below {floor}",
                    d.count
                ));
            }
            let out_long_enough = d.begun.is_some_and(|t| now >= t + DRIVER_GRACE);
            if settled && out_long_enough {
                r.settled_samples += 1;
                if drivers.len() != 1 {
                    r.driver_breaks += 1;
                    broke.get_or_insert(format!(
                        "always_one_driver_when_stable: {name} has drivers {drivers:?} with views settled"
                    ));
                }
                if let Some(c) = r.crash.as_mut()
                    && k == 0
                    && c.next.is_none()
                {
                    c.next = drivers.first().copied();
                }
            } else {
                r.unsettled_max = r.unsettled_max.max(drivers.len());
            }
            let crash_now = k == 0
                && r.crash.is_none()
                && drivers.len() == 1
                && done * 3 >= r.deploying[0].count as usize;
            if let Some(what) = broke {
                self.violation(what);
            }
            if crash_now {
                let node = drivers[0];
                self.rollout.as_mut().expect("on").crash = Some(DriverCrash {
                    node,
                    done,
                    at: now,
                    next: None,
                });
                self.crash(node as usize);
            }
        }
        self.q.push(now + SAMPLE_EVERY, Ev::DeploySample);
    }

    /// Node `i` crashes: the copies of the deployed jobs it ran count as
    /// lost to a crash, while a deployment is in progress.
    pub(super) fn note_crash_hits(&mut self, i: usize) {
        let Some(r) = self.rollout.as_mut() else {
            return;
        };
        if !r.deploying.iter().any(Deploying::in_progress) {
            return;
        }
        for t in self.nodes[i].procs.values() {
            if r.tasks.contains(t) {
                r.hit.insert(*t);
            }
        }
    }

    /// A step of `job`'s deployment was written: the record was `before`,
    /// it is `d` now.
    pub(super) fn on_deploy_step(&mut self, job: &str, before: &Deployment, d: &Deployment) {
        let now = self.now();
        let Some(r) = self.rollout.as_mut() else {
            return;
        };
        let Some(x) = r
            .deploying
            .iter_mut()
            .find(|x| x.name == job && x.version == Some(d.version))
        else {
            return;
        };
        x.steps += 1;
        x.max_active = x.max_active.max(d.active.len());
        let limit = x.in_flight_limit(d);
        let mut broke = None;
        if d.active.len() > limit {
            x.in_flight_breaks += 1;
            broke = Some(format!(
                "always_deploy_in_flight: {job} has {} indexes in flight, more than {limit}",
                d.active.len()
            ));
        }
        // No step undoes another: an index done stays done (the job's
        // count does not change here).
        let undone: Vec<u32> = before.done.difference(&d.done).copied().collect();
        if !undone.is_empty() {
            x.undone += undone.len() as u64;
            broke.get_or_insert(format!(
                "always_deploy_done_grows: a step of {job} took {undone:?} out of done"
            ));
        }
        if !d.status.in_progress() && x.ended.is_none() {
            x.ended = Some((now, d.status));
        }
        if let Some(what) = broke {
            self.violation(what);
        }
    }

    /// `eventually_deployed`, once the run settled.
    pub(super) fn finish_rollout(&mut self) {
        let Some(r) = self.rollout.as_ref() else {
            return;
        };
        let jobs: Vec<(usize, String, u32, Option<u64>, String)> = r
            .deploying
            .iter()
            .map(|d| {
                let took = match (d.begun, d.ended) {
                    (Some(b), Some((e, _))) => format!(" in {:.1} s", secs(e - b)),
                    _ => String::new(),
                };
                (d.job, d.name.clone(), d.count, d.version, took)
            })
            .collect();
        let waited = r.waited;
        let probes = self.probes();
        let mut ok = true;
        let mut parts = Vec::new();
        for (j, name, count, version, took) in jobs {
            let Some(version) = version else {
                ok = false;
                parts.push(format!("{name} never began"));
                continue;
            };
            let d = self.latest_job(&name).and_then(|job| job.deployment);
            let (healthy, new, _) = self.healthy_indexes_of(j, version);
            let plan = &self.jobs[j];
            let tasks = &self.tasks[plan.first_task as usize..(plan.first_task + count) as usize];
            let copies: usize = tasks.iter().map(|t| t.runners.len()).sum();
            let old = tasks
                .iter()
                .flat_map(|t| &t.runners)
                .filter(|(_, v)| *v < version)
                .count();
            let status = d.as_ref().map(|d| d.status);
            let done = d.as_ref().map_or(0, |d| d.done.len());
            let good = status == Some(DeploymentStatus::Successful)
                && done == count as usize
                && healthy == count
                && new == count
                && copies == count as usize
                && old == 0;
            ok &= good;
            parts.push(format!(
                "{name}: {}{took}, {done} of {count} done; {new} indexes run version {version} healthy; {copies} copies, {old} of an old version",
                status.map_or("no record", DeploymentStatus::as_str)
            ));
        }
        parts.push(format!(
            "begun after {waited} s waiting for the first release to run healthy; {probes} probes"
        ));
        let r = self.rollout.as_mut().expect("on");
        r.finally.push(Check {
            name: "eventually_deployed".into(),
            ok,
            detail: parts.join("; "),
        });
    }

    /// The scenario's checks, for the report.
    pub(super) fn rollout_checks(&mut self) -> Vec<Check> {
        let steps = self.deployment_steps;
        let Some(r) = self.rollout.as_mut() else {
            return Vec::new();
        };
        let each = |f: &dyn Fn(&Deploying) -> String| -> String {
            r.deploying.iter().map(f).collect::<Vec<_>>().join("; ")
        };
        let min_healthy = each(&|d| match d.fewest {
            Some((h, floor)) => format!(
                "{}: fewest healthy {h} of {} (floor {floor}) over {} samples",
                d.name, d.count, d.samples
            ),
            None => format!("{}: never sampled", d.name),
        });
        let in_flight = each(&|d| {
            format!(
                "{}: at most {} in flight (max_parallel {}, canary {}) over {} steps",
                d.name, d.max_active, d.max_parallel, d.canary, d.steps
            )
        });
        let drivers = each(&|d| format!("{} driven by {:?}", d.name, d.drivers));
        let mut checks = vec![
            Check {
                name: "always_deploy_min_healthy".into(),
                ok: r
                    .deploying
                    .iter()
                    .all(|d| d.floor_breaks == 0 && d.samples > 0),
                detail: min_healthy,
            },
            Check {
                name: "always_deploy_in_flight".into(),
                ok: r
                    .deploying
                    .iter()
                    .all(|d| d.in_flight_breaks == 0 && d.steps > 0),
                detail: format!("{in_flight}; {steps} steps written in all"),
            },
            Check {
                name: "always_deploy_done_grows".into(),
                ok: r.deploying.iter().all(|d| d.undone == 0),
                detail: each(&|d| format!("{}: {} indexes taken out of done", d.name, d.undone)),
            },
            Check {
                name: "always_one_driver_when_stable".into(),
                ok: r.driver_breaks == 0 && r.settled_samples > 0,
                detail: format!(
                    "{} of {} samples with views settled found other than one driver; up to {} while they were not; {drivers}",
                    r.driver_breaks, r.settled_samples, r.unsettled_max
                ),
            },
        ];
        checks.append(&mut r.finally);
        checks.push(Check {
            name: "fault_driver_crashed".into(),
            ok: r.crash.as_ref().is_some_and(|c| c.next.is_some()),
            detail: match &r.crash {
                Some(c) => format!(
                    "n{} drove {} and crashed at {:.1} s with {} of {} done; then n{} drove it",
                    c.node,
                    r.deploying[0].name,
                    secs(c.at - Instant::ZERO),
                    c.done,
                    r.deploying[0].count,
                    c.next.map_or("?".into(), |n| n.to_string())
                ),
                None => "the driver never crashed".into(),
            },
        });
        checks
    }
}
