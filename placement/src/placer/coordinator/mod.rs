//! The coordinator role: the keys this node owns on the ring.
//!
//! For each task key the ring gives this node, the coordinator keeps one
//! entry ([`Coord`]): who holds the key, as the holder's lease renewals say,
//! or the auction in flight to place it ([`auction`]), or
//! why it waits. It learns the keys it inherits after a ring change from the
//! renewals of their holders before it auctions any; it auctions a key
//! again when its holder fails or falls silent; and when two nodes hold one
//! key (a partition healed, a restarted agent found its old tasks) it keeps
//! the later award and tells the other to stop.
//!
//! Contract: an entry is soft state, rebuilt from renewals by whichever
//! node owns the key next, so nothing is lost with a coordinator. The
//! conflict rule compares award stamps only, so whichever coordinator hears
//! both holders keeps the same one. A renewal or an acceptance from the
//! known holder only moves that holder's deadlines later (the front lets
//! the tick stay idle for them); anything else may make a key due.

mod auction;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use shoal_gossip::{Instant, NodeId};
use shoal_model::JobType;

use super::msg::{Event, Msg, Outcome};
use super::status::{Report, TaskState, TaskStatus};
use super::{Job, Shared, demand_of, earliest};
use crate::jobs::JobTable;
use crate::types::{Stamp, TaskKey};

use self::auction::Auction;

/// Who holds a key, as its coordinator knows.
#[derive(Clone, Debug)]
struct Holder {
    node: NodeId,
    stamp: Stamp,
    report: Report,
    heard: Instant,
    /// The holder accepted or renewed (not only awarded).
    confirmed: bool,
    /// This coordinator asked for the task's exit 0 to be recorded.
    recorded: bool,
    /// The holder was in this coordinator's view when it was awarded the
    /// task or at one of its renewals. Only such a holder is lost when it
    /// leaves the view: one never seen there is a member this node's view
    /// has not caught up with (its metadata came just after a publish, or
    /// gossip has not brought it yet), alive since it renews, and it is
    /// replaced only if its renewals stop.
    seen: bool,
}

/// Why a new copy is stopped when its deployment ended without it (said
/// at the abandon, and again to renewals already on their way).
const ABANDONED: &str = "its deployment ended before replacing the old task";

impl Holder {
    /// A holder as its lease renewal from `node` (award `stamp`) says, at
    /// `now`.
    fn renewed(
        shared: &Shared,
        node: NodeId,
        stamp: Stamp,
        report: Report,
        now: Instant,
    ) -> Holder {
        Holder {
            node,
            stamp,
            report,
            heard: now,
            confirmed: true,
            recorded: false,
            seen: shared.has_member(node),
        }
    }

    /// Whether the holder left this coordinator's view (see
    /// [`seen`](Self::seen)).
    fn gone(&self, shared: &Shared) -> bool {
        self.seen && !shared.has_member(self.node)
    }
}

/// A key this node coordinates (or did, while its holder still renews).
#[derive(Clone, Debug, Default)]
struct Coord {
    holder: Option<Holder>,
    /// While a rolling deployment replaces the key: the old task, kept
    /// running beside the new one (`holder`) until the deployment's driver
    /// marks the index done (start-first).
    old: Option<Holder>,
    /// A new copy given up when its deployment ended (see
    /// [`Due::Abandon`]): its renewals still in flight must not win the
    /// key back from the old copy.
    abandoned: Option<(NodeId, Stamp)>,
    auction: Option<Auction>,
    /// Why no node took it, when its last auction found none.
    pending: Vec<String>,
    pending_since_ms: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Set when this node inherited the key by a ring change.
    inherited_at: Option<Instant>,
    /// That ring change took members away (or this node was cut off):
    /// the key's holder may be one of them, so the job's `[disconnect]
    /// replace_after` applies before it is placed.
    inherited_by_loss: bool,
}

/// What a coordinated key needs (see [`Coord::due`]).
enum Due {
    /// Nothing, until the instant given (if any), from which time alone
    /// may change the answer.
    Nothing(Option<Instant>),
    /// Its auction's deadline passed.
    Decide,
    /// Its holder is no longer a member.
    Lost(NodeId),
    /// Its holder stopped renewing the lease.
    Silent(NodeId),
    /// No holder, no auction: place it.
    Start,
    /// No holder, but its job waits for others (`after`): say so.
    Gate(String),
    /// Its holder is lost (or unknown), but the key is not placed again
    /// yet: this node is cut off ([`super::CutOff`]), or the job's
    /// `[disconnect] replace_after` has not passed. Says why, and marks
    /// the holder lost once.
    Hold { lost: Option<NodeId>, why: String },
    /// A deployment replaces it and its holder runs the old version: place
    /// the new one beside it.
    Surge,
    /// Its old task is replaced (or gone): stop it.
    Retire,
    /// The deployment that was replacing it ended without finishing it:
    /// keep the old task, stop the new one.
    Abandon,
}

impl Coord {
    /// What `key` needs now.
    fn due(&self, shared: &Shared, key: &TaskKey, now: Instant) -> Due {
        // An auction in flight finishes on its deadline.
        if let Some(a) = &self.auction {
            return if now >= a.deadline {
                Due::Decide
            } else {
                Due::Nothing(Some(a.deadline))
            };
        }
        if let Some(due) = self.deploy_due(shared, key) {
            return due;
        }
        // A batch task recorded as finished for this run is never placed
        // again, whoever coordinated it before and whatever its holder
        // became.
        let finished = shared.finished(key).is_some();
        if let Some(h) = &self.holder {
            let done = h.report.state == TaskState::Exited && h.report.exit_code == Some(0);
            if finished {
                return Due::Nothing(None);
            }
            if done {
                // A batch task that completed in an earlier run of its job
                // (no record in this one) runs again in the new run: its
                // holder forgot it, or gives it up.
                let rerun = shared.jobs.get(&key.job).is_some_and(|j| {
                    j.spec.kind == JobType::Batch && j.run_version > h.report.job_version
                });
                return if rerun {
                    Due::Start
                } else {
                    Due::Nothing(None)
                };
            }
            if h.gone(shared) {
                return self
                    .hold(shared, key, Some(h), now)
                    .unwrap_or(Due::Lost(h.node));
            }
            let limit = if h.confirmed {
                shared.config.lease_silence
            } else {
                shared.config.bid_timeout * 4
            };
            return if now.saturating_duration_since(h.heard) > limit {
                self.hold(shared, key, Some(h), now)
                    .unwrap_or(Due::Silent(h.node))
            } else {
                Due::Nothing(Some(h.heard + limit))
            };
        }
        if finished {
            return Due::Nothing(None);
        }
        if let Some(at) = self.inherited_at
            && now.saturating_duration_since(at) < shared.config.learn_grace
        {
            return Due::Nothing(Some(at + shared.config.learn_grace));
        }
        if let Some(hold) = self.hold(shared, key, None, now) {
            return hold;
        }
        if let Some(t) = self.retry_at
            && now < t
        {
            return Due::Nothing(Some(t));
        }
        // A job that waits for others (`after`) is not placed until each
        // was recorded ready; its pending status names them.
        if let Some(waiting) = shared
            .jobs
            .get(&key.job)
            .map(|j| &j.waiting)
            .filter(|w| !w.is_empty())
        {
            let why = format!("waiting for {} to be ready (after)", waiting.join(", "));
            return if self.pending.len() == 1 && self.pending[0] == why {
                Due::Nothing(None)
            } else {
                Due::Gate(why)
            };
        }
        Due::Start
    }
}

impl Coord {
    /// Whether `key`, whose holder `h` is lost or silent (or, with `None`,
    /// which has no holder known here), waits instead of being placed:
    /// while this node is cut off, always; else, for a holder that had
    /// started it (or a key inherited by a ring change, whose holder may
    /// be the member that went away), until the job's `[disconnect]
    /// replace_after` has passed since it was last heard (or since the
    /// ring changed). `None`: place it as usual.
    fn hold(
        &self,
        shared: &Shared,
        key: &TaskKey,
        h: Option<&Holder>,
        now: Instant,
    ) -> Option<Due> {
        // Called for every key without a live holder at each pass: the
        // cheap tests first, no allocation unless the reason changes.
        let (why, until) = if shared.cut_off.is_some() {
            (Cow::Borrowed(super::CutOff::REASON), None)
        } else {
            let since = match h {
                Some(h) if h.confirmed => h.heard,
                Some(_) => return None,
                None if self.inherited_by_loss => self.inherited_at?,
                None => return None,
            };
            let job = shared.jobs.get(&key.job)?;
            let after = job.spec.disconnect.replace_after();
            let until = since + after;
            if after.is_zero() || now >= until {
                return None;
            }
            let whose = h.map_or_else(
                || "its holder is not known since the members changed".to_owned(),
                |h| format!("its node {} is unreachable", shared.name_of(h.node)),
            );
            (
                Cow::Owned(format!(
                    "{whose}: the job's [disconnect] replace_after = {:?} waits before it is placed again",
                    job.spec.disconnect.replace_after
                )),
                Some(until),
            )
        };
        let lost = h.filter(|h| h.gone(shared)).map(|h| h.node);
        let marked = h.is_none_or(|h| lost.is_none() || h.report.state == TaskState::Lost);
        if marked && self.pending.len() == 1 && self.pending[0] == *why {
            return Some(Due::Nothing(until));
        }
        Some(Due::Hold {
            lost,
            why: why.into_owned(),
        })
    }

    /// What a rolling deployment asks of `key` now, if anything.
    fn deploy_due(&self, shared: &Shared, key: &TaskKey) -> Option<Due> {
        let replacing = shared.replacing(key);
        let is_new = |h: &Holder, d: &shoal_model::Deployment| h.report.job_version >= d.version;
        if let Some(old) = &self.old {
            let Some(d) = replacing else {
                // The deployment ended (or a newer one does not replace
                // this index yet): one task again. Successful: the new
                // one; otherwise the old one, which was healthy.
                let successful = shared
                    .jobs
                    .get(&key.job)
                    .and_then(|j| j.deployment.as_deref())
                    .is_some_and(|d| d.status == shoal_model::DeploymentStatus::Successful);
                return Some(if successful {
                    Due::Retire
                } else {
                    Due::Abandon
                });
            };
            if !shared.has_member(old.node) {
                return Some(Due::Retire);
            }
            // The new copy is of an earlier deployment that ended without
            // finishing this index (failed, then reverted by a newer one
            // that arrived before this node abandoned the copy), or that a
            // newer one superseded: it is no one's new copy. Give it up
            // and keep the old one, which the newer deployment replaces.
            if self.auction.is_none() && self.holder.as_ref().is_some_and(|h| !is_new(h, d)) {
                return Some(Due::Abandon);
            }
            let i = key.index_number()?;
            let new_up = self
                .holder
                .as_ref()
                .is_some_and(|h| h.confirmed && is_new(h, d) && shared.has_member(h.node));
            if d.done.contains(&i) && new_up {
                return Some(Due::Retire);
            }
            return None;
        }
        let d = replacing?;
        let h = self.holder.as_ref()?;
        let runs = matches!(
            h.report.state,
            TaskState::Assigned | TaskState::Starting | TaskState::Running
        );
        (self.auction.is_none()
            && !is_new(h, d)
            && h.confirmed
            && runs
            && shared.has_member(h.node))
        .then_some(Due::Surge)
    }
}

/// The keys this node coordinates and what it knows of each.
#[derive(Debug)]
pub(super) struct Coordinator {
    /// The keys of known jobs that this node owns on the ring.
    keys: BTreeSet<TaskKey>,
    /// `keys` must be computed anew for every job.
    keys_dirty: bool,
    /// Jobs whose keys must be recomputed (when not all are).
    dirty_jobs: BTreeSet<String>,
    entries: BTreeMap<TaskKey, Coord>,
    /// The last auction round started.
    round: u64,
    ring_changed_at: Instant,
    /// Whether that change took members away.
    ring_lost: bool,
}

/// The keys of job `name` this node coordinates.
fn keys_of_job<'a>(shared: &'a Shared, name: &'a str) -> impl Iterator<Item = TaskKey> + 'a {
    let count = match shared.jobs.get(name) {
        Some(job) if !job.deleted && job.spec.kind != JobType::System => job.spec.count(),
        _ => 0,
    };
    (0..count)
        .map(move |i| TaskKey::index(name, i))
        .filter(|k| shared.ring().owner(k.hash()) == Some(shared.me))
}

impl Coordinator {
    /// No key yet; the ring as of `now`.
    pub(super) fn new(now: Instant) -> Coordinator {
        Coordinator {
            keys: BTreeSet::new(),
            keys_dirty: true,
            dirty_jobs: BTreeSet::new(),
            entries: BTreeMap::new(),
            round: 0,
            ring_changed_at: now,
            ring_lost: false,
        }
    }

    /// How many keys have an entry here.
    pub(super) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The ring changed (`lost`: members went away): every key is
    /// computed anew, and what waits is retried at once (new members may
    /// have room for it).
    pub(super) fn ring_changed(&mut self, now: Instant, lost: bool) {
        self.ring_changed_at = now;
        self.ring_lost = lost;
        self.keys_dirty = true;
        // New members may have room for what waits.
        for c in self.entries.values_mut() {
            if c.retry_at.is_some() {
                c.retry_at = Some(now);
                c.backoff = Duration::ZERO;
            }
        }
    }

    /// This node is no longer cut off: what it knows of its keys' holders
    /// is as old as the cut, so it learns them again before acting, as
    /// after a ring change. A holder it knew has a lease period to renew
    /// from now; a key whose holder it does not know waits as an
    /// inherited one (`learn_grace`, or the job's `replace_after`).
    pub(super) fn reconnected(&mut self, me: NodeId, now: Instant) {
        for c in self.entries.values_mut() {
            match c.holder.as_mut() {
                Some(h) if h.node != me => h.heard = now,
                Some(_) => {}
                None if c.auction.is_none() => {
                    c.inherited_at = Some(now);
                    c.inherited_by_loss = true;
                }
                None => {}
            }
        }
    }

    /// Waiting keys that one of `roomier` (members with more free room than
    /// before) may now take are retried at once, keeping their backoff: a
    /// key that fits nowhere is not re-auctioned over the whole ring on a
    /// timer alone.
    pub(super) fn retry_where_room_appeared(
        &mut self,
        shared: &Shared,
        now: Instant,
        roomier: &[NodeId],
    ) {
        for (key, c) in &mut self.entries {
            if c.retry_at.is_none_or(|t| t <= now) {
                continue;
            }
            let Some(job) = shared.jobs.get(&key.job) else {
                continue;
            };
            let demand = demand_of(&job.spec);
            let fits = roomier.iter().any(|id| {
                shared
                    .view
                    .member(*id)
                    .is_some_and(|m| shared.view.eligible(m, &job.spec, &demand).is_ok())
            });
            if fits {
                c.retry_at = Some(now);
            }
        }
    }

    /// Marks `j`'s keys for recomputing if it differs from the job held
    /// under its name in `jobs`; when it last changed (`now` if it does).
    pub(super) fn note_job_change(&mut self, jobs: &JobTable, now: Instant, j: &Job) -> Instant {
        jobs.unchanged_since(j).unwrap_or_else(|| {
            self.dirty_jobs.insert(j.spec.name.clone());
            now
        })
    }

    /// Job `name` is gone: its keys are recomputed.
    pub(super) fn note_job_removed(&mut self, name: &str) {
        self.dirty_jobs.insert(name.to_owned());
    }

    /// Every key must be computed anew (jobs came or went).
    pub(super) fn recompute_all(&mut self) {
        self.keys_dirty = true;
    }

    /// Whether every key must be computed anew.
    pub(super) fn all_dirty(&self) -> bool {
        self.keys_dirty
    }

    /// Brings the keys this node coordinates up to date with the ring and
    /// the jobs.
    pub(super) fn recompute_keys(&mut self, shared: &Shared) {
        if !self.keys_dirty {
            self.recompute_dirty_jobs(shared);
            return;
        }
        self.keys_dirty = false;
        self.dirty_jobs.clear();
        let mut keys = BTreeSet::new();
        for name in shared.jobs.names() {
            keys.extend(keys_of_job(shared, name));
        }
        self.note_new_keys(shared, &keys);
        self.keys = keys;
    }

    /// Recomputes only the keys of jobs that changed (O(their tasks)).
    fn recompute_dirty_jobs(&mut self, shared: &Shared) {
        for name in std::mem::take(&mut self.dirty_jobs) {
            let old: Vec<TaskKey> = self
                .keys
                .range(TaskKey::index(&name, 0)..)
                .take_while(|k| k.job == name)
                .cloned()
                .collect();
            let new: BTreeSet<TaskKey> = keys_of_job(shared, &name).collect();
            self.note_new_keys(shared, &new);
            for k in old {
                if !new.contains(&k) {
                    self.keys.remove(&k);
                }
            }
            self.keys.extend(new);
        }
    }

    /// Keys new to this node that belonged to another coordinator before
    /// the last ring change (their job did not change since) are inherited:
    /// their placements are learned from lease renewals before any auction.
    fn note_new_keys(&mut self, shared: &Shared, keys: &BTreeSet<TaskKey>) {
        for k in keys {
            if !self.keys.contains(k) && !self.entries.contains_key(k) {
                let job_changed = shared
                    .jobs
                    .changed_at(&k.job)
                    .is_some_and(|t| t >= self.ring_changed_at);
                let entry = self.entries.entry(k.clone()).or_default();
                if !job_changed {
                    entry.inherited_at = Some(self.ring_changed_at);
                    entry.inherited_by_loss = self.ring_lost;
                }
            }
        }
    }

    /// [`scan`](Self::scan) over every key.
    pub(super) fn scan_all(
        &self,
        shared: &Shared,
        now: Instant,
    ) -> (Vec<TaskKey>, Vec<TaskKey>, Option<Instant>) {
        self.scan(shared, now, self.keys.iter(), self.entries.iter())
    }

    /// [`scan`](Self::scan) over the keys of job `name`: what needs acting
    /// on, and what is stale.
    pub(super) fn scan_job(
        &self,
        shared: &Shared,
        now: Instant,
        name: &str,
    ) -> (Vec<TaskKey>, Vec<TaskKey>) {
        let start = TaskKey::index(name, 0);
        let (due, stale, _) = self.scan(
            shared,
            now,
            self.keys
                .range(start.clone()..)
                .take_while(|k| k.job == name),
            self.entries
                .range(start..)
                .take_while(|(k, _)| k.job == name),
        );
        (due, stale)
    }

    /// Walks this node's keys and its coordinator entries together (both
    /// sorted) without allocating for keys with nothing to do: returns the
    /// keys that need [`reconcile_key`](Self::reconcile_key) now, the
    /// entries of keys no longer this node's, and the earliest instant at
    /// which time alone changes that for one of the others.
    fn scan<'a>(
        &self,
        shared: &Shared,
        now: Instant,
        mine: impl Iterator<Item = &'a TaskKey>,
        coord: impl Iterator<Item = (&'a TaskKey, &'a Coord)>,
    ) -> (Vec<TaskKey>, Vec<TaskKey>, Option<Instant>) {
        let (mut due, mut stale) = (Vec::new(), Vec::new());
        let mut next = None;
        let mut mine = mine.peekable();
        let mut coord = coord.peekable();
        loop {
            match (mine.peek(), coord.peek()) {
                (None, None) => break,
                (Some(m), Some((c, entry))) if m == c => {
                    match entry.due(shared, m, now) {
                        Due::Nothing(until) => next = earliest(next, until),
                        _ => due.push((*m).clone()),
                    }
                    mine.next();
                    coord.next();
                }
                (Some(m), c) if c.is_none_or(|(c, _)| m < c) => {
                    // No entry yet: a new key.
                    due.push((*m).clone());
                    mine.next();
                }
                (_, Some((c, entry))) => {
                    let silent = entry.holder.as_ref().is_none_or(|h| {
                        now.saturating_duration_since(h.heard) > shared.config.lease_silence
                    });
                    if silent
                        || entry.auction.is_some()
                        || entry.retry_at.is_some()
                        || !entry.pending.is_empty()
                        || !shared.wanted(c).0
                    {
                        stale.push((*c).clone());
                    } else if let Some(h) = &entry.holder {
                        // It turns stale when its holder falls silent.
                        next = earliest(next, Some(h.heard + shared.config.lease_silence));
                    }
                    coord.next();
                }
                (Some(_), None) => unreachable!("handled above"),
            }
        }
        (due, stale, next)
    }

    /// Acts on what [`scan`](Self::scan) found: the `due` keys, and the
    /// `stale` entries.
    pub(super) fn settle(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        due: &[TaskKey],
        stale: Vec<TaskKey>,
    ) {
        for k in due {
            self.reconcile_key(shared, now, wall_ms, k);
        }
        // Keys this node no longer coordinates (or that are no longer
        // wanted) keep their entry only while a holder is recorded.
        for k in stale {
            let (wanted, _) = shared.wanted(&k);
            let owner = shared.ring().owner(k.hash()) == Some(shared.me);
            let entry = self.entries.get_mut(&k).expect("listed");
            entry.auction = None;
            entry.pending.clear();
            entry.retry_at = None;
            let silent = entry.holder.as_ref().is_none_or(|h| {
                now.saturating_duration_since(h.heard) > shared.config.lease_silence
            });
            if silent || (!wanted && owner) {
                self.entries.remove(&k);
            }
        }
    }

    /// Does what `key` needs now, if this node coordinates it.
    fn reconcile_key(&mut self, shared: &mut Shared, now: Instant, wall_ms: u64, key: &TaskKey) {
        if !self.keys.contains(key) {
            return;
        }
        if !self.entries.contains_key(key) {
            self.entries.insert(key.clone(), Coord::default());
        }
        match self.entries[key].due(shared, key, now) {
            Due::Nothing(_) => {}
            Due::Decide => self.decide(shared, now, wall_ms, key),
            Due::Lost(node) => {
                if let Some(c) = self.entries.get_mut(key)
                    && let Some(h) = c.holder.as_mut()
                    // Marked lost already while the key was held back.
                    && h.report.state != TaskState::Lost
                {
                    shared.out.events.push_back(Event::Lost {
                        key: key.clone(),
                        node,
                    });
                    h.report.state = TaskState::Lost;
                    h.report.since_ms = wall_ms;
                    h.report.health = super::health::Health::Unknown;
                }
                self.start_auction(shared, now, wall_ms, key, [node].into());
            }
            Due::Silent(node) => self.start_auction(shared, now, wall_ms, key, [node].into()),
            Due::Start => self.start_auction(shared, now, wall_ms, key, BTreeSet::new()),
            Due::Gate(why) => {
                let entry = self.entries.get_mut(key).expect("present");
                entry.pending_since_ms = wall_ms;
                entry.pending = vec![why];
            }
            Due::Hold { lost, why } => {
                let entry = self.entries.get_mut(key).expect("present");
                if let Some(node) = lost
                    && let Some(h) = entry.holder.as_mut()
                    && h.report.state != TaskState::Lost
                {
                    h.report.state = TaskState::Lost;
                    h.report.since_ms = wall_ms;
                    h.report.health = super::health::Health::Unknown;
                    shared.out.events.push_back(Event::Lost {
                        key: key.clone(),
                        node,
                    });
                }
                if entry.pending.len() != 1 || entry.pending[0] != why {
                    entry.pending_since_ms = wall_ms;
                    entry.pending = vec![why];
                }
            }
            Due::Surge => {
                let entry = self.entries.get_mut(key).expect("present");
                entry.old = entry.holder.take();
                self.start_auction(shared, now, wall_ms, key, BTreeSet::new());
            }
            Due::Retire => {
                let entry = self.entries.get_mut(key).expect("present");
                if let Some(old) = entry.old.take() {
                    let version = entry.holder.as_ref().map_or(0, |h| h.report.job_version);
                    shared.out.messages.push_back((
                        old.node,
                        Msg::Stop {
                            key: key.clone(),
                            stamp: old.stamp,
                            reason: format!("replaced by version {version}"),
                        },
                    ));
                }
            }
            Due::Abandon => {
                let entry = self.entries.get_mut(key).expect("present");
                entry.auction = None;
                if let Some(new) = entry.holder.take() {
                    entry.abandoned = Some((new.node, new.stamp));
                    shared.out.messages.push_back((
                        new.node,
                        Msg::Stop {
                            key: key.clone(),
                            stamp: new.stamp,
                            reason: ABANDONED.into(),
                        },
                    ));
                }
                entry.holder = entry.old.take();
            }
        }
    }

    /// The winner of `key`'s auction took it.
    pub(super) fn on_accept(&mut self, now: Instant, from: NodeId, key: &TaskKey) -> bool {
        if let Some(h) = self.entries.get_mut(key).and_then(|c| c.holder.as_mut())
            && h.node == from
        {
            h.confirmed = true;
            h.heard = now;
            return true;
        }
        false
    }

    /// The winner of `key`'s auction could not take it after all: auctioned
    /// again without it.
    pub(super) fn on_reject(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        from: NodeId,
        key: &TaskKey,
    ) {
        if let Some(c) = self.entries.get_mut(key)
            && c.holder
                .as_ref()
                .is_some_and(|h| h.node == from && !h.confirmed)
        {
            c.holder = None;
            self.start_auction(shared, now, wall_ms, key, [from].into());
        }
    }

    /// The holder of `key` stopped it for good (award `stamp`).
    pub(super) fn on_release(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        wall_ms: u64,
        from: NodeId,
        key: &TaskKey,
        stamp: Stamp,
    ) {
        if let Some(c) = self.entries.get_mut(key)
            && c.holder
                .as_ref()
                .is_some_and(|h| h.node == from && h.stamp <= stamp)
        {
            c.holder = None;
        }
        self.reconcile_key(shared, now, wall_ms, key);
    }

    /// A lease renewal from `from`, which runs `key` under award `stamp`:
    /// whether it only confirmed the known holder (nothing else changed).
    pub(super) fn on_lease(
        &mut self,
        shared: &mut Shared,
        now: Instant,
        from: NodeId,
        key: TaskKey,
        stamp: Stamp,
        report: Report,
    ) -> bool {
        shared.hlc.observe(&stamp);
        let (wanted, version) = shared.wants(&key, true);
        if !wanted && version >= report.job_version {
            shared.out.messages.push_back((
                from,
                Msg::Stop {
                    key,
                    stamp,
                    reason: "no longer wanted".into(),
                },
            ));
            return false;
        }
        let replacing = shared.replacing(&key).map(|d| d.version);
        let entry = self.entries.entry(key.clone()).or_default();
        if entry
            .abandoned
            .is_some_and(|(node, s)| node == from && stamp <= s)
        {
            // A copy given up (its deployment ended) renewing before its
            // stop arrived: told again, and it wins nothing.
            shared.out.messages.push_back((
                from,
                Msg::Stop {
                    key,
                    stamp,
                    reason: ABANDONED.into(),
                },
            ));
            return false;
        }
        if let Some(old) = entry.old.as_mut()
            && old.node == from
        {
            // The old copy of a key being replaced, still running.
            old.stamp = old.stamp.max(stamp);
            old.report = report;
            old.heard = now;
            return true;
        }
        if let (Some(v), Some(h)) = (replacing, entry.holder.as_ref())
            && h.node != from
            && entry.old.is_none()
            && (h.report.job_version >= v) != (report.job_version >= v)
        {
            // Old and new task of a key being replaced (learned by a new
            // coordinator): both kept, until the index is done.
            let heard = Holder::renewed(shared, from, stamp, report, now);
            if heard.report.job_version >= v {
                entry.old = entry.holder.replace(heard);
            } else {
                entry.old = Some(heard);
            }
            entry.auction = None;
            self.progress(shared, &key);
            return false;
        }
        match entry.holder.as_mut() {
            Some(h) if h.node == from => {
                h.stamp = h.stamp.max(stamp);
                h.report = report;
                h.heard = now;
                h.confirmed = true;
                h.seen |= shared.has_member(from);
                let quiet = !record_exit(shared, &key, h);
                self.progress(shared, &key);
                return quiet;
            }
            Some(h) if h.report.state != TaskState::Lost || shared.view.contains(h.node) => {
                // Two holders: the later award wins, everywhere alike.
                let (kept, stopped, stop_stamp) = if stamp > h.stamp {
                    let old = h.clone();
                    *h = Holder::renewed(shared, from, stamp, report, now);
                    record_exit(shared, &key, h);
                    (from, old.node, old.stamp)
                } else {
                    (h.node, from, stamp)
                };
                entry.auction = None;
                shared.out.events.push_back(Event::Conflict {
                    key: key.clone(),
                    kept,
                    stopped,
                });
                shared.out.messages.push_back((
                    stopped,
                    Msg::Stop {
                        key,
                        stamp: stop_stamp,
                        reason: "another node holds the task".into(),
                    },
                ));
            }
            _ => {
                // Learned from the renewal (a new coordinator, or the first
                // renewal after the award), or a lost holder came back.
                let mut h = Holder::renewed(shared, from, stamp, report, now);
                record_exit(shared, &key, &mut h);
                entry.holder = Some(h);
                entry.auction = None;
                entry.pending.clear();
                entry.retry_at = None;
                entry.inherited_at = None;
            }
        }
        false
    }

    /// Tells the driver of the deployment replacing `key` how its new task
    /// is doing (see `placer/deploy.rs`).
    fn progress(&self, shared: &mut Shared, key: &TaskKey) {
        let Some(d) = shared.replacing(key) else {
            return;
        };
        let version = d.version;
        if !key.index_number().is_some_and(|i| d.active.contains(&i)) {
            return;
        }
        let Some(entry) = self.entries.get(key) else {
            return;
        };
        let Some(h) = entry
            .holder
            .as_ref()
            .filter(|h| h.report.job_version >= version)
        else {
            return;
        };
        let Some(driver) = shared.driver_of(&key.job) else {
            return;
        };
        let msg = Msg::Progress {
            key: key.clone(),
            version,
            health: h.report.health,
            replacing: entry.old.is_some(),
        };
        shared.out.messages.push_back((driver, msg));
    }

    /// The status of `key` if this node coordinates it while a deployment
    /// runs an old and a new copy of it.
    pub(super) fn replacing_status(&self, shared: &Shared, key: &TaskKey) -> Option<TaskStatus> {
        self.entries
            .get(key)
            .filter(|c| c.old.is_some())
            .map(|_| self.status(shared, key))
    }

    /// The status of `key` if this node coordinates it and its holder is
    /// another node.
    pub(super) fn held_elsewhere(&self, shared: &Shared, key: &TaskKey) -> Option<TaskStatus> {
        self.entries
            .get(key)
            .and_then(|c| c.holder.as_ref())
            .filter(|h| h.node != shared.me)
            .map(|_| self.status(shared, key))
    }

    /// The status of `key` as its coordinator knows it (a batch task
    /// nobody holds any more: as its job's record says it finished).
    /// While a deployment replaces it, the old task until the new one is
    /// healthy, so that lookups keep finding a healthy instance.
    pub(super) fn status(&self, shared: &Shared, key: &TaskKey) -> TaskStatus {
        let entry = self.entries.get(key);
        let old = entry.and_then(|c| c.old.as_ref()).filter(|_| {
            entry
                .and_then(|c| c.holder.as_ref())
                .is_none_or(|h| h.report.health != super::health::Health::Healthy)
        });
        if let Some(h) = old.or_else(|| entry.and_then(|c| c.holder.as_ref())) {
            let mut s = TaskStatus::held(key, h.node, h.report.clone());
            if h.report.state == TaskState::Lost
                && let Some(c) = entry
            {
                // Lost with its node, and not running elsewhere: why no
                // other node took it.
                s.pending = c.pending.clone();
            }
            return s;
        }
        if let Some(f) = shared.finished(key) {
            return TaskStatus::finished(key, f);
        }
        match entry {
            Some(c) => TaskStatus::unheld(key, c.pending_since_ms, c.pending.clone()),
            None => TaskStatus::unheld(key, 0, Vec::new()),
        }
    }
}

/// Asks for the exit 0 that holder `h` reports for `key` to be recorded,
/// once per holder, if `key` is a batch task not recorded yet: should the
/// holder crash before its own record is written, this one suffices.
/// Whether it asked.
fn record_exit(shared: &mut Shared, key: &TaskKey, h: &mut Holder) -> bool {
    let exited_ok = h.report.state == TaskState::Exited && h.report.exit_code == Some(0);
    if h.recorded || !exited_ok || key.index_number().is_none() {
        return false;
    }
    let batch = shared
        .jobs
        .get(&key.job)
        .is_some_and(|j| !j.deleted && j.spec.kind == JobType::Batch);
    if !batch || shared.finished(key).is_some() {
        return false;
    }
    h.recorded = true;
    shared.out.events.push_back(Event::Finished(Outcome {
        key: key.clone(),
        job_version: h.report.job_version,
        node: h.node,
        ok: true,
        exit_code: Some(0),
        reason: h.report.reason.clone(),
        at_ms: h.report.since_ms,
    }));
    true
}
