//! Input Neutron refuses and Wyvern must refuse too, with Neutron's status and error type: subnet
//! CIDRs, pools, IPv6 modes and host routes, router routes, the `default` security group's name,
//! provider attributes, list-size limits (checked before the items, so a huge list is refused at
//! once), name lengths; and what Neutron shows for availability zones and network revisions.

use crate::support;

use serde_json::{Value, json};

/// A client of one test server.
struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    fn new(server: &support::Server) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: format!("{}/v2.0", server.base),
        }
    }

    /// Sends a request; status 0 when the server closed the connection without an answer.
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req.json(&body);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                (status, resp.json().await.unwrap_or(Value::Null))
            }
            Err(_) => (0, Value::Null),
        }
    }
    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }

    /// Creates an object and returns it; the create must succeed.
    async fn create(&self, collection: &str, singular: &str, attrs: Value) -> Value {
        let (status, body) = self
            .post(&format!("/{collection}"), json!({ singular: attrs }))
            .await;
        assert_eq!(status, 201, "create {singular}: {body}");
        body[singular].clone()
    }
    async fn network(&self) -> String {
        id(&self
            .create("networks", "network", json!({"name": "n"}))
            .await)
    }
    async fn subnet(&self, network: &str, cidr: &str) -> String {
        let version = if cidr.contains(':') { 6 } else { 4 };
        let attrs = json!({"network_id": network, "ip_version": version, "cidr": cidr});
        id(&self.create("subnets", "subnet", attrs).await)
    }
}

fn id(obj: &Value) -> String {
    obj["id"].as_str().expect("an id").to_string()
}

/// Asserts an error answer: status and Neutron error type; returns the message.
fn refused(answer: &(u16, Value), status: u16, kind: &str) -> String {
    let (got, body) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["NeutronError"]["type"], kind, "{body}");
    body["NeutronError"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_with_a_zero_prefix_are_refused() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    let subnet = |cidr: &str, dhcp: bool| {
        let version = if cidr.contains(':') { 6 } else { 4 };
        json!({"subnet": {"network_id": net, "ip_version": version, "cidr": cidr, "enable_dhcp": dhcp}})
    };
    let msg = refused(
        &c.post("/subnets", subnet("0.0.0.0/0", false)).await,
        400,
        "InvalidInput",
    );
    assert!(
        msg.contains("0 is not allowed as CIDR prefix length"),
        "{msg}"
    );
    let msg = refused(
        &c.post("/subnets", subnet("0.0.0.0/0", true)).await,
        400,
        "InvalidInput",
    );
    assert!(msg.contains("First IP '0.0.0.0'"), "{msg}");
    let msg = refused(
        &c.post("/subnets", subnet("::/0", false)).await,
        400,
        "InvalidInput",
    );
    assert!(msg.contains("IPv6 subnet '::' is not supported"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allocation_pools_exclude_network_and_broadcast_addresses() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    for (cidr, start, end) in [
        ("10.1.0.0/24", "10.1.0.0", "10.1.0.10"),
        ("10.1.1.0/24", "10.1.1.200", "10.1.1.255"),
        ("2001:db8:9::/64", "2001:db8:9::", "2001:db8:9::10"),
    ] {
        let version = if cidr.contains(':') { 6 } else { 4 };
        let body = json!({"subnet": {"network_id": net, "ip_version": version, "cidr": cidr,
            "allocation_pools": [{"start": start, "end": end}]}});
        refused(
            &c.post("/subnets", body).await,
            400,
            "OutOfBoundsAllocationPool",
        );
    }
    let body = json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.1.2.0/24",
        "allocation_pools": [{"start": "10.1.2.1", "end": "10.1.2.254"}], "gateway_ip": null}});
    assert_eq!(c.post("/subnets", body).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn automatic_ipv6_addresses_need_a_64_prefix() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    for (cidr, mode_attr, mode) in [
        ("2001:db8:7::/80", "ipv6_address_mode", "slaac"),
        ("2001:db8:8::/56", "ipv6_ra_mode", "dhcpv6-stateless"),
        ("2001:db8:6::/96", "ipv6_address_mode", "dhcpv6-stateless"),
    ] {
        let body =
            json!({"subnet": {"network_id": net, "ip_version": 6, "cidr": cidr, mode_attr: mode}});
        let msg = refused(&c.post("/subnets", body).await, 400, "InvalidInput");
        assert!(
            msg.contains(&format!("Invalid CIDR {cidr} for IPv6 address mode"))
                && msg.contains("requires the prefix to be /64"),
            "{msg}"
        );
    }
    let body = json!({"subnet": {"network_id": net, "ip_version": 6, "cidr": "2001:db8:5::/64",
        "ipv6_address_mode": "slaac", "ipv6_ra_mode": "slaac"}});
    assert_eq!(c.post("/subnets", body).await.0, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ipv6_allocation_never_wraps_past_the_last_address() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    let top = "ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    c.create(
        "subnets",
        "subnet",
        json!({"network_id": net, "ip_version": 6, "cidr": "ffff:ffff:ffff:ffff::/64",
            "allocation_pools": [{"start": format!("{top}:fffe"), "end": format!("{top}:ffff")}]}),
    )
    .await;
    let mut handed_out = Vec::new();
    for _ in 0..2 {
        let port = c.create("ports", "port", json!({"network_id": net})).await;
        handed_out.push(port["fixed_ips"][0]["ip_address"].clone());
    }
    assert_eq!(
        handed_out,
        vec![json!(format!("{top}:fffe")), json!(format!("{top}:ffff"))]
    );
    // The pool is used up: no `::` or `::1` from a wrapped counter.
    for _ in 0..2 {
        let answer = c.post("/ports", json!({"port": {"network_id": net}})).await;
        refused(&answer, 409, "IpAddressGenerationFailure");
    }
}

/// Subnets at the very end of the address space: working out the default pools of
/// `ffff:...:ffff/128` once added one past the last address, and the server panicked (the
/// connection closed without an answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subnets_at_the_last_address_have_their_pools() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let top = "ffff:ffff:ffff:ffff:ffff:ffff:ffff";
    let last = json!([{"start": format!("{top}:ffff"), "end": format!("{top}:ffff")}]);
    let broadcast = json!([{"start": "255.255.255.255", "end": "255.255.255.255"}]);
    for (version, cidr, pools) in [
        (6, format!("{top}:ffff/128"), json!([])),
        (6, format!("{top}:fffe/127"), last),
        (4, "255.255.255.255/32".to_string(), broadcast),
    ] {
        let attrs = json!({"network_id": c.network().await, "ip_version": version, "cidr": cidr,
            "gateway_ip": null});
        let subnet = c.create("subnets", "subnet", attrs).await;
        assert_eq!(subnet["allocation_pools"], pools, "{cidr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_routes_are_valid_unique_and_exact() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    let route = json!({"destination": "10.9.0.0/16", "nexthop": "10.1.3.5"});
    for (routes, reason) in [
        (
            json!([{"destination": "10.9.0.1/16", "nexthop": "10.1.3.5"}]),
            "'10.9.0.1/16' is not a valid CIDR",
        ),
        (json!([route, route]), "Duplicate hostroute"),
        (
            json!([{"destination": "10.9.0.0/16", "nexthop": "10.1.3.5", "x": 1}]),
            "Validation of dictionary's keys failed",
        ),
    ] {
        let body = json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.1.3.0/24",
            "host_routes": routes}});
        let msg = refused(&c.post("/subnets", body).await, 400, "HTTPBadRequest");
        assert!(
            msg.starts_with("Invalid input for host_routes. Reason: ") && msg.contains(reason),
            "{msg}"
        );
    }
    let sub = c.subnet(&net, "10.1.3.0/24").await;
    let body = json!({"subnet": {"host_routes": [route, route]}});
    refused(
        &c.put(&format!("/subnets/{sub}"), body).await,
        400,
        "HTTPBadRequest",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_routes_are_validated_and_limited() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    let sub = c.subnet(&net, "10.1.7.0/24").await;
    let router = id(&c.create("routers", "router", json!({"name": "r"})).await);
    let (status, body) = c
        .put(
            &format!("/routers/{router}/add_router_interface"),
            json!({"subnet_id": sub}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let path = format!("/routers/{router}");
    let extra = json!([{"destination": "10.8.0.0/16", "nexthop": "10.1.7.9", "x": 1}]);
    let msg = refused(
        &c.put(&path, json!({"router": {"routes": extra}})).await,
        400,
        "HTTPBadRequest",
    );
    assert!(
        msg.contains("Validation of dictionary's keys failed"),
        "{msg}"
    );
    let routes = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({"destination": format!("10.{}.{}.0/24", 100 + i / 256, i % 256), "nexthop": "10.1.7.9"}))
            .collect()
    };
    let msg = refused(
        &c.put(&path, json!({"router": {"routes": routes(31)}}))
            .await,
        409,
        "OverQuota",
    );
    assert_eq!(msg, "Quota exceeded for resources: ['router_route'].");
    let (status, body) = c
        .put(&path, json!({"router": {"routes": routes(30)}}))
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_security_group_keeps_its_name() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (_, groups) = c.get("/security-groups?name=default").await;
    let default = id(&groups["security_groups"][0]);
    let path = format!("/security-groups/{default}");
    let msg = refused(
        &c.put(&path, json!({"security_group": {"name": "renamed"}}))
            .await,
        409,
        "SecurityGroupCannotUpdateDefault",
    );
    assert_eq!(msg, "Updating default security group not allowed.");
    let (status, body) = c
        .put(&path, json!({"security_group": {"description": "d"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["security_group"]["name"], "default");
    let other = id(&c
        .create("security-groups", "security_group", json!({"name": "web"}))
        .await);
    let (status, body) = c
        .put(
            &format!("/security-groups/{other}"),
            json!({"security_group": {"name": "www"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_provider_attributes_are_refused_not_replaced() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let msg = refused(
        &c.post(
            "/networks",
            json!({"network": {"provider:network_type": "vlan", "provider:physical_network": 5,
                "provider:segmentation_id": 150}}),
        )
        .await,
        400,
        "HTTPBadRequest",
    );
    assert!(
        msg.contains("Invalid input for provider:physical_network"),
        "{msg}"
    );
    for body in [
        json!({"provider:network_type": "vxlan", "provider:segmentation_id": -5}),
        json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1",
            "provider:segmentation_id": -5}),
    ] {
        refused(
            &c.post("/networks", json!({ "network": body })).await,
            400,
            "InvalidInput",
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_zones_are_listed() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (status, body) = c.get("/availability_zones").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"availability_zones": [
            {"name": "nova", "resource": "network", "state": "available"},
            {"name": "nova", "resource": "router", "state": "available"},
        ]})
    );
    let (_, body) = c
        .get("/availability_zones?resource=router&fields=name")
        .await;
    assert_eq!(body, json!({"availability_zones": [{"name": "nova"}]}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_revisions_follow_neutron() {
    let server = support::Server::start();
    let c = Client::new(&server);
    // As recorded from Neutron: 1 after create, unchanged by an update that changes nothing, +1 by
    // an update that does and by a new subnet.
    let net = c.create("networks", "network", json!({"name": "n"})).await;
    assert_eq!(net["revision_number"], 1);
    let path = format!("/networks/{}", id(&net));
    let (_, same) = c.put(&path, json!({"network": {"name": "n"}})).await;
    assert_eq!(same["network"]["revision_number"], 1, "{same}");
    let (_, renamed) = c.put(&path, json!({"network": {"name": "m"}})).await;
    assert_eq!(renamed["network"]["revision_number"], 2, "{renamed}");
    c.subnet(&id(&net), "10.2.0.0/24").await;
    let (_, shown) = c.get(&path).await;
    assert_eq!(shown["network"]["revision_number"], 3, "{shown}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_sizes_are_limited_before_items_are_checked() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    let pairs = |n: usize| -> Vec<Value> {
        (0..n)
            .map(
                |i| json!({"ip_address": format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255)}),
            )
            .collect()
    };
    let msg = refused(
        &c.post(
            "/ports",
            json!({"port": {"network_id": net, "allowed_address_pairs": pairs(11)}}),
        )
        .await,
        400,
        "AllowedAddressPairExhausted",
    );
    assert_eq!(
        msg,
        "The number of allowed address pair exceeds the maximum 10."
    );
    let started = std::time::Instant::now();
    refused(
        &c.post(
            "/ports",
            json!({"port": {"network_id": net, "allowed_address_pairs": pairs(25_000)}}),
        )
        .await,
        400,
        "AllowedAddressPairExhausted",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    let port = id(&c
        .create(
            "ports",
            "port",
            json!({"network_id": net, "allowed_address_pairs": pairs(10)}),
        )
        .await);
    refused(
        &c.put(
            &format!("/ports/{port}"),
            json!({"port": {"allowed_address_pairs": pairs(11)}}),
        )
        .await,
        400,
        "AllowedAddressPairExhausted",
    );

    let dns: Vec<String> = (1..=6).map(|i| format!("192.0.2.{i}")).collect();
    let routes: Vec<Value> = (0..21)
        .map(|i| json!({"destination": format!("10.9.{i}.0/24"), "nexthop": "10.1.5.5"}))
        .collect();
    let subnet = |extra: Value| {
        let mut body = json!({"network_id": net, "ip_version": 4, "cidr": "10.1.5.0/24"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "subnet": body })
    };
    let msg = refused(
        &c.post("/subnets", subnet(json!({"dns_nameservers": dns})))
            .await,
        400,
        "DNSNameServersExhausted",
    );
    assert_eq!(
        msg,
        "Unable to complete operation for new subnet. The number of DNS nameservers exceeds the limit 5."
    );
    let msg = refused(
        &c.post("/subnets", subnet(json!({"host_routes": routes})))
            .await,
        400,
        "HostRoutesExhausted",
    );
    assert_eq!(
        msg,
        "Unable to complete operation for new subnet. The number of host routes exceeds the limit 20."
    );
    let sub = c.subnet(&net, "10.1.5.0/24").await;
    let msg = refused(
        &c.put(
            &format!("/subnets/{sub}"),
            json!({"subnet": {"dns_nameservers": dns}}),
        )
        .await,
        400,
        "DNSNameServersExhausted",
    );
    assert!(msg.contains(&sub), "{msg}");
    refused(
        &c.put(
            &format!("/subnets/{sub}"),
            json!({"subnet": {"host_routes": routes}}),
        )
        .await,
        400,
        "HostRoutesExhausted",
    );
    let (status, body) = c
        .put(
            &format!("/subnets/{sub}"),
            json!({"subnet": {"dns_nameservers": dns[..5], "host_routes": routes[..20]}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let tags = |n: usize| -> Vec<String> { (0..n).map(|i| format!("t{i}")).collect() };
    let tags_path = format!("/networks/{net}/tags");
    let msg = refused(
        &c.put(&tags_path, json!({ "tags": tags(51) })).await,
        400,
        "BadRequest",
    );
    assert_eq!(
        msg,
        "Bad networks request: The number of tags exceed the per-resource limit of 50."
    );
    refused(
        &c.put(&tags_path, json!({"tags": ["a", "a"]})).await,
        400,
        "InvalidInput",
    );
    let (status, body) = c.put(&tags_path, json!({ "tags": tags(50) })).await;
    assert_eq!(status, 200, "{body}");
    refused(
        &c.call(reqwest::Method::PUT, &format!("{tags_path}/one-more"), None)
            .await,
        400,
        "BadRequest",
    );
    let (status, _) = c
        .call(reqwest::Method::PUT, &format!("{tags_path}/t1"), None)
        .await;
    assert_eq!(status, 201, "a tag already there does not count twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_and_descriptions_have_a_maximum_length() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let long = "x".repeat(256);
    for (collection, singular) in [
        ("networks", "network"),
        ("routers", "router"),
        ("security-groups", "security_group"),
    ] {
        for attr in ["name", "description"] {
            let msg = refused(
                &c.post(
                    &format!("/{collection}"),
                    json!({ singular: { attr: long } }),
                )
                .await,
                400,
                "HTTPBadRequest",
            );
            assert!(msg.contains("exceeds maximum length of 255"), "{msg}");
        }
    }
    let net = c.network().await;
    let (status, body) = c
        .put(
            &format!("/networks/{net}"),
            json!({"network": {"name": "y".repeat(255)}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    refused(
        &c.put(
            &format!("/networks/{net}"),
            json!({"network": {"name": long}}),
        )
        .await,
        400,
        "HTTPBadRequest",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_create_sees_its_earlier_items() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    let subnet = |cidr: &str| json!({"network_id": net, "ip_version": 4, "cidr": cidr});
    let (status, body) = c
        .post(
            "/subnets",
            json!({"subnets": [subnet("10.0.0.0/24"), subnet("10.0.1.0/24")]}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let mut created: Vec<String> = body["subnets"]
        .as_array()
        .expect("the subnets")
        .iter()
        .map(id)
        .collect();
    created.sort();
    let (_, shown) = c.get(&format!("/networks/{net}")).await;
    let mut listed: Vec<String> =
        serde_json::from_value(shown["network"]["subnets"].clone()).expect("the network's subnets");
    listed.sort();
    assert_eq!(
        listed, created,
        "the network lists every subnet of the bulk request"
    );
    // Ports find the network's subnets through that list.
    let port = json!({"network_id": net, "fixed_ips": [{"subnet_id": created[0]}, {"subnet_id": created[1]}]});
    let (status, body) = c.post("/ports", json!({ "port": port })).await;
    assert_eq!(status, 201, "{body}");
    // Items of one request that overlap each other are refused like any overlap.
    let msg = refused(
        &c.post(
            "/subnets",
            json!({"subnets": [subnet("10.1.0.0/24"), subnet("10.1.0.0/25")]}),
        )
        .await,
        400,
        "InvalidInput",
    );
    assert!(msg.contains("overlaps with another subnet"), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_allocation_pools_are_refused() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let net = c.network().await;
    let pool = |s: u8, e: u8| json!({"start": format!("10.2.0.{s}"), "end": format!("10.2.0.{e}")});
    let subnet = |pools: Value| {
        json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.2.0.0/24",
            "allocation_pools": pools}})
    };
    // The overlap is between the first and the last pool given.
    let overlapping = json!([pool(10, 20), pool(30, 40), pool(50, 60), pool(15, 25)]);
    let msg = refused(
        &c.post("/subnets", subnet(overlapping)).await,
        409,
        "OverlappingAllocationPools",
    );
    assert!(
        msg.contains("10.2.0.10-10.2.0.20 and 10.2.0.15-10.2.0.25"),
        "{msg}"
    );
    let touching = json!([pool(21, 30), pool(10, 20)]);
    let (status, body) = c.post("/subnets", subnet(touching)).await;
    assert_eq!(status, 201, "{body}");
}
