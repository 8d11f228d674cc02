//! An ordered map that keeps its nodes full as it grows.
//!
//! A `BTreeMap` node holds 11 entries. Inserting keys in ascending order
//! (a member list handed over or copied page by page, sorted by id) splits
//! each full node in the middle and leaves it with 6, so the map takes
//! nearly twice the memory its entries need; in random order nodes end
//! about two thirds full. The standard library builds a map from a sorted
//! sequence with full nodes, so [`Packed`] rebuilds its map that way each
//! time it has doubled since the last rebuild: the cost is linear in the
//! entries, paid once per doubling (amortized constant per insert), and at
//! least half the entries always sit in full nodes.
//!
//! Every node holds one entry per member in several such maps (the
//! membership's, and the placer's member list, which uses this type too),
//! so at 500,000 members this is tens of megabytes per node, and in the
//! simulator, where thousands of nodes share one process, it is what lets
//! full mode hold 10,000 nodes.

use std::collections::BTreeMap;
use std::ops::{Deref, DerefMut};

/// Below this many entries a map is not worth rebuilding.
const SMALL: usize = 64;

/// A `BTreeMap` (reached through `Deref`) that [`pack`](Packed::pack)
/// rebuilds with full nodes once it has doubled.
#[derive(Clone, Debug)]
pub struct Packed<K, V> {
    map: BTreeMap<K, V>,
    /// Entries at the last rebuild.
    packed_len: usize,
}

impl<K, V> Default for Packed<K, V> {
    fn default() -> Self {
        Packed {
            map: BTreeMap::new(),
            packed_len: 0,
        }
    }
}

impl<K: Ord, V> Packed<K, V> {
    /// Rebuilds the map with full nodes if it has at least doubled since
    /// the last rebuild. Same entries, same order: only memory changes.
    pub fn pack(&mut self) {
        if self.map.len() >= SMALL && self.map.len() >= 2 * self.packed_len {
            *self = core::mem::take(&mut self.map).into_iter().collect();
        }
    }
}

/// Built in one pass from its entries, so packed already.
impl<K: Ord, V> FromIterator<(K, V)> for Packed<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(entries: I) -> Self {
        let map: BTreeMap<K, V> = entries.into_iter().collect();
        Packed {
            packed_len: map.len(),
            map,
        }
    }
}

impl<K, V> Deref for Packed<K, V> {
    type Target = BTreeMap<K, V>;

    fn deref(&self) -> &BTreeMap<K, V> {
        &self.map
    }
}

impl<K, V> DerefMut for Packed<K, V> {
    fn deref_mut(&mut self) -> &mut BTreeMap<K, V> {
        &mut self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_keeps_the_entries_and_their_order() {
        let mut m: Packed<u64, u64> = Packed::default();
        for k in 0..1000u64 {
            m.insert(k * 7 % 1000, k);
            m.pack();
        }
        assert_eq!(m.len(), 1000);
        let keys: Vec<u64> = m.keys().copied().collect();
        assert_eq!(keys, (0..1000).collect::<Vec<_>>());
        assert_eq!(m.get(&7), Some(&1));
        // Rebuilt at 64, 128, 256, 512: the last rebuild's size is kept.
        assert_eq!(m.packed_len, 512);
        m.pack();
        assert_eq!(m.packed_len, 512, "not doubled since");
        for k in 1000..1024u64 {
            m.insert(k, k);
        }
        m.pack();
        assert_eq!(m.packed_len, 1024);
    }
}
