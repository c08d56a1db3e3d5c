//! The OpenStack Load Balancer API (Octavia v2) under `/v2.0/lbaas/` and `/v2/lbaas/`: load
//! balancers, listeners, pools, members (`/pools/<id>/members`), health monitors and the status tree
//! (`/loadbalancers/<id>/status`), as python-octaviaclient drives it.
//!
//! Bodies are checked against the attribute maps of `model::lbaas` (this module words refusals as
//! Octavia does) and errors are WSME faults, `{"faultcode": "Client", "faultstring": "...",
//! "debuginfo": null}`, with Octavia's status codes. Lists take filters on any attribute, `fields`,
//! `limit`/`marker`/`page_reverse` and sorting (`sort=key:dir,...` or `sort_key`/`sort_dir`); a
//! caller sees the objects of its project only (admins all), as elsewhere. [`plans`] holds what
//! creating, changing and deleting each object means.
//!
//! Statuses, without Octavia's asynchronous worker: the store write is the provisioning, so every
//! object is `ACTIVE` when the answer is sent (never `PENDING_*`, so writes never meet Octavia's 409
//! "immutable"). `operating_status` is derived when an object is shown: `OFFLINE` when its
//! `admin_state_up` is false, else `ONLINE` — except members: `NO_MONITOR` while their pool has no
//! health monitor, otherwise what the monitor found, which agents will write into the member's
//! internal `_health` field (`ONLINE` or `ERROR`); `OFFLINE` until then, as Octavia shows a
//! monitored member before its first health report.
//!
//! Objects are stored under `/r/<collection>/<id>` (`nb_keys::LOADBALANCERS`, ...), with internal
//! fields naming their parents (`_loadbalancer_id`, `_pool_id`) and their load balancer's VIP network
//! (`_vip_network_id`), by which agents will follow them.

mod plans;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use model::ResourceDef;
use model::lbaas::{HEALTHMONITOR, LISTENER, LOADBALANCER, MEMBER, POOL, python_str};
use model::validate::{Refusal, echo};
use serde_json::{Map, Value, json};

use crate::context::Ctx;
use crate::error::{ApiError, ApiResult};
use crate::limits::RequestBody;
use crate::query::{self, Query};
use crate::repo::{Attempts, Obj, Plan, Stored, str_field};
use crate::{Api, host};

/// Plans (`$plan` is the plan in `$body`) and commits a call, planning again after losing a race
/// (a macro: the plans borrow the request's state across awaits).
macro_rules! transact {
    ($api:expr, $plan:ident => $body:expr) => {{
        let mut attempts = Attempts::new();
        loop {
            attempts.begin()?;
            let mut $plan = Plan::default();
            let out = $body;
            if $api.db.commit($plan).await? {
                break out;
            }
        }
    }};
}

/// An error answered as Octavia's WSME fault.
struct Fault(ApiError);

impl IntoResponse for Fault {
    fn into_response(self) -> Response {
        let code = if self.0.status.is_server_error() {
            "Server"
        } else {
            "Client"
        };
        let body = json!({"faultcode": code, "faultstring": self.0.message, "debuginfo": null});
        (self.0.status, axum::Json(body)).into_response()
    }
}

/// An answer of one object.
fn one(status: StatusCode, def: &ResourceDef, obj: Obj) -> (StatusCode, Value) {
    (status, json!({def.singular: query::render(obj, &[])}))
}

fn reply(result: ApiResult<(StatusCode, Value)>) -> Response {
    match result {
        Ok((status, Value::Null)) => status.into_response(),
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(e) => Fault(e).into_response(),
    }
}

/// 404 `<Kind> <id> not found.`
fn not_found(def: &ResourceDef, id: &str) -> ApiError {
    ApiError::not_found("", format!("{} {} not found.", def.error_name, echo(id)))
}

/// 400 with Octavia's text.
fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request(message)
}

/// 400 `Validation failure: ...`.
fn validation(message: impl std::fmt::Display) -> ApiError {
    bad(format!("Validation failure: {message}"))
}

/// The name of the WSME argument a body is read into, as Octavia's refusals name it.
fn argument(def: &ResourceDef) -> &'static str {
    match def.collection {
        "loadbalancers" => "load_balancer",
        "listeners" => "listener_",
        "pools" => "pool_",
        "members" => "member_",
        _ => "health_monitor_",
    }
}

/// The routes, under both version prefixes.
pub fn routes(mut router: Router<Api>) -> Router<Api> {
    for base in ["/v2.0/lbaas", "/v2/lbaas"] {
        for def in [&LOADBALANCER, &LISTENER, &POOL, &HEALTHMONITOR] {
            router = router
                .route(
                    &format!("{base}/{}", def.path),
                    get(
                        move |State(api): State<Api>, headers: HeaderMap, RawQuery(q): RawQuery| {
                            list(api, headers, q, def, None)
                        },
                    )
                    .post(
                        move |State(api): State<Api>, headers: HeaderMap, body: RequestBody| {
                            create(api, headers, body, def, None)
                        },
                    ),
                )
                .route(
                    &format!("{base}/{}/{{id}}", def.path),
                    get(
                        move |State(api): State<Api>,
                              Path(id): Path<String>,
                              headers: HeaderMap,
                              RawQuery(q): RawQuery| {
                            show(api, headers, q, def, None, id)
                        },
                    )
                    .put(
                        move |State(api): State<Api>,
                              Path(id): Path<String>,
                              headers: HeaderMap,
                              body: RequestBody| {
                            update(api, headers, body, def, None, id)
                        },
                    )
                    .delete(
                        move |State(api): State<Api>,
                              Path(id): Path<String>,
                              headers: HeaderMap,
                              RawQuery(q): RawQuery| {
                            delete(api, headers, q, def, None, id)
                        },
                    ),
                );
        }
        router = router
            .route(
                &format!("{base}/loadbalancers/{{id}}/status"),
                get(status_tree),
            )
            .route(
                &format!("{base}/pools/{{pool}}/members"),
                get(
                    |State(api): State<Api>,
                     Path(pool): Path<String>,
                     headers: HeaderMap,
                     RawQuery(q): RawQuery| {
                        list(api, headers, q, &MEMBER, Some(pool))
                    },
                )
                .post(
                    |State(api): State<Api>,
                     Path(pool): Path<String>,
                     headers: HeaderMap,
                     body: RequestBody| {
                        create(api, headers, body, &MEMBER, Some(pool))
                    },
                ),
            )
            .route(
                &format!("{base}/pools/{{pool}}/members/{{id}}"),
                get(
                    |State(api): State<Api>,
                     Path((pool, id)): Path<(String, String)>,
                     headers: HeaderMap,
                     RawQuery(q): RawQuery| {
                        show(api, headers, q, &MEMBER, Some(pool), id)
                    },
                )
                .put(
                    |State(api): State<Api>,
                     Path((pool, id)): Path<(String, String)>,
                     headers: HeaderMap,
                     body: RequestBody| {
                        update(api, headers, body, &MEMBER, Some(pool), id)
                    },
                )
                .delete(
                    |State(api): State<Api>,
                     Path((pool, id)): Path<(String, String)>,
                     headers: HeaderMap,
                     RawQuery(q): RawQuery| {
                        delete(api, headers, q, &MEMBER, Some(pool), id)
                    },
                ),
            );
    }
    router
}

async fn list(
    api: Api,
    headers: HeaderMap,
    q: Option<String>,
    def: &'static ResourceDef,
    pool: Option<String>,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            let q = Query::parse(q.as_deref());
            let mut url = format!("{}/v2.0/lbaas/{}", host(&headers), def.path);
            let items = match &pool {
                Some(pool) => {
                    let pool = api.octavia_visible(&ctx, &POOL, pool).await?;
                    url = format!("{}/v2.0/lbaas/pools/{}/members", host(&headers), pool.id());
                    let ids = plans::ids(&pool.obj, "members");
                    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
                    let mut members = api.db.load_many(&MEMBER, &ids).await?;
                    members.sort_by(|a, b| a.id().cmp(b.id()));
                    present_members(&pool.obj, members)
                }
                None => api
                    .db
                    .list(def)
                    .await?
                    .into_iter()
                    .map(|s| shown(s.obj))
                    .collect(),
            };
            Ok((StatusCode::OK, listed(&ctx, def, &q, &url, items)?))
        }
        .await,
    )
}

/// Filters by parent that name internal fields.
const PARENT_FILTERS: &[(&str, &str)] = &[
    ("loadbalancer_id", "_loadbalancer_id"),
    ("pool_id", "_pool_id"),
];

/// The visible objects of `items` that pass the query, sorted, paged and rendered.
fn listed(ctx: &Ctx, def: &ResourceDef, q: &Query, url: &str, items: Vec<Obj>) -> ApiResult<Value> {
    let mut pairs = Vec::with_capacity(q.0.len());
    for (name, value) in &q.0 {
        if name == "sort" {
            for part in value.split(',').filter(|p| !p.is_empty()) {
                let (key, dir) = part.split_once(':').unwrap_or((part, "asc"));
                if dir != "asc" && dir != "desc" {
                    return Err(bad(format!(
                        "Supplied sort direction '{}' is not valid.",
                        echo(dir)
                    )));
                }
                pairs.push(("sort_key".to_string(), key.to_string()));
                pairs.push(("sort_dir".to_string(), dir.to_string()));
            }
            continue;
        }
        let parent = PARENT_FILTERS
            .iter()
            .find(|(p, _)| p == name)
            .map(|(_, f)| f.to_string());
        if parent.is_none() && !query::CONTROL.contains(&name.as_str()) && def.attr(name).is_none()
        {
            return Err(bad("One or more arguments are either duplicate or invalid"));
        }
        pairs.push((parent.unwrap_or_else(|| name.clone()), value.clone()));
    }
    let q = Query(pairs);
    let items: Vec<Obj> = items
        .into_iter()
        .filter(|o| ctx.owns(o) && query::passes(&q, o))
        .collect();
    if let Some(marker) = q.first("marker").filter(|m| !m.is_empty())
        && !items.iter().any(|o| str_field(o, "id") == marker)
    {
        return Err(bad(format!(
            "Supplied pagination marker '{}' is not valid.",
            echo(marker)
        )));
    }
    let (rendered, links) = query::page(def, &q, url, items)?;
    Ok(
        json!({def.collection: rendered, format!("{}_links", def.collection): links.unwrap_or(json!([]))}),
    )
}

async fn show(
    api: Api,
    headers: HeaderMap,
    q: Option<String>,
    def: &'static ResourceDef,
    pool: Option<String>,
    id: String,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            let q = Query::parse(q.as_deref());
            let obj = api.octavia_shown(&ctx, def, pool.as_deref(), &id).await?;
            Ok((
                StatusCode::OK,
                json!({def.singular: query::render(obj, &q.fields())}),
            ))
        }
        .await,
    )
}

async fn create(
    api: Api,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
    def: &'static ResourceDef,
    pool: Option<String>,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            let given = body_of(def, &body)?;
            let mut obj = prepare_create(def, &ctx, given)?;
            if let Some(pool) = &pool {
                obj.insert("_pool_id".into(), json!(pool));
            }
            let created = transact!(api, plan => plans::create(&api, &ctx, def, obj.clone(), &mut plan).await?);
            let obj = api
                .octavia_shown(&ctx, def, pool.as_deref(), str_field(&created, "id"))
                .await?;
            // Octavia answers before its worker provisions the object, which sets `updated_at`.
            let mut obj = obj;
            obj.insert("updated_at".into(), Value::Null);
            Ok(one(StatusCode::CREATED, def, obj))
        }
        .await,
    )
}

async fn update(
    api: Api,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
    def: &'static ResourceDef,
    pool: Option<String>,
    id: String,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            let changes = prepare_update(def, body_of(def, &body)?)?;
            transact!(api, plan => {
                let stored = api.octavia_owned(&ctx, def, pool.as_deref(), &id).await?;
                plans::update(&api, def, stored, changes.clone(), &mut plan).await?
            });
            let obj = api.octavia_shown(&ctx, def, pool.as_deref(), &id).await?;
            Ok(one(StatusCode::OK, def, obj))
        }
        .await,
    )
}

async fn delete(
    api: Api,
    headers: HeaderMap,
    q: Option<String>,
    def: &'static ResourceDef,
    pool: Option<String>,
    id: String,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            let cascade = Query::parse(q.as_deref())
                .first("cascade")
                .is_some_and(|c| c.eq_ignore_ascii_case("true"));
            transact!(api, plan => {
                let stored = api.octavia_owned(&ctx, def, pool.as_deref(), &id).await?;
                plans::delete(&api, def, stored, cascade, &mut plan).await?
            });
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        .await,
    )
}

/// `GET .../loadbalancers/<id>/status`: the load balancer, its listeners, their pools, the pools'
/// monitors and members, with their statuses.
async fn status_tree(
    State(api): State<Api>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let ctx = api.ctx(&headers).await?;
            let lb = api.octavia_shown(&ctx, &LOADBALANCER, None, &id).await?;
            let mut listeners = Vec::new();
            let pools = plans::children(&api, &lb, "pools", &POOL).await?;
            for listener in plans::children(&api, &lb, "listeners", &LISTENER).await? {
                let mut entries = Vec::new();
                for pool in pools.iter().filter(|p| {
                    plans::ids(&p.obj, "listeners")
                        .iter()
                        .any(|l| l == listener.id())
                }) {
                    let members = plans::children(&api, &pool.obj, "members", &MEMBER).await?;
                    let members = present_members(&pool.obj, members);
                    let mut entry =
                        status_entry(&with_members(shown(pool.obj.clone()), &members), &[]);
                    let monitor = str_field(&pool.obj, "healthmonitor_id");
                    if let Some(hm) = api.db.load(&HEALTHMONITOR, monitor).await? {
                        let hm = status_entry(&shown(hm.obj), &["type"]);
                        entry.insert("health_monitor".into(), Value::Object(hm));
                    }
                    let members: Vec<Value> = members
                        .iter()
                        .map(|m| Value::Object(status_entry(m, &["address", "protocol_port"])))
                        .collect();
                    entry.insert("members".into(), Value::Array(members));
                    entries.push(Value::Object(entry));
                }
                let mut entry = status_entry(&rolled_up(shown(listener.obj), &entries), &[]);
                entry.insert("pools".into(), Value::Array(entries));
                listeners.push(Value::Object(entry));
            }
            let mut tree = status_entry(&rolled_up(lb, &listeners), &[]);
            tree.insert("listeners".into(), Value::Array(listeners));
            Ok((StatusCode::OK, json!({"statuses": {"loadbalancer": tree}})))
        }
        .await,
    )
}

/// An object's entry in the status tree: id, name, statuses and `extra` attributes.
fn status_entry(obj: &Obj, extra: &[&str]) -> Map<String, Value> {
    ["id", "name", "provisioning_status", "operating_status"]
        .iter()
        .chain(extra)
        .map(|k| (k.to_string(), obj.get(*k).cloned().unwrap_or(Value::Null)))
        .collect()
}

/// An object that is not a member as shown: its `operating_status` says whether it is
/// administratively up.
fn shown(mut obj: Obj) -> Obj {
    // Octavia leaves out a pool's monitor until it has one.
    if obj.get("healthmonitor_id") == Some(&Value::Null) {
        obj.remove("healthmonitor_id");
    }
    let up = obj.get("admin_state_up") != Some(&Value::Bool(false));
    let status = if up { "ONLINE" } else { "OFFLINE" };
    obj.insert("operating_status".into(), json!(status));
    obj
}

/// A pool as shown with its members' health: `ERROR` when every member that is up was found
/// failing, `DEGRADED` when some were (Octavia's roll-up); otherwise as it was.
fn with_members(mut pool: Obj, members: &[Obj]) -> Obj {
    if pool.get("operating_status") != Some(&json!("ONLINE")) {
        return pool;
    }
    let up: Vec<&str> = members
        .iter()
        .map(|m| str_field(m, "operating_status"))
        .filter(|s| *s != "OFFLINE")
        .collect();
    let failing = up.iter().filter(|s| **s == "ERROR").count();
    let status = match failing {
        0 => return pool,
        n if n == up.len() => "ERROR",
        _ => "DEGRADED",
    };
    pool.insert("operating_status".into(), json!(status));
    pool
}

/// A listener or load balancer as shown with its children's statuses (entries of the status
/// tree): `DEGRADED` when one of them is not `ONLINE` (nor `OFFLINE`, which is their own choice).
fn rolled_up(mut obj: Obj, children: &[Value]) -> Obj {
    let degraded = children
        .iter()
        .any(|c| matches!(c["operating_status"].as_str(), Some("ERROR" | "DEGRADED")));
    if degraded && obj.get("operating_status") == Some(&json!("ONLINE")) {
        obj.insert("operating_status".into(), json!("DEGRADED"));
    }
    obj
}

/// The members of `pool` as shown: their `operating_status` is `OFFLINE` when they are down,
/// `NO_MONITOR` without a monitor on the pool, otherwise what agents reported (`_health`), or
/// `OFFLINE` before the first report.
fn present_members(pool: &Obj, members: Vec<Stored>) -> Vec<Obj> {
    let monitored = !str_field(pool, "healthmonitor_id").is_empty();
    members
        .into_iter()
        .map(|m| {
            let mut obj = m.obj;
            let up = obj.get("admin_state_up") != Some(&Value::Bool(false));
            let status = match (up, monitored, str_field(&obj, "_health")) {
                (false, _, _) => "OFFLINE",
                (true, false, _) => "NO_MONITOR",
                (true, true, "") => "OFFLINE",
                (true, true, health) => health,
            }
            .to_string();
            obj.insert("operating_status".into(), json!(status));
            obj
        })
        .collect()
}

impl Api {
    /// An object the caller may see (of pool `pool`, for members), or 404.
    async fn octavia_visible(&self, ctx: &Ctx, def: &ResourceDef, id: &str) -> ApiResult<Stored> {
        match self.db.load(def, id).await? {
            Some(s) if ctx.owns(&s.obj) => Ok(s),
            _ => Err(not_found(def, id)),
        }
    }

    /// An object the caller may change: visible (a member in the pool of the path), and writable.
    async fn octavia_owned(
        &self,
        ctx: &Ctx,
        def: &ResourceDef,
        pool: Option<&str>,
        id: &str,
    ) -> ApiResult<Stored> {
        if let Some(pool) = pool {
            self.octavia_visible(ctx, &POOL, pool).await?;
        }
        let stored = self.octavia_visible(ctx, def, id).await?;
        if pool.is_some_and(|p| p != str_field(&stored.obj, "_pool_id")) {
            return Err(not_found(def, id));
        }
        if ctx.read_only {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "",
                "Policy does not allow this request to be performed.",
            ));
        }
        Ok(stored)
    }

    /// An object as shown, with its `operating_status`.
    async fn octavia_shown(
        &self,
        ctx: &Ctx,
        def: &ResourceDef,
        pool: Option<&str>,
        id: &str,
    ) -> ApiResult<Obj> {
        let stored = match pool {
            Some(pool) => {
                let pool = self.octavia_visible(ctx, &POOL, pool).await?;
                let member = self.octavia_visible(ctx, def, id).await?;
                if str_field(&member.obj, "_pool_id") != pool.id() {
                    return Err(not_found(def, id));
                }
                return Ok(present_members(&pool.obj, vec![member])
                    .pop()
                    .unwrap_or_default());
            }
            None => self.octavia_visible(ctx, def, id).await?,
        };
        if def.collection == POOL.collection {
            let members = plans::children(self, &stored.obj, "members", &MEMBER).await?;
            let members = present_members(&stored.obj, members);
            return Ok(with_members(shown(stored.obj), &members));
        }
        Ok(shown(stored.obj))
    }
}

/// The object of a body `{"<singular>": {...}}`.
fn body_of(def: &ResourceDef, body: &[u8]) -> ApiResult<Obj> {
    let value: Value =
        serde_json::from_slice(body).map_err(|_| bad("Request is not in valid JSON format"))?;
    let Value::Object(map) = value else {
        return Err(bad("Request is not in valid JSON format"));
    };
    if let Some(other) = map.keys().find(|k| *k != def.singular) {
        return Err(bad(format!(
            "Unknown attribute for argument {}: {}",
            argument(def),
            echo(other)
        )));
    }
    match map.get(def.singular) {
        Some(Value::Object(obj)) => Ok(obj.clone()),
        given => Err(invalid(
            def.singular,
            given.unwrap_or(&Value::Null),
            "Mandatory field missing.",
        )),
    }
}

/// 400 `Invalid input for field/attribute <name>. Value: '<value>'. <why>`.
fn invalid(name: &str, value: &Value, why: &str) -> ApiError {
    bad(format!(
        "Invalid input for field/attribute {name}. Value: '{}'. {why}",
        python_str(value)
    ))
}

/// Checks the attributes of a body: known, allowed in this request (`allowed`), valid.
fn check_given(def: &ResourceDef, given: &Obj, allowed: fn(&model::Attr) -> bool) -> ApiResult<()> {
    for (name, value) in given {
        let Some(attr) = def.attr(name).filter(|a| allowed(a)) else {
            return Err(bad(format!(
                "Unknown attribute for argument {}.{}: {}",
                argument(def),
                def.singular,
                echo(name)
            )));
        };
        if let Err(refusal) = (attr.validate.check)(value) {
            let why = match refusal {
                Refusal::Invalid(why) => why,
                other => other.to_string(),
            };
            return Err(invalid(name, value, &why));
        }
    }
    Ok(())
}

/// A create body made complete: checked values, defaults, id, project, timestamps and `ACTIVE`.
/// Attributes whose default is computed are left out for [`plans`] to fill in; a null given is
/// as good as nothing given.
fn prepare_create(def: &ResourceDef, ctx: &Ctx, mut given: Obj) -> ApiResult<Obj> {
    given.retain(|_, v| !v.is_null());
    check_given(def, &given, |a| a.post)?;
    let mut obj = Map::new();
    for attr in def.all_attrs() {
        match (given.remove(attr.name), attr.default) {
            (Some(v), _) => {
                obj.insert(attr.name.to_string(), v);
            }
            (None, model::Default::Required) => {
                return Err(invalid(attr.name, &Value::Null, "Mandatory field missing."));
            }
            (None, default @ model::Default::Json(_)) => {
                obj.insert(
                    attr.name.to_string(),
                    default.value().unwrap_or(Value::Null),
                );
            }
            (None, model::Default::Computed) => {}
        }
    }
    let project = match obj.get("project_id") {
        Some(Value::String(p)) => p.clone(),
        _ => ctx.project_id.clone(),
    };
    if (project != ctx.project_id && !ctx.is_admin) || ctx.read_only {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "",
            "Policy does not allow this request to be performed.",
        ));
    }
    obj.insert("id".into(), crate::repo::new_id().into());
    obj.insert("project_id".into(), project.clone().into());
    obj.insert("tenant_id".into(), project.into());
    let created = now();
    obj.insert("created_at".into(), created.clone().into());
    // Provisioned as it is stored, as Octavia's worker marks an object ACTIVE (the create's answer
    // still shows null, as Octavia's does).
    obj.insert("updated_at".into(), created.into());
    obj.insert("provisioning_status".into(), "ACTIVE".into());
    Ok(obj)
}

/// An update body checked: every attribute known, updatable and valid.
fn prepare_update(def: &ResourceDef, given: Obj) -> ApiResult<Obj> {
    check_given(def, &given, |a| a.put)?;
    Ok(given)
}

/// The current time as Octavia shows it: `2026-12-06T16:50:40.608080` (UTC, no zone).
fn now() -> String {
    let text = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    text.trim_end_matches('Z').to_string()
}
