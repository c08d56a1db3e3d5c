//! A small but realistic L2 pipeline traced end to end: classification by in_port with
//! port security, an ARP responder that turns a request into a reply with move/load and
//! sends it back out of IN_PORT, a MAC lookup to local ports and to a tunnel, and broadcast
//! through a group to local ports and the tunnel.

use std::net::{IpAddr, Ipv4Addr};

use flowsim::{DropReason, FlowTables, Mac, Packet, Trace, Tunnel, trace};
use openflow::Field;
use openflow::message::{Bucket, Group, GroupType};

const VM1: &str = "fa:16:3e:00:00:01";
const VM2: &str = "fa:16:3e:00:00:02";
const VM3: &str = "fa:16:3e:00:00:03"; // on another chassis, behind the tunnel
const TUNNEL: u32 = 9;

fn mac(s: &str) -> Mac {
    s.parse().expect("test MAC")
}
fn v4(s: &str) -> Ipv4Addr {
    s.parse().expect("test IPv4")
}

/// Cookies name the owning object, as the pipeline does.
fn owner(cookie: u64) -> Option<String> {
    Some(
        match cookie {
            0x1 => "port 3f2a… (vm1) port security",
            0x2 => "port 7c11… (vm2) port security",
            0x3 => "network net1 tunnel ingress",
            0x10 => "port 7c11… (vm2) ARP responder",
            0x21 => "port 3f2a… (vm1) delivery",
            0x22 => "port 7c11… (vm2) delivery",
            0x23 => "port 91d0… (vm3, chassis-b) remote delivery",
            0x24 => "network net1 flooding",
            _ => return None,
        }
        .to_string(),
    )
}

fn pipeline() -> FlowTables {
    let flows = [
        // Table 0: classification and port security (network net1 = reg6 1, VNI 100).
        format!(
            "cookie=0x1, table=0, priority=100,in_port=1,dl_src={VM1} actions=load:0x1->NXM_NX_REG6[],load:0x1->NXM_NX_REG7[],goto_table:10"
        ),
        format!(
            "cookie=0x2, table=0, priority=100,in_port=2,dl_src={VM2} actions=load:0x1->NXM_NX_REG6[],load:0x2->NXM_NX_REG7[],goto_table:10"
        ),
        format!(
            "cookie=0x3, table=0, priority=100,in_port={TUNNEL},tun_id=0x64 actions=load:0x1->NXM_NX_REG6[],goto_table:20"
        ),
        "table=0, priority=0 actions=drop".to_string(),
        // Table 10: ARP responder for vm2's address, else on to the MAC lookup.
        format!(
            "cookie=0x10, table=10, priority=100,arp,reg6=0x1,arp_tpa=10.0.0.2,arp_op=1 actions=move:NXM_OF_ETH_SRC[]->NXM_OF_ETH_DST[],set_field:{VM2}->eth_src,load:0x2->NXM_OF_ARP_OP[],move:NXM_NX_ARP_SHA[]->NXM_NX_ARP_THA[],move:NXM_OF_ARP_SPA[]->NXM_OF_ARP_TPA[],set_field:{VM2}->arp_sha,set_field:10.0.0.2->arp_spa,IN_PORT"
        ),
        "table=10, priority=0 actions=goto_table:20".to_string(),
        // Table 20: MAC lookup.
        format!("cookie=0x21, table=20, priority=100,reg6=0x1,dl_dst={VM1} actions=output:1"),
        format!("cookie=0x22, table=20, priority=100,reg6=0x1,dl_dst={VM2} actions=output:2"),
        format!(
            "cookie=0x23, table=20, priority=100,reg6=0x1,dl_dst={VM3} actions=set_field:0x64->tun_id,set_field:192.168.50.2->tun_dst,output:{TUNNEL}"
        ),
        "cookie=0x24, table=20, priority=50,reg6=0x1,dl_dst=01:00:00:00:00:00/01:00:00:00:00:00 actions=group:1".to_string(),
    ];
    let flows = flows
        .iter()
        .map(|t| t.parse().unwrap_or_else(|e| panic!("{t}: {e}")));
    let flood = Group {
        group_id: 1,
        group_type: GroupType::All,
        buckets: [
            "output:1",
            "output:2",
            "set_field:0x64->tun_id,set_field:192.168.50.2->tun_dst,output:9",
        ]
        .iter()
        .map(|a| Bucket::new(openflow::text::parse_actions(a).expect("bucket")))
        .collect(),
    };
    FlowTables::new(flows, [flood])
        .expect("valid pipeline")
        .with_tunnel_port(TUNNEL)
}

fn show(t: &Trace) -> String {
    t.display(owner).to_string()
}

fn ping(src_mac: &str, dst_mac: &str, src: &str, dst: &str) -> Packet {
    Packet::echo_request(
        mac(src_mac),
        mac(dst_mac),
        IpAddr::V4(v4(src)),
        IpAddr::V4(v4(dst)),
    )
}

#[test]
fn unicast_between_local_ports() {
    let t = pipeline();
    let tr = trace(&t, 1, ping(VM1, VM2, "10.0.0.1", "10.0.0.2"));
    println!("{}", show(&tr));
    assert_eq!(tr.verdict.ports(), [2]);
    assert_eq!(tr.path(), [(0, Some(0x1)), (10, Some(0)), (20, Some(0x22))]);
    assert!(show(&tr).contains("owner: port 7c11… (vm2) delivery"));
    let named = tr
        .display(owner)
        .tables(|t| (t == 20).then(|| "l2".to_string()))
        .to_string();
    assert!(named.contains("\ntable 10: "), "{named}");
    assert!(named.contains("\ntable 20 (l2): "), "{named}");
}

#[test]
fn arp_responder_answers_out_of_in_port() {
    let t = pipeline();
    let req = Packet::arp_request(mac(VM1), v4("10.0.0.1"), v4("10.0.0.2"));
    let tr = trace(&t, 1, req);
    println!("{}", show(&tr));
    assert_eq!(tr.verdict.ports(), [1]);
    let reply = &tr.verdict.outputs[0].packet;
    let want = Packet::arp_reply(mac(VM2), v4("10.0.0.2"), mac(VM1), v4("10.0.0.1"));
    for f in [
        Field::EthSrc,
        Field::EthDst,
        Field::ArpOp,
        Field::ArpSha,
        Field::ArpSpa,
        Field::ArpTha,
        Field::ArpTpa,
    ] {
        assert_eq!(reply.get(f), want.get(f), "{f}");
    }
    // A request for an unknown address is flooded (not back to vm1, and over the tunnel).
    let other = Packet::arp_request(mac(VM1), v4("10.0.0.1"), v4("10.0.0.77"));
    let tr = trace(&t, 1, other);
    assert_eq!(tr.verdict.ports(), [2, TUNNEL], "{}", show(&tr));
}

#[test]
fn port_security_drops_spoofed_source_mac() {
    let t = pipeline();
    let tr = trace(
        &t,
        1,
        ping("fa:16:3e:00:00:66", VM2, "10.0.0.1", "10.0.0.2"),
    );
    println!("{}", show(&tr));
    assert_eq!(
        tr.verdict.drop,
        Some(DropReason::DropFlow {
            table: 0,
            cookie: 0
        })
    );
}

#[test]
fn remote_port_goes_over_the_tunnel_and_back() {
    let t = pipeline();
    let tr = trace(&t, 2, ping(VM2, VM3, "10.0.0.2", "10.0.0.3"));
    println!("{}", show(&tr));
    assert_eq!(tr.verdict.ports(), [TUNNEL]);
    let tun = tr.verdict.outputs[0]
        .tunnel
        .as_ref()
        .expect("tunnel output");
    assert_eq!((tun.id, tun.dst), (0x64, v4("192.168.50.2")));
    // The reply arrives from the tunnel with VNI 100 and is delivered to vm2.
    let rx = Tunnel::new(0x64, v4("192.168.50.2"), v4("192.168.50.1"));
    let back = ping(VM3, VM2, "10.0.0.3", "10.0.0.2").with_tunnel(&rx);
    let tr = trace(&t, TUNNEL, back);
    assert_eq!(tr.verdict.ports(), [2], "{}", show(&tr));
    // Another VNI is not ours.
    let stranger = ping(VM3, VM2, "10.0.0.3", "10.0.0.2").with_tunnel(&Tunnel::new(
        0x65,
        v4("192.168.50.2"),
        v4("192.168.50.1"),
    ));
    assert!(trace(&t, TUNNEL, stranger).verdict.is_drop());
}
