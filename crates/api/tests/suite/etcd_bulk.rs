//! Bulk creates of any size on etcd, all or nothing (issue 17): hundreds of ports in one request are
//! more writes than one etcd transaction takes (`--max-txn-ops`, 128), so the store applies them in
//! lock steps behind one commit record. What is checked here, on real etcd clusters: the bulk is
//! whole with its claims and index keys (1 and 3 members); one bad or conflicting item leaves
//! nothing; the sync watch gets the bulk in one batch at one revision; a server that dies between
//! the lock steps leaves nothing visible, and its locks are cleaned up once its lease has run out;
//! two bulks claiming one MAC address have exactly one winner. Also the time of a bulk of 1000.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use etcd_fixture::EtcdCluster;
use serde_json::{Value, json};
use store::etcd::{BulkFault, EtcdOptions, EtcdStore};
use tokio::net::TcpListener;

const PREFIX: &str = "/wyvern";

/// A server on `store` (without quotas: hundreds of ports are over Neutron's default port quota).
async fn serve(store: Arc<dyn store::Store>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = api::ApiConfig {
        quotas: api::quota::Defaults::unlimited(),
        ..api::ApiConfig::default()
    };
    tokio::spawn(api::serve(listener, store, config));
    base
}

fn etcd_store(cluster: &EtcdCluster) -> EtcdStore {
    EtcdStore::new(EtcdOptions::parse(&cluster.spec(PREFIX)).unwrap())
}

async fn call(client: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = client.execute(request.build().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A network with a /16 subnet: (network id, subnet id).
async fn network(client: &reqwest::Client, base: &str) -> (String, String) {
    let (status, net) = call(
        client,
        client
            .post(format!("{base}/v2.0/networks"))
            .json(&json!({"network": {}})),
    )
    .await;
    assert_eq!(status, 201, "{net}");
    let net = net["network"]["id"].as_str().unwrap().to_string();
    let body = json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/16"}});
    let (status, subnet) = call(
        client,
        client.post(format!("{base}/v2.0/subnets")).json(&body),
    )
    .await;
    assert_eq!(status, 201, "{subnet}");
    (net, subnet["subnet"]["id"].as_str().unwrap().to_string())
}

fn mac(tag: u8, i: usize) -> String {
    format!("fa:16:3e:{tag:02x}:{:02x}:{:02x}", i / 256, i % 256)
}

/// `n` port bodies on `net` with MACs `mac(tag, 0..n)`.
fn ports(net: &str, tag: u8, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"network_id": net, "mac_address": mac(tag, i)}))
        .collect()
}

async fn bulk(client: &reqwest::Client, base: &str, ports: Vec<Value>) -> (u16, Value) {
    let url = format!("{base}/v2.0/ports");
    call(client, client.post(url).json(&json!({"ports": ports}))).await
}

async fn port_count(client: &reqwest::Client, base: &str, net: &str) -> usize {
    let url = format!("{base}/v2.0/ports?network_id={net}");
    let (status, answer) = call(client, client.get(url)).await;
    assert_eq!(status, 200, "{answer}");
    answer["ports"].as_array().unwrap().len()
}

async fn keys_under(store: &dyn store::Store, prefix: &str) -> usize {
    store.range(prefix).await.unwrap().0.len()
}

/// Keys of the bulk machinery left in the cluster (records, redo records, intents).
async fn leftovers(cluster: &EtcdCluster) -> usize {
    etcd_store(cluster).bulk_residue().await.unwrap()
}

async fn five_hundred_ports_are_whole(members: usize) {
    let cluster = EtcdCluster::start(members).await.expect("etcd cluster");
    let store: Arc<dyn store::Store> = Arc::new(etcd_store(&cluster));
    let base = serve(store.clone()).await;
    let client = reqwest::Client::new();
    let (net, subnet) = network(&client, &base).await;
    let (status, answer) = bulk(&client, &base, ports(&net, 1, 500)).await;
    assert_eq!(status, 201, "{answer}");
    let created = answer["ports"].as_array().unwrap();
    assert_eq!(created.len(), 500);
    assert_eq!(port_count(&client, &base, &net).await, 500);
    // Every port with its MAC and address claims and its index key.
    let s = store.as_ref();
    assert_eq!(keys_under(s, &format!("/mac/{net}/")).await, 500);
    assert_eq!(
        keys_under(s, &format!("/idx/ports/network_id/{net}/")).await,
        500
    );
    let mut ips = std::collections::HashSet::new();
    for port in created {
        let ip = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
        assert!(ips.insert(ip.to_string()), "{ip} given twice");
        let claim = s.get(&format!("/ipam/{subnet}/{ip}")).await.unwrap();
        assert_eq!(
            claim.map(|kv| kv.value),
            Some(port["id"].as_str().unwrap().as_bytes().to_vec())
        );
    }
    // A second bulk reusing one of those MACs is refused whole.
    let mut again = ports(&net, 2, 300);
    again[150] = json!({"network_id": net, "mac_address": mac(1, 7)});
    let (status, answer) = bulk(&client, &base, again).await;
    assert_eq!(
        (status, answer["NeutronError"]["type"].as_str()),
        (409, Some("MacAddressInUse"))
    );
    assert_eq!(port_count(&client, &base, &net).await, 500);
    assert_eq!(keys_under(s, &format!("/mac/{net}/")).await, 500);
    assert_eq!(
        leftovers(&cluster).await,
        0,
        "no bulk records or intents left"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_ports_on_one_member_are_whole() {
    five_hundred_ports_are_whole(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_ports_on_three_members_are_whole() {
    five_hundred_ports_are_whole(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_item_leaves_nothing() {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    let store: Arc<dyn store::Store> = Arc::new(etcd_store(&cluster));
    let base = serve(store.clone()).await;
    let client = reqwest::Client::new();
    let (net, subnet) = network(&client, &base).await;
    let claims_before = keys_under(store.as_ref(), &format!("/ipam/{subnet}/")).await;
    // The last item asks for an address outside the subnet.
    let mut items = ports(&net, 3, 400);
    items[399] = json!({"network_id": net, "fixed_ips": [{"subnet_id": subnet, "ip_address": "192.168.0.9"}]});
    let (status, answer) = bulk(&client, &base, items).await;
    assert_eq!(status, 400, "{answer}");
    // Two items with one MAC.
    let mut items = ports(&net, 4, 400);
    items[399] = json!({"network_id": net, "mac_address": mac(4, 0)});
    let (status, answer) = bulk(&client, &base, items).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(port_count(&client, &base, &net).await, 0);
    assert_eq!(keys_under(store.as_ref(), &format!("/mac/{net}/")).await, 0);
    assert_eq!(
        keys_under(store.as_ref(), &format!("/ipam/{subnet}/")).await,
        claims_before
    );
    assert_eq!(leftovers(&cluster).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_watch_gets_the_bulk_in_one_batch() {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    let store: Arc<dyn store::Store> = Arc::new(etcd_store(&cluster));
    let base = serve(store.clone()).await;
    let client = reqwest::Client::new();
    let (net, _) = network(&client, &base).await;
    // The shared watch sync clients read, on a store of its own (as another server's).
    let watcher: Arc<dyn store::Store> = Arc::new(etcd_store(&cluster));
    let after = watcher.revision().await.unwrap();
    let mut watch = store::SharedWatch::new(watcher).watch(after).await.unwrap();
    let (status, answer) = bulk(&client, &base, ports(&net, 5, 500)).await;
    assert_eq!(status, 201, "{answer}");
    let batch = tokio::time::timeout(Duration::from_secs(60), watch.next())
        .await
        .expect("a batch")
        .unwrap();
    let ports: Vec<_> = batch
        .iter()
        .filter(|e| e.key.starts_with("/r/ports/"))
        .collect();
    assert_eq!(ports.len(), 500, "the first batch holds the whole bulk");
    assert!(
        ports
            .iter()
            .all(|e| e.revision == ports[0].revision && e.value.is_some())
    );
    // Nothing more of it follows: its cleanup is invisible.
    let quiet = tokio::time::timeout(Duration::from_secs(2), watch.next()).await;
    if let Ok(Ok(more)) = quiet {
        assert!(
            more.iter().all(|e| !e.key.starts_with("/r/ports/")),
            "ports again after the bulk's batch: {:?}",
            more.iter().map(|e| &e.key).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_dying_mid_bulk_leaves_nothing() {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    // The first server dies after its third lock step, as a `kill -9` there would leave it: no
    // more requests, no lease keep-alives.
    let dying = etcd_store(&cluster);
    let died = Arc::new(AtomicBool::new(false));
    dying.set_bulk_hook(Some(Arc::new({
        let died = died.clone();
        move |step| {
            if step == 3 {
                died.store(true, Ordering::SeqCst);
                BulkFault::Die
            } else {
                BulkFault::Continue
            }
        }
    })));
    let first = serve(Arc::new(dying)).await;
    let client = reqwest::Client::new();
    let (net, _) = network(&client, &first).await;
    let request = tokio::spawn({
        let (client, first, items) = (client.clone(), first.clone(), ports(&net, 6, 500));
        async move { bulk(&client, &first, items).await }
    });
    while !died.load(Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        leftovers(&cluster).await > 0,
        "the bulk's locks are in etcd"
    );
    // The restarted server (a new store on the same cluster) sees nothing of it.
    let store: Arc<dyn store::Store> = Arc::new(etcd_store(&cluster));
    let second = serve(store.clone()).await;
    assert_eq!(port_count(&client, &second, &net).await, 0);
    assert_eq!(keys_under(store.as_ref(), &format!("/mac/{net}/")).await, 0);
    // Once the dead bulk's lease has run out (5 s), its locks are rolled back.
    let deadline = Instant::now() + Duration::from_secs(60);
    while leftovers(&cluster).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the dead bulk's locks were not cleaned up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // And the same request succeeds whole through the second server.
    let (status, answer) = bulk(&client, &second, ports(&net, 6, 500)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!(port_count(&client, &second, &net).await, 500);
    assert!(!request.is_finished(), "the dead server never answered");
    request.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_bulks_with_a_common_mac_have_one_winner() {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    let a = serve(Arc::new(etcd_store(&cluster))).await;
    let b = serve(Arc::new(etcd_store(&cluster))).await;
    let client = reqwest::Client::new();
    let (net, _) = network(&client, &a).await;
    for round in 0..3u8 {
        let mut pa = ports(&net, 0x10 + round, 200);
        let mut pb = ports(&net, 0x20 + round, 200);
        let common = json!({"network_id": net, "mac_address": mac(0x30 + round, 1)});
        pa[120] = common.clone();
        pb[60] = common;
        let ((sa, aa), (sb, ab)) = tokio::join!(bulk(&client, &a, pa), bulk(&client, &b, pb));
        let mut statuses = [sa, sb];
        statuses.sort();
        assert_eq!(statuses, [201, 409], "{aa} {ab}");
        let loser = if sa == 409 { &aa } else { &ab };
        assert_eq!(loser["NeutronError"]["type"], "MacAddressInUse", "{loser}");
        assert_eq!(
            port_count(&client, &a, &net).await,
            200 * (round as usize + 1)
        );
    }
    assert_eq!(leftovers(&cluster).await, 0);
}

/// The figure in docs/architecture.md: one bulk create of 1000 ports on a 1-member etcd (a plain
/// port in the default group: ~6 keys each, so ~6 000 keys in ~65 lock steps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_of_a_thousand_ports_timed() {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    let base = serve(Arc::new(etcd_store(&cluster))).await;
    let client = reqwest::Client::new();
    let (net, _) = network(&client, &base).await;
    // The project's default group first, so that the bulk is only ports.
    let (status, _) = bulk(&client, &base, ports(&net, 7, 1)).await;
    assert_eq!(status, 201);
    let items: Vec<Value> = (0..1000).map(|_| json!({"network_id": net})).collect();
    let started = Instant::now();
    let (status, answer) = bulk(&client, &base, items).await;
    let took = started.elapsed();
    assert_eq!(status, 201, "{answer}");
    eprintln!("bulk create of 1000 ports on etcd (1 member): {took:?}");
    assert_eq!(port_count(&client, &base, &net).await, 1001);
}
