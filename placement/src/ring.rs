//! The hash ring over alive members.
//!
//! Each member has `vnodes` points at `xxh3_64_with_seed(id ‖ i, RING_SEED)`.
//! A key's owner (its coordinator) is the member of the first point at or
//! after the key's hash, wrapping around; its candidates are the distinct
//! members met walking on from there. Two nodes with the same member list
//! compute the same ring, whatever their build: the hash and its seeds are
//! fixed.

use shoal_gossip::NodeId;

/// Seed of ring points.
pub const RING_SEED: u64 = 0x5348_4f41_4c52_494e; // "SHOALRIN"

/// A consistent-hashing ring.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ring {
    points: Vec<(u64, NodeId)>,
    members: usize,
}

fn point(node: NodeId, i: u32) -> u64 {
    let mut bytes = [0u8; 12];
    bytes[..8].copy_from_slice(&node.0.to_be_bytes());
    bytes[8..].copy_from_slice(&i.to_be_bytes());
    xxhash_rust::xxh3::xxh3_64_with_seed(&bytes, RING_SEED)
}

impl Ring {
    /// The ring of `members`, `vnodes` points each.
    pub fn new(members: impl IntoIterator<Item = NodeId>, vnodes: u32) -> Ring {
        let mut ids: Vec<NodeId> = members.into_iter().collect();
        ids.sort();
        ids.dedup();
        let mut points: Vec<(u64, NodeId)> = ids
            .iter()
            .flat_map(|id| (0..vnodes.max(1)).map(move |i| (point(*id, i), *id)))
            .collect();
        points.sort();
        Ring {
            points,
            members: ids.len(),
        }
    }

    /// Adds a member not yet on the ring (no-op when it is): the same ring
    /// as [`Ring::new`] with it, at the cost of its own points.
    pub fn insert(&mut self, node: NodeId, vnodes: u32) {
        let first = point(node, 0);
        let at = self.points.partition_point(|p| *p < (first, node));
        if self.points.get(at) == Some(&(first, node)) {
            return;
        }
        for i in 0..vnodes.max(1) {
            let p = (point(node, i), node);
            let at = self.points.partition_point(|q| *q < p);
            self.points.insert(at, p);
        }
        self.members += 1;
    }

    /// Removes a member (no-op when it is not on the ring).
    pub fn remove(&mut self, node: NodeId) {
        let before = self.points.len();
        self.points.retain(|(_, id)| *id != node);
        if self.points.len() != before {
            self.members -= 1;
        }
    }

    /// Members on the ring.
    pub fn len(&self) -> usize {
        self.members
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.members == 0
    }

    fn start(&self, hash: u64) -> usize {
        let i = self.points.partition_point(|(p, _)| *p < hash);
        if i == self.points.len() { 0 } else { i }
    }

    /// The coordinator of a key hash.
    pub fn owner(&self, hash: u64) -> Option<NodeId> {
        if self.points.is_empty() {
            return None;
        }
        Some(self.points[self.start(hash)].1)
    }

    /// Distinct members clockwise from `hash`, the owner first.
    pub fn walk(&self, hash: u64) -> impl Iterator<Item = NodeId> + '_ {
        let start = if self.points.is_empty() {
            0
        } else {
            self.start(hash)
        };
        let n = self.points.len();
        let mut seen = std::collections::BTreeSet::new();
        (0..n).filter_map(move |k| {
            let id = self.points[(start + k) % n].1;
            seen.insert(id).then_some(id)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn owner_is_first_of_walk_and_walk_visits_all() {
        let ring = Ring::new((1..=10).map(NodeId), 16);
        for h in [0u64, 1, u64::MAX / 3, u64::MAX] {
            let walk: Vec<NodeId> = ring.walk(h).collect();
            assert_eq!(walk.len(), 10);
            assert_eq!(Some(walk[0]), ring.owner(h));
        }
        assert_eq!(Ring::new([], 16).owner(5), None);
    }

    #[test]
    fn keys_spread_over_members() {
        let ring = Ring::new((1..=10).map(NodeId), 64);
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..10_000u32 {
            let h = crate::TaskKey::index("job", i).hash();
            *counts.entry(ring.owner(h).unwrap()).or_insert(0u32) += 1;
        }
        let max = *counts.values().max().unwrap();
        let min = *counts.values().min().unwrap();
        assert!(max < 1600 && min > 500, "unbalanced: {counts:?}");
    }

    proptest! {
        #[test]
        fn same_members_same_ring(ids in prop::collection::vec(1u64..1000, 1..40), key in any::<u64>()) {
            let a = Ring::new(ids.iter().copied().map(NodeId), 16);
            let mut shuffled = ids.clone();
            shuffled.reverse();
            let b = Ring::new(shuffled.into_iter().map(NodeId), 16);
            prop_assert_eq!(a.owner(key), b.owner(key));
            prop_assert_eq!(a.walk(key).collect::<Vec<_>>(), b.walk(key).collect::<Vec<_>>());
        }

                #[test]
        fn inserting_and_removing_build_the_same_ring(ids in prop::collection::btree_set(1u64..1000, 2..30)) {
            let ids: Vec<u64> = ids.into_iter().collect();
            let mut ring = Ring::new(ids[1..].iter().copied().map(NodeId), 16);
            ring.insert(NodeId(ids[0]), 16);
            ring.insert(NodeId(ids[0]), 16);
            prop_assert_eq!(&ring, &Ring::new(ids.iter().copied().map(NodeId), 16));
            ring.remove(NodeId(ids[1]));
            ring.remove(NodeId(ids[1]));
            let rest = ids.iter().copied().filter(|i| *i != ids[1]).map(NodeId);
            prop_assert_eq!(&ring, &Ring::new(rest, 16));
        }

        #[test]
        fn removing_a_member_moves_only_its_keys(ids in prop::collection::btree_set(1u64..1000, 2..30), key in any::<u64>()) {
            let ids: Vec<u64> = ids.into_iter().collect();
            let full = Ring::new(ids.iter().copied().map(NodeId), 16);
            let gone = NodeId(ids[0]);
            let less = Ring::new(ids[1..].iter().copied().map(NodeId), 16);
            let before = full.owner(key).unwrap();
            if before != gone {
                prop_assert_eq!(less.owner(key), Some(before));
            }
        }
    }
}
