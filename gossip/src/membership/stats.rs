//! Counters since start: datagrams and bytes in and out, drops by
//! [`DropReason`], sends by [`SendKind`], probe failures and round-trip
//! times.
//!
//! Counting is all this module does: the counters never feed back into a
//! decision of the state machine, so they can be read at any time
//! ([`Membership::stats`](crate::Membership::stats)) and exported as they
//! are (the agent's `shoal_gossip_*` metrics, the simulator's traffic
//! breakdown). Probe round trips are timed from foca's own notifications of
//! a ping sent and its ack received ([`Probes`]).

use core::time::Duration;
use std::collections::BTreeMap;

use crate::kind::SendKind;
use crate::seal::DropReason;
use crate::{Instant, NodeId};

/// Probe round-trip times.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RttHistogram {
    /// Upper bounds of the buckets, in microseconds.
    pub bounds_micros: &'static [u64],
    /// Count per bucket (not cumulative); the last is above every bound.
    pub counts: Vec<u64>,
    /// Sum of all samples, microseconds.
    pub sum_micros: u64,
    /// Number of samples.
    pub count: u64,
}

const RTT_BOUNDS_MICROS: &[u64] = &[
    100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000,
];

impl Default for RttHistogram {
    fn default() -> Self {
        RttHistogram {
            bounds_micros: RTT_BOUNDS_MICROS,
            counts: vec![0; RTT_BOUNDS_MICROS.len() + 1],
            sum_micros: 0,
            count: 0,
        }
    }
}

impl RttHistogram {
    fn observe(&mut self, rtt: Duration) {
        let micros = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX);
        let bucket = self
            .bounds_micros
            .iter()
            .position(|b| micros <= *b)
            .unwrap_or(self.bounds_micros.len());
        self.counts[bucket] += 1;
        self.sum_micros = self.sum_micros.saturating_add(micros);
        self.count += 1;
    }
}

/// Counters since start.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Datagrams sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Datagrams dropped, indexed like [`DropReason::ALL`].
    pub dropped: [u64; DropReason::ALL.len()],
    /// Probes that got no answer, direct or indirect.
    pub probe_failures: u64,
    /// Direct probe round trips.
    pub probe_rtt: RttHistogram,
    /// Members learned from range exchanges (new to this node).
    pub members_learned_from_ranges: u64,
    /// "You are down" notices foca wanted to send to a member this node
    /// holds up (a suspicion it refuted), not sent.
    pub turn_undead_suppressed: u64,
    /// Members told they had been suspect here for two suspicion timeouts
    /// (a refutation overdue; see `Body::Suspected`).
    pub suspects_told: u64,
    /// Down timers of suspicions moved earlier by confirmations from
    /// other accusers (Lifeguard; `membership/suspicion.rs`).
    pub suspicions_shortened: u64,
    /// Gossip datagrams foca addressed to another datacenter that went to
    /// a member of this one instead (`cross_dc_gossip`;
    /// `membership/locality.rs`).
    pub gossip_kept_in_dc: u64,
    /// Probes foca started of a member of another datacenter that this
    /// core took back, leaving that member to its own datacenter's probes
    /// (`cross_dc_probes`; `membership/locality.rs`).
    pub probes_kept_in_dc: u64,
    /// Probes of a member of a large datacenter elsewhere that failed and
    /// suspected nobody: they counted towards that datacenter being
    /// unreachable from here (`Config::reach_only_dc_size`;
    /// `membership/locality.rs`).
    pub reach_probes_failed: u64,
    /// Probes steered to a member of a large datacenter in doubt (one
    /// failure counted against it and nothing heard since, or silent since
    /// another became unreachable), so that its reach is decided soon
    /// (`membership/locality.rs`).
    pub reach_checks: u64,
    /// Asks to probe a silent member indirectly sent to a member of its
    /// datacenter instead of foca's helper (`membership/locality.rs`).
    pub indirect_probes_moved: u64,
    /// Lifeguard's local health score now (0: healthy; probe timing is
    /// stretched `1 + score` times) and the highest it reached.
    pub local_health: u8,
    /// See `local_health`.
    pub local_health_max: u8,
    /// Datacenters unreachable from here now (`membership/reach.rs`).
    pub dcs_unreachable: u64,
    /// Datagrams sent, indexed like [`SendKind::ALL`].
    pub sent_by_kind: [u64; SendKind::ALL.len()],
    /// Bytes sent (sealed), indexed like [`SendKind::ALL`].
    pub sent_bytes_by_kind: [u64; SendKind::ALL.len()],
}

impl Stats {
    /// Drops for one reason.
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.dropped[reason.index()]
    }

    /// Datagrams and bytes sent of one kind.
    pub fn sent(&self, kind: SendKind) -> (u64, u64) {
        (
            self.sent_by_kind[kind.index()],
            self.sent_bytes_by_kind[kind.index()],
        )
    }

    /// Counts a datagram received, before anything else is done with it.
    pub(super) fn count_in(&mut self, bytes: usize) {
        self.packets_in += 1;
        self.bytes_in += bytes as u64;
    }

    /// Counts a datagram (or an item of one) dropped.
    pub(super) fn count_drop(&mut self, reason: DropReason) {
        self.dropped[reason.index()] += 1;
    }

    /// Counts a sealed datagram of `kind` sent.
    pub(super) fn count_out(&mut self, kind: SendKind, bytes: usize) {
        self.packets_out += 1;
        self.bytes_out += bytes as u64;
        self.sent_by_kind[kind.index()] += 1;
        self.sent_bytes_by_kind[kind.index()] += bytes as u64;
    }
}

/// Probes sent and not yet answered, to time their round trip: foca
/// notifies each ping sent and each ack received, keyed by the member and
/// the probe number.
#[derive(Debug, Default)]
pub(super) struct Probes {
    sent: BTreeMap<(NodeId, u8), Instant>,
}

impl Probes {
    /// Ping `n` went to member `to` at `now`.
    pub(super) fn sent(&mut self, now: Instant, to: NodeId, n: u8) {
        self.sent.insert((to, n), now);
    }

    /// Ack `n` came from member `from` at `now`: its round trip goes into
    /// `stats`, if the ping is still remembered (then true).
    pub(super) fn answered(
        &mut self,
        now: Instant,
        from: NodeId,
        n: u8,
        stats: &mut Stats,
    ) -> bool {
        match self.sent.remove(&(from, n)) {
            Some(sent) => {
                stats.probe_rtt.observe(now.saturating_duration_since(sent));
                true
            }
            None => false,
        }
    }

    /// Forgets pings older than `stale` (never answered).
    pub(super) fn prune(&mut self, now: Instant, stale: Duration) {
        self.sent
            .retain(|_, sent| now.saturating_duration_since(*sent) < stale);
    }
}
