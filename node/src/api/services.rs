//! `/v1/services/{job}`: where a job's healthy tasks are reached, from any
//! node (see [`crate::services`]).

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState};
use crate::services::{LookupError, ServiceView};

/// `?port=NAME&all=true`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ServiceQuery {
    /// The named port whose host port `port` is (default: the job's first).
    port: Option<String>,
    /// Every task with a node, whatever its state and health.
    #[serde(default)]
    all: bool,
}

impl From<LookupError> for ApiError {
    fn from(e: LookupError) -> Self {
        match e {
            LookupError::NoJob(_) => ApiError::not_found(e.to_string()),
            LookupError::NoPort { .. } => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
                    .with_field("port")
            }
            LookupError::Core(c) => c.into(),
            LookupError::State(s) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                s.to_string(),
            ),
        }
    }
}

/// `GET /v1/services/{job}?port=NAME&all=true`.
#[utoipa::path(
    get,
    path = "/v1/services/{job}",
    tag = "services",
    summary = "Where a job's healthy tasks are reached",
    params(("job" = String, Path, description = "the job name, one percent-encoded segment"), ServiceQuery),
    responses(
        (status = 200, description = "the endpoints", body = ServiceView),
        (status = 404, description = "no such job", body = crate::api::types::ErrorBody),
        (status = 422, description = "no such port", body = crate::api::types::ErrorBody)
    )
)]
pub async fn get(
    State(s): State<ApiState>,
    Path(job): Path<String>,
    Query(q): Query<ServiceQuery>,
) -> ApiResult<ServiceView> {
    Ok(Json(
        s.services.endpoints(&job, q.port.as_deref(), q.all).await?,
    ))
}
