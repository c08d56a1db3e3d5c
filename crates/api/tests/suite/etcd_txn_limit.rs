//! API calls whose one store transaction is large, on etcd, which refuses a transaction with more than
//! 128 compares or more than 128 writes (`--max-txn-ops`, default 128): such a call must work, all or
//! nothing (the store splits it behind a commit record, issue 17), never answer 5xx.

use std::sync::Arc;

use etcd_fixture::EtcdCluster;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// A server on a fresh 1-member cluster (kept alive by the returned guard), without quotas: a
/// network here has more subnets than Neutron's default quota allows a project.
async fn server() -> (EtcdCluster, String) {
    let cluster = EtcdCluster::start(1).await.expect("etcd cluster");
    let store: Arc<dyn store::Store> = store::open(&cluster.spec("/wyvern")).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let config = api::ApiConfig {
        quotas: api::quota::Defaults::unlimited(),
        ..api::ApiConfig::default()
    };
    tokio::spawn(api::serve(listener, store, config));
    (cluster, base)
}

async fn call(client: &reqwest::Client, request: reqwest::RequestBuilder) -> (u16, Value) {
    let resp = client.execute(request.build().unwrap()).await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create(client: &reqwest::Client, base: &str, collection: &str, body: Value) -> Value {
    let url = format!("{base}/v2.0/{collection}");
    let (status, answer) = call(client, client.post(url).json(&body)).await;
    assert_eq!(status, 201, "{answer}");
    answer
}

/// How many `collection` objects are on network `net`; panics on any answer but a list.
async fn count(client: &reqwest::Client, base: &str, collection: &str, net: &str) -> usize {
    let url = format!("{base}/v2.0/{collection}?network_id={net}");
    let (status, answer) = call(client, client.get(url)).await;
    assert_eq!(status, 200, "listing {collection}: {answer}");
    answer[collection]
        .as_array()
        .unwrap_or_else(|| panic!("listing {collection}: no list in {answer}"))
        .len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_create_of_fifty_ports_works() {
    // 50 ports are ~300 writes: more than one etcd transaction takes, so the store applies them
    // behind a commit record (issue 17; larger bulks and their guarantees: `etcd_bulk.rs`).
    let (_cluster, base) = server().await;
    let client = reqwest::Client::new();
    let net = create(&client, &base, "networks", json!({"network": {}})).await;
    let net = net["network"]["id"].as_str().unwrap().to_string();
    let subnet = json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"}});
    create(&client, &base, "subnets", subnet).await;

    let ports: Vec<Value> = (0..50).map(|_| json!({"network_id": net})).collect();
    let url = format!("{base}/v2.0/ports");
    let (status, answer) = call(&client, client.post(url).json(&json!({"ports": ports}))).await;
    assert_eq!(status, 201, "bulk create of 50 ports: {answer}");
    assert_eq!(answer["ports"].as_array().map(Vec::len), Some(50));
    assert_eq!(count(&client, &base, "ports", &net).await, 50);
}

/// Subnets a network is given, more than fit in one etcd transaction's compares or writes.
const SUBNETS: usize = 130;

/// Creates a network and adds subnets to it until [`SUBNETS`] or the first failure; returns the
/// network id, how many were created, and the failure.
async fn grow(client: &reqwest::Client, base: &str) -> (String, usize, Option<(u16, Value)>) {
    let net = create(client, base, "networks", json!({"network": {}})).await;
    let net = net["network"]["id"].as_str().unwrap().to_string();
    for i in 0..SUBNETS {
        let cidr = format!("10.{}.{}.0/24", 1 + i / 256, i % 256);
        let body = json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": cidr}});
        let url = format!("{base}/v2.0/subnets");
        let (status, answer) = call(client, client.post(url).json(&body)).await;
        if status != 201 {
            return (net, i, Some((status, answer)));
        }
    }
    (net, SUBNETS, None)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_takes_many_subnets() {
    let (_cluster, base) = server().await;
    let client = reqwest::Client::new();
    let (_, created, failure) = grow(&client, &base).await;
    assert!(
        failure.is_none(),
        "subnet {created} of {SUBNETS}: {failure:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_with_many_subnets_can_be_deleted() {
    let (_cluster, base) = server().await;
    let client = reqwest::Client::new();
    let (net, created, _) = grow(&client, &base).await;
    let url = format!("{base}/v2.0/networks/{net}");
    let (status, answer) = call(&client, client.delete(&url)).await;
    let (after, _) = call(&client, client.get(&url)).await;
    let left = count(&client, &base, "subnets", &net).await;
    assert_eq!(
        (status, after, left),
        (204, 404, 0),
        "deleting a network with {created} subnets answered {status} {answer}; afterwards GET \
         answers {after} and {left} subnets are left"
    );
}
