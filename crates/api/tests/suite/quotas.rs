//! Quotas (`api::quota`): the API and its policy, Neutron's default limits, and enforcement: a
//! create over a project's limit is 409 `OverQuota`, a bulk create counts as a whole, a delete
//! frees room, objects the server makes on a project's behalf are counted but not refused, lowering
//! a limit below the usage needs `force`, concurrent creates never pass a limit, and a server that
//! starts on a store without usage counters (or with wrong ones) recounts before it serves. With
//! `WYVERN_TEST_STORE=etcd` the tests run on etcd (two servers on one etcd: `etcd_two_servers.rs`).

use crate::caller;
use crate::support;

use caller::{ADMIN, ALICE, BOB, Who};

use serde_json::{Value, json};

/// Alice's quota.
const QUOTA: &str = "/v2.0/quotas/project-alice";

/// The suite's [`caller::Client`] with this module's own requests (other modules add theirs to
/// their own newtype, so that the names do not clash).
struct Client(caller::Client);

impl std::ops::Deref for Client {
    type Target = caller::Client;

    fn deref(&self) -> &caller::Client {
        &self.0
    }
}

impl Client {
    fn new(server: &support::Server) -> Self {
        Client(caller::Client::new(server))
    }

    /// Creates a `singular` (`network`, `security_group`, ...); the status and the answer.
    async fn create(&self, who: Who, singular: &str, attrs: Value) -> (u16, Value) {
        let path = format!("/v2.0/{}s", singular.replace('_', "-"));
        self.call(who, "POST", &path, Some(json!({ singular: attrs })))
            .await
    }

    /// Creates a `singular`, which must succeed; its id.
    async fn made(&self, who: Who, singular: &str, attrs: Value) -> String {
        let (status, answer) = self.create(who, singular, attrs).await;
        assert_eq!(status, 201, "{singular}: {answer}");
        answer[singular]["id"].as_str().expect("an id").to_string()
    }

    /// Sets some of Alice's limits (as the admin); the answer must be 200.
    async fn limit(&self, limits: Value) -> Value {
        let (status, answer) = self
            .call(ADMIN, "PUT", QUOTA, Some(json!({ "quota": limits })))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }

    /// Alice's usage of `resource`, as her quota details show it.
    async fn used(&self, resource: &str) -> i64 {
        let (status, answer) = self
            .call(ALICE, "GET", &format!("{QUOTA}/details"), None)
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["quota"][resource]["used"]
            .as_i64()
            .unwrap_or_else(|| panic!("no usage of {resource}: {answer}"))
    }

    /// How many objects of `collection` Alice holds.
    async fn count(&self, collection: &str) -> i64 {
        let path = format!("/v2.0/{collection}?project_id=project-alice");
        let (status, answer) = self.call(ADMIN, "GET", &path, None).await;
        assert_eq!(status, 200, "{answer}");
        let key = collection.replace('-', "_");
        answer[key].as_array().map_or(0, |l| l.len() as i64)
    }
}

/// Asserts a refusal: status and Neutron error type; the message.
#[track_caller]
fn refused(answer: &(u16, Value), status: u16, kind: &str) -> String {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["NeutronError"]["type"], kind, "{}", answer.1);
    answer.1["NeutronError"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Asserts a 409 `OverQuota` for `resource`.
#[track_caller]
fn over_quota(answer: &(u16, Value), resource: &str) {
    let message = refused(answer, 409, "OverQuota");
    assert_eq!(
        message,
        format!("Quota exceeded for resources: ['{resource}'].")
    );
}

/// Neutron 29's default limits for the resources Wyvern serves.
fn neutron_defaults() -> Value {
    json!({"network": 100, "subnet": 100, "port": 500, "router_route": 30, "router": 10,
        "floatingip": 50, "security_group": 10, "security_group_rule": 100})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_read_their_own_quota_and_only_admins_change_quotas() {
    let server = support::Server::start();
    let c = Client::new(&server);
    // Neutron's defaults, for her own project, and to the admin for anyone's.
    for (who, path) in [
        (ALICE, QUOTA.to_string()),
        (ALICE, format!("{QUOTA}/default")),
        (ADMIN, "/v2.0/quotas/project-bob".to_string()),
    ] {
        let (status, answer) = c.call(who, "GET", &path, None).await;
        assert_eq!((status, &answer["quota"]), (200, &neutron_defaults()));
    }
    let (_, details) = c
        .call(ALICE, "GET", &format!("{QUOTA}/details"), None)
        .await;
    assert_eq!(
        details["quota"]["router"],
        json!({"limit": 10, "used": 0, "reserved": 0})
    );
    let (_, mine) = c.call(ALICE, "GET", "/v2.0/quotas/project", None).await;
    assert_eq!(mine, json!({"project": {"project_id": "project-alice"}}));

    // Not another project's, not the list, and no changes.
    let other = "/v2.0/quotas/project-bob";
    refused(
        &c.call(ALICE, "GET", other, None).await,
        403,
        "PolicyNotAuthorized",
    );
    refused(
        &c.call(ALICE, "GET", &format!("{other}/default"), None)
            .await,
        403,
        "PolicyNotAuthorized",
    );
    refused(
        &c.call(ALICE, "GET", &format!("{other}/details"), None)
            .await,
        403,
        "AdminRequired",
    );
    refused(
        &c.call(ALICE, "GET", "/v2.0/quotas", None).await,
        403,
        "PolicyNotAuthorized",
    );
    let raise = json!({"quota": {"network": 1000}});
    let message = refused(
        &c.call(ALICE, "PUT", QUOTA, Some(raise.clone())).await,
        403,
        "PolicyNotAuthorized",
    );
    assert_eq!(message, "rule:update_quota is disallowed by policy");
    refused(
        &c.call(BOB, "DELETE", QUOTA, None).await,
        403,
        "PolicyNotAuthorized",
    );

    // The admin changes them; the list shows the projects with limits of their own.
    let (_, listed) = c.call(ADMIN, "GET", "/v2.0/quotas", None).await;
    assert_eq!(listed, json!({"quotas": []}));
    let answer = c.limit(json!({"network": 3, "port": "-1"})).await;
    assert_eq!(answer["quota"]["network"], 3);
    assert_eq!(answer["quota"]["port"], -1);
    assert_eq!(answer["quota"]["router"], 10);
    let (_, shown) = c.call(ALICE, "GET", QUOTA, None).await;
    assert_eq!(shown, answer);
    let (_, listed) = c.call(ADMIN, "GET", "/v2.0/quotas", None).await;
    assert_eq!(
        listed["quotas"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(listed["quotas"][0]["project_id"], "project-alice");
    assert_eq!(listed["quotas"][0]["network"], 3);

    // Values as Neutron checks them.
    for (limits, kind) in [
        (json!({"network": -2}), "HTTPBadRequest"),
        (json!({"network": 2147483648_i64}), "HTTPBadRequest"),
        (json!({"network": "many"}), "InvalidInput"),
        (json!({"network": null}), "InvalidInput"),
        (json!({"networks": 5}), "HTTPBadRequest"),
        (json!({"project_id": "x"}), "HTTPBadRequest"),
    ] {
        let body = json!({ "quota": limits });
        refused(&c.call(ADMIN, "PUT", QUOTA, Some(body)).await, 400, kind);
    }
    refused(
        &c.call(ADMIN, "PUT", QUOTA, Some(json!([1]))).await,
        400,
        "HTTPBadRequest",
    );

    // Deleting returns the project to the defaults; there is nothing to delete twice.
    assert_eq!(c.call(ADMIN, "DELETE", QUOTA, None).await.0, 204);
    let (_, shown) = c.call(ALICE, "GET", QUOTA, None).await;
    assert_eq!(shown["quota"], neutron_defaults());
    refused(
        &c.call(ADMIN, "DELETE", QUOTA, None).await,
        404,
        "TenantQuotaNotFound",
    );

    // The extensions are announced.
    let (_, extensions) = c.call(ALICE, "GET", "/v2.0/extensions", None).await;
    let aliases: Vec<&str> = extensions["extensions"]
        .as_array()
        .expect("extensions")
        .iter()
        .filter_map(|e| e["alias"].as_str())
        .collect();
    for alias in [
        "quotas",
        "quota_details",
        "quota-check-limit",
        "quota-check-limit-default",
    ] {
        assert!(aliases.contains(&alias), "{alias} not in {aliases:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_past_a_limit_are_refused_and_deletes_make_room() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let external = c
        .made(ADMIN, "network", json!({"router:external": true}))
        .await;
    let body = json!({"network_id": external, "ip_version": 4, "cidr": "192.0.2.0/24"});
    c.made(ADMIN, "subnet", body).await;

    // A first network makes Alice's default group: 1 group and its 4 rules.
    let net = c.made(ALICE, "network", json!({})).await;
    assert_eq!(
        (
            c.used("security_group").await,
            c.used("security_group_rule").await
        ),
        (1, 4)
    );
    let subnet = json!({"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"});
    c.made(ALICE, "subnet", subnet).await;
    let group = c.made(ALICE, "security_group", json!({"name": "g"})).await;
    let rule = |port: u16| {
        json!({"security_group_id": group, "direction": "ingress", "protocol": "tcp",
            "port_range_min": port, "port_range_max": port})
    };
    let cases: [(&str, &str, Value); 7] = [
        ("network", "networks", json!({})),
        (
            "subnet",
            "subnets",
            json!({"network_id": net, "ip_version": 4, "cidr": "10.1.0.0/24"}),
        ),
        ("port", "ports", json!({"network_id": net})),
        ("router", "routers", json!({})),
        (
            "floatingip",
            "floatingips",
            json!({"floating_network_id": external}),
        ),
        ("security_group", "security-groups", json!({"name": "h"})),
        ("security_group_rule", "security-group-rules", rule(22)),
    ];
    for (resource, collection, attrs) in cases {
        // Room for exactly one more.
        let used = c.used(resource).await;
        c.limit(json!({ resource: used + 1 })).await;
        let made = c.made(ALICE, resource, attrs.clone()).await;
        assert_eq!(c.used(resource).await, used + 1);
        let mut again = attrs.clone();
        if resource == "security_group_rule" {
            again = rule(23);
        }
        over_quota(&c.create(ALICE, resource, again.clone()).await, resource);
        // Another project is not concerned.
        if resource != "subnet" && resource != "security_group_rule" && resource != "port" {
            c.made(BOB, resource, attrs.clone()).await;
        }
        // A delete makes room again.
        let path = format!("/v2.0/{collection}/{made}");
        assert_eq!(c.call(ALICE, "DELETE", &path, None).await.0, 204, "{path}");
        assert_eq!(c.used(resource).await, used);
        c.made(ALICE, resource, again).await;
        assert_eq!(
            c.used(resource).await,
            c.count(collection).await,
            "{resource}"
        );
    }
    // -1: no limit.
    c.limit(json!({"network": -1})).await;
    for _ in 0..3 {
        c.made(ALICE, "network", json!({})).await;
    }
    // The details agree with the objects.
    for (resource, collection) in [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("router", "routers"),
        ("floatingip", "floatingips"),
        ("security_group", "security-groups"),
        ("security_group_rule", "security-group-rules"),
    ] {
        assert_eq!(
            c.used(resource).await,
            c.count(collection).await,
            "{resource}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_create_counts_as_a_whole() {
    let server = support::Server::start();
    let c = Client::new(&server);
    c.limit(json!({"network": 4})).await;
    c.made(ALICE, "network", json!({"name": "first"})).await;
    let four = json!({"networks": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d"}]});
    let answer = c.call(ALICE, "POST", "/v2.0/networks", Some(four)).await;
    over_quota(&answer, "network");
    assert_eq!((c.used("network").await, c.count("networks").await), (1, 1));
    let three = json!({"networks": [{"name": "a"}, {"name": "b"}, {"name": "c"}]});
    let (status, answer) = c.call(ALICE, "POST", "/v2.0/networks", Some(three)).await;
    assert_eq!(status, 201, "{answer}");
    assert_eq!((c.used("network").await, c.count("networks").await), (4, 4));

    // A bulk request of several projects counts each project's items against its own quota.
    let mixed = json!({"networks": [{"name": "x", "project_id": "project-bob"},
        {"name": "y", "project_id": "project-alice"}]});
    over_quota(
        &c.call(ADMIN, "POST", "/v2.0/networks", Some(mixed)).await,
        "network",
    );
    assert_eq!(c.count("networks").await, 4);

    // A new group counts with its two egress rules, and is refused when they do not fit.
    let rules = c.used("security_group_rule").await;
    c.limit(json!({"security_group_rule": rules + 3})).await;
    let two_groups = json!({"security_groups": [{"name": "g1"}, {"name": "g2"}]});
    let answer = c
        .call(ALICE, "POST", "/v2.0/security-groups", Some(two_groups))
        .await;
    over_quota(&answer, "security_group_rule");
    c.made(ALICE, "security_group", json!({"name": "g1"})).await;
    assert_eq!(c.used("security_group_rule").await, rules + 2);
    over_quota(
        &c.create(ALICE, "security_group", json!({"name": "g2"}))
            .await,
        "security_group_rule",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_the_server_makes_count_but_are_not_refused() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let external = c
        .made(ADMIN, "network", json!({"router:external": true}))
        .await;
    let body = json!({"network_id": external, "ip_version": 4, "cidr": "192.0.2.0/24"});
    c.made(ADMIN, "subnet", body).await;
    let net = c.made(ALICE, "network", json!({})).await;
    let body = json!({"network_id": net, "ip_version": 4, "cidr": "10.0.0.0/24"});
    let subnet = c.made(ALICE, "subnet", body).await;
    c.limit(json!({"port": 1, "router_route": 1})).await;
    let port = c.made(ALICE, "port", json!({"network_id": net})).await;
    over_quota(
        &c.create(ALICE, "port", json!({"network_id": net})).await,
        "port",
    );

    // The gateway port belongs to no project.
    let gateway = json!({"external_gateway_info": {"network_id": external}});
    let router = c.made(ALICE, "router", gateway).await;
    assert_eq!(c.used("port").await, 1);
    // The interface port is Alice's: counted, as in Neutron, but not refused at her limit.
    let path = format!("/v2.0/routers/{router}/add_router_interface");
    let (status, answer) = c
        .call(ALICE, "PUT", &path, Some(json!({"subnet_id": subnet})))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!((c.used("port").await, c.count("ports").await), (2, 2));
    // A floating IP's port belongs to no project either.
    let fip = json!({"floating_network_id": external, "port_id": port});
    let fip = c.made(ALICE, "floatingip", fip).await;
    assert_eq!(c.used("port").await, 2);
    let path = format!("/v2.0/floatingips/{fip}");
    assert_eq!(c.call(ALICE, "DELETE", &path, None).await.0, 204);
    // Removing the interface frees its count.
    let path = format!("/v2.0/routers/{router}/remove_router_interface");
    let (status, answer) = c
        .call(ALICE, "PUT", &path, Some(json!({"subnet_id": subnet})))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(c.used("port").await, 1);

    // A router's routes are limited by its project's `router_route` quota.
    let path = format!("/v2.0/routers/{router}/add_router_interface");
    c.call(ALICE, "PUT", &path, Some(json!({"subnet_id": subnet})))
        .await;
    let routes = |n: u8| {
        let list: Vec<Value> = (0..n)
            .map(|i| json!({"destination": format!("10.9.{i}.0/24"), "nexthop": "10.0.0.9"}))
            .collect();
        json!({"router": {"routes": list}})
    };
    let path = format!("/v2.0/routers/{router}");
    over_quota(
        &c.call(ALICE, "PUT", &path, Some(routes(2))).await,
        "router_route",
    );
    assert_eq!(c.call(ALICE, "PUT", &path, Some(routes(1))).await.0, 200);
    c.limit(json!({"router_route": -1})).await;
    assert_eq!(c.call(ALICE, "PUT", &path, Some(routes(40))).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_below_the_usage_needs_force() {
    let server = support::Server::start();
    let c = Client::new(&server);
    for _ in 0..3 {
        c.made(ALICE, "network", json!({})).await;
    }
    let lower = json!({"quota": {"network": 2}});
    let message = refused(
        &c.call(ADMIN, "PUT", QUOTA, Some(lower)).await,
        400,
        "HTTPBadRequest",
    );
    assert_eq!(
        message,
        "Quota limit 2 for network must be greater than or equal to already used 3"
    );
    c.limit(json!({"network": 3, "port": 0})).await;
    c.limit(json!({"network": 2, "force": true})).await;
    // Over the limit: no create until deletes take the usage below it.
    over_quota(&c.create(ALICE, "network", json!({})).await, "network");
    let (_, listed) = c.call(ALICE, "GET", "/v2.0/networks?fields=id", None).await;
    let ids: Vec<&str> = listed["networks"]
        .as_array()
        .expect("networks")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    for id in &ids[..2] {
        let path = format!("/v2.0/networks/{id}");
        assert_eq!(c.call(ALICE, "DELETE", &path, None).await.0, 204);
    }
    c.made(ALICE, "network", json!({})).await;
    over_quota(&c.create(ALICE, "network", json!({})).await, "network");
    assert_eq!(c.used("network").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_and_deletes_never_pass_a_limit() {
    let server = support::Server::start();
    let c = Client::new(&server);
    const LIMIT: i64 = 37;
    c.limit(json!({"network": LIMIT})).await;
    // Single and bulk creates at once: exactly the limit's worth succeed, the rest are refused.
    let singles = (0..90).map(|i| {
        let body = json!({"network": {"name": format!("s{i}")}});
        c.call(ALICE, "POST", "/v2.0/networks", Some(body))
    });
    let bulks = (0..10).map(|i| {
        let items: Vec<Value> = (0..3)
            .map(|k| json!({"name": format!("b{i}-{k}")}))
            .collect();
        c.call(
            ALICE,
            "POST",
            "/v2.0/networks",
            Some(json!({ "networks": items })),
        )
    });
    let (singles, bulks) = futures::join!(
        futures::future::join_all(singles),
        futures::future::join_all(bulks)
    );
    let mut made = Vec::new();
    for answer in singles.iter().chain(&bulks) {
        match answer.0 {
            201 => match answer.1.get("networks") {
                Some(list) => made.extend(list.as_array().expect("networks").clone()),
                None => made.push(answer.1["network"].clone()),
            },
            _ => over_quota(answer, "network"),
        }
    }
    assert_eq!(made.len() as i64, LIMIT);
    assert_eq!(
        (c.count("networks").await, c.used("network").await),
        (LIMIT, LIMIT)
    );

    // Deletes and creates at once: the counters follow, and the limit holds.
    let c = &c;
    let deletes = made[..20].iter().map(|net| {
        let path = format!("/v2.0/networks/{}", net["id"].as_str().expect("an id"));
        async move { c.call(ALICE, "DELETE", &path, None).await }
    });
    let creates = (0..40).map(|i| {
        let body = json!({"network": {"name": format!("again{i}")}});
        c.call(ALICE, "POST", "/v2.0/networks", Some(body))
    });
    let (deleted, created) = futures::join!(
        futures::future::join_all(deletes),
        futures::future::join_all(creates)
    );
    assert!(
        deleted.iter().all(|(status, _)| *status == 204),
        "{deleted:?}"
    );
    for answer in created.iter().filter(|(status, _)| *status != 201) {
        over_quota(answer, "network");
    }
    let held = c.count("networks").await;
    assert!(held <= LIMIT, "{held} networks past the limit of {LIMIT}");
    assert_eq!(c.used("network").await, held);
    // Room left is room usable.
    for _ in held..LIMIT {
        c.made(ALICE, "network", json!({})).await;
    }
    over_quota(&c.create(ALICE, "network", json!({})).await, "network");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_recounts_usage_it_finds_missing_or_wrong() {
    let server = support::Server::start();
    let c = Client::new(&server);
    c.limit(json!({"network": 5})).await;
    for _ in 0..3 {
        c.made(ALICE, "network", json!({})).await;
    }
    for _ in 0..2 {
        c.made(BOB, "network", json!({})).await;
    }
    // The store as a server that kept no counters left it (Bob's gone), with a wrong one (Alice's).
    let store = &server.store;
    let (counters, _) = store.range("/quota/used/").await.expect("counters");
    let mut txn = store::Txn::new();
    for kv in &counters {
        txn = txn.delete(kv.key.clone());
    }
    txn = txn.put("/quota/used/project-alice/network/3", b"40".to_vec());
    store.txn(txn).await.expect("drop the counters");

    // Another server starting on the store recounts before it serves.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let second = Client(caller::Client {
        http: reqwest::Client::new(),
        base: format!("http://{}", listener.local_addr().expect("an address")),
    });
    tokio::spawn(api::serve(
        listener,
        store.clone(),
        api::ApiConfig::default(),
    ));
    assert_eq!(second.used("network").await, 3);
    let (_, bob) = second
        .call(BOB, "GET", "/v2.0/quotas/project-bob/details", None)
        .await;
    assert_eq!(bob["quota"]["network"]["used"], 2, "{bob}");
    for _ in 0..2 {
        second.made(ALICE, "network", json!({})).await;
    }
    over_quota(&second.create(ALICE, "network", json!({})).await, "network");
}
