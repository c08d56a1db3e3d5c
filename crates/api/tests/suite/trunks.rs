//! Trunks beyond the conformance scenario: what a trunk does to its ports (a subport's device
//! owner and host following the parent's, through port updates and binding reports), what agents
//! get through sync (the parent port's `_trunk`), policy and project isolation, and that two
//! concurrent trunks cannot take one port.

use crate::caller::{ADMIN, ALICE, BOB, Client};
use crate::support;

use serde_json::{Value, json};

/// Alice's network with a subnet, and ports of hers on it with these names: their ids.
async fn ports(c: &Client, names: &[&str]) -> Vec<String> {
    let (s, net) = c
        .call(
            ALICE,
            "POST",
            "/v2.0/networks",
            Some(json!({"network": {"name": "tn"}})),
        )
        .await;
    assert_eq!(s, 201, "{net}");
    let net = net["network"]["id"].as_str().unwrap().to_string();
    let body = json!({"subnet": {"network_id": net, "ip_version": 4, "cidr": "10.60.0.0/24"}});
    let (s, sub) = c.call(ALICE, "POST", "/v2.0/subnets", Some(body)).await;
    assert_eq!(s, 201, "{sub}");
    let mut ids = Vec::new();
    for name in names {
        let body = json!({"port": {"network_id": net, "name": name}});
        let (s, port) = c.call(ALICE, "POST", "/v2.0/ports", Some(body)).await;
        assert_eq!(s, 201, "{port}");
        ids.push(port["port"]["id"].as_str().unwrap().to_string());
    }
    ids
}

fn sub(port: &str, vid: u16) -> Value {
    json!({"port_id": port, "segmentation_type": "vlan", "segmentation_id": vid})
}

async fn port(c: &Client, id: &str) -> Value {
    let (s, body) = c
        .call(ADMIN, "GET", &format!("/v2.0/ports/{id}"), None)
        .await;
    assert_eq!(s, 200, "{body}");
    body["port"].clone()
}

/// The stored value of `key` in a snapshot of everything.
async fn synced(c: &Client, key: &str) -> Option<Value> {
    let url = format!("{}/wyvern/v1/sync/snapshot?all=1", c.base);
    let body: Value = c.http.get(url).send().await.unwrap().json().await.unwrap();
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["key"] == key)
        .map(|i| i["value"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subports_follow_their_parent_and_agents_get_the_trunk() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let ids = ports(&c, &["parent", "s1", "s2"]).await;
    let (parent, s1, s2) = (&ids[0], &ids[1], &ids[2]);
    let body = json!({"trunk": {"port_id": parent, "sub_ports": [sub(s1, 10)]}});
    let (s, trunk) = c.call(ALICE, "POST", "/v2.0/trunks", Some(body)).await;
    assert_eq!(s, 201, "{trunk}");
    let trunk_id = trunk["trunk"]["id"].as_str().unwrap().to_string();

    let p1 = port(&c, s1).await;
    assert_eq!(p1["device_owner"], "trunk:subport", "{p1}");
    assert_eq!(p1["device_id"], "", "Neutron sets no device_id: {p1}");
    assert_eq!(p1["binding:host_id"], "", "{p1}");
    assert!(p1.get("_subport").is_none(), "internal fields stay hidden");

    // The parent is bound by an admin: its subport follows; a binding report moves both.
    let body = json!({"port": {"binding:host_id": "chassis-1"}});
    let (s, _) = c
        .call(ADMIN, "PUT", &format!("/v2.0/ports/{parent}"), Some(body))
        .await;
    assert_eq!(s, 200);
    let p1 = port(&c, s1).await;
    assert_eq!(p1["binding:host_id"], "chassis-1", "{p1}");
    assert_eq!(p1["binding:vif_type"], "ovs", "{p1}");
    let report = json!({"chassis": "chassis-2", "up": true});
    let (s, body) = c
        .call(
            ADMIN,
            "PUT",
            &format!("/wyvern/v1/ports/{parent}/binding"),
            Some(report),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(port(&c, s1).await["binding:host_id"], "chassis-2");

    // A subport added to a bound parent's trunk is bound where the parent is.
    let body = json!({"sub_ports": [sub(s2, 20)]});
    let path = format!("/v2.0/trunks/{trunk_id}/add_subports");
    let (s, answer) = c.call(ALICE, "PUT", &path, Some(body)).await;
    assert_eq!(s, 200, "{answer}");
    assert_eq!(answer["sub_ports"].as_array().unwrap().len(), 2, "{answer}");
    let p2 = port(&c, s2).await;
    assert_eq!(p2["binding:host_id"], "chassis-2", "{p2}");
    assert_eq!(p2["device_owner"], "trunk:subport", "{p2}");

    // Agents get the trunk with its parent port, and each subport's trunk and VLAN.
    let parent_synced = synced(&c, &format!("/r/ports/{parent}")).await.unwrap();
    let trunk = model::trunks::Trunk::of_port(&parent_synced).expect("the parent's _trunk");
    assert_eq!(trunk.id, trunk_id);
    assert_eq!(&trunk.port_id, parent);
    assert!(trunk.admin_state_up);
    let vids: Vec<(String, u16)> = trunk
        .sub_ports
        .iter()
        .map(|s| (s.port_id.clone(), s.segmentation_id))
        .collect();
    assert_eq!(vids, vec![(s1.clone(), 10), (s2.clone(), 20)]);
    let s2_synced = synced(&c, &format!("/r/ports/{s2}")).await.unwrap();
    let of = model::trunks::SubPortOf::of_port(&s2_synced).expect("the subport's _subport");
    assert_eq!(
        (of.trunk_id.as_str(), of.segmentation_id),
        (trunk_id.as_str(), 20)
    );
    assert_eq!(&of.parent_port_id, parent);
    // The trunk itself is a sync kind, on the networks it touches.
    let synced_trunk = synced(&c, &format!("/r/trunks/{trunk_id}")).await.unwrap();
    let net = port(&c, parent).await["network_id"].clone();
    assert_eq!(synced_trunk["_network_ids"], json!([net]), "{synced_trunk}");
    assert_eq!(synced_trunk["sub_ports"].as_array().unwrap().len(), 2);

    // Disabling the trunk reaches the parent's _trunk.
    let body = json!({"trunk": {"admin_state_up": false}});
    let path = format!("/v2.0/trunks/{trunk_id}");
    let (s, _) = c.call(ALICE, "PUT", &path, Some(body)).await;
    assert_eq!(s, 200);
    let parent_synced = synced(&c, &format!("/r/ports/{parent}")).await.unwrap();
    assert!(
        !model::trunks::Trunk::of_port(&parent_synced)
            .unwrap()
            .admin_state_up
    );
    let body = json!({"trunk": {"admin_state_up": true}});
    c.call(ALICE, "PUT", &path, Some(body)).await;

    // A removed subport loses what the trunk gave it.
    let body = json!({"sub_ports": [{"port_id": s1}]});
    let path = format!("/v2.0/trunks/{trunk_id}/remove_subports");
    let (s, answer) = c.call(ALICE, "PUT", &path, Some(body)).await;
    assert_eq!(s, 200, "{answer}");
    let p1 = port(&c, s1).await;
    assert_eq!(p1["device_owner"], "", "{p1}");
    assert_eq!(p1["binding:host_id"], "", "{p1}");
    assert_eq!(p1["binding:vif_type"], "unbound", "{p1}");
    let (s, _) = c
        .call(ALICE, "DELETE", &format!("/v2.0/ports/{s1}"), None)
        .await;
    assert_eq!(s, 204, "a former subport may be deleted");

    // Bound: not deleted; unbound: deleted, and the ports are plain again.
    let path = format!("/v2.0/trunks/{trunk_id}");
    let (s, body) = c.call(ALICE, "DELETE", &path, None).await;
    assert_eq!(s, 409, "{body}");
    assert_eq!(body["NeutronError"]["type"], "TrunkInUse");
    let body = json!({"port": {"binding:host_id": ""}});
    c.call(ADMIN, "PUT", &format!("/v2.0/ports/{parent}"), Some(body))
        .await;
    assert_eq!(port(&c, s2).await["binding:host_id"], "");
    let (s, _) = c.call(ALICE, "DELETE", &path, None).await;
    assert_eq!(s, 204);
    let p = port(&c, parent).await;
    assert!(p.get("trunk_details").is_none(), "{p}");
    assert_eq!(port(&c, s2).await["device_owner"], "");
    let parent_synced = synced(&c, &format!("/r/ports/{parent}")).await.unwrap();
    assert!(model::trunks::Trunk::of_port(&parent_synced).is_none());
    assert!(synced(&c, &format!("/r/ports/{s2}")).await.unwrap()["_subport"].is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trunks_are_their_projects_own() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let ids = ports(&c, &["parent", "s1", "other"]).await;
    let (parent, s1, other) = (&ids[0], &ids[1], &ids[2]);
    let body = json!({"trunk": {"port_id": parent, "sub_ports": [sub(s1, 10)]}});
    let (s, trunk) = c.call(ALICE, "POST", "/v2.0/trunks", Some(body)).await;
    assert_eq!(s, 201, "{trunk}");
    let id = trunk["trunk"]["id"].as_str().unwrap().to_string();

    // Bob sees nothing of it and cannot use Alice's ports.
    let (s, list) = c.call(BOB, "GET", "/v2.0/trunks", None).await;
    assert_eq!((s, list), (200, json!({"trunks": []})));
    for (method, path, body) in [
        ("GET", format!("/v2.0/trunks/{id}"), None),
        (
            "PUT",
            format!("/v2.0/trunks/{id}"),
            Some(json!({"trunk": {"name": "x"}})),
        ),
        ("DELETE", format!("/v2.0/trunks/{id}"), None),
        ("GET", format!("/v2.0/trunks/{id}/get_subports"), None),
        (
            "PUT",
            format!("/v2.0/trunks/{id}/add_subports"),
            Some(json!({"sub_ports": [sub(other, 11)]})),
        ),
    ] {
        let (s, body) = c.call(BOB, method, &path, body).await;
        assert_eq!(s, 404, "{method} {path}: {body}");
        assert_eq!(body["NeutronError"]["type"], "TrunkNotFound", "{body}");
    }
    let body = json!({"trunk": {"port_id": other}});
    let (s, body) = c.call(BOB, "POST", "/v2.0/trunks", Some(body)).await;
    assert_eq!(s, 404, "{body}");
    assert_eq!(body["NeutronError"]["type"], "PortNotFound");
    // Bob's port does not show Alice's trunk details, nor does a list filter by port find them.
    let (s, list) = c
        .call(BOB, "GET", &format!("/v2.0/trunks?port_id={parent}"), None)
        .await;
    assert_eq!((s, list), (200, json!({"trunks": []})));

    // A reader may look but not change.
    let reader = c
        .http
        .put(format!("{}/v2.0/trunks/{id}/add_subports", c.base))
        .header("X-Project-Id", "project-alice")
        .header("X-Roles", "reader")
        .json(&json!({"sub_ports": [sub(other, 11)]}))
        .send()
        .await
        .unwrap();
    assert_eq!(reader.status(), 403);

    // The admin sees and changes it; the list filters by parent.
    let (s, list) = c
        .call(
            ADMIN,
            "GET",
            &format!("/v2.0/trunks?port_id={parent}"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(list["trunks"].as_array().unwrap().len(), 1, "{list}");
    let body = json!({"sub_ports": [sub(other, 11)]});
    let path = format!("/v2.0/trunks/{id}/add_subports");
    let (s, body) = c.call(ADMIN, "PUT", &path, Some(body)).await;
    assert_eq!(s, 200, "{body}");
    let (s, body) = c
        .call(
            ALICE,
            "GET",
            &format!("/v2.0/trunks/{id}/get_subports"),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(body["sub_ports"].as_array().unwrap().len(), 2, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_trunks_take_a_port_once() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let names = ["shared", "p0", "p1", "p2", "p3", "p4", "p5", "p6", "p7"];
    let ids = ports(&c, &names).await;
    let shared = ids[0].clone();
    let creates = ids[1..].iter().enumerate().map(|(i, parent)| {
        let body =
            json!({"trunk": {"port_id": parent, "sub_ports": [sub(&shared, 100 + i as u16)]}});
        let c = &c;
        async move { c.call(ALICE, "POST", "/v2.0/trunks", Some(body)).await }
    });
    let answers = futures::future::join_all(creates).await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    assert_eq!(created, 1, "{answers:?}");
    for (s, body) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!(*s, 409, "{body}");
        assert_eq!(body["NeutronError"]["type"], "TrunkPortInUse", "{body}");
    }
    let (_, list) = c.call(ADMIN, "GET", "/v2.0/trunks", None).await;
    assert_eq!(list["trunks"].as_array().unwrap().len(), 1, "{list}");
}

/// neutron-lib's validator stops at the first `inherit`, and an `inherit` takes its network's
/// VLAN only later: a request naming a VLAN or a port twice that way still gets Neutron's 409
/// `DuplicateSubPort` (its subports' unique keys), on create and in `add_subports`, and nothing
/// is written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vlan_or_port_named_twice_through_inherit_is_a_duplicate() {
    let server = support::Server::start();
    let c = Client::new(&server);
    let body = json!({"network": {"name": "vlan-net", "provider:network_type": "vlan",
        "provider:physical_network": "physnet1", "provider:segmentation_id": 150}});
    let (s, net) = c.call(ADMIN, "POST", "/v2.0/networks", Some(body)).await;
    assert_eq!(s, 201, "{net}");
    let net = net["network"]["id"].as_str().unwrap().to_string();
    let mut ids = Vec::new();
    for name in ["parent", "a", "b"] {
        let body = json!({"port": {"network_id": net, "name": name}});
        let (s, port) = c.call(ADMIN, "POST", "/v2.0/ports", Some(body)).await;
        assert_eq!(s, 201, "{port}");
        ids.push(port["port"]["id"].as_str().unwrap().to_string());
    }
    let (parent, a, b) = (&ids[0], &ids[1], &ids[2]);
    let inherit = |p: &str| json!({"port_id": p, "segmentation_type": "inherit"});
    let duplicate = |(s, body): (u16, Value)| {
        assert_eq!(s, 409, "{body}");
        assert_eq!(body["NeutronError"]["type"], "DuplicateSubPort", "{body}");
    };
    // VLAN 150 given, then inherited; one port inherited, then given.
    for subs in [
        json!([sub(a, 150), inherit(b)]),
        json!([inherit(a), sub(a, 151)]),
    ] {
        let body = json!({"trunk": {"port_id": parent, "sub_ports": subs}});
        duplicate(c.call(ADMIN, "POST", "/v2.0/trunks", Some(body)).await);
    }
    let (_, list) = c.call(ADMIN, "GET", "/v2.0/trunks", None).await;
    assert_eq!(list, json!({"trunks": []}));
    assert!(
        port(&c, a).await["device_owner"] == "",
        "no subport written"
    );

    let body = json!({"trunk": {"port_id": parent}});
    let (s, trunk) = c.call(ADMIN, "POST", "/v2.0/trunks", Some(body)).await;
    assert_eq!(s, 201, "{trunk}");
    let path = format!(
        "/v2.0/trunks/{}/add_subports",
        trunk["trunk"]["id"].as_str().unwrap()
    );
    for subs in [
        json!([sub(a, 150), inherit(b)]),
        json!([inherit(a), sub(a, 151)]),
    ] {
        let body = json!({ "sub_ports": subs });
        duplicate(c.call(ADMIN, "PUT", &path, Some(body)).await);
    }
    let body = json!({"sub_ports": [inherit(a), sub(b, 151)]});
    let (s, body) = c.call(ADMIN, "PUT", &path, Some(body)).await;
    assert_eq!(s, 200, "{body}");
    let vlans: Vec<&Value> = body["sub_ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| &s["segmentation_id"])
        .collect();
    assert_eq!(vlans, [&json!(150), &json!(151)], "{body}");
}
