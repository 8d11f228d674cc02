//! The event heap: events ordered by `(time, sequence)`, so that two events
//! due at the same instant run in the order they were scheduled, on every
//! machine and every run.
//!
//! Two levels: a binary heap of the events of the current millisecond, and
//! the later ones appended to a list per millisecond (ordered by a map of
//! those lists). A 500,000-node run keeps millions of events in flight; one
//! heap of all of them costs a cache miss per level on every pop (a fifth
//! of that run's time), while the current millisecond's heap stays small
//! and hot. The order is the same as one heap's.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};

use shoal_gossip::Instant;

struct Entry<E> {
    at: Instant,
    seq: u64,
    ev: E,
}

impl<E> PartialEq for Entry<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}

impl<E> Eq for Entry<E> {}

impl<E> PartialOrd for Entry<E> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl<E> Ord for Entry<E> {
    fn cmp(&self, other: &Self) -> Ordering {
        // `BinaryHeap` is a max-heap: the earliest (time, seq) must be the
        // greatest.
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// Width of a slot, in microseconds (the clock's unit).
const SLOT_MICROS: u64 = 1_000;

fn slot_of(at: Instant) -> u64 {
    at.as_micros() / SLOT_MICROS
}

/// A virtual clock and the events scheduled on it.
pub struct EventQueue<E> {
    /// The events of slot `current` (and none of a later slot).
    near: BinaryHeap<Entry<E>>,
    current: u64,
    /// Later events by slot, each list in the order pushed.
    far: BTreeMap<u64, Vec<Entry<E>>>,
    seq: u64,
    now: Instant,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            near: BinaryHeap::new(),
            current: 0,
            far: BTreeMap::new(),
            seq: 0,
            now: Instant::ZERO,
        }
    }
}

impl<E> EventQueue<E> {
    /// The virtual time: the instant of the last event popped.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Schedules `ev` at `at` (at the current time if `at` is in the past).
    pub fn push(&mut self, at: Instant, ev: E) {
        self.seq += 1;
        let at = at.max(self.now);
        let e = Entry {
            at,
            seq: self.seq,
            ev,
        };
        let slot = slot_of(at);
        if slot <= self.current {
            self.near.push(e);
        } else {
            self.far.entry(slot).or_default().push(e);
        }
    }

    /// Moves the next slot's events to the heap when it is empty.
    fn refill(&mut self) {
        if self.near.is_empty()
            && let Some((slot, list)) = self.far.pop_first()
        {
            self.current = slot;
            self.near = BinaryHeap::from(list);
        }
    }

    /// When the next event is due.
    pub fn peek_time(&mut self) -> Option<Instant> {
        self.refill();
        self.near.peek().map(|e| e.at)
    }

    /// Takes the next event and moves the clock to its time.
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        self.refill();
        let e = self.near.pop()?;
        self.now = e.at;
        Some((e.at, e.ev))
    }

    /// Events scheduled (O(milliseconds ahead): for checks, not the loop).
    pub fn len(&self) -> usize {
        self.near.len() + self.far.values().map(Vec::len).sum::<usize>()
    }

    /// Whether nothing is scheduled (a list in `far` is never empty).
    pub fn is_empty(&self) -> bool {
        self.near.is_empty() && self.far.is_empty()
    }

    /// Events scheduled so far (the sequence counter).
    pub fn scheduled_total(&self) -> u64 {
        self.seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_time_events_keep_their_order() {
        let mut q = EventQueue::default();
        q.push(Instant::from_micros(5), "b1");
        q.push(Instant::from_micros(1), "a");
        q.push(Instant::from_micros(5), "b2");
        q.push(Instant::from_micros(5), "b3");
        let order: Vec<&str> = std::iter::from_fn(|| q.pop().map(|(_, e)| e)).collect();
        assert_eq!(order, ["a", "b1", "b2", "b3"]);
        assert_eq!(q.now(), Instant::from_micros(5));
        // The past is clamped to now.
        q.push(Instant::ZERO, "late");
        assert_eq!(q.pop().unwrap().0, Instant::from_micros(5));
    }

    proptest::proptest! {
        /// The same order as one heap of (time, sequence), whatever the
        /// mix of pushes and pops, near and far.
        #[test]
        fn pops_in_the_order_of_one_heap(
            ops in proptest::collection::vec((0u64..5_000, 0u8..4), 1..400),
        ) {
            let mut q = EventQueue::default();
            let mut reference = std::collections::BTreeSet::new();
            let mut seq = 0u64;
            for (delay, op) in ops {
                if op == 0 {
                    let got = q.pop();
                    let want = reference.pop_first();
                    proptest::prop_assert_eq!(got, want);
                } else {
                    seq += 1;
                    let at = Instant::from_micros(q.now().as_micros() + delay * 7);
                    q.push(at, seq);
                    reference.insert((at, seq));
                }
                proptest::prop_assert_eq!(q.len(), reference.len());
            }
            while let Some(want) = reference.pop_first() {
                proptest::prop_assert_eq!(q.peek_time(), Some(want.0));
                proptest::prop_assert_eq!(q.pop(), Some(want));
            }
            proptest::prop_assert!(q.is_empty());
        }
    }
}
