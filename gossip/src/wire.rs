//! What is inside a sealed datagram.
//!
//! ```text
//! Envelope { meta_version, meta_base, free_class, app_digest, items: [Item bytes…], body: Body }
//! ```
//!
//! `app_digest` is an 8-byte summary of the sender's replicated state (the
//! desired state's root digest): a receiver whose own differs knows it
//! should sync with the sender, without any traffic while all agree.
//! `meta_version` is the sender's current metadata version (with the `bump`
//! of the seal header it tells a receiver whether its copy is stale). `items`
//! are piggybacked records that spread epidemically (metadata updates, leave
//! notices); each is encoded on its own so that one bad item does not spoil
//! the rest. `body` is the point-to-point part: a SWIM packet, or one of the
//! small exchanges that shoal adds around SWIM.

use serde::{Deserialize, Serialize};

use crate::{MetaUpdate, NodeId, NodeIdentity};

/// The plaintext of a datagram.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope<'a> {
    pub(crate) meta_version: u32,
    /// The version of the sender's last metadata change other than its
    /// free class, and its free class: a receiver holding `meta_base` or
    /// later brings its copy up to date without pulling the record.
    pub(crate) meta_base: u32,
    pub(crate) free_class: u8,
    pub(crate) app_digest: u64,
    #[serde(borrow)]
    pub(crate) items: Vec<&'a [u8]>,
    #[serde(borrow)]
    pub(crate) body: Body<'a>,
}

/// The point-to-point part of a datagram.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum Body<'a> {
    /// A foca packet.
    Swim(&'a [u8]),
    /// "Who are you?" to a join address; the sender's identity included.
    Hello { identity: NodeIdentity },
    /// The answer: the receiver's identity, so the joiner can announce to it.
    HelloAck { identity: NodeIdentity },
    /// Send me these members' metadata.
    MetaRequest { ids: Vec<NodeId> },
    /// Metadata records.
    MetaResponse { updates: Vec<MetaUpdate> },
    /// Did these members leave on purpose? (Asked about members that went
    /// down without a leave record reaching this node.)
    LeaveQuery { ids: Vec<NodeId> },
    /// The leave records the answering node knows, as `(id, bump)`.
    LeaveAnswer { leaves: Vec<(NodeId, u32)> },
    /// Send me your member list, ordered by id, after `after`.
    MembersRequest { after: Option<NodeId> },
    /// A page of the member list; `done` when it is the last.
    MembersPage {
        members: Vec<foca::Member<NodeIdentity>>,
        done: bool,
    },
    /// Digests of the sender's live members (itself included) in
    /// consecutive id ranges of `len` ids from `start`, one per range (4
    /// bytes each, little-endian: a collision only delays a repair).
    MemberDigest {
        start: u64,
        len: u64,
        digests: Vec<[u8; 4]>,
    },
    /// The sender's live members in `ranges` (`(start, len)`), whose
    /// digests differed, and those it saw go down lately (a down rumor can
    /// miss a node too); with `reply`, send back what the lists lack.
    MemberRanges {
        ranges: Vec<(u64, u64)>,
        members: Vec<NodeIdentity>,
        down: Vec<NodeIdentity>,
        reply: bool,
    },
    /// "You have been suspect here for a long while": sent to a member
    /// this node has held suspect for two suspicion timeouts, which only
    /// happens when the suspicion's rumor never reached it (so it never
    /// refuted) and the prober never declared it down. The member, when
    /// it is this `identity` and `incarnation` is its own, refutes.
    Suspected {
        identity: NodeIdentity,
        incarnation: u16,
    },
    /// Opaque bytes from the caller of the sender's membership to the
    /// caller of this member's (see `Membership::send_note`), handed up as
    /// `Event::Note`. An agent of an earlier version drops the datagram
    /// (a `decode` drop).
    Note(&'a [u8]),
    /// The accusation of member `id` (an `Item::Suspect`, first of the
    /// items), sent by a prober straight to the members it asked to probe
    /// indirectly; a helper that confirms it answers with its own
    /// (`reply`: no answer to it). Without it the accusation and the
    /// confirmations would each wait for gossip to carry them. An agent of
    /// an earlier version drops it (a `decode` drop).
    Accusation { id: NodeId, reply: bool },
}

/// A piggybacked record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Item {
    /// A member's metadata.
    Meta(Box<MetaUpdate>),
    /// A member left on purpose (so its `down` means `left`, not `failed`).
    Leave { id: NodeId, bump: u32 },
    /// A member's free-capacity class changed, and nothing else since
    /// version `base` of its record: a holder of `base` or later applies it
    /// without the whole record (20 bytes instead of a few hundred; these
    /// changes are most of the metadata traffic while tasks are placed).
    Free {
        id: NodeId,
        bump: u32,
        version: u32,
        base: u32,
        class: u8,
    },
    /// The sender's member-list range digests (what `Body::MemberDigest`
    /// carries), riding on a probe rather than in a datagram of their own:
    /// meant for the receiver only, never queued or passed on. A node
    /// that does not know this item skips it (items decode one by one).
    Digest {
        start: u64,
        len: u64,
        digests: Vec<[u8; 4]>,
    },
    /// Members whose own probes of member `id` (life `bump`) at
    /// `incarnation` failed: Lifeguard's independent confirmations of a
    /// suspicion, which shorten its timeout at the members that accused it
    /// (see `membership/suspicion.rs`). At most `suspicion_confirmations + 1`
    /// accusers. A node that does not know this item skips it.
    Suspect {
        id: NodeId,
        bump: u32,
        incarnation: u16,
        accusers: Vec<NodeId>,
    },
}

impl Item {
    /// Items with equal keys replace each other in the piggyback queue.
    pub(crate) fn key(&self) -> (u8, NodeId) {
        match self {
            Item::Meta(m) => (0, m.id),
            Item::Leave { id, .. } => (1, *id),
            Item::Free { id, .. } => (2, *id),
            Item::Digest { start, .. } => (3, NodeId(*start)),
            Item::Suspect { id, .. } => (4, *id),
        }
    }

    /// Keys of queued items this one makes useless: a whole record
    /// carries the free class too.
    pub(crate) fn supersedes(&self) -> Option<(u8, NodeId)> {
        match self {
            Item::Meta(m) => Some((2, m.id)),
            _ => None,
        }
    }
}

pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_allocvec(value).expect("in-memory postcard encoding does not fail")
}

/// `encode(value).len()`, without building the bytes.
pub(crate) fn encoded_len<T: Serialize>(value: &T) -> usize {
    postcard::serialize_with_flavor::<T, _, usize>(value, postcard::ser_flavors::Size::default())
        .expect("sizing a postcard encoding does not fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Capacity, FreeClass, MemberMeta};

    #[test]
    fn a_member_digest_datagram_is_small() {
        let env = Envelope {
            meta_version: 1_000,
            meta_base: 1_000,
            free_class: 8,
            app_digest: u64::MAX,
            items: vec![],
            body: Body::MemberDigest {
                start: u64::MAX,
                len: u64::MAX / 8,
                digests: vec![[0xff; 4]; crate::ranges::RANGES],
            },
        };
        let sealed = encode(&env).len() + crate::seal::SEAL_OVERHEAD;
        // docs/gossip.md and the simulator's scale model count ~110 bytes.
        assert!((100..=120).contains(&sealed), "{sealed} bytes");
    }

    #[test]
    fn a_digest_item_adds_about_fifty_bytes_to_a_probe() {
        let item = Item::Digest {
            start: u64::MAX,
            len: u64::MAX / 8,
            digests: vec![[0xff; 4]; crate::ranges::RANGES],
        };
        // Its bytes and their length prefix (docs/gossip.md and the
        // simulator's scale model count 54).
        let added = encode(&item).len() + 1;
        assert!((50..=58).contains(&added), "{added} bytes");
    }

    #[test]
    fn envelope_round_trip_borrows() {
        let meta = MemberMeta {
            name: "n1".into(),
            gossip_addr: "127.0.0.1:1".parse().unwrap(),
            rpc_addr: "127.0.0.1:2".parse().unwrap(),
            api_addr: "127.0.0.1:3".parse().unwrap(),
            api_tls: false,
            gossip_keys: Vec::new(),
            dc: "dc1".into(),
            zone: String::new(),
            region: String::new(),
            labels: Default::default(),
            capacity: Capacity::default(),
            runtimes: vec![],
            agent_version: "0".into(),
            free_class: FreeClass::IDLE,
            isolation: String::new(),
            draining: false,
        };
        let item = encode(&Item::Meta(Box::new(MetaUpdate {
            id: NodeId(1),
            bump: 1,
            version: 1,
            meta: meta.into(),
        })));
        let swim = vec![1u8, 2, 3, 250];
        let env = Envelope {
            meta_version: 3,
            meta_base: 1,
            free_class: 2,
            app_digest: 9,
            items: vec![&item],
            body: Body::Swim(&swim),
        };
        let bytes = encode(&env);
        assert_eq!(encoded_len(&env), bytes.len());
        let back: Envelope<'_> = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(back.meta_version, 3);
        assert_eq!(back.items, vec![item.as_slice()]);
        match back.body {
            Body::Swim(b) => assert_eq!(b, swim.as_slice()),
            other => panic!("{other:?}"),
        }
    }
}
