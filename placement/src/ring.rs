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
#[derive(Clone, Debug)]
pub struct Ring {
    points: Vec<(u64, NodeId)>,
    members: usize,
    /// Where each bucket of the hash space starts in `points` (the first
    /// point at or after `bucket << shift`): a lookup searches one bucket,
    /// a few points on a cache line or two, instead of the whole ring
    /// (23 steps and as many cache misses at 500,000 members).
    buckets: Vec<u32>,
    shift: u32,
}

/// The empty ring (indexed like any other).
impl Default for Ring {
    fn default() -> Ring {
        Ring::new([], 1)
    }
}

/// Two rings are equal when they have the same points (the index follows).
impl PartialEq for Ring {
    fn eq(&self, other: &Ring) -> bool {
        self.points == other.points
    }
}

impl Eq for Ring {}

/// Points per bucket of the lookup index, on average (a power of two).
const POINTS_PER_BUCKET: usize = 4;

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
        let mut ring = Ring {
            points,
            members: ids.len(),
            buckets: Vec::new(),
            shift: 64,
        };
        ring.index();
        ring
    }

    /// Rebuilds the bucket index after the points changed: O(points).
    fn index(&mut self) {
        let wanted = (self.points.len() / POINTS_PER_BUCKET).max(1);
        let bits = wanted.next_power_of_two().trailing_zeros();
        self.shift = 64 - bits;
        let count = 1usize << bits;
        self.buckets.clear();
        self.buckets.reserve_exact(count + 1);
        let mut at = 0;
        for b in 0..count as u64 {
            // With no bits (shift 64), the one bucket starts at hash 0.
            let start = b.checked_shl(self.shift).unwrap_or(0);
            while at < self.points.len() && self.points[at].0 < start {
                at += 1;
            }
            self.buckets.push(at as u32);
        }
        self.buckets.push(self.points.len() as u32);
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
        self.index();
    }

    /// Removes a member (no-op when it is not on the ring).
    pub fn remove(&mut self, node: NodeId) {
        let before = self.points.len();
        self.points.retain(|(_, id)| *id != node);
        if self.points.len() != before {
            self.members -= 1;
            self.index();
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
        // The first point at or after `hash` is in its bucket, or it is
        // the first point of a later bucket: `buckets[b + 1]`.
        let b = hash.checked_shr(self.shift).unwrap_or(0) as usize;
        let (lo, hi) = (self.buckets[b] as usize, self.buckets[b + 1] as usize);
        let i = lo + self.points[lo..hi].partition_point(|(p, _)| *p < hash);
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
        fn the_bucket_index_finds_what_a_whole_ring_search_finds(
            ids in prop::collection::btree_set(any::<u64>(), 1..200),
            vnodes in 1u32..20,
            keys in prop::collection::vec(any::<u64>(), 1..50),
        ) {
            let mut ring = Ring::new(ids.iter().copied().map(NodeId), vnodes);
            let whole = |ring: &Ring, h: u64| {
                let i = ring.points.partition_point(|(p, _)| *p < h);
                ring.points[if i == ring.points.len() { 0 } else { i }].1
            };
            // Points themselves, their neighbours, the ends of the space.
            let mut probes = keys.clone();
            probes.extend([0, u64::MAX]);
            probes.extend(ring.points.iter().flat_map(|(p, _)| [*p, p.wrapping_sub(1), p.wrapping_add(1)]));
            for h in &probes {
                prop_assert_eq!(ring.owner(*h), Some(whole(&ring, *h)));
            }
            // The same after a member leaves and another joins.
            let first = *ids.iter().next().unwrap();
            ring.remove(NodeId(first));
            ring.insert(NodeId(first ^ 0x5555), vnodes);
            for h in &probes {
                prop_assert_eq!(ring.owner(*h), Some(whole(&ring, *h)));
            }
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
