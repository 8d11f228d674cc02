//! Copying a member's whole member list, page by page, after joining;
//! and serving such copies to others.
//!
//! SWIM's feed, the answer to a join announce, carries only what fits in
//! one datagram (about 30 members). So a node that becomes connected asks
//! one member for its list (`MembersRequest { after }`) and gets it back
//! in pages ordered by id (`MembersPage { members, done }`), each applied
//! with foca's `apply_many` without re-broadcasting: copied knowledge, not
//! news. Each page is asked for up to [`MEMBER_SYNC_ATTEMPTS`] times. A
//! second copy, from another random member, follows once the join news of
//! the moment has settled: members that joined just before the first copy
//! may not have reached that peer yet. The answering side sorts its list
//! once per copy and serves the following pages from that snapshot for
//! [`MEMBER_SNAPSHOT_TTL`].
//!
//! The contract: one copy is under way at a time, and a retry timer of a
//! page that is no longer the one awaited does nothing (pages carry a
//! generation). Members copied without their metadata record are pulled
//! from the node that sent the page (see `meta_sync.rs`). See
//! docs/gossip.md, "Joining".

use core::time::Duration;
use std::net::SocketAddr;

use crate::config::ENVELOPE_OVERHEAD;
use crate::seal::SEAL_OVERHEAD;
use crate::wire::{self, Body};
use crate::{Instant, NodeId, NodeIdentity};

use super::Membership;
use super::meta_sync::Want;
use super::timers::TimerKind;

/// Requests of one member-list page before giving up.
const MEMBER_SYNC_ATTEMPTS: u32 = 5;
/// How long a sorted member list is reused to serve pages.
const MEMBER_SNAPSHOT_TTL: Duration = Duration::from_secs(2);

/// Copying a peer's member list, page by page, after joining.
#[derive(Debug)]
struct MemberSync {
    /// 1 for the copy right after joining, 2 for the follow-up.
    round: u8,
    /// The member copied from.
    peer: SocketAddr,
    /// The last id of the pages received so far.
    after: Option<NodeId>,
    /// Requests of the page awaited so far.
    attempts: u32,
    /// Generation, so that a late retry timer of an older page is ignored.
    page: u64,
}

/// A sorted copy of the member list, kept briefly to serve pages.
#[derive(Debug)]
struct MemberSnapshot {
    /// When it was sorted.
    built: Instant,
    /// Every member this node knows, itself included, ordered by id.
    members: Vec<foca::Member<NodeIdentity>>,
}

/// The member-list copy under way, and the snapshot served to others.
#[derive(Debug, Default)]
pub(super) struct Paging {
    /// The copy this node is making, if any.
    sync: Option<MemberSync>,
    /// The sorted list this node serves pages from, while fresh.
    snapshot: Option<MemberSnapshot>,
}

impl Paging {
    /// Drops a snapshot older than [`MEMBER_SNAPSHOT_TTL`].
    pub(super) fn expire_snapshot(&mut self, now: Instant) {
        if self
            .snapshot
            .as_ref()
            .is_some_and(|s| now.saturating_duration_since(s.built) >= MEMBER_SNAPSHOT_TTL)
        {
            self.snapshot = None;
        }
    }
}

impl Membership {
    /// Begins the first copy, from `peer`.
    pub(super) fn start_member_sync(&mut self, now: Instant, peer: SocketAddr) {
        self.start_member_sync_round(now, peer, 1);
    }

    /// Begins copy `round` (1 or 2) from `peer`, replacing any under way.
    fn start_member_sync_round(&mut self, now: Instant, peer: SocketAddr, round: u8) {
        let page = self.paging.sync.as_ref().map_or(0, |s| s.page) + 1;
        self.paging.sync = Some(MemberSync {
            round,
            peer,
            after: None,
            attempts: 0,
            page,
        });
        self.request_member_page(now);
    }

    /// The second copy, from a random member other than `previous` (the
    /// peer of the first), unless a copy is under way.
    pub(super) fn member_sync_follow_up(&mut self, now: Instant, previous: SocketAddr) {
        if self.paging.sync.is_none()
            && let Some(peer) = self.random_up(Some(previous))
        {
            self.start_member_sync_round(now, peer, 2);
        }
    }

    /// Asks for the next page of the copy under way, with a retry timer.
    fn request_member_page(&mut self, now: Instant) {
        let Some(sync) = self.paging.sync.as_mut() else {
            return;
        };
        sync.attempts += 1;
        sync.page += 1;
        let (peer, after, page) = (sync.peer, sync.after, sync.page);
        self.send(peer, Body::MembersRequest { after }, false);
        let wait = self.config.probe_rtt * 2;
        self.timers
            .schedule(now + wait, TimerKind::MemberSyncRetry(page));
    }

    /// The retry timer of page generation `page` fired: asks again, or
    /// gives up after [`MEMBER_SYNC_ATTEMPTS`]; a stale timer does nothing.
    pub(super) fn member_sync_retry(&mut self, now: Instant, page: u64) {
        let Some(sync) = &self.paging.sync else {
            return;
        };
        if sync.page != page {
            return;
        }
        if sync.attempts >= MEMBER_SYNC_ATTEMPTS {
            // Give up; SWIM's periodic feeds keep repairing the list.
            self.paging.sync = None;
            return;
        }
        self.request_member_page(now);
    }

    /// Sends `to` the page of this node's member list after `after`.
    pub(super) fn answer_members_request(
        &mut self,
        now: Instant,
        to: SocketAddr,
        after: Option<NodeId>,
    ) {
        // A new copy gets a fresh list; its following pages reuse it (they
        // are found by id, so a change in between costs nothing but
        // freshness).
        let fresh = after.is_some()
            && self
                .paging
                .snapshot
                .as_ref()
                .is_some_and(|s| now.saturating_duration_since(s.built) < MEMBER_SNAPSHOT_TTL);
        if !fresh {
            let mut members: Vec<foca::Member<NodeIdentity>> =
                self.swim.iter_membership_state().cloned().collect();
            members.push(foca::Member::alive(self.identity.clone()));
            members.sort_by_key(|m| m.id().id);
            self.paging.snapshot = Some(MemberSnapshot {
                built: now,
                members,
            });
        }
        let Some(snapshot) = &self.paging.snapshot else {
            return;
        };
        let start = match after {
            None => 0,
            Some(id) => snapshot.members.partition_point(|m| m.id().id <= id),
        };
        let room = self
            .config
            .max_datagram_bytes
            .saturating_sub(SEAL_OVERHEAD + ENVELOPE_OVERHEAD);
        let mut page = Vec::new();
        let mut size = 0;
        for m in &snapshot.members[start..] {
            let len = wire::encoded_len(m);
            if size + len > room {
                break;
            }
            size += len;
            page.push(m.clone());
        }
        let done = start + page.len() >= snapshot.members.len();
        if done {
            // A copy usually has one reader: its room (O(N)) is given back
            // now rather than after the TTL, which matters when thousands
            // of nodes join at once (each then serves a copy).
            self.paging.snapshot = None;
        }
        self.send(
            to,
            Body::MembersPage {
                members: page,
                done,
            },
            false,
        );
    }

    /// Applies a page of the copy under way and asks for the next, or ends
    /// the copy (scheduling the follow-up after the first).
    pub(super) fn on_members_page(
        &mut self,
        now: Instant,
        from: SocketAddr,
        members: Vec<foca::Member<NodeIdentity>>,
        done: bool,
    ) {
        let Some(sync) = &self.paging.sync else {
            return;
        };
        if sync.peer != from {
            return;
        }
        let last = members.last().map(|m| m.id().id);
        let others: Vec<foca::Member<NodeIdentity>> = members
            .into_iter()
            .filter(|m| m.id().id != self.identity.id)
            .collect();
        let ids: Vec<NodeId> = others.iter().map(|m| m.id().id).collect();
        // Knowledge copied from a peer is not news to the cluster: no
        // re-broadcast.
        let _ = self
            .swim
            .apply_many(others.into_iter(), false, &mut self.runtime);
        for id in ids {
            if self.meta_is_stale(id) {
                let want = self.metas.wanted.entry(id).or_insert(Want::new(now));
                want.hint = Some(from);
            }
        }
        if done || last.is_none() {
            let finished = self.paging.sync.take();
            // Members that joined just before our copy may not have reached
            // the peer yet, and their join news is over by now: copy again,
            // from someone else, once that news has settled.
            if let Some(MemberSync { round: 1, peer, .. }) = finished {
                let delay = (self.config.gossip_period * 20).max(self.config.probe_period * 2);
                self.timers
                    .schedule(now + delay, TimerKind::MemberSyncFollowUp(peer));
            }
            return;
        }
        if let Some(sync) = self.paging.sync.as_mut() {
            sync.after = last;
            sync.attempts = 0;
        }
        self.request_member_page(now);
    }
}
