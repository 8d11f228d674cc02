//! What a run simulates: the cluster, the network, the scenario and its
//! knobs. A run is a pure function of its [`Params`] (the seed included).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;

use crate::net::Latency;

/// How membership is simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every node runs the real `shoal-gossip` membership and the real
    /// `shoal-placement` placer.
    #[value(help = "Every node runs the real membership and placement state machines.")]
    Full,
    /// Membership is modeled compactly (ground truth plus each node's
    /// knowledge of each rumor), with the SWIM timing of the real
    /// configuration.
    #[value(
        help = "Membership modeled compactly, for sizes past memory (crashes, loss, churn); `jobs` and `default` also run the real placers on every node."
    )]
    Scale,
}

impl Mode {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Scale => "scale",
        }
    }
}

/// A named scenario. Every scenario first forms the cluster, then runs its
/// faults and workload for [`Params::duration`], heals, and settles for
/// [`Params::settle`] before the `eventually_*` checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Crashes under 1% loss plus a wave of jobs (what runs with no
    /// `--scenario`).
    #[value(help = "Crashes under 1% loss plus a wave of jobs (the default).")]
    Default,
    /// Every node joins within `storm_secs`; measures how long until all
    /// know all.
    #[value(help = "Every node joins within --storm seconds.")]
    JoinStorm,
    /// `churn_per_min` percent of the nodes crash and restart every
    /// minute, while jobs run.
    #[value(help = "--churn-per-min percent of the nodes crash and restart each minute.")]
    Churn,
    /// `fail_fraction` of the nodes (10%) crash at once.
    #[value(help = "--fail-fraction of the nodes (10%) crash at once.")]
    MassFailure,
    /// The datacenters are cut apart for `partition_secs`, then healed.
    #[value(help = "The datacenters are cut apart for --partition seconds, then healed.")]
    Partition,
    /// Random loss (`loss`, 1–10%) with a few crashes: detection and false
    /// positives.
    #[value(help = "Random loss (--loss, default 5%) with --crashes crashes.")]
    Loss,
    /// Waves of job submissions: `tasks_per_sec` tasks per second,
    /// mixed sizes, up to `fill` of the cluster's CPU.
    #[value(help = "Waves of job submissions (--tasks-per-sec, --fill).")]
    Jobs,
    /// A whole datacenter is lost at once.
    #[value(help = "A whole datacenter is lost at once.")]
    DcLoss,
    /// A wave of jobs with health checks whose verdicts flap (full mode):
    /// some tasks fail their check for a while; the restarting ones must
    /// be restarted, and every task ends healthy.
    #[value(help = "Jobs with health checks, some failing for a while (full mode).")]
    HealthFlaps,
    /// A wave of jobs, then rolling deployments of a few service jobs
    /// with `[update]` and health checks (full mode); the driver of the
    /// largest one crashes midway.
    #[value(
        help = "A wave of jobs, then rolling deployments of service jobs with health checks; the largest one's driver crashes midway (full mode)."
    )]
    RollingDeploy,
    /// Scale mode: `triggers` scheduled triggers with conditions, each
    /// evaluated by the owner of its key on the real ring with the real
    /// `shoal-trigger` state machine, under `churn_per_hour` node churn.
    #[value(
        help = "Scale mode: --triggers hourly triggers with conditions on the real trigger crate and ring, under --churn-per-hour node churn (default 3 hours)."
    )]
    Triggers,
}

impl Scenario {
    /// Every scenario.
    pub const ALL: [Scenario; 11] = [
        Scenario::Default,
        Scenario::JoinStorm,
        Scenario::Churn,
        Scenario::MassFailure,
        Scenario::Partition,
        Scenario::Loss,
        Scenario::Jobs,
        Scenario::DcLoss,
        Scenario::HealthFlaps,
        Scenario::RollingDeploy,
        Scenario::Triggers,
    ];

    /// Its name on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Default => "default",
            Scenario::JoinStorm => "join-storm",
            Scenario::Churn => "churn",
            Scenario::MassFailure => "mass-failure",
            Scenario::Partition => "partition",
            Scenario::Loss => "loss",
            Scenario::Jobs => "jobs",
            Scenario::DcLoss => "dc-loss",
            Scenario::HealthFlaps => "health-flaps",
            Scenario::RollingDeploy => "rolling-deploy",
            Scenario::Triggers => "triggers",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown scenario name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown scenario {0:?}: expected one of default, join-storm, churn, mass-failure, partition, loss, jobs, dc-loss, health-flaps, rolling-deploy, triggers"
)]
pub struct UnknownScenario(pub String);

impl FromStr for Scenario {
    type Err = UnknownScenario;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Scenario::ALL
            .into_iter()
            .find(|x| x.as_str() == s)
            .ok_or_else(|| UnknownScenario(s.to_owned()))
    }
}

/// Everything a run depends on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Params {
    /// Nodes in the cluster.
    pub nodes: usize,
    /// Seed of every random draw.
    pub seed: u64,
    /// Full or scale mode.
    pub mode: Mode,
    /// The scenario.
    pub scenario: Scenario,
    /// Membership preset: `lan`, `wan` or `test`.
    pub gossip: String,
    /// Override of the preset's `suspicion_mult` (None: the preset's).
    pub suspicion_mult: Option<f64>,
    /// Override of the preset's `transmissions_mult`.
    pub transmissions_mult: Option<f64>,
    /// Override of the preset's `indirect_probes`.
    pub indirect_probes: Option<usize>,
    /// Override of the preset's `cross_dc_gossip`.
    pub cross_dc_gossip: Option<f64>,
    /// Override of the preset's `cross_dc_probes`.
    pub cross_dc_probes: Option<f64>,
    /// Override of the preset's `reach_only_dc_size`.
    pub reach_only_dc_size: Option<usize>,
    /// Datacenters.
    pub dcs: usize,
    /// Zones per datacenter.
    pub zones: usize,
    /// Link latencies.
    pub latency: Latency,
    /// Random loss of each datagram during the scenario, `0.0..=1.0`
    /// (None: the scenario's default).
    pub loss: Option<f64>,
    /// Fraction of nodes made slow (extra delay on all their traffic).
    pub slow_fraction: f64,
    /// Extra delay of a slow node.
    pub slow: Duration,
    /// Length of the scenario phase (after the cluster formed).
    pub duration: Duration,
    /// Quiet time after the scenario (faults healed) before the
    /// `eventually_*` checks.
    pub settle: Duration,
    /// Longest time allowed for the cluster to form.
    pub form_timeout: Duration,
    /// Nodes joining per second while the cluster forms (not in
    /// `join-storm`, which uses `storm_secs`).
    pub join_rate: f64,
    /// Full mode: every node starts knowing every member (no joins).
    pub warm: bool,
    /// Length of the join storm.
    pub storm: Duration,
    /// Percent of nodes that crash and restart per minute (`churn`).
    pub churn_per_min: f64,
    /// How long a churned node stays down.
    pub churn_down: Duration,
    /// Fraction of nodes failing at once (`mass-failure`).
    pub fail_fraction: f64,
    /// Nodes crashed in `default` and `loss` (at least one).
    pub crashes: usize,
    /// How long datacenters stay apart (`partition`).
    pub partition: Duration,
    /// `partition`: cut only the last datacenter off from the others
    /// (false: every datacenter from every other).
    pub partition_one: bool,
    /// Tasks submitted per second cluster-wide while a wave lasts.
    pub tasks_per_sec: f64,
    /// Total task CPU submitted as a fraction of the cluster's CPU.
    pub fill: f64,
    /// Whether the scenario submits jobs (None: the scenario's default).
    pub jobs: Option<bool>,
    /// Triggers (`triggers`).
    pub triggers: usize,
    /// Percent of the nodes that crash, each replaced by a new node, per
    /// hour (`triggers`).
    pub churn_per_hour: f64,
}

impl Params {
    /// Defaults for `scenario` on `nodes` nodes.
    pub fn new(scenario: Scenario, nodes: usize, seed: u64) -> Params {
        let mut p = Params {
            nodes,
            seed,
            mode: Mode::Full,
            scenario,
            gossip: "lan".into(),
            suspicion_mult: None,
            transmissions_mult: None,
            indirect_probes: None,
            cross_dc_gossip: None,
            cross_dc_probes: None,
            reach_only_dc_size: None,
            dcs: 2,
            zones: 3,
            latency: Latency::default(),
            loss: None,
            slow_fraction: 0.0,
            slow: Duration::from_millis(50),
            duration: Duration::from_secs(60),
            settle: Duration::from_secs(40),
            form_timeout: Duration::from_secs(60),
            join_rate: 100.0,
            warm: false,
            storm: Duration::from_secs(10),
            churn_per_min: 2.0,
            churn_down: Duration::from_secs(20),
            fail_fraction: 0.10,
            crashes: 3,
            partition: Duration::from_secs(30),
            partition_one: false,
            tasks_per_sec: 0.0,
            fill: 0.5,
            jobs: None,
            triggers: 100_000,
            churn_per_hour: 1.0,
        };
        if scenario == Scenario::Jobs {
            p.fill = 0.9;
        }
        if scenario == Scenario::Triggers {
            p.mode = Mode::Scale;
            p.duration = Duration::from_secs(3 * 3600);
            p.settle = Duration::from_secs(15 * 60);
        }
        p
    }

    /// The membership configuration: the preset with the overrides.
    pub fn gossip_config(&self) -> Result<shoal_gossip::Config, crate::SimError> {
        let mut c = shoal_gossip::Config::preset(&self.gossip).ok_or_else(|| {
            crate::SimError::Params(format!(
                "unknown gossip preset {:?}: expected lan, wan or test",
                self.gossip
            ))
        })?;
        if let Some(m) = self.suspicion_mult {
            c.suspicion_mult = m;
        }
        if let Some(m) = self.transmissions_mult {
            c.transmissions_mult = m;
        }
        if let Some(k) = self.indirect_probes {
            c.indirect_probes = k;
        }
        if let Some(x) = self.cross_dc_gossip {
            c.cross_dc_gossip = x;
        }
        if let Some(x) = self.cross_dc_probes {
            c.cross_dc_probes = x;
        }
        if let Some(x) = self.reach_only_dc_size {
            c.reach_only_dc_size = x;
        }
        c.validate()
            .map_err(|e| crate::SimError::Params(e.to_string()))?;
        Ok(c)
    }

    /// Loss during the scenario.
    pub fn effective_loss(&self) -> f64 {
        self.loss.unwrap_or(match self.scenario {
            Scenario::Default => 0.01,
            Scenario::Loss => 0.05,
            _ => 0.0,
        })
    }

    /// Whether the scenario submits jobs.
    pub fn with_jobs(&self) -> bool {
        self.jobs.unwrap_or(!matches!(
            self.scenario,
            Scenario::JoinStorm | Scenario::Loss
        ))
    }

    /// The `partition` scenario's cut: when it begins and when it heals,
    /// from the start of the scenario (both modes time it so).
    pub fn partition_window(&self) -> (Duration, Duration) {
        let d = self.duration;
        let at = Duration::from_secs(20).min(d / 2);
        (at, (at + self.partition).min(d))
    }

    /// Each of `dcs` datacenters' side of the cut: the last alone
    /// (`partition_one`), or each its own.
    pub fn partition_sides(&self, dcs: usize) -> Vec<u16> {
        (0..dcs)
            .map(|d| {
                if self.partition_one {
                    u16::from(d + 1 == dcs)
                } else {
                    d as u16
                }
            })
            .collect()
    }

    /// Tasks per second while a wave lasts: the given rate, or enough to
    /// submit the whole fill in a fifth of the scenario.
    pub fn effective_tasks_per_sec(&self, total_tasks: usize) -> f64 {
        if self.tasks_per_sec > 0.0 {
            self.tasks_per_sec
        } else {
            (total_tasks as f64 / (self.duration.as_secs_f64() / 5.0).max(1.0)).max(1.0)
        }
    }

    /// The command line that replays this run.
    pub fn command(&self) -> String {
        let mut c = format!(
            "shoal-sim --nodes {} --seed {} --mode {} --scenario {}",
            self.nodes,
            self.seed,
            self.mode.as_str(),
            self.scenario
        );
        let d = Params::new(self.scenario, self.nodes, self.seed);
        let secs = |x: Duration| format!("{}", x.as_secs_f64());
        if self.gossip != d.gossip {
            c += &format!(" --gossip {}", self.gossip);
        }
        if let Some(m) = self.suspicion_mult {
            c += &format!(" --suspicion-mult {m}");
        }
        if let Some(m) = self.transmissions_mult {
            c += &format!(" --transmissions-mult {m}");
        }
        if let Some(k) = self.indirect_probes {
            c += &format!(" --indirect-probes {k}");
        }
        if let Some(x) = self.cross_dc_gossip {
            c += &format!(" --cross-dc-gossip {x}");
        }
        if let Some(x) = self.cross_dc_probes {
            c += &format!(" --cross-dc-probes {x}");
        }
        if let Some(x) = self.reach_only_dc_size {
            c += &format!(" --reach-only-dc-size {x}");
        }
        if self.dcs != d.dcs {
            c += &format!(" --dcs {}", self.dcs);
        }
        if self.zones != d.zones {
            c += &format!(" --zones {}", self.zones);
        }
        if let Some(l) = self.loss {
            c += &format!(" --loss {l}");
        }
        if self.slow_fraction != d.slow_fraction {
            c += &format!(" --slow-fraction {}", self.slow_fraction);
        }
        if self.slow != d.slow {
            c += &format!(" --slow-ms {}", self.slow.as_millis());
        }
        if self.duration != d.duration {
            c += &format!(" --duration {}", secs(self.duration));
        }
        if self.settle != d.settle {
            c += &format!(" --settle {}", secs(self.settle));
        }
        if self.form_timeout != d.form_timeout {
            c += &format!(" --form-timeout {}", secs(self.form_timeout));
        }
        if self.join_rate != d.join_rate {
            c += &format!(" --join-rate {}", self.join_rate);
        }
        if self.warm {
            c += " --warm";
        }
        if self.storm != d.storm {
            c += &format!(" --storm {}", secs(self.storm));
        }
        if self.churn_per_min != d.churn_per_min {
            c += &format!(" --churn-per-min {}", self.churn_per_min);
        }
        if self.churn_down != d.churn_down {
            c += &format!(" --churn-down {}", secs(self.churn_down));
        }
        if self.fail_fraction != d.fail_fraction {
            c += &format!(" --fail-fraction {}", self.fail_fraction);
        }
        if self.crashes != d.crashes {
            c += &format!(" --crashes {}", self.crashes);
        }
        if self.partition != d.partition {
            c += &format!(" --partition {}", secs(self.partition));
        }
        if self.partition_one {
            c += " --partition-one";
        }
        if self.tasks_per_sec != d.tasks_per_sec {
            c += &format!(" --tasks-per-sec {}", self.tasks_per_sec);
        }
        if self.fill != d.fill {
            c += &format!(" --fill {}", self.fill);
        }
        if self.triggers != d.triggers {
            c += &format!(" --triggers {}", self.triggers);
        }
        if self.churn_per_hour != d.churn_per_hour {
            c += &format!(" --churn-per-hour {}", self.churn_per_hour);
        }
        match self.jobs {
            Some(true) => c += " --jobs on",
            Some(false) => c += " --jobs off",
            None => {}
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Scenario::ALL {
            assert_eq!(s.as_str().parse::<Scenario>(), Ok(s));
        }
        assert!("moon".parse::<Scenario>().is_err());
    }

    #[test]
    fn command_names_what_differs() {
        let mut p = Params::new(Scenario::Loss, 1000, 7);
        assert_eq!(
            p.command(),
            "shoal-sim --nodes 1000 --seed 7 --mode full --scenario loss"
        );
        p.loss = Some(0.02);
        p.duration = Duration::from_secs(90);
        assert!(p.command().ends_with("--loss 0.02 --duration 90"));
    }
}
