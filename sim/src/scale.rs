//! Scale mode: SWIM membership modeled compactly, for cluster sizes where
//! one real membership per node does not fit in memory (each holds every
//! member: O(N²) in all).
//!
//! The model keeps a shared ground truth (who is up) and, per rumor, the
//! time each node learned it. Its timing comes from the same
//! [`shoal_gossip::Config`] the real core runs with, following what foca
//! does:
//!
//! - **Probing**: each node probes one member per `probe_period`, walking a
//!   shuffled list, so a crashed member is first probed after the minimum
//!   of N−1 uniform offsets within a round of (N−1) periods. The prober
//!   marks it *suspect* at its next probe tick (direct and indirect probes
//!   had the period to answer) and only that prober declares it *down*
//!   after the suspicion timeout, unless it hears a refutation first.
//!   Whom a node probes follows the core's `cross_dc_probes`: a pick of
//!   another datacenter is taken back outside the budget and the next
//!   drawn (its updates go to a member of the prober's datacenter, one
//!   transmission each); with datacenters of equal size the prober of a
//!   member is drawn the same way, and each member is still probed about
//!   once per period.
//! - **Dissemination**: a node that learns a rumor piggybacks it on the next
//!   `max_transmissions` datagrams it sends: gossip to `gossip_fanout`
//!   random members every `gossip_period` (sent only while it has updates,
//!   as foca does; one addressed to another datacenter is moved to a
//!   random member of the sender's outside the `cross_dc_gossip` budget,
//!   as the core does), its probe every `probe_period`, and acks to the
//!   pings it receives (one per period on average, to members drawn as its
//!   probers are). Each datagram is lost with the scenario's loss and
//!   delayed by its link class. Learn times are
//!   computed exactly for this process with a shortest-path sweep (each
//!   node sends once it knows, in order of knowing).
//! - **Confirmations** (Lifeguard, `gossip/src/membership/suspicion.rs`):
//!   the prober's `indirect_probes` helpers (the first anywhere, the others
//!   in the crashed member's datacenter, as the core moves them) pinged
//!   the crashed member in vain; the prober sends each its accusation
//!   straight and each sends its confirmation straight back, both drawn on
//!   the network (loss and the link's latency), once its own ping has gone
//!   unanswered for a probe period; where either datagram is lost, the
//!   helper confirms when the accusation reaches it by gossip and its
//!   confirmation travels back (a second, independent draw of the same
//!   rumor delay). The two datagrams per helper count as indirect traffic.
//!   The prober's down timer moves from the full timeout toward the
//!   confirmed one as they arrive (`Config::suspicion_after`).
//!   Later probers' own accusations are left out (they could only make it
//!   sooner), as is the confirmation items' bytes (a few dozen, riding on
//!   datagrams the rumors send anyway).
//! - **False positives**: an alive member's probe fails when the direct
//!   exchange and every indirect path lose a datagram; it is suspected, and
//!   refutes when the suspicion reaches it. The prober declares it down if
//!   the refutation does not reach the prober within the suspicion timeout,
//!   taken at its shortest (as if every helper had confirmed: under loss
//!   about half of them do).
//! - **Sizing**: transmissions and the suspicion timeout are computed for
//!   the size class (N rounded up to a power of two), as the core does.
//! - **Traffic**: besides rumors, probes and acks, the indirect probes that
//!   follow a failed direct probe, the periodic announce and its feed, the
//!   knocks on down members once a node knows one, range digests (on
//!   probes) and leave queries, each at the size the real core's
//!   datagrams of that kind have; reported in the same groups as full
//!   mode's count by kind. With more than one datacenter, the bytes within
//!   and across datacenters follow from how each group picks its members
//!   (uniformly; gossip rounds, probes and acks within their budgets).
//!
//! What it leaves out: concurrent rumors competing for room in a datagram
//! (each rumor is disseminated as if alone, so mass failures are not
//! modeled), metadata records and member-list copies (formation), and
//! placement (the real placer keeps the whole member list and ring per
//! node, which does not fit 500,000 times either). [`validate`] runs both
//! modes on the same scenario to measure how far the model is from the
//! real code.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use shoal_gossip::{Config, LEAVE_QUERIES, MEMBERS_PER_DIGEST_ROUND, PROBE_PICKS};

use crate::net::{Fate, Network, Topology};
use crate::params::{Mode, Params, Scenario};
use crate::report::{
    Check, CrashTimes, Locality, Report, TrafficGroup, quantile, quantile_of_population, worst_of,
};
use crate::{SimError, net::NetCounters};

// Datagram sizes, sealed, as the real core sends them (measured by kind
// in full mode, 1,000 nodes, 1% loss: `shoal-sim --validate 1000`).

/// A SWIM datagram with no updates (ping, ack, gossip, announce): seal,
/// envelope, foca header with two identities.
pub const BASE_DATAGRAM_BYTES: f64 = 74.0;
/// An indirect-probe datagram (its header names a third member).
pub const INDIRECT_BYTES: f64 = 87.0;
/// What one membership update adds to a datagram (an identity, its
/// incarnation and state, postcard-encoded).
pub const UPDATE_BYTES: f64 = 20.0;
/// The member-list answer to the periodic announce (one feed datagram,
/// about full).
pub const FEED_BYTES: f64 = 1_040.0;
/// What a member-list range digest (8 ranges) adds to the probe that
/// carries it, once per `member_digest_period` (it has no datagram of its
/// own); the answers, sent only where views differ, are left out.
pub const DIGEST_ITEM_BYTES: f64 = 54.0;
/// An accusation sent straight between a prober and a helper (a seal, an
/// envelope, one member id; below a SWIM datagram's two identities).
pub const ACCUSATION_BYTES: f64 = 60.0;
/// A leave query about one member.
pub const LEAVE_QUERY_BYTES: f64 = 54.0;

/// How one rumor spread.
#[derive(Clone, Debug)]
pub struct Spread {
    /// When each node learned it (`f64::INFINITY`: never).
    pub learned: Vec<f64>,
    /// Datagrams that carried it.
    pub sends: u64,
    /// Gossip datagrams sent only because of it.
    pub gossip_datagrams: u64,
    /// Of `sends`, those on gossip datagrams (the others ride on probes
    /// and acks).
    pub sends_on_gossip: u64,
    /// Probes of another datacenter's members taken back that carried it
    /// to a member of the sender's datacenter as gossip datagrams (also
    /// counted in `sends` and `sends_on_gossip`).
    pub moved_probes: u64,
}

impl Spread {
    pub(crate) fn add_to(&self, t: &mut RumorTraffic) {
        t.sends += self.sends;
        t.sends_on_gossip += self.sends_on_gossip;
        t.gossip_datagrams += self.gossip_datagrams;
        t.moved_probes += self.moved_probes;
    }
}

/// What rumors cost over a run.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RumorTraffic {
    pub(crate) sends: u64,
    pub(crate) sends_on_gossip: u64,
    pub(crate) gossip_datagrams: u64,
    pub(crate) moved_probes: u64,
}

/// What a datagram a rumor rides on is.
#[derive(Clone, Copy)]
enum Via {
    Gossip,
    Probe,
    Ack,
}

/// The compact membership model of one cluster.
pub struct Model {
    n: usize,
    config: Config,
    pub(crate) net: Network,
    pub(crate) rng: ChaCha8Rng,
    gossip_phase: Vec<f32>,
    pub(crate) probe_phase: Vec<f32>,
    /// Per node, the gossip ticks already counted (sorted, 1 + the tick's
    /// index): a tick sends one set of datagrams whatever number of
    /// rumors ride on it, and rumors are not spread in time order (a
    /// crash's down rumor is spread before a later crash's suspicion).
    gossip_ticks: Vec<Vec<u32>>,
    up: Vec<bool>,
}

impl Model {
    /// A model of `nodes` nodes with membership `config`.
    pub fn new(
        nodes: usize,
        config: Config,
        topo: Topology,
        latency: crate::net::Latency,
        seed: u64,
    ) -> Model {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let net = Network::new(topo, latency, ChaCha8Rng::seed_from_u64(rng.random()));
        let gp = config.gossip_period.as_secs_f64();
        let pp = config.probe_period.as_secs_f64();
        let gossip_phase = (0..nodes)
            .map(|_| (rng.random::<f64>() * gp) as f32)
            .collect();
        let probe_phase = (0..nodes)
            .map(|_| (rng.random::<f64>() * pp) as f32)
            .collect();
        Model {
            n: nodes,
            config,
            net,
            rng,
            gossip_phase,
            probe_phase,
            gossip_ticks: vec![Vec::new(); nodes],
            up: vec![true; nodes],
        }
    }

    /// The network (to set loss, read counters).
    pub fn net(&mut self) -> &mut Network {
        &mut self.net
    }

    pub(crate) fn random_other(&mut self, i: usize) -> usize {
        loop {
            let j = self.rng.random_range(0..self.n);
            if j != i {
                return j;
            }
        }
    }

    /// Where a gossip datagram of `i` goes: a random other member, moved
    /// to a random member of `i`'s datacenter if it is in another one and
    /// outside the `cross_dc_gossip` budget (as the core does,
    /// `gossip/src/membership/locality.rs`).
    fn gossip_target(&mut self, i: usize) -> usize {
        let j = self.random_other(i);
        let topo = self.net.topology();
        let d = topo.dc(i);
        let size = topo.dc_size(d);
        if topo.dc(j) == d || size < 2 || self.rng.random::<f64>() < self.config.cross_dc_gossip {
            return j;
        }
        self.local_other(i)
    }

    /// A random other member of `i`'s datacenter (which has one).
    fn local_other(&mut self, i: usize) -> usize {
        let topo = self.net.topology();
        let d = topo.dc(i);
        let size = topo.dc_size(d);
        loop {
            let k = self.rng.random_range(0..size);
            let local = self.net.topology().nth_of_dc(d, k);
            if local != i {
                return local;
            }
        }
    }

    /// Whom `i` probes: foca's pick, taken back while it is of another
    /// datacenter outside the `cross_dc_probes` budget (as the core does,
    /// `gossip/src/membership/locality.rs`); with the number of picks
    /// taken back. By symmetry (datacenters of equal size), also who
    /// probes `i`.
    pub(crate) fn probe_pick(&mut self, i: usize) -> (usize, usize) {
        let mut moved = 0;
        loop {
            let j = self.random_other(i);
            if moved + 1 == PROBE_PICKS || !self.leaves_probe(i, j) {
                return (j, moved);
            }
            moved += 1;
        }
    }

    /// Whether `i` leaves its probe of `j` to `j`'s datacenter.
    fn leaves_probe(&mut self, i: usize, j: usize) -> bool {
        let topo = self.net.topology();
        let (own, theirs) = (topo.dc(i), topo.dc(j));
        if own == theirs || self.config.cross_dc_probes >= 1.0 {
            return false;
        }
        let (own, theirs) = (topo.dc_size(own), topo.dc_size(theirs));
        if own < 2 || 2 * theirs < own {
            return false;
        }
        self.rng.random::<f64>() >= self.config.cross_dc_probes
    }

    /// A helper of an indirect probe of `target` past the first: foca's
    /// pick, replaced by a member of the target's datacenter when it is
    /// elsewhere (as the core does, `locality.rs`).
    pub(crate) fn helper_near(&mut self, target: usize) -> usize {
        let j = self.random_other(target);
        let topo = self.net.topology();
        let d = topo.dc(target);
        if self.config.cross_dc_probes >= 1.0 || topo.dc(j) == d || topo.dc_size(d) < 2 {
            return j;
        }
        self.local_other(target)
    }

    /// The share of a node's other members in other datacenters: what
    /// crosses of what goes to members picked uniformly (datacenter 0's
    /// size taken for all; they differ by one at most).
    fn uniform_across_share(&self) -> f64 {
        let own = self.net.topology().dc_size(0);
        1.0 - (own as f64 - 1.0) / (self.n as f64 - 1.0)
    }

    /// The share of probes (and so of acks) that cross datacenters.
    fn probe_across_share(&self) -> f64 {
        let own = self.net.topology().dc_size(0);
        let other = self.uniform_across_share();
        let q = self.config.cross_dc_probes;
        if q >= 1.0 || own < 2 {
            return other;
        }
        // Each pick crosses with `other`; it is taken back with
        // `other (1 - q)`, except the last.
        let taken_back = other * (1.0 - q);
        let kept = (0..PROBE_PICKS - 1)
            .map(|k| taken_back.powi(k as i32) * other * q)
            .sum::<f64>();
        kept + taken_back.powi((PROBE_PICKS - 1) as i32) * other
    }

    /// Spreads a rumor that `sources` know from the given times.
    pub fn spread(&mut self, sources: &[(usize, f64)]) -> Spread {
        let n = self.n;
        let tx = usize::from(self.config.max_transmissions(Config::size_class(n)));
        let gp = self.config.gossip_period.as_secs_f64();
        let pp = self.config.probe_period.as_secs_f64();
        let fanout = self.config.gossip_fanout;
        let mut learned = vec![f64::INFINITY; n];
        let mut done = vec![false; n];
        let mut heap: BinaryHeap<Reverse<(u64, usize)>> = BinaryHeap::new();
        let key = |t: f64| (t * 1e6) as u64;
        for &(s, t) in sources {
            if t < learned[s] {
                learned[s] = t;
                heap.push(Reverse((key(t), s)));
            }
        }
        let mut sends = 0u64;
        let mut sends_on_gossip = 0u64;
        let mut gossip_datagrams = 0u64;
        let mut moved_probes = 0u64;
        let mut targets = Vec::with_capacity(tx);
        while let Some(Reverse((_, i))) = heap.pop() {
            if done[i] {
                continue;
            }
            done[i] = true;
            if !self.up[i] {
                continue;
            }
            let t0 = learned[i];
            // The datagrams this node sends from t0 on, in time order:
            // gossip ticks (fanout each), probe ticks, acks (Poisson).
            let mut next_gossip = next_tick(t0, f64::from(self.gossip_phase[i]), gp);
            let mut next_probe = next_tick(t0, f64::from(self.probe_phase[i]), pp);
            let mut next_ack = t0 + exp(&mut self.rng, pp);
            targets.clear();
            while targets.len() < tx {
                if next_gossip <= next_probe && next_gossip <= next_ack {
                    let phase = f64::from(self.gossip_phase[i]);
                    let tick = ((next_gossip - phase) / gp).round() as u32 + 1;
                    let ticks = &mut self.gossip_ticks[i];
                    if let Err(at) = ticks.binary_search(&tick) {
                        ticks.insert(at, tick);
                        gossip_datagrams += fanout as u64;
                    }
                    for _ in 0..fanout {
                        if targets.len() < tx {
                            targets.push((next_gossip, Via::Gossip));
                        }
                    }
                    next_gossip += gp;
                } else if next_probe <= next_ack {
                    targets.push((next_probe, Via::Probe));
                    next_probe += pp;
                } else {
                    targets.push((next_ack, Via::Ack));
                    next_ack += exp(&mut self.rng, pp);
                }
            }
            // Whom each goes to; a probe taken back sends its updates to a
            // member of this datacenter first, one transmission each.
            let mut sent = Vec::with_capacity(tx);
            for &(at, via) in &targets {
                let j = match via {
                    Via::Gossip => {
                        sends_on_gossip += 1;
                        self.gossip_target(i)
                    }
                    Via::Ack => self.probe_pick(i).0,
                    Via::Probe => {
                        let (j, moved) = self.probe_pick(i);
                        for _ in 0..moved.min(tx - sent.len()) {
                            let local = self.local_other(i);
                            sent.push((at, local));
                            sends_on_gossip += 1;
                            moved_probes += 1;
                        }
                        j
                    }
                };
                if sent.len() == tx {
                    break;
                }
                sent.push((at, j));
            }
            for &(at, j) in &sent {
                sends += 1;
                if let Fate::Deliver(d) = self.net.datagram(i, j) {
                    let t = at + d.as_secs_f64();
                    if t < learned[j] && !done[j] {
                        learned[j] = t;
                        heap.push(Reverse((key(t), j)));
                    }
                }
            }
        }
        Spread {
            learned,
            sends,
            gossip_datagrams,
            sends_on_gossip,
            moved_probes,
        }
    }

    /// `prober` suspects `target`, which is alive, at `t`: the suspicion
    /// spreads and the target refutes it once it hears of it. Whether the
    /// refutation missed the prober within `shortest` (the suspicion
    /// timeout at its shortest): a false positive.
    pub(crate) fn false_suspicion(
        &mut self,
        prober: usize,
        target: usize,
        t: f64,
        shortest: f64,
        rumors: &mut RumorTraffic,
    ) -> bool {
        let s = self.spread(&[(prober, t)]);
        s.add_to(rumors);
        let refuted_at = s.learned[target];
        if !refuted_at.is_finite() {
            return true;
        }
        let alive = self.spread(&[(target, refuted_at)]);
        alive.add_to(rumors);
        alive.learned[prober] > t + shortest
    }

    /// Time from a crash until some node first probes the crashed member:
    /// the least of N−1 uniform offsets in a round of (N−1) probe periods.
    pub fn first_probe_delay(&mut self) -> f64 {
        let others = (self.n - 1).max(1) as f64;
        let round = others * self.config.probe_period.as_secs_f64();
        let v: f64 = self.rng.random();
        round * (1.0 - v.powf(1.0 / others))
    }

    /// Probability that a probe of a live member fails under `loss`: the
    /// direct ping/ack and all indirect ping-req/ping/ack/forward paths.
    pub fn probe_failure(&self, loss: f64) -> f64 {
        let direct = direct_probe_lost(loss);
        let indirect = 1.0 - (1.0 - loss).powi(4);
        direct * indirect.powi(self.config.indirect_probes as i32)
    }
}

/// Probability that a direct probe (ping and ack) loses a datagram.
fn direct_probe_lost(loss: f64) -> f64 {
    1.0 - (1.0 - loss).powi(2)
}

fn next_tick(t: f64, phase: f64, period: f64) -> f64 {
    let k = ((t - phase) / period).ceil().max(0.0);
    phase + k * period
}

fn exp(rng: &mut ChaCha8Rng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -mean * (1.0 - u).ln()
}

/// One crash, as the model sees it.
struct Detection {
    /// Seconds from the crash until each live observer knew (sorted).
    delays: Vec<f64>,
    observers: usize,
}

/// Runs a scale-mode simulation of `params`: the crashes of `default`,
/// `loss` and `churn` (membership only).
pub fn run(params: Params) -> Result<Report, SimError> {
    model(&params, false).map(|(report, _)| report)
}

/// One modeled crash, for the placers of [`crate::scale_place`]: who, when
/// (seconds), and when each node learned it was down (`f64::INFINITY`:
/// never, or the victim itself).
#[derive(Clone, Debug)]
pub struct CrashPlan {
    /// The node that crashes.
    pub victim: usize,
    /// When, in seconds of simulated time.
    pub at: f64,
    /// When each node learned of it, in seconds.
    pub learned: Vec<f64>,
}

/// The membership model's run; with `keep`, also each crash's victim and
/// the time every node learned of it (not for churn, whose crashes come
/// back).
pub fn model(params: &Params, keep: bool) -> Result<(Report, Vec<CrashPlan>), SimError> {
    if !matches!(
        params.scenario,
        Scenario::Default | Scenario::Loss | Scenario::Churn
    ) {
        return Err(SimError::Params(format!(
            "scenario {} is not modeled in scale mode (it models crashes, loss and churn, runs the real placers for `jobs` and `default`, the trigger state machine for `triggers`, and a cut for `partition` with --reach-only-dc-size; run the others in full mode)",
            params.scenario
        )));
    }
    if params.nodes < 2 {
        return Err(SimError::Params("at least 2 nodes".into()));
    }
    let config = params.gossip_config()?;
    let n = params.nodes;
    let loss = params.effective_loss();
    let topo = Topology::new(n, params.dcs, params.zones);
    let mut model = Model::new(n, config.clone(), topo, params.latency, params.seed);
    model.net().set_loss(loss);
    let pp = config.probe_period.as_secs_f64();
    let class = Config::size_class(n);
    let timeout_after = |c: usize| config.suspicion_after(class, c).as_secs_f64();
    let shortest = timeout_after(usize::from(config.suspicion_confirmations));
    let duration = params.duration.as_secs_f64();

    // Crashes: the same count and spacing as full mode.
    let crash_times: Vec<f64> = match params.scenario {
        Scenario::Churn => {
            let per_sec = params.churn_per_min / 100.0 * n as f64 / 60.0;
            let mut v = Vec::new();
            let mut t = 5.0;
            while per_sec > 0.0 && t < duration {
                v.push(t);
                t += 1.0 / per_sec;
            }
            v
        }
        _ => (0..params.crashes.max(1))
            .map(|k| (20.0 + 5.0 * k as f64).min(duration / 2.0))
            .collect(),
    };
    // False positives: failed probes of live members over the whole run.
    let probes = n as f64 * (duration + params.settle.as_secs_f64()) / pp;
    let p_fail = model.probe_failure(loss);
    let suspicions = poisson(&mut model.rng, probes * p_fail).min(10_000);
    let mut suspicion_times: Vec<f64> = (0..suspicions)
        .map(|_| model.rng.random::<f64>() * duration)
        .collect();
    suspicion_times.sort_by(f64::total_cmp);
    // Rumors are handled in the order they start (false suspicions among
    // the crashes).
    let mut starts: Vec<(f64, bool)> = crash_times
        .iter()
        .map(|t| (*t, true))
        .chain(suspicion_times.iter().map(|t| (*t, false)))
        .collect();
    starts.sort_by(|a, b| a.0.total_cmp(&b.0));

    let digest_period = config.member_digest_period.as_secs_f64();
    let run_end = duration + params.settle.as_secs_f64();
    let mut detections = Vec::new();
    let mut plans = Vec::new();
    let mut rumors = RumorTraffic::default();
    // Per node, when it first knew a member down: from then on it
    // announces to down members (`announce_down_period`, two at a time)
    // for as long as it keeps them (`remove_down_after`, beyond the run).
    let mut first_down = vec![f64::INFINITY; n];
    let mut undetected = 0u64;
    let mut false_positives = 0u64;
    // Accusations sent straight between probers and helpers, and back.
    let mut accusations = 0u64;
    for &(tc, is_crash) in &starts {
        if !is_crash {
            let t = tc;
            let target = model.rng.random_range(0..n);
            if !model.up[target] {
                continue;
            }
            let prober = model.probe_pick(target).0;
            if model.false_suspicion(prober, target, t, shortest, &mut rumors) {
                false_positives += 1;
            }
            continue;
        }
        let victim = model.rng.random_range(0..n);
        model.up[victim] = false;
        let prober = model.probe_pick(victim).0;
        let suspected = tc + model.first_probe_delay() + pp;
        // The suspicion spreads (it costs datagrams; nobody acts on it).
        let s = model.spread(&[(prober, suspected)]);
        s.add_to(&mut rumors);
        // The helpers' confirmations come back to the prober.
        // (A helper confirms if the accusation reaches it within a full
        // timeout of its ping, sent a probe period before the suspicion.)
        let pinged = suspected - pp + config.probe_rtt.as_secs_f64();
        // It confirms once its own ping has gone unanswered for a probe
        // period.
        let patience = pinged + pp;
        let mut arrivals: Vec<f64> = (0..config.indirect_probes)
            .filter_map(|h| {
                // Sent straight to the helper and back (`Body::Accusation`)
                // unless either leg is lost; then by gossip.
                let helper = if h == 0 {
                    model.random_other(victim)
                } else {
                    model.helper_near(victim)
                };
                accusations += 2;
                let there = model.net.datagram(prober, helper);
                let back = model.net.datagram(helper, prober);
                if let (Fate::Deliver(a), Fate::Deliver(b)) = (there, back) {
                    return Some((suspected + a.as_secs_f64()).max(patience) + b.as_secs_f64());
                }
                let relay = model.random_other(victim);
                let heard = s.learned[helper];
                (heard - pinged <= timeout_after(0))
                    .then(|| heard.max(patience) + (s.learned[relay] - suspected))
            })
            .filter(|t| t.is_finite())
            .collect();
        arrivals.sort_by(f64::total_cmp);
        let mut declared = suspected + timeout_after(0);
        for (c, at) in arrivals.iter().enumerate() {
            if *at >= declared {
                break;
            }
            declared = declared.min(at.max(suspected + timeout_after(c + 1)));
        }
        let timeout = declared - suspected;
        let mut down = model.spread(&[(prober, declared)]);
        down.add_to(&mut rumors);
        // A node the rumor missed learns it from a range exchange: its
        // digest rounds walk the member space, 128 members a round, and
        // the round that covers the victim (with a peer that knows) carries
        // the down member. Within the run or never.
        let spread_end = down
            .learned
            .iter()
            .copied()
            .filter(|t| t.is_finite())
            .fold(suspected + timeout, f64::max);
        let pass = (n as f64 / MEMBERS_PER_DIGEST_ROUND as f64).ceil() * digest_period;
        for i in 0..n {
            if model.up[i] && !down.learned[i].is_finite() {
                let at = spread_end + model.rng.random::<f64>() * pass;
                if at <= run_end {
                    down.learned[i] = at;
                }
            }
        }
        for (first, t) in first_down.iter_mut().zip(&down.learned) {
            *first = first.min(*t);
        }
        let mut delays: Vec<f64> = down
            .learned
            .iter()
            .enumerate()
            .filter(|(i, _)| model.up[*i])
            .map(|(_, t)| *t - tc)
            .collect();
        let observers = delays.len();
        delays.retain(|d| d.is_finite());
        undetected += (observers - delays.len()) as u64;
        delays.sort_by(f64::total_cmp);
        detections.push(Detection { delays, observers });
        if keep && params.scenario != Scenario::Churn {
            let mut learned = down.learned;
            learned[victim] = f64::INFINITY;
            plans.push(CrashPlan {
                victim,
                at: tc,
                learned,
            });
        }
        if params.scenario == Scenario::Churn {
            // It comes back (a join rumor spreads like the others).
            model.up[victim] = true;
            let j = model.spread(&[(victim, tc + params.churn_down.as_secs_f64())]);
            j.add_to(&mut rumors);
        }
    }

    // Traffic: probes and acks, the indirect probes that follow a direct
    // probe lost under loss (a ping-req, a ping, an ack and a forwarded ack
    // per helper), the periodic member-list announce (a request and one
    // feed datagram), the range digests, rumor-driven gossip, and the
    // queries each observer of a crash sends about a leave notice it may
    // have missed (`LEAVE_QUERIES`, unanswered for a crash).
    let span = duration + params.settle.as_secs_f64();
    let node_seconds = n as f64 * span;
    let indirect = direct_probe_lost(loss) * 4.0 * config.indirect_probes as f64 / pp;
    let accusations = accusations as f64 / node_seconds;
    let observed: u64 = detections.iter().map(|d| d.delays.len() as u64).sum();
    let queries = (observed * u64::from(LEAVE_QUERIES)) as f64 / node_seconds;
    let announce = config.announce_period.as_secs_f64();
    let to_down: f64 = first_down
        .iter()
        .filter(|t| t.is_finite())
        .map(|t| (run_end - t).max(0.0) * 2.0 / config.announce_down_period.as_secs_f64())
        .sum::<f64>()
        / node_seconds;
    let per_node = |x: u64| x as f64 / node_seconds;
    let rounds = per_node(rumors.gossip_datagrams);
    // Probes taken back whose updates went to a member of the sender's
    // datacenter.
    let moved = per_node(rumors.moved_probes);
    let gossip = rounds + moved;
    // Updates add their bytes to the datagrams that carry them.
    let on_gossip = per_node(rumors.sends_on_gossip) * UPDATE_BYTES;
    let on_probes = per_node(rumors.sends - rumors.sends_on_gossip) * UPDATE_BYTES;
    let traffic = TrafficGroup::shares(|group| match group {
        TrafficGroup::Probe => (
            2.0 / pp,
            2.0 / pp * BASE_DATAGRAM_BYTES + on_probes + DIGEST_ITEM_BYTES / digest_period,
        ),
        TrafficGroup::Indirect => (
            indirect + accusations,
            indirect * INDIRECT_BYTES + accusations * ACCUSATION_BYTES,
        ),
        TrafficGroup::Gossip => (gossip, gossip * BASE_DATAGRAM_BYTES + on_gossip),
        TrafficGroup::Announce => (
            2.0 / announce + to_down,
            (BASE_DATAGRAM_BYTES + FEED_BYTES) / announce + to_down * BASE_DATAGRAM_BYTES,
        ),
        // The digests ride on probes (above); their answers are not
        // modeled.
        TrafficGroup::Digest => (0.0, 0.0),
        TrafficGroup::Leave => (queries, queries * LEAVE_QUERY_BYTES),
        // Join pages, metadata pulls: not modeled (no formation).
        TrafficGroup::Other => (0.0, 0.0),
    });
    // Within and across datacenters: every group goes to members picked
    // uniformly, but the gossip rounds, which cross only on their budget,
    // the probes taken back (moved within), and the probes and acks, which
    // cross on theirs.
    let locality = (params.dcs > 1).then(|| {
        let uniform = model.uniform_across_share();
        let probes = model.probe_across_share();
        // An indirect probe's first helper is foca's (anywhere); the
        // others are in the target's datacenter, so of their ask, ping,
        // ack and forwarded ack only the ask and the forwarded ack cross,
        // when the prober and the target are apart; the accusation and
        // its confirmation too.
        let k = config.indirect_probes.max(1) as f64;
        let (moved_indirect, moved_accusations) = if config.cross_dc_probes >= 1.0 {
            (uniform, uniform)
        } else {
            (probes / 2.0, probes)
        };
        let indirect_share = |moved: f64| (uniform + (k - 1.0) * moved) / k;
        let indirect_group = (indirect * indirect_share(moved_indirect)
            + accusations * indirect_share(moved_accusations))
            / f64::max(indirect + accusations, f64::MIN_POSITIVE);
        let (mut msgs, mut across_msgs, mut bytes, mut across) = (0.0, 0.0, 0.0, 0.0);
        for (group, t) in TrafficGroup::ALL.iter().zip(&traffic) {
            let share = match group {
                TrafficGroup::Gossip => {
                    uniform * config.cross_dc_gossip * rounds / f64::max(gossip, f64::MIN_POSITIVE)
                }
                TrafficGroup::Probe => probes,
                TrafficGroup::Indirect => indirect_group,
                _ => uniform,
            };
            msgs += t.msgs_per_node_s;
            across_msgs += t.msgs_per_node_s * share;
            bytes += t.bytes_per_node_s;
            across += t.bytes_per_node_s * share;
        }
        Locality {
            within_dc_bytes_per_node_s: bytes - across,
            across_dc_bytes_per_node_s: across,
            across_dc_datagram_share: across_msgs / f64::max(msgs, f64::MIN_POSITIVE),
        }
    });
    let msgs_per_node_s = traffic.iter().map(|t| t.msgs_per_node_s).sum();
    let bytes_per_node_s = traffic.iter().map(|t| t.bytes_per_node_s).sum();

    let mut all: Vec<f64> = detections.iter().flat_map(|d| d.delays.clone()).collect();
    all.sort_by(f64::total_cmp);
    let per: Vec<CrashTimes> = detections
        .iter()
        .map(|d| {
            (
                d.delays.first().copied(),
                quantile_of_population(&d.delays, d.observers, 0.999),
                quantile_of_population(&d.delays, d.observers, 1.0),
            )
        })
        .collect();
    let firsts: Vec<f64> = per.iter().filter_map(|p| p.0).collect();
    let mut checks = vec![Check {
        name: "fault_crash_fired".into(),
        ok: !detections.is_empty() && detections.iter().all(|d| !d.delays.is_empty()),
        detail: format!("{} crashes modeled", detections.len()),
    }];
    if loss > 0.0 {
        checks.push(Check {
            name: "fault_loss_fired".into(),
            ok: model.net.counters.lost > 0,
            detail: format!("{} datagrams lost at {loss}", model.net.counters.lost),
        });
    }
    checks.push(Check {
        name: "eventually_everyone_knows".into(),
        ok: undetected == 0,
        detail: format!("{undetected} (crash, observer) pairs never learned it"),
    });
    let ok = checks.iter().all(|c| c.ok);
    let counters: NetCounters = model.net.counters;
    let report = Report {
        nodes: n,
        scenario: params.scenario.to_string(),
        seed: params.seed,
        mode: Mode::Scale.as_str().into(),
        gossip: params.gossip.clone(),
        command: params.command(),
        formed_s: None,
        sim_s: span,
        events: rumors.sends,
        crashes: detections.len(),
        detect_first_s: (!firsts.is_empty())
            .then(|| firsts.iter().sum::<f64>() / firsts.len() as f64),
        detect_p50_s: quantile(&all, 0.5),
        detect_p999_s: worst_of(&per, |c| c.1),
        detect_all_s: worst_of(&per, |c| c.2),
        undetected,
        false_positives,
        false_positives_per_node_hour: false_positives as f64 / (node_seconds / 3600.0),
        partition_downs: 0,
        locality,
        msgs_per_node_s,
        bytes_per_node_s,
        traffic,
        placement_msgs_per_node_s: 0.0,
        placement_bytes_per_node_s: 0.0,
        tasks: 0,
        placed: 0,
        placement_p50_ms: None,
        placement_p99_ms: None,
        placement_max_ms: None,
        placements_per_s: None,
        packing_efficiency: None,
        bestfit_placed: 0,
        load_imbalance: None,
        replaced: 0,
        replace_p50_ms: None,
        replace_p99_ms: None,
        duplicates: 0,
        duplicate_max_s: None,
        duplicates_after_convergence: 0,
        unplaced: 0,
        unplaced_no_room: 0,
        net: counters,
        checks,
        ok,
        series: Vec::new(),
        detections: per,
        detect_delays: all,
        reach: None,
        triggers: None,
    };
    Ok((report, plans))
}

fn poisson(rng: &mut ChaCha8Rng, mean: f64) -> u64 {
    if mean <= 0.0 {
        return 0;
    }
    if mean > 50.0 {
        // Normal approximation.
        let u1: f64 = rng.random::<f64>().max(1e-12);
        let u2: f64 = rng.random();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        return (mean + z * mean.sqrt()).round().max(0.0) as u64;
    }
    let limit = (-mean).exp();
    let mut k = 0;
    let mut p = 1.0;
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

/// One size of the validation: the same scenario in both modes.
#[derive(Clone, Debug)]
pub struct Comparison {
    /// Full mode.
    pub full: Report,
    /// Scale mode.
    pub scale: Report,
}

/// Runs the `loss` scenario (crashes under loss) in both modes at each
/// size, for the side-by-side validation of the model, with `base`'s seed
/// and membership tuning.
pub fn validate(
    sizes: &[usize],
    base: &Params,
    loss: f64,
    crashes: usize,
    progress: &mut dyn FnMut(&crate::Progress),
) -> Result<Vec<Comparison>, SimError> {
    let mut out = Vec::new();
    for &n in sizes {
        let mut p = Params::new(Scenario::Loss, n, base.seed);
        // The membership tuning asked for (preset and overrides) applies
        // to both modes.
        p.gossip = base.gossip.clone();
        p.suspicion_mult = base.suspicion_mult;
        p.transmissions_mult = base.transmissions_mult;
        p.indirect_probes = base.indirect_probes;
        p.cross_dc_gossip = base.cross_dc_gossip;
        p.cross_dc_probes = base.cross_dc_probes;
        p.reach_only_dc_size = base.reach_only_dc_size;
        // Formation too (`--warm`; the model starts formed either way).
        p.warm = base.warm;
        p.loss = Some(loss);
        p.crashes = crashes;
        p.duration = Duration::from_secs(20 + 5 * crashes as u64 + 20);
        p.settle = Duration::from_secs(20);
        let full = crate::full::run(p.clone(), progress)?;
        p.mode = Mode::Scale;
        let scale = run(p)?;
        out.push(Comparison { full, scale });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Latency;

    #[test]
    fn a_rumor_reaches_everyone_in_log_rounds() {
        let n = 20_000;
        let mut m = Model::new(
            n,
            Config::lan(),
            Topology::new(n, 2, 3),
            Latency::default(),
            1,
        );
        let s = m.spread(&[(0, 0.0)]);
        let mut t: Vec<f64> = s.learned.clone();
        t.sort_by(f64::total_cmp);
        let all = t[n - 1];
        assert!(all.is_finite(), "some node never learned it");
        // Fanout 3 every 200 ms: a dozen rounds or so.
        assert!(all < 4.0, "took {all} s");
        let tx = Config::lan().max_transmissions(Config::size_class(n));
        assert!(s.sends as usize <= n * usize::from(tx));
    }

    #[test]
    fn probe_failure_grows_with_loss() {
        let m = Model::new(
            10,
            Config::lan(),
            Topology::new(10, 1, 1),
            Latency::default(),
            1,
        );
        assert_eq!(m.probe_failure(0.0), 0.0);
        assert!(m.probe_failure(0.01) < 1e-5);
        assert!(m.probe_failure(0.1) > m.probe_failure(0.01));
    }
}
