//! Drives the service function chaining API with the real `openstack sfc ...` commands (the OSC
//! plugin of python-neutronclient, which networking-sfc documents; auth type `none`) against a live
//! in-process server: port pairs of two service VMs' ports, port pair groups with load-balancing
//! fields, flow classifiers, a port chain, changes through `set`/`unset`, the in-use refusals and
//! the deletes, with the names an operator types (the CLI resolves them through the API).
//!
//! The CLI is `<repo>/.venv/bin/openstack` (made by `scripts/install-deps`, which installs
//! python-neutronclient for these commands) or `$WYVERN_OPENSTACK_CLI`.

use crate::cli;
use crate::support;
use cli::{fails, run};

use serde_json::json;

#[test]
fn openstack_sfc_commands() {
    let server = support::Server::start();
    let url = server.base.as_str();
    run(url, "network create sfcnet", true);
    run(
        url,
        "subnet create --network sfcnet --subnet-range 10.8.0.0/24 sfcsub",
        true,
    );
    let mut ports = std::collections::HashMap::new();
    for (name, device) in [
        ("sf1-in", "sf1"),
        ("sf1-out", "sf1"),
        ("sf2-in", "sf2"),
        ("sf2-out", "sf2"),
        ("client", "client-vm"),
    ] {
        let port = run(
            url,
            &format!("port create --network sfcnet --device {device} {name}"),
            true,
        );
        ports.insert(name, port["id"].as_str().unwrap_or_default().to_string());
    }

    let pp1 = run(
        url,
        "sfc port pair create --ingress sf1-in --egress sf1-out pp1",
        true,
    );
    assert_eq!(pp1["Ingress Logical Port"], ports["sf1-in"], "{pp1}");
    assert_eq!(
        pp1["Service Function Parameters"],
        json!({"correlation": null, "weight": 1}),
        "{pp1}"
    );
    let pp2 = run(
        url,
        "sfc port pair create --ingress sf2-in --egress sf2-out \
         --service-function-parameters correlation=mpls,weight=2 pp2",
        true,
    );
    assert_eq!(
        pp2["Service Function Parameters"],
        json!({"correlation": "mpls", "weight": 2}),
        "{pp2}"
    );
    let printed = fails(
        url,
        "sfc port pair create --ingress sf1-in --egress client pp-bad",
    );
    assert!(printed.contains("not in the same host"), "{printed}");

    let ppg1 = run(
        url,
        "sfc port pair group create --port-pair pp1 \
         --port-pair-group-parameters lb-fields=ip_src&ip_dst ppg1",
        true,
    );
    assert_eq!(ppg1["Port Pair"], json!([pp1["ID"]]), "{ppg1}");
    assert_eq!(
        ppg1["Port Pair Group Parameters"]["lb_fields"],
        json!(["ip_src", "ip_dst"]),
        "{ppg1}"
    );
    run(url, "sfc port pair group create --port-pair pp2 ppg2", true);
    let printed = fails(url, "sfc port pair group create --port-pair pp1 ppg-bad");
    assert!(printed.contains("in use"), "{printed}");

    let fc1 = run(
        url,
        "sfc flow classifier create --protocol tcp --destination-port 80:80 \
         --source-ip-prefix 10.8.0.0/24 --logical-source-port client web",
        true,
    );
    assert_eq!(fc1["Protocol"], "tcp", "{fc1}");
    assert_eq!(fc1["Destination Port Range Min"], 80, "{fc1}");
    assert_eq!(fc1["Logical Source Port"], ports["client"], "{fc1}");
    run(
        url,
        "sfc flow classifier create --protocol udp --destination-port 53:53 \
         --logical-source-port client dns",
        true,
    );

    let pc1 = run(
        url,
        "sfc port chain create --port-pair-group ppg1 --port-pair-group ppg2 \
         --flow-classifier web --chain-parameters correlation=mpls,symmetric=true pc1",
        true,
    );
    assert_eq!(
        pc1["Port Pair Groups"].as_array().map(Vec::len),
        Some(2),
        "{pc1}"
    );
    assert_eq!(
        pc1["Chain Parameters"],
        json!({"correlation": "mpls", "symmetric": true}),
        "{pc1}"
    );
    run(url, "sfc port chain set --flow-classifier dns pc1", false);
    let shown = run(url, "sfc port chain show pc1", true);
    assert_eq!(
        shown["Flow Classifiers"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );
    run(url, "sfc port chain unset --flow-classifier dns pc1", false);
    let listed = run(url, "sfc port chain list", true);
    assert_eq!(listed[0]["Name"], "pc1", "{listed}");
    assert_eq!(
        listed[0]["Flow Classifiers"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );

    let printed = fails(url, "sfc port pair delete pp1");
    assert!(printed.contains("in use"), "{printed}");
    let printed = fails(url, "sfc port pair group delete ppg1");
    assert!(printed.contains("in use"), "{printed}");
    let printed = fails(url, "sfc flow classifier delete web");
    assert!(printed.contains("in use"), "{printed}");

    run(url, "sfc port chain delete pc1", false);
    run(url, "sfc port pair group delete ppg1 ppg2", false);
    run(url, "sfc port pair delete pp1 pp2", false);
    run(url, "sfc flow classifier delete web dns", false);
    for what in [
        "port chain",
        "port pair group",
        "port pair",
        "flow classifier",
    ] {
        assert_eq!(
            run(url, &format!("sfc {what} list"), true),
            json!([]),
            "{what}"
        );
    }
}
