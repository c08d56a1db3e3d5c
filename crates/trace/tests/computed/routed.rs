//! Networks joined by routers, traced on chassis ch1. Router r1 joins network a (10.0.1.0/24,
//! 2001:db8:1::/64) and network b (10.0.2.0/24), with extra routes 192.168.50.0/24 via b1 and
//! 192.168.60.0/24 via 10.0.2.99, an address no port has; a1 and b1 are on ch1, b2 on ch2. Another
//! project's network c reuses a's CIDR behind its own router r2; network ext is flat, on a physical network the chassis has no bridge mapping for.

use serde_json::{Value, json};
use trace::{ArpKind, Inventory, Local, Probe, Report, simulate};

use super::{
    Item, chassis, computed, inventory as items_inventory, network, port, request, subnet,
};

const NET_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const NET_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const NET_C: &str = "cccccccc-0000-4000-8000-000000000003";
const NET_EXT: &str = "eeeeeeee-0000-4000-8000-000000000004";
const R1: &str = "dddddddd-0000-4000-8000-000000000001";
const R2: &str = "d2dddddd-0000-4000-8000-000000000002";
const A1: &str = "a1000000-0000-4000-8000-000000000001";
const B1: &str = "b1000000-0000-4000-8000-000000000001";
const B2: &str = "b2000000-0000-4000-8000-000000000002";
const C1: &str = "c1000000-0000-4000-8000-000000000001";
const X1: &str = "e1000000-0000-4000-8000-000000000001";

/// A port of `router` on `net` (Neutron's router interface).
fn interface(id: &str, net: &str, mac: &str, ips: &str, router: &str) -> Item {
    let (key, mut v) = port(id, "", net, mac, ips, "");
    v["device_owner"] = json!("network:router_interface");
    v["device_id"] = json!(router);
    v["port_security_enabled"] = json!(false);
    (key, v)
}

fn router(id: &str, name: &str, routes: Value) -> Item {
    (
        format!("/r/routers/{id}"),
        json!({"id": id, "name": name, "admin_state_up": true, "routes": routes}),
    )
}

fn inventory() -> Inventory {
    let flat = (
        format!("/r/networks/{NET_EXT}"),
        json!({"id": NET_EXT, "name": "ext", "provider:network_type": "flat",
               "provider:physical_network": "physnet1"}),
    );
    let routes = json!([
        {"destination": "192.168.50.0/24", "nexthop": "10.0.2.11"},
        {"destination": "192.168.60.0/24", "nexthop": "10.0.2.99"},
    ]);
    let mut items = vec![
        network(NET_A, "a", 100),
        subnet("s-a", NET_A, "10.0.1.0/24", "10.0.1.1"),
        subnet("s-a6", NET_A, "2001:db8:1::/64", "2001:db8:1::1"),
        network(NET_B, "b", 200),
        subnet("s-b", NET_B, "10.0.2.0/24", "10.0.2.1"),
        network(NET_C, "c", 300),
        subnet("s-c", NET_C, "10.0.1.0/24", "10.0.1.1"),
        flat,
        subnet("s-ext", NET_EXT, "10.9.0.0/24", "10.9.0.1"),
        router(R1, "r1", routes),
        router(R2, "r2", json!([])),
        port(
            A1,
            "a1",
            NET_A,
            "fa:16:3e:00:00:a1",
            "10.0.1.11,2001:db8:1::11",
            "ch1",
        ),
        port(B1, "b1", NET_B, "fa:16:3e:00:00:b1", "10.0.2.11", "ch1"),
        port(B2, "b2", NET_B, "fa:16:3e:00:00:b2", "10.0.2.12", "ch2"),
        port(C1, "c1", NET_C, "fa:16:3e:00:00:c1", "10.0.1.11", "ch1"),
        port(X1, "x1", NET_EXT, "fa:16:3e:00:00:e1", "10.9.0.11", "ch1"),
        interface(
            "ea000000-0000-4000-8000-00000000000a",
            NET_A,
            "fa:16:3e:00:01:0a",
            "10.0.1.1,2001:db8:1::1",
            R1,
        ),
        interface(
            "eb000000-0000-4000-8000-00000000000b",
            NET_B,
            "fa:16:3e:00:01:0b",
            "10.0.2.1",
            R1,
        ),
        interface(
            "ec000000-0000-4000-8000-00000000000c",
            NET_C,
            "fa:16:3e:00:01:0c",
            "10.0.1.1",
            R2,
        ),
    ];
    items.extend(chassis("ch1", "192.168.9.1"));
    items.extend(chassis("ch2", "192.168.9.2"));
    items_inventory(
        items,
        &[(A1, "a1"), (B1, "b1"), (B2, "b2"), (C1, "c1"), (X1, "x1")],
    )
}

/// `probe` from `from` to `to` (with `ttl` if given), traced on ch1.
fn run(from: &str, to: &str, probe: Probe, ttl: Option<u8>) -> Report {
    let inv = inventory();
    let local = Local::from_bindings(&inv, "ch1");
    let mut req = request(from, to, probe);
    req.ttl = ttl;
    let report = simulate(&inv, &local, computed(&inv, &local), &req).unwrap();
    println!("{report}");
    report
}

const ENTERS_R1: &str =
    "enters router r1 (dddddddd…) through its interface on network a (aaaaaaaa…)";

#[test]
fn routed_over_a_connected_subnet() {
    let r = run("a1", "10.0.2.12", Probe::Echo, None);
    assert_eq!(
        r.path,
        [
            ENTERS_R1,
            "routed by router r1 via its interface on network b (bbbbbbbb…): 10.0.2.0/24 (connected)",
            "next hop 10.0.2.12 is port b2 (VM b2)",
        ]
    );
    assert_eq!(
        r.verdict,
        ["sent over the tunnel to chassis ch2 (192.168.9.2) with VNI 200 → for port b2 (VM b2)"]
    );
    assert!(
        r.header.iter().any(|h| h
            == "  10.0.2.12 is an address of port b2 (VM b2) on network b (bbbbbbbb…), which \
                router r1 (dddddddd…) joins to a"),
        "{:?}",
        r.header
    );
    // Every step names its stage, and the router's flows their router and interface.
    for stage in [
        "table 20 (l3-entry, app routing): ",
        "table 21 (router-input, app routing): ",
        "table 22 (ip-routing, app routing): ",
        "table 23 (next-hop, app routing): ",
        "table 30 (l2-lookup, app l2): ",
    ] {
        assert!(r.steps.contains(stage), "{stage}: {}", r.steps);
    }
    assert!(
        r.steps.contains(
            "owner: router interface of router r1 (dddddddd…) on network a (aaaaaaaa…), \
             addresses 10.0.1.1, 2001:db8:1::1"
        ),
        "{}",
        r.steps
    );
    assert!(
        r.steps.contains("owner: router r1 (dddddddd…)\n"),
        "{}",
        r.steps
    );
    assert!(!r.steps.contains("stale"), "{}", r.steps);
    // To a port on this chassis.
    let r = run("a1", "b1", Probe::Tcp(22), None);
    assert_eq!(r.verdict, ["delivered to port b1 (VM b1) on this chassis"]);
}

#[test]
fn routed_by_an_extra_route() {
    let r = run("a1", "192.168.50.7", Probe::Echo, None);
    assert_eq!(
        r.path,
        [
            ENTERS_R1,
            "routed by router r1 via its interface on network b (bbbbbbbb…): extra route \
             192.168.50.0/24 via 10.0.2.11, which is port b1 (VM b1)",
        ]
    );
    assert_eq!(r.verdict, ["delivered to port b1 (VM b1) on this chassis"]);
}

#[test]
fn the_router_answers_pings_to_its_addresses() {
    for (to, from) in [("10.0.2.1", "10.0.2.1"), ("10.0.1.1", "10.0.1.1")] {
        let r = run("a1", to, Probe::Echo, None);
        assert_eq!(r.path, [ENTERS_R1]);
        assert_eq!(
            r.verdict,
            [format!(
                "answered by router r1 (dddddddd…): ICMP echo reply from {from}"
            )]
        );
    }
    let r = run("a1", "2001:db8:1::1", Probe::Echo, None);
    assert_eq!(
        r.verdict,
        ["answered by router r1 (dddddddd…): ICMPv6 echo reply from 2001:db8:1::1"]
    );
    // Nothing else is for the router.
    let r = run("a1", "10.0.2.1", Probe::Tcp(22), None);
    assert_eq!(
        r.verdict,
        [
            "dropped by router r1 (dddddddd…): 10.0.2.1 is its own address, and it answers only \
             ICMP echo requests"
        ]
    );
}

#[test]
fn an_expiring_ttl_goes_to_the_agent() {
    let r = run("a1", "10.0.2.12", Probe::Echo, Some(1));
    assert!(
        r.header.iter().any(|h| h == "  sent with TTL 1"),
        "{:?}",
        r.header
    );
    assert_eq!(r.path, [ENTERS_R1]);
    assert_eq!(
        r.verdict,
        [
            "TTL would expire in router r1 (dddddddd…): sent to the agent of this chassis, which \
             answers with ICMP time exceeded from its interface on network a (aaaaaaaa…)",
            "port b2 (VM b2) did not get it",
        ]
    );
}

#[test]
fn no_route_no_next_hop() {
    let r = run("a1", "192.168.51.7", Probe::Echo, None);
    assert_eq!(r.path, [ENTERS_R1]);
    assert_eq!(
        r.verdict,
        ["no route in router r1 (dddddddd…) to 192.168.51.7: dropped"]
    );
    // An extra route whose next hop no port has drops rather than falling back.
    let r = run("a1", "192.168.60.7", Probe::Echo, None);
    assert_eq!(
        r.verdict,
        [
            "dropped by router r1 (dddddddd…): its extra route 192.168.60.0/24 goes via \
             10.0.2.99, which no port on its networks has (no next hop; a shorter route is not \
             taken)"
        ]
    );
    // A connected subnet's address that no port has.
    let r = run("a1", "10.0.2.99", Probe::Echo, None);
    assert_eq!(
        r.path,
        [
            ENTERS_R1,
            "routed by router r1 via its interface on network b (bbbbbbbb…): 10.0.2.0/24 (connected)",
        ]
    );
    assert_eq!(
        r.verdict,
        [
            "routed by router r1 (dddddddd…) onto network b (bbbbbbbb…), where no port has \
             10.0.2.99: dropped (no next hop)"
        ]
    );
}

#[test]
fn another_projects_router_is_isolated() {
    // c1 has a1's address on c's CIDR; its router r2 knows only network c.
    let r = run("c1", "10.0.2.11", Probe::Echo, None);
    assert_eq!(
        r.path,
        ["enters router r2 (d2dddddd…) through its interface on network c (cccccccc…)"]
    );
    assert_eq!(
        r.verdict,
        ["no route in router r2 (d2dddddd…) to 10.0.2.11: dropped"]
    );
    assert!(
        r.header.iter().any(|h| h
            == "  10.0.2.11 is also an address of port b1 (VM b1) on network b (bbbbbbbb…), \
                another network, which no router joins to c"),
        "{:?}",
        r.header
    );
    // Sent to c1's MAC from a: a's router does not take it, and c1 does not get it.
    let r = run("a1", "c1", Probe::Echo, None);
    assert!(r.path.is_empty(), "{:?}", r.path);
    assert_eq!(
        r.verdict.last().map(String::as_str),
        Some(
            "port c1 (VM c1) did not get it: it is on network c (cccccccc…), and different \
             networks are isolated (no router joins them)"
        )
    );
}

#[test]
fn solicitations_for_the_router_go_to_the_agent() {
    let r = run(
        "a1",
        "fe80::f816:3eff:fe00:10a",
        Probe::Arp(ArpKind::Request),
        None,
    );
    assert_eq!(
        r.verdict,
        [
            "answered by the ND responder for router r1's interface on network a: the agent of \
             this chassis replies that fe80::f816:3eff:fe00:10a is at fa:16:3e:00:01:0a, as a \
             router"
        ]
    );
}

#[test]
fn router_solicitations_go_to_the_agent() {
    let inv = inventory();
    let local = Local::from_bindings(&inv, "ch1");
    let mut built = trace::request::build(&inv, &request("a1", "ff02::2", Probe::Echo)).unwrap();
    let a1_mac: flowsim::Mac = "fa:16:3e:00:00:a1".parse().unwrap();
    let a1_ll = pipeline::model::link_local(0xfa16_3e00_00a1);
    built.packet = flowsim::Packet::ipv6(
        a1_mac,
        "33:33:00:00:00:02".parse().unwrap(),
        a1_ll,
        "ff02::2".parse().unwrap(),
        58,
    )
    .with(openflow::Field::Icmpv6Type, 133)
    .with(openflow::Field::Icmpv6Code, 0);
    let tables = flowsim::FlowTables::new(computed(&inv, &local).flows, [])
        .unwrap()
        .with_tunnel_port(1);
    let t = flowsim::trace(&tables, local.vifs[A1], built.packet.clone());
    assert_eq!(
        trace::explain::verdict(&inv, &local, &built, &t),
        [
            "router solicitation on network a (aaaaaaaa…): sent to the agent of this chassis, \
             which answers with a router advertisement of router r1 (dddddddd…)"
        ],
        "{}",
        t
    );
}

#[test]
fn a_physical_network_the_chassis_does_not_reach_is_named() {
    let r = run("x1", "10.9.0.1", Probe::Echo, None);
    assert_eq!(
        r.verdict,
        [
            "dropped at ingress: network ext (eeeeeeee…) is a flat network on physical network \
             physnet1, which this chassis has no bridge mapping for"
        ]
    );
}
