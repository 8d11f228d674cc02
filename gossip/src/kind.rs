//! What a datagram is for, so traffic can be counted by purpose.

use foca::{Header, Message};

use crate::NodeIdentity;
use crate::wire::Body;

/// The purpose of a sent datagram: a SWIM message by its kind, or one of
/// the exchanges shoal adds around SWIM. [`crate::Stats`] counts datagrams
/// and bytes sent per kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SendKind {
    /// SWIM probe.
    Ping,
    /// SWIM probe answer.
    Ack,
    /// SWIM: probe this member for me.
    PingReq,
    /// SWIM: a probe on behalf of another member.
    IndirectPing,
    /// SWIM: the answer to an indirect probe.
    IndirectAck,
    /// SWIM: an indirect answer passed back to the member that asked.
    ForwardedAck,
    /// SWIM: updates sent for their own sake (while a node has some).
    Gossip,
    /// SWIM: "send me members" (joining, and periodically).
    Announce,
    /// SWIM: members, the answer to an announce.
    Feed,
    /// SWIM: "you are down to me" to a member that still talks.
    TurnUndead,
    /// SWIM: a custom broadcast (unused by shoal) or an undecodable packet.
    OtherSwim,
    /// Join hello and its answer.
    Hello,
    /// Metadata pulled from a member, and the answer.
    Meta,
    /// Leave queries about members that went down, and the answers.
    Leave,
    /// Member-list pages (join copy).
    MembersPage,
    /// Member-list range digests.
    MemberDigest,
    /// Member-list ranges that differed.
    MemberRanges,
    /// A caller's note to one member (see `Membership::send_note`).
    Note,
    /// A prober's accusation sent straight to the members it asked to
    /// probe indirectly, and their confirmations back (`Body::Accusation`).
    Accusation,
}

impl SendKind {
    /// Every kind, in a fixed order (metrics export all of them).
    pub const ALL: [SendKind; 19] = [
        SendKind::Ping,
        SendKind::Ack,
        SendKind::PingReq,
        SendKind::IndirectPing,
        SendKind::IndirectAck,
        SendKind::ForwardedAck,
        SendKind::Gossip,
        SendKind::Announce,
        SendKind::Feed,
        SendKind::TurnUndead,
        SendKind::OtherSwim,
        SendKind::Hello,
        SendKind::Meta,
        SendKind::Leave,
        SendKind::MembersPage,
        SendKind::MemberDigest,
        SendKind::MemberRanges,
        SendKind::Note,
        SendKind::Accusation,
    ];

    /// A short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SendKind::Ping => "ping",
            SendKind::Ack => "ack",
            SendKind::PingReq => "ping_req",
            SendKind::IndirectPing => "indirect_ping",
            SendKind::IndirectAck => "indirect_ack",
            SendKind::ForwardedAck => "forwarded_ack",
            SendKind::Gossip => "gossip",
            SendKind::Announce => "announce",
            SendKind::Feed => "feed",
            SendKind::TurnUndead => "turn_undead",
            SendKind::OtherSwim => "other_swim",
            SendKind::Hello => "hello",
            SendKind::Meta => "meta",
            SendKind::Leave => "leave",
            SendKind::MembersPage => "members_page",
            SendKind::MemberDigest => "member_digest",
            SendKind::MemberRanges => "member_ranges",
            SendKind::Note => "note",
            SendKind::Accusation => "accusation",
        }
    }

    /// Its position in [`SendKind::ALL`].
    pub fn index(self) -> usize {
        SendKind::ALL
            .iter()
            .position(|k| *k == self)
            .unwrap_or_default()
    }

    /// The kind of a datagram with this body.
    pub(crate) fn of(body: &Body<'_>) -> SendKind {
        match body {
            Body::Swim(bytes) => swim_kind(bytes),
            Body::Hello { .. } | Body::HelloAck { .. } => SendKind::Hello,
            Body::MetaRequest { .. } | Body::MetaResponse { .. } => SendKind::Meta,
            Body::LeaveQuery { .. } | Body::LeaveAnswer { .. } => SendKind::Leave,
            Body::MembersRequest { .. } | Body::MembersPage { .. } => SendKind::MembersPage,
            Body::MemberDigest { .. } => SendKind::MemberDigest,
            // Both repair what SWIM's epidemic missed.
            Body::MemberRanges { .. } | Body::Suspected { .. } => SendKind::MemberRanges,
            Body::Note(_) => SendKind::Note,
            Body::Accusation { .. } => SendKind::Accusation,
        }
    }
}

/// A foca packet's header (foca encodes it with postcard, as the codec
/// the core gives it) and the bytes after it (its updates).
pub(crate) fn swim_header(bytes: &[u8]) -> Option<(Header<NodeIdentity>, &[u8])> {
    postcard::take_from_bytes(bytes).ok()
}

/// A foca packet again from a `header` (changed) and the bytes that came
/// after it.
pub(crate) fn swim_packet(header: &Header<NodeIdentity>, rest: &[u8]) -> Option<Vec<u8>> {
    let mut packet = postcard::to_allocvec(header).ok()?;
    packet.extend_from_slice(rest);
    Some(packet)
}

/// Reads the message kind from a foca packet's header.
fn swim_kind(bytes: &[u8]) -> SendKind {
    match swim_header(bytes) {
        Some((header, _)) => match header.message {
            Message::Ping(_) => SendKind::Ping,
            Message::Ack(_) => SendKind::Ack,
            Message::PingReq { .. } => SendKind::PingReq,
            Message::IndirectPing { .. } => SendKind::IndirectPing,
            Message::IndirectAck { .. } => SendKind::IndirectAck,
            Message::ForwardedAck { .. } => SendKind::ForwardedAck,
            Message::Gossip => SendKind::Gossip,
            Message::Announce => SendKind::Announce,
            Message::Feed => SendKind::Feed,
            Message::TurnUndead => SendKind::TurnUndead,
            Message::Broadcast => SendKind::OtherSwim,
        },
        None => SendKind::OtherSwim,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_index_and_label() {
        let mut labels: Vec<&str> = SendKind::ALL.iter().map(|k| k.as_str()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), SendKind::ALL.len());
        for (i, k) in SendKind::ALL.iter().enumerate() {
            assert_eq!(k.index(), i);
        }
    }

    #[test]
    fn a_foca_packet_is_classified_by_its_message() {
        let id = NodeIdentity::new(crate::NodeId(7), "10.0.0.1:7946".parse().unwrap(), 1);
        let packet = |message| {
            let header = Header {
                src: id.clone(),
                src_incarnation: 0,
                dst: id.clone(),
                message,
            };
            // foca appends the update count and updates after the header.
            let mut bytes = postcard::to_allocvec(&header).unwrap();
            bytes.extend_from_slice(&[0, 0]);
            bytes
        };
        let cases = [
            (Message::Ping(3), SendKind::Ping),
            (Message::Ack(3), SendKind::Ack),
            (
                Message::PingReq {
                    target: id.clone(),
                    probe_number: 1,
                },
                SendKind::PingReq,
            ),
            (Message::Gossip, SendKind::Gossip),
            (Message::TurnUndead, SendKind::TurnUndead),
        ];
        for (message, kind) in cases {
            assert_eq!(SendKind::of(&Body::Swim(&packet(message))), kind);
        }
    }

    #[test]
    fn garbage_swim_bytes_count_as_other() {
        assert_eq!(SendKind::of(&Body::Swim(&[0xff; 3])), SendKind::OtherSwim);
    }
}
