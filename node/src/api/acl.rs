//! `/v1/acl/…`: bootstrap, policies and tokens; and what each route needs.
//!
//! [`need`] maps a request (its method and route) to the permission it
//! takes; the auth middleware checks it before the handler runs. Routes
//! whose name is in the body (`POST /v1/jobs`) need some of the resource
//! there and check the name in the handler; lists that a prefix can limit
//! (`GET /v1/jobs`) are filtered by the handler.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use shoal_model::acl::{Access, Policy, Resource};
use shoal_state::{AclToken, BOOTSTRAP_NAME, NewToken};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, ApiState};
use crate::acl::{Caller, CallerKind, make_token};
use crate::state::{AclReply, AclRequest};

/// What a route takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Need {
    /// Any authenticated caller.
    Caller,
    /// `access` on `resource` named (for jobs and secrets) `name`.
    One(Resource, String, Access),
    /// `access` on some of `resource` (the handler checks or filters).
    Some(Resource, Access),
}

/// What a request on `route` (the router's pattern, `/v1/jobs/{name}`)
/// with path parameters `params` needs.
pub fn need(method: &Method, route: &str, params: &HashMap<String, String>) -> Need {
    let access = if method == Method::GET || method == Method::HEAD {
        Access::Read
    } else {
        Access::Write
    };
    let named =
        |r: Resource, key: &str| Need::One(r, params.get(key).cloned().unwrap_or_default(), access);
    match route {
        "/v1/acl/token/self" | "/v1/acl/bootstrap" => Need::Caller,
        r if r.starts_with("/v1/acl/") => Need::One(Resource::Acl, String::new(), access),
        "/v1/jobs" | "/v1/deployments" | "/v1/events" => Need::Some(Resource::Jobs, access),
        "/v1/secrets" => Need::Some(Resource::Secrets, access),
        "/v1/secrets/{name}" => named(Resource::Secrets, "name"),
        "/v1/tasks/{task}/logs" => match params
            .get("task")
            .and_then(|t| shoal_placement::TaskKey::parse(t))
        {
            Some(key) => Need::One(Resource::Jobs, key.job, access),
            None => Need::Some(Resource::Jobs, access),
        },
        r if r.starts_with("/v1/jobs/") => named(Resource::Jobs, "name"),
        "/v1/services/{job}" => named(Resource::Jobs, "job"),
        r if r.starts_with("/v1/packages")
            || r.starts_with("/v1/repositories")
            || r.starts_with("/v1/installations")
            || r.starts_with("/v1/artifacts") =>
        {
            Need::One(Resource::Packages, String::new(), access)
        }
        r if r.starts_with("/v1/triggers") || r == "/v1/runs" => {
            Need::One(Resource::Triggers, String::new(), access)
        }
        // Cutting links between nodes is a cluster operator's act, and
        // forgetting a machine a decision about whom the cluster trusts.
        "/v1/debug/faults" | "/v1/nodes/{key}/forget" => {
            Need::One(Resource::Acl, String::new(), Access::Write)
        }
        // The gossip keyring: who can read the cluster's traffic.
        r if r.starts_with("/v1/keyring") => Need::One(Resource::Acl, String::new(), access),
        // Members, status, summary, metrics, a node's tasks, drain.
        _ => Need::One(Resource::Nodes, String::new(), access),
    }
}

/// Whether the cluster secret still opens `route` once the ACLs are
/// bootstrapped: the calls agents make on each other.
pub fn node_route(method: &Method, route: &str) -> bool {
    matches!(
        (method.as_str(), route),
        ("GET", "/v1/artifacts/{sha256}") | ("POST", "/v1/artifacts/{sha256}/pull")
    )
}

/// A policy as the API shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// Its name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// What it grants.
    pub rules: Vec<shoal_model::acl::Rule>,
    /// Built in (cannot be changed or deleted).
    pub builtin: bool,
}

impl PolicyView {
    fn of(p: Policy, builtin: bool) -> PolicyView {
        PolicyView {
            name: p.name,
            description: p.description,
            rules: p.rules,
            builtin,
        }
    }
}

/// `POST /v1/acl/tokens` body.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TokenBody {
    /// A name for people (default: `token-` and the accessor); it is
    /// recorded in the history of the jobs it changes.
    #[serde(default)]
    pub name: Option<String>,
    /// Policies, built in (`management`, `readonly`) or stored.
    pub policies: Vec<String>,
    /// It stops working after this long (`24h`, `30m`); default: never.
    #[serde(default)]
    pub ttl: Option<String>,
}

/// A token just made: the only time its secret is shown.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MadeTokenView {
    /// The token: pass it as `Authorization: Bearer …` (`--token`,
    /// `SHOAL_TOKEN`). Shown once.
    pub token: String,
    /// The token's record.
    #[serde(flatten)]
    pub record: AclToken,
}

/// `GET /v1/acl/token/self`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SelfView {
    /// The token's name (`dev`, `cluster-secret` or an ACL token's).
    pub name: String,
    /// How it authenticated: `dev`, `cluster-secret` or `token`.
    pub kind: String,
    /// The ACL token's accessor.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accessor: Option<String>,
    /// Its policies.
    pub policies: Vec<String>,
    /// What they grant.
    pub rules: Vec<shoal_model::acl::Rule>,
    /// Whether the cluster's ACLs are bootstrapped (as this node knows).
    pub bootstrapped: bool,
}

fn store_token(
    name: Option<String>,
    policies: Vec<String>,
    expires_ms: Option<u64>,
    created_by: &str,
    bootstrap: bool,
) -> Result<(crate::acl::MadeToken, NewToken), ApiError> {
    let made = make_token().map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("no randomness for a token: {e}"),
        )
    })?;
    let new = NewToken {
        accessor: made.accessor.clone(),
        name: name.unwrap_or_else(|| format!("token-{}", made.accessor)),
        policies,
        secret_sha256: made.sha256.clone(),
        created_by: created_by.to_owned(),
        expires_ms,
        bootstrap,
    };
    Ok((made, new))
}

async fn create(
    s: &ApiState,
    made: crate::acl::MadeToken,
    new: NewToken,
) -> Result<MadeTokenView, ApiError> {
    match s.state.acl_write(AclRequest::CreateToken(new)).await? {
        AclReply::Token(record) => Ok(MadeTokenView {
            token: made.token,
            record: *record,
        }),
        _ => unreachable!("a token write answers a token"),
    }
}

/// `POST /v1/acl/bootstrap`: the first management token, once per
/// cluster, with the cluster secret.
#[utoipa::path(
    post,
    path = "/v1/acl/bootstrap",
    tag = "acl",
    summary = "Make the first management token (with the cluster secret, once)",
    responses(
        (status = 201, description = "the token (shown once); from now on the cluster secret no longer authorizes API calls", body = MadeTokenView),
        (status = 403, description = "not the cluster secret", body = crate::api::types::ErrorBody),
        (status = 409, description = "bootstrapped already", body = crate::api::types::ErrorBody)
    )
)]
pub async fn bootstrap(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> Result<(StatusCode, Json<MadeTokenView>), ApiError> {
    if caller.kind == CallerKind::Token {
        return Err(ApiError::forbidden(
            "acl bootstrap takes the cluster secret (the `token` file of a data dir), not an ACL token",
        ));
    }
    if s.state.acl().bootstrapped {
        return Err(already());
    }
    let (made, new) = store_token(
        Some(BOOTSTRAP_NAME.into()),
        vec![shoal_model::acl::MANAGEMENT.into()],
        None,
        "cluster-secret",
        true,
    )?;
    let view = create(&s, made, new).await.map_err(|e| {
        if e.message.contains("bootstrapped already") {
            already()
        } else {
            e
        }
    })?;
    Ok((StatusCode::CREATED, Json(view)))
}

fn already() -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "bootstrapped",
        "the ACLs are bootstrapped already: make more tokens with a management token (`shoal token create --policy management`)",
    )
}

/// `GET /v1/acl/policies`.
#[utoipa::path(
    get,
    path = "/v1/acl/policies",
    tag = "acl",
    summary = "Policies, built in and stored",
    responses((status = 200, description = "every policy", body = Vec<PolicyView>))
)]
pub async fn policies(State(s): State<ApiState>) -> ApiResult<Vec<PolicyView>> {
    Ok(Json(
        s.state
            .acl()
            .policies()
            .into_iter()
            .map(|(p, b)| PolicyView::of(p, b))
            .collect(),
    ))
}

/// `POST /v1/acl/policies`: creates or replaces one.
#[utoipa::path(
    post,
    path = "/v1/acl/policies",
    tag = "acl",
    summary = "Create or replace a policy",
    request_body(content = Policy, content_type = "application/json"),
    responses(
        (status = 200, description = "written", body = PolicyView),
        (status = 422, description = "a bad name or rule", body = crate::api::types::ErrorBody)
    )
)]
pub async fn put_policy(State(s): State<ApiState>, Json(p): Json<Policy>) -> ApiResult<PolicyView> {
    match s.state.acl_write(AclRequest::PutPolicy(p)).await? {
        AclReply::Policy(p) => Ok(Json(PolicyView::of(p, false))),
        _ => unreachable!("a policy write answers a policy"),
    }
}

/// `GET /v1/acl/policies/{name}`.
#[utoipa::path(
    get,
    path = "/v1/acl/policies/{name}",
    tag = "acl",
    summary = "One policy",
    params(("name" = String, Path, description = "the policy")),
    responses(
        (status = 200, description = "the policy", body = PolicyView),
        (status = 404, description = "no such policy", body = crate::api::types::ErrorBody)
    )
)]
pub async fn policy(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<PolicyView> {
    let builtin = Policy::builtin(&name).is_some();
    s.state
        .acl()
        .policy(&name)
        .map(|p| Json(PolicyView::of(p, builtin)))
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "no policy named {name:?} (see `shoal acl policy list`)"
            ))
        })
}

/// `DELETE /v1/acl/policies/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/acl/policies/{name}",
    tag = "acl",
    summary = "Delete a policy (tokens that carry it lose its rules)",
    params(("name" = String, Path, description = "the policy")),
    responses(
        (status = 200, description = "deleted", body = PolicyView),
        (status = 404, description = "no such policy", body = crate::api::types::ErrorBody),
        (status = 422, description = "a built-in policy", body = crate::api::types::ErrorBody)
    )
)]
pub async fn delete_policy(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> ApiResult<PolicyView> {
    if Policy::builtin(&name).is_some() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            format!("{name:?} is built in and cannot be deleted"),
        )
        .with_field("name"));
    }
    match s
        .state
        .acl_write(AclRequest::DeletePolicy(name.clone()))
        .await
    {
        Ok(AclReply::Policy(p)) => Ok(Json(PolicyView::of(p, false))),
        Ok(_) => unreachable!("a policy write answers a policy"),
        Err(crate::state::SubmitError::Rejected(shoal_state::WriteError::NotFound(_))) => {
            Err(ApiError::not_found(format!(
                "no policy named {name:?} (see `shoal acl policy list`)"
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/acl/tokens`.
#[utoipa::path(
    get,
    path = "/v1/acl/tokens",
    tag = "acl",
    summary = "Tokens, revoked ones included (never their secrets)",
    responses((status = 200, description = "every token", body = Vec<AclToken>))
)]
pub async fn tokens(State(s): State<ApiState>) -> ApiResult<Vec<AclToken>> {
    Ok(Json(s.state.acl().tokens()))
}

/// `POST /v1/acl/tokens`.
#[utoipa::path(
    post,
    path = "/v1/acl/tokens",
    tag = "acl",
    summary = "Make a token (its secret is in this answer only)",
    request_body(content = TokenBody, content_type = "application/json"),
    responses(
        (status = 201, description = "made", body = MadeTokenView),
        (status = 422, description = "an unknown policy or a bad ttl", body = crate::api::types::ErrorBody)
    )
)]
pub async fn create_token(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(body): Json<TokenBody>,
) -> Result<(StatusCode, Json<MadeTokenView>), ApiError> {
    let expires_ms = match &body.ttl {
        None => None,
        Some(ttl) => {
            let d = shoal_model::parse_duration(ttl)
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid",
                        format!("ttl: {ttl:?} is not a duration (24h, 30m, 7d)"),
                    )
                    .with_field("ttl")
                })?;
            Some(crate::clock::unix_ms() + u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2))
        }
    };
    let (made, new) = store_token(body.name, body.policies, expires_ms, &caller.name, false)?;
    let view = create(&s, made, new).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /v1/acl/tokens/{accessor}`.
#[utoipa::path(
    get,
    path = "/v1/acl/tokens/{accessor}",
    tag = "acl",
    summary = "One token",
    params(("accessor" = String, Path, description = "its accessor (16 hex digits)")),
    responses(
        (status = 200, description = "the token", body = AclToken),
        (status = 404, description = "no such token", body = crate::api::types::ErrorBody)
    )
)]
pub async fn token(State(s): State<ApiState>, Path(accessor): Path<String>) -> ApiResult<AclToken> {
    s.state
        .acl()
        .token(&accessor)
        .cloned()
        .map(Json)
        .ok_or_else(|| no_token(&accessor))
}

fn no_token(accessor: &str) -> ApiError {
    ApiError::not_found(format!(
        "no token with accessor {accessor:?} (see `shoal token list`)"
    ))
}

/// `DELETE /v1/acl/tokens/{accessor}`: revokes it on every node.
#[utoipa::path(
    delete,
    path = "/v1/acl/tokens/{accessor}",
    tag = "acl",
    summary = "Revoke a token (for good, on every node within seconds)",
    params(("accessor" = String, Path, description = "its accessor (16 hex digits)")),
    responses(
        (status = 200, description = "revoked", body = AclToken),
        (status = 404, description = "no such token", body = crate::api::types::ErrorBody)
    )
)]
pub async fn revoke(
    State(s): State<ApiState>,
    Path(accessor): Path<String>,
) -> ApiResult<AclToken> {
    match s
        .state
        .acl_write(AclRequest::Revoke(accessor.clone()))
        .await
    {
        Ok(AclReply::Token(t)) => Ok(Json(*t)),
        Ok(_) => unreachable!("a token write answers a token"),
        Err(crate::state::SubmitError::Rejected(shoal_state::WriteError::NotFound(_))) => {
            Err(no_token(&accessor))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /v1/acl/token/self`: who the caller is.
#[utoipa::path(
    get,
    path = "/v1/acl/token/self",
    tag = "acl",
    summary = "The caller's token: name, policies and what they grant",
    responses((status = 200, description = "the caller", body = SelfView))
)]
pub async fn whoami(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
) -> ApiResult<SelfView> {
    Ok(Json(SelfView {
        name: caller.name.clone(),
        kind: match caller.kind {
            CallerKind::Dev => "dev",
            CallerKind::ClusterSecret => "cluster-secret",
            CallerKind::Token => "token",
        }
        .into(),
        accessor: caller.accessor.clone(),
        policies: caller.policies.clone(),
        rules: caller.grants.rules().to_vec(),
        bootstrapped: s.state.acl().bootstrapped,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn routes_need_what_they_touch() {
        let none = params(&[]);
        assert_eq!(
            need(&Method::GET, "/v1/jobs", &none),
            Need::Some(Resource::Jobs, Access::Read)
        );
        assert_eq!(
            need(
                &Method::POST,
                "/v1/jobs/{name}/scale",
                &params(&[("name", "web/a")])
            ),
            Need::One(Resource::Jobs, "web/a".into(), Access::Write)
        );
        assert_eq!(
            need(
                &Method::GET,
                "/v1/tasks/{task}/logs",
                &params(&[("task", "web/a/3")])
            ),
            Need::One(Resource::Jobs, "web/a".into(), Access::Read)
        );
        assert_eq!(
            need(
                &Method::POST,
                "/v1/nodes/{key}/drain",
                &params(&[("key", "n1")])
            ),
            Need::One(Resource::Nodes, String::new(), Access::Write)
        );
        assert_eq!(
            need(
                &Method::POST,
                "/v1/nodes/{key}/forget",
                &params(&[("key", "n1")])
            ),
            Need::One(Resource::Acl, String::new(), Access::Write)
        );
        assert_eq!(
            need(&Method::GET, "/v1/keyring", &none),
            Need::One(Resource::Acl, String::new(), Access::Read)
        );
        assert_eq!(
            need(
                &Method::POST,
                "/v1/keyring/{id}/use",
                &params(&[("id", "0b5e77a4")])
            ),
            Need::One(Resource::Acl, String::new(), Access::Write)
        );
        assert_eq!(
            need(&Method::DELETE, "/v1/acl/tokens/{accessor}", &none),
            Need::One(Resource::Acl, String::new(), Access::Write)
        );
        assert_eq!(
            need(&Method::POST, "/v1/installations", &none),
            Need::One(Resource::Packages, String::new(), Access::Write)
        );
        assert_eq!(
            need(&Method::GET, "/v1/runs", &none),
            Need::One(Resource::Triggers, String::new(), Access::Read)
        );
        assert_eq!(
            need(&Method::GET, "/v1/acl/token/self", &none),
            Need::Caller
        );
        assert!(node_route(&Method::GET, "/v1/artifacts/{sha256}"));
        assert!(!node_route(&Method::GET, "/v1/jobs"));
    }

    #[test]
    fn the_event_stream_shows_a_token_what_it_may_read() {
        use serde_json::json;
        use shoal_model::acl::{Grants, Rule};
        let caller = Caller {
            name: "web".into(),
            accessor: None,
            policies: vec!["web".into()],
            grants: Grants::of([Rule::parse("jobs:web/=read").unwrap()]),
            kind: CallerKind::Token,
        };
        let see = |kind: &str, v: serde_json::Value| super::super::jobs::may_see(&caller, kind, &v);
        assert!(see("job", json!({"event": "updated", "name": "web/a"})));
        assert!(!see("job", json!({"event": "updated", "name": "db/a"})));
        assert!(see("task", json!({"event": "health", "job": "web/a"})));
        assert!(!see("task", json!({"event": "health", "job": "db/a"})));
        assert!(!see("job", json!({"event": "secret", "name": "web/x"})));
        assert!(!see(
            "job",
            json!({"event": "acl", "name": "0123456789abcdef"})
        ));
        assert!(!see("member", json!({"event": "alive"})));
        assert!(super::super::jobs::may_see(
            &Caller::dev(),
            "member",
            &json!({"event": "alive"})
        ));
    }
}
