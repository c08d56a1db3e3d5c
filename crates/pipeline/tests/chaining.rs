//! Service function chaining checked with the packet simulator, without Open vSwitch. Chassis
//! `ch1`; network N (VXLAN 100, 10.0.0.0/24) with VM A here and VM B on `ch2`; service functions
//! (port security off): SF1 here (ingress 20, egress 21), SF2a on `ch2`, SF2b here (22, 23). The
//! chain sends A's TCP to port 80 through SF1, then SF2a or SF2b.

use std::collections::BTreeSet;

use flowsim::packet::tcp_flags::SYN;
use flowsim::{FlowTables, Mac, Packet, Simulator, Trace, Tunnel};
use openflow::Field;
use pipeline::apps::chaining_label as label;
use pipeline::tables::SFC_VNI;
use pipeline::{Input, Pipeline};
use serde_json::{Value, json};
mod common;

const NET: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const TUNNEL: u32 = 1;
const CHAIN: &str = "c0000000-0000-4000-8000-000000000001";
const CHAIN_ID: u32 = 7;

struct Port {
    id: &'static str,
    mac: &'static str,
    ip: &'static str,
    host: &'static str,
    ofport: Option<u32>,
}

const A: Port = Port {
    id: "a0000000-0000-4000-8000-000000000001",
    mac: "fa:16:3e:00:00:0a",
    ip: "10.0.0.11",
    host: "ch1",
    ofport: Some(10),
};
const B: Port = Port {
    id: "b0000000-0000-4000-8000-000000000001",
    mac: "fa:16:3e:00:00:0b",
    ip: "10.0.0.12",
    host: "ch2",
    ofport: None,
};
const SF: [(Port, Port); 3] = [
    (
        Port {
            id: "51000000-0000-4000-8000-00000000001a",
            mac: "fa:16:3e:00:01:1a",
            ip: "10.0.0.21",
            host: "ch1",
            ofport: Some(20),
        },
        Port {
            id: "51000000-0000-4000-8000-00000000001b",
            mac: "fa:16:3e:00:01:1b",
            ip: "10.0.0.22",
            host: "ch1",
            ofport: Some(21),
        },
    ),
    (
        Port {
            id: "52000000-0000-4000-8000-00000000002a",
            mac: "fa:16:3e:00:02:2a",
            ip: "10.0.0.31",
            host: "ch2",
            ofport: None,
        },
        Port {
            id: "52000000-0000-4000-8000-00000000002b",
            mac: "fa:16:3e:00:02:2b",
            ip: "10.0.0.32",
            host: "ch2",
            ofport: None,
        },
    ),
    (
        Port {
            id: "53000000-0000-4000-8000-00000000003a",
            mac: "fa:16:3e:00:03:3a",
            ip: "10.0.0.41",
            host: "ch1",
            ofport: Some(22),
        },
        Port {
            id: "53000000-0000-4000-8000-00000000003b",
            mac: "fa:16:3e:00:03:3b",
            ip: "10.0.0.42",
            host: "ch1",
            ofport: Some(23),
        },
    ),
];

fn pair_id(i: usize) -> String {
    format!("9a000000-0000-4000-8000-00000000000{i}")
}

fn put(p: &mut Pipeline, key: String, v: Value) {
    p.apply(Input::Object(key, Some(v)));
}

fn put_port(p: &mut Pipeline, port: &Port, secure: bool) {
    put(
        p,
        format!("/r/ports/{}", port.id),
        json!({"id": port.id, "network_id": NET, "mac_address": port.mac,
            "fixed_ips": [{"ip_address": port.ip}], "binding:host_id": port.host,
            "admin_state_up": true, "device_owner": "compute:nova",
            "port_security_enabled": secure,
            "security_groups": if secure { json!([common::OPEN_GROUP]) } else { json!([]) }}),
    );
    if let Some(o) = port.ofport {
        p.apply(Input::Vif(port.id.into(), Some(o)));
    }
}

fn pair(p: &mut Pipeline, i: usize, mpls: bool) {
    let (ingress, egress) = &SF[i];
    put(
        p,
        format!("/r/port_pairs/{}", pair_id(i)),
        json!({"id": pair_id(i), "ingress": ingress.id, "egress": egress.id,
            "service_function_parameters": {"correlation": if mpls { json!("mpls") } else { json!(null) }, "weight": 1}}),
    );
}

fn chain(p: &mut Pipeline, symmetric: bool) {
    put(
        p,
        format!("/r/port_chains/{CHAIN}"),
        json!({"id": CHAIN, "chain_id": CHAIN_ID, "port_pair_groups": ["g1", "g2"],
            "flow_classifiers": ["fc"],
            "chain_parameters": {"correlation": "mpls", "symmetric": symmetric}}),
    );
}

fn pipeline() -> Pipeline {
    let mut p = Pipeline::new("ch1");
    common::add_open_group(&mut p);
    put(
        &mut p,
        format!("/r/networks/{NET}"),
        json!({"id": NET, "provider:network_type": "vxlan", "provider:segmentation_id": 100}),
    );
    put(
        &mut p,
        "/r/subnets/s".into(),
        json!({"id": "s", "network_id": NET, "cidr": "10.0.0.0/24", "enable_dhcp": false}),
    );
    put(
        &mut p,
        "/chassis/ch2".into(),
        json!({"id": "ch2", "tunnel_ip": "192.168.9.2"}),
    );
    put(&mut p, "/chassis-up/ch2".into(), json!({"lease": 1}));
    put_port(&mut p, &A, true);
    put_port(&mut p, &B, true);
    for (ingress, egress) in &SF {
        put_port(&mut p, ingress, false);
        put_port(&mut p, egress, false);
    }
    p.apply(Input::Tunnel(Some(TUNNEL)));
    for i in 0..3 {
        pair(&mut p, i, false);
    }
    put(
        &mut p,
        "/r/port_pair_groups/g1".into(),
        json!({"id": "g1", "port_pairs": [pair_id(0)]}),
    );
    put(
        &mut p,
        "/r/port_pair_groups/g2".into(),
        json!({"id": "g2", "port_pairs": [pair_id(1), pair_id(2)]}),
    );
    put(
        &mut p,
        "/r/flow_classifiers/fc".into(),
        json!({"id": "fc", "ethertype": "IPv4", "protocol": "tcp",
            "destination_port_range_min": 80, "destination_port_range_max": 80,
            "logical_source_port": A.id, "logical_destination_port": B.id}),
    );
    chain(&mut p, false);
    p
}

fn tables(p: &Pipeline) -> FlowTables {
    FlowTables::new(p.flows().cloned(), p.groups().cloned())
        .expect("flows and groups the switch accepts")
        .with_tunnel_port(TUNNEL)
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn syn(sport: u16, dport: u16) -> Packet {
    Packet::tcp(
        mac(A.mac),
        mac(B.mac),
        A.ip.parse().unwrap(),
        B.ip.parse().unwrap(),
        sport,
        dport,
        SYN,
    )
    .with(Field::IpTtl, 64)
}

fn shown(p: &Pipeline, t: &Trace) -> String {
    t.display(|c| p.describe_cookie(c)).to_string()
}

/// The packet left unchanged (but for a label) by `port`, or through the tunnel.
fn one_output(p: &Pipeline, t: &Trace) -> (u32, Packet, Option<Tunnel>) {
    assert_eq!(t.verdict.outputs.len(), 1, "{}", shown(p, t));
    let o = &t.verdict.outputs[0];
    (o.port, o.packet.clone(), o.tunnel.clone())
}

#[test]
fn classified_traffic_goes_to_the_first_function_as_it_was_sent() {
    let p = pipeline();
    let t = Simulator::new(&tables(&p)).trace(10, syn(30000, 80));
    let (port, packet, _) = one_output(&p, &t);
    assert_eq!(port, 20, "SF1's ingress: {}", shown(&p, &t));
    assert_eq!(packet.get(Field::EthDst), Some(mac(B.mac).value()));
    assert_eq!(
        packet.get(Field::Ipv4Dst),
        syn(30000, 80).get(Field::Ipv4Dst)
    );
    assert!(packet.mpls().is_empty());
    // Other traffic goes straight to B.
    let t = Simulator::new(&tables(&p)).trace(10, syn(30000, 22));
    let (port, _, tun) = one_output(&p, &t);
    assert_eq!(
        (port, tun.map(|t| t.id)),
        (TUNNEL, Some(100)),
        "{}",
        shown(&p, &t)
    );
}

#[test]
fn back_from_a_function_the_next_hop_spreads_connections_and_the_last_sends_them_on() {
    let p = pipeline();
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let mut seen = BTreeSet::new();
    for sport in 30000..30040 {
        let t = sim.trace(21, syn(sport, 80));
        let (port, packet, tun) = one_output(&p, &t);
        match tun {
            // SF2a on ch2: through the tunnel with the chaining id, labelled for its pair.
            Some(tun) => {
                assert_eq!(
                    (port, tun.id),
                    (TUNNEL, u64::from(SFC_VNI)),
                    "{}",
                    shown(&p, &t)
                );
                assert_eq!(
                    tun.dst,
                    "192.168.9.2".parse::<std::net::Ipv4Addr>().unwrap()
                );
                let l = packet.mpls().first().expect("labelled").label;
                assert_eq!(l, label(CHAIN_ID, false, false, 2, 0));
                seen.insert("SF2a");
            }
            None => {
                assert_eq!(port, 22, "SF2b's ingress: {}", shown(&p, &t));
                assert!(packet.mpls().is_empty());
                seen.insert("SF2b");
            }
        }
        // A connection stays on its pair.
        let again = sim.trace(21, syn(sport, 80));
        assert_eq!(one_output(&p, &again).0, port);
    }
    assert_eq!(seen.len(), 2, "both pairs used: {seen:?}");
    // Back from the last hop: on to B.
    let t = sim.trace(23, syn(30000, 80));
    let (port, packet, tun) = one_output(&p, &t);
    assert_eq!(
        (port, tun.map(|t| t.id)),
        (TUNNEL, Some(100)),
        "{}",
        shown(&p, &t)
    );
    assert_eq!(packet.get(Field::EthDst), Some(mac(B.mac).value()));
}

#[test]
fn chained_traffic_from_another_chassis_reaches_its_function_here_without_the_label() {
    let p = pipeline();
    let tun = Tunnel::new(
        u64::from(SFC_VNI),
        "192.168.9.2".parse().unwrap(),
        "192.168.9.1".parse().unwrap(),
    );
    let packet = syn(30000, 80)
        .with_mpls(label(CHAIN_ID, false, false, 2, 1), 0, 64)
        .with_tunnel(&tun);
    let t = Simulator::new(&tables(&p)).trace(TUNNEL, packet);
    let (port, packet, _) = one_output(&p, &t);
    assert_eq!(port, 22, "SF2b's ingress: {}", shown(&p, &t));
    assert!(packet.mpls().is_empty(), "{}", shown(&p, &t));
    assert_eq!(packet.get(Field::TcpDst), Some(80));
}

#[test]
fn an_sf_aware_function_gets_and_returns_the_label() {
    let mut p = pipeline();
    pair(&mut p, 0, true);
    let tables = tables(&p);
    let t = Simulator::new(&tables).trace(10, syn(30000, 80));
    let (port, packet, _) = one_output(&p, &t);
    assert_eq!(port, 20, "{}", shown(&p, &t));
    let l = label(CHAIN_ID, false, false, 1, 0);
    assert_eq!(packet.mpls().first().map(|e| e.label), Some(l));
    // It comes back labelled: unlabelled and on to the next hop.
    let back = syn(30000, 80).with_mpls(l, 0, 64);
    let t = Simulator::new(&tables).trace(21, back);
    let (port, packet, _) = one_output(&p, &t);
    assert!(port == 22 || port == TUNNEL, "{}", shown(&p, &t));
    if port == 22 {
        assert!(packet.mpls().is_empty());
    }
    // Unlabelled, it is not the chain's.
    let t = Simulator::new(&tables).trace(21, syn(30000, 80));
    assert!(
        t.verdict.outputs.iter().all(|o| o.port != 22),
        "{}",
        shown(&p, &t)
    );
}

#[test]
fn a_symmetric_chain_takes_the_replies_through_the_functions_in_reverse() {
    let mut p = pipeline();
    // B here (port 11) for its replies to be classified here.
    let b = Port {
        host: "ch1",
        ofport: Some(11),
        ..B
    };
    put_port(&mut p, &b, true);
    chain(&mut p, true);
    let reply = Packet::tcp(
        mac(B.mac),
        mac(A.mac),
        B.ip.parse().unwrap(),
        A.ip.parse().unwrap(),
        80,
        30000,
        SYN,
    )
    .with(Field::IpTtl, 64);
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let t = sim.trace(11, reply.clone());
    let (port, _, tun) = one_output(&p, &t);
    // Into the last hop's pairs at their egress ports: SF2b's here, or SF2a's on ch2.
    assert!(
        port == 23 || tun.as_ref().is_some_and(|t| t.id == u64::from(SFC_VNI)),
        "{}",
        shown(&p, &t)
    );
    // Back at SF2b's ingress: to SF1's egress; back at SF1's ingress: on to A.
    let t = sim.trace(22, reply.clone());
    assert_eq!(one_output(&p, &t).0, 21, "{}", shown(&p, &t));
    let t = sim.trace(20, reply);
    assert_eq!(one_output(&p, &t).0, 10, "{}", shown(&p, &t));
}
