//! `/v1/jobs…` and `/v1/events`.

use std::convert::Infallible;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, State};
use shoal_model::acl::{Access, Resource};

use crate::acl::Caller;
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_model::JobSpec;
use shoal_state::{HistoryEntry, JobView, Write, WriteError, WriteOp};
use tokio::sync::broadcast::error::RecvError;

use super::types::SubmitResponse;
use super::{ApiError, ApiResult, ApiState};
use crate::clock::unix_ms;
use crate::state::SubmitError;

/// `?if_version=N`: only if the job is at version N (0: must not exist).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct IfVersion {
    if_version: Option<u64>,
}

/// `?deleted=true`: include deleted jobs.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    #[serde(default)]
    deleted: bool,
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::Rejected(WriteError::NotFound(name)) => {
                ApiError::not_found(format!("no job named {name:?} (see `shoal jobs`)"))
            }
            SubmitError::Rejected(WriteError::VersionMismatch {
                name,
                expected,
                actual,
            }) => ApiError::new(
                StatusCode::CONFLICT,
                "version_mismatch",
                format!("job {name:?} is at version {actual}, not {expected}: it changed since you read it; read it again and retry"),
            )
            .with_extra("expected_version", json!(expected))
            .with_extra("actual_version", json!(actual)),
            SubmitError::Rejected(WriteError::Rejected { field, message }) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("{field}: {message}"))
                    .with_field(field)
            }
            SubmitError::Rejected(WriteError::Doc(m)) => {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", m)
            }
            SubmitError::Persist(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "persist_failed",
                format!("{m}; the change was not acknowledged, retry"),
            ),
            SubmitError::Stopped(s) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "shutting_down", s.to_string()),
        }
    }
}

impl From<crate::state::StateStopped> for ApiError {
    fn from(e: crate::state::StateStopped) -> Self {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            e.to_string(),
        )
    }
}

pub(super) fn invalid_spec(e: shoal_model::SpecError) -> ApiError {
    let errors: Vec<Value> = e
        .errors
        .iter()
        .map(|f| json!({"field": f.field, "message": f.message}))
        .collect();
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_spec",
        e.to_string(),
    )
    .with_field(e.field())
    .with_extra("errors", Value::Array(errors))
}

pub(super) fn parse_json(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_spec",
            format!("the body is not JSON: {e}"),
        )
        .with_field("spec")
    })
}

pub(super) fn respond(written: shoal_state::Written) -> (StatusCode, Json<SubmitResponse>) {
    let status = if written.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    (
        status,
        Json(SubmitResponse {
            job: written.job,
            previous_version: written.previous_version,
            changes: written.changes,
            created: written.created,
            unchanged: written.unchanged,
        }),
    )
}

/// `POST /v1/jobs`: create or update.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "Create or update a job",
    params(IfVersion),
    request_body(content = shoal_model::JobSpec, content_type = "application/json", description = "the spec (defaults may be left out)"),
    responses(
        (status = 201, description = "created", body = crate::api::types::SubmitResponse),
        (status = 200, description = "updated (or unchanged)", body = crate::api::types::SubmitResponse),
        (status = 400, description = "the body is not JSON", body = crate::api::types::ErrorBody),
        (status = 409, description = "`version_mismatch`: not at `if_version`", body = crate::api::types::ErrorBody),
        (status = 422, description = "`invalid_spec`: the spec does not validate", body = crate::api::types::ErrorBody)
    )
)]
pub async fn submit(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<IfVersion>,
    body: Bytes,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let spec = JobSpec::from_json(parse_json(&body)?).map_err(invalid_spec)?;
    caller
        .check(Resource::Jobs, &spec.name, Access::Write)
        .map_err(ApiError::forbidden)?;
    check_secret_refs(&caller, &spec)?;
    if !spec.after.is_empty() {
        // A job's `after` is a list of names: the error names the entry.
        let graph = super::triggers::after_graph(&s).await?;
        let after: Vec<&str> = spec.after.iter().map(String::as_str).collect();
        shoal_trigger::check_after(&graph, &spec.name, &after).map_err(|mut e| {
            e.field = e.field.trim_end_matches(".job").to_owned();
            invalid_spec(shoal_model::SpecError { errors: vec![e] })
        })?;
    }
    let written = s
        .state
        .write(Write {
            by: caller.history_name(),
            name: spec.name.clone(),
            op: WriteOp::Put(Box::new(spec)),
            if_version: q.if_version,
            now_ms: unix_ms(),
        })
        .await?;
    Ok(respond(written))
}

/// A job hands its secrets to its task (and so to whoever reads the
/// task's output): whoever writes it, directly or through a package or a
/// trigger, must be allowed to read every secret it refers to.
pub(crate) fn check_secret_refs(caller: &Caller, spec: &JobSpec) -> Result<(), ApiError> {
    for secret in spec
        .task
        .env
        .values()
        .filter_map(shoal_model::EnvValue::secret)
    {
        caller
            .check(Resource::Secrets, secret, Access::Read)
            .map_err(|e| ApiError::forbidden(format!("job {}: {e}", spec.name)))?;
    }
    Ok(())
}

/// Whether `caller` may see an event of `kind` (`job`, `task`,
/// `member`): each names what it is about, and the caller needs read on
/// that (a job's events need read on the job, a secret's on the secret…).
pub(crate) fn may_see(caller: &Caller, kind: &str, v: &Value) -> bool {
    let name = |k: &str| v[k].as_str().unwrap_or_default();
    let (resource, of) = match (kind, name("event")) {
        ("member", _) => (Resource::Nodes, ""),
        ("task", _) => (Resource::Jobs, name("job")),
        (_, "acl") => (Resource::Acl, ""),
        (_, "secret") => (Resource::Secrets, name("name")),
        (_, "repository" | "installation") => (Resource::Packages, ""),
        (_, "trigger") => (Resource::Triggers, ""),
        _ => (Resource::Jobs, name("name")),
    };
    caller.grants.allows(resource, of, Access::Read)
}

/// `GET /v1/jobs/{name}`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}",
    tag = "jobs",
    summary = "One job",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)"), ListQuery),
    responses(
        (status = 200, description = "the job", body = JobView),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody)
    )
)]
pub async fn get(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<ListQuery>,
) -> ApiResult<JobView> {
    match s.state.job(&name).await? {
        Some(job) if !job.deleted || q.deleted => Ok(Json(job)),
        Some(_) => Err(ApiError::not_found(format!(
            "job {name:?} was deleted (see it with ?deleted=true)"
        ))),
        None => Err(ApiError::not_found(format!(
            "no job named {name:?} (see `shoal jobs`)"
        ))),
    }
}

/// `GET /v1/jobs/{name}/versions`.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}/versions",
    tag = "jobs",
    summary = "Every change of a job, oldest first",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)")),
    responses(
        (status = 200, description = "the history", body = Vec<HistoryEntry>),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody)
    )
)]
pub async fn versions(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<HistoryEntry>> {
    match s.state.history(&name).await? {
        Some(h) => Ok(Json(h)),
        None => Err(ApiError::not_found(format!(
            "no job named {name:?} (see `shoal jobs`)"
        ))),
    }
}

/// `POST /v1/jobs/{name}/scale` with `{"count": N, "if_version"?: M}`.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/scale",
    tag = "jobs",
    summary = "Set the count of a job",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)"), IfVersion),
    request_body(content = crate::api::openapi::ScaleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "scaled", body = crate::api::types::SubmitResponse),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody),
        (status = 400, description = "the body is not JSON", body = crate::api::types::ErrorBody),
        (status = 409, description = "`version_mismatch`", body = crate::api::types::ErrorBody),
        (status = 422, description = "a bad count, or a system job", body = crate::api::types::ErrorBody)
    )
)]
pub async fn scale(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<IfVersion>,
    body: Bytes,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let v = parse_json(&body)?;
    let count = match v.get("count") {
        Some(c) => c.as_i64().ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!("count: must be a whole number (got {c})"),
            )
            .with_field("count")
        })?,
        None => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "count: is required",
            )
            .with_field("count"));
        }
    };
    if !(0..=i64::from(shoal_model::MAX_COUNT)).contains(&count) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "count: must be between 0 and {} (got {count})",
                shoal_model::MAX_COUNT
            ),
        )
        .with_field("count"));
    }
    let if_version = q
        .if_version
        .or_else(|| v.get("if_version").and_then(Value::as_u64));
    let written = s
        .state
        .write(Write {
            by: caller.history_name(),
            name,
            op: WriteOp::Scale(u32::try_from(count).unwrap_or(0)),
            if_version,
            now_ms: unix_ms(),
        })
        .await?;
    Ok(respond(written))
}

/// `DELETE /v1/jobs/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{name}",
    tag = "jobs",
    summary = "Delete a job (kept as a tombstone)",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)"), IfVersion),
    responses(
        (status = 200, description = "deleted", body = crate::api::types::SubmitResponse),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody),
        (status = 409, description = "`version_mismatch`", body = crate::api::types::ErrorBody)
    )
)]
pub async fn delete(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(name): Path<String>,
    Query(q): Query<IfVersion>,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let written = s
        .state
        .write(Write {
            by: caller.history_name(),
            name,
            op: WriteOp::Delete,
            if_version: q.if_version,
            now_ms: unix_ms(),
        })
        .await?;
    Ok(respond(written))
}

/// `GET /v1/events`: server-sent events `job.created`, `job.updated`,
/// `job.scaled`, `job.deleted`, `job.task_finished`, `job.deployment`,
/// `trigger.created|updated|paused|resumed|deleted|fired|skipped|missed|finished|changed`,
/// as this node learns of them,
/// `task.health` for the tasks this node runs, and `member.state` when a
/// member's state changes as this node sees it.
#[utoipa::path(
    get,
    path = "/v1/events",
    tag = "events",
    summary = "Server-sent events of jobs, of this node's tasks and of members (never ends)",
    responses(
        (status = 200, description = "an endless event stream", body = String, content_type = "text/event-stream")
    )
)]
pub async fn events(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>> {
    let jobs = s.state.subscribe();
    let tasks = s.task_events.subscribe();
    let members = s.core.member_events();
    let stream = futures_util::stream::unfold(
        (jobs, tasks, members, caller),
        |(mut jobs, mut tasks, mut members, caller)| async move {
            let sse = loop {
                let (kind, got) = tokio::select! {
                    got = jobs.recv() => ("job", got.map(|e| serde_json::to_value(&e).unwrap_or(Value::Null))),
                    got = tasks.recv() => ("task", got.map(|e| serde_json::to_value(&e).unwrap_or(Value::Null))),
                    got = members.recv() => ("member", got.map(|e| serde_json::to_value(&e).unwrap_or(Value::Null))),
                };
                match got {
                    Ok(value) if !may_see(&caller, kind, &value) => continue,
                    Ok(value) => {
                        let name = value["event"].as_str().unwrap_or("changed").to_owned();
                        // Triggers are their own kind: `trigger.created`,
                        // `trigger.fired`, `trigger.skipped`, …
                        let event = if name == "trigger" {
                            format!("trigger.{}", value["op"].as_str().unwrap_or("changed"))
                        } else {
                            format!("{kind}.{name}")
                        };
                        break Event::default().event(event).data(value.to_string());
                    }
                    Err(RecvError::Lagged(n)) => {
                        break Event::default()
                            .event("lagged")
                            .data(json!({"missed": n}).to_string());
                    }
                    Err(RecvError::Closed) => return None,
                }
            };
            Some((Ok(sse), (jobs, tasks, members, caller)))
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::default())
}
