//! The server's health, readiness and metrics endpoints: `/healthz` while the process serves,
//! `/readyz` only while the store answers and the shared watch follows it (checked by stopping and
//! restarting a real etcd), and `/metrics` counting requests by resource, method and status, store
//! transactions, sync clients and their lag, and the watch ring.

use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_fixture::EtcdCluster;
use serde_json::{Value, json};
use tokio::net::TcpListener;

async fn serve(store: Arc<dyn store::Store>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(api::serve(listener, store, api::ApiConfig::default()));
    base
}

async fn get(base: &str, path: &str) -> (u16, String) {
    let resp = reqwest::get(format!("{base}{path}")).await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

/// The value of the sample `name` (with its labels, exactly as rendered) in `text`.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

async fn metrics(base: &str) -> String {
    let (status, text) = get(base, "/metrics").await;
    assert_eq!(status, 200);
    text
}

/// Polls `/metrics` until `check` holds (10 s at most); returns the last text.
async fn metrics_until(base: &str, what: &str, check: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = metrics(base).await;
        if check(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}; metrics:\n{text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_transactions_and_sync_clients() {
    let dir = tempfile::tempdir().unwrap();
    let spec = format!("embedded:{}", dir.path().join("nb.redb").display());
    let base = serve(store::open(&spec).unwrap()).await;
    let client = reqwest::Client::new();

    assert_eq!(get(&base, "/healthz").await.0, 200);
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let ready: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(ready["ready"], true);

    // A sync client, then writes it follows.
    let mut watch = client
        .get(format!("{base}/wyvern/v1/sync/watch?after=0&all=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let mut ids = Vec::new();
    for i in 0..3 {
        let resp = client
            .post(format!("{base}/v2.0/networks"))
            .json(&json!({"network": {"name": format!("n{i}")}}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201);
        let v: Value = resp.json().await.unwrap();
        ids.push(v["network"]["id"].as_str().unwrap().to_string());
    }
    let missing = client
        .get(format!(
            "{base}/v2.0/ports/00000000-0000-0000-0000-000000000000"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    // Concurrent renames of one network: some transactions lose the race and are planned again.
    let renames = (0..16).map(|i| {
        client
            .put(format!("{base}/v2.0/networks/{}", ids[0]))
            .json(&json!({"network": {"name": format!("r{i}")}}))
            .send()
    });
    for resp in futures::future::join_all(renames).await {
        assert_eq!(resp.unwrap().status(), 200);
    }
    // The client reads every batch.
    let mut seen = Vec::new();
    while !ids
        .iter()
        .all(|id| String::from_utf8_lossy(&seen).contains(id.as_str()))
    {
        let chunk = tokio::time::timeout(Duration::from_secs(5), watch.chunk())
            .await
            .expect("watch stream")
            .unwrap()
            .expect("stream open");
        seen.extend_from_slice(&chunk);
    }

    let text = metrics_until(&base, "the sync client caught up", |t| {
        sample(t, "wyvern_sync_clients") == Some(1.0)
            && sample(t, "wyvern_sync_client_lag_revisions_max") == Some(0.0)
            && sample(t, "wyvern_watch_revision") >= Some(19.0)
    })
    .await;
    let created = "wyvern_api_request_duration_seconds_count{resource=\"networks\",method=\"POST\",status=\"201\"}";
    assert_eq!(sample(&text, created), Some(3.0), "{text}");
    let updated = "wyvern_api_request_duration_seconds_count{resource=\"networks\",method=\"PUT\",status=\"200\"}";
    assert_eq!(sample(&text, updated), Some(16.0), "{text}");
    let not_found = "wyvern_api_request_duration_seconds_count{resource=\"ports\",method=\"GET\",status=\"404\"}";
    assert_eq!(sample(&text, not_found), Some(1.0), "{text}");
    let bucket = "wyvern_api_request_duration_seconds_bucket{resource=\"networks\",method=\"POST\",status=\"201\",le=\"+Inf\"}";
    assert_eq!(sample(&text, bucket), Some(3.0), "{text}");
    assert!(text.contains("# TYPE wyvern_api_request_duration_seconds histogram"));
    // Every write committed once; each conflict made its call plan again.
    let committed = sample(
        &text,
        "wyvern_store_txn_duration_seconds_count{outcome=\"committed\"}",
    )
    .unwrap();
    assert!(committed >= 19.0, "{text}");
    let conflicts = sample(&text, "wyvern_store_txn_conflicts_total").unwrap();
    let conflict_txns = sample(
        &text,
        "wyvern_store_txn_duration_seconds_count{outcome=\"conflict\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(conflicts, conflict_txns, "{text}");
    assert!(
        // A batch holds one or more whole revisions.
        sample(&text, "wyvern_watch_ring_batches").unwrap() > 0.0,
        "{text}"
    );
    assert!(
        sample(&text, "wyvern_watch_ring_bytes").unwrap() > 0.0,
        "{text}"
    );
    assert_eq!(sample(&text, "wyvern_watch_following"), Some(1.0));
    eprintln!("{committed} transactions committed, {conflicts} conflicts");

    // The client goes: it no longer counts, even though nothing changes.
    drop(watch);
    metrics_until(&base, "the closed sync client still counted", |t| {
        sample(t, "wyvern_sync_clients") == Some(0.0)
    })
    .await;
}

/// Polls `/readyz` until it answers `want` (20 s at most); returns how long that took.
async fn readiness_becomes(base: &str, want: u16) -> Duration {
    let start = Instant::now();
    loop {
        let (status, body) = get(base, "/readyz").await;
        if status == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "/readyz still {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_fails_while_etcd_is_unreachable() {
    let mut cluster = EtcdCluster::start(1).await.expect("etcd");
    let base = serve(store::open(&cluster.spec("/wyvern-ready")).unwrap()).await;
    readiness_becomes(&base, 200).await;

    cluster.kill(0).unwrap();
    let down = readiness_becomes(&base, 503).await;
    let (status, body) = get(&base, "/readyz").await;
    assert_eq!(status, 503);
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["ready"], false);
    assert_eq!(body["store"]["reachable"], false, "{body}");
    assert_eq!(get(&base, "/healthz").await.0, 200, "the process is up");
    let text = metrics(&base).await;
    assert!(
        text.contains("wyvern_api_request_duration_seconds_count{resource=\"readyz\",method=\"GET\",status=\"503\"}"),
        "{text}"
    );

    cluster.restart(0).await.unwrap();
    let up = readiness_becomes(&base, 200).await;
    eprintln!("not ready {down:?} after etcd stopped; ready again {up:?} after it restarted");
}
