//! [`Timers`]: the timers a core asked for, for drivers that have no event
//! queue of their own (the agent).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use shoal_gossip::Instant;

use crate::output::Timer;

/// The timers a [`crate::NodeCore`] asked for, handed back in deadline
/// order (and, for equal deadlines, in the order they were asked for, as
/// the simulator's event queue does). Stale timers are kept: the core
/// ignores them, so a driver never cancels one; the heap holds at most a
/// few per kind at a time.
#[derive(Debug, Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, Timer)>>,
    seq: u64,
}

impl Timers {
    /// No timers.
    pub fn new() -> Timers {
        Timers::default()
    }

    /// Keeps `timer` until `at`.
    pub fn push(&mut self, at: Instant, timer: Timer) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, timer)));
    }

    /// When the earliest timer is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// The earliest timer if it is due at `now`.
    pub fn pop_due(&mut self, now: Instant) -> Option<Timer> {
        if self.next_deadline()? > now {
            return None;
        }
        self.heap.pop().map(|Reverse((_, _, t))| t)
    }

    /// Timers held (stale ones included).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_come_in_deadline_then_request_order() {
        let mut t = Timers::new();
        let at = |ms: u64| Instant::from_micros(ms * 1000);
        t.push(at(20), Timer::Publish);
        t.push(at(10), Timer::FreeClass);
        t.push(at(20), Timer::Tick(at(20)));
        assert_eq!(t.next_deadline(), Some(at(10)));
        assert_eq!(t.pop_due(at(5)), None);
        assert_eq!(t.pop_due(at(25)), Some(Timer::FreeClass));
        assert_eq!(t.pop_due(at(25)), Some(Timer::Publish));
        assert_eq!(t.pop_due(at(25)), Some(Timer::Tick(at(20))));
        assert_eq!(t.pop_due(at(25)), None);
        assert!(t.is_empty());
    }
}
