//! The sync API agents read the topology with: list-then-watch, as Kubernetes does it.
//!
//! `GET /wyvern/v1/sync/snapshot?network=ID...` answers every object of the requested topics at one
//! revision R; `GET /wyvern/v1/sync/watch?after=R&network=ID...` then streams every change after R as
//! newline-delimited JSON, one line per batch of whole store revisions, `{"revision": N, "events": [...]}`
//! (N: the batch's last revision), each event `{"key", "value", "revision"}` or
//! `{"key", "deleted": true, "revision"}`. A line `{"heartbeat": true}` comes when nothing changed for
//! a while, so that clients notice dead connections. All watchers of a server
//! share one store watch ([`store::SharedWatch`]), whose ring of recent changes serves a client that
//! resumes a little behind even if the store compacted meanwhile; when neither the ring nor the store
//! has the changes after `after` any more, the watch answers 410 with a `NeutronError` of type
//! `Compacted` (or, if that happens mid-stream, a last line `{"compacted": N}`), and the client takes a
//! fresh snapshot.
//!
//! Topics, as [`nb_keys::Topics::wants`] decides: a network (the network, its subnets and ports) for
//! each `network=ID`, a router (the router and every port whose `device_id` is the router: its
//! interfaces and gateway port) for each `router=ID`, a security group (the group, its rules and
//! every port whose `security_groups` name it) for each `security_group=ID`, an address group for
//! each `address_group=ID`, the ports bound to a chassis for `chassis=ID`, and always the chassis
//! list with liveness and what each chassis reports of the data plane of those it watches
//! (`/chassis/`, `/chassis-up/`, `/chassis-peers/`); `all=1` asks for everything. Deletions
//! are always sent (a deleted object has no network to filter on; deleting an unknown key is a no-op
//! for a client).
//!
//! A watch may start a topic later than `after`: `network=ID@S` (likewise for every topic)
//! follows that topic only for changes after revision S. A client that holds its topics at R and took
//! a snapshot of a new topic at S > R resumes its watch after R with the new topic `@S`: it gets its
//! old topics' changes after R and the new topic's after S, none twice. An event is sent when a topic
//! whose start is before the event's revision wants it. A snapshot ignores `@S`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nb_keys::{Topic, Topics};
use serde_json::{Value, json};
use store::{Event, StoreError};

use crate::Api;
use crate::error::{ApiError, ApiResult};
use crate::query::Query;

/// A heartbeat line after this long without changes.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Which keys a client asked for: its topics, some of them only after a start revision.
struct Asked {
    /// The topics followed from the start.
    now: Topics,
    /// Topics followed only after a revision (`ID@REV`), by that revision.
    later: BTreeMap<u64, Vec<Topic>>,
}

impl Asked {
    fn from_query(q: &Query) -> ApiResult<Self> {
        let everything = q
            .first("all")
            .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
        let mut asked = Asked {
            now: Topics {
                everything,
                ..Topics::default()
            },
            later: BTreeMap::new(),
        };
        for (name, value) in &q.0 {
            let Some(parsed) = Topic::from_param(name, value) else {
                continue;
            };
            match parsed.map_err(|e| ApiError::bad_request(format!("{name}: {e}")))? {
                (topic, Some(start)) => asked.later.entry(start).or_default().push(topic),
                (topic, None) => asked.now.insert(topic),
            }
        }
        Ok(asked)
    }

    /// Every topic asked for, whatever its start.
    fn all(mut self) -> Topics {
        for topic in self.later.into_values().flatten() {
            self.now.insert(topic);
        }
        self.now
    }

    /// Whether the change of `key` to `value` (`None`: deleted) at `revision` is sent: whether the
    /// topics started before `revision` want it. Revisions must come in order.
    fn wants(&mut self, key: &str, value: Option<&Value>, revision: u64) -> bool {
        while let Some(started) = self.later.first_entry()
            && *started.key() < revision
        {
            for topic in started.remove() {
                self.now.insert(topic);
            }
        }
        self.now.wants(key, value)
    }
}

/// A stored value as JSON (values that are not JSON travel as a string).
fn value_json(value: &[u8]) -> Value {
    serde_json::from_slice(value)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(value).into_owned()))
}

/// One change as a line item: `{"key", "value", "revision"}` for a put (`value` is the event's value
/// as JSON), `{"key", "deleted": true, "revision"}` for a delete.
fn event_json(e: &Event, value: Option<Value>) -> Value {
    match value {
        Some(v) => json!({"key": e.key, "value": v, "revision": e.revision}),
        None => json!({"key": e.key, "deleted": true, "revision": e.revision}),
    }
}

async fn admin(api: &Api, headers: &HeaderMap) -> ApiResult<()> {
    if api.ctx(headers).await?.is_admin {
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
    let result: ApiResult<Vec<u8>> = async {
        admin(&api, &headers).await?;
        let topics = Asked::from_query(&Query::parse(q.as_deref()))?.all();
        // One range over the common prefix gives a consistent snapshot at one revision.
        let (kvs, revision) = api.db.store.range("/").await?;
        // Each object is judged on its membership fields alone, read from its encoding, and a
        // wanted one is written as stored: at 10 000 ports, decoding every object whole and
        // encoding the answer again was most of a restarted agent's wait.
        let mut body = format!(r#"{{"revision":{revision},"items":["#).into_bytes();
        let mut first = true;
        for kv in kvs
            .into_iter()
            .filter(|kv| nb_keys::parse(&kv.key).is_some())
        {
            let decided = match Topics::membership_of_encoded(&kv.value) {
                Some(membership) => topics.wants(&kv.key, Some(&membership)).then_some(kv.value),
                None => {
                    let value = value_json(&kv.value);
                    topics
                        .wants(&kv.key, Some(&value))
                        .then(|| serde_json::to_vec(&value).unwrap_or_default())
                }
            };
            let Some(value) = decided else {
                continue;
            };
            if !std::mem::take(&mut first) {
                body.push(b',');
            }
            body.extend_from_slice(br#"{"key":"#);
            body.extend_from_slice(&serde_json::to_vec(&kv.key).unwrap_or_default());
            body.extend_from_slice(br#","value":"#);
            body.extend_from_slice(&value);
            body.push(b'}');
        }
        body.extend_from_slice(b"]}");
        Ok(body)
    }
    .await;
    match result {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
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
        admin(&api, &headers).await?;
        let q = Query::parse(q.as_deref());
        let after: u64 = q
            .first("after")
            .unwrap_or("0")
            .parse()
            .map_err(|_| ApiError::bad_request("after must be a revision number"))?;
        let asked = Asked::from_query(&q)?;
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
        Ok((watch, asked, after))
    }
    .await;
    let (mut watch, mut asked, after) = match setup {
        Ok(s) => s,
        Err(e) => return e.into_response(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Value>(64);
    let client = api.metrics.sync_client(after);
    tokio::spawn(async move {
        loop {
            // A client gone while nothing changes is let go at once (and stops counting).
            let next = tokio::select! {
                next = watch.next() => next,
                () = tx.closed() => return,
            };
            let msg = match next {
                Ok(events) => {
                    let revision = events.last().map(|e: &Event| e.revision).unwrap_or(after);
                    let wanted: Vec<Value> = events
                        .iter()
                        .filter(|e| nb_keys::parse(&e.key).is_some())
                        .filter_map(|e| {
                            let value = e.value.as_deref().map(value_json);
                            asked
                                .wants(&e.key, value.as_ref(), e.revision)
                                .then(|| event_json(e, value))
                        })
                        .collect();
                    json!({"revision": revision, "events": wanted})
                }
                Err(StoreError::Compacted { oldest, .. }) => json!({"compacted": oldest}),
                Err(e) => json!({"error": e.to_string()}),
            };
            let sent = msg.get("revision").and_then(Value::as_u64);
            if tx.send(msg).await.is_err() {
                return;
            }
            match sent {
                Some(revision) => client.sent(revision),
                None => return,
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
