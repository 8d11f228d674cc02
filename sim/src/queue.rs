//! The event heap: events ordered by `(time, sequence)`, so that two events
//! due at the same instant run in the order they were scheduled, on every
//! machine and every run.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

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

/// A virtual clock and the events scheduled on it.
pub struct EventQueue<E> {
    heap: BinaryHeap<Entry<E>>,
    seq: u64,
    now: Instant,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            heap: BinaryHeap::new(),
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
        self.heap.push(Entry {
            at: at.max(self.now),
            seq: self.seq,
            ev,
        });
    }

    /// When the next event is due.
    pub fn peek_time(&self) -> Option<Instant> {
        self.heap.peek().map(|e| e.at)
    }

    /// Takes the next event and moves the clock to its time.
    pub fn pop(&mut self) -> Option<(Instant, E)> {
        let e = self.heap.pop()?;
        self.now = e.at;
        Some((e.at, e.ev))
    }

    /// Events scheduled.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is scheduled.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
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
}
