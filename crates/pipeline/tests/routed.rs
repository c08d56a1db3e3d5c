//! Distributed routing checked with the packet simulator, without Open vSwitch. Chassis `ch1`; router
//! R joins network A (10.0.1.0/24 and 2001:db8:1::/64) and network B (10.0.2.0/24 and
//! 2001:db8:2::/64), with an extra route 192.168.50.0/24 via b1; a1 and b1 are local, b2 is on `ch2`.
//! A second project's network C reuses A's CIDR behind its own router R2.

use std::net::IpAddr;

use flowsim::{FlowTables, Mac, Packet, Trace, trace};
use openflow::Field;
use pipeline::apps::Punt;
use pipeline::model::link_local;
use pipeline::{Input, Pipeline};
mod common;

use serde_json::{Value, json};

const NET_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const NET_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const NET_C: &str = "cccccccc-0000-4000-8000-000000000003";
const R: &str = "dddddddd-0000-4000-8000-000000000001";
const R2: &str = "d2dddddd-0000-4000-8000-000000000002";
const TUNNEL: u32 = 1;

struct Port {
    id: &'static str,
    net: &'static str,
    mac: &'static str,
    ips: &'static [&'static str],
    host: &'static str,
    ofport: Option<u32>,
    router: Option<&'static str>,
}

const A1: Port = Port {
    id: "a1000000-0000-4000-8000-000000000001",
    net: NET_A,
    mac: "fa:16:3e:00:00:a1",
    ips: &["10.0.1.11", "2001:db8:1::11"],
    host: "ch1",
    ofport: Some(10),
    router: None,
};
const B1: Port = Port {
    id: "b1000000-0000-4000-8000-000000000001",
    net: NET_B,
    mac: "fa:16:3e:00:00:b1",
    ips: &["10.0.2.11", "2001:db8:2::11"],
    host: "ch1",
    ofport: Some(11),
    router: None,
};
const B2: Port = Port {
    id: "b2000000-0000-4000-8000-000000000002",
    net: NET_B,
    mac: "fa:16:3e:00:00:b2",
    ips: &["10.0.2.12"],
    host: "ch2",
    ofport: None,
    router: None,
};
const C1: Port = Port {
    id: "c1000000-0000-4000-8000-000000000001",
    net: NET_C,
    mac: "fa:16:3e:00:00:c1",
    ips: &["10.0.1.11"],
    host: "ch1",
    ofport: Some(12),
    router: None,
};
const RA: Port = Port {
    id: "ea000000-0000-4000-8000-00000000000a",
    net: NET_A,
    mac: "fa:16:3e:00:01:0a",
    ips: &["10.0.1.1", "2001:db8:1::1"],
    host: "",
    ofport: None,
    router: Some(R),
};
const RB: Port = Port {
    id: "eb000000-0000-4000-8000-00000000000b",
    net: NET_B,
    mac: "fa:16:3e:00:01:0b",
    ips: &["10.0.2.1", "2001:db8:2::1"],
    host: "",
    ofport: None,
    router: Some(R),
};
const RC: Port = Port {
    id: "ec000000-0000-4000-8000-00000000000c",
    net: NET_C,
    mac: "fa:16:3e:00:01:0c",
    ips: &["10.0.1.1"],
    host: "",
    ofport: None,
    router: Some(R2),
};

fn port_json(p: &Port) -> Value {
    let ips: Vec<Value> = p.ips.iter().map(|ip| json!({"ip_address": ip})).collect();
    let (owner, device) = match p.router {
        Some(r) => ("network:router_interface", r),
        None => ("compute:nova", ""),
    };
    json!({"id": p.id, "network_id": p.net, "mac_address": p.mac, "fixed_ips": ips,
        "binding:host_id": p.host, "admin_state_up": true, "device_owner": owner, "device_id": device,
        "port_security_enabled": p.router.is_none(), "security_groups": [common::OPEN_GROUP]})
}

fn put(p: &mut Pipeline, key: String, v: Value) -> pipeline::Delta {
    p.apply(Input::Object(key, Some(v)))
}

fn router_json(id: &str, routes: Value) -> Value {
    json!({"id": id, "name": "r", "admin_state_up": true, "routes": routes})
}

fn pipeline() -> Pipeline {
    let mut p = Pipeline::new("ch1");
    common::add_open_group(&mut p);
    for (id, vni) in [(NET_A, 100), (NET_B, 200), (NET_C, 300)] {
        put(
            &mut p,
            format!("/r/networks/{id}"),
            json!({"id": id, "provider:network_type": "vxlan", "provider:segmentation_id": vni}),
        );
    }
    for (id, net, cidr) in [
        ("5a", NET_A, "10.0.1.0/24"),
        ("6a", NET_A, "2001:db8:1::/64"),
        ("5b", NET_B, "10.0.2.0/24"),
        ("6b", NET_B, "2001:db8:2::/64"),
        ("5c", NET_C, "10.0.1.0/24"),
    ] {
        put(
            &mut p,
            format!("/r/subnets/{id}"),
            json!({"id": id, "network_id": net, "cidr": cidr, "enable_dhcp": false}),
        );
    }
    put(
        &mut p,
        "/chassis/ch2".into(),
        json!({"id": "ch2", "tunnel_ip": "192.168.9.2"}),
    );
    put(&mut p, "/chassis-up/ch2".into(), json!({"lease": 1}));
    let routes = json!([{"destination": "192.168.50.0/24", "nexthop": "10.0.2.11"}]);
    put(&mut p, format!("/r/routers/{R}"), router_json(R, routes));
    put(
        &mut p,
        format!("/r/routers/{R2}"),
        router_json(R2, json!([])),
    );
    for port in [A1, B1, B2, C1, RA, RB, RC] {
        put(&mut p, format!("/r/ports/{}", port.id), port_json(&port));
        if let Some(o) = port.ofport {
            p.apply(Input::Vif(port.id.into(), Some(o)));
        }
    }
    p.apply(Input::Tunnel(Some(TUNNEL)));
    p
}

fn tables(p: &Pipeline) -> FlowTables {
    FlowTables::new(p.flows().cloned(), vec![])
        .expect("flows the switch accepts")
        .with_tunnel_port(TUNNEL)
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A ping from `from` (its first address of `to`'s family) to `to`, sent to its router's MAC.
fn routed_ping(from: &Port, gateway: &Port, to: &str) -> Packet {
    let to = ip(to);
    let src = from
        .ips
        .iter()
        .map(|s| ip(s))
        .find(|a| a.is_ipv4() == to.is_ipv4())
        .unwrap();
    Packet::echo_request(mac(from.mac), mac(gateway.mac), src, to).with(Field::IpTtl, 64)
}

fn run(p: &Pipeline, in_port: u32, packet: Packet) -> Trace {
    trace(&tables(p), in_port, packet)
}

fn shown(p: &Pipeline, t: &Trace) -> String {
    t.display(|c| p.describe_cookie(c)).to_string()
}

#[test]
fn routed_locally_with_the_ttl_one_lower_and_rewritten_macs() {
    let p = pipeline();
    for to in ["10.0.2.11", "2001:db8:2::11"] {
        let t = run(&p, 10, routed_ping(&A1, &RA, to));
        assert_eq!(t.verdict.ports(), vec![11], "{}", shown(&p, &t));
        let out = &t.verdict.outputs[0].packet;
        assert_eq!(out.get(Field::IpTtl), Some(63), "{}", shown(&p, &t));
        assert_eq!(out.get(Field::EthSrc), Some(mac(RB.mac).value()));
        assert_eq!(out.get(Field::EthDst), Some(mac(B1.mac).value()));
    }
}

#[test]
fn routed_to_a_remote_port_through_the_destination_networks_tunnel() {
    let p = pipeline();
    let t = run(&p, 10, routed_ping(&A1, &RA, "10.0.2.12"));
    assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&p, &t));
    let tun = t.verdict.outputs[0].tunnel.clone().expect("tunnelled");
    assert_eq!(tun.id, 200, "the destination network's VNI");
    assert_eq!(
        tun.dst,
        "192.168.9.2".parse::<std::net::Ipv4Addr>().unwrap()
    );
}

#[test]
fn router_addresses_answer_echo_requests_from_any_interface() {
    let p = pipeline();
    for to in ["10.0.1.1", "10.0.2.1", "2001:db8:2::1"] {
        let t = run(&p, 10, routed_ping(&A1, &RA, to));
        assert_eq!(t.verdict.ports(), vec![10], "{to}: {}", shown(&p, &t));
        let out = &t.verdict.outputs[0].packet;
        assert_eq!(out.get(Field::EthDst), Some(mac(A1.mac).value()));
        assert_eq!(out.get(Field::EthSrc), Some(mac(RA.mac).value()));
        let (src, dst) = match ip(to) {
            IpAddr::V4(_) => (Field::Ipv4Src, Field::Ipv4Dst),
            IpAddr::V6(_) => (Field::Ipv6Src, Field::Ipv6Dst),
        };
        let to_value = |a: IpAddr| match a {
            IpAddr::V4(v4) => u128::from(u32::from(v4)),
            IpAddr::V6(v6) => u128::from(v6),
        };
        assert_eq!(out.get(src), Some(to_value(ip(to))));
        let a1 = if ip(to).is_ipv4() {
            A1.ips[0]
        } else {
            A1.ips[1]
        };
        assert_eq!(out.get(dst), Some(to_value(ip(a1))));
        let reply_type = if ip(to).is_ipv4() {
            out.get(Field::IcmpType)
        } else {
            out.get(Field::Icmpv6Type)
        };
        assert_eq!(reply_type, Some(if ip(to).is_ipv4() { 0 } else { 129 }));
    }
}

#[test]
fn an_expiring_ttl_goes_to_the_agent() {
    let p = pipeline();
    let t = run(
        &p,
        10,
        routed_ping(&A1, &RA, "10.0.2.11").with(Field::IpTtl, 1),
    );
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&p, &t));
    assert_eq!(
        Punt::from_userdata(&t.verdict.controller[0].userdata),
        Some(Punt::TtlExceeded)
    );
}

#[test]
fn extra_routes_go_through_their_next_hop() {
    let p = pipeline();
    let t = run(&p, 10, routed_ping(&A1, &RA, "192.168.50.7"));
    assert_eq!(t.verdict.ports(), vec![11], "{}", shown(&p, &t));
    let out = &t.verdict.outputs[0].packet;
    assert_eq!(out.get(Field::EthDst), Some(mac(B1.mac).value()));
    assert_eq!(out.get(Field::IpTtl), Some(63));
    // No route: dropped.
    let t = run(&p, 10, routed_ping(&A1, &RA, "192.168.51.7"));
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
}

#[test]
fn another_projects_router_with_the_same_cidr_stays_apart() {
    let p = pipeline();
    // C1 has A1's address; its router knows only network C.
    let t = run(&p, 12, routed_ping(&C1, &RC, "10.0.2.11"));
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
    // And A1 reaches B1 through R whatever C does.
    let t = run(&p, 10, routed_ping(&A1, &RC, "10.0.2.11"));
    assert!(
        t.verdict.ports().iter().all(|p| *p != 11),
        "{}",
        shown(&p, &t)
    );
}

#[test]
fn removing_an_interface_cuts_exactly_its_subnet() {
    let mut p = pipeline();
    p.apply(Input::Object(format!("/r/ports/{}", RB.id), None));
    let t = run(&p, 10, routed_ping(&A1, &RA, "10.0.2.11"));
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
    // On-link traffic on A still works: A1 answers ARP for the gateway still.
    let arp = Packet::arp_request(
        mac(A1.mac),
        "10.0.1.11".parse().unwrap(),
        "10.0.1.1".parse().unwrap(),
    );
    let t = run(&p, 10, arp);
    assert_eq!(t.verdict.ports(), vec![10], "{}", shown(&p, &t));
}

#[test]
fn router_solicitations_and_link_local_solicitations_go_to_the_agent() {
    let p = pipeline();
    let ll = link_local(pipeline::model::parse_mac(RA.mac).unwrap());
    let a1_ll = link_local(pipeline::model::parse_mac(A1.mac).unwrap());
    let ns = Packet::neighbor_solicitation(mac(A1.mac), a1_ll, ll);
    let t = run(&p, 10, ns);
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&p, &t));
    assert_eq!(
        Punt::from_userdata(&t.verdict.controller[0].userdata),
        Some(Punt::NeighbourSolicitation)
    );
    assert_eq!(
        p.port_of_cookie(t.verdict.controller[0].cookie)
            .map(|p| p.id.as_str()),
        Some(RA.id)
    );
    let rs = Packet::ipv6(
        mac(A1.mac),
        mac("33:33:00:00:00:02"),
        a1_ll,
        "ff02::2".parse().unwrap(),
        58,
    )
    .with(Field::Icmpv6Type, 133)
    .with(Field::Icmpv6Code, 0);
    let t = run(&p, 10, rs);
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&p, &t));
    assert_eq!(
        Punt::from_userdata(&t.verdict.controller[0].userdata),
        Some(Punt::RouterSolicitation)
    );
}

#[test]
fn cookies_name_routers_and_interfaces() {
    let p = pipeline();
    let t = run(&p, 10, routed_ping(&A1, &RA, "10.0.2.11"));
    let text = shown(&p, &t);
    assert!(text.contains(&format!("router {R}")), "{text}");
    assert!(
        text.contains(&format!("router interface {}", RA.id)),
        "{text}"
    );
}
