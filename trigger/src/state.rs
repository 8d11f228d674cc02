//! The firing rules: one pure state machine per trigger.

use std::collections::VecDeque;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use shoal_model::Constraint;

use crate::schedule::{Schedule, Slot, after_run_id, manual_run_id, slot_id};
use crate::signal::{DEFAULT_SAMPLE_EVERY, Signal, SignalValue, age, placement_constraint};
use crate::spec::{Concurrency, Match, OnMissing, TriggerSpec};

/// Outcomes that are not runs (skipped, missed) kept in the history.
pub const MAX_OTHER_OUTCOMES: usize = 20;
/// Runs fired and not yet finished kept in the history.
pub const MAX_ACTIVE_OUTCOMES: usize = 100;
/// Slots walked one by one in one call before the rest are counted at once.
pub const MAX_CATCH_UP: u64 = 1000;
/// Parent runs remembered, so that one parent run starts a child once.
pub const MAX_PARENT_RUNS: usize = 64;

/// How a run ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunResult {
    /// Every task succeeded.
    Success,
    /// It failed.
    Failed,
}

/// Why a due slot did not fire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// Its `starting_deadline` passed while its conditions did not hold.
    Deadline,
    /// Its deadline passed while a run was active (`concurrency = "forbid"`).
    Forbid,
    /// The next slot became due while it waited (no deadline, or a longer
    /// one than the period).
    Superseded,
    /// The trigger was paused (`enabled = false`).
    Paused,
    /// A parent's run ended (`after`) while the conditions did not hold.
    Conditions,
}

/// Why a slot was missed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MissReason {
    /// Nobody evaluated it between its time and its deadline: it had no
    /// owner, or the owner was down or too late.
    NoOwner,
}

/// What became of a slot (or a manual or `after` run).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum OutcomeKind {
    /// A run was started.
    Fired {
        /// Its id.
        run_id: String,
        /// How long after the slot's time, ms.
        late_ms: u64,
        /// Runs stopped for it (`concurrency = "replace"`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        stopped: Vec<String>,
        /// How it ended; `None` while it runs.
        #[serde(default)]
        result: Option<RunResult>,
    },
    /// Due, and not fired.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// Nobody decided it in time.
    Missed {
        /// Why.
        reason: MissReason,
    },
}

/// One entry of a trigger's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The slot id (or the run id of a manual or `after` run).
    pub slot: String,
    /// When the slot was due.
    pub slot_at: DateTime<Utc>,
    /// When this was decided.
    pub decided_at: DateTime<Utc>,
    /// How many slots this entry stands for: more than 1 when consecutive
    /// slots were missed or paused together (then `last_slot` is the last).
    pub count: u64,
    /// The last slot of a run of several.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_slot: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub kind: OutcomeKind,
    /// Each condition, as it stood when this was decided.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<ConditionReport>,
}

/// A condition as last evaluated: what `explain` shows and skipped slots
/// record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConditionReport {
    /// The signal as written.
    pub signal: String,
    /// The comparison (`< 0.05`).
    pub test: String,
    /// The value, if any (also when stale).
    pub value: Option<f64>,
    /// Where it came from.
    pub source: String,
    /// When it was read.
    pub read_at: DateTime<Utc>,
    /// How old it was, ms.
    pub age_ms: u64,
    /// Older than `max_age`.
    pub stale: bool,
    /// Why there is no value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `Some(true)`: holds (for `hold_for` too); `Some(false)`: does not
    /// (or not long enough yet); `None`: undecided (missing, `on_missing =
    /// "wait"`).
    pub result: Option<bool>,
    /// Since when it has been true, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub true_since: Option<DateTime<Utc>>,
    /// How long it has been true, ms.
    pub held_ms: u64,
    /// How long it must be, ms.
    pub hold_for_ms: u64,
}

/// What the caller must do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "decision", rename_all = "snake_case")]
pub enum Decision {
    /// Start a run (after stopping `stop`).
    Fire(Fire),
    /// Record an outcome that is not a run (skipped, missed): it is in the
    /// state's history too; the caller publishes it (events, the ledger).
    Record(Outcome),
}

/// A run to start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Fire {
    /// Its id: the slot id, `@manual-…`, or `<trigger>@<parent run>`. The
    /// caller must act on a run id at most once.
    pub run_id: String,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    /// Active runs to stop first (`concurrency = "replace"`).
    pub stop: Vec<String>,
    /// Where its tasks may run: one per label condition that held by its
    /// value ([`placement_constraint`]).
    pub constraints: Vec<Constraint>,
    /// Each condition when it fired.
    pub values: Vec<ConditionReport>,
}

/// Why the due slot waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Waiting {
    /// For its conditions.
    Conditions,
    /// For the active run to end (`forbid`).
    Forbid,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Track {
    true_since: Option<DateTime<Utc>>,
    last: Option<ConditionReport>,
}

/// The state of one trigger: serializable, so it can be stored and handed
/// to the trigger's next owner.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TriggerState {
    /// The first slot not yet handled.
    next: Option<Slot>,
    /// Whether `next` was evaluated between its time and its deadline.
    next_seen: bool,
    waiting: Option<Waiting>,
    /// The last slot handled (fired, skipped or missed).
    last_handled: Option<String>,
    tracks: Vec<Track>,
    last_fired_at: Option<DateTime<Utc>>,
    /// Condition-only triggers: the conditions did not hold since the last
    /// run (or there was none), so their holding again fires.
    armed: bool,
    evaluated_at: Option<DateTime<Utc>>,
    history: VecDeque<Outcome>,
    parent_runs: VecDeque<String>,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

impl TriggerState {
    /// A new trigger created at `created`: its first slot is the first after it.
    pub fn new(spec: &TriggerSpec, created: DateTime<Utc>) -> TriggerState {
        TriggerState {
            next: spec
                .schedule
                .as_ref()
                .and_then(|s| s.next_slot(&spec.name, created)),
            next_seen: false,
            waiting: None,
            last_handled: None,
            tracks: vec![Track::default(); spec.when.len()],
            last_fired_at: None,
            armed: true,
            evaluated_at: None,
            history: VecDeque::new(),
            parent_runs: VecDeque::new(),
        }
    }

    /// A state for a new owner that knows only the replicated record: the
    /// last slot handled (fired, skipped or missed) by anyone, and when
    /// the trigger was created. Slots after `last_handled` are handled by
    /// the next [`evaluate`](Self::evaluate): one still within its
    /// deadline fires late, older ones are recorded missed. A
    /// `last_handled` that is not a slot of this schedule (the schedule
    /// changed) counts from `created`.
    pub fn resume(
        spec: &TriggerSpec,
        created: DateTime<Utc>,
        last_handled: Option<&str>,
    ) -> TriggerState {
        let mut state = TriggerState::new(spec, created);
        if let (Some(schedule), Some(id)) = (&spec.schedule, last_handled)
            && let Some(slot) = schedule.slot_from_id(&spec.name, id)
        {
            state.next = schedule.slot_after_local(&spec.name, slot.local);
            state.last_handled = Some(slot.id);
        }
        state
    }

    /// The last slot handled (fired, skipped or missed): what a new owner
    /// passes to [`resume`](Self::resume).
    pub fn last_handled(&self) -> Option<&str> {
        self.last_handled.as_deref()
    }

    /// The next slot not yet handled.
    pub fn next_slot(&self) -> Option<&Slot> {
        self.next.as_ref()
    }

    /// Outcomes, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &Outcome> {
        self.history.iter()
    }

    /// Evaluates the trigger at `now`. `signals` gives the current value
    /// of each signal; `active_runs` are this trigger's runs still running.
    /// Returns what to do, in order; call again at
    /// [`next_wake`](Self::next_wake) or when a signal or a run changes.
    #[must_use]
    pub fn evaluate(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        signals: &impl Fn(&Signal) -> SignalValue,
        active_runs: &[String],
    ) -> Vec<Decision> {
        self.evaluated_at = Some(now);
        let (holds, values) = self.sample(now, spec, signals);
        match &spec.schedule {
            Some(schedule) => self.scheduled(now, spec, schedule, holds, values, active_runs),
            None if spec.after.is_empty() => {
                self.conditional(now, spec, holds, values, active_runs)
            }
            None => Vec::new(),
        }
    }

    fn sample(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        signals: &impl Fn(&Signal) -> SignalValue,
    ) -> (Option<bool>, Vec<ConditionReport>) {
        if self.tracks.len() != spec.when.len() {
            self.tracks = vec![Track::default(); spec.when.len()];
        }
        let mut reports = Vec::with_capacity(spec.when.len());
        for (c, track) in spec.when.iter().zip(&mut self.tracks) {
            let v = signals(&c.signal);
            let fresh = v.fresh(now, c.max_age);
            let raw = match fresh {
                Some(x) => Some(c.op.apply(x, c.value)),
                None => match c.on_missing {
                    OnMissing::Wait => None,
                    OnMissing::False => Some(false),
                    OnMissing::True => Some(true),
                },
            };
            match raw {
                Some(true) => {
                    track.true_since.get_or_insert(now);
                }
                Some(false) => track.true_since = None,
                None => {}
            }
            let held = match (raw, track.true_since) {
                (Some(true), Some(since)) => age(now, since),
                _ => Duration::ZERO,
            };
            let result = match raw {
                Some(true) => Some(held >= c.hold_for),
                other => other,
            };
            let report = ConditionReport {
                signal: c.signal.name(),
                test: format!("{} {}", c.op.as_str(), crate::spec::show_value(c.value)),
                value: v.value,
                source: if v.source.is_empty() {
                    c.signal.describe()
                } else {
                    v.source.clone()
                },
                read_at: v.at,
                age_ms: ms(age(now, v.at)),
                stale: v.value.is_some() && fresh.is_none(),
                error: v.error.clone(),
                result,
                true_since: if raw == Some(true) {
                    track.true_since
                } else {
                    None
                },
                held_ms: ms(held),
                hold_for_ms: ms(c.hold_for),
            };
            track.last = Some(report.clone());
            reports.push(report);
        }
        let holds = if reports.iter().any(|r| r.result.is_none()) {
            None
        } else {
            Some(match spec.match_mode {
                _ if reports.is_empty() => true,
                Match::All => reports.iter().all(|r| r.result == Some(true)),
                Match::Any => reports.iter().any(|r| r.result == Some(true)),
            })
        };
        (holds, reports)
    }

    fn constraints(spec: &TriggerSpec, values: &[ConditionReport]) -> Vec<Constraint> {
        spec.when
            .iter()
            .zip(values)
            .filter(|(_, r)| r.result == Some(true) && !r.stale && r.value.is_some())
            .filter_map(|(c, _)| placement_constraint(c))
            .collect()
    }

    fn record(&mut self, spec: &TriggerSpec, outcome: Outcome) {
        self.history.push_back(outcome);
        self.prune(spec);
    }

    /// Keeps `history.success` successful runs, `history.failed` failed
    /// ones, [`MAX_ACTIVE_OUTCOMES`] unfinished and [`MAX_OTHER_OUTCOMES`]
    /// others; the oldest go first.
    fn prune(&mut self, spec: &TriggerSpec) {
        let (mut ok, mut failed, mut running, mut other) = (0usize, 0usize, 0usize, 0usize);
        let limits = spec.history;
        let mut keep = vec![true; self.history.len()];
        for (i, o) in self.history.iter().enumerate().rev() {
            let (n, max) = match &o.kind {
                OutcomeKind::Fired {
                    result: Some(RunResult::Success),
                    ..
                } => (&mut ok, limits.success as usize),
                OutcomeKind::Fired {
                    result: Some(RunResult::Failed),
                    ..
                } => (&mut failed, limits.failed as usize),
                OutcomeKind::Fired { result: None, .. } => (&mut running, MAX_ACTIVE_OUTCOMES),
                _ => (&mut other, MAX_OTHER_OUTCOMES),
            };
            *n += 1;
            keep[i] = *n <= max;
        }
        let mut it = keep.into_iter();
        self.history.retain(|_| it.next().unwrap_or(true));
    }

    fn fire(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        run_id: String,
        due_at: DateTime<Utc>,
        stop: Vec<String>,
        values: Vec<ConditionReport>,
    ) -> Decision {
        self.last_fired_at = Some(now);
        let fire = Fire {
            constraints: Self::constraints(spec, &values),
            run_id: run_id.clone(),
            due_at,
            stop: stop.clone(),
            values: values.clone(),
        };
        self.record(
            spec,
            Outcome {
                slot: run_id.clone(),
                slot_at: due_at,
                decided_at: now,
                count: 1,
                last_slot: None,
                kind: OutcomeKind::Fired {
                    run_id,
                    late_ms: ms(age(now, due_at)),
                    stopped: stop,
                    result: None,
                },
                values,
            },
        );
        Decision::Fire(fire)
    }

    fn advance(&mut self, slot: &Slot, following: Option<Slot>) {
        self.last_handled = Some(slot.id.clone());
        self.next = following;
        self.next_seen = false;
        self.waiting = None;
    }

    /// Records `slot` (and the slots after it, up to a cap) as missed or
    /// paused in one outcome, or adds it to the previous outcome of the
    /// same call when that is of the same kind.
    fn record_many(
        &mut self,
        out: &mut Vec<Decision>,
        spec: &TriggerSpec,
        now: DateTime<Utc>,
        slot: &Slot,
        kind: OutcomeKind,
        values: Vec<ConditionReport>,
    ) {
        if let Some(Decision::Record(prev)) = out.last_mut()
            && prev.kind == kind
            && prev.count > 0
        {
            prev.count += 1;
            prev.last_slot = Some(slot.id.clone());
            if let Some(h) = self.history.back_mut() {
                *h = prev.clone();
            }
            return;
        }
        let outcome = Outcome {
            slot: slot.id.clone(),
            slot_at: slot.at,
            decided_at: now,
            count: 1,
            last_slot: None,
            kind,
            values,
        };
        self.record(spec, outcome.clone());
        out.push(Decision::Record(outcome));
    }

    fn scheduled(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        schedule: &Schedule,
        holds: Option<bool>,
        values: Vec<ConditionReport>,
        active_runs: &[String],
    ) -> Vec<Decision> {
        if self.next.is_none() && self.last_handled.is_none() {
            // The state was made for a spec without a schedule (it was
            // changed since): the slots start now.
            self.next = schedule.next_slot(&spec.name, now);
        }
        let mut out = Vec::new();
        let mut walked = 0u64;
        let mut fired_now: Vec<String> = Vec::new();
        while let Some(slot) = self.next.clone() {
            if slot.at > now {
                break;
            }
            walked += 1;
            if walked > MAX_CATCH_UP
                && let Some(latest) = latest_due(schedule, &spec.name, now)
                && latest.local > slot.local
            {
                // A long outage or pause: the slots up to the latest due
                // one are counted at once rather than walked.
                let n = count_between(schedule, &slot, &latest);
                let kind = if spec.enabled {
                    OutcomeKind::Missed {
                        reason: MissReason::NoOwner,
                    }
                } else {
                    OutcomeKind::Skipped {
                        reason: SkipReason::Paused,
                    }
                };
                self.record_many(&mut out, spec, now, &slot, kind, Vec::new());
                let last = schedule.slot_before_local(&spec.name, latest.local);
                if let Some(Decision::Record(prev)) = out.last_mut() {
                    prev.count += n.saturating_sub(1);
                    prev.last_slot = last.as_ref().map(|s| s.id.clone());
                    if let Some(h) = self.history.back_mut() {
                        *h = prev.clone();
                    }
                }
                self.last_handled = last.map(|s| s.id).or(Some(slot.id.clone()));
                self.next = Some(latest);
                self.next_seen = false;
                self.waiting = None;
                walked = 0;
                continue;
            }
            let following = schedule.slot_after_local(&spec.name, slot.local);
            if !spec.enabled {
                let kind = OutcomeKind::Skipped {
                    reason: SkipReason::Paused,
                };
                self.record_many(&mut out, spec, now, &slot, kind, Vec::new());
                self.advance(&slot, following);
                continue;
            }
            // Superseded by a later slot that is due; slots tied at one
            // instant (a DST gap) are each handled in turn.
            let superseded = match &following {
                Some(f) if f.at > slot.at => f.at <= now,
                Some(f) => first_later(schedule, &spec.name, f).is_some_and(|l| l.at <= now),
                None => false,
            };
            let expired = spec
                .starting_deadline
                .is_some_and(|d| now > slot.at + delta(d));
            if superseded || expired {
                let kind = if !self.next_seen {
                    OutcomeKind::Missed {
                        reason: MissReason::NoOwner,
                    }
                } else {
                    let reason = match (expired, self.waiting) {
                        (true, Some(Waiting::Forbid)) => SkipReason::Forbid,
                        (true, _) => SkipReason::Deadline,
                        (false, _) => SkipReason::Superseded,
                    };
                    OutcomeKind::Skipped { reason }
                };
                let recorded = if self.next_seen {
                    self.last_values()
                } else {
                    Vec::new()
                };
                self.record_many(&mut out, spec, now, &slot, kind, recorded);
                self.advance(&slot, following);
                continue;
            }
            // Due and live.
            self.next_seen = true;
            if holds != Some(true) {
                self.waiting = Some(Waiting::Conditions);
                break;
            }
            let active: Vec<String> = active_runs
                .iter()
                .chain(&fired_now)
                .filter(|r| **r != slot.id)
                .cloned()
                .collect();
            let stop = match spec.concurrency {
                Concurrency::Forbid if !active.is_empty() => {
                    self.waiting = Some(Waiting::Forbid);
                    break;
                }
                Concurrency::Replace => active,
                _ => Vec::new(),
            };
            let decision = self.fire(now, spec, slot.id.clone(), slot.at, stop, values.clone());
            out.push(decision);
            fired_now.push(slot.id.clone());
            self.advance(&slot, following);
        }
        out
    }

    fn last_values(&self) -> Vec<ConditionReport> {
        self.tracks.iter().filter_map(|t| t.last.clone()).collect()
    }

    fn conditional(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        holds: Option<bool>,
        values: Vec<ConditionReport>,
        active_runs: &[String],
    ) -> Vec<Decision> {
        match holds {
            Some(false) => {
                self.armed = true;
                self.waiting = None;
                return Vec::new();
            }
            None => return Vec::new(),
            Some(true) => {}
        }
        if !spec.enabled || !self.armed {
            return Vec::new();
        }
        let cooldown = spec.cooldown.unwrap_or(Duration::from_secs(3600));
        if self
            .last_fired_at
            .is_some_and(|t| now < t + delta(cooldown))
        {
            self.waiting = Some(Waiting::Conditions);
            return Vec::new();
        }
        let stop = match spec.concurrency {
            Concurrency::Forbid if !active_runs.is_empty() => {
                self.waiting = Some(Waiting::Forbid);
                return Vec::new();
            }
            Concurrency::Replace => active_runs.to_vec(),
            _ => Vec::new(),
        };
        self.armed = false;
        self.waiting = None;
        let window = cooldown_window(now, cooldown);
        let run_id = slot_id(&spec.name, window);
        vec![self.fire(now, spec, run_id, now, stop, values)]
    }

    /// A manual run (`shoal trigger run`): fires now whatever the
    /// conditions, the schedule or `enabled`; `concurrency = "replace"`
    /// stops the active runs, `forbid` does not block it (the operator
    /// asked). The run id is `<trigger>@manual-<id>`.
    #[must_use]
    pub fn run_now(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        id: &str,
        active_runs: &[String],
    ) -> Fire {
        let stop = match spec.concurrency {
            Concurrency::Replace => active_runs.to_vec(),
            _ => Vec::new(),
        };
        let values = self.last_values();
        match self.fire(now, spec, manual_run_id(&spec.name, id), now, stop, values) {
            Decision::Fire(f) => f,
            Decision::Record(_) => unreachable!("fire returns a Fire"),
        }
    }

    /// A run of `parent` (a job or trigger) ended. If this trigger runs
    /// `after` it that way, its run `<trigger>@<parent_run>` fires, once
    /// per parent run, when the conditions hold (else it is recorded
    /// skipped with the values).
    #[must_use]
    #[allow(clippy::too_many_arguments)]
    pub fn parent_finished(
        &mut self,
        now: DateTime<Utc>,
        spec: &TriggerSpec,
        parent: &str,
        parent_run: &str,
        succeeded: bool,
        signals: &impl Fn(&Signal) -> SignalValue,
        active_runs: &[String],
    ) -> Option<Decision> {
        if !spec
            .after
            .iter()
            .any(|a| a.job == parent && a.on.matches(succeeded))
        {
            return None;
        }
        if self.parent_runs.iter().any(|r| r == parent_run) {
            return None;
        }
        self.parent_runs.push_back(parent_run.to_owned());
        while self.parent_runs.len() > MAX_PARENT_RUNS {
            self.parent_runs.pop_front();
        }
        self.evaluated_at = Some(now);
        let run_id = after_run_id(&spec.name, parent_run);
        let (holds, values) = self.sample(now, spec, signals);
        let skip = if !spec.enabled {
            Some(SkipReason::Paused)
        } else if holds != Some(true) {
            Some(SkipReason::Conditions)
        } else if spec.concurrency == Concurrency::Forbid && !active_runs.is_empty() {
            Some(SkipReason::Forbid)
        } else {
            None
        };
        if let Some(reason) = skip {
            let outcome = Outcome {
                slot: run_id,
                slot_at: now,
                decided_at: now,
                count: 1,
                last_slot: None,
                kind: OutcomeKind::Skipped { reason },
                values,
            };
            self.record(spec, outcome.clone());
            return Some(Decision::Record(outcome));
        }
        let stop = match spec.concurrency {
            Concurrency::Replace => active_runs.to_vec(),
            _ => Vec::new(),
        };
        Some(self.fire(now, spec, run_id, now, stop, values))
    }

    /// A run of this trigger ended: its history entry gets the result
    /// (and `history.success` / `history.failed` bound what is kept).
    pub fn run_finished(&mut self, spec: &TriggerSpec, run_id: &str, result: RunResult) {
        for o in self.history.iter_mut().rev() {
            if let OutcomeKind::Fired {
                run_id: r,
                result: res,
                ..
            } = &mut o.kind
                && r == run_id
            {
                *res = Some(result);
                break;
            }
        }
        self.prune(spec);
    }

    /// The instant the evaluator must be called again (absent new signal
    /// values or run changes): the next slot (earlier by the longest
    /// `hold_for`, so that conditions are watched long enough before it),
    /// and while a slot waits: the next sample of its signals, its
    /// deadline, the next slot, a `hold_for` coming due, a value going
    /// stale. `None`: nothing to wait for (an `after` trigger).
    pub fn next_wake(&self, now: DateTime<Utc>, spec: &TriggerSpec) -> Option<DateTime<Utc>> {
        let sample = spec
            .when
            .iter()
            .map(|c| c.signal.sample_every())
            .min()
            .unwrap_or(DEFAULT_SAMPLE_EVERY);
        let sample_at = now + delta(sample);
        let mut wakes: Vec<DateTime<Utc>> = Vec::new();
        match &spec.schedule {
            Some(schedule) => {
                let slot = self.next.as_ref()?;
                if slot.at > now {
                    let hold = spec
                        .when
                        .iter()
                        .map(|c| c.hold_for)
                        .max()
                        .unwrap_or_default();
                    let watch_from = slot.at - delta(hold);
                    if !spec.enabled || hold.is_zero() {
                        return Some(slot.at);
                    }
                    return Some(if watch_from > now {
                        watch_from
                    } else {
                        sample_at.min(slot.at)
                    });
                }
                if let Some(d) = spec.starting_deadline {
                    wakes.push(slot.at + delta(d) + TimeDelta::milliseconds(1));
                }
                if let Some(f) = schedule.slot_after_local(&spec.name, slot.local) {
                    wakes.push(f.at);
                }
                wakes.push(sample_at);
            }
            None if spec.after.is_empty() => {
                wakes.push(sample_at);
                if let (Some(t), Some(c)) = (self.last_fired_at, spec.cooldown) {
                    wakes.push(t + delta(c));
                }
            }
            None => return None,
        }
        for (c, t) in spec.when.iter().zip(&self.tracks) {
            if let Some(since) = t.true_since {
                wakes.push(since + delta(c.hold_for));
            }
            if let Some(r) = &t.last
                && r.value.is_some()
            {
                wakes.push(r.read_at + delta(c.max_age) + TimeDelta::milliseconds(1));
            }
        }
        wakes.into_iter().filter(|w| *w > now).min()
    }

    /// Why it did or did not fire: a serializable report for `shoal
    /// trigger explain`.
    pub fn explain(&self, now: DateTime<Utc>, spec: &TriggerSpec) -> Explain {
        let tz = spec
            .schedule
            .as_ref()
            .map_or(chrono_tz::Tz::UTC, Schedule::timezone);
        let slot_view = |s: &Slot| SlotView {
            id: s.id.clone(),
            local: format!(
                "{} {}",
                s.at.with_timezone(&tz).format("%Y-%m-%dT%H:%M:%S%:z"),
                tz.name()
            ),
            utc: s.at,
        };
        let next = match (&spec.schedule, &self.next) {
            (Some(schedule), Some(s)) if s.at <= now => {
                schedule.next_slot(&spec.name, now).map(|n| slot_view(&n))
            }
            (_, Some(s)) => Some(slot_view(s)),
            _ => None,
        };
        let pending = self.next.as_ref().filter(|s| s.at <= now).map(|s| Pending {
            slot: slot_view(s),
            deadline: spec.starting_deadline.map(|d| s.at + delta(d)),
            waiting: self.waiting,
        });
        Explain {
            trigger: spec.name.clone(),
            enabled: spec.enabled,
            now,
            evaluated_at: self.evaluated_at,
            timezone: tz.name().to_owned(),
            next_slot: next,
            pending,
            last_handled: self.last_handled.clone(),
            match_mode: spec.match_mode,
            conditions: self.last_values(),
            recent: self.history.iter().rev().cloned().collect(),
        }
    }
}

/// The start of the cooldown window `now` falls in: multiples of the
/// cooldown since the unix epoch, so that two owners name a
/// condition-fired run alike.
fn cooldown_window(now: DateTime<Utc>, cooldown: Duration) -> NaiveDateTime {
    let c = i64::try_from(cooldown.as_secs()).unwrap_or(i64::MAX).max(1);
    let t = now.timestamp().div_euclid(c) * c;
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or(now)
        .naive_utc()
}

/// The first slot from `tied` on (in wall-clock order) due later than
/// `tied` (past the other slots of a DST gap).
fn first_later(schedule: &Schedule, trigger: &str, tied: &Slot) -> Option<Slot> {
    let mut s = tied.clone();
    for _ in 0..100_000 {
        let next = schedule.slot_after_local(trigger, s.local)?;
        if next.at > tied.at {
            return Some(next);
        }
        s = next;
    }
    None
}

/// The latest slot due at `now` (at or before it).
fn latest_due(schedule: &Schedule, trigger: &str, now: DateTime<Utc>) -> Option<Slot> {
    let next = schedule.next_slot(trigger, now)?;
    schedule.slot_before_local(trigger, next.local)
}

/// Slots in `[from, to)`, in wall-clock order (exact for `every`, walked for cron).
fn count_between(schedule: &Schedule, from: &Slot, to: &Slot) -> u64 {
    match schedule {
        Schedule::Every { period } => {
            let p = period.as_secs().max(1);
            let span = (to.local - from.local).num_seconds().max(0).unsigned_abs();
            span / p
        }
        Schedule::Cron { .. } => {
            let mut n = 0;
            let mut s = from.clone();
            while s.local < to.local {
                n += 1;
                match schedule.slot_after_local("", s.local) {
                    Some(x) => s = x,
                    None => break,
                }
            }
            n
        }
    }
}

/// A slot in both zones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotView {
    /// Its id.
    pub id: String,
    /// When, in the trigger's zone (`2026-12-01T03:00:00+01:00 Europe/Berlin`).
    pub local: String,
    /// When, in UTC.
    pub utc: DateTime<Utc>,
}

/// The slot that is due and has not fired.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The slot.
    pub slot: SlotView,
    /// When it will be skipped if it has not fired.
    pub deadline: Option<DateTime<Utc>>,
    /// What it waits for.
    pub waiting: Option<Waiting>,
}

/// What `shoal trigger explain` shows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explain {
    /// The trigger.
    pub trigger: String,
    /// Not paused.
    pub enabled: bool,
    /// When this was made.
    pub now: DateTime<Utc>,
    /// When it was last evaluated (by this state's owner).
    pub evaluated_at: Option<DateTime<Utc>>,
    /// Its zone.
    pub timezone: String,
    /// The next slot still to come.
    pub next_slot: Option<SlotView>,
    /// A due slot waiting to fire.
    pub pending: Option<Pending>,
    /// The last slot handled.
    pub last_handled: Option<String>,
    /// How conditions combine.
    pub match_mode: Match,
    /// Each condition as last evaluated.
    pub conditions: Vec<ConditionReport>,
    /// Outcomes, newest first.
    pub recent: Vec<Outcome>,
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn spec(toml: &str) -> TriggerSpec {
        TriggerSpec::from_toml(toml).unwrap()
    }

    /// Signal values by signal name, changed by the test.
    #[derive(Default)]
    struct Feed(RefCell<BTreeMap<String, SignalValue>>);

    impl Feed {
        fn set(&self, signal: &str, value: f64, at: DateTime<Utc>) {
            self.0.borrow_mut().insert(
                signal.into(),
                SignalValue::new(value, format!("test {signal}"), at),
            );
        }

        fn get(&self) -> impl Fn(&Signal) -> SignalValue + '_ {
            |s: &Signal| {
                self.0
                    .borrow()
                    .get(&s.name())
                    .cloned()
                    .unwrap_or_else(|| SignalValue::unknown("nothing"))
            }
        }
    }

    fn fired(d: &[Decision]) -> Vec<&str> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Fire(f) => Some(f.run_id.as_str()),
                Decision::Record(_) => None,
            })
            .collect()
    }

    fn recorded(d: &[Decision]) -> Vec<(&str, &OutcomeKind, u64)> {
        d.iter()
            .filter_map(|d| match d {
                Decision::Record(o) => Some((o.slot.as_str(), &o.kind, o.count)),
                Decision::Fire(_) => None,
            })
            .collect()
    }

    const CHEAP: &str = r#"
name = "cheap"
every = "1m"
starting_deadline = "30s"

[[when]]
signal = "min(label.price_per_hour)"
op = "<"
value = 0.05

[run]
[run.task]
command = "/bin/true"
"#;

    #[test]
    fn fires_at_the_slot_when_the_conditions_hold_and_binds_placement() {
        let s = spec(CHEAP);
        let feed = Feed::default();
        let t0 = utc("2026-12-01T03:00:30Z");
        let mut st = TriggerState::new(&s, t0);
        assert_eq!(st.next_wake(t0, &s), Some(utc("2026-12-01T03:01:00Z")));
        // Not due yet: nothing.
        assert!(st.evaluate(t0, &s, &feed.get(), &[]).is_empty());
        let t1 = utc("2026-12-01T03:01:00Z");
        feed.set("min(label.price_per_hour)", 0.02, t1);
        let d = st.evaluate(t1, &s, &feed.get(), &[]);
        assert_eq!(fired(&d), ["cheap@2026-12-01T03:01:00"]);
        let Decision::Fire(f) = &d[0] else { panic!() };
        assert_eq!(f.constraints.len(), 1);
        assert_eq!(f.constraints[0].attribute, "label.price_per_hour");
        assert_eq!(f.constraints[0].op, shoal_model::ConstraintOp::Lt);
        assert!(f.constraints[0].check(|_| Some("0.02".into())).is_ok());
        assert!(f.constraints[0].check(|_| Some("0.08".into())).is_err());
        assert_eq!(f.values[0].value, Some(0.02));
        // The same instant again: nothing more (handled once).
        assert!(st.evaluate(t1, &s, &feed.get(), &[]).is_empty());
        assert_eq!(st.last_handled(), Some("cheap@2026-12-01T03:01:00"));
    }

    #[test]
    fn a_slot_whose_deadline_passes_is_skipped_with_the_values() {
        let s = spec(CHEAP);
        let feed = Feed::default();
        let t1 = utc("2026-12-01T03:01:00Z");
        let mut st = TriggerState::new(&s, utc("2026-12-01T03:00:30Z"));
        feed.set("min(label.price_per_hour)", 0.08, t1);
        assert!(st.evaluate(t1, &s, &feed.get(), &[]).is_empty());
        let ex = st.explain(t1, &s);
        assert_eq!(
            ex.pending.as_ref().unwrap().waiting,
            Some(Waiting::Conditions)
        );
        // Wake at the next sample (10 s) before the deadline.
        assert_eq!(st.next_wake(t1, &s), Some(utc("2026-12-01T03:01:10Z")));
        let t2 = utc("2026-12-01T03:01:30Z");
        feed.set("min(label.price_per_hour)", 0.07, t2);
        assert!(
            st.evaluate(t2, &s, &feed.get(), &[]).is_empty(),
            "at the deadline, still live"
        );
        let t3 = utc("2026-12-01T03:01:30.001Z");
        let d = st.evaluate(t3, &s, &feed.get(), &[]);
        assert_eq!(
            recorded(&d),
            [(
                "cheap@2026-12-01T03:01:00",
                &OutcomeKind::Skipped {
                    reason: SkipReason::Deadline
                },
                1
            )]
        );
        let Decision::Record(o) = &d[0] else { panic!() };
        assert_eq!(o.values[0].value, Some(0.07));
        assert_eq!(o.values[0].result, Some(false));
        assert_eq!(o.values[0].source, "test min(label.price_per_hour)");
    }

    #[test]
    fn hold_for_needs_the_condition_true_that_long() {
        let s = spec(
            r#"
name = "calm"
cooldown = "1h"
[[when]]
signal = "tasks_pending"
op = "=="
value = 0
hold_for = "5m"
[scale]
job = "web"
count = 1
"#,
        );
        let feed = Feed::default();
        let t0 = utc("2026-12-01T03:00:00Z");
        let mut st = TriggerState::new(&s, t0);
        let at = |m: i64| t0 + TimeDelta::minutes(m);
        feed.set("tasks_pending", 0.0, at(0));
        assert!(st.evaluate(at(0), &s, &feed.get(), &[]).is_empty());
        // A hold_for expiry is a wake-up.
        assert_eq!(
            st.next_wake(at(0), &s),
            Some(at(0) + TimeDelta::seconds(10))
        );
        feed.set("tasks_pending", 0.0, at(3));
        assert!(st.evaluate(at(3), &s, &feed.get(), &[]).is_empty());
        assert_eq!(st.explain(at(3), &s).conditions[0].held_ms, 180_000);
        // It breaks: the hold starts again.
        feed.set("tasks_pending", 2.0, at(4));
        assert!(st.evaluate(at(4), &s, &feed.get(), &[]).is_empty());
        feed.set("tasks_pending", 0.0, at(5));
        assert!(st.evaluate(at(5), &s, &feed.get(), &[]).is_empty());
        feed.set("tasks_pending", 0.0, at(9));
        assert!(st.evaluate(at(9), &s, &feed.get(), &[]).is_empty());
        feed.set("tasks_pending", 0.0, at(10));
        let d = st.evaluate(at(10), &s, &feed.get(), &[]);
        // Condition-fired runs are named after their cooldown window.
        assert_eq!(fired(&d), ["calm@2026-12-01T03:00:00"]);
        // Still true: not again (it must become true again, and the
        // cooldown must pass).
        feed.set("tasks_pending", 0.0, at(70));
        assert!(st.evaluate(at(70), &s, &feed.get(), &[]).is_empty());
        feed.set("tasks_pending", 1.0, at(71));
        assert!(st.evaluate(at(71), &s, &feed.get(), &[]).is_empty());
        for m in [72, 76, 77] {
            feed.set("tasks_pending", 0.0, at(m));
            let d = st.evaluate(at(m), &s, &feed.get(), &[]);
            if m == 77 {
                assert_eq!(fired(&d), ["calm@2026-12-01T04:00:00"]);
            } else {
                assert!(d.is_empty(), "{m}");
            }
        }
    }

    #[test]
    fn a_stale_value_counts_as_missing() {
        let base = r#"
name = "feed"
every = "1m"
starting_deadline = "50s"
run_job = "x"
[[when]]
signal = "http_json"
url = "http://127.0.0.1:1/p"
pointer = "/p"
every = "10s"
op = "<"
value = 1
ON_MISSING
"#;
        let t1 = utc("2026-12-01T03:01:00Z");
        let old = t1 - TimeDelta::seconds(21); // max_age = 2 × every = 20 s
        for (on_missing, fires) in [
            ("", false),
            ("on_missing = \"false\"", false),
            ("on_missing = \"true\"", true),
        ] {
            let s = spec(&base.replace("ON_MISSING", on_missing));
            let feed = Feed::default();
            feed.set("http_json", 0.5, old);
            let mut st = TriggerState::new(&s, utc("2026-12-01T03:00:30Z"));
            let d = st.evaluate(t1, &s, &feed.get(), &[]);
            assert_eq!(!fired(&d).is_empty(), fires, "{on_missing}");
            let r = &st.explain(t1, &s).conditions[0];
            assert!(r.stale);
            assert_eq!(r.age_ms, 21_000);
            assert_eq!(
                r.result,
                if on_missing.is_empty() {
                    None
                } else {
                    Some(fires)
                }
            );
        }
        // Fresh: fires. A value going stale is a wake-up.
        let s = spec(&base.replace("ON_MISSING", ""));
        let feed = Feed::default();
        feed.set("http_json", 0.5, t1 - TimeDelta::seconds(5));
        let mut st = TriggerState::new(&s, utc("2026-12-01T03:00:30Z"));
        assert_eq!(
            fired(&st.evaluate(t1, &s, &feed.get(), &[])),
            ["feed@2026-12-01T03:01:00"]
        );
        // The undecided slot waits; then its deadline passes: skipped.
        let t2 = utc("2026-12-01T03:02:00Z");
        assert!(st.evaluate(t2, &s, &feed.get(), &[]).is_empty());
        let d = st.evaluate(t2 + TimeDelta::seconds(51), &s, &feed.get(), &[]);
        assert_eq!(
            recorded(&d)[0].1,
            &OutcomeKind::Skipped {
                reason: SkipReason::Deadline
            }
        );
    }

    const EVERY: &str = r#"
name = "job"
every = "10s"
starting_deadline = "8s"
concurrency = "CONC"
run_job = "x"
"#;

    #[test]
    fn forbid_waits_for_the_active_run_up_to_the_deadline() {
        let s = spec(&EVERY.replace("CONC", "forbid"));
        let feed = Feed::default();
        let t = |x: i64| utc("2026-12-01T03:00:00Z") + TimeDelta::seconds(x);
        let mut st = TriggerState::new(&s, t(-1));
        let active = vec!["job@2026-12-01T02:59:50".to_owned()];
        assert!(st.evaluate(t(0), &s, &feed.get(), &active).is_empty());
        assert_eq!(
            st.explain(t(0), &s).pending.unwrap().waiting,
            Some(Waiting::Forbid)
        );
        // It ends within the deadline: the slot fires late.
        let d = st.evaluate(t(3), &s, &feed.get(), &[]);
        assert_eq!(fired(&d), ["job@2026-12-01T03:00:00"]);
        assert!(matches!(
            st.history().last().unwrap().kind,
            OutcomeKind::Fired { late_ms: 3000, .. }
        ));
        // Next slot: the run does not end in time: skipped, forbid.
        let active = vec!["job@2026-12-01T03:00:00".to_owned()];
        assert!(st.evaluate(t(10), &s, &feed.get(), &active).is_empty());
        let d = st.evaluate(t(19), &s, &feed.get(), &active);
        assert_eq!(
            recorded(&d),
            [(
                "job@2026-12-01T03:00:10",
                &OutcomeKind::Skipped {
                    reason: SkipReason::Forbid
                },
                1
            )]
        );
    }

    #[test]
    fn replace_stops_the_active_run_and_allow_runs_beside_it() {
        let feed = Feed::default();
        let t0 = utc("2026-12-01T03:00:00Z");
        let active = vec!["job@2026-12-01T02:59:50".to_owned()];
        let s = spec(&EVERY.replace("CONC", "replace"));
        let mut st = TriggerState::new(&s, t0 - TimeDelta::seconds(1));
        let d = st.evaluate(t0, &s, &feed.get(), &active);
        let Decision::Fire(f) = &d[0] else {
            panic!("{d:?}")
        };
        assert_eq!(f.stop, active);
        let s = spec(&EVERY.replace("CONC", "allow"));
        let mut st = TriggerState::new(&s, t0 - TimeDelta::seconds(1));
        let d = st.evaluate(t0, &s, &feed.get(), &active);
        let Decision::Fire(f) = &d[0] else {
            panic!("{d:?}")
        };
        assert!(f.stop.is_empty());
    }

    #[test]
    fn a_new_owner_fires_a_missed_slot_late_or_records_it_missed() {
        let s = spec(&EVERY.replace("CONC", "allow"));
        let feed = Feed::default();
        let t = |x: i64| utc("2026-12-01T03:00:00Z") + TimeDelta::seconds(x);
        let mut old = TriggerState::new(&s, t(-1));
        assert_eq!(
            fired(&old.evaluate(t(0), &s, &feed.get(), &[])),
            ["job@2026-12-01T03:00:00"]
        );
        // The owner dies; a new one learns only the last slot handled, 35 s
        // later: 03:00:10 and :20 are past their deadline (8 s), :30 is not.
        let mut new = TriggerState::resume(&s, t(-100), old.last_handled());
        let d = new.evaluate(t(35), &s, &feed.get(), &[]);
        assert_eq!(
            recorded(&d),
            [(
                "job@2026-12-01T03:00:10",
                &OutcomeKind::Missed {
                    reason: MissReason::NoOwner
                },
                2
            )]
        );
        let Decision::Record(o) = &d[0] else { panic!() };
        assert_eq!(o.last_slot.as_deref(), Some("job@2026-12-01T03:00:20"));
        assert_eq!(fired(&d), ["job@2026-12-01T03:00:30"]);
        // The old owner comes back (a partition healed) with its own state:
        // it would fire :30 too; its ledger says :30 was handled, so resuming
        // from it gives nothing at :30.
        let mut back = TriggerState::resume(&s, t(-100), new.last_handled());
        assert!(fired(&back.evaluate(t(36), &s, &feed.get(), &[])).is_empty());
    }

    #[test]
    fn a_long_outage_is_counted_not_walked() {
        let s = spec(&EVERY.replace("CONC", "allow"));
        let feed = Feed::default();
        let t0 = utc("2026-12-01T03:00:00Z");
        let mut st = TriggerState::resume(&s, t0, Some("job@2026-12-01T03:00:00"));
        // A week later, 4 s after a slot.
        let now = t0 + TimeDelta::days(7) + TimeDelta::seconds(4);
        let d = st.evaluate(now, &s, &feed.get(), &[]);
        let rec = recorded(&d);
        assert_eq!(rec.len(), 1);
        // Every slot of the week but the first handled and the last fired.
        assert_eq!(rec[0].2, 7 * 24 * 360 - 1);
        assert_eq!(fired(&d), ["job@2026-12-08T03:00:00"]);
    }

    #[test]
    fn paused_slots_are_recorded() {
        let mut s = spec(&EVERY.replace("CONC", "allow"));
        s.enabled = false;
        let feed = Feed::default();
        let t0 = utc("2026-12-01T03:00:00Z");
        let mut st = TriggerState::new(&s, t0 - TimeDelta::seconds(1));
        let d = st.evaluate(t0 + TimeDelta::seconds(25), &s, &feed.get(), &[]);
        assert_eq!(
            recorded(&d),
            [(
                "job@2026-12-01T03:00:00",
                &OutcomeKind::Skipped {
                    reason: SkipReason::Paused
                },
                3
            )]
        );
        assert!(fired(&d).is_empty());
    }

    #[test]
    fn daily_0230_berlin_fires_once_a_day_across_both_dst_changes() {
        let s = spec(
            "name = \"nightly\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nstarting_deadline = \"10m\"\nrun_job = \"x\"\n",
        );
        let feed = Feed::default();
        for (from, days, expect) in [
            (
                "2026-03-28T00:00:00Z",
                2,
                vec![
                    ("nightly@2026-03-28T02:30:00", "2026-03-28T01:30:00Z"),
                    ("nightly@2026-03-29T02:30:00", "2026-03-29T01:00:00Z"),
                ],
            ),
            (
                "2026-10-24T00:00:00Z",
                2,
                vec![
                    ("nightly@2026-10-24T02:30:00", "2026-10-24T00:30:00Z"),
                    ("nightly@2026-10-25T02:30:00", "2026-10-25T00:30:00Z"),
                ],
            ),
        ] {
            let start = utc(from);
            let mut st = TriggerState::new(&s, start);
            let mut got = Vec::new();
            // An evaluator called every minute for `days` days.
            for m in 0..days * 24 * 60 {
                let now = start + TimeDelta::minutes(m);
                for d in st.evaluate(now, &s, &feed.get(), &[]) {
                    match d {
                        Decision::Fire(f) => got.push((f.run_id, now)),
                        Decision::Record(o) => panic!("{o:?}"),
                    }
                }
            }
            let want: Vec<(String, DateTime<Utc>)> = expect
                .iter()
                .map(|(id, at)| ((*id).to_owned(), utc(at)))
                .collect();
            assert_eq!(got, want);
        }
    }

    #[test]
    fn slots_of_one_dst_gap_fall_due_together_and_concurrency_decides() {
        let feed = Feed::default();
        let gap_end = utc("2026-03-29T01:00:00Z");
        let text = "name = \"half\"\ncron = \"*/30 * * * *\"\ntimezone = \"Europe/Berlin\"\nconcurrency = \"CONC\"\nrun_job = \"x\"\n";
        let s = spec(&text.replace("CONC", "allow"));
        let mut st = TriggerState::new(&s, utc("2026-03-29T00:45:00Z"));
        let d = st.evaluate(gap_end, &s, &feed.get(), &[]);
        assert_eq!(
            fired(&d),
            [
                "half@2026-03-29T02:00:00",
                "half@2026-03-29T02:30:00",
                "half@2026-03-29T03:00:00"
            ]
        );
        let s = spec(&text.replace("CONC", "forbid"));
        let mut st = TriggerState::new(&s, utc("2026-03-29T00:45:00Z"));
        let d = st.evaluate(gap_end, &s, &feed.get(), &[]);
        assert_eq!(fired(&d), ["half@2026-03-29T02:00:00"]);
        assert!(recorded(&d).is_empty());
        // The first run ends: the next slot of the gap fires late.
        let later = gap_end + TimeDelta::minutes(5);
        let d = st.evaluate(later, &s, &feed.get(), &[]);
        assert_eq!(fired(&d), ["half@2026-03-29T02:30:00"]);
        // The second never ends before 03:30 CEST is due: 03:00 is
        // superseded (the tie does not hold the queue up), 03:30 waits.
        let active = vec!["half@2026-03-29T02:30:00".to_owned()];
        let d = st.evaluate(utc("2026-03-29T01:30:00Z"), &s, &feed.get(), &active);
        assert_eq!(
            recorded(&d),
            [(
                "half@2026-03-29T03:00:00",
                &OutcomeKind::Skipped {
                    reason: SkipReason::Superseded
                },
                1
            )]
        );
        assert!(fired(&d).is_empty());
    }

    #[test]
    fn next_wake_covers_the_deadline_and_the_next_slot() {
        let s = spec(&EVERY.replace("CONC", "forbid"));
        let feed = Feed::default();
        let t0 = utc("2026-12-01T03:00:00Z");
        let mut st = TriggerState::new(&s, t0 - TimeDelta::seconds(1));
        assert_eq!(st.next_wake(t0 - TimeDelta::seconds(1), &s), Some(t0));
        let active = vec!["job@x".to_owned()];
        assert!(st.evaluate(t0, &s, &feed.get(), &active).is_empty());
        // Waiting (forbid): the sooner of the next sample (10 s) and the
        // deadline (8 s, then 1 ms, since the deadline itself is still live).
        assert_eq!(
            st.next_wake(t0, &s),
            Some(t0 + TimeDelta::milliseconds(8001))
        );
        let json = serde_json::to_value(st.evaluate(
            t0 + TimeDelta::milliseconds(8001),
            &s,
            &feed.get(),
            &active,
        ))
        .unwrap();
        assert_eq!(json[0]["decision"], "record");
        assert_eq!(json[0]["outcome"], "skipped");
        assert_eq!(json[0]["reason"], "forbid");
        assert_eq!(
            st.next_wake(t0 + TimeDelta::seconds(9), &s),
            Some(t0 + TimeDelta::seconds(10))
        );
    }

    #[test]
    fn explain_shows_the_next_slot_in_both_zones_and_serializes() {
        let s = spec(
            "name = \"nightly\"\ncron = \"30 2 * * *\"\ntimezone = \"Europe/Berlin\"\nrun_job = \"x\"\n",
        );
        let st = TriggerState::new(&s, utc("2026-12-01T12:00:00Z"));
        let ex = st.explain(utc("2026-12-01T12:00:00Z"), &s);
        let next = ex.next_slot.as_ref().unwrap();
        assert_eq!(next.id, "nightly@2026-12-02T02:30:00");
        assert_eq!(next.local, "2026-12-02T02:30:00+01:00 Europe/Berlin");
        assert_eq!(next.utc, utc("2026-12-02T01:30:00Z"));
        let json = serde_json::to_value(&ex).unwrap();
        assert_eq!(json["timezone"], "Europe/Berlin");
        assert_eq!(json["next_slot"]["utc"], "2026-12-02T01:30:00Z");
    }

    #[test]
    fn history_is_bounded_by_result() {
        let mut s = spec(&EVERY.replace("CONC", "allow"));
        s.history = crate::HistoryLimits {
            success: 2,
            failed: 1,
        };
        let feed = Feed::default();
        let t0 = utc("2026-12-01T03:00:00Z");
        let mut st = TriggerState::new(&s, t0 - TimeDelta::seconds(1));
        for i in 0..6 {
            let now = t0 + TimeDelta::seconds(10 * i);
            let d = st.evaluate(now, &s, &feed.get(), &[]);
            let id = fired(&d)[0].to_owned();
            let result = if i % 2 == 0 {
                RunResult::Success
            } else {
                RunResult::Failed
            };
            st.run_finished(&s, &id, result);
        }
        let kept: Vec<(&str, Option<RunResult>)> = st
            .history()
            .map(|o| match &o.kind {
                OutcomeKind::Fired { run_id, result, .. } => (run_id.as_str(), *result),
                _ => panic!(),
            })
            .collect();
        assert_eq!(
            kept,
            [
                ("job@2026-12-01T03:00:20", Some(RunResult::Success)),
                ("job@2026-12-01T03:00:40", Some(RunResult::Success)),
                ("job@2026-12-01T03:00:50", Some(RunResult::Failed)),
            ]
        );
    }

    #[test]
    fn after_fires_once_per_parent_run_that_ended_the_right_way() {
        let s = spec(
            "name = \"load\"\nafter = [{ job = \"extract\", on = \"success\" }]\nrun_job = \"x\"\n",
        );
        let feed = Feed::default();
        let now = utc("2026-12-01T03:05:00Z");
        let mut st = TriggerState::new(&s, now);
        let parent = "extract@2026-12-01T03:00:00";
        assert!(
            st.parent_finished(now, &s, "extract", parent, false, &feed.get(), &[])
                .is_none()
        );
        let d = st
            .parent_finished(now, &s, "extract", parent, true, &feed.get(), &[])
            .unwrap();
        let Decision::Fire(f) = d else { panic!() };
        assert_eq!(f.run_id, "load@extract@2026-12-01T03:00:00");
        assert!(
            st.parent_finished(now, &s, "extract", parent, true, &feed.get(), &[])
                .is_none()
        );
        assert!(
            st.parent_finished(now, &s, "other", "other@1", true, &feed.get(), &[])
                .is_none()
        );
        assert_eq!(st.next_wake(now, &s), None);
    }

    #[test]
    fn manual_runs() {
        let s = spec(&EVERY.replace("CONC", "replace"));
        let mut st = TriggerState::new(&s, utc("2026-12-01T03:00:00Z"));
        let f = st.run_now(utc("2026-12-01T03:00:01Z"), &s, "42", &["job@a".into()]);
        assert_eq!(f.run_id, "job@manual-42");
        assert_eq!(f.stop, ["job@a"]);
    }

    #[test]
    fn the_state_survives_serialization_mid_slot() {
        let s = spec(CHEAP);
        let feed = Feed::default();
        let t1 = utc("2026-12-01T03:01:00Z");
        let mut st = TriggerState::new(&s, utc("2026-12-01T03:00:30Z"));
        feed.set("min(label.price_per_hour)", 0.09, t1);
        assert!(st.evaluate(t1, &s, &feed.get(), &[]).is_empty());
        let json = serde_json::to_string(&st).unwrap();
        let mut handed: TriggerState = serde_json::from_str(&json).unwrap();
        assert_eq!(handed, st);
        let t2 = t1 + TimeDelta::seconds(10);
        feed.set("min(label.price_per_hour)", 0.01, t2);
        assert_eq!(
            fired(&handed.evaluate(t2, &s, &feed.get(), &[])),
            ["cheap@2026-12-01T03:01:00"]
        );
    }

    proptest! {
        /// Whatever the evaluation times, the conditions, the active runs
        /// and the handovers between owners: every slot is handled at most
        /// once, and every slot whose deadline has passed by the last
        /// evaluation is handled (fired, skipped or missed).
        #[test]
        fn each_slot_once_none_dropped(
            steps in proptest::collection::vec((1u32..40_000, any::<bool>(), any::<bool>(), 0u8..4), 1..80),
            deadline_s in 1u64..30,
        ) {
            let s = spec(&format!(
                "name = \"p\"\nevery = \"5s\"\nstarting_deadline = \"{deadline_s}s\"\n[[when]]\nsignal = \"free.cpu\"\nop = \">\"\nvalue = 1\n[run]\n[run.task]\ncommand = \"x\"\n"
            ));
            let feed = Feed::default();
            let start = utc("2026-12-01T03:00:01Z");
            let mut st = TriggerState::new(&s, start);
            let mut now = start;
            let mut handled: BTreeMap<String, u32> = BTreeMap::new();
            let mut count = |id: &str, n: u64, last: Option<&str>| {
                // A collapsed outcome stands for n consecutive slots.
                let first = crate::parse_slot_id("p", id).unwrap();
                for k in 0..n {
                    let local = first + TimeDelta::seconds(5 * k as i64);
                    *handled.entry(slot_id("p", local)).or_default() += 1;
                }
                if let Some(l) = last {
                    let last = crate::parse_slot_id("p", l).unwrap();
                    assert_eq!(first + TimeDelta::seconds(5 * (n as i64 - 1)), last);
                }
            };
            for (gap_ms, cond, busy, handover) in steps {
                now += TimeDelta::milliseconds(i64::from(gap_ms));
                feed.set("free.cpu", if cond { 4.0 } else { 0.0 }, now);
                let active = if busy { vec!["p@other".to_owned()] } else { vec![] };
                match handover {
                    0 => st = TriggerState::resume(&s, start, st.last_handled()),
                    1 => st = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap(),
                    _ => {}
                }
                for d in st.evaluate(now, &s, &feed.get(), &active) {
                    match d {
                        Decision::Fire(f) => count(&f.run_id, 1, None),
                        Decision::Record(o) => count(&o.slot, o.count, o.last_slot.as_deref()),
                    }
                }
            }
            for (id, n) in &handled {
                prop_assert_eq!(*n, 1, "{} handled {} times", id, n);
            }
            // Every slot past its deadline (and before the next slot) is handled.
            let schedule = s.schedule.clone().unwrap();
            let mut slot = schedule.next_slot("p", start).unwrap();
            let mut expected = BTreeSet::new();
            while slot.at + TimeDelta::seconds(deadline_s as i64) < now {
                expected.insert(slot.id.clone());
                slot = schedule.slot_after_local("p", slot.local).unwrap();
            }
            let got: BTreeSet<String> = handled.keys().cloned().collect();
            prop_assert!(expected.is_subset(&got), "missing: {:?}", expected.difference(&got).collect::<Vec<_>>());
        }
    }
}
