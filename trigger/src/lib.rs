//! Triggers: run something on a schedule, when conditions hold, or after
//! another run — decided without a leader.
//!
//! A [`TriggerSpec`] (TOML like a job file, JSON in the API) says when a
//! trigger is due (`every = "10m"`, or `cron` on the wall clock of a
//! `timezone`), under which conditions it may fire (`when`: signals such as
//! an HTTP price feed, the cheapest node's `price_per_hour` label, free
//! capacity, cluster metrics), and what it does (an inline batch job, a
//! named job, a scale, a package install). [`TriggerState`] is the firing
//! rules as a pure state machine: the owner of the trigger's key calls
//! [`TriggerState::evaluate`] with `now` and the current signal values, and
//! gets [`Decision`]s back (fire this run id, record this skipped or missed
//! slot); [`TriggerState::next_wake`] says when to call it again.
//!
//! # The contract
//!
//! - Pure: no clock reads, no randomness, no I/O, no threads. `now` is an
//!   argument (wall-clock [`chrono::DateTime<Utc>`], since cron is about
//!   the wall clock); signal values are supplied by the caller.
//! - Deterministic run ids: a slot's run is `<trigger>@<slot>`, the slot
//!   written as the wall-clock time in the trigger's zone
//!   (`cheap-report@2026-12-01T03:00:00`); manual runs are
//!   `<trigger>@manual-<id>`; a run started by a parent's end is
//!   `<trigger>@<parent run id>`. Two owners that both think they own the
//!   trigger name the same run alike, so the caller can act on a run id at
//!   most once (the node writes a fire record before starting it).
//! - A slot is handled once: the state keeps a cursor (the first slot not
//!   yet handled) that only moves forward; each slot is fired, skipped
//!   (with the condition values that decided it) or missed (nobody
//!   evaluated it in time) — never silently dropped, never fired twice.
//!   [`TriggerState::resume`] rebuilds the cursor for a new owner from the
//!   last slot handled.
//! - The state is `Serialize`: it can be stored and handed over.
//!
//! # Daylight saving time
//!
//! Slots are wall-clock times of the trigger's zone, and the rule is
//! shoal's, not the time-zone crate's:
//!
//! - **Spring forward** (a wall-clock time that does not exist: 02:30 on
//!   2026-03-29 in Europe/Berlin): the slot fires **once, at the first
//!   instant after the gap** (03:00 CEST = 01:00Z). Its id keeps the
//!   written time (`…@2026-03-29T02:30:00`). Several slots of one gap (an
//!   every-15-minutes cron) all fall due at that instant; each is a slot of
//!   its own, and `concurrency` decides whether they run side by side.
//! - **Fall back** (a wall-clock time that happens twice: 02:30 on
//!   2026-10-25): **one slot, due at its first occurrence** (00:30Z). The
//!   second pass of the hour has the same ids, which are already handled.
//!
//! `every` schedules are anchored at multiples of the period since the
//! unix epoch in UTC, so every node computes the same slots, and DST does
//! not touch them; their ids are written in UTC.
//!
//! # Why these crates
//!
//! `croner` 4 parses cron with 5 or 6 fields (seconds first) and walks
//! *naive* wall-clock times, which is exactly what the DST rule above
//! needs: croner finds the next wall-clock match, and
//! [`schedule::local_to_instant`] maps it to an instant with shoal's rule.
//! `chrono-tz` 0.10 supplies the IANA database compiled in (no files read
//! at run time, so every node agrees for a given build). `chrono` was
//! chosen over `jiff` because croner's chrono support is its default and
//! `DateTime<Utc>` serializes as RFC 3339 with serde.

mod dag;
mod ledger;
pub mod schedule;
pub mod signal;
mod spec;
mod state;

pub use dag::check_after;
pub use ledger::{LEDGER_OUTCOMES, Ledger};
pub use schedule::{
    SLOT_FORMAT, Schedule, Slot, after_run_id, local_to_instant, manual_run_id, parse_slot_id,
    run_job_name, slot_id,
};
pub use signal::{
    Aggregate, Metric, PointerError, Resource, Signal, SignalValue, json_pointer_f64,
    placement_constraint,
};
pub use spec::{
    Action, After, Concurrency, Condition, HistoryLimits, Match, OnMissing, Op, RunEnd, TriggerSpec,
};
pub use state::{
    ConditionReport, Decision, Explain, Fire, MissReason, Outcome, OutcomeKind, Pending, RunResult,
    SkipReason, SlotView, TriggerState, Waiting,
};
