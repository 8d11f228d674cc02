//! The queue of records that ride on SWIM datagrams.
//!
//! Each record is sent a bounded number of times; those with the most
//! transmissions left (the freshest) go first, and among equals the order
//! is the one a stable sort of a list by "transmissions left" would give
//! after every datagram: records just sent come before those already at
//! their new count, and records added since come last.
//!
//! A node fills every datagram it sends from this queue, and after a join
//! storm the queue holds a record per newcomer, so filling must not cost
//! the queue's length: the queue is kept in sending order as it changes
//! (O(log n) per record added or sent), and a fill stops as soon as not
//! even the smallest record queued fits the room left.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use crate::identity::NodeId;
use crate::wire::{self, Item};

/// Piggyback key kind of free-class items (see [`Item::key`]).
pub(crate) const FREE_ITEM_KIND: u8 = 2;
/// Free-class items carried by one datagram, at most.
pub(crate) const FREE_ITEMS_PER_DATAGRAM: usize = 2;
/// Bytes a record costs in a datagram beyond its own: its length prefix.
const ITEM_OVERHEAD: usize = 3;

/// A queued record's key: which record it is (an item kind and a member).
pub(crate) type ItemKey = (u8, NodeId);

/// Position in sending order: most transmissions left first, then `ord`.
type Slot = (Reverse<u8>, i64);

#[derive(Debug)]
pub(crate) struct PiggyEntry {
    pub(crate) key: ItemKey,
    pub(crate) data: Vec<u8>,
}

/// Records that spread by riding on SWIM datagrams, each a bounded number of
/// times; the least-sent go first.
#[derive(Debug, Default)]
pub(crate) struct Piggyback {
    /// Entries in sending order.
    order: BTreeMap<Slot, PiggyEntry>,
    /// Where each key's entry sits in `order`.
    slots: BTreeMap<ItemKey, Slot>,
    /// How many entries have each encoded length (for the early stop).
    lengths: BTreeMap<usize, u32>,
    /// Next `ord` for an entry added behind all others.
    back: i64,
    /// Lowest `ord` given out so far: entries just sent go in front of it.
    front: i64,
}

impl Piggyback {
    /// Queues `item` for `transmissions` datagrams, replacing the queued
    /// record with the same key and any it supersedes. Zero transmissions
    /// queue nothing (and still drop the replaced records).
    pub(crate) fn add(&mut self, item: &Item, transmissions: u8) {
        self.add_raw(
            item.key(),
            item.supersedes(),
            wire::encode(item),
            transmissions,
        );
    }

    fn add_raw(&mut self, key: ItemKey, stale: Option<ItemKey>, data: Vec<u8>, transmissions: u8) {
        self.remove(key);
        if let Some(stale) = stale {
            self.remove(stale);
        }
        if transmissions == 0 {
            return;
        }
        let slot = (Reverse(transmissions), self.back);
        self.back += 1;
        *self.lengths.entry(data.len()).or_default() += 1;
        self.slots.insert(key, slot);
        self.order.insert(slot, PiggyEntry { key, data });
    }

    fn remove(&mut self, key: ItemKey) {
        if let Some(slot) = self.slots.remove(&key) {
            let entry = self.order.remove(&slot).expect("every slot has its entry");
            self.forget_length(entry.data.len());
        }
    }

    fn forget_length(&mut self, len: usize) {
        if let Some(count) = self.lengths.get_mut(&len) {
            *count -= 1;
            if *count == 0 {
                self.lengths.remove(&len);
            }
        }
    }

    /// The records for one datagram with `budget` bytes of room, in sending
    /// order; each one sent has one transmission fewer left, and is dropped
    /// at zero.
    pub(crate) fn fill(&mut self, mut budget: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let Some((&smallest, _)) = self.lengths.first_key_value() else {
            return out;
        };
        let min_cost = smallest + ITEM_OVERHEAD;
        let mut sent: Vec<Slot> = Vec::new();
        let mut free_items = 0;
        for (slot, e) in &self.order {
            if budget < min_cost {
                break;
            }
            // Free-class changes come from every node that runs tasks, so
            // their number grows with the cluster: a few per datagram keeps
            // their cost flat (they are hints; bids use exact figures).
            if e.key.0 == FREE_ITEM_KIND {
                if free_items == FREE_ITEMS_PER_DATAGRAM {
                    continue;
                }
                free_items += 1;
            }
            let cost = e.data.len() + ITEM_OVERHEAD;
            if cost <= budget {
                budget -= cost;
                out.push(e.data.clone());
                sent.push(*slot);
            }
        }
        // What was sent moves down one count, in front of the entries
        // already there, in the order it was sent.
        let first = self.front - sent.len() as i64;
        self.front = first;
        for (i, slot) in sent.into_iter().enumerate() {
            let entry = self.order.remove(&slot).expect("sent entries are queued");
            let left = slot.0.0 - 1;
            if left == 0 {
                self.slots.remove(&entry.key);
                self.forget_length(entry.data.len());
            } else {
                let moved = (Reverse(left), first + i as i64);
                self.slots.insert(entry.key, moved);
                self.order.insert(moved, entry);
            }
        }
        out
    }

    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }

    /// Queued records in sending order.
    #[cfg(test)]
    pub(crate) fn entries(&self) -> impl Iterator<Item = &PiggyEntry> {
        self.order.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The queue as first written: a list sorted (stably) by transmissions
    /// left before every datagram, scanned to the end.
    #[derive(Default)]
    struct SortedList {
        entries: Vec<(ItemKey, Vec<u8>, u8)>,
    }

    impl SortedList {
        fn add(&mut self, key: ItemKey, stale: Option<ItemKey>, data: Vec<u8>, tx: u8) {
            self.entries.retain(|e| e.0 != key && Some(e.0) != stale);
            if tx > 0 {
                self.entries.push((key, data, tx));
            }
        }

        fn fill(&mut self, mut budget: usize) -> Vec<Vec<u8>> {
            self.entries.sort_by_key(|e| Reverse(e.2));
            let mut out = Vec::new();
            let mut free_items = 0;
            for e in &mut self.entries {
                if e.0.0 == FREE_ITEM_KIND {
                    if free_items == FREE_ITEMS_PER_DATAGRAM {
                        continue;
                    }
                    free_items += 1;
                }
                let cost = e.1.len() + ITEM_OVERHEAD;
                if cost <= budget {
                    budget -= cost;
                    out.push(e.1.clone());
                    e.2 -= 1;
                }
            }
            self.entries.retain(|e| e.2 > 0);
            out
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Add {
            kind: u8,
            id: u64,
            len: usize,
            tx: u8,
        },
        Fill(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u8..3, 0u64..12, 1usize..60, 0u8..6)
                .prop_map(|(kind, id, len, tx)| Op::Add { kind, id, len, tx }),
            2 => (0usize..200).prop_map(Op::Fill),
        ]
    }

    proptest! {
        /// Same records, same order, same counts as sorting the whole list
        /// for every datagram.
        #[test]
        fn fills_like_a_list_sorted_for_every_datagram(ops in prop::collection::vec(op(), 1..120)) {
            let mut queue = Piggyback::default();
            let mut model = SortedList::default();
            for (n, op) in ops.into_iter().enumerate() {
                match op {
                    Op::Add { kind, id, len, tx } => {
                        let key = (kind, NodeId(id));
                        // Whole records (kind 0) supersede free-class items.
                        let stale = (kind == 0).then_some((FREE_ITEM_KIND, NodeId(id)));
                        // Distinct bytes per add, so the order is visible.
                        let mut data = vec![0u8; len];
                        data[0] = n as u8;
                        queue.add_raw(key, stale, data.clone(), tx);
                        model.add(key, stale, data, tx);
                    }
                    Op::Fill(budget) => {
                        prop_assert_eq!(queue.fill(budget), model.fill(budget));
                    }
                }
                prop_assert_eq!(queue.len(), model.entries.len());
                prop_assert_eq!(queue.slots.len(), queue.len());
            }
        }
    }

    #[test]
    fn the_freshest_go_first_and_each_goes_its_count() {
        let mut queue = Piggyback::default();
        queue.add_raw((0, NodeId(1)), None, vec![1; 10], 1);
        queue.add_raw((0, NodeId(2)), None, vec![2; 10], 3);
        // Room for one record: the one with more transmissions left.
        assert_eq!(queue.fill(13), vec![vec![2; 10]]);
        // 2 has two left, 1 has one: 2 again.
        assert_eq!(queue.fill(13), vec![vec![2; 10]]);
        // Both have one left: the one just sent goes before the one that
        // has been waiting at one.
        assert_eq!(queue.fill(13), vec![vec![2; 10]]);
        assert_eq!(queue.fill(13), vec![vec![1; 10]]);
        assert_eq!(queue.len(), 0);
        assert!(queue.lengths.is_empty());
    }

    /// Version `version` of member 2's whole record, named `name`, in
    /// free class `class`.
    fn whole_record(version: u32, name: &str, class: u8) -> Item {
        let addr: std::net::SocketAddr = "10.0.0.2:5481".parse().unwrap();
        let meta = crate::MemberMeta {
            name: name.into(),
            gossip_addr: addr,
            rpc_addr: addr,
            api_addr: addr,
            api_tls: false,
            gossip_keys: Vec::new(),
            dc: "dc1".into(),
            zone: String::new(),
            region: String::new(),
            labels: BTreeMap::new(),
            capacity: crate::Capacity::default(),
            runtimes: vec![],
            agent_version: "0".into(),
            free_class: crate::FreeClass(class),
            isolation: String::new(),
            draining: false,
        };
        Item::Meta(Box::new(crate::MetaUpdate {
            id: NodeId(2),
            bump: 1,
            version,
            meta: std::sync::Arc::new(meta),
        }))
    }

    #[test]
    fn a_datagram_carries_few_free_class_items() {
        let mut queue = Piggyback::default();
        for id in 1..=6 {
            let item = Item::Free {
                id: NodeId(id),
                bump: 1,
                version: 2,
                base: 1,
                class: 3,
            };
            queue.add(&item, 5);
        }
        // A whole record of member 2 replaces its queued free-class item.
        queue.add(&whole_record(2, "b", 8), 5);
        assert_eq!(queue.len(), 6);
        let carried: Vec<Item> = queue
            .fill(1_000)
            .iter()
            .map(|b| postcard::from_bytes(b).unwrap())
            .collect();
        let free = carried
            .iter()
            .filter(|i| matches!(i, Item::Free { .. }))
            .count();
        assert_eq!(free, FREE_ITEMS_PER_DATAGRAM, "{carried:?}");
        assert!(carried.iter().any(|i| matches!(i, Item::Meta(_))));
        // The others wait for the next datagrams.
        assert_eq!(queue.len(), 6);
    }
}
