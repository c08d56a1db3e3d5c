//! A trunk: VM tvm's port on web (c1) is the parent, its subport on db (VLAN 101) too; web2 and
//! db2 elsewhere. A subport's packet enters at the parent's port with its tag; the trace says
//! what the trunk did, in API terms, both ways.

use serde_json::json;
use trace::{Local, Probe, simulate};

use super::{chassis, computed, inventory, network, port, request, subnet};

const WEB: &str = "11111111-1111-4111-8111-111111111111";
const DB: &str = "22222222-2222-4222-8222-222222222222";
const PARENT: &str = "a1000000-0000-4000-8000-000000000001";
const SUB: &str = "a5000000-0000-4000-8000-000000000005";
const TRUNK: &str = "77000000-0000-4000-8000-000000000007";

fn inv() -> trace::Inventory {
    let mut items = vec![
        network(WEB, "web", 1),
        subnet("s-web", WEB, "10.0.0.0/24", "10.0.0.1"),
        network(DB, "db", 2),
        subnet("s-db", DB, "10.1.0.0/24", "10.1.0.1"),
        port(PARENT, "tvm", WEB, "fa:16:3e:00:00:11", "10.0.0.11", "c1"),
        port(SUB, "tvm.101", DB, "fa:16:3e:00:00:15", "10.1.0.15", "c1"),
        port(
            "a2000000-0000-4000-8000-000000000002",
            "web2",
            WEB,
            "fa:16:3e:00:00:12",
            "10.0.0.12",
            "c2",
        ),
        port(
            "b2000000-0000-4000-8000-000000000002",
            "db2",
            DB,
            "fa:16:3e:00:01:12",
            "10.1.0.12",
            "c1",
        ),
        (
            format!("/r/trunks/{TRUNK}"),
            json!({"id": TRUNK, "name": "t", "port_id": PARENT, "_network_ids": [WEB, DB],
                "sub_ports": [{"port_id": SUB, "segmentation_type": "vlan", "segmentation_id": 101}]}),
        ),
    ];
    items.extend(chassis("c1", "172.31.0.1"));
    items.extend(chassis("c2", "172.31.0.2"));
    inventory(items, &[(PARENT, "tvm")])
}

#[test]
fn a_subports_packet_enters_tagged_at_the_parent_and_the_trunk_is_named() {
    let inv = inv();
    let local = Local::from_bindings(&inv, "c1");
    assert!(local.inner.contains_key(SUB), "{local:?}");
    let r = simulate(
        &inv,
        &local,
        computed(&inv, &local),
        &request("tvm.101", "10.1.0.12", Probe::Echo),
    )
    .unwrap();
    println!("{r}");
    assert_eq!(
        r.trace.packet.vlans().first().map(|t| t.vid),
        Some(101),
        "{r}"
    );
    assert!(
        r.header
            .iter()
            .any(|l| l.contains("the parent port of port tvm.101's trunk, tagged with VLAN 101")),
        "{:?}",
        r.header
    );
    assert!(
        r.path.iter().any(
            |l| l.starts_with("VLAN 101 on trunk 77000000… (t) of parent port tvm")
                && l.contains("port tvm.101")
        ),
        "{:?}",
        r.path
    );
    assert_eq!(
        r.verdict_text(),
        "delivered to port db2 on this chassis",
        "{r}"
    );
    // db2's answer leaves through the parent's port, tagged.
    let r = simulate(
        &inv,
        &local,
        computed(&inv, &local),
        &request("db2", "10.1.0.15", Probe::Echo),
    )
    .unwrap();
    println!("{r}");
    assert!(
        r.path
            .iter()
            .any(|l| l.contains("out through the parent's port tagged with VLAN 101")),
        "{:?}",
        r.path
    );
    let parent = local.vifs[PARENT];
    assert_eq!(r.trace.verdict.ports(), vec![parent], "{r}");
    assert_eq!(r.trace.verdict.outputs[0].packet.vlans()[0].vid, 101);
}
