//! IPv6 to and from the outside, routed without NAT through the chassis that hosts the router's
//! gateway, checked with the packet simulator.
//!
//! Network EXT is an external VLAN network (id 40) on `physnet1` (patch port 30 wherever it is
//! mapped) with the subnets 172.24.4.0/24 and 2001:db8:ee::/64 (upstream router ::1). Router R
//! (number 1, distributed SNAT) has its gateway there (172.24.4.2, 2001:db8:ee::2) and an
//! interface on tenant network T (VXLAN 5: 10.0.0.0/24, 2001:db8:10::/64) where t1 is on `ch1`
//! and t2 on `ch2`. `ch2` is the only gateway chassis, so it hosts R's gateway.

use std::net::{IpAddr, Ipv6Addr};

use flowsim::{FlowTables, Mac, Packet, Simulator, Trace, Tunnel, trace};
use openflow::Field;
use pipeline::apps::Punt;
use pipeline::cookie::Owner;
use pipeline::tables::{REG_NEXT_HOP6, next_hop6_from_words, transit_vni};
use pipeline::{Input, Pipeline};
use serde_json::{Value, json};

mod common;

const EXT: &str = "eeeeeeee-0000-4000-8000-0000000000e1";
const NET_T: &str = "a4aaaaaa-0000-4000-8000-0000000000a4";
const R: &str = "dddddddd-0000-4000-8000-000000000001";
const TUNNEL: u32 = 1;
const PATCH: u32 = 30;
const VLAN: u16 = 40;
const T1: (&str, &str, &str, u32) = (
    "21000000-0000-4000-8000-000000000001",
    "fa:16:3e:00:02:01",
    "2001:db8:10::11",
    11,
);
const T2: (&str, &str, &str, u32) = (
    "22000000-0000-4000-8000-000000000002",
    "fa:16:3e:00:02:02",
    "2001:db8:10::12",
    12,
);
const RT_MAC: &str = "fa:16:3e:00:03:01";
const GW_MAC: &str = "fa:16:3e:00:03:02";
const GW_V6: &str = "2001:db8:ee::2";
const GW_V4: &str = "172.24.4.2";
const UPSTREAM: &str = "2001:db8:ee::1";
const UPSTREAM_MAC: &str = "02:00:00:00:99:01";
const FAR: &str = "2001:db8:ff::7";
const CHASSIS: [(&str, &str, bool); 2] =
    [("ch1", "192.168.9.1", false), ("ch2", "192.168.9.2", true)];

fn put(p: &mut Pipeline, key: String, v: Value) {
    p.apply(Input::Object(key, Some(v)));
}

fn port(p: &mut Pipeline, id: &str, net: &str, mac: &str, ips: &[&str], owner: &str, device: &str) {
    let secure = owner.starts_with("compute:");
    let fixed: Vec<Value> = ips.iter().map(|ip| json!({"ip_address": ip})).collect();
    put(
        p,
        format!("/r/ports/{id}"),
        json!({"id": id, "network_id": net, "mac_address": mac, "fixed_ips": fixed,
            "admin_state_up": true, "device_owner": owner, "device_id": device,
            "port_security_enabled": secure,
            "security_groups": if secure { json!([common::OPEN_GROUP]) } else { json!([]) }}),
    );
}

/// The topology as `chassis` sees it, with the patch to `physnet1` if `mapped`.
fn pipeline_on(chassis: &str, mapped: bool) -> Pipeline {
    let mut p = Pipeline::new(chassis);
    common::add_open_group(&mut p);
    put(
        &mut p,
        format!("/r/networks/{EXT}"),
        json!({"id": EXT, "provider:network_type": "vlan", "provider:physical_network": "physnet1",
            "provider:segmentation_id": VLAN, "router:external": true}),
    );
    put(
        &mut p,
        format!("/r/networks/{NET_T}"),
        json!({"id": NET_T, "provider:network_type": "vxlan", "provider:segmentation_id": 5}),
    );
    for (id, net, cidr, gw) in [
        ("5e", EXT, "172.24.4.0/24", "172.24.4.1"),
        ("6e", EXT, "2001:db8:ee::/64", UPSTREAM),
        ("5t", NET_T, "10.0.0.0/24", "10.0.0.1"),
        ("6t", NET_T, "2001:db8:10::/64", "2001:db8:10::1"),
    ] {
        put(
            &mut p,
            format!("/r/subnets/{id}"),
            json!({"id": id, "network_id": net, "cidr": cidr, "gateway_ip": gw, "enable_dhcp": false}),
        );
    }
    for (id, ip, gateway) in CHASSIS {
        put(
            &mut p,
            format!("/chassis/{id}"),
            json!({"id": id, "tunnel_ip": ip, "gateway": gateway, "physnets": ["physnet1"]}),
        );
        put(&mut p, format!("/chassis-up/{id}"), json!({"lease": 1}));
    }
    put(
        &mut p,
        format!("/r/routers/{R}"),
        json!({"id": R, "name": "r", "admin_state_up": true, "routes": [], "_nat_id": 1,
            "external_gateway_info": {"network_id": EXT, "enable_snat": true,
                "external_fixed_ips": [{"subnet_id": "5e", "ip_address": GW_V4},
                    {"subnet_id": "6e", "ip_address": GW_V6}]}}),
    );
    let rif = "31000000-0000-4000-8000-000000000001";
    port(
        &mut p,
        rif,
        NET_T,
        RT_MAC,
        &["10.0.0.1", "2001:db8:10::1"],
        "network:router_interface",
        R,
    );
    let gw = "32000000-0000-4000-8000-000000000001";
    port(
        &mut p,
        gw,
        EXT,
        GW_MAC,
        &[GW_V4, GW_V6],
        "network:router_gateway",
        R,
    );
    for (vm, host) in [(T1, "ch1"), (T2, "ch2")] {
        put(
            &mut p,
            format!("/r/ports/{}", vm.0),
            json!({"id": vm.0, "network_id": NET_T, "mac_address": vm.1,
                "fixed_ips": [{"ip_address": vm.2}], "binding:host_id": host,
                "admin_state_up": true, "device_owner": "compute:nova", "device_id": "",
                "port_security_enabled": true, "security_groups": [common::OPEN_GROUP]}),
        );
        if host == chassis {
            p.apply(Input::Vif(vm.0.into(), Some(vm.3)));
        }
    }
    p.apply(Input::Tunnel(Some(TUNNEL)));
    if mapped {
        p.apply(Input::Patch("physnet1".into(), Some(PATCH)));
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

fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn shown(p: &Pipeline, t: &Trace) -> String {
    t.display(|c| p.describe_cookie(c)).to_string()
}

/// A ping from t1 to a host far outside, as t1 sends it to its router.
fn ping_out() -> Packet {
    Packet::echo_request(mac(T1.1), mac(RT_MAC), ip(T1.2), ip(FAR)).with(Field::IpTtl, 64)
}

/// The link-local address of a MAC (EUI-64).
fn link_local(m: &str) -> Ipv6Addr {
    let o = mac(m).0;
    Ipv6Addr::new(
        0xfe80,
        0,
        0,
        0,
        u16::from_be_bytes([o[0] ^ 2, o[1]]),
        u16::from_be_bytes([o[2], 0xff]),
        u16::from_be_bytes([0xfe, o[3]]),
        u16::from_be_bytes([o[4], o[5]]),
    )
}

fn transit() -> Tunnel {
    Tunnel::new(
        u64::from(transit_vni(1)),
        CHASSIS[0].1.parse().unwrap(),
        CHASSIS[1].1.parse().unwrap(),
    )
}

/// The IPv6 next hop a punted packet carries in `reg8`..`reg11`.
fn next_hop6(packet: &Packet) -> Ipv6Addr {
    let words = REG_NEXT_HOP6.map(|r| {
        let value = packet.get(Field::Reg(r)).unwrap_or(0);
        u32::try_from(value).expect("a 32-bit register")
    });
    next_hop6_from_words(words)
}

#[test]
fn ipv6_for_the_outside_goes_to_the_gateway_chassis_through_the_routers_transit_tunnel() {
    // Whether this chassis reaches the physical network or not.
    for mapped in [true, false] {
        let p = pipeline_on("ch1", mapped);
        let t = trace(&tables(&p), T1.3, ping_out());
        assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&p, &t));
        let out = &t.verdict.outputs[0];
        let tun = out.tunnel.clone().expect("tunnelled");
        assert_eq!(tun.id, u64::from(transit_vni(1)));
        assert_eq!(tun.dst, CHASSIS[1].1.parse::<std::net::Ipv4Addr>().unwrap());
        assert_eq!(
            out.packet.get(Field::IpTtl),
            Some(64),
            "the hop is counted where the packet leaves"
        );
    }
}

#[test]
fn the_gateway_chassis_asks_for_the_next_hop_learns_it_and_sends_ipv6_out_with_the_gateway_mac() {
    let g = pipeline_on("ch2", true);
    let tables = tables(&g);
    let mut sim = Simulator::new(&tables);
    let arriving = ping_out().with_tunnel(&transit());
    let t = sim.trace(TUNNEL, arriving.clone());
    let text = shown(&g, &t);
    assert!(t.verdict.ports().is_empty(), "{text}");
    assert_eq!(t.verdict.controller.len(), 1, "{text}");
    let c = &t.verdict.controller[0];
    assert_eq!(
        Punt::from_userdata(&c.userdata),
        Some(Punt::ResolveNeighbour)
    );
    assert_eq!(next_hop6(&c.packet), v6(UPSTREAM), "the subnet's gateway");
    assert_eq!(c.packet.get(Field::EthSrc), Some(mac(GW_MAC).value()));
    // The upstream router answers the agent's solicitation (sent from the gateway's link-local
    // address): learned, and the agent hears of it.
    let answer = Packet::neighbor_advertisement(
        mac(UPSTREAM_MAC),
        mac(GW_MAC),
        v6(UPSTREAM),
        link_local(GW_MAC),
        v6(UPSTREAM),
        mac(UPSTREAM_MAC),
    )
    .with_vlan(VLAN, 0);
    let t = sim.trace(PATCH, answer);
    let punts: Vec<_> = t
        .verdict
        .controller
        .iter()
        .map(|c| Punt::from_userdata(&c.userdata))
        .collect();
    assert_eq!(
        punts,
        vec![Some(Punt::NeighbourLearned)],
        "{}",
        shown(&g, &t)
    );
    let t = sim.trace(TUNNEL, arriving);
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&g, &t));
    let out = &t.verdict.outputs[0].packet;
    assert_eq!(out.get(Field::EthDst), Some(mac(UPSTREAM_MAC).value()));
    assert_eq!(out.get(Field::EthSrc), Some(mac(GW_MAC).value()));
    assert_eq!(
        out.get(Field::Ipv6Src),
        Some(u128::from(v6(T1.2))),
        "no NAT"
    );
    assert_eq!(out.get(Field::IpTtl), Some(63), "one hop in all");
    assert_eq!(
        out.vlans().iter().map(|v| v.vid).collect::<Vec<_>>(),
        vec![VLAN]
    );
    // A destination on the external subnet itself is its own next hop.
    let on_link = Packet::echo_request(mac(T2.1), mac(RT_MAC), ip(T2.2), ip("2001:db8:ee::99"))
        .with(Field::IpTtl, 64);
    let t = sim.trace(T2.3, on_link);
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&g, &t));
    assert_eq!(
        next_hop6(&t.verdict.controller[0].packet),
        v6("2001:db8:ee::99")
    );
}

#[test]
fn ipv6_from_the_outside_enters_the_router_at_the_gateway_chassis_only() {
    let to_t1 = || {
        Packet::echo_request(mac(UPSTREAM_MAC), mac(GW_MAC), ip(FAR), ip(T1.2))
            .with(Field::IpTtl, 64)
            .with_vlan(VLAN, 0)
    };
    let g = pipeline_on("ch2", true);
    let t = trace(&tables(&g), PATCH, to_t1());
    assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&g, &t));
    let out = &t.verdict.outputs[0];
    let tun = out.tunnel.as_ref().expect("tunnelled");
    assert_eq!(tun.id, 5, "network T's VNI");
    assert_eq!(tun.dst, CHASSIS[0].1.parse::<std::net::Ipv4Addr>().unwrap());
    assert_eq!(out.packet.get(Field::EthDst), Some(mac(T1.1).value()));
    assert_eq!(out.packet.get(Field::EthSrc), Some(mac(RT_MAC).value()));
    assert_eq!(out.packet.get(Field::IpTtl), Some(63));
    assert!(out.packet.vlans().is_empty());
    // To t2, on the gateway chassis itself: delivered.
    let to_t2 = Packet::echo_request(mac(UPSTREAM_MAC), mac(GW_MAC), ip(FAR), ip(T2.2))
        .with(Field::IpTtl, 64)
        .with_vlan(VLAN, 0);
    let t = trace(&tables(&g), PATCH, to_t2);
    assert_eq!(t.verdict.ports(), vec![T2.3], "{}", shown(&g, &t));
    // A link-local destination is not routed.
    let local = Packet::echo_request(mac(UPSTREAM_MAC), mac(GW_MAC), ip(FAR), ip("fe80::5"))
        .with_vlan(VLAN, 0);
    let t = trace(&tables(&g), PATCH, local);
    assert!(t.verdict.ports().is_empty(), "{}", shown(&g, &t));
    // Another chassis on the physical network does not route what reaches it for the gateway.
    let p = pipeline_on("ch1", true);
    let t = trace(&tables(&p), PATCH, to_t1());
    assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
}

#[test]
fn only_the_gateway_chassis_answers_for_the_gateway_addresses_on_the_physical_network() {
    let g = pipeline_on("ch2", true);
    let p = pipeline_on("ch1", true);
    for target in [v6(GW_V6), link_local(GW_MAC)] {
        let ns = Packet::neighbor_solicitation(mac(UPSTREAM_MAC), v6(UPSTREAM), target)
            .with_vlan(VLAN, 0);
        let t = trace(&tables(&g), PATCH, ns.clone());
        assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&g, &t));
        let c = &t.verdict.controller[0];
        assert_eq!(
            Punt::from_userdata(&c.userdata),
            Some(Punt::NeighbourSolicitation)
        );
        assert_eq!(g.owner_of_cookie(c.cookie), Some(&Owner::Router(R.into())));
        let t = trace(&tables(&p), PATCH, ns);
        assert!(t.verdict.controller.is_empty(), "{}", shown(&p, &t));
    }
    // Pings to the gateway addresses from outside are answered there, tagged again.
    for (from, to) in [(UPSTREAM, GW_V6), ("172.24.4.1", GW_V4)] {
        let ping = Packet::echo_request(mac(UPSTREAM_MAC), mac(GW_MAC), ip(from), ip(to))
            .with_vlan(VLAN, 0);
        let t = trace(&tables(&g), PATCH, ping.clone());
        assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&g, &t));
        let reply = &t.verdict.outputs[0].packet;
        let (src, dst, kind, want) = match ip(to) {
            IpAddr::V4(_) => (Field::Ipv4Src, Field::Ipv4Dst, Field::IcmpType, 0),
            IpAddr::V6(_) => (Field::Ipv6Src, Field::Ipv6Dst, Field::Icmpv6Type, 129),
        };
        let num = |a: IpAddr| match a {
            IpAddr::V4(v) => u128::from(u32::from(v)),
            IpAddr::V6(v) => u128::from(v),
        };
        assert_eq!(reply.get(kind), Some(want));
        assert_eq!(reply.get(src), Some(num(ip(to))));
        assert_eq!(reply.get(dst), Some(num(ip(from))));
        assert_eq!(reply.get(Field::EthSrc), Some(mac(GW_MAC).value()));
        assert_eq!(reply.get(Field::EthDst), Some(mac(UPSTREAM_MAC).value()));
        assert_eq!(
            reply.vlans().iter().map(|v| v.vid).collect::<Vec<_>>(),
            vec![VLAN]
        );
        let t = trace(&tables(&p), PATCH, ping);
        assert!(t.verdict.ports().is_empty(), "{}", shown(&p, &t));
    }
    // From inside, the router answers for its gateway address itself, on any chassis.
    let ping = Packet::echo_request(mac(T1.1), mac(RT_MAC), ip(T1.2), ip(GW_V6));
    let t = trace(&tables(&p), T1.3, ping);
    assert_eq!(t.verdict.ports(), vec![T1.3], "{}", shown(&p, &t));
    assert_eq!(
        t.verdict.outputs[0].packet.get(Field::Icmpv6Type),
        Some(129)
    );
}

#[test]
fn when_the_gateway_chassis_goes_down_nobody_hosts_the_gateway_and_ipv6_stops_at_the_router() {
    let mut p = pipeline_on("ch1", true);
    p.apply(Input::Object("/chassis-up/ch2".into(), None));
    let t = trace(&tables(&p), T1.3, ping_out());
    assert!(
        t.verdict.ports().is_empty() && t.verdict.controller.is_empty(),
        "{}",
        shown(&p, &t)
    );
    // ch1 becomes a gateway chassis: it hosts the gateway now, and asks for the next hop itself.
    put(
        &mut p,
        "/chassis/ch1".into(),
        json!({"id": "ch1", "tunnel_ip": CHASSIS[0].1, "gateway": true, "physnets": ["physnet1"]}),
    );
    let t = trace(&tables(&p), T1.3, ping_out());
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&p, &t));
    assert_eq!(
        Punt::from_userdata(&t.verdict.controller[0].userdata),
        Some(Punt::ResolveNeighbour)
    );
}
