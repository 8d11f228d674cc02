//! The membership core driven by a small deterministic network: an event heap
//! ordered by (time, sequence), seeded latency and loss, no sockets, no clock.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::net::SocketAddr;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_gossip::{
    Capacity, Config, DropReason, FreeClass, Instant, MemberMeta, MemberState, Membership, NodeId,
    NodeIdentity, NoteError, PacketSecurity, SendKind, TimerToken,
};

#[derive(Debug)]
enum Ev {
    Deliver {
        to: usize,
        from: SocketAddr,
        bytes: Vec<u8>,
    },
    Timer {
        node: usize,
        token: TimerToken,
    },
}

struct Net {
    now: Instant,
    seq: u64,
    heap: BinaryHeap<Reverse<(Instant, u64)>>,
    events: BTreeMap<u64, Ev>,
    nodes: Vec<Option<Membership>>,
    scheduled: Vec<Option<(Instant, TimerToken)>>,
    addrs: BTreeMap<SocketAddr, usize>,
    rng: ChaCha8Rng,
    loss: f64,
    log: Vec<String>,
    dropped_by_loss: u64,
    /// Every datagram delivered, kept when `capture` is on.
    captured: Vec<(usize, SocketAddr, Vec<u8>)>,
    capture: bool,
    /// Nodes that receive nothing until the given instant.
    deaf_until: BTreeMap<usize, Instant>,
    dropped_by_deafness: u64,
    /// Extra delay of everything a node sends or receives (a slow node).
    slow: BTreeMap<usize, Duration>,
    /// The configuration of nodes started from now on.
    config: Config,
    /// Node `i`'s datacenter (default: as `meta_of` puts them).
    dc_of: Box<dyn Fn(usize) -> &'static str>,
    /// Gossip datagrams and pings sent within a datacenter and across.
    crossed: Crossing,
    /// Nodes cut off from every node of the other datacenter.
    cut_from_other_dc: BTreeSet<usize>,
    dropped_by_cut: u64,
}

fn addr_of(i: usize) -> SocketAddr {
    SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 5481))
}

fn meta_of(i: usize) -> MemberMeta {
    MemberMeta {
        name: format!("node-{i}"),
        gossip_addr: addr_of(i),
        rpc_addr: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 5482)),
        api_addr: SocketAddr::from(([10, 0, (i / 250) as u8, (i % 250 + 1) as u8], 5480)),
        api_tls: false,
        gossip_keys: Vec::new(),
        dc: if i.is_multiple_of(2) {
            "east".into()
        } else {
            "west".into()
        },
        zone: String::new(),
        region: String::new(),
        labels: [("rack".to_string(), format!("r{}", i % 5))].into(),
        capacity: Capacity {
            cpus_milli: 2000,
            memory_mb: 1024,
            disk_mb: 10_000,
            gpus: 0,
        },
        runtimes: vec![],
        agent_version: "test".into(),
        free_class: FreeClass::IDLE,
        isolation: String::new(),
        draining: false,
    }
}

const SECRET: [u8; 32] = [7u8; 32];

impl Net {
    fn new(seed: u64, loss: f64) -> Net {
        Net {
            now: Instant::ZERO,
            seq: 0,
            heap: BinaryHeap::new(),
            events: BTreeMap::new(),
            nodes: Vec::new(),
            scheduled: Vec::new(),
            addrs: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            loss,
            log: Vec::new(),
            dropped_by_loss: 0,
            captured: Vec::new(),
            capture: false,
            deaf_until: BTreeMap::new(),
            dropped_by_deafness: 0,
            slow: BTreeMap::new(),
            config: Config::test(),
            dc_of: Box::new(|i| if i % 2 == 1 { "west" } else { "east" }),
            crossed: Crossing::default(),
            cut_from_other_dc: BTreeSet::new(),
            dropped_by_cut: 0,
        }
    }

    fn dc_of(&self, i: usize) -> &'static str {
        (self.dc_of)(i)
    }

    fn push(&mut self, at: Instant, ev: Ev) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn add_node(&mut self, bump: u32) -> usize {
        let i = self.nodes.len();
        self.nodes.push(None);
        self.scheduled.push(None);
        self.start_node(i, bump);
        i
    }

    fn start_node(&mut self, i: usize, bump: u32) {
        let identity = NodeIdentity::new(NodeId(1000 + i as u64), addr_of(i), bump);
        let seed = self.rng.random::<u64>();
        let mut meta = meta_of(i);
        meta.dc = self.dc_of(i).into();
        let m = Membership::new(
            self.now,
            identity,
            meta,
            self.config.clone(),
            PacketSecurity::sealed(&SECRET),
            seed,
        )
        .unwrap();
        self.nodes[i] = Some(m);
        self.scheduled[i] = None;
        self.addrs.insert(addr_of(i), i);
        self.after_input(i);
    }

    fn crash(&mut self, i: usize) {
        self.nodes[i] = None;
        self.scheduled[i] = None;
        self.log.push(format!("{:?} node-{i} crashed", self.now));
    }

    fn node(&mut self, i: usize) -> &mut Membership {
        self.nodes[i].as_mut().expect("node is running")
    }

    /// Drains everything the node produced and schedules its next timer.
    fn after_input(&mut self, i: usize) {
        let Some(node) = self.nodes[i].as_mut() else {
            return;
        };
        let mut out = Vec::new();
        while let Some(t) = node.poll_transmit() {
            out.push(t);
        }
        let mut evs = Vec::new();
        while let Some(e) = node.poll_event() {
            evs.push(e);
        }
        let next = node.poll_timeout();
        let from = addr_of(i);
        for e in evs {
            self.log.push(format!("{:?} node-{i} {e:?}", self.now));
        }
        for t in out {
            if let Some(&to) = self.addrs.get(&t.to) {
                let within = self.dc_of(to) == self.dc_of(i);
                self.crossed.count(t.kind, within);
            }
            if self.rng.random::<f64>() < self.loss {
                self.dropped_by_loss += 1;
                continue;
            }
            let mut latency = Duration::from_micros(self.rng.random_range(200..2_000));
            if let Some(&to) = self.addrs.get(&t.to) {
                if self.dc_of(i) != self.dc_of(to)
                    && (self.cut_from_other_dc.contains(&i) || self.cut_from_other_dc.contains(&to))
                {
                    self.dropped_by_cut += 1;
                    continue;
                }
                for end in [i, to] {
                    latency += self.slow.get(&end).copied().unwrap_or_default();
                }
                self.push(
                    self.now + latency,
                    Ev::Deliver {
                        to,
                        from,
                        bytes: t.payload,
                    },
                );
            }
        }
        if let Some((at, token)) = next
            && self.scheduled[i] != Some((at, token))
        {
            self.scheduled[i] = Some((at, token));
            self.push(at, Ev::Timer { node: i, token });
        }
    }

    fn run_until(&mut self, until: Instant) {
        while let Some(Reverse((at, seq))) = self.heap.peek().copied() {
            if at > until {
                break;
            }
            self.heap.pop();
            let ev = self
                .events
                .remove(&seq)
                .expect("every heap entry has an event");
            self.now = at;
            match ev {
                Ev::Deliver { to, from, bytes } => {
                    if self.nodes[to].is_none() {
                        continue;
                    }
                    if self.deaf_until.get(&to).is_some_and(|t| self.now < *t) {
                        self.dropped_by_deafness += 1;
                        continue;
                    }
                    if self.capture {
                        self.captured.push((to, from, bytes.clone()));
                    }
                    let now = self.now;
                    self.node(to).handle_datagram(now, from, &bytes);
                    self.after_input(to);
                }
                Ev::Timer { node, token } => {
                    if self.scheduled[node] != Some((at, token)) || self.nodes[node].is_none() {
                        continue;
                    }
                    self.scheduled[node] = None;
                    let now = self.now;
                    self.node(node).handle_timer(now, token);
                    self.after_input(node);
                }
            }
        }
        self.now = until;
    }

    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        self.run_until(until);
    }

    /// Fails, naming `what`, if a member went down or renewed its identity
    /// in the log from line `from` on (a live member paid for a suspicion).
    fn assert_no_down_since(&self, from: usize, what: &str) {
        for line in &self.log[from..] {
            assert!(
                !line.contains("MemberDown") && !line.contains("IdentityRenewed"),
                "{what}: {line}"
            );
        }
    }

    fn join(&mut self, i: usize, via: usize) {
        let now = self.now;
        self.node(i).join(now, &[addr_of(via)]);
        self.after_input(i);
    }

    fn leave(&mut self, i: usize) {
        let now = self.now;
        self.node(i).leave(now);
        self.after_input(i);
    }

    /// Runs until `cond` holds, checking every 100 ms of virtual time.
    fn run_until_cond(&mut self, limit: Duration, mut cond: impl FnMut(&Net) -> bool) -> bool {
        let deadline = self.now + limit;
        while self.now < deadline {
            if cond(self) {
                return true;
            }
            self.run_for(Duration::from_millis(100));
        }
        cond(self)
    }

    fn running(&self) -> impl Iterator<Item = (usize, &Membership)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.as_ref().map(|n| (i, n)))
    }

    /// Every running node sees `expected` members alive (itself included)
    /// with their metadata.
    fn all_see_alive(&self, expected: usize) -> bool {
        self.running().all(|(_, n)| {
            n.members()
                .iter()
                .filter(|m| m.state == MemberState::Alive && m.meta.is_some())
                .count()
                == expected
        })
    }

    fn all_others_see(&self, id: NodeId, state: MemberState) -> bool {
        self.running()
            .filter(|(_, n)| n.identity().id != id)
            .all(|(_, n)| n.member(id).is_some_and(|m| m.state == state))
    }
}

/// Builds a cluster of `n`: each node joins through a random earlier one,
/// every 50 ms.
fn form_cluster(seed: u64, n: usize, loss: f64) -> Net {
    let mut net = Net::new(seed, loss);
    net.add_node(1);
    for i in 1..n {
        net.add_node(1);
        let via = net.rng.random_range(0..i);
        net.join(i, via);
        net.run_for(Duration::from_millis(50));
    }
    net
}

#[test]
fn fifty_nodes_converge_under_loss() {
    let mut net = form_cluster(42, 50, 0.05);
    let ok = net.run_until_cond(Duration::from_secs(60), |net| net.all_see_alive(50));
    assert!(ok, "50 nodes did not converge in 60 s of virtual time");
    assert!(net.dropped_by_loss > 0, "the loss knob never fired");
    // Metadata arrived intact.
    let m = net.nodes[3]
        .as_ref()
        .unwrap()
        .member(NodeId(1000 + 17))
        .unwrap();
    assert_eq!(m.meta.unwrap().name, "node-17");
}

#[test]
fn same_seed_same_event_log() {
    let run = |seed| {
        let mut net = form_cluster(seed, 50, 0.03);
        net.run_for(Duration::from_secs(10));
        net.crash(7);
        net.run_for(Duration::from_secs(10));
        net.log
    };
    let a = run(7);
    let b = run(7);
    assert!(
        a.len() > 1000,
        "a real run logs thousands of events, got {}",
        a.len()
    );
    assert_eq!(a, b, "same seed, different event log");
    let c = run(8);
    assert_ne!(a, c, "a different seed should give a different run");
}

#[test]
fn crash_is_failed_and_leave_is_left() {
    let mut net = form_cluster(3, 20, 0.01);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(20)));

    let crashed = NodeId(1000 + 5);
    net.crash(5);
    let ok = net.run_until_cond(Duration::from_secs(30), |n| {
        n.all_others_see(crashed, MemberState::Failed)
    });
    assert!(ok, "crashed node not seen failed by everyone");

    let leaver = NodeId(1000 + 9);
    net.leave(9);
    let ok = net.run_until_cond(Duration::from_secs(30), |n| {
        n.all_others_see(leaver, MemberState::Left)
    });
    assert!(ok, "departed node not seen left by everyone");
    assert!(
        net.log
            .iter()
            .any(|l| l.contains("MemberDown") && l.contains("Left")),
        "no MemberDown/Left event logged"
    );
    // A node that left stops, as the agent does.
    net.crash(9);

    // The crashed node comes back with a new life and the same id.
    net.start_node(5, 2);
    net.join(5, 0);
    let ok = net.run_until_cond(Duration::from_secs(30), |n| {
        n.all_others_see(crashed, MemberState::Alive)
    });
    assert!(ok, "restarted node not seen alive again");
    let seen = net.nodes[0].as_ref().unwrap().member(crashed).unwrap();
    assert_eq!(seen.identity.bump, 2);
}

#[test]
fn hostile_datagrams_are_dropped_and_counted() {
    let mut net = form_cluster(11, 10, 0.0);
    assert!(net.run_until_cond(Duration::from_secs(20), |n| n.all_see_alive(10)));
    net.capture = true;
    net.run_for(Duration::from_secs(2));
    let captured: Vec<_> = net
        .captured
        .iter()
        .filter(|(to, _, _)| *to == 0)
        .cloned()
        .collect();
    assert!(!captured.is_empty());
    net.capture = false;

    let now = net.now;
    let attacker: SocketAddr = "192.0.2.1:9".parse().unwrap();
    let node = net.node(0);
    // Replays of genuine datagrams.
    for (_, from, bytes) in &captured {
        node.handle_datagram(now, *from, bytes);
    }
    // Garbage of every length, truncations and bit flips of a real datagram.
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    for len in 0..1500 {
        let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        node.handle_datagram(now, attacker, &junk);
    }
    let real = &captured[0].2;
    for cut in 0..real.len() {
        node.handle_datagram(now, attacker, &real[..cut]);
    }
    for i in 0..real.len() {
        let mut bad = real.clone();
        bad[i] ^= 1;
        node.handle_datagram(now, attacker, &bad);
    }
    // A datagram from another cluster.
    let mut other = Membership::new(
        now,
        NodeIdentity::new(NodeId(1), attacker, 1),
        meta_of(999),
        Config::test(),
        PacketSecurity::sealed(&[9u8; 32]),
        1,
    )
    .unwrap();
    other.join(now, &[addr_of(0)]);
    let foreign = other.poll_transmit().unwrap();
    node.handle_datagram(now, attacker, &foreign.payload);

    let stats = node.stats().clone();
    assert_eq!(stats.dropped(DropReason::Replay), captured.len() as u64);
    assert!(stats.dropped(DropReason::Truncated) > 0);
    assert!(stats.dropped(DropReason::Auth) > 0);
    assert!(stats.dropped(DropReason::UnknownKey) > 0);
    assert!(stats.dropped(DropReason::Version) > 0);
    net.after_input(0);
    net.run_for(Duration::from_secs(5));
    assert!(
        net.all_see_alive(10),
        "the cluster lost members after the attack"
    );
}

#[test]
fn metadata_changes_reach_everyone() {
    let mut net = form_cluster(5, 30, 0.02);
    assert!(net.run_until_cond(Duration::from_secs(40), |n| n.all_see_alive(30)));
    let now = net.now;
    let mut meta = meta_of(4);
    meta.labels.insert("gpu".into(), "a100".into());
    meta.free_class = FreeClass(3);
    net.node(4).set_meta(now, meta).unwrap();
    net.after_input(4);
    let target = NodeId(1004);
    let ok = net.run_until_cond(Duration::from_secs(20), |n| {
        n.running().all(|(i, m)| {
            i == 4
                || m.member(target).and_then(|x| x.meta).is_some_and(|meta| {
                    meta.labels.get("gpu").map(String::as_str) == Some("a100")
                        && meta.free_class == FreeClass(3)
                })
        })
    });
    assert!(ok, "metadata change did not reach every node");
    let changed = net
        .log
        .iter()
        .filter(|l| l.contains("MetaChanged") && l.contains(&target.to_string()))
        .count();
    assert!(
        changed >= 29,
        "expected a MetaChanged event per node, got {changed}"
    );
}

#[test]
fn join_retries_until_a_peer_answers() {
    let mut net = Net::new(1, 0.0);
    net.add_node(1);
    net.add_node(1);
    // Node 1 joins through an address where nobody listens yet.
    let nobody = addr_of(2);
    let now = net.now;
    net.node(1).join(now, &[nobody]);
    net.after_input(1);
    net.run_for(Duration::from_secs(3));
    let retries = net.log.iter().filter(|l| l.contains("JoinRetry")).count();
    assert!(retries >= 2, "expected join retries, log: {:?}", net.log);
    // Now someone appears there, already part of node 0's cluster.
    net.add_node(1);
    net.join(2, 0);
    let ok = net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(3));
    assert!(ok, "the retrying node never joined");
}

#[test]
fn a_refuted_suspicion_costs_no_identity() {
    let mut net = form_cluster(5, 8, 0.0);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(8)));
    // Node 3 hears nothing for a while: the probes of it fail and it is
    // suspected, then it hears the suspicion and refutes it before the
    // suspicion timeout (1.5 s in the test preset).
    let deaf = 3;
    let until = net.now + Duration::from_millis(450);
    net.deaf_until.insert(deaf, until);
    let before = net.log.len();
    net.run_for(Duration::from_secs(10));
    assert!(net.dropped_by_deafness > 0, "the deafness knob never fired");
    let suspected: u64 = net.running().map(|(_, m)| m.stats().probe_failures).sum();
    assert!(
        suspected > 0,
        "nobody suspected node 3: nothing was exercised"
    );
    // The probers' suspicion timers ran out after the refutation: they
    // declare nothing and tell node 3 nothing (foca alone would send it
    // "you are down", and node 3 would give up its identity).
    let suppressed: u64 = net
        .running()
        .map(|(_, m)| m.stats().turn_undead_suppressed)
        .sum();
    assert!(
        suppressed > 0,
        "no suspicion timer ran out after a refutation"
    );
    net.assert_no_down_since(before, "a refuted suspicion had consequences");
    let seen = net.nodes[0].as_ref().unwrap().member(NodeId(1003)).unwrap();
    assert_eq!(seen.identity.bump, 1);
    assert_eq!(seen.state, MemberState::Alive);
}

#[test]
fn a_missed_leave_notice_is_repaired() {
    let mut net = form_cluster(21, 10, 0.0);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(10)));
    // Node 2 hears nothing for a moment while node 6 says goodbye: the leave
    // notice and the down update die out before it listens again.
    let deaf = 2;
    let leaver = NodeId(1006);
    let until = net.now + Duration::from_millis(1200);
    net.deaf_until.insert(deaf, until);
    net.leave(6);
    net.run_for(Duration::from_millis(100));
    net.crash(6);
    let ok = net.run_until_cond(Duration::from_secs(30), |n| {
        n.all_others_see(leaver, MemberState::Left)
    });
    assert!(net.dropped_by_deafness > 0, "the deafness knob never fired");
    let missed = net
        .log
        .iter()
        .any(|l| l.contains("node-2 MemberDown") && l.contains("Failed"));
    assert!(
        missed,
        "node 2 did not miss the leave notice: the repair path was not exercised"
    );
    assert!(ok, "node 2 never learned that node 6 left");
}

#[test]
fn a_join_storm_converges_quickly() {
    // 150 nodes, one every 20 ms, each through a random earlier one. SWIM's
    // feed alone tells a newcomer only what fits in a datagram; the member
    // list copy after joining tells it everyone.
    let seed = std::env::var("STORM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(77);
    let mut net = Net::new(seed, 0.01);
    net.add_node(1);
    for i in 1..150 {
        net.add_node(1);
        let via = net.rng.random_range(0..i);
        net.join(i, via);
        net.run_for(Duration::from_millis(20));
    }
    let ok = net.run_until_cond(Duration::from_secs(20), |n| n.all_see_alive(150));
    if !ok {
        for (i, n) in net.running() {
            let ms = n.members();
            let alive = ms.iter().filter(|m| m.state == MemberState::Alive).count();
            let meta = ms.iter().filter(|m| m.meta.is_some()).count();
            if alive != 150 || meta != 150 {
                let known: Vec<u64> = ms.iter().map(|m| m.identity.id.0 - 1000).collect();
                let missing: Vec<u64> = (0..150).filter(|x| !known.contains(x)).collect();
                let nometa: Vec<u64> = ms
                    .iter()
                    .filter(|m| m.meta.is_none())
                    .map(|m| m.identity.id.0 - 1000)
                    .collect();
                eprintln!(
                    "node {i}: {} members, {alive} alive, {meta} with metadata; missing {missing:?}, no meta {nometa:?}",
                    ms.len()
                );
            }
        }
    }
    assert!(ok, "150 nodes did not all know each other within 20 s");
}

#[test]
fn two_clusters_merge_through_one_join() {
    // Two clusters of 40 formed apart; then one node of the second joins a
    // node of the first. The join's news and the joiner's member-list copy
    // reach only part of each side. SWIM's periodic announce (a datagram of
    // members from a random member) is turned off here so that only the
    // range digests, which compare member lists piece by piece, can finish
    // the merge (`MERGE_DIGEST_MS=100000000` shows it fails without them).
    let digest_period = std::env::var("MERGE_DIGEST_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Config::test().member_digest_period, Duration::from_millis);
    let mut net = Net::new(5, 0.0);
    net.config.member_digest_period = digest_period;
    net.config.announce_period = Duration::from_secs(3600);
    net.add_node(1);
    for i in 1..80 {
        net.add_node(1);
        let first = if i < 40 { 0 } else { 40 };
        if i != 40 {
            let via = net.rng.random_range(first..i);
            net.join(i, via);
        }
        net.run_for(Duration::from_millis(50));
    }
    let apart = net.run_until_cond(Duration::from_secs(20), |n| {
        n.running().all(|(_, m)| {
            m.members()
                .iter()
                .filter(|m| m.state == MemberState::Alive)
                .count()
                == 40
        })
    });
    assert!(apart, "the two clusters of 40 did not form");
    net.join(40, 0);
    let t0 = net.now;
    let ok = net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(80));
    eprintln!(
        "merged: {ok} after {:?}",
        net.now.saturating_duration_since(t0)
    );
    let short: Vec<(usize, usize)> = net
        .running()
        .map(|(i, m)| {
            (
                i,
                m.members()
                    .iter()
                    .filter(|m| m.state == MemberState::Alive)
                    .count(),
            )
        })
        .filter(|(_, alive)| *alive != 80)
        .collect();
    assert!(
        ok,
        "not merged after 30 s; (node, members alive) short of 80: {short:?}"
    );
}

#[test]
fn a_differing_state_digest_is_reported_and_rate_limited() {
    let mut net = form_cluster(11, 10, 0.0);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(10)));
    for i in 0..10 {
        net.node(i).set_app_digest(7);
    }
    // Let datagrams built before the change drain.
    net.run_for(Duration::from_secs(2));
    net.log.clear();
    net.run_for(Duration::from_secs(10));
    assert!(
        !net.log.iter().any(|l| l.contains("DigestDiffers")),
        "equal digests reported as differing"
    );

    net.node(3).set_app_digest(8);
    let target = format!("id: {}", NodeId(1003));
    let mut observers = BTreeSet::new();
    let ok = net.run_until_cond(Duration::from_secs(5), |n| {
        n.log
            .iter()
            .filter(|l| l.contains("DigestDiffers") && l.contains(&target))
            .count()
            > 0
    });
    assert!(ok, "no node noticed node 3's different digest");
    net.run_for(Duration::from_secs(10));
    // Node 3 sees everyone else differ; each report at most once per
    // `digest_retry` (2 s) per member.
    let mut per_pair: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in net.log.iter().filter(|l| l.contains("DigestDiffers")) {
        let observer = l.split_whitespace().nth(1).unwrap().to_owned();
        let member = l.split("id: ").nth(1).unwrap().split(',').next().unwrap();
        if member == NodeId(1003).to_string() {
            observers.insert(observer.clone());
        }
        *per_pair.entry((observer, member.to_owned())).or_default() += 1;
    }
    assert!(observers.len() >= 3, "only {observers:?} noticed node 3");
    assert!(
        per_pair.keys().any(|(o, _)| o == "node-3"),
        "node 3 did not notice the others differ"
    );
    let most = per_pair.values().max().copied().unwrap_or(0);
    assert!(most <= 8, "a member was reported {most} times in ~15 s");

    // Zero means "no digest": never compared.
    net.node(3).set_app_digest(0);
    net.run_for(Duration::from_secs(2));
    net.log.clear();
    net.run_for(Duration::from_secs(5));
    assert!(
        !net.log.iter().any(|l| l.contains("DigestDiffers")),
        "a zero digest was compared"
    );
}

#[test]
fn restored_nodes_know_each_other_at_once_and_still_detect_a_crash() {
    let n = 30;
    let mut net = Net::new(11, 0.0);
    for _ in 0..n {
        net.add_node(1);
    }
    // Every node is handed the whole list and every member's record, each
    // at version 1 (the version a new membership publishes).
    let all: Vec<(NodeIdentity, Option<shoal_gossip::MetaUpdate>)> = (0..n)
        .map(|i| {
            let id = NodeId(1000 + i as u64);
            let identity = NodeIdentity::new(id, addr_of(i), 1);
            let update = shoal_gossip::MetaUpdate {
                id,
                bump: 1,
                version: 1,
                meta: meta_of(i).into(),
            };
            (identity, Some(update))
        })
        .collect();
    let now = net.now;
    for i in 0..n {
        net.node(i).restore(now, &all);
        net.after_input(i);
    }
    // Known at once, records included; nothing to spread and no join.
    assert!(net.all_see_alive(n));
    for (_, m) in net.running() {
        assert_eq!(m.piggyback_backlog(), 1, "only its own record");
    }
    // Restoring is copying, not news: no node has membership news to
    // gossip, no join is announced, no member list is copied.
    net.run_for(Duration::from_secs(5));
    assert!(net.all_see_alive(n));
    for (i, m) in net.running() {
        for kind in [SendKind::Gossip, SendKind::Hello, SendKind::MembersPage] {
            assert_eq!(m.stats().sent(kind).0, 0, "node-{i} sent {kind:?}");
        }
        assert!(
            m.stats().sent(SendKind::Ping).0 > 0,
            "node-{i} never probed"
        );
    }
    // And the real protocol still runs: a crash is found.
    net.crash(4);
    let found = net.run_until_cond(Duration::from_secs(60), |net| {
        net.all_others_see(NodeId(1004), MemberState::Failed)
    });
    assert!(found, "a crash among restored nodes went unnoticed");
}

/// The member-list range digest of each period rides on a probe: at idle
/// it sends no datagram of its own (it used to be a third of the
/// datagrams a node sends beyond its probes and their answers).
#[test]
fn range_digests_ride_on_probes_at_idle() {
    let mut net = form_cluster(23, 10, 0.0);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(10)));
    let before: Vec<(u64, u64)> = net
        .running()
        .map(|(_, m)| {
            let s = m.stats();
            (s.sent(SendKind::MemberDigest).0, s.sent(SendKind::Ping).0)
        })
        .collect();
    net.run_for(Duration::from_secs(20));
    for ((i, m), (digests, pings)) in net.running().zip(before) {
        let s = m.stats();
        assert_eq!(
            s.sent(SendKind::MemberDigest).0,
            digests,
            "node-{i} sent range digests in datagrams of their own"
        );
        assert!(s.sent(SendKind::Ping).0 > pings, "node-{i} never probed");
    }
}

#[test]
fn a_forgotten_node_is_dropped_and_cannot_rejoin() {
    let mut net = form_cluster(21, 10, 0.01);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(10)));
    let gone = NodeId(1000 + 4);
    let not_alive = |n: &Net| {
        n.running()
            .filter(|(_, m)| m.identity().id != gone)
            .all(|(_, m)| m.member(gone).is_none_or(|x| x.state != MemberState::Alive))
    };
    // The forget reaches half the members first (the replicated state
    // spreads it), the rest a second later; node 4 itself keeps running.
    let tell = |net: &mut Net, i: usize| {
        let now = net.now;
        net.node(i).set_forgotten(now, [gone].into_iter().collect());
        net.after_input(i);
    };
    for i in [0, 1, 2, 3, 5] {
        tell(&mut net, i);
    }
    net.run_for(Duration::from_secs(1));
    for i in [6, 7, 8, 9, 4] {
        tell(&mut net, i);
    }
    assert!(
        net.run_until_cond(Duration::from_secs(30), not_alive),
        "a forgotten node is still seen alive"
    );
    // It stays out while it runs, and when it comes back with a new life.
    net.run_for(Duration::from_secs(20));
    assert!(not_alive(&net), "a running forgotten node came back");
    net.crash(4);
    net.start_node(4, 2);
    net.join(4, 0);
    net.run_for(Duration::from_secs(30));
    assert!(not_alive(&net), "a forgotten node rejoined with a new life");
    let dropped: u64 = net
        .running()
        .filter(|(i, _)| *i != 4)
        .map(|(_, m)| m.stats().dropped(shoal_gossip::DropReason::Forgotten))
        .sum();
    assert!(dropped > 0, "no datagram of the forgotten node was dropped");
    // The others are all still up with each other.
    let others_alive = net.running().filter(|(i, _)| *i != 4).all(|(_, m)| {
        m.members()
            .iter()
            .filter(|x| x.state == MemberState::Alive && x.identity.id != gone)
            .count()
            == 9
    });
    assert!(
        others_alive,
        "forgetting one member cost others their place"
    );
}

#[test]
fn a_note_reaches_only_its_member_and_says_who_sent_it() {
    let mut net = form_cluster(21, 5, 0.0);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| n.all_see_alive(5)));
    net.run_for(Duration::from_secs(2));
    net.log.clear();
    let sent_before = net.node(1).stats().sent(SendKind::Note).0;
    net.node(1).send_note(NodeId(1003), b"usage 42").unwrap();
    net.after_input(1);
    let ok = net.run_until_cond(Duration::from_secs(2), |n| {
        n.log.iter().any(|l| l.contains("Note"))
    });
    assert!(ok, "the note never arrived");
    net.run_for(Duration::from_secs(1));
    let notes: Vec<&String> = net.log.iter().filter(|l| l.contains("Note")).collect();
    assert_eq!(notes.len(), 1, "one note, to one member: {notes:?}");
    let expected = format!(
        "node-3 Note {{ from: {}, note: {:?} }}",
        NodeId(1001),
        b"usage 42".to_vec()
    );
    assert!(notes[0].ends_with(&expected), "{} != …{expected}", notes[0]);
    assert_eq!(net.node(1).stats().sent(SendKind::Note).0, sent_before + 1);

    // Nobody to send to: neither an unknown member nor this node itself.
    assert_eq!(
        net.node(1).send_note(NodeId(99), b"x"),
        Err(NoteError::NotUp(NodeId(99)))
    );
    assert_eq!(
        net.node(1).send_note(NodeId(1001), b"x"),
        Err(NoteError::NotUp(NodeId(1001)))
    );
    // A crashed member, once down here.
    net.crash(4);
    assert!(net.run_until_cond(Duration::from_secs(30), |n| {
        n.all_others_see(NodeId(1004), MemberState::Failed)
    }));
    assert_eq!(
        net.node(1).send_note(NodeId(1004), b"x"),
        Err(NoteError::NotUp(NodeId(1004)))
    );
    // Too large for one datagram.
    let max = net.node(1).max_note_bytes();
    assert!(max >= 1000, "a note of {max} bytes at most");
    assert_eq!(
        net.node(1).send_note(NodeId(1003), &vec![0u8; max + 1]),
        Err(NoteError::TooLarge { size: max + 1, max })
    );
    // The largest that is taken fits a datagram and arrives.
    net.log.clear();
    net.node(1)
        .send_note(NodeId(1003), &vec![1u8; max])
        .unwrap();
    net.after_input(1);
    assert!(net.run_until_cond(Duration::from_secs(2), |n| {
        n.log.iter().any(|l| l.contains("node-3 Note"))
    }));
}

/// 20 nodes running `config`, joined one after the other through a random
/// earlier one, all seeing each other alive.
fn twenty_formed(seed: u64, config: Config) -> Net {
    twenty_formed_split(seed, config, 2)
}

/// Twenty members, one in `west_every` in west.
fn twenty_formed_split(seed: u64, config: Config, west_every: usize) -> Net {
    twenty_formed_with(seed, config, move |i| {
        if i % west_every == 1 { "west" } else { "east" }
    })
}

/// Twenty members, node `i` in datacenter `dc_of(i)`.
fn twenty_formed_with(
    seed: u64,
    config: Config,
    dc_of: impl Fn(usize) -> &'static str + 'static,
) -> Net {
    let mut net = Net::new(seed, 0.0);
    net.config = config;
    net.dc_of = Box::new(dc_of);
    net.add_node(1);
    for i in 1..20 {
        net.add_node(1);
        let via = net.rng.random_range(0..i);
        net.join(i, via);
        net.run_for(Duration::from_millis(50));
    }
    assert!(net.run_until_cond(Duration::from_secs(60), |n| n.all_see_alive(20)));
    net
}

/// Seconds from crashing one node of 20 until every other node holds it
/// failed, with `config`; and the down timers confirmations shortened.
fn detection_with(config: Config, seed: u64) -> (f64, u64) {
    let mut net = twenty_formed(seed, config);
    net.run_for(Duration::from_secs(5));
    let start = net.now;
    net.crash(7);
    let ok = net.run_until_cond(Duration::from_secs(60), |n| {
        n.all_others_see(NodeId(1007), MemberState::Failed)
    });
    assert!(ok, "the crash was never detected");
    let took = net.now.saturating_duration_since(start).as_secs_f64();
    let shortened = net
        .running()
        .map(|(_, m)| m.stats().suspicions_shortened)
        .sum();
    (took, shortened)
}

#[test]
fn confirmations_from_other_probers_declare_a_crash_sooner() {
    // The same crashes, with Lifeguard's confirmations and without: every
    // member that probes the dead one afterwards confirms the suspicion,
    // and the accusers' down timers move from the full timeout (4.5 s at
    // this size) toward the confirmed one (1.5 s).
    let off = Config {
        suspicion_confirmations: 0,
        ..Config::lan()
    };
    let (mut with, mut without, mut shortened) = (0.0, 0.0, 0);
    for seed in 1..=3 {
        let (t, s) = detection_with(Config::lan(), seed);
        with += t;
        shortened += s;
        let (t, s) = detection_with(off.clone(), seed);
        without += t;
        assert_eq!(s, 0, "nothing is shortened with confirmations off");
    }
    eprintln!("detection of 3 crashes: {with:.2} s with confirmations, {without:.2} s without");
    assert!(shortened > 0, "no down timer was ever shortened");
    assert!(
        with + 3.0 < without,
        "three crashes took {with:.1} s to detect with confirmations, {without:.1} s without"
    );
}

#[test]
fn a_member_deaf_for_a_moment_is_not_declared_failed_by_confirmations() {
    // Node 3 hears nothing for 1.5 s: probes of it by several members fail
    // and confirm one another, yet it hears the suspicion and refutes
    // before the shortened timeout.
    let mut net = twenty_formed(9, Config::lan());
    let before = net.log.len();
    let until = net.now + Duration::from_millis(1500);
    net.deaf_until.insert(3, until);
    net.run_for(Duration::from_secs(20));
    let failures: u64 = net.running().map(|(_, m)| m.stats().probe_failures).sum();
    assert!(
        failures > 0,
        "nobody suspected node 3: nothing was exercised"
    );
    net.assert_no_down_since(before, "a member deaf for 1.5 s was declared failed");
}

/// False suspicions raised by a node whose traffic is 300 ms late, in
/// 60 s among 20 members, with `max_local_health`; and the health it
/// reached.
fn accusations_of_a_slow_node(max_local_health: u8) -> (u64, u8) {
    // Confirmations off: a member whose round trip exceeds the probe
    // period is confirmed by its helpers and declared failed unless its
    // refutation beats the confirmed timeout (docs/gossip.md); this is
    // about the accusations it raises itself.
    let config = Config {
        max_local_health,
        suspicion_confirmations: 0,
        ..Config::lan()
    };
    let mut net = twenty_formed(4, config);
    let slow = 4;
    let before = net.nodes[slow].as_ref().unwrap().stats().probe_failures;
    let log_from = net.log.len();
    net.slow.insert(slow, Duration::from_millis(550));
    net.run_for(Duration::from_secs(60));
    net.assert_no_down_since(
        log_from,
        "a slow node's accusations took a live member down",
    );
    let stats = net.nodes[slow].as_ref().unwrap().stats();
    (stats.probe_failures - before, stats.local_health_max)
}

#[test]
fn a_slow_node_stretches_its_probes_instead_of_accusing_everyone() {
    // Every probe of a node whose datagrams arrive 300 ms late times out
    // (probe rtt 400 ms): it accuses a healthy member each period. Its
    // accusations are refuted, and it is accused itself; with Lifeguard's
    // local health it stretches its probe period and rtt until answers
    // come in time, and accuses far less.
    let (without, _) = accusations_of_a_slow_node(0);
    let (with, health) = accusations_of_a_slow_node(8);
    eprintln!(
        "false accusations in 60 s: {without} without local health, {with} with (score up to {health})"
    );
    assert!(
        health >= 2,
        "the slow node's health score stayed at {health}"
    );
    assert!(
        with * 3 <= without,
        "a slow node raised {with} false accusations with local health, {without} without"
    );
}

/// Datagrams within and across the two datacenters while one member of 20
/// crashes and another joins.
#[derive(Clone, Copy, Default)]
struct Crossing {
    gossip: (u64, u64),
    pings: (u64, u64),
}

impl Crossing {
    fn count(&mut self, kind: SendKind, within: bool) {
        let (w, a) = match kind {
            SendKind::Gossip => &mut self.gossip,
            SendKind::Ping => &mut self.pings,
            _ => return,
        };
        *if within { w } else { a } += 1;
    }

    /// `self + sign × other`, pair by pair.
    fn plus(self, other: Crossing, sign: i64) -> Crossing {
        let add = |a: (u64, u64), b: (u64, u64)| {
            (
                a.0.wrapping_add_signed(sign * b.0 as i64),
                a.1.wrapping_add_signed(sign * b.1 as i64),
            )
        };
        Crossing {
            gossip: add(self.gossip, other.gossip),
            pings: add(self.pings, other.pings),
        }
    }
}

/// The share of `(within, across)` that crosses.
fn share((within, across): (u64, u64)) -> f64 {
    across as f64 / (within + across).max(1) as f64
}

/// Crashes node `crash` of 20 formed with `config` (one node in
/// `west_every` in west) and joins a newcomer; fails unless every member
/// learns both and takes every SWIM payload it gets. What crossed
/// meanwhile, and the probes taken back.
fn locality_run(config: Config, west_every: usize, crash: usize, seed: u64) -> (Crossing, u64) {
    let mut net = twenty_formed_split(seed, config, west_every);
    // Past a housekeeping pass: the lists of each datacenter's members.
    net.run_for(Duration::from_secs(6));
    let before = net.crossed;
    net.crash(crash);
    let newcomer = net.add_node(1);
    net.join(newcomer, 2);
    let ok = net.run_until_cond(Duration::from_secs(60), |n| {
        n.all_others_see(NodeId(1000 + crash as u64), MemberState::Failed)
            && n.running()
                .all(|(_, m)| m.member(NodeId(1000 + newcomer as u64)).is_some())
    });
    assert!(ok, "news did not reach every member");
    // Readdressed gossip is taken: foca would ignore, saying nothing, a
    // payload addressed to anyone else (the core counts it).
    let mut probes_kept = 0;
    for (i, m) in net.running() {
        assert_eq!(
            m.stats().dropped(DropReason::Swim),
            0,
            "node-{i} dropped SWIM payloads ({} readdressed)",
            m.stats().gossip_kept_in_dc
        );
        probes_kept += m.stats().probes_kept_in_dc;
    }
    (net.crossed.plus(before, -1), probes_kept)
}

fn budgets(gossip: f64, probes: f64) -> Config {
    Config {
        cross_dc_gossip: gossip,
        cross_dc_probes: probes,
        ..Config::lan()
    }
}

#[test]
fn gossip_and_probes_stay_in_their_datacenter_and_news_still_crosses() {
    // foca picks gossip targets and probes among all members: about half
    // cross between two datacenters of equal size. With cross_dc_gossip
    // 0.1, nine in ten of the gossip datagrams addressed across go to a
    // member of the sender's datacenter instead (5-7% cross); with
    // cross_dc_probes 0.1, nine in ten probes of the other datacenter's
    // members are taken back and the next member probed instead (about
    // 10% cross). A crash and a join still reach everyone.
    let (mut uniform, mut local) = (Crossing::default(), Crossing::default());
    for seed in 1..=3 {
        uniform = uniform.plus(locality_run(budgets(1.0, 1.0), 2, 7, seed).0, 1);
        local = local.plus(locality_run(budgets(0.1, 0.1), 2, 7, seed).0, 1);
    }
    let total = |(within, across): (u64, u64)| within + across;
    eprintln!(
        "across datacenters, foca's choice -> budgets of 0.1: gossip {:.0}% of {} -> {:.0}% of {}, pings {:.0}% of {} -> {:.0}% of {}",
        share(uniform.gossip) * 100.0,
        total(uniform.gossip),
        share(local.gossip) * 100.0,
        total(local.gossip),
        share(uniform.pings) * 100.0,
        total(uniform.pings),
        share(local.pings) * 100.0,
        total(local.pings),
    );
    // (Each node probes once per second, for a few seconds in each run.)
    for (what, foca, kept, enough, most) in [
        ("gossip", uniform.gossip, local.gossip, 100, 0.12),
        ("pings", uniform.pings, local.pings, 150, 0.2),
    ] {
        assert!(total(foca) > enough, "too few {what} to tell: {foca:?}");
        assert!(share(foca) > 0.35, "{what}, foca's choice: {foca:?}");
        assert!(share(kept) < most, "{what}, with the budget: {kept:?}");
    }
    // The probes moved, not lost: about as many pings per second.
    assert!(total(local.pings) * 10 > total(uniform.pings) * 7);
}

#[test]
fn a_small_datacenter_is_still_probed_from_the_large_one() {
    // Two members of 20 in west (nodes 1 and 11): too few to watch each
    // other, so the 18 in east keep every probe of them; west's two leave
    // east's members to east. The crash of a west member still reaches all.
    let mut kept = 0;
    for seed in 1..=3 {
        let (crossed, probes_kept) = locality_run(budgets(0.1, 0.1), 10, 11, seed);
        // 18 of east's probers keep theirs: about 2/19 of east's pings
        // cross; west's few probes of east are mostly taken back.
        assert!(
            share(crossed.pings) > 0.05,
            "east stopped probing west: {:?}",
            crossed.pings
        );
        kept += probes_kept;
    }
    assert!(kept > 0, "west never left a probe of east to east");
}

#[test]
fn indirect_probes_go_through_members_near_the_target() {
    // Nodes 1, 3 and 5 are a third datacenter, "edge", and node 1 is cut
    // off from every member outside it. The others' probes of node 1 fail
    // directly and go indirect: foca asks 5 helpers drawn anywhere, most
    // of them outside edge (they cannot reach node 1). The core sends
    // every ask but the first to a member of edge instead, which reaches
    // node 1, and hands foca the answer as from the helper foca chose: so
    // the probes of node 1 seldom fail. Without the move, or with the
    // answers not handed back as from foca's helpers (foca would take
    // none), most of them would. Probes are left where foca sends them
    // (0.99) so that everyone probes node 1 often.
    let (mut failed, mut rounds, mut moved) = (0, 0, 0);
    for seed in 1..=2 {
        let mut net = twenty_formed_with(seed, budgets(0.1, 0.99), |i| {
            if [1, 3, 5].contains(&i) {
                "edge"
            } else if i % 2 == 1 {
                "west"
            } else {
                "east"
            }
        });
        net.run_for(Duration::from_secs(6));
        let outside: Vec<usize> = (0..20).filter(|i| ![1, 3, 5].contains(i)).collect();
        let stats_of = |net: &mut Net| {
            outside
                .iter()
                .map(|&i| net.node(i).stats().clone())
                .collect::<Vec<_>>()
        };
        let before = stats_of(&mut net);
        net.cut_from_other_dc.insert(1);
        net.run_for(Duration::from_secs(60));
        assert!(net.dropped_by_cut > 0);
        for (b, a) in before.iter().zip(stats_of(&mut net)) {
            assert_eq!(a.dropped(DropReason::Swim), 0);
            // Only node 1 is out of reach: every failure is of node 1.
            failed += a.probe_failures - b.probe_failures;
            let asks = SendKind::PingReq.index();
            rounds += (a.sent_by_kind[asks] - b.sent_by_kind[asks])
                / Config::lan().indirect_probes as u64;
            moved += a.indirect_probes_moved - b.indirect_probes_moved;
        }
        assert!(
            net.all_others_see(NodeId(1001), MemberState::Alive),
            "node-1 is not held alive by everyone"
        );
    }
    eprintln!("{failed} of {rounds} indirect probes of node-1 failed; {moved} asks moved to edge");
    assert!(rounds > 30, "too few indirect probes to tell");
    assert!(
        failed * 10 < rounds,
        "{failed} of {rounds} indirect probes failed"
    );
}

/// Whether every running node reaches its own datacenter and, as
/// `other_reached` says, the other one (datacenters named as
/// `twenty_formed_split(_, _, 2)` names them).
fn all_see_reach(net: &Net, other_reached: bool) -> bool {
    net.running().all(|(i, m)| {
        let own = if i % 2 == 1 { "west" } else { "east" };
        let v = m.datacenters(net.now);
        v.len() == 2
            && v.iter()
                .all(|r| r.unreachable_for.is_none() == (r.dc == own || other_reached))
    })
}

#[test]
fn a_datacenter_cut_off_is_one_fact_on_each_side() {
    // East and west, ten members each, cut apart for 60 s: every member
    // sees the other datacenter unreachable from here, and its own
    // reached, once; after the heal, both reached again. (Member states
    // go their SWIM way meanwhile: the other side is declared failed.)
    for seed in 1..=2 {
        let mut net = twenty_formed_split(seed, Config::lan(), 2);
        net.run_for(Duration::from_secs(6));
        assert!(all_see_reach(&net, true), "before the cut");
        let from = net.log.len();
        net.cut_from_other_dc.extend((0..20).filter(|i| i % 2 == 1));
        let cut_at = net.now;
        assert!(
            net.run_until_cond(Duration::from_secs(60), |n| all_see_reach(n, false)),
            "seed {seed}: not every member saw the other datacenter unreachable"
        );
        let took = net.now.saturating_duration_since(cut_at);
        net.run_until(cut_at + Duration::from_secs(60));
        assert!(all_see_reach(&net, false), "seed {seed}: during the cut");
        let told =
            |net: &Net, what: &str| net.log[from..].iter().filter(|l| l.contains(what)).count();
        assert_eq!(told(&net, "DatacenterUnreachable"), 20, "once per member");
        assert_eq!(told(&net, "DatacenterReachable"), 0);
        net.cut_from_other_dc.clear();
        let healed_at = net.now;
        assert!(
            net.run_until_cond(Duration::from_secs(90), |n| all_see_reach(n, true)),
            "seed {seed}: not reached again after the heal"
        );
        let back = net.now.saturating_duration_since(healed_at);
        assert_eq!(
            told(&net, "DatacenterReachable"),
            20,
            "seed {seed}: once per member"
        );
        eprintln!("seed {seed}: all 20 saw the cut within {took:?}, the heal within {back:?}");
    }
}

#[test]
fn a_large_datacenter_cut_off_is_one_fact_and_no_member_goes_down() {
    // The same cut with each datacenter of ten counted as large
    // (`reach_only_dc_size`, 64 by default): a probe from here of a member
    // of the other one only checks that it is reached. The cut is then
    // the one fact on each side, and no member is suspected or declared
    // failed, on either side; after the heal nobody renews its identity.
    // With `reach_only_dc_size = 0` every member of the other side goes
    // down during the cut (the test above).
    let config = Config {
        reach_only_dc_size: 5,
        ..Config::lan()
    };
    let mut net = twenty_formed_split(1, config, 2);
    net.run_for(Duration::from_secs(6));
    assert!(all_see_reach(&net, true), "before the cut");
    let from = net.log.len();
    net.cut_from_other_dc.extend((0..20).filter(|i| i % 2 == 1));
    let cut_at = net.now;
    // Only this node's own probes across say it: one failed, the next
    // probe goes to that datacenter; silent for 20 s, too.
    assert!(
        net.run_until_cond(Duration::from_secs(60), |n| all_see_reach(n, false)),
        "not every member saw the other datacenter unreachable"
    );
    let took = net.now.saturating_duration_since(cut_at);
    net.cut_from_other_dc.clear();
    let healed_at = net.now;
    assert!(
        net.run_until_cond(Duration::from_secs(90), |n| all_see_reach(n, true)),
        "not reached again after the heal"
    );
    let back = net.now.saturating_duration_since(healed_at);
    net.run_for(Duration::from_secs(10));
    let told = |what: &str| net.log[from..].iter().filter(|l| l.contains(what)).count();
    assert_eq!(told("DatacenterUnreachable"), 20, "once per member");
    assert_eq!(told("DatacenterReachable"), 20, "once per member");
    for what in [
        "MemberDown",
        "IdentityRenewed",
        "MemberRenewed",
        "suspect: true",
    ] {
        assert_eq!(told(what), 0, "{what} during or after the cut");
    }
    let failed: u64 = net
        .running()
        .map(|(_, m)| m.stats().reach_probes_failed)
        .sum();
    assert!(failed >= 40, "{failed} probes across failed");
    eprintln!(
        "all 20 saw the cut within {took:?}, the heal within {back:?}; {failed} probes failed"
    );
}

#[test]
fn a_member_that_alone_cannot_reach_a_datacenter_counts_its_members_unreachable() {
    // Node 0 of east (6 members) cannot reach west (14); everyone else
    // reaches everyone. Its probes of west members fail and it suspects
    // them, they refute through east, and SWIM holds them up: node 0 would
    // count them reachable. The one fact says otherwise: west is
    // unreachable from node 0, and its members up count as such (the node
    // core then finds node 0 cut off, 6 of 20, and it places nothing).
    let mut net = twenty_formed_with(1, Config::lan(), |i| if i < 6 { "east" } else { "west" });
    net.run_for(Duration::from_secs(6));
    assert_eq!(net.node(0).unreachable_members(), 0, "before the cut");
    net.cut_from_other_dc.insert(0);
    let seen = net.run_until_cond(Duration::from_secs(120), |n| {
        n.nodes[0]
            .as_ref()
            .is_some_and(|m| m.unreachable_members() >= 10)
    });
    let now = net.now;
    let west = net.node(0).datacenters(now);
    assert!(seen, "node 0 never counted west's members: {west:?}");
    assert!(
        net.all_others_see(NodeId(1000), MemberState::Alive),
        "the others hold node 0 alive"
    );
    net.cut_from_other_dc.clear();
    assert!(
        net.run_until_cond(Duration::from_secs(60), |n| n.nodes[0]
            .as_ref()
            .is_some_and(|m| m.unreachable_members() == 0)),
        "node 0 still counts west unreachable after the heal"
    );
}
