//! Failover between two servers on one real etcd: a replica following through server A moves to
//! server B within a second of A's death (its process gone: every connection closed, new ones
//! refused), resumes its watch from the last revision it applied (no new snapshot), and a write
//! through B reaches it.

use std::time::{Duration, Instant};

use etcd_fixture::EtcdCluster;
use nb_sync::{Replica, Servers, Update};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// A server with a runtime of its own, so that dropping the runtime ends it as a killed process
/// ends: its listener and every open connection close at once.
struct OwnServer {
    base: String,
    runtime: Option<tokio::runtime::Runtime>,
}

impl OwnServer {
    fn start(store_spec: &str) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let spec = store_spec.to_string();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let store = store::open(&spec).unwrap();
            let _ = api::serve(listener, store, api::ApiConfig::default()).await;
        });
        Self {
            base,
            runtime: Some(runtime),
        }
    }

    fn kill(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Waits for an update that puts `key`; returns it.
async fn wait_for_key(updates: &mut mpsc::Receiver<Update>, key: &str, within: Duration) -> Update {
    tokio::time::timeout(within, async {
        loop {
            let update = updates.recv().await.expect("replica running");
            if update.changes.iter().any(|c| c.key() == key) {
                return update;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{key} not replicated within {within:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_moves_to_the_other_server_within_a_second_without_a_snapshot() {
    let cluster = EtcdCluster::start(1).await.expect("etcd");
    let spec = cluster.spec("/wyvern-failover");
    let mut a = OwnServer::start(&spec);
    let b = OwnServer::start(&spec);

    let servers = Servers::parse(&format!("{},{}", a.base, b.base));
    let (replica, handle) = Replica::with_servers(servers.clone(), nb_sync::Topics::everything());
    let (tx, mut updates) = mpsc::channel(64);
    let task = tokio::spawn(replica.run(tx));

    let net = post(
        &a.base,
        "/v2.0/networks",
        json!({"network": {"name": "before"}}),
    )
    .await;
    let key = format!("/r/networks/{}", net["network"]["id"].as_str().unwrap());
    wait_for_key(&mut updates, &key, Duration::from_secs(10)).await;
    let before = handle.stats();
    assert_eq!(before.snapshots, 1);
    assert_eq!(servers.current(), a.base, "follows through A first");

    a.kill();
    let killed = Instant::now();
    while handle.stats().resumes == before.resumes {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "not watching through B within 1 s of A's death: {:?}",
            handle.stats()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failover = killed.elapsed();
    assert_eq!(servers.current(), b.base);
    assert_eq!(servers.failovers(), 1);

    let net = post(
        &b.base,
        "/v2.0/networks",
        json!({"network": {"name": "after"}}),
    )
    .await;
    let key = format!("/r/networks/{}", net["network"]["id"].as_str().unwrap());
    let update = wait_for_key(&mut updates, &key, Duration::from_secs(1)).await;
    assert!(
        !update.from_snapshot,
        "the write came through the resumed watch"
    );
    let after = handle.stats();
    assert_eq!(
        after.snapshots, before.snapshots,
        "no new snapshot: {after:?}"
    );
    assert_eq!(after.partial_snapshots, before.partial_snapshots);
    eprintln!("watching through B {failover:?} after A's death; {after:?}");
    task.abort();
}
