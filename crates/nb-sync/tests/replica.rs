//! The replica against a real in-process server: topic filtering, following changes, and a fresh
//! snapshot (with only the difference emitted) after the store compacted past the replica's revision
//! while it was cut off.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use nb_keys::Kind;
use nb_sync::{Change, Replica, Update};
use serde_json::{Value, json};
use support::{Relay, serve, serve_on};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

/// An embedded store that keeps only `retain` revisions of history.
fn open_store(dir: &tempfile::TempDir, retain: u64) -> Arc<dyn store::Store> {
    let options = store::embedded::EmbeddedOptions {
        log_retain: retain,
        ..Default::default()
    };
    Arc::new(
        store::embedded::EmbeddedStore::open_with(dir.path().join("nb.redb"), options).unwrap(),
    )
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
    let base = serve(open_store(&dir, 1000)).await;
    let (net_a, port_a) = network_with_port(&base, "a").await;
    let (replica, handle) = Replica::new(
        &base,
        nb_sync::Topics::networks(BTreeSet::from([net_a.clone()])),
    );
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(replica.run(tx));
    let mut held = Default::default();
    let key_a = Kind::Port.key(&port_a);
    collect_until(&mut rx, &mut held, |h| h.contains_key(&key_a)).await;
    // Changes after the snapshot arrive through the watch; another network's port does not.
    let (_net_b, port_b) = network_with_port(&base, "b").await;
    let port_a2 = post(&base, "/v2.0/ports", json!({"port": {"network_id": net_a}})).await;
    let key_a2 = Kind::Port.key(port_a2["port"]["id"].as_str().unwrap());
    collect_until(&mut rx, &mut held, |h| h.contains_key(&key_a2)).await;
    assert!(!held.contains_key(&Kind::Port.key(&port_b)));
    assert!(held.contains_key(&Kind::Network.key(&net_a)));
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
    let base = serve(store.clone()).await;
    let (net, port) = network_with_port(&base, "n").await;
    // The replica reads from a server of its own, restarted while the replica is cut off: a live
    // server's shared watch would still hold the missed revisions in its ring.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap();
    let own_server = serve_on(listener, store.clone());
    let relay = Relay::start(&format!("http://{own}")).await;
    let (replica, handle) = Replica::new(
        &relay.base,
        nb_sync::Topics::networks(BTreeSet::from([net.clone()])),
    );
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(replica.run(tx));
    let mut held = Default::default();
    let key = Kind::Port.key(&port);
    collect_until(&mut rx, &mut held, |h| h.contains_key(&key)).await;
    let before = held.clone();

    // Cut the replica off, then make more changes than the store keeps history for.
    relay.set_open(false);
    own_server.abort();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut added = Vec::new();
    for _ in 0..12 {
        let p = post(&base, "/v2.0/ports", json!({"port": {"network_id": net}})).await;
        added.push(Kind::Port.key(p["port"]["id"].as_str().unwrap()));
    }
    reqwest::Client::new()
        .delete(format!("{base}/v2.0/ports/{port}"))
        .send()
        .await
        .unwrap();
    serve_on(TcpListener::bind(own).await.unwrap(), store.clone());
    relay.set_open(true);

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
    let unchanged = Kind::Network.key(&net);
    assert!(before.contains_key(&unchanged));
    assert!(
        !update.changes.iter().any(|c| c.key() == unchanged),
        "unchanged object re-emitted"
    );
}
