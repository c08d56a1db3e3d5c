//! Drives the trunk API with the real `openstack network trunk ...` commands (python-openstackclient,
//! auth type `none`) against a live in-process server: a trunk with a subport, `show`/`list`,
//! `set --subport` and `unset --subport`, `network subport list`, the parent port's
//! `trunk_details`, a disabled trunk's refusals, and the delete, with the names an operator types.
//!
//! The CLI is `<repo>/.venv/bin/openstack` (made by `scripts/install-deps`) or
//! `$WYVERN_OPENSTACK_CLI`.

use crate::cli;
use crate::support;
use cli::{fails, run};

use serde_json::json;

#[test]
fn openstack_network_trunk_commands() {
    let server = support::Server::start();
    let url = server.base.as_str();
    run(url, "network create trunknet", true);
    run(
        url,
        "subnet create --network trunknet --subnet-range 10.9.0.0/24 trunksub",
        true,
    );
    let mut ids = std::collections::HashMap::new();
    for name in ["vm-parent", "vlan100", "vlan200"] {
        let port = run(url, &format!("port create --network trunknet {name}"), true);
        ids.insert(name, port["id"].as_str().unwrap_or_default().to_string());
    }

    let trunk = run(
        url,
        "network trunk create --parent-port vm-parent \
         --subport port=vlan100,segmentation-type=vlan,segmentation-id=100 \
         --description first trunk1",
        true,
    );
    assert_eq!(trunk["port_id"], ids["vm-parent"], "{trunk}");
    assert_eq!(trunk["status"], "DOWN", "{trunk}");
    assert_eq!(trunk["is_admin_state_up"], true, "{trunk}");
    assert_eq!(
        trunk["sub_ports"],
        json!([{"port_id": ids["vlan100"], "segmentation_type": "vlan", "segmentation_id": 100}]),
        "{trunk}"
    );
    let shown = run(url, "network trunk show trunk1", true);
    assert_eq!(shown["id"], trunk["id"], "{shown}");
    let listed = run(url, "network trunk list", true);
    assert_eq!(listed[0]["Name"], "trunk1", "{listed}");
    assert_eq!(listed[0]["Parent Port"], ids["vm-parent"], "{listed}");

    run(
        url,
        "network trunk set --subport port=vlan200,segmentation-type=vlan,segmentation-id=200 trunk1",
        false,
    );
    let subports = run(url, "network subport list --trunk trunk1", true);
    assert_eq!(subports.as_array().map(Vec::len), Some(2), "{subports}");
    let parent = run(url, "port show vm-parent", true);
    let details = &parent["trunk_details"];
    assert_eq!(details["trunk_id"], trunk["id"], "{parent}");
    assert_eq!(
        details["sub_ports"].as_array().map(Vec::len),
        Some(2),
        "{parent}"
    );
    let sub = run(url, "port show vlan200", true);
    assert_eq!(sub["device_owner"], "trunk:subport", "{sub}");

    let printed = fails(
        url,
        "network trunk set --subport port=vlan200,segmentation-type=vlan,segmentation-id=300 trunk1",
    );
    assert!(printed.contains("in use by another trunk"), "{printed}");
    let printed = fails(url, "port delete vlan100");
    assert!(printed.contains("subport"), "{printed}");

    run(url, "network trunk unset --subport vlan100 trunk1", false);
    let shown = run(url, "network trunk show trunk1", true);
    assert_eq!(
        shown["sub_ports"],
        json!([{"port_id": ids["vlan200"], "segmentation_type": "vlan", "segmentation_id": 200}]),
        "{shown}"
    );
    assert_eq!(run(url, "port show vlan100", true)["device_owner"], "");

    run(
        url,
        "network trunk set --name trunk2 --description second --disable trunk1",
        false,
    );
    let shown = run(url, "network trunk show trunk2", true);
    assert_eq!(shown["is_admin_state_up"], false, "{shown}");
    assert_eq!(shown["description"], "second", "{shown}");
    let printed = fails(url, "network trunk delete trunk2");
    assert!(printed.contains("disabled"), "{printed}");
    run(url, "network trunk set --enable trunk2", false);
    run(url, "network trunk delete trunk2", false);
    assert_eq!(run(url, "network trunk list", true), json!([]));
    assert_eq!(run(url, "port show vlan200", true)["device_owner"], "");
    run(url, "port delete vm-parent vlan100 vlan200", false);
}
