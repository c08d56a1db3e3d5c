//! The HTTP side: routing of `/api/v1/...` and `/apis/<group>/<version>/...` paths, the verbs,
//! discovery documents, `Table` answers for kubectl, and watch streams.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::patch;
use crate::resources::{self, ResourceType};
use crate::selector::{FieldSelector, LabelSelector, Selectors};
use crate::status::ApiError;
use crate::store::{Event, EventType, Store};
use crate::{Fault, Verb};

/// How long a list with a resourceVersion newer than the store's waits for it (as the real
/// server's watch cache does) before answering 504.
const WAIT_FOR_RV: Duration = Duration::from_secs(3);

/// State shared by all requests and the test handle.
pub struct Shared {
    /// The objects and their history.
    pub store: Mutex<Store>,
    /// The latest resourceVersion, for watches to wait on.
    pub rv_tx: watch::Sender<u64>,
    /// Bumped to end every open watch.
    pub close_tx: watch::Sender<u64>,
    /// Requests by verb and resource (plural name).
    pub counts: Mutex<BTreeMap<(Verb, String), u64>>,
    /// Faults still to inject.
    pub faults: Mutex<Vec<Fault>>,
    /// Watches now open.
    pub open_watches: AtomicUsize,
    /// How often watches that asked for bookmarks get one.
    pub bookmark_interval: Duration,
    /// How long a watch without `timeoutSeconds` lasts.
    pub watch_timeout: Duration,
    /// Whether writes to pods, services and namespaces are followed by the EndpointSlice
    /// controller's reconciliation ([`crate::endpoints`]).
    pub endpoint_controller: bool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    /// Runs `f` on the store and wakes watches if it wrote anything.
    pub fn write<T>(&self, f: impl FnOnce(&mut Store) -> T) -> T {
        let (out, rv) = {
            let mut store = lock(&self.store);
            let before = store.rv();
            let out = f(&mut store);
            if self.endpoint_controller && store.rv() != before {
                let events = store.events_after(before);
                // Compaction may have dropped some of the events: then reconcile anyway.
                if events.first().is_none_or(|e| e.rv != before + 1)
                    || events.iter().any(|e| crate::endpoints::relevant(e.plural))
                {
                    crate::endpoints::reconcile(&mut store);
                }
            }
            (out, store.rv())
        };
        self.rv_tx.send_if_modified(|old| {
            let changed = *old != rv;
            *old = rv;
            changed
        });
        out
    }

    /// Runs `f` on the store without writing.
    pub fn read<T>(&self, f: impl FnOnce(&Store) -> T) -> T {
        f(&lock(&self.store))
    }

    fn count(&self, verb: Verb, plural: &str) {
        *lock(&self.counts)
            .entry((verb, plural.to_string()))
            .or_default() += 1;
    }

    fn take_fault(&self, verb: Verb, plural: &str) -> Option<ApiError> {
        let mut faults = lock(&self.faults);
        let i = faults.iter().position(|f| {
            f.verb.is_none_or(|v| v == verb) && f.resource.as_deref().is_none_or(|r| r == plural)
        })?;
        let code = faults[i].code;
        faults[i].times = faults[i].times.saturating_sub(1);
        if faults[i].times == 0 {
            faults.remove(i);
        }
        Some(ApiError::injected(code))
    }
}

fn json_response(code: StatusCode, value: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        value.to_string(),
    )
        .into_response()
}

fn error_response(e: &ApiError) -> Response {
    json_response(
        StatusCode::from_u16(e.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        &e.to_status(),
    )
}

/// What a resource path names.
struct Target {
    rt: &'static ResourceType,
    /// The namespace in the path (`None`: all namespaces, or a cluster-scoped type).
    ns: Option<String>,
    name: Option<String>,
    status: bool,
}

fn parse_target(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let find = |plural: &str| resources::find(group, version, plural);
    let target = |rt, ns: Option<&str>, name: Option<&str>, status| {
        Some(Target {
            rt,
            ns: ns.map(str::to_string),
            name: name.map(str::to_string),
            status,
        })
    };
    match rest {
        [plural] => target(find(plural)?, None, None, false),
        ["namespaces", ns, "status"] if group.is_empty() => {
            target(find("namespaces")?, None, Some(ns), true)
        }
        ["namespaces", ns, plural] => {
            let rt = find(plural).filter(|r| r.namespaced)?;
            target(rt, Some(ns), None, false)
        }
        ["namespaces", ns, plural, name] => {
            let rt = find(plural).filter(|r| r.namespaced)?;
            target(rt, Some(ns), Some(name), false)
        }
        ["namespaces", ns, plural, name, "status"] => {
            let rt = find(plural).filter(|r| r.namespaced && r.status)?;
            target(rt, Some(ns), Some(name), true)
        }
        [plural, name] => {
            let rt = find(plural).filter(|r| !r.namespaced)?;
            target(rt, None, Some(name), false)
        }
        [plural, name, "status"] => {
            let rt = find(plural).filter(|r| !r.namespaced && r.status)?;
            target(rt, None, Some(name), true)
        }
        _ => None,
    }
}

/// The single handler behind every path.
pub async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path();
    let query: HashMap<String, String> = Query::try_from_uri(&uri)
        .map(|Query(q)| q)
        .unwrap_or_default();
    if method == Method::GET
        && let Some(doc) = discovery(path, &headers)
    {
        return doc;
    }
    let Some(target) = parse_target(path) else {
        return error_response(&ApiError::no_such_path());
    };
    let is_watch = query.get("watch").is_some_and(|w| w == "true" || w == "1");
    let verb = match (&method, &target.name) {
        (&Method::GET, Some(_)) => Verb::Get,
        (&Method::GET, None) if is_watch => Verb::Watch,
        (&Method::GET, None) => Verb::List,
        (&Method::POST, None) => Verb::Create,
        (&Method::PUT, Some(_)) => Verb::Update,
        (&Method::PATCH, Some(_)) => Verb::Patch,
        (&Method::DELETE, Some(_)) => Verb::Delete,
        (&Method::DELETE, None) => Verb::DeleteCollection,
        _ => {
            return error_response(&ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method} {path})"
            )));
        }
    };
    shared.count(verb, target.rt.plural);
    if let Some(e) = shared.take_fault(verb, target.rt.plural) {
        return error_response(&e);
    }
    let table = wants_table(&headers);
    let result = match verb {
        Verb::Get => get(&shared, &target, &query, table),
        Verb::List => list(&shared, &target, &query, table).await,
        Verb::Watch => return watch_response(shared, target, query, table).await,
        Verb::Create => create(&shared, &target, &body),
        Verb::Update => update(&shared, &target, &body),
        Verb::Patch => patch_object(&shared, &target, &headers, &query, &body),
        Verb::Delete => delete(&shared, &target, &body),
        Verb::DeleteCollection => delete_collection(&shared, &target, &query),
    };
    match result {
        Ok((code, value)) => json_response(code, &value),
        Err(e) => error_response(&e),
    }
}

type Answer = Result<(StatusCode, Value), ApiError>;

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding the request body as JSON: {e}")))
}

fn ns_of(target: &Target) -> &str {
    target.ns.as_deref().unwrap_or("")
}

fn get(shared: &Shared, target: &Target, query: &HashMap<String, String>, table: bool) -> Answer {
    let name = target.name.as_deref().unwrap_or("");
    let obj = shared.read(|s| s.get(target.rt, ns_of(target), name))?;
    if table {
        let rv = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        return Ok((StatusCode::OK, to_table(target.rt, &[obj], &rv, query)));
    }
    Ok((StatusCode::OK, obj))
}

fn selectors(target: &Target, query: &HashMap<String, String>) -> Result<Selectors, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map_or("", String::as_str),
        target.rt.plural,
    )
    .map_err(ApiError::bad_request)?;
    Ok(Selectors { labels, fields })
}

fn parse_rv(s: &str) -> Result<u64, ApiError> {
    s.parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s:?}")))
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    json!([rv, ns, name])
        .to_string()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn decode_continue(token: &str) -> Option<(u64, String, String)> {
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let v: Value = serde_json::from_slice(&bytes?).ok()?;
    Some((
        v.get(0)?.as_u64()?,
        v.get(1)?.as_str()?.to_string(),
        v.get(2)?.as_str()?.to_string(),
    ))
}

/// Waits (up to [`WAIT_FOR_RV`]) until the store has reached `rv`.
async fn wait_for_rv(shared: &Shared, rv: u64) -> Result<(), ApiError> {
    let mut rx = shared.rv_tx.subscribe();
    let deadline = tokio::time::Instant::now() + WAIT_FOR_RV;
    loop {
        let current = *rx.borrow_and_update();
        if current >= rv {
            return Ok(());
        }
        if tokio::time::timeout_at(deadline, rx.changed())
            .await
            .is_err()
        {
            return Err(ApiError::too_large_resource_version(rv, current));
        }
    }
}

async fn list(
    shared: &Shared,
    target: &Target,
    query: &HashMap<String, String>,
    table: bool,
) -> Answer {
    let sel = selectors(target, query)?;
    let rv_param = query.get("resourceVersion").map_or("", String::as_str);
    let rv_match = query.get("resourceVersionMatch").map_or("", String::as_str);
    let mut limit = query
        .get("limit")
        .map(|l| l.parse::<usize>())
        .transpose()
        .map_err(|_| ApiError::bad_request("invalid limit"))?
        .filter(|l| *l > 0);
    let continue_token = query.get("continue").filter(|c| !c.is_empty());
    if !rv_match.is_empty() && rv_param.is_empty() {
        return Err(ApiError::invalid(
            "ListOptions",
            "",
            "",
            "",
            &["resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden unless resourceVersion is provided".into()],
        ));
    }
    if continue_token.is_some() && !rv_param.is_empty() {
        return Err(ApiError::bad_request(
            "specifying resource version is not allowed when using continue",
        ));
    }
    let mut at = None;
    let mut after: Option<(String, String)> = None;
    if let Some(token) = continue_token {
        let (rv, ns, name) = decode_continue(token)
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        if rv < shared.read(Store::compacted) {
            return Err(ApiError::expired(
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
            ));
        }
        at = Some(rv);
        after = Some((ns, name));
    } else if rv_param == "0" && rv_match != "Exact" {
        // Served from the watch cache, which ignores limit.
        limit = None;
    } else if !rv_param.is_empty() {
        let rv = parse_rv(rv_param)?;
        match rv_match {
            "Exact" => at = Some(rv),
            "" | "NotOlderThan" => wait_for_rv(shared, rv).await?,
            other => {
                return Err(ApiError::invalid(
                    "ListOptions",
                    "",
                    "",
                    "",
                    &[format!(
                        "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
                    )],
                ));
            }
        }
    }
    let (rv, objects) = shared.read(|s| s.list(target.rt, target.ns.as_deref(), at))?;
    let key = |o: &Value| {
        (
            o.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            o.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    let selected: Vec<Value> = objects
        .into_iter()
        .filter(|o| after.as_ref().is_none_or(|a| key(o) > *a))
        .filter(|o| sel.matches(o))
        .collect();
    let total = selected.len();
    let page: Vec<Value> = match limit {
        Some(l) => selected.into_iter().take(l).collect(),
        None => selected,
    };
    let mut metadata = json!({"resourceVersion": rv.to_string()});
    if page.len() < total
        && let Some(last) = page.last()
    {
        let (ns, name) = key(last);
        metadata["continue"] = json!(encode_continue(rv, &ns, &name));
        if sel.labels.is_empty() && sel.fields.is_empty() {
            metadata["remainingItemCount"] = json!(total - page.len());
        }
    }
    if table {
        let mut t = to_table(target.rt, &page, &rv.to_string(), query);
        t["metadata"] = metadata;
        return Ok((StatusCode::OK, t));
    }
    let items: Vec<Value> = page
        .into_iter()
        .map(|mut o| {
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    Ok((
        StatusCode::OK,
        json!({
            "kind": target.rt.list_kind(),
            "apiVersion": target.rt.api_version(),
            "metadata": metadata,
            "items": items,
        }),
    ))
}

fn create(shared: &Shared, target: &Target, body: &[u8]) -> Answer {
    let obj = parse_body(body)?;
    let obj = shared.write(|s| s.create(target.rt, ns_of(target), obj))?;
    Ok((StatusCode::CREATED, obj))
}

fn update(shared: &Shared, target: &Target, body: &[u8]) -> Answer {
    let obj = parse_body(body)?;
    let name = target.name.as_deref().unwrap_or("");
    let written = shared.write(|s| s.update(target.rt, ns_of(target), name, obj, target.status))?;
    Ok((StatusCode::OK, written.object))
}

fn patch_object(
    shared: &Shared,
    target: &Target,
    headers: &HeaderMap,
    query: &HashMap<String, String>,
    body: &[u8],
) -> Answer {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let patch_body = parse_body(body)?;
    let name = target.name.as_deref().unwrap_or("").to_string();
    let ns = ns_of(target).to_string();
    let rt = target.rt;
    let status = target.status;
    shared.write(|s| {
        let current = s.get(rt, &ns, &name);
        let mut obj = match (current, content_type.as_str()) {
            (Ok(o), _) => o,
            (Err(e), "application/apply-patch+yaml") if e.code == 404 && !status => {
                if query.get("fieldManager").is_none_or(String::is_empty) {
                    return Err(fieldmanager_required(rt, &name));
                }
                let mut obj = patch_body.clone();
                obj["metadata"]["name"] = json!(name);
                let created = s.create(rt, &ns, obj)?;
                return Ok((StatusCode::CREATED, created));
            }
            (Err(e), _) => return Err(e),
        };
        let stored_rv = obj.pointer("/metadata/resourceVersion").cloned();
        match content_type.as_str() {
            "application/merge-patch+json" => patch::merge_patch(&mut obj, &patch_body),
            "application/strategic-merge-patch+json" => {
                patch::strategic_merge_patch(&mut obj, &patch_body)
            }
            "application/json-patch+json" => patch::json_patch(&mut obj, &patch_body)
                .map_err(|e| ApiError::invalid(rt.kind, &name, rt.group, rt.plural, &[e]))?,
            "application/apply-patch+yaml" => {
                if query.get("fieldManager").is_none_or(String::is_empty) {
                    return Err(fieldmanager_required(rt, &name));
                }
                patch::merge_patch(&mut obj, &patch_body)
            }
            other => {
                return Err(ApiError::unsupported_media_type(format!(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
                )));
            }
        }
        // A patch that does not name a resourceVersion applies to the current object.
        if obj.pointer("/metadata/resourceVersion").is_none()
            && let Some(rv) = stored_rv
            && obj.get("metadata").is_some_and(Value::is_object)
        {
            obj["metadata"]["resourceVersion"] = rv;
        }
        let written = s.update(rt, &ns, &name, obj, status)?;
        Ok((StatusCode::OK, written.object))
    })
}

fn fieldmanager_required(rt: &ResourceType, name: &str) -> ApiError {
    ApiError::invalid(
        rt.kind,
        name,
        rt.group,
        rt.plural,
        &["fieldManager: Required value: is required for apply patch".into()],
    )
}

fn delete(shared: &Shared, target: &Target, body: &[u8]) -> Answer {
    let options: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        parse_body(body)?
    };
    let name = target.name.as_deref().unwrap_or("");
    let obj =
        shared.write(|s| s.delete(target.rt, ns_of(target), name, options.get("preconditions")))?;
    Ok((StatusCode::OK, obj))
}

fn delete_collection(shared: &Shared, target: &Target, query: &HashMap<String, String>) -> Answer {
    let sel = selectors(target, query)?;
    let deleted = shared.write(|s| -> Result<Vec<Value>, ApiError> {
        let (_, objects) = s.list(target.rt, target.ns.as_deref(), None)?;
        let mut deleted = Vec::new();
        for o in objects.iter().filter(|o| sel.matches(o)) {
            let ns = o
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            let name = o
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            match s.delete(target.rt, ns, name, None) {
                Ok(d) => deleted.push(d),
                // System namespaces stay.
                Err(e) if e.code == 403 => {}
                Err(e) => return Err(e),
            }
        }
        Ok(deleted)
    })?;
    let rv = shared.read(Store::rv);
    Ok((
        StatusCode::OK,
        json!({
            "kind": target.rt.list_kind(),
            "apiVersion": target.rt.api_version(),
            "metadata": {"resourceVersion": rv.to_string()},
            "items": deleted,
        }),
    ))
}

// ---------------------------------------------------------------------------------------------
// Watch.

/// One watch event line.
fn event_line(kind: &str, object: &Value) -> Bytes {
    let mut line = json!({"type": kind, "object": object}).to_string();
    line.push('\n');
    Bytes::from(line)
}

fn bookmark(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    let mut metadata = json!({"resourceVersion": rv.to_string(), "creationTimestamp": null});
    if initial_end {
        metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    json!({"kind": rt.kind, "apiVersion": rt.api_version(), "metadata": metadata})
}

fn bool_param(query: &HashMap<String, String>, name: &str) -> bool {
    query.get(name).is_some_and(|v| v == "true" || v == "1")
}

/// Where a watch starts.
enum Start {
    /// Synthetic ADDED events for the current state, then changes; with `bookmark` (a streaming
    /// list), a BOOKMARK marked `k8s.io/initial-events-end` after the initial events.
    Current { bookmark: bool },
    /// Changes after this resourceVersion.
    After(u64),
}

async fn watch_response(
    shared: Arc<Shared>,
    target: Target,
    query: HashMap<String, String>,
    table: bool,
) -> Response {
    let sel = match selectors(&target, &query) {
        Ok(s) => s,
        Err(e) => return error_response(&e),
    };
    let rv_param = query.get("resourceVersion").cloned().unwrap_or_default();
    let rv_match = query
        .get("resourceVersionMatch")
        .cloned()
        .unwrap_or_default();
    let bookmarks = bool_param(&query, "allowWatchBookmarks");
    let send_initial = query
        .get("sendInitialEvents")
        .map(|v| v == "true" || v == "1");
    let invalid = |cause: &str| {
        error_response(&ApiError::invalid(
            "ListOptions",
            "",
            "",
            "",
            &[cause.to_string()],
        ))
    };
    let start = match send_initial {
        Some(true) => {
            if rv_match != "NotOlderThan" {
                return invalid(
                    "resourceVersionMatch: Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan",
                );
            }
            if !bookmarks {
                return invalid(
                    "allowWatchBookmarks: Forbidden: sendInitialEvents requires setting allowWatchBookmarks to true",
                );
            }
            if !rv_param.is_empty() && rv_param != "0" {
                let rv = match parse_rv(&rv_param) {
                    Ok(rv) => rv,
                    Err(e) => return error_response(&e),
                };
                if let Err(e) = wait_for_rv(&shared, rv).await {
                    return error_response(&e);
                }
            }
            Start::Current { bookmark: true }
        }
        _ => {
            if !rv_match.is_empty() {
                return invalid(
                    "resourceVersionMatch: Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided",
                );
            }
            if rv_param.is_empty() || rv_param == "0" {
                Start::Current { bookmark: false }
            } else {
                match parse_rv(&rv_param) {
                    Ok(rv) => Start::After(rv),
                    Err(e) => return error_response(&e),
                }
            }
        }
    };
    let timeout = query
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(shared.watch_timeout, Duration::from_secs);
    let (tx, rx) = mpsc::channel::<Bytes>(256);
    let watcher = Watcher {
        rt: target.rt,
        ns: target.ns.clone(),
        sel,
        table,
        query,
        tx,
    };
    shared.open_watches.fetch_add(1, Ordering::SeqCst);
    tokio::spawn(async move {
        watcher.run(&shared, start, bookmarks, timeout).await;
        shared.open_watches.fetch_sub(1, Ordering::SeqCst);
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|line| (Ok::<_, Infallible>(line), rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(Body::from_stream(stream))
        .expect("a valid watch response")
}

struct Watcher {
    rt: &'static ResourceType,
    ns: Option<String>,
    sel: Selectors,
    table: bool,
    query: HashMap<String, String>,
    tx: mpsc::Sender<Bytes>,
}

impl Watcher {
    /// Sends one event; false once the client is gone.
    async fn send(&self, kind: &str, object: &Value) -> bool {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = object
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            to_table(self.rt, std::slice::from_ref(object), &rv, &self.query)
        } else {
            object.clone()
        };
        self.tx.send(event_line(kind, &object)).await.is_ok()
    }

    fn in_scope(&self, e: &Event) -> bool {
        e.plural == self.rt.plural && self.ns.as_ref().is_none_or(|n| *n == e.namespace)
    }

    /// The event this watch shows for `e`, given its selectors (an object that moves out of
    /// the selection is DELETED for it, one that moves in is ADDED).
    fn translate(&self, e: &Event) -> Option<&'static str> {
        let now = self.sel.matches(&e.object);
        let before = e.prev.as_ref().is_some_and(|p| self.sel.matches(p));
        match e.kind {
            EventType::Added => now.then_some("ADDED"),
            EventType::Deleted => before.then_some("DELETED"),
            EventType::Modified => match (before, now) {
                (true, true) => Some("MODIFIED"),
                (false, true) => Some("ADDED"),
                (true, false) => Some("DELETED"),
                (false, false) => None,
            },
        }
    }

    async fn expired(&self, rv: u64, compacted: u64) {
        let status =
            ApiError::expired(format!("too old resource version: {rv} ({compacted})")).to_status();
        self.send("ERROR", &status).await;
    }

    async fn run(&self, shared: &Shared, start: Start, bookmarks: bool, timeout: Duration) {
        let mut rv_rx = shared.rv_tx.subscribe();
        let mut close_rx = shared.close_tx.subscribe();
        close_rx.borrow_and_update();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut last = match start {
            Start::Current { bookmark } => {
                let listed = shared.read(|s| s.list(self.rt, self.ns.as_deref(), None));
                let Ok((rv, objects)) = listed else {
                    return;
                };
                for o in objects.iter().filter(|o| self.sel.matches(o)) {
                    if !self.send("ADDED", o).await {
                        return;
                    }
                }
                if bookmark
                    && !self
                        .send("BOOKMARK", &bookmark_object(self.rt, rv, true))
                        .await
                {
                    return;
                }
                rv
            }
            Start::After(rv) => rv,
        };
        let mut ticker = tokio::time::interval(shared.bookmark_interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            rv_rx.borrow_and_update();
            let batch = shared.read(|s| {
                if last < s.compacted() {
                    Err(s.compacted())
                } else {
                    Ok((s.events_after(last), s.rv()))
                }
            });
            let (events, current) = match batch {
                Ok(b) => b,
                Err(compacted) => {
                    self.expired(last, compacted).await;
                    return;
                }
            };
            for e in events.iter().filter(|e| self.in_scope(e)) {
                if let Some(kind) = self.translate(e)
                    && !self.send(kind, &e.object).await
                {
                    return;
                }
            }
            last = last.max(current);
            tokio::select! {
                changed = rv_rx.changed() => if changed.is_err() { return },
                _ = close_rx.changed() => return,
                _ = &mut deadline => return,
                _ = self.tx.closed() => return,
                _ = ticker.tick() => {
                    if bookmarks && !self.table
                        && !self.send("BOOKMARK", &bookmark_object(self.rt, last, false)).await {
                        return;
                    }
                }
            }
        }
    }
}

fn bookmark_object(rt: &ResourceType, rv: u64, initial_end: bool) -> Value {
    bookmark(rt, rv, initial_end)
}

// ---------------------------------------------------------------------------------------------
// Discovery.

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=Table"))
}

/// The server's version as `/version` reports it.
pub fn version_info() -> Value {
    json!({
        "major": "1",
        "minor": "33",
        "gitVersion": "v1.33.0-wyvern-kube-fixture",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

/// Discovery documents (answered as plain `application/json`, the legacy shape, whatever the
/// `Accept` header asks for: clients that prefer aggregated discovery fall back to it).
fn discovery(path: &str, _headers: &HeaderMap) -> Option<Response> {
    let ok = |v: Value| Some(json_response(StatusCode::OK, &v));
    match path.trim_end_matches('/') {
        "/version" => ok(version_info()),
        "/api" => ok(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
        })),
        "/apis" => ok(resources::group_list()),
        "/healthz" | "/readyz" | "/livez" => {
            Some((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")], "ok").into_response())
        }
        "/api/v1" => ok(resources::resource_list("", "v1")?),
        p => {
            let segs: Vec<&str> = p.trim_matches('/').split('/').collect();
            match segs.as_slice() {
                ["apis", group] => {
                    let list = resources::group_list();
                    let g = list["groups"]
                        .as_array()?
                        .iter()
                        .find(|g| g["name"] == *group)?
                        .clone();
                    let mut g = g;
                    g["kind"] = json!("APIGroup");
                    g["apiVersion"] = json!("v1");
                    ok(g)
                }
                ["apis", group, version] => ok(resources::resource_list(group, version)?),
                _ => None,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tables (what `kubectl get` asks for, to print server-side columns).

/// kubectl's short human duration (`45s`, `3m`, `5h`, `2d`).
fn age(obj: &Value) -> String {
    let Some(created) = obj
        .pointer("/metadata/creationTimestamp")
        .and_then(Value::as_str)
        .and_then(|t| humantime::parse_rfc3339(t).ok())
    else {
        return "<unknown>".into();
    };
    let secs = SystemTime::now()
        .duration_since(created)
        .unwrap_or_default()
        .as_secs();
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn s(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::Null) | None => "<none>".into(),
        Some(Value::String(_)) => "<none>".into(),
        Some(other) => other.to_string(),
    }
}

/// The columns (name, type, priority) and the cells of one object.
fn columns(rt: &ResourceType) -> Vec<(&'static str, &'static str, u8)> {
    let mut c = vec![("Name", "string", 0)];
    match rt.plural {
        "pods" => c.extend([
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ]),
        "services" => c.extend([
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ]),
        "namespaces" => c.extend([("Status", "string", 0), ("Age", "string", 0)]),
        "nodes" => c.extend([
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
        ]),
        "endpointslices" => c.extend([
            ("AddressType", "string", 0),
            ("Ports", "string", 0),
            ("Endpoints", "string", 0),
            ("Age", "string", 0),
        ]),
        "networkpolicies" => c.extend([("Pod-Selector", "string", 0), ("Age", "string", 0)]),
        _ => c.push(("Age", "string", 0)),
    }
    c
}

fn map_string(v: Option<&Value>) -> String {
    match v.and_then(Value::as_object) {
        Some(m) if !m.is_empty() => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn cells(rt: &ResourceType, o: &Value) -> Vec<Value> {
    let name = json!(
        o.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
    );
    let age = json!(age(o));
    let text = |p: &str| json!(s(o.pointer(p)));
    match rt.plural {
        "pods" => {
            let total = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array);
            let ready = statuses.map_or(0, |s| {
                s.iter()
                    .filter(|c| c.get("ready") == Some(&json!(true)))
                    .count()
            });
            let restarts: u64 = statuses.map_or(0, |s| {
                s.iter()
                    .filter_map(|c| c.get("restartCount").and_then(Value::as_u64))
                    .sum()
            });
            vec![
                name,
                json!(format!("{ready}/{total}")),
                text("/status/phase"),
                json!(restarts.to_string()),
                age,
                text("/status/podIP"),
                text("/spec/nodeName"),
            ]
        }
        "services" => {
            let ports = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| {
                            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP");
                            match p.get("nodePort") {
                                Some(np) => format!("{}:{np}/{proto}", s(p.get("port"))),
                                None => format!("{}/{proto}", s(p.get("port"))),
                            }
                        })
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<none>".into());
            vec![
                name,
                text("/spec/type"),
                text("/spec/clusterIP"),
                json!("<none>"),
                json!(ports),
                age,
                json!(map_string(o.pointer("/spec/selector"))),
            ]
        }
        "namespaces" => vec![name, text("/status/phase"), age],
        "nodes" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                .map_or("Unknown", |c| {
                    if c["status"] == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                });
            vec![
                name,
                json!(ready),
                json!("<none>"),
                age,
                text("/status/nodeInfo/kubeletVersion"),
            ]
        }
        "endpointslices" => {
            let ports = o
                .get("ports")
                .and_then(Value::as_array)
                .map(|ps| {
                    ps.iter()
                        .map(|p| s(p.get("port")))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<unset>".into());
            let endpoints = o
                .get("endpoints")
                .and_then(Value::as_array)
                .map(|es| {
                    es.iter()
                        .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                        .filter_map(|a| a.as_str().map(str::to_string))
                        .collect::<Vec<_>>()
                        .join(",")
                })
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "<unset>".into());
            vec![
                name,
                text("/addressType"),
                json!(ports),
                json!(endpoints),
                age,
            ]
        }
        "networkpolicies" => {
            let sel = o
                .pointer("/spec/podSelector/matchLabels")
                .map(|m| map_string(Some(m)))
                .filter(|s| s != "<none>")
                .unwrap_or_else(|| "<none>".into());
            vec![name, json!(sel), age]
        }
        _ => vec![name, age],
    }
}

/// A `meta.k8s.io/v1` `Table` of `objects`, with each row's object as `includeObject` asks
/// (`Metadata`, the default; `Object`; `None`).
fn to_table(
    rt: &ResourceType,
    objects: &[Value],
    rv: &str,
    query: &HashMap<String, String>,
) -> Value {
    let include = query
        .get("includeObject")
        .map_or("Metadata", String::as_str);
    let defs: Vec<Value> = columns(rt)
        .into_iter()
        .map(|(name, ty, priority)| {
            let mut d = json!({"name": name, "type": ty, "format": "", "description": name, "priority": priority});
            if name == "Name" {
                d["format"] = json!("name");
            }
            d
        })
        .collect();
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut row = json!({"cells": cells(rt, o)});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o.get("metadata").cloned().unwrap_or(json!({})),
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_target("/api/v1/namespaces/default/pods/p/status").unwrap();
        assert_eq!(
            (t.rt.plural, t.ns.as_deref(), t.name.as_deref(), t.status),
            ("pods", Some("default"), Some("p"), true)
        );
        let t = parse_target("/api/v1/pods").unwrap();
        assert_eq!((t.rt.plural, t.ns, t.name), ("pods", None, None));
        let t = parse_target("/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (t.rt.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_target("/api/v1/namespaces/x/status").unwrap();
        assert_eq!(
            (t.rt.plural, t.name.as_deref(), t.status),
            ("namespaces", Some("x"), true)
        );
        let t = parse_target("/apis/discovery.k8s.io/v1/namespaces/a/endpointslices").unwrap();
        assert_eq!(
            (t.rt.plural, t.ns.as_deref()),
            ("endpointslices", Some("a"))
        );
        assert!(parse_target("/api/v1/nodes/n/status").unwrap().status);
        assert!(parse_target("/api/v1/pods/p").is_none());
        assert!(parse_target("/api/v1/namespaces/a/nodes").is_none());
        assert!(parse_target("/apis/apps/v1/deployments").is_none());
        assert!(parse_target("/api/v1/namespaces/a/endpoints/e/status").is_none());
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(42, "ns", "name-1");
        assert_eq!(
            decode_continue(&t),
            Some((42, "ns".into(), "name-1".into()))
        );
        assert_eq!(decode_continue("zz"), None);
    }
}
