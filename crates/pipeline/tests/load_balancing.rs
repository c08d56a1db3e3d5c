//! Load balancing checked with the packet simulator, without Open vSwitch. Chassis `ch1`; router R
//! joins network A (10.0.1.0/24) and network B (10.0.2.0/24). Client C1 is on A here; member M1
//! is on A here, M2 on B on `ch2`, M3 on B here. The load balancer's VIP 10.0.1.100 is on A; its
//! listener (TCP 80, and UDP 53 in some tests) balances over the three members' port 8080 (53).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use flowsim::packet::tcp_flags::{ACK, SYN};
use flowsim::{FlowTables, Mac, Packet, Simulator, Trace, Tunnel};
use openflow::Field;
use pipeline::apps::Punt;
use pipeline::apps::load_balancing::{PROBE_PORTS, health_checks};
use pipeline::cookie::Owner;
use pipeline::{Input, Pipeline};
use serde_json::{Value, json};
mod common;

const NET_A: &str = "aaaaaaaa-0000-4000-8000-000000000001";
const NET_B: &str = "bbbbbbbb-0000-4000-8000-000000000002";
const SUB_A: &str = "5aaaaaaa-0000-4000-8000-000000000001";
const SUB_B: &str = "5bbbbbbb-0000-4000-8000-000000000002";
const R: &str = "dddddddd-0000-4000-8000-000000000001";
const LB: &str = "1b000000-0000-4000-8000-000000000001";
const LISTENER: &str = "1e000000-0000-4000-8000-000000000001";
const POOL: &str = "900f0000-0000-4000-8000-000000000001";
const MONITOR: &str = "40000000-0000-4000-8000-000000000001";
const TUNNEL: u32 = 1;
const VIP: &str = "10.0.1.100";

struct Port {
    id: &'static str,
    net: &'static str,
    mac: &'static str,
    ip: &'static str,
    host: &'static str,
    ofport: Option<u32>,
}

const C1: Port = Port {
    id: "c1000000-0000-4000-8000-000000000001",
    net: NET_A,
    mac: "fa:16:3e:00:00:c1",
    ip: "10.0.1.11",
    host: "ch1",
    ofport: Some(10),
};
const M1: Port = Port {
    id: "a1000000-0000-4000-8000-000000000001",
    net: NET_A,
    mac: "fa:16:3e:00:00:a1",
    ip: "10.0.1.21",
    host: "ch1",
    ofport: Some(11),
};
const M2: Port = Port {
    id: "b2000000-0000-4000-8000-000000000002",
    net: NET_B,
    mac: "fa:16:3e:00:00:b2",
    ip: "10.0.2.22",
    host: "ch2",
    ofport: None,
};
const M3: Port = Port {
    id: "b3000000-0000-4000-8000-000000000003",
    net: NET_B,
    mac: "fa:16:3e:00:00:b3",
    ip: "10.0.2.23",
    host: "ch1",
    ofport: Some(12),
};
const VIP_PORT: Port = Port {
    id: "f1000000-0000-4000-8000-000000000001",
    net: NET_A,
    mac: "fa:16:3e:00:00:99",
    ip: VIP,
    host: "",
    ofport: None,
};
const RA_MAC: &str = "fa:16:3e:00:01:0a";
const RB_MAC: &str = "fa:16:3e:00:01:0b";
const MEMBERS: [&Port; 3] = [&M1, &M2, &M3];

fn member_id(i: usize) -> String {
    format!("3e3e0000-0000-4000-8000-00000000000{i}")
}

fn put(p: &mut Pipeline, key: String, v: Value) {
    p.apply(Input::Object(key, Some(v)));
}

fn put_port(p: &mut Pipeline, port: &Port, owner: &str, device: &str) {
    put(
        p,
        format!("/r/ports/{}", port.id),
        json!({"id": port.id, "network_id": port.net, "mac_address": port.mac,
            "fixed_ips": [{"ip_address": port.ip}], "binding:host_id": port.host,
            "admin_state_up": owner != "Octavia", "device_owner": owner, "device_id": device,
            "port_security_enabled": owner == "compute:nova",
            "security_groups": [common::OPEN_GROUP]}),
    );
    if let Some(o) = port.ofport {
        p.apply(Input::Vif(port.id.into(), Some(o)));
    }
}

fn member(p: &mut Pipeline, i: usize, port: u16, extra: Value) {
    let m = MEMBERS[i];
    let subnet = if m.net == NET_A { SUB_A } else { SUB_B };
    let mut v = json!({"id": member_id(i), "_pool_id": POOL, "_loadbalancer_id": LB,
        "address": m.ip, "protocol_port": port, "subnet_id": subnet, "weight": 1,
        "admin_state_up": true});
    for (k, x) in extra.as_object().into_iter().flatten() {
        v[k] = x.clone();
    }
    put(p, format!("/r/members/{}", member_id(i)), v);
}

fn pool(p: &mut Pipeline, algorithm: &str, monitor: bool) {
    put(
        p,
        format!("/r/pools/{POOL}"),
        json!({"id": POOL, "lb_algorithm": algorithm, "admin_state_up": true,
            "healthmonitor_id": monitor.then_some(MONITOR)}),
    );
    if monitor {
        put(
            p,
            format!("/r/healthmonitors/{MONITOR}"),
            json!({"id": MONITOR, "_pool_id": POOL, "type": "HTTP", "delay": 1, "timeout": 1,
                "max_retries": 1, "url_path": "/"}),
        );
    }
}

fn listener(p: &mut Pipeline, protocol: &str, port: u16) {
    put(
        p,
        format!("/r/listeners/{LISTENER}"),
        json!({"id": LISTENER, "_loadbalancer_id": LB, "protocol": protocol,
            "protocol_port": port, "default_pool_id": POOL, "admin_state_up": true}),
    );
}

/// The topology with a TCP listener on 80 over the three members' 8080, round robin.
fn pipeline() -> Pipeline {
    let mut p = Pipeline::new("ch1");
    common::add_open_group(&mut p);
    for (id, vni) in [(NET_A, 100), (NET_B, 200)] {
        put(
            &mut p,
            format!("/r/networks/{id}"),
            json!({"id": id, "provider:network_type": "vxlan", "provider:segmentation_id": vni}),
        );
    }
    for (id, net, cidr) in [(SUB_A, NET_A, "10.0.1.0/24"), (SUB_B, NET_B, "10.0.2.0/24")] {
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
    put(
        &mut p,
        format!("/r/routers/{R}"),
        json!({"id": R, "name": "r", "admin_state_up": true}),
    );
    for (id, net, mac, ip) in [
        (
            "ea000000-0000-4000-8000-00000000000a",
            NET_A,
            RA_MAC,
            "10.0.1.1",
        ),
        (
            "eb000000-0000-4000-8000-00000000000b",
            NET_B,
            RB_MAC,
            "10.0.2.1",
        ),
    ] {
        put(
            &mut p,
            format!("/r/ports/{id}"),
            json!({"id": id, "network_id": net, "mac_address": mac,
                "fixed_ips": [{"ip_address": ip}], "admin_state_up": true,
                "device_owner": "network:router_interface", "device_id": R}),
        );
    }
    for port in [&C1, &M1, &M2, &M3] {
        put_port(&mut p, port, "compute:nova", "");
    }
    put_port(&mut p, &VIP_PORT, "Octavia", &format!("lb-{LB}"));
    p.apply(Input::Tunnel(Some(TUNNEL)));
    put(
        &mut p,
        format!("/r/loadbalancers/{LB}"),
        json!({"id": LB, "name": "web", "vip_address": VIP, "vip_network_id": NET_A,
            "vip_subnet_id": SUB_A, "vip_port_id": VIP_PORT.id, "admin_state_up": true}),
    );
    listener(&mut p, "TCP", 80);
    pool(&mut p, "ROUND_ROBIN", false);
    for i in 0..3 {
        member(&mut p, i, 8080, json!({}));
    }
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

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn v4(s: &str) -> u128 {
    u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()))
}

/// A TCP segment from the client to the VIP (on-link: to the VIP port's MAC).
fn to_vip(sport: u16, dport: u16, flags: u16) -> Packet {
    Packet::tcp(
        mac(C1.mac),
        mac(VIP_PORT.mac),
        ip(C1.ip),
        ip(VIP),
        sport,
        dport,
        flags,
    )
    .with(Field::IpTtl, 64)
}

fn shown(p: &Pipeline, t: &Trace) -> String {
    t.display(|c| p.describe_cookie(c)).to_string()
}

/// Which member a traced packet went to: the port or tunnel it left by, checked against the
/// member's address, port and MAC.
fn member_of(p: &Pipeline, t: &Trace, port: u16) -> usize {
    assert_eq!(t.verdict.outputs.len(), 1, "{}", shown(p, t));
    let out = &t.verdict.outputs[0];
    let dst = out.packet.get(Field::Ipv4Dst).unwrap();
    let i = MEMBERS
        .iter()
        .position(|m| v4(m.ip) == dst)
        .unwrap_or_else(|| panic!("not to a member: {}", shown(p, t)));
    let m = MEMBERS[i];
    assert_eq!(out.packet.get(Field::EthDst), Some(mac(m.mac).value()));
    let l4 = if out.packet.has(Field::TcpDst) {
        Field::TcpDst
    } else {
        Field::UdpDst
    };
    assert_eq!(out.packet.get(l4), Some(u128::from(port)));
    match m.ofport {
        Some(o) => assert_eq!(out.port, o, "{}", shown(p, t)),
        None => {
            assert_eq!(out.port, TUNNEL);
            let tun = out.tunnel.as_ref().expect("tunnelled");
            assert_eq!((tun.id, tun.dst), (200, "192.168.9.2".parse().unwrap()));
            assert_eq!(out.packet.get(Field::EthSrc), Some(mac(RB_MAC).value()));
        }
    }
    i
}

/// Opens `n` connections from the client (source ports 20000 on) and counts them per member.
fn spread(p: &Pipeline, sim: &mut Simulator<'_>, n: u16) -> BTreeMap<usize, usize> {
    let mut count = BTreeMap::new();
    for sport in 20000..20000 + n {
        let t = sim.trace(10, to_vip(sport, 80, SYN));
        *count.entry(member_of(p, &t, 8080)).or_default() += 1;
    }
    count
}

#[test]
fn connections_to_a_vip_are_spread_over_members_on_any_subnet_and_chassis() {
    let p = pipeline();
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let count = spread(&p, &mut sim, 300);
    assert_eq!(count.len(), 3, "every member gets connections: {count:?}");
    assert!(count.values().all(|n| *n >= 60), "{count:?}");
    // A connection's later packets follow its first, whatever the group does.
    let first = member_of(&p, &sim.trace(10, to_vip(20000, 80, SYN)), 8080);
    for _ in 0..3 {
        let t = sim.trace(10, to_vip(20000, 80, ACK));
        assert_eq!(member_of(&p, &t, 8080), first);
    }
}

#[test]
fn answers_reach_the_client_from_the_vip() {
    let p = pipeline();
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    // Find a connection for each member, then answer it as the member would.
    let mut by_member = BTreeMap::new();
    for sport in 30000..30100 {
        let t = sim.trace(10, to_vip(sport, 80, SYN));
        by_member.entry(member_of(&p, &t, 8080)).or_insert(sport);
    }
    assert_eq!(by_member.len(), 3);
    for (i, sport) in by_member {
        let m = MEMBERS[i];
        let answer = |gateway: &str| {
            Packet::tcp(
                mac(gateway),
                mac(C1.mac),
                ip(m.ip),
                ip(C1.ip),
                8080,
                sport,
                SYN | ACK,
            )
            .with(Field::IpTtl, 64)
        };
        let t = match (m.ofport, m.net == NET_A) {
            // On the client's network, from the member's own port.
            (Some(o), true) => sim.trace(o, answer(m.mac).with(Field::EthSrc, mac(m.mac).value())),
            // Routed here from a local member on B.
            (Some(o), false) => sim.trace(
                o,
                Packet::tcp(
                    mac(m.mac),
                    mac(RB_MAC),
                    ip(m.ip),
                    ip(C1.ip),
                    8080,
                    sport,
                    SYN | ACK,
                )
                .with(Field::IpTtl, 64),
            ),
            // Routed on the member's chassis, tunnelled here on A's VNI.
            (None, _) => {
                let tun = Tunnel::new(
                    100,
                    "192.168.9.2".parse().unwrap(),
                    "192.168.9.1".parse().unwrap(),
                );
                sim.trace(TUNNEL, answer(RA_MAC).with_tunnel(&tun))
            }
        };
        assert_eq!(t.verdict.ports(), vec![10], "member {i}: {}", shown(&p, &t));
        let out = &t.verdict.outputs[0].packet;
        assert_eq!(out.get(Field::Ipv4Src), Some(v4(VIP)), "{}", shown(&p, &t));
        assert_eq!(out.get(Field::TcpSrc), Some(80));
        assert_eq!(out.get(Field::TcpDst), Some(u128::from(sport)));
    }
}

#[test]
fn source_ip_persistence_keeps_a_client_on_one_member() {
    let mut p = pipeline();
    pool(&mut p, "SOURCE_IP", false);
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let count = spread(&p, &mut sim, 50);
    assert_eq!(count.len(), 1, "one client, one member: {count:?}");
    // The source port the client chose is kept.
    let t = sim.trace(10, to_vip(40001, 80, SYN));
    assert_eq!(t.verdict.outputs[0].packet.get(Field::TcpSrc), Some(40001));
}

#[test]
fn members_down_drained_or_failing_get_no_connections_and_backups_stand_in() {
    let mut p = pipeline();
    pool(&mut p, "ROUND_ROBIN", true);
    member(&mut p, 0, 8080, json!({"_health": "ERROR"}));
    member(&mut p, 1, 8080, json!({"weight": 0}));
    let tables_now = tables(&p);
    let count = spread(&p, &mut Simulator::new(&tables_now), 40);
    assert_eq!(count.keys().collect::<Vec<_>>(), vec![&2], "{count:?}");
    // Without a monitor, what a health check once found does not count.
    pool(&mut p, "ROUND_ROBIN", false);
    p.apply(Input::Object(format!("/r/healthmonitors/{MONITOR}"), None));
    let tables_now = tables(&p);
    let count = spread(&p, &mut Simulator::new(&tables_now), 40);
    assert!(
        count.contains_key(&0) && !count.contains_key(&1),
        "{count:?}"
    );
    // A backup takes connections only while no other member is available.
    member(&mut p, 1, 8080, json!({"backup": true}));
    member(&mut p, 2, 8080, json!({"admin_state_up": false}));
    member(&mut p, 0, 8080, json!({"admin_state_up": false}));
    let tables_now = tables(&p);
    let count = spread(&p, &mut Simulator::new(&tables_now), 20);
    assert_eq!(count.keys().collect::<Vec<_>>(), vec![&1], "{count:?}");
}

#[test]
fn with_no_member_available_a_new_connection_goes_to_the_agent_to_be_refused() {
    let mut p = pipeline();
    for i in 0..3 {
        member(&mut p, i, 8080, json!({"admin_state_up": false}));
    }
    assert_eq!(p.groups().count(), 0);
    let t = Simulator::new(&tables(&p)).trace(10, to_vip(20000, 80, SYN));
    assert!(t.verdict.outputs.is_empty(), "{}", shown(&p, &t));
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&p, &t));
    let c = &t.verdict.controller[0];
    assert_eq!(Punt::from_userdata(&c.userdata), Some(Punt::Reject));
    assert!(Owner::Listener(LISTENER.into()).owns(c.cookie));
}

/// Whether a packet to the VIP left as it was sent (to the VIP's address, not a member's).
fn not_balanced(t: &Trace) -> bool {
    t.verdict
        .outputs
        .iter()
        .all(|o| o.packet.get(Field::Ipv4Dst) == Some(v4(VIP)))
}

#[test]
fn a_udp_listener_balances_datagrams() {
    let mut p = pipeline();
    listener(&mut p, "UDP", 53);
    for i in 0..3 {
        member(&mut p, i, 5353, json!({}));
    }
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let mut seen = BTreeMap::new();
    for sport in 1000..1200 {
        let d = Packet::udp(
            mac(C1.mac),
            mac(VIP_PORT.mac),
            ip(C1.ip),
            ip(VIP),
            sport,
            53,
        )
        .with(Field::IpTtl, 64);
        *seen
            .entry(member_of(&p, &sim.trace(10, d), 5353))
            .or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    // TCP to the UDP listener's port is not balanced.
    let t = sim.trace(10, to_vip(20000, 53, SYN));
    assert!(not_balanced(&t), "{}", shown(&p, &t));
}

#[test]
fn a_client_behind_the_router_reaches_the_vip_too() {
    let mut p = pipeline();
    // Move the client to network B: it reaches the VIP on A through R.
    let c = Port {
        id: C1.id,
        net: NET_B,
        mac: C1.mac,
        ip: "10.0.2.11",
        host: "ch1",
        ofport: Some(10),
    };
    put_port(&mut p, &c, "compute:nova", "");
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let mut seen = BTreeMap::new();
    for sport in 20000..20100 {
        let syn = Packet::tcp(mac(c.mac), mac(RB_MAC), ip(c.ip), ip(VIP), sport, 80, SYN)
            .with(Field::IpTtl, 64);
        let t = sim.trace(10, syn);
        assert_eq!(t.verdict.outputs.len(), 1, "{}", shown(&p, &t));
        let out = &t.verdict.outputs[0];
        let i = MEMBERS
            .iter()
            .position(|m| Some(v4(m.ip)) == out.packet.get(Field::Ipv4Dst))
            .expect("to a member");
        assert_eq!(
            out.packet.get(Field::EthDst),
            Some(mac(MEMBERS[i].mac).value())
        );
        *seen.entry(i).or_insert(0) += 1;
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
}

#[test]
fn the_vip_answers_arp_and_ping_on_its_network() {
    let p = pipeline();
    let tables = tables(&p);
    let arp = Packet::arp_request(mac(C1.mac), C1.ip.parse().unwrap(), VIP.parse().unwrap());
    let t = flowsim::trace(&tables, 10, arp);
    assert_eq!(t.verdict.ports(), vec![10], "{}", shown(&p, &t));
    let out = &t.verdict.outputs[0].packet;
    assert_eq!(out.get(Field::ArpSha), Some(mac(VIP_PORT.mac).value()));
    let ping = Packet::echo_request(mac(C1.mac), mac(VIP_PORT.mac), ip(C1.ip), ip(VIP))
        .with(Field::IpTtl, 64);
    let t = flowsim::trace(&tables, 10, ping);
    assert_eq!(t.verdict.ports(), vec![10], "{}", shown(&p, &t));
    assert_eq!(t.verdict.outputs[0].packet.get(Field::IcmpType), Some(0));
    // A disabled load balancer answers nothing and balances nothing.
    let mut p = pipeline();
    put(
        &mut p,
        format!("/r/loadbalancers/{LB}"),
        json!({"id": LB, "vip_address": VIP, "vip_network_id": NET_A, "vip_port_id": VIP_PORT.id,
            "admin_state_up": false}),
    );
    let t = flowsim::trace(&self::tables(&p), 10, to_vip(20000, 80, SYN));
    assert!(not_balanced(&t), "{}", shown(&p, &t));
    assert_eq!(p.groups().count(), 0);
}

#[test]
fn health_checks_run_where_members_are_and_their_answers_go_to_the_agent() {
    let mut p = pipeline();
    pool(&mut p, "ROUND_ROBIN", true);
    // Without security groups on M1, its answer needs no probe before it.
    put(
        &mut p,
        format!("/r/ports/{}", M1.id),
        json!({"id": M1.id, "network_id": M1.net, "mac_address": M1.mac,
            "fixed_ips": [{"ip_address": M1.ip}], "binding:host_id": "ch1",
            "admin_state_up": true, "device_owner": "compute:nova",
            "port_security_enabled": false}),
    );
    let checks = health_checks(p.topology());
    let mut local: Vec<(&str, u32)> = checks
        .iter()
        .map(|c| (c.member_id.as_str(), c.ofport))
        .collect();
    local.sort();
    assert_eq!(
        local,
        vec![(member_id(0).as_str(), 11), (member_id(2).as_str(), 12)]
    );
    let m1 = checks.iter().find(|c| c.ofport == 11).unwrap();
    assert_eq!(m1.source_ip, VIP.parse::<Ipv4Addr>().unwrap());
    assert_eq!(
        m1.source_mac,
        pipeline::model::parse_mac(VIP_PORT.mac).unwrap()
    );
    let m3 = checks.iter().find(|c| c.ofport == 12).unwrap();
    assert_eq!(
        m3.source_mac,
        pipeline::model::parse_mac(RB_MAC).unwrap(),
        "routed: the router's MAC"
    );
    let tables = tables(&p);
    let answer = Packet::tcp(
        mac(M1.mac),
        mac(VIP_PORT.mac),
        ip(M1.ip),
        ip(VIP),
        8080,
        PROBE_PORTS + 7,
        SYN | ACK,
    )
    .with(Field::IpTtl, 64);
    let t = flowsim::trace(&tables, 11, answer);
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(&p, &t));
    let c = &t.verdict.controller[0];
    assert_eq!(Punt::from_userdata(&c.userdata), Some(Punt::HealthReply));
    assert!(Owner::Member(member_id(0).into()).owns(c.cookie));
}

#[test]
fn a_member_reaching_its_own_vip_is_answered_by_itself_from_the_vip() {
    let mut p = pipeline();
    // Only M1 is available: its connection to the VIP comes back to it.
    for i in [1, 2] {
        member(&mut p, i, 8080, json!({"admin_state_up": false}));
    }
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    let syn = Packet::tcp(
        mac(M1.mac),
        mac(VIP_PORT.mac),
        ip(M1.ip),
        ip(VIP),
        40000,
        80,
        SYN,
    )
    .with(Field::IpTtl, 64);
    let t = sim.trace(11, syn);
    assert_eq!(t.verdict.ports(), vec![11], "{}", shown(&p, &t));
    let there = &t.verdict.outputs[0].packet;
    assert_eq!(
        there.get(Field::Ipv4Src),
        Some(v4(VIP)),
        "{}",
        shown(&p, &t)
    );
    assert_eq!(there.get(Field::Ipv4Dst), Some(v4(M1.ip)));
    assert_eq!(there.get(Field::TcpDst), Some(8080));
    assert_eq!(there.get(Field::EthSrc), Some(mac(VIP_PORT.mac).value()));
    let sport = u16::try_from(there.get(Field::TcpSrc).unwrap()).unwrap();
    // M1 answers the VIP; the answer comes back to it from VIP:80.
    let answer = Packet::tcp(
        mac(M1.mac),
        mac(VIP_PORT.mac),
        ip(M1.ip),
        ip(VIP),
        8080,
        sport,
        SYN | ACK,
    )
    .with(Field::IpTtl, 64);
    let t = sim.trace(11, answer);
    assert_eq!(t.verdict.ports(), vec![11], "{}", shown(&p, &t));
    let back = &t.verdict.outputs[0].packet;
    assert_eq!(back.get(Field::Ipv4Src), Some(v4(VIP)), "{}", shown(&p, &t));
    assert_eq!(back.get(Field::TcpSrc), Some(80));
    assert_eq!(back.get(Field::TcpDst), Some(40000));
    assert_eq!(back.get(Field::Ipv4Dst), Some(v4(M1.ip)));
}

const EXT: &str = "eeeeeeee-0000-4000-8000-0000000000e1";
const FIP: &str = "f1f1f1f1-0000-4000-8000-000000000001";
const FIP_ADDRESS: &str = "172.24.4.50";
const FIP_MAC: &str = "fa:16:3e:00:04:50";
const OUTSIDE_MAC: &str = "02:00:00:00:99:01";
const OUTSIDE: &str = "198.51.100.7";
const PATCH: u32 = 30;

/// The VIP reached from outside: R's gateway on the flat external network EXT (`physnet1`, patch
/// port 30 here), `ch1` the gateway chassis, the floating IP 172.24.4.50 on the VIP port.
fn with_floating_ip(p: &mut Pipeline) {
    put(
        p,
        format!("/r/networks/{EXT}"),
        json!({"id": EXT, "provider:network_type": "flat", "provider:physical_network": "physnet1",
            "router:external": true}),
    );
    put(
        p,
        "/r/subnets/5e".into(),
        json!({"id": "5e", "network_id": EXT, "cidr": "172.24.4.0/24", "gateway_ip": "172.24.4.1",
            "enable_dhcp": false}),
    );
    put(
        p,
        "/chassis/ch1".into(),
        json!({"id": "ch1", "tunnel_ip": "192.168.9.1", "gateway": true, "physnets": ["physnet1"]}),
    );
    put(p, "/chassis-up/ch1".into(), json!({"lease": 1}));
    put(
        p,
        format!("/r/routers/{R}"),
        json!({"id": R, "name": "r", "admin_state_up": true, "_nat_id": 1,
            "external_gateway_info": {"network_id": EXT, "enable_snat": true,
                "external_fixed_ips": [{"ip_address": "172.24.4.2"}]}}),
    );
    let own = "f0000000-0000-4000-8000-0000000000f0";
    put(
        p,
        format!("/r/ports/{own}"),
        json!({"id": own, "network_id": EXT, "mac_address": FIP_MAC,
            "fixed_ips": [{"ip_address": FIP_ADDRESS}], "admin_state_up": true,
            "device_owner": "network:floatingip", "device_id": FIP}),
    );
    put(
        p,
        format!("/r/floatingips/{FIP}"),
        json!({"id": FIP, "floating_ip_address": FIP_ADDRESS, "floating_network_id": EXT,
            "_port": own, "port_id": VIP_PORT.id, "fixed_ip_address": VIP, "router_id": R}),
    );
    p.apply(Input::Patch("physnet1".into(), Some(PATCH)));
}

/// A TCP segment from the outside host to the floating IP.
fn from_outside(sport: u16, flags: u16) -> Packet {
    Packet::tcp(
        mac(OUTSIDE_MAC),
        mac(FIP_MAC),
        ip(OUTSIDE),
        ip(FIP_ADDRESS),
        sport,
        80,
        flags,
    )
    .with(Field::IpTtl, 64)
}

/// The packet that leaves for the outside (to the agent first: the next hop is not learned yet)
/// is the member's answer from the floating IP's port 80.
fn leaves_from_the_floating_ip(p: &Pipeline, t: &Trace, sport: u16) {
    assert_eq!(t.verdict.controller.len(), 1, "{}", shown(p, t));
    let c = &t.verdict.controller[0];
    assert_eq!(
        Punt::from_userdata(&c.userdata),
        Some(Punt::ResolveNeighbour),
        "{}",
        shown(p, t)
    );
    assert_eq!(
        c.packet.get(Field::Ipv4Src),
        Some(v4(FIP_ADDRESS)),
        "{}",
        shown(p, t)
    );
    assert_eq!(c.packet.get(Field::TcpSrc), Some(80));
    assert_eq!(c.packet.get(Field::Ipv4Dst), Some(v4(OUTSIDE)));
    assert_eq!(c.packet.get(Field::TcpDst), Some(u128::from(sport)));
}

#[test]
fn a_vip_with_a_floating_ip_is_balanced_for_the_outside_on_the_gateway_chassis() {
    let mut p = pipeline();
    with_floating_ip(&mut p);
    let tables = tables(&p);
    let mut sim = Simulator::new(&tables);
    // The floating IP's address is answered here.
    let arp = Packet::arp_request(
        mac(OUTSIDE_MAC),
        "172.24.4.7".parse().unwrap(),
        FIP_ADDRESS.parse().unwrap(),
    );
    let t = flowsim::trace(&tables, PATCH, arp);
    assert_eq!(t.verdict.ports(), vec![PATCH], "{}", shown(&p, &t));
    // Connections from outside reach every member, from the VIP.
    let mut first: BTreeMap<usize, (u16, u16)> = BTreeMap::new();
    for sport in 5000..5090 {
        let t = sim.trace(PATCH, from_outside(sport, SYN));
        assert_eq!(t.verdict.outputs.len(), 1, "{}", shown(&p, &t));
        let out = &t.verdict.outputs[0].packet;
        assert_eq!(out.get(Field::Ipv4Src), Some(v4(VIP)), "{}", shown(&p, &t));
        assert_eq!(out.get(Field::TcpDst), Some(8080));
        // At the member's port, or through the tunnel to its chassis.
        let i = member_of(&p, &t, 8080);
        let translated = u16::try_from(out.get(Field::TcpSrc).unwrap()).unwrap();
        first.entry(i).or_insert((sport, translated));
    }
    assert_eq!(first.len(), 3, "{first:?}");
    // A local member's answer leaves from the floating IP.
    let (sport, translated) = first[&0];
    let answer = Packet::tcp(
        mac(M1.mac),
        mac(VIP_PORT.mac),
        ip(M1.ip),
        ip(VIP),
        8080,
        translated,
        SYN | ACK,
    )
    .with(Field::IpTtl, 64);
    let t = sim.trace(11, answer);
    leaves_from_the_floating_ip(&p, &t, sport);
    // So does the answer of a member on another chassis, which comes through the tunnel.
    let (sport, translated) = first[&1];
    let tun = Tunnel::new(
        100,
        "192.168.9.2".parse().unwrap(),
        "192.168.9.1".parse().unwrap(),
    );
    let answer = Packet::tcp(
        mac(M2.mac),
        mac(VIP_PORT.mac),
        ip(M2.ip),
        ip(VIP),
        8080,
        translated,
        SYN | ACK,
    )
    .with(Field::IpTtl, 63)
    .with_tunnel(&tun);
    let t = sim.trace(TUNNEL, answer);
    leaves_from_the_floating_ip(&p, &t, sport);
    // Later packets from outside follow their connection.
    let (sport, _) = first[&2];
    let t = sim.trace(PATCH, from_outside(sport, ACK));
    assert_eq!(t.verdict.outputs.len(), 1, "{}", shown(&p, &t));
    assert_eq!(
        t.verdict.outputs[0].packet.get(Field::Ipv4Dst),
        Some(v4(M3.ip))
    );
}

#[test]
fn members_elsewhere_send_their_answers_to_outside_clients_to_the_gateway_chassis() {
    // As ch1 sees it when ch2 hosts the gateway: M1's answers to the VIP go there.
    let mut p = pipeline();
    with_floating_ip(&mut p);
    put(
        &mut p,
        "/chassis/ch1".into(),
        json!({"id": "ch1", "tunnel_ip": "192.168.9.1", "gateway": false, "physnets": ["physnet1"]}),
    );
    put(
        &mut p,
        "/chassis/ch2".into(),
        json!({"id": "ch2", "tunnel_ip": "192.168.9.2", "gateway": true, "physnets": ["physnet1"]}),
    );
    // Without security groups on M1, its answer needs no connection before it.
    put(
        &mut p,
        format!("/r/ports/{}", M1.id),
        json!({"id": M1.id, "network_id": M1.net, "mac_address": M1.mac,
            "fixed_ips": [{"ip_address": M1.ip}], "binding:host_id": "ch1",
            "admin_state_up": true, "device_owner": "compute:nova",
            "port_security_enabled": false}),
    );
    let tables = tables(&p);
    let answer = Packet::tcp(
        mac(M1.mac),
        mac(VIP_PORT.mac),
        ip(M1.ip),
        ip(VIP),
        8080,
        40000,
        SYN | ACK,
    )
    .with(Field::IpTtl, 64);
    let t = Simulator::new(&tables).trace(11, answer);
    assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&p, &t));
    let out = &t.verdict.outputs[0];
    let tun = out.tunnel.as_ref().expect("tunnelled");
    assert_eq!((tun.id, tun.dst), (100, "192.168.9.2".parse().unwrap()));
    assert_eq!(
        out.packet.get(Field::EthDst),
        Some(mac(VIP_PORT.mac).value())
    );
    // Nothing from outside is balanced here.
    let t = flowsim::trace(&tables, PATCH, from_outside(5000, SYN));
    let to_member = |o: &flowsim::Output| {
        MEMBERS
            .iter()
            .any(|m| o.packet.get(Field::Ipv4Dst) == Some(v4(m.ip)))
    };
    assert!(
        !t.verdict.outputs.iter().any(to_member),
        "{}",
        shown(&p, &t)
    );
}

/// Two listeners over one pool compute some flows identically (the shared stages: the same
/// members at the same addresses); the one flow installed, cookie included, does not depend on
/// which listener came first, as a restarted agent computes them in an order of its own.
#[test]
fn flows_two_listeners_share_do_not_depend_on_their_order() {
    // Its cookie differs from the first listener's (a cookie holds an id's first 56 bits).
    const SECOND: &str = "2e000000-0000-4000-8000-000000000002";
    let second = |p: &mut Pipeline| {
        put(
            p,
            format!("/r/listeners/{SECOND}"),
            json!({"id": SECOND, "_loadbalancer_id": LB, "protocol": "TCP",
                "protocol_port": 81, "default_pool_id": POOL, "admin_state_up": true}),
        );
    };
    let mut first_then_second = pipeline();
    second(&mut first_then_second);
    let mut second_then_first = pipeline();
    second_then_first.apply(Input::Object(format!("/r/listeners/{LISTENER}"), None));
    second(&mut second_then_first);
    listener(&mut second_then_first, "TCP", 80);
    let flows = |p: &Pipeline| -> std::collections::BTreeSet<String> {
        p.flows().map(|f| format!("{f:?}")).collect()
    };
    let shared_by_both = first_then_second
        .flows_by_app()
        .filter(|(_, owner, _)| matches!(owner, Owner::Listener(_)))
        .map(|(_, _, f)| (f.table, f.priority, f.match_.clone()))
        .fold(BTreeMap::<_, usize>::new(), |mut n, key| {
            *n.entry(key).or_default() += 1;
            n
        })
        .into_values()
        .filter(|n| *n > 1)
        .count();
    assert!(shared_by_both > 0, "the listeners share no flow");
    assert_eq!(flows(&first_then_second), flows(&second_then_first));
}
