//! `/v1/packages…` and `/v1/repositories…`: the package library through
//! the API (what the web UI, the CLI and any client browse, render and
//! fetch), looked up in the cluster's repositories in order, then the
//! built-in library (see [`crate::repos`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_package::{Package, archive};
use shoal_state::Repository;

use super::{ApiError, ApiResult, ApiState};
use crate::repos::{Found, Offer, RepoError};
use crate::state::RepoRequest;

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::NotFound(m) => ApiError::not_found(m),
            RepoError::Repo { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "repository", e.to_string())
            }
            RepoError::Stopped => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stopping",
                "the agent is stopping".to_owned(),
            ),
        }
    }
}

/// `?q=TERM`: only packages whose name, tags or description contain it.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SearchQuery {
    q: Option<String>,
}

/// `?version=V&repository=R`: which package.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WhichQuery {
    version: Option<String>,
    repository: Option<String>,
}

fn summary(p: &Package, repository: &str) -> Value {
    let m = p.manifest();
    json!({
        "name": m.name,
        "version": m.version.to_string(),
        "app_version": m.app_version,
        "description": m.description,
        "tags": m.tags,
        "verified": m.verified,
        "repository": repository,
    })
}

/// A package that did not render for the user's options: a 422 whose
/// `field` is the first option at fault (`options/replicas`, what the web
/// UI puts the message next to), with every problem in `problems`.
pub(super) fn render_error(e: shoal_package::RenderError) -> ApiError {
    let mut err = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string());
    match &e {
        shoal_package::RenderError::Options(o) => {
            let first = o.problems.first().map(|p| p.path.as_str()).unwrap_or("");
            err = err.with_field(format!("options{first}"));
            err = err.with_extra(
                "problems",
                json!(
                    o.problems
                        .iter()
                        .map(|p| json!({
                            "path": p.path,
                            "fault": match p.fault {
                                shoal_package::Fault::Package => "package",
                                shoal_package::Fault::User => "user",
                            },
                            "message": p.message,
                        }))
                        .collect::<Vec<_>>()
                ),
            );
        }
        shoal_package::RenderError::Instance { .. } => err = err.with_field("instance"),
        _ => err = err.with_field("options"),
    }
    err
}

/// The package a request names, from the repositories.
pub(super) async fn find(s: &ApiState, name: &str, q: &WhichQuery) -> Result<Found, ApiError> {
    Ok(s.repos
        .find(name, q.version.as_deref(), q.repository.as_deref())
        .await?)
}

/// `GET /v1/packages[?q=TERM]`: the highest version of each package, in
/// the first repository that has it. A repository that cannot be read is
/// skipped (and logged): the others still answer.
#[utoipa::path(
    get,
    path = "/v1/packages",
    tag = "packages",
    summary = "The highest version of each package",
    params(SearchQuery),
    responses(
        (status = 200, description = "the packages", body = Vec<crate::api::openapi::PackageSummary>)
    )
)]
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Vec<Value>> {
    let term = q.q.unwrap_or_default().to_lowercase();
    let (offers, problems) = s.repos.all().await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for (repo, offer) in &offers {
        if !seen.insert(offer.name.clone()) {
            continue;
        }
        let Ok(found) = s.repos.find(&offer.name, None, Some(repo)).await else {
            continue;
        };
        let m = found.package.manifest();
        let matches = term.is_empty()
            || m.name.contains(&term)
            || m.description.to_lowercase().contains(&term)
            || m.tags.iter().any(|t| t.to_lowercase().contains(&term));
        if matches {
            out.push(summary(&found.package, repo));
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    for p in problems {
        tracing::warn!("package search: {p}");
    }
    Ok(Json(out))
}

/// One version a repository offers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct VersionView {
    /// The repository.
    pub repository: String,
    /// The version.
    pub version: String,
    /// Its digest.
    pub digest: String,
}

/// `GET /v1/packages/{name}/versions`: every version every repository
/// offers, in lookup order.
#[utoipa::path(
    get,
    path = "/v1/packages/{name}/versions",
    tag = "packages",
    summary = "Every version every repository offers",
    params(("name" = String, Path, description = "the package name")),
    responses(
        (status = 200, description = "the versions", body = Vec<VersionView>),
        (status = 404, description = "no such package", body = crate::api::types::ErrorBody)
    )
)]
pub async fn versions(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Vec<VersionView>> {
    let (offers, _) = s.repos.all().await?;
    let out: Vec<VersionView> = offers
        .into_iter()
        .filter(|(_, o): &(String, Offer)| o.name == name)
        .map(|(repository, o)| VersionView {
            repository,
            version: o.version,
            digest: o.digest,
        })
        .collect();
    if out.is_empty() {
        return Err(ApiError::not_found(format!(
            "no package {name:?} in any repository: see `shoal package search`"
        )));
    }
    Ok(Json(out))
}

/// `GET /v1/packages/{name}[?version=V&repository=R]`: what it is, its
/// options schema and their defaults.
#[utoipa::path(
    get,
    path = "/v1/packages/{name}",
    tag = "packages",
    summary = "One package, its options schema and defaults",
    params(("name" = String, Path, description = "the package name"), WhichQuery),
    responses(
        (status = 200, description = "the package", body = crate::api::openapi::PackageDetail),
        (status = 404, description = "no such package", body = crate::api::types::ErrorBody),
        (status = 502, description = "a repository cannot be read", body = crate::api::types::ErrorBody)
    )
)]
pub async fn get(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<WhichQuery>,
) -> ApiResult<Value> {
    let found = find(&s, &name, &q).await?;
    let p = &found.package;
    let mut v = summary(p, &found.repository);
    v["maintainer"] = json!(p.manifest().maintainer);
    v["license"] = json!(p.manifest().license);
    v["requires"] = json!(p.manifest().requires);
    v["upgrades_from"] = json!(p.manifest().upgrades_from.as_ref().map(ToString::to_string));
    v["digest"] = json!(p.digest());
    v["options_schema"] = p.options_schema().raw().clone();
    v["defaults"] = p.options_schema().defaults().clone();
    Ok(Json(v))
}

/// `GET /v1/packages/{name}/archive[?version=V&repository=R]`: the
/// package as a `.tar.gz` (what the CLI renders, lints and diffs).
#[utoipa::path(
    get,
    path = "/v1/packages/{name}/archive",
    tag = "packages",
    summary = "The package as a .tar.gz",
    params(("name" = String, Path, description = "the package name"), WhichQuery),
    responses(
        (status = 200, description = "the archive", body = Vec<u8>, content_type = "application/gzip"),
        (status = 404, description = "no such package", body = crate::api::types::ErrorBody),
        (status = 502, description = "a repository cannot be read", body = crate::api::types::ErrorBody)
    )
)]
pub async fn archive(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Query(q): Query<WhichQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let found = find(&s, &name, &q).await?;
    let bytes = archive::pack_tar_gz(found.package.files());
    Ok((
        [
            (header::CONTENT_TYPE, "application/gzip".to_owned()),
            (
                header::HeaderName::from_static("x-shoal-repository"),
                found.repository,
            ),
        ],
        Bytes::from(bytes),
    ))
}

/// `POST /v1/packages/{name}/render` with `{"instance"?: …, "options"?:
/// {…}, "version"?: …, "repository"?: …}`: the jobs an install would
/// submit (nothing is written); a bad option is a 422 naming it.
#[utoipa::path(
    post,
    path = "/v1/packages/{name}/render",
    tag = "packages",
    summary = "The jobs an install would submit (nothing written)",
    params(("name" = String, Path, description = "the package name")),
    request_body(content = crate::api::openapi::RenderBody, content_type = "application/json"),
    responses(
        (status = 200, description = "the rendered jobs", body = crate::api::openapi::Rendered),
        (status = 404, description = "no such package", body = crate::api::types::ErrorBody),
        (status = 422, description = "a bad option, or a body that is not an object", body = crate::api::types::ErrorBody)
    )
)]
pub async fn render(
    State(s): State<ApiState>,
    Path(name): Path<String>,
    Json(body): Json<super::openapi::RenderBody>,
) -> ApiResult<Value> {
    let q = WhichQuery {
        version: body.version,
        repository: body.repository,
    };
    let found = find(&s, &name, &q).await?;
    let p = &found.package;
    let instance = body.instance.unwrap_or_else(|| p.manifest().name.clone());
    let options = match body.options {
        None | Some(Value::Null) => json!({}),
        Some(v) => v,
    };
    let jobs = p.render(&instance, &options).map_err(render_error)?;
    let notes = p.notes(&instance, &options, false).map_err(render_error)?;
    Ok(Json(json!({
        "notes": notes,
        "package": p.id(),
        "repository": found.repository,
        "instance": instance,
        "options": options,
        "jobs": jobs.iter().map(|j| j.spec.to_json()).collect::<Vec<_>>(),
    })))
}

/// `GET /v1/repositories`: in lookup order, the built-in library last.
#[utoipa::path(
    get,
    path = "/v1/repositories",
    tag = "packages",
    summary = "The repositories in lookup order, `builtin` last",
    responses(
        (status = 200, description = "the repositories", body = Vec<Repository>)
    )
)]
pub async fn repos_list(State(s): State<ApiState>) -> ApiResult<Vec<Repository>> {
    Ok(Json(s.repos.list().await?))
}

/// `POST /v1/repositories` body.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RepoBody {
    /// Its name.
    pub name: String,
    /// `dir:/ABSOLUTE/PATH` (on the node that serves this request) or an
    /// http(s) URL of an `index.json`.
    pub url: String,
    /// First in the lookup order rather than last.
    #[serde(default)]
    pub first: bool,
}

/// `POST /v1/repositories`: adds one. A `dir:` path must be a directory
/// on this node, which serves it to the others.
#[utoipa::path(
    post,
    path = "/v1/repositories",
    tag = "packages",
    summary = "Add a repository",
    request_body(content = RepoBody, content_type = "application/json"),
    responses(
        (status = 201, description = "added", body = Repository),
        (status = 422, description = "a bad name or URL", body = crate::api::types::ErrorBody)
    )
)]
pub async fn repos_add(
    State(s): State<ApiState>,
    Json(body): Json<RepoBody>,
) -> Result<(StatusCode, Json<Repository>), ApiError> {
    if let Some(path) = body.url.strip_prefix("dir:")
        && path.starts_with('/')
        && !std::path::Path::new(path).is_dir()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!(
                "{path} is not a directory on this node: a dir: repository is read on the node that adds it (add it through that node's API)"
            ),
        )
        .with_field("url"));
    }
    let mut added = s
        .state
        .repos(RepoRequest::Add {
            name: body.name,
            url: body.url,
            first: body.first,
        })
        .await?;
    Ok((StatusCode::CREATED, Json(added.remove(0))))
}

/// `DELETE /v1/repositories/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/repositories/{name}",
    tag = "packages",
    summary = "Remove a repository",
    params(("name" = String, Path, description = "the repository")),
    responses(
        (status = 200, description = "removed", body = Repository),
        (status = 404, description = "no such repository", body = crate::api::types::ErrorBody),
        (status = 422, description = "`builtin` cannot be removed", body = crate::api::types::ErrorBody)
    )
)]
pub async fn repos_remove(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<Repository> {
    let mut removed = s.state.repos(RepoRequest::Remove(name)).await?;
    Ok(Json(removed.remove(0)))
}
