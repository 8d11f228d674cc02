//! [`Driver`]: the part of the agent's driver that does no I/O — the core,
//! the timers it asked for, and the order in which its outputs leave. The
//! async loop in [`super::CoreTask`] owns one and performs the I/O of what
//! it returns; the tests drive one with a virtual clock and compare it
//! with the simulator's way of driving the same core.

use shoal_core::{NodeCore, Output, Timers};
use shoal_gossip::Instant;

/// A node core and its timers.
#[derive(Debug)]
pub struct Driver {
    core: NodeCore,
    timers: Timers,
}

impl Driver {
    /// Drives `core`.
    pub fn new(core: NodeCore) -> Driver {
        Driver {
            core,
            timers: Timers::new(),
        }
    }

    /// The core, to hand it an input; call [`Driver::drain`] afterwards.
    pub fn core(&mut self) -> &mut NodeCore {
        &mut self.core
    }

    /// The core, to read it.
    pub fn view(&self) -> &NodeCore {
        &self.core
    }

    /// When the earliest timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Takes what the core produced: timers are kept here, everything else
    /// goes to `out`, in order.
    pub fn drain(&mut self, out: &mut Vec<Output>) {
        while let Some(o) = self.core.poll() {
            match o {
                Output::Timer { at, timer } => self.timers.push(at, timer),
                other => out.push(other),
            }
        }
    }

    /// Hands the core every timer due at `now`, one at a time (each one's
    /// outputs drained before the next, so that a timer it asks for at
    /// `now` is handed back in this same call).
    pub fn fire_due(&mut self, now: Instant, wall_ms: u64, out: &mut Vec<Output>) {
        while let Some(timer) = self.timers.pop_due(now) {
            self.core.handle_timer(now, wall_ms, timer);
            self.drain(out);
        }
    }
}

#[cfg(test)]
mod tests {
    //! The agent's way of driving a core ([`Driver`]: a timer heap, timers
    //! before datagrams at equal times, as the loop's biased `select!`
    //! does) against the simulator's (every timer and datagram in one event
    //! queue, `shoal_sim::queue::EventQueue`, as full mode does): the same
    //! nodes, the same network, a join and a crash. Each node's placer
    //! must learn of every member change at the same instant either way —
    //! this fails if the agent wired membership to placement differently
    //! from the simulator (a timer dropped, fired late or early, an output
    //! handled out of order, a change handed to the placer by another way).

    use std::cmp::Reverse;
    use std::collections::{BTreeMap, BinaryHeap};
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use shoal_core::{NodeCore, Output, Timer, Wiring};
    use shoal_gossip::{
        Capacity, Config, FreeClass, Instant, MemberMeta, Membership, NodeId, NodeIdentity,
        PacketSecurity, RuntimeInfo,
    };
    use shoal_placement::{PlacementConfig, Placer, Resources};
    use shoal_sim::queue::EventQueue;

    use super::Driver;

    const NODES: usize = 4;
    /// Node 3 stops answering (crashes) at this time.
    const CRASH_AT: Duration = Duration::from_secs(8);
    const END: Duration = Duration::from_secs(20);
    const WALL0_MS: u64 = 1_700_000_000_000;

    fn addr(i: usize) -> SocketAddr {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1 + i as u8)), 5481)
    }

    fn index(a: SocketAddr) -> usize {
        match a.ip() {
            IpAddr::V4(v) => usize::from(v.octets()[3]) - 1,
            IpAddr::V6(_) => unreachable!(),
        }
    }

    /// A link's latency: distinct per link, so that no two datagrams reach
    /// a node at the same microsecond.
    fn latency(from: usize, to: usize) -> Duration {
        Duration::from_micros(700 + 131 * from as u64 + 17 * to as u64)
    }

    fn core(i: usize) -> NodeCore {
        let id = NodeId(i as u64 + 1);
        let meta = MemberMeta {
            name: format!("n{i}"),
            gossip_addr: addr(i),
            rpc_addr: addr(i),
            api_addr: addr(i),
            api_tls: false,
            gossip_keys: Vec::new(),
            dc: "dc1".into(),
            zone: String::new(),
            region: "global".into(),
            labels: BTreeMap::new(),
            capacity: Capacity {
                cpus_milli: 2000,
                memory_mb: 1024,
                disk_mb: 1000,
                gpus: 0,
            },
            runtimes: vec![RuntimeInfo {
                name: "process".into(),
                version: "test".into(),
            }],
            agent_version: "test".into(),
            free_class: FreeClass::IDLE,
            isolation: "none".into(),
            draining: false,
        };
        let membership = Membership::new(
            Instant::ZERO,
            NodeIdentity::new(id, addr(i), 1),
            meta,
            Config::test(),
            PacketSecurity::sealed(&[7; 32]),
            100 + i as u64,
        )
        .unwrap();
        let capacity = Resources {
            cpus_milli: 2000,
            memory_mb: 1024,
            disk_mb: 1000,
            gpus: 0,
        };
        let placer = Placer::new(id, PlacementConfig::default(), capacity, Instant::ZERO);
        NodeCore::new(membership, placer, Wiring::default())
    }

    /// Which members node `i`'s placer has, and which its membership has
    /// up, as bit masks.
    fn views(core: &NodeCore) -> (u8, u8) {
        let mut placer = 0;
        let mut up = 0;
        for j in 0..NODES {
            let id = NodeId(j as u64 + 1);
            if core.placer().has_member(id) {
                placer |= 1 << j;
            }
            if core.membership().up_meta(id).is_some() {
                up |= 1 << j;
            }
        }
        (placer, up)
    }

    /// (time, node, placer members) each time a placer's members change.
    type Trace = Vec<(Instant, usize, u8)>;

    fn note(trace: &mut Trace, last: &mut [u8], now: Instant, i: usize, core: &NodeCore) {
        let (placer, _) = views(core);
        if last[i] != placer {
            last[i] = placer;
            trace.push((now, i, placer));
        }
    }

    fn crashed(i: usize, now: Instant) -> bool {
        i == NODES - 1 && now >= Instant::ZERO + CRASH_AT
    }

    fn joins(i: usize) -> Vec<SocketAddr> {
        if i == 0 { Vec::new() } else { vec![addr(0)] }
    }

    /// The agent's way: a [`Driver`] per node, the network in its own
    /// queue, due timers first.
    fn agent_way() -> Trace {
        let mut drivers: Vec<Driver> = (0..NODES).map(|i| Driver::new(core(i))).collect();
        // (arrival, sequence, from, to, payload)
        type Net = BinaryHeap<Reverse<(Instant, u64, usize, usize, Vec<u8>)>>;
        let mut net: Net = BinaryHeap::new();
        let mut trace = Trace::new();
        let mut last = vec![0u8; NODES];
        // Datagrams sent at once arrive in the order they were sent.
        let seq = std::cell::Cell::new(0u64);
        let send = |outs: Vec<Output>, from: usize, now: Instant, net: &mut Net| {
            for o in outs {
                if let Output::Datagram(t) = o {
                    let to = index(t.to);
                    seq.set(seq.get() + 1);
                    net.push(Reverse((
                        now + latency(from, to),
                        seq.get(),
                        from,
                        to,
                        t.payload,
                    )));
                }
            }
        };
        for (i, d) in drivers.iter_mut().enumerate() {
            let mut outs = Vec::new();
            d.core()
                .start(Instant::ZERO, WALL0_MS, &joins(i), Vec::new());
            d.drain(&mut outs);
            send(outs, i, Instant::ZERO, &mut net);
        }
        loop {
            let timer = (0..NODES)
                .filter_map(|i| drivers[i].next_deadline().map(|t| (t, i)))
                .min();
            let datagram = net.peek().map(|Reverse((t, ..))| *t);
            let now = match (timer, datagram) {
                (Some((t, _)), Some(d)) => t.min(d),
                (Some((t, _)), None) => t,
                (None, Some(d)) => d,
                (None, None) => break,
            };
            if now > Instant::ZERO + END {
                break;
            }
            let wall = WALL0_MS + now.as_micros() / 1000;
            if let Some((t, i)) = timer
                && t == now
            {
                if !crashed(i, now) {
                    let mut outs = Vec::new();
                    drivers[i].fire_due(now, wall, &mut outs);
                    send(outs, i, now, &mut net);
                    note(&mut trace, &mut last, now, i, drivers[i].view());
                } else {
                    // A crashed node's timers go nowhere.
                    let mut outs = Vec::new();
                    drivers[i].fire_due(now, wall, &mut outs);
                }
                continue;
            }
            let Some(Reverse((_, _, from, to, bytes))) = net.pop() else {
                break;
            };
            if crashed(to, now) || crashed(from, now) {
                continue;
            }
            let mut outs = Vec::new();
            drivers[to].core().handle_datagram(now, addr(from), &bytes);
            drivers[to].drain(&mut outs);
            send(outs, to, now, &mut net);
            note(&mut trace, &mut last, now, to, drivers[to].view());
        }
        trace
    }

    enum Ev {
        Datagram {
            to: usize,
            from: usize,
            bytes: Vec<u8>,
        },
        Timer {
            node: usize,
            timer: Timer,
        },
    }

    /// The simulator's way: every timer and datagram in one event queue.
    fn simulator_way() -> Trace {
        let mut cores: Vec<NodeCore> = (0..NODES).map(core).collect();
        let mut q: EventQueue<Ev> = EventQueue::default();
        let mut trace = Trace::new();
        let mut last = vec![0u8; NODES];
        let drain = |core: &mut NodeCore, i: usize, now: Instant, q: &mut EventQueue<Ev>| {
            while let Some(o) = core.poll() {
                match o {
                    Output::Datagram(t) => {
                        let to = index(t.to);
                        q.push(
                            now + latency(i, to),
                            Ev::Datagram {
                                to,
                                from: i,
                                bytes: t.payload,
                            },
                        );
                    }
                    Output::Timer { at, timer } => q.push(at, Ev::Timer { node: i, timer }),
                    _ => {}
                }
            }
        };
        for (i, c) in cores.iter_mut().enumerate() {
            c.start(Instant::ZERO, WALL0_MS, &joins(i), Vec::new());
            drain(c, i, Instant::ZERO, &mut q);
        }
        while let Some((now, ev)) = q.pop() {
            if now > Instant::ZERO + END {
                break;
            }
            let wall = WALL0_MS + now.as_micros() / 1000;
            match ev {
                Ev::Datagram { to, from, bytes } => {
                    if crashed(to, now) || crashed(from, now) {
                        continue;
                    }
                    cores[to].handle_datagram(now, addr(from), &bytes);
                    drain(&mut cores[to], to, now, &mut q);
                    note(&mut trace, &mut last, now, to, &cores[to]);
                }
                Ev::Timer { node, timer } => {
                    cores[node].handle_timer(now, wall, timer);
                    if crashed(node, now) {
                        while cores[node].poll().is_some() {}
                        continue;
                    }
                    drain(&mut cores[node], node, now, &mut q);
                    note(&mut trace, &mut last, now, node, &cores[node]);
                }
            }
        }
        trace
    }

    #[test]
    fn a_member_change_reaches_the_placer_as_in_the_simulator() {
        // Nodes handle their timers independently: order changes made at
        // the same instant by node, not by which node the loop took first.
        let by_time = |mut t: Trace| {
            t.sort_by_key(|e| (e.0, e.1));
            t
        };
        let agent = by_time(agent_way());
        let sim = by_time(simulator_way());
        let all = (1u8 << NODES) - 1;
        let without_crashed = all & !(1 << (NODES - 1));
        // The scenario did what it should: every placer learned every
        // member, and the survivors' placers dropped the crashed one.
        for i in 0..NODES - 1 {
            let seen: Vec<u8> = sim.iter().filter(|e| e.1 == i).map(|e| e.2).collect();
            assert!(seen.contains(&all), "n{i} never had every member: {seen:?}");
            assert_eq!(
                seen.last(),
                Some(&without_crashed),
                "n{i} kept the crashed member"
            );
        }
        assert_eq!(
            agent, sim,
            "the agent's driver hands member changes to the placer at other times than the simulator's"
        );
    }
}
