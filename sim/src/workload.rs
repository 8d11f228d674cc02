//! What the cluster is asked to run, what its nodes offer, and the
//! centralized best-fit placement that shoal's packing is compared with.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde_json::json;
use shoal_gossip::{Capacity, FreeClass, MemberMeta, RuntimeInfo};
use shoal_model::JobSpec;
use shoal_placement::Resources;

/// Wall-clock milliseconds at virtual time zero (for award stamps).
pub const WALL0_MS: u64 = 1_700_000_000_000;
/// The fake runtime carries out each command (start, replace, stop) this
/// long after it is given; one delay for all keeps them in order.
pub const RUNTIME_DELAY: Duration = Duration::from_millis(50);
/// Replication of the desired state: a job reaches a node this long after
/// submission (microseconds, uniform).
pub const JOB_DELAY_US: (u64, u64) = (20_000, 300_000);

/// CPUs (in thousandths) and memory (MiB) of each node class, with its
/// weight: a mixed fleet.
const NODE_CLASSES: [(u64, u64, u32); 3] = [
    (8_000, 32_768, 50),
    (16_000, 65_536, 30),
    (32_000, 131_072, 20),
];

/// Task sizes (thousandths of a CPU, MiB) with their weights.
const TASK_SIZES: [(u64, u64, u32); 3] = [(250, 512, 60), (1_000, 2_048, 30), (4_000, 8_192, 10)];

/// Tasks per job, drawn uniformly.
const JOB_COUNTS: [u32; 5] = [1, 2, 5, 10, 20];

fn weighted<T: Copy>(
    rng: &mut ChaCha8Rng,
    items: &[(u64, u64, T)],
    weight: impl Fn(T) -> u32,
) -> (u64, u64) {
    let total: u32 = items.iter().map(|x| weight(x.2)).sum();
    let mut pick = rng.random_range(0..total);
    for &(a, b, w) in items {
        let w = weight(w);
        if pick < w {
            return (a, b);
        }
        pick -= w;
    }
    (items[0].0, items[0].1)
}

/// The capacity of one node, drawn from the fleet's mix.
pub fn node_capacity(rng: &mut ChaCha8Rng) -> Resources {
    let (cpus_milli, memory_mb) = weighted(rng, &NODE_CLASSES, |w| w);
    Resources {
        cpus_milli,
        memory_mb,
        disk_mb: 1_000_000,
        gpus: 0,
    }
}

/// The metadata of simulated node `i`: name `n<i>`, its datacenter and
/// zone, its capacity, the process runtime; RPC and API on the gossip
/// address's IP.
pub fn node_meta(
    i: usize,
    cap: Resources,
    dc: usize,
    zone: usize,
    gossip: SocketAddr,
) -> MemberMeta {
    MemberMeta {
        name: format!("n{i}"),
        gossip_addr: gossip,
        rpc_addr: SocketAddr::new(gossip.ip(), 5482),
        api_addr: SocketAddr::new(gossip.ip(), 5480),
        api_tls: false,
        gossip_keys: Vec::new(),
        dc: format!("dc{dc}"),
        zone: format!("dc{dc}-z{zone}"),
        region: "r1".into(),
        labels: BTreeMap::new(),
        capacity: Capacity {
            cpus_milli: u32::try_from(cap.cpus_milli).unwrap_or(u32::MAX),
            memory_mb: cap.memory_mb,
            disk_mb: cap.disk_mb,
            gpus: 0,
        },
        runtimes: vec![RuntimeInfo {
            name: "process".into(),
            version: "sim".into(),
        }],
        agent_version: "sim".into(),
        free_class: FreeClass::IDLE,
        isolation: "none".into(),
        draining: false,
    }
}

/// One job of the workload.
#[derive(Clone, Debug)]
pub struct JobPlan {
    /// Its spec.
    pub spec: Arc<JobSpec>,
    /// Index of its first task in the run's task table.
    pub first_task: u32,
    /// Tasks.
    pub count: u32,
    /// What each task needs.
    pub demand: Resources,
}

/// Name of job number `n`.
pub fn job_name(n: usize) -> String {
    format!("j{n}")
}

/// The job number of a job name made by [`job_name`].
pub fn job_number(name: &str) -> Option<usize> {
    name.strip_prefix('j')?.parse().ok()
}

/// Jobs of mixed sizes whose tasks need `fill` of `cluster_cpus_milli`.
pub fn plan_jobs(rng: &mut ChaCha8Rng, cluster_cpus_milli: u64, fill: f64) -> Vec<JobPlan> {
    let target = (cluster_cpus_milli as f64 * fill.max(0.0)) as u64;
    let mut jobs = Vec::new();
    let mut cpu = 0u64;
    let mut tasks = 0u32;
    while cpu < target {
        let (cpus_milli, memory_mb) = weighted(rng, &TASK_SIZES, |w| w);
        let count = JOB_COUNTS[rng.random_range(0..JOB_COUNTS.len())];
        let n = jobs.len();
        let spec = JobSpec::from_json(json!({
            "name": job_name(n),
            "count": count,
            "task": {
                "runtime": "process",
                "command": "/bin/sleep",
                "args": ["infinity"],
                "resources": {"cpus": cpus_milli as f64 / 1000.0, "memory_mb": memory_mb},
            },
        }))
        .expect("the simulator's job specs are valid");
        jobs.push(JobPlan {
            spec: Arc::new(spec),
            first_task: tasks,
            count,
            demand: Resources {
                cpus_milli,
                memory_mb,
                disk_mb: 0,
                gpus: 0,
            },
        });
        cpu += cpus_milli * u64::from(count);
        tasks += count;
    }
    jobs
}

/// Gives every job a health check (the `health-flaps` scenario): probed
/// every [`CHECK_INTERVAL`], failing after 2 failures past a 1 s grace;
/// even jobs restart their task when it fails, odd ones only show it.
/// The simulator feeds the verdicts itself.
pub fn add_checks(jobs: &mut [JobPlan]) {
    for (n, j) in jobs.iter_mut().enumerate() {
        let mut v = j.spec.to_json();
        v["task"]["checks"] = json!([{
            "type": "command",
            "command": "true",
            "interval": "2s", // CHECK_INTERVAL
            "grace": "1s",
            "failures": 2,
            "on_unhealthy": if n % 2 == 0 { "restart" } else { "none" },
        }]);
        j.spec = Arc::new(JobSpec::from_json(v).expect("the simulator's checks are valid"));
    }
}

/// How often the simulated checks are probed.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// How long a new task of the `rolling-deploy` scenario must stay healthy
/// before the one it replaces stops (`update.min_healthy_time`).
pub const DEPLOY_MIN_HEALTHY: &str = "2s";

/// The service jobs that the `rolling-deploy` scenario deploys anew, as
/// jobs numbered from `first_job` whose tasks are numbered from
/// `first_task`, for a cluster of `nodes` nodes: small tasks (a quarter
/// CPU) with a health check (as [`add_checks`], restarting), and an
/// `[update]` each:
///
/// - a large one: `nodes / 5` tasks (20 to 1,000), `max_parallel` a tenth
///   of them (at least 2);
/// - 20 tasks, 2 canaries promoted automatically, then 4 at a time;
/// - 10 tasks, one at a time.
pub fn deploy_jobs(first_job: usize, first_task: u32, nodes: usize) -> Vec<JobPlan> {
    let large = u32::try_from(nodes / 5).unwrap_or(1000).clamp(20, 1000);
    let shapes = [(large, (large / 10).max(2), 0), (20, 4, 2), (10, 1, 0)];
    let (cpus_milli, memory_mb) = (250, 512);
    let mut task = first_task;
    let mut out = Vec::new();
    for (k, (count, max_parallel, canary)) in shapes.into_iter().enumerate() {
        let spec = JobSpec::from_json(json!({
            "name": job_name(first_job + k),
            "count": count,
            "task": {
                "runtime": "process",
                "command": "/bin/sleep",
                "args": ["infinity"],
                "env": {"RELEASE": "1"},
                "resources": {"cpus": cpus_milli as f64 / 1000.0, "memory_mb": memory_mb},
                "checks": [{
                    "type": "command",
                    "command": "true",
                    "interval": "2s", // CHECK_INTERVAL
                    "grace": "1s",
                    "failures": 2,
                    "on_unhealthy": "restart",
                }],
            },
            "update": {
                "max_parallel": max_parallel,
                "min_healthy_time": DEPLOY_MIN_HEALTHY,
                "healthy_deadline": "1m",
                "canary": canary,
                "auto_promote": canary > 0,
            },
        }))
        .expect("the simulator's deployed jobs are valid");
        out.push(JobPlan {
            spec: Arc::new(spec),
            first_task: task,
            count,
            demand: Resources {
                cpus_milli,
                memory_mb,
                disk_mb: 0,
                gpus: 0,
            },
        });
        task += count;
    }
    out
}

/// `spec` with what its task runs changed (its `RELEASE` variable set to
/// `release`): a new version that a job with `[update]` deploys rolling.
pub fn new_release(spec: &JobSpec, release: u64) -> JobSpec {
    let mut next = spec.clone();
    next.task
        .env
        .insert("RELEASE".into(), release.to_string().into());
    next
}

/// What a centralized best-fit-decreasing placement achieves.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BestFit {
    /// Tasks placed.
    pub placed: u64,
    /// CPU placed, thousandths.
    pub placed_cpus_milli: u64,
    /// Tasks that fit nowhere.
    pub unplaced: u64,
}

/// Places `tasks` on `nodes` (their capacities) centrally: largest task
/// first, each on the node it leaves with the least free CPU that still
/// has room for it (best fit).
pub fn best_fit(nodes: &[Resources], tasks: &[Resources]) -> BestFit {
    let mut order: Vec<&Resources> = tasks.iter().collect();
    order.sort_by_key(|t| std::cmp::Reverse((t.cpus_milli, t.memory_mb)));
    // (free cpu, free memory, node)
    let mut free: BTreeSet<(u64, u64, usize)> = nodes
        .iter()
        .enumerate()
        .map(|(i, r)| (r.cpus_milli, r.memory_mb, i))
        .collect();
    let mut out = BestFit::default();
    for t in order {
        let found = free
            .range((t.cpus_milli, 0, 0)..)
            .find(|(_, m, _)| *m >= t.memory_mb)
            .copied();
        match found {
            Some(slot @ (c, m, i)) => {
                free.remove(&slot);
                free.insert((c - t.cpus_milli, m - t.memory_mb, i));
                out.placed += 1;
                out.placed_cpus_milli += t.cpus_milli;
            }
            None => out.unplaced += 1,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn r(c: u64, m: u64) -> Resources {
        Resources {
            cpus_milli: c,
            memory_mb: m,
            disk_mb: 0,
            gpus: 0,
        }
    }

    #[test]
    fn best_fit_packs_tightly() {
        // Two nodes of 4 CPUs; tasks 3,3,1,1: best fit places all four.
        let nodes = [r(4000, 1000), r(4000, 1000)];
        let tasks = [r(1000, 10), r(3000, 10), r(1000, 10), r(3000, 10)];
        let b = best_fit(&nodes, &tasks);
        assert_eq!((b.placed, b.unplaced, b.placed_cpus_milli), (4, 0, 8000));
        // Memory counts too.
        let b = best_fit(&[r(4000, 100)], &[r(1000, 200)]);
        assert_eq!(b.unplaced, 1);
    }

    #[test]
    fn planned_jobs_reach_the_fill() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let jobs = plan_jobs(&mut rng, 1_000_000, 0.5);
        let cpu: u64 = jobs
            .iter()
            .map(|j| j.demand.cpus_milli * u64::from(j.count))
            .sum();
        assert!((500_000..600_000).contains(&cpu), "{cpu}");
        assert_eq!(job_number(&job_name(42)), Some(42));
        let last = jobs.last().unwrap();
        assert_eq!(
            last.first_task + last.count,
            jobs.iter().map(|j| j.count).sum::<u32>()
        );
    }

    #[test]
    fn deployed_jobs_scale_with_the_cluster_and_change_their_task() {
        let jobs = deploy_jobs(7, 100, 1000);
        let shape: Vec<(String, u32, u32, u32)> = jobs
            .iter()
            .map(|j| {
                let u = j.spec.update.clone().expect("an [update]");
                (j.spec.name.clone(), j.count, u.max_parallel, u.canary)
            })
            .collect();
        assert_eq!(
            shape,
            [
                ("j7".into(), 200, 20, 0),
                ("j8".into(), 20, 4, 2),
                ("j9".into(), 10, 1, 0)
            ]
        );
        assert_eq!((jobs[1].first_task, jobs[2].first_task), (300, 320));
        assert_eq!(deploy_jobs(0, 0, 100)[0].count, 20);
        let next = new_release(&jobs[0].spec, 2);
        assert_ne!(next.task, jobs[0].spec.task);
        assert_eq!(next.count, jobs[0].spec.count);
    }
}
