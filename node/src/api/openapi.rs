//! The API's OpenAPI document (`GET /v1/openapi.json`), generated from the
//! handlers' `#[utoipa::path]` annotations and the types they take and
//! give, so that it cannot drift from the code without a test noticing
//! (see the tests at the end: every route of [`super::router`] is in the
//! document and every path of the document is routed).
//!
//! The document is served without a token: it describes the API, it holds
//! no data. Every other operation but `GET /v1/health` names the
//! `bearer` security scheme (an ACL token, or the cluster token before
//! the ACL bootstrap; none in `--dev`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{RefOr, ResponseBuilder, SecurityRequirement};
use utoipa::{Modify, OpenApi, ToSchema};

/// `POST /v1/jobs/{name}/scale` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ScaleBody {
    /// Tasks wanted, 0 to 100,000.
    pub count: u32,
    /// Only if the job is at this version (also a query parameter).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_version: Option<u64>,
}

/// `POST /v1/jobs/{name}/revert` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RevertBody {
    /// The version whose spec (and count) to write again, 1 or more.
    #[schema(minimum = 1)]
    pub version: u64,
}

/// `POST /v1/installations/{instance}/rollback` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RollbackBody {
    /// The revision to go back to.
    #[schema(minimum = 1)]
    pub revision: u32,
}

/// `POST /v1/debug/faults` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FaultsBody {
    /// The nodes (id, unique id prefix or name) to cut off; empty heals.
    pub block: Vec<String>,
}

/// `POST /v1/debug/faults` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct FaultsReply {
    /// The nodes blocked now, by id.
    pub blocked: Vec<String>,
}

/// `POST /v1/nodes/{node}/drain` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DrainReply {
    /// The node, by id.
    pub node: String,
    /// Whether it is draining now.
    pub draining: bool,
}

/// One package of `GET /v1/packages`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PackageSummary {
    /// Name.
    pub name: String,
    /// Package version (semver).
    pub version: String,
    /// Version of what it runs.
    pub app_version: Option<String>,
    /// One line.
    pub description: Option<String>,
    /// Search tags.
    pub tags: Vec<String>,
    /// Reviewed by its repository's maintainers.
    pub verified: bool,
    /// The repository it was found in.
    pub repository: String,
}

/// `GET /v1/packages/{name}`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PackageDetail {
    /// What the list shows.
    #[serde(flatten)]
    pub summary: PackageSummary,
    /// Maintainer.
    pub maintainer: Option<String>,
    /// License.
    pub license: Option<String>,
    /// The package's digest.
    pub digest: String,
    /// The JSON Schema of its options.
    pub options_schema: Value,
    /// The options' defaults.
    pub defaults: Value,
}

/// `POST /v1/packages/{name}/render` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RenderBody {
    /// Instance name (default: the package's name).
    pub instance: Option<String>,
    /// The user's options.
    pub options: Option<Value>,
    /// Package version (default: the highest).
    pub version: Option<String>,
    /// Repository (default: the first that has it).
    pub repository: Option<String>,
}

/// `POST /v1/packages/{name}/render` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Rendered {
    /// `name@version`.
    pub package: String,
    /// The repository it came from.
    pub repository: String,
    /// Instance name.
    pub instance: String,
    /// The options used.
    pub options: Value,
    /// The job specs an install would submit.
    pub jobs: Vec<shoal_model::JobSpec>,
}

/// Adds the bearer scheme, names it on every operation but the open ones,
/// and gives every operation the error body as its default answer.
struct Conventions;

/// Operations that need no token.
const OPEN: [&str; 2] = ["/v1/health", "/v1/openapi.json"];

impl Modify for Conventions {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An ACL token (`shoal token create`; 401 when unknown, revoked or expired, 403 naming the permission it lacks); before `shoal acl bootstrap`, the cluster token. Not needed with `--dev`.",
                    ))
                    .build(),
            ),
        );
        let error = ResponseBuilder::new()
            .description("An error: the code says which (see docs/api.md)")
            .content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(
                        "ErrorBody",
                    ))))
                    .build(),
            )
            .build();
        let bearer = SecurityRequirement::new("bearer", Vec::<String>::new());
        for (path, item) in doc.paths.paths.iter_mut() {
            let open = OPEN.contains(&path.as_str());
            for op in operations(item) {
                op.responses
                    .responses
                    .entry("default".to_owned())
                    .or_insert_with(|| RefOr::T(error.clone()));
                if !open {
                    op.security = Some(vec![bearer.clone()]);
                } else if op.security.is_none() {
                    op.security = Some(Vec::new());
                }
            }
        }
    }
}

fn operations(
    item: &mut utoipa::openapi::PathItem,
) -> impl Iterator<Item = &mut utoipa::openapi::path::Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.patch.as_mut(),
        item.head.as_mut(),
        item.options.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "shoal",
        description = "The HTTP API every shoal node serves (see docs/api.md). Errors are `ErrorBody` with the matching status.",
    ),
    servers((url = "/", description = "the node that serves this document")),
    paths(
        super::health,
        super::get_self,
        super::summary::list_nodes,
        super::summary::summary,
        super::get_node,
        super::get_status,
        super::get_metrics,
        super::set_faults,
        openapi_json,
        super::jobs::submit,
        super::summary::list_jobs,
        super::jobs::get,
        super::jobs::delete,
        super::jobs::versions,
        super::jobs::scale,
        super::jobs::events,
        super::deployments::revert,
        super::deployments::of_job,
        super::deployments::act,
        super::deployments::list,
        super::packages::list,
        super::packages::get,
        super::packages::versions,
        super::packages::archive,
        super::packages::render,
        super::packages::repos_list,
        super::packages::repos_add,
        super::packages::repos_remove,
        super::installations::list,
        super::installations::install,
        super::installations::get,
        super::installations::uninstall,
        super::installations::rollback,
        super::installations::upgrade,
        super::artifacts::list,
        super::artifacts::put,
        super::artifacts::get,
        super::artifacts::delete,
        super::artifacts::pull,
        super::tasks::list,
        super::tasks::logs,
        super::tasks::drain,
        super::tasks::forget,
        super::tasks::of_node,
        super::services::get,
        super::triggers::create,
        super::triggers::list,
        super::triggers::get,
        super::triggers::delete,
        super::triggers::pause,
        super::triggers::resume,
        super::triggers::run,
        super::triggers::explain,
        super::triggers::runs,
        super::acl::bootstrap,
        super::acl::policies,
        super::acl::put_policy,
        super::acl::policy,
        super::acl::delete_policy,
        super::acl::tokens,
        super::acl::create_token,
        super::acl::token,
        super::acl::revoke,
        super::acl::whoami,
        super::secrets::put,
        super::keyring::list,
        super::keyring::install,
        super::keyring::use_key,
        super::keyring::remove,
        super::secrets::list,
        super::secrets::remove,
    ),
    components(schemas(super::types::ErrorBody)),
    modifiers(&Conventions),
)]
struct ApiDoc;

/// The document, with `info.version` the agent's version.
pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    doc.info.version = env!("CARGO_PKG_VERSION").to_owned();
    doc
}

static JSON: LazyLock<String> =
    LazyLock::new(|| document().to_json().expect("the OpenAPI document encodes"));

/// `GET /v1/openapi.json`: this document (no token needed).
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "nodes",
    summary = "This API's OpenAPI document (no token needed)",
    responses(
        (status = 200, description = "the document", body = Object, content_type = "application/json")
    )
)]
pub async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], JSON.as_str()).into_response()
}

/// Every (path, method) pair the document has, methods upper-case.
pub fn operations_of(doc: &utoipa::openapi::OpenApi) -> BTreeMap<String, Vec<String>> {
    let json = serde_json::to_value(doc).expect("encodes");
    let mut out = BTreeMap::new();
    if let Some(paths) = json["paths"].as_object() {
        for (path, item) in paths {
            let methods = item
                .as_object()
                .map(|m| {
                    m.keys()
                        .filter(|k| {
                            [
                                "get", "put", "post", "delete", "patch", "head", "options", "trace",
                            ]
                            .contains(&k.as_str())
                        })
                        .map(|k| k.to_ascii_uppercase())
                        .collect()
                })
                .unwrap_or_default();
            out.insert(path.clone(), methods);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::{document, operations_of};
    use crate::agent::{Agent, AgentOptions};

    /// Every `.route(path, methods)` of `router()`, read from its source
    /// (axum cannot list a router's routes), methods upper-case.
    fn routed() -> BTreeMap<String, Vec<String>> {
        let src = include_str!("mod.rs");
        let start = src.find("pub fn router(").expect("router() is in mod.rs");
        let body = &src[start..];
        let body = &body[..body.find("\n}\n").expect("router() ends")];
        let mut out = BTreeMap::new();
        for chunk in body.split(".route(").skip(1) {
            let mut depth = 1;
            let end = chunk
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .expect("a route call closes");
            let call = &chunk[..end];
            let path = call.split('"').nth(1).expect("a route has a path");
            let mut methods: Vec<String> = ["get", "put", "post", "delete", "patch"]
                .iter()
                .filter(|m| {
                    call.match_indices(&format!("{m}(")).any(|(i, _)| {
                        i == 0 || matches!(call.as_bytes()[i - 1], b' ' | b'.' | b',' | b'\n')
                    })
                })
                .map(|m| m.to_ascii_uppercase())
                .collect();
            methods.sort();
            assert!(!methods.is_empty(), "no method found for route {path}");
            out.insert(path.to_owned(), methods);
        }
        out
    }

    #[test]
    fn every_route_is_documented_and_every_documented_path_is_routed() {
        let routes = routed();
        assert!(routes.len() > 30, "routes read from router(): {routes:?}");
        let mut documented = operations_of(&document());
        for methods in documented.values_mut() {
            methods.sort();
        }
        for (path, methods) in &routes {
            assert_eq!(
                documented.get(path),
                Some(methods),
                "route {path} {methods:?} is not in the OpenAPI document as it is routed: add #[utoipa::path] to its handler and list it in ApiDoc"
            );
        }
        for path in documented.keys() {
            assert!(
                routes.contains_key(path),
                "{path} is in the OpenAPI document but router() does not route it"
            );
        }
    }

    #[test]
    fn the_document_names_version_security_and_error_body() {
        let json = serde_json::to_value(document()).expect("encodes");
        assert_eq!(json["info"]["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(json["servers"][0]["url"], "/");
        assert_eq!(
            json["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert!(json["components"]["schemas"]["ErrorBody"].is_object());
        assert!(json["components"]["schemas"]["JobSpec"].is_object());
        assert_eq!(
            json["paths"]["/v1/health"]["get"]["security"],
            serde_json::json!([])
        );
        assert_eq!(
            json["paths"]["/v1/jobs"]["get"]["security"],
            serde_json::json!([{"bearer": []}])
        );
        for (path, item) in json["paths"].as_object().expect("paths") {
            for (method, op) in item.as_object().expect("a path item") {
                assert!(
                    op["responses"]["default"].is_object(),
                    "{method} {path} has no default (error) response"
                );
            }
        }
        // Every reference resolves.
        let text = json.to_string();
        for piece in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
            let name = &piece[..piece.find('"').expect("a ref ends")];
            assert!(
                json["components"]["schemas"][name].is_object(),
                "#/components/schemas/{name} is referenced but not defined"
            );
        }
    }

    /// Asks a real agent for every documented operation, with `x` for each
    /// path parameter: none may meet the router's "no such endpoint" (404)
    /// or "method not allowed" (405) fallbacks.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_documented_operation_reaches_a_handler() {
        let dir = tempfile::Builder::new()
            .prefix("shoal-test-openapi-")
            .tempdir()
            .expect("temp dir");
        let local = |port| std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let agent = Agent::start(AgentOptions {
            data_dir: Some(dir.path().join("data")),
            bind: Some(local(0)),
            api: Some(local(0)),
            dns: Some("off".to_owned()),
            gossip: Some("test".to_owned()),
            cpus: Some(1.0),
            memory_mb: Some(512),
            no_docker: true,
            ..AgentOptions::default()
        })
        .await
        .expect("the agent starts");
        let base = format!("http://{}", agent.info().api);
        let mut token = agent.info().token.clone();
        let operations = operations_of(&document());
        let checked = tokio::task::spawn_blocking(move || {
            let http: ureq::Agent = ureq::Agent::config_builder()
                .http_status_as_error(false)
                .max_redirects(0)
                .timeout_global(Some(Duration::from_secs(20)))
                .build()
                .into();
            let mut checked = 0;
            for (path, methods) in &operations {
                let concrete: String = path
                    .split('/')
                    .map(|s| if s.starts_with('{') { "x" } else { s })
                    .collect::<Vec<_>>()
                    .join("/");
                for method in methods {
                    let request = ureq::http::Request::builder()
                        .method(method.as_str())
                        .uri(format!("{base}{concrete}"))
                        .header("authorization", format!("Bearer {token}"))
                        .header("content-type", "application/json")
                        .body(Vec::<u8>::new())
                        .expect("a request");
                    let mut response = http
                        .run(request)
                        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
                    let status = response.status().as_u16();
                    let body = if path == "/v1/events" {
                        String::new()
                    } else {
                        response.body_mut().read_to_string().unwrap_or_default()
                    };
                    assert_ne!(status, 405, "{method} {path}: {body}");
                    assert_ne!(status, 401, "{method} {path}: {body}");
                    // From the bootstrap on, the cluster token no longer
                    // authorizes calls: go on with the management token.
                    if path == "/v1/acl/bootstrap" {
                        let made: serde_json::Value =
                            serde_json::from_str(&body).expect("bootstrap answers JSON");
                        token = made["token"].as_str().expect("a token").to_owned();
                    }
                    assert!(
                        !(status == 404 && body.contains("no such endpoint")),
                        "{method} {path} is documented but not routed: {body}"
                    );
                    checked += 1;
                }
            }
            checked
        })
        .await
        .expect("the requests ran");
        assert!(checked > 40, "only {checked} operations checked");
        agent.run_until(async {}).await;
    }
}
