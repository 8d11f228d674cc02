//! Membership tuning, with presets.
//!
//! | preset | probe period | probe rtt | gossip | suspicion at 20 / 1k / 500k nodes | confirmed (k) | for |
//! |---|---|---|---|---|---|---|
//! | `lan`  | 1 s    | 400 ms | 3 members / 200 ms | 4.5 s / 9 s / 17.2 s | 1.5 s / 3 s / 5.7 s (2) | one datacenter |
//! | `wan`  | 5 s    | 3 s    | 4 members / 500 ms | 45 s / 90 s / 172 s | 7.5 s / 15 s / 28.6 s (3) | links across the internet |
//! | `test` | 300 ms | 150 ms | 3 members / 100 ms | 1.5 s / 2.7 s / 5.2 s | off | tests on one machine |
//!
//! Failure detection time is about one probe period (until some member
//! probes the dead one) plus the probe round trip, plus the suspicion
//! timeout, plus a few gossip rounds to tell everyone. The suspicion timeout
//! grows with `log10(N)` so that a suspected member has time to hear about it
//! and refute it in a large cluster; it shrinks toward the confirmed one as
//! other members confirm the suspicion (Lifeguard; docs/gossip.md).

use core::num::{NonZeroU8, NonZeroUsize};
use core::time::Duration;

use crate::seal::SEAL_OVERHEAD;

/// Tuning of the membership protocol. Start from a preset.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    /// How often this node probes one member. Range 100 ms – 60 s. Lower
    /// finds failures sooner and costs one probe (two datagrams) per
    /// period per node, whatever the cluster size.
    pub probe_period: Duration,
    /// How long a direct probe may take before members are asked to probe
    /// indirectly; also how long those indirect probes get. Must be below
    /// `probe_period`; set it a few times the network's p99 round trip
    /// (plus scheduling delays of a loaded host).
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly when a direct probe gets no
    /// answer. The SWIM paper uses 3; `lan` uses 5: under random loss a
    /// live member is suspected only when the direct exchange and every
    /// indirect path (4 datagrams each) lose a datagram, so each helper
    /// divides the false suspicions by about 25 at 1% loss, while it costs
    /// 4 datagrams only after a failed direct probe. At 500,000 nodes the
    /// suspicions (each gossiped to every node, then refuted) were most
    /// of the gossip traffic with 3 (see docs/simulation.md).
    pub indirect_probes: usize,
    /// How often updates are gossiped outside probes. Range 50 ms – 5 s.
    pub gossip_period: Duration,
    /// Members each gossip round goes to.
    pub gossip_fanout: usize,
    /// The chance that a gossip datagram addressed to a member of another
    /// datacenter goes there; otherwise it goes to a random live member of
    /// this node's datacenter. foca picks gossip targets among all members
    /// (four in five cross between five datacenters); this bounds the
    /// periodic gossip that crosses to that share of it, while probes and
    /// acks, which go anywhere, still carry news across. 1 keeps foca's
    /// choice. See docs/gossip.md, "Gossip stays in the datacenter".
    pub cross_dc_gossip: f64,
    /// The chance that a probe foca starts of a member of another
    /// datacenter is sent; otherwise the probe slot goes to the next member
    /// in foca's round (a member of this datacenter, most often), and the
    /// members of the other datacenter are left to their own datacenter's
    /// probes. Only datacenters at least half as large as this node's are
    /// left so; a smaller one (an edge site) is probed from here as foca
    /// chose. Each member is still probed about once per probe period;
    /// between five datacenters of equal size, 0.1 keeps 29% of the probes
    /// across instead of 80% (arithmetic: the simulator's
    /// `probe_across_share`; measured in docs/benchmarks.md, "Locality").
    /// 1 keeps foca's choice. See docs/gossip.md, "Probes stay in the
    /// datacenter".
    pub cross_dc_probes: f64,
    /// A probe from here of a member of another datacenter with at least
    /// this many members up, and left to its own probes by the rule of
    /// `cross_dc_probes`, only checks that the datacenter is reached: when
    /// it fails (directly and indirectly) it suspects nobody and counts
    /// towards "unreachable from here"; that datacenter's own members decide
    /// whether one of them failed. A datacenter cut off is then one fact on
    /// each side, not a suspicion and a down per member (at 100,000 members
    /// a datacenter, hours of rumors), and the cut heals with no member
    /// renewing its identity. A smaller datacenter is probed as any member.
    /// 0 turns it off. See docs/gossip.md, "Datacenters unreachable from
    /// here". Off (0) in the presets: a datacenter lost whole is then
    /// one fact too, and its members are declared failed only after
    /// `dc_lost_after`; meant for datacenters of thousands, where SWIM's
    /// per-member rumors of a cut do not settle in minutes
    /// (docs/simulation.md, Limits).
    pub reach_only_dc_size: usize,
    /// How long a datacenter stays unreachable from here before its
    /// members are probed from here as any member again (suspected, then
    /// declared failed) despite `reach_only_dc_size`: a datacenter lost
    /// for good leaves the member lists.
    pub dc_lost_after: Duration,
    /// Suspicion timeout = `suspicion_mult × max(1, log10 N) × probe_period`,
    /// at least `suspicion_min`. Higher means fewer false positives under
    /// loss or load, and slower detection.
    pub suspicion_mult: f64,
    /// Lower bound of the suspicion timeout.
    pub suspicion_min: Duration,
    /// Lifeguard's dynamic suspicion (Dadgar et al. 2018): once
    /// `suspicion_confirmations` other members confirmed a suspicion (their
    /// own probes of the member failed too), it times out after
    /// `suspicion_confirmed_mult × max(1, log10 N) × probe_period`; the
    /// timeout of a suspicion with fewer confirmations lies between that
    /// and the full one ([`suspicion_after`](Self::suspicion_after)). A
    /// lone accuser (a lost probe, an overloaded prober) still waits the
    /// full timeout, so the shortening costs no false positive that way; a
    /// member stalled through several independent probes is declared
    /// failed sooner. Equal to `suspicion_mult` (or more): no shortening.
    pub suspicion_confirmed_mult: f64,
    /// Lifeguard's local health: the most this node's probe period and
    /// probe rtt are stretched, as `(1 + score)` times, with the score
    /// raised each time this node learns it was wrong or slow (an
    /// accusation of its was refuted; it was itself accused) and lowered by
    /// each probe answered in time. A node that is slow or overloaded
    /// probes less often and waits longer for answers instead of accusing
    /// healthy members. 0 turns it off. (memberlist, Serf's library, caps
    /// it at 8 as well.)
    pub max_local_health: u8,
    /// Independent confirmations (k) at which a suspicion's timeout is at
    /// its shortest; each of the first k shortens it by
    /// `log(c + 1) / log(k + 1)` of the way. 0 turns the shortening off.
    pub suspicion_confirmations: u8,
    /// Each update is re-sent `transmissions_mult × log10(N + 1)` times
    /// (at least 3). Higher survives more loss at a cost in bandwidth.
    pub transmissions_mult: f64,
    /// How long a failed or departed member stays listed before it is
    /// forgotten (and may rejoin with the same identity).
    pub remove_down_after: Duration,
    /// How often to ask one random member for its member list (repairs
    /// divergent views; the range digests of `member_digest_period` do most
    /// of that now, so it is rare: one ~1 KB answer per period).
    pub announce_period: Duration,
    /// How often to knock on two members believed down (heals partitions).
    pub announce_down_period: Duration,
    /// How often to compare a few ranges of the member list with one random
    /// member (repairs a join that a node missed; one datagram of about 110
    /// bytes per period while views agree). Each round covers 128 members of the
    /// id space, so a full pass takes `N / 128` periods.
    pub member_digest_period: Duration,
    /// Largest datagram sent, sealed, in bytes. Keep it below the path MTU
    /// minus 48 (IPv6 + UDP headers): 1400 suits Ethernet.
    pub max_datagram_bytes: usize,
    /// Bytes of each datagram reserved for piggybacked metadata and leave
    /// records (the rest carries SWIM and its membership updates).
    pub piggyback_bytes: usize,
    /// First delay between join attempts; doubles up to `join_backoff_max`.
    pub join_backoff_initial: Duration,
    /// Longest delay between join attempts.
    pub join_backoff_max: Duration,
    /// How often missing member metadata is requested.
    pub meta_sync_period: Duration,
    /// How long to wait for gossip to bring a new member's metadata before
    /// asking for it directly.
    pub meta_grace: Duration,
    /// Keep a replay window per sender (on in the agent; the simulator may
    /// turn it off to save memory).
    pub replay_protection: bool,
    /// How often a member whose application digest differs is reported
    /// again while it still differs (one sync attempt per period).
    pub digest_retry: Duration,
}

impl Config {
    /// One datacenter: sub-millisecond round trips, rare loss.
    pub fn lan() -> Config {
        Config {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(400),
            indirect_probes: 5,
            gossip_period: Duration::from_millis(200),
            gossip_fanout: 3,
            cross_dc_gossip: 0.1,
            cross_dc_probes: 0.1,
            reach_only_dc_size: 0,
            dc_lost_after: Duration::from_secs(600),
            suspicion_mult: 3.0,
            suspicion_min: Duration::from_secs(2),
            suspicion_confirmed_mult: 1.0,
            suspicion_confirmations: 2,
            max_local_health: 8,
            transmissions_mult: 4.0,
            remove_down_after: Duration::from_secs(24 * 3600),
            announce_period: Duration::from_secs(60),
            announce_down_period: Duration::from_secs(20),
            member_digest_period: Duration::from_secs(3),
            max_datagram_bytes: 1400,
            piggyback_bytes: 320,
            join_backoff_initial: Duration::from_millis(500),
            join_backoff_max: Duration::from_secs(30),
            meta_sync_period: Duration::from_millis(500),
            meta_grace: Duration::from_millis(500),
            replay_protection: true,
            digest_retry: Duration::from_secs(2),
        }
    }

    /// Datacenters joined over the internet: round trips of 100 ms+, loss.
    pub fn wan() -> Config {
        Config {
            probe_period: Duration::from_secs(5),
            probe_rtt: Duration::from_secs(3),
            indirect_probes: 4,
            gossip_period: Duration::from_millis(500),
            gossip_fanout: 4,
            suspicion_mult: 6.0,
            suspicion_min: Duration::from_secs(10),
            suspicion_confirmed_mult: 1.0,
            suspicion_confirmations: 3,
            join_backoff_initial: Duration::from_secs(1),
            join_backoff_max: Duration::from_secs(60),
            meta_grace: Duration::from_secs(5),
            member_digest_period: Duration::from_secs(10),
            ..Config::lan()
        }
    }

    /// Many agents on one machine in tests: fast, tolerant of a busy CPU.
    pub fn test() -> Config {
        Config {
            probe_period: Duration::from_millis(300),
            probe_rtt: Duration::from_millis(150),
            gossip_period: Duration::from_millis(100),
            suspicion_mult: 3.0,
            suspicion_min: Duration::from_millis(1500),
            // Agents of a test share one busy machine and stall together:
            // a stalled agent would be confirmed by its neighbours at once;
            // and tests time detection with the preset's own timing.
            suspicion_confirmed_mult: 3.0,
            suspicion_confirmations: 0,
            max_local_health: 0,
            remove_down_after: Duration::from_secs(3600),
            announce_period: Duration::from_secs(5),
            announce_down_period: Duration::from_secs(3),
            member_digest_period: Duration::from_secs(1),
            join_backoff_initial: Duration::from_millis(200),
            join_backoff_max: Duration::from_secs(5),
            meta_sync_period: Duration::from_millis(250),
            meta_grace: Duration::from_millis(250),
            ..Config::lan()
        }
    }

    /// A preset by name: `lan`, `wan` or `test`.
    pub fn preset(name: &str) -> Option<Config> {
        match name {
            "lan" => Some(Config::lan()),
            "wan" => Some(Config::wan()),
            "test" => Some(Config::test()),
            _ => None,
        }
    }

    /// The cluster size timing is computed for, given the members a node
    /// knows (itself included): rounded up to a power of two. The core
    /// reconfigures SWIM only when this class changes (not on every join),
    /// and every node of a cluster computes the same timing whatever order
    /// it learned its members in.
    pub fn size_class(members: usize) -> usize {
        members.max(1).next_power_of_two()
    }

    /// Suspicion timeout for a cluster of `cluster_size` members.
    pub fn suspicion_timeout(&self, cluster_size: usize) -> Duration {
        let log = (cluster_size.max(1) as f64).log10().max(1.0);
        let secs = self.suspicion_mult * log * self.probe_period.as_secs_f64();
        Duration::from_secs_f64(secs).max(self.suspicion_min)
    }

    /// Timeout of a suspicion that `confirmations` other members have
    /// confirmed, in a cluster of `cluster_size`: from the full
    /// [`suspicion_timeout`](Self::suspicion_timeout) with none down to the
    /// confirmed one at `suspicion_confirmations`, by `log(c + 1) / log(k + 1)`
    /// of the way (the first confirmation counts most).
    pub fn suspicion_after(&self, cluster_size: usize, confirmations: usize) -> Duration {
        let full = self.suspicion_timeout(cluster_size);
        let k = usize::from(self.suspicion_confirmations);
        if k == 0 || confirmations == 0 {
            return full;
        }
        let log = (cluster_size.max(1) as f64).log10().max(1.0);
        let shortest = Duration::from_secs_f64(
            self.suspicion_confirmed_mult * log * self.probe_period.as_secs_f64(),
        )
        .min(full);
        let c = confirmations.min(k);
        let way = ((c + 1) as f64).ln() / ((k + 1) as f64).ln();
        full - (full - shortest).mul_f64(way)
    }

    /// Times each update is re-sent in a cluster of `cluster_size`.
    pub fn max_transmissions(&self, cluster_size: usize) -> u8 {
        let tx = (self.transmissions_mult * ((cluster_size + 1) as f64).log10()).ceil();
        tx.clamp(3.0, 255.0) as u8
    }

    /// Bytes of a datagram left to the SWIM payload.
    pub(crate) fn swim_packet_bytes(&self) -> usize {
        self.max_datagram_bytes
            .saturating_sub(SEAL_OVERHEAD + ENVELOPE_OVERHEAD + self.piggyback_bytes)
            .max(256)
    }

    /// Checks the values make sense together.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field: &'static str, why: String| Err(ConfigError { field, why });
        if self.probe_period < Duration::from_millis(10) {
            return bad(
                "probe_period",
                format!("{:?} is below 10 ms", self.probe_period),
            );
        }
        if self.probe_rtt >= self.probe_period {
            return bad(
                "probe_rtt",
                format!(
                    "{:?} must be below probe_period ({:?})",
                    self.probe_rtt, self.probe_period
                ),
            );
        }
        if self.indirect_probes == 0 || self.gossip_fanout == 0 {
            return bad("indirect_probes", "must be at least 1".into());
        }
        if self.max_datagram_bytes < 512 || self.max_datagram_bytes > 65_000 {
            return bad(
                "max_datagram_bytes",
                format!("{} is outside 512..=65000", self.max_datagram_bytes),
            );
        }
        if self.suspicion_mult.is_nan() || self.suspicion_mult <= 0.0 {
            return bad(
                "suspicion_mult",
                format!("{} must be > 0", self.suspicion_mult),
            );
        }
        for (field, share) in [
            ("cross_dc_gossip", self.cross_dc_gossip),
            ("cross_dc_probes", self.cross_dc_probes),
        ] {
            if !(0.0..=1.0).contains(&share) {
                return bad(field, format!("{share} is outside 0..=1"));
            }
        }
        if self.suspicion_confirmed_mult.is_nan() || self.suspicion_confirmed_mult <= 0.0 {
            return bad(
                "suspicion_confirmed_mult",
                format!("{} must be > 0", self.suspicion_confirmed_mult),
            );
        }
        Ok(())
    }

    /// The foca configuration for a cluster of `cluster_size`.
    pub(crate) fn foca(&self, cluster_size: usize) -> foca::Config {
        let nz = |n: usize| NonZeroUsize::new(n.max(1)).expect("max(1) is non-zero");
        foca::Config {
            probe_period: self.probe_period,
            probe_rtt: self.probe_rtt,
            num_indirect_probes: nz(self.indirect_probes),
            max_transmissions: NonZeroU8::new(self.max_transmissions(cluster_size))
                .expect("clamped to at least 3"),
            suspect_to_down_after: self.suspicion_timeout(cluster_size),
            remove_down_after: Some(self.remove_down_after),
            max_packet_size: nz(self.swim_packet_bytes()),
            notify_down_members: true,
            periodic_announce: Some(foca::PeriodicParams {
                frequency: self.announce_period,
                num_members: nz(1),
            }),
            periodic_announce_to_down_members: Some(foca::PeriodicParams {
                frequency: self.announce_down_period,
                num_members: nz(2),
            }),
            periodic_gossip: Some(foca::PeriodicParams {
                frequency: self.gossip_period,
                num_members: nz(self.gossip_fanout),
            }),
        }
    }
}

/// Room kept for the envelope around the SWIM payload (lengths, tags,
/// sender metadata version).
pub(crate) const ENVELOPE_OVERHEAD: usize = 32;

/// A configuration value out of range.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("gossip config field {field}: {why}")]
pub struct ConfigError {
    /// The field.
    pub field: &'static str,
    /// What is wrong with it.
    pub why: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        for name in ["lan", "wan", "test"] {
            Config::preset(name).unwrap().validate().unwrap();
        }
        assert!(Config::preset("moon").is_none());
    }

    #[test]
    fn confirmations_shorten_a_suspicion_down_to_the_confirmed_timeout() {
        let lan = Config::lan();
        let after = |c| lan.suspicion_after(32, c).as_secs_f64();
        let full = lan.suspicion_timeout(32).as_secs_f64();
        assert_eq!(after(0), full);
        // k = 2: one confirmation goes log 2 / log 3 of the way.
        let shortest = 32f64.log10();
        let one = full - (full - shortest) * 2f64.ln() / 3f64.ln();
        assert!((after(1) - one).abs() < 1e-6, "{}", after(1));
        assert!((after(2) - shortest).abs() < 1e-6, "{}", after(2));
        assert_eq!(after(2), after(9), "past k nothing shortens it more");
        // Off in the test preset and when k is 0.
        let test = Config::test();
        assert_eq!(test.suspicion_after(32, 5), test.suspicion_timeout(32));
        let bad = Config {
            suspicion_confirmed_mult: f64::NAN,
            ..Config::lan()
        };
        assert_eq!(
            bad.validate().unwrap_err().field,
            "suspicion_confirmed_mult"
        );
    }

    #[test]
    fn documented_suspicion_timeouts() {
        let lan = Config::lan();
        let s = |n| lan.suspicion_timeout(n).as_secs_f64();
        assert!((s(20) - 3.9).abs() < 0.05, "{}", s(20));
        assert!((s(1000) - 9.0).abs() < 0.05);
        assert!((s(500_000) - 17.1).abs() < 0.05);
        assert_eq!(lan.suspicion_timeout(2), Duration::from_secs(3));
        assert_eq!(
            Config::test().suspicion_timeout(20),
            Duration::from_secs_f64(0.3 * 3.0 * 20f64.log10()).max(Duration::from_millis(1500))
        );
    }

    #[test]
    fn transmissions_grow_with_log_n() {
        let lan = Config::lan();
        assert_eq!(lan.max_transmissions(1), 3);
        assert_eq!(lan.max_transmissions(20), 6);
        assert_eq!(lan.max_transmissions(500_000), 23);
    }

    #[test]
    fn bad_values_name_the_field() {
        let mut c = Config::lan();
        c.probe_rtt = Duration::from_secs(2);
        assert_eq!(c.validate().unwrap_err().field, "probe_rtt");
    }
}
