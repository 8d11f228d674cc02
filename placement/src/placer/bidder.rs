//! The bidder role: answers the bid requests of other nodes' auctions
//! from what this node has free, and holds what it bid for a short while.
//!
//! Contract: a bid reserves the task's demand until the coordinator
//! awards the task (the runner then holds it), cancels the auction, or the
//! reservation's time ([`PlacementConfig::reservation_ttl`]) runs out, so
//! that two auctions in flight never both count on the same free room. A
//! decline says why, in words a person reads in the task's pending status.
//! The bidder judges by this node's exact free capacity, not by the coarse
//! class gossip carries.
//!
//! Static ports are a resource too: the bidder declines a task whose
//! `static` port a task held here holds or will hold, or an open bid
//! reserved, or that a start here found taken by a program shoal does not
//! run (remembered for [`PORT_IN_USE_MEMORY`]). Whether a port is free on
//! the machine is not known here (that is I/O): it is found at start.
//! Ports from the node's range count like a resource: the bidder declines
//! a task whose ports without `static` would not fit in what the range
//! has left after the tasks held and bid for here
//! ([`PlacementConfig::host_ports`]).
//!
//! [`PlacementConfig::host_ports`]: crate::PlacementConfig::host_ports
//!
//! [`PlacementConfig::reservation_ttl`]: crate::PlacementConfig::reservation_ttl

use std::collections::BTreeMap;
use std::time::Duration;

use shoal_gossip::Instant;
use shoal_model::JobSpec;

use super::msg::Answer;
use super::runner::Runner;
use super::{Shared, held};
use crate::types::{NodeInfo, Resources, TaskKey};

/// Resources bid for a task, held until `until`.
#[derive(Clone, Debug)]
struct Reservation {
    demand: Resources,
    until: Instant,
    /// Its static host ports.
    ports: Vec<u16>,
    /// Host ports it takes from the node's range.
    ranged: usize,
}

/// How long a static port found taken at start (by a program shoal does
/// not run) keeps this node from bidding for tasks that want it.
pub(crate) const PORT_IN_USE_MEMORY: Duration = Duration::from_secs(60);

/// This node's open bids.
#[derive(Debug, Default)]
pub(super) struct Bidder {
    reservations: BTreeMap<TaskKey, Reservation>,
    /// Static ports a start found taken, until when they are declined,
    /// and the reason shown.
    ports_in_use: BTreeMap<u16, (Instant, String)>,
}

/// The static host ports of `spec`, and their names.
fn static_ports(spec: &JobSpec) -> Vec<(u16, &str)> {
    spec.task
        .ports
        .iter()
        .filter_map(|p| p.static_port.map(|n| (n, p.name.as_str())))
        .collect()
}

/// How many host ports `spec`'s task takes from the node's range (its
/// named ports without `static`).
pub(super) fn ranged_ports(spec: &JobSpec) -> usize {
    spec.task
        .ports
        .iter()
        .filter(|p| p.static_port.is_none())
        .count()
}

impl Bidder {
    /// Answers a coordinator's request to run `key` (needing `demand`, as
    /// `spec` says), reserving `demand` when it bids.
    pub(super) fn answer(
        &mut self,
        shared: &Shared,
        runner: &Runner,
        now: Instant,
        key: &TaskKey,
        demand: Resources,
        spec: &JobSpec,
    ) -> Answer {
        if shared.draining {
            return Answer::Decline("draining".into());
        }
        if let Some(f) = shared.finished(key) {
            // The asking coordinator's replica lacks the record yet.
            return Answer::Decline(super::runner::finished_reason(shared, f));
        }
        if let Some(me) = shared.view.member(shared.me) {
            let mut me = NodeInfo::clone(me);
            // Judge by exact capacity here, not the coarse gossip class.
            me.free_class = 8;
            if let Err(why) = shared.view.eligible(&me, spec, &demand) {
                return Answer::Decline(why);
            }
        }
        let wanted = static_ports(spec);
        if let Some(why) = self.port_conflict(runner, now, key, &wanted) {
            return Answer::Decline(why);
        }
        let ranged = ranged_ports(spec);
        if ranged > 0 && !runner.has(key) {
            let held = runner.ranged_ports_held(key)
                + self
                    .reservations
                    .iter()
                    .filter(|(k, r)| *k != key && r.until > now && !runner.has(k))
                    .map(|(_, r)| r.ranged)
                    .sum::<usize>();
            let total = shared.config.host_ports as usize;
            if held + ranged > total {
                return Answer::Decline(format!(
                    "no free host port: {held} of the {total} of its --port-range are held, the task needs {ranged}"
                ));
            }
        }
        if runner.has(key) && !runner.runs(key) {
            // Its previous copy is still stopping here (a rolling
            // deployment that found no other node with room): one copy of
            // a key per node.
            return Answer::Decline("still stopping its previous copy".into());
        }
        if runner.runs(key) {
            // Already running it here: bid (a re-auction after a lost lease).
            let score = shared.capacity.free_permille(&held(runner, self, None));
            return Answer::Bid {
                score,
                job_tasks: 0,
                spread_value: None,
            };
        }
        let free = shared.capacity.minus(&held(runner, self, Some(key)));
        if let Err(why) = free.fits(&demand) {
            return Answer::Decline(why);
        }
        let after = held(runner, self, Some(key)).plus(&demand);
        let score = shared.capacity.free_permille(&after);
        let job_tasks = u32::try_from(
            runner.tasks_of(&key.job)
                + self
                    .reservations
                    .keys()
                    .filter(|k| k.job == key.job && *k != key)
                    .count(),
        )
        .unwrap_or(u32::MAX);
        let spread_value = spec.spread.as_ref().and_then(|attr| {
            let attr = attr.strip_prefix("label.").unwrap_or(attr);
            shared
                .view
                .member(shared.me)
                .and_then(|m| m.attribute(attr))
        });
        self.reservations.insert(
            key.clone(),
            Reservation {
                demand,
                until: now + shared.config.reservation_ttl,
                ports: wanted.iter().map(|(p, _)| *p).collect(),
                ranged,
            },
        );
        Answer::Bid {
            score,
            job_tasks,
            spread_value,
        }
    }

    /// Why `key`'s task cannot have its static ports (`wanted`) here, if
    /// it cannot.
    fn port_conflict(
        &self,
        runner: &Runner,
        now: Instant,
        key: &TaskKey,
        wanted: &[(u16, &str)],
    ) -> Option<String> {
        if wanted.is_empty() {
            return None;
        }
        let numbers: Vec<u16> = wanted.iter().map(|(p, _)| *p).collect();
        let name = |port: u16| {
            wanted
                .iter()
                .find(|(p, _)| *p == port)
                .map_or("", |(_, n)| *n)
        };
        for (port, (until, reason)) in &self.ports_in_use {
            if *until > now && numbers.contains(port) {
                return Some(reason.clone());
            }
        }
        if let Some((port, other)) = runner.port_taken(key, &numbers) {
            return Some(format!("port {port} ({}) in use by {other}", name(port)));
        }
        self.reservations
            .iter()
            .filter(|(k, r)| *k != key && r.until > now && !runner.has(k))
            .find_map(|(k, r)| {
                r.ports
                    .iter()
                    .find(|p| numbers.contains(p))
                    .map(|p| (*p, k))
            })
            .map(|(port, other)| format!("port {port} ({}) reserved for {other}", name(port)))
    }

    /// A start here found static `port` taken by a program shoal does not
    /// run: tasks that want it are declined for [`PORT_IN_USE_MEMORY`],
    /// with `reason`.
    pub(super) fn port_in_use(&mut self, now: Instant, port: u16, reason: String) {
        self.ports_in_use
            .insert(port, (now + PORT_IN_USE_MEMORY, reason));
    }

    /// Gives up the reservation of `key` (its auction is over), unless the
    /// runner holds the task by now.
    pub(super) fn cancel(&mut self, runner: &Runner, key: &TaskKey) {
        if !runner.has(key) {
            self.reservations.remove(key);
        }
    }

    /// Ends the reservation of `key`: the task is awarded here (the
    /// runner holds it from now on, or rejects it).
    pub(super) fn release(&mut self, key: &TaskKey) {
        self.reservations.remove(key);
    }

    /// Drops the reservations whose time ran out: whether any did.
    pub(super) fn expire(&mut self, now: Instant) -> bool {
        let reserved = self.reservations.len();
        self.reservations.retain(|_, r| r.until > now);
        self.ports_in_use.retain(|_, (until, _)| *until > now);
        self.reservations.len() != reserved
    }

    /// Drops every reservation (the node drains).
    pub(super) fn clear(&mut self) {
        self.reservations.clear();
    }

    /// Resources reserved, but for `except`'s and those of tasks the
    /// runner holds by now (counted there).
    pub(super) fn reserved(&self, runner: &Runner, except: Option<&TaskKey>) -> Resources {
        let mut used = Resources::default();
        for (k, r) in &self.reservations {
            if Some(k) != except && !runner.has(k) {
                used = used.plus(&r.demand);
            }
        }
        used
    }
}
