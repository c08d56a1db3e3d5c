//! Concurrent writes: many port creates racing on one subnet never hand out an address or a MAC twice,
//! an exhausted pool answers 409 `IpAddressGenerationFailure`, and nothing answers 5xx.

use crate::support;

use std::collections::HashSet;

use serde_json::{Value, json};

async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, Value) {
    let resp = client.post(url).json(&body).send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn network_with_subnet(client: &reqwest::Client, base: &str, cidr: &str) -> String {
    let (s, net) = post(
        client,
        format!("{base}/v2.0/networks"),
        json!({"network": {"name": "race"}}),
    )
    .await;
    assert_eq!(s, 201, "{net}");
    let net_id = net["network"]["id"].as_str().unwrap().to_string();
    let body = json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr}});
    let (s, sub) = post(client, format!("{base}/v2.0/subnets"), body).await;
    assert_eq!(s, 201, "{sub}");
    net_id
}

/// Creates `n` ports at once; returns (status, body) of each.
async fn create_ports(
    client: &reqwest::Client,
    base: &str,
    net: &str,
    n: usize,
) -> Vec<(u16, Value)> {
    let calls = (0..n).map(|i| {
        let body = json!({"port": {"network_id": net, "name": format!("p{i}")}});
        post(client, format!("{base}/v2.0/ports"), body)
    });
    futures::future::join_all(calls).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_ports_get_distinct_addresses() {
    let server = support::Server::start();
    let client = reqwest::Client::new();
    let net = network_with_subnet(&client, &server.base, "10.20.0.0/24").await;
    let results = create_ports(&client, &server.base, &net, 200).await;
    let mut ips = HashSet::new();
    let mut macs = HashSet::new();
    for (status, body) in &results {
        assert_eq!(*status, 201, "{body}");
        let port = &body["port"];
        assert!(
            macs.insert(port["mac_address"].as_str().unwrap().to_string()),
            "MAC handed out twice"
        );
        for ip in port["fixed_ips"].as_array().unwrap() {
            assert!(
                ips.insert(ip["ip_address"].as_str().unwrap().to_string()),
                "IP handed out twice: {ip}"
            );
        }
    }
    assert_eq!(ips.len(), 200);
    // What the store holds agrees with what was answered.
    let listed: Value = client
        .get(format!("{}/v2.0/ports?network_id={net}", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["ports"].as_array().unwrap().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exhausted_pool_answers_409_and_never_5xx() {
    let server = support::Server::start();
    let client = reqwest::Client::new();
    // A /27 has 29 addresses in its pool (.2 - .30).
    let net = network_with_subnet(&client, &server.base, "10.30.0.0/27").await;
    let results = create_ports(&client, &server.base, &net, 60).await;
    let created = results.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 29, "every pool address is used exactly once");
    for (status, body) in results.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*status, 409, "{body}");
        assert_eq!(
            body["NeutronError"]["type"], "IpAddressGenerationFailure",
            "{body}"
        );
    }
    let ips: HashSet<String> = results
        .iter()
        .filter(|(s, _)| *s == 201)
        .map(|(_, b)| {
            b["port"]["fixed_ips"][0]["ip_address"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ips.len(), 29);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_bulk_create_leaves_nothing_behind() {
    let server = support::Server::start();
    let client = reqwest::Client::new();
    let net = network_with_subnet(&client, &server.base, "10.40.0.0/24").await;
    let (s, _) = post(
        &client,
        format!("{}/v2.0/ports", server.base),
        json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.40.0.9"}]}}),
    )
    .await;
    assert_eq!(s, 201);
    // The second port asks for a taken address: the whole bulk fails, and the first port's address
    // and MAC stay free.
    let bulk = json!({"ports": [
        {"network_id": net, "fixed_ips": [{"ip_address": "10.40.0.10"}], "mac_address": "fa:16:3e:00:00:10"},
        {"network_id": net, "fixed_ips": [{"ip_address": "10.40.0.9"}]},
    ]});
    let (s, body) = post(&client, format!("{}/v2.0/ports", server.base), bulk).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["NeutronError"]["type"], "IpAddressAlreadyAllocated");
    // One bad fixed IP allocates none of the port's addresses.
    let one = json!({"port": {"network_id": net, "fixed_ips": [{"ip_address": "10.40.0.11"}, {"ip_address": "10.99.0.1"}]}});
    let (s, body) = post(&client, format!("{}/v2.0/ports", server.base), one).await;
    assert_eq!(s, 400, "{body}");
    let again = json!({"port": {"network_id": net, "mac_address": "fa:16:3e:00:00:10",
        "fixed_ips": [{"ip_address": "10.40.0.10"}, {"ip_address": "10.40.0.11"}]}});
    let (s, body) = post(&client, format!("{}/v2.0/ports", server.base), again).await;
    assert_eq!(
        s, 201,
        "addresses and MAC of failed requests must stay free: {body}"
    );
}
