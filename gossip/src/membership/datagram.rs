//! The sealed datagram: what every datagram carries around its body, on
//! the way out and on the way in.
//!
//! Out ([`Membership::send`]): the body goes into an envelope with this
//! node's metadata version, its free class and its application digest,
//! topped up with piggybacked items (for SWIM datagrams) to
//! `max_datagram_bytes`, then sealed with a fresh sequence number and
//! counted by kind. In ([`Membership::open`]): a datagram too large, not
//! sealed under a key of this cluster, sent by this node itself, or seen
//! before (the replay window per sender) is dropped and counted by
//! [`DropReason`]; nothing that comes off the network can make this
//! panic. The application digest every datagram carries is compared here
//! too: a differing one is reported as [`Event::DigestDiffers`], at most
//! once per `digest_retry` per member. See docs/gossip.md, "Datagrams"
//! and "The state digest".

use std::collections::BTreeMap;
use std::net::SocketAddr;

use rand_core::Rng;

use crate::kind::SendKind;
use crate::seal::{self, DropReason, PacketSecurity, ReplayWindow, SEAL_OVERHEAD, SealHeader};
use crate::wire::{self, Body, Envelope};
use crate::{Instant, NodeId};

use super::{Event, Membership, Transmit};

/// Sealing and opening: the keys, the sequence of this node's datagrams,
/// and the replay window of every sender.
pub(super) struct Datagrams {
    /// The keys datagrams are sealed and opened with.
    pub(super) security: PacketSecurity,
    /// Sequence number of the last datagram sent.
    seq: u64,
    /// Per sender, the sequence numbers seen lately.
    pub(super) replay: BTreeMap<NodeId, ReplayWindow>,
}

impl Datagrams {
    /// Sealing with `security`, nothing sent or seen yet.
    pub(super) fn new(security: PacketSecurity) -> Datagrams {
        Datagrams {
            security,
            seq: 0,
            replay: BTreeMap::new(),
        }
    }
}

/// The application digest: this node's, and when a differing one was last
/// reported per member.
#[derive(Debug, Default)]
pub(super) struct AppDigest {
    /// This node's (0: none).
    pub(super) own: u64,
    /// When a member's differing digest was last reported.
    pub(super) reported: BTreeMap<NodeId, Instant>,
}

impl Membership {
    /// Opens a datagram received: its header and plaintext, or `None`
    /// when it was dropped (and counted).
    pub(super) fn open(&mut self, datagram: &[u8]) -> Option<(SealHeader, Vec<u8>)> {
        self.stats.count_in(datagram.len());
        if datagram.len() > self.config.max_datagram_bytes.saturating_mul(2) {
            self.stats.count_drop(DropReason::Oversize);
            return None;
        }
        let (header, plaintext) = match seal::open(&self.datagrams.security, datagram) {
            Ok(opened) => opened,
            Err(reason) => {
                self.stats.count_drop(reason);
                return None;
            }
        };
        if header.sender == self.identity.id {
            self.stats.count_drop(DropReason::FromSelf);
            return None;
        }
        if self.forgotten.contains(&header.sender) {
            self.stats.count_drop(DropReason::Forgotten);
            return None;
        }
        if self.config.replay_protection
            && !self
                .datagrams
                .replay
                .entry(header.sender)
                .or_default()
                .accept(header.bump, header.seq)
        {
            self.stats.count_drop(DropReason::Replay);
            return None;
        }
        Some((header, plaintext))
    }

    /// Sends `body` to `to`, counted as what it is; with `with_items`,
    /// topped up with piggybacked items.
    pub(super) fn send(&mut self, to: SocketAddr, body: Body<'_>, with_items: bool) {
        let kind = SendKind::of(&body);
        self.send_as(to, body, kind, with_items, None);
    }

    /// Sends `body` to `to`, counted as `kind`; `lead`, an encoded item
    /// meant for this receiver only (a probe's range digest), goes first,
    /// and with `with_items` piggybacked items fill the rest.
    pub(super) fn send_as(
        &mut self,
        to: SocketAddr,
        body: Body<'_>,
        kind: SendKind,
        with_items: bool,
        lead: Option<&[u8]>,
    ) {
        let mut envelope = Envelope {
            meta_version: self.meta_version,
            meta_base: self.meta_base,
            free_class: self.meta.free_class.0,
            app_digest: self.app_digest.own,
            items: lead.into_iter().collect(),
            body,
        };
        let mut plaintext = wire::encode(&envelope);
        let items = if with_items {
            // Each item costs its bytes plus a length prefix; the item count
            // prefix may grow by a few bytes.
            let budget = self
                .config
                .max_datagram_bytes
                .saturating_sub(SEAL_OVERHEAD + plaintext.len() + 4);
            self.piggyback.fill(budget)
        } else {
            Vec::new()
        };
        if !items.is_empty() {
            envelope.items.extend(items.iter().map(Vec::as_slice));
            plaintext = wire::encode(&envelope);
        }
        self.datagrams.seq += 1;
        let header = SealHeader {
            sender: self.identity.id,
            bump: self.identity.bump,
            seq: self.datagrams.seq,
            salt: self.rng.next_u32(),
        };
        let payload = seal::seal(&self.datagrams.security, &header, &plaintext);
        self.stats.count_out(kind, payload.len());
        self.transmits.push_back(Transmit { to, payload, kind });
    }

    /// Reports a member whose application digest differs from this node's
    /// (neither being 0), at most once per `digest_retry`.
    pub(super) fn check_sender_digest(&mut self, now: Instant, sender: NodeId, digest: u64) {
        if digest == self.app_digest.own || digest == 0 || self.app_digest.own == 0 {
            return;
        }
        let retry = self.config.digest_retry;
        let recent = self
            .app_digest
            .reported
            .get(&sender)
            .is_some_and(|t| now.saturating_duration_since(*t) < retry);
        if recent {
            return;
        }
        self.app_digest.reported.insert(sender, now);
        self.events
            .push_back(Event::DigestDiffers { id: sender, digest });
    }
}
