//! Provider networks and floating IPs checked with the packet simulator, without Open vSwitch.
//!
//! Chassis `ch1` maps `physnet1` (patch port 30). Network V is a VLAN network (id 101) on
//! `physnet1` with v1 here and v2 on `ch2`; networks F (flat, `physnet2`) and P (VLAN,
//! `physnet9`) are on physical networks `ch1` has no mapping for. Network EXT is a flat
//! external network on `physnet1` (172.24.4.0/24, upstream gateway .1) where router R has its
//! gateway (.2); R joins tenant network T (VXLAN, 10.0.0.0/24) with t1 here and t2 on `ch2`;
//! floating IP 172.24.4.10 forwards to t1, 172.24.4.20 to t2. `ch1`'s SNAT address on EXT is
//! 172.24.4.101 (`ch2`'s .102). Router R2 of another project joins network U (10.0.0.0/24 too,
//! VXLAN 6) with u1 here, which has t1's address; its gateway is .3. Router R3 (centralized
//! SNAT) joins network W (10.0.0.0/24 again) with w1 here; `ch2` is the only gateway chassis.

use std::net::Ipv4Addr;

use flowsim::{FlowTables, Mac, Packet, Simulator, Trace, trace};
use openflow::Field;
use pipeline::apps::Punt;
use pipeline::cookie::Owner;
use pipeline::tables::{REG_NEXT_HOP, SNAT};
use pipeline::{Input, Pipeline};
use serde_json::{Value, json};

mod common;

const NET_V: &str = "a1aaaaaa-0000-4000-8000-0000000000a1";
const NET_F: &str = "a2aaaaaa-0000-4000-8000-0000000000a2";
const NET_P: &str = "a3aaaaaa-0000-4000-8000-0000000000a3";
const NET_T: &str = "a4aaaaaa-0000-4000-8000-0000000000a4";
const EXT: &str = "eeeeeeee-0000-4000-8000-0000000000e1";
const R: &str = "dddddddd-0000-4000-8000-000000000001";
const FIP1: &str = "f1f1f1f1-0000-4000-8000-000000000001";
const FIP2: &str = "f2f2f2f2-0000-4000-8000-000000000002";
const TUNNEL: u32 = 1;
const PATCH: u32 = 30;

const V1: (&str, &str, &str, u32) = (
    "11000000-0000-4000-8000-000000000001",
    "fa:16:3e:00:01:01",
    "192.168.101.11",
    10,
);
const V2_MAC: &str = "fa:16:3e:00:01:02";
const T1: (&str, &str, &str, u32) = (
    "21000000-0000-4000-8000-000000000001",
    "fa:16:3e:00:02:01",
    "10.0.0.11",
    11,
);
const T2: &str = "22000000-0000-4000-8000-000000000002";
const RT_MAC: &str = "fa:16:3e:00:03:01";
const FIP1_MAC: &str = "fa:16:3e:00:04:01";
const FIP2_MAC: &str = "fa:16:3e:00:04:02";
const OUTSIDE_MAC: &str = "02:00:00:00:99:01";
const NET_U: &str = "a5aaaaaa-0000-4000-8000-0000000000a5";
const R2: &str = "d2dddddd-0000-4000-8000-000000000002";
const U1: (&str, &str, &str, u32) = (
    "51000000-0000-4000-8000-000000000001",
    "fa:16:3e:00:05:01",
    "10.0.0.11",
    12,
);
const RU_MAC: &str = "fa:16:3e:00:05:02";
const SNAT_MAC: &str = "fa:16:3e:00:06:01";
const SNAT_PORT: &str = "61000000-0000-4000-8000-000000000001";
const NET_W: &str = "a6aaaaaa-0000-4000-8000-0000000000a6";
const R3: &str = "d3dddddd-0000-4000-8000-000000000003";
const W1: (&str, &str, &str, u32) = (
    "91000000-0000-4000-8000-000000000001",
    "fa:16:3e:00:07:01",
    "10.0.0.11",
    13,
);
const RW_MAC: &str = "fa:16:3e:00:07:02";
const R3_GW_MAC: &str = "fa:16:3e:00:07:03";

fn put(p: &mut Pipeline, key: String, v: Value) {
    p.apply(Input::Object(key, Some(v)));
}

#[allow(clippy::too_many_arguments)]
fn port(
    p: &mut Pipeline,
    id: &str,
    net: &str,
    mac: &str,
    ip: &str,
    host: &str,
    owner: &str,
    device: &str,
) {
    let secure = owner.starts_with("compute:");
    put(
        p,
        format!("/r/ports/{id}"),
        json!({"id": id, "network_id": net, "mac_address": mac,
            "fixed_ips": [{"ip_address": ip}], "binding:host_id": host, "admin_state_up": true,
            "device_owner": owner, "device_id": device, "port_security_enabled": secure,
            "security_groups": if secure { json!([common::OPEN_GROUP]) } else { json!([]) }}),
    );
}

fn pipeline() -> Pipeline {
    pipeline_on("ch1")
}

/// The topology as `chassis` sees it (`ch1` has the VIFs; both reach `physnet1`, `ch2` is the
/// only gateway chassis).
fn pipeline_on(chassis: &str) -> Pipeline {
    let mut p = Pipeline::new(chassis);
    common::add_open_group(&mut p);
    let networks = [
        (
            NET_V,
            json!({"provider:network_type": "vlan", "provider:physical_network": "physnet1", "provider:segmentation_id": 101}),
        ),
        (
            NET_F,
            json!({"provider:network_type": "flat", "provider:physical_network": "physnet2"}),
        ),
        (
            NET_P,
            json!({"provider:network_type": "vlan", "provider:physical_network": "physnet9", "provider:segmentation_id": 7}),
        ),
        (
            NET_T,
            json!({"provider:network_type": "vxlan", "provider:segmentation_id": 5}),
        ),
        (
            NET_U,
            json!({"provider:network_type": "vxlan", "provider:segmentation_id": 6}),
        ),
        (
            EXT,
            json!({"provider:network_type": "flat", "provider:physical_network": "physnet1", "router:external": true}),
        ),
    ];
    for (id, mut n) in networks {
        n["id"] = json!(id);
        put(&mut p, format!("/r/networks/{id}"), n);
    }
    for (id, net, cidr, gw) in [
        ("5e", EXT, "172.24.4.0/24", "172.24.4.1"),
        ("5t", NET_T, "10.0.0.0/24", "10.0.0.1"),
        ("5u", NET_U, "10.0.0.0/24", "10.0.0.1"),
        ("5v", NET_V, "192.168.101.0/24", "192.168.101.1"),
    ] {
        put(
            &mut p,
            format!("/r/subnets/{id}"),
            json!({"id": id, "network_id": net, "cidr": cidr, "gateway_ip": gw, "enable_dhcp": false}),
        );
    }
    for (id, ip, gateway) in [("ch1", "192.168.9.1", false), ("ch2", "192.168.9.2", true)] {
        put(
            &mut p,
            format!("/chassis/{id}"),
            json!({"id": id, "tunnel_ip": ip, "gateway": gateway, "physnets": ["physnet1"]}),
        );
        put(&mut p, format!("/chassis-up/{id}"), json!({"lease": 1}));
    }
    // Router R3 (centralized SNAT, number 3) joins network W (10.0.0.0/24, VXLAN 7) with w1
    // here; its gateway is .4.
    put(
        &mut p,
        format!("/r/routers/{R3}"),
        json!({"id": R3, "name": "r3", "admin_state_up": true, "routes": [],
            "snat_mode": "centralized", "_nat_id": 3,
            "external_gateway_info": {"network_id": EXT, "enable_snat": true,
                "external_fixed_ips": [{"subnet_id": "5e", "ip_address": "172.24.4.4"}]}}),
    );
    put(
        &mut p,
        format!("/r/networks/{NET_W}"),
        json!({"id": NET_W, "provider:network_type": "vxlan", "provider:segmentation_id": 7}),
    );
    put(
        &mut p,
        "/r/subnets/5w".into(),
        json!({"id": "5w", "network_id": NET_W, "cidr": "10.0.0.0/24", "gateway_ip": "10.0.0.1", "enable_dhcp": false}),
    );
    port(&mut p, W1.0, NET_W, W1.1, W1.2, "ch1", "compute:nova", "");
    port(
        &mut p,
        "81000000-0000-4000-8000-000000000001",
        NET_W,
        RW_MAC,
        "10.0.0.1",
        "",
        "network:router_interface",
        R3,
    );
    port(
        &mut p,
        "82000000-0000-4000-8000-000000000001",
        EXT,
        R3_GW_MAC,
        "172.24.4.4",
        "",
        "network:router_gateway",
        R3,
    );
    put(
        &mut p,
        format!("/r/routers/{R}"),
        json!({"id": R, "name": "r", "admin_state_up": true, "routes": [],
            "external_gateway_info": {"network_id": EXT, "enable_snat": true,
                "external_fixed_ips": [{"subnet_id": "5e", "ip_address": "172.24.4.2"}]}}),
    );
    put(
        &mut p,
        format!("/r/routers/{R2}"),
        json!({"id": R2, "name": "r2", "admin_state_up": true, "routes": [],
            "external_gateway_info": {"network_id": EXT, "enable_snat": true,
                "external_fixed_ips": [{"subnet_id": "5e", "ip_address": "172.24.4.3"}]}}),
    );
    let vm = "compute:nova";
    port(&mut p, U1.0, NET_U, U1.1, U1.2, "ch1", vm, "");
    let ru = "71000000-0000-4000-8000-000000000001";
    port(
        &mut p,
        ru,
        NET_U,
        RU_MAC,
        "10.0.0.1",
        "",
        "network:router_interface",
        R2,
    );
    for (id, mac, ip, host) in [
        (SNAT_PORT, SNAT_MAC, "172.24.4.101", "ch1"),
        (
            "62000000-0000-4000-8000-000000000002",
            "fa:16:3e:00:06:02",
            "172.24.4.102",
            "ch2",
        ),
    ] {
        port(
            &mut p,
            id,
            EXT,
            mac,
            ip,
            host,
            "network:floatingip_agent_gateway",
            host,
        );
    }
    port(&mut p, V1.0, NET_V, V1.1, V1.2, "ch1", vm, "");
    let v2 = "12000000-0000-4000-8000-000000000002";
    port(&mut p, v2, NET_V, V2_MAC, "192.168.101.12", "ch2", vm, "");
    port(&mut p, T1.0, NET_T, T1.1, T1.2, "ch1", vm, "");
    port(
        &mut p,
        T2,
        NET_T,
        "fa:16:3e:00:02:02",
        "10.0.0.12",
        "ch2",
        vm,
        "",
    );
    let rif = "31000000-0000-4000-8000-000000000001";
    port(
        &mut p,
        rif,
        NET_T,
        RT_MAC,
        "10.0.0.1",
        "",
        "network:router_interface",
        R,
    );
    let gw = "32000000-0000-4000-8000-000000000001";
    port(
        &mut p,
        gw,
        EXT,
        "fa:16:3e:00:03:02",
        "172.24.4.2",
        "",
        "network:router_gateway",
        R,
    );
    for (fip, own, mac, address, target, fixed) in [
        (
            FIP1,
            "41000000-0000-4000-8000-000000000001",
            FIP1_MAC,
            "172.24.4.10",
            T1.0,
            T1.2,
        ),
        (
            FIP2,
            "42000000-0000-4000-8000-000000000002",
            FIP2_MAC,
            "172.24.4.20",
            T2,
            "10.0.0.12",
        ),
    ] {
        port(
            &mut p,
            own,
            EXT,
            mac,
            address,
            "",
            "network:floatingip",
            fip,
        );
        put(
            &mut p,
            format!("/r/floatingips/{fip}"),
            json!({"id": fip, "floating_ip_address": address, "floating_network_id": EXT,
                "_port": own, "port_id": target, "fixed_ip_address": fixed, "router_id": R}),
        );
    }
    if chassis == "ch1" {
        for (id, _, _, ofport) in [V1, T1, U1, W1] {
            p.apply(Input::Vif(id.into(), Some(ofport)));
        }
    }
    p.apply(Input::Tunnel(Some(TUNNEL)));
    p.apply(Input::Patch("physnet1".into(), Some(PATCH)));
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

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn shown(p: &Pipeline, t: &Trace) -> String {
    t.display(|c| p.describe_cookie(c)).to_string()
}

#[test]
fn a_vlan_networks_broadcast_goes_to_local_ports_and_tagged_onto_the_physical_network() {
    let p = pipeline();
    let arp = Packet::arp_request(mac(V1.1), v4(V1.2), v4("192.168.101.99"));
    let t = trace(&tables(&p), V1.3, arp);
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&p, &t));
    let out = &t.verdict.outputs[0].packet;
    assert_eq!(
        out.vlans().iter().map(|v| v.vid).collect::<Vec<_>>(),
        vec![101]
    );
}

#[test]
fn unicast_to_a_port_on_another_chassis_goes_tagged_onto_the_physical_network() {
    let p = pipeline();
    let ping = Packet::echo_request(
        mac(V1.1),
        mac(V2_MAC),
        v4(V1.2).into(),
        v4("192.168.101.12").into(),
    );
    let t = trace(&tables(&p), V1.3, ping);
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&p, &t));
    assert_eq!(t.verdict.outputs[0].packet.vlans()[0].vid, 101);
}

#[test]
fn a_tagged_frame_from_the_physical_network_reaches_its_port_untagged() {
    let p = pipeline();
    let ping = Packet::echo_request(
        mac(V2_MAC),
        mac(V1.1),
        v4("192.168.101.12").into(),
        v4(V1.2).into(),
    );
    let t = trace(&tables(&p), PATCH, ping.clone().with_vlan(101, 0));
    assert_eq!(t.verdict.ports(), vec![V1.3], "{}", shown(&p, &t));
    assert!(t.verdict.outputs[0].packet.vlans().is_empty());
    // Another VLAN, or no tag (the flat external network, where no port has that MAC): dropped.
    for frame in [ping.clone().with_vlan(102, 0), ping] {
        let t = trace(&tables(&p), PATCH, frame);
        assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
    }
    // A broadcast from outside reaches local ports only, never back out.
    let arp = Packet::arp_request(mac(V2_MAC), v4("192.168.101.12"), v4(V1.2));
    let t = trace(&tables(&p), PATCH, arp.with_vlan(101, 0));
    assert_eq!(t.verdict.ports(), vec![V1.3], "{}", shown(&p, &t));
}

#[test]
fn a_network_on_an_unmapped_physical_network_gets_no_flows() {
    let p = pipeline();
    for net in [NET_F, NET_P] {
        let count = p
            .flows()
            .filter(|f| f.cookie == Owner::Network(net.into()).cookie())
            .count();
        assert_eq!(count, 0);
    }
}

#[test]
fn only_the_chassis_of_the_port_answers_arp_for_a_floating_ip() {
    let p = pipeline();
    let outside = mac(OUTSIDE_MAC);
    let ask = |ip: &str| Packet::arp_request(outside, v4("172.24.4.1"), v4(ip));
    let t = trace(&tables(&p), PATCH, ask("172.24.4.10"));
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&p, &t));
    let answer = &t.verdict.outputs[0].packet;
    assert_eq!(answer.get(Field::ArpOp), Some(2));
    assert_eq!(answer.get(Field::ArpSha), Some(mac(FIP1_MAC).value()));
    assert_eq!(answer.get(Field::EthSrc), Some(mac(FIP1_MAC).value()));
    assert_eq!(answer.get(Field::EthDst), Some(outside.value()));
    assert!(answer.vlans().is_empty(), "a flat network");
    // The floating IP of a port on another chassis is that chassis' to answer.
    let t = trace(&tables(&p), PATCH, ask("172.24.4.20"));
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
}

#[test]
fn a_port_with_a_floating_ip_leaves_through_source_nat_and_asks_for_its_next_hop() {
    let p = pipeline();
    let ping = Packet::echo_request(
        mac(T1.1),
        mac(RT_MAC),
        v4(T1.2).into(),
        v4("198.51.100.7").into(),
    )
    .with(Field::IpTtl, 64);
    let t = trace(&tables(&p), T1.3, ping);
    let text = shown(&p, &t);
    assert!(
        t.path().iter().any(|(table, _)| *table == SNAT),
        "through source NAT: {text}"
    );
    // Nothing learned yet: the agent is asked to resolve the upstream gateway.
    assert_eq!(t.verdict.controller.len(), 1, "{text}");
    let c = &t.verdict.controller[0];
    assert_eq!(
        Punt::from_userdata(&c.userdata),
        Some(Punt::ResolveNeighbour)
    );
    assert_eq!(
        c.packet.get(Field::Reg(REG_NEXT_HOP)),
        Some(u128::from(u32::from(v4("172.24.4.1"))))
    );
    assert_eq!(c.packet.get(Field::EthSrc), Some(mac(FIP1_MAC).value()));
    // A port on this chassis without a floating IP, and without a SNAT address here, has no
    // way out.
    let mut other = p.clone();
    other.apply(Input::Object(format!("/r/floatingips/{FIP1}"), None));
    other.apply(Input::Object(format!("/r/ports/{SNAT_PORT}"), None));
    let ping = Packet::echo_request(
        mac(T1.1),
        mac(RT_MAC),
        v4(T1.2).into(),
        v4("198.51.100.7").into(),
    );
    let t = trace(&tables(&other), T1.3, ping);
    assert!(
        t.verdict.ports().is_empty() && t.verdict.controller.is_empty(),
        "{}",
        shown(&other, &t)
    );
}

#[test]
fn the_answer_of_the_upstream_router_is_learned_and_used_as_next_hop() {
    let p = pipeline();
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let upstream = mac(OUTSIDE_MAC);
    let reply = Packet::arp_reply(upstream, v4("172.24.4.1"), mac(FIP1_MAC), v4("172.24.4.10"));
    let t = sim.trace(PATCH, reply);
    // The agent hears of it, to send on what waited for this neighbour.
    assert_eq!(
        t.verdict
            .controller
            .iter()
            .map(|c| Punt::from_userdata(&c.userdata))
            .collect::<Vec<_>>(),
        vec![Some(Punt::NeighbourLearned)],
        "{}",
        shown(&p, &t)
    );
    let ping = Packet::echo_request(
        mac(T1.1),
        mac(RT_MAC),
        v4(T1.2).into(),
        v4("198.51.100.7").into(),
    )
    .with(Field::IpTtl, 64);
    let t = sim.trace(T1.3, ping);
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&p, &t));
    let out = &t.verdict.outputs[0].packet;
    assert_eq!(out.get(Field::EthDst), Some(upstream.value()));
    assert_eq!(out.get(Field::EthSrc), Some(mac(FIP1_MAC).value()));
    assert_eq!(
        out.get(Field::Ipv4Src),
        Some(u128::from(u32::from(v4("172.24.4.10")))),
        "the floating IP is the source"
    );
    assert_eq!(out.get(Field::IpTtl), Some(63));
}

#[test]
fn a_packet_to_the_floating_ip_reaches_its_port_with_the_fixed_ip_as_destination() {
    let p = pipeline();
    let ping = Packet::echo_request(
        mac(OUTSIDE_MAC),
        mac(FIP1_MAC),
        v4("198.51.100.7").into(),
        v4("172.24.4.10").into(),
    )
    .with(Field::IpTtl, 64);
    let t = trace(&tables(&p), PATCH, ping);
    assert_eq!(t.verdict.ports(), vec![T1.3], "{}", shown(&p, &t));
    let out = &t.verdict.outputs[0].packet;
    assert_eq!(
        out.get(Field::Ipv4Dst),
        Some(u128::from(u32::from(v4(T1.2))))
    );
    assert_eq!(out.get(Field::EthDst), Some(mac(T1.1).value()));
    assert_eq!(out.get(Field::EthSrc), Some(mac(RT_MAC).value()));
}

fn ping_out(from: (&str, &str, &str, u32), gateway: &str, id: u16) -> Packet {
    Packet::echo_request(
        mac(from.1),
        mac(gateway),
        v4(from.2).into(),
        v4("198.51.100.7").into(),
    )
    .with(Field::IpTtl, 64)
    .with_icmp_id(id)
}

fn learned_upstream(sim: &mut Simulator<'_>) {
    let reply = Packet::arp_reply(
        mac(OUTSIDE_MAC),
        v4("172.24.4.1"),
        mac(SNAT_MAC),
        v4("172.24.4.101"),
    );
    sim.trace(PATCH, reply);
}

#[test]
fn ports_of_two_projects_with_one_address_leave_through_the_chassis_address_and_get_their_replies()
{
    let mut p = pipeline();
    p.apply(Input::Object(format!("/r/floatingips/{FIP1}"), None));
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    learned_upstream(&mut sim);
    // t1 and u1 share 10.0.0.11 and the echo id.
    let mut translated = Vec::new();
    for (from, gateway) in [(T1, RT_MAC), (U1, RU_MAC)] {
        let t = sim.trace(from.3, ping_out(from, gateway, 7));
        assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&p, &t));
        let out = &t.verdict.outputs[0].packet;
        assert_eq!(
            out.get(Field::Ipv4Src),
            Some(u128::from(u32::from(v4("172.24.4.101")))),
            "the chassis' SNAT address: {}",
            shown(&p, &t)
        );
        assert_eq!(out.get(Field::EthSrc), Some(mac(SNAT_MAC).value()));
        assert_eq!(out.get(Field::EthDst), Some(mac(OUTSIDE_MAC).value()));
        translated.push(out.icmp_id().expect("an echo id"));
    }
    assert_ne!(translated[0], translated[1], "one connection each");
    // Each reply finds its own port.
    for ((from, gateway), id) in [(T1, RT_MAC), (U1, RU_MAC)].into_iter().zip(translated) {
        let reply = Packet::echo_reply(
            mac(OUTSIDE_MAC),
            mac(SNAT_MAC),
            v4("198.51.100.7").into(),
            v4("172.24.4.101").into(),
        )
        .with(Field::IpTtl, 64)
        .with_icmp_id(id);
        let t = sim.trace(PATCH, reply);
        assert_eq!(t.verdict.ports(), vec![from.3], "{}", shown(&p, &t));
        let out = &t.verdict.outputs[0].packet;
        assert_eq!(
            out.get(Field::Ipv4Dst),
            Some(u128::from(u32::from(v4(from.2))))
        );
        assert_eq!(out.icmp_id(), Some(7), "the port's own echo id again");
        assert_eq!(out.get(Field::EthSrc), Some(mac(gateway).value()));
    }
}

#[test]
fn the_chassis_answers_arp_for_its_own_snat_address_only_and_refuses_new_connections_to_it() {
    let p = pipeline();
    let ask = |ip: &str| Packet::arp_request(mac(OUTSIDE_MAC), v4("172.24.4.1"), v4(ip));
    let t = trace(&tables(&p), PATCH, ask("172.24.4.101"));
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&p, &t));
    assert_eq!(
        t.verdict.outputs[0].packet.get(Field::ArpSha),
        Some(mac(SNAT_MAC).value())
    );
    let t = trace(&tables(&p), PATCH, ask("172.24.4.102"));
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
    // A connection the outside starts towards the SNAT address goes nowhere.
    let syn = Packet::echo_request(
        mac(OUTSIDE_MAC),
        mac(SNAT_MAC),
        v4("198.51.100.7").into(),
        v4("172.24.4.101").into(),
    );
    let t = trace(&tables(&p), PATCH, syn);
    assert!(
        t.verdict.ports().is_empty() && t.verdict.controller.is_empty(),
        "{}",
        shown(&p, &t)
    );
}

#[test]
fn a_centralized_router_sends_packets_for_the_outside_to_its_gateway_chassis() {
    let p = pipeline();
    let t = trace(&tables(&p), W1.3, ping_out(W1, RW_MAC, 9));
    assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&p, &t));
    let tun = t.verdict.outputs[0].tunnel.clone().expect("tunnelled");
    assert_eq!(tun.id, u64::from(pipeline::tables::transit_vni(3)));
    assert_eq!(tun.dst, v4("192.168.9.2"));
    // ARP for its gateway address is the gateway chassis' to answer.
    let ask = Packet::arp_request(mac(OUTSIDE_MAC), v4("172.24.4.1"), v4("172.24.4.4"));
    let t = trace(&tables(&p), PATCH, ask.clone());
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
    let g = pipeline_on("ch2");
    let t = trace(&tables(&g), PATCH, ask);
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&g, &t));
    assert_eq!(
        t.verdict.outputs[0].packet.get(Field::ArpSha),
        Some(mac(R3_GW_MAC).value())
    );
}

#[test]
fn the_gateway_chassis_translates_to_the_routers_address_and_sends_replies_back() {
    let g = pipeline_on("ch2");
    let tables = tables(&g);
    let mut sim = Simulator::new(&tables);
    let reply = Packet::arp_reply(
        mac(OUTSIDE_MAC),
        v4("172.24.4.1"),
        mac(R3_GW_MAC),
        v4("172.24.4.4"),
    );
    sim.trace(PATCH, reply);
    let tun = flowsim::Tunnel::new(
        u64::from(pipeline::tables::transit_vni(3)),
        v4("192.168.9.1"),
        v4("192.168.9.2"),
    );
    let arriving = ping_out(W1, RW_MAC, 9).with_tunnel(&tun);
    let t = sim.trace(TUNNEL, arriving);
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&g, &t));
    let out = &t.verdict.outputs[0].packet;
    assert_eq!(
        out.get(Field::Ipv4Src),
        Some(u128::from(u32::from(v4("172.24.4.4")))),
        "the router's gateway address: {}",
        shown(&g, &t)
    );
    assert_eq!(out.get(Field::EthSrc), Some(mac(R3_GW_MAC).value()));
    let id = out.icmp_id().expect("an echo id");
    let back = Packet::echo_reply(
        mac(OUTSIDE_MAC),
        mac(R3_GW_MAC),
        v4("198.51.100.7").into(),
        v4("172.24.4.4").into(),
    )
    .with(Field::IpTtl, 64)
    .with_icmp_id(id);
    let t = sim.trace(PATCH, back);
    assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&g, &t));
    let o = &t.verdict.outputs[0];
    assert_eq!(o.tunnel.as_ref().map(|t| t.id), Some(7), "network W's VNI");
    assert_eq!(o.tunnel.as_ref().map(|t| t.dst), Some(v4("192.168.9.1")));
    assert_eq!(
        o.packet.get(Field::Ipv4Dst),
        Some(u128::from(u32::from(v4(W1.2))))
    );
}

#[test]
fn a_gratuitous_arp_for_a_floating_ip_is_never_answered() {
    // The chassis a floating IP moved to announces it; this one, still serving it for a moment,
    // must not answer (the switches would learn the old place again).
    let p = pipeline();
    let garp = Packet::arp_request(mac(FIP1_MAC), v4("172.24.4.10"), v4("172.24.4.10"));
    let t = trace(&tables(&p), PATCH, garp);
    assert!(!t.verdict.ports().contains(&PATCH), "{}", shown(&p, &t));
}

/// Registers `ch3` as a second gateway chassis on `physnet1`, its agent up.
fn with_second_gateway(mut p: Pipeline) -> Pipeline {
    put(
        &mut p,
        "/chassis/ch3".into(),
        json!({"id": "ch3", "tunnel_ip": "192.168.9.3", "gateway": true, "physnets": ["physnet1"]}),
    );
    put(&mut p, "/chassis-up/ch3".into(), json!({"lease": 1}));
    p
}

/// The tunnel address `p` sends R3's packets for the outside to (from w1), if any.
fn r3_sent_to(p: &Pipeline) -> Option<Ipv4Addr> {
    let t = trace(&tables(p), W1.3, ping_out(W1, RW_MAC, 9));
    let tun = t.verdict.outputs.first()?.tunnel.as_ref()?;
    Some(tun.dst)
}

/// Whether `p` answers ARP for R3's gateway address on the physical network (it hosts R3).
fn hosts_r3(p: &Pipeline) -> bool {
    let ask = Packet::arp_request(mac(OUTSIDE_MAC), v4("172.24.4.1"), v4("172.24.4.4"));
    trace(&tables(p), PATCH, ask).verdict.ports() == vec![PATCH]
}

fn tunnel_ip(chassis: &str) -> Ipv4Addr {
    v4(&format!("192.168.9.{}", &chassis[2..]))
}

#[test]
fn the_gateway_chassis_follows_its_data_plane_not_its_agents_lease() {
    let mut p = with_second_gateway(pipeline());
    let first = r3_sent_to(&p).expect("R3's packets go to a gateway chassis");
    let (top, next) = if first == tunnel_ip("ch2") {
        ("ch2", "ch3")
    } else {
        ("ch3", "ch2")
    };
    // The top one's agent dies (its lease runs out) while BFD sees its switch forward: nothing
    // moves, its connections' state stays where it is.
    p.apply(Input::PeerDataPlane(top.into(), Some(true)));
    p.apply(Input::Object(format!("/chassis-up/{top}"), None));
    assert_eq!(r3_sent_to(&p), Some(tunnel_ip(top)));
    // Its data plane dies: the next one takes over; back up, back to it.
    p.apply(Input::PeerDataPlane(top.into(), Some(false)));
    assert_eq!(r3_sent_to(&p), Some(tunnel_ip(next)));
    p.apply(Input::PeerDataPlane(top.into(), Some(true)));
    assert_eq!(r3_sent_to(&p), Some(tunnel_ip(top)));
    // Without BFD's word, the lease decides (a chassis dead from the start).
    p.apply(Input::PeerDataPlane(top.into(), None));
    assert_eq!(r3_sent_to(&p), Some(tunnel_ip(next)));

    // On the gateway chassis themselves.
    let mut on_top = with_second_gateway(pipeline_on(top));
    let mut on_next = with_second_gateway(pipeline_on(next));
    assert!(hosts_r3(&on_top) && !hosts_r3(&on_next));
    for peer in ["ch1", next] {
        on_top.apply(Input::PeerDataPlane(peer.into(), Some(true)));
    }
    for peer in ["ch1", top] {
        on_next.apply(Input::PeerDataPlane(peer.into(), Some(true)));
    }
    assert!(hosts_r3(&on_top) && !hosts_r3(&on_next));
    // One session down is a peer's trouble, not this chassis'.
    on_top.apply(Input::PeerDataPlane(next.into(), Some(false)));
    assert!(hosts_r3(&on_top));
    // Every session down (the last one towards a chassis that is no candidate): its underlay is
    // cut, and it stops answering for R3's address, which the next one now serves, as it sees
    // the top one's data plane down.
    on_top.apply(Input::PeerDataPlane("ch1".into(), Some(false)));
    on_next.apply(Input::PeerDataPlane(top.into(), Some(false)));
    assert!(!hosts_r3(&on_top) && hosts_r3(&on_next));
    // A session back: it serves again, and the next one lets go once it sees that.
    on_top.apply(Input::PeerDataPlane(next.into(), Some(true)));
    on_next.apply(Input::PeerDataPlane(top.into(), Some(true)));
    assert!(hosts_r3(&on_top) && !hosts_r3(&on_next));
    // The only gateway chassis left hosts whatever its sessions say: nobody else would.
    on_top.apply(Input::PeerDataPlane(next.into(), Some(false)));
    assert!(!hosts_r3(&on_top));
    on_top.apply(Input::Object(format!("/chassis/{next}"), None));
    assert!(hosts_r3(&on_top));
}
