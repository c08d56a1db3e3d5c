//! Conntrack NAT as Open vSwitch's userspace datapath does it: source NAT of new connections
//! and their replies, destination NAT (a floating IP), port allocation on collisions, zones,
//! `ct` without `nat`, and translation that the rest of a pass does not see.

use std::net::{IpAddr, Ipv4Addr};

use flowsim::conntrack::ct_state::{DNAT, EST, NEW, RPL, SNAT, TRK};
use flowsim::packet::tcp_flags;
use flowsim::{ConnKey, FlowTables, Mac, NatKind, Packet, Simulator, Trace};
use openflow::{Field, Flow};

const INSIDE: u32 = 1;
const OUTSIDE: u32 = 2;

fn mac(s: &str) -> Mac {
    s.parse().expect("test MAC")
}
fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}
fn tables(text: &[&str]) -> FlowTables {
    let flows: Vec<Flow> = text
        .iter()
        .map(|t| t.parse().unwrap_or_else(|e| panic!("{t}: {e}")))
        .collect();
    FlowTables::new(flows, []).expect("valid tables")
}
fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u16) -> Packet {
    let m = mac("00:00:00:00:00:01");
    Packet::tcp(m, m, ip(src), ip(dst), sport, dport, flags)
}
fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Packet {
    let m = mac("00:00:00:00:00:01");
    Packet::udp(m, m, ip(src), ip(dst), sport, dport)
}
fn v4(p: &Packet, f: Field) -> Ipv4Addr {
    Ipv4Addr::from(p.get(f).expect("IPv4 address") as u32)
}
/// The only packet sent, on `port`.
fn sent(t: &Trace, port: u32) -> &Packet {
    assert_eq!(t.verdict.ports(), [port], "{t}");
    &t.verdict.outputs[0].packet
}

/// A router's source NAT in zone 5: out from port 1 as 172.24.4.10, replies back in on port 2
/// through `ct(nat)`.
const SNAT_FLOWS: [&str; 5] = [
    "table=0, priority=10,ip,in_port=1 actions=ct(commit,zone=5,nat(src=172.24.4.10),table=1)",
    "table=0, priority=10,ip,in_port=2 actions=ct(zone=5,nat,table=2)",
    "table=1, priority=10,ct_state=+trk+new+snat actions=output:2",
    "table=2, priority=10,ct_state=+trk+est+rpl+dnat actions=output:1",
    "table=2, priority=5 actions=drop",
];

#[test]
fn snat_translates_a_new_connection_and_its_reply_back() {
    let t = tables(&SNAT_FLOWS);
    let mut sim = Simulator::new(&t);
    let out = sim.trace(
        INSIDE,
        tcp("10.0.0.5", "8.8.8.8", 40000, 80, tcp_flags::SYN),
    );
    let p = sent(&out, OUTSIDE);
    assert_eq!(v4(p, Field::Ipv4Src), Ipv4Addr::new(172, 24, 4, 10));
    assert_eq!(
        p.get(Field::TcpSrc),
        Some(40000),
        "a free source port is kept"
    );
    // The recirculation sees the translated packet, +snat, and the original tuple.
    let again = &out.passes[1].packet;
    assert_eq!(
        again.get(Field::CtState),
        Some(u128::from(TRK | NEW | SNAT))
    );
    assert_eq!(again.get(Field::CtNwSrc), Some(0x0a00_0005));
    assert!(
        out.to_string()
            .contains("translated in the datapath: ip_src=10.0.0.5->172.24.4.10"),
        "{out}"
    );

    let c = &sim.conntrack().connections()[0];
    assert_eq!(c.nat, Some(NatKind::Src));
    assert_eq!(
        c.reply,
        ConnKey {
            zone: 5,
            proto: 6,
            src: ip("8.8.8.8"),
            dst: ip("172.24.4.10"),
            sport: 80,
            dport: 40000,
        }
    );

    let flags = tcp_flags::SYN | tcp_flags::ACK;
    let back = sim.trace(OUTSIDE, tcp("8.8.8.8", "172.24.4.10", 80, 40000, flags));
    let p = sent(&back, INSIDE);
    assert_eq!(v4(p, Field::Ipv4Dst), Ipv4Addr::new(10, 0, 0, 5));
    assert_eq!(p.get(Field::TcpDst), Some(40000));
    assert_eq!(
        back.passes[1].packet.get(Field::CtState),
        Some(u128::from(TRK | EST | RPL | DNAT))
    );
    // Something else sent to the address belongs to no connection.
    let stray = sim.trace(OUTSIDE, tcp("8.8.8.8", "172.24.4.10", 80, 40001, flags));
    assert!(stray.verdict.is_drop(), "{stray}");
}

#[test]
fn dnat_of_a_floating_ip_and_the_reply_from_it() {
    let t = tables(&[
        // In: to the floating IP, through the NAT zone; new connections translated.
        "table=0, priority=10,ip,in_port=2,nw_dst=172.24.4.20 actions=ct(zone=7,nat,table=1)",
        "table=1, priority=10,ct_state=+trk+new actions=ct(commit,zone=7,nat(dst=10.0.0.7),table=3)",
        "table=1, priority=10,ct_state=+trk+est actions=resubmit(,3)",
        "table=3, priority=10,ip,nw_dst=10.0.0.7 actions=output:1",
        // Out: from the fixed IP, replies translated back.
        "table=0, priority=10,ip,in_port=1,nw_src=10.0.0.7 actions=ct(zone=7,nat,table=4)",
        "table=4, priority=10,ct_state=+trk+est+rpl+snat actions=output:2",
    ]);
    let mut sim = Simulator::new(&t);
    let query = udp("203.0.113.9", "172.24.4.20", 5000, 53);
    let inside = sim.trace(OUTSIDE, query.clone());
    let p = sent(&inside, INSIDE);
    assert_eq!(v4(p, Field::Ipv4Dst), Ipv4Addr::new(10, 0, 0, 7));
    assert_eq!(v4(p, Field::Ipv4Src), Ipv4Addr::new(203, 0, 113, 9));
    assert_eq!(p.get(Field::UdpDst), Some(53));
    assert_eq!(
        inside.passes[2].packet.get(Field::CtState),
        Some(u128::from(TRK | NEW | DNAT))
    );

    let answer = sim.trace(INSIDE, udp("10.0.0.7", "203.0.113.9", 53, 5000));
    let p = sent(&answer, OUTSIDE);
    assert_eq!(v4(p, Field::Ipv4Src), Ipv4Addr::new(172, 24, 4, 20));
    assert_eq!(p.get(Field::UdpSrc), Some(53));

    // The next query of the connection: +est, translated by the bare `nat` of table 0.
    let next = sim.trace(OUTSIDE, query);
    assert_eq!(
        v4(sent(&next, INSIDE), Field::Ipv4Dst),
        Ipv4Addr::new(10, 0, 0, 7)
    );
    assert_eq!(
        next.passes[1].packet.get(Field::CtState),
        Some(u128::from(TRK | EST | DNAT))
    );
    assert_eq!(sim.conntrack().connections().len(), 1);
}

#[test]
fn colliding_connections_get_distinct_source_ports() {
    let t = tables(&SNAT_FLOWS);
    let mut sim = Simulator::new(&t);
    let mut sport = |src: &str| {
        let out = sim.trace(INSIDE, tcp(src, "8.8.8.8", 40000, 80, tcp_flags::SYN));
        sent(&out, OUTSIDE).get(Field::TcpSrc)
    };
    assert_eq!(sport("10.0.0.5"), Some(40000));
    assert_eq!(sport("10.0.0.6"), Some(40001));
    assert_eq!(sport("10.0.0.7"), Some(40002));
    // Each reply finds its own connection.
    let back = sim.trace(
        OUTSIDE,
        tcp("8.8.8.8", "172.24.4.10", 80, 40001, tcp_flags::ACK),
    );
    assert_eq!(
        v4(sent(&back, INSIDE), Field::Ipv4Dst),
        Ipv4Addr::new(10, 0, 0, 6)
    );
    assert_eq!(sent(&back, INSIDE).get(Field::TcpDst), Some(40000));

    // ICMP echo: the identifier is the port (1–511 class for small identifiers).
    let m = mac("00:00:00:00:00:01");
    let mut ping = |src: &str| {
        let req = Packet::echo_request(m, m, ip(src), ip("8.8.8.8")).with_icmp_id(7);
        let out = sim.trace(INSIDE, req);
        sent(&out, OUTSIDE).icmp_id()
    };
    assert_eq!(ping("10.0.0.5"), Some(7));
    assert_eq!(ping("10.0.0.6"), Some(8));
    let pong = Packet::echo_reply(m, m, ip("8.8.8.8"), ip("172.24.4.10")).with_icmp_id(8);
    let back = sim.trace(OUTSIDE, pong);
    let p = sent(&back, INSIDE);
    assert_eq!(
        (v4(p, Field::Ipv4Dst), p.icmp_id()),
        (Ipv4Addr::new(10, 0, 0, 6), Some(7))
    );
    assert!(back.to_string().contains("icmp_id=7"), "{back}");
}

#[test]
fn a_port_range_runs_out() {
    let t = tables(&[
        "table=0, priority=10,ip,in_port=1 actions=ct(commit,zone=5,nat(src=172.24.4.10:5000-5001),table=1)",
        "table=1, priority=10,ct_state=+trk+snat actions=output:2",
        "table=1, priority=5,ct_state=+trk actions=output:3",
    ]);
    let mut sim = Simulator::new(&t);
    let mut ports: Vec<u16> = (1..=3)
        .map(|i| {
            let out = sim.trace(INSIDE, udp(&format!("10.0.0.{i}"), "8.8.8.8", 40000, 53));
            (
                out.verdict.ports(),
                out.verdict.outputs[0].packet.get(Field::UdpSrc),
            )
        })
        .map(|(ports, sport)| match ports[..] {
            [2] => sport.expect("UDP") as u16,
            _ => 0,
        })
        .collect();
    // The third connection finds no free tuple: not committed, not translated.
    assert_eq!(ports.pop(), Some(0));
    ports.sort();
    assert_eq!(ports, [5000, 5001]);
    assert_eq!(sim.conntrack().connections().len(), 2);
}

#[test]
fn zones_are_independent() {
    let t = tables(&[
        "table=0, priority=10,ip,in_port=1 actions=ct(commit,zone=5,nat(src=172.24.4.10),table=1)",
        "table=0, priority=10,ip,in_port=3 actions=ct(commit,zone=6,nat(src=172.24.4.10),table=1)",
        "table=0, priority=10,ip,in_port=2 actions=ct(zone=6,nat,table=2)",
        "table=1, priority=10 actions=output:2",
        "table=2, priority=10,ct_state=+trk+est+rpl,ip,nw_dst=10.0.0.6 actions=output:3",
        "table=2, priority=5 actions=drop",
    ]);
    let mut sim = Simulator::new(&t);
    let a = sim.trace(INSIDE, udp("10.0.0.5", "8.8.8.8", 40000, 53));
    let b = sim.trace(3, udp("10.0.0.6", "8.8.8.8", 40000, 53));
    // The same translated tuple in two zones: no collision.
    assert_eq!(sent(&a, OUTSIDE).get(Field::UdpSrc), Some(40000));
    assert_eq!(sent(&b, OUTSIDE).get(Field::UdpSrc), Some(40000));
    // The reply, in zone 6, belongs to the zone 6 connection.
    let back = sim.trace(OUTSIDE, udp("8.8.8.8", "172.24.4.10", 53, 40000));
    assert_eq!(
        v4(sent(&back, 3), Field::Ipv4Dst),
        Ipv4Addr::new(10, 0, 0, 6)
    );
}

#[test]
fn ct_without_nat_does_not_translate() {
    let mut flows = SNAT_FLOWS.to_vec();
    flows[1] = "table=0, priority=10,ip,in_port=2 actions=ct(zone=5,table=2)";
    flows.push("table=2, priority=10,ct_state=+trk+est+rpl actions=output:1");
    let t = tables(&flows);
    let mut sim = Simulator::new(&t);
    sim.trace(INSIDE, udp("10.0.0.5", "8.8.8.8", 40000, 53));
    let back = sim.trace(OUTSIDE, udp("8.8.8.8", "172.24.4.10", 53, 40000));
    let p = sent(&back, INSIDE);
    assert_eq!(v4(p, Field::Ipv4Dst), Ipv4Addr::new(172, 24, 4, 10));
    assert_eq!(
        back.passes[1].packet.get(Field::CtState),
        Some(u128::from(TRK | EST | RPL))
    );
}

#[test]
fn the_rest_of_the_pass_sees_the_headers_it_started_with() {
    let t = tables(&[
        "table=0, priority=10,ip,in_port=1 actions=ct(commit,zone=5,nat(src=172.24.4.10)),resubmit(,1),ct(zone=5,table=2),set_field:10.0.0.66->ip_src,output:3",
        "table=0, priority=10,ip,in_port=3 actions=ct(commit,zone=5,nat(src=172.24.4.10)),ct_clear,ct(zone=5,table=2)",
        // OVS' translation still sees the original source: this flow matches.
        "table=1, priority=10,ip,nw_src=10.0.0.5 actions=output:2",
        "table=2, priority=10,ct_state=+trk+snat actions=output:4",
        "table=2, priority=10,ct_state=+trk-snat actions=output:5",
    ]);
    let mut sim = Simulator::new(&t);
    let out = sim.trace(INSIDE, udp("10.0.0.5", "8.8.8.8", 40000, 53));
    assert_eq!(out.verdict.ports(), [2, 3, 4], "{out}");
    let [first, written, recirculated] = [0, 1, 2].map(|i| &out.verdict.outputs[i].packet);
    // What leaves is translated, unless a flow wrote the field after the `ct`.
    assert_eq!(v4(first, Field::Ipv4Src), Ipv4Addr::new(172, 24, 4, 10));
    assert_eq!(v4(written, Field::Ipv4Src), Ipv4Addr::new(10, 0, 0, 66));
    // A second `ct` in the zone knows the packet is translated: it finds the connection
    // through the reply tuple, in the original direction, and keeps +snat.
    assert_eq!(
        v4(recirculated, Field::Ipv4Src),
        Ipv4Addr::new(172, 24, 4, 10)
    );
    assert_eq!(
        recirculated.get(Field::CtState),
        Some(u128::from(TRK | NEW | SNAT))
    );

    // After `ct_clear` the datapath forgot the translation: the translated packet looks like
    // a new connection of its own.
    let cleared = sim.trace(3, udp("10.0.0.6", "8.8.8.8", 40000, 53));
    let p = sent(&cleared, 5);
    assert_eq!(v4(p, Field::Ipv4Src), Ipv4Addr::new(172, 24, 4, 10));
    assert_eq!(p.get(Field::UdpSrc), Some(40001));
    assert_eq!(p.get(Field::CtState), Some(u128::from(TRK | NEW)));
}
