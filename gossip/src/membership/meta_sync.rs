//! Member metadata: this node's own record, and the copies of every other
//! member's, kept current.
//!
//! Each member publishes a small record ([`MemberMeta`]) versioned by
//! `(bump, version)`. A **change** spreads as a piggybacked item, passed on
//! by every node that replaces an older copy with it; a change of the free
//! class alone travels as a compact `Item::Free` applied on top of the
//! copy it follows (`base`). A **newcomer's** record is pulled, not
//! gossiped: a node that learns of a member without its record asks, after
//! `meta_grace`, whoever told it about the member, then the member itself,
//! then random members ([`Want`], the periodic `meta_sync`). And every
//! datagram carries its sender's current version, so a copy that gossip
//! missed is pulled from the sender itself (`check_sender_meta`).
//!
//! The contract: a held record only ever moves to a larger `(bump,
//! version)`; [`Membership::meta_is_stale`] says whether a member's record
//! must still be pulled, and a pull is forgotten as soon as it is not.
//! Records may be shared between the memberships of one process
//! ([`MetaShare`]). See docs/gossip.md, "Member metadata".

use core::time::Duration;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::ENVELOPE_OVERHEAD;
use crate::meta::{FreeClass, MAX_META_BYTES, MemberMeta, MetaShare, MetaUpdate};
use crate::packed::Packed;
use crate::seal::{DropReason, SEAL_OVERHEAD, SealHeader};
use crate::wire::{self, Body, Item};
use crate::{Instant, NodeId};

use super::{Event, Membership, MetaTooLarge};

/// Members ids asked for in one metadata request.
pub(super) const META_REQUEST_MAX_IDS: usize = 64;
/// Member ids asked for per metadata sync round, all requests together.
const META_SYNC_MAX_IDS: usize = 256;

/// A copy of a member's record, with its version.
#[derive(Debug, Clone)]
pub(super) struct MetaRecord {
    pub(super) bump: u32,
    pub(super) version: u32,
    pub(super) meta: Arc<MemberMeta>,
}

/// A record (or, in `leaves.rs`, a leave notice) this node is asking
/// about, and how that has gone so far.
#[derive(Debug)]
pub(super) struct Want {
    /// When this node began to want it.
    pub(super) since: Instant,
    /// Questions sent so far.
    pub(super) asked: u32,
    /// When the last one was sent.
    pub(super) last_asked: Option<Instant>,
    /// A node likely to have the record (the one whose member list we
    /// copied), asked first.
    pub(super) hint: Option<SocketAddr>,
}

impl Want {
    /// Not asked yet.
    pub(super) fn new(now: Instant) -> Want {
        Want {
            since: now,
            asked: 0,
            last_asked: None,
            hint: None,
        }
    }
}

/// The copies of other members' records, and the pulls under way.
#[derive(Default)]
pub(super) struct Metas {
    /// The records held, by member.
    pub(super) held: Packed<NodeId, MetaRecord>,
    /// Where records are shared with other memberships of the process.
    pub(super) share: Option<Arc<dyn MetaShare>>,
    /// Record versions heard of (in a free-class change that could not be
    /// applied) but not held: pulled like a missing record.
    pub(super) behind: BTreeMap<NodeId, (u32, u32)>,
    /// Members whose record is missing or stale, to pull.
    pub(super) wanted: BTreeMap<NodeId, Want>,
}

impl Metas {
    /// Record `(id, bump, version)`, from the shared copies when there are.
    fn shared(
        &self,
        id: NodeId,
        bump: u32,
        version: u32,
        make: &mut dyn FnMut() -> MemberMeta,
    ) -> Arc<MemberMeta> {
        match &self.share {
            Some(share) => share.share(id, bump, version, make),
            None => Arc::new(make()),
        }
    }
}

/// Refuses a record of this node that would not fit in a datagram.
pub(super) fn check_meta_size(meta: &MemberMeta) -> Result<(), MetaTooLarge> {
    let size = meta.encoded_len();
    if size > MAX_META_BYTES {
        Err(MetaTooLarge {
            size,
            max: MAX_META_BYTES,
        })
    } else {
        Ok(())
    }
}

impl Membership {
    /// Takes `meta` as this node's record: a change of the free class
    /// alone goes out as a compact item, any other as the whole record.
    pub(super) fn change_own_meta(&mut self, meta: MemberMeta) {
        if *self.meta == meta {
            return;
        }
        let only_free_class = MemberMeta {
            free_class: meta.free_class,
            ..(*self.meta).clone()
        } == meta;
        self.meta = Arc::new(meta);
        self.meta_version += 1;
        if only_free_class {
            let item = Item::Free {
                id: self.identity.id,
                bump: self.identity.bump,
                version: self.meta_version,
                base: self.meta_base,
                class: self.meta.free_class.0,
            };
            let tx = self.transmissions();
            self.piggyback.add(&item, tx);
        } else {
            self.meta_base = self.meta_version;
            self.publish_own_meta();
        }
    }

    /// Queues this node's whole record for piggybacking.
    pub(super) fn publish_own_meta(&mut self) {
        let update = MetaUpdate {
            id: self.identity.id,
            bump: self.identity.bump,
            version: self.meta_version,
            meta: Arc::clone(&self.meta),
        };
        let tx = self.transmissions();
        self.piggyback.add(&Item::Meta(Box::new(update)), tx);
    }

    /// Applies an item that rode on a datagram or came in an answer:
    /// metadata records and free-class changes here, leave records in
    /// `leaves.rs`. With `spread`, news is passed on by piggybacking.
    pub(super) fn apply_item(&mut self, now: Instant, item: Item, spread: bool) {
        match item {
            Item::Meta(update) => {
                if update.id == self.identity.id {
                    return;
                }
                let newer = self
                    .metas
                    .held
                    .get(&update.id)
                    .is_none_or(|r| (r.bump, r.version) < update.key());
                if !newer {
                    return;
                }
                if update.meta.encoded_len() > MAX_META_BYTES {
                    return self.stats.count_drop(DropReason::Decode);
                }
                let id = update.id;
                // Only a *change* spreads by gossip: it must reach every node
                // that holds the old record. A record this node never had
                // is a newcomer's; every node pulls those (from whoever told
                // it about the newcomer), which costs each record once per
                // node instead of once per transmission.
                let replaces = self.metas.held.contains_key(&id);
                if spread && replaces {
                    let tx = self.transmissions();
                    self.piggyback.add(&Item::Meta(update.clone()), tx);
                }
                let MetaUpdate {
                    bump,
                    version,
                    meta,
                    ..
                } = *update;
                let mut meta = Some(meta);
                let meta = self.metas.shared(id, bump, version, &mut || {
                    let meta = meta.take().unwrap_or_else(|| unreachable!("made once"));
                    Arc::unwrap_or_clone(meta)
                });
                self.metas.held.insert(
                    id,
                    MetaRecord {
                        bump,
                        version,
                        meta,
                    },
                );
                self.caught_up(id);
                self.events.push_back(Event::MetaChanged { id });
            }
            Item::Free {
                id,
                bump,
                version,
                base,
                class,
            } => {
                if id == self.identity.id {
                    return;
                }
                // A member whose record this node lacks is pulled whole.
                let Some(held) = self.metas.held.get(&id) else {
                    return;
                };
                if (held.bump, held.version) >= (bump, version) {
                    return;
                }
                if spread {
                    let tx = self.transmissions();
                    let item = Item::Free {
                        id,
                        bump,
                        version,
                        base,
                        class,
                    };
                    self.piggyback.add(&item, tx);
                }
                if held.bump == bump && held.version >= base {
                    let held = Arc::clone(&held.meta);
                    let meta = self.metas.shared(id, bump, version, &mut || MemberMeta {
                        free_class: FreeClass(class),
                        ..(*held).clone()
                    });
                    self.metas.held.insert(
                        id,
                        MetaRecord {
                            bump,
                            version,
                            meta,
                        },
                    );
                    self.caught_up(id);
                    self.events.push_back(Event::MetaChanged { id });
                } else {
                    // A change of another field was missed: pull the record.
                    let newest = self.metas.behind.entry(id).or_insert((bump, version));
                    *newest = (*newest).max((bump, version));
                    self.want_meta(now, id);
                }
            }
            Item::Leave { id, bump } => self.apply_leave(now, id, bump, spread),
            // Answered where its sender is known (`handle_datagram`); it
            // never travels on its own.
            Item::Digest { .. } => {}
            Item::Suspect {
                id,
                bump,
                incarnation,
                accusers,
            } => self.on_accusation(now, id, (bump, incarnation), &accusers, spread),
        }
    }

    /// Forgets a pending pull of `id`'s record once the record held is
    /// current.
    fn caught_up(&mut self, id: NodeId) {
        let held = self.metas.held.get(&id).map(|r| (r.bump, r.version));
        if self.metas.behind.get(&id).is_some_and(|k| held >= Some(*k)) {
            self.metas.behind.remove(&id);
        }
        if self.metas.wanted.contains_key(&id) && !self.meta_is_stale(id) {
            self.metas.wanted.remove(&id);
        }
    }

    /// Whether member `id`'s record must still be pulled: missing, of an
    /// older life than the member's, or older than a version heard of.
    pub(super) fn meta_is_stale(&self, id: NodeId) -> bool {
        if let Some(newest) = self.metas.behind.get(&id) {
            let held = self.metas.held.get(&id).map(|r| (r.bump, r.version));
            if held < Some(*newest) {
                return true;
            }
        }
        let Some(record) = self.records.get(&id) else {
            return !self.metas.held.contains_key(&id);
        };
        self.metas
            .held
            .get(&id)
            .is_none_or(|m| m.bump < record.identity.bump)
    }

    /// Marks member `id`'s record to be pulled (if it is not already).
    pub(super) fn want_meta(&mut self, now: Instant, id: NodeId) {
        self.metas.wanted.entry(id).or_insert(Want::new(now));
    }

    /// Every datagram says which version of its sender's metadata is
    /// current; an older or missing copy is pulled from the sender itself.
    pub(super) fn check_sender_meta(
        &mut self,
        now: Instant,
        header: &SealHeader,
        (version, base, class): (u32, u32, u8),
        from: SocketAddr,
    ) {
        if version == 0 {
            return;
        }
        let stale = self
            .metas
            .held
            .get(&header.sender)
            .is_none_or(|r| (r.bump, r.version) < (header.bump, version));
        if !stale {
            return;
        }
        // Only the free class moved since the copy held: take it from the
        // datagram, as from a gossiped free-class item.
        let only_free_class = self
            .metas
            .held
            .get(&header.sender)
            .is_some_and(|r| r.bump == header.bump && r.version >= base);
        if only_free_class {
            let free = Item::Free {
                id: header.sender,
                bump: header.bump,
                version,
                base,
                class,
            };
            self.apply_item(now, free, false);
            return;
        }
        let recent = self
            .metas
            .wanted
            .get(&header.sender)
            .and_then(|w| w.last_asked)
            .is_some_and(|t| now.saturating_duration_since(t) < self.config.meta_sync_period);
        if recent {
            return;
        }
        let want = self
            .metas
            .wanted
            .entry(header.sender)
            .or_insert(Want::new(now));
        want.asked += 1;
        want.last_asked = Some(now);
        let request = Body::MetaRequest {
            ids: vec![header.sender],
        };
        self.send(from, request, false);
    }

    /// Sends `to` the records held of `ids` (the first
    /// [`META_REQUEST_MAX_IDS`]), as many per datagram as fit.
    pub(super) fn answer_meta_request(&mut self, to: SocketAddr, ids: &[NodeId]) {
        let mut updates: Vec<MetaUpdate> = Vec::new();
        for id in ids.iter().take(META_REQUEST_MAX_IDS) {
            if *id == self.identity.id {
                updates.push(MetaUpdate {
                    id: *id,
                    bump: self.identity.bump,
                    version: self.meta_version,
                    meta: Arc::clone(&self.meta),
                });
            } else if let Some(r) = self.metas.held.get(id) {
                updates.push(MetaUpdate {
                    id: *id,
                    bump: r.bump,
                    version: r.version,
                    meta: Arc::clone(&r.meta),
                });
            }
        }
        // As many records per datagram as fit.
        let room = self
            .config
            .max_datagram_bytes
            .saturating_sub(SEAL_OVERHEAD + ENVELOPE_OVERHEAD);
        let mut batch: Vec<MetaUpdate> = Vec::new();
        let mut size = 0;
        for update in updates {
            let len = wire::encoded_len(&update);
            if !batch.is_empty() && size + len > room {
                let body = Body::MetaResponse {
                    updates: core::mem::take(&mut batch),
                };
                self.send(to, body, false);
                size = 0;
            }
            size += len;
            batch.push(update);
        }
        if !batch.is_empty() {
            self.send(to, Body::MetaResponse { updates: batch }, false);
        }
    }

    /// Asks for metadata that gossip did not bring within `meta_grace`:
    /// first from the member itself, then from random live members.
    pub(super) fn meta_sync(&mut self, now: Instant) {
        let grace = self.config.meta_grace;
        let retry_after = self.config.meta_sync_period * 2;
        let mut due: Vec<NodeId> = Vec::new();
        let mut gone: Vec<NodeId> = Vec::new();
        for (id, want) in &self.metas.wanted {
            if !self.records.contains_key(id)
                && now.saturating_duration_since(want.since) > Duration::from_secs(60)
            {
                gone.push(*id);
                continue;
            }
            if now.saturating_duration_since(want.since) < grace {
                continue;
            }
            if want
                .last_asked
                .is_some_and(|t| now.saturating_duration_since(t) < retry_after)
            {
                continue;
            }
            due.push(*id);
            if due.len() >= META_SYNC_MAX_IDS {
                break;
            }
        }
        for id in gone {
            self.metas.wanted.remove(&id);
        }
        let mut by_dest: BTreeMap<SocketAddr, Vec<NodeId>> = BTreeMap::new();
        for id in due {
            if !self.meta_is_stale(id) {
                self.metas.wanted.remove(&id);
                continue;
            }
            let Some(want) = self.metas.wanted.get_mut(&id) else {
                continue;
            };
            want.asked += 1;
            want.last_asked = Some(now);
            let own = self.records.get(&id).map(|r| r.identity.gossip_addr());
            // First the node we copied the member list from, then the
            // member itself, then random live members.
            let fixed: Vec<SocketAddr> = want.hint.into_iter().chain(own).collect();
            let attempt = usize::try_from(want.asked - 1).unwrap_or(usize::MAX);
            let dest = match fixed.get(attempt) {
                Some(addr) => Some(*addr),
                None => self.random_up(None).or(own),
            };
            if let Some(dest) = dest {
                by_dest.entry(dest).or_default().push(id);
            }
        }
        for (dest, ids) in by_dest {
            for chunk in ids.chunks(META_REQUEST_MAX_IDS) {
                let body = Body::MetaRequest {
                    ids: chunk.to_vec(),
                };
                self.send(dest, body, false);
            }
        }
        self.ask_about_unexplained_downs(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacity, Config, NodeIdentity, PacketSecurity};

    fn meta(name: &str, class: u8) -> MemberMeta {
        let addr: SocketAddr = "10.0.0.2:5481".parse().unwrap();
        MemberMeta {
            name: name.into(),
            gossip_addr: addr,
            rpc_addr: addr,
            api_addr: addr,
            api_tls: false,
            gossip_keys: Vec::new(),
            dc: "dc1".into(),
            zone: String::new(),
            region: String::new(),
            labels: BTreeMap::new(),
            capacity: Capacity::default(),
            runtimes: vec![],
            agent_version: "0".into(),
            free_class: FreeClass(class),
            isolation: String::new(),
            draining: false,
        }
    }

    fn node() -> Membership {
        let identity = NodeIdentity::new(NodeId(1), "10.0.0.1:5481".parse().unwrap(), 1);
        let security = PacketSecurity::sealed(&[3; 32]);
        Membership::new(
            Instant::ZERO,
            identity,
            meta("a", 8),
            Config::test(),
            security,
            1,
        )
        .unwrap()
    }

    fn full(version: u32, name: &str, class: u8) -> Item {
        Item::Meta(Box::new(MetaUpdate {
            id: NodeId(2),
            bump: 1,
            version,
            meta: Arc::new(meta(name, class)),
        }))
    }

    fn free(version: u32, base: u32, class: u8) -> Item {
        Item::Free {
            id: NodeId(2),
            bump: 1,
            version,
            base,
            class,
        }
    }

    fn held(m: &Membership) -> (u32, String, u8) {
        let r = &m.metas.held[&NodeId(2)];
        (r.version, r.meta.name.clone(), r.meta.free_class.0)
    }

    #[test]
    fn free_class_changes_apply_on_top_of_the_record_they_follow() {
        let mut m = node();
        let now = Instant::ZERO;
        m.apply_item(now, full(1, "b", 8), true);
        m.apply_item(now, free(2, 1, 6), true);
        m.apply_item(now, free(4, 1, 3), true);
        assert_eq!(held(&m), (4, "b".into(), 3));
        assert!(!m.meta_is_stale(NodeId(2)));
        // Older news changes nothing.
        m.apply_item(now, free(3, 1, 5), true);
        assert_eq!(held(&m), (4, "b".into(), 3));
    }

    #[test]
    fn a_missed_change_of_another_field_is_pulled_whole() {
        let mut m = node();
        let now = Instant::ZERO;
        m.apply_item(now, full(1, "b", 8), true);
        // Version 2 renamed the node; it never arrived. Version 3 only
        // moved the free class, on top of version 2.
        m.apply_item(now, free(3, 2, 4), true);
        assert_eq!(held(&m), (1, "b".into(), 8), "not applied across a gap");
        assert!(m.meta_is_stale(NodeId(2)), "the record must be pulled");
        assert!(m.metas.wanted.contains_key(&NodeId(2)));
        // Version 2 arriving is not enough: 3 is known to exist.
        m.apply_item(now, full(2, "b2", 8), false);
        assert!(m.meta_is_stale(NodeId(2)));
        // The pulled record (version 3) settles it.
        m.apply_item(now, full(3, "b2", 4), false);
        assert_eq!(held(&m), (3, "b2".into(), 4));
        assert!(!m.meta_is_stale(NodeId(2)));
        assert!(!m.metas.wanted.contains_key(&NodeId(2)));
    }

    #[test]
    fn own_free_class_changes_go_out_compact() {
        let mut m = node();
        let now = Instant::ZERO;
        m.set_meta(
            now,
            MemberMeta {
                free_class: FreeClass(5),
                ..(*m.meta).clone()
            },
        )
        .unwrap();
        let queued: Vec<Item> = m
            .piggyback
            .entries()
            .map(|e| postcard::from_bytes(&e.data).unwrap())
            .collect();
        assert!(
            queued.contains(&Item::Free {
                id: NodeId(1),
                bump: 1,
                version: 2,
                base: 1,
                class: 5
            }),
            "{queued:?}"
        );
        let compact = m.piggyback.entries().find(|e| e.key.0 == 2).unwrap();
        assert!(compact.data.len() <= 24, "{} bytes", compact.data.len());
        // A change of another field sends the whole record, which replaces
        // the queued free-class change.
        m.set_meta(
            now,
            MemberMeta {
                draining: true,
                ..(*m.meta).clone()
            },
        )
        .unwrap();
        assert!(m.piggyback.entries().all(|e| e.key.0 != 2));
        assert_eq!((m.meta_version, m.meta_base), (3, 3));
    }
}
