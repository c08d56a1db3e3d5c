//! Changing a running replica's topics, on both store backends: adding a router and then the networks
//! behind it costs partial snapshots only, no change is lost (the old topics' changes while the
//! replica was cut off and changed topics arrive) and none is replayed over the newer state of the
//! partial snapshot (every renamed object's sequence number only grows), while writes go on on old and
//! new topics; the replica ends equal to a fresh snapshot of its topics. Removing topics deletes
//! exactly the keys no remaining topic wants.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_fixture::EtcdCluster;
use nb_keys::{Kind, Topics};
use nb_sync::{Change, Follow, Handle, Replica, Update};
use serde_json::{Value, json};
use support::{Relay, serve};
use tokio::sync::mpsc;

/// The chassis the replica follows the bound ports of.
const LOCAL: &str = "c1";

/// The API of one server, as the test writes to it.
#[derive(Clone)]
struct Client {
    base: String,
    http: reqwest::Client,
    /// The sequence number of the next `seq-N` name.
    seq: Arc<AtomicU64>,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let url = format!("{}{path}", self.base);
        let resp = self.http.request(method.clone(), &url).json(&body);
        let resp = resp.send().await.expect("request");
        let status = resp.status();
        let answer: Value = resp.json().await.unwrap_or(Value::Null);
        assert!(status.is_success(), "{method} {url}: {status} {answer}");
        answer
    }

    /// Creates a `kind` (`network`, `security_group`, ...) from `body`; returns its id.
    async fn create(&self, kind: &str, body: Value) -> String {
        let path = format!("/v2.0/{}s", kind.replace('_', "-"));
        let answer = self
            .call(reqwest::Method::POST, &path, json!({ kind: body }))
            .await;
        answer[kind]["id"].as_str().expect("an id").to_string()
    }

    /// Names a `kind` `seq-N`, N one more than any name given before.
    async fn rename(&self, kind: &str, id: &str) {
        let name = format!("seq-{}", self.seq.fetch_add(1, Ordering::SeqCst));
        let path = format!("/v2.0/{}s/{id}", kind.replace('_', "-"));
        let body = json!({ kind: {"name": name} });
        self.call(reqwest::Method::PUT, &path, body).await;
    }

    async fn delete(&self, kind: &str, id: &str) {
        let url = format!("{}/v2.0/{kind}s/{id}", self.base);
        let status = self.http.delete(url).send().await.unwrap().status();
        assert!(status.is_success(), "delete {kind} {id}: {status}");
    }

    async fn port(&self, network: &str) -> String {
        self.create("port", json!({"network_id": network})).await
    }

    /// A network with a subnet on `cidr`; returns (network, subnet).
    async fn network(&self, cidr: &str, external: bool) -> (String, String) {
        let body = json!({"name": cidr, "router:external": external});
        let net = self.create("network", body).await;
        let subnet = json!({"network_id": net, "ip_version": 4, "cidr": cidr});
        (net.clone(), self.create("subnet", subnet).await)
    }

    /// Adds an interface on `subnet` to `router`; returns its port.
    async fn interface(&self, router: &str, subnet: &str) -> String {
        let path = format!("/v2.0/routers/{router}/add_router_interface");
        let answer = self
            .call(reqwest::Method::PUT, &path, json!({"subnet_id": subnet}))
            .await;
        answer["port_id"].as_str().expect("a port id").to_string()
    }

    async fn bind(&self, port: &str, chassis: &str) {
        let path = format!("/wyvern/v1/ports/{port}/binding");
        let body = json!({"chassis": chassis, "up": true});
        self.call(reqwest::Method::PUT, &path, body).await;
    }

    /// What a fresh snapshot of `topics` holds, and its revision.
    async fn snapshot(&self, topics: &Topics) -> (BTreeMap<String, Value>, u64) {
        let query: String = topics
            .iter()
            .map(|t| format!("&{}", t.param(None)))
            .collect();
        let url = format!("{}/wyvern/v1/sync/snapshot?x=1{query}", self.base);
        let body: Value = self
            .http
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let items = body["items"].as_array().unwrap().iter();
        let items = items.map(|i| (i["key"].as_str().unwrap().to_string(), i["value"].clone()));
        (items.collect(), body["revision"].as_u64().unwrap())
    }
}

/// The `N` of an object named `seq-N`.
fn seq(value: &Value) -> Option<u64> {
    value["name"].as_str()?.strip_prefix("seq-")?.parse().ok()
}

/// What a consumer of the replica saw.
#[derive(Default)]
struct Seen {
    held: BTreeMap<String, Value>,
    updates: Vec<Update>,
    /// The highest `seq-N` each key had.
    seqs: BTreeMap<String, u64>,
    deleted: BTreeSet<String>,
    /// Every revision going back, put of an older value than one already seen, or of a deleted key.
    violations: Vec<String>,
}

impl Seen {
    fn apply(&mut self, update: Update) {
        if let Some(last) = self.updates.last().filter(|l| l.revision > update.revision) {
            let back = format!("revision {} after {}", update.revision, last.revision);
            self.violations.push(back);
        }
        for change in &update.changes {
            match change {
                Change::Put(k, v) => {
                    if self.deleted.contains(k) {
                        self.violations
                            .push(format!("{k} put again after its deletion"));
                    }
                    if let Some(n) = seq(v) {
                        let last = self.seqs.entry(k.clone()).or_default();
                        if n < *last {
                            let at = update.revision;
                            self.violations
                                .push(format!("{k}: seq-{n} after seq-{last} at {at}"));
                        }
                        *last = n.max(*last);
                    }
                    self.held.insert(k.clone(), v.clone());
                }
                Change::Delete(k) => {
                    self.deleted.insert(k.clone());
                    self.held.remove(k);
                }
            }
        }
        self.updates.push(update);
    }
}

/// Starts a replica of `topics` at `base`; what its consumer sees is in the returned state.
fn follow(base: &str, topics: Topics) -> (Handle, Arc<Mutex<Seen>>) {
    let (replica, handle) = Replica::new(base, topics);
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(replica.run(tx));
    let seen = Arc::new(Mutex::new(Seen::default()));
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(update) = rx.recv().await {
            sink.lock().unwrap().apply(update);
        }
    });
    (handle, seen)
}

/// The named topics of `topics`, as [`Handle::set_topics`] takes them.
fn follow_of(topics: &Topics) -> Follow {
    Follow {
        networks: topics.networks.clone(),
        routers: topics.routers.clone(),
        security_groups: topics.security_groups.clone(),
        address_groups: topics.address_groups.clone(),
        physnets: topics.physnets.clone(),
    }
}

/// Waits until `done` holds of what the consumer saw.
async fn until(seen: &Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while !done(&seen.lock().unwrap()) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    waited
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"));
}

/// Waits until the replica holds exactly what a fresh snapshot of `topics` holds.
async fn converges(client: &Client, handle: &Handle, seen: &Mutex<Seen>, topics: &Topics) {
    let (fresh, revision) = client.snapshot(topics).await;
    let waited = tokio::time::timeout(Duration::from_secs(20), async {
        while handle.stats().revision < revision || seen.lock().unwrap().held != fresh {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    if waited.await.is_err() {
        let held = seen.lock().unwrap().held.clone();
        let missing: Vec<_> = fresh.keys().filter(|k| !held.contains_key(*k)).collect();
        let extra: Vec<_> = held.keys().filter(|k| !fresh.contains_key(*k)).collect();
        let stale: Vec<_> = fresh
            .iter()
            .filter(|(k, v)| held.get(*k).is_some_and(|h| h != *v))
            .map(|(k, v)| (k, v, &held[k]))
            .collect();
        panic!(
            "not a fresh snapshot's state: missing {missing:?}, extra {extra:?}, stale {stale:?}"
        );
    }
}

/// The keys changed by the `n`th update marked `from_snapshot` (0: the first sync).
fn snapshot_changes(seen: &Mutex<Seen>, n: usize) -> BTreeSet<String> {
    let seen = seen.lock().unwrap();
    let snapshot = seen.updates.iter().filter(|u| u.from_snapshot).nth(n);
    let changes = snapshot.expect("the snapshot update").changes.iter();
    changes.map(|c| c.key().to_string()).collect()
}

/// Until stopped: renames the ports `renamed` (each by this writer alone), and on network `churn`
/// creates a port and deletes the previous one. Returns its number of rounds.
fn writer(
    client: Client,
    renamed: Vec<String>,
    churn: String,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut rounds = 0;
        let mut previous: Option<String> = None;
        while !stopped.load(Ordering::SeqCst) {
            for port in &renamed {
                client.rename("port", port).await;
            }
            let created = client.port(&churn).await;
            if let Some(p) = previous.replace(created) {
                client.delete("port", &p).await;
            }
            rounds += 1;
        }
        rounds
    });
    (stop, task)
}

/// Lets the replica miss changes: cuts it off, runs `meanwhile` (and `change`s its topics), then lets
/// it reconnect.
async fn cut_off(relay: &Relay, meanwhile: impl Future<Output = ()>, change: impl FnOnce()) {
    relay.set_open(false);
    tokio::time::sleep(Duration::from_millis(100)).await;
    meanwhile.await;
    change();
    tokio::time::sleep(Duration::from_millis(100)).await;
    relay.set_open(true);
}

async fn adds_and_removes_topics_without_a_full_snapshot(store: Arc<dyn store::Store>) {
    let base = serve(store).await;
    let client = Client {
        base: base.clone(),
        http: reqwest::Client::new(),
        seq: Arc::new(AtomicU64::new(1)),
    };
    let (ext, _) = client.network("192.0.2.0/24", true).await;
    let (n1, s1) = client.network("10.1.0.0/24", false).await;
    let (n2, s2) = client.network("10.2.0.0/24", false).await;
    let (n3, s3) = client.network("10.3.0.0/24", false).await;
    let (n4, s4) = client.network("10.4.0.0/24", false).await;
    let router = json!({"name": "seq-0", "external_gateway_info": {"network_id": ext}});
    let router = client.create("router", router).await;
    let if1 = client.interface(&router, &s1).await;
    let if2 = client.interface(&router, &s2).await;
    let if3 = client.interface(&router, &s3).await;
    let other = client.create("router", json!({"name": "other"})).await;
    let other_if = client.interface(&other, &s4).await;
    let (p1, p2, p3, p4) = (
        client.port(&n1).await,
        client.port(&n2).await,
        client.port(&n3).await,
        client.port(&n4).await,
    );
    // A port of network 2 bound here: the chassis topic has it before network 2 is followed.
    let bound = client.port(&n2).await;
    client.bind(&bound, LOCAL).await;

    let relay = Relay::start(&base).await;
    let mut topics = Topics {
        networks: BTreeSet::from([n1.clone()]),
        chassis: Some(LOCAL.into()),
        ..Topics::default()
    };
    let (handle, seen) = follow(&relay.base, topics.clone());
    converges(&client, &handle, &seen, &topics).await;
    let (writer_stop, writer) = writer(
        client.clone(),
        vec![p1.clone(), p2.clone(), p3.clone()],
        n2.clone(),
    );

    // 1. Add the router while cut off: the replica's stream is behind, old and new topics change.
    // Changes of the old topics the replica misses, and objects of the new topics created and deleted
    // before their snapshot, which it must never show.
    let (mut missed, mut gone) = (Vec::new(), Vec::new());
    cut_off(
        &relay,
        async {
            missed.push(client.port(&n1).await);
            let owned = json!({"network_id": n4, "device_id": router});
            gone.push(client.create("port", owned).await);
            client.delete("port", &gone[0]).await;
            client.rename("router", &router).await;
            client.rename("port", &if2).await;
            client.rename("router", &router).await;
            client.rename("port", &if2).await;
        },
        || {
            let routers = BTreeSet::from([router.clone()]);
            handle.set_topics(Follow {
                routers,
                ..follow_of(&topics)
            })
        },
    )
    .await;
    topics.routers.insert(router.clone());
    let router_key = Kind::Router.key(&router);
    until(&seen, "the router", |s| s.held.contains_key(&router_key)).await;
    // The partial snapshot brought the router and its ports on other networks, not what was held.
    let brought = snapshot_changes(&seen, 1);
    assert!(brought.contains(&router_key), "{brought:?}");
    assert!(brought.contains(&Kind::Port.key(&if2)), "{brought:?}");
    assert!(brought.contains(&Kind::Port.key(&if3)), "{brought:?}");
    assert!(
        !brought.contains(&Kind::Port.key(&if1)),
        "held already: {brought:?}"
    );
    assert!(
        !brought.iter().any(|k| k.starts_with(nb_keys::NETWORKS)),
        "{brought:?}"
    );

    // 2. Add the networks behind the router, cut off again; the port bound here leaves.
    cut_off(
        &relay,
        async {
            missed.push(client.port(&n1).await);
            client.rename("port", &bound).await;
            client.bind(&bound, "c2").await;
            gone.push(client.port(&n3).await);
            client.delete("port", &gone[1]).await;
            client.rename("port", &if3).await;
        },
        || {
            let networks = BTreeSet::from([n1.clone(), n2.clone(), n3.clone()]);
            handle.set_topics(Follow {
                networks,
                ..follow_of(&topics)
            });
        },
    )
    .await;
    topics.networks.extend([n2.clone(), n3.clone()]);
    let n3_key = Kind::Network.key(&n3);
    until(&seen, "network 3", |s| s.held.contains_key(&n3_key)).await;
    let brought = snapshot_changes(&seen, 2);
    let new = [
        Kind::Network.key(&n2),
        Kind::Subnet.key(&s3),
        Kind::Port.key(&p3),
        Kind::Port.key(&bound),
    ];
    for key in new {
        assert!(brought.contains(&key), "{key} not in {brought:?}");
    }
    for port in [&if2, &if3, &p1] {
        assert!(
            !brought.contains(&Kind::Port.key(port)),
            "held already: {port}"
        );
    }

    // Writes go on a little on every topic, then the replica is what a fresh snapshot is.
    tokio::time::sleep(Duration::from_millis(300)).await;
    writer_stop.store(true, Ordering::SeqCst);
    let rounds = writer.await.unwrap();
    converges(&client, &handle, &seen, &topics).await;
    let stats = handle.stats();
    assert_eq!(
        (stats.snapshots, stats.partial_snapshots, stats.compactions),
        (1, 2, 0),
        "{stats:?}"
    );
    let before: BTreeSet<String> = {
        let seen = seen.lock().unwrap();
        assert!(seen.violations.is_empty(), "{:?}", seen.violations);
        for port in missed.iter().map(|p| Kind::Port.key(p)) {
            assert!(seen.held.contains_key(&port), "missed {port}");
        }
        for port in gone.iter().map(|p| Kind::Port.key(p)) {
            let changes = seen.updates.iter().flat_map(|u| &u.changes);
            let shown: Vec<&Change> = changes.filter(|c| c.key() == port).collect();
            assert!(shown.is_empty(), "gone before the snapshot, yet {shown:?}");
        }
        let elsewhere = [
            Kind::Port.key(&p4),
            Kind::Port.key(&other_if),
            Kind::Router.key(&other),
        ];
        for key in elsewhere {
            assert!(!seen.held.contains_key(&key), "{key} is on no topic");
        }
        seen.held.keys().cloned().collect()
    };

    // 3. Remove network 2 and the router: exactly the keys no remaining topic wants go.
    let remaining = Topics {
        networks: BTreeSet::from([n1.clone(), n3.clone()]),
        routers: BTreeSet::new(),
        ..topics.clone()
    };
    let (after, _) = client.snapshot(&remaining).await;
    let updates = seen.lock().unwrap().updates.len();
    handle.set_topics(follow_of(&remaining));
    until(&seen, "the deletions", |s| s.updates.len() > updates).await;
    let removal = seen.lock().unwrap().updates[updates].clone();
    assert!(removal.from_snapshot, "the answer to a change of topics");
    let deleted: BTreeSet<String> = removal
        .changes
        .iter()
        .map(|c| match c {
            Change::Delete(k) => k.clone(),
            put => panic!("a removal put {put:?}"),
        })
        .collect();
    let expected: BTreeSet<String> = before
        .iter()
        .filter(|k| !after.contains_key(*k))
        .cloned()
        .collect();
    assert_eq!(deleted, expected);
    assert!(deleted.contains(&router_key) && deleted.contains(&Kind::Port.key(&if2)));
    assert!(
        !deleted.contains(&Kind::Port.key(&if1)),
        "network 1 still wants it"
    );
    assert_eq!(seen.lock().unwrap().held, after);
    assert_eq!(handle.stats().partial_snapshots, 2);
    assert_eq!(handle.stats().snapshots, 1);
    println!("{rounds} rounds of writes; {:?}", handle.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_and_removes_topics_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::embedded::EmbeddedStore::open(dir.path().join("nb.redb")).unwrap();
    adds_and_removes_topics_without_a_full_snapshot(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adds_and_removes_topics_on_etcd() {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    let store = store::open(&cluster.spec("/wyvern")).unwrap();
    adds_and_removes_topics_without_a_full_snapshot(store).await;
}

/// Security group and address group topics: adding them brings the group, its rules, the ports in
/// it and the address group from a partial snapshot; their changes follow; removing them deletes
/// what no remaining topic wants (a port of a followed network stays).
async fn follows_security_and_address_groups(store: Arc<dyn store::Store>) {
    let base = serve(store).await;
    let client = Client {
        base: base.clone(),
        http: reqwest::Client::new(),
        seq: Arc::new(AtomicU64::new(1)),
    };
    let (n1, _) = client.network("10.1.0.0/24", false).await;
    let (n2, _) = client.network("10.2.0.0/24", false).await;
    let ag = json!({"name": "seq-0", "addresses": ["192.0.2.0/24"]});
    let ag = client.create("address_group", ag).await;
    let other_ag = client
        .create("address_group", json!({"name": "other"}))
        .await;
    let sg = client
        .create("security_group", json!({"name": "seq-0"}))
        .await;
    let other_sg = client
        .create("security_group", json!({"name": "other"}))
        .await;
    let rule = json!({"security_group_id": sg, "direction": "ingress",
        "remote_address_group_id": ag});
    let rule = client.create("security_group_rule", rule).await;
    let in_sg = |network: &str| json!({"network_id": network, "security_groups": [sg]});
    let (local, remote) = (client.port(&n1).await, client.port(&n2).await);
    let (grouped_here, grouped_there) = (
        client.create("port", in_sg(&n1)).await,
        client.create("port", in_sg(&n2)).await,
    );
    let elsewhere = json!({"network_id": n2, "security_groups": [other_sg]});
    let elsewhere = client.create("port", elsewhere).await;

    let mut topics = Topics {
        networks: BTreeSet::from([n1.clone()]),
        ..Topics::default()
    };
    let (handle, seen) = follow(&base, topics.clone());
    converges(&client, &handle, &seen, &topics).await;
    // The followed network's ports are held from the start, in a group or not.
    assert!(
        seen.lock()
            .unwrap()
            .held
            .contains_key(&Kind::Port.key(&local))
    );

    topics.security_groups.insert(sg.clone());
    topics.address_groups.insert(ag.clone());
    handle.set_topics(follow_of(&topics));
    let sg_key = Kind::SecurityGroup.key(&sg);
    until(&seen, "the security group", |s| {
        s.held.contains_key(&sg_key)
    })
    .await;
    let brought = snapshot_changes(&seen, 1);
    let wanted = [
        sg_key.clone(),
        Kind::SecurityGroupRule.key(&rule),
        Kind::AddressGroup.key(&ag),
        Kind::Port.key(&grouped_there),
    ];
    for key in &wanted {
        assert!(brought.contains(key), "{key} not in {brought:?}");
    }
    let held_already = Kind::Port.key(&grouped_here);
    assert!(!brought.contains(&held_already), "{brought:?}");
    for key in [
        Kind::Port.key(&remote),
        Kind::Port.key(&elsewhere),
        Kind::SecurityGroup.key(&other_sg),
        Kind::AddressGroup.key(&other_ag),
    ] {
        assert!(!brought.contains(&key), "{key} is on no topic");
    }

    // Changes follow: a new rule, new addresses, a port joining the group.
    let added = json!({"security_group_id": sg, "direction": "egress", "protocol": "tcp"});
    let added = client.create("security_group_rule", added).await;
    let path = format!("/v2.0/address-groups/{ag}/add_addresses");
    let body = json!({"addresses": ["198.51.100.0/24"]});
    client.call(reqwest::Method::PUT, &path, body).await;
    let path = format!("/v2.0/ports/{remote}");
    let body = json!({"port": {"security_groups": [sg]}});
    client.call(reqwest::Method::PUT, &path, body).await;
    client.rename("security_group", &sg).await;
    converges(&client, &handle, &seen, &topics).await;
    {
        let seen = seen.lock().unwrap();
        assert!(seen.held.contains_key(&Kind::SecurityGroupRule.key(&added)));
        assert!(seen.held.contains_key(&Kind::Port.key(&remote)));
        let addresses = &seen.held[&Kind::AddressGroup.key(&ag)]["addresses"];
        assert_eq!(addresses.as_array().map(Vec::len), Some(2), "{addresses}");
    }

    // Removing the group topics deletes what only they wanted.
    let updates = seen.lock().unwrap().updates.len();
    topics.security_groups.clear();
    topics.address_groups.clear();
    handle.set_topics(follow_of(&topics));
    until(&seen, "the deletions", |s| s.updates.len() > updates).await;
    converges(&client, &handle, &seen, &topics).await;
    let held = seen.lock().unwrap().held.clone();
    assert!(held.contains_key(&held_already), "network 1 still wants it");
    for key in wanted {
        assert!(!held.contains_key(&key), "{key} stayed");
    }
    let stats = handle.stats();
    assert_eq!(
        (stats.snapshots, stats.partial_snapshots),
        (1, 1),
        "{stats:?}"
    );
    assert!(seen.lock().unwrap().violations.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_security_and_address_groups_on_embedded() {
    let dir = tempfile::tempdir().unwrap();
    let store = store::embedded::EmbeddedStore::open(dir.path().join("nb.redb")).unwrap();
    follows_security_and_address_groups(Arc::new(store)).await;
}
