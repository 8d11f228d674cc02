//! `/v1/installations…`: package installations, kept in the replicated
//! state (`@install/<instance>` documents), their jobs submitted like any
//! other; status derived from the jobs' tasks, never stored.

use std::collections::BTreeSet;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_model::JobSpec;
use shoal_state::{InstallOp, Installation, Write, WriteError, WriteOp};

use super::{ApiError, ApiResult, ApiState};
use crate::acl::Caller;
use crate::clock::unix_ms;
use crate::placement::job_tasks;
use crate::state::{InstallReply, InstallRequest, SubmitError};

/// The label every rendered job carries: its installation's instance.
pub const INSTANCE_LABEL: &str = "shoal.package.instance";

/// `?all=true`: uninstalled ones too.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AllQuery {
    #[serde(default)]
    all: bool,
}

/// How one job of an installation is doing.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstalledJob {
    /// The job.
    pub name: String,
    /// `healthy`, `starting`, `waiting` (for the jobs of its `after`),
    /// `deploying`, `complete`, `failed`, `missing`.
    pub status: String,
    /// Tasks healthy (or complete, for batch jobs).
    pub healthy: u32,
    /// Tasks wanted.
    pub desired: u32,
}

/// An installation with its status, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstallationView {
    /// The installation, as the replicated state holds it.
    #[serde(flatten)]
    pub installation: Installation,
    /// `healthy` (every job's tasks healthy), `starting`, `deploying`,
    /// `failed`, `incomplete` (a job it rendered is missing: install or
    /// upgrade it again) or `uninstalled`; from the jobs' tasks.
    pub status: String,
    /// Each job of its latest revision.
    pub job_status: Vec<InstalledJob>,
}

fn no_installation(instance: &str) -> ApiError {
    ApiError::not_found(format!(
        "no installation named {instance:?} (see `shoal package list`)"
    ))
}

/// The installation `instance` (uninstalled ones too).
pub async fn installation_of(
    s: &ApiState,
    instance: &str,
) -> Result<Option<Installation>, ApiError> {
    match s
        .state
        .install(InstallRequest::Get(instance.to_owned()))
        .await?
    {
        InstallReply::One(i) => Ok(i.map(|b| *b)),
        InstallReply::List(_) => Ok(None),
    }
}

/// Writes `op` to installation `instance`.
pub async fn write(s: &ApiState, instance: &str, op: InstallOp) -> Result<Installation, ApiError> {
    match s
        .state
        .install(InstallRequest::Write(instance.to_owned(), op))
        .await
    {
        Ok(InstallReply::One(Some(i))) => Ok(*i),
        Ok(_) => Err(no_installation(instance)),
        Err(SubmitError::Rejected(WriteError::NotFound(_))) => Err(no_installation(instance)),
        Err(e) => Err(e.into()),
    }
}

/// Submits the `specs` an installation rendered (each labelled with its
/// instance), then stops the jobs of `previous` that are not among them.
/// Stops at the first job refused, naming it.
pub async fn submit_jobs(
    s: &ApiState,
    by: Option<&Caller>,
    instance: &str,
    specs: &[Value],
    previous: &[String],
) -> Result<Vec<String>, ApiError> {
    let mut names = Vec::new();
    for spec in specs {
        let mut spec = spec.clone();
        spec["labels"][INSTANCE_LABEL] = Value::String(instance.to_owned());
        let parsed = JobSpec::from_json(spec.clone()).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_spec",
                format!("job {} of installation {instance:?}: {e}", spec["name"]),
            )
            .with_field(e.field())
        })?;
        names.push(parsed.name.clone());
        s.state
            .write(Write {
                by: by.and_then(Caller::history_name),
                name: parsed.name.clone(),
                op: WriteOp::Put(Box::new(parsed)),
                if_version: None,
                now_ms: unix_ms(),
            })
            .await?;
    }
    let keep: BTreeSet<&String> = names.iter().collect();
    for old in previous.iter().filter(|n| !keep.contains(n)) {
        stop_job(s, old).await?;
    }
    Ok(names)
}

/// Stops (deletes) job `name`, if it is still there.
async fn stop_job(s: &ApiState, name: &str) -> Result<(), ApiError> {
    match s
        .state
        .write(Write {
            by: None,
            name: name.to_owned(),
            op: WriteOp::Delete,
            if_version: None,
            now_ms: unix_ms(),
        })
        .await
    {
        Ok(_) | Err(SubmitError::Rejected(WriteError::NotFound(_))) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `i` with its status, from its jobs' tasks.
pub async fn view_of(s: &ApiState, i: Installation) -> Result<InstallationView, ApiError> {
    if i.deleted {
        return Ok(InstallationView {
            installation: i,
            status: "uninstalled".into(),
            job_status: Vec::new(),
        });
    }
    let live = s.live.borrow().clone();
    let mut jobs = Vec::new();
    for name in &i.jobs {
        let Some(job) = s.state.job(name).await?.filter(|j| !j.deleted) else {
            jobs.push(InstalledJob {
                name: name.clone(),
                status: "missing".into(),
                healthy: 0,
                desired: 0,
            });
            continue;
        };
        let tasks = job_tasks(&s.core, &s.transport, &live, name).await?;
        let desired = job
            .count
            .unwrap_or_else(|| u32::try_from(tasks.len()).unwrap_or(u32::MAX));
        let batch = job.status.map(|b| b.as_str().to_owned());
        let healthy = tasks
            .iter()
            .filter(|t| {
                (t.state == "running" && t.health == "healthy")
                    || (batch.is_some() && t.state == "exited")
            })
            .count();
        let healthy = u32::try_from(healthy).unwrap_or(u32::MAX);
        let deploying = job
            .deployment
            .as_ref()
            .is_some_and(|d| d.status.in_progress());
        let status = match batch.as_deref() {
            Some("complete") => "complete",
            Some("failed") => "failed",
            _ if !job.waiting_for.is_empty() => "waiting",
            // A batch job counts once its run is recorded complete, not
            // when its tasks are seen exited (the record may lag).
            Some(_) => "starting",
            _ if deploying => "deploying",
            _ if healthy >= desired => "healthy",
            _ if tasks.iter().any(|t| t.state == "failed") => "failed",
            _ => "starting",
        };
        jobs.push(InstalledJob {
            name: name.clone(),
            status: status.into(),
            healthy,
            desired,
        });
    }
    let any = |s: &str| jobs.iter().any(|j| j.status == s);
    let status = if any("missing") {
        "incomplete"
    } else if any("failed") {
        "failed"
    } else if any("deploying") {
        "deploying"
    } else if any("starting") || any("waiting") {
        "starting"
    } else {
        "healthy"
    };
    Ok(InstallationView {
        installation: i,
        status: status.into(),
        job_status: jobs,
    })
}

/// `GET /v1/installations[?all=true]`.
#[utoipa::path(
    get,
    path = "/v1/installations",
    tag = "installations",
    summary = "Every installation",
    params(AllQuery),
    responses(
        (status = 200, description = "the installations", body = Vec<InstallationView>)
    )
)]
pub async fn list(
    State(s): State<ApiState>,
    Query(q): Query<AllQuery>,
) -> ApiResult<Vec<InstallationView>> {
    let all = match s.state.install(InstallRequest::List(q.all)).await? {
        InstallReply::List(all) => all,
        InstallReply::One(one) => one.into_iter().map(|b| *b).collect(),
    };
    let mut out = Vec::new();
    for i in all {
        out.push(view_of(&s, i).await?);
    }
    Ok(Json(out))
}

/// `GET /v1/installations/{instance}`.
#[utoipa::path(
    get,
    path = "/v1/installations/{instance}",
    tag = "installations",
    summary = "One installation",
    params(("instance" = String, Path, description = "the instance name")),
    responses(
        (status = 200, description = "the installation", body = InstallationView),
        (status = 404, description = "no such installation", body = crate::api::types::ErrorBody)
    )
)]
pub async fn get(
    State(s): State<ApiState>,
    Path(instance): Path<String>,
) -> ApiResult<InstallationView> {
    let i = installation_of(&s, &instance)
        .await?
        .ok_or_else(|| no_installation(&instance))?;
    Ok(Json(view_of(&s, i).await?))
}

/// `DELETE /v1/installations/{instance}`: stops exactly the jobs of the
/// installation (those its latest revision rendered, and any other job
/// labelled with its instance), then records it uninstalled.
#[utoipa::path(
    delete,
    path = "/v1/installations/{instance}",
    tag = "installations",
    summary = "Stop its jobs; keep it as uninstalled",
    params(("instance" = String, Path, description = "the instance name")),
    responses(
        (status = 200, description = "uninstalled", body = InstallationView),
        (status = 404, description = "no such installation", body = crate::api::types::ErrorBody)
    )
)]
pub async fn uninstall(
    State(s): State<ApiState>,
    Path(instance): Path<String>,
) -> ApiResult<InstallationView> {
    let i = installation_of(&s, &instance)
        .await?
        .filter(|i| !i.deleted)
        .ok_or_else(|| no_installation(&instance))?;
    let mut names: BTreeSet<String> = i.jobs.iter().cloned().collect();
    for j in s.state.jobs(false).await? {
        if j.spec["labels"][INSTANCE_LABEL].as_str() == Some(instance.as_str()) {
            names.insert(j.name.clone());
        }
    }
    for name in &names {
        stop_job(&s, name).await?;
    }
    let gone = write(&s, &instance, InstallOp::Uninstall).await?;
    Ok(Json(view_of(&s, gone).await?))
}

/// `POST /v1/installations/{instance}/rollback` with `{"revision": N}`: a
/// new revision equal to revision N (its version, the user's options then,
/// and the jobs it rendered, submitted again; jobs it did not have are
/// stopped).
#[utoipa::path(
    post,
    path = "/v1/installations/{instance}/rollback",
    tag = "installations",
    summary = "A new revision equal to an older one",
    params(("instance" = String, Path, description = "the instance name")),
    request_body(content = crate::api::openapi::RollbackBody, content_type = "application/json"),
    responses(
        (status = 200, description = "rolled back", body = InstallationView),
        (status = 404, description = "no such installation", body = crate::api::types::ErrorBody),
        (status = 422, description = "no such revision", body = crate::api::types::ErrorBody)
    )
)]
pub async fn rollback(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(instance): Path<String>,
    Json(body): Json<Value>,
) -> ApiResult<InstallationView> {
    let to = body["revision"]
        .as_u64()
        .and_then(|r| u32::try_from(r).ok())
        .filter(|r| *r > 0)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "revision: must be a revision number, 1 or more (got {})",
                    body["revision"]
                ),
            )
            .with_field("revision")
        })?;
    let before = installation_of(&s, &instance)
        .await?
        .filter(|i| !i.deleted)
        .ok_or_else(|| no_installation(&instance))?;
    if let Some(r) = before.revisions.iter().find(|r| r.revision == to) {
        check_secrets(Some(&caller), &r.specs)?;
    }
    let after = write(&s, &instance, InstallOp::Rollback { to }).await?;
    let specs = after
        .revisions
        .last()
        .map(|r| r.specs.clone())
        .unwrap_or_default();
    submit_jobs(&s, Some(&caller), &instance, &specs, &before.jobs).await?;
    Ok(Json(view_of(&s, after).await?))
}

/// `POST /v1/installations` body: an installation and the jobs its package
/// rendered (the CLI renders: `shoal package install`).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct InstallBody {
    /// Instance name (job-name rules); the rendered jobs are named
    /// `<instance>` or `<instance>/…`.
    pub instance: String,
    /// Package name.
    pub package: String,
    /// Package version; empty: the highest the repository has (when the
    /// node renders it).
    #[serde(default)]
    pub version: String,
    /// The repository it came from (a repository's name, `builtin`, or
    /// `local:<sha256>` for a package given as a directory or archive);
    /// empty: the first repository that has it (when the node renders it).
    #[serde(default)]
    pub repository: String,
    /// The user's own options (not the defaults).
    #[serde(default)]
    pub options: Value,
    /// The rendered job specs; empty: this node finds the package in the
    /// repositories and renders it with `options`.
    #[serde(default)]
    pub jobs: Vec<Value>,
}

/// `POST /v1/installations/{instance}/upgrade` body.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UpgradeBody {
    /// Package version; empty: the highest the installation's repository
    /// has (when the node renders it).
    #[serde(default)]
    pub version: String,
    /// The user's own options after the upgrade; absent: the ones the
    /// installation has (when the node renders it).
    #[serde(default)]
    pub options: Value,
    /// The rendered job specs; empty: this node finds the package in the
    /// installation's repository and renders it.
    #[serde(default)]
    pub jobs: Vec<Value>,
}

/// Renders package `name` from the repositories (`version` and
/// `repository` when not empty) for `instance` with the user's
/// `options`: the version, repository and jobs.
async fn render_here(
    s: &ApiState,
    name: &str,
    version: &str,
    repository: &str,
    instance: &str,
    options: &Value,
    upgrading_from: Option<&str>,
) -> Result<(String, String, Vec<Value>), ApiError> {
    let found = s
        .repos
        .find(
            name,
            (!version.is_empty()).then_some(version),
            (!repository.is_empty()).then_some(repository),
        )
        .await?;
    if let Some(from) = upgrading_from {
        found
            .package
            .manifest()
            .check_upgrade_from(from)
            .map_err(|m| {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m).with_field("version")
            })?;
    }
    let jobs = found
        .package
        .render(instance, options)
        .map_err(super::packages::render_error)?;
    Ok((
        found.package.manifest().version.to_string(),
        found.repository,
        jobs.into_iter().map(|j| j.spec.to_json()).collect(),
    ))
}

/// The secrets the jobs of an installation refer to must be readable by
/// `caller` (None: a trigger's action, checked when the trigger was
/// written): installing a package hands them to its tasks. A spec that
/// does not parse is left to [`submit_jobs`], which names it.
fn check_secrets(caller: Option<&Caller>, jobs: &[Value]) -> Result<(), ApiError> {
    let Some(caller) = caller else {
        return Ok(());
    };
    for spec in jobs {
        if let Ok(spec) = JobSpec::from_json(spec.clone()) {
            super::jobs::check_secret_refs(caller, &spec)?;
        }
    }
    Ok(())
}

/// What writing a trigger whose action installs `package` as `instance`
/// needs from `caller`: `packages=write`, and read on the secrets the
/// jobs it renders now refer to (for an ACL token: the package is rendered
/// here with the trigger's options, so one that does not render is
/// refused now rather than when the trigger fires).
pub(super) async fn check_install_action(
    s: &ApiState,
    caller: &Caller,
    package: &str,
    instance: &str,
    version: Option<&str>,
    options: &Value,
) -> Result<(), ApiError> {
    caller
        .check(
            shoal_model::acl::Resource::Packages,
            "",
            shoal_model::acl::Access::Write,
        )
        .map_err(ApiError::forbidden)?;
    if caller.kind != crate::acl::CallerKind::Token {
        return Ok(());
    }
    let options = if options.is_null() {
        Value::Object(Default::default())
    } else {
        options.clone()
    };
    let (_, _, jobs) = render_here(
        s,
        package,
        version.unwrap_or_default(),
        "",
        instance,
        &options,
        None,
    )
    .await?;
    check_secrets(Some(caller), &jobs)
}

/// Every rendered job is named under `instance`; the error names the
/// first that is not.
fn check_names(instance: &str, jobs: &[Value]) -> Result<(), ApiError> {
    if jobs.is_empty() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
            "jobs: a package installs at least one job",
        )
        .with_field("jobs"));
    }
    for (i, j) in jobs.iter().enumerate() {
        let name = j["name"].as_str().unwrap_or_default();
        if name != instance && !name.starts_with(&format!("{instance}/")) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "jobs[{i}].name: {name:?} is not under the instance {instance:?} (name it {instance:?} or {instance:?}/…)"
                ),
            )
            .with_field(format!("jobs[{i}].name")));
        }
        JobSpec::from_json(j.clone()).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_spec",
                format!("jobs[{i}] ({name}): {e}"),
            )
            .with_field(format!("jobs[{i}].{}", e.field()))
        })?;
    }
    Ok(())
}

/// A rendered job whose name a job of someone else already has: refused
/// before anything is written (an installation never takes over a job
/// that is not its own).
async fn check_not_taken(s: &ApiState, instance: &str, jobs: &[Value]) -> Result<(), ApiError> {
    for j in jobs {
        let name = j["name"].as_str().unwrap_or_default();
        if let Some(existing) = s.state.job(name).await?.filter(|v| !v.deleted) {
            let owner = existing.spec["labels"][INSTANCE_LABEL].as_str();
            if owner != Some(instance) {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!(
                        "job {name:?} exists and is not part of installation {instance:?}{}: choose another --instance",
                        owner
                            .map(|o| format!(" (it belongs to {o:?})"))
                            .unwrap_or_default()
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// `POST /v1/installations`: records the installation, then submits its
/// jobs. Nothing is written when a job does not validate or is not named
/// under the instance.
#[utoipa::path(
    post,
    path = "/v1/installations",
    tag = "installations",
    summary = "Install a package",
    request_body(content = InstallBody, content_type = "application/json"),
    responses(
        (status = 201, description = "installed", body = InstallationView),
        (status = 404, description = "no such package", body = crate::api::types::ErrorBody),
        (status = 409, description = "a job another installation owns", body = crate::api::types::ErrorBody),
        (status = 422, description = "a bad instance, job or option", body = crate::api::types::ErrorBody)
    )
)]
pub async fn install(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Json(b): Json<InstallBody>,
) -> Result<(StatusCode, Json<InstallationView>), ApiError> {
    let view = install_as(&s, Some(&caller), b).await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// Installs `b` on behalf of `caller` (None: a trigger's action).
async fn install_as(
    s: &ApiState,
    caller: Option<&Caller>,
    mut b: InstallBody,
) -> Result<InstallationView, ApiError> {
    if b.jobs.is_empty() {
        shoal_model::validate_name(&b.instance).map_err(|e| {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e).with_field("instance")
        })?;
        let options = if b.options.is_null() {
            serde_json::json!({})
        } else {
            b.options.clone()
        };
        (b.version, b.repository, b.jobs) = render_here(
            s,
            &b.package,
            &b.version,
            &b.repository,
            &b.instance,
            &options,
            None,
        )
        .await?;
    }
    check_names(&b.instance, &b.jobs)?;
    check_secrets(caller, &b.jobs)?;
    check_not_taken(s, &b.instance, &b.jobs).await?;
    let options = if b.options.is_null() {
        Value::Object(Default::default())
    } else {
        b.options.clone()
    };
    let i = write(
        s,
        &b.instance,
        InstallOp::Install {
            package: b.package.clone(),
            version: b.version.clone(),
            repository: b.repository.clone(),
            options,
            jobs: b.jobs.clone(),
        },
    )
    .await?;
    submit_jobs(s, caller, &b.instance, &b.jobs, &[]).await?;
    view_of(s, i).await
}

/// What a trigger's `[install]` action does: installs `instance` of
/// `package` when no such installation exists, upgrades it when `version`
/// (when given) or `options` differ from what it has, and leaves it alone
/// otherwise. `Ok(false)`: nothing to do. The error says what is wrong.
pub async fn install_or_upgrade(
    s: &ApiState,
    package: &str,
    instance: &str,
    version: Option<&str>,
    options: &Value,
) -> Result<bool, String> {
    let existing = installation_of(s, instance)
        .await
        .map_err(|e| e.message)?
        .filter(|i| !i.deleted);
    match existing {
        None => {
            let body = InstallBody {
                instance: instance.to_owned(),
                package: package.to_owned(),
                version: version.unwrap_or_default().to_owned(),
                repository: String::new(),
                options: options.clone(),
                jobs: Vec::new(),
            };
            let _installed = install_as(s, None, body).await.map_err(|e| e.message)?;
            Ok(true)
        }
        Some(i) if i.package != package => Err(format!(
            "instance {instance} is an installation of {}, not {package}: name another instance",
            i.package
        )),
        Some(i) => {
            let want_options = if options.is_null() {
                Value::Object(Default::default())
            } else {
                options.clone()
            };
            let same_version = version.is_none_or(|v| v == i.version);
            if same_version && i.options == want_options {
                return Ok(false);
            }
            let body = UpgradeBody {
                version: version.unwrap_or(&i.version).to_owned(),
                options: want_options,
                jobs: Vec::new(),
            };
            let _upgraded = upgrade_as(s, None, instance, body)
                .await
                .map_err(|e| e.message)?;
            Ok(true)
        }
    }
}

/// `POST /v1/installations/{instance}/upgrade`: a new revision with the
/// jobs rendered for it; jobs the new revision no longer has are stopped.
#[utoipa::path(
    post,
    path = "/v1/installations/{instance}/upgrade",
    tag = "installations",
    summary = "A new revision of an installation",
    params(("instance" = String, Path, description = "the instance name")),
    request_body(content = UpgradeBody, content_type = "application/json"),
    responses(
        (status = 200, description = "upgraded", body = InstallationView),
        (status = 404, description = "no such installation or package", body = crate::api::types::ErrorBody),
        (status = 422, description = "a bad job or option", body = crate::api::types::ErrorBody)
    )
)]
pub async fn upgrade(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    Path(instance): Path<String>,
    Json(b): Json<UpgradeBody>,
) -> ApiResult<InstallationView> {
    Ok(Json(upgrade_as(&s, Some(&caller), &instance, b).await?))
}

/// Upgrades `instance` to `b` on behalf of `caller` (None: a trigger's
/// action).
async fn upgrade_as(
    s: &ApiState,
    caller: Option<&Caller>,
    instance: &str,
    mut b: UpgradeBody,
) -> Result<InstallationView, ApiError> {
    let before = installation_of(s, instance)
        .await?
        .filter(|i| !i.deleted)
        .ok_or_else(|| no_installation(instance))?;
    if b.jobs.is_empty() {
        if before.repository.starts_with("local:") {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                format!(
                    "{instance} was installed from a local package ({}), which no node holds: upgrade it with `shoal package upgrade {instance} PATH`",
                    before.repository
                ),
            )
            .with_field("jobs"));
        }
        if b.options.is_null() {
            b.options = before.options.clone();
        }
        let (version, _, jobs) = render_here(
            s,
            &before.package,
            &b.version,
            &before.repository,
            instance,
            &b.options,
            Some(&before.version),
        )
        .await?;
        (b.version, b.jobs) = (version, jobs);
    }
    check_names(instance, &b.jobs)?;
    check_secrets(caller, &b.jobs)?;
    check_not_taken(s, instance, &b.jobs).await?;
    let after = write(
        s,
        instance,
        InstallOp::Upgrade {
            version: b.version.clone(),
            options: b.options.clone(),
            jobs: b.jobs.clone(),
        },
    )
    .await?;
    submit_jobs(s, caller, instance, &b.jobs, &before.jobs).await?;
    view_of(s, after).await
}
