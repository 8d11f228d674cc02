//! Building the world and its nodes: formation by joins or warm, a node's
//! start (a new [`NodeCore`] for each life) and crash.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_core::{NodeCore, Wiring};
use shoal_gossip::{
    FreeClass, Instant, Membership, MetaUpdate, NodeId, NodeIdentity, PacketSecurity,
};
use shoal_placement::{Job, PlacementConfig, Placer, Resources};

use super::{Crash, EndState, Ev, Node, SECRET, Traffic, World, addr_of, secs};
use crate::SimError;
use crate::net::{Network, Topology};
use crate::params::{Params, Scenario};
use crate::queue::EventQueue;
use crate::share::{InfoPool, MetaPool, RingPool};
use crate::workload;

impl World {
    /// Builds the world of `params` (nothing runs yet).
    pub fn new(params: Params) -> Result<World, SimError> {
        let mut gossip = params.gossip_config()?;
        // Replay windows guard against an attacker the simulator does not
        // model; the config allows turning them off to save memory.
        gossip.replay_protection = false;
        gossip
            .validate()
            .map_err(|e| SimError::Params(e.to_string()))?;
        if params.nodes < 2 {
            return Err(SimError::Params("at least 2 nodes".into()));
        }
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let topo = Topology::new(params.nodes, params.dcs, params.zones);
        let net_rng = ChaCha8Rng::seed_from_u64(rng.random::<u64>());
        let net = Network::new(topo, params.latency, net_rng);
        let mut nodes = Vec::with_capacity(params.nodes);
        for i in 0..params.nodes {
            let cap = workload::node_capacity(&mut rng);
            let dc = net.topology().dc(i);
            let zone = net.topology().zone(i);
            let meta = workload::node_meta(i, cap, dc, zone, addr_of(i));
            nodes.push(Node {
                id: NodeId(i as u64 + 1),
                cap,
                meta,
                up: false,
                life: 0,
                life_started: Instant::ZERO,
                bump: 0,
                core: None,
                view: 0,
                procs: BTreeMap::new(),
                used: Resources::default(),
                delivered: BTreeMap::new(),
            });
        }
        let mut w = World {
            p: params,
            q: EventQueue::default(),
            net,
            rng,
            gossip,
            placement: PlacementConfig::default(),
            nodes,
            started: 0,
            jobs: Vec::new(),
            submitted_jobs: 0,
            batches: Vec::new(),
            tasks: Vec::new(),
            crashes: Vec::new(),
            open_crash: BTreeMap::new(),
            false_positives: BTreeSet::new(),
            partition_downs: 0,
            reach: Default::default(),
            dup_watch: BTreeSet::new(),
            duplicate_max: Duration::ZERO,
            views: BTreeMap::new(),
            agreed_since: None,
            last_heal: Instant::ZERO,
            overcommits: 0,
            two_winners: 0,
            first_violation: None,
            flaps: None,
            deployment_steps: 0,
            rollout: None,
            placement_ms: Vec::new(),
            replace_ms: Vec::new(),
            first_submit: None,
            last_first_run: None,
            traffic: Traffic::default(),
            second: Traffic::default(),
            node_seconds: 0.0,
            began: None,
            formed: None,
            ended: false,
            finished: false,
            events: 0,
            end_at: None,
            planned_crashes: 0,
            planned_restarts: 0,
            restarts: 0,
            partitions: 0,
            heals: 0,
            slow_nodes: 0,
            series: Vec::new(),
            final_checks: Vec::new(),
            end_state: EndState::default(),
            meta_pool: Arc::new(MetaPool::default()),
            info_pool: Arc::new(InfoPool::default()),
            ring_pool: Arc::new(RingPool::default()),
        };
        w.schedule_formation();
        Ok(w)
    }

    pub(super) fn schedule_formation(&mut self) {
        let n = self.p.nodes;
        if self.warm() {
            self.warm_start();
            self.q.push(Instant::from_micros(1_000_000), Ev::Sample);
            return;
        }
        let span = if self.p.scenario == Scenario::JoinStorm {
            secs(self.p.storm)
        } else {
            n as f64 / self.p.join_rate.max(1.0)
        };
        for i in 0..n {
            let at = Instant::from_micros((span * 1e6 * i as f64 / n as f64) as u64);
            self.q.push(at, Ev::Join { node: i as u32 });
        }
        if self.p.scenario == Scenario::JoinStorm {
            // The storm is the scenario.
            self.q.push(Instant::ZERO, Ev::Action(super::Action::Begin));
        }
        self.q.push(Instant::from_micros(1_000_000), Ev::Sample);
    }

    /// Whether the cluster forms at once (`--warm`; a join storm is its
    /// own formation).
    pub(super) fn warm(&self) -> bool {
        self.p.warm && self.p.scenario != Scenario::JoinStorm
    }

    /// Starts every node knowing every member and its record (`--warm`).
    pub(super) fn warm_start(&mut self) {
        let n = self.p.nodes;
        for i in 0..n {
            self.start_node(i, true);
        }
        let all: Vec<(NodeIdentity, Option<MetaUpdate>)> = (0..n)
            .filter_map(|i| {
                let m = self.nodes[i].core.as_ref()?.membership();
                let identity = m.identity().clone();
                // The record as the node itself publishes it.
                let (bump, version) = m.local_info().meta_version?;
                let update = MetaUpdate {
                    id: identity.id,
                    bump,
                    version,
                    meta: Arc::clone(m.meta()),
                };
                Some((identity, Some(update)))
            })
            .collect();
        let now = self.now();
        for i in 0..n {
            if let Some(core) = self.nodes[i].core.as_mut() {
                // Its placer learns the members at the next publish.
                core.restore(now, &all);
                self.drain(i, false);
            }
        }
    }

    /// Starts node `i` (`first`: its first life, joining through nodes
    /// started before it) as a new [`NodeCore`].
    pub(super) fn start_node(&mut self, i: usize, first: bool) {
        let now = self.now();
        let seed = self.rng.random::<u64>();
        let n = &mut self.nodes[i];
        n.bump += 1;
        n.life += 1;
        n.life_started = now;
        n.up = true;
        n.meta.free_class = FreeClass::IDLE;
        let identity = NodeIdentity::new(n.id, addr_of(i), n.bump);
        let mut m = Membership::new(
            now,
            identity,
            n.meta.clone(),
            self.gossip.clone(),
            PacketSecurity::sealed(&SECRET),
            seed,
        )
        .expect("validated config and small metadata");
        m.share_metas(self.meta_pool.clone());
        let mut p = Placer::new(n.id, self.placement.clone(), n.cap, now);
        p.share_rings(self.ring_pool.clone());
        let mut core = NodeCore::new(m, p, Wiring::default());
        core.share_infos(self.info_pool.clone());
        // An entry per member per node: what full mode cannot afford at
        // thousands of nodes; nothing in the simulation reads it.
        core.keep_summary(false);
        n.core = Some(core);
        n.view = 0;
        self.view_joined(0);
        // Join through up to three live nodes.
        let up: Vec<usize> = if first {
            (0..self.started).filter(|j| self.nodes[*j].up).collect()
        } else {
            (0..self.nodes.len())
                .filter(|j| *j != i && self.nodes[*j].up)
                .collect()
        };
        if first {
            self.started = self.started.max(i + 1);
        }
        let mut peers = Vec::new();
        for _ in 0..3.min(up.len()) {
            peers.push(addr_of(up[self.rng.random_range(0..up.len())]));
        }
        if first && self.warm() {
            peers.clear();
        }
        // The desired state is on disk: every job submitted so far.
        let jobs: Vec<Job> = self.batches.iter().flatten().cloned().collect();
        let wall = self.wall();
        if let Some(core) = self.nodes[i].core.as_mut() {
            core.start(now, wall, &peers, jobs);
        }
        self.drain(i, true);
    }

    pub(super) fn crash(&mut self, i: usize) {
        let now = self.now();
        if !self.nodes[i].up {
            return;
        }
        self.note_crash_hits(i);
        let procs = std::mem::take(&mut self.nodes[i].procs);
        for t in procs.values() {
            self.remove_runner(*t, i as u32, true);
        }
        let view = self.nodes[i].view;
        self.view_left(view);
        let n = &mut self.nodes[i];
        n.used = Resources::default();
        n.up = false;
        n.core = None;
        n.life += 1;
        let idx = self.crashes.len();
        self.crashes.push(Crash {
            node: i as u32,
            bump: n.bump,
            at: now,
            seen: BTreeMap::new(),
        });
        self.open_crash.insert(i as u32, idx);
    }
}
