//! `/v1/triggers…` and `/v1/runs`: triggers kept in the replicated state
//! (`@trigger/<name>` documents), evaluated by the node that owns each
//! one's key ([`crate::triggers`]); runs are the batch jobs they started,
//! found by their `shoal.trigger` label.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use shoal_state::{BatchStatus, TriggerOp, TriggerRecord};
use shoal_trigger::{Action, Fire, Outcome, OutcomeKind, TriggerSpec, TriggerState};

use super::jobs::{invalid_spec, parse_json};
use super::{ApiError, ApiResult, ApiState};
use crate::acl::Caller;
use crate::state::{SubmitError, TriggerReply, TriggerRequest};
use crate::triggers::{Ledger, now, run_id_of, runs_of, start_run};
use shoal_model::acl::{Access, Resource};

/// A trigger as the API shows it.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TriggerView {
    /// Name.
    pub name: String,
    /// The spec, every default filled in (the canonical form: it can be
    /// posted back).
    #[schema(value_type = Object)]
    pub spec: Value,
    /// Paused (`shoal trigger pause`).
    pub paused: bool,
    /// The next slot not yet handled (`null` without a schedule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_slot: Option<SlotOut>,
    /// The last slot handled (fired, skipped or missed), by anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_handled: Option<String>,
    /// The node that last wrote the ledger (its evaluator then).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evaluated_by: Option<String>,
    /// Recent outcomes, oldest first: `{slot, outcome: fired|skipped|missed, …}`.
    #[schema(value_type = Vec<Object>)]
    pub recent: Vec<Value>,
    /// Created (RFC 3339).
    pub created_at: String,
    /// Last changed (RFC 3339).
    pub updated_at: String,
}

/// A slot.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SlotOut {
    /// Its id: the run id it fires under.
    pub id: String,
    /// When it is due (RFC 3339, UTC).
    pub at: String,
}

/// One run of a trigger.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunView {
    /// The run id (`cheap-report@2026-12-01T03:00:00`).
    pub id: String,
    /// The trigger.
    pub trigger: String,
    /// The batch job it runs as.
    pub job: String,
    /// `running`, `complete` or `failed`.
    pub status: String,
    /// When its job was created (RFC 3339).
    pub started: String,
    /// Tasks complete.
    pub tasks_complete: u32,
    /// Tasks failed for good.
    pub tasks_failed: u32,
    /// The parent run that started it (`after`), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// `?trigger=NAME`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RunsQuery {
    /// Only this trigger's runs.
    trigger: Option<String>,
}

fn view(t: &TriggerRecord) -> TriggerView {
    let ledger = Ledger::from_value(&t.ledger);
    let next_slot = TriggerSpec::from_json(t.spec.clone())
        .ok()
        .and_then(|spec| {
            let created = chrono::DateTime::from_timestamp_millis(
                i64::try_from(t.created_at_ms).unwrap_or(0),
            )
            .unwrap_or_default();
            let st = TriggerState::resume(&spec, created, ledger.last_handled.as_deref());
            // Slots already past are handled at the next evaluation; show the
            // first one still ahead.
            let ahead = spec.next_slot(now());
            st.next_slot().cloned().filter(|s| s.at > now()).or(ahead)
        });
    TriggerView {
        name: t.name.clone(),
        spec: t.spec.clone(),
        paused: t.paused,
        next_slot: next_slot.map(|s| SlotOut {
            id: s.id,
            at: s.at.to_rfc3339(),
        }),
        last_handled: ledger.last_handled,
        evaluated_by: ledger.evaluated_by,
        recent: ledger
            .outcomes
            .iter()
            .map(|o| serde_json::to_value(o).unwrap_or(Value::Null))
            .collect(),
        created_at: t.created_at.clone(),
        updated_at: t.updated_at.clone(),
    }
}

async fn write(s: &ApiState, name: &str, op: TriggerOp) -> Result<TriggerRecord, ApiError> {
    match s
        .state
        .trigger(TriggerRequest::Write(name.to_owned(), op))
        .await
    {
        Ok(TriggerReply::One(Some(t))) => Ok(*t),
        Ok(_) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "no trigger came back from the write",
        )),
        Err(SubmitError::Rejected(shoal_state::WriteError::NotFound(_))) => Err(no_such(name)),
        Err(e) => Err(e.into()),
    }
}

fn no_such(name: &str) -> ApiError {
    ApiError::not_found(format!(
        "no trigger named {name:?} (see `shoal trigger list`)"
    ))
}

async fn read(s: &ApiState, name: &str) -> Result<TriggerRecord, ApiError> {
    match s
        .state
        .trigger(TriggerRequest::Get(name.to_owned()))
        .await?
    {
        TriggerReply::One(Some(t)) if !t.deleted => Ok(*t),
        _ => Err(no_such(name)),
    }
}

/// Refuses `after` edges that would close a cycle through the jobs' and
/// the other triggers' `after` (422 naming `after[i].job`).
async fn check_cycles(s: &ApiState, spec: &TriggerSpec) -> Result<(), ApiError> {
    let graph = after_graph(s).await?;
    let parents: Vec<&str> = spec.after.iter().map(|a| a.job.as_str()).collect();
    shoal_trigger::check_after(&graph, &spec.name, &parents)
        .map_err(|e| invalid_spec(shoal_model::SpecError { errors: vec![e] }))
}

/// The `after` edges of every job and trigger, as this node's replica
/// holds them: each name to the parents it runs after.
pub(super) async fn after_graph(
    s: &ApiState,
) -> Result<std::collections::BTreeMap<String, Vec<String>>, ApiError> {
    let mut graph: std::collections::BTreeMap<String, Vec<String>> =
        std::collections::BTreeMap::new();
    for j in s.state.jobs_shared(false).await?.iter() {
        let after: Vec<String> = j.spec["after"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        if !after.is_empty() {
            graph.insert(j.name.clone(), after);
        }
    }
    if let TriggerReply::List(ts) = s.state.trigger(TriggerRequest::List(false)).await? {
        for t in ts {
            let after: Vec<String> = t.spec["after"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v["job"].as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            if !after.is_empty() {
                graph.insert(t.name.clone(), after);
            }
        }
    }
    Ok(graph)
}

/// `POST /v1/triggers`: create or replace a trigger.
#[utoipa::path(
    post,
    path = "/v1/triggers",
    tag = "triggers",
    summary = "Create or replace a trigger",
    request_body(content = Object, description = "the trigger spec as JSON, or a trigger file with `content-type: application/toml` (see docs/triggers.md)"),
    responses(
        (status = 201, description = "created", body = TriggerView),
        (status = 200, description = "replaced", body = TriggerView),
        (status = 422, description = "`invalid_spec`: names the field (`cron`, `timezone`, `when[0].signal`, …); nothing was written", body = crate::api::types::ErrorBody)
    )
)]
pub async fn create(
    State(s): State<ApiState>,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<TriggerView>), ApiError> {
    let toml = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("toml"));
    let spec = if toml {
        let text = std::str::from_utf8(&body).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_spec",
                format!("the body is not UTF-8: {e}"),
            )
            .with_field("spec")
        })?;
        TriggerSpec::from_toml(text)
    } else {
        TriggerSpec::from_json(parse_json(&body)?)
    }
    .map_err(invalid_spec)?;
    check_action(&s, &caller, &spec).await?;
    if !spec.after.is_empty() {
        check_cycles(&s, &spec).await?;
    }
    let existed = read(&s, &spec.name).await.is_ok();
    let t = write(&s, &spec.name.clone(), TriggerOp::Put(spec.to_json())).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(view(&t))))
}

/// A trigger does only what whoever writes it may do by hand: it fires
/// later with no caller, so its action is checked against the writer's
/// rights now. `[run]` needs `jobs=write` on its runs (`<trigger>/…`) and
/// read on the secrets its job refers to; `run_job` write on that job and
/// on the runs; `[scale]` write on the job; `[install]` what installing
/// needs ([`super::installations::check_install_action`]).
async fn check_action(s: &ApiState, caller: &Caller, spec: &TriggerSpec) -> Result<(), ApiError> {
    let runs = format!("{}/", spec.name);
    let write = |job: &str| {
        caller
            .check(Resource::Jobs, job, Access::Write)
            .map_err(|e| ApiError::forbidden(format!("trigger {}: {e}", spec.name)))
    };
    match &spec.action {
        Action::Run(job) => {
            write(&runs)?;
            super::jobs::check_secret_refs(caller, job)
        }
        Action::RunJob(job) => {
            write(job)?;
            write(&runs)
        }
        Action::Scale { job, .. } => write(job),
        Action::Install {
            package,
            instance,
            version,
            options,
        } => {
            super::installations::check_install_action(
                s,
                caller,
                package,
                instance,
                version.as_deref(),
                options,
            )
            .await
        }
    }
}

/// `GET /v1/triggers`.
#[utoipa::path(
    get,
    path = "/v1/triggers",
    tag = "triggers",
    summary = "Every trigger",
    responses((status = 200, description = "the triggers, by name", body = Vec<TriggerView>))
)]
pub async fn list(State(s): State<ApiState>) -> ApiResult<Vec<TriggerView>> {
    match s.state.trigger(TriggerRequest::List(false)).await? {
        TriggerReply::List(ts) => Ok(Json(ts.iter().map(view).collect())),
        TriggerReply::One(_) => Ok(Json(Vec::new())),
    }
}

/// `GET /v1/triggers/{name}`.
#[utoipa::path(
    get,
    path = "/v1/triggers/{name}",
    tag = "triggers",
    summary = "One trigger: spec, paused, next slot, recent outcomes",
    params(("name" = String, Path, description = "the trigger name, one percent-encoded segment")),
    responses(
        (status = 200, description = "the trigger", body = TriggerView),
        (status = 404, description = "no such trigger", body = crate::api::types::ErrorBody)
    )
)]
pub async fn get(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<TriggerView> {
    Ok(Json(view(&read(&s, &name).await?)))
}

/// `DELETE /v1/triggers/{name}`.
#[utoipa::path(
    delete,
    path = "/v1/triggers/{name}",
    tag = "triggers",
    summary = "Delete a trigger (its runs' jobs stay)",
    params(("name" = String, Path, description = "the trigger name, one percent-encoded segment")),
    responses(
        (status = 200, description = "deleted", body = TriggerView),
        (status = 404, description = "no such trigger", body = crate::api::types::ErrorBody)
    )
)]
pub async fn delete(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<TriggerView> {
    Ok(Json(view(&write(&s, &name, TriggerOp::Delete).await?)))
}

/// `POST /v1/triggers/{name}/pause`.
#[utoipa::path(
    post,
    path = "/v1/triggers/{name}/pause",
    tag = "triggers",
    summary = "Pause a trigger: its due slots are recorded skipped (paused)",
    params(("name" = String, Path, description = "the trigger name, one percent-encoded segment")),
    responses(
        (status = 200, description = "paused", body = TriggerView),
        (status = 404, description = "no such trigger", body = crate::api::types::ErrorBody)
    )
)]
pub async fn pause(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<TriggerView> {
    Ok(Json(view(&write(&s, &name, TriggerOp::Pause(true)).await?)))
}

/// `POST /v1/triggers/{name}/resume`.
#[utoipa::path(
    post,
    path = "/v1/triggers/{name}/resume",
    tag = "triggers",
    summary = "Resume a paused trigger",
    params(("name" = String, Path, description = "the trigger name, one percent-encoded segment")),
    responses(
        (status = 200, description = "resumed", body = TriggerView),
        (status = 404, description = "no such trigger", body = crate::api::types::ErrorBody)
    )
)]
pub async fn resume(State(s): State<ApiState>, Path(name): Path<String>) -> ApiResult<TriggerView> {
    Ok(Json(view(
        &write(&s, &name, TriggerOp::Pause(false)).await?,
    )))
}

/// `POST /v1/triggers/{name}/run`: a manual run, now, whatever the
/// conditions and the schedule.
#[utoipa::path(
    post,
    path = "/v1/triggers/{name}/run",
    tag = "triggers",
    summary = "Run a trigger's action now (a manual run)",
    params(("name" = String, Path, description = "the trigger name, one percent-encoded segment")),
    responses(
        (status = 201, description = "the run started", body = RunView),
        (status = 404, description = "no such trigger", body = crate::api::types::ErrorBody),
        (status = 422, description = "the trigger's action cannot be run by the agent yet", body = crate::api::types::ErrorBody)
    )
)]
pub async fn run(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<(StatusCode, Json<RunView>), ApiError> {
    let t = read(&s, &name).await?;
    let spec = TriggerSpec::from_json(t.spec.clone()).map_err(invalid_spec)?;
    let at = now();
    let id = at.format("%Y%m%dt%H%M%S%3f").to_string();
    let run_id = shoal_trigger::manual_run_id(&spec.name, &id);
    let fire = Fire {
        run_id: run_id.clone(),
        due_at: at,
        stop: Vec::new(),
        constraints: Vec::new(),
        values: Vec::new(),
    };
    // The record first, then the run (as the evaluator does).
    let mut ledger = Ledger::from_value(&t.ledger);
    ledger.merge([Outcome {
        slot: run_id.clone(),
        slot_at: at,
        decided_at: at,
        count: 1,
        last_slot: None,
        kind: OutcomeKind::Fired {
            run_id: run_id.clone(),
            late_ms: 0,
            stopped: Vec::new(),
            result: None,
        },
        values: Vec::new(),
    }]);
    let value = serde_json::to_value(&ledger).unwrap_or(Value::Null);
    write(&s, &name, TriggerOp::Ledger(value, "fired".into())).await?;
    start_run(&s, &spec, &fire, None).await.map_err(|e| {
        ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e).with_field("action")
    })?;
    Ok((
        StatusCode::CREATED,
        Json(RunView {
            id: run_id.clone(),
            trigger: name,
            job: shoal_trigger::run_job_name(&run_id),
            status: "running".into(),
            started: at.to_rfc3339(),
            tasks_complete: 0,
            tasks_failed: 0,
            parent: None,
        }),
    ))
}

/// `GET /v1/triggers/{name}/explain`.
#[utoipa::path(
    get,
    path = "/v1/triggers/{name}/explain",
    tag = "triggers",
    summary = "Why a trigger fired or did not: each condition's value, age, source and result, the next slot, recent outcomes",
    params(("name" = String, Path, description = "the trigger name, one percent-encoded segment")),
    responses(
        (status = 200, description = "`source` is `live` when this node evaluates the trigger now, else `ledger` (what its evaluator last recorded)", body = Object),
        (status = 404, description = "no such trigger", body = crate::api::types::ErrorBody)
    )
)]
pub async fn explain(
    State(s): State<ApiState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let t = read(&s, &name).await?;
    let ledger = Ledger::from_value(&t.ledger);
    let (source, mut explain) = match s.triggers.explain(&name) {
        Some(e) => ("live", e),
        None => {
            let spec = TriggerSpec::from_json(t.spec.clone()).map_err(invalid_spec)?;
            let created = chrono::DateTime::from_timestamp_millis(
                i64::try_from(t.created_at_ms).unwrap_or(0),
            )
            .unwrap_or_default();
            let st = TriggerState::resume(&spec, created, ledger.last_handled.as_deref());
            let mut e = st.explain(now(), &spec);
            e.evaluated_at = ledger.evaluated_at;
            e.conditions = ledger.conditions.clone();
            ("ledger", e)
        }
    };
    // The ledger holds every evaluator's outcomes; the live state only
    // this node's since it took the trigger over.
    let mut recent = ledger.clone();
    recent.merge(explain.recent.drain(..));
    explain.recent = recent.outcomes;
    let mut v = serde_json::to_value(&explain).unwrap_or(Value::Null);
    v["source"] = json!(source);
    v["paused"] = json!(t.paused);
    v["evaluated_by"] = json!(ledger.evaluated_by);
    Ok(Json(v))
}

/// `GET /v1/runs?trigger=NAME`.
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "triggers",
    summary = "Runs of triggers (the batch jobs they started), oldest first",
    params(RunsQuery),
    responses((status = 200, description = "the runs", body = Vec<RunView>))
)]
pub async fn runs(
    State(s): State<ApiState>,
    Query(q): Query<RunsQuery>,
) -> ApiResult<Vec<RunView>> {
    let jobs = s.state.jobs_shared(false).await?;
    let mut out: Vec<RunView> = match &q.trigger {
        Some(name) => runs_of(&jobs, name),
        None => jobs
            .iter()
            .map(|j| &**j)
            .filter(|j| j.spec["labels"][crate::triggers::TRIGGER_LABEL].is_string())
            .collect(),
    }
    .into_iter()
    .map(|j| RunView {
        id: run_id_of(j),
        trigger: j.spec["labels"][crate::triggers::TRIGGER_LABEL]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        job: j.name.clone(),
        status: match j.status {
            Some(BatchStatus::Complete) => "complete",
            Some(BatchStatus::Failed) => "failed",
            _ => "running",
        }
        .to_owned(),
        started: j.created_at.clone(),
        tasks_complete: j.tasks_complete.unwrap_or(0),
        tasks_failed: j.tasks_failed.unwrap_or(0),
        parent: j.spec["labels"][crate::triggers::PARENT_LABEL]
            .as_str()
            .map(str::to_owned),
    })
    .collect();
    out.sort_by(|a, b| a.started.cmp(&b.started).then(a.id.cmp(&b.id)));
    Ok(Json(out))
}
