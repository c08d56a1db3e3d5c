//! The API side of the outside world: router numbers (`_nat_id`: allocated, unique, released,
//! given to routers stored without one, 409 when all are taken), the `snat-mode` extension, the
//! VNIs reserved for router transit tunnels, floating IP status following the port's binding, the
//! chassis' SNAT address endpoint, and the physical networks and gateway flag of a chassis
//! registration.

use crate::caller;
use crate::support;

use caller::{ADMIN, ALICE, BOB, Who};

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};

/// The highest router number.
const MAX_ROUTER_NUMBER: u64 = 0x3fff;

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

    async fn get(&self, who: Who, path: &str) -> (u16, Value) {
        self.call(who, "GET", path, None).await
    }
    async fn post(&self, who: Who, path: &str, body: Value) -> (u16, Value) {
        self.call(who, "POST", path, Some(body)).await
    }
    async fn put(&self, who: Who, path: &str, body: Value) -> (u16, Value) {
        self.call(who, "PUT", path, Some(body)).await
    }
    async fn delete(&self, who: Who, path: &str) -> (u16, Value) {
        self.call(who, "DELETE", path, None).await
    }

    /// Creates a `singular` (`router`, `floatingip`, ...) and returns it; the create must succeed.
    async fn create(&self, who: Who, singular: &str, attrs: Value) -> Value {
        let path = format!("/v2.0/{singular}s");
        let (status, body) = self.post(who, &path, json!({ singular: attrs })).await;
        assert_eq!(status, 201, "POST {path}: {body}");
        body[singular].clone()
    }

    /// A network with one IPv4 subnet (`attrs` added to the network); returns (network, subnet).
    async fn network(&self, who: Who, attrs: Value, cidr: &str) -> (String, String) {
        let mut net = json!({"name": cidr});
        net.as_object_mut()
            .expect("an object")
            .extend(attrs.as_object().cloned().unwrap_or_default());
        let net = id(&self.create(who, "network", net).await);
        let subnet = json!({"network_id": net, "ip_version": 4, "cidr": cidr});
        let subnet = id(&self.create(who, "subnet", subnet).await);
        (net, subnet)
    }

    /// An external network (`192.0.2.0/24`), made by the admin.
    async fn external(&self) -> String {
        let attrs = json!({"router:external": true});
        self.network(ADMIN, attrs, "192.0.2.0/24").await.0
    }

    /// The stored value of every object a sync snapshot of `query` holds, by key: what agents see,
    /// internal fields included.
    async fn snapshot(&self, query: &str) -> serde_json::Map<String, Value> {
        let (status, body) = self
            .get(ADMIN, &format!("/wyvern/v1/sync/snapshot?{query}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["items"]
            .as_array()
            .expect("snapshot items")
            .iter()
            .map(|i| (i["key"].as_str().unwrap().to_string(), i["value"].clone()))
            .collect()
    }

    /// A router as agents see it.
    async fn stored_router(&self, router: &str) -> Value {
        let mut items = self.snapshot(&format!("router={router}")).await;
        items
            .remove(&format!("/r/routers/{router}"))
            .expect("the router is in its topic")
    }

    /// A router's number, as agents see it.
    async fn router_number(&self, router: &str) -> u64 {
        let stored = self.stored_router(router).await;
        stored["_nat_id"].as_u64().expect("a router number")
    }

    /// Reports a port's VIF up (or gone) on `chassis`, as its agent does.
    async fn bind(&self, port: &str, chassis: &str, up: bool) {
        let path = format!("/wyvern/v1/ports/{port}/binding");
        let (status, body) = self
            .put(ADMIN, &path, json!({"chassis": chassis, "up": up}))
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Asks for `chassis`' SNAT address on `network`.
    async fn snat(&self, who: Who, chassis: &str, network: &str) -> (u16, Value) {
        let path = format!("/wyvern/v1/chassis/{chassis}/snat/{network}");
        self.call(who, "PUT", &path, None).await
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

/// Whether the store holds `key`.
async fn exists(server: &support::Server, key: &str) -> bool {
    server.store.get(key).await.expect("store read").is_some()
}

/// Claims router numbers in the store directly, as other routers would hold them (batches that fit
/// in one etcd transaction).
async fn claim_router_numbers(server: &support::Server, numbers: impl Iterator<Item = u64>) {
    let numbers: Vec<u64> = numbers.collect();
    for batch in numbers.chunks(100) {
        let mut txn = store::Txn::new();
        for n in batch {
            txn = txn.put(format!("/seg/router/{n}"), b"elsewhere".to_vec());
        }
        server.store.txn(txn).await.expect("claim router numbers");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_get_distinct_hidden_numbers_released_at_delete() {
    // More routers than Neutron's default quota lets one project have.
    let server = support::Server::start_with(api::ApiConfig {
        quotas: api::quota::Defaults::unlimited(),
        ..api::ApiConfig::default()
    });
    let c = Client::new(&server);
    // One at a time, at once, and in one bulk request: all distinct, all in range, all claimed.
    let mut routers = vec![id(&c.create(ALICE, "router", json!({"name": "r0"})).await)];
    let answers = futures::future::join_all((1..=12).map(|i| {
        c.post(
            ALICE,
            "/v2.0/routers",
            json!({"router": {"name": format!("r{i}")}}),
        )
    }))
    .await;
    for (status, body) in answers {
        assert_eq!(status, 201, "{body}");
        routers.push(id(&body["router"]));
    }
    let (status, bulk) = c
        .post(
            ALICE,
            "/v2.0/routers",
            json!({"routers": [{"name": "b1"}, {"name": "b2"}, {"name": "b3"}]}),
        )
        .await;
    assert_eq!(status, 201, "{bulk}");
    routers.extend(bulk["routers"].as_array().unwrap().iter().map(id));
    let mut numbers = HashSet::new();
    for router in &routers {
        let n = c.router_number(router).await;
        assert!((1..=MAX_ROUTER_NUMBER).contains(&n), "{n}");
        assert!(numbers.insert(n), "router number {n} twice");
        assert!(exists(&server, &format!("/seg/router/{n}")).await);
    }
    // Hidden from the API: not shown, not a filter, not settable.
    let (_, shown) = c.get(ALICE, &format!("/v2.0/routers/{}", routers[0])).await;
    assert!(shown["router"].get("_nat_id").is_none(), "{shown}");
    let (_, listed) = c.get(ADMIN, "/v2.0/routers?fields=_nat_id&fields=id").await;
    for router in listed["routers"].as_array().unwrap() {
        assert!(router.get("_nat_id").is_none(), "{router}");
    }
    refused(
        &c.get(ALICE, "/v2.0/routers?_nat_id=1").await,
        400,
        "HTTPBadRequest",
    );
    let body = json!({"router": {"name": "x", "_nat_id": 5}});
    refused(
        &c.post(ALICE, "/v2.0/routers", body.clone()).await,
        400,
        "HTTPBadRequest",
    );
    let path = format!("/v2.0/routers/{}", routers[0]);
    refused(&c.put(ALICE, &path, body).await, 400, "HTTPBadRequest");
    // An update keeps the number; a delete releases it.
    let n = c.router_number(&routers[0]).await;
    let (status, body) = c
        .put(ALICE, &path, json!({"router": {"name": "renamed"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(c.router_number(&routers[0]).await, n);
    let (status, body) = c.delete(ALICE, &path).await;
    assert_eq!(status, 204, "{body}");
    assert!(!exists(&server, &format!("/seg/router/{n}")).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_numbers_run_out_with_409_and_come_back_at_delete() {
    let server = support::Server::start();
    let c = Client::new(&server);
    const FREE: u64 = 777;
    claim_router_numbers(&server, (1..=MAX_ROUTER_NUMBER).filter(|n| *n != FREE)).await;
    let last = id(&c.create(ALICE, "router", json!({"name": "last"})).await);
    assert_eq!(c.router_number(&last).await, FREE);
    let msg = refused(
        &c.post(
            ALICE,
            "/v2.0/routers",
            json!({"router": {"name": "one too many"}}),
        )
        .await,
        409,
        "NoRouterNumberAvailable",
    );
    assert!(msg.contains("16383"), "{msg}");
    let (status, body) = c.delete(ALICE, &format!("/v2.0/routers/{last}")).await;
    assert_eq!(status, 204, "{body}");
    let again = id(&c.create(ALICE, "router", json!({"name": "again"})).await);
    assert_eq!(c.router_number(&again).await, FREE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_stored_without_a_number_gets_one_at_its_next_update() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (_, subnet) = c.network(ALICE, json!({}), "10.0.0.0/24").await;
    let mut old = Vec::new();
    for name in ["renamed", "interfaced"] {
        let router = id(&c.create(ALICE, "router", json!({"name": name})).await);
        // As an earlier Wyvern stored it: no number (and its claim gone), no SNAT mode.
        let key = format!("/r/routers/{router}");
        let mut stored = c.stored_router(&router).await;
        let n = stored["_nat_id"].as_u64().unwrap();
        let obj = stored.as_object_mut().unwrap();
        obj.remove("_nat_id");
        obj.remove("snat_mode");
        let txn = store::Txn::new()
            .put(key, serde_json::to_vec(&stored).unwrap())
            .delete(format!("/seg/router/{n}"));
        server.store.txn(txn).await.unwrap();
        assert!(c.stored_router(&router).await.get("_nat_id").is_none());
        old.push(router);
    }
    // Shown with the default SNAT mode meanwhile.
    let path = format!("/v2.0/routers/{}", old[0]);
    let (_, shown) = c.get(ALICE, &path).await;
    assert_eq!(shown["router"]["snat_mode"], "distributed", "{shown}");
    // A change of the router gives it a number and stores its mode: an update, an interface.
    let (status, body) = c
        .put(ALICE, &path, json!({"router": {"name": "new"}}))
        .await;
    assert_eq!(status, 200, "{body}");
    let add = format!("/v2.0/routers/{}/add_router_interface", old[1]);
    let (status, body) = c.put(ALICE, &add, json!({"subnet_id": subnet})).await;
    assert_eq!(status, 200, "{body}");
    let mut numbers = HashSet::new();
    for router in &old {
        let stored = c.stored_router(router).await;
        assert_eq!(stored["snat_mode"], "distributed", "{stored}");
        let n = stored["_nat_id"].as_u64().expect("a number now");
        assert!(numbers.insert(n));
        let claim = server.store.get(&format!("/seg/router/{n}")).await.unwrap();
        assert_eq!(claim.expect("claimed").value, router.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snat_mode_is_a_router_attribute_of_its_own_extension() {
    let server = support::Server::start();
    let c = Client::new(&server);
    // Announced.
    let (status, body) = c.get(ALICE, "/v2.0/extensions/snat-mode").await;
    assert_eq!(status, 200, "{body}");
    let extension = &body["extension"];
    assert_eq!(extension["name"], "Router SNAT mode");
    assert!(
        extension["description"]
            .as_str()
            .unwrap()
            .contains("centralized")
    );
    assert!(extension["updated"].as_str().unwrap().starts_with("2026-"));
    let (_, all) = c.get(ALICE, "/v2.0/extensions").await;
    assert!(
        all["extensions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e == extension),
        "{all}"
    );
    // Distributed by default; the owner chooses it at create and changes it, and sees it.
    let plain = c.create(ALICE, "router", json!({"name": "plain"})).await;
    assert_eq!(plain["snat_mode"], "distributed", "{plain}");
    let central = c
        .create(
            ALICE,
            "router",
            json!({"name": "central", "snat_mode": "centralized"}),
        )
        .await;
    assert_eq!(central["snat_mode"], "centralized", "{central}");
    let path = format!("/v2.0/routers/{}", id(&central));
    let (_, shown) = c.get(ALICE, &path).await;
    assert_eq!(shown["router"]["snat_mode"], "centralized");
    assert_eq!(
        c.stored_router(&id(&central)).await["snat_mode"],
        "centralized"
    );
    let (_, listed) = c.get(ALICE, "/v2.0/routers?snat_mode=centralized").await;
    let names: Vec<&Value> = listed["routers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| &r["name"])
        .collect();
    assert_eq!(names, vec!["central"], "{listed}");
    let (_, listed) = c
        .get(
            ALICE,
            "/v2.0/routers?sort_key=snat_mode&sort_dir=asc&fields=snat_mode",
        )
        .await;
    assert_eq!(
        listed["routers"],
        json!([{"snat_mode": "centralized"}, {"snat_mode": "distributed"}])
    );
    let (status, body) = c
        .put(
            ALICE,
            &path,
            json!({"router": {"snat_mode": "distributed"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["router"]["snat_mode"], "distributed");
    // Another project cannot change it (the router does not exist for it); an admin can.
    refused(
        &c.put(BOB, &path, json!({"router": {"snat_mode": "centralized"}}))
            .await,
        404,
        "RouterNotFound",
    );
    let (status, body) = c
        .put(
            ADMIN,
            &path,
            json!({"router": {"snat_mode": "centralized"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // Any other value is refused as Neutron's validators refuse one.
    for bad in [
        json!("Centralized"),
        json!("gateway"),
        json!(null),
        json!(true),
    ] {
        let msg = refused(
            &c.post(
                ALICE,
                "/v2.0/routers",
                json!({"router": {"snat_mode": bad}}),
            )
            .await,
            400,
            "HTTPBadRequest",
        );
        assert!(
            msg.starts_with("Invalid input for snat_mode. Reason: "),
            "{msg}"
        );
        refused(
            &c.put(ALICE, &path, json!({"router": {"snat_mode": bad}}))
                .await,
            400,
            "HTTPBadRequest",
        );
    }
    let (_, shown) = c.get(ALICE, &path).await;
    assert_eq!(shown["router"]["snat_mode"], "centralized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_transit_vnis_are_no_network_segmentation_ids() {
    let server = support::Server::start();
    let c = Client::new(&server);
    for (kind, vni) in [
        ("vxlan", 0xff_c000),
        ("geneve", 0xff_c123),
        // The chaining tunnel id.
        ("geneve", 0xff_bfff),
        ("vxlan", 0xff_ffff),
        ("vxlan", 0x100_0000),
    ] {
        let body =
            json!({"network": {"provider:network_type": kind, "provider:segmentation_id": vni}});
        let msg = refused(
            &c.post(ADMIN, "/v2.0/networks", body).await,
            400,
            "InvalidInput",
        );
        assert!(msg.contains("out of range 1-16760830"), "{msg}");
    }
    let top = c
        .create(
            ADMIN,
            "network",
            json!({"provider:network_type": "geneve", "provider:segmentation_id": 0xff_bffe}),
        )
        .await;
    assert_eq!(top["provider:segmentation_id"], 0xff_bffe);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_floating_ip_is_active_while_its_port_is() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let ext = c.external().await;
    let (net, subnet) = c.network(ALICE, json!({}), "10.0.0.0/24").await;
    let router = c
        .create(
            ALICE,
            "router",
            json!({"external_gateway_info": {"network_id": ext}}),
        )
        .await;
    let add = format!("/v2.0/routers/{}/add_router_interface", id(&router));
    let (status, body) = c.put(ALICE, &add, json!({"subnet_id": subnet})).await;
    assert_eq!(status, 200, "{body}");
    let port = id(&c.create(ALICE, "port", json!({"network_id": net})).await);
    let other = id(&c.create(ALICE, "port", json!({"network_id": net})).await);
    let fip = c
        .create(
            ALICE,
            "floatingip",
            json!({"floating_network_id": ext, "port_id": port}),
        )
        .await;
    assert_eq!(fip["status"], "DOWN", "{fip}");
    let path = format!("/v2.0/floatingips/{}", id(&fip));
    let status_of = async |expected: &str| {
        let (_, body) = c.get(ALICE, &path).await;
        assert_eq!(body["floatingip"]["status"], expected, "{body}");
        body["floatingip"].clone()
    };

    // The port's VIF comes up on a chassis, then goes: the floating IP follows, with the port's
    // details, in the transaction that changes the port.
    let (_, before) = c.get(ADMIN, "/wyvern/v1/sync/snapshot?chassis=none").await;
    let after = before["revision"].as_u64().unwrap();
    c.bind(&port, "chassis-1", true).await;
    let shown = status_of("ACTIVE").await;
    assert_eq!(shown["port_details"]["status"], "ACTIVE", "{shown}");
    let events = watch(&c, &format!("all=1&after={after}"), 1).await;
    let revisions: HashSet<u64> = events
        .iter()
        .filter(|e| {
            let key = e["key"].as_str().unwrap();
            key.ends_with(&port) || key.ends_with(&id(&fip))
        })
        .map(|e| e["revision"].as_u64().unwrap())
        .collect();
    assert_eq!(revisions.len(), 1, "one transaction: {events:?}");
    // A late report from another chassis changes nothing; the VIF leaving its chassis does.
    c.bind(&port, "chassis-2", false).await;
    status_of("ACTIVE").await;
    c.bind(&port, "chassis-1", false).await;
    let shown = status_of("DOWN").await;
    assert_eq!(shown["port_details"]["status"], "DOWN", "{shown}");

    // Associations: to an active port ACTIVE, to an inactive one or none DOWN.
    c.bind(&port, "chassis-1", true).await;
    status_of("ACTIVE").await;
    let (status, body) = c
        .put(ALICE, &path, json!({"floatingip": {"port_id": null}}))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["floatingip"]["status"], "DOWN");
    let (_, body) = c
        .put(ALICE, &path, json!({"floatingip": {"port_id": port}}))
        .await;
    assert_eq!(body["floatingip"]["status"], "ACTIVE", "{body}");
    let (_, body) = c
        .put(ALICE, &path, json!({"floatingip": {"port_id": other}}))
        .await;
    assert_eq!(body["floatingip"]["status"], "DOWN", "{body}");
    let created = c
        .create(
            ALICE,
            "floatingip",
            json!({"floating_network_id": ext, "port_id": port}),
        )
        .await;
    assert_eq!(created["status"], "ACTIVE", "{created}");
    // The other port coming up turns its floating IP on; deleting the port turns it off.
    c.bind(&other, "chassis-2", true).await;
    status_of("ACTIVE").await;
    let (status, body) = c.delete(ALICE, &format!("/v2.0/ports/{other}")).await;
    assert_eq!(status, 204, "{body}");
    status_of("DOWN").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floating_ip_status_survives_racing_associations_and_binding_reports() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let ext = c.external().await;
    let (net, subnet) = c.network(ALICE, json!({}), "10.0.0.0/24").await;
    let router = c
        .create(
            ALICE,
            "router",
            json!({"external_gateway_info": {"network_id": ext}}),
        )
        .await;
    let add = format!("/v2.0/routers/{}/add_router_interface", id(&router));
    c.put(ALICE, &add, json!({"subnet_id": subnet})).await;
    for round in 0..20 {
        let port = id(&c.create(ALICE, "port", json!({"network_id": net})).await);
        let fip = id(&c
            .create(ALICE, "floatingip", json!({"floating_network_id": ext}))
            .await);
        let path = format!("/v2.0/floatingips/{fip}");
        let associate = c.put(ALICE, &path, json!({"floatingip": {"port_id": port}}));
        let bind = c.bind(&port, "chassis-1", true);
        let ((status, body), ()) = tokio::join!(associate, bind);
        assert_eq!(status, 200, "{body}");
        let (_, shown) = c.get(ALICE, &path).await;
        assert_eq!(
            shown["floatingip"]["status"], "ACTIVE",
            "round {round}: {shown}"
        );
    }
}

/// The events a sync watch of `query` sends in its first `batches` batches.
async fn watch(c: &Client, query: &str, batches: usize) -> Vec<Value> {
    let url = format!("{}/wyvern/v1/sync/watch?{query}", c.base);
    let mut resp = c.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let (mut events, mut seen, mut buf) = (Vec::new(), 0, Vec::new());
    tokio::time::timeout(Duration::from_secs(10), async {
        while seen < batches {
            buf.extend_from_slice(&resp.chunk().await.unwrap().expect("the stream goes on"));
            while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                let line: Value = serde_json::from_slice(&buf.drain(..=end).collect::<Vec<_>>())
                    .expect("a JSON line");
                if let Some(batch) = line["events"].as_array() {
                    events.extend(batch.iter().cloned());
                    seen += 1;
                }
            }
        }
    })
    .await
    .expect("the watch sent its batches");
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chassis_snat_address_is_one_port_per_chassis_and_network() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let ext = c.external().await;
    let (internal, _) = c.network(ADMIN, json!({}), "10.0.0.0/24").await;

    // Agents (admins) only; a network that exists, is external and has room for an IPv4 address.
    refused(
        &c.snat(ALICE, "chassis-1", &ext).await,
        403,
        "HTTPForbidden",
    );
    let missing = "8f0c1d9e-3b7a-4c55-9a2e-00000000dead";
    refused(
        &c.snat(ADMIN, "chassis-1", missing).await,
        404,
        "NetworkNotFound",
    );
    refused(
        &c.snat(ADMIN, "chassis-1", &internal).await,
        400,
        "HTTPBadRequest",
    );
    refused(
        &c.snat(ADMIN, "bad%20id", &ext).await,
        400,
        "HTTPBadRequest",
    );
    let bare = id(&c
        .create(ADMIN, "network", json!({"router:external": true}))
        .await);
    refused(
        &c.snat(ADMIN, "chassis-1", &bare).await,
        409,
        "IpAddressGenerationFailure",
    );
    let (_, left) = c
        .get(ADMIN, &format!("/v2.0/ports?network_id={bare}"))
        .await;
    assert_eq!(left["ports"], json!([]), "a refused request leaves no port");

    // The port: on the external network, the chassis', with an address there.
    let (status, body) = c.snat(ADMIN, "chassis-1", &ext).await;
    assert_eq!(status, 200, "{body}");
    let port = &body["port"];
    assert_eq!(port["network_id"], ext.as_str());
    assert_eq!(port["device_owner"], "network:floatingip_agent_gateway");
    assert_eq!(port["device_id"], "chassis-1");
    assert_eq!(port["binding:host_id"], "chassis-1");
    let address = port["fixed_ips"][0]["ip_address"].as_str().unwrap();
    assert!(address.starts_with("192.0.2."), "{port}");
    // Asked again (an agent restarting): the same port.
    let (status, again) = c.snat(ADMIN, "chassis-1", &ext).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["port"], *port);
    // Another chassis: another port and address.
    let (_, second) = c.snat(ADMIN, "chassis-2", &ext).await;
    assert_ne!(second["port"]["id"], port["id"]);
    assert_ne!(second["port"]["fixed_ips"], port["fixed_ips"]);

    // The port API neither makes such ports nor deletes them, nor moves one to another chassis.
    let body = json!({"port": {"network_id": ext, "device_owner": "network:floatingip_agent_gateway",
        "device_id": "chassis-3", "binding:host_id": "chassis-3"}});
    refused(
        &c.post(ADMIN, "/v2.0/ports", body).await,
        403,
        "PolicyNotAuthorized",
    );
    let (own, _) = c.network(ALICE, json!({}), "10.1.0.0/24").await;
    let body =
        json!({"port": {"network_id": own, "device_owner": "network:floatingip_agent_gateway"}});
    refused(
        &c.post(ALICE, "/v2.0/ports", body).await,
        403,
        "PolicyNotAuthorized",
    );
    let path = format!("/v2.0/ports/{}", id(port));
    refused(&c.delete(ADMIN, &path).await, 409, "ServicePortInUse");
    let msg = refused(
        &c.put(
            ADMIN,
            &path,
            json!({"port": {"binding:host_id": "chassis-9"}}),
        )
        .await,
        403,
        "PolicyNotAuthorized",
    );
    assert!(msg.contains("binding:host_id"), "{msg}");
    let (_, again) = c.snat(ADMIN, "chassis-1", &ext).await;
    assert_eq!(again["port"]["id"], port["id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_snat_address_requests_make_one_port() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let ext = c.external().await;
    let answers =
        futures::future::join_all((0..16).map(|_| c.snat(ADMIN, "chassis-1", &ext))).await;
    let mut ids = HashSet::new();
    for (status, body) in answers {
        assert_eq!(status, 200, "{body}");
        ids.insert(id(&body["port"]));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let query =
        format!("/v2.0/ports?network_id={ext}&device_owner=network:floatingip_agent_gateway");
    let (_, listed) = c.get(ADMIN, &query).await;
    assert_eq!(listed["ports"].as_array().unwrap().len(), 1, "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snat_addresses_go_with_their_external_network() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let ext = c.external().await;
    for chassis in ["chassis-1", "chassis-2"] {
        let (status, body) = c.snat(ADMIN, chassis, &ext).await;
        assert_eq!(status, 200, "{body}");
    }
    assert!(exists(&server, &format!("/snat/{ext}/chassis-1")).await);
    let (status, body) = c.delete(ADMIN, &format!("/v2.0/networks/{ext}")).await;
    assert_eq!(status, 204, "{body}");
    let (_, left) = c.get(ADMIN, "/v2.0/ports").await;
    assert_eq!(left["ports"], json!([]));
    for chassis in ["chassis-1", "chassis-2"] {
        assert!(!exists(&server, &format!("/snat/{ext}/{chassis}")).await);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_carries_physical_networks_and_the_gateway_flag() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let register = async |who: Who, id: &str, body: Value| {
        c.put(who, &format!("/wyvern/v1/chassis/{id}"), body).await
    };
    let (status, body) = register(
        ADMIN,
        "gw-1",
        json!({"tunnel_ip": "198.51.100.1", "physnets": ["physnet1", "ext"], "gateway": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = register(ADMIN, "plain-1", json!({"tunnel_ip": "198.51.100.2"})).await;
    assert_eq!(status, 200, "{body}");
    let stored = c.snapshot("chassis=none").await;
    let gw = &stored["/chassis/gw-1"];
    assert_eq!(gw["physnets"], json!(["physnet1", "ext"]), "{gw}");
    assert_eq!(gw["gateway"], true);
    let plain = &stored["/chassis/plain-1"];
    assert_eq!(plain["physnets"], json!([]), "{plain}");
    assert_eq!(plain["gateway"], false);

    let long = "p".repeat(65);
    let many: Vec<String> = (0..65).map(|i| format!("physnet{i}")).collect();
    for bad in [
        json!({"physnets": "physnet1"}),
        json!({"physnets": null}),
        json!({"physnets": [""]}),
        json!({"physnets": ["a,b"]}),
        json!({"physnets": [long]}),
        json!({"physnets": many}),
        json!({"physnets": [7]}),
        json!({"gateway": "yes"}),
        json!({"gateway": 1}),
        json!({"gateway": null}),
    ] {
        let mut body = bad.clone();
        body["tunnel_ip"] = json!("198.51.100.3");
        refused(&register(ADMIN, "bad-1", body).await, 400, "HTTPBadRequest");
    }
    let stored = c.snapshot("chassis=none").await;
    assert!(!stored.contains_key("/chassis/bad-1"), "nothing stored");
    let body = json!({"tunnel_ip": "198.51.100.4", "gateway": true});
    refused(&register(ALICE, "gw-2", body).await, 403, "HTTPForbidden");
}
