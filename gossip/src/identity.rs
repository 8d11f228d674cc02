//! Who a member is: a stable node id, where it listens, and which start of it
//! this is.

use core::fmt;
use core::str::FromStr;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// A node's permanent id: 64 random bits chosen when its data dir was
/// created. Shown as 16 lowercase hex digits.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A string that is not a node id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a node id: {0:?} (expected 16 hex digits)")]
pub struct ParseNodeIdError(pub String);

impl FromStr for NodeId {
    type Err = ParseNodeIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ParseNodeIdError(s.to_owned()));
        }
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| ParseNodeIdError(s.to_owned()))
    }
}

/// One life of a node as SWIM sees it.
///
/// `id` never changes; `addr` is the gossip address this life listens on;
/// `bump` grows every time the node starts (it is kept in the data dir) and
/// every time it has to rejoin after being declared down. Two identities with
/// the same `id` conflict: the one with the larger `(bump, addr)` wins, so a
/// restarted node replaces its previous life everywhere.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Permanent node id.
    pub id: NodeId,
    /// Gossip (UDP) address of this life.
    pub addr: SocketAddr,
    /// Start counter of this life.
    pub bump: u32,
}

impl NodeIdentity {
    /// A new identity.
    pub fn new(id: NodeId, addr: SocketAddr, bump: u32) -> Self {
        NodeIdentity { id, addr, bump }
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.id, self.addr, self.bump)
    }
}

impl foca::Identity for NodeIdentity {
    type Addr = NodeId;

    fn renew(&self) -> Option<Self> {
        // Returning a new identity lets foca rejoin by itself after the
        // cluster declared this life down (a false positive, a long pause).
        self.bump.checked_add(1).map(|bump| NodeIdentity {
            id: self.id,
            addr: self.addr,
            bump,
        })
    }

    fn addr(&self) -> NodeId {
        self.id
    }

    fn win_addr_conflict(&self, adversary: &Self) -> bool {
        (self.bump, self.addr) > (adversary.bump, adversary.addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foca::Identity;

    #[test]
    fn node_id_round_trips_through_hex() {
        let id = NodeId(0x00ab_cdef_0123_4567);
        assert_eq!(id.to_string(), "00abcdef01234567");
        assert_eq!("00abcdef01234567".parse::<NodeId>(), Ok(id));
        assert!("xyz".parse::<NodeId>().is_err());
        assert!("00abcdef0123456".parse::<NodeId>().is_err());
        assert!("+0abcdef01234567".parse::<NodeId>().is_err());
    }

    #[test]
    fn later_life_wins() {
        let a = NodeIdentity::new(NodeId(1), "127.0.0.1:1000".parse().unwrap(), 3);
        let b = a.renew().unwrap();
        assert_eq!(b.bump, 4);
        assert!(b.win_addr_conflict(&a));
        assert!(!a.win_addr_conflict(&b));
        let moved = NodeIdentity::new(NodeId(1), "127.0.0.1:999".parse().unwrap(), 4);
        assert!(
            moved.win_addr_conflict(&a),
            "a higher bump wins even from a lower address"
        );
    }
}
