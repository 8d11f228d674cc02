//! What every member tells every other member about itself.
//!
//! The record is small and changes rarely (a label edit, a runtime appearing,
//! the coarse free-capacity class moving). It is versioned by
//! `(bump, version)`: `bump` is the life of the node that published it,
//! `version` counts changes within that life.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::NodeId;

/// Largest encoded [`MemberMeta`], in bytes. A record must fit in one
/// datagram next to the envelope; labels are the usual reason to hit it.
pub const MAX_META_BYTES: usize = 1024;

/// Resources a node offers to the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    /// CPU in thousandths of a core (`2000` = 2 cores).
    pub cpus_milli: u32,
    /// Memory in MiB.
    pub memory_mb: u64,
    /// Disk in MiB (the file system of the data dir).
    pub disk_mb: u64,
    /// Number of GPUs.
    pub gpus: u32,
}

/// A task runtime a node can run (`process`, `docker`), with its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeInfo {
    /// Runtime name.
    pub name: String,
    /// Version of the runtime (the engine's version for docker).
    pub version: String,
}

/// Coarse free capacity: eighths of the scarcest resource that are still
/// free, `0` (full) to `8` (idle). Coarse on purpose: it travels by gossip,
/// which carries only rare changes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FreeClass(pub u8);

impl FreeClass {
    /// An idle node.
    pub const IDLE: FreeClass = FreeClass(8);

    /// The class of `free` out of `total` (the caller passes the scarcest
    /// resource). A node with no capacity at all is full.
    pub fn from_fraction(free: u64, total: u64) -> FreeClass {
        if total == 0 {
            return FreeClass(0);
        }
        let eighths = free.min(total).saturating_mul(8) / total;
        FreeClass(u8::try_from(eighths).unwrap_or(8))
    }
}

/// The metadata record of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberMeta {
    /// Human name (defaults to the host name).
    pub name: String,
    /// Gossip address (UDP).
    pub gossip_addr: SocketAddr,
    /// RPC address (QUIC, UDP).
    pub rpc_addr: SocketAddr,
    /// HTTP API address (TCP).
    pub api_addr: SocketAddr,
    /// Whether the API speaks HTTPS (certificate of the cluster's API CA);
    /// `false` with `--api-insecure`, where it speaks plain HTTP.
    pub api_tls: bool,
    /// Datacenter.
    pub dc: String,
    /// Zone within the datacenter.
    pub zone: String,
    /// Region the datacenter belongs to.
    pub region: String,
    /// Free-form labels.
    pub labels: BTreeMap<String, String>,
    /// Resources offered.
    pub capacity: Capacity,
    /// Runtimes available on the node.
    pub runtimes: Vec<RuntimeInfo>,
    /// Version of the shoal agent.
    pub agent_version: String,
    /// Coarse free capacity.
    pub free_class: FreeClass,
    /// How tasks are isolated: `cgroup-v2`, `cgroup-v1` or `none`.
    pub isolation: String,
    /// Not taking new tasks (drained).
    pub draining: bool,
    /// Ids of the gossip keys the member opens datagrams with, the one it
    /// seals with first (`shoal keyring list` counts them).
    pub gossip_keys: Vec<u32>,
}

impl MemberMeta {
    /// Encoded size in bytes.
    pub fn encoded_len(&self) -> usize {
        crate::wire::encoded_len(self)
    }
}

/// A metadata record as it travels: whose, which version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaUpdate {
    /// The member the record describes.
    pub id: NodeId,
    /// The life of that member that published it.
    pub bump: u32,
    /// Change counter within that life (starts at 1).
    pub version: u32,
    /// The record (shared: a node answering pulls sends the record it
    /// holds without copying it).
    pub meta: Arc<MemberMeta>,
}

impl MetaUpdate {
    /// The ordering key: a record replaces another of the same member only
    /// when its key is larger.
    pub fn key(&self) -> (u32, u32) {
        (self.bump, self.version)
    }
}

/// Shares equal metadata records between the memberships of one process.
///
/// An agent runs one membership and needs none. The simulator runs
/// thousands, each holding every member's record; handing them one
/// [`MetaShare`] ([`Membership::share_metas`](crate::Membership::share_metas))
/// keeps each record once per process instead of once per node.
pub trait MetaShare: Send + Sync {
    /// The one copy of record `version` of member `id` in its life `bump`
    /// (a record is identified by these three: every change of it bumps
    /// `version`). `make` builds it when no copy is held.
    fn share(
        &self,
        id: NodeId,
        bump: u32,
        version: u32,
        make: &mut dyn FnMut() -> MemberMeta,
    ) -> std::sync::Arc<MemberMeta>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_class_is_coarse() {
        assert_eq!(FreeClass::from_fraction(0, 100), FreeClass(0));
        assert_eq!(FreeClass::from_fraction(12, 100), FreeClass(0));
        assert_eq!(FreeClass::from_fraction(13, 100), FreeClass(1));
        assert_eq!(FreeClass::from_fraction(50, 100), FreeClass(4));
        assert_eq!(FreeClass::from_fraction(100, 100), FreeClass::IDLE);
        assert_eq!(FreeClass::from_fraction(200, 100), FreeClass::IDLE);
        assert_eq!(FreeClass::from_fraction(5, 0), FreeClass(0));
    }
}
