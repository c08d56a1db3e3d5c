//! The server's health, readiness and Prometheus metrics.
//!
//! `GET /healthz` answers 200 while the process serves HTTP. `GET /readyz` answers 200 when the store
//! answers within a second and the shared watch that feeds the sync clients follows it, else 503:
//! what load balancers and supervisors ask before sending traffic. `GET /metrics` is the Prometheus
//! text exposition: API requests by resource, method and status with latency histograms, store
//! transaction latency and conflicts, sync clients connected and their lag behind the shared watch,
//! and the watch ring's size. None of them needs credentials.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures::future::BoxFuture;
use serde_json::json;
use store::{
    KeyValue, LeaseId, Revision, SharedWatchStatus, Store, StoreError, Txn, TxnOutcome, Watch,
};

use crate::Api;

/// Upper bounds (seconds) of the latency histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long the readiness probe waits for the store.
const READY_WITHIN: Duration = Duration::from_secs(1);

/// A Prometheus histogram of durations.
#[derive(Debug, Clone, Default)]
struct Histogram {
    /// Observations per bucket (not cumulative), the last one past every bound.
    counts: [u64; BUCKETS.len() + 1],
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i] += 1;
        self.sum += s;
    }

    /// The `_bucket`, `_sum` and `_count` lines of `name` with `labels` (`k="v",...` or empty).
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (bound, count) in BUCKETS.iter().zip(self.counts) {
            cumulative += count;
            let _ = writeln!(
                out,
                "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {cumulative}"
            );
        }
        cumulative += self.counts[BUCKETS.len()];
        let _ = writeln!(
            out,
            "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {cumulative}"
        );
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {}", self.sum);
        let _ = writeln!(out, "{name}_count{braces} {cumulative}");
    }
}

/// A request's labels: resource, method, status.
type RequestLabels = (&'static str, &'static str, u16);

/// What the server counts.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestLabels, Histogram>>,
    /// Store transactions by outcome (`committed`, `conflict`, `error`).
    txns: Mutex<BTreeMap<&'static str, Histogram>>,
    /// The revision each connected sync client has been sent up to, by client.
    sync_clients: Mutex<BTreeMap<u64, Arc<AtomicU64>>>,
    next_client: AtomicU64,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The resource a request path is about, from a bounded set (so that labels stay few).
fn resource_of(path: &str) -> &'static str {
    let mut parts = path.trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("v2.0"), Some(""), ..) | (Some("v2.0"), None, ..) | (Some(""), ..) => "index",
        (Some("v2.0"), Some("extensions"), ..) => "extensions",
        (Some("v2.0"), Some("availability_zones"), ..) => "availability_zones",
        (Some("v2.0"), Some("quotas"), ..) => "quotas",
        (Some("v2.0"), Some(collection), ..) => {
            model::resource_by_path(collection.strip_suffix(".json").unwrap_or(collection))
                .map_or("unknown", |def| def.collection)
        }
        (Some("wyvern"), Some("v1"), Some("sync"), Some("snapshot")) => "sync_snapshot",
        (Some("wyvern"), Some("v1"), Some("sync"), Some("watch")) => "sync_watch",
        (Some("wyvern"), Some("v1"), Some("openapi.json"), None) => "openapi",
        // A chassis' batch of binding reports counts with the single ones.
        (Some("wyvern"), Some("v1"), Some("chassis"), Some(_))
            if parts.next() == Some("bindings") =>
        {
            "port_bindings"
        }
        (Some("wyvern"), Some("v1"), Some("chassis"), _) => "chassis",
        (Some("wyvern"), Some("v1"), Some("ports"), _) => "port_bindings",
        (Some("healthz"), None, ..) => "healthz",
        (Some("readyz"), None, ..) => "readyz",
        (Some("metrics"), None, ..) => "metrics",
        _ => "unknown",
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        _ => "other",
    }
}

/// A sync client, counted as connected until dropped.
pub struct SyncClient {
    metrics: Arc<Metrics>,
    id: u64,
    revision: Arc<AtomicU64>,
}

impl SyncClient {
    /// The client has been sent every change up to `revision`.
    pub fn sent(&self, revision: Revision) {
        self.revision.store(revision, Ordering::Relaxed);
    }
}

impl Drop for SyncClient {
    fn drop(&mut self) {
        lock(&self.metrics.sync_clients).remove(&self.id);
    }
}

impl Metrics {
    /// Counts a sync client that starts after `after`.
    pub fn sync_client(self: &Arc<Self>, after: Revision) -> SyncClient {
        let id = self.next_client.fetch_add(1, Ordering::Relaxed);
        let revision = Arc::new(AtomicU64::new(after));
        lock(&self.sync_clients).insert(id, revision.clone());
        SyncClient {
            metrics: self.clone(),
            id,
            revision,
        }
    }

    /// The Prometheus text of every metric; `watch`: the shared watch's state, if it started.
    pub fn render(&self, watch: Option<SharedWatchStatus>) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP wyvern_api_request_duration_seconds API requests by resource, method and status, \
             and how long they took (a sync watch: until its stream started).\n\
             # TYPE wyvern_api_request_duration_seconds histogram\n",
        );
        for ((resource, method, status), h) in lock(&self.requests).iter() {
            let labels = format!("resource=\"{resource}\",method=\"{method}\",status=\"{status}\"");
            h.render(&mut out, "wyvern_api_request_duration_seconds", &labels);
        }
        out.push_str(
            "# HELP wyvern_store_txn_duration_seconds Store transactions by outcome (a conflict \
             makes its call plan again), and how long they took.\n\
             # TYPE wyvern_store_txn_duration_seconds histogram\n",
        );
        for (outcome, h) in lock(&self.txns).iter() {
            let labels = format!("outcome=\"{outcome}\"");
            h.render(&mut out, "wyvern_store_txn_duration_seconds", &labels);
        }
        let conflicts = lock(&self.txns)
            .get("conflict")
            .map_or(0, |h| h.counts.iter().sum());
        gauge(
            &mut out,
            "wyvern_store_txn_conflicts_total",
            "counter",
            "Store transactions refused because an object changed since it was read; each one is retried.",
            conflicts,
        );
        let sent: Vec<u64> = lock(&self.sync_clients)
            .values()
            .map(|r| r.load(Ordering::Relaxed))
            .collect();
        gauge(
            &mut out,
            "wyvern_sync_clients",
            "gauge",
            "Sync watch streams open.",
            sent.len() as u64,
        );
        let newest = watch.map_or(0, |w| w.newest);
        let lag = sent
            .iter()
            .map(|r| newest.saturating_sub(*r))
            .max()
            .unwrap_or(0);
        gauge(
            &mut out,
            "wyvern_sync_client_lag_revisions_max",
            "gauge",
            "Revisions the furthest-behind sync client has yet to be sent of what the shared watch has seen.",
            lag,
        );
        let w = watch.unwrap_or(SharedWatchStatus {
            following: false,
            newest: 0,
            ring_batches: 0,
            ring_bytes: 0,
        });
        gauge(
            &mut out,
            "wyvern_watch_following",
            "gauge",
            "1 while the shared store watch is up.",
            u64::from(w.following),
        );
        gauge(
            &mut out,
            "wyvern_watch_revision",
            "gauge",
            "Newest store revision the shared watch has seen.",
            w.newest,
        );
        gauge(
            &mut out,
            "wyvern_watch_ring_batches",
            "gauge",
            "Batches in the shared watch's ring.",
            w.ring_batches as u64,
        );
        gauge(
            &mut out,
            "wyvern_watch_ring_bytes",
            "gauge",
            "Bytes of keys and values in the shared watch's ring.",
            w.ring_bytes as u64,
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

/// Middleware: times every request and counts it by resource, method and status.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let resource = resource_of(req.uri().path());
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    lock(&metrics.requests)
        .entry((resource, method, resp.status().as_u16()))
        .or_default()
        .observe(start.elapsed());
    resp
}

/// `GET /healthz`.
pub async fn healthz() -> Response {
    axum::Json(json!({"status": "ok"})).into_response()
}

/// `GET /readyz`: the store answers within a second and the shared watch follows it.
pub async fn readyz(State(api): State<Api>) -> Response {
    let store = match tokio::time::timeout(READY_WITHIN, api.db.store.revision()).await {
        Ok(Ok(revision)) => Ok(revision),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {READY_WITHIN:?}")),
    };
    let deadline = tokio::time::Instant::now() + READY_WITHIN;
    let mut watch = api.watches.status();
    if store.is_ok()
        && tokio::time::timeout_at(deadline, api.watches.start())
            .await
            .is_ok()
    {
        // A watch just started (or re-established) is given the rest of the second to come up.
        loop {
            watch = api.watches.status();
            if watch.is_some_and(|w| w.following) || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let following = watch.is_some_and(|w| w.following);
    let status = if store.is_ok() && following {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": status == StatusCode::OK,
        "store": match &store {
            Ok(revision) => json!({"reachable": true, "revision": revision}),
            Err(e) => json!({"reachable": false, "error": e}),
        },
        "watch": {"following": following, "revision": watch.map(|w| w.newest)},
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(api): State<Api>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.metrics.render(api.watches.status()),
    )
        .into_response()
}

/// A store that times its transactions into [`Metrics`]; everything else passes through.
pub struct MeteredStore {
    pub inner: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
}

impl Store for MeteredStore {
    fn revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        self.inner.revision()
    }

    fn get<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<Option<KeyValue>, StoreError>> {
        self.inner.get(key)
    }

    fn range<'a>(
        &'a self,
        prefix: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<KeyValue>, Revision), StoreError>> {
        self.inner.range(prefix)
    }

    fn txn(&self, txn: Txn) -> BoxFuture<'_, Result<TxnOutcome, StoreError>> {
        Box::pin(async move {
            let start = Instant::now();
            let outcome = self.inner.txn(txn).await;
            let label = match &outcome {
                Ok(TxnOutcome::Committed(_)) => "committed",
                Ok(TxnOutcome::Conflict(_)) => "conflict",
                Err(_) => "error",
            };
            lock(&self.metrics.txns)
                .entry(label)
                .or_default()
                .observe(start.elapsed());
            outcome
        })
    }

    fn watch<'a>(
        &'a self,
        prefix: &'a str,
        after: Revision,
    ) -> BoxFuture<'a, Result<Box<dyn Watch>, StoreError>> {
        self.inner.watch(prefix, after)
    }

    fn lease_grant(&self, ttl: Duration) -> BoxFuture<'_, Result<LeaseId, StoreError>> {
        self.inner.lease_grant(ttl)
    }

    fn lease_keep_alive(&self, lease: LeaseId) -> BoxFuture<'_, Result<Duration, StoreError>> {
        self.inner.lease_keep_alive(lease)
    }

    fn lease_revoke(&self, lease: LeaseId) -> BoxFuture<'_, Result<(), StoreError>> {
        self.inner.lease_revoke(lease)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_are_named_from_a_bounded_set() {
        assert_eq!(resource_of("/v2.0/ports"), "ports");
        assert_eq!(resource_of("/v2.0/ports.json"), "ports");
        assert_eq!(
            resource_of("/v2.0/security-group-rules/x"),
            "security_group_rules"
        );
        assert_eq!(
            resource_of("/v2.0/routers/r/add_router_interface"),
            "routers"
        );
        assert_eq!(resource_of("/v2.0/no-such-thing/x"), "unknown");
        assert_eq!(resource_of("/wyvern/v1/sync/watch"), "sync_watch");
        assert_eq!(resource_of("/wyvern/v1/chassis/c1/heartbeat"), "chassis");
        assert_eq!(
            resource_of("/wyvern/v1/chassis/c1/bindings"),
            "port_bindings"
        );
        assert_eq!(resource_of("/wyvern/v1/ports/p1/binding"), "port_bindings");
        assert_eq!(resource_of("/wyvern/v1/openapi.json"), "openapi");
        assert_eq!(resource_of("/"), "index");
        assert_eq!(resource_of("/etc/passwd"), "unknown");
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut h = Histogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(30));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "a=\"b\"");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"0.05\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{a=\"b\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{a=\"b\"} 3\n"), "{out}");
    }
}
