//! shoal's simulator: the real membership and placement state machines on
//! thousands of simulated nodes, under seeded faults, checked after every
//! event.
//!
//! A run is a pure function of its [`Params`]: one seeded generator
//! (ChaCha8) draws every latency, loss, victim and job, and the event heap
//! orders events by `(time, sequence)`, so `--seed N` replays a run exactly
//! and a failed check prints the command that does.
//!
//! - **Full mode** ([`full`]): every node is a [`shoal_core::NodeCore`]
//!   (the real [`shoal_gossip::Membership`] and [`shoal_placement::Placer`]
//!   and the wiring between them: the code the agent runs) over a
//!   virtual network ([`net`]) with latency per link class, loss,
//!   partitions and slow nodes; nodes crash and restart.
//! - **Scale mode** ([`scale`]): membership is modeled compactly (ground
//!   truth plus each node's knowledge of each rumor, SWIM timing from the
//!   same [`shoal_gossip::Config`]), for cluster sizes past what fits in
//!   memory with one real membership per node; [`scale_place`] runs the
//!   real placer on every node of such a cluster (`jobs`, and `default`
//!   with the model's crashes during the wave); [`scale_trigger`] runs the
//!   real trigger state machine on the owners of each trigger's key on the
//!   real ring under node churn (`triggers`); [`scale_cut`] runs each
//!   node's real fact per datacenter through a cut (`partition`, with
//!   `--reach-only-dc-size`).
//!
//! Checkers named by when they hold: `always_*` after every event (no node
//! overcommitted; no task with two holders once views are stable),
//! `eventually_*` after the network heals (live nodes agree on membership;
//! every placeable task runs once). Every fault knob checks that it fired.
//! The [`Report`] is a table (`Display`) or JSON (`serde`).

pub mod full;
pub mod net;
pub mod params;
pub mod queue;
pub mod report;
pub mod scale;
pub mod scale_cut;
pub mod scale_place;
pub mod scale_trigger;
pub mod share;
pub mod svg;
pub mod workload;

pub use params::{Mode, Params, Scenario};
pub use report::Report;

/// Why a run could not start.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SimError {
    /// A parameter out of range.
    #[error("invalid parameters: {0}")]
    Params(String),
}

/// How far a run has got: handed to a [`run_with`] observer every
/// [`PROGRESS_EVERY`] events, for a progress display (runs at thousands of
/// nodes take many minutes). Simulated time only: the simulator never reads
/// the wall clock; the observer may.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// Nodes simulated.
    pub nodes: usize,
    /// Simulated time so far, seconds.
    pub simulated_s: f64,
    /// Simulated time the run ends at, once known (full mode knows it when
    /// the cluster has formed).
    pub end_s: Option<f64>,
    /// Events handled so far.
    pub events: u64,
}

/// Events between two [`Progress`] reports.
pub const PROGRESS_EVERY: u64 = 1 << 18;

/// Runs the simulation `params` describes.
pub fn run(params: Params) -> Result<Report, SimError> {
    run_with(params, &mut |_| {})
}

/// [`run`], telling `progress` how far it has got as it goes.
pub fn run_with(params: Params, progress: &mut dyn FnMut(&Progress)) -> Result<Report, SimError> {
    match params.mode {
        Mode::Full if params.scenario == Scenario::Triggers => Err(SimError::Params(
            "the triggers scenario runs in scale mode (--mode scale)".into(),
        )),
        Mode::Full => full::run(params, progress),
        Mode::Scale if params.scenario == Scenario::Triggers => {
            scale_trigger::run(params, progress)
        }
        Mode::Scale if params.scenario == Scenario::Jobs => {
            scale_place::run(params, Vec::new(), progress)
        }
        Mode::Scale if params.scenario == Scenario::Default => {
            scale_place::run_default(params, progress)
        }
        Mode::Scale if params.scenario == Scenario::Partition => scale_cut::run(params, progress),
        Mode::Scale => scale::run(params),
    }
}
