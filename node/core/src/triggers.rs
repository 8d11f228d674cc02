//! The trigger driver: what a node does with the triggers whose key
//! (`@trigger/<name>`) it owns on the ring, as a pure state machine. The
//! agent (`node/src/triggers.rs`) drives it with the replicated state, the
//! members' metadata and the signal feeds it fetches; the simulator
//! (`sim/src/scale_trigger.rs`) drives the same [`TriggerEvaluator`] with
//! its virtual clock, network and price model. No node is the scheduler:
//! when the ring changes, another node finds that it owns the trigger and
//! resumes it from the ledger in the replicated state.
//!
//! One pass over a trigger ([`TriggerEvaluator::pass`]):
//!
//! 1. its runs (the jobs labelled with it) that ended are reported to the
//!    firing rules ([`TriggerState::run_finished`]) and recorded;
//! 2. when its wake-up time has come, or a run of one of its `after`
//!    parents ended and was not handled yet, and the caller has gathered
//!    the signals (it asks [`TriggerEvaluator::wants_signals`] first: a
//!    fetch is I/O, done outside), [`TriggerState::evaluate`] and
//!    [`TriggerState::parent_finished`] decide;
//! 3. the [`Step`] says what to do, in order: write the ledger **before**
//!    acting on it (the fire record), then start the runs, then delete the
//!    finished runs beyond the trigger's `history`. When the ledger cannot
//!    be written, the caller starts nothing and [`TriggerDriver::forget`]s
//!    the trigger: whoever owns it next resumes from the ledger and decides
//!    the slot again (within its deadline).
//!
//! Nothing here reads a clock: `now` is the caller's wall clock (cron is
//! about the wall clock), handed in at each call.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use shoal_trigger::{
    Decision, Explain, Fire, HistoryLimits, Ledger, Outcome, OutcomeKind, RunResult, Signal,
    SignalValue, TriggerSpec, TriggerState,
};

/// How far back a parent's run may have ended for an `after` trigger to
/// still start on it: bounds what a new evaluator (which does not know
/// what the previous one handled beyond the ledger and the runs' jobs)
/// looks at.
pub const AFTER_WINDOW: Duration = Duration::from_secs(3600);

/// A job as the trigger driver sees it: a trigger's run, or a batch job
/// that an `after` trigger may follow. Borrowed from the caller's view of
/// the desired state.
#[derive(Clone, Copy, Debug)]
pub struct RunJob<'a> {
    /// The job's name.
    pub name: &'a str,
    /// The trigger whose run it is (its `shoal.trigger` label), if any.
    pub trigger: Option<&'a str>,
    /// The run id (its `shoal.run` label; the job's name if none).
    pub run_id: &'a str,
    /// Whether it is a batch job.
    pub batch: bool,
    /// The version its current run began at.
    pub run_version: u64,
    /// How it ended; `None` while it runs.
    pub result: Option<RunResult>,
    /// Created (RFC 3339, so it sorts as text).
    pub created_at: &'a str,
    /// When it ended, ms since the Unix epoch (0: unknown).
    pub ended_ms: u64,
}

/// A trigger as its record stands in the replicated state.
#[derive(Clone, Copy, Debug)]
pub struct TriggerInput<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its spec, with `enabled = false` when it is paused.
    pub spec: &'a TriggerSpec,
    /// Created, ms since the Unix epoch.
    pub created_at_ms: u64,
    /// The ledger, as replicated here.
    pub ledger: &'a Ledger,
}

/// A run to start: the fire record is written.
#[derive(Clone, Debug, PartialEq)]
pub struct Start {
    /// The run.
    pub fire: Fire,
    /// The parent run whose end started it (`after`).
    pub parent: Option<String>,
}

/// What one pass over a trigger asks the caller to do, in this order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    /// This pass took the trigger over, resuming after this slot (`Some(None)`:
    /// from its creation).
    pub resumed: Option<Option<String>>,
    /// The ledger to write, and what happened (`fired`, `skipped`,
    /// `missed`, `finished`): before anything else.
    pub ledger: Option<(Ledger, String)>,
    /// The outcomes this pass recorded (merged into that ledger): slots
    /// fired, skipped or missed, runs that ended.
    pub recorded: Vec<Outcome>,
    /// Runs to start, once the ledger is written.
    pub starts: Vec<Start>,
    /// Jobs of finished runs beyond the trigger's `history`, to delete
    /// (after the ledger, so that their results are recorded first).
    pub delete: Vec<String>,
    /// When to pass over the trigger again, at the latest.
    pub wake: Option<DateTime<Utc>>,
}

/// The runs of `parent` among `jobs` that ended at or after `since_ms`
/// (ms since the epoch), oldest first, as `(run id, succeeded)`: a
/// trigger's runs (the jobs labelled with it), and a batch job's current
/// run (`<job>@v<version>`, the version its run began at). A run that has
/// not ended, or whose end is unknown, is not listed.
pub fn parent_ends(jobs: &[RunJob<'_>], parent: &str, since_ms: u64) -> Vec<(String, bool)> {
    let mut out: Vec<(u64, String, bool)> = Vec::new();
    for j in jobs {
        let run = if j.trigger == Some(parent) {
            j.run_id.to_owned()
        } else if j.name == parent && j.trigger.is_none() && j.batch {
            format!("{}@v{}", j.name, j.run_version)
        } else {
            continue;
        };
        let Some(result) = j.result else { continue };
        if j.ended_ms >= since_ms && j.ended_ms > 0 {
            out.push((j.ended_ms, run, result == RunResult::Success));
        }
    }
    out.sort();
    out.into_iter().map(|(_, run, ok)| (run, ok)).collect()
}

/// The jobs of finished runs that `history` does not keep: all but the
/// newest `history.success` complete ones and `history.failed` failed
/// ones (by creation time). Runs still running are kept.
pub fn runs_beyond_history(runs: &[&RunJob<'_>], history: &HistoryLimits) -> Vec<String> {
    let mut finished: Vec<&RunJob<'_>> = runs
        .iter()
        .copied()
        .filter(|j| j.result.is_some())
        .collect();
    finished.sort_by(|a, b| b.created_at.cmp(a.created_at).then(b.name.cmp(a.name)));
    let (mut ok, mut failed) = (0u32, 0u32);
    finished
        .into_iter()
        .filter(|j| {
            let (n, keep) = if j.result == Some(RunResult::Success) {
                (&mut ok, history.success)
            } else {
                (&mut failed, history.failed)
            };
            *n += 1;
            *n > keep
        })
        .map(|j| j.name.to_owned())
        .collect()
}

/// The parents' run ends an `after` trigger has not handled yet, as
/// `(parent, parent run, succeeded)`: those that match an edge's `on`,
/// ended after the trigger was created and within [`AFTER_WINDOW`], and
/// whose child run is neither a job nor in the ledger.
fn unhandled_parent_ends(
    now: DateTime<Utc>,
    input: &TriggerInput<'_>,
    jobs: &[RunJob<'_>],
    runs: &[&RunJob<'_>],
) -> Vec<(String, String, bool)> {
    let spec = input.spec;
    if spec.after.is_empty() {
        return Vec::new();
    }
    let handled: BTreeSet<&str> = runs
        .iter()
        .map(|j| j.run_id)
        .chain(input.ledger.outcomes.iter().map(|o| o.slot.as_str()))
        .collect();
    let now_ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
    let window = u64::try_from(AFTER_WINDOW.as_millis()).unwrap_or(u64::MAX);
    let since = input.created_at_ms.max(now_ms.saturating_sub(window));
    spec.after
        .iter()
        .flat_map(|a| {
            parent_ends(jobs, &a.job, since)
                .into_iter()
                .filter(|(_, ok)| a.on.matches(*ok))
                .map(|(run, ok)| (a.job.clone(), run, ok))
        })
        .filter(|(_, run, _)| {
            !handled.contains(shoal_trigger::after_run_id(&spec.name, run).as_str())
        })
        .collect()
}

/// One trigger's evaluation on the node that owns it: the firing rules'
/// state, when to look again, and the runs it fired that it has not seen
/// end.
#[derive(Clone, Debug)]
pub struct TriggerEvaluator {
    state: TriggerState,
    wake: Option<DateTime<Utc>>,
    /// Runs fired and not yet seen finished.
    unfinished: BTreeSet<String>,
    /// Set by [`TriggerEvaluator::resume`], reported by the first pass.
    resumed: Option<Option<String>>,
}

impl TriggerEvaluator {
    /// Takes trigger `input` over, from its ledger: the slots after the
    /// last one handled (by anyone) are handled next; the runs the ledger
    /// records fired and not finished are watched.
    pub fn resume(input: &TriggerInput<'_>) -> TriggerEvaluator {
        let created =
            DateTime::from_timestamp_millis(i64::try_from(input.created_at_ms).unwrap_or(0))
                .unwrap_or_default();
        let last = input.ledger.last_handled.clone();
        let state = TriggerState::resume(input.spec, created, last.as_deref());
        let unfinished = input
            .ledger
            .outcomes
            .iter()
            .filter_map(|o| match &o.kind {
                OutcomeKind::Fired {
                    run_id,
                    result: None,
                    ..
                } => Some(run_id.clone()),
                _ => None,
            })
            .collect();
        TriggerEvaluator {
            state,
            wake: None,
            unfinished,
            resumed: Some(last),
        }
    }

    /// The firing rules' state.
    pub fn state(&self) -> &TriggerState {
        &self.state
    }

    /// When the next pass is due (`None`: now).
    pub fn wake(&self) -> Option<DateTime<Utc>> {
        self.wake
    }

    /// Why it fired or did not, as this evaluator sees it now.
    pub fn explain(&self, now: DateTime<Utc>, spec: &TriggerSpec) -> Explain {
        self.state.explain(now, spec)
    }

    /// Whether a pass now would evaluate the conditions: the caller then
    /// gathers the signals (fetches the feeds that are due…) and hands
    /// them to [`TriggerEvaluator::pass`].
    pub fn wants_signals(
        &self,
        now: DateTime<Utc>,
        input: &TriggerInput<'_>,
        jobs: &[RunJob<'_>],
    ) -> bool {
        if self.wake.is_none_or(|w| w <= now) {
            return true;
        }
        let runs: Vec<&RunJob<'_>> = runs_of(jobs, input.name);
        !unhandled_parent_ends(now, input, jobs, &runs).is_empty()
    }

    /// One pass over the trigger (see the module's doc). `signals`: the
    /// value of each signal of its conditions, as gathered for this pass;
    /// `None` when none were (the conditions are then not evaluated, even
    /// if due: only ended runs are recorded). `me` names the evaluator in
    /// the ledger.
    pub fn pass(
        &mut self,
        now: DateTime<Utc>,
        me: &str,
        input: &TriggerInput<'_>,
        jobs: &[RunJob<'_>],
        signals: Option<&dyn Fn(&Signal) -> SignalValue>,
    ) -> Step {
        let spec = input.spec;
        let ledger = input.ledger;
        let runs = runs_of(jobs, input.name);
        let active: Vec<String> = runs
            .iter()
            .filter(|j| j.result.is_none())
            .map(|j| j.run_id.to_owned())
            .collect();
        let mut what: Vec<&'static str> = Vec::new();
        let mut changed: Vec<Outcome> = Vec::new();
        // Runs that ended.
        for run in &runs {
            let Some(result) = run.result else { continue };
            let id = run.run_id;
            let in_ledger = ledger.outcomes.iter().any(
                |e| matches!(&e.kind, OutcomeKind::Fired { run_id, result: None, .. } if run_id == id),
            );
            if self.unfinished.remove(id) || in_ledger {
                self.state.run_finished(spec, id, result);
                what.push("finished");
                let mut entry = ledger
                    .outcomes
                    .iter()
                    .chain(self.state.history())
                    .filter(|e| {
                        e.slot == id
                            || matches!(&e.kind, OutcomeKind::Fired { run_id, .. } if run_id == id)
                    })
                    .last()
                    .cloned();
                if let Some(e) = &mut entry
                    && let OutcomeKind::Fired { result: r, .. } = &mut e.kind
                {
                    *r = Some(result);
                }
                changed.extend(entry);
            }
        }
        let mut starts: Vec<Start> = Vec::new();
        if let Some(signals) = signals {
            let ends = unhandled_parent_ends(now, input, jobs, &runs);
            let due = self.wake.is_none_or(|w| w <= now);
            if due || !ends.is_empty() {
                let mut decisions: Vec<(Decision, Option<String>)> = Vec::new();
                for (parent, run, ok) in &ends {
                    let d = self
                        .state
                        .parent_finished(now, spec, parent, run, *ok, &signals, &active);
                    decisions.extend(d.map(|d| (d, Some(run.clone()))));
                }
                if due {
                    let d = self.state.evaluate(now, spec, &signals, &active);
                    decisions.extend(d.into_iter().map(|d| (d, None)));
                }
                for (d, parent) in decisions {
                    match d {
                        Decision::Fire(fire) => {
                            what.push("fired");
                            self.unfinished.insert(fire.run_id.clone());
                            starts.push(Start { fire, parent });
                        }
                        Decision::Record(outcome) => {
                            what.push(match outcome.kind {
                                OutcomeKind::Missed { .. } => "missed",
                                _ => "skipped",
                            });
                            changed.push(outcome);
                        }
                    }
                }
                self.wake = self.state.next_wake(now, spec);
            }
        }
        // The fire record first: written before the run starts.
        changed.extend(
            self.state
                .history()
                .filter(|h| {
                    starts.iter().any(|s| {
                        matches!(&h.kind, OutcomeKind::Fired { run_id, .. } if *run_id == s.fire.run_id)
                    })
                })
                .cloned(),
        );
        let ledger_write = (!what.is_empty()).then(|| {
            let mut next = ledger.clone();
            next.merge(changed.iter().cloned());
            if let Some(l) = self.state.last_handled() {
                next.last_handled = Some(l.to_owned());
            }
            let explain = self.state.explain(now, spec);
            next.evaluated_by = Some(me.to_owned());
            next.evaluated_at = explain.evaluated_at;
            next.conditions = explain.conditions;
            (next, what[0].to_owned())
        });
        Step {
            resumed: self.resumed.take(),
            ledger: ledger_write,
            recorded: changed,
            starts,
            // Finished runs beyond `history` go: a trigger that fires every
            // few seconds would otherwise leave a job per run forever.
            delete: runs_beyond_history(&runs, &spec.history),
            wake: self.wake,
        }
    }
}

/// The runs of trigger `name` among `jobs`.
fn runs_of<'j, 'a>(jobs: &'j [RunJob<'a>], name: &str) -> Vec<&'j RunJob<'a>> {
    jobs.iter().filter(|j| j.trigger == Some(name)).collect()
}

/// The triggers a node evaluates: one [`TriggerEvaluator`] per trigger
/// it owns, kept from pass to pass, each with the spec it was built for.
#[derive(Debug, Default)]
pub struct TriggerDriver {
    owned: BTreeMap<String, (TriggerSpec, TriggerEvaluator)>,
}

impl TriggerDriver {
    /// An empty driver: it evaluates nothing yet.
    pub fn new() -> TriggerDriver {
        TriggerDriver::default()
    }

    /// Forgets the triggers no longer owned here (`owns` is false): if
    /// this node owns one again later, it resumes from the ledger like
    /// any new owner.
    pub fn retain(&mut self, owns: impl Fn(&str) -> bool) {
        self.owned.retain(|name, _| owns(name));
    }

    /// Forgets trigger `name` (its ledger could not be written).
    pub fn forget(&mut self, name: &str) {
        self.owned.remove(name);
    }

    /// The names of the triggers evaluated here.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.owned.keys().map(String::as_str)
    }

    /// `explain` of trigger `name` if it is evaluated here.
    pub fn explain(&self, name: &str, now: DateTime<Utc>) -> Option<Explain> {
        let (spec, e) = self.owned.get(name)?;
        Some(e.explain(now, spec))
    }

    /// The evaluator of `input`: the one kept since this node took the
    /// trigger over, or a new one resumed from the ledger (also when the
    /// spec changed since).
    fn evaluator(&mut self, input: &TriggerInput<'_>) -> &mut TriggerEvaluator {
        let stale = self
            .owned
            .get(input.name)
            .is_some_and(|(spec, _)| spec != input.spec);
        if stale {
            self.owned.remove(input.name);
        }
        let (_, e) = self
            .owned
            .entry(input.name.to_owned())
            .or_insert_with(|| (input.spec.clone(), TriggerEvaluator::resume(input)));
        e
    }

    /// [`TriggerEvaluator::wants_signals`] of trigger `input`, owned here.
    pub fn wants_signals(
        &mut self,
        now: DateTime<Utc>,
        input: &TriggerInput<'_>,
        jobs: &[RunJob<'_>],
    ) -> bool {
        self.evaluator(input).wants_signals(now, input, jobs)
    }

    /// [`TriggerEvaluator::pass`] over trigger `input`, owned here.
    pub fn pass(
        &mut self,
        now: DateTime<Utc>,
        me: &str,
        input: &TriggerInput<'_>,
        jobs: &[RunJob<'_>],
        signals: Option<&dyn Fn(&Signal) -> SignalValue>,
    ) -> Step {
        self.evaluator(input).pass(now, me, input, jobs, signals)
    }
}
