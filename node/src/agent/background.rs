//! The agent's small background tasks: following the Docker engine,
//! resolving join peers whose names did not resolve at start, rotating
//! task logs, keeping forgotten nodes out.

use std::net::SocketAddr;
use std::time::Duration;

use shoal_gossip::RuntimeInfo;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::core_task::CoreHandle;
use crate::docker::DockerRuntime;
use crate::runtime::{LOG_MAX_BYTES, Runtimes};

/// How often a node with a Docker runtime checks that the engine still
/// answers.
const DOCKER_CHECK: Duration = Duration::from_secs(15);
/// How often logs are checked for rotation.
const ROTATE_PERIOD: Duration = Duration::from_secs(5);

/// Offers `docker` in gossip only while the engine answers: a node whose
/// engine went away stops getting docker tasks, and gets them again once it
/// is back.
pub(super) async fn watch_docker(
    docker: DockerRuntime,
    core: CoreHandle,
    shutdown: CancellationToken,
) {
    let mut offered = true;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(DOCKER_CHECK) => {}
        }
        let answers = docker.answers().await;
        if answers == offered {
            continue;
        }
        let Ok(mut meta) = core.meta().await else {
            return;
        };
        meta.runtimes.retain(|r| r.name != "docker");
        if answers {
            info!("the Docker engine answers again; offering docker tasks");
            meta.runtimes.push(RuntimeInfo {
                name: "docker".into(),
                version: docker.engine_version().into(),
            });
        } else {
            warn!("the Docker engine stopped answering; no longer offering docker tasks");
        }
        if core.set_meta(meta).await.is_err() {
            return;
        }
        offered = answers;
    }
}

/// Keeps resolving join peers given by name until each resolves, then
/// joins through it.
pub(super) async fn resolve_later(
    mut peers: Vec<String>,
    core: CoreHandle,
    shutdown: CancellationToken,
) {
    let mut delay = Duration::from_secs(1);
    while !peers.is_empty() {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(delay) => {}
        }
        let mut still = Vec::new();
        for peer in peers {
            let resolved = tokio::net::lookup_host(peer.clone())
                .await
                .map(|a| a.collect::<Vec<SocketAddr>>());
            match resolved {
                Ok(addrs) => {
                    info!(peer = %peer, "join peer resolved");
                    if core.join(addrs).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    warn!(peer = %peer, error = %e, "cannot resolve join peer; will keep trying");
                    still.push(peer);
                }
            }
        }
        peers = still;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

/// Rotates the logs of local tasks that grew past their limit, every
/// [`ROTATE_PERIOD`].
pub(super) async fn rotate_logs(runtime: Runtimes, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(ROTATE_PERIOD) => {}
        }
        let rt = runtime.clone();
        if tokio::task::spawn_blocking(move || rt.rotate_logs(LOG_MAX_BYTES))
            .await
            .is_err()
        {
            warn!("log rotation failed");
        }
    }
}

/// What [`apply_trust`] works from.
pub(super) struct Trust {
    pub acl: tokio::sync::watch::Receiver<std::sync::Arc<crate::acl::AclTable>>,
    pub core: CoreHandle,
    pub transport: shoal_transport::Transport,
    pub me: shoal_gossip::NodeId,
    pub secret: crate::token::ClusterSecret,
}

/// Applies what the replicated state says about whom to trust, at start
/// and on every change of the ACL table (where the state task keeps it):
/// the nodes forgotten for good (`shoal node forget`), which membership
/// drops and whose certificates the RPC transport refuses, and the gossip
/// keyring (`shoal keyring`), which membership seals and opens with. A
/// node that finds itself forgotten says so: it can no longer take part.
pub(super) async fn apply_trust(mut t: Trust, shutdown: CancellationToken) {
    let key = crate::secrets::SecretsKey::derive(&t.secret);
    let mut forgotten = std::collections::BTreeSet::new();
    let mut keys: Option<(Vec<u32>, u32)> = None;
    loop {
        let table = t.acl.borrow_and_update().clone();
        let ids: std::collections::BTreeSet<_> = table.forgotten().keys().copied().collect();
        if ids != forgotten {
            if ids.contains(&t.me) {
                tracing::error!(
                    "this node was forgotten by the cluster (shoal node forget): the others drop its datagrams and refuse its certificate; stop it, and to bring the machine back remove node.json from its data dir so that it joins as a new node"
                );
            }
            t.transport.set_refused(ids.clone());
            if t.core.set_forgotten(ids.clone()).await.is_err() {
                return;
            }
            forgotten = ids;
        }
        let security = crate::keyring::security(t.secret.bytes(), &key, &table);
        let now = Some((security.key_ids(), security.primary_id()));
        if now != keys {
            if t.core.set_security(security).await.is_err() {
                return;
            }
            keys = now;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            changed = t.acl.changed() => if changed.is_err() { return },
        }
    }
}
