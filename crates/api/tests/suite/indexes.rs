//! The store's secondary indexes (`/idx/...`, see `api::index`) agree with the objects: after
//! concurrent creates, changes and deletes of every indexed kind (bulk creates and two-phase deletes
//! included), and after the rebuild a server starting on a store whose index keys are missing or
//! wrong makes before it serves, while another server serves. With `WYVERN_TEST_STORE=etcd` the
//! tests run on etcd.

use crate::support;

use serde_json::{Value, json};

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(server: &support::Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: server.base.clone(),
        }
    }

    /// A request as the admin; the status and the body.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// A request that must answer `want`; the body.
    async fn expect(&self, want: u16, method: &str, path: &str, body: Option<Value>) -> Value {
        let verb = reqwest::Method::from_bytes(method.as_bytes()).expect("an HTTP method");
        let (status, answer) = self.call(verb, path, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        answer
    }

    /// Creates a `singular` (`port`, `floatingip`, `security_group`, ...); returns its id.
    async fn create(&self, singular: &str, attrs: Value) -> String {
        let path = format!("/v2.0/{}s", singular.replace('_', "-"));
        let answer = self
            .expect(201, "POST", &path, Some(json!({ singular: attrs })))
            .await;
        answer[singular]["id"].as_str().expect("an id").to_string()
    }

    async fn update(&self, singular: &str, id: &str, attrs: Value) {
        let path = format!("/v2.0/{singular}s/{id}");
        self.expect(200, "PUT", &path, Some(json!({ singular: attrs })))
            .await;
    }

    async fn delete(&self, collection: &str, id: &str) -> (u16, Value) {
        let path = format!("/v2.0/{collection}/{id}");
        self.call(reqwest::Method::DELETE, &path, None).await
    }

    /// A network with one IPv4 subnet; returns (network, subnet).
    async fn network(&self, attrs: Value, cidr: &str) -> (String, String) {
        let net = self.create("network", attrs).await;
        let subnet = json!({"network_id": net, "ip_version": 4, "cidr": cidr});
        (net.clone(), self.create("subnet", subnet).await)
    }

    async fn router_action(&self, router: &str, action: &str, body: Value) -> (u16, Value) {
        let path = format!("/v2.0/routers/{router}/{action}");
        self.call(reqwest::Method::PUT, &path, Some(body)).await
    }
}

/// Asserts that every index key agrees with the objects.
async fn assert_consistent(server: &support::Server) {
    let repairs = api::index::repairs(server.store.as_ref())
        .await
        .expect("read the store");
    assert!(
        repairs.is_empty(),
        "index keys disagree with the objects: {repairs:#?}"
    );
}

/// One of many concurrent users: a port (in `group` or the default group, a device id shared with
/// others), a floating IP on it, a rule in `group`; then the association ends (disassociated, the
/// port deleted, or the floating IP deleted), some rules go, and the remaining port moves to
/// another device and leaves its groups.
async fn user(c: &Client, i: usize, (external, internal, group): (&str, &str, &str)) {
    let mut port = json!({"network_id": internal, "device_id": format!("vm-{}", i % 5)});
    if i.is_multiple_of(2) {
        port["security_groups"] = json!([group]);
    }
    let port = c.create("port", port).await;
    let fip = json!({"floating_network_id": external, "port_id": port});
    let fip = c.create("floatingip", fip).await;
    let rule = json!({"security_group_id": group, "direction": "ingress", "protocol": "tcp",
        "port_range_min": 1000 + i, "port_range_max": 1000 + i});
    let rule = c.create("security_group_rule", rule).await;
    match i % 3 {
        0 => c.update("floatingip", &fip, json!({"port_id": null})).await,
        1 => assert_eq!(c.delete("ports", &port).await.0, 204),
        _ => assert_eq!(c.delete("floatingips", &fip).await.0, 204),
    }
    if i.is_multiple_of(4) {
        assert_eq!(c.delete("security-group-rules", &rule).await.0, 204);
    }
    if i % 3 != 1 {
        let moved = json!({"device_id": format!("moved-{i}"), "security_groups": []});
        c.update("port", &port, moved).await;
    }
}

/// A bulk create of ports in `group`, half of them deleted again.
async fn bulk(c: &Client, internal: &str, group: &str) {
    let ports =
        vec![json!({"network_id": internal, "device_id": "bulk", "security_groups": [group]}); 10];
    let answer = c
        .expect(201, "POST", "/v2.0/ports", Some(json!({"ports": ports})))
        .await;
    let ids: Vec<&str> = answer["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| p["id"].as_str().expect("an id"))
        .collect();
    for id in &ids[..5] {
        assert_eq!(c.delete("ports", id).await.0, 204);
    }
}

/// A group whose rules refer to `group` and the other way round, deleted (two phases, its rules and
/// the rules that refer to it with it).
async fn referring_group(c: &Client, group: &str) {
    let other = c.create("security_group", json!({"name": "other"})).await;
    for (i, (owner, remote)) in [
        (&other, group),
        (&other, group),
        (&group.to_string(), &*other),
    ]
    .into_iter()
    .enumerate()
    {
        let rule = json!({"security_group_id": owner, "direction": "ingress", "protocol": "udp",
            "port_range_min": 10 + i, "port_range_max": 10 + i, "remote_group_id": remote});
        c.create("security_group_rule", rule).await;
    }
    let (status, body) = c.delete("security-groups", &other).await;
    assert_eq!(status, 204, "{body}");
}

/// A second interface of `router`, used by a floating IP (so not removable), then removed.
async fn second_interface(c: &Client, router: &str, external: &str) {
    let (net, subnet) = c.network(json!({}), "10.60.0.0/24").await;
    let (status, body) = c
        .router_action(router, "add_router_interface", json!({"subnet_id": subnet}))
        .await;
    assert_eq!(status, 200, "{body}");
    let port = c.create("port", json!({"network_id": net})).await;
    let fip = json!({"floating_network_id": external, "port_id": port});
    let fip = c.create("floatingip", fip).await;
    let remove = json!({"subnet_id": subnet});
    let (status, body) = c
        .router_action(router, "remove_router_interface", remove.clone())
        .await;
    assert_eq!(status, 409, "{body}");
    c.update("floatingip", &fip, json!({"port_id": null})).await;
    let (status, body) = c
        .router_action(router, "remove_router_interface", remove)
        .await;
    assert_eq!(status, 200, "{body}");
}

/// A network with a DHCP port (which goes with it) and another port (which keeps it): deleted
/// once the other port is gone.
async fn network_delete(c: &Client) {
    let (net, _) = c.network(json!({}), "10.70.0.0/24").await;
    let dhcp = json!({"network_id": net, "device_owner": "network:dhcp", "device_id": "dhcp-1"});
    c.create("port", dhcp).await;
    let port = c
        .create("port", json!({"network_id": net, "device_id": "vm-x"}))
        .await;
    let (status, body) = c.delete("networks", &net).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(c.delete("ports", &port).await.0, 204);
    let (status, body) = c.delete("networks", &net).await;
    assert_eq!(status, 204, "{body}");
}

/// An external network, an internal network whose subnet a router connects to it, and a group.
async fn world(c: &Client) -> (String, String, String, String) {
    let external = json!({"router:external": true});
    let (external, _) = c.network(external, "172.16.0.0/16").await;
    let (internal, subnet) = c.network(json!({}), "10.50.0.0/16").await;
    let gateway = json!({"external_gateway_info": {"network_id": external}});
    let router = c.create("router", gateway).await;
    let (status, body) = c
        .router_action(
            &router,
            "add_router_interface",
            json!({"subnet_id": subnet}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let group = c.create("security_group", json!({"name": "g"})).await;
    (external, internal, router, group)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_changes_leave_the_indexes_consistent() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (external, internal, router, group) = world(&c).await;
    let names = (external.as_str(), internal.as_str(), group.as_str());
    let users = futures::future::join_all((0..40).map(|i| user(&c, i, names)));
    futures::join!(
        users,
        bulk(&c, &internal, &group),
        referring_group(&c, &group),
        second_interface(&c, &router, &external),
        network_delete(&c),
    );
    assert_consistent(&server).await;
    // The bulk's remaining ports keep the group (found through the index).
    let (status, body) = c.delete("security-groups", &group).await;
    assert_eq!(status, 409, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_starting_server_rebuilds_the_indexes_while_another_serves() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (external, internal, _, group) = world(&c).await;
    let names = (external.as_str(), internal.as_str(), group.as_str());
    futures::future::join_all((0..12).map(|i| user(&c, i, names))).await;
    let port = c.create("port", json!({"network_id": internal})).await;
    let fip = json!({"floating_network_id": external, "port_id": port});
    let fip = c.create("floatingip", fip).await;

    // The store as a server that kept no indexes left it: no index keys, and some wrong ones.
    let store = &server.store;
    let (keys, _) = store.range("/idx/").await.unwrap();
    assert!(!keys.is_empty());
    for chunk in keys.chunks(100) {
        let mut txn = store::Txn::new();
        for kv in chunk {
            txn = txn.delete(kv.key.clone());
        }
        store.txn(txn).await.unwrap();
    }
    let wrong = store::Txn::new()
        .put(format!("/idx/ports/device_id/ghost/{port}"), vec![])
        .put("/idx/ports/device_id/ghost/no-such-port", vec![]);
    store.txn(wrong).await.unwrap();
    let repairs = api::index::repairs(store.as_ref()).await.unwrap();
    assert!(repairs.len() > 12, "{repairs:#?}");

    // Another server starting on the store meanwhile rebuilds them before it answers, while the
    // first one serves new users. (Their networks, router and group are new, their index keys
    // written by the first server: a serving server trusts its index, which only a server that
    // keeps no indexes, running beside it, could leave incomplete; what is tested is that the
    // rebuild and the writes racing with it leave every key right.)
    let (external, internal, _, group) = world(&c).await;
    let names = (external.as_str(), internal.as_str(), group.as_str());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let second = Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", listener.local_addr().unwrap()),
    };
    let config = api::ApiConfig::default();
    tokio::spawn(api::serve(listener, server.store.clone(), config));
    futures::join!(
        second.expect(200, "GET", "/v2.0/ports", None),
        futures::future::join_all((12..24).map(|i| user(&c, i, names))),
    );
    assert_consistent(&server).await;

    // The rebuilt index serves: deleting the port disassociates its floating IP.
    assert_eq!(c.delete("ports", &port).await.0, 204);
    let shown = c
        .expect(200, "GET", &format!("/v2.0/floatingips/{fip}"), None)
        .await;
    assert_eq!(shown["floatingip"]["port_id"], Value::Null, "{shown}");
}
