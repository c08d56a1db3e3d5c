//! The load-balancer API (Octavia v2 under `/v2.0/lbaas/`): each object's life, Octavia's refusals,
//! project isolation, the status tree, cascade delete, the VIP port, members' operating status from
//! agents' health reports, and the store keys agents will sync.

use crate::caller;
use crate::support;

use caller::{ADMIN, ALICE, BOB, Who};

use serde_json::{Value, json};

/// A client of one server, asking as `who`.
struct Client {
    caller: caller::Client,
    who: Who,
}

impl Client {
    fn new(server: &support::Server, who: Who) -> Self {
        Client {
            caller: caller::Client::new(server),
            who,
        }
    }

    /// Sends a request; the status and the JSON body (null when empty).
    async fn call(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.caller.call(self.who, method, path, body).await
    }

    /// Sends a request that must answer `want`; its body.
    async fn expect(&self, want: u16, method: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.call(method, path, body).await;
        assert_eq!(status, want, "{method} {path}: {answer}");
        answer
    }

    /// Reads `path`, which must answer 200.
    async fn get(&self, path: &str) -> Value {
        self.expect(200, "GET", path, None).await
    }

    /// Creates an object under `/v2.0/<path>` whose body key is `key`; its answer.
    async fn create(&self, path: &str, key: &str, body: Value) -> Value {
        let answer = self
            .expect(
                201,
                "POST",
                &format!("/v2.0/{path}"),
                Some(json!({ key: body })),
            )
            .await;
        answer[key].clone()
    }
}

fn id(obj: &Value) -> String {
    obj["id"].as_str().expect("an id").to_string()
}

/// A network with a subnet on `cidr`; returns the subnet.
async fn subnet(c: &Client, cidr: &str) -> Value {
    let net = c.create("networks", "network", json!({"name": cidr})).await;
    let body = json!({"network_id": id(&net), "ip_version": 4, "cidr": cidr});
    c.create("subnets", "subnet", body).await
}

/// The fault string of an Octavia error answer, checking its shape.
fn fault(answer: &Value) -> &str {
    assert_eq!(answer["faultcode"], "Client", "{answer}");
    assert!(answer["debuginfo"].is_null(), "{answer}");
    answer["faultstring"].as_str().expect("a faultstring")
}

/// A load balancer, listener, pool (with session persistence), member and HTTP monitor.
struct Tree {
    lb: Value,
    listener: Value,
    pool: Value,
    member: Value,
    monitor: Value,
}

async fn tree(c: &Client, subnet: &Value) -> Tree {
    let lb = c
        .create(
            "lbaas/loadbalancers",
            "loadbalancer",
            json!({"name": "lb1", "vip_subnet_id": id(subnet)}),
        )
        .await;
    let listener = c
        .create(
            "lbaas/listeners",
            "listener",
            json!({"name": "l1", "protocol": "HTTP", "protocol_port": 80,
                "loadbalancer_id": id(&lb), "connection_limit": 100}),
        )
        .await;
    let pool = c
        .create(
            "lbaas/pools",
            "pool",
            json!({"name": "p1", "protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN",
                "listener_id": id(&listener), "session_persistence": {"type": "SOURCE_IP"}}),
        )
        .await;
    let members = format!("lbaas/pools/{}/members", id(&pool));
    let member = c
        .create(
            &members,
            "member",
            json!({"address": "10.1.0.10", "protocol_port": 8080, "subnet_id": id(subnet),
                "weight": 5}),
        )
        .await;
    let monitor = c
        .create(
            "lbaas/healthmonitors",
            "healthmonitor",
            json!({"pool_id": id(&pool), "type": "HTTP", "delay": 5, "timeout": 3,
                "max_retries": 3}),
        )
        .await;
    Tree {
        lb,
        listener,
        pool,
        member,
        monitor,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_object_lives_and_dies_with_cascade() {
    let server = support::Server::start();
    let c = Client::new(&server, ADMIN);
    let subnet = subnet(&c, "10.1.0.0/24").await;
    let Tree {
        lb,
        listener,
        pool,
        member,
        monitor,
    } = tree(&c, &subnet).await;

    // The load balancer and its VIP port, made as Octavia makes it.
    assert_eq!(lb["provisioning_status"], "ACTIVE");
    assert_eq!(lb["operating_status"], "ONLINE");
    assert_eq!(lb["provider"], "amphora");
    assert!(lb["updated_at"].is_null());
    let port = c
        .get(&format!(
            "/v2.0/ports/{}",
            lb["vip_port_id"].as_str().unwrap()
        ))
        .await;
    let port = &port["port"];
    assert_eq!(port["device_owner"], "Octavia");
    assert_eq!(port["name"], format!("octavia-lb-{}", id(&lb)));
    assert_eq!(port["device_id"], format!("lb-{}", id(&lb)));
    assert_eq!(port["fixed_ips"][0]["ip_address"], lb["vip_address"]);
    assert_eq!(lb["vip_network_id"], subnet["network_id"]);

    // Children as Octavia shows them.
    assert_eq!(listener["loadbalancers"], json!([{"id": id(&lb)}]));
    assert_eq!(listener["connection_limit"], 100);
    assert!(listener.get("loadbalancer_id").is_none());
    assert_eq!(
        pool["session_persistence"],
        json!({"type": "SOURCE_IP", "cookie_name": null, "persistence_timeout": null,
            "persistence_granularity": null})
    );
    assert_eq!(pool["listeners"], json!([{"id": id(&listener)}]));
    assert_eq!(member["operating_status"], "NO_MONITOR");
    assert_eq!(member["weight"], 5);
    assert_eq!(monitor["http_method"], "GET");
    assert_eq!(monitor["expected_codes"], "200");
    assert_eq!(monitor["max_retries_down"], 3);
    let shown = c
        .get(&format!("/v2.0/lbaas/loadbalancers/{}", id(&lb)))
        .await;
    assert_eq!(
        shown["loadbalancer"]["listeners"],
        json!([{"id": id(&listener)}])
    );
    assert_eq!(shown["loadbalancer"]["pools"], json!([{"id": id(&pool)}]));
    let listener_now = c
        .get(&format!("/v2/lbaas/listeners/{}", id(&listener)))
        .await;
    assert_eq!(
        listener_now["listener"]["default_pool_id"],
        json!(id(&pool))
    );
    let pool_now = c.get(&format!("/v2.0/lbaas/pools/{}", id(&pool))).await;
    assert_eq!(pool_now["pool"]["healthmonitor_id"], json!(id(&monitor)));
    assert_eq!(pool_now["pool"]["members"], json!([{"id": id(&member)}]));

    // Lists: filters, fields, parents.
    let listed = c
        .get("/v2.0/lbaas/loadbalancers?name=lb1&fields=id&fields=name")
        .await;
    assert_eq!(
        listed,
        json!({"loadbalancers": [{"id": id(&lb), "name": "lb1"}],
        "loadbalancers_links": []})
    );
    let listed = c
        .get(&format!(
            "/v2.0/lbaas/listeners?loadbalancer_id={}",
            id(&lb)
        ))
        .await;
    assert_eq!(listed["listeners"].as_array().unwrap().len(), 1);
    let listed = c
        .get(&format!("/v2.0/lbaas/pools/{}/members", id(&pool)))
        .await;
    assert_eq!(
        listed["members"][0]["operating_status"], "OFFLINE",
        "monitored, no report yet"
    );

    // Updates.
    let members = format!("/v2.0/lbaas/pools/{}/members", id(&pool));
    let changed = c
        .expect(
            200,
            "PUT",
            &format!("{members}/{}", id(&member)),
            Some(json!({"member": {"weight": 0, "admin_state_up": false}})),
        )
        .await;
    assert_eq!(changed["member"]["weight"], 0);
    assert_eq!(changed["member"]["operating_status"], "OFFLINE");
    let changed = c
        .expect(
            200,
            "PUT",
            &format!("/v2.0/lbaas/loadbalancers/{}", id(&lb)),
            Some(json!({"loadbalancer": {"name": "lb2", "admin_state_up": false}})),
        )
        .await;
    assert_eq!(changed["loadbalancer"]["name"], "lb2");
    assert_eq!(changed["loadbalancer"]["operating_status"], "OFFLINE");
    assert!(changed["loadbalancer"]["updated_at"].is_string());
    let changed = c
        .expect(
            200,
            "PUT",
            &format!("/v2.0/lbaas/healthmonitors/{}", id(&monitor)),
            Some(json!({"healthmonitor": {"delay": 10, "url_path": "/health"}})),
        )
        .await;
    assert_eq!(changed["healthmonitor"]["url_path"], "/health");
    c.expect(
        200,
        "PUT",
        &format!("/v2.0/lbaas/pools/{}", id(&pool)),
        Some(json!({"pool": {"lb_algorithm": "LEAST_CONNECTIONS"}})),
    )
    .await;
    c.expect(
        200,
        "PUT",
        &format!("/v2.0/lbaas/listeners/{}", id(&listener)),
        Some(json!({"listener": {"default_pool_id": null}})),
    )
    .await;
    let pool_now = c.get(&format!("/v2.0/lbaas/pools/{}", id(&pool))).await;
    assert_eq!(pool_now["pool"]["listeners"], json!([]));

    // Without cascade: Octavia's 400; with it everything goes, the VIP port too.
    let lb_path = format!("/v2.0/lbaas/loadbalancers/{}", id(&lb));
    let refused = c.expect(400, "DELETE", &lb_path, None).await;
    assert_eq!(
        fault(&refused),
        format!(
            "Validation failure: Cannot delete Load Balancer {} - it has children",
            id(&lb)
        )
    );
    c.expect(204, "DELETE", &format!("{lb_path}?cascade=true"), None)
        .await;
    for path in [
        lb_path.clone(),
        format!("/v2.0/lbaas/listeners/{}", id(&listener)),
        format!("/v2.0/lbaas/pools/{}", id(&pool)),
        format!("/v2.0/lbaas/healthmonitors/{}", id(&monitor)),
    ] {
        c.expect(404, "GET", &path, None).await;
    }
    let (keys, _) = server.store.range("/r/members/").await.unwrap();
    assert!(keys.is_empty(), "members left: {keys:?}");
    c.expect(
        404,
        "GET",
        &format!("/v2.0/ports/{}", lb["vip_port_id"].as_str().unwrap()),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn children_are_deleted_one_by_one() {
    let server = support::Server::start();
    let c = Client::new(&server, ADMIN);
    let subnet = subnet(&c, "10.2.0.0/24").await;
    let t = tree(&c, &subnet).await;
    let pool_path = format!("/v2.0/lbaas/pools/{}", id(&t.pool));
    c.expect(
        204,
        "DELETE",
        &format!("/v2.0/lbaas/healthmonitors/{}", id(&t.monitor)),
        None,
    )
    .await;
    let member = c
        .get(&format!("{pool_path}/members/{}", id(&t.member)))
        .await;
    assert_eq!(member["member"]["operating_status"], "NO_MONITOR");
    c.expect(
        204,
        "DELETE",
        &format!("{pool_path}/members/{}", id(&t.member)),
        None,
    )
    .await;
    c.expect(204, "DELETE", &pool_path, None).await;
    let listener = c
        .get(&format!("/v2.0/lbaas/listeners/{}", id(&t.listener)))
        .await;
    assert!(listener["listener"]["default_pool_id"].is_null());
    c.expect(
        204,
        "DELETE",
        &format!("/v2.0/lbaas/listeners/{}", id(&t.listener)),
        None,
    )
    .await;
    let lb_path = format!("/v2.0/lbaas/loadbalancers/{}", id(&t.lb));
    let lb = c.get(&lb_path).await;
    assert_eq!(lb["loadbalancer"]["listeners"], json!([]));
    assert_eq!(lb["loadbalancer"]["pools"], json!([]));
    c.expect(204, "DELETE", &lb_path, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_tree_and_health_reports() {
    let server = support::Server::start();
    let c = Client::new(&server, ADMIN);
    let subnet = subnet(&c, "10.3.0.0/24").await;
    let t = tree(&c, &subnet).await;
    // What an agent's health check will write: the member's `_health`.
    let key = format!("/r/members/{}", id(&t.member));
    let kv = server.store.get(&key).await.unwrap().unwrap();
    let mut member: Value = serde_json::from_slice(&kv.value).unwrap();
    member["_health"] = json!("ERROR");
    let mut txn = store::Txn::new();
    txn.ops
        .push(store::Op::Put(key, serde_json::to_vec(&member).unwrap()));
    server.store.txn(txn).await.unwrap();

    let status = c
        .get(&format!("/v2.0/lbaas/loadbalancers/{}/status", id(&t.lb)))
        .await;
    // The pool's only member failing: the pool is ERROR, its listener and load balancer
    // DEGRADED (Octavia's roll-up).
    let expected = json!({"statuses": {"loadbalancer": {
        "id": id(&t.lb), "name": "lb1", "provisioning_status": "ACTIVE", "operating_status": "DEGRADED",
        "listeners": [{
            "id": id(&t.listener), "name": "l1", "provisioning_status": "ACTIVE",
            "operating_status": "DEGRADED",
            "pools": [{
                "id": id(&t.pool), "name": "p1", "provisioning_status": "ACTIVE",
                "operating_status": "ERROR",
                "health_monitor": {"id": id(&t.monitor), "name": "", "type": "HTTP",
                    "provisioning_status": "ACTIVE", "operating_status": "ONLINE"},
                "members": [{"id": id(&t.member), "name": "", "provisioning_status": "ACTIVE",
                    "operating_status": "ERROR", "address": "10.1.0.10", "protocol_port": 8080}],
            }],
        }],
    }}});
    let mut expected = expected;
    expected["statuses"]["loadbalancer"]["listeners"][0]["pools"][0]["members"][0]["address"] =
        json!("10.1.0.10");
    assert_eq!(status, expected);
    let missing = c
        .expect(404, "GET", "/v2.0/lbaas/loadbalancers/nope/status", None)
        .await;
    assert_eq!(fault(&missing), "Load Balancer nope not found.");
}

/// Agents report a member's health through `PUT /wyvern/v1/members/<id>/health` (as admins, like
/// every agent endpoint); the member shows it as its `operating_status` while its pool has a
/// monitor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_report_members_health() {
    let server = support::Server::start();
    let c = Client::new(&server, ADMIN);
    let subnet = subnet(&c, "10.9.0.0/24").await;
    let t = tree(&c, &subnet).await;
    let member = id(&t.member);
    let shown = format!("/v2.0/lbaas/pools/{}/members/{member}", id(&t.pool));
    let report = format!("/wyvern/v1/members/{member}/health");
    let status = |v: Value| v["member"]["operating_status"].clone();
    assert_eq!(
        status(c.get(&shown).await),
        "OFFLINE",
        "before the first report"
    );

    c.expect(200, "PUT", &report, Some(json!({"health": "ERROR"})))
        .await;
    assert_eq!(status(c.get(&shown).await), "ERROR");
    // The same verdict again writes nothing.
    let key = format!("/r/members/{member}");
    let before = server.store.get(&key).await.unwrap().unwrap().mod_revision;
    c.expect(200, "PUT", &report, Some(json!({"health": "ERROR"})))
        .await;
    let after = server.store.get(&key).await.unwrap().unwrap().mod_revision;
    assert_eq!(before, after, "an unchanged verdict is not written");

    c.expect(200, "PUT", &report, Some(json!({"health": "ONLINE"})))
        .await;
    assert_eq!(status(c.get(&shown).await), "ONLINE");

    // Bad bodies, unknown members, callers that are not agents.
    for body in [json!({"health": "OFFLINE"}), json!({}), json!("ERROR")] {
        c.expect(400, "PUT", &report, Some(body)).await;
    }
    c.expect(
        404,
        "PUT",
        "/wyvern/v1/members/nope/health",
        Some(json!({"health": "ERROR"})),
    )
    .await;
    let alice = Client::new(&server, ALICE);
    alice
        .expect(403, "PUT", &report, Some(json!({"health": "ERROR"})))
        .await;
    assert_eq!(status(c.get(&shown).await), "ONLINE");

    // Without a monitor the member shows NO_MONITOR, whatever was reported.
    c.expect(
        204,
        "DELETE",
        &format!("/v2.0/lbaas/healthmonitors/{}", id(&t.monitor)),
        None,
    )
    .await;
    assert_eq!(status(c.get(&shown).await), "NO_MONITOR");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_octavias() {
    let server = support::Server::start();
    let c = Client::new(&server, ADMIN);
    let subnet = subnet(&c, "10.4.0.0/24").await;
    let t = tree(&c, &subnet).await;
    let (lb, pool, listener) = (id(&t.lb), id(&t.pool), id(&t.listener));
    let cases: Vec<(&str, String, Value, u16, String)> = vec![
        ("POST", "loadbalancers".into(), json!({"loadbalancer": {"name": "x"}}), 400,
            "Validation failure: VIP must contain one of: vip_port_id, vip_network_id, vip_subnet_id.".into()),
        ("POST", "loadbalancers".into(), json!({"loadbalancer": {"vip_subnet_id": "abc"}}), 400,
            "Invalid input for field/attribute vip_subnet_id. Value: 'abc'. Value should be UUID format".into()),
        ("POST", "loadbalancers".into(),
            json!({"loadbalancer": {"vip_subnet_id": id(&subnet), "provider": "nope"}}), 400,
            "Provider 'nope' is not enabled.".into()),
        ("POST", "loadbalancers".into(),
            json!({"loadbalancer": {"vip_subnet_id": id(&subnet), "bogus": 1}}), 400,
            "Unknown attribute for argument load_balancer.loadbalancer: bogus".into()),
        ("POST", "loadbalancers".into(), json!({"lb": {}}), 400,
            "Unknown attribute for argument load_balancer: lb".into()),
        ("PUT", format!("loadbalancers/{lb}"), json!({"loadbalancer": {"vip_address": "1.1.1.1"}}), 400,
            "Unknown attribute for argument load_balancer.loadbalancer: vip_address".into()),
        ("POST", "loadbalancers".into(),
            json!({"loadbalancer": {"vip_subnet_id": "7311a5ea-da99-45f5-88f6-5cc0f3a1fa28"}}), 400,
            "Subnet 7311a5ea-da99-45f5-88f6-5cc0f3a1fa28 not found.".into()),
        ("POST", "listeners".into(), json!({"listener": {"protocol": "HTTP", "loadbalancer_id": lb}}), 400,
            "Invalid input for field/attribute protocol_port. Value: 'None'. Mandatory field missing.".into()),
        ("POST", "listeners".into(),
            json!({"listener": {"protocol": "FOO", "protocol_port": 80, "loadbalancer_id": lb}}), 400,
            "Invalid input for field/attribute protocol. Value: 'FOO'. Value should be one of: TCP, HTTP, HTTPS, SCTP, TERMINATED_HTTPS, PROMETHEUS, UDP".into()),
        ("POST", "listeners".into(),
            json!({"listener": {"protocol": "TCP", "protocol_port": 80, "loadbalancer_id": lb}}), 409,
            "Another Listener on this Load Balancer is already using protocol HTTP and protocol_port 80".into()),
        ("POST", "listeners".into(),
            json!({"listener": {"protocol": "TCP", "protocol_port": 70000, "loadbalancer_id": lb}}), 400,
            "Invalid input for field/attribute protocol_port. Value: '70000'. Value should be lower or equal to 65535".into()),
        ("POST", "listeners".into(),
            json!({"listener": {"protocol": "TCP", "protocol_port": 81, "loadbalancer_id": pool}}), 404,
            format!("Load Balancer {pool} not found.")),
        ("POST", "pools".into(), json!({"pool": {"protocol": "TCP", "lb_algorithm": "ROUND_ROBIN"}}), 400,
            "Validation failure: Must provide at least one of: loadbalancer_id, listener_id".into()),
        ("POST", "pools".into(),
            json!({"pool": {"protocol": "UDP", "lb_algorithm": "ROUND_ROBIN", "listener_id": listener}}), 400,
            "Validation failure: The pool protocol 'UDP' is invalid while the listener protocol is 'HTTP'.".into()),
        ("POST", "pools".into(),
            json!({"pool": {"protocol": "HTTP", "lb_algorithm": "ROUND_ROBIN", "listener_id": listener}}), 409,
            "This listener already has a default pool".into()),
        ("POST", format!("pools/{pool}/members"),
            json!({"member": {"address": "10.1.0.10", "protocol_port": 8080}}), 409,
            "Another member on this pool is already using ip 10.1.0.10 on protocol_port 8080".into()),
        ("POST", format!("pools/{pool}/members"),
            json!({"member": {"address": "10.1.0.11", "protocol_port": 8080, "weight": 300}}), 400,
            "Invalid input for field/attribute weight. Value: '300'. Value should be lower or equal to 256".into()),
        ("POST", "healthmonitors".into(),
            json!({"healthmonitor": {"pool_id": pool, "type": "HTTP", "delay": 5, "timeout": 3, "max_retries": 11}}), 400,
            "Invalid input for field/attribute max_retries. Value: '11'. Value should be lower or equal to 10".into()),
        ("POST", "healthmonitors".into(),
            json!({"healthmonitor": {"pool_id": pool, "type": "PING", "delay": 5, "timeout": 3, "max_retries": 3}}), 409,
            "This pool already has a health monitor".into()),
    ];
    for (method, path, body, status, message) in cases {
        let answer = c
            .expect(
                status,
                method,
                &format!("/v2.0/lbaas/{path}"),
                Some(body.clone()),
            )
            .await;
        assert_eq!(fault(&answer), message, "{method} {path} {body}");
    }
    let (status, answer) = c
        .call("GET", "/v2.0/lbaas/loadbalancers?bogus=1", None)
        .await;
    assert_eq!(
        (status, fault(&answer)),
        (400, "One or more arguments are either duplicate or invalid")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn projects_see_their_own_load_balancers() {
    let server = support::Server::start();
    let admin = Client::new(&server, ADMIN);
    let alice = Client::new(&server, ALICE);
    let bob = Client::new(&server, BOB);
    let net = admin
        .create(
            "networks",
            "network",
            json!({"name": "shared", "shared": true}),
        )
        .await;
    let subnet = admin
        .create(
            "subnets",
            "subnet",
            json!({"network_id": id(&net), "ip_version": 4, "cidr": "10.5.0.0/24"}),
        )
        .await;
    let lb = alice
        .create(
            "lbaas/loadbalancers",
            "loadbalancer",
            json!({"vip_subnet_id": id(&subnet)}),
        )
        .await;
    assert_eq!(lb["project_id"], "project-alice");
    let path = format!("/v2.0/lbaas/loadbalancers/{}", id(&lb));
    bob.expect(404, "GET", &path, None).await;
    bob.expect(404, "DELETE", &path, None).await;
    let listed = bob.get("/v2.0/lbaas/loadbalancers").await;
    assert_eq!(listed["loadbalancers"], json!([]));
    bob.expect(
        404,
        "POST",
        "/v2.0/lbaas/listeners",
        Some(json!({"listener":
        {"protocol": "TCP", "protocol_port": 22, "loadbalancer_id": id(&lb)}})),
    )
    .await;
    let listed = admin.get("/v2.0/lbaas/loadbalancers").await;
    assert_eq!(listed["loadbalancers"].as_array().unwrap().len(), 1);
    alice.get(&path).await;
    alice.expect(204, "DELETE", &path, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_sorting_and_the_sync_keys() {
    let server = support::Server::start();
    let c = Client::new(&server, ADMIN);
    let subnet = subnet(&c, "10.6.0.0/24").await;
    let mut ids = Vec::new();
    for name in ["c", "a", "b"] {
        let lb = c
            .create(
                "lbaas/loadbalancers",
                "loadbalancer",
                json!({"name": name, "vip_network_id": subnet["network_id"]}),
            )
            .await;
        assert_eq!(lb["vip_subnet_id"], subnet["id"]);
        ids.push(id(&lb));
    }
    let names = |v: &Value| -> Vec<String> {
        v["loadbalancers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["name"].as_str().unwrap().to_string())
            .collect()
    };
    let sorted = c.get("/v2.0/lbaas/loadbalancers?sort=name:desc").await;
    assert_eq!(names(&sorted), ["c", "b", "a"]);
    let first = c
        .get("/v2.0/lbaas/loadbalancers?sort_key=name&sort_dir=asc&limit=2")
        .await;
    assert_eq!(names(&first), ["a", "b"]);
    let next = first["loadbalancers_links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["rel"] == "next")
        .expect("a next link")["href"]
        .as_str()
        .unwrap()
        .to_string();
    let next = next
        .strip_prefix(&server.base)
        .expect("a link to the server")
        .to_string();
    assert!(next.starts_with("/v2.0/lbaas/loadbalancers?"), "{next}");
    let second = c.get(&next).await;
    assert_eq!(names(&second), ["c"]);
    let refused = c
        .expect(
            400,
            "GET",
            "/v2.0/lbaas/loadbalancers?marker=nope&limit=1",
            None,
        )
        .await;
    assert_eq!(
        fault(&refused),
        "Supplied pagination marker 'nope' is not valid."
    );

    for lb in &ids {
        let key = format!("/r/loadbalancers/{lb}");
        assert_eq!(
            nb_keys::parse(&key),
            Some((nb_keys::Kind::LoadBalancer, lb.as_str()))
        );
        assert!(server.store.get(&key).await.unwrap().is_some());
    }
}
