//! The sync API agents read the topology with: list-then-watch, as Kubernetes does it.
//!
//! `GET /wyvern/v1/sync/snapshot?network=ID...` answers every object of the requested topics at one
//! revision R; `GET /wyvern/v1/sync/watch?after=R&network=ID...` then streams every change after R as
//! newline-delimited JSON, one line per store revision batch:
//! `{"revision": N, "events": [{"key": K, "value": V} or {"key": K, "deleted": true}]}`. A line `{"heartbeat": true}` comes
//! when nothing changed for a while, so that clients notice dead connections. All watchers of a server
//! share one store watch ([`store::SharedWatch`]), whose ring of recent changes serves a client that
//! resumes a little behind even if the store compacted meanwhile; when neither the ring nor the store
//! has the changes after `after` any more, the watch answers 410 with a `NeutronError` of type
//! `Compacted` (or, if that happens mid-stream, a last line `{"compacted": N}`), and the client takes a
//! fresh snapshot.
//!
//! Topics: a network (the network, its subnets and ports) for each `network=` parameter, the ports
//! bound to a chassis for `chassis=ID`, and always the chassis list (`/chassis/`, `/chassis-up/`);
//! `all=1` asks for everything. Deletions are always sent (a deleted object has no network to filter on; deleting an unknown key is a no-op
//! for a client).

use std::collections::HashSet;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use store::{Event, KeyValue, StoreError};

use crate::Api;
use crate::error::{ApiError, ApiResult};
use crate::query::Query;

/// Key prefixes the sync API serves.
const SYNCED: &[&str] = &[
    "/r/networks/",
    "/r/subnets/",
    "/r/ports/",
    "/chassis/",
    "/chassis-up/",
];
/// A heartbeat line after this long without changes.
const HEARTBEAT: Duration = Duration::from_secs(5);

/// Which keys a client asked for.
struct Topics {
    /// `None`: everything (`all=1`).
    networks: Option<HashSet<String>>,
    /// Ports bound to this chassis (`chassis=ID`), whatever their network.
    chassis: Option<String>,
}

impl Topics {
    fn from_query(q: &Query) -> Self {
        let nets: HashSet<String> = q.all("network").map(str::to_string).collect();
        let all = q
            .first("all")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        Self {
            networks: (!all).then_some(nets),
            chassis: q.first("chassis").map(str::to_string),
        }
    }

    fn wants(&self, key: &str, value: Option<&[u8]>) -> bool {
        if !SYNCED.iter().any(|p| key.starts_with(p)) {
            return false;
        }
        let Some(nets) = &self.networks else {
            return true;
        };
        if key.starts_with("/chassis") {
            return true;
        }
        let Some(value) = value else {
            return true;
        };
        if let Some(id) = key.strip_prefix("/r/networks/") {
            return nets.contains(id);
        }
        let obj: Value = serde_json::from_slice(value).unwrap_or(Value::Null);
        let field = |name: &str| obj.get(name).and_then(Value::as_str);
        field("network_id").is_some_and(|n| nets.contains(n))
            || (key.starts_with("/r/ports/")
                && self.chassis.is_some()
                && field("binding:host_id") == self.chassis.as_deref())
    }
}

/// A stored value as JSON (values that are not JSON travel as a string).
fn value_json(value: &[u8]) -> Value {
    serde_json::from_slice(value)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(value).into_owned()))
}

/// One change as a line item: `{"key", "value"}` for a put, `{"key", "deleted": true}` for a delete.
fn event_json(e: &Event) -> Value {
    match &e.value {
        Some(v) => json!({"key": e.key, "value": value_json(v), "revision": e.revision}),
        None => json!({"key": e.key, "deleted": true, "revision": e.revision}),
    }
}

fn admin(api: &Api, headers: &HeaderMap) -> ApiResult<()> {
    if api.ctx(headers)?.is_admin {
        Ok(())
    } else {
        Err(ApiError::forbidden("the sync API is for agents (admin)"))
    }
}

/// `GET /wyvern/v1/sync/snapshot`.
pub async fn snapshot(
    State(api): State<Api>,
    headers: HeaderMap,
    RawQuery(q): RawQuery,
) -> Response {
    let result: ApiResult<Value> = async {
        admin(&api, &headers)?;
        let topics = Topics::from_query(&Query::parse(q.as_deref()));
        // One range over the common prefix gives a consistent snapshot at one revision.
        let (kvs, revision) = api.db.store.range("/").await?;
        let items: Vec<Value> = kvs
            .iter()
            .filter(|kv: &&KeyValue| topics.wants(&kv.key, Some(&kv.value)))
            .map(|kv| json!({"key": kv.key, "value": value_json(&kv.value)}))
            .collect();
        Ok(json!({"revision": revision, "items": items}))
    }
    .await;
    match result {
        Ok(v) => axum::Json(v).into_response(),
        Err(e) => e.into_response(),
    }
}

fn line(v: &Value) -> Result<Bytes, Infallible> {
    let mut bytes = serde_json::to_vec(v).unwrap_or_default();
    bytes.push(b'\n');
    Ok(Bytes::from(bytes))
}

/// `GET /wyvern/v1/sync/watch?after=R`.
pub async fn watch(State(api): State<Api>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    let setup: ApiResult<_> = async {
        admin(&api, &headers)?;
        let q = Query::parse(q.as_deref());
        let after: u64 = q
            .first("after")
            .unwrap_or("0")
            .parse()
            .map_err(|_| ApiError::bad_request("after must be a revision number"))?;
        let topics = Topics::from_query(&q);
        let watch = match api.watches.watch(after).await {
            Err(StoreError::Compacted { oldest, .. }) => {
                return Err(ApiError::new(
                    StatusCode::GONE,
                    "Compacted",
                    format!(
                        "revision {after} has been compacted; the oldest available is {oldest}"
                    ),
                ));
            }
            other => other?,
        };
        Ok((watch, topics, after))
    }
    .await;
    let (mut watch, topics, after) = match setup {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(64);
    tokio::spawn(async move {
        loop {
            let msg = match watch.next().await {
                Ok(events) => {
                    let revision = events.last().map(|e: &Event| e.revision).unwrap_or(after);
                    let wanted: Vec<Value> = events
                        .iter()
                        .filter(|e| topics.wants(&e.key, e.value.as_deref()))
                        .map(event_json)
                        .collect();
                    json!({"revision": revision, "events": wanted})
                }
                Err(StoreError::Compacted { oldest, .. }) => json!({"compacted": oldest}),
                Err(e) => json!({"error": e.to_string()}),
            };
            let last = msg.get("revision").is_none();
            if tx.send(msg).await.is_err() || last {
                return;
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        match tokio::time::timeout(HEARTBEAT, rx.recv()).await {
            Ok(Some(msg)) => Some((line(&msg), rx)),
            Ok(None) => None,
            Err(_) => Some((line(&json!({"heartbeat": true})), rx)),
        }
    });
    let body = Body::from_stream(stream);
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}
