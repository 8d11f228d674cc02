//! `/v1/artifacts…`: files stored in the cluster by digest (see
//! [`crate::artifacts`]). The records are in the replicated state; the
//! bytes are in the blob stores of the nodes that hold them.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use shoal_state::{ArtifactOp, ArtifactRecord, WriteError};
use tokio::io::AsyncWriteExt;

use super::{ApiError, ApiResult, ApiState};
use crate::artifacts::{COPIES, FETCHER_HEADER, LocalCopy, Source};
use crate::blobs::{BlobError, Digest, Hasher};
use crate::state::{ArtifactReply, ArtifactRequest, SubmitError};

/// A stored artifact with this node's copy, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ArtifactView {
    /// The record, as the replicated state holds it.
    #[serde(flatten)]
    pub record: ArtifactRecord,
    /// What a task names it by: `shoal:sha256:<hex>`.
    pub source: String,
    /// The answering node's copy.
    pub local: LocalCopy,
}

/// `POST /v1/artifacts` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PutQuery {
    /// A name for people (default: `artifact`).
    #[serde(default)]
    name: Option<String>,
    /// The digest the bytes must have: refused (nothing kept) otherwise.
    #[serde(default)]
    sha256: Option<String>,
    /// Other nodes that keep a copy (default 2, at most 8).
    #[serde(default)]
    copies: Option<usize>,
}

/// `POST /v1/artifacts/{sha256}/pull` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PullQuery {
    /// An agent's API URL that has it.
    #[serde(default)]
    from: Option<String>,
}

/// `GET /v1/artifacts` query.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Removed ones too.
    #[serde(default)]
    deleted: bool,
}

fn digest_of(s: &str) -> Result<Digest, ApiError> {
    let hex = s
        .strip_prefix(shoal_model::SHOAL_SOURCE_PREFIX)
        .unwrap_or(s);
    hex.parse().map_err(|e: crate::blobs::BadDigest| {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_digest", e.to_string()).with_field("sha256")
    })
}

fn no_artifact(d: &Digest) -> ApiError {
    ApiError::not_found(format!(
        "no stored artifact sha256:{} (see `shoal artifact list`)",
        d.hex()
    ))
}

fn view(s: &ApiState, record: ArtifactRecord) -> ArtifactView {
    let local = record
        .sha256
        .parse()
        .map(|d| s.artifacts.local(&d))
        .unwrap_or_default();
    ArtifactView {
        source: format!("{}{}", shoal_model::SHOAL_SOURCE_PREFIX, record.sha256),
        record,
        local,
    }
}

/// `GET /v1/artifacts`: every stored artifact, with this node's copy.
#[utoipa::path(
    get,
    path = "/v1/artifacts",
    tag = "artifacts",
    summary = "Every stored artifact with this node's copy",
    params(ListQuery),
    responses(
        (status = 200, description = "the artifacts", body = Vec<ArtifactView>)
    )
)]
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<ListQuery>,
) -> ApiResult<Vec<ArtifactView>> {
    match s.state.artifact(ArtifactRequest::List(q.deleted)).await? {
        ArtifactReply::List(records) => {
            Ok(Json(records.into_iter().map(|r| view(&s, r)).collect()))
        }
        ArtifactReply::One(_) => Ok(Json(Vec::new())),
    }
}

/// `POST /v1/artifacts?name=N&sha256=HEX&copies=N`: stores the body (any
/// size, streamed) on this node, records it, and has `copies` other
/// nodes fetch a copy. A body whose digest is not `sha256` is refused and
/// nothing is kept.
#[utoipa::path(
    post,
    path = "/v1/artifacts",
    tag = "artifacts",
    summary = "Store the body on this node and have copies made",
    params(PutQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "stored", body = ArtifactView),
        (status = 400, description = "a bad name or digest", body = crate::api::types::ErrorBody),
        (status = 422, description = "`digest_mismatch`", body = crate::api::types::ErrorBody)
    )
)]
pub async fn put(
    State(s): State<ApiState>,
    Query(q): Query<PutQuery>,
    body: Body,
) -> Result<(StatusCode, Json<ArtifactView>), ApiError> {
    let expected = q.sha256.as_deref().map(digest_of).transpose()?;
    let name = q.name.unwrap_or_else(|| "artifact".to_owned());
    if name.is_empty() || name.len() > 256 || name.contains(['\0', '\n']) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid",
            "name: 1-256 bytes, one line",
        )
        .with_field("name"));
    }
    let copies = q.copies.unwrap_or(COPIES).min(8);
    let store = s.artifacts.store().clone();
    let failed =
        |e: BlobError| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string());
    let incoming = tokio::task::spawn_blocking(move || store.incoming())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?
        .map_err(failed)?;
    let mut file =
        tokio::fs::File::from_std(incoming.file().map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        })?);
    let mut hasher = Hasher::default();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "broken_upload",
                format!(
                    "the upload of {name:?} broke off after {} bytes: {e}; nothing was kept",
                    hasher.len()
                ),
            )
        })?;
        hasher.update(&chunk);
        file.write_all(&chunk).await.map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage",
                format!("cannot write the upload: {e}"),
            )
        })?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    drop(file);
    let store = s.artifacts.store().clone();
    let what = format!("upload {name:?} to node {}", s.artifacts.node());
    let (digest, size) =
        tokio::task::spawn_blocking(move || store.finish(incoming, hasher, &what, expected))
            .await
            .map_err(|e| {
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
            })?
            .map_err(|e| match e {
                BlobError::Mismatch { .. } => ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "digest_mismatch",
                    e.to_string(),
                )
                .with_field("sha256"),
                other => failed(other),
            })?;
    let mut targets = s.artifacts.copy_targets(&digest);
    targets.truncate(copies);
    let mut holders = vec![s.artifacts.node().to_string()];
    holders.extend(targets.iter().map(|p| p.id.to_string()));
    let record = match s
        .state
        .artifact(ArtifactRequest::Write(
            digest.hex(),
            ArtifactOp::Put {
                name,
                size,
                holders,
            },
        ))
        .await?
    {
        ArtifactReply::One(Some(r)) => *r,
        _ => return Err(no_artifact(&digest)),
    };
    s.artifacts.spread(digest, targets);
    Ok((StatusCode::CREATED, Json(view(&s, record))))
}

/// `GET /v1/artifacts/{sha256}`: the bytes (what peers fetch), from the
/// `Range: bytes=N-` start when given; `307` to another reader when this
/// node serves as many as it may.
#[utoipa::path(
    get,
    path = "/v1/artifacts/{sha256}",
    tag = "artifacts",
    summary = "The bytes",
    params(("sha256" = String, Path, description = "64 hex digits, optionally `sha256:HEX` or `shoal:sha256:HEX`"), ("Range" = Option<String>, Header, description = "`bytes=N-` only")),
    responses(
        (status = 200, description = "the bytes", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 206, description = "the bytes from the start of the range", body = Vec<u8>, content_type = "application/octet-stream"),
        (status = 307, description = "ask another node (`Location`)"),
        (status = 400, description = "`bad_digest`", body = crate::api::types::ErrorBody),
        (status = 404, description = "no copy on this node", body = crate::api::types::ErrorBody),
        (status = 416, description = "a range other than `bytes=N-`", body = crate::api::types::ErrorBody),
        (status = 503, description = "busy: retry after `Retry-After`", body = crate::api::types::ErrorBody)
    )
)]
pub async fn get(
    State(s): State<ApiState>,
    Path(sha256): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let d = digest_of(&sha256)?;
    let start = match headers.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        None => 0,
        Some(r) => r
            .strip_prefix("bytes=")
            .and_then(|r| r.strip_suffix('-'))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "bad_range",
                    format!("only `Range: bytes=N-` is served (got {r:?})"),
                )
            })?,
    };
    let fetcher = headers
        .get(FETCHER_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.starts_with("http://") || v.starts_with("https://"))
        .map(str::to_owned);
    Ok(s.artifacts.serve(d, start, fetcher).await)
}

/// `DELETE /v1/artifacts/{sha256}`: removes the record; every node
/// collects its copy once no job needs it.
#[utoipa::path(
    delete,
    path = "/v1/artifacts/{sha256}",
    tag = "artifacts",
    summary = "Remove the record (nodes collect their copies)",
    params(("sha256" = String, Path, description = "64 hex digits, optionally `sha256:HEX` or `shoal:sha256:HEX`")),
    responses(
        (status = 200, description = "removed", body = ArtifactView),
        (status = 400, description = "`bad_digest`", body = crate::api::types::ErrorBody),
        (status = 404, description = "no such artifact", body = crate::api::types::ErrorBody)
    )
)]
pub async fn delete(
    State(s): State<ApiState>,
    Path(sha256): Path<String>,
) -> ApiResult<ArtifactView> {
    let d = digest_of(&sha256)?;
    match s
        .state
        .artifact(ArtifactRequest::Write(d.hex(), ArtifactOp::Remove))
        .await
    {
        Ok(ArtifactReply::One(Some(r))) => Ok(Json(view(&s, *r))),
        Ok(_) | Err(SubmitError::Rejected(WriteError::NotFound(_))) => Err(no_artifact(&d)),
        Err(e) => Err(e.into()),
    }
}

/// `POST /v1/artifacts/{sha256}/pull?from=URL`: this node fetches a copy
/// from the node at `from` (an agent's API) or the nodes holding it, in
/// the background (`202`).
#[utoipa::path(
    post,
    path = "/v1/artifacts/{sha256}/pull",
    tag = "artifacts",
    summary = "This node fetches a copy in the background",
    params(("sha256" = String, Path, description = "64 hex digits, optionally `sha256:HEX` or `shoal:sha256:HEX`"), PullQuery),
    responses(
        (status = 202, description = "fetching"),
        (status = 400, description = "`bad_digest`", body = crate::api::types::ErrorBody)
    )
)]
pub async fn pull(
    State(s): State<ApiState>,
    Path(sha256): Path<String>,
    Query(q): Query<PullQuery>,
) -> Result<Response, ApiError> {
    let d = digest_of(&sha256)?;
    let first: Vec<String> = q
        .from
        .into_iter()
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .collect();
    let artifacts = s.artifacts.clone();
    tokio::spawn(async move {
        let what = format!("artifact sha256:{}", d.hex());
        if let Err(e) = artifacts.fetch(d, Source::Peers(first), &what).await {
            tracing::warn!(error = %e, "cannot keep a copy of an artifact");
        }
    });
    Ok(StatusCode::ACCEPTED.into_response())
}
