//! The shoal agent.
//!
//! Every machine runs the same agent. It binds the gossip socket (UDP), the
//! RPC socket (QUIC) and the HTTP API, keeps its identity and the cluster
//! token in its data dir, and is the I/O edge around the pure node core
//! (`shoal-core`: membership, placement and their wiring, the same code the
//! simulator drives) and the desired-state replica (`shoal-state`): one
//! tokio task owns each state machine.
//!
//! [`Agent::start`] returns once everything is bound and serving;
//! [`Agent::run_until`] serves until a stop signal and then leaves the cluster
//! gracefully, so that the other members record this node as `left`.
//!
//! Tasks: the node core's driver (`core_task`: the gossip socket, the
//! core's timers, placement messages to peers), the desired-state replica
//! (`state`, with its durable log `statelog`), the task runtimes (`runtime`
//! for processes, `docker` for containers, `tasklog` for their logs and
//! the log shipper of process tasks), the RPC transport serving peers
//! (`rpc`), and the HTTP API (`api`).

pub mod acl;
pub mod after;
pub mod agent;
pub mod api;
pub mod artifacts;
pub mod blobs;
pub mod cgroups;
pub mod clock;
pub mod core_task;
pub mod datadir;
pub mod dns;
pub mod docker;
pub mod health;
pub mod http;
pub mod keyring;
pub mod metrics;
pub mod placement;
pub mod ports;
pub mod repos;
pub mod resources;
pub mod rpc;
pub mod runtime;
pub mod secrets;
pub mod services;
pub mod state;
pub mod statelog;
pub mod tasklog;
mod tasktable;
pub mod token;
pub mod triggers;
pub mod usage;

pub use agent::{Agent, AgentError, AgentInfo, AgentOptions};
