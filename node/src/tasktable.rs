//! The bookkeeping every runtime shares: which tasks it runs now, each
//! under a start *generation* (so that the end of a replaced start is not
//! taken for its successor's), with the handle of what runs (a pid, a
//! container id), and whether it is being stopped or was replaced.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use shoal_placement::TaskKey;

struct Entry<H> {
    generation: u64,
    /// Set once what runs exists.
    handle: Option<H>,
    stopping: bool,
    /// Replaced by a new start (or moved to another runtime): its end is
    /// not reported.
    replaced: bool,
}

/// Starts asked for a task that have not begun yet (a runtime begins a
/// start on a task of its own, after the call that asks for it returns).
#[derive(Default)]
struct Pending {
    starts: u32,
    /// Told to stop meanwhile: the start begins as stopping.
    stop: bool,
}

/// Tasks a runtime runs now.
pub(crate) struct TaskTable<H> {
    entries: Mutex<BTreeMap<TaskKey, Entry<H>>>,
    /// Locked after `entries` when both are.
    pending: Mutex<BTreeMap<TaskKey, Pending>>,
    generation: AtomicU64,
}

/// How a start ended, as the table saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ended {
    /// It was being stopped by shoal.
    pub stopping: bool,
    /// It was replaced: do not report its end.
    pub replaced: bool,
}

impl<H: Clone> TaskTable<H> {
    pub(crate) fn new() -> TaskTable<H> {
        TaskTable {
            entries: Mutex::new(BTreeMap::new()),
            pending: Mutex::new(BTreeMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskKey, Entry<H>>> {
        self.entries.lock().expect("task table lock")
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, BTreeMap<TaskKey, Pending>> {
        self.pending.lock().expect("task table lock")
    }

    /// A start of `key` is asked for and will [`begin`](Self::begin) soon:
    /// until then the task counts as held here, and a stop meanwhile is
    /// kept for it (the latest of start and stop wins).
    pub(crate) fn will_start(&self, key: &TaskKey) {
        let mut pending = self.lock_pending();
        let p = pending.entry(key.clone()).or_default();
        p.starts += 1;
        p.stop = false;
    }

    /// Marks the current start of `key` (if any) as stopping and replaced;
    /// returns its generation and handle, to terminate it.
    pub(crate) fn retire(&self, key: &TaskKey) -> Option<(u64, Option<H>)> {
        self.lock().get_mut(key).map(|e| {
            e.replaced = true;
            e.stopping = true;
            (e.generation, e.handle.clone())
        })
    }

    /// Marks the current start of `key` as stopping; returns its generation
    /// and handle, or `None` when the task does not run here.
    /// A start asked for but not begun is marked too (it begins as
    /// stopping), and reported with no handle, as a start that is still
    /// spawning.
    pub(crate) fn stopping(&self, key: &TaskKey) -> Option<(u64, Option<H>)> {
        let mut entries = self.lock();
        let mut pending = self.lock_pending();
        if let Some(p) = pending.get_mut(key) {
            p.stop = true;
        }
        match entries.get_mut(key) {
            Some(e) => {
                e.stopping = true;
                Some((e.generation, e.handle.clone()))
            }
            None => pending.contains_key(key).then_some((0, None)),
        }
    }

    /// A new start of `key` (with its handle when it already runs, as when
    /// adopted); returns its generation.
    /// A start asked for with [`will_start`](Self::will_start) and told to
    /// stop meanwhile begins as stopping.
    pub(crate) fn begin(&self, key: &TaskKey, handle: Option<H>) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let mut entries = self.lock();
        let mut pending = self.lock_pending();
        let mut stopping = false;
        if let Some(p) = pending.get_mut(key) {
            stopping = p.stop;
            p.starts -= 1;
            if p.starts == 0 {
                pending.remove(key);
            }
        }
        entries.insert(
            key.clone(),
            Entry {
                generation,
                handle,
                stopping,
                replaced: false,
            },
        );
        generation
    }

    /// Records what runs for start `generation`; true when it must be
    /// stopped at once (told to stop meanwhile, or no longer current).
    pub(crate) fn started(&self, key: &TaskKey, generation: u64, handle: H) -> bool {
        match self.lock().get_mut(key) {
            Some(e) if e.generation == generation => {
                e.handle = Some(handle);
                e.stopping
            }
            _ => true,
        }
    }

    /// Removes start `generation` once what ran ended.
    pub(crate) fn end(&self, key: &TaskKey, generation: u64) -> Ended {
        let mut entries = self.lock();
        match entries.get(key) {
            Some(e) if e.generation == generation => {
                let e = entries.remove(key).expect("present");
                Ended {
                    stopping: e.stopping,
                    replaced: e.replaced,
                }
            }
            _ => Ended {
                stopping: true,
                replaced: true,
            },
        }
    }

    /// Removes start `generation` that never ran.
    pub(crate) fn forget(&self, key: &TaskKey, generation: u64) {
        let mut entries = self.lock();
        if entries.get(key).is_some_and(|e| e.generation == generation) {
            entries.remove(key);
        }
    }

    /// Whether start `generation` of `key` is over.
    pub(crate) fn gone(&self, key: &TaskKey, generation: u64) -> bool {
        self.lock()
            .get(key)
            .is_none_or(|e| e.generation != generation)
    }

    /// Whether the task runs here (or a start of it is about to begin).
    pub(crate) fn holds(&self, key: &TaskKey) -> bool {
        self.lock().contains_key(key) || self.lock_pending().contains_key(key)
    }

    /// Tasks running here.
    pub(crate) fn keys(&self) -> Vec<TaskKey> {
        self.lock().keys().cloned().collect()
    }

    /// The handle of what runs for `key`.
    pub(crate) fn handle(&self, key: &TaskKey) -> Option<H> {
        self.lock().get(key)?.handle.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(i: u32) -> TaskKey {
        TaskKey::parse(&format!("web/{i}")).unwrap()
    }

    #[test]
    fn a_replaced_start_is_not_taken_for_its_successor() {
        let t: TaskTable<i32> = TaskTable::new();
        let g1 = t.begin(&key(0), None);
        assert!(!t.started(&key(0), g1, 100));
        assert_eq!(t.retire(&key(0)), Some((g1, Some(100))));
        let g2 = t.begin(&key(0), None);
        assert!(t.gone(&key(0), g1));
        // The old start's end is replaced and stopping; the new one stays.
        assert_eq!(
            t.end(&key(0), g1),
            Ended {
                stopping: true,
                replaced: true
            }
        );
        assert!(t.holds(&key(0)));
        assert!(!t.started(&key(0), g2, 200));
        assert_eq!(t.handle(&key(0)), Some(200));
        assert_eq!(t.stopping(&key(0)), Some((g2, Some(200))));
        assert_eq!(
            t.end(&key(0), g2),
            Ended {
                stopping: true,
                replaced: false
            }
        );
        assert!(!t.holds(&key(0)));
    }

    #[test]
    fn a_stop_before_the_start_began_is_kept_for_it() {
        let t: TaskTable<i32> = TaskTable::new();
        t.will_start(&key(2));
        assert!(t.holds(&key(2)), "a start asked for counts as held");
        // Told to stop before the start began: nothing to terminate yet.
        assert_eq!(t.stopping(&key(2)), Some((0, None)));
        let g = t.begin(&key(2), None);
        assert!(t.started(&key(2), g, 300), "it begins as stopping");
        assert_eq!(
            t.end(&key(2), g),
            Ended {
                stopping: true,
                replaced: false
            }
        );
        // A start asked for after a stop wins over it.
        t.will_start(&key(3));
        t.stopping(&key(3));
        t.will_start(&key(3));
        let g1 = t.begin(&key(3), None);
        let g2 = t.begin(&key(3), None);
        assert!(!t.started(&key(3), g2, 400));
        assert!(t.started(&key(3), g1, 399), "replaced by the later start");
        assert!(!t.holds(&key(4)));
    }

    #[test]
    fn a_start_told_to_stop_before_it_ran_stops_at_once() {
        let t: TaskTable<String> = TaskTable::new();
        let g = t.begin(&key(1), None);
        assert_eq!(t.stopping(&key(1)), Some((g, None)));
        assert!(t.started(&key(1), g, "c1".into()));
        t.forget(&key(1), g);
        assert!(t.keys().is_empty());
        assert_eq!(t.stopping(&key(1)), None);
    }
}
