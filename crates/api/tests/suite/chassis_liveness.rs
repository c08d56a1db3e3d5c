//! Chassis liveness and port bindings, the server's side of what agents write: a registered chassis
//! is up (its `chassis-up` key, leased) while heartbeats renew its lease, past the lease's TTL; when
//! they stop the lease runs out and the key goes (the other chassis then follow its data plane, as
//! their BFD sees it: `GET /wyvern/v1/chassis` shows both, from what heartbeats report); a
//! heartbeat on an ended lease answers 404 `ChassisLeaseNotFound` (the agent then registers again,
//! which `agent/tests/liveness.rs` checks end to end). A port is bound where its VIF last appeared:
//! a late "gone" report from the chassis a port moved away from changes neither the port nor its
//! floating IP, while the same report from the port's chassis marks both `DOWN`; many bindings
//! go in one request (`POST /wyvern/v1/chassis/<id>/bindings`) with the same meaning.

use crate::support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// A hang guard for what the store does by itself (a lease running out), far above the TTL: the
/// test waits for the condition, this only ends a test that would otherwise wait forever.
const HANG_GUARD: Duration = Duration::from_secs(180);

async fn call(
    server: &support::Server,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", server.base));
    if let Some(body) = body {
        req = req.json(&body);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Registers `chassis`; its lease and the lease's TTL.
async fn register_ttl(server: &support::Server, chassis: &str) -> (i64, Duration) {
    let body = json!({"tunnel_ip": "192.0.2.1", "encaps": ["geneve"]});
    let (status, v) = call(
        server,
        "PUT",
        &format!("/wyvern/v1/chassis/{chassis}"),
        Some(body),
    )
    .await;
    assert_eq!(status, 200, "registering {chassis}: {v}");
    let ttl = Duration::from_secs(v["ttl_seconds"].as_u64().expect("a TTL"));
    (v["lease"].as_i64().expect("a lease"), ttl)
}

async fn register(server: &support::Server, chassis: &str) -> i64 {
    register_ttl(server, chassis).await.0
}

async fn heartbeat(server: &support::Server, chassis: &str, lease: i64) -> (u16, Value) {
    let path = format!("/wyvern/v1/chassis/{chassis}/heartbeat");
    call(server, "POST", &path, Some(json!({"lease": lease}))).await
}

async fn is_up(server: &support::Server, chassis: &str) -> bool {
    let key = nb_keys::Kind::ChassisUp.key(chassis);
    server.store.get(&key).await.expect("store get").is_some()
}

fn assert_lease_not_found(status: u16, body: &Value, what: &str) {
    assert_eq!(status, 404, "{what}: {body}");
    assert_eq!(
        body["NeutronError"]["type"], "ChassisLeaseNotFound",
        "{what}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_a_chassis_up_and_its_lease_runs_out_without_them() {
    let server = support::Server::start();
    let (lease, ttl) = register_ttl(&server, "c1").await;
    assert!(is_up(&server, "c1").await, "a registered chassis is up");

    // Heartbeats keep it up for longer than the lease's TTL.
    let started = Instant::now();
    while started.elapsed() < ttl + ttl / 2 {
        let (status, v) = heartbeat(&server, "c1", lease).await;
        assert_eq!(status, 200, "a heartbeat on a live lease: {v}");
        assert!(is_up(&server, "c1").await, "up while heartbeats come");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Without them the lease runs out and the chassis is down; what it is stays registered.
    let stopped = Instant::now();
    while is_up(&server, "c1").await {
        assert!(
            stopped.elapsed() < HANG_GUARD,
            "c1 still up {:?} after its last heartbeat",
            stopped.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!(
        "c1 went down {:?} after its last heartbeat",
        stopped.elapsed()
    );
    let registered = nb_keys::Kind::Chassis.key("c1");
    assert!(server.store.get(&registered).await.unwrap().is_some());

    // A heartbeat now answers 404: the agent must register again, and then it is up again.
    let (status, v) = heartbeat(&server, "c1", lease).await;
    assert_lease_not_found(status, &v, "a heartbeat after the lease ran out");
    let again = register(&server, "c1").await;
    assert_ne!(again, lease, "a new registration takes a new lease");
    assert!(is_up(&server, "c1").await);
    let (status, v) = heartbeat(&server, "c1", again).await;
    assert_eq!(status, 200, "a heartbeat on the new lease: {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_on_an_ended_lease_answers_404() {
    let server = support::Server::start();
    let lease = register(&server, "c2").await;
    // The lease ended behind the chassis' back (as when the store lost it).
    server.store.lease_revoke(lease).await.expect("revoke");
    assert!(
        !is_up(&server, "c2").await,
        "the revoked lease took chassis-up with it"
    );
    let (status, v) = heartbeat(&server, "c2", lease).await;
    assert_lease_not_found(status, &v, "a heartbeat on a revoked lease");
    let (status, v) = heartbeat(&server, "c2", 987_654_321).await;
    assert_lease_not_found(status, &v, "a heartbeat on a lease never granted");
    // Another chassis' lease is not disturbed.
    let other = register(&server, "c3").await;
    let (status, v) = heartbeat(&server, "c3", other).await;
    assert_eq!(status, 200, "{v}");
}

async fn create(server: &support::Server, path: &str, singular: &str, body: Value) -> Value {
    let (status, v) = call(
        server,
        "POST",
        &format!("/v2.0/{path}"),
        Some(json!({ singular: body })),
    )
    .await;
    assert_eq!(status, 201, "creating a {singular}: {v}");
    v[singular].clone()
}

async fn show(server: &support::Server, path: &str, singular: &str, id: &str) -> Value {
    let (status, v) = call(server, "GET", &format!("/v2.0/{path}/{id}"), None).await;
    assert_eq!(status, 200, "{v}");
    v[singular].clone()
}

async fn report(server: &support::Server, port: &str, chassis: &str, up: bool) {
    let path = format!("/wyvern/v1/ports/{port}/binding");
    let (status, v) = call(
        server,
        "PUT",
        &path,
        Some(json!({"chassis": chassis, "up": up})),
    )
    .await;
    assert_eq!(status, 200, "binding report ({chassis}, up {up}): {v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_down_report_after_a_move_changes_nothing() {
    let server = support::Server::start();
    let public = create(
        &server,
        "networks",
        "network",
        json!({"name": "public", "router:external": true}),
    )
    .await;
    create(
        &server,
        "subnets",
        "subnet",
        json!({"network_id": public["id"], "ip_version": 4, "cidr": "203.0.113.0/24"}),
    )
    .await;
    let net = create(&server, "networks", "network", json!({"name": "n"})).await;
    let subnet = create(
        &server,
        "subnets",
        "subnet",
        json!({"network_id": net["id"], "ip_version": 4, "cidr": "10.40.0.0/24"}),
    )
    .await;
    let router = create(
        &server,
        "routers",
        "router",
        json!({"name": "r", "external_gateway_info": {"network_id": public["id"]}}),
    )
    .await;
    let path = format!(
        "/v2.0/routers/{}/add_router_interface",
        router["id"].as_str().unwrap()
    );
    let (status, v) = call(
        &server,
        "PUT",
        &path,
        Some(json!({"subnet_id": subnet["id"]})),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    let port = create(&server, "ports", "port", json!({"network_id": net["id"]})).await;
    let port_id = port["id"].as_str().unwrap();
    let fip = create(
        &server,
        "floatingips",
        "floatingip",
        json!({"floating_network_id": public["id"], "port_id": port_id}),
    )
    .await;
    let fip_id = fip["id"].as_str().unwrap();

    // Up on c1, then its VM moves: up on c2.
    report(&server, port_id, "c1", true).await;
    let on_c1 = show(&server, "ports", "port", port_id).await;
    assert_eq!(
        (&on_c1["status"], &on_c1["binding:host_id"]),
        (&json!("ACTIVE"), &json!("c1"))
    );
    report(&server, port_id, "c2", true).await;
    let moved = show(&server, "ports", "port", port_id).await;
    assert_eq!(
        (&moved["status"], &moved["binding:host_id"]),
        (&json!("ACTIVE"), &json!("c2"))
    );
    let fip_moved = show(&server, "floatingips", "floatingip", fip_id).await;
    assert_eq!(fip_moved["status"], "ACTIVE", "{fip_moved}");

    // c1's report that the VIF left comes late: nothing changes, not even the revision.
    report(&server, port_id, "c1", false).await;
    let after = show(&server, "ports", "port", port_id).await;
    assert_eq!(
        after, moved,
        "a late DOWN from the old chassis changed the port"
    );
    let fip_after = show(&server, "floatingips", "floatingip", fip_id).await;
    assert_eq!(
        fip_after, fip_moved,
        "a late DOWN from the old chassis changed the floating IP"
    );

    // The same report from the port's chassis does count.
    report(&server, port_id, "c2", false).await;
    let down = show(&server, "ports", "port", port_id).await;
    assert_eq!(
        (&down["status"], &down["binding:host_id"]),
        (&json!("DOWN"), &json!("c2"))
    );
    assert_eq!(
        down["revision_number"].as_u64().unwrap(),
        moved["revision_number"].as_u64().unwrap() + 1
    );
    let fip_down = show(&server, "floatingips", "floatingip", fip_id).await;
    assert_eq!(fip_down["status"], "DOWN", "{fip_down}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_report_the_data_plane_of_peers_and_the_list_shows_it() {
    let server = support::Server::start();
    let l1 = register(&server, "dp1").await;
    let l2 = register(&server, "dp2").await;
    let l3 = register(&server, "dp3").await;
    let beat = |chassis: &'static str, lease: i64, peers: Value| {
        let server = &server;
        async move {
            let path = format!("/wyvern/v1/chassis/{chassis}/heartbeat");
            call(
                server,
                "POST",
                &path,
                Some(json!({"lease": lease, "peers": peers})),
            )
            .await
        }
    };
    // dp1 and dp2 see dp3 down, dp3 sees both up; nobody reports on dp3's own behalf.
    assert_eq!(
        beat("dp1", l1, json!({"dp2": "up", "dp3": "down"})).await.0,
        200
    );
    assert_eq!(
        beat("dp2", l2, json!({"dp1": "up", "dp3": "down"})).await.0,
        200
    );
    assert_eq!(
        beat("dp3", l3, json!({"dp1": "up", "dp2": "up", "dp3": "up"}))
            .await
            .0,
        200
    );
    let (status, v) = beat("dp1", l1, json!({"dp2": "sideways"})).await;
    assert_eq!(status, 400, "only up or down: {v}");
    // dp2's agent stops: its lease goes; its data plane stays as its peers saw it.
    server.store.lease_revoke(l2).await.expect("revoke");
    let (status, v) = call(&server, "GET", "/wyvern/v1/chassis", None).await;
    assert_eq!(status, 200, "{v}");
    let by_id = |id: &str| {
        v["chassis"]
            .as_array()
            .expect("a list")
            .iter()
            .find(|c| c["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} listed: {v}"))
    };
    let (c1, c2, c3) = (by_id("dp1"), by_id("dp2"), by_id("dp3"));
    assert_eq!(
        (&c1["agent"], &c1["data_plane"]),
        (&json!("up"), &json!("up"))
    );
    // dp2's own report went with its lease; dp1's and dp3's remain.
    assert_eq!(c1["data_plane_peers"], json!({"up": 1, "down": 0}));
    assert_eq!(
        (&c2["agent"], &c2["data_plane"]),
        (&json!("down"), &json!("up"))
    );
    assert_eq!(c2["data_plane_peers"], json!({"up": 2, "down": 0}));
    assert_eq!(
        (&c3["agent"], &c3["data_plane"]),
        (&json!("up"), &json!("down"))
    );
    assert_eq!(c3["data_plane_peers"], json!({"up": 0, "down": 1}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bindings_in_one_request() {
    let server = support::Server::start();
    let net = create(&server, "networks", "network", json!({"name": "n"})).await;
    create(
        &server,
        "subnets",
        "subnet",
        json!({"network_id": net["id"], "ip_version": 4, "cidr": "10.41.0.0/22"}),
    )
    .await;
    // More ports than one commit takes, so the request spans several.
    let bulk: Vec<Value> = (0..250).map(|_| json!({"network_id": net["id"]})).collect();
    let (status, v) = call(
        &server,
        "POST",
        "/v2.0/ports",
        Some(json!({ "ports": bulk })),
    )
    .await;
    assert_eq!(status, 201, "{v}");
    let ids: Vec<String> = v["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap().to_string())
        .collect();
    // A trunk: binding its parent binds its subport too, which the same request reports.
    let (parent, sub) = (&ids[0], &ids[1]);
    let trunk = json!({"port_id": parent, "sub_ports": [
        {"port_id": sub, "segmentation_type": "vlan", "segmentation_id": 100}]});
    let (status, v) = call(
        &server,
        "POST",
        "/v2.0/trunks",
        Some(json!({ "trunk": trunk })),
    )
    .await;
    assert_eq!(status, 201, "{v}");

    let path = "/wyvern/v1/chassis/c1/bindings";
    let mut bindings: Vec<Value> = ids
        .iter()
        .map(|id| json!({"port_id": id, "up": true}))
        .collect();
    // Named twice: the last report counts (port 2 gone again: a chassis it is not bound to
    // says so, which changes nothing).
    bindings.push(json!({"port_id": ids[2], "up": false}));
    bindings.push(json!({"port_id": "0b0e8a8c-0000-4000-8000-000000000000", "up": true}));
    let (status, v) = call(&server, "POST", path, Some(json!({ "bindings": bindings }))).await;
    assert_eq!(status, 200, "{v}");
    let answers = v["bindings"].as_array().unwrap();
    assert_eq!(answers.len(), 251, "one answer per port named: {v}");
    let missing: Vec<&Value> = answers.iter().filter(|a| a["found"] == false).collect();
    assert_eq!(missing.len(), 1, "{missing:?}");
    for id in &ids {
        let p = show(&server, "ports", "port", id).await;
        let want = if *id == ids[2] {
            ("", "DOWN")
        } else {
            ("c1", "ACTIVE")
        };
        assert_eq!(
            (&p["binding:host_id"], &p["status"]),
            (&json!(want.0), &json!(want.1)),
            "{p}"
        );
    }

    // The same reports again change nothing.
    let before = show(&server, "ports", "port", &ids[7]).await;
    let (status, _) = call(&server, "POST", path, Some(json!({ "bindings": bindings }))).await;
    assert_eq!(status, 200);
    assert_eq!(show(&server, "ports", "port", &ids[7]).await, before);

    // Too many at once, or a malformed body: 400, nothing written.
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"port_id": ids[3], "up": false}))
        .collect();
    let (status, v) = call(&server, "POST", path, Some(json!({ "bindings": many }))).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["NeutronError"]["type"], "HTTPBadRequest", "{v}");
    let (status, _) = call(&server, "POST", path, Some(json!({ "bindings": "all" }))).await;
    assert_eq!(status, 400);
    let (status, _) = call(
        &server,
        "POST",
        "/wyvern/v1/chassis/bad%20id/bindings",
        Some(json!({ "bindings": [] })),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        show(&server, "ports", "port", &ids[3]).await["status"],
        "ACTIVE"
    );
}
