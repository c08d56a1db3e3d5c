//! Two API servers on one 3-member etcd cluster: concurrent creates split between them never hand out
//! an IP address, a MAC, a port id, a segmentation id, a router number or a chassis' SNAT address
//! twice, and never answer 5xx. An exhausted pool answers 409 `IpAddressGenerationFailure`, and a
//! project's quota holds across both: creates racing through the two never pass its limit.

use std::collections::HashSet;
use std::sync::Arc;

use etcd_fixture::EtcdCluster;
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// Two servers with Neutron's default quotas, each with its own connection to the cluster, as two
/// processes would have.
async fn two_servers(cluster: &EtcdCluster) -> [String; 2] {
    two_servers_with(cluster, api::quota::Defaults::default()).await
}

/// Two servers with these default quotas.
async fn two_servers_with(cluster: &EtcdCluster, quotas: api::quota::Defaults) -> [String; 2] {
    let mut bases = Vec::new();
    for _ in 0..2 {
        let store: Arc<dyn store::Store> = store::open(&cluster.spec("/wyvern")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        bases.push(format!("http://{}", listener.local_addr().unwrap()));
        let config = api::ApiConfig {
            quotas: quotas.clone(),
            ..api::ApiConfig::default()
        };
        tokio::spawn(api::serve(listener, store, config));
    }
    [bases[0].clone(), bases[1].clone()]
}

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = client.post(url).json(&body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn network_with_subnet(client: &reqwest::Client, base: &str, cidr: &str) -> String {
    let (s, net) = post(
        client,
        format!("{base}/v2.0/networks"),
        json!({"network": {"name": cidr}}),
    )
    .await;
    assert_eq!(s, 201, "{net}");
    let id = net["network"]["id"].as_str().unwrap().to_string();
    let body = json!({"subnet": {"network_id": id, "ip_version": 4, "cidr": cidr}});
    let (s, sub) = post(client, format!("{base}/v2.0/subnets"), body).await;
    assert_eq!(s, 201, "{sub}");
    id
}

/// `n` port creates at once on `net`, alternating between the servers.
async fn create_ports(
    client: &reqwest::Client,
    servers: &[String; 2],
    net: &str,
    n: usize,
) -> Vec<(u16, Value)> {
    let calls = (0..n).map(|i| {
        let body = json!({"port": {"network_id": net, "name": format!("p{i}")}});
        post(client, format!("{}/v2.0/ports", servers[i % 2]), body)
    });
    futures::future::join_all(calls).await
}

/// Checks that created ports share no id, MAC or IP; returns how many were created.
fn assert_distinct(results: &[(u16, Value)]) -> usize {
    let (mut ids, mut macs, mut ips) = (HashSet::new(), HashSet::new(), HashSet::new());
    for (_, body) in results.iter().filter(|(s, _)| *s == 201) {
        let port = &body["port"];
        assert!(ids.insert(port["id"].to_string()), "id twice: {port}");
        assert!(
            macs.insert(port["mac_address"].to_string()),
            "MAC twice: {port}"
        );
        for ip in port["fixed_ips"].as_array().unwrap() {
            assert!(ips.insert(ip["ip_address"].to_string()), "IP twice: {ip}");
        }
    }
    assert_eq!(ips.len(), ids.len(), "one address per port");
    ids.len()
}

/// The items of a list answer of `collection`.
async fn list(client: &reqwest::Client, url: String, collection: &str) -> Vec<Value> {
    let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    body[collection].as_array().cloned().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_created_through_two_servers_get_distinct_addresses() {
    let cluster = EtcdCluster::start(3).await.expect("etcd cluster");
    let servers = two_servers(&cluster).await;
    let client = reqwest::Client::new();

    // Room for everybody: every create succeeds.
    let net = network_with_subnet(&client, &servers[0], "10.20.0.0/24").await;
    let results = create_ports(&client, &servers, &net, 200).await;
    for (status, body) in &results {
        assert_eq!(*status, 201, "{body}");
    }
    assert_eq!(assert_distinct(&results), 200);
    // Both servers list what the other created.
    for base in &servers {
        let ports = list(
            &client,
            format!("{base}/v2.0/ports?network_id={net}"),
            "ports",
        )
        .await;
        assert_eq!(ports.len(), 200);
    }

    // A /26 has 61 pool addresses: exactly that many creates succeed, the others find it exhausted.
    let small = network_with_subnet(&client, &servers[1], "10.21.0.0/26").await;
    let results = create_ports(&client, &servers, &small, 100).await;
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(
            body["NeutronError"]["type"], "IpAddressGenerationFailure",
            "{body}"
        );
    }
    assert_eq!(assert_distinct(&results), 61);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_created_through_two_servers_get_distinct_segmentation_ids() {
    let cluster = EtcdCluster::start(3).await.expect("etcd cluster");
    let servers = two_servers(&cluster).await;
    let client = reqwest::Client::new();
    let calls = (0..50).map(|i| {
        let body = json!({"network": {"name": format!("n{i}")}});
        post(&client, format!("{}/v2.0/networks", servers[i % 2]), body)
    });
    let results = futures::future::join_all(calls).await;
    let failed: Vec<String> = results
        .iter()
        .filter(|(s, _)| *s != 201)
        .map(|(s, body)| format!("{s} {}", body["NeutronError"]["message"]))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of 50 failed: {failed:?}",
        failed.len()
    );
    let mut ids = HashSet::new();
    let mut segments = HashSet::new();
    for (_, body) in &results {
        let net = &body["network"];
        assert!(ids.insert(net["id"].to_string()));
        let seg = net["provider:segmentation_id"].as_u64().expect("a VNI");
        assert!(segments.insert(seg), "segmentation id {seg} twice");
    }
    let listed = list(&client, format!("{}/v2.0/networks", servers[1]), "networks").await;
    let listed: HashSet<u64> = listed
        .iter()
        .filter_map(|n| n["provider:segmentation_id"].as_u64())
        .collect();
    assert_eq!(listed, segments);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_created_through_two_servers_get_distinct_numbers() {
    let cluster = EtcdCluster::start(3).await.expect("etcd cluster");
    // More routers than Neutron's default quota lets one project have.
    let servers = two_servers_with(&cluster, api::quota::Defaults::unlimited()).await;
    let client = reqwest::Client::new();
    let calls = (0..40).map(|i| {
        let body = json!({"router": {"name": format!("r{i}")}});
        post(&client, format!("{}/v2.0/routers", servers[i % 2]), body)
    });
    let mut numbers = HashSet::new();
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 201, "{body}");
        let router = body["router"]["id"].as_str().unwrap();
        // The number is internal: agents see it in the router's sync topic.
        let url = format!("{}/wyvern/v1/sync/snapshot?router={router}", servers[1]);
        let snapshot: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        let stored = snapshot["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["key"] == format!("/r/routers/{router}"))
            .expect("the router in its topic");
        let n = stored["value"]["_nat_id"]
            .as_u64()
            .expect("a router number");
        assert!((1..=0x3fff).contains(&n), "{n}");
        assert!(numbers.insert(n), "router number {n} twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snat_addresses_asked_through_two_servers_are_one_port() {
    let cluster = EtcdCluster::start(3).await.expect("etcd cluster");
    let servers = two_servers(&cluster).await;
    let client = reqwest::Client::new();
    let (s, net) = post(
        &client,
        format!("{}/v2.0/networks", servers[0]),
        json!({"network": {"name": "ext", "router:external": true}}),
    )
    .await;
    assert_eq!(s, 201, "{net}");
    let ext = net["network"]["id"].as_str().unwrap().to_string();
    let body = json!({"subnet": {"network_id": ext, "ip_version": 4, "cidr": "192.0.2.0/24"}});
    let (s, sub) = post(&client, format!("{}/v2.0/subnets", servers[1]), body).await;
    assert_eq!(s, 201, "{sub}");
    let calls = (0..16).map(|i| {
        let url = format!("{}/wyvern/v1/chassis/chassis-1/snat/{ext}", servers[i % 2]);
        let request = client.put(url);
        async move {
            let resp = request.send().await.expect("request");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    });
    let mut ports = HashSet::new();
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, 200, "{body}");
        ports.insert(body["port"]["id"].to_string());
    }
    assert_eq!(ports.len(), 1, "{ports:?}");
    let listed = list(
        &client,
        format!("{}/v2.0/ports?network_id={ext}", servers[0]),
        "ports",
    )
    .await;
    assert_eq!(listed.len(), 1, "{listed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_holds_across_two_servers() {
    let cluster = EtcdCluster::start(3).await.expect("etcd cluster");
    let servers = two_servers(&cluster).await;
    let client = reqwest::Client::new();
    let net = network_with_subnet(&client, &servers[0], "10.30.0.0/24").await;
    // The limit set through one server holds for both.
    let quota = format!("{}/v2.0/quotas/admin", servers[1]);
    let limit = json!({"quota": {"port": 45}});
    let answer = client.put(&quota).json(&limit).send().await.unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    // Single creates and bulk creates of three, alternating between the servers.
    let singles = create_ports(&client, &servers, &net, 80);
    let bulks = (0..10).map(|i| {
        let ports = vec![json!({"network_id": net}); 3];
        post(
            &client,
            format!("{}/v2.0/ports", servers[i % 2]),
            json!({ "ports": ports }),
        )
    });
    let (singles, bulks) = futures::join!(singles, futures::future::join_all(bulks));
    let mut created = 0;
    for (status, body) in singles.iter().chain(&bulks) {
        match status {
            201 => created += body["ports"].as_array().map_or(1, Vec::len),
            _ => {
                assert_eq!(*status, 409, "{body}");
                assert_eq!(body["NeutronError"]["type"], "OverQuota", "{body}");
            }
        }
    }
    assert_eq!(created, 45, "ports created past a limit of 45");
    for base in &servers {
        let url = format!("{base}/v2.0/quotas/admin/details");
        let details: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        assert_eq!(details["quota"]["port"]["used"], 45, "{details}");
        let ports = list(
            &client,
            format!("{base}/v2.0/ports?network_id={net}"),
            "ports",
        )
        .await;
        assert_eq!(ports.len(), 45);
    }
}
