//! Trunk ports checked with the packet simulator, without Open vSwitch. Chassis `ch1` hosts the
//! VM whose port P (network 1) is the parent of trunk T, with subports S2 (network 2, VLAN 101)
//! and S3 (network 3, VLAN 102), each with its patch pair on `br-int` (the outer end is the
//! subport's VIF, the inner end the trunk app's), and V1 (network 1) and W2 (network 2); chassis
//! `ch2` hosts V2 (network 2) and V3 (network 3). Router R joins networks 2 and 3. A property
//! test holds the trunk app's incremental flows equal to a full recomputation.

use std::collections::HashSet;
use std::net::IpAddr;

use flowsim::{DropReason, FlowTables, Mac, Packet, Simulator, Trace, Tunnel, trace};
use openflow::Field;
use pipeline::cookie::Owner;
use pipeline::{Input, Pipeline};
use proptest::prelude::*;
use serde_json::{Value, json};
mod common;

const NET1: &str = "a1a1a1a1-0000-4000-8000-000000000001";
const NET2: &str = "a2a2a2a2-0000-4000-8000-000000000002";
const NET3: &str = "a3a3a3a3-0000-4000-8000-000000000003";
const ROUTER: &str = "dddddddd-0000-4000-8000-000000000001";
const TRUNK: &str = "77777777-0000-4000-8000-000000000007";
const TUNNEL: u32 = 1;
const CH1_IP: &str = "192.168.9.1";
const CH2_IP: &str = "192.168.9.2";

#[derive(Clone, Copy)]
struct Port {
    id: &'static str,
    net: &'static str,
    mac: &'static str,
    ip: &'static str,
    host: &'static str,
    /// Its VIF's OpenFlow port (a subport's: the outer end of its pair) on its chassis.
    ofport: Option<u32>,
    router: bool,
}

const P: Port = Port {
    id: "90000000-0000-4000-8000-000000000000",
    net: NET1,
    mac: "fa:16:3e:00:00:10",
    ip: "10.1.0.5",
    host: "ch1",
    ofport: Some(10),
    router: false,
};
const S2: Port = Port {
    id: "52000000-0000-4000-8000-000000000002",
    net: NET2,
    mac: "fa:16:3e:00:00:20",
    ip: "10.2.0.5",
    host: "ch1",
    ofport: Some(20),
    router: false,
};
/// The inner end of S2's pair.
const S2_INNER: u32 = 21;
const S3: Port = Port {
    id: "53000000-0000-4000-8000-000000000003",
    net: NET3,
    // Subports often share their parent's MAC (VLAN interfaces in the guest do).
    mac: "fa:16:3e:00:00:10",
    ip: "10.3.0.5",
    host: "ch1",
    ofport: Some(22),
    router: false,
};
const S3_INNER: u32 = 23;
const V1: Port = Port {
    id: "71000000-0000-4000-8000-000000000001",
    net: NET1,
    mac: "fa:16:3e:00:01:01",
    ip: "10.1.0.11",
    host: "ch1",
    ofport: Some(11),
    router: false,
};
const W2: Port = Port {
    id: "7a000000-0000-4000-8000-00000000000a",
    net: NET2,
    mac: "fa:16:3e:00:01:0a",
    ip: "10.2.0.11",
    host: "ch1",
    ofport: Some(12),
    router: false,
};
const V2: Port = Port {
    id: "72000000-0000-4000-8000-000000000002",
    net: NET2,
    mac: "fa:16:3e:00:02:02",
    ip: "10.2.0.12",
    host: "ch2",
    ofport: Some(30),
    router: false,
};
const V3: Port = Port {
    id: "73000000-0000-4000-8000-000000000003",
    net: NET3,
    mac: "fa:16:3e:00:02:03",
    ip: "10.3.0.12",
    host: "ch2",
    ofport: Some(31),
    router: false,
};
const R2: Port = Port {
    id: "e2000000-0000-4000-8000-000000000002",
    net: NET2,
    mac: "fa:16:3e:00:0e:02",
    ip: "10.2.0.1",
    host: "",
    ofport: None,
    router: true,
};
const R3: Port = Port {
    id: "e3000000-0000-4000-8000-000000000003",
    net: NET3,
    mac: "fa:16:3e:00:0e:03",
    ip: "10.3.0.1",
    host: "",
    ofport: None,
    router: true,
};
const PORTS: [Port; 9] = [P, S2, S3, V1, W2, V2, V3, R2, R3];

fn port_json(p: &Port) -> Value {
    let (owner, device) = if p.router {
        ("network:router_interface", ROUTER)
    } else if p.id == S2.id || p.id == S3.id {
        ("trunk:subport", TRUNK)
    } else {
        ("compute:nova", "")
    };
    json!({"id": p.id, "network_id": p.net, "mac_address": p.mac,
        "fixed_ips": [{"ip_address": p.ip}], "binding:host_id": p.host, "admin_state_up": true,
        "device_owner": owner, "device_id": device, "port_security_enabled": !p.router,
        "security_groups": [common::OPEN_GROUP]})
}

fn trunk_json(subports: &[(&Port, u16)]) -> Value {
    let subs: Vec<Value> = subports
        .iter()
        .map(|(p, vlan)| json!({"port_id": p.id, "segmentation_type": "vlan", "segmentation_id": vlan}))
        .collect();
    json!({"id": TRUNK, "name": "t", "port_id": P.id, "admin_state_up": true, "status": "ACTIVE",
        "sub_ports": subs, "_network_ids": [NET1, NET2, NET3]})
}

fn put(p: &mut Pipeline, key: String, v: Value) {
    p.apply(Input::Object(key, Some(v)));
}

/// The pipeline of `chassis`, with the trunk and the patch pairs on `ch1`.
fn pipeline(chassis: &str) -> Pipeline {
    let mut p = Pipeline::new(chassis);
    common::add_open_group(&mut p);
    for (id, vni, cidr) in [
        (NET1, 100, "10.1.0.0/24"),
        (NET2, 200, "10.2.0.0/24"),
        (NET3, 300, "10.3.0.0/24"),
    ] {
        put(
            &mut p,
            format!("/r/networks/{id}"),
            json!({"id": id, "provider:network_type": "vxlan", "provider:segmentation_id": vni}),
        );
        put(
            &mut p,
            format!("/r/subnets/s{vni}"),
            json!({"id": format!("s{vni}"), "network_id": id, "cidr": cidr, "enable_dhcp": false}),
        );
    }
    for (c, ip) in [("ch1", CH1_IP), ("ch2", CH2_IP)] {
        put(
            &mut p,
            format!("/chassis/{c}"),
            json!({"id": c, "tunnel_ip": ip}),
        );
        put(&mut p, format!("/chassis-up/{c}"), json!({"lease": 1}));
    }
    put(
        &mut p,
        format!("/r/routers/{ROUTER}"),
        json!({"id": ROUTER, "name": "r", "admin_state_up": true, "routes": []}),
    );
    for port in PORTS {
        put(&mut p, format!("/r/ports/{}", port.id), port_json(&port));
        if let Some(o) = port.ofport.filter(|_| port.host == chassis) {
            p.apply(Input::Vif(port.id.into(), Some(o)));
        }
    }
    put(
        &mut p,
        format!("/r/trunks/{TRUNK}"),
        trunk_json(&[(&S2, 101), (&S3, 102)]),
    );
    if chassis == "ch1" {
        p.apply(Input::Inner(S2.id.into(), Some(S2_INNER)));
        p.apply(Input::Inner(S3.id.into(), Some(S3_INNER)));
    }
    p.apply(Input::Tunnel(Some(TUNNEL)));
    p
}

fn tables(p: &Pipeline) -> FlowTables {
    let t = FlowTables::new(p.flows().cloned(), vec![])
        .expect("flows the switch accepts")
        .with_tunnel_port(TUNNEL);
    if p.topology().local.chassis == "ch1" {
        t.with_patch_pair(S2.ofport.unwrap(), S2_INNER)
            .with_patch_pair(S3.ofport.unwrap(), S3_INNER)
    } else {
        t
    }
}

fn mac(s: &str) -> Mac {
    s.parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn tcp(from: &Port, to_mac: &str, to_ip: &str) -> Packet {
    Packet::tcp(
        mac(from.mac),
        mac(to_mac),
        ip(from.ip),
        ip(to_ip),
        40000,
        80,
        0x02,
    )
}

fn run(p: &Pipeline, in_port: u32, packet: Packet) -> Trace {
    trace(&tables(p), in_port, packet)
}

fn shown(p: &Pipeline, t: &Trace) -> String {
    t.display(|c| p.describe_cookie(c)).to_string()
}

/// `packet` as it arrives at `chassis` through the tunnel from the other chassis with `vni`.
fn arriving(vni: u64, from: &str, to: &str, packet: &Packet) -> Packet {
    packet.clone().with_tunnel(&Tunnel::new(
        vni,
        from.parse().unwrap(),
        to.parse().unwrap(),
    ))
}

#[test]
fn a_subports_tagged_frame_reaches_its_network_on_another_chassis_and_the_reply_comes_back_tagged()
{
    let (ch1, ch2) = (pipeline("ch1"), pipeline("ch2"));
    let (tables1, tables2) = (tables(&ch1), tables(&ch2));
    // One simulator per chassis: each keeps its switch's connections.
    let (mut sim1, mut sim2) = (Simulator::new(&tables1), Simulator::new(&tables2));
    let syn = tcp(&S2, V2.mac, V2.ip).with_vlan(101, 0);
    let t = sim1.trace(P.ofport.unwrap(), syn);
    assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&ch1, &t));
    let out = &t.verdict.outputs[0];
    assert!(out.packet.vlans().is_empty(), "untagged on the wire");
    let tun = out.tunnel.clone().expect("tunnelled");
    assert_eq!((tun.id, tun.dst.to_string()), (200, CH2_IP.to_string()));
    // The subport's own security groups tracked it, in its own zone (its port's number).
    let zones: Vec<u16> = t
        .passes
        .iter()
        .filter_map(|p| p.packet.get(Field::CtZone))
        .map(|z| z as u16)
        .collect();
    assert!(zones.contains(&20), "{zones:?}: {}", shown(&ch1, &t));
    // On ch2 it reaches V2.
    let at_ch2 = sim2.trace(TUNNEL, arriving(200, CH1_IP, CH2_IP, &out.packet.clone()));
    assert_eq!(
        at_ch2.verdict.ports(),
        vec![V2.ofport.unwrap()],
        "{}",
        shown(&ch2, &at_ch2)
    );
    // V2's answer goes back through the tunnel and leaves ch1 through the parent, tagged.
    let reply = Packet::tcp(
        mac(V2.mac),
        mac(S2.mac),
        ip(V2.ip),
        ip(S2.ip),
        80,
        40000,
        0x12,
    );
    let back = sim2.trace(V2.ofport.unwrap(), reply);
    assert_eq!(back.verdict.ports(), vec![TUNNEL], "{}", shown(&ch2, &back));
    let at_ch1 = sim1.trace(
        TUNNEL,
        arriving(200, CH2_IP, CH1_IP, &back.verdict.outputs[0].packet),
    );
    assert_eq!(
        at_ch1.verdict.ports(),
        vec![P.ofport.unwrap()],
        "{}",
        shown(&ch1, &at_ch1)
    );
    let tags = at_ch1.verdict.outputs[0].packet.vlans();
    assert_eq!(tags.len(), 1, "{}", shown(&ch1, &at_ch1));
    assert_eq!(tags[0].vid, 101);
    let steps = shown(&ch1, &at_ch1);
    assert!(steps.contains("trunk 77777777"), "{steps}");
}

#[test]
fn local_ports_reach_each_subport_tagged_with_its_vlan() {
    let ch1 = pipeline("ch1");
    let t = run(&ch1, W2.ofport.unwrap(), tcp(&W2, S2.mac, S2.ip));
    assert_eq!(
        t.verdict.ports(),
        vec![P.ofport.unwrap()],
        "{}",
        shown(&ch1, &t)
    );
    assert_eq!(t.verdict.outputs[0].packet.vlans()[0].vid, 101);
    // And back, from the subport, tagged, to W2 untagged.
    let answer = tcp(&S2, W2.mac, W2.ip).with_vlan(101, 0);
    let t = run(&ch1, P.ofport.unwrap(), answer);
    assert_eq!(
        t.verdict.ports(),
        vec![W2.ofport.unwrap()],
        "{}",
        shown(&ch1, &t)
    );
    assert!(t.verdict.outputs[0].packet.vlans().is_empty());
}

#[test]
fn untagged_frames_are_the_parents() {
    let ch1 = pipeline("ch1");
    let t = run(&ch1, P.ofport.unwrap(), tcp(&P, V1.mac, V1.ip));
    assert_eq!(
        t.verdict.ports(),
        vec![V1.ofport.unwrap()],
        "{}",
        shown(&ch1, &t)
    );
    // The parent's addresses on a subport's VLAN are spoofed there.
    let t = run(
        &ch1,
        P.ofport.unwrap(),
        tcp(&P, W2.mac, W2.ip).with_vlan(101, 0),
    );
    assert!(t.verdict.is_drop(), "{}", shown(&ch1, &t));
}

#[test]
fn an_unknown_vlan_is_dropped_by_the_trunk() {
    let ch1 = pipeline("ch1");
    let t = run(
        &ch1,
        P.ofport.unwrap(),
        tcp(&P, V1.mac, V1.ip).with_vlan(999, 0),
    );
    let trunk = Owner::Trunk(TRUNK.into()).cookie();
    assert_eq!(
        t.verdict.drop,
        Some(DropReason::DropFlow {
            table: 0,
            cookie: trunk
        }),
        "{}",
        shown(&ch1, &t)
    );
}

#[test]
fn a_subports_port_security_applies_to_its_frames() {
    let ch1 = pipeline("ch1");
    let mut spoofed = tcp(&S2, V2.mac, V2.ip).with_vlan(101, 0);
    spoofed = spoofed.with(
        Field::Ipv4Src,
        u128::from(u32::from(
            "10.2.0.99".parse::<std::net::Ipv4Addr>().unwrap(),
        )),
    );
    let t = run(&ch1, P.ofport.unwrap(), spoofed);
    assert!(t.verdict.is_drop(), "{}", shown(&ch1, &t));
    // Its MAC on another subport's VLAN is not its own there either.
    let t = run(
        &ch1,
        P.ofport.unwrap(),
        tcp(&S2, V3.mac, V3.ip).with_vlan(102, 0),
    );
    assert!(t.verdict.is_drop(), "{}", shown(&ch1, &t));
}

#[test]
fn a_subports_frames_are_routed_like_any_vms() {
    let ch1 = pipeline("ch1");
    let ping = Packet::echo_request(mac(S2.mac), mac(R2.mac), ip(S2.ip), ip(V3.ip))
        .with(Field::IpTtl, 64)
        .with_vlan(101, 0);
    let t = run(&ch1, P.ofport.unwrap(), ping);
    assert_eq!(t.verdict.ports(), vec![TUNNEL], "{}", shown(&ch1, &t));
    let out = &t.verdict.outputs[0];
    assert_eq!(out.tunnel.as_ref().map(|t| t.id), Some(300));
    assert_eq!(out.packet.get(Field::IpTtl), Some(63));
    // To the other subport, through the router: out through the parent with S3's tag.
    let ping = Packet::echo_request(mac(S2.mac), mac(R2.mac), ip(S2.ip), ip(S3.ip))
        .with(Field::IpTtl, 64)
        .with_vlan(101, 0);
    let t = run(&ch1, P.ofport.unwrap(), ping);
    assert_eq!(
        t.verdict.ports(),
        vec![P.ofport.unwrap()],
        "{}",
        shown(&ch1, &t)
    );
    assert_eq!(t.verdict.outputs[0].packet.vlans()[0].vid, 102);
}

#[test]
fn a_removed_subport_loses_its_vlan_and_gets_it_back() {
    let mut ch1 = pipeline("ch1");
    let frame = tcp(&S3, V3.mac, V3.ip).with_vlan(102, 0);
    assert_eq!(
        run(&ch1, P.ofport.unwrap(), frame.clone()).verdict.ports(),
        vec![TUNNEL]
    );
    put(
        &mut ch1,
        format!("/r/trunks/{TRUNK}"),
        trunk_json(&[(&S2, 101)]),
    );
    assert!(
        run(&ch1, P.ofport.unwrap(), frame.clone())
            .verdict
            .is_drop()
    );
    put(
        &mut ch1,
        format!("/r/trunks/{TRUNK}"),
        trunk_json(&[(&S2, 101), (&S3, 102)]),
    );
    assert_eq!(
        run(&ch1, P.ofport.unwrap(), frame.clone()).verdict.ports(),
        vec![TUNNEL]
    );
    // Without its inner end (the agent removed the pair) it gets no flows either.
    ch1.apply(Input::Inner(S3.id.into(), None));
    assert!(
        run(&ch1, P.ofport.unwrap(), frame.clone())
            .verdict
            .is_drop()
    );
    // The trunk gone, tagged frames are the classifier's again (the parent's port security
    // drops these, whose addresses are not its own).
    ch1.apply(Input::Inner(S3.id.into(), Some(S3_INNER)));
    ch1.apply(Input::Object(format!("/r/trunks/{TRUNK}"), None));
    assert!(!ch1.has_flows(&Owner::Trunk(TRUNK.into())));
    assert!(run(&ch1, P.ofport.unwrap(), frame).verdict.is_drop());
}

#[test]
fn the_trunk_flows_cost_one_drop_and_two_per_subport() {
    let ch1 = pipeline("ch1");
    let trunk = Owner::Trunk(TRUNK.into()).cookie();
    let flows: Vec<_> = ch1.flows().filter(|f| f.cookie == trunk).collect();
    assert_eq!(flows.len(), 1 + 2 * 2, "{flows:?}");
    assert!(flows.iter().all(|f| f.table == 0 && f.priority > 110));
    // A chassis without the parent's VIF has none.
    let ch2 = pipeline("ch2");
    assert_eq!(ch2.flows().filter(|f| f.cookie == trunk).count(), 0);
    assert!(
        ch1.describe_cookie(trunk)
            .is_some_and(|d| d.contains("trunk") && d.contains(P.id))
    );
}

/// Changes to the trunk's inputs, for the property test.
#[derive(Debug, Clone)]
enum Change {
    /// The trunk (or a second one, `1`) with these subports (port index, VLAN id).
    Trunk(usize, usize, Vec<(usize, u16)>),
    NoTrunk(usize),
    /// A port's VIF (index, OpenFlow port).
    Vif(usize, Option<u32>),
    /// An inner end (port index, OpenFlow port).
    Inner(usize, Option<u32>),
    /// A port deleted or put back.
    Port(usize, bool),
}

const CANDIDATES: [Port; 6] = [P, S2, S3, V1, W2, V2];

fn change() -> impl Strategy<Value = Change> {
    let port = 0..CANDIDATES.len();
    let ofport = prop::option::of(10u32..16);
    prop_oneof![
        (
            0..2usize,
            port.clone(),
            prop::collection::vec((port.clone(), 100u16..104), 0..4)
        )
            .prop_map(|(t, parent, subs)| Change::Trunk(t, parent, subs)),
        (0..2usize).prop_map(Change::NoTrunk),
        (port.clone(), ofport.clone()).prop_map(|(p, o)| Change::Vif(p, o)),
        (port.clone(), ofport).prop_map(|(p, o)| Change::Inner(p, o)),
        (port, any::<bool>()).prop_map(|(p, b)| Change::Port(p, b)),
    ]
}

fn input(c: &Change) -> Input {
    let trunk_id = |t: usize| format!("7777777{t}-0000-4000-8000-000000000007");
    match c {
        Change::Trunk(t, parent, subs) => {
            let subs: Vec<Value> = subs
                .iter()
                .map(|(p, v)| json!({"port_id": CANDIDATES[*p].id, "segmentation_type": "vlan", "segmentation_id": v}))
                .collect();
            Input::Object(
                format!("/r/trunks/{}", trunk_id(*t)),
                Some(
                    json!({"id": trunk_id(*t), "port_id": CANDIDATES[*parent].id, "sub_ports": subs}),
                ),
            )
        }
        Change::NoTrunk(t) => Input::Object(format!("/r/trunks/{}", trunk_id(*t)), None),
        Change::Vif(p, o) => Input::Vif(CANDIDATES[*p].id.into(), *o),
        Change::Inner(p, o) => Input::Inner(CANDIDATES[*p].id.into(), *o),
        Change::Port(p, there) => {
            let port = &CANDIDATES[*p];
            let key = format!("/r/ports/{}", port.id);
            Input::Object(key, there.then(|| port_json(port)))
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Whatever the trunks, VIFs and inner ends do (two trunks naming one port, VLAN ids and
    /// OpenFlow ports claimed twice included), the incremental flows equal a full
    /// recomputation, the deltas applied to a switch give them too, no two flows share table,
    /// priority and match, and the trunk app writes only into table 0, above the classifier.
    #[test]
    fn trunk_flows_stay_incremental(changes in prop::collection::vec(change(), 1..40)) {
        let mut p = pipeline("ch1");
        let mut installed: HashSet<openflow::Flow> = p.flows().cloned().collect();
        for c in &changes {
            let delta = p.apply(input(c));
            for f in delta.removed() {
                prop_assert!(installed.remove(f), "removed a flow not installed: {f}");
            }
            for f in delta.added() {
                prop_assert!(installed.insert(f.clone()), "added a flow twice: {f}");
            }
            let incremental: HashSet<openflow::Flow> = p.flows().cloned().collect();
            prop_assert_eq!(&incremental, &p.full().0);
            prop_assert_eq!(&incremental, &installed);
            let keys: HashSet<_> = incremental.iter().map(|f| f.key()).collect();
            prop_assert_eq!(keys.len(), incremental.len(), "two flows share table, priority and match");
            for (app, _, f) in p.flows_by_app() {
                prop_assert!(pipeline::tables::writes(app, f.table));
                if app == "trunks" {
                    prop_assert!(f.table == 0 && f.priority > 110, "{f}");
                }
            }
        }
    }
}
