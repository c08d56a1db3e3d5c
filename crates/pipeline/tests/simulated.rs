//! The pipeline checked with the packet simulator, without Open vSwitch: a chassis `ch1` with two local
//! ports and one remote port on network A, a local port on network B that reuses A's addresses, and a
//! port without port security.

use std::net::{IpAddr, Ipv4Addr};

use flowsim::{FlowTables, Mac, Packet, Tunnel, trace};
use openflow::Field;
use pipeline::cookie::Owner;
use pipeline::{Input, Pipeline};
mod common;

use serde_json::json;

const NET_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const NET_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const TUNNEL: u32 = 1;

struct Port {
    id: &'static str,
    mac: &'static str,
    ip: &'static str,
    ofport: Option<u32>,
}

const A1: Port = Port {
    id: "a1000000-0000-4000-8000-000000000001",
    mac: "fa:16:3e:00:00:a1",
    ip: "10.0.0.11",
    ofport: Some(10),
};
const A2: Port = Port {
    id: "a2000000-0000-4000-8000-000000000002",
    mac: "fa:16:3e:00:00:a2",
    ip: "10.0.0.12",
    ofport: Some(11),
};
const A3: Port = Port {
    id: "a3000000-0000-4000-8000-000000000003",
    mac: "fa:16:3e:00:00:a3",
    ip: "10.0.0.13",
    ofport: None,
};
const B1: Port = Port {
    id: "b1000000-0000-4000-8000-000000000001",
    mac: "fa:16:3e:00:00:b1",
    ip: "10.0.0.12",
    ofport: Some(12),
};
const OPEN: Port = Port {
    id: "c1000000-0000-4000-8000-000000000001",
    mac: "fa:16:3e:00:00:c1",
    ip: "10.0.0.14",
    ofport: Some(13),
};

fn port_json(p: &Port, net: &str, host: &str, secure: bool) -> serde_json::Value {
    json!({"id": p.id, "network_id": net, "mac_address": p.mac, "name": p.id[..2].to_string(),
        "fixed_ips": [{"ip_address": p.ip}], "port_security_enabled": secure,
        "binding:host_id": host, "status": "ACTIVE", "admin_state_up": true,
        "security_groups": [common::OPEN_GROUP]})
}

fn pipeline() -> Pipeline {
    let mut p = Pipeline::new("ch1");
    common::add_open_group(&mut p);
    let obj = |k: String, v: serde_json::Value| Input::Object(k, Some(v));
    for (id, vni) in [(NET_A, 100), (NET_B, 200)] {
        p.apply(obj(
            format!("/r/networks/{id}"),
            json!({"id": id, "provider:network_type": "vxlan", "provider:segmentation_id": vni}),
        ));
    }
    p.apply(obj(
        "/chassis/ch2".into(),
        json!({"id": "ch2", "tunnel_ip": "192.168.9.2"}),
    ));
    p.apply(obj("/chassis-up/ch2".into(), json!({"lease": 1})));
    for (port, net, host, secure) in [
        (A1, NET_A, "ch1", true),
        (A2, NET_A, "ch1", true),
        (A3, NET_A, "ch2", true),
        (B1, NET_B, "ch1", true),
        (OPEN, NET_A, "ch1", false),
    ] {
        p.apply(obj(
            format!("/r/ports/{}", port.id),
            port_json(&port, net, host, secure),
        ));
        if let Some(o) = port.ofport {
            p.apply(Input::Vif(port.id.into(), Some(o)));
        }
    }
    p.apply(Input::Tunnel(Some(TUNNEL)));
    // Network A serves DHCP, network B does not.
    for (id, net, dhcp) in [("5a", NET_A, true), ("5b", NET_B, false)] {
        p.apply(obj(
            format!("/r/subnets/{id}"),
            json!({"id": id, "network_id": net, "cidr": "10.0.0.0/24", "enable_dhcp": dhcp,
                "gateway_ip": "10.0.0.1"}),
        ));
    }
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

fn ping(from: &Port, to_mac: &str, to_ip: &str) -> Packet {
    Packet::echo_request(mac(from.mac), mac(to_mac), ip(from.ip), ip(to_ip))
}

#[test]
fn local_delivery_on_the_same_network() {
    let p = pipeline();
    let t = trace(&tables(&p), 10, ping(&A1, A2.mac, A2.ip));
    assert_eq!(
        t.verdict.ports(),
        vec![11],
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
}

#[test]
fn remote_delivery_goes_over_the_tunnel_with_the_vni() {
    let p = pipeline();
    let t = trace(&tables(&p), 10, ping(&A1, A3.mac, A3.ip));
    let out = &t.verdict.outputs;
    assert_eq!(out.len(), 1, "{}", t.display(|c| p.describe_cookie(c)));
    assert_eq!(out[0].port, TUNNEL);
    assert_eq!(out[0].packet.get(Field::TunId), Some(100));
    assert_eq!(
        out[0].packet.get(Field::TunDst),
        Some(u128::from(u32::from(Ipv4Addr::new(192, 168, 9, 2))))
    );
}

#[test]
fn networks_with_the_same_cidr_stay_isolated() {
    let p = pipeline();
    // A1 addresses B1 (same IP as A2, other network): B1 must not receive it.
    let t = trace(&tables(&p), 10, ping(&A1, B1.mac, B1.ip));
    assert!(
        !t.verdict.ports().contains(&12),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
    // From the tunnel with network B's VNI, A1's MAC is unknown: nothing reaches A1.
    let tun = Tunnel::new(
        200,
        Ipv4Addr::new(192, 168, 9, 2),
        Ipv4Addr::new(192, 168, 9, 1),
    );
    let t = trace(
        &tables(&p),
        TUNNEL,
        ping(&A3, A1.mac, A1.ip).with_tunnel(&tun),
    );
    assert!(
        !t.verdict.ports().contains(&10),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
    // With network A's VNI it is delivered.
    let tun = Tunnel::new(
        100,
        Ipv4Addr::new(192, 168, 9, 2),
        Ipv4Addr::new(192, 168, 9, 1),
    );
    let t = trace(
        &tables(&p),
        TUNNEL,
        ping(&A3, A1.mac, A1.ip).with_tunnel(&tun),
    );
    assert_eq!(t.verdict.ports(), vec![10]);
}

#[test]
fn spoofed_source_ip_or_mac_is_dropped() {
    let p = pipeline();
    let spoofed_ip = Packet::echo_request(mac(A1.mac), mac(A2.mac), ip("10.0.0.99"), ip(A2.ip));
    let t = trace(&tables(&p), 10, spoofed_ip);
    assert!(
        t.verdict.ports().is_empty(),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
    let spoofed_mac =
        Packet::echo_request(mac("fa:16:3e:99:99:99"), mac(A2.mac), ip(A1.ip), ip(A2.ip));
    let t = trace(&tables(&p), 10, spoofed_mac);
    assert!(t.verdict.ports().is_empty());
    // An ARP reply claiming another port's address is dropped too.
    let arp = Packet::arp_reply(
        mac(A1.mac),
        "10.0.0.12".parse().unwrap(),
        mac(A3.mac),
        "10.0.0.13".parse().unwrap(),
    );
    let t = trace(&tables(&p), 10, arp);
    assert!(t.verdict.ports().is_empty());
}

#[test]
fn arp_probes_stop_at_port_security_and_are_never_answered() {
    let p = pipeline();
    // From a port with port security: dropped at ingress (docs: apps/classifier.rs), so a guest's
    // duplicate address detection hears nothing and goes ahead.
    for target in [A1.ip, A2.ip] {
        let probe =
            Packet::arp_request(mac(A1.mac), Ipv4Addr::UNSPECIFIED, target.parse().unwrap());
        let t = trace(&tables(&p), 10, probe);
        assert!(
            t.verdict.ports().is_empty() && t.verdict.controller.is_empty(),
            "{}",
            t.display(|c| p.describe_cookie(c))
        );
    }
    // From a port without port security: flooded, never answered by the responder, not even
    // for an address a port holds.
    let probe = Packet::arp_request(mac(OPEN.mac), Ipv4Addr::UNSPECIFIED, A1.ip.parse().unwrap());
    let t = trace(&tables(&p), 13, probe);
    let mut ports = t.verdict.ports();
    ports.sort();
    assert_eq!(
        ports,
        vec![TUNNEL, 10, 11],
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
    assert!(
        t.verdict
            .outputs
            .iter()
            .all(|o| o.packet.get(Field::ArpOp) == Some(1))
    );
}

#[test]
fn port_security_disabled_lets_anything_through() {
    let p = pipeline();
    let any = Packet::echo_request(
        mac("02:00:00:00:00:99"),
        mac(A1.mac),
        ip("192.0.2.1"),
        ip(A1.ip),
    );
    let t = trace(&tables(&p), 13, any);
    assert_eq!(
        t.verdict.ports(),
        vec![10],
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
}

#[test]
fn tagged_frames_from_a_vif_are_dropped_with_or_without_port_security() {
    let p = pipeline();
    // A1's own addresses, but 802.1Q-tagged: a VIF is an access port, not a trunk.
    let tagged =
        Packet::echo_request(mac(A1.mac), mac(A2.mac), ip(A1.ip), ip(A2.ip)).with_vlan(5, 0);
    let t = trace(&tables(&p), 10, tagged);
    assert!(
        t.verdict.ports().is_empty(),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
    let untagged = Packet::echo_request(mac(A1.mac), mac(A2.mac), ip(A1.ip), ip(A2.ip));
    assert_eq!(trace(&tables(&p), 10, untagged).verdict.ports(), vec![11]);
    let open =
        Packet::echo_request(mac(OPEN.mac), mac(A1.mac), ip(OPEN.ip), ip(A1.ip)).with_vlan(5, 0);
    let t = trace(&tables(&p), 13, open);
    assert!(
        t.verdict.ports().is_empty(),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
}

#[test]
fn the_arp_responder_answers_for_known_addresses() {
    let p = pipeline();
    let req = Packet::arp_request(mac(A1.mac), A1.ip.parse().unwrap(), A3.ip.parse().unwrap());
    let t = trace(&tables(&p), 10, req);
    let out = &t.verdict.outputs;
    assert_eq!(out.len(), 1, "{}", t.display(|c| p.describe_cookie(c)));
    assert_eq!(out[0].port, 10, "the reply goes back to the asking port");
    let reply = &out[0].packet;
    assert_eq!(reply.get(Field::ArpOp), Some(2));
    assert_eq!(reply.get(Field::ArpSha), Some(mac(A3.mac).value()));
    assert_eq!(
        reply.get(Field::ArpSpa),
        Some(u128::from(u32::from(A3.ip.parse::<Ipv4Addr>().unwrap())))
    );
    assert_eq!(reply.get(Field::EthDst), Some(mac(A1.mac).value()));
    assert_eq!(
        reply.get(Field::ArpTpa),
        Some(u128::from(u32::from(A1.ip.parse::<Ipv4Addr>().unwrap())))
    );
}

/// Where an ARP request A1 broadcasts goes (sorted), and the trace shown.
fn a1_broadcast(p: &Pipeline) -> (Vec<u32>, String) {
    let req = Packet::arp_request(
        mac(A1.mac),
        A1.ip.parse().unwrap(),
        "10.0.0.200".parse().unwrap(),
    );
    let t = trace(&tables(p), 10, req);
    let mut ports = t.verdict.ports();
    ports.sort();
    (ports, t.display(|c| p.describe_cookie(c)).to_string())
}

#[test]
fn broadcast_reaches_local_ports_and_remote_chassis_once() {
    let p = pipeline();
    let (ports, shown) = a1_broadcast(&p);
    assert_eq!(ports, vec![TUNNEL, 11, 13], "{shown}");
    // Flooded packets from the tunnel stay on this chassis.
    let tun = Tunnel::new(
        100,
        Ipv4Addr::new(192, 168, 9, 2),
        Ipv4Addr::new(192, 168, 9, 1),
    );
    let from_remote = Packet::arp_request(
        mac(A3.mac),
        A3.ip.parse().unwrap(),
        "10.0.0.201".parse().unwrap(),
    )
    .with_tunnel(&tun);
    let mut ports = trace(&tables(&p), TUNNEL, from_remote).verdict.ports();
    ports.sort();
    assert_eq!(ports, vec![10, 11, 13]);
}

#[test]
fn flow_count_matches_the_documented_costs() {
    // docs/architecture.md: a local port with port security and one IPv4 address costs five flows
    // (three in ingress: IP, ARP, DHCP discovery; ARP answer, L2), plus six for its security
    // groups (conntrack entry for IPv4 and IPv6 in each direction, and one flow per direction
    // naming the rules that apply to it); a port on another chassis two (ARP answer, L2), a port
    // without port security three (one ingress flow); a network six, plus the DHCP request flow
    // and the DHCP server's ARP answer when it serves DHCP; a rule two (its protocol clause and
    // its verdict; a remote adds one per remote address); the fixed flows: one miss per stage,
    // the delivery from `reg4`, the security groups' 22 (bypasses and connection states),
    // NAT's two (connections the NAT zone knows continue to routing), load balancing's one
    // (translated connections go on to their member) and the classifier's one (chained traffic
    // from other chassis).
    let p = pipeline();
    let count = |owner: Owner| p.flows().filter(|f| f.cookie == owner.cookie()).count();
    for (port, expected) in [(A1, 11), (A2, 11), (B1, 11), (A3, 2), (OPEN, 3)] {
        assert_eq!(
            count(Owner::Port(port.id.into())),
            expected,
            "port {}",
            port.id
        );
    }
    assert_eq!(
        count(Owner::Network(NET_A.into())),
        8,
        "network A serves DHCP"
    );
    assert_eq!(count(Owner::Network(NET_B.into())), 6);
    let rules: usize = p
        .topology()
        .rules
        .keys()
        .map(|id| count(Owner::SgRule(id.as_str().into())))
        .sum();
    assert_eq!(rules, 4 * 2, "the open group's four rules");
    let fixed = pipeline::tables::STAGES.len() + 1 + 22 + 2 + 1 + 1;
    assert_eq!(count(Owner::Static), fixed);
    assert_eq!(p.flow_count(), 11 * 3 + 2 + 3 + 8 + 6 + rules + fixed);
}

/// Whether a ping from A1 to A3 (on ch2) leaves through the tunnel.
fn a3_reached(p: &Pipeline) -> bool {
    let t = trace(&tables(p), 10, ping(&A1, A3.mac, A3.ip));
    t.verdict.ports().contains(&TUNNEL)
}

#[test]
fn a_lease_alone_does_not_withdraw_flows_from_a_chassis_whose_data_plane_is_up() {
    let mut p = pipeline();
    p.apply(Input::PeerDataPlane("ch2".into(), Some(true)));
    // Its agent stops: the lease runs out, BFD still sees the switch forward.
    let delta = p.apply(Input::Object("/chassis-up/ch2".into(), None));
    assert!(delta.is_empty(), "nothing withdrawn: {delta:?}");
    assert!(a3_reached(&p));
    // Then its data plane goes too: withdrawn at once.
    let delta = p.apply(Input::PeerDataPlane("ch2".into(), Some(false)));
    assert!(delta.removed().next().is_some());
    assert!(!a3_reached(&p));
}

#[test]
fn a_data_plane_that_went_down_withdraws_flows_even_with_a_lease() {
    let mut p = pipeline();
    p.apply(Input::PeerDataPlane("ch2".into(), Some(true)));
    assert!(a3_reached(&p));
    // The underlay link of ch2 is cut: its agent still renews the lease, BFD says down.
    let delta = p.apply(Input::PeerDataPlane("ch2".into(), Some(false)));
    assert!(
        delta.removed().next().is_some(),
        "flows towards ch2 are withdrawn"
    );
    assert!(!a3_reached(&p));
    // The link returns: BFD up again, traffic returns.
    p.apply(Input::PeerDataPlane("ch2".into(), Some(true)));
    assert!(a3_reached(&p));
}

#[test]
fn a_data_plane_never_seen_up_follows_the_lease() {
    let mut p = pipeline();
    // No BFD verdict (the monitor port is new, or its session never came up): the lease decides.
    p.apply(Input::PeerDataPlane("ch2".into(), None));
    assert!(a3_reached(&p), "a chassis with a lease is a destination");
    let delta = p.apply(Input::Object("/chassis-up/ch2".into(), None));
    assert!(
        delta.removed().next().is_some(),
        "dead from the start: withdrawn"
    );
    assert!(!a3_reached(&p));
    // A deregistered chassis is no destination, whatever BFD says.
    p.apply(Input::PeerDataPlane("ch2".into(), Some(true)));
    assert!(a3_reached(&p));
    p.apply(Input::Object("/chassis/ch2".into(), None));
    assert!(!a3_reached(&p));
}

#[test]
fn a_chassis_whose_lease_ran_out_gets_no_more_traffic() {
    // Without a BFD verdict about ch2 (see the tests above for the data plane).
    let mut p = pipeline();
    let delta = p.apply(Input::Object("/chassis-up/ch2".into(), None));
    assert!(
        delta.removed().next().is_some(),
        "flows towards ch2 are withdrawn"
    );
    let t = trace(&tables(&p), 10, ping(&A1, A3.mac, A3.ip));
    assert!(
        !t.verdict.ports().contains(&TUNNEL),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
    // It comes back when the chassis does.
    p.apply(Input::Object(
        "/chassis-up/ch2".into(),
        Some(json!({"lease": 2})),
    ));
    let t = trace(&tables(&p), 10, ping(&A1, A3.mac, A3.ip));
    assert_eq!(t.verdict.ports(), vec![TUNNEL]);
}

#[test]
fn dhcp_requests_go_to_the_agent_where_dhcp_is_enabled() {
    let p = pipeline();
    let discover = |from: &Port| {
        Packet::udp(
            mac(from.mac),
            mac("ff:ff:ff:ff:ff:ff"),
            ip("0.0.0.0"),
            ip("255.255.255.255"),
            68,
            67,
        )
    };
    // Network A: to the agent, not flooded; the packet-in names network A's flow.
    let t = trace(&tables(&p), 10, discover(&A1));
    let shown = t.display(|c| p.describe_cookie(c));
    assert!(t.verdict.ports().is_empty(), "{shown}");
    assert_eq!(t.verdict.controller.len(), 1, "{shown}");
    let cookie = t.verdict.controller[0].cookie;
    assert_eq!(
        p.describe_cookie(cookie).as_deref(),
        Some(format!("network {NET_A}").as_str())
    );
    // A spoofed source MAC never gets there.
    let mut spoofed = discover(&A1);
    spoofed.set(Field::EthSrc, mac("fa:16:3e:99:99:99").value());
    let t = trace(&tables(&p), 10, spoofed);
    assert!(t.verdict.controller.is_empty() && t.verdict.ports().is_empty());
    // Network B has DHCP disabled: flooded like any broadcast (a DHCP server of the user's own
    // may answer), nothing to the agent.
    let t = trace(&tables(&p), 12, discover(&B1));
    assert!(
        t.verdict.controller.is_empty(),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
}

#[test]
fn a_port_with_a_group_mac_never_captures_the_networks_broadcasts() {
    let mut p = pipeline();
    // A2 takes the broadcast MAC (the API refuses it; the store might still hold it).
    for group in ["ff:ff:ff:ff:ff:ff", "01:00:5e:00:00:01"] {
        let mut v = port_json(&A2, NET_A, "ch1", true);
        v["mac_address"] = json!(group);
        p.apply(Input::Object(format!("/r/ports/{}", A2.id), Some(v)));
        assert_eq!(
            p.take_malformed(),
            vec![format!("/r/ports/{}", A2.id)],
            "refused as malformed"
        );
        let (ports, shown) = a1_broadcast(&p);
        assert_eq!(
            ports,
            vec![TUNNEL, 11, 13],
            "still flooded to every port: {shown}"
        );
        assert!(
            p.flows()
                .all(|f| f.match_.exact(Field::EthDst) != Some(mac(group).value())),
            "no flow for the group MAC"
        );
    }
}

#[test]
fn a_mac_two_ports_claim_belongs_to_neither_until_one_lets_go() {
    let mut p = pipeline();
    // A2 takes A1's MAC (a replica may hold a deleted port and its successor for a moment).
    let mut v = port_json(&A2, NET_A, "ch1", true);
    v["mac_address"] = json!(A1.mac);
    p.apply(Input::Object(format!("/r/ports/{}", A2.id), Some(v)));
    let t = trace(&tables(&p), 13, ping(&OPEN, A1.mac, A1.ip));
    let mut ports = t.verdict.ports();
    ports.sort();
    assert_eq!(
        ports,
        vec![TUNNEL, 10, 11],
        "flooded, never delivered to one of the two: {}",
        t.display(|c| p.describe_cookie(c))
    );
    // A1's address is still A1's alone, but its MAC is not: no ARP answer with it.
    let arp = Packet::arp_request(
        mac(OPEN.mac),
        OPEN.ip.parse().unwrap(),
        A1.ip.parse().unwrap(),
    );
    let t = trace(&tables(&p), 13, arp);
    assert!(
        t.verdict.ports().contains(&10),
        "the request is flooded to A1: {}",
        t.display(|c| p.describe_cookie(c))
    );
    // A2 lets go: A1 gets its flows back.
    p.apply(Input::Object(
        format!("/r/ports/{}", A2.id),
        Some(port_json(&A2, NET_A, "ch1", true)),
    ));
    let t = trace(&tables(&p), 13, ping(&OPEN, A1.mac, A1.ip));
    assert_eq!(
        t.verdict.ports(),
        vec![10],
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
}

#[test]
fn a_remote_group_rule_admits_members_only() {
    let mut p = pipeline();
    // Group "members": egress anything, ingress IPv4 only from members; A1 and A2 in it.
    let g = "9a000000-0000-4000-8000-000000000001";
    p.apply(Input::Object(
        format!("/r/security_groups/{g}"),
        Some(json!({"id": g, "name": "members"})),
    ));
    for (i, (direction, remote)) in [("egress", None), ("ingress", Some(g))]
        .into_iter()
        .enumerate()
    {
        let id = format!("9b000000-0000-4000-8000-00000000000{i}");
        p.apply(Input::Object(
            format!("/r/security_group_rules/{id}"),
            Some(
                json!({"id": id, "security_group_id": g, "direction": direction,
                "ethertype": "IPv4", "remote_group_id": remote}),
            ),
        ));
    }
    for port in [A1, A2] {
        let mut v = port_json(&port, NET_A, "ch1", true);
        v["security_groups"] = json!([g]);
        p.apply(Input::Object(format!("/r/ports/{}", port.id), Some(v)));
    }
    let t = trace(&tables(&p), 10, ping(&A1, A2.mac, A2.ip));
    assert_eq!(
        t.verdict.ports(),
        vec![11],
        "a member reaches a member: {}",
        t.display(|c| p.describe_cookie(c))
    );
    // OPEN (no port security) is no member: its ping to A2 stops at A2's ingress rules.
    let t = trace(&tables(&p), 13, ping(&OPEN, A2.mac, A2.ip));
    assert!(
        t.verdict.ports().is_empty(),
        "{}",
        t.display(|c| p.describe_cookie(c))
    );
}

/// Puts A2 alone in a group with `rules` (JSON rule bodies without ids), `stateful` or not.
fn guard_a2(p: &mut Pipeline, stateful: bool, rules: &[serde_json::Value]) {
    let g = "9c000000-0000-4000-8000-000000000001";
    p.apply(Input::Object(
        format!("/r/security_groups/{g}"),
        Some(json!({"id": g, "name": "guard", "stateful": stateful})),
    ));
    for (i, rule) in rules.iter().enumerate() {
        let id = format!("9d00000{i}-0000-4000-8000-000000000001");
        let mut r = rule.clone();
        r["id"] = json!(id);
        r["security_group_id"] = json!(g);
        p.apply(Input::Object(
            format!("/r/security_group_rules/{id}"),
            Some(r),
        ));
    }
    let mut v = port_json(&A2, NET_A, "ch1", true);
    v["security_groups"] = json!([g]);
    p.apply(Input::Object(format!("/r/ports/{}", A2.id), Some(v)));
}

fn tcp_to_a2(from: &Port, dport: u16) -> Packet {
    Packet::tcp(
        mac(from.mac),
        mac(A2.mac),
        ip(from.ip),
        ip(A2.ip),
        40000,
        dport,
        0x02,
    )
}

#[test]
fn every_kind_of_rule_admits_exactly_what_it_says() {
    let delivered = |p: &Pipeline, in_port: u32, packet: Packet| {
        trace(&tables(p), in_port, packet).verdict.ports() == vec![11]
    };
    // A port range (decomposed into masked matches).
    let mut p = pipeline();
    let range = json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
        "port_range_min": 8001, "port_range_max": 8020});
    guard_a2(&mut p, true, &[range]);
    for (port, admitted) in [
        (8000, false),
        (8001, true),
        (8013, true),
        (8020, true),
        (8021, false),
    ] {
        assert_eq!(
            delivered(&p, 10, tcp_to_a2(&A1, port)),
            admitted,
            "tcp {port}"
        );
    }
    assert!(!delivered(&p, 10, ping(&A1, A2.mac, A2.ip)), "no ICMP rule");
    // ICMP by type: echo requests only.
    let mut p = pipeline();
    let echo = json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "icmp",
        "port_range_min": 8});
    guard_a2(&mut p, true, &[echo]);
    assert!(delivered(&p, 10, ping(&A1, A2.mac, A2.ip)));
    let reply = Packet::echo_reply(mac(A1.mac), mac(A2.mac), ip(A1.ip), ip(A2.ip));
    assert!(!delivered(&p, 10, reply), "an echo reply is another type");
    // A remote prefix: A1 (10.0.0.11) is in 10.0.0.8/29, OPEN (10.0.0.14) too, B1 is not A2's
    // network. Narrow it to A1 alone.
    let mut p = pipeline();
    let prefix = json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
        "remote_ip_prefix": "10.0.0.11/32"});
    guard_a2(&mut p, true, &[prefix]);
    assert!(delivered(&p, 10, tcp_to_a2(&A1, 22)));
    assert!(
        !delivered(&p, 13, tcp_to_a2(&OPEN, 22)),
        "outside the prefix"
    );
    // An address group, and its addresses changing.
    let mut p = pipeline();
    let ag = "9e000000-0000-4000-8000-000000000001";
    let put_ag = |p: &mut Pipeline, addresses: &[&str]| {
        p.apply(Input::Object(
            format!("/r/address_groups/{ag}"),
            Some(json!({"id": ag, "addresses": addresses})),
        ));
    };
    put_ag(&mut p, &["10.0.0.14/32"]);
    let by_group = json!({"direction": "ingress", "ethertype": "IPv4",
        "remote_address_group_id": ag});
    guard_a2(&mut p, true, &[by_group]);
    assert!(delivered(&p, 13, tcp_to_a2(&OPEN, 22)));
    assert!(!delivered(&p, 10, tcp_to_a2(&A1, 22)));
    put_ag(&mut p, &["10.0.0.11/32"]);
    assert!(delivered(&p, 10, tcp_to_a2(&A1, 22)), "the group changed");
    assert!(!delivered(&p, 13, tcp_to_a2(&OPEN, 22)));
}

#[test]
fn a_stateless_group_needs_a_rule_for_the_replies_too() {
    // A2 admits TCP 80 in, statelessly, and nothing out: its replies to OPEN (a port without
    // port security, so nothing filters them there) are dropped at A2's egress.
    let mut p = pipeline();
    let web = json!({"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp",
        "port_range_min": 80, "port_range_max": 80});
    guard_a2(&mut p, false, std::slice::from_ref(&web));
    assert_eq!(
        trace(&tables(&p), 13, tcp_to_a2(&OPEN, 80)).verdict.ports(),
        vec![11]
    );
    let reply = Packet::tcp(
        mac(A2.mac),
        mac(OPEN.mac),
        ip(A2.ip),
        ip(OPEN.ip),
        80,
        40000,
        0x12,
    );
    assert!(
        trace(&tables(&p), 11, reply.clone())
            .verdict
            .ports()
            .is_empty()
    );
    // With an egress rule for the replies they pass.
    let out = json!({"direction": "egress", "ethertype": "IPv4", "protocol": "tcp"});
    guard_a2(&mut p, false, &[web, out]);
    assert_eq!(trace(&tables(&p), 11, reply).verdict.ports(), vec![13]);
}

#[test]
fn chassis_without_a_session_follow_what_the_watchers_report() {
    let mut p = pipeline();
    let peers = |p: &mut Pipeline, reporter: &str, state: &str| {
        let key = format!("/chassis-peers/{reporter}");
        p.apply(Input::Object(
            key,
            Some(serde_json::json!({ "ch2": state })),
        ))
    };
    // No session of ch1 towards ch2: its watchers' reports decide, a majority of them.
    peers(&mut p, "w1", "down");
    assert!(a3_reached(&p), "one watcher saying down withdraws nothing");
    let delta = peers(&mut p, "w2", "down");
    assert!(delta.removed().next().is_some(), "withdrawn: {delta:?}");
    assert!(!a3_reached(&p));
    // The link returns: the watchers report up again.
    peers(&mut p, "w1", "up");
    peers(&mut p, "w2", "up");
    assert!(a3_reached(&p));
    // Reports of up keep ch2 reachable when its lease is gone (agent down, switch forwarding).
    let delta = p.apply(Input::Object("/chassis-up/ch2".into(), None));
    assert!(delta.is_empty(), "nothing withdrawn: {delta:?}");
    assert!(a3_reached(&p));
    // The reports gone too (the watchers' own leases ended): the lease decides, and it is gone.
    p.apply(Input::Object("/chassis-peers/w1".into(), None));
    p.apply(Input::Object("/chassis-peers/w2".into(), None));
    assert!(!a3_reached(&p));
}
