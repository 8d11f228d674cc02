//! Joining by address, and knocking again after isolation.
//!
//! `join(now, peers)` takes addresses, but foca's announce needs the peer's
//! identity. So the joiner sends a sealed `Hello` to each address; the
//! answer `HelloAck` carries the peer's identity, and the joiner announces
//! to it (SWIM's feed and the member-list copy, `paging.rs`, do the rest).
//! Hellos are retried with backoff (`join_backoff_initial` doubling to
//! `join_backoff_max`), each retry reported as [`Event::JoinRetry`].
//!
//! The contract: joining ends when a **join peer** is known alive, not
//! merely when some member is (otherwise a node whose hello was lost,
//! joined *by* a later newcomer, forms a separate cluster with it); after
//! isolation, when any member is. A node that left never joins again. See
//! docs/gossip.md, "Joining".

use core::time::Duration;
use std::net::SocketAddr;

use crate::wire::Body;
use crate::{Instant, NodeIdentity};

use super::timers::TimerKind;
use super::{Event, Membership};

/// Joining under way, or the last one.
#[derive(Debug, Default)]
pub(super) struct JoinState {
    /// The addresses said hello to, sorted, without this node's own.
    pub(super) peers: Vec<SocketAddr>,
    /// The join peer that answered our hello.
    pub(super) acked_by: Option<SocketAddr>,
    /// Whether joining is under way.
    pub(super) active: bool,
    /// Reconnecting after isolation: any live member ends it. Otherwise a
    /// join peer must be alive (see `joined_a_peer`).
    pub(super) reconnect: bool,
    /// Retries so far.
    pub(super) attempt: u32,
    /// Delay before the next retry.
    pub(super) delay: Duration,
}

impl Membership {
    /// Starts joining through `peers` (this node's own address and
    /// duplicates aside); `reconnect` after isolation.
    pub(super) fn start_join(&mut self, now: Instant, peers: &[SocketAddr], reconnect: bool) {
        let mut list: Vec<SocketAddr> = peers
            .iter()
            .copied()
            .filter(|p| *p != self.identity.gossip_addr())
            .collect();
        list.sort();
        list.dedup();
        if list.is_empty() || self.left {
            return;
        }
        self.join = JoinState {
            peers: list,
            acked_by: None,
            active: true,
            reconnect,
            attempt: 0,
            delay: self.config.join_backoff_initial,
        };
        self.send_hellos();
        self.timers
            .schedule(now + self.join.delay, TimerKind::JoinRetry);
    }

    /// Answers a hello with this node's identity.
    pub(super) fn answer_hello(&mut self, from: SocketAddr) {
        let ack = Body::HelloAck {
            identity: self.identity.clone(),
        };
        self.send(from, ack, false);
    }

    /// A join peer answered: announce to it, now that its identity is known.
    pub(super) fn on_hello_ack(&mut self, from: SocketAddr, identity: NodeIdentity) {
        if self.join.active && identity.id != self.identity.id {
            self.join.acked_by = Some(from);
            let _ = self.swim.announce(identity, &mut self.runtime);
        }
    }

    /// Says hello to every join peer.
    fn send_hellos(&mut self) {
        let hello = Body::Hello {
            identity: self.identity.clone(),
        };
        for peer in self.join.peers.clone() {
            self.send(peer, hello.clone(), false);
        }
    }

    /// The join retry timer fired: ends joining if it succeeded, or says
    /// hello again and backs off.
    pub(super) fn join_retry(&mut self, now: Instant) {
        if !self.join.active || self.left {
            return;
        }
        if self.joined_a_peer() || (self.join.reconnect && self.is_connected()) {
            self.join.active = false;
            return;
        }
        self.join.attempt += 1;
        self.join.delay = (self.join.delay * 2).min(self.config.join_backoff_max);
        self.events.push_back(Event::JoinRetry {
            attempt: self.join.attempt,
            peers: self.join.peers.len(),
            next_in: self.join.delay,
        });
        self.send_hellos();
        self.timers
            .schedule(now + self.join.delay, TimerKind::JoinRetry);
    }

    /// Whether one of the join peers is a live member: from then on SWIM
    /// keeps this node in that peer's cluster.
    fn joined_a_peer(&self) -> bool {
        self.swim
            .iter_members()
            .any(|m| self.join.peers.contains(&m.id().gossip_addr()))
    }

    /// Knowing no live member, knock again on the join peers and on the
    /// members this node knew.
    pub(super) fn rejoin_after_isolation(&mut self, now: Instant) {
        let mut peers = self.join.peers.clone();
        // Members that failed may come back; those that left said they
        // would not.
        peers.extend(
            self.swim
                .iter_membership_state()
                .filter(|m| !self.leaves.has_left(m.id()))
                .map(|m| m.id().gossip_addr())
                .take(16),
        );
        self.start_join(now, &peers, true);
    }
}
