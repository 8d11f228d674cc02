//! Sealing gossip datagrams.
//!
//! Every datagram is encrypted and authenticated with XChaCha20-Poly1305
//! under a key derived (HKDF-SHA256) from the cluster secret. Layout:
//!
//! ```text
//! 0      1          5                                            29
//! +------+----------+---------------------------------------------+----------------+-----+
//! | 0x01 | key id   | nonce: sender id (8) | bump (4) | seq (8) | salt (4) | ciphertext | tag |
//! +------+----------+---------------------------------------------+----------------+-----+
//! ```
//!
//! The 29-byte header is the associated data, so the sender fields cannot be
//! forged without the key. The nonce is unique per datagram because it holds
//! the sender's id, its life (`bump`) and a per-life sequence number, plus 32
//! seeded random bits against a copied data dir. The receiver keeps a sliding
//! window of sequence numbers per sender and drops replays.
//!
//! The key id (the first 4 bytes of an HKDF output, not secret) lets a
//! receiver hold several keys while a secret is rotated; a datagram under a
//! key it does not hold is dropped as [`DropReason::UnknownKey`].

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{Key, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;

use crate::NodeId;

/// Format version of a sealed datagram.
pub const SEAL_VERSION: u8 = 1;
/// Bytes before the ciphertext.
pub const HEADER_LEN: usize = 1 + 4 + 24;
/// Bytes a sealed datagram adds to its plaintext.
pub const SEAL_OVERHEAD: usize = HEADER_LEN + 16;

/// Why a datagram was dropped. Every drop is counted by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Shorter than a sealed header and tag.
    Truncated,
    /// Larger than the configured datagram size.
    Oversize,
    /// Unknown format version.
    Version,
    /// Sealed under a key this node does not hold (another cluster, most
    /// likely).
    UnknownKey,
    /// Failed authentication: tampered, or forged with a guessed key id.
    Auth,
    /// A sequence number already seen from that sender, or from an older
    /// life of it.
    Replay,
    /// Authentic, but the plaintext does not decode.
    Decode,
    /// Authentic, from this very node (a loop, or a reflected packet).
    FromSelf,
    /// Decoded, but the SWIM layer rejected its content (or it was
    /// addressed to another identity, which foca ignores).
    Swim,
    /// From a node forgotten for good (`shoal node forget`).
    Forgotten,
}

impl DropReason {
    /// Every reason, in a fixed order (metrics export all of them).
    pub const ALL: [DropReason; 10] = [
        DropReason::Truncated,
        DropReason::Oversize,
        DropReason::Version,
        DropReason::UnknownKey,
        DropReason::Auth,
        DropReason::Replay,
        DropReason::Decode,
        DropReason::FromSelf,
        DropReason::Swim,
        DropReason::Forgotten,
    ];

    /// A short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Truncated => "truncated",
            DropReason::Oversize => "oversize",
            DropReason::Version => "version",
            DropReason::UnknownKey => "unknown_key",
            DropReason::Auth => "auth",
            DropReason::Replay => "replay",
            DropReason::Decode => "decode",
            DropReason::FromSelf => "from_self",
            DropReason::Swim => "swim",
            DropReason::Forgotten => "forgotten",
        }
    }

    pub(crate) fn index(self) -> usize {
        DropReason::ALL
            .iter()
            .position(|r| *r == self)
            .unwrap_or_default()
    }
}

/// One gossip key, derived from a cluster secret.
#[derive(Clone)]
pub struct GossipKey {
    id: u32,
    cipher: XChaCha20Poly1305,
}

impl core::fmt::Debug for GossipKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "GossipKey({:08x})", self.id)
    }
}

impl GossipKey {
    /// Derives the gossip key of `secret`. `generation` numbers the keys of
    /// one cluster (0 until secrets are rotated).
    pub fn derive(secret: &[u8; 32], generation: u32) -> GossipKey {
        let hk = Hkdf::<Sha256>::new(Some(b"shoal gossip v1"), secret);
        let mut key = [0u8; 32];
        let mut info = b"gossip key ".to_vec();
        info.extend_from_slice(&generation.to_be_bytes());
        hk.expand(&info, &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        let mut id = [0u8; 4];
        let mut id_info = b"gossip key id ".to_vec();
        id_info.extend_from_slice(&generation.to_be_bytes());
        hk.expand(&id_info, &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        GossipKey {
            id: u32::from_be_bytes(id),
            cipher: XChaCha20Poly1305::new(&Key::from(key)),
        }
    }

    /// A key of the keyring (`shoal keyring install`): 32 random bytes.
    /// Its id is derived from it, so every node names it alike.
    pub fn from_key(key: &[u8; 32]) -> GossipKey {
        let hk = Hkdf::<Sha256>::new(Some(b"shoal gossip keyring v1"), key);
        let mut id = [0u8; 4];
        hk.expand(b"gossip key id", &mut id)
            .expect("4 bytes is a valid HKDF-SHA256 output length");
        GossipKey {
            id: u32::from_be_bytes(id),
            cipher: XChaCha20Poly1305::new(&Key::from(*key)),
        }
    }

    /// The public key id carried by every datagram.
    pub fn id(&self) -> u32 {
        self.id
    }
}

/// How datagrams are protected.
#[derive(Clone, Debug)]
pub enum PacketSecurity {
    /// Sealed with `primary`; opened with `primary` or any of `accepted`
    /// (keys still honoured during a rotation).
    Sealed {
        /// Key used to seal outgoing datagrams.
        primary: GossipKey,
        /// Further keys accepted on input.
        accepted: Vec<GossipKey>,
    },
    /// Same header, no encryption and a zero tag: for the simulator, where
    /// the cost of encryption would only slow the run. The agent never uses
    /// it.
    InsecurePlaintext,
}

impl PacketSecurity {
    /// The id of the key that seals (0 for plaintext).
    pub fn primary_id(&self) -> u32 {
        match self {
            PacketSecurity::Sealed { primary, .. } => primary.id,
            PacketSecurity::InsecurePlaintext => 0,
        }
    }

    /// The ids of every key that opens, the primary's first.
    pub fn key_ids(&self) -> Vec<u32> {
        match self {
            PacketSecurity::Sealed { primary, accepted } => core::iter::once(primary)
                .chain(accepted)
                .map(|k| k.id)
                .collect(),
            PacketSecurity::InsecurePlaintext => vec![0],
        }
    }

    /// Sealing with the key of `secret`.
    pub fn sealed(secret: &[u8; 32]) -> PacketSecurity {
        PacketSecurity::Sealed {
            primary: GossipKey::derive(secret, 0),
            accepted: Vec::new(),
        }
    }
}

/// The authenticated sender fields of a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SealHeader {
    /// Sending node.
    pub sender: NodeId,
    /// The sender's life.
    pub bump: u32,
    /// Per-life sequence number.
    pub seq: u64,
    /// Random salt.
    pub salt: u32,
}

impl SealHeader {
    fn nonce(&self) -> [u8; 24] {
        let mut n = [0u8; 24];
        n[0..8].copy_from_slice(&self.sender.0.to_be_bytes());
        n[8..12].copy_from_slice(&self.bump.to_be_bytes());
        n[12..20].copy_from_slice(&self.seq.to_be_bytes());
        n[20..24].copy_from_slice(&self.salt.to_be_bytes());
        n
    }

    fn from_nonce(n: &[u8]) -> SealHeader {
        let u64_at = |i: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&n[i..i + 8]);
            u64::from_be_bytes(b)
        };
        let u32_at = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&n[i..i + 4]);
            u32::from_be_bytes(b)
        };
        SealHeader {
            sender: NodeId(u64_at(0)),
            bump: u32_at(8),
            seq: u64_at(12),
            salt: u32_at(20),
        }
    }
}

/// Seals `plaintext` into a datagram.
pub fn seal(security: &PacketSecurity, header: &SealHeader, plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    let key_id = match security {
        PacketSecurity::Sealed { primary, .. } => primary.id,
        PacketSecurity::InsecurePlaintext => 0,
    };
    out.push(SEAL_VERSION);
    out.extend_from_slice(&key_id.to_be_bytes());
    out.extend_from_slice(&header.nonce());
    let body_at = out.len();
    out.extend_from_slice(plaintext);
    match security {
        PacketSecurity::Sealed { primary, .. } => {
            let (aad, body) = out.split_at_mut(body_at);
            let nonce = XNonce::from(header.nonce());
            let tag = primary
                .cipher
                .encrypt_inout_detached(&nonce, aad, body.into())
                .expect("XChaCha20-Poly1305 seals any datagram-sized buffer");
            out.extend_from_slice(tag.as_slice());
        }
        PacketSecurity::InsecurePlaintext => out.extend_from_slice(&[0u8; 16]),
    }
    out
}

/// Opens a datagram: checks the header, finds the key, authenticates and
/// decrypts. Returns the sender fields and the plaintext.
pub fn open(
    security: &PacketSecurity,
    datagram: &[u8],
) -> Result<(SealHeader, Vec<u8>), DropReason> {
    if datagram.len() < SEAL_OVERHEAD {
        return Err(DropReason::Truncated);
    }
    if datagram[0] != SEAL_VERSION {
        return Err(DropReason::Version);
    }
    let mut key_id = [0u8; 4];
    key_id.copy_from_slice(&datagram[1..5]);
    let key_id = u32::from_be_bytes(key_id);
    let header = SealHeader::from_nonce(&datagram[5..HEADER_LEN]);
    let (aad, rest) = datagram.split_at(HEADER_LEN);
    let (ciphertext, tag) = rest.split_at(rest.len() - 16);
    match security {
        PacketSecurity::Sealed { primary, accepted } => {
            let key = core::iter::once(primary)
                .chain(accepted.iter())
                .find(|k| k.id == key_id)
                .ok_or(DropReason::UnknownKey)?;
            let mut body = ciphertext.to_vec();
            let nonce = XNonce::from(header.nonce());
            let tag = Tag::try_from(tag).map_err(|_| DropReason::Truncated)?;
            key.cipher
                .decrypt_inout_detached(&nonce, aad, body.as_mut_slice().into(), &tag)
                .map_err(|_| DropReason::Auth)?;
            Ok((header, body))
        }
        PacketSecurity::InsecurePlaintext => {
            if key_id != 0 {
                return Err(DropReason::UnknownKey);
            }
            Ok((header, ciphertext.to_vec()))
        }
    }
}

/// Sequence numbers seen from one sender: the highest, and a bitmap of the
/// 64 before it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayWindow {
    bump: u32,
    top: u64,
    seen: u64,
}

impl ReplayWindow {
    /// Records `(bump, seq)`; false when it is a replay (or older than the
    /// window, or from an older life).
    pub(crate) fn accept(&mut self, bump: u32, seq: u64) -> bool {
        if bump < self.bump {
            return false;
        }
        if bump > self.bump || (self.top == 0 && self.seen == 0) {
            *self = ReplayWindow {
                bump,
                top: seq,
                seen: 1,
            };
            return true;
        }
        if seq > self.top {
            let shift = seq - self.top;
            self.seen = if shift >= 64 { 0 } else { self.seen << shift };
            self.seen |= 1;
            self.top = seq;
            true
        } else {
            let back = self.top - seq;
            if back >= 64 {
                return false;
            }
            let bit = 1u64 << back;
            if self.seen & bit != 0 {
                false
            } else {
                self.seen |= bit;
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(seq: u64) -> SealHeader {
        SealHeader {
            sender: NodeId(7),
            bump: 2,
            seq,
            salt: 99,
        }
    }

    #[test]
    fn seal_then_open() {
        let sec = PacketSecurity::sealed(&[1u8; 32]);
        let dgram = seal(&sec, &header(5), b"hello");
        assert_eq!(dgram.len(), SEAL_OVERHEAD + 5);
        let (h, body) = open(&sec, &dgram).unwrap();
        assert_eq!(h, header(5));
        assert_eq!(body, b"hello");
    }

    #[test]
    fn another_cluster_is_an_unknown_key() {
        let ours = PacketSecurity::sealed(&[1u8; 32]);
        let theirs = PacketSecurity::sealed(&[2u8; 32]);
        let dgram = seal(&theirs, &header(1), b"hello");
        assert_eq!(open(&ours, &dgram), Err(DropReason::UnknownKey));
    }

    #[test]
    fn tampering_fails_authentication() {
        let sec = PacketSecurity::sealed(&[1u8; 32]);
        let dgram = seal(&sec, &header(1), b"hello");
        for i in 5..dgram.len() {
            let mut bad = dgram.clone();
            bad[i] ^= 0x40;
            assert_eq!(open(&sec, &bad), Err(DropReason::Auth), "byte {i}");
        }
        assert_eq!(open(&sec, &dgram[..10]), Err(DropReason::Truncated));
        let mut bad = dgram.clone();
        bad[0] = 9;
        assert_eq!(open(&sec, &bad), Err(DropReason::Version));
    }

    #[test]
    fn keys_differ_by_generation_and_secret() {
        let a = GossipKey::derive(&[1u8; 32], 0);
        let b = GossipKey::derive(&[1u8; 32], 1);
        let c = GossipKey::derive(&[2u8; 32], 0);
        assert_ne!(a.id(), b.id());
        assert_ne!(a.id(), c.id());
        assert_eq!(a.id(), GossipKey::derive(&[1u8; 32], 0).id());
    }

    #[test]
    fn replay_window() {
        let mut w = ReplayWindow::default();
        assert!(w.accept(1, 10));
        assert!(!w.accept(1, 10), "exact replay");
        assert!(w.accept(1, 12));
        assert!(w.accept(1, 11), "late but new");
        assert!(!w.accept(1, 11));
        assert!(w.accept(1, 200));
        assert!(!w.accept(1, 100), "older than the window");
        assert!(!w.accept(0, 500), "older life");
        assert!(w.accept(2, 1), "a new life starts over");
        assert!(!w.accept(2, 1));
    }
}
