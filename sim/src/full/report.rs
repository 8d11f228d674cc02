//! The end of a run: detection delays, traffic, placement figures and the
//! checks, as a [`Report`].

use shoal_gossip::{Instant, SendKind};

use super::{STABLE_GRACE, World, secs};
use crate::params::Scenario;
use crate::report::{
    Check, Locality, Report, TrafficGroup, TrafficShare, quantile, quantile_of_population, worst_of,
};

impl World {
    /// Gossip traffic by purpose over the scenario phase.
    pub(super) fn traffic_shares(&self, node_seconds: f64) -> Vec<TrafficShare> {
        TrafficGroup::shares(|group| {
            let (msgs, bytes) = SendKind::ALL
                .iter()
                .filter(|k| TrafficGroup::of(**k) == group)
                .map(|k| self.traffic.by_kind[k.index()])
                .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            (msgs as f64 / node_seconds, bytes as f64 / node_seconds)
        })
    }

    pub(super) fn report(mut self) -> Report {
        let now = self.now();
        // Detection.
        let mut per_crash = Vec::new();
        let mut all_delays = Vec::new();
        let mut undetected = 0u64;
        let mut firsts = Vec::new();
        for c in &self.crashes {
            // Observers: up at the end, in a life that started before the
            // crash (so they knew the crashed node and stayed to see it).
            let observers: Vec<u32> = (0..self.nodes.len() as u32)
                .filter(|o| {
                    let n = &self.nodes[*o as usize];
                    *o != c.node && n.up && n.life_started <= c.at
                })
                .collect();
            let mut delays: Vec<f64> = observers
                .iter()
                .filter_map(|o| c.seen.get(o).copied())
                .collect();
            delays.sort_by(f64::total_cmp);
            undetected += (observers.len() - delays.len()) as u64;
            if let Some(f) = delays.first() {
                firsts.push(*f);
            }
            per_crash.push((
                delays.first().copied(),
                quantile_of_population(&delays, observers.len(), 0.999),
                quantile_of_population(&delays, observers.len(), 1.0),
            ));
            all_delays.extend(delays);
        }
        all_delays.sort_by(f64::total_cmp);
        let detect_p999 = worst_of(&per_crash, |c| c.1);
        let detect_all = worst_of(&per_crash, |c| c.2);
        let node_seconds = self.node_seconds.max(1.0);
        let traffic = self.traffic_shares(node_seconds);
        let mut lat = self.placement_ms.clone();
        lat.sort_by(f64::total_cmp);
        let mut rep = self.replace_ms.clone();
        rep.sort_by(f64::total_cmp);
        let placed = self.tasks.iter().filter(|t| t.first_run.is_some()).count() as u64;
        let placements_per_s = match (self.first_submit, self.last_first_run) {
            (Some(a), Some(b)) if b > a => Some(placed as f64 / secs(b - a)),
            _ => None,
        };

        // Checks.
        let mut checks = vec![
            Check {
                name: "always_no_overcommit".into(),
                ok: self.overcommits == 0,
                detail: format!(
                    "checked after each of {} events; {} violations",
                    self.events, self.overcommits
                ),
            },
            Check {
                name: "always_one_winner_when_stable".into(),
                ok: self.two_winners == 0,
                detail: format!(
                    "{} tasks ran twice more than {}s after views settled",
                    self.two_winners,
                    STABLE_GRACE.as_secs()
                ),
            },
        ];
        checks.append(&mut self.final_checks);
        checks.extend(self.flap_checks());
        checks.extend(self.rollout_checks());
        if let Some(v) = &self.first_violation {
            checks.push(Check {
                name: "first_violation".into(),
                ok: false,
                detail: v.clone(),
            });
        }
        checks.push(Check {
            name: "cluster_formed".into(),
            ok: self.formed.is_some(),
            detail: match self.formed {
                Some(t) => format!(
                    "everyone knew everyone after {:.1} s",
                    secs(t - Instant::ZERO)
                ),
                None => format!("not within {:.0} s", secs(self.p.form_timeout)),
            },
        });
        // Fault knobs fired.
        let loss = self.p.effective_loss();
        if loss > 0.0 {
            checks.push(Check {
                name: "fault_loss_fired".into(),
                ok: self.net.counters.lost > 0,
                detail: format!("{} datagrams lost at {loss}", self.net.counters.lost),
            });
        }
        if self.slow_nodes > 0 {
            checks.push(Check {
                name: "fault_slow_fired".into(),
                ok: self.net.counters.slowed > 0,
                detail: format!(
                    "{} nodes slow, {} deliveries delayed",
                    self.slow_nodes, self.net.counters.slowed
                ),
            });
        }
        if self.planned_crashes > 0 {
            let detected = self.crashes.iter().filter(|c| !c.seen.is_empty()).count();
            checks.push(Check {
                name: "fault_crash_fired".into(),
                ok: self.crashes.len() == self.planned_crashes && detected == self.crashes.len(),
                detail: format!(
                    "{} of {} planned crashes happened, {detected} detected by someone",
                    self.crashes.len(),
                    self.planned_crashes
                ),
            });
        }
        if self.planned_restarts > 0 {
            checks.push(Check {
                name: "fault_restart_fired".into(),
                ok: self.restarts == self.planned_restarts,
                detail: format!(
                    "{} of {} planned restarts",
                    self.restarts, self.planned_restarts
                ),
            });
        }
        if self.p.scenario == Scenario::Partition {
            checks.push(Check {
                name: "fault_partition_fired".into(),
                ok: self.partitions > 0 && self.heals > 0 && self.net.counters.cut > 0,
                detail: format!(
                    "{} partitions, {} heals, {} messages cut",
                    self.partitions, self.heals, self.net.counters.cut
                ),
            });
        }
        if self.p.with_jobs() {
            checks.push(Check {
                name: "fault_jobs_fired".into(),
                ok: !self.tasks.is_empty() && placed > 0,
                detail: format!("{} tasks submitted, {placed} ran", self.tasks.len()),
            });
        }
        let ok = checks.iter().all(|c| c.ok);
        Report {
            nodes: self.p.nodes,
            scenario: self.p.scenario.to_string(),
            seed: self.p.seed,
            mode: "full".into(),
            gossip: self.p.gossip.clone(),
            command: self.p.command(),
            formed_s: self.formed.map(|t| secs(t - Instant::ZERO)),
            sim_s: secs(now - Instant::ZERO),
            events: self.events,
            crashes: self.crashes.len(),
            detect_first_s: (!firsts.is_empty())
                .then(|| firsts.iter().sum::<f64>() / firsts.len() as f64),
            detect_p50_s: quantile(&all_delays, 0.5),
            detect_p999_s: detect_p999,
            detect_all_s: detect_all,
            undetected,
            false_positives: self.false_positives.len() as u64,
            false_positives_per_node_hour: self.false_positives.len() as f64
                / (node_seconds / 3600.0),
            partition_downs: self.partition_downs,
            locality: (self.p.dcs > 1).then(|| {
                let all = self.traffic.gossip_bytes();
                let datagrams: u64 = self.traffic.by_kind.iter().map(|k| k.0).sum();
                let (across_n, across) = self.traffic.across_dc;
                Locality {
                    within_dc_bytes_per_node_s: (all - across) as f64 / node_seconds,
                    across_dc_bytes_per_node_s: across as f64 / node_seconds,
                    across_dc_datagram_share: across_n as f64 / datagrams.max(1) as f64,
                }
            }),
            msgs_per_node_s: traffic.iter().map(|t| t.msgs_per_node_s).sum(),
            bytes_per_node_s: traffic.iter().map(|t| t.bytes_per_node_s).sum(),
            traffic,
            placement_msgs_per_node_s: self.traffic.place_msgs as f64 / node_seconds,
            placement_bytes_per_node_s: self.traffic.place_bytes as f64 / node_seconds,
            tasks: self.tasks.len() as u64,
            placed,
            placement_p50_ms: quantile(&lat, 0.5),
            placement_p99_ms: quantile(&lat, 0.99),
            placement_max_ms: lat.last().copied(),
            placements_per_s,
            packing_efficiency: self.end_state.packing,
            bestfit_placed: self.end_state.bestfit_placed,
            load_imbalance: self.end_state.imbalance,
            replaced: rep.len() as u64,
            replace_p50_ms: quantile(&rep, 0.5),
            replace_p99_ms: quantile(&rep, 0.99),
            duplicates: self.tasks.iter().filter(|t| t.ever_dup).count() as u64,
            duplicate_max_s: self
                .tasks
                .iter()
                .any(|t| t.ever_dup)
                .then(|| secs(self.duplicate_max)),
            duplicates_after_convergence: self.end_state.duplicates,
            unplaced: self.end_state.unplaced,
            unplaced_no_room: self.end_state.unplaced_no_room,
            net: self.net.counters,
            checks,
            ok,
            series: self.series,
            detections: per_crash,
            detect_delays: all_delays,
            reach: std::mem::take(&mut self.reach).report(),
            triggers: None,
        }
    }
}
