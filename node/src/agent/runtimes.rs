//! Start-up phase: the task runtimes (process, and docker when the engine
//! answers), the tasks they adopt that still run from before a restart,
//! the health probers and the artifact store the runtimes fetch through.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::NodeId;
use shoal_placement::Adopted;
use tokio::sync::{broadcast, mpsc, watch};
use tracing::info;

use super::{AgentError, AgentOptions};
use crate::artifacts::{self, ArtifactSettings, Artifacts};
use crate::cgroups::Isolation;
use crate::core_task::TaskEvent;
use crate::datadir::{DataDir, DataDirError};
use crate::docker::DockerRuntime;
use crate::health::HealthChecks;
use crate::ports::HostPorts;
use crate::runtime::{self, ProcessRuntime, ProcessSettings, RuntimeEvent};
use crate::secrets::{Secrets, SecretsKey};
use crate::state::{Peer, StateHandle};

/// What the runtimes need.
pub(super) struct Parts<'a> {
    pub opts: &'a AgentOptions,
    pub data_dir: &'a DataDir,
    pub node_id: NodeId,
    pub name: &'a str,
    /// The address tasks are told (`SHOAL_HOST`).
    pub host: String,
    pub api_addr: SocketAddr,
    /// The cluster token, for fetching artifacts from peers' APIs.
    pub token: String,
    /// The API CA (DER), trusted in peers' APIs.
    pub api_ca: Vec<u8>,
    /// Whether this node's API speaks HTTPS.
    pub api_https: bool,
    pub isolation: Isolation,
    pub stop_grace: Duration,
    pub ports: HostPorts,
    pub docker: Option<DockerRuntime>,
    pub runtime_tx: mpsc::Sender<RuntimeEvent>,
    pub state: &'a StateHandle,
    pub live: &'a watch::Receiver<Arc<Vec<Peer>>>,
}

/// The runtimes, started.
pub(super) struct Runtimes {
    pub runtime: runtime::Runtimes,
    /// Tasks still running from before a restart, for the placer.
    pub adopted: Vec<Adopted>,
    pub health: HealthChecks,
    pub artifacts: Artifacts,
    pub task_events: broadcast::Sender<TaskEvent>,
}

/// Starts the runtimes and finds what they still run.
pub(super) async fn start(p: Parts<'_>) -> Result<Runtimes, AgentError> {
    // The key that opens secrets comes from the cluster secret; the agent
    // parsed the same token before.
    let secrets = crate::token::ClusterSecret::from_token(&p.token)
        .ok()
        .map(|s| Secrets::new(SecretsKey::derive(&s), p.state.acl_watch()));
    if let (Some(d), Some(s)) = (&p.docker, &secrets) {
        d.set_secrets(s.clone());
    }
    let process = ProcessRuntime::new(
        ProcessSettings {
            data_dir: p.data_dir.path().to_owned(),
            isolation: p.isolation,
            node: p.name.to_owned(),
            stop_grace: p.stop_grace,
            ports: p.ports,
            host: p.host.clone(),
            secrets: secrets.clone(),
        },
        p.runtime_tx.clone(),
    )
    .map_err(|source| DataDirError::Write {
        path: p.data_dir.file("tasks"),
        source,
    })?;
    let mut adopted = process.scan();
    if let Some(d) = &p.docker {
        adopted.extend(d.scan().await);
    }
    let health = HealthChecks::new(
        p.data_dir.path().join("tasks"),
        p.docker.clone(),
        (p.name.to_owned(), p.host),
        secrets,
        p.runtime_tx.clone(),
    );
    let artifacts = Artifacts::new(
        ArtifactSettings {
            data_dir: p.data_dir.path().to_owned(),
            node: p.node_id,
            api_url: format!(
                "{}://{}",
                if p.api_https { "https" } else { "http" },
                p.api_addr
            ),
            peer_tls: crate::http::peer_tls(&p.api_ca),
            token: Some(p.token),
            gc_after: p
                .opts
                .artifact_gc_after
                .unwrap_or(artifacts::DEFAULT_GC_AFTER),
            uploads_per_blob: artifacts::UPLOADS_PER_BLOB,
        },
        p.state.clone(),
        p.live.clone(),
    )
    .map_err(|e| AgentError::Artifacts(e.to_string()))?;
    let runtime =
        runtime::Runtimes::new(process, p.docker, p.runtime_tx).with_artifacts(artifacts.clone());
    let (task_events, _) = broadcast::channel(1024);
    if !adopted.is_empty() {
        info!(
            tasks = adopted.len(),
            "adopted tasks still running from before the restart"
        );
    }
    Ok(Runtimes {
        runtime,
        adopted,
        health,
        artifacts,
        task_events,
    })
}
