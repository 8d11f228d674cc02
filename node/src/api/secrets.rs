//! `/v1/secrets`: store, list and remove secrets. Values are write-only:
//! no route returns one; only a task that refers to a secret gets its
//! value, in its environment (docs/security.md).

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use shoal_model::acl::{Access, Resource};
use shoal_state::SecretRecord;
use utoipa::ToSchema;

use super::{ApiError, ApiResult, ApiState};
use crate::acl::Caller;
use crate::secrets::{MAX_SECRET_BYTES, SecretsKey};
use crate::state::{AclReply, AclRequest, SubmitError};

/// `POST /v1/secrets` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SecretBody {
    /// Its name (`db/password`: job-name rules).
    pub name: String,
    /// Its value (UTF-8 text, at most 64 KiB).
    pub value: String,
}

fn key(s: &ApiState) -> Result<SecretsKey, ApiError> {
    s.secrets_key.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_key",
            "this node has no cluster secret to seal secrets with",
        )
    })
}

/// `POST /v1/secrets`: stores one, or replaces its value.
#[utoipa::path(
    post,
    path = "/v1/secrets",
    tag = "secrets",
    summary = "Store a secret (sealed; its value is never shown again)",
    request_body(content = SecretBody, content_type = "application/json"),
    responses(
        (status = 201, description = "stored", body = SecretRecord),
        (status = 200, description = "replaced", body = SecretRecord),
        (status = 422, description = "a bad name, or a value too large", body = crate::api::types::ErrorBody)
    )
)]
pub async fn put(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<SecretBody>,
) -> Result<(StatusCode, Json<SecretRecord>), ApiError> {
    caller
        .check(Resource::Secrets, &body.name, Access::Write)
        .map_err(ApiError::forbidden)?;
    if body.value.len() > MAX_SECRET_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "value: {} bytes, more than {MAX_SECRET_BYTES}",
                body.value.len()
            ),
        )
        .with_field("value"));
    }
    if let Err(e) = shoal_model::validate_name(&body.name) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("name: {e}"),
        )
        .with_field("name"));
    }
    let existed = s.state.acl().secret(&body.name).is_some();
    let sealed = key(&s)?
        .seal(&body.name, body.value.as_bytes())
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("no randomness to seal with: {e}"),
            )
        })?;
    let write = AclRequest::PutSecret(body.name, sealed, caller.history_name());
    match s.state.acl_write(write).await? {
        AclReply::Secret(r) => Ok((
            if existed {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            Json(r),
        )),
        _ => unreachable!("a secret write answers a secret"),
    }
}

/// `GET /v1/secrets`: names and dates, never values.
#[utoipa::path(
    get,
    path = "/v1/secrets",
    tag = "secrets",
    summary = "The secrets the token may read (names only, never values)",
    responses((status = 200, description = "the secrets", body = Vec<SecretRecord>))
)]
pub async fn list(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<Vec<SecretRecord>> {
    Ok(Json(
        s.state
            .acl()
            .secrets()
            .into_iter()
            .filter(|r| {
                caller
                    .grants
                    .allows(Resource::Secrets, &r.name, Access::Read)
            })
            .collect(),
    ))
}

/// `DELETE /v1/secrets/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/secrets/{name}",
    tag = "secrets",
    summary = "Remove a secret (tasks that refer to it fail to start from then on)",
    params(("name" = String, Path, description = "the secret, one percent-encoded segment (`db%2Fpassword`)")),
    responses(
        (status = 200, description = "removed", body = SecretRecord),
        (status = 404, description = "no such secret", body = crate::api::types::ErrorBody)
    )
)]
pub async fn remove(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<SecretRecord> {
    match s
        .state
        .acl_write(AclRequest::RemoveSecret(name.clone()))
        .await
    {
        Ok(AclReply::Secret(r)) => Ok(Json(r)),
        Ok(_) => unreachable!("a secret write answers a secret"),
        Err(SubmitError::Rejected(shoal_state::WriteError::NotFound(_))) => {
            Err(ApiError::not_found(format!(
                "no secret named {name:?} (see `shoal secret list`)"
            )))
        }
        Err(e) => Err(e.into()),
    }
}
