//! What a run measured, and what it checked.

use std::fmt;

use serde::Serialize;
use shoal_gossip::SendKind;

use crate::net::NetCounters;

/// Nearest-rank quantile of sorted values: the smallest value such that at
/// least `q` of the values are at or below it. `None` when empty.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The time by which a fraction `q` of `population` observers knew, from
/// the sorted times of those that did: `None` if fewer than that knew.
pub fn quantile_of_population(sorted: &[f64], population: usize, q: f64) -> Option<f64> {
    if population == 0 {
        return None;
    }
    let need = ((q * population as f64).ceil() as usize).max(1);
    (sorted.len() >= need).then(|| sorted[need - 1])
}

/// Per crash: seconds until the first, 99.9% and all live observers knew
/// (`None`: never reached).
pub type CrashTimes = (Option<f64>, Option<f64>, Option<f64>);

/// The worst over crashes of one of their [`CrashTimes`]; `None` when some
/// crash never reached it (or there were none).
pub fn worst_of(per: &[CrashTimes], sel: fn(&CrashTimes) -> Option<f64>) -> Option<f64> {
    if per.is_empty() {
        return None;
    }
    per.iter()
        .map(sel)
        .try_fold(0.0f64, |acc, x| x.map(|x| acc.max(x)))
}

/// One checker or fault-knob verdict.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Check {
    /// `always_*`, `eventually_*` or `fault_*`.
    pub name: String,
    /// Whether it held.
    pub ok: bool,
    /// What was seen.
    pub detail: String,
}

/// One point of a scenario's time series (one per simulated second).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the scenario started (negative while forming).
    pub t_s: f64,
    /// Nodes up.
    pub up: usize,
    /// Tasks running (each counted once, duplicates included).
    pub running: u64,
    /// Tasks submitted and not running.
    pub waiting: u64,
    /// Tasks running on two nodes or more.
    pub duplicates: u64,
    /// Gossip bytes per node up in this second.
    pub gossip_bytes_per_node: f64,
    /// Placement messages per node up in this second.
    pub placement_msgs_per_node: f64,
}

/// Gossip traffic of one purpose, per node per second. Full mode counts
/// what the real core sent ([`shoal_gossip::SendKind`], grouped); the scale
/// model reports the same groups from what it models, so the two can be
/// compared line by line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TrafficShare {
    /// A [`TrafficGroup`]'s label.
    pub group: &'static str,
    /// Datagrams per node per second.
    pub msgs_per_node_s: f64,
    /// Bytes per node per second.
    pub bytes_per_node_s: f64,
}

/// What gossip traffic is for, in groups both modes can report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrafficGroup {
    /// Probes and their acks.
    Probe,
    /// Indirect probes: ping-req, indirect ping, indirect ack, forwarded ack.
    Indirect,
    /// Gossip sent for its own sake while a node has updates.
    Gossip,
    /// The periodic member-list announce and its feed, and the knocks on
    /// down members.
    Announce,
    /// Member-list range digests and ranges.
    Digest,
    /// Leave queries and answers.
    Leave,
    /// Everything else: join hellos and pages, metadata pulls, turn-undead.
    Other,
}

impl TrafficGroup {
    /// Every group, in report order.
    pub const ALL: [TrafficGroup; 7] = [
        TrafficGroup::Probe,
        TrafficGroup::Indirect,
        TrafficGroup::Gossip,
        TrafficGroup::Announce,
        TrafficGroup::Digest,
        TrafficGroup::Leave,
        TrafficGroup::Other,
    ];

    /// Its label in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            TrafficGroup::Probe => "probe",
            TrafficGroup::Indirect => "indirect",
            TrafficGroup::Gossip => "gossip",
            TrafficGroup::Announce => "announce",
            TrafficGroup::Digest => "digest",
            TrafficGroup::Leave => "leave",
            TrafficGroup::Other => "other",
        }
    }

    /// The group a datagram of this kind counts in.
    pub fn of(kind: SendKind) -> TrafficGroup {
        match kind {
            SendKind::Ping | SendKind::Ack => TrafficGroup::Probe,
            SendKind::PingReq
            | SendKind::IndirectPing
            | SendKind::IndirectAck
            | SendKind::ForwardedAck
            | SendKind::Accusation => TrafficGroup::Indirect,
            SendKind::Gossip => TrafficGroup::Gossip,
            SendKind::Announce | SendKind::Feed => TrafficGroup::Announce,
            SendKind::MemberDigest | SendKind::MemberRanges => TrafficGroup::Digest,
            SendKind::Leave => TrafficGroup::Leave,
            SendKind::TurnUndead
            | SendKind::OtherSwim
            | SendKind::Hello
            | SendKind::Meta
            | SendKind::MembersPage
            | SendKind::Note => TrafficGroup::Other,
        }
    }

    /// A traffic breakdown: `per` gives each group's datagrams and bytes
    /// per node per second; the shares come in [`TrafficGroup::ALL`] order.
    pub fn shares(mut per: impl FnMut(TrafficGroup) -> (f64, f64)) -> Vec<TrafficShare> {
        TrafficGroup::ALL
            .iter()
            .map(|g| {
                let (msgs, bytes) = per(*g);
                TrafficShare {
                    group: g.as_str(),
                    msgs_per_node_s: msgs,
                    bytes_per_node_s: bytes,
                }
            })
            .collect()
    }
}

/// The report of one run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    /// Nodes.
    pub nodes: usize,
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// `full` or `scale`.
    pub mode: String,
    /// Membership preset.
    pub gossip: String,
    /// The command that replays the run.
    pub command: String,
    /// Seconds of simulated time the cluster took to form (everyone sees
    /// everyone alive).
    pub formed_s: Option<f64>,
    /// Simulated seconds in all.
    pub sim_s: f64,
    /// Events handled.
    pub events: u64,
    /// Nodes crashed during the scenario.
    pub crashes: usize,
    /// Mean over crashes of the first detection, seconds after the crash.
    pub detect_first_s: Option<f64>,
    /// Median over all (crash, observer) pairs.
    pub detect_p50_s: Option<f64>,
    /// Worst over crashes of the time by which 99.9% of the live nodes
    /// knew; `None` if some crash never reached 99.9%.
    pub detect_p999_s: Option<f64>,
    /// Worst over crashes of the time by which every live node knew.
    pub detect_all_s: Option<f64>,
    /// (crash, observer) pairs never detected before the run ended.
    pub undetected: u64,
    /// Lives of live, reachable nodes that were declared failed (each
    /// counted once, however many nodes saw it).
    pub false_positives: u64,
    /// False positives per node-hour.
    pub false_positives_per_node_hour: f64,
    /// Live nodes declared failed by nodes on the other side of a
    /// partition, or shortly after it healed (expected, not false
    /// positives).
    pub partition_downs: u64,
    /// Gossip within and across datacenters (full mode, the `partition`
    /// scenario with `--partition-one`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// What the nodes' one fact per datacenter said around partitions
    /// (full mode, runs with a partition; absent otherwise, so other
    /// recorded reports are unchanged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reach: Option<ReachReport>,
    /// Gossip datagrams sent per node per second (scenario phase).
    pub msgs_per_node_s: f64,
    /// Gossip bytes (UDP payload) sent per node per second (scenario phase).
    pub bytes_per_node_s: f64,
    /// The same traffic by purpose, in the order of [`TrafficGroup::ALL`].
    pub traffic: Vec<TrafficShare>,
    /// Placement messages sent per node per second (scenario phase).
    pub placement_msgs_per_node_s: f64,
    /// Placement bytes (encoded messages) per node per second.
    pub placement_bytes_per_node_s: f64,
    /// Tasks submitted.
    pub tasks: u64,
    /// Tasks that ran at least once.
    pub placed: u64,
    /// Submission to first start, median, milliseconds.
    pub placement_p50_ms: Option<f64>,
    /// Submission to first start, 99th percentile.
    pub placement_p99_ms: Option<f64>,
    /// Submission to first start, worst.
    pub placement_max_ms: Option<f64>,
    /// Tasks placed per second, first submission to last first start.
    pub placements_per_s: Option<f64>,
    /// CPU running at the end over CPU a centralized best fit places on
    /// the same live nodes.
    pub packing_efficiency: Option<f64>,
    /// Tasks the centralized best fit places.
    pub bestfit_placed: u64,
    /// Most loaded live node over the mean, by CPU share.
    pub load_imbalance: Option<f64>,
    /// Tasks lost with their node and started again elsewhere.
    pub replaced: u64,
    /// Loss of a task's node to its start elsewhere, median, ms.
    pub replace_p50_ms: Option<f64>,
    /// Same, 99th percentile.
    pub replace_p99_ms: Option<f64>,
    /// Tasks that ran on two nodes at once at some point.
    pub duplicates: u64,
    /// Longest time a task ran twice, seconds.
    pub duplicate_max_s: Option<f64>,
    /// Tasks running twice at the end, after healing and settling.
    pub duplicates_after_convergence: u64,
    /// Tasks not running at the end although a live node had room.
    pub unplaced: u64,
    /// Tasks not running at the end, for which no live node had room.
    pub unplaced_no_room: u64,
    /// What the network did.
    pub net: NetCounters,
    /// Checker and fault-knob verdicts.
    pub checks: Vec<Check>,
    /// Whether every check held.
    pub ok: bool,
    /// Time series, one sample per simulated second.
    #[serde(skip)]
    pub series: Vec<Sample>,
    /// Per crash: seconds until first, 99.9% and all observers knew.
    #[serde(skip)]
    pub detections: Vec<CrashTimes>,
    /// Sorted (crash, observer) detection delays, seconds.
    #[serde(skip)]
    pub detect_delays: Vec<f64>,
    /// The triggers scenario's figures (absent from other scenarios'
    /// JSON, so their recorded reports are unchanged).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub triggers: Option<crate::scale_trigger::TriggerReport>,
}

fn opt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(x) if x.abs() >= 100.0 => format!("{x:.0} {unit}"),
        Some(x) => format!("{x:.3} {unit}"),
        None => "-".into(),
    }
}

/// Gossip bytes per node per second within a datacenter and across
/// datacenters, over the scenario phase.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Locality {
    /// To members of the sender's own datacenter.
    pub within_dc_bytes_per_node_s: f64,
    /// To members of other datacenters.
    pub across_dc_bytes_per_node_s: f64,
    /// Share of the datagrams that cross datacenters.
    pub across_dc_datagram_share: f64,
}

/// "Unreachable from here", per (node, datacenter) pair, around
/// partitions: how soon each node saw each datacenter cut off from it, and
/// reached it again after the heal.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReachReport {
    /// (node, datacenter) pairs cut apart: each live node and each
    /// datacenter with a live node on the other side, per partition.
    pub pairs_cut: u64,
    /// Of those, seen unreachable by the node during the cut.
    pub seen_unreachable: u64,
    /// Seconds from the cut until the node saw it: median, 99th
    /// percentile, longest.
    pub unreachable_p50_s: Option<f64>,
    /// See `unreachable_p50_s`.
    pub unreachable_p99_s: Option<f64>,
    /// See `unreachable_p50_s`.
    pub unreachable_max_s: Option<f64>,
    /// Datacenters reached again after the heal (one per pair seen
    /// unreachable, at most).
    pub reached_again: u64,
    /// Seconds from the heal until then: median and longest.
    pub reached_again_p50_s: Option<f64>,
    /// See `reached_again_p50_s`.
    pub reached_again_max_s: Option<f64>,
    /// Datacenters with no live node left (crashed whole: `dc-loss`) seen
    /// unreachable, by node.
    pub lost_seen: u64,
    /// Datacenters seen unreachable that were neither cut off from the
    /// node (outside a partition, or on the node's own side of it) nor
    /// lost.
    pub wrong_unreachable: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "{k:<34} {v}");
        row(
            f,
            "scenario",
            format!("{} ({} mode)", self.scenario, self.mode),
        )?;
        row(f, "nodes", self.nodes.to_string())?;
        row(f, "seed", self.seed.to_string())?;
        row(f, "gossip preset", self.gossip.clone())?;
        row(f, "cluster formed after", opt(self.formed_s, "s"))?;
        row(
            f,
            "simulated",
            format!("{:.1} s, {} events", self.sim_s, self.events),
        )?;
        if let Some(t) = &self.triggers {
            write!(f, "{t}")?;
            return self.fmt_checks(f);
        }
        writeln!(f, "-- membership")?;
        row(f, "crashes", self.crashes.to_string())?;
        row(f, "detection: first (mean)", opt(self.detect_first_s, "s"))?;
        row(
            f,
            "detection: p50 of observers",
            opt(self.detect_p50_s, "s"),
        )?;
        row(
            f,
            "detection: 99.9% know (worst)",
            opt(self.detect_p999_s, "s"),
        )?;
        row(
            f,
            "detection: 100% know (worst)",
            opt(self.detect_all_s, "s"),
        )?;
        row(
            f,
            "undetected (crash, observer)",
            self.undetected.to_string(),
        )?;
        row(
            f,
            "false positives",
            format!(
                "{} ({:.4} per node-hour)",
                self.false_positives, self.false_positives_per_node_hour
            ),
        )?;
        row(
            f,
            "downs across a partition",
            self.partition_downs.to_string(),
        )?;
        if let Some(r) = &self.reach {
            row(
                f,
                "dcs seen unreachable in cuts",
                format!(
                    "{} of {} (node, dc) pairs; p50 {}, p99 {}, max {} after the cut",
                    r.seen_unreachable,
                    r.pairs_cut,
                    opt(r.unreachable_p50_s, "s"),
                    opt(r.unreachable_p99_s, "s"),
                    opt(r.unreachable_max_s, "s")
                ),
            )?;
            row(
                f,
                "dcs reached again after heals",
                format!(
                    "{}; p50 {}, max {} after the heal",
                    r.reached_again,
                    opt(r.reached_again_p50_s, "s"),
                    opt(r.reached_again_max_s, "s"),
                ),
            )?;
            row(
                f,
                "dcs lost / wrongly unreachable",
                format!("{} / {}", r.lost_seen, r.wrong_unreachable),
            )?;
        }
        if let Some(l) = &self.locality {
            row(
                f,
                "gossip within / across dcs",
                format!(
                    "{:.0} / {:.0} B/s per node ({:.1}% of datagrams cross)",
                    l.within_dc_bytes_per_node_s,
                    l.across_dc_bytes_per_node_s,
                    100.0 * l.across_dc_datagram_share
                ),
            )?;
        }
        row(
            f,
            "gossip per node",
            format!(
                "{:.1} datagrams/s, {:.0} B/s",
                self.msgs_per_node_s, self.bytes_per_node_s
            ),
        )?;
        for t in &self.traffic {
            row(
                f,
                &format!("  {}", t.group),
                format!(
                    "{:.2} datagrams/s, {:.0} B/s",
                    t.msgs_per_node_s, t.bytes_per_node_s
                ),
            )?;
        }
        writeln!(f, "-- placement")?;
        row(
            f,
            "placement msgs per node",
            format!(
                "{:.2} msgs/s, {:.0} B/s",
                self.placement_msgs_per_node_s, self.placement_bytes_per_node_s
            ),
        )?;
        row(
            f,
            "tasks submitted / placed",
            format!("{} / {}", self.tasks, self.placed),
        )?;
        row(f, "placement latency p50", opt(self.placement_p50_ms, "ms"))?;
        row(f, "placement latency p99", opt(self.placement_p99_ms, "ms"))?;
        row(f, "placement latency max", opt(self.placement_max_ms, "ms"))?;
        row(f, "placements per second", opt(self.placements_per_s, "/s"))?;
        row(
            f,
            "packing vs central best fit",
            format!(
                "{} (best fit places {})",
                opt(self.packing_efficiency.map(|x| x * 100.0), "%"),
                self.bestfit_placed
            ),
        )?;
        row(f, "load imbalance (max/mean)", opt(self.load_imbalance, ""))?;
        row(
            f,
            "re-placed after node loss",
            format!(
                "{} (p50 {}, p99 {})",
                self.replaced,
                opt(self.replace_p50_ms, "ms"),
                opt(self.replace_p99_ms, "ms")
            ),
        )?;
        row(
            f,
            "duplicates (ever / longest)",
            format!("{} / {}", self.duplicates, opt(self.duplicate_max_s, "s")),
        )?;
        row(
            f,
            "duplicates after convergence",
            self.duplicates_after_convergence.to_string(),
        )?;
        row(
            f,
            "unplaced while room existed",
            format!("{} ({} without room)", self.unplaced, self.unplaced_no_room),
        )?;
        writeln!(f, "-- network")?;
        row(
            f,
            "datagrams / lost / cut",
            format!(
                "{} / {} / {}",
                self.net.datagrams, self.net.lost, self.net.cut
            ),
        )?;
        row(
            f,
            "slowed / retransmitted",
            format!("{} / {}", self.net.slowed, self.net.retransmitted),
        )?;
        self.fmt_checks(f)
    }
}

impl Report {
    fn fmt_checks(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "-- checks")?;
        for c in &self.checks {
            writeln!(
                f,
                "{} {:<32} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            )?;
        }
        if !self.ok {
            writeln!(f, "replay with: {}", self.command)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 1.0), Some(4.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
        // 3 of 4 observers knew: 99.9% was never reached.
        assert_eq!(quantile_of_population(&v[..3], 4, 0.999), None);
        assert_eq!(quantile_of_population(&v, 4, 0.999), Some(4.0));
        assert_eq!(quantile_of_population(&v[..3], 4, 0.5), Some(2.0));
    }
}
