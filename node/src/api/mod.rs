//! The HTTP API every node serves.
//!
//! | route | auth | what |
//! |---|---|---|
//! | `GET /v1/health` | no | liveness of this agent |
//! | `GET /v1/openapi.json` | no | the OpenAPI document of the whole API ([`openapi`]) |
//! | `GET /v1/self` | yes | this node as a member |
//! | `GET /v1/nodes` | yes | every member this node knows (filters, paging: `summary.rs`) |
//! | `GET /v1/nodes/{id-or-name}` | yes | one member (id, unique id prefix, or name) |
//! | `GET /v1/status` | yes | the pooled resources, in total and per datacenter |
//! | `GET /v1/summary` | yes | members by state and resources per datacenter and zone, kept incrementally |
//! | `GET /metrics` | yes | Prometheus/OpenMetrics text |
//! | `GET /ui/…` | no | the web UI (it calls the API with the user's token) |
//!
//! Authentication is `Authorization: Bearer <cluster token>`, except in
//! `--dev`. Every error is `{"error": {"code", "message"}}` with the matching
//! status.

pub mod acl;
pub mod artifacts;
pub mod deployments;
pub mod installations;
pub mod jobs;
pub mod keyring;
pub mod listener;
pub mod openapi;
pub mod packages;
pub mod secrets;
pub mod services;
pub mod summary;
pub mod tasks;
pub mod triggers;
pub mod types;
pub mod ui;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{MatchedPath, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use shoal_gossip::{MemberInfo, MemberState, NodeId};

use crate::acl::Caller;
use crate::clock::Clock;
use crate::core_task::{CoreHandle, CoreStopped};
use crate::metrics;
use crate::token::ClusterSecret;
use types::{
    CapacityView, ErrorBody, ErrorDetail, HealthView, NodeView, PoolView, ReachView, RuntimeView,
    StateCounts, StatusView,
};

/// What the handlers share.
#[derive(Clone)]
pub struct ApiState {
    /// The node core (membership and placement).
    pub core: CoreHandle,
    /// The desired-state replica.
    pub state: crate::state::StateHandle,
    /// The task runtimes (logs and ports of local tasks).
    pub runtime: crate::runtime::Runtimes,
    /// Live members.
    pub live: tokio::sync::watch::Receiver<Arc<Vec<crate::state::Peer>>>,
    /// Service lookups, with this node's cache.
    pub services: crate::services::Services,
    /// Package lookups in the cluster's repositories.
    pub repos: crate::repos::Repos,
    /// The RPC transport (for fault injection).
    pub transport: shoal_transport::Transport,
    /// Serve `POST /v1/debug/faults`.
    pub fault_injection: bool,
    /// `None` disables authentication (`--dev`).
    pub auth: Option<Arc<ClusterSecret>>,
    /// Seals secrets (`None`: no cluster secret, no secrets).
    pub secrets_key: Option<crate::secrets::SecretsKey>,
    /// The id of the cluster's own gossip key (derived from the secret).
    pub cluster_key_id: u32,
    /// Real time.
    pub clock: Clock,
    /// Where the token lives, for error messages.
    pub token_hint: String,
    /// Events of the tasks this node runs (`/v1/events`).
    pub task_events: tokio::sync::broadcast::Sender<crate::core_task::TaskEvent>,
    /// Artifacts: this node's blob store and its peers'.
    pub artifacts: crate::artifacts::Artifacts,
    /// The triggers this node evaluates (for `explain`).
    pub triggers: crate::triggers::Triggers,
    /// Measured usage: the reports this node aggregates and the zones'
    /// answers its summaries reuse.
    pub usage: crate::usage::UsageBook,
}

/// An API error.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    pub(crate) message: String,
    field: Option<String>,
    extra: serde_json::Map<String, serde_json::Value>,
}

impl ApiError {
    /// An error with a status, a code and a message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            extra: serde_json::Map::new(),
        }
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 403: the caller's token lacks a permission (`why` names it).
    pub fn forbidden(why: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, "forbidden", why)
    }

    /// Names the offending field.
    pub fn with_field(mut self, field: impl Into<String>) -> ApiError {
        self.field = Some(field.into());
        self
    }

    /// Adds a field to the error object.
    pub fn with_extra(mut self, key: &str, value: serde_json::Value) -> ApiError {
        self.extra.insert(key.to_owned(), value);
        self
    }
}

impl From<CoreStopped> for ApiError {
    fn from(e: CoreStopped) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message,
                field: self.field,
                extra: self.extra,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

/// The router.
pub fn router(state: ApiState) -> Router {
    let protected = Router::new()
        .route("/v1/self", get(get_self))
        .route("/v1/nodes", get(summary::list_nodes))
        .route("/v1/nodes/{key}", get(get_node))
        .route("/v1/status", get(get_status))
        .route("/v1/summary", get(summary::summary))
        .route("/metrics", get(get_metrics))
        .route("/v1/jobs", post(jobs::submit).get(summary::list_jobs))
        .route("/v1/jobs/{name}", get(jobs::get).delete(jobs::delete))
        .route("/v1/jobs/{name}/versions", get(jobs::versions))
        .route("/v1/jobs/{name}/scale", post(jobs::scale))
        .route("/v1/jobs/{name}/revert", post(deployments::revert))
        .route("/v1/jobs/{name}/deployments", get(deployments::of_job))
        .route(
            "/v1/jobs/{name}/deployment/{action}",
            post(deployments::act),
        )
        .route("/v1/deployments", get(deployments::list))
        .route("/v1/packages", get(packages::list))
        .route("/v1/packages/{name}", get(packages::get))
        .route("/v1/packages/{name}/versions", get(packages::versions))
        .route("/v1/packages/{name}/archive", get(packages::archive))
        .route(
            "/v1/repositories",
            get(packages::repos_list).post(packages::repos_add),
        )
        .route("/v1/repositories/{name}", delete(packages::repos_remove))
        .route("/v1/packages/{name}/render", post(packages::render))
        .route(
            "/v1/installations",
            get(installations::list).post(installations::install),
        )
        .route(
            "/v1/installations/{instance}",
            get(installations::get).delete(installations::uninstall),
        )
        .route(
            "/v1/installations/{instance}/rollback",
            post(installations::rollback),
        )
        .route(
            "/v1/installations/{instance}/upgrade",
            post(installations::upgrade),
        )
        .route("/v1/artifacts", get(artifacts::list).post(artifacts::put))
        .route(
            "/v1/artifacts/{sha256}",
            get(artifacts::get).delete(artifacts::delete),
        )
        .route("/v1/artifacts/{sha256}/pull", post(artifacts::pull))
        .route("/v1/jobs/{name}/tasks", get(tasks::list))
        .route("/v1/tasks/{task}/logs", get(tasks::logs))
        .route("/v1/services/{job}", get(services::get))
        .route("/v1/nodes/{key}/drain", post(tasks::drain))
        .route("/v1/nodes/{key}/forget", post(tasks::forget))
        .route("/v1/nodes/{key}/tasks", get(tasks::of_node))
        .route("/v1/events", get(jobs::events))
        .route("/v1/triggers", post(triggers::create).get(triggers::list))
        .route(
            "/v1/triggers/{name}",
            get(triggers::get).delete(triggers::delete),
        )
        .route("/v1/triggers/{name}/pause", post(triggers::pause))
        .route("/v1/triggers/{name}/resume", post(triggers::resume))
        .route("/v1/triggers/{name}/run", post(triggers::run))
        .route("/v1/triggers/{name}/explain", get(triggers::explain))
        .route("/v1/runs", get(triggers::runs))
        .route("/v1/debug/faults", post(set_faults))
        .route("/v1/acl/bootstrap", post(acl::bootstrap))
        .route("/v1/acl/policies", get(acl::policies).post(acl::put_policy))
        .route(
            "/v1/acl/policies/{name}",
            get(acl::policy).delete(acl::delete_policy),
        )
        .route("/v1/acl/tokens", get(acl::tokens).post(acl::create_token))
        .route(
            "/v1/acl/tokens/{accessor}",
            get(acl::token).delete(acl::revoke),
        )
        .route("/v1/acl/token/self", get(acl::whoami))
        .route("/v1/secrets", get(secrets::list).post(secrets::put))
        .route("/v1/secrets/{name}", delete(secrets::remove))
        .route("/v1/keyring", get(keyring::list).post(keyring::install))
        .route("/v1/keyring/{id}/use", post(keyring::use_key))
        .route("/v1/keyring/{id}", delete(keyring::remove))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/openapi.json", get(openapi::openapi_json))
        // The web UI's files: not the API, so not in its document.
        .merge(ui::router())
        .merge(protected)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::map_response(json_errors))
        .with_state(state)
}

/// Makes the plain-text rejections of axum's extractors (a query string,
/// a path or a JSON body that does not parse) `ErrorBody`s like every
/// other error: `bad_request` (400), `unsupported_media_type` (415),
/// `too_large` (413) or `invalid` (422), with axum's text as the message.
async fn json_errors(res: Response) -> Response {
    let plain = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/plain"));
    let status = res.status();
    if !plain || !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let text = axum::body::to_bytes(res.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let code = match status {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        _ => "bad_request",
    };
    ApiError::new(status, code, String::from_utf8_lossy(&text).into_owned()).into_response()
}

async fn not_found(req: Request) -> ApiError {
    ApiError::not_found(format!(
        "no such endpoint: {} {}",
        req.method(),
        req.uri().path()
    ))
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Authenticates the caller and checks that it may do what the route
/// does ([`acl::need`]); the handler finds the [`Caller`] in the request's
/// extensions.
async fn require_token(
    State(state): State<ApiState>,
    headers: HeaderMap,
    route: Option<MatchedPath>,
    params: Option<Path<std::collections::HashMap<String, String>>>,
    mut req: Request,
    next: Next,
) -> Response {
    let Some(secret) = &state.auth else {
        req.extensions_mut().insert(Caller::dev());
        return next.run(req).await;
    };
    let route = route.as_ref().map_or("", MatchedPath::as_str);
    let method = req.method().clone();
    let unauthorized = |message: String| {
        ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response()
    };
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return unauthorized(format!(
            "missing `Authorization: Bearer <token>`; pass --token or set SHOAL_TOKEN (an ACL token from `shoal token create`; before `shoal acl bootstrap`, the cluster token in {})",
            state.token_hint
        ));
    };
    let table = state.state.acl();
    let caller = if crate::acl::accessor_of(presented).is_some() {
        match table.authenticate(presented, crate::clock::unix_ms()) {
            Ok(c) => c,
            Err(e) => return unauthorized(e.to_string()),
        }
    } else if secret.matches_token(presented) {
        if table.bootstrapped && route != "/v1/acl/bootstrap" && !acl::node_route(&method, route) {
            return unauthorized(
                "the cluster secret admits machines; since `shoal acl bootstrap` it no longer authorizes API calls: use an ACL token (`shoal token create`, with the management token bootstrap printed)".into(),
            );
        }
        Caller::cluster_secret()
    } else {
        return unauthorized(format!(
            "the token is neither this cluster's nor an ACL token of it (see {} before `shoal acl bootstrap`, `shoal token create` after)",
            state.token_hint
        ));
    };
    let params = params.map(|Path(p)| p).unwrap_or_default();
    let checked = match acl::need(&method, route, &params) {
        acl::Need::Caller => Ok(()),
        acl::Need::One(resource, name, access) => caller.check(resource, &name, access),
        acl::Need::Some(resource, access) => caller.check_some(resource, access),
    };
    if let Err(why) = checked {
        return ApiError::forbidden(why).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "nodes",
    summary = "Liveness of this agent (no token needed)",
    responses(
        (status = 200, description = "this agent", body = HealthView)
    )
)]
async fn health(State(state): State<ApiState>) -> ApiResult<HealthView> {
    let me = state
        .core
        .member(state.core.local_id())
        .await?
        .ok_or_else(|| ApiError::not_found("this node is missing from its own member list"))?;
    Ok(axum::Json(HealthView {
        status: "ok".into(),
        state: if state.state.recovering() {
            "recovering".into()
        } else {
            "ok".into()
        },
        node_id: me.identity.id.to_string(),
        name: me.meta.as_ref().map(|m| m.name.clone()).unwrap_or_default(),
        version: env!("CARGO_PKG_VERSION").into(),
    }))
}

/// The API view of a member.
pub fn node_view(m: &MemberInfo, clock: &Clock) -> NodeView {
    let meta = m.meta.as_deref();
    NodeView {
        id: m.identity.id.to_string(),
        name: meta.map(|x| x.name.clone()),
        state: m.state.as_str().to_owned(),
        gossip: m.identity.gossip_addr(),
        rpc: meta.map(|x| x.rpc_addr),
        api: meta.map(|x| x.api_addr),
        dc: meta.map(|x| x.dc.clone()),
        zone: meta.map(|x| x.zone.clone()),
        region: meta.map(|x| x.region.clone()),
        labels: meta.map(|x| x.labels.clone()).unwrap_or_default(),
        capacity: meta.map(|x| CapacityView {
            cpus: f64::from(x.capacity.cpus_milli) / 1000.0,
            memory_mb: x.capacity.memory_mb,
            disk_mb: x.capacity.disk_mb,
            gpus: x.capacity.gpus,
        }),
        runtimes: meta
            .map(|x| {
                x.runtimes
                    .iter()
                    .map(|r| RuntimeView {
                        name: r.name.clone(),
                        version: r.version.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default(),
        version: meta.map(|x| x.agent_version.clone()),
        free_class: meta.map(|x| x.free_class.0),
        isolation: meta.map(|x| x.isolation.clone()),
        draining: meta.is_some_and(|x| x.draining),
        generation: m.identity.bump,
        incarnation: m.incarnation,
        first_seen: clock.rfc3339(m.first_seen),
        state_since: clock.rfc3339(m.state_since),
        local: m.local,
    }
}

#[utoipa::path(
    get,
    path = "/v1/self",
    tag = "nodes",
    summary = "This node as a member",
    responses(
        (status = 200, description = "this node", body = NodeView)
    )
)]
async fn get_self(State(state): State<ApiState>) -> ApiResult<NodeView> {
    let me = state
        .core
        .member(state.core.local_id())
        .await?
        .ok_or_else(|| ApiError::not_found("this node is missing from its own member list"))?;
    Ok(axum::Json(node_view(&me, &state.clock)))
}

/// Finds a member by full id, by name, or by a unique id prefix (4+ hex
/// digits).
pub fn find_member<'a>(members: &'a [MemberInfo], key: &str) -> Result<&'a MemberInfo, ApiError> {
    if let Ok(id) = key.parse::<NodeId>()
        && let Some(m) = members.iter().find(|m| m.identity.id == id)
    {
        return Ok(m);
    }
    let by_name: Vec<&MemberInfo> = members
        .iter()
        .filter(|m| m.meta.as_ref().is_some_and(|x| x.name == key))
        .collect();
    match by_name.as_slice() {
        [one] => return Ok(one),
        [] => {}
        many => {
            let ids: Vec<String> = many.iter().map(|m| m.identity.id.to_string()).collect();
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "ambiguous",
                format!(
                    "{} nodes are named {key:?} ({}); use an id",
                    many.len(),
                    ids.join(", ")
                ),
            ));
        }
    }
    if key.len() >= 4 && key.bytes().all(|b| b.is_ascii_hexdigit()) {
        let by_prefix: Vec<&MemberInfo> = members
            .iter()
            .filter(|m| {
                m.identity
                    .id
                    .to_string()
                    .starts_with(&key.to_ascii_lowercase())
            })
            .collect();
        if let [one] = by_prefix.as_slice() {
            return Ok(one);
        }
    }
    Err(ApiError::not_found(format!(
        "no node with id or name {key:?} is known to this node (see `shoal nodes`)"
    )))
}

#[utoipa::path(
    get,
    path = "/v1/nodes/{key}",
    tag = "nodes",
    summary = "One member",
    params(("key" = String, Path, description = "a full id, a unique id prefix of 4+ hex digits, or a name")),
    responses(
        (status = 200, description = "the member", body = NodeView),
        (status = 404, description = "no such node", body = crate::api::types::ErrorBody),
        (status = 409, description = "`ambiguous`: a name several nodes share", body = crate::api::types::ErrorBody)
    )
)]
async fn get_node(State(state): State<ApiState>, Path(key): Path<String>) -> ApiResult<NodeView> {
    let members = state.core.members().await?;
    let m = find_member(&members, &key)?;
    Ok(axum::Json(node_view(m, &state.clock)))
}

/// Members by state.
pub fn count_states(members: &[MemberInfo]) -> StateCounts {
    let mut c = StateCounts::default();
    for m in members {
        match m.state {
            MemberState::Alive => c.alive += 1,
            MemberState::Suspect => c.suspect += 1,
            MemberState::Failed => c.failed += 1,
            MemberState::Left => c.left += 1,
        }
    }
    c
}

#[utoipa::path(
    get,
    path = "/v1/status",
    tag = "nodes",
    summary = "The pool: members by state and resources",
    responses(
        (status = 200, description = "the pool", body = StatusView)
    )
)]
async fn get_status(State(state): State<ApiState>) -> ApiResult<StatusView> {
    let members = state.core.members().await?;
    let local = members
        .iter()
        .find(|m| m.local)
        .ok_or_else(|| ApiError::not_found("this node is missing from its own member list"))?;
    let mut by_dc: BTreeMap<String, PoolView> = BTreeMap::new();
    let mut total = PoolView::default();
    for m in &members {
        if !matches!(m.state, MemberState::Alive | MemberState::Suspect) {
            continue;
        }
        let Some(meta) = m.meta.as_deref() else {
            continue;
        };
        let pool = by_dc.entry(meta.dc.clone()).or_insert_with(|| PoolView {
            dc: meta.dc.clone(),
            ..Default::default()
        });
        for p in [pool, &mut total] {
            p.nodes += 1;
            p.capacity.cpus += f64::from(meta.capacity.cpus_milli) / 1000.0;
            p.capacity.memory_mb += meta.capacity.memory_mb;
            p.capacity.disk_mb += meta.capacity.disk_mb;
            p.capacity.gpus += meta.capacity.gpus;
        }
    }
    let reach = state
        .core
        .datacenters()
        .await?
        .into_iter()
        .map(|r| ReachView {
            reach: if r.unreachable_for.is_some() {
                "unreachable"
            } else {
                "reachable"
            }
            .into(),
            heard_secs_ago: tenths(r.heard_ago),
            failures: r.failures,
            unreachable_secs: r.unreachable_for.map(tenths),
            dc: r.dc,
        })
        .collect();
    Ok(axum::Json(StatusView {
        node: node_view(local, &state.clock),
        members: count_states(&members),
        total,
        by_dc: by_dc.into_values().collect(),
        reach,
    }))
}

/// Seconds, to a tenth.
fn tenths(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

/// `POST /v1/debug/faults` `{"block": [id or name, ...]}`: drops gossip and
/// RPC to and from those nodes (an empty list heals). Only with
/// `--fault-injection`: for partition tests.
#[utoipa::path(
    post,
    path = "/v1/debug/faults",
    tag = "debug",
    summary = "Drop gossip and RPC to and from nodes (only with --fault-injection)",
    request_body(content = openapi::FaultsBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the nodes now blocked", body = openapi::FaultsReply),
        (status = 404, description = "fault injection is off, or no such node", body = crate::api::types::ErrorBody)
    )
)]
async fn set_faults(
    State(state): State<ApiState>,
    axum::Json(body): axum::Json<serde_json::Value>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    if !state.fault_injection {
        return Err(ApiError::not_found(
            "fault injection is off (start the agent with --fault-injection)",
        ));
    }
    let keys: Vec<String> = body["block"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let members = state.core.members().await?;
    let mut ids = std::collections::BTreeSet::new();
    let mut addrs = std::collections::BTreeSet::new();
    for key in &keys {
        let m = find_member(&members, key)?;
        ids.insert(m.identity.id);
        addrs.insert(m.identity.gossip_addr());
        if let Some(meta) = &m.meta {
            addrs.insert(meta.rpc_addr);
        }
    }
    state.core.block(addrs.clone()).await?;
    state.transport.set_blocked(ids.clone());
    Ok(axum::Json(serde_json::json!({
        "blocked": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
    })))
}

#[utoipa::path(
    get,
    path = "/metrics",
    tag = "nodes",
    summary = "OpenMetrics text",
    responses(
        (status = 200, description = "the metrics", body = String, content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8")
    )
)]
async fn get_metrics(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let stats = state.core.stats().await?;
    let members = state.core.members().await?;
    let counts = count_states(&members);
    let store = state.state.status().await?;
    let transport = state.transport.stats();
    let text = metrics::render(&stats, &counts, state.core.slow_turns(), &store, transport)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}
