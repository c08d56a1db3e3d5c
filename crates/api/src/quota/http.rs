//! The quotas API, as Neutron's `quotas` and `quota_details` extensions have it:
//! `GET /v2.0/quotas` (the projects with limits of their own), `GET`, `PUT` and `DELETE
//! /v2.0/quotas/<project>`, `GET /v2.0/quotas/<project>/details` (limit, used and reserved per
//! resource) and `/default`, and `GET /v2.0/quotas/project` (or `/tenant`): the caller's project.
//!
//! Policy as Neutron's defaults: anyone reads the quota of their own project (its limits, details
//! and defaults); only admins read another project's (403 `PolicyNotAuthorized` `get_quota`; the
//! details answer 403 `AdminRequired`), list the projects' quotas, and change or delete a quota.
//! A change that sets a limit below what the project already uses is refused (400) unless it says
//! `"force": true`; the check and the change are one transaction that pins the project's usage
//! counters, so no create slips in between. Deleting a project's quota returns it to the defaults.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use model::quotas;
use model::validate::echo;
use serde_json::{Map, Value, json};

use super::usage::Counters;
use super::{LIMITS_PREFIX, ProjectLimits, StoredLimits, limits_key};
use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::limits::RequestBody;
use crate::repo::{Attempts, Plan};
use crate::{Api, input, parse_body, reply};

/// Only admins, and callers asking about their own project, may read a project's quota.
fn may_read(ctx: &Ctx, project: &str) -> bool {
    ctx.is_admin || ctx.project_id == project
}

/// `GET /v2.0/quotas`: every project with limits of its own, each with all its limits.
pub async fn list(State(api): State<Api>, headers: HeaderMap) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            if !ctx.is_admin {
                return Err(ApiError::policy("get_quota"));
            }
            let (kvs, _) = api.db.store.range(LIMITS_PREFIX).await?;
            let mut listed = Vec::with_capacity(kvs.len());
            for kv in kvs {
                let stored: StoredLimits = serde_json::from_slice(&kv.value).map_err(|e| {
                    ApiError::internal(format!("corrupt quota limits under {}: {e}", kv.key))
                })?;
                let own = ProjectLimits {
                    set: stored.limits,
                    rev: kv.mod_revision,
                };
                let mut shown = own.shown(&api.db.quotas);
                shown.insert("project_id".into(), stored.project_id.clone().into());
                shown.insert("tenant_id".into(), stored.project_id.into());
                listed.push(Value::Object(shown));
            }
            Ok((StatusCode::OK, json!({ "quotas": listed })))
        }
        .await,
    )
}

/// `POST /v2.0/quotas`: Neutron does not create quotas this way either.
pub async fn create() -> Response {
    reply(Err(ApiError::new(
        StatusCode::NOT_IMPLEMENTED,
        "HTTPNotImplemented",
        "POST requests are not supported on this resource.",
    )))
}

/// `GET /v2.0/quotas/<project>`: the project's limits; `GET /v2.0/quotas/project` (and `/tenant`):
/// the caller's project.
pub async fn show(
    State(api): State<Api>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            if let "project" | "tenant" = project.as_str() {
                let id = format!("{project}_id");
                return Ok((StatusCode::OK, json!({ project: { id: ctx.project_id } })));
            }
            if !may_read(&ctx, &project) {
                return Err(ApiError::policy("get_quota"));
            }
            let own = ProjectLimits::read(api.db.store.as_ref(), &project).await?;
            Ok((StatusCode::OK, json!({"quota": own.shown(&api.db.quotas)})))
        }
        .await,
    )
}

/// `GET /v2.0/quotas/<project>/details` and `/default`.
pub async fn action(
    State(api): State<Api>,
    Path((project, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            let quota = match action.as_str() {
                "details" => details(&api, &ctx, &project).await?,
                "default" if may_read(&ctx, &project) => {
                    ProjectLimits::default().shown(&api.db.quotas)
                }
                "default" => return Err(ApiError::policy("get_quota")),
                _ => {
                    return Err(ApiError::no_such_resource());
                }
            };
            Ok((StatusCode::OK, json!({ "quota": quota })))
        }
        .await,
    )
}

/// Each resource's limit, usage and reservations (Wyvern reserves nothing: always 0).
async fn details(api: &Api, ctx: &Ctx, project: &str) -> ApiResult<Map<String, Value>> {
    if !may_read(ctx, project) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "AdminRequired",
            "User does not have admin privileges: Only admin is authorized to access quotas for \
             another project.",
        ));
    }
    let store = api.db.store.as_ref();
    let own = ProjectLimits::read(store, project).await?;
    let counters = Counters::read_project(store, project).await?;
    let limits = own.shown(&api.db.quotas);
    Ok(limits
        .into_iter()
        .map(|(name, limit)| {
            let used = counters.get(&name).map_or(0, Counters::total);
            let detail = json!({"limit": limit, "used": used, "reserved": 0});
            (name, detail)
        })
        .collect())
}

/// `PUT /v2.0/quotas/<project>`: changes some of the project's limits; answers all of them.
pub async fn update(
    State(api): State<Api>,
    Path(project): Path<String>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            if !ctx.is_admin {
                return Err(ApiError::policy("update_quota"));
            }
            let (changes, force) = requested_limits(&parse_body(&body)?)?;
            let quota = set_limits(&api, &project, &changes, force).await?;
            Ok((StatusCode::OK, json!({ "quota": quota })))
        }
        .await,
    )
}

/// The limits a `PUT` body asks for, checked, and whether it says `"force": true`
/// (`check_limit`, which Neutron no longer needs, is ignored as Neutron ignores it).
fn requested_limits(body: &Value) -> ApiResult<(BTreeMap<&'static str, i64>, bool)> {
    let Some(Value::Object(given)) = body.get("quota") else {
        return Err(ApiError::bad_request(
            "Unable to find 'quota' in request body",
        ));
    };
    let mut given = given.clone();
    let force = given.remove("force") == Some(Value::Bool(true));
    given.remove("check_limit");
    let unknown: Vec<_> = given
        .keys()
        .filter(|k| quotas::by_name(k).is_none())
        .map(|k| echo(k))
        .collect();
    if !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Unrecognized attribute(s) '{}'",
            unknown.join(", ")
        )));
    }
    let mut changes = BTreeMap::new();
    for resource in quotas::ALL {
        if let Some(value) = given.get(resource.name) {
            let limit = quotas::limit(value).map_err(|why| input::invalid(resource.name, why))?;
            changes.insert(resource.name, limit);
        }
    }
    Ok((changes, force))
}

/// Writes the project's new limits; unless `force`, each finite one must be at least the usage,
/// checked in the same transaction as the write (the usage counters pinned).
async fn set_limits(
    api: &Api,
    project: &str,
    changes: &BTreeMap<&'static str, i64>,
    force: bool,
) -> ApiResult<Map<String, Value>> {
    let store = api.db.store.as_ref();
    let mut attempts = Attempts::new();
    loop {
        attempts.begin()?;
        let own = ProjectLimits::read(store, project).await?;
        if changes.is_empty() {
            return Ok(own.shown(&api.db.quotas));
        }
        let mut plan = Plan::default();
        if !force {
            let counters = Counters::read_project(store, project).await?;
            for (&resource, &limit) in changes {
                let counted = quotas::by_name(resource).is_some_and(|r| r.counts.is_some());
                if limit < 0 || !counted {
                    continue;
                }
                let usage = counters.get(resource).cloned().unwrap_or_default();
                let used = usage.total();
                if used > limit {
                    return Err(ApiError::bad_request(format!(
                        "Quota limit {limit} for {resource} must be greater than or equal to \
                         already used {used}"
                    )));
                }
                for (key, rev) in usage.pins(project, resource) {
                    plan.pin(key, rev);
                }
            }
        }
        let mut set = own.set.clone();
        set.extend(
            changes
                .iter()
                .map(|(name, limit)| (name.to_string(), *limit)),
        );
        let stored = StoredLimits {
            project_id: project.to_string(),
            limits: set.clone(),
        };
        let value = serde_json::to_vec(&stored).unwrap_or_default();
        plan.put_key(limits_key(project), own.rev, value);
        if api.db.commit(plan).await? {
            let new = ProjectLimits { set, rev: 0 };
            return Ok(new.shown(&api.db.quotas));
        }
    }
}

/// `DELETE /v2.0/quotas/<project>`: the project's limits return to the defaults; 404
/// `TenantQuotaNotFound` when it has none of its own.
pub async fn delete(
    State(api): State<Api>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            if !ctx.is_admin {
                return Err(ApiError::policy("delete_quota"));
            }
            let mut attempts = Attempts::new();
            loop {
                attempts.begin()?;
                let own = ProjectLimits::read(api.db.store.as_ref(), &project).await?;
                if own.rev == 0 {
                    return Err(ApiError::not_found(
                        "TenantQuotaNotFound",
                        format!("Quota for project {} could not be found.", echo(&project)),
                    ));
                }
                let mut plan = Plan::default();
                plan.pin(limits_key(&project), own.rev);
                plan.release(limits_key(&project));
                if api.db.commit(plan).await? {
                    return Ok((StatusCode::NO_CONTENT, Value::Null));
                }
            }
        }
        .await,
    )
}
