//! `/v1/jobs/{name}/tasks`, `/v1/tasks/{task}/logs`, `/v1/nodes/{node}/drain`.

use axum::Json;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shoal_gossip::NodeId;
use shoal_placement::TaskKey;
use shoal_transport::Service;

use super::{ApiError, ApiResult, ApiState, find_member};
use crate::placement::{TaskRequest, TaskResponse, TaskView, holder_of, job_tasks};
use crate::rpc::LOG_CHUNK;
use crate::state::{AclReply, AclRequest};

/// `GET /v1/jobs/{name}/tasks`: every task of the job, from the nodes that
/// answer for them.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}/tasks",
    tag = "tasks",
    summary = "Every task of a job",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)")),
    responses(
        (status = 200, description = "the tasks", body = Vec<crate::placement::TaskView>),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody)
    )
)]
pub async fn list(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<Vec<TaskView>> {
    let Some(job) = s.state.job(&name).await? else {
        return Err(ApiError::not_found(format!(
            "no job named {name:?} (see `shoal jobs`)"
        )));
    };
    if job.deleted {
        return Ok(Json(Vec::new()));
    }
    let live = s.live.borrow().clone();
    let mut tasks = job_tasks(&s.core, &s.transport, &live, &name).await?;
    if job.spec.get("task").and_then(|t| t.get("runtime")) == Some(&serde_json::json!("docker")) {
        add_containers(&s, &live, &mut tasks).await;
    }
    Ok(Json(tasks))
}

/// Container ids of running docker tasks, from the nodes that run them
/// (one call per node; a node that does not answer leaves them out). Their
/// ports came with their status, from their coordinators.
async fn add_containers(s: &ApiState, live: &[crate::state::Peer], tasks: &mut [TaskView]) {
    let mut by_node: std::collections::BTreeMap<String, Vec<TaskKey>> = Default::default();
    for t in tasks.iter().filter(|t| t.state == "running") {
        if let (Some(node), Some(key)) = (&t.node, TaskKey::parse(&t.task)) {
            by_node.entry(node.clone()).or_default().push(key);
        }
    }
    let mut found: std::collections::BTreeMap<String, crate::runtime::LocalTask> =
        Default::default();
    // Every node at once: one round trip, not one per node.
    let mut asks = Vec::new();
    for (node, keys) in by_node {
        let Ok(id) = node.parse::<shoal_gossip::NodeId>() else {
            continue;
        };
        if id == s.transport.local() {
            found.extend(
                keys.iter()
                    .filter_map(|k| s.runtime.local_info(k).map(|i| (k.to_string(), i))),
            );
            continue;
        }
        let Some(peer) = live.iter().find(|p| p.id == id) else {
            continue;
        };
        let (transport, rpc) = (s.transport.clone(), peer.rpc);
        asks.push(tokio::spawn(async move {
            let body = postcard::to_allocvec(&TaskRequest::Local(keys)).expect("encodes");
            let answer = transport
                .request(id, rpc, Service::Tasks, &body)
                .await
                .ok()?;
            match postcard::from_bytes::<TaskResponse>(&answer) {
                Ok(TaskResponse::Local(infos)) => Some(infos),
                _ => None,
            }
        }));
    }
    for ask in asks {
        if let Ok(Some(infos)) = ask.await {
            found.extend(infos.into_iter().map(|(k, i)| (k.to_string(), i)));
        }
    }
    for t in tasks.iter_mut() {
        if let Some(i) = found.remove(&t.task) {
            t.container = i.container;
        }
    }
}

/// `GET /v1/nodes/{node}/tasks`: the tasks a node runs, as that node
/// reports them.
#[utoipa::path(
    get,
    path = "/v1/nodes/{key}/tasks",
    tag = "nodes",
    summary = "The tasks a node runs, asked of that node",
    params(("key" = String, Path, description = "node id, unique id prefix (4+ hex digits) or name")),
    responses(
        (status = 200, description = "its tasks, by job and index", body = Vec<TaskView>),
        (status = 404, description = "no such node", body = crate::api::types::ErrorBody),
        (status = 502, description = "the node is not live or did not answer (`unreachable`)", body = crate::api::types::ErrorBody)
    )
)]
pub async fn of_node(
    State(s): State<ApiState>,
    Path(node): Path<String>,
) -> ApiResult<Vec<TaskView>> {
    let members = s.core.members().await?;
    let id = find_member(&members, &node)?.identity.id;
    let live = s.live.borrow().clone();
    crate::placement::node_tasks(&s.core, &s.transport, &live, id)
        .await
        .map(Json)
        .map_err(|e| match e {
            crate::placement::NodeTasksError::Core(c) => c.into(),
            e => ApiError::new(StatusCode::BAD_GATEWAY, "unreachable", e.to_string()),
        })
}

/// Log query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    #[serde(default)]
    stderr: bool,
    #[serde(default)]
    offset: u64,
    max: Option<u64>,
}

/// A piece of a log.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogPiece {
    /// The node that runs the task.
    pub node: String,
    /// Text (invalid UTF-8 replaced).
    pub data: String,
    /// Offset to ask for next.
    pub next: u64,
    /// Size of the log file.
    pub size: u64,
}

/// `GET /v1/tasks/{task}/logs?stderr&offset&max`: read from the node that
/// runs the task, wherever it is.
#[utoipa::path(
    get,
    path = "/v1/tasks/{task}/logs",
    tag = "tasks",
    summary = "A piece of a task's log",
    params(("task" = String, Path, description = "`job/index` or `job@node`, one percent-encoded segment"), LogQuery),
    responses(
        (status = 200, description = "the piece", body = LogPiece),
        (status = 404, description = "the task runs nowhere", body = crate::api::types::ErrorBody),
        (status = 422, description = "not a task name", body = crate::api::types::ErrorBody),
        (status = 502, description = "its node did not answer", body = crate::api::types::ErrorBody)
    )
)]
pub async fn logs(
    State(s): State<ApiState>,
    Path(task): Path<String>,
    Query(q): Query<LogQuery>,
) -> ApiResult<LogPiece> {
    let key = TaskKey::parse(&task).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("{task:?} is not a task: write job/index (web/frontend/3) or job@node"),
        )
        .with_field("task")
    })?;
    let live = s.live.borrow().clone();
    let holder = holder_of(&s.core, &s.transport, &live, &key)
        .await?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "task {task} runs nowhere right now (see `shoal ps {}`)",
                key.job
            ))
        })?;
    let max = q.max.unwrap_or(LOG_CHUNK).min(LOG_CHUNK);
    let (data, next, size) = if holder == s.transport.local() {
        let runtime = s.runtime.clone();
        let k = key.clone();
        tokio::task::spawn_blocking(move || runtime.read_log(&k, q.stderr, q.offset, max))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            })?
            .map_err(|e| ApiError::not_found(format!("no log for {task} on this node: {e}")))?
    } else {
        let peer = live.iter().find(|p| p.id == holder).ok_or_else(|| {
            ApiError::not_found(format!("the node running {task} is not a live member"))
        })?;
        let body = postcard::to_allocvec(&TaskRequest::Log {
            key,
            stderr: q.stderr,
            offset: q.offset,
            max,
        })
        .expect("encodes");
        let answer = s
            .transport
            .request(holder, peer.rpc, Service::Tasks, &body)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "unreachable",
                    format!("the node running {task} did not answer: {e}"),
                )
            })?;
        match postcard::from_bytes::<TaskResponse>(&answer) {
            Ok(TaskResponse::Log { data, next, size }) => (data, next, size),
            _ => {
                return Err(ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "unreachable",
                    "the node running the task answered nonsense",
                ));
            }
        }
    };
    Ok(Json(LogPiece {
        node: holder.to_string(),
        data: String::from_utf8_lossy(&data).into_owned(),
        next,
        size,
    }))
}

/// Drain request.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct DrainBody {
    #[serde(default = "yes")]
    drain: bool,
}

fn yes() -> bool {
    true
}

/// `POST /v1/nodes/{node}/forget`: removes a machine for good. Every
/// member drops its datagrams and refuses its certificate once the record
/// reaches it (the replicated state), its tasks are placed elsewhere, and
/// it cannot rejoin with its identity (docs/security.md). A node not
/// known any more is named by its full id. Needs `acl=write`: it is a
/// decision about whom the cluster trusts.
#[utoipa::path(
    post,
    path = "/v1/nodes/{key}/forget",
    tag = "nodes",
    summary = "Forget a node for good",
    params(("key" = String, Path, description = "id, unique id prefix or name; a full id for a node no longer listed")),
    responses(
        (status = 200, description = "forgotten (again: the first record)", body = shoal_state::ForgottenNode),
        (status = 404, description = "no such node", body = crate::api::types::ErrorBody),
        (status = 409, description = "`ambiguous`, or the node serving the call", body = crate::api::types::ErrorBody)
    )
)]
pub async fn forget(
    State(s): State<ApiState>,
    Extension(caller): Extension<crate::acl::Caller>,
    Path(node): Path<String>,
) -> ApiResult<shoal_state::ForgottenNode> {
    let members = s.core.members().await?;
    let (id, name) = match find_member(&members, &node) {
        Ok(m) => (
            m.identity.id,
            m.meta.as_ref().map(|x| x.name.clone()).unwrap_or_default(),
        ),
        Err(e) => match node.parse::<NodeId>() {
            Ok(id) if node.len() == 16 => (id, String::new()),
            _ => return Err(e),
        },
    };
    if id == s.transport.local() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "self",
            format!("{node} is the node serving this call: ask another node to forget it"),
        ));
    }
    let write = AclRequest::ForgetNode(id.to_string(), name, caller.history_name());
    match s.state.acl_write(write).await? {
        AclReply::Forgotten(f) => Ok(Json(f)),
        _ => unreachable!("a forget answers a forgotten node"),
    }
}

/// `POST /v1/nodes/{node}/drain` `{"drain": true|false}`: the node stops
/// taking tasks and its tasks are placed elsewhere (kept across restarts).
#[utoipa::path(
    post,
    path = "/v1/nodes/{key}/drain",
    tag = "nodes",
    summary = "Drain a node (or undo)",
    params(("key" = String, Path, description = "id, unique id prefix or name")),
    request_body(content = Option<DrainBody>, content_type = "application/json"),
    responses(
        (status = 200, description = "done", body = crate::api::openapi::DrainReply),
        (status = 404, description = "no such node", body = crate::api::types::ErrorBody),
        (status = 409, description = "`ambiguous`", body = crate::api::types::ErrorBody),
        (status = 502, description = "the node did not answer", body = crate::api::types::ErrorBody)
    )
)]
pub async fn drain(
    State(s): State<ApiState>,
    Path(node): Path<String>,
    body: Option<Json<DrainBody>>,
) -> ApiResult<serde_json::Value> {
    let on = body.is_none_or(|b| b.drain);
    let members = s.core.members().await?;
    let m = find_member(&members, &node)?.clone();
    let id = m.identity.id;
    if id == s.transport.local() {
        s.core.drain(on).await?;
    } else {
        let rpc = m
            .meta
            .as_ref()
            .map(|x| x.rpc_addr)
            .ok_or_else(|| ApiError::not_found("that node's address is not known yet"))?;
        let body = postcard::to_allocvec(&TaskRequest::Drain(on)).expect("encodes");
        s.transport
            .request(id, rpc, Service::Tasks, &body)
            .await
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "unreachable",
                    format!("the node did not answer: {e}"),
                )
            })?;
    }
    Ok(Json(
        serde_json::json!({"node": id.to_string(), "draining": on}),
    ))
}
