//! Scale mode's cut: the `partition` scenario (one datacenter cut off from
//! the others with `--partition-one`, or every datacenter from every
//! other) at sizes where one membership per node does not fit, for the
//! setting that makes such a cut one fact per datacenter instead of one
//! rumor per member: `--reach-only-dc-size` (`shoal_gossip`'s
//! `locality.rs` and `reach.rs`).
//!
//! With that setting a probe of another datacenter's member that fails
//! suspects nobody, so a cut makes no suspicion, no down and no renewal
//! across; what it changes is each node's [`Reach`], the fact per
//! datacenter that the node core acts on (it takes an unreachable large
//! datacenter's members out of the placer's view). So the model keeps,
//! per node, the real [`Reach`] (the same rules the agent runs) and drives
//! it with every datagram that reaches it from another node, in time
//! order:
//!
//! - **Probes**: each node probes one member per `probe_period`, at its
//!   own phase. Whom follows the core's probe round
//!   (`Membership::probe_round`): a datacenter in doubt
//!   ([`Reach::in_doubt`]) gets the pick, up to [`PROBE_PICKS`] draws;
//!   otherwise foca's pick, taken back outside the `cross_dc_probes`
//!   budget (`Model::probe_pick`). The ping and its ack are drawn on the
//!   network (the cut, loss, the link's latency); each delivered datagram
//!   is heard by its receiver. An unanswered ping asks `indirect_probes`
//!   helpers (the first anywhere, the others in the target's datacenter,
//!   as the core moves them), each leg drawn and heard the same way. A
//!   probe nothing answered counts against the target's datacenter at the
//!   prober's next probe tick, as the core settles it then.
//! - **Announces**: every `announce_period` each node sends its announce
//!   to a member drawn uniformly, which answers with its feed.
//! - **False suspicions**: a probe of a member of the prober's own
//!   datacenter that fails under loss starts a SWIM suspicion; it spreads
//!   and is refuted as in the crash model (`Model::false_suspicion`).
//!
//! It reports what full mode's partition runs report of the fact (pairs
//! that saw the cut and when, reached again after the heal, datacenters
//! seen unreachable wrongly, through the same `ReachLog`), false
//! positives, and the traffic by group, within and across datacenters.
//!
//! With jobs (`--fill` above 0) the real placers of every node run
//! through the cut too ([`crate::scale_place::CutWave`]): the wave is
//! written before the cut, the placers' network is cut and healed with
//! the model's, and each node's placer loses the members of the
//! datacenters unreachable from it, and is cut off when they are most of
//! the cluster, at the moments its modeled fact says, as the node core
//! does (`publish`). Tasks that ran twice during the cut and after the
//! heal are counted as in full mode.
//!
//! What it leaves out: gossip of other news (free-capacity classes ride
//! on the datagrams of full mode's jobs: about 18 bytes more each);
//! range-digest answers and a warm start's metadata pulls (so nodes hear
//! from each other datacenter a little less in the 20 s before the cut);
//! downs across the cut, of which the core makes none with this setting
//! (its cluster test and full mode check that). A false suspicion's rumor
//! bytes are counted within the datacenter. A datagram delivered to a
//! node is applied to its fact when the sender's probe tick is handled,
//! with the delivery's time, a few milliseconds ahead of the receiver's
//! own ticks in between.

use std::time::Duration;

use rand::RngExt;
use shoal_gossip::{Config, Instant, NodeId, PROBE_PICKS, Reach};

use crate::full::reach::ReachLog;
use crate::net::{Fate, Topology};
use crate::params::{Mode, Params};
use crate::report::{Check, Locality, Report, TrafficGroup};
use crate::scale::{
    BASE_DATAGRAM_BYTES, DIGEST_ITEM_BYTES, FEED_BYTES, INDIRECT_BYTES, Model, RumorTraffic,
    UPDATE_BYTES,
};
use crate::scale_place::{self, CutPlan};
use crate::{Progress, SimError};

/// Datagrams and bytes sent, per traffic group, in all and across
/// datacenters.
#[derive(Default)]
struct Tally {
    msgs: [f64; TrafficGroup::ALL.len()],
    bytes: [f64; TrafficGroup::ALL.len()],
    across_msgs: [f64; TrafficGroup::ALL.len()],
    across_bytes: [f64; TrafficGroup::ALL.len()],
}

impl Tally {
    fn add(&mut self, group: TrafficGroup, across: bool, bytes: f64) {
        let g = group as usize;
        self.msgs[g] += 1.0;
        self.bytes[g] += bytes;
        if across {
            self.across_msgs[g] += 1.0;
            self.across_bytes[g] += bytes;
        }
    }
}

fn at(t: f64) -> Instant {
    Instant::ZERO + Duration::from_secs_f64(t.max(0.0))
}

/// The run: every node's [`Reach`], its pending probe, and what was sent.
struct Cut {
    model: Model,
    topo: Topology,
    names: Vec<String>,
    reach: Vec<Reach>,
    /// Per node, the member its last probe asked about if nothing answered
    /// (`u32::MAX`: none), settled at its next tick.
    pending: Vec<u32>,
    log: ReachLog,
    tally: Tally,
    rumors: RumorTraffic,
    false_positives: u64,
    /// Per node, the datacenters unreachable from it (bit d: datacenter
    /// d).
    masks: Vec<u32>,
    /// When each node's mask changed, for the placers.
    changes: Vec<(f64, u32, u32)>,
    /// Per node, when its mask last changed: a datagram is applied with
    /// its arrival time when its sender's tick is handled, so two arrivals
    /// can be applied out of their order by a few milliseconds; the
    /// placers get the masks in the order the node's fact took them.
    changed_at: Vec<f64>,
    /// (node, datacenter) pairs cut apart in which the node had heard
    /// from that datacenter when the cut began (the others cannot see it:
    /// a datacenter never heard from counts for nothing).
    pairs_heard: u64,
    /// The suspicion timeout at its shortest.
    shortest: f64,
    probe_period: f64,
    indirect_probes: usize,
    /// What a range digest adds to each probe, averaged.
    digest_per_probe: f64,
}

impl Cut {
    fn dc(&self, i: usize) -> usize {
        self.topo.dc(i)
    }

    /// Node `to` heard from a member of datacenter `dc` at `t`.
    fn heard(&mut self, to: usize, dc: usize, t: f64) {
        if self.reach[to].heard(&self.names[dc], at(t)).is_some() {
            self.log.reachable(at(t));
            self.masks[to] &= !(1 << dc);
            self.mask_changed(to, t);
        }
    }

    /// Node `i`'s mask changed at `t`.
    fn mask_changed(&mut self, i: usize, t: f64) {
        let t = t.max(self.changed_at[i]);
        self.changed_at[i] = t;
        self.changes.push((t, i as u32, self.masks[i]));
    }

    /// Sends one datagram of `group`, `bytes` long, from `from` to `to` at
    /// `t`: when it arrives, if it does.
    fn send(
        &mut self,
        group: TrafficGroup,
        from: usize,
        to: usize,
        t: f64,
        bytes: f64,
    ) -> Option<f64> {
        let (a, b) = (self.dc(from), self.dc(to));
        self.tally.add(group, a != b, bytes);
        match self.model.net.datagram(from, to) {
            Fate::Deliver(d) => {
                let arrived = t + d.as_secs_f64();
                self.heard(to, a, arrived);
                Some(arrived)
            }
            _ => None,
        }
    }

    /// Node `i`'s probe tick at `t`.
    fn probe_tick(&mut self, i: usize, t: f64) {
        let own = self.dc(i);
        // The probe that ended settles first.
        let target = std::mem::replace(&mut self.pending[i], u32::MAX);
        if target != u32::MAX {
            let d = self.dc(target as usize);
            // Only another datacenter is probed for reach only (the run
            // requires every other one to be).
            let same_cut = d != own;
            if self.reach[i].failed(&self.names[d], NodeId(u64::from(target)), at(t), same_cut) {
                self.log
                    .unreachable(at(t), i as u32, own, &self.names[d], |_| true);
                self.masks[i] |= 1 << d;
                self.mask_changed(i, t);
            }
        }
        let own_name = &self.names[own];
        let doubt = self.reach[i]
            .in_doubt(at(t), |dc| dc != own_name)
            .and_then(|dc| self.names.iter().position(|n| n == dc));
        let j = match doubt {
            Some(d) => {
                let mut j = self.model.random_other(i);
                for _ in 1..PROBE_PICKS {
                    if self.dc(j) == d {
                        break;
                    }
                    j = self.model.random_other(i);
                }
                j
            }
            None => self.model.probe_pick(i).0,
        };
        let ping = BASE_DATAGRAM_BYTES + self.digest_per_probe;
        if let Some(there) = self.send(TrafficGroup::Probe, i, j, t, ping)
            && self
                .send(TrafficGroup::Probe, j, i, there, BASE_DATAGRAM_BYTES)
                .is_some()
        {
            return;
        }
        let mut answered = false;
        for h in 0..self.indirect_probes {
            let helper = loop {
                let helper = if h == 0 {
                    self.model.random_other(j)
                } else {
                    self.model.helper_near(j)
                };
                if helper != i {
                    break helper;
                }
            };
            let asked = self.send(TrafficGroup::Indirect, i, helper, t, INDIRECT_BYTES);
            let pinged =
                asked.and_then(|a| self.send(TrafficGroup::Indirect, helper, j, a, INDIRECT_BYTES));
            let acked = pinged
                .and_then(|a| self.send(TrafficGroup::Indirect, j, helper, a, INDIRECT_BYTES));
            let forwarded =
                acked.and_then(|a| self.send(TrafficGroup::Indirect, helper, i, a, INDIRECT_BYTES));
            answered |= forwarded.is_some();
        }
        if answered {
            return;
        }
        self.pending[i] = j as u32;
        if self.dc(j) == own {
            // SWIM suspects a member of this node's own datacenter.
            let next = t + self.probe_period;
            if self
                .model
                .false_suspicion(i, j, next, self.shortest, &mut self.rumors)
            {
                self.false_positives += 1;
            }
        }
    }

    /// Node `i`'s announce at `t`, to a member drawn uniformly, answered
    /// with its feed.
    fn announce(&mut self, i: usize, t: f64) {
        let j = self.model.random_other(i);
        if let Some(there) = self.send(TrafficGroup::Announce, i, j, t, BASE_DATAGRAM_BYTES) {
            self.send(TrafficGroup::Announce, j, i, there, FEED_BYTES);
        }
    }
}

/// Runs the `partition` scenario in scale mode (see the module's notes);
/// with jobs (`--fill` above 0), the real placers of every node through
/// the cut as well ([`crate::scale_place::CutWave`]), each losing the
/// members of a datacenter when the model says its node saw it
/// unreachable.
pub fn run(params: Params, progress: &mut dyn FnMut(&Progress)) -> Result<Report, SimError> {
    let (cut_at, _) = cut_times(&params);
    let wave = (params.fill > 0.0)
        .then(|| scale_place::prepare_cut(params.clone(), cut_at))
        .transpose()?;
    let (membership, plan) = model(&params, progress)?;
    match wave {
        None => Ok(membership),
        Some(wave) => {
            let reach = membership.reach.clone();
            let locality = membership.locality.clone();
            let net = membership.net;
            let mut r = scale_place::with_membership(wave.run(plan, progress)?, membership);
            r.reach = reach;
            r.locality = locality;
            // The gossip datagrams sent and cut, besides the placers'
            // messages cut (their loss is already summed).
            r.net.datagrams += net.datagrams;
            r.net.cut += net.cut;
            Ok(r)
        }
    }
}

/// When the cut begins and heals, in seconds.
fn cut_times(params: &Params) -> (f64, f64) {
    let (at, heal) = params.partition_window();
    (at.as_secs_f64(), heal.as_secs_f64())
}

/// The membership model of the cut, and when each node's fact changed.
fn model(
    params: &Params,
    progress: &mut dyn FnMut(&Progress),
) -> Result<(Report, CutPlan), SimError> {
    let config = params.gossip_config()?;
    let n = params.nodes;
    let topo = Topology::new(n, params.dcs, params.zones);
    let dcs = topo.dcs();
    let smallest = (0..dcs).map(|d| topo.dc_size(d)).min().unwrap_or(0);
    if dcs < 2 {
        return Err(SimError::Params(
            "the partition scenario cuts datacenters apart: give --dcs 2 or more".into(),
        ));
    }
    if config.reach_only_dc_size == 0 || smallest < config.reach_only_dc_size.max(2) {
        return Err(SimError::Params(format!(
            "scale mode models a cut only where every datacenter is probed for reach only \
             (--reach-only-dc-size N with 2 <= N <= {smallest}, the smallest datacenter here): \
             otherwise the cut makes one suspicion and one down per member across, rumors the \
             model does not spread together (docs/simulation.md, Limits); run it in full mode"
        )));
    }
    let duration = params.duration.as_secs_f64();
    let (cut_at, heal_at) = cut_times(params);
    if heal_at - cut_at >= config.dc_lost_after.as_secs_f64() {
        return Err(SimError::Params(format!(
            "--partition {} s reaches dc_lost_after ({} s), after which a datacenter's members \
             are probed as any others and the cut makes one down per member, which the model \
             does not spread; run a shorter cut",
            heal_at - cut_at,
            config.dc_lost_after.as_secs()
        )));
    }
    let end = duration + params.settle.as_secs_f64();
    let pp = config.probe_period.as_secs_f64();
    let class = Config::size_class(n);
    let shortest = config
        .suspicion_after(class, usize::from(config.suspicion_confirmations))
        .as_secs_f64();
    let mut model = Model::new(n, config.clone(), topo.clone(), params.latency, params.seed);
    model.net.set_loss(params.effective_loss());
    let announce_every = (config.announce_period.as_secs_f64() / pp).round().max(1.0) as u64;
    let announce_slot: Vec<u64> = (0..n)
        .map(|_| model.rng.random_range(0..announce_every))
        .collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| model.probe_phase[*a].total_cmp(&model.probe_phase[*b]));
    let phases: Vec<f64> = order
        .iter()
        .map(|&i| f64::from(model.probe_phase[i]))
        .collect();
    let sides = params.partition_sides(dcs);
    let mut run = Cut {
        model,
        names: (0..dcs).map(|d| format!("dc{d}")).collect(),
        reach: (0..n).map(|_| Reach::default()).collect(),
        pending: vec![u32::MAX; n],
        log: ReachLog::default(),
        tally: Tally::default(),
        rumors: RumorTraffic::default(),
        false_positives: 0,
        pairs_heard: 0,
        masks: vec![0; n],
        changes: Vec::new(),
        changed_at: vec![0.0; n],
        shortest,
        probe_period: pp,
        indirect_probes: config.indirect_probes,
        digest_per_probe: DIGEST_ITEM_BYTES * pp / config.member_digest_period.as_secs_f64(),
        topo,
    };
    let (mut cut, mut healed) = (false, false);
    let mut ticks = 0u64;
    let rounds = (end / pp).ceil() as u64;
    for k in 0..rounds {
        for (&i, &phase) in order.iter().zip(&phases) {
            let t = phase + k as f64 * pp;
            if t >= end {
                break;
            }
            if !cut && !healed && t >= cut_at {
                let side = (0..n).map(|i| sides[run.dc(i)]).collect();
                let live: Vec<usize> = (0..n).map(|i| run.dc(i)).collect();
                run.log.cut(at(cut_at), sides.clone(), &live);
                run.pairs_heard = (0..n)
                    .map(|i| {
                        let own = sides[run.dc(i)];
                        (0..dcs)
                            .filter(|&d| sides[d] != own && run.reach[i].has_heard(&run.names[d]))
                            .count() as u64
                    })
                    .sum();
                run.model.net.partition(side);
                cut = true;
            }
            if cut && t >= heal_at {
                run.model.net.heal();
                run.log.heal(at(heal_at));
                (cut, healed) = (false, true);
            }
            run.probe_tick(i, t);
            if k % announce_every == announce_slot[i] {
                run.announce(i, t);
            }
            ticks += 1;
        }
        progress(&Progress {
            nodes: n,
            simulated_s: (k + 1) as f64 * pp,
            end_s: Some(end),
            events: ticks,
        });
    }
    let plan = CutPlan {
        at: cut_at,
        heal: heal_at,
        sides,
        changes: std::mem::take(&mut run.changes),
    };
    Ok((report(run, params, end, ticks), plan))
}

fn report(run: Cut, params: &Params, span: f64, ticks: u64) -> Report {
    let Cut {
        model,
        log,
        mut tally,
        rumors,
        false_positives,
        pairs_heard,
        ..
    } = run;
    // A false suspicion's rumor: its own gossip rounds and the updates on
    // the datagrams that carried it (counted within the datacenter).
    let g = TrafficGroup::Gossip as usize;
    tally.msgs[g] += (rumors.gossip_datagrams + rumors.moved_probes) as f64;
    tally.bytes[g] += (rumors.gossip_datagrams + rumors.moved_probes) as f64 * BASE_DATAGRAM_BYTES
        + rumors.sends as f64 * UPDATE_BYTES;
    let node_seconds = params.nodes as f64 * span;
    let traffic = TrafficGroup::shares(|group| {
        let g = group as usize;
        (tally.msgs[g] / node_seconds, tally.bytes[g] / node_seconds)
    });
    let msgs: f64 = tally.msgs.iter().sum();
    let bytes: f64 = tally.bytes.iter().sum();
    let across: f64 = tally.across_bytes.iter().sum();
    let across_msgs: f64 = tally.across_msgs.iter().sum();
    let locality = Locality {
        within_dc_bytes_per_node_s: (bytes - across) / node_seconds,
        across_dc_bytes_per_node_s: across / node_seconds,
        across_dc_datagram_share: across_msgs / msgs.max(f64::MIN_POSITIVE),
    };
    let reach = log.report().unwrap_or_default();
    let counters = model.net.counters;
    let mut checks = vec![Check {
        name: "fault_partition_fired".into(),
        ok: counters.cut > 0,
        detail: format!("{} datagrams cut", counters.cut),
    }];
    if params.effective_loss() > 0.0 {
        checks.push(Check {
            name: "fault_loss_fired".into(),
            ok: counters.lost > 0,
            detail: format!("{} datagrams lost", counters.lost),
        });
    }
    checks.push(Check {
        name: "cut_seen".into(),
        ok: reach.seen_unreachable > 0 && reach.seen_unreachable == pairs_heard,
        detail: format!(
            "{} of {} (node, datacenter) pairs cut apart saw it; {pairs_heard} had heard from the other side before",
            reach.seen_unreachable, reach.pairs_cut
        ),
    });
    checks.push(Check {
        name: "eventually_reached_again".into(),
        ok: reach.reached_again == reach.seen_unreachable,
        detail: format!(
            "{} of {} pairs that saw the cut reached the other side again",
            reach.reached_again, reach.seen_unreachable
        ),
    });
    checks.push(Check {
        name: "always_unreachable_only_across_the_cut".into(),
        ok: reach.wrong_unreachable == 0,
        detail: format!(
            "{} datacenters seen unreachable wrongly",
            reach.wrong_unreachable
        ),
    });
    let ok = checks.iter().all(|c| c.ok);
    Report {
        nodes: params.nodes,
        scenario: params.scenario.to_string(),
        seed: params.seed,
        mode: Mode::Scale.as_str().into(),
        gossip: params.gossip.clone(),
        command: params.command(),
        sim_s: span,
        events: ticks,
        false_positives,
        false_positives_per_node_hour: false_positives as f64 / (node_seconds / 3600.0),
        locality: Some(locality),
        reach: Some(reach),
        msgs_per_node_s: msgs / node_seconds,
        bytes_per_node_s: bytes / node_seconds,
        traffic,
        net: counters,
        checks,
        ok,
        ..Report::default()
    }
}
