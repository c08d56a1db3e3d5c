//! Security policy of the port, router, floating IP and security group rule APIs, as Neutron's
//! default policy answers it (checked against the reference Neutron): MAC addresses a port may not
//! have, device owners that belong to the router and floating IP APIs, attributes only network owners
//! or admins set, and references to other projects' objects answered as if those did not exist.

use crate::caller;
use crate::support;

use caller::{ADMIN, ALICE, BOB, Who};

use serde_json::{Value, json};

/// An id nothing has.
const MISSING: &str = "8f0c1d9e-3b7a-4c55-9a2e-00000000dead";

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

    /// Creates an object and returns it; the create must succeed.
    async fn create(&self, who: Who, path: &str, body: Value) -> Value {
        let (status, answer) = self.call(who, "POST", path, Some(body)).await;
        assert_eq!(status, 201, "POST {path}: {answer}");
        let key = answer
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .expect("one object");
        answer[key].clone()
    }

    /// A network with one IPv4 subnet; returns (network id, subnet id).
    async fn network(&self, who: Who, extra: Value, cidr: &str) -> (String, String) {
        let mut net = json!({"name": "net"});
        net.as_object_mut()
            .expect("an object")
            .extend(extra.as_object().cloned().unwrap_or_default());
        let net = self
            .create(who, "/v2.0/networks", json!({"network": net}))
            .await;
        let net_id = net["id"].as_str().expect("an id").to_string();
        let body = json!({"subnet": {"network_id": net_id, "ip_version": 4, "cidr": cidr}});
        let sub = self.create(who, "/v2.0/subnets", body).await;
        (net_id, sub["id"].as_str().expect("an id").to_string())
    }
}

fn id(obj: &Value) -> String {
    obj["id"].as_str().expect("an id").to_string()
}

/// Asserts the answer's status and Neutron error type.
#[track_caller]
fn refused(answer: (u16, Value), status: u16, kind: &str) {
    assert_eq!(answer.0, status, "{}", answer.1);
    assert_eq!(answer.1["NeutronError"]["type"], kind, "{}", answer.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ports_take_no_broadcast_multicast_or_zero_mac() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (net, _) = c.network(ADMIN, json!({}), "10.1.0.0/24").await;
    let port = c
        .create(ADMIN, "/v2.0/ports", json!({"port": {"network_id": net}}))
        .await;
    let path = format!("/v2.0/ports/{}", id(&port));
    for mac in [
        "ff:ff:ff:ff:ff:ff",
        "FF:FF:FF:FF:FF:FF",
        "00:00:00:00:00:00",
        "01:00:5e:00:00:01",
        "33:33:00:00:00:01",
    ] {
        let body = json!({"port": {"network_id": net, "mac_address": mac}});
        refused(
            c.call(ADMIN, "POST", "/v2.0/ports", Some(body)).await,
            400,
            "HTTPBadRequest",
        );
        let body = json!({"port": {"mac_address": mac}});
        refused(
            c.call(ADMIN, "PUT", &path, Some(body)).await,
            400,
            "HTTPBadRequest",
        );
        let pairs = json!([{"ip_address": "10.1.0.200", "mac_address": mac}]);
        let body = json!({"port": {"network_id": net, "allowed_address_pairs": pairs}});
        refused(
            c.call(ADMIN, "POST", "/v2.0/ports", Some(body)).await,
            400,
            "HTTPBadRequest",
        );
        let body = json!({"port": {"allowed_address_pairs": pairs}});
        refused(
            c.call(ADMIN, "PUT", &path, Some(body)).await,
            400,
            "HTTPBadRequest",
        );
    }
    // A unicast MAC is still fine, in either place.
    let pairs = json!([{"ip_address": "10.1.0.200", "mac_address": "fa:16:3e:00:00:02"}]);
    let body =
        json!({"port": {"mac_address": "FA:16:3E:00:00:01", "allowed_address_pairs": pairs}});
    let (status, answer) = c.call(ADMIN, "PUT", &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["port"]["mac_address"], "fa:16:3e:00:00:01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn router_device_owners_belong_to_the_router_api() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (net, _) = c.network(ADMIN, json!({}), "10.2.0.0/24").await;
    let router = c
        .create(ADMIN, "/v2.0/routers", json!({"router": {"name": "r"}}))
        .await;
    let port = c
        .create(ADMIN, "/v2.0/ports", json!({"port": {"network_id": net}}))
        .await;
    let path = format!("/v2.0/ports/{}", id(&port));
    for owner in [
        "network:router_interface",
        "network:router_gateway",
        "network:router_interface_distributed",
        "network:ha_router_replicated_interface",
        "network:floatingip",
    ] {
        let body =
            json!({"port": {"network_id": net, "device_owner": owner, "device_id": id(&router)}});
        refused(
            c.call(ADMIN, "POST", "/v2.0/ports", Some(body)).await,
            403,
            "PolicyNotAuthorized",
        );
        let body = json!({"port": {"device_owner": owner, "device_id": id(&router)}});
        refused(
            c.call(ADMIN, "PUT", &path, Some(body)).await,
            403,
            "PolicyNotAuthorized",
        );
    }
    // Other device owners stay the client's choice.
    let body = json!({"port": {"device_owner": "network:dhcp", "device_id": "dhcp-1"}});
    let (status, answer) = c.call(ADMIN, "PUT", &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_project_cannot_attach_to_or_detach_from_your_router() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (_, alice_sub) = c.network(ALICE, json!({}), "10.3.0.0/24").await;
    let router = c
        .create(ALICE, "/v2.0/routers", json!({"router": {"name": "alice"}}))
        .await;
    let rpath = format!("/v2.0/routers/{}", id(&router));
    let (status, answer) = c
        .call(
            ALICE,
            "PUT",
            &format!("{rpath}/add_router_interface"),
            Some(json!({"subnet_id": alice_sub})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let interface = answer["port_id"].as_str().expect("a port").to_string();
    let (bob_net, bob_sub) = c.network(BOB, json!({}), "10.4.0.0/24").await;
    // Bob owns his network, so policy lets him pick the owner; the router is not his (Neutron's L3
    // check).
    let body = json!({"port": {"network_id": bob_net, "device_owner": "network:router_interface", "device_id": id(&router)}});
    refused(
        c.call(BOB, "POST", "/v2.0/ports", Some(body)).await,
        409,
        "DeviceIDNotOwnedByTenant",
    );
    let bob_port = c
        .create(BOB, "/v2.0/ports", json!({"port": {"network_id": bob_net}}))
        .await;
    let body =
        json!({"port": {"device_owner": "network:router_interface", "device_id": id(&router)}});
    refused(
        c.call(
            BOB,
            "PUT",
            &format!("/v2.0/ports/{}", id(&bob_port)),
            Some(body),
        )
        .await,
        409,
        "DeviceIDNotOwnedByTenant",
    );
    // Nor may Bob put a router interface of his own router onto Alice's.
    let bob_router = c
        .create(BOB, "/v2.0/routers", json!({"router": {"name": "bob"}}))
        .await;
    let (status, answer) = c
        .call(
            BOB,
            "PUT",
            &format!("/v2.0/routers/{}/add_router_interface", id(&bob_router)),
            Some(json!({"subnet_id": bob_sub})),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let bob_interface = answer["port_id"].as_str().expect("a port").to_string();
    let body = json!({"port": {"device_id": id(&router)}});
    refused(
        c.call(
            BOB,
            "PUT",
            &format!("/v2.0/ports/{bob_interface}"),
            Some(body),
        )
        .await,
        403,
        "PolicyNotAuthorized",
    );
    // Alice's router has only her interface, and removing Bob's subnet from it removes nothing.
    refused(
        c.call(
            ALICE,
            "PUT",
            &format!("{rpath}/remove_router_interface"),
            Some(json!({"subnet_id": bob_sub})),
        )
        .await,
        404,
        "RouterInterfaceNotFoundForSubnet",
    );
    let (status, listed) = c
        .call(
            ADMIN,
            "GET",
            &format!("/v2.0/ports?device_id={}", id(&router)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let ids: Vec<&str> = listed["ports"]
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|p| p["id"].as_str())
        .collect();
    assert_eq!(ids, vec![interface.as_str()]);
    let (status, _) = c
        .call(BOB, "GET", &format!("/v2.0/ports/{bob_interface}"), None)
        .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_choose_addresses_and_security_only_on_their_own_networks() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (shared, shared_sub) = c
        .network(ADMIN, json!({"shared": true}), "10.5.0.0/24")
        .await;
    let create = |port: Value| {
        let mut body = json!({"network_id": shared});
        body.as_object_mut()
            .expect("an object")
            .extend(port.as_object().cloned().unwrap_or_default());
        json!({ "port": body })
    };
    for port in [
        json!({"fixed_ips": [{"ip_address": "10.5.0.20"}]}),
        json!({"fixed_ips": [{"subnet_id": shared_sub, "ip_address": "10.5.0.20"}]}),
        json!({"mac_address": "fa:16:3e:11:22:33"}),
        json!({"port_security_enabled": true}),
        json!({"allowed_address_pairs": [{"ip_address": "10.5.0.9"}]}),
        json!({"device_owner": "network:dhcp"}),
        json!({"binding:host_id": "compute-1"}),
        json!({"binding:profile": {"a": 1}}),
    ] {
        refused(
            c.call(ALICE, "POST", "/v2.0/ports", Some(create(port.clone())))
                .await,
            403,
            "PolicyNotAuthorized",
        );
    }
    // What members may ask for on a shared network.
    let port = c
        .create(
            ALICE,
            "/v2.0/ports",
            create(json!({"fixed_ips": [{"subnet_id": shared_sub}], "binding:vnic_type": "normal", "device_owner": "compute:nova"})),
        )
        .await;
    let path = format!("/v2.0/ports/{}", id(&port));
    for change in [
        json!({"fixed_ips": [{"ip_address": "10.5.0.30"}]}),
        json!({"mac_address": "fa:16:3e:11:22:34"}),
        json!({"port_security_enabled": false, "security_groups": []}),
        json!({"allowed_address_pairs": []}),
        json!({"device_owner": "network:dhcp"}),
        json!({"binding:host_id": "compute-1"}),
    ] {
        refused(
            c.call(ALICE, "PUT", &path, Some(json!({ "port": change })))
                .await,
            403,
            "PolicyNotAuthorized",
        );
    }
    let (status, answer) = c
        .call(ALICE, "PUT", &path, Some(json!({"port": {"name": "mine"}})))
        .await;
    assert_eq!(status, 200, "{answer}");
    // On her own network Alice chooses addresses, MAC and security; the MAC changes only by an admin.
    let (own, own_sub) = c.network(ALICE, json!({}), "10.6.0.0/24").await;
    let body = json!({"port": {
        "network_id": own, "fixed_ips": [{"subnet_id": own_sub, "ip_address": "10.6.0.20"}],
        "mac_address": "fa:16:3e:11:22:35", "port_security_enabled": true,
        "allowed_address_pairs": [{"ip_address": "10.6.0.9"}], "device_owner": "network:dhcp",
    }});
    let port = c.create(ALICE, "/v2.0/ports", body).await;
    let path = format!("/v2.0/ports/{}", id(&port));
    let body =
        json!({"port": {"fixed_ips": [{"ip_address": "10.6.0.21"}], "allowed_address_pairs": []}});
    let (status, answer) = c.call(ALICE, "PUT", &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    let body = json!({"port": {"mac_address": "fa:16:3e:11:22:36"}});
    refused(
        c.call(ALICE, "PUT", &path, Some(body.clone())).await,
        403,
        "PolicyNotAuthorized",
    );
    let (status, answer) = c.call(ADMIN, "PUT", &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_choose_floating_and_gateway_addresses() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (ext, _) = c
        .network(ADMIN, json!({"router:external": true}), "203.0.113.0/24")
        .await;
    let body =
        json!({"floatingip": {"floating_network_id": ext, "floating_ip_address": "203.0.113.77"}});
    refused(
        c.call(ALICE, "POST", "/v2.0/floatingips", Some(body.clone()))
            .await,
        403,
        "PolicyNotAuthorized",
    );
    c.create(ADMIN, "/v2.0/floatingips", body).await;
    let gateway =
        json!({"network_id": ext, "external_fixed_ips": [{"ip_address": "203.0.113.78"}]});
    let body = json!({"router": {"name": "r", "external_gateway_info": gateway}});
    refused(
        c.call(ALICE, "POST", "/v2.0/routers", Some(body)).await,
        403,
        "PolicyNotAuthorized",
    );
    let router = c
        .create(ALICE, "/v2.0/routers", json!({"router": {"name": "r"}}))
        .await;
    let path = format!("/v2.0/routers/{}", id(&router));
    let body = json!({"router": {"external_gateway_info": gateway}});
    refused(
        c.call(ALICE, "PUT", &path, Some(body.clone())).await,
        403,
        "PolicyNotAuthorized",
    );
    let (status, answer) = c.call(ADMIN, "PUT", &path, Some(body)).await;
    assert_eq!(status, 200, "{answer}");
    // Without chosen addresses, members get them allocated.
    let body = json!({"floatingip": {"floating_network_id": ext}});
    c.create(ALICE, "/v2.0/floatingips", body).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_to_other_projects_objects_answer_as_missing_ones() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let (bob_net, bob_sub) = c.network(BOB, json!({}), "10.7.0.0/24").await;
    let bob_sg = c
        .create(
            BOB,
            "/v2.0/security-groups",
            json!({"security_group": {"name": "bob"}}),
        )
        .await;
    let (alice_net, _) = c.network(ALICE, json!({}), "10.8.0.0/24").await;
    let alice_sg = c
        .create(
            ALICE,
            "/v2.0/security-groups",
            json!({"security_group": {"name": "alice"}}),
        )
        .await;
    // Each request, with Bob's object and with an id nothing has, answers the same status and type.
    // A request body naming the referenced object.
    type Body<'a> = Box<dyn Fn(&str) -> Value + 'a>;
    let requests: [(&str, &str, Body); 4] = [
        (
            "/v2.0/security-group-rules",
            "SecurityGroupNotFound",
            Box::new(
                |other| json!({"security_group_rule": {"security_group_id": id(&alice_sg), "direction": "ingress", "remote_group_id": other}}),
            ),
        ),
        (
            "/v2.0/ports",
            "SubnetNotFound",
            Box::new(
                |other| json!({"port": {"network_id": alice_net, "fixed_ips": [{"subnet_id": other}]}}),
            ),
        ),
        (
            "/v2.0/routers",
            "NetworkNotFound",
            Box::new(|other| json!({"router": {"external_gateway_info": {"network_id": other}}})),
        ),
        (
            "/v2.0/floatingips",
            "NetworkNotFound",
            Box::new(|other| json!({"floatingip": {"floating_network_id": other}})),
        ),
    ];
    let theirs = [id(&bob_sg), bob_sub, bob_net.clone(), bob_net];
    for ((path, kind, body), other) in requests.iter().zip(&theirs) {
        for reference in [other.as_str(), MISSING] {
            refused(
                c.call(ALICE, "POST", path, Some(body(reference))).await,
                404,
                kind,
            );
        }
    }
}
