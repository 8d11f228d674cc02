//! The virtual network: where each node sits (datacenter, zone), latency by
//! link class, random loss, partitions between groups of nodes, and slow
//! nodes. Every draw comes from one seeded generator, so a run is the same
//! on every machine.

use std::time::Duration;

use rand::RngExt;
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

/// How two nodes are linked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkClass {
    /// Same zone (same rack row / switch tier).
    Zone,
    /// Same datacenter, different zones.
    Dc,
    /// Different datacenters.
    Wan,
}

/// One-way latency of each link class: uniform between the two bounds, in
/// microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// Same zone.
    pub zone_us: (u64, u64),
    /// Same datacenter.
    pub dc_us: (u64, u64),
    /// Across datacenters.
    pub wan_us: (u64, u64),
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            zone_us: (100, 500),
            dc_us: (300, 1_500),
            wan_us: (15_000, 40_000),
        }
    }
}

/// Where each node sits.
#[derive(Clone, Debug)]
pub struct Topology {
    dc: Vec<u16>,
    zone: Vec<u16>,
    dcs: usize,
}

impl Topology {
    /// `nodes` spread round-robin over `dcs` datacenters of `zones` zones.
    pub fn new(nodes: usize, dcs: usize, zones: usize) -> Topology {
        let dcs = dcs.max(1);
        let zones = zones.max(1);
        let dc = (0..nodes).map(|i| (i % dcs) as u16).collect();
        let zone = (0..nodes).map(|i| ((i / dcs) % zones) as u16).collect();
        Topology { dc, zone, dcs }
    }

    /// Datacenter of node `i`.
    pub fn dc(&self, i: usize) -> usize {
        usize::from(self.dc[i])
    }

    /// Zone of node `i` within its datacenter.
    pub fn zone(&self, i: usize) -> usize {
        usize::from(self.zone[i])
    }

    /// Number of datacenters.
    pub fn dcs(&self) -> usize {
        self.dcs
    }

    /// Nodes in datacenter `d`.
    pub fn dc_size(&self, d: usize) -> usize {
        (self.dc.len() + self.dcs - 1 - d) / self.dcs
    }

    /// The `k`-th node of datacenter `d` (`k < dc_size(d)`; nodes are
    /// spread round-robin).
    pub fn nth_of_dc(&self, d: usize, k: usize) -> usize {
        d + k * self.dcs
    }

    /// The class of the link between `a` and `b`.
    pub fn class(&self, a: usize, b: usize) -> LinkClass {
        if self.dc[a] != self.dc[b] {
            LinkClass::Wan
        } else if self.zone[a] != self.zone[b] {
            LinkClass::Dc
        } else {
            LinkClass::Zone
        }
    }
}

/// What happened to a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    /// Delivered after this delay.
    Deliver(Duration),
    /// Lost at random.
    Lost,
    /// Dropped by a partition.
    Cut,
}

/// Counters of what the network did: the evidence that each fault fired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NetCounters {
    /// Datagrams handed to the network.
    pub datagrams: u64,
    /// Datagrams lost at random.
    pub lost: u64,
    /// Datagrams and messages dropped by a partition.
    pub cut: u64,
    /// Datagrams and messages delayed by a slow node.
    pub slowed: u64,
    /// Reliable (QUIC) messages that needed a retransmission.
    pub retransmitted: u64,
}

/// The network model.
pub struct Network {
    topo: Topology,
    latency: Latency,
    loss: f64,
    /// Per node: the side of the current partition; `None` when whole.
    side: Option<Vec<u16>>,
    /// Per node: extra delay on everything it sends and receives.
    slow_us: Vec<u32>,
    rng: ChaCha8Rng,
    /// What happened so far.
    pub counters: NetCounters,
}

/// Retransmission timeout of a reliable message lost once.
const RETRANSMIT: Duration = Duration::from_millis(200);

impl Network {
    /// A whole network with no loss.
    pub fn new(topo: Topology, latency: Latency, rng: ChaCha8Rng) -> Network {
        let n = topo.dc.len();
        Network {
            topo,
            latency,
            loss: 0.0,
            side: None,
            slow_us: vec![0; n],
            rng,
            counters: NetCounters::default(),
        }
    }

    /// The topology.
    pub fn topology(&self) -> &Topology {
        &self.topo
    }

    /// Sets the random loss of each datagram, `0.0..=1.0`.
    pub fn set_loss(&mut self, loss: f64) {
        self.loss = loss.clamp(0.0, 1.0);
    }

    /// Current loss.
    pub fn loss(&self) -> f64 {
        self.loss
    }

    /// Cuts the network: nodes talk only to nodes with the same side.
    pub fn partition(&mut self, side: Vec<u16>) {
        self.side = Some(side);
    }

    /// Heals any partition.
    pub fn heal(&mut self) {
        self.side = None;
    }

    /// Whether a partition is in place.
    pub fn is_partitioned(&self) -> bool {
        self.side.is_some()
    }

    /// Makes node `i` slow: `extra` more on everything it sends or receives.
    pub fn set_slow(&mut self, i: usize, extra: Duration) {
        self.slow_us[i] = u32::try_from(extra.as_micros()).unwrap_or(u32::MAX);
    }

    /// Whether `a` and `b` can reach each other now.
    pub fn connected(&self, a: usize, b: usize) -> bool {
        self.side.as_ref().is_none_or(|s| s[a] == s[b])
    }

    fn delay(&mut self, from: usize, to: usize) -> Duration {
        let (lo, hi) = match self.topo.class(from, to) {
            LinkClass::Zone => self.latency.zone_us,
            LinkClass::Dc => self.latency.dc_us,
            LinkClass::Wan => self.latency.wan_us,
        };
        let mut us = if hi > lo {
            self.rng.random_range(lo..hi)
        } else {
            lo
        };
        let slow = u64::from(self.slow_us[from]) + u64::from(self.slow_us[to]);
        if slow > 0 {
            self.counters.slowed += 1;
            us += slow;
        }
        Duration::from_micros(us)
    }

    /// The fate of one UDP datagram from `from` to `to`.
    pub fn datagram(&mut self, from: usize, to: usize) -> Fate {
        self.counters.datagrams += 1;
        if !self.connected(from, to) {
            self.counters.cut += 1;
            return Fate::Cut;
        }
        if self.loss > 0.0 && self.rng.random::<f64>() < self.loss {
            self.counters.lost += 1;
            return Fate::Lost;
        }
        Fate::Deliver(self.delay(from, to))
    }

    /// The delay of one message on a reliable stream (QUIC): a partition
    /// drops it (the connection times out); random loss costs a
    /// retransmission each time it strikes.
    pub fn reliable(&mut self, from: usize, to: usize) -> Option<Duration> {
        if from == to {
            return Some(Duration::ZERO);
        }
        if !self.connected(from, to) {
            self.counters.cut += 1;
            return None;
        }
        let mut d = self.delay(from, to);
        let mut tries = 0;
        while self.loss > 0.0 && tries < 8 && self.rng.random::<f64>() < self.loss {
            self.counters.retransmitted += 1;
            d += RETRANSMIT * (1 << tries);
            tries += 1;
        }
        Some(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn classes_latency_loss_and_partitions() {
        let topo = Topology::new(12, 2, 3);
        assert_eq!(topo.class(0, 1), LinkClass::Wan);
        assert_eq!(topo.class(0, 2), LinkClass::Dc);
        assert_eq!(topo.class(0, 6), LinkClass::Zone);
        let mut net = Network::new(topo, Latency::default(), ChaCha8Rng::seed_from_u64(1));
        for _ in 0..100 {
            match net.datagram(0, 1) {
                Fate::Deliver(d) => assert!(d >= Duration::from_millis(15)),
                other => panic!("{other:?}"),
            }
        }
        net.set_loss(0.5);
        let lost = (0..1000)
            .filter(|_| net.datagram(0, 6) == Fate::Lost)
            .count();
        assert!((400..600).contains(&lost), "{lost}");
        net.partition((0..12).map(|i| (i % 2) as u16).collect());
        assert_eq!(net.datagram(0, 1), Fate::Cut);
        assert_eq!(net.reliable(0, 1), None);
        assert!(net.reliable(0, 2).is_some());
        net.heal();
        assert!(net.connected(0, 1));
        assert_eq!(net.counters.cut, 2);
    }
}
