//! `/v1/keyring`: the gossip keyring (docs/security.md, "Gossip key
//! rotation"). Listing shows, for each key, how many live members hold it
//! and seal with it (from their gossip records), so an operator knows when
//! the next step is safe; `use` and `remove` refuse the step that would cut
//! members off. Keys are write-only: no route returns one, except the key
//! `install` draws for the caller, once.

use axum::Json;
use axum::extract::{Extension, Path, State};
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use shoal_gossip::{GossipKey, MemberState};
use utoipa::ToSchema;

use super::{ApiError, ApiResult, ApiState};
use crate::acl::Caller;
use crate::keyring::{self, hex_id, sealing_name};
use crate::state::{AclReply, AclRequest};

/// One key of the keyring.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyView {
    /// Its id (8 hex digits), as datagrams carry it.
    pub id: String,
    /// The key derived from the cluster secret (every cluster's first).
    pub cluster_key: bool,
    /// The key chosen to seal with (`keyring use`).
    pub primary: bool,
    /// Live members that open datagrams with it.
    pub held_by: usize,
    /// Live members that seal datagrams with it.
    pub sealing: usize,
    /// When it was installed (none for the cluster key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed_at: Option<String>,
    /// The token that installed it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// `GET /v1/keyring`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyringView {
    /// Live members (the count `held_by` and `sealing` are out of).
    pub members: usize,
    /// The keys, not removed ones.
    pub keys: Vec<KeyView>,
}

/// `POST /v1/keyring/{id}/use`: the key now chosen.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ChosenView {
    /// Its id.
    pub id: String,
    /// Always true: it is the key gossip is sealed with from now on.
    pub primary: bool,
}

/// `POST /v1/keyring` body.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct InstallBody {
    /// The key: 32 bytes, base64 (URL-safe, no padding, as `install`
    /// prints it). None: a fresh random one is drawn and answered once.
    #[serde(default)]
    pub key: Option<String>,
}

/// `POST /v1/keyring` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct InstalledView {
    /// The key's id.
    pub id: String,
    /// The key drawn for the caller (only when none was given): keep it,
    /// a node that missed the rotation needs it (docs/security.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// The live members' gossip keys: (members, per member its key ids with
/// the sealing one first, and names).
async fn members_keys(s: &ApiState) -> Result<Vec<(String, Vec<u32>)>, ApiError> {
    Ok(s.core
        .members()
        .await?
        .into_iter()
        .filter(|m| matches!(m.state, MemberState::Alive | MemberState::Suspect))
        .map(|m| {
            let meta = m.meta.as_ref();
            (
                meta.map_or_else(|| m.identity.id.to_string(), |x| x.name.clone()),
                meta.map(|x| x.gossip_keys.clone()).unwrap_or_default(),
            )
        })
        .collect())
}

/// The ids of the keys not removed (see [`keyring::live_ids`]).
fn live_ids(s: &ApiState) -> Vec<String> {
    keyring::live_ids(&s.state.acl(), s.cluster_key_id)
}

/// `GET /v1/keyring`: the keys, and how far each has spread.
#[utoipa::path(
    get,
    path = "/v1/keyring",
    tag = "acl",
    summary = "The gossip keys, and how many live members hold and seal with each",
    responses((status = 200, description = "the keyring", body = KeyringView))
)]
pub async fn list(State(s): State<ApiState>) -> ApiResult<KeyringView> {
    let members = members_keys(&s).await?;
    let table = s.state.acl();
    let own = hex_id(s.cluster_key_id);
    let primary = keyring::chosen_id(&table, s.cluster_key_id);
    let keys = live_ids(&s)
        .into_iter()
        .map(|id| {
            let record = table.gossip_keys().iter().find(|k| k.id == id);
            let held = |keys: &Vec<u32>| keys.iter().any(|k| hex_id(*k) == id);
            KeyView {
                cluster_key: id == own,
                primary: id == primary,
                held_by: members.iter().filter(|(_, k)| held(k)).count(),
                sealing: members
                    .iter()
                    .filter(|(_, k)| k.first().is_some_and(|f| hex_id(*f) == id))
                    .count(),
                installed_at: record.map(|r| r.installed_at.clone()),
                by: record.and_then(|r| r.by.clone()),
                id,
            }
        })
        .collect();
    Ok(Json(KeyringView {
        members: members.len(),
        keys,
    }))
}

fn conflict(code: &'static str, message: String) -> ApiError {
    ApiError::new(StatusCode::CONFLICT, code, message)
}

/// Names of at most five members, and how many more.
fn some_names(names: &[String]) -> String {
    let mut out = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        out.push_str(&format!(" and {} more", names.len() - 5));
    }
    out
}

/// `POST /v1/keyring`: installs a key (drawn when none is given). Every
/// node opens datagrams sealed with it once the change reaches it.
#[utoipa::path(
    post,
    path = "/v1/keyring",
    tag = "acl",
    summary = "Install a gossip key (a fresh one when none is given)",
    request_body(content = Option<InstallBody>, content_type = "application/json"),
    responses(
        (status = 201, description = "installed (or already)", body = InstalledView),
        (status = 400, description = "a body that is not a JSON object", body = crate::api::types::ErrorBody),
        (status = 422, description = "not a 32-byte base64 key, or a removed one", body = crate::api::types::ErrorBody)
    )
)]
pub async fn install(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    body: Option<Json<serde_json::Value>>,
) -> Result<(StatusCode, Json<InstalledView>), ApiError> {
    // An object or nothing: serde would also read `[]` or `[null]` as the
    // struct's fields in order, which the schema does not allow.
    let given = match body.map(|b| b.0) {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => {
            serde_json::from_value::<InstallBody>(v)
                .map_err(|e| {
                    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("body: {e}"))
                })?
                .key
        }
        Some(_) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "body: must be a JSON object ({\"key\": \"…\"}) or empty",
            ));
        }
    };
    let invalid = |m: &str| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m.to_owned()).with_field("key")
    };
    let (bytes, drawn) = match &given {
        Some(text) => {
            let raw = URL_SAFE_NO_PAD
                .decode(text.trim().trim_end_matches('='))
                .map_err(|_| invalid("key: not base64 (URL-safe, no padding)"))?;
            let bytes: [u8; 32] = raw
                .try_into()
                .map_err(|_| invalid("key: must be 32 bytes (43 base64 characters)"))?;
            (bytes, false)
        }
        None => {
            let mut b = [0u8; 32];
            getrandom::fill(&mut b).map_err(|e| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    format!("no randomness to draw a key with: {e}"),
                )
            })?;
            (b, true)
        }
    };
    let id = hex_id(GossipKey::from_key(&bytes).id());
    let key = s.secrets_key.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_key",
            "this node has no cluster secret to seal keys with",
        )
    })?;
    let sealed = key.seal(&sealing_name(&id), &bytes).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("no randomness to seal with: {e}"),
        )
    })?;
    let write = AclRequest::KeyInstall(id.clone(), sealed, caller.history_name());
    match s.state.acl_write(write).await? {
        AclReply::Key(_) => Ok((
            StatusCode::CREATED,
            Json(InstalledView {
                id,
                key: drawn.then(|| URL_SAFE_NO_PAD.encode(bytes)),
            }),
        )),
        _ => unreachable!("an install answers a key"),
    }
}

/// `POST /v1/keyring/{id}/use`: seal with key `id`. Refused until every
/// live member holds it (a member without it would drop what others
/// send).
#[utoipa::path(
    post,
    path = "/v1/keyring/{id}/use",
    tag = "acl",
    summary = "Seal gossip with a key (once every live member holds it)",
    params(("id" = String, Path, description = "the key's id (8 hex digits)")),
    responses(
        (status = 200, description = "chosen", body = ChosenView),
        (status = 404, description = "no such key", body = crate::api::types::ErrorBody),
        (status = 409, description = "`not_everywhere`: some live members do not hold it yet", body = crate::api::types::ErrorBody)
    )
)]
pub async fn use_key(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<ChosenView> {
    if !live_ids(&s).contains(&id) {
        return Err(ApiError::not_found(format!(
            "no gossip key {id} (see `shoal keyring list`)"
        )));
    }
    let members = members_keys(&s).await?;
    let lacking: Vec<String> = members
        .iter()
        .filter(|(_, k)| !k.iter().any(|x| hex_id(*x) == id))
        .map(|(n, _)| n.clone())
        .collect();
    if !lacking.is_empty() {
        return Err(conflict(
            "not_everywhere",
            format!(
                "{} of {} live members do not hold key {id} yet ({}); wait until `shoal keyring list` shows it held by all, then retry",
                lacking.len(),
                members.len(),
                some_names(&lacking)
            ),
        ));
    }
    match s
        .state
        .acl_write(AclRequest::KeyUse(id.clone(), caller.history_name()))
        .await?
    {
        AclReply::Primary(p) => Ok(Json(ChosenView {
            id: p.id,
            primary: true,
        })),
        _ => unreachable!("a use answers the primary"),
    }
}

/// `DELETE /v1/keyring/{id}`: removes key `id` for good. Refused for the
/// chosen key, the last key, and while a live member still seals with it.
#[utoipa::path(
    delete,
    path = "/v1/keyring/{id}",
    tag = "acl",
    summary = "Remove a gossip key (once no live member seals with it)",
    params(("id" = String, Path, description = "the key's id (8 hex digits)")),
    responses(
        (status = 200, description = "removed", body = serde_json::Value),
        (status = 404, description = "no such key", body = crate::api::types::ErrorBody),
        (status = 409, description = "`in_use`: the chosen key, the last one, or one some live members still seal with", body = crate::api::types::ErrorBody)
    )
)]
pub async fn remove(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    let ids = live_ids(&s);
    if !ids.contains(&id) {
        return Err(ApiError::not_found(format!(
            "no gossip key {id} (see `shoal keyring list`)"
        )));
    }
    if ids.len() == 1 {
        return Err(conflict(
            "in_use",
            format!("key {id} is the last one: install another first"),
        ));
    }
    if keyring::chosen_id(&s.state.acl(), s.cluster_key_id) == id {
        return Err(conflict(
            "in_use",
            format!("key {id} is the one gossip is sealed with: `shoal keyring use` another first"),
        ));
    }
    let members = members_keys(&s).await?;
    let sealing: Vec<String> = members
        .iter()
        .filter(|(_, k)| k.first().is_some_and(|f| hex_id(*f) == id))
        .map(|(n, _)| n.clone())
        .collect();
    if !sealing.is_empty() {
        return Err(conflict(
            "in_use",
            format!(
                "{} live members still seal with key {id} ({}); wait until `shoal keyring list` shows none, then retry",
                sealing.len(),
                some_names(&sealing)
            ),
        ));
    }
    match s
        .state
        .acl_write(AclRequest::KeyRemove(id, caller.history_name()))
        .await?
    {
        AclReply::Key(k) => Ok(Json(serde_json::json!({"id": k.id, "removed": true}))),
        _ => unreachable!("a remove answers a key"),
    }
}
