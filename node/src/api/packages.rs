//! `/v1/packages…`: the built-in package library through the API (what
//! the web UI and any client browse and render without the CLI).

use axum::Json;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};
use shoal_package::{Package, library};

use super::{ApiError, ApiResult};

/// `?q=TERM`: only packages whose name, tags or description contain it.
#[derive(Debug, Default, Deserialize)]
pub struct SearchQuery {
    q: Option<String>,
}

fn summary(p: &Package) -> Value {
    let m = p.manifest();
    json!({
        "name": m.name,
        "version": m.version.to_string(),
        "app_version": m.app_version,
        "description": m.description,
        "tags": m.tags,
        "verified": m.verified,
    })
}

fn load(name: &str) -> Result<Package, ApiError> {
    match library::get(name) {
        Some(Ok(p)) => Ok(p),
        Some(Err(e)) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("built-in package {name}: {e}"),
        )),
        None => Err(ApiError::not_found(format!(
            "no built-in package named {name:?} (built-in: {})",
            library::names().join(", ")
        ))),
    }
}

/// `GET /v1/packages[?q=TERM]`: the built-in packages.
pub async fn list(Query(q): Query<SearchQuery>) -> ApiResult<Vec<Value>> {
    let term = q.q.unwrap_or_default().to_lowercase();
    let out = library::all()
        .into_iter()
        .filter_map(|(_, p)| p.ok())
        .filter(|p| {
            let m = p.manifest();
            term.is_empty()
                || m.name.contains(&term)
                || m.description.to_lowercase().contains(&term)
                || m.tags.iter().any(|t| t.to_lowercase().contains(&term))
        })
        .map(|p| summary(&p))
        .collect();
    Ok(Json(out))
}

/// `GET /v1/packages/{name}`: what it is, its options schema and their
/// defaults.
pub async fn get(Path(name): Path<String>) -> ApiResult<Value> {
    let p = load(&name)?;
    let mut v = summary(&p);
    v["maintainer"] = json!(p.manifest().maintainer);
    v["license"] = json!(p.manifest().license);
    v["options_schema"] = p.options_schema().raw().clone();
    v["defaults"] = p.options_schema().defaults().clone();
    Ok(Json(v))
}

/// `POST /v1/packages/{name}/render` with `{"instance"?: …, "options"?:
/// {…}}`: the jobs an install would submit (nothing is written); a bad
/// option is a 422 naming it.
pub async fn render(Path(name): Path<String>, Json(body): Json<Value>) -> ApiResult<Value> {
    let p = load(&name)?;
    let instance = body["instance"]
        .as_str()
        .unwrap_or(&p.manifest().name)
        .to_owned();
    let options = match &body["options"] {
        Value::Null => json!({}),
        v => v.clone(),
    };
    let jobs = p.render(&instance, &options).map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
            .with_field("options")
    })?;
    Ok(Json(json!({
        "package": p.id(),
        "instance": instance,
        "options": options,
        "jobs": jobs.iter().map(|j| j.spec.to_json()).collect::<Vec<_>>(),
    })))
}
