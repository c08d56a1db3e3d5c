//! The northbound HTTP server: the OpenStack Networking (Neutron v2.0) API over a [`store::Store`].
//!
//! Requests are routed generically by collection name; [`input`] checks bodies against the attribute
//! maps of the `model` crate, [`query`] applies list filters, sorting and paging, and the modules under
//! [`resources`] hold each resource's semantics. Every write is one store transaction. [`openapi`]
//! describes the API from the same attribute maps, at `GET /wyvern/v1/openapi.json`. [`lbaas`] serves
//! the OpenStack Load Balancer API (Octavia v2) under `/v2.0/lbaas/`; [`sfc`] service function
//! chaining (networking-sfc) under `/v2.0/sfc/`, through the generic flow; [`trunks`] Neutron's
//! trunks (VLAN-aware VMs).

mod chassis;
mod connections;
pub mod context;
pub mod error;
mod extensions;
pub mod index;
mod input;
pub mod keystone;
mod lbaas;
mod limits;
mod member_health;
mod metrics;
pub mod openapi;
pub mod query;
pub mod quota;
pub mod repo;
mod resources;
mod sfc;
mod snat;
mod sync;
#[cfg(test)]
mod tests;
mod trunks;

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use model::ResourceDef;
use model::validate::echo;
use serde_json::{Value, json};

pub use context::{AuthConfig, Ctx, Identity};
use error::{ApiError, ApiResult};
pub use limits::Limits;
use limits::RequestBody;
use query::Query;
use repo::{Attempts, Db, Plan, Stored};

/// Server settings.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct ApiConfig {
    #[serde(default)]
    pub auth: AuthConfig,
    /// Request body, connection and timeout limits.
    #[serde(default)]
    pub limits: Limits,
    /// The default quota limits (Neutron's unless given).
    #[serde(default)]
    pub quotas: quota::Defaults,
}

/// Shared state of the server.
#[derive(Clone)]
pub struct Api {
    pub db: Db,
    pub config: Arc<ApiConfig>,
    /// Allocation cursors for addresses and segment ids (hints; claims in the store decide).
    ipam_cursors: Arc<resources::Cursors>,
    /// The one store watch every sync watcher shares.
    watches: store::SharedWatch,
    metrics: Arc<metrics::Metrics>,
    /// The token validator of `config.auth.keystone`.
    keystone: Option<Arc<keystone::Keystone>>,
}

/// Serves the API on `listener` until the process ends, within `config.limits`. First brings the
/// store's indexes and quota usage counters up to date ([`index::rebuild`], [`quota::recount`]);
/// connections wait in the listen backlog meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    store: Arc<dyn store::Store>,
    config: ApiConfig,
) -> Result<(), std::io::Error> {
    index::rebuild(store.as_ref())
        .await
        .map_err(|e| std::io::Error::other(format!("rebuilding the store's indexes: {e}")))?;
    quota::recount(store.as_ref(), &config.quotas)
        .await
        .map_err(|e| std::io::Error::other(format!("recounting the quota usage: {e}")))?;
    let limits = config.limits.clone();
    connections::serve(listener, router(Api::new(store, config)), &limits).await
}

impl Api {
    /// The server's state over `store`, which it wraps once to time every transaction.
    fn new(store: Arc<dyn store::Store>, config: ApiConfig) -> Self {
        let metrics = Arc::new(metrics::Metrics::default());
        let store: Arc<dyn store::Store> = Arc::new(metrics::MeteredStore {
            inner: store,
            metrics: metrics.clone(),
        });
        Api {
            watches: store::SharedWatch::new(store.clone()),
            db: Db {
                store,
                quotas: Arc::new(config.quotas.clone()),
            },
            keystone: config
                .auth
                .keystone
                .as_ref()
                .map(|k| Arc::new(keystone::Keystone::new(k))),
            config: Arc::new(config),
            ipam_cursors: Arc::default(),
            metrics,
        }
    }
}

/// The HTTP routes.
pub fn router(api: Api) -> Router {
    let tracked = axum::middleware::from_fn_with_state(api.metrics.clone(), metrics::track);
    let neutron = Router::new()
        .route("/", get(versions))
        .route("/healthz", get(metrics::healthz))
        .route("/readyz", get(metrics::readyz))
        .route("/metrics", get(metrics::metrics))
        .route("/v2.0", get(resource_index))
        .route("/v2.0/", get(resource_index))
        .route("/v2.0/extensions", get(extensions::list))
        .route("/v2.0/extensions/{alias}", get(extensions::show))
        .route(
            "/v2.0/availability_zones",
            get(extensions::availability_zones),
        )
        .route("/v2.0/quotas", get(quota::list).post(quota::create))
        .route(
            "/v2.0/quotas/{project}",
            get(quota::show).put(quota::update).delete(quota::delete),
        )
        .route("/v2.0/quotas/{project}/{action}", get(quota::action))
        .route("/v2.0/{collection}", get(list).post(create))
        .route(
            "/v2.0/{collection}/{id}",
            get(show).put(update).delete(delete),
        )
        .route(
            "/v2.0/{collection}/{id}/{action}",
            get(sub_get).post(sub_post).put(sub_put).delete(sub_delete),
        )
        .route(
            "/v2.0/{collection}/{id}/tags/{tag}",
            get(tag_get).put(tag_put).delete(tag_delete),
        )
        .route(openapi::PATH, get(openapi::serve))
        .route("/wyvern/v1/sync/snapshot", get(sync::snapshot))
        .route("/wyvern/v1/sync/watch", get(sync::watch))
        .route("/wyvern/v1/chassis", get(chassis::list))
        .route(
            "/wyvern/v1/chassis/{id}",
            axum::routing::put(chassis::register),
        )
        .route(
            "/wyvern/v1/chassis/{id}/heartbeat",
            axum::routing::post(chassis::heartbeat),
        )
        .route(
            "/wyvern/v1/chassis/{id}/snat/{network}",
            axum::routing::put(snat::address),
        )
        .route(
            "/wyvern/v1/ports/{id}/binding",
            axum::routing::put(chassis::bind),
        )
        .route(
            "/wyvern/v1/chassis/{id}/bindings",
            axum::routing::post(chassis::bind_many),
        )
        .route(
            "/wyvern/v1/members/{id}/health",
            axum::routing::put(member_health::report),
        );
    sfc::routes(lbaas::routes(neutron))
        .fallback(not_found)
        .layer(tracked)
        .with_state(api)
}

fn host(headers: &HeaderMap) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}")
}

async fn versions(headers: HeaderMap) -> Response {
    let href = format!("{}/v2.0/", host(&headers));
    axum::Json(json!({"versions": [{"id": "v2.0", "status": "CURRENT",
        "links": [{"href": href, "rel": "self"}]}]}))
    .into_response()
}

async fn resource_index(headers: HeaderMap) -> Response {
    let base = host(&headers);
    let resources: Vec<Value> = model::resources::ALL
        .iter()
        .map(|r| {
            json!({"name": r.singular, "collection": r.collection,
                "links": [{"href": format!("{base}/v2.0/{}", r.path), "rel": "self"}]})
        })
        .collect();
    axum::Json(json!({ "resources": resources })).into_response()
}

async fn not_found() -> Response {
    ApiError::no_such_resource().into_response()
}

fn reply(result: ApiResult<(StatusCode, Value)>) -> Response {
    match result {
        Ok((status, Value::Null)) => status.into_response(),
        Ok((status, body)) => (status, axum::Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn resource(collection: &str) -> ApiResult<&'static ResourceDef> {
    let name = collection.strip_suffix(".json").unwrap_or(collection);
    model::resource_by_path(name)
        .or_else(|| model::sfc::resource_by_path(name))
        .ok_or_else(ApiError::no_such_resource)
}

fn parse_body(body: &[u8]) -> ApiResult<Value> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Malformed request body: {e}")))
}

/// `If-Match: revision_number=N`: the object must be at revision N.
fn check_if_match(headers: &HeaderMap, obj: &repo::Obj) -> ApiResult<()> {
    let current = obj
        .get("revision_number")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    for value in headers.get_all("if-match") {
        let text = value.to_str().unwrap_or_default();
        for part in text.split(',') {
            if let Some(n) = part.trim().strip_prefix("revision_number=") {
                let wanted: u64 = n.trim().parse().map_err(|_| {
                    ApiError::bad_request(format!("Invalid revision number constraint {}", echo(n)))
                })?;
                if wanted != current {
                    return Err(ApiError::new(
                        StatusCode::PRECONDITION_FAILED,
                        "RevisionNumberConstraintFailed",
                        format!("Constrained to {wanted}, but current revision is {current}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Api {
    async fn ctx(&self, headers: &HeaderMap) -> ApiResult<Ctx> {
        Ctx::authenticate(&self.config.auth, self.keystone.as_deref(), headers).await
    }

    /// An object the caller may see, or `<Kind>NotFound`.
    pub async fn visible(&self, ctx: &Ctx, def: &ResourceDef, id: &str) -> ApiResult<Stored> {
        let stored = self.db.require(def, id).await?;
        if resources::can_see(self, ctx, def, &stored.obj).await? {
            Ok(stored)
        } else {
            Err(ApiError::object_not_found(def.error_name, def.singular, id))
        }
    }

    async fn list(&self, ctx: &Ctx, def: &ResourceDef, q: &Query, base: &str) -> ApiResult<Value> {
        let sfc_query;
        let q = if sfc::is_sfc(def) {
            sfc_query = sfc::list_query(def, q)?;
            &sfc_query
        } else if trunks::is_trunk(def) {
            trunks::validate_filters(q)?;
            q
        } else {
            query::validate_filters(def, q)?;
            q
        };
        resources::before_list(self, ctx, def).await?;
        // A filter an index answers reads only the objects it finds (one network's ports, not
        // every port); the filters below still decide, and the page is sorted as always.
        let all = match index::answering(def, q) {
            Some((by, values)) => {
                let mut found = Vec::new();
                for value in values {
                    found.extend(self.db.find(by, value).await?);
                }
                found
            }
            None => self.db.list(def).await?,
        };
        let mut items = Vec::with_capacity(all.len());
        let visibility = resources::Visibility::load(self, ctx, def).await?;
        for s in all {
            if visibility.allows(ctx, &s.obj) && query::passes(q, &s.obj) {
                items.push(s.obj);
            }
        }
        resources::present(self, ctx, def, resources::Answer::Listed, &mut items).await?;
        let url = format!("{base}/v2.0/{}", def.path);
        let (rendered, links) = query::page(def, q, &url, items)?;
        let mut out = serde_json::Map::new();
        out.insert(def.collection.to_string(), Value::Array(rendered));
        if let Some(links) = links {
            out.insert(format!("{}_links", def.collection), links);
        }
        Ok(Value::Object(out))
    }

    async fn show(&self, ctx: &Ctx, def: &ResourceDef, id: &str, q: &Query) -> ApiResult<Value> {
        let stored = self.visible(ctx, def, id).await?;
        let mut items = vec![stored.obj];
        resources::present(self, ctx, def, resources::Answer::Shown, &mut items).await?;
        let obj = items.pop().unwrap_or_default();
        Ok(json!({ def.singular: query::render(obj, &q.fields_of(def)) }))
    }

    async fn create(&self, ctx: &Ctx, def: &ResourceDef, body: Value) -> ApiResult<Value> {
        let (items, bulk) = input::create_items(def, &body)?;
        if ctx.read_only {
            return Err(ApiError::policy(&format!("create_{}", def.singular)));
        }
        // The items of a bulk request are checked and planned one at a time, letting other requests
        // run in between: a large request shares the async workers instead of holding one.
        let mut prepared = Vec::with_capacity(items.len());
        for item in items {
            let mut item = input::prepare_create(def, ctx, item)?;
            created_tags(def, &mut item)?;
            prepared.push(item);
            tokio::task::yield_now().await;
        }
        quota::precheck(&self.db, def, &prepared).await?;
        resources::before_create(self, ctx, def, &prepared).await?;
        let mut attempts = Attempts::new();
        let mut created = loop {
            attempts.begin()?;
            let mut plan = Plan::default();
            plan.enforce_quota(def);
            let mut created = Vec::with_capacity(prepared.len());
            for item in &prepared {
                created
                    .push(resources::plan_create(self, ctx, def, item.clone(), &mut plan).await?);
                tokio::task::yield_now().await;
            }
            if self.db.commit(plan).await? {
                break created;
            }
        };
        resources::present(self, ctx, def, resources::Answer::Created, &mut created).await?;
        let mut rendered: Vec<Value> = created.into_iter().map(|o| query::render(o, &[])).collect();
        Ok(if bulk {
            json!({ def.collection: rendered })
        } else {
            json!({ def.singular: rendered.pop().unwrap_or_default() })
        })
    }

    async fn update(
        &self,
        ctx: &Ctx,
        def: &ResourceDef,
        id: &str,
        headers: &HeaderMap,
        body: Value,
    ) -> ApiResult<Value> {
        let changes = input::prepare_update(def, input::update_item(def, &body)?)?;
        let mut attempts = Attempts::new();
        let mut updated = loop {
            attempts.begin()?;
            let stored = self.visible(ctx, def, id).await?;
            resources::check_owner(ctx, def, &stored.obj, "update")?;
            check_if_match(headers, &stored.obj)?;
            let mut plan = Plan::default();
            let before = stored.obj.clone();
            let obj =
                resources::plan_update(self, ctx, def, stored, changes.clone(), &mut plan).await?;
            // An update that changes nothing writes nothing and keeps the revision number, as in
            // Neutron (whose revision plugin bumps only what the session modified).
            if unchanged(&before, &obj) {
                break vec![before];
            }
            if self.db.commit(plan).await? {
                break vec![obj];
            }
        };
        resources::present(self, ctx, def, resources::Answer::Shown, &mut updated).await?;
        Ok(json!({ def.singular: query::render(updated.pop().unwrap_or_default(), &[]) }))
    }

    async fn delete(
        &self,
        ctx: &Ctx,
        def: &ResourceDef,
        id: &str,
        headers: &HeaderMap,
    ) -> ApiResult<()> {
        let mut attempts = Attempts::new();
        loop {
            attempts.begin()?;
            let stored = self.visible(ctx, def, id).await?;
            resources::check_owner(ctx, def, &stored.obj, "delete")?;
            check_if_match(headers, &stored.obj)?;
            let mut plan = Plan::default();
            match resources::plan_delete(self, ctx, def, stored, &mut plan).await? {
                resources::Deletion::Done => return Ok(()),
                resources::Deletion::Retry => continue,
                resources::Deletion::Planned => {
                    if self.db.commit(plan).await? {
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// Whether an updated object differs from the stored one only by what planning its write gave it
/// (the next revision number, a new update time).
fn unchanged(before: &repo::Obj, after: &repo::Obj) -> bool {
    let planned = |k: &str| matches!(k, "revision_number" | "updated_at");
    before.len() == after.len()
        && before
            .iter()
            .all(|(k, v)| planned(k) || after.get(k) == Some(v))
}

async fn list(
    State(api): State<Api>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            let q = Query::parse(q.as_deref());
            Ok((
                StatusCode::OK,
                api.list(&ctx, def, &q, &host(&headers)).await?,
            ))
        }
        .await,
    )
}

async fn create(
    State(api): State<Api>,
    Path(collection): Path<String>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            let body = parse_body(&body)?;
            Ok((StatusCode::CREATED, api.create(&ctx, def, body).await?))
        }
        .await,
    )
}

async fn show(
    State(api): State<Api>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            let q = Query::parse(q.as_deref());
            Ok((StatusCode::OK, api.show(&ctx, def, &id, &q).await?))
        }
        .await,
    )
}

async fn update(
    State(api): State<Api>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            let body = parse_body(&body)?;
            Ok((
                StatusCode::OK,
                api.update(&ctx, def, &id, &headers, body).await?,
            ))
        }
        .await,
    )
}

async fn delete(
    State(api): State<Api>,
    Path((collection, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            api.delete(&ctx, def, &id, &headers).await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        .await,
    )
}

/// `GET /v2.0/<collection>/<id>/tags` and a trunk's `get_subports`.
async fn sub_get(
    State(api): State<Api>,
    Path((collection, id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            match action.as_str() {
                "tags" if def.taggable => {
                    let stored = api.visible(&ctx, def, &id).await?;
                    Ok((StatusCode::OK, tags_answer(&stored.obj)))
                }
                "get_subports" if trunks::is_trunk(def) => {
                    Ok((StatusCode::OK, trunks::get_subports(&api, &ctx, &id).await?))
                }
                _ => Err(ApiError::no_such_resource()),
            }
        }
        .await,
    )
}

/// `PUT /v2.0/<collection>/<id>/tags` and router actions (`add_router_interface`, ...).
async fn sub_put(
    State(api): State<Api>,
    Path((collection, id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            let body = parse_body(&body)?;
            match action.as_str() {
                "tags" if def.taggable => {
                    let tags = body
                        .get("tags")
                        .cloned()
                        .ok_or_else(|| ApiError::bad_request("Invalid tags body"))?;
                    let tags = validate_tags(def, &tags)?;
                    let obj = api.change_tags(&ctx, def, &id, |_| tags.clone()).await?;
                    Ok((StatusCode::OK, tags_answer(&obj)))
                }
                _ => Ok((
                    StatusCode::OK,
                    resources::action(&api, &ctx, def, &id, &action, body).await?,
                )),
            }
        }
        .await,
    )
}

async fn sub_delete(
    State(api): State<Api>,
    Path((collection, id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            match action.as_str() {
                "tags" if def.taggable => {
                    api.change_tags(&ctx, def, &id, |_| vec![]).await?;
                    Ok((StatusCode::NO_CONTENT, Value::Null))
                }
                _ => Err(ApiError::no_such_resource()),
            }
        }
        .await,
    )
}

/// `POST /v2.0/<collection>/<id>/tags` (`tag-creation`): adds the body's tags to those the object
/// has (none twice; validated and limited as `PUT .../tags` is); answers the request's tags.
async fn sub_post(
    State(api): State<Api>,
    Path((collection, id, action)): Path<(String, String, String)>,
    headers: HeaderMap,
    RequestBody(body): RequestBody,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            match action.as_str() {
                "tags" if def.taggable => {
                    let body = parse_body(&body)?;
                    // As Neutron's `validate_tags`: any refusal is `InvalidInput`.
                    let tags = body
                        .get("tags")
                        .filter(|_| body.is_object())
                        .ok_or_else(|| ApiError::invalid_input("Invalid tags body"))?;
                    model::validate::unique_string_list(tags).map_err(|r| match r {
                        model::validate::Refusal::Invalid(why) => ApiError::invalid_input(why),
                        other => input::invalid("tags", other),
                    })?;
                    let tags = tags_of_list(tags);
                    if tags.len() > MAX_TAGS {
                        return Err(too_many_tags(def));
                    }
                    api.change_tags(&ctx, def, &id, |mut t| {
                        t.extend(tags.iter().cloned());
                        t
                    })
                    .await?;
                    Ok((StatusCode::OK, json!({"tags": tags})))
                }
                _ => Err(ApiError::no_such_resource()),
            }
        }
        .await,
    )
}

/// `{"tags": [...]}`: an object's tags as the tags sub-resource answers them.
fn tags_answer(obj: &repo::Obj) -> Value {
    json!({"tags": obj.get("tags").cloned().unwrap_or(json!([]))})
}

/// The strings of a validated list of tags.
fn tags_of_list(tags: &Value) -> Vec<String> {
    tags.as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(String::from)
        .collect()
}

/// The tags of a create body (a port's, `tag-ports-during-bulk-creation`; validated by the
/// attribute map): at most [`MAX_TAGS`], kept sorted as every object's tags are.
fn created_tags(def: &ResourceDef, obj: &mut repo::Obj) -> ApiResult<()> {
    if let Some(Value::Array(tags)) = obj.get_mut("tags") {
        if tags.len() > MAX_TAGS {
            return Err(too_many_tags(def));
        }
        tags.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    Ok(())
}

/// Most tags an object may carry (Neutron's `MAX_TAGS_COUNT`).
const MAX_TAGS: usize = 50;

fn too_many_tags(def: &ResourceDef) -> ApiError {
    ApiError::bad(
        "BadRequest",
        format!(
            "Bad {} request: The number of tags exceed the per-resource limit of {MAX_TAGS}.",
            def.collection
        ),
    )
}

/// The tags of a `PUT .../tags` body: at most [`MAX_TAGS`] (counted first), valid, none twice.
fn validate_tags(def: &ResourceDef, tags: &Value) -> ApiResult<Vec<String>> {
    resources::check_count(Some(tags), MAX_TAGS, || too_many_tags(def))?;
    let list = tags
        .as_array()
        .ok_or_else(|| ApiError::bad_request("Invalid input for tags. Reason: not a list."))?;
    let mut out: Vec<String> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for t in list {
        let tag = validate_tag(t.as_str().unwrap_or_default())?;
        if !seen.insert(tag.clone()) {
            return Err(ApiError::invalid_input(format!(
                "Duplicate items in the list: '{tag}'"
            )));
        }
        out.push(tag);
    }
    out.sort();
    Ok(out)
}

fn validate_tag(tag: &str) -> ApiResult<String> {
    if tag.is_empty() || tag.chars().count() > 255 || tag.contains(',') || tag.contains('/') {
        return Err(ApiError::bad_request(format!(
            "Invalid input for tags. Reason: '{}' is not a valid tag.",
            echo(tag)
        )));
    }
    Ok(tag.to_string())
}

impl Api {
    async fn change_tags(
        &self,
        ctx: &Ctx,
        def: &ResourceDef,
        id: &str,
        change: impl Fn(Vec<String>) -> Vec<String>,
    ) -> ApiResult<repo::Obj> {
        let mut attempts = Attempts::new();
        loop {
            attempts.begin()?;
            let stored = self.visible(ctx, def, id).await?;
            resources::check_owner(ctx, def, &stored.obj, "update")?;
            let mut tags = change(tags_of(&stored.obj));
            tags.sort();
            tags.dedup();
            if tags.len() > MAX_TAGS {
                return Err(too_many_tags(def));
            }
            let mut obj = stored.obj.clone();
            obj.insert("tags".into(), json!(tags));
            let mut plan = Plan::default();
            plan.update(def, &stored, &mut obj);
            if self.db.commit(plan).await? {
                return Ok(obj);
            }
        }
    }
}

/// The tags of an object.
fn tags_of(obj: &repo::Obj) -> Vec<String> {
    obj.get("tags")
        .and_then(Value::as_array)
        .map(|t| {
            t.iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

impl Api {
    /// The object exists, the caller may see it, and it carries `tag` (else `TagNotFound`).
    async fn require_tag(
        &self,
        ctx: &Ctx,
        def: &ResourceDef,
        id: &str,
        tag: &str,
    ) -> ApiResult<()> {
        let stored = self.visible(ctx, def, id).await?;
        if tags_of(&stored.obj).iter().any(|t| t == tag) {
            Ok(())
        } else {
            Err(ApiError::not_found(
                "TagNotFound",
                format!(
                    "Tag {} could not be found for {} {}.",
                    echo(tag),
                    def.singular,
                    echo(id)
                ),
            ))
        }
    }
}

async fn tag_get(
    State(api): State<Api>,
    Path((collection, id, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            api.require_tag(&ctx, def, &id, &tag).await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        .await,
    )
}

async fn tag_put(
    State(api): State<Api>,
    Path((collection, id, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            let tag = validate_tag(&tag)?;
            api.change_tags(&ctx, def, &id, |mut t| {
                t.push(tag.clone());
                t
            })
            .await?;
            Ok((StatusCode::CREATED, Value::Null))
        }
        .await,
    )
}

async fn tag_delete(
    State(api): State<Api>,
    Path((collection, id, tag)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    reply(
        async {
            let def = resource(&collection)?;
            let ctx = api.ctx(&headers).await?;
            api.require_tag(&ctx, def, &id, &tag).await?;
            api.change_tags(&ctx, def, &id, |t| {
                t.into_iter().filter(|x| *x != tag).collect()
            })
            .await?;
            Ok((StatusCode::NO_CONTENT, Value::Null))
        }
        .await,
    )
}
