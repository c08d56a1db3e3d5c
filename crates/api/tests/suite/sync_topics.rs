//! The sync API's topics over HTTP: a router topic is the router and its ports, a security group
//! topic the group, its rules and the ports in it, an address group topic the address group; and a
//! watch topic marked `@REV` gets only the changes after REV while the other topics get everything
//! after `after`.

use crate::support;

use std::collections::BTreeSet;
use std::time::Duration;

use nb_keys::Kind;
use serde_json::{Value, json};

async fn call(request: reqwest::RequestBuilder, body: Value) -> Value {
    let resp = request.json(&body).send().await.expect("request");
    let status = resp.status();
    let answer: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(status.is_success(), "{status}: {answer}");
    answer
}

/// Creates a `kind` (`network`, `security_group`, ...) from `body`; returns its id.
async fn create(client: &reqwest::Client, base: &str, kind: &str, body: Value) -> String {
    let url = format!("{base}/v2.0/{}s", kind.replace('_', "-"));
    let answer = call(client.post(url), json!({ kind: body })).await;
    answer[kind]["id"].as_str().expect("an id").to_string()
}

/// A network with a subnet on `cidr`; returns (network, subnet).
async fn network(
    client: &reqwest::Client,
    base: &str,
    cidr: &str,
    external: bool,
) -> (String, String) {
    let net = create(
        client,
        base,
        "network",
        json!({"name": cidr, "router:external": external}),
    )
    .await;
    let subnet = json!({"network_id": net, "ip_version": 4, "cidr": cidr});
    let subnet = create(client, base, "subnet", subnet).await;
    (net, subnet)
}

async fn add_interface(client: &reqwest::Client, base: &str, router: &str, subnet: &str) -> String {
    let url = format!("{base}/v2.0/routers/{router}/add_router_interface");
    let answer = call(client.put(url), json!({"subnet_id": subnet})).await;
    answer["port_id"].as_str().expect("a port id").to_string()
}

async fn rename_router(client: &reqwest::Client, base: &str, router: &str, name: &str) {
    let url = format!("{base}/v2.0/routers/{router}");
    call(client.put(url), json!({"router": {"name": name}})).await;
}

/// The keys and revision of a snapshot of the topics in `query`.
async fn snapshot(client: &reqwest::Client, base: &str, query: &str) -> (BTreeSet<String>, u64) {
    let url = format!("{base}/wyvern/v1/sync/snapshot?{query}");
    let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    let keys = body["items"].as_array().unwrap().iter();
    let keys = keys
        .map(|i| i["key"].as_str().unwrap().to_string())
        .collect();
    (keys, body["revision"].as_u64().unwrap())
}

/// The events a watch of `query` sends up to revision `until`.
async fn watch(client: &reqwest::Client, base: &str, query: &str, until: u64) -> Vec<Value> {
    let url = format!("{base}/wyvern/v1/sync/watch?{query}");
    let mut resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = Vec::new();
    let mut buf = Vec::new();
    let mut revision = 0;
    tokio::time::timeout(Duration::from_secs(10), async {
        while revision < until {
            buf.extend_from_slice(&resp.chunk().await.unwrap().expect("the stream goes on"));
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Value = serde_json::from_slice(&buf.drain(..=end).collect::<Vec<_>>())
                    .expect("a JSON line");
                if let Some(r) = line["revision"].as_u64() {
                    revision = r;
                    events.extend(line["events"].as_array().unwrap().iter().cloned());
                }
            }
        }
    })
    .await
    .expect("the watch reached the last write");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_topic_is_the_router_and_every_port_it_owns() {
    let server = support::Server::start();
    let (base, client) = (&server.base, &reqwest::Client::new());
    let (ext, _) = network(client, base, "192.0.2.0/24", true).await;
    let (net1, subnet1) = network(client, base, "10.1.0.0/24", false).await;
    let (_, subnet2) = network(client, base, "10.2.0.0/24", false).await;
    let router = json!({"name": "r", "external_gateway_info": {"network_id": ext}});
    let router = create(client, base, "router", router).await;
    let other = create(client, base, "router", json!({"name": "other"})).await;
    let interface = add_interface(client, base, &router, &subnet1).await;
    add_interface(client, base, &other, &subnet2).await;
    let plain = create(client, base, "port", json!({"network_id": net1})).await;
    let gateway: Value = client
        .get(format!(
            "{base}/v2.0/ports?device_id={router}&device_owner=network:router_gateway"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let gateway = gateway["ports"][0]["id"].as_str().expect("a gateway port");

    let (keys, _) = snapshot(client, base, &format!("router={router}")).await;
    let expected = BTreeSet::from([
        Kind::Router.key(&router),
        Kind::Port.key(&interface),
        Kind::Port.key(gateway),
    ]);
    assert_eq!(keys, expected);
    // With the network of one interface: the network, its subnet and ports, the router's ports.
    let (keys, _) = snapshot(client, base, &format!("router={router}&network={net1}")).await;
    let more = [
        Kind::Network.key(&net1),
        Kind::Subnet.key(&subnet1),
        Kind::Port.key(&plain),
    ];
    assert_eq!(keys, expected.into_iter().chain(more).collect());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_sends_a_late_topic_only_after_its_start() {
    let server = support::Server::start();
    let (base, client) = (&server.base, &reqwest::Client::new());
    let (net_a, _) = network(client, base, "10.1.0.0/24", false).await;
    let (net_b, _) = network(client, base, "10.2.0.0/24", false).await;
    let router = create(client, base, "router", json!({"name": "first"})).await;
    let (_, after) = snapshot(client, base, &format!("network={net_a}")).await;

    // Changes before the late topics' start...
    let port = |net: &str| json!({"network_id": net});
    let a1 = create(client, base, "port", port(&net_a)).await;
    let b1 = create(client, base, "port", port(&net_b)).await;
    rename_router(client, base, &router, "before").await;
    let (keys, start) = snapshot(client, base, &format!("network={net_b}&router={router}")).await;
    assert!(keys.contains(&Kind::Port.key(&b1)));
    // ... and after it.
    let a2 = create(client, base, "port", port(&net_a)).await;
    let b2 = create(client, base, "port", port(&net_b)).await;
    rename_router(client, base, &router, "after").await;
    let (_, last) = snapshot(client, base, "").await;

    let puts = |events: &[Value]| -> Vec<(String, Value, u64)> {
        let puts = events.iter().filter(|e| e.get("value").is_some());
        puts.map(|e| {
            let key = e["key"].as_str().unwrap().to_string();
            (key, e["value"].clone(), e["revision"].as_u64().unwrap())
        })
        .collect()
    };
    let put_keys = |events: &[Value]| -> BTreeSet<String> {
        puts(events).into_iter().map(|(k, _, _)| k).collect()
    };
    let router_names = |events: &[Value]| -> Vec<String> {
        let router_key = Kind::Router.key(&router);
        let puts = puts(events)
            .into_iter()
            .filter(|(k, _, _)| *k == router_key);
        puts.map(|(_, v, _)| v["name"].as_str().unwrap().to_string())
            .collect()
    };

    // From the start: everything since `after`, on every topic.
    let all = format!("after={after}&network={net_a}&network={net_b}&router={router}");
    let events = watch(client, base, &all, last).await;
    let keys = put_keys(&events);
    for port in [&a1, &b1, &a2, &b2] {
        assert!(keys.contains(&Kind::Port.key(port)), "{port} missing");
    }
    assert_eq!(router_names(&events), ["before", "after"]);

    // Late: the old topic from `after`, the late ones only from after `start`.
    let late =
        format!("after={after}&network={net_a}&network={net_b}@{start}&router={router}@{start}");
    let events = watch(client, base, &late, last).await;
    let keys = put_keys(&events);
    for port in [&a1, &a2, &b2] {
        assert!(keys.contains(&Kind::Port.key(port)), "{port} missing");
    }
    assert!(
        !keys.contains(&Kind::Port.key(&b1)),
        "a change before the start was sent"
    );
    assert_eq!(router_names(&events), ["after"]);
    let b2_put = puts(&events)
        .into_iter()
        .find(|(k, _, _)| *k == Kind::Port.key(&b2));
    assert!(b2_put.is_some_and(|(_, _, revision)| revision > start));

    // A start that is not a revision is refused.
    let url = format!("{base}/wyvern/v1/sync/watch?after={after}&network={net_b}@soon");
    assert_eq!(client.get(url).send().await.unwrap().status(), 400);
}

/// A rule of `group` from the address group `remote`; returns its id.
async fn rule(client: &reqwest::Client, base: &str, group: &str, remote: &str) -> String {
    let body = json!({"security_group_id": group, "direction": "ingress",
        "remote_address_group_id": remote});
    create(client, base, "security_group_rule", body).await
}

async fn add_addresses(client: &reqwest::Client, base: &str, group: &str, cidr: &str) {
    let url = format!("{base}/v2.0/address-groups/{group}/add_addresses");
    call(client.put(url), json!({"addresses": [cidr]})).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn security_and_address_group_topics() {
    let server = support::Server::start();
    let (base, client) = (&server.base, &reqwest::Client::new());
    let (net, _) = network(client, base, "10.1.0.0/24", false).await;
    let ag = json!({"name": "ag", "addresses": ["192.0.2.0/24"]});
    let ag = create(client, base, "address_group", ag).await;
    let other_ag = create(client, base, "address_group", json!({"name": "other"})).await;
    let sg = create(client, base, "security_group", json!({"name": "sg"})).await;
    let other_sg = create(client, base, "security_group", json!({"name": "other"})).await;
    let from_ag = rule(client, base, &sg, &ag).await;
    // A rule of the other group that refers to this one belongs to the other group's topic.
    let body = json!({"security_group_id": other_sg, "direction": "ingress",
        "remote_group_id": sg});
    create(client, base, "security_group_rule", body).await;
    let port = |groups: Value| json!({"network_id": net, "security_groups": groups});
    let both = create(client, base, "port", port(json!([other_sg, sg]))).await;
    create(client, base, "port", port(json!([other_sg]))).await;
    create(client, base, "port", json!({"network_id": net})).await;
    let url = format!("{base}/v2.0/security-group-rules?security_group_id={sg}&fields=id");
    let rules: Value = client.get(url).send().await.unwrap().json().await.unwrap();
    let rules = rules["security_group_rules"].as_array().unwrap().iter();
    let rule_keys = rules.map(|r| Kind::SecurityGroupRule.key(r["id"].as_str().unwrap()));

    let (keys, revision) = snapshot(client, base, &format!("security_group={sg}")).await;
    let mut expected: BTreeSet<String> = rule_keys.collect();
    assert_eq!(
        expected.len(),
        3,
        "two default egress rules and one from the address group"
    );
    assert!(expected.contains(&Kind::SecurityGroupRule.key(&from_ag)));
    expected.extend([Kind::SecurityGroup.key(&sg), Kind::Port.key(&both)]);
    assert_eq!(keys, expected);
    let (keys, _) = snapshot(client, base, &format!("address_group={ag}")).await;
    assert_eq!(keys, BTreeSet::from([Kind::AddressGroup.key(&ag)]));

    // The watch sends the changes of the followed groups only.
    let added = rule(client, base, &sg, &other_ag).await;
    rule(client, base, &other_sg, &ag).await;
    add_addresses(client, base, &other_ag, "198.51.100.0/24").await;
    add_addresses(client, base, &ag, "203.0.113.0/24").await;
    let (_, last) = snapshot(client, base, "").await;
    let query = format!("after={revision}&security_group={sg}&address_group={ag}");
    let events = watch(client, base, &query, last).await;
    let changed: Vec<&str> = events.iter().filter_map(|e| e["key"].as_str()).collect();
    let group_key = Kind::SecurityGroup.key(&sg);
    let (added, ag_key) = (
        Kind::SecurityGroupRule.key(&added),
        Kind::AddressGroup.key(&ag),
    );
    // A new rule rewrites its group (its revision number).
    assert_eq!(
        changed,
        [group_key.as_str(), added.as_str(), ag_key.as_str()]
    );
    let addresses = &events[2]["value"]["addresses"];
    assert_eq!(addresses, &json!(["192.0.2.0/24", "203.0.113.0/24"]));
}
