//! Deletes racing port creates (the two-phase deletes of `resources::two_phase_delete`): a network,
//! a subnet or a security group deleted while many tasks create ports on it or with it must never
//! leave a port on a deleted network, with an address on a deleted subnet, or in a deleted group.
//! Each race runs several rounds, the delete sent after a different number of creates have been
//! answered (from none, racing them all, to most), and whatever the outcome of each request, what
//! the store holds afterwards is checked, straight from the store (no API filter in between). On
//! both stores: `WYVERN_TEST_STORE=etcd` runs the suite on etcd.

use crate::support;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{Value, json};

/// Port creates in each round.
const CREATES: usize = 32;
/// Rounds of each race; round `r` sends the delete once `r * CREATES / ROUNDS` creates answered.
const ROUNDS: usize = 6;

async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method, url);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn create(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    singular: &str,
    body: Value,
) -> String {
    let (status, v) = call(
        http,
        reqwest::Method::POST,
        format!("{base}/v2.0/{path}"),
        Some(json!({ singular: body })),
    )
    .await;
    assert_eq!(status, 201, "creating a {singular}: {v}");
    v[singular]["id"].as_str().unwrap().to_owned()
}

/// Every object of `collection` in the store, by id, with its internal fields.
async fn stored(server: &support::Server, collection: &str) -> BTreeMap<String, Value> {
    let prefix = format!("/r/{collection}/");
    let (kvs, _) = server.store.range(&prefix).await.expect("range");
    kvs.into_iter()
        .map(|kv| {
            let id = kv.key[prefix.len()..].to_owned();
            (
                id,
                serde_json::from_slice(&kv.value).expect("a stored object"),
            )
        })
        .collect()
}

/// What the store holds is consistent: every port's network, subnets and groups exist, and nothing
/// is left marked as being deleted.
async fn check_store(server: &support::Server, what: &str) {
    let networks = stored(server, "networks").await;
    let subnets = stored(server, "subnets").await;
    let groups = stored(server, "security_groups").await;
    let ports = stored(server, "ports").await;
    for (kind, objs) in [
        ("network", &networks),
        ("subnet", &subnets),
        ("security group", &groups),
    ] {
        for (id, obj) in objs {
            assert!(
                obj.get("_deleting").is_none(),
                "{what}: {kind} {id} is left marked as being deleted: {obj}"
            );
        }
    }
    for (id, port) in &ports {
        let network = port["network_id"].as_str().unwrap_or_default();
        assert!(
            networks.contains_key(network),
            "{what}: port {id} is on network {network}, which was deleted: {port}"
        );
        for ip in port["fixed_ips"].as_array().into_iter().flatten() {
            let subnet = ip["subnet_id"].as_str().unwrap_or_default();
            assert!(
                subnets.contains_key(subnet),
                "{what}: port {id} has an address on subnet {subnet}, which was deleted: {port}"
            );
        }
        for group in port["security_groups"].as_array().into_iter().flatten() {
            let group = group.as_str().unwrap_or_default();
            assert!(
                groups.contains_key(group),
                "{what}: port {id} is in security group {group}, which was deleted: {port}"
            );
        }
    }
}

/// Creates [`CREATES`] ports with `port` (a port body) at once and sends `delete` (a URL) once
/// `after` of them were answered; the delete's status and every create's.
async fn race(
    http: &reqwest::Client,
    base: &str,
    port: Value,
    delete: String,
    after: usize,
) -> (u16, Vec<(u16, Value)>) {
    let (answered, mut answers) = tokio::sync::watch::channel(0usize);
    let answered = Arc::new(answered);
    let creates: Vec<_> = (0..CREATES)
        .map(|i| {
            let (http, answered) = (http.clone(), answered.clone());
            let mut body = port.clone();
            body["name"] = json!(format!("racer{i}"));
            let url = format!("{base}/v2.0/ports");
            tokio::spawn(async move {
                let out = call(
                    &http,
                    reqwest::Method::POST,
                    url,
                    Some(json!({"port": body})),
                )
                .await;
                answered.send_modify(|n| *n += 1);
                out
            })
        })
        .collect();
    // A condition, not a guess at timing: the delete goes once `after` creates are answered.
    answers
        .wait_for(|n| *n >= after)
        .await
        .expect("create tasks");
    let (deleted, body) = call(http, reqwest::Method::DELETE, delete, None).await;
    assert!(
        matches!(deleted, 204 | 409),
        "the delete answered {deleted}: {body}"
    );
    let mut results = Vec::new();
    for c in creates {
        let (status, body) = c.await.expect("a create task");
        assert!(
            // 400: the port named the subnet, and its network has none left.
            matches!(status, 201 | 400 | 404 | 409),
            "a racing create answered {status}: {body}"
        );
        results.push((status, body));
    }
    (deleted, results)
}

/// Deletes a port (so that the next round's objects can go).
async fn delete_ports(http: &reqwest::Client, base: &str, created: &[(u16, Value)]) {
    for (status, body) in created {
        if *status == 201 {
            let id = body["port"]["id"].as_str().unwrap();
            let (s, v) = call(
                http,
                reqwest::Method::DELETE,
                format!("{base}/v2.0/ports/{id}"),
                None,
            )
            .await;
            assert!(matches!(s, 204 | 404), "deleting port {id}: {s} {v}");
        }
    }
}

/// The end of a round: the ports it made go, then the raced object `url` (if its delete lost),
/// and the store must be consistent after each step.
async fn clean_round(
    server: &support::Server,
    http: &reqwest::Client,
    results: &[(u16, Value)],
    url: String,
    what: &str,
) {
    delete_ports(http, &server.base, results).await;
    let (s, v) = call(http, reqwest::Method::DELETE, url.clone(), None).await;
    assert!(
        matches!(s, 204 | 404),
        "{what}: deleting {url} afterwards: {s} {v}"
    );
    check_store(server, what).await;
}

fn created(results: &[(u16, Value)]) -> usize {
    results.iter().filter(|(s, _)| *s == 201).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_delete_racing_port_creates_leaves_no_port_behind() {
    let server = support::Server::start();
    let (http, base) = (reqwest::Client::new(), server.base.clone());
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let net = create(
            &http,
            &base,
            "networks",
            "network",
            json!({"name": "doomed"}),
        )
        .await;
        create(
            &http,
            &base,
            "subnets",
            "subnet",
            json!({"network_id": net, "ip_version": 4, "cidr": "10.30.0.0/24"}),
        )
        .await;
        let after = round * CREATES / ROUNDS;
        let url = format!("{base}/v2.0/networks/{net}");
        let (deleted, results) = race(&http, &base, json!({"network_id": net}), url, after).await;
        let what = format!(
            "round {round} (network delete {deleted}, {} ports created)",
            created(&results)
        );
        check_store(&server, &what).await;
        if deleted == 204 {
            assert!(
                !stored(&server, "ports")
                    .await
                    .values()
                    .any(|p| p["network_id"] == net),
                "{what}: ports left on the deleted network"
            );
        }
        outcomes.push((deleted, created(&results)));
        // Clean up for the next round: the network goes once its ports are gone.
        clean_round(
            &server,
            &http,
            &results,
            format!("{base}/v2.0/networks/{net}"),
            &what,
        )
        .await;
    }
    println!("network delete races (delete status, ports created): {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subnet_delete_racing_port_creates_leaves_no_address_behind() {
    let server = support::Server::start();
    let (http, base) = (reqwest::Client::new(), server.base.clone());
    let net = create(
        &http,
        &base,
        "networks",
        "network",
        json!({"name": "stays"}),
    )
    .await;
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let subnet = create(
            &http,
            &base,
            "subnets",
            "subnet",
            json!({"network_id": net, "ip_version": 4, "cidr": format!("10.31.{round}.0/24")}),
        )
        .await;
        // Half the rounds name the subnet, half let the port take an address on every subnet.
        let port = if round % 2 == 0 {
            json!({"network_id": net, "fixed_ips": [{"subnet_id": subnet}]})
        } else {
            json!({"network_id": net})
        };
        let after = round * CREATES / ROUNDS;
        let url = format!("{base}/v2.0/subnets/{subnet}");
        let (deleted, results) = race(&http, &base, port, url, after).await;
        let what = format!(
            "round {round} (subnet delete {deleted}, {} ports created)",
            created(&results)
        );
        check_store(&server, &what).await;
        outcomes.push((deleted, created(&results)));
        clean_round(
            &server,
            &http,
            &results,
            format!("{base}/v2.0/subnets/{subnet}"),
            &what,
        )
        .await;
    }
    println!("subnet delete races (delete status, ports created): {outcomes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_security_group_delete_racing_port_creates_leaves_no_member_behind() {
    let server = support::Server::start();
    let (http, base) = (reqwest::Client::new(), server.base.clone());
    let net = create(
        &http,
        &base,
        "networks",
        "network",
        json!({"name": "stays"}),
    )
    .await;
    create(
        &http,
        &base,
        "subnets",
        "subnet",
        json!({"network_id": net, "ip_version": 4, "cidr": "10.32.0.0/22"}),
    )
    .await;
    let mut outcomes = Vec::new();
    for round in 0..ROUNDS {
        let group = create(
            &http,
            &base,
            "security-groups",
            "security_group",
            json!({"name": "doomed"}),
        )
        .await;
        let after = round * CREATES / ROUNDS;
        let url = format!("{base}/v2.0/security-groups/{group}");
        let port = json!({"network_id": net, "security_groups": [group]});
        let (deleted, results) = race(&http, &base, port, url, after).await;
        let what = format!(
            "round {round} (group delete {deleted}, {} ports created)",
            created(&results)
        );
        check_store(&server, &what).await;
        outcomes.push((deleted, created(&results)));
        clean_round(
            &server,
            &http,
            &results,
            format!("{base}/v2.0/security-groups/{group}"),
            &what,
        )
        .await;
    }
    println!("security group delete races (delete status, ports created): {outcomes:?}");
}
