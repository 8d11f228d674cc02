//! Who a member is: a stable node id, where it listens, and which start of it
//! this is.

use core::fmt;
use core::str::FromStr;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

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
/// `id` never changes; [`NodeIdentity::gossip_addr`] is the address this
/// life listens on;
/// `bump` grows every time the node starts (it is kept in the data dir) and
/// every time it has to rejoin after being declared down. Two identities with
/// the same `id` conflict: the one with the larger `(bump, addr)` wins, so a
/// restarted node replaces its previous life everywhere.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct NodeIdentity {
    /// Permanent node id.
    pub id: NodeId,
    /// Gossip (UDP) address of this life.
    addr: PeerAddr,
    /// Start counter of this life.
    pub bump: u32,
}

impl NodeIdentity {
    /// A new identity.
    pub fn new(id: NodeId, addr: SocketAddr, bump: u32) -> Self {
        NodeIdentity {
            id,
            addr: PeerAddr::from(addr),
            bump,
        }
    }

    /// The gossip (UDP) address of this life.
    pub fn gossip_addr(&self) -> SocketAddr {
        self.addr.into()
    }
}

/// A gossip address held in 19 bytes instead of a `SocketAddr`'s 32.
///
/// Every node holds one identity per member, twice (SWIM's member list and
/// the core's records), so at 10,000 members the difference is a few MB
/// per node and most of a simulator's memory (see docs/simulation.md). An
/// IPv6 address's flow info and scope id are not kept: a gossip address is
/// one other nodes send to, and a scope id means nothing on another host.
/// It serializes exactly as the `SocketAddr` it stands for, and orders as
/// it does (IPv4 before IPv6, then address, then port), so conflicts
/// between lives resolve as they always did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct PeerAddr {
    v6: bool,
    ip: [u8; 16],
    port: u16,
}

impl From<SocketAddr> for PeerAddr {
    fn from(addr: SocketAddr) -> Self {
        let mut ip = [0u8; 16];
        let v6 = match addr.ip() {
            IpAddr::V4(v4) => {
                ip[..4].copy_from_slice(&v4.octets());
                false
            }
            IpAddr::V6(v6) => {
                ip = v6.octets();
                true
            }
        };
        PeerAddr {
            v6,
            ip,
            port: addr.port(),
        }
    }
}

impl From<PeerAddr> for SocketAddr {
    fn from(addr: PeerAddr) -> Self {
        let ip = if addr.v6 {
            IpAddr::V6(Ipv6Addr::from(addr.ip))
        } else {
            IpAddr::V4(Ipv4Addr::new(
                addr.ip[0], addr.ip[1], addr.ip[2], addr.ip[3],
            ))
        };
        SocketAddr::new(ip, addr.port)
    }
}

impl Serialize for PeerAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SocketAddr::from(*self).serialize(s)
    }
}

impl<'de> Deserialize<'de> for PeerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SocketAddr::deserialize(d).map(PeerAddr::from)
    }
}

impl fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}#{}", self.id, self.gossip_addr(), self.bump)
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
    fn a_peer_address_round_trips_orders_and_encodes_as_a_socket_addr() {
        let addrs: Vec<SocketAddr> = [
            "10.0.0.1:7946",
            "10.0.0.1:80",
            "9.255.255.255:65535",
            "127.0.0.1:0",
            "[::1]:7946",
            "[2001:db8::1]:1",
            "[::ffff:10.0.0.1]:7946",
        ]
        .iter()
        .map(|a| a.parse().unwrap())
        .collect();
        for a in &addrs {
            let p = PeerAddr::from(*a);
            assert_eq!(SocketAddr::from(p), *a);
            assert_eq!(
                postcard::to_allocvec(&p).unwrap(),
                postcard::to_allocvec(a).unwrap(),
                "{a}: same bytes on the wire as before"
            );
            let back: PeerAddr = postcard::from_bytes(&postcard::to_allocvec(a).unwrap()).unwrap();
            assert_eq!(back, p);
            for b in &addrs {
                assert_eq!(p.cmp(&PeerAddr::from(*b)), a.cmp(b), "{a} vs {b}");
            }
        }
        assert!(std::mem::size_of::<NodeIdentity>() <= 32);
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
