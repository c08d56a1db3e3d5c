//! The replica on a server backed by a real etcd cluster: it follows the server through an etcd leader
//! failure without missing or repeating a revision (checked against the store's own history), and after
//! etcd compacted past its revision it takes a fresh snapshot and a pipeline fed from it converges to the
//! flows of a pipeline fed from a fresh replica.

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_fixture::EtcdCluster;
use nb_keys::Kind;
use nb_sync::{Change, Handle, Replica, Update};
use openflow::Flow;
use pipeline::{Input, Pipeline};
use serde_json::{Value, json};
use store::{Event, Revision, Store};
use support::{Relay, serve, serve_on};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

/// The chassis whose pipeline the compaction test computes.
const LOCAL: &str = "c1";

/// Sends a write, again after each 503 (the store lost its leader); returns the answer and how many
/// 503s came first. Any other failure fails the test.
async fn write(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Value,
) -> (Value, usize) {
    let mut unavailable = 0;
    loop {
        let resp = client
            .request(method.clone(), url)
            .json(&body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        match status {
            200 | 201 => return (answer, unavailable),
            503 => {
                unavailable += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => panic!("{method} {url}: {status} {answer}"),
        }
    }
}

async fn post(client: &reqwest::Client, base: &str, path: &str, body: Value) -> Value {
    write(
        client,
        reqwest::Method::POST,
        &format!("{base}{path}"),
        body,
    )
    .await
    .0
}

async fn network_with_subnet(client: &reqwest::Client, base: &str, cidr: &str) -> String {
    let net = post(
        client,
        base,
        "/v2.0/networks",
        json!({"network": {"name": "n"}}),
    )
    .await;
    let id = net["network"]["id"].as_str().unwrap().to_string();
    let subnet = json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": cidr}});
    post(client, base, "/v2.0/subnets", subnet).await;
    id
}

/// Starts a replica of everything at `base`; its updates are collected into the returned list.
fn follow(base: &str) -> (Handle, Arc<Mutex<Vec<Update>>>) {
    let (replica, handle) = Replica::new(base, nb_sync::Topics::everything());
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(replica.run(tx));
    let updates = Arc::new(Mutex::new(Vec::new()));
    let sink = updates.clone();
    tokio::spawn(async move {
        while let Some(update) = rx.recv().await {
            sink.lock().unwrap().push(update);
        }
    });
    (handle, updates)
}

fn last_revision(updates: &Mutex<Vec<Update>>) -> Revision {
    updates.lock().unwrap().last().map_or(0, |u| u.revision)
}

/// Every change under the synced prefixes after `after`, up to and including `until`.
async fn history(store: &dyn Store, after: Revision, until: Revision) -> Vec<Event> {
    let mut watch = store.watch("/", after).await.expect("watch the history");
    let mut events: Vec<Event> = Vec::new();
    while events.last().is_none_or(|e| e.revision < until) {
        let batch = tokio::time::timeout(Duration::from_secs(10), watch.next())
            .await
            .expect("history up to the last write")
            .expect("history watch");
        events.extend(batch);
    }
    events.retain(|e| nb_keys::parse(&e.key).is_some());
    events
}

/// Checks that the updates after the first snapshot are exactly `history`: the same changes in the same
/// order, each update ending at a revision boundary. Returns the revisions applied.
fn assert_replays(updates: &[Update], history: &[Event]) -> BTreeSet<Revision> {
    let mut next = history.iter().peekable();
    let mut applied = BTreeSet::new();
    for update in updates {
        assert!(
            !update.from_snapshot,
            "a second snapshot at {}",
            update.revision
        );
        for change in &update.changes {
            let event = next.next().unwrap_or_else(|| {
                panic!(
                    "change {change:?} at {} is not in the history",
                    update.revision
                )
            });
            assert_eq!(change.key(), event.key, "at revision {}", event.revision);
            let expected = event
                .value
                .as_ref()
                .map(|v| serde_json::from_slice::<Value>(v).unwrap());
            let got = match change {
                Change::Put(_, v) => Some(v.clone()),
                Change::Delete(_) => None,
            };
            assert_eq!(
                got, expected,
                "value of {} at {}",
                event.key, event.revision
            );
            assert!(event.revision <= update.revision);
            applied.insert(event.revision);
        }
        assert_eq!(
            applied.last(),
            Some(&update.revision),
            "update ends at its revision"
        );
        if let Some(following) = next.peek() {
            assert!(
                following.revision > update.revision,
                "revision {} split across updates",
                update.revision
            );
        }
    }
    let missed: Vec<&Event> = next.collect();
    assert!(missed.is_empty(), "the replica missed {missed:?}");
    applied
}

/// A port as the API shows it, as far as the test checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PortState {
    id: String,
    ip: String,
    mac: String,
    name: String,
}

impl PortState {
    fn of(port: &Value) -> Self {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        Self {
            id: text(&port["id"]),
            ip: text(&port["fixed_ips"][0]["ip_address"]),
            mac: text(&port["mac_address"]),
            name: text(&port["name"]),
        }
    }
}

/// What a writer saw: the ports as last acknowledged, how many 503s came, and its slowest write
/// (retries included).
struct Written {
    acked: Vec<PortState>,
    unavailable: usize,
    slowest: Duration,
}

/// Creates `count` ports one after the other and renames each one after its creation, retrying
/// 503s.
async fn create_ports(base: String, net: String, count: usize) -> Written {
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    let mut unavailable = 0;
    let mut slowest = Duration::ZERO;
    for i in 0..count {
        let began = std::time::Instant::now();
        let body = json!({"port": {"network_id": net}});
        let url = format!("{base}/v2.0/ports");
        let (created, failed) = write(&client, reqwest::Method::POST, &url, body).await;
        unavailable += failed;
        let url = format!("{url}/{}", created["port"]["id"].as_str().unwrap());
        let body = json!({"port": {"name": format!("renamed-{i}")}});
        let (renamed, failed) = write(&client, reqwest::Method::PUT, &url, body).await;
        unavailable += failed;
        slowest = slowest.max(began.elapsed());
        acked.push(PortState::of(&renamed["port"]));
    }
    Written {
        acked,
        unavailable,
        slowest,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_follows_through_a_leader_failure_without_missing_a_revision() {
    const WRITERS: usize = 2;
    const PER_WRITER: usize = 30;
    let mut cluster = EtcdCluster::start(3).await.expect("etcd cluster");
    let spec = cluster.spec("/wyvern");
    let base = serve(store::open(&spec).unwrap()).await;
    let client = reqwest::Client::new();
    let net = network_with_subnet(&client, &base, "10.60.0.0/24").await;

    // The replica reaches the server through a relay, which is cut while the leader dies, so that it
    // also has to resume its watch during the election.
    let relay = Relay::start(&base).await;
    let (handle, updates) = follow(&relay.base);
    while updates.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let snapshot = updates.lock().unwrap()[0].clone();
    assert!(snapshot.from_snapshot);

    let writers: Vec<_> = (0..WRITERS)
        .map(|_| tokio::spawn(create_ports(base.clone(), net.clone(), PER_WRITER)))
        .collect();
    let history_store = store::open(&spec).unwrap();
    while history_store.range(nb_keys::PORTS).await.unwrap().0.len() < 20 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    relay.set_open(false);
    let killed = cluster.kill_leader().await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    relay.set_open(true);

    let mut acked = Vec::new();
    let mut unavailable = 0;
    let mut slowest = Duration::ZERO;
    for w in writers {
        let written = w.await.unwrap();
        acked.extend(written.acked);
        unavailable += written.unavailable;
        slowest = slowest.max(written.slowest);
    }

    // Every acknowledged port is there as last answered, and no address or MAC is taken twice.
    let listed: Value = client
        .get(format!("{base}/v2.0/ports?network_id={net}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ports = listed["ports"].as_array().unwrap();
    let stored: HashSet<PortState> = ports.iter().map(PortState::of).collect();
    for a in &acked {
        assert!(stored.contains(a), "acknowledged port {a:?} lost");
    }
    let ips: HashSet<&String> = stored.iter().map(|p| &p.ip).collect();
    let macs: HashSet<&String> = stored.iter().map(|p| &p.mac).collect();
    assert_eq!(ips.len(), stored.len(), "an IP handed out twice");
    assert_eq!(macs.len(), stored.len(), "a MAC handed out twice");
    // A 503 may come after the port was written; a retried create then makes a second one.
    assert!(stored.len() <= acked.len() + unavailable);

    // The replica applied exactly the store's history after its snapshot.
    let last = history_store.revision().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), async {
        while last_revision(&updates) < last {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the replica caught up");
    let history = history(&*history_store, snapshot.revision, last).await;
    let applied = assert_replays(&updates.lock().unwrap()[1..], &history);
    let stats = handle.stats();
    assert_eq!(stats.snapshots, 1, "{stats:?}");
    assert!(stats.resumes >= 2, "the watch was resumed: {stats:?}");
    println!(
        "killed member {killed}; {} ports acknowledged, {unavailable} answers 503, {} stored, \
         slowest write {slowest:?}; replica applied {} revisions {}..={} in {} updates, {stats:?}",
        acked.len(),
        stored.len(),
        applied.len(),
        applied.first().unwrap(),
        applied.last().unwrap(),
        updates.lock().unwrap().len() - 1,
    );
}

/// The OpenFlow port the VIF of local port `id` gets (any fixed function of the id).
fn ofport(id: &str) -> u32 {
    10 + u32::from_str_radix(&id[..4], 16).unwrap_or(0)
}

/// Feeds a replica's updates into a pipeline of chassis [`LOCAL`], where every port bound to it has a
/// VIF; publishes the revision and the desired flows after each update.
fn compute(base: &str) -> (Handle, watch::Receiver<(Revision, HashSet<Flow>)>) {
    let (replica, handle) = Replica::new(base, nb_sync::Topics::everything());
    let (tx, mut rx) = mpsc::channel::<Update>(16);
    tokio::spawn(replica.run(tx));
    let (out, flows) = watch::channel((0, HashSet::new()));
    tokio::spawn(async move {
        let mut pipeline = Pipeline::new(LOCAL);
        pipeline.apply(Input::Tunnel(Some(1)));
        while let Some(update) = rx.recv().await {
            for change in update.changes {
                let (key, value) = match change {
                    Change::Put(k, v) => (k, Some(v)),
                    Change::Delete(k) => (k, None),
                };
                if let Some((Kind::Port, id)) = nb_keys::parse(&key) {
                    let local = value
                        .as_ref()
                        .is_some_and(|v| v["binding:host_id"] == LOCAL);
                    pipeline.apply(Input::Vif(id.to_string(), local.then(|| ofport(id))));
                }
                pipeline.apply(Input::Object(key, value));
            }
            out.send_replace((update.revision, pipeline.flows().cloned().collect()));
        }
    });
    (handle, flows)
}

/// Waits until the pipeline has seen revision `at`; returns its flows.
async fn flows_at(
    flows: &mut watch::Receiver<(Revision, HashSet<Flow>)>,
    at: Revision,
) -> HashSet<Flow> {
    let seen = tokio::time::timeout(Duration::from_secs(15), flows.wait_for(|(r, _)| *r >= at))
        .await
        .unwrap_or_else(|_| panic!("pipeline did not reach revision {at}"))
        .unwrap();
    seen.1.clone()
}

/// Registers a chassis and keeps it up for the rest of the test.
async fn chassis(client: &reqwest::Client, base: &str, id: &str, tunnel_ip: &str) {
    let url = format!("{base}/wyvern/v1/chassis/{id}");
    let (answer, _) = write(
        client,
        reqwest::Method::PUT,
        &url,
        json!({"tunnel_ip": tunnel_ip}),
    )
    .await;
    let lease = answer["lease"].clone();
    let (client, url) = (client.clone(), format!("{url}/heartbeat"));
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(2)).await;
            let _ = client
                .post(&url)
                .json(&json!({"lease": lease}))
                .send()
                .await;
        }
    });
}

/// Creates a port, bound to `host` if given; returns its id.
async fn port(client: &reqwest::Client, base: &str, net: &str, host: Option<&str>) -> String {
    let created = post(
        client,
        base,
        "/v2.0/ports",
        json!({"port": {"network_id": net}}),
    )
    .await;
    let id = created["port"]["id"].as_str().unwrap().to_string();
    if let Some(host) = host {
        let url = format!("{base}/wyvern/v1/ports/{id}/binding");
        let body = json!({"chassis": host, "up": true});
        write(client, reqwest::Method::PUT, &url, body).await;
    }
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_behind_compaction_resnapshots_and_converges_to_the_same_flows() {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    let store = store::open(&cluster.spec("/wyvern")).unwrap();
    let base = serve(store.clone()).await;
    let client = reqwest::Client::new();
    chassis(&client, &base, LOCAL, "192.0.2.1").await;
    chassis(&client, &base, "c2", "192.0.2.2").await;
    let net = network_with_subnet(&client, &base, "10.70.0.0/24").await;
    let mut kept = Vec::new();
    for host in [Some(LOCAL), Some(LOCAL), Some("c2"), None] {
        kept.push(port(&client, &base, &net, host).await);
    }

    // The replica reads from a server of its own, restarted while the replica is cut off: a live
    // server's shared watch would still hold the missed revisions in its ring, compaction or not.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let own = listener.local_addr().unwrap();
    let own_server = serve_on(listener, store.clone());
    let relay = Relay::start(&format!("http://{own}")).await;
    let (behind, mut behind_flows) = compute(&relay.base);
    let before = flows_at(&mut behind_flows, store.revision().await.unwrap()).await;
    while behind.stats().resumes == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Cut off, the replica misses changes, and etcd compacts them away.
    relay.set_open(false);
    own_server.abort();
    let other = network_with_subnet(&client, &base, "10.71.0.0/24").await;
    for host in [Some(LOCAL), Some("c2"), Some(LOCAL), None] {
        port(&client, &base, &other, host).await;
    }
    port(&client, &base, &net, Some("c2")).await;
    let url = format!("{base}/v2.0/ports/{}", kept[0]);
    assert_eq!(client.delete(&url).send().await.unwrap().status(), 204);
    let url = format!("{base}/v2.0/ports/{}", kept[2]);
    let pairs = json!({"port": {"allowed_address_pairs": [{"ip_address": "10.70.0.200"}]}});
    write(&client, reqwest::Method::PUT, &url, pairs).await;
    let last = store.revision().await.unwrap();
    cluster.compact(i64::try_from(last).unwrap()).await.unwrap();
    serve_on(TcpListener::bind(own).await.unwrap(), store.clone());
    relay.set_open(true);

    let after = flows_at(&mut behind_flows, last).await;
    let stats = behind.stats();
    assert_eq!((stats.compactions, stats.snapshots), (1, 2), "{stats:?}");
    assert_ne!(before, after, "the missed changes change the flows");

    let (_fresh, mut fresh_flows) = compute(&base);
    let fresh = flows_at(&mut fresh_flows, last).await;
    assert_eq!(after, fresh, "same flows as a fresh replica");
    println!(
        "flows: {} before the cut, {} after re-snapshot; {stats:?}",
        before.len(),
        after.len()
    );
}
