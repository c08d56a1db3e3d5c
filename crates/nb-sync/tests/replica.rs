//! The replica against a real in-process server: topic filtering, following changes, and a fresh
//! snapshot (with only the difference emitted) after the store compacted past the replica's revision
//! while it was cut off.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nb_sync::{Change, Replica, Update};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// An embedded store that keeps only `retain` revisions of history.
fn open_store(dir: &tempfile::TempDir, retain: u64) -> Arc<dyn store::Store> {
    let options = store::embedded::EmbeddedOptions { log_retain: retain };
    Arc::new(
        store::embedded::EmbeddedStore::open_with(dir.path().join("nb.redb"), options).unwrap(),
    )
}

/// An in-process server on `store`, listening on `listener`.
fn serve_on(listener: TcpListener, store: Arc<dyn store::Store>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _ = api::serve(listener, store, api::ApiConfig::default()).await;
    })
}

/// An in-process server on an embedded store that keeps only `retain` revisions of history.
async fn server(dir: &tempfile::TempDir, retain: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    serve_on(listener, open_store(dir, retain));
    base
}

/// A TCP proxy that can cut every connection and refuse new ones, to isolate a client.
struct Proxy {
    addr: String,
    up: Arc<AtomicBool>,
}

impl Proxy {
    async fn start(target: &str) -> Self {
        let target = target.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = format!("http://{}", listener.local_addr().unwrap());
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue;
                }
                let (target, flag) = (target.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let copy = tokio::io::copy_bidirectional(&mut client, &mut server);
                    let cut = async {
                        while flag.load(Ordering::SeqCst) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    };
                    tokio::select! { _ = copy => {}, _ = cut => {} }
                });
            }
        });
        Self { addr, up }
    }
    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

async fn post(base: &str, path: &str, body: Value) -> Value {
    let resp = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.json().await.unwrap()
}

async fn network_with_port(base: &str, name: &str) -> (String, String) {
    let net = post(base, "/v2.0/networks", json!({"network": {"name": name}})).await;
    let id = net["network"]["id"].as_str().unwrap().to_string();
    let port = post(base, "/v2.0/ports", json!({"port": {"network_id": id}})).await;
    (id, port["port"]["id"].as_str().unwrap().to_string())
}

/// Receives updates until `done` says the collected keys are complete.
async fn collect_until(
    rx: &mut mpsc::Receiver<Update>,
    held: &mut std::collections::BTreeMap<String, Value>,
    done: impl Fn(&std::collections::BTreeMap<String, Value>) -> bool,
) {
    tokio::time::timeout(Duration::from_secs(10), async {
        while !done(held) {
            let update = rx.recv().await.expect("replica stopped");
            for c in update.changes {
                match c {
                    Change::Put(k, v) => {
                        held.insert(k, v);
                    }
                    Change::Delete(k) => {
                        held.remove(&k);
                    }
                }
            }
        }
    })
    .await
    .expect("replica did not converge");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_only_its_topics() {
    let dir = tempfile::tempdir().unwrap();
    let base = server(&dir, 1000).await;
    let (net_a, port_a) = network_with_port(&base, "a").await;
    let (replica, handle) = Replica::new(
        &base,
        nb_sync::Topics::networks(BTreeSet::from([net_a.clone()])),
    );
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(replica.run(tx));
    let mut held = Default::default();
    let key_a = format!("/r/ports/{port_a}");
    collect_until(&mut rx, &mut held, |h| h.contains_key(&key_a)).await;
    // Changes after the snapshot arrive through the watch; another network's port does not.
    let (_net_b, port_b) = network_with_port(&base, "b").await;
    let port_a2 = post(&base, "/v2.0/ports", json!({"port": {"network_id": net_a}})).await;
    let key_a2 = format!("/r/ports/{}", port_a2["port"]["id"].as_str().unwrap());
    collect_until(&mut rx, &mut held, |h| h.contains_key(&key_a2)).await;
    assert!(!held.contains_key(&format!("/r/ports/{port_b}")));
    assert!(held.contains_key(&format!("/r/networks/{net_a}")));
    // A deletion is followed too.
    reqwest::Client::new()
        .delete(format!("{base}/v2.0/ports/{port_a}"))
        .send()
        .await
        .unwrap();
    collect_until(&mut rx, &mut held, |h| !h.contains_key(&key_a)).await;
    assert_eq!(handle.stats().snapshots, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resnapshots_after_compaction_and_emits_only_the_difference() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(&dir, 5);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    serve_on(listener, store.clone());
    let (net, port) = network_with_port(&base, "n").await;
    // The replica reads from a server of its own, restarted while the replica is cut off: a live
    // server's shared watch would still hold the missed revisions in its ring.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap();
    let own_server = serve_on(listener, store.clone());
    let proxy = Proxy::start(&format!("http://{own}")).await;
    let (replica, handle) = Replica::new(
        &proxy.addr,
        nb_sync::Topics::networks(BTreeSet::from([net.clone()])),
    );
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(replica.run(tx));
    let mut held = Default::default();
    let key = format!("/r/ports/{port}");
    collect_until(&mut rx, &mut held, |h| h.contains_key(&key)).await;
    let before = held.clone();

    // Cut the replica off, then make more changes than the store keeps history for.
    proxy.set_up(false);
    own_server.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut added = Vec::new();
    for _ in 0..12 {
        let p = post(&base, "/v2.0/ports", json!({"port": {"network_id": net}})).await;
        added.push(format!("/r/ports/{}", p["port"]["id"].as_str().unwrap()));
    }
    reqwest::Client::new()
        .delete(format!("{base}/v2.0/ports/{port}"))
        .send()
        .await
        .unwrap();
    serve_on(TcpListener::bind(own).await.unwrap(), store.clone());
    proxy.set_up(true);

    // The next update is a fresh snapshot holding just the difference.
    let update = tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(update.from_snapshot);
    let stats = handle.stats();
    assert_eq!(stats.compactions, 1, "{stats:?}");
    assert_eq!(stats.snapshots, 2, "{stats:?}");
    assert!(update.changes.contains(&Change::Delete(key.clone())));
    for k in &added {
        assert!(update.changes.iter().any(|c| c.key() == k), "missing {k}");
    }
    // Objects that did not change are not emitted again.
    let unchanged = format!("/r/networks/{net}");
    assert!(before.contains_key(&unchanged));
    assert!(
        !update.changes.iter().any(|c| c.key() == unchanged),
        "unchanged object re-emitted"
    );
}
