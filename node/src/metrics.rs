//! `/metrics`: the gossip counters in the OpenMetrics text format.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `shoal_gossip_members` | gauge | `state` = alive, suspect, failed, left |
//! | `shoal_gossip_packets_total` | counter | `direction` = in, out |
//! | `shoal_gossip_bytes_total` | counter | `direction` = in, out |
//! | `shoal_gossip_dropped_packets_total` | counter | `reason` (see `DropReason`) |
//! | `shoal_gossip_sent_packets_total`, `shoal_gossip_sent_bytes_total` | counter | `kind` (see `SendKind`: ping, ack, gossip, announce, member_digest…) |
//! | `shoal_gossip_turn_undead_suppressed_total` | counter | "you are down" notices not sent to a member that refuted its suspicion |
//! | `shoal_gossip_probe_failures_total` | counter | |
//! | `shoal_gossip_suspicions_shortened_total` | counter | down timers moved earlier by other members' confirmations |
//! | `shoal_gossip_gossip_kept_in_dc_total` | counter | gossip datagrams sent within the datacenter instead of across (`cross_dc_gossip`) |
//! | `shoal_gossip_probes_kept_in_dc_total` | counter | probes of another datacenter's members left to that datacenter (`cross_dc_probes`) |
//! | `shoal_gossip_reach_probes_failed_total` | counter | probes of a member of a large datacenter elsewhere that failed and suspected nobody: counted towards that datacenter being unreachable from here (`reach_only_dc_size`) |
//! | `shoal_gossip_indirect_probes_moved_total` | counter | asks to probe a silent member sent to a member of its datacenter instead of foca's helper |
//! | `shoal_gossip_dcs_unreachable` | gauge | datacenters unreachable from this node: their members fail as it sees them and nothing arrives from them (docs/gossip.md) |
//! | `shoal_gossip_local_health` | gauge | Lifeguard's score: probe timing stretched `1 + score` times |
//! | `shoal_gossip_members_repaired_total` | counter | members learned by comparing member-list ranges |
//! | `shoal_gossip_probe_rtt_seconds` | histogram | |
//! | `shoal_gossip_slow_turns_total` | counter | |
//! | `shoal_state_jobs` | gauge | documents held, deleted jobs included |
//! | `shoal_state_recovering` | gauge | 1 while damaged state is fetched from peers |
//! | `shoal_state_rounds_total` | counter | `result` = in_sync, synced, failed |
//! | `shoal_state_round_bytes_total` | counter | `kind` = all, in_sync (payload, both ways) |
//! | `shoal_state_pushes_total`, `shoal_state_push_bytes_total` | counter | |
//! | `shoal_state_persisted_changes_total` | counter | |
//! | `shoal_state_rejected_total` | counter | `reason` |
//! | `shoal_rpc_requests_total` | counter | `direction` = in, out |
//! | `shoal_rpc_failed_requests_total` | counter | |
//! | `shoal_rpc_bytes_total` | counter | `direction` = in, out (payload) |
//! | `shoal_rpc_connects_total` | counter | |
//! | `shoal_rpc_refused_handshakes_total` | counter | another cluster, or not TLS |
//!
//! The values live in the membership state machine; each scrape takes a
//! snapshot and encodes it.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::Ordering;

use shoal_gossip::{DropReason, SendKind, Stats};
use shoal_transport::TransportStats;

use crate::api::types::StateCounts;
use crate::state::StateStatus;

#[derive(Debug)]
struct Histogram {
    sum: f64,
    count: u64,
    buckets: Vec<(f64, u64)>,
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.encode_histogram::<NoLabelSet>(self.sum, self.count, &self.buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

type Labels = Vec<(&'static str, String)>;

fn counter(registry: &mut Registry, name: &str, help: &str, values: &[(&'static str, &str, u64)]) {
    let family = Family::<Labels, Counter>::default();
    for (key, value, n) in values {
        family
            .get_or_create(&vec![(*key, (*value).to_owned())])
            .inc_by(*n);
    }
    registry.register(name, help, family);
}

fn single(registry: &mut Registry, name: &str, help: &str, n: u64) {
    let c = Counter::<u64>::default();
    c.inc_by(n);
    registry.register(name, help, c);
}

fn gauge(registry: &mut Registry, name: &str, help: &str, n: u64) {
    let g = Gauge::<i64>::default();
    g.set(i64::try_from(n).unwrap_or(i64::MAX));
    registry.register(name, help, g);
}

/// Encodes a snapshot.
pub fn render(
    stats: &Stats,
    members: &StateCounts,
    slow_turns: u64,
    state: &StateStatus,
    rpc: &TransportStats,
) -> Result<String, std::fmt::Error> {
    let mut root = Registry::with_prefix("shoal");
    render_state(root.sub_registry_with_prefix("state"), state);
    render_rpc(root.sub_registry_with_prefix("rpc"), rpc);
    let registry = root.sub_registry_with_prefix("gossip");

    let by_state = Family::<Labels, Gauge>::default();
    for (state, n) in [
        ("alive", members.alive),
        ("suspect", members.suspect),
        ("failed", members.failed),
        ("left", members.left),
    ] {
        by_state
            .get_or_create(&vec![("state", state.to_owned())])
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    registry.register(
        "members",
        "Members known to this node, itself included, by state",
        by_state,
    );

    counter(
        registry,
        "packets",
        "Gossip datagrams",
        &[
            ("direction", "in", stats.packets_in),
            ("direction", "out", stats.packets_out),
        ],
    );
    counter(
        registry,
        "bytes",
        "Gossip bytes, sealed",
        &[
            ("direction", "in", stats.bytes_in),
            ("direction", "out", stats.bytes_out),
        ],
    );
    let drops: Vec<(&'static str, &str, u64)> = DropReason::ALL
        .iter()
        .map(|r| ("reason", r.as_str(), stats.dropped(*r)))
        .collect();
    counter(
        registry,
        "dropped_packets",
        "Gossip datagrams dropped, by reason",
        &drops,
    );
    let sent = |bytes: bool| -> Vec<(&'static str, &str, u64)> {
        SendKind::ALL
            .iter()
            .map(|k| {
                let (n, b) = stats.sent(*k);
                ("kind", k.as_str(), if bytes { b } else { n })
            })
            .collect()
    };
    counter(
        registry,
        "sent_packets",
        "Gossip datagrams sent, by what they are for",
        &sent(false),
    );
    counter(
        registry,
        "sent_bytes",
        "Gossip bytes sent (sealed), by what they are for",
        &sent(true),
    );
    single(
        registry,
        "turn_undead_suppressed",
        "Notices 'you are down' not sent to a member that refuted its suspicion",
        stats.turn_undead_suppressed,
    );
    single(
        registry,
        "probe_failures",
        "Probes that got no answer, direct or indirect",
        stats.probe_failures,
    );
    single(
        registry,
        "suspicions_shortened",
        "Suspicions whose down timer other members' confirmations moved earlier (Lifeguard)",
        stats.suspicions_shortened,
    );
    single(
        registry,
        "gossip_kept_in_dc",
        "Gossip datagrams addressed to another datacenter sent within this one instead (cross_dc_gossip)",
        stats.gossip_kept_in_dc,
    );
    single(
        registry,
        "probes_kept_in_dc",
        "Probes of another datacenter's members taken back and left to that datacenter's own probes (cross_dc_probes)",
        stats.probes_kept_in_dc,
    );
    single(
        registry,
        "reach_probes_failed",
        "Probes of a member of a large datacenter elsewhere that failed and suspected nobody, counted towards that datacenter being unreachable from here (reach_only_dc_size)",
        stats.reach_probes_failed,
    );
    single(
        registry,
        "indirect_probes_moved",
        "Asks to probe a silent member indirectly sent to a member of its datacenter instead of foca's helper",
        stats.indirect_probes_moved,
    );
    gauge(
        registry,
        "dcs_unreachable",
        "Datacenters unreachable from this node: two or more of their members failed as it sees them and nothing arrived from them since",
        stats.dcs_unreachable,
    );
    gauge(
        registry,
        "local_health",
        "Lifeguard's local health score (0 healthy; probe period and rtt stretched 1 + score times)",
        u64::from(stats.local_health),
    );
    single(
        registry,
        "members_repaired",
        "Members learned by comparing member-list ranges with a peer (a join this node had missed)",
        stats.members_learned_from_ranges,
    );
    single(
        registry,
        "slow_turns",
        "Turns of the node core's loop (gossip and placement) slower than 100 ms",
        slow_turns,
    );

    let rtt = &stats.probe_rtt;
    let mut buckets: Vec<(f64, u64)> = rtt
        .bounds_micros
        .iter()
        .zip(rtt.counts.iter())
        .map(|(b, n)| (*b as f64 / 1e6, *n))
        .collect();
    buckets.push((f64::INFINITY, rtt.counts.last().copied().unwrap_or(0)));
    registry.register(
        "probe_rtt_seconds",
        "Round trip of direct probes",
        Histogram {
            sum: rtt.sum_micros as f64 / 1e6,
            count: rtt.count,
            buckets,
        },
    );

    let mut out = String::new();
    encode(&mut out, &root)?;
    Ok(out)
}

fn render_state(registry: &mut Registry, s: &StateStatus) {
    gauge(
        registry,
        "jobs",
        "Job documents held, deleted jobs included",
        s.docs,
    );
    gauge(
        registry,
        "recovering",
        "1 while damaged state is recovered from peers",
        u64::from(s.recovering),
    );
    counter(
        registry,
        "rounds",
        "Anti-entropy rounds started by this node",
        &[
            ("result", "in_sync", s.rounds_in_sync),
            ("result", "synced", s.rounds_synced),
            ("result", "failed", s.rounds_failed),
        ],
    );
    counter(
        registry,
        "round_bytes",
        "Payload bytes of anti-entropy rounds, both ways",
        &[
            ("kind", "all", s.round_bytes),
            ("kind", "in_sync", s.in_sync_bytes),
        ],
    );
    single(registry, "pushes", "Pushes of fresh changes sent", s.pushes);
    single(
        registry,
        "push_bytes",
        "Payload bytes of pushes sent",
        s.push_bytes,
    );
    single(
        registry,
        "persisted_changes",
        "Changes made durable in the state log",
        s.persisted,
    );
    let rejected: Vec<(&'static str, &str, u64)> = s
        .rejected
        .iter()
        .map(|(r, n)| ("reason", r.as_str(), *n))
        .collect();
    counter(
        registry,
        "rejected",
        "Changes from peers that could not be used",
        &rejected,
    );
}

fn render_rpc(registry: &mut Registry, s: &TransportStats) {
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    counter(
        registry,
        "requests",
        "RPC calls",
        &[
            ("direction", "in", n(&s.requests_in)),
            ("direction", "out", n(&s.requests_out)),
        ],
    );
    single(
        registry,
        "failed_requests",
        "RPC calls made that failed",
        n(&s.requests_failed),
    );
    counter(
        registry,
        "bytes",
        "RPC payload bytes",
        &[
            ("direction", "in", n(&s.bytes_in)),
            ("direction", "out", n(&s.bytes_out)),
        ],
    );
    single(
        registry,
        "connects",
        "QUIC connections opened",
        n(&s.connects),
    );
    single(
        registry,
        "refused_handshakes",
        "Incoming connections refused at the TLS handshake (another cluster, or not TLS)",
        n(&s.handshakes_refused),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_every_family() {
        let mut stats = Stats {
            packets_in: 5,
            ..Default::default()
        };
        stats.dropped[3] = 2;
        stats.sent_by_kind[SendKind::Gossip.index()] = 7;
        let text = render(
            &stats,
            &StateCounts {
                alive: 3,
                ..Default::default()
            },
            0,
            &StateStatus::default(),
            &TransportStats::default(),
        )
        .unwrap();
        assert!(
            text.contains("shoal_gossip_members{state=\"alive\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("shoal_gossip_sent_packets_total{kind=\"gossip\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("shoal_gossip_packets_total{direction=\"in\"} 5"),
            "{text}"
        );
        assert!(
            text.contains("shoal_gossip_dropped_packets_total{reason=\"unknown_key\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("shoal_gossip_probe_rtt_seconds_bucket"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
