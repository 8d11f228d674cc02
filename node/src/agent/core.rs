//! Start-up phase: the node core, this node's membership and placer wired
//! together (`shoal_core::NodeCore`), as the simulator builds it too.

use shoal_core::{NodeCore, Wiring};
use shoal_gossip::{Config, Instant, MemberMeta, Membership, NodeIdentity, PacketSecurity};
use shoal_placement::{Adopted, PlacementConfig, Placer, Resources};

use super::{AgentError, AgentOptions, DEFAULT_PORT_RANGE, random_u64};
use crate::clock::unix_ms;

/// What the core is built from.
pub(super) struct Parts<'a> {
    pub opts: &'a AgentOptions,
    pub now: Instant,
    pub identity: NodeIdentity,
    pub meta: MemberMeta,
    pub gossip: Config,
    /// The gossip keys (the keyring of the replicated state).
    pub security: PacketSecurity,
    /// What the node offers tasks.
    pub offered: Resources,
    pub draining: bool,
    /// Tasks the runtimes found still running.
    pub adopted: Vec<Adopted>,
}

/// The node core, its placer told how many host ports the node's range
/// has, whether it drains, and what it already runs.
pub(super) fn build(p: Parts<'_>) -> Result<NodeCore, AgentError> {
    let node_id = p.identity.id;
    let mut meta = p.meta;
    meta.gossip_keys = p.security.key_ids();
    let membership = Membership::new(p.now, p.identity, meta, p.gossip, p.security, random_u64()?)
        .map_err(|e| AgentError::Gossip(e.to_string()))?;
    let (first_port, last_port) = p.opts.port_range.unwrap_or(DEFAULT_PORT_RANGE);
    let placement = PlacementConfig {
        host_ports: u32::from(last_port.saturating_sub(first_port)) + 1,
        ..PlacementConfig::default()
    };
    let mut placer = Placer::new(node_id, placement, p.offered, p.now);
    if p.draining {
        placer.set_draining(p.now, unix_ms(), true);
    }
    if !p.adopted.is_empty() {
        placer.adopt(p.now, unix_ms(), p.adopted);
    }
    Ok(NodeCore::new(membership, placer, Wiring::default()))
}
