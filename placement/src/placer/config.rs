//! The placer's tuning: ring points, candidates per auction, the
//! timeouts of bids, reservations, leases and retries, and the node's
//! host ports.
//!
//! Every duration is in the placer's own time (the `now` its inputs carry);
//! the defaults suit a data-center network and are what the agent and the
//! simulator use.

use std::time::Duration;

/// Ports in the agent's default `--port-range`, 20000-32000.
pub const DEFAULT_HOST_PORTS: u32 = 32000 - 20000 + 1;

/// Tuning.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlacementConfig {
    /// Points per member on the ring. More balances coordination better and
    /// costs memory (16 bytes a point).
    pub vnodes: u32,
    /// Candidates asked first (k); the window doubles when none has room.
    pub candidates: usize,
    /// How long a coordinator waits for bids. A candidate that does not
    /// answer in time counts as no bid.
    pub bid_timeout: Duration,
    /// How long a bidder holds the resources it bid.
    pub reservation_ttl: Duration,
    /// How often a holder renews its lease with the key's coordinator.
    pub lease_period: Duration,
    /// A holder not heard from for this long, while gossip still says it is
    /// alive, is replaced (it may be cut off from this coordinator only).
    pub lease_silence: Duration,
    /// After the ring changes, how long a coordinator waits for lease
    /// renewals before it auctions keys it inherited without knowing their
    /// holders.
    pub learn_grace: Duration,
    /// First and longest wait before retrying a key no node had room for.
    pub retry_min: Duration,
    /// Longest wait before retrying a pending key. Keys are also retried
    /// at once when the ring changes or a member's free class rises enough
    /// for them.
    pub retry_max: Duration,
    /// Period of the housekeeping tick.
    pub tick: Duration,
    /// Host ports this node hands out from its range (the agent's
    /// `--port-range`): each named port without `static` of a task held or
    /// bid for here takes one, and a task that would need more than are
    /// left is declined with the reason, rather than failing at start.
    pub host_ports: u32,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            vnodes: 16,
            candidates: 3,
            bid_timeout: Duration::from_millis(500),
            reservation_ttl: Duration::from_secs(3),
            lease_period: Duration::from_secs(1),
            lease_silence: Duration::from_secs(15),
            learn_grace: Duration::from_secs(3),
            retry_min: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            tick: Duration::from_millis(100),
            host_ports: DEFAULT_HOST_PORTS,
        }
    }
}
