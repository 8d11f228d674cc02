//! Start-up phase: what this machine offers (capacity less what the node
//! keeps for itself, isolation, runtimes) and the gossip metadata record
//! that tells the cluster.

use std::time::Duration;

use shoal_gossip::{FreeClass, MemberMeta, NodeId, RuntimeInfo};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::sockets::Sockets;
use super::{AgentError, AgentOptions, DEFAULT_PORT_RANGE};
use crate::cgroups::Isolation;
use crate::datadir::{DataDir, StoredSettings};
use crate::docker::{DockerRuntime, DockerSettings};
use crate::ports::HostPorts;
use crate::resources;
use crate::runtime::RuntimeEvent;

/// This machine as the cluster sees it.
pub(super) struct Local {
    pub meta: MemberMeta,
    pub isolation: Isolation,
    /// The container runtime, when the engine answers.
    pub docker: Option<DockerRuntime>,
    pub stop_grace: Duration,
    /// The host ports the runtimes hand to tasks.
    pub ports: HostPorts,
}

/// Detects capacity and isolation, connects to the Docker engine, and
/// builds the metadata record.
pub(super) async fn describe(
    opts: &AgentOptions,
    settings: &StoredSettings,
    data_dir: &DataDir,
    node_id: NodeId,
    sockets: &Sockets,
    runtime_tx: mpsc::Sender<RuntimeEvent>,
) -> Result<Local, AgentError> {
    let detected = resources::detect(data_dir.path());
    let mut capacity = detected.capacity();
    // What the node keeps for itself: by default some of what was
    // detected, nothing of what the operator stated.
    let reserve_cpus =
        opts.reserve_cpus
            .unwrap_or(if settings.cpus.is_some() { 0.0 } else { 0.25 });
    let reserve_memory = opts
        .reserve_memory_mb
        .unwrap_or(if settings.memory_mb.is_some() { 0 } else { 256 });
    if !(reserve_cpus >= 0.0 && reserve_cpus.is_finite()) {
        return Err(AgentError::Usage(format!(
            "--reserve-cpus must be >= 0 (got {reserve_cpus})"
        )));
    }
    if let Some(c) = settings.cpus {
        capacity.cpus_milli = (c * 1000.0).round() as u32;
    }
    if let Some(m) = settings.memory_mb {
        capacity.memory_mb = m;
    }
    capacity.cpus_milli = capacity
        .cpus_milli
        .saturating_sub((reserve_cpus * 1000.0).round() as u32);
    capacity.memory_mb = capacity.memory_mb.saturating_sub(reserve_memory);
    let isolation = Isolation::detect(&node_id.to_string());
    match &isolation {
        Isolation::None { why } => {
            warn!(reason = %why, "tasks will run without resource limits (isolation: none)")
        }
        other => info!(isolation = other.name(), "tasks get cgroup limits"),
    }
    let name = settings.name.clone().unwrap_or_else(resources::hostname);
    let stop_grace = opts.stop_grace.unwrap_or(Duration::from_secs(10));
    let range = opts.port_range.unwrap_or(DEFAULT_PORT_RANGE);
    if range.0 == 0 || range.0 > range.1 {
        return Err(AgentError::Usage(format!(
            "--port-range must be FIRST-LAST with 1 <= FIRST <= LAST (got {}-{})",
            range.0, range.1
        )));
    }
    let ports = HostPorts::new(range, &node_id.to_string());
    // Containers: only when the engine answers.
    let docker = if opts.no_docker {
        info!("docker runtime off (--no-docker)");
        None
    } else {
        match DockerRuntime::connect(
            DockerSettings {
                tasks_dir: data_dir.path().join("tasks"),
                node_id: node_id.to_string(),
                node_name: name.clone(),
                stop_grace,
                ports: ports.clone(),
                host: sockets.rpc_addr.ip().to_string(),
            },
            runtime_tx,
        )
        .await
        {
            Ok(d) => {
                info!(engine = d.engine_version(), "docker runtime available");
                Some(d)
            }
            Err(why) => {
                info!(reason = %why, "no docker runtime on this node");
                None
            }
        }
    };
    let mut runtimes = vec![RuntimeInfo {
        name: "process".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    }];
    if let Some(d) = &docker {
        runtimes.push(RuntimeInfo {
            name: "docker".into(),
            version: d.engine_version().into(),
        });
    }
    let meta = MemberMeta {
        name,
        gossip_addr: sockets.gossip_addr,
        rpc_addr: sockets.rpc_addr,
        api_addr: sockets.api_addr,
        api_tls: !settings.api_insecure.unwrap_or(false),
        gossip_keys: Vec::new(),
        dc: settings.dc.clone().unwrap_or_else(|| "dc1".into()),
        zone: settings.zone.clone().unwrap_or_default(),
        region: settings.region.clone().unwrap_or_else(|| "global".into()),
        labels: settings.labels.clone().unwrap_or_default(),
        capacity,
        runtimes,
        agent_version: env!("CARGO_PKG_VERSION").into(),
        free_class: FreeClass::IDLE,
        isolation: isolation.name().into(),
        draining: settings.draining.unwrap_or(false),
    };
    Ok(Local {
        meta,
        isolation,
        docker,
        stop_grace,
        ports,
    })
}
