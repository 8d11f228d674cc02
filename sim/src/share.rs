//! One copy of what thousands of simulated nodes hold alike.
//!
//! In full mode every node holds every member's metadata record, its
//! placement record and a hash ring over all members: O(N²) copies of
//! things that are, most of the time, equal from node to node. A pool hands
//! out one shared copy per key and forgets it when no node holds it any
//! more, so memory follows what nodes hold *differently*. Nothing about a
//! run changes: a shared copy is equal to the one the node would have built.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};

use shoal_core::InfoShare;
use shoal_gossip::{MemberMeta, MetaShare, NodeId};
use shoal_placement::{NodeInfo, Ring, RingShare};

/// Shared values by key, held weakly: a value lives as long as a node
/// holds it.
pub struct Pool<K, T> {
    map: BTreeMap<K, Weak<T>>,
    /// Size at which dead entries are next swept out.
    sweep_at: usize,
}

impl<K: Ord, T> Default for Pool<K, T> {
    fn default() -> Self {
        Pool {
            map: BTreeMap::new(),
            sweep_at: 1024,
        }
    }
}

impl<K: Ord, T> Pool<K, T> {
    /// The live value of `key`, if some node holds it.
    pub fn get(&self, key: &K) -> Option<Arc<T>> {
        self.map.get(key).and_then(Weak::upgrade)
    }

    /// Makes `value` the shared value of `key`.
    pub fn put(&mut self, key: K, value: &Arc<T>) {
        self.map.insert(key, Arc::downgrade(value));
        if self.map.len() >= self.sweep_at {
            self.map.retain(|_, v| v.strong_count() > 0);
            self.sweep_at = (self.map.len() * 2).max(1024);
        }
    }

    /// The value of `key`: the shared one, or `make()` shared from now on.
    pub fn get_or(&mut self, key: K, make: impl FnOnce() -> T) -> Arc<T> {
        if let Some(v) = self.get(&key) {
            return v;
        }
        let v = Arc::new(make());
        self.put(key, &v);
        v
    }
}

/// Metadata records by `(id, bump, version)`, for every node's membership.
#[derive(Default)]
pub struct MetaPool(Mutex<Pool<(NodeId, u32, u32), MemberMeta>>);

impl MetaShare for MetaPool {
    fn share(
        &self,
        id: NodeId,
        bump: u32,
        version: u32,
        make: &mut dyn FnMut() -> MemberMeta,
    ) -> Arc<MemberMeta> {
        // The simulator is single-threaded: the lock is never contended.
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pool.get_or((id, bump, version), make)
    }
}

/// Placement records, by content, for every node's placer.
#[derive(Default)]
pub struct InfoPool(Mutex<Pool<NodeInfo, NodeInfo>>);

impl InfoShare for InfoPool {
    fn info(&self, info: NodeInfo) -> Arc<NodeInfo> {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(held) = pool.get(&info) {
            return held;
        }
        let held = Arc::new(info.clone());
        pool.put(info, &held);
        held
    }
}

/// Rings by the fingerprint of their member set, for every node's placer.
#[derive(Default)]
pub struct RingPool(Mutex<Pool<u128, Ring>>);

impl RingShare for RingPool {
    fn ring(&self, fingerprint: u128, make: &mut dyn FnMut() -> Ring) -> Arc<Ring> {
        let mut pool = self.0.lock().unwrap_or_else(|e| e.into_inner());
        pool.get_or(fingerprint, make)
    }
}
