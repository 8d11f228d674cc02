//! `GET /v1/summary`, and the filtered, paged lists `GET /v1/nodes` and
//! `GET /v1/jobs` (what the web UI asks for).
//!
//! The summary is answered from the node core's [`shoal_core::Summary`],
//! kept member change by member change: a request costs O(groups), not
//! O(members). The lists take `limit` and `offset` and give the number of
//! items that match in `X-Total-Count`; the body stays an array, as
//! without them. A parameter that does not parse, an unknown one, or a
//! `limit` over [`MAX_LIMIT`] is a 400 naming it.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shoal_gossip::{MemberInfo, MemberState};
use shoal_model::acl::{Access, Resource};
use shoal_placement::Resources;
use shoal_state::JobView;

use super::{ApiError, ApiState, node_view};
use crate::usage::ZoneUsage;

/// The largest `limit` a list accepts: page with `offset` past it.
pub const MAX_LIMIT: usize = 1000;

/// The header that carries the number of items matching a list's filters.
pub const TOTAL_COUNT: &str = "x-total-count";

/// Resources summed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ResourcesView {
    /// Cores (fractional).
    pub cpus: f64,
    /// Memory, MiB.
    pub memory_mb: u64,
    /// Disk, MiB.
    pub disk_mb: u64,
    /// GPUs.
    pub gpus: u64,
}

impl ResourcesView {
    fn of(f: shoal_core::Figures) -> ResourcesView {
        ResourcesView {
            cpus: milli(f.cpus_milli),
            memory_mb: f.memory_mb,
            disk_mb: f.disk_mb,
            gpus: f.gpus,
        }
    }

    fn of_placer(r: Resources) -> ResourcesView {
        ResourcesView {
            cpus: milli(r.cpus_milli),
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
            gpus: r.gpus,
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn milli(m: u64) -> f64 {
    m as f64 / 1000.0
}

/// Members by state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MemberCounts {
    /// Alive.
    pub alive: u64,
    /// Suspect.
    pub suspect: u64,
    /// Failed.
    pub failed: u64,
    /// Left.
    pub left: u64,
}

/// One group of members (the cluster, a datacenter, a zone).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct GroupView {
    /// The datacenter (in `groups`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dc: Option<String>,
    /// The zone (in a datacenter's `zones`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// Members by state.
    pub members: MemberCounts,
    /// Live (alive or suspect) members whose metadata is known: the ones
    /// whose resources are summed.
    pub nodes: u64,
    /// Of those, the draining ones.
    pub draining: u64,
    /// Resources they offer.
    pub capacity: ResourcesView,
    /// Resources estimated allocated, from each member's gossiped free
    /// class (see docs/api.md).
    pub allocated_estimate: ResourcesView,
    /// Resources in use as measured on the nodes (CPU busy, memory in
    /// use, disk filled since the agent started, GPUs held), summed by
    /// each zone's aggregator from its members' reports (see docs/api.md).
    pub used: ResourcesView,
    /// Nodes whose measured usage is in `used` (at most `nodes`; fewer
    /// while a report or an aggregator's answer is missing).
    pub used_nodes: u64,
    /// The datacenter's zones (with `group_by=dc,zone`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(no_recursion)]
    pub zones: Option<Vec<GroupView>>,
}

impl GroupView {
    fn of(g: &shoal_core::Group) -> GroupView {
        GroupView {
            dc: None,
            zone: None,
            members: MemberCounts {
                alive: g.members.alive,
                suspect: g.members.suspect,
                failed: g.members.failed,
                left: g.members.left,
            },
            nodes: g.nodes,
            draining: g.draining,
            capacity: ResourcesView::of(g.capacity),
            allocated_estimate: ResourcesView::of(g.allocated_estimate()),
            used: ResourcesView::default(),
            used_nodes: 0,
            zones: None,
        }
    }

    /// Sets the measured usage.
    fn with_used(mut self, z: &ZoneUsage) -> GroupView {
        self.used = ResourcesView::of(shoal_core::Figures {
            cpus_milli: z.used.cpus_milli,
            memory_mb: z.used.memory_mb,
            disk_mb: z.used.disk_mb,
            gpus: z.used.gpus,
        });
        self.used_nodes = z.nodes;
        self
    }
}

/// Which node answered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct NodeRef {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
}

/// The answering node's own figures, exact.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LocalView {
    /// What it offers to tasks.
    pub capacity: ResourcesView,
    /// What the tasks placed on it hold.
    pub allocated: ResourcesView,
}

/// Jobs of the desired state (deleted ones aside).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobCounts {
    /// Every job.
    pub total: u64,
    /// By type (`service`, `batch`, `system`).
    pub by_type: BTreeMap<String, u64>,
    /// By status (see `GET /v1/jobs?status=`).
    pub by_status: BTreeMap<String, u64>,
}

/// `GET /v1/summary`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SummaryView {
    /// The node that answered.
    pub node: NodeRef,
    /// When it answered.
    pub generated_at: String,
    /// When a member's state last changed as that node saw it (`null`:
    /// never since it started).
    pub members_changed_at: Option<String>,
    /// Member changes the node has counted since it started (grows with
    /// each: a UI can skip redrawing when it has not moved).
    pub changes: u64,
    /// Members known.
    pub known: u64,
    /// Members the node places tasks among (its placement ring): the
    /// alive ones, as membership handed them to the placer, at most a
    /// publish period (200 ms) after membership saw them.
    pub placement_members: u64,
    /// How it is grouped: `[]`, `["dc"]` or `["dc", "zone"]`.
    pub group_by: Vec<String>,
    /// Every member.
    pub total: GroupView,
    /// Members whose metadata has not arrived yet (counted in `total`,
    /// in no group).
    pub unknown: GroupView,
    /// The datacenters, by name.
    pub groups: Vec<GroupView>,
    /// The answering node's own figures, exact.
    pub local: LocalView,
    /// Jobs.
    pub jobs: JobCounts,
}

fn bad_param(name: &str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_query",
        format!("{name}: {message}"),
    )
    .with_field(name)
}

/// Refuses parameters other than `known`.
fn only(params: &BTreeMap<String, String>, known: &[&str]) -> Result<(), ApiError> {
    match params.keys().find(|k| !known.contains(&k.as_str())) {
        Some(k) => Err(bad_param(
            k,
            format!(
                "unknown parameter; this endpoint takes {}",
                known.join(", ")
            ),
        )),
        None => Ok(()),
    }
}

/// `GET /v1/summary[?group_by=dc|dc,zone]`.
#[utoipa::path(
    get,
    path = "/v1/summary",
    tag = "nodes",
    summary = "Members by state and the pool's resources, per datacenter and zone, kept incrementally",
    params(("group_by" = Option<String>, Query, description = "`dc` or `dc,zone` (default: no groups)")),
    responses(
        (status = 200, description = "the summary", body = SummaryView),
        (status = 400, description = "a bad or unknown parameter (`invalid_query`, `field` names it)", body = crate::api::types::ErrorBody)
    )
)]
pub async fn summary(
    State(s): State<ApiState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<SummaryView>, ApiError> {
    only(&params, &["group_by"])?;
    let group_by: Vec<String> = match params.get("group_by").map(String::as_str) {
        None | Some("") => Vec::new(),
        Some("dc") => vec!["dc".into()],
        Some("dc,zone") => vec!["dc".into(), "zone".into()],
        Some(other) => {
            return Err(bad_param(
                "group_by",
                format!("must be `dc` or `dc,zone` (got {other:?})"),
            ));
        }
    };
    let reply = s.core.summary().await?;
    let jobs = s.state.jobs_shared(false).await?;
    let snap = &reply.snapshot;
    // Measured usage: one question per zone, to its aggregator.
    let asked: Vec<_> = snap
        .dcs
        .iter()
        .flat_map(|(dc, d)| {
            d.zones
                .iter()
                .filter_map(move |(zone, z)| z.aggregator.map(|a| ((dc.clone(), zone.clone()), a)))
        })
        .collect();
    let live = s.live.borrow().clone();
    let usage = s.usage.zones(reply.me.0, &s.transport, &live, asked).await;
    let none = ZoneUsage::default();
    let zone_usage = |dc: &str, zone: &str| {
        usage
            .get(&(dc.to_owned(), zone.to_owned()))
            .unwrap_or(&none)
    };
    let groups = if group_by.is_empty() {
        Vec::new()
    } else {
        snap.dcs
            .iter()
            .map(|(name, dc)| {
                let used = ZoneUsage::sum(dc.zones.keys().map(|zone| zone_usage(name, zone)));
                let mut g = GroupView::of(&dc.all).with_used(&used);
                g.dc = Some(name.clone());
                if group_by.len() == 2 {
                    g.zones = Some(
                        dc.zones
                            .iter()
                            .map(|(zone, z)| {
                                let mut zv = GroupView::of(z).with_used(zone_usage(name, zone));
                                zv.zone = Some(zone.clone());
                                zv
                            })
                            .collect(),
                    );
                }
                g
            })
            .collect()
    };
    let now = s.clock.now();
    Ok(Json(SummaryView {
        node: NodeRef {
            id: reply.me.0.to_string(),
            name: reply.me.1.clone(),
        },
        generated_at: humantime::format_rfc3339_millis(s.clock.wall(now)).to_string(),
        members_changed_at: reply
            .changed_at
            .map(|at| humantime::format_rfc3339_millis(s.clock.wall(at)).to_string()),
        changes: snap.changes,
        known: reply.members as u64,
        placement_members: reply.placing as u64,
        group_by,
        total: GroupView::of(&snap.total).with_used(&ZoneUsage::sum(usage.values())),
        unknown: GroupView::of(&snap.unknown),
        groups,
        local: LocalView {
            capacity: ResourcesView::of_placer(reply.local.0),
            allocated: ResourcesView::of_placer(reply.local.1),
        },
        jobs: count_jobs(&jobs),
    }))
}

/// A job's status as the list filter and the summary see it: `deleted`,
/// `invalid` (merged edits that do not validate), a batch job's run
/// status (`running`, `complete`, `failed`), else `active`.
pub fn job_status(j: &JobView) -> String {
    if j.deleted {
        return "deleted".into();
    }
    if j.invalid.is_some() {
        return "invalid".into();
    }
    match j
        .status
        .map(|s| serde_json::to_value(s).unwrap_or(Value::Null))
    {
        Some(Value::String(s)) => s,
        _ => "active".into(),
    }
}

fn job_type(j: &JobView) -> String {
    match j
        .kind
        .map(|k| serde_json::to_value(k).unwrap_or(Value::Null))
    {
        Some(Value::String(s)) => s,
        _ => "unknown".into(),
    }
}

fn count_jobs(jobs: &[Arc<JobView>]) -> JobCounts {
    let mut c = JobCounts::default();
    for j in jobs {
        c.total += 1;
        *c.by_type.entry(job_type(j)).or_default() += 1;
        *c.by_status.entry(job_status(j)).or_default() += 1;
    }
    c
}

/// `limit` and `offset`.
struct Page {
    limit: Option<usize>,
    offset: usize,
}

fn number(params: &BTreeMap<String, String>, name: &str) -> Result<Option<usize>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse::<usize>()
                .map_err(|_| bad_param(name, format!("must be a whole number ≥ 0 (got {v:?})")))
        })
        .transpose()
}

impl Page {
    fn parse(params: &BTreeMap<String, String>) -> Result<Page, ApiError> {
        let limit = number(params, "limit")?;
        if let Some(l) = limit
            && l > MAX_LIMIT
        {
            return Err(bad_param(
                "limit",
                format!("at most {MAX_LIMIT} (got {l}); page with offset"),
            ));
        }
        let offset = number(params, "offset")?.unwrap_or(0);
        if i32::try_from(offset).is_err() {
            return Err(bad_param(
                "offset",
                format!("below 2^31 (got {offset}); nothing is that far"),
            ));
        }
        Ok(Page { limit, offset })
    }

    /// The page of `items` (all that match), with their count in the
    /// header.
    fn respond<T: Serialize>(&self, items: Vec<T>) -> Response {
        let total = items.len();
        let page: Vec<T> = items
            .into_iter()
            .skip(self.offset)
            .take(self.limit.unwrap_or(usize::MAX))
            .collect();
        ([(TOTAL_COUNT, total.to_string())], Json(page)).into_response()
    }
}

fn parse_states(v: &str) -> Result<Vec<MemberState>, ApiError> {
    v.split(',')
        .map(|s| match s {
            "alive" => Ok(MemberState::Alive),
            "suspect" => Ok(MemberState::Suspect),
            "failed" => Ok(MemberState::Failed),
            "left" => Ok(MemberState::Left),
            other => Err(bad_param(
                "state",
                format!("must be alive, suspect, failed or left, or several separated by commas (got {other:?})"),
            )),
        })
        .collect()
}

/// Whether member `m` matches `q`: a substring of its name (any case),
/// or a prefix of its id.
fn member_matches(m: &MemberInfo, q: &str) -> bool {
    let q = q.to_lowercase();
    m.identity.id.to_string().starts_with(&q)
        || m.meta
            .as_ref()
            .is_some_and(|x| x.name.to_lowercase().contains(&q))
}

/// `GET /v1/nodes[?state=&dc=&zone=&q=&limit=&offset=]`.
#[utoipa::path(
    get,
    path = "/v1/nodes",
    tag = "nodes",
    summary = "The members this node knows, filtered and paged",
    params(
        ("state" = Option<String>, Query, description = "alive, suspect, failed or left, or several separated by commas"),
        ("dc" = Option<String>, Query, description = "only this datacenter"),
        ("zone" = Option<String>, Query, description = "only this zone"),
        ("q" = Option<String>, Query, description = "a substring of the name (any case) or a prefix of the id"),
        ("limit" = Option<u64>, Query, maximum = 1000, description = "at most this many (up to 1000; default: all)"),
        ("offset" = Option<u32>, Query, description = "skip this many first (below 2^31)")
    ),
    responses(
        (status = 200, description = "the members that match, the page asked for", body = Vec<crate::api::types::NodeView>,
         headers(("X-Total-Count" = u64, description = "how many match in all"))),
        (status = 400, description = "a bad or unknown parameter (`invalid_query`)", body = crate::api::types::ErrorBody)
    )
)]
pub async fn list_nodes(
    State(s): State<ApiState>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    only(&params, &["state", "dc", "zone", "q", "limit", "offset"])?;
    let page = Page::parse(&params)?;
    let states = params.get("state").map(|v| parse_states(v)).transpose()?;
    let dc = params.get("dc");
    let zone = params.get("zone");
    let q = params.get("q").filter(|q| !q.is_empty());
    let members = s.core.members().await?;
    let views: Vec<_> = members
        .iter()
        .filter(|m| states.as_ref().is_none_or(|st| st.contains(&m.state)))
        .filter(|m| dc.is_none_or(|dc| m.meta.as_ref().is_some_and(|x| &x.dc == dc)))
        .filter(|m| zone.is_none_or(|z| m.meta.as_ref().is_some_and(|x| &x.zone == z)))
        .filter(|m| q.is_none_or(|q| member_matches(m, q)))
        .map(|m| node_view(m, &s.clock))
        .collect();
    Ok(page.respond(views))
}

/// `GET /v1/jobs[?deleted=true&status=&type=&q=&limit=&offset=]`.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    summary = "The jobs, filtered and paged",
    params(
        ("deleted" = Option<bool>, Query, description = "deleted jobs too"),
        ("status" = Option<String>, Query, description = "active, running, complete, failed, invalid or deleted"),
        ("type" = Option<String>, Query, description = "service, batch or system"),
        ("q" = Option<String>, Query, description = "a substring of the name"),
        ("limit" = Option<u64>, Query, maximum = 1000, description = "at most this many (up to 1000; default: all)"),
        ("offset" = Option<u32>, Query, description = "skip this many first (below 2^31)")
    ),
    responses(
        (status = 200, description = "the jobs that match, the page asked for", body = Vec<shoal_state::JobView>,
         headers(("X-Total-Count" = u64, description = "how many match in all"))),
        (status = 400, description = "a bad or unknown parameter (`invalid_query`)", body = crate::api::types::ErrorBody)
    )
)]
pub async fn list_jobs(
    State(s): State<ApiState>,
    Extension(caller): Extension<crate::acl::Caller>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Response, ApiError> {
    only(
        &params,
        &["deleted", "status", "type", "q", "limit", "offset"],
    )?;
    let page = Page::parse(&params)?;
    let deleted = match params.get("deleted").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(bad_param(
                "deleted",
                format!("must be true or false (got {other:?})"),
            ));
        }
    };
    const STATUSES: [&str; 6] = [
        "active", "running", "complete", "failed", "invalid", "deleted",
    ];
    let status = params.get("status");
    if let Some(st) = status
        && !STATUSES.contains(&st.as_str())
    {
        return Err(bad_param(
            "status",
            format!("must be one of {} (got {st:?})", STATUSES.join(", ")),
        ));
    }
    const TYPES: [&str; 3] = ["service", "batch", "system"];
    let kind = params.get("type");
    if let Some(t) = kind
        && !TYPES.contains(&t.as_str())
    {
        return Err(bad_param(
            "type",
            format!("must be one of {} (got {t:?})", TYPES.join(", ")),
        ));
    }
    let q = params
        .get("q")
        .filter(|q| !q.is_empty())
        .map(|q| q.to_lowercase());
    // `status=deleted` lists deleted jobs without `deleted=true`.
    let with_deleted = deleted || status.is_some_and(|s| s == "deleted");
    let jobs: Vec<Arc<JobView>> = s
        .state
        .jobs_shared(with_deleted)
        .await?
        .into_iter()
        // A token limited to some prefixes lists those jobs only.
        .filter(|j| caller.grants.allows(Resource::Jobs, &j.name, Access::Read))
        .filter(|j| status.is_none_or(|st| &job_status(j) == st))
        .filter(|j| kind.is_none_or(|t| &job_type(j) == t))
        .filter(|j| {
            q.as_ref()
                .is_none_or(|q| j.name.to_lowercase().contains(q.as_str()))
        })
        .collect();
    Ok(page.respond(jobs))
}
