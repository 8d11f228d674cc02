//! `/v1/deployments` and `/v1/jobs/{name}/deployment…`: rolling
//! deployments, read from this node's replica; promote, fail, pause and
//! resume written into it (see `docs/services.md#rolling-deployments`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use shoal_model::Deployment;
use shoal_state::{DeployAction, JobView, rfc3339};

use super::types::{DeploymentView, SubmitResponse};
use super::{ApiError, ApiResult, ApiState};
use crate::state::{DeployReply, DeployRequest};

/// `?job=NAME`: only that job's deployments (all of them, newest first).
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DeploymentsQuery {
    job: Option<String>,
}

fn view_of(job: &JobView, d: &Deployment) -> DeploymentView {
    DeploymentView {
        driver: None,
        job: job.name.clone(),
        version: d.version,
        from_version: d.from_version,
        status: d.status,
        healthy: d.healthy,
        desired: job.count.unwrap_or(0),
        canaries: d.canary,
        promoted: d.promoted,
        active: d.active.iter().copied().collect(),
        replaced: u32::try_from(d.done.len()).unwrap_or(u32::MAX),
        description: d.description.clone(),
        started_at: rfc3339(d.started_ms),
        updated_at: rfc3339(d.updated_ms),
    }
}

fn no_job(name: &str) -> ApiError {
    ApiError::not_found(format!("no job named {name:?} (see `shoal jobs`)"))
}

/// Names the driver of each deployment in progress: the owner of the
/// job's key `job/0` in this node's view of the ring.
async fn with_drivers(
    s: &ApiState,
    mut all: Vec<DeploymentView>,
) -> Result<Vec<DeploymentView>, ApiError> {
    for d in all.iter_mut().filter(|d| d.status.in_progress()) {
        let keys = s.core.keys_of(&d.job).await?;
        d.driver = keys
            .into_iter()
            .find(|(k, _)| k.index_number() == Some(0))
            .and_then(|(_, owner)| owner)
            .map(|n| n.to_string());
    }
    Ok(all)
}

async fn list_of(s: &ApiState, name: &str) -> Result<Vec<DeploymentView>, ApiError> {
    let job = s
        .state
        .job(name)
        .await?
        .filter(|j| !j.deleted)
        .ok_or_else(|| no_job(name))?;
    let all = match s.state.deploy(DeployRequest::List(name.to_owned())).await? {
        DeployReply::List(all) => all.unwrap_or_default(),
        _ => Vec::new(),
    };
    with_drivers(s, all.iter().rev().map(|d| view_of(&job, d)).collect()).await
}

/// `GET /v1/deployments[?job=NAME]`: the latest deployment of every job
/// that has one, or every deployment of one job, newest first.
#[utoipa::path(
    get,
    path = "/v1/deployments",
    tag = "deployments",
    summary = "The latest deployment of every job, or every deployment of one",
    params(DeploymentsQuery),
    responses(
        (status = 200, description = "the deployments", body = Vec<DeploymentView>),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody)
    )
)]
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<DeploymentsQuery>,
) -> ApiResult<Vec<DeploymentView>> {
    if let Some(name) = q.job {
        return Ok(Json(list_of(&s, &name).await?));
    }
    let jobs = s.state.jobs_shared(false).await?;
    let all = jobs
        .iter()
        .filter_map(|j| j.deployment.as_ref().map(|d| view_of(j, d)))
        .collect();
    Ok(Json(with_drivers(&s, all).await?))
}

/// `GET /v1/jobs/{name}/deployments`: every deployment of a job, newest
/// first.
#[utoipa::path(
    get,
    path = "/v1/jobs/{name}/deployments",
    tag = "deployments",
    summary = "Every deployment of a job, newest first",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)")),
    responses(
        (status = 200, description = "the deployments", body = Vec<DeploymentView>),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody)
    )
)]
pub async fn of_job(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<DeploymentView>> {
    Ok(Json(list_of(&s, &name).await?))
}

/// `POST /v1/jobs/{name}/deployment/{action}`: `promote`, `fail`, `pause`
/// or `resume` the job's latest deployment.
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/deployment/{action}",
    tag = "deployments",
    summary = "Promote, fail, pause or resume the latest deployment",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)"), ("action" = String, Path, description = "`promote`, `fail`, `pause` or `resume`")),
    responses(
        (status = 200, description = "the deployment", body = DeploymentView),
        (status = 404, description = "no such job, deployment or action", body = crate::api::types::ErrorBody),
        (status = 422, description = "its state does not allow it", body = crate::api::types::ErrorBody)
    )
)]
pub async fn act(
    State(s): State<ApiState>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<DeploymentView> {
    let action = match action.as_str() {
        "promote" => DeployAction::Promote,
        "fail" => DeployAction::Fail,
        "pause" => DeployAction::Pause,
        "resume" => DeployAction::Resume,
        other => {
            return Err(ApiError::not_found(format!(
                "no deployment action {other:?}: use promote, fail, pause or resume"
            )));
        }
    };
    let d = match s
        .state
        .deploy(DeployRequest::Act(name.clone(), action))
        .await?
    {
        DeployReply::Acted(d) => d,
        _ => return Err(no_job(&name)),
    };
    let job = s.state.job(&name).await?.ok_or_else(|| no_job(&name))?;
    let mut one = with_drivers(&s, vec![view_of(&job, &d)]).await?;
    Ok(Json(one.remove(0)))
}

/// `POST /v1/jobs/{name}/revert` with `{"version": N}`: a new version of
/// the job equal to version N (its spec and count then).
#[utoipa::path(
    post,
    path = "/v1/jobs/{name}/revert",
    tag = "deployments",
    summary = "Write the spec a job had at a version as a new version",
    params(("name" = String, Path, description = "the job name, one percent-encoded segment (`web%2Ffrontend`)")),
    request_body(content = crate::api::openapi::RevertBody, content_type = "application/json"),
    responses(
        (status = 200, description = "reverted", body = crate::api::types::SubmitResponse),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody),
        (status = 422, description = "not JSON, or no such version", body = crate::api::types::ErrorBody)
    )
)]
pub async fn revert(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<SubmitResponse>), ApiError> {
    let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("the body is not JSON: {e}; send {{\"version\": N}}"),
        )
    })?;
    let version = v["version"].as_u64().filter(|n| *n > 0).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "version: must be a job version (1 or more), as `shoal job history {name}` lists them (got {})",
                v["version"]
            ),
        )
        .with_field("version")
    })?;
    match s
        .state
        .deploy(DeployRequest::Revert(name.clone(), version))
        .await?
    {
        DeployReply::Reverted(w) => Ok(super::jobs::respond(*w)),
        _ => Err(no_job(&name)),
    }
}
