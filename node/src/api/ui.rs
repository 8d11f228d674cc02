//! `/ui/…`: the web UI, hand-written HTML, CSS and JavaScript modules from
//! `node/ui/`, compiled into the binary (in debug builds too), so that every
//! agent serves it from wherever it runs, even cut off from the rest.
//!
//! The files are not secret and carry no data: the pages call the API
//! with the user's token like any client, so they are served without one.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use super::ApiError;

/// The UI's files.
#[derive(RustEmbed)]
#[folder = "ui/"]
pub struct Assets;

/// `/`, `/ui`, `/ui/` and `/ui/{path}`.
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(root))
        .route("/ui", get(root))
        .route("/ui/", get(index))
        .route("/ui/{*path}", get(asset))
}

/// `GET /` and `GET /ui`: to the UI.
pub async fn root() -> Redirect {
    Redirect::permanent("/ui/")
}

/// `GET /ui/`: the page every view is drawn in.
pub async fn index(headers: HeaderMap) -> Response {
    serve("index.html", &headers)
}

/// `GET /ui/{path}`: a file of the UI.
pub async fn asset(Path(path): Path<String>, headers: HeaderMap) -> Response {
    serve(&path, &headers)
}

fn serve(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::not_found(format!("the web UI has no file {path:?}; open /ui/"))
            .into_response();
    };
    // Revalidated on every load (a new agent version serves new files),
    // answered 304 when unchanged.
    let etag = format!(
        "\"{}\"",
        file.metadata
            .sha256_hash()
            .iter()
            .take(16)
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    let cache = [
        (header::ETAG, etag.clone()),
        (header::CACHE_CONTROL, "no-cache".to_owned()),
    ];
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return (StatusCode::NOT_MODIFIED, cache).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, file.metadata.mimetype().to_owned()),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                "nosniff".to_owned(),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                // Own files only: no inline script, nothing from elsewhere.
                "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'".to_owned(),
            ),
        ],
        cache,
        file.data,
    )
        .into_response()
}
