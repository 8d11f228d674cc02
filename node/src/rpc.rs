//! What this node serves on its RPC transport: desired-state sync,
//! placement messages, and task queries (status, logs, drain).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use shoal_gossip::NodeId;
use shoal_transport::{Handler, Service};

use crate::core_task::CoreHandle;
use crate::placement::{Batch, TaskRequest, TaskResponse};
use crate::runtime::Runtimes;

/// Largest log piece one call returns.
pub const LOG_CHUNK: u64 = 256 << 10;

/// Routes calls by service.
pub struct NodeRpc {
    /// Desired-state sync.
    pub state: Arc<dyn Handler>,
    /// The node core (placement messages, task status, drain).
    pub core: CoreHandle,
    /// Logs and ports of local tasks.
    pub runtime: Runtimes,
    /// Packages of the `dir:` repositories this node added.
    pub repos: crate::repos::Repos,
    /// The usage reports this node aggregates.
    pub usage: crate::usage::UsageBook,
}

impl Handler for NodeRpc {
    fn handle(
        &self,
        from: NodeId,
        service: Service,
        body: Vec<u8>,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<u8>, String>> + Send>> {
        match service {
            Service::State => self.state.handle(from, service, body),
            Service::Placement => {
                let core = self.core.clone();
                Box::pin(async move {
                    let batch: Batch = postcard::from_bytes(&body)
                        .map_err(|e| format!("malformed placement batch: {e}"))?;
                    if batch.version != shoal_placement::PROTOCOL_VERSION {
                        return Err(format!(
                            "placement protocol {} not supported (this node speaks {})",
                            batch.version,
                            shoal_placement::PROTOCOL_VERSION
                        ));
                    }
                    core.deliver(from, batch.msgs)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(Vec::new())
                })
            }
            Service::Packages => {
                let repos = self.repos.clone();
                Box::pin(async move { repos.serve(&body).await })
            }
            Service::Tasks => {
                let core = self.core.clone();
                let runtime = self.runtime.clone();
                let usage = self.usage.clone();
                Box::pin(async move {
                    let request: TaskRequest = postcard::from_bytes(&body)
                        .map_err(|e| format!("malformed task request: {e}"))?;
                    let response = match request {
                        TaskRequest::Status(keys) => TaskResponse::Status(
                            core.status(keys).await.map_err(|e| e.to_string())?,
                        ),
                        TaskRequest::Log {
                            key,
                            stderr,
                            offset,
                            max,
                        } => {
                            let max = max.min(LOG_CHUNK);
                            let (data, next, size) = tokio::task::spawn_blocking(move || {
                                runtime.read_log(&key, stderr, offset, max)
                            })
                            .await
                            .map_err(|e| e.to_string())?
                            .map_err(|e| format!("cannot read the log: {e}"))?;
                            TaskResponse::Log { data, next, size }
                        }
                        TaskRequest::Drain(on) => {
                            core.drain(on).await.map_err(|e| e.to_string())?;
                            TaskResponse::Drained
                        }
                        TaskRequest::Held => {
                            TaskResponse::Status(core.held().await.map_err(|e| e.to_string())?)
                        }
                        TaskRequest::Usage(report) => {
                            usage.record(from, report);
                            TaskResponse::Drained
                        }
                        TaskRequest::ZoneUsage { dc, zone } => {
                            TaskResponse::ZoneUsage(usage.zone(&dc, &zone))
                        }
                        TaskRequest::Local(keys) => TaskResponse::Local(
                            keys.into_iter()
                                .filter_map(|k| runtime.local_info(&k).map(|i| (k, i)))
                                .collect(),
                        ),
                    };
                    Ok(postcard::to_allocvec(&response).expect("responses encode"))
                })
            }
        }
    }
}
