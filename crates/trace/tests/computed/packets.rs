//! Every packet a user can send, on the two-project topology of [`super::l2`] traced on c1: ARP
//! probes, replies and gratuitous ARP, DHCP as a client sends it, packets from the tunnel, VLAN
//! tags, any destination MAC, multicast groups, objects named by short id; and the explanations
//! of allowed address pairs, gateways and IPv6 neighbour discovery.

use trace::{ArpKind, DhcpKind, FromTunnel, Local, Probe, Report, Request, simulate};

use super::computed;
use super::l2::{WEB, inventory};

/// `req` traced on c1 through the computed flows.
fn run(req: &Request) -> Report {
    let inv = inventory();
    let local = Local::from_bindings(&inv, "c1");
    let report = simulate(&inv, &local, computed(&inv, &local), req).unwrap();
    println!("{report}");
    report
}

fn req(from: &str, to: Option<&str>, probe: Probe) -> Request {
    Request::new(from, to, probe)
}

fn header_has(r: &Report, line: &str) -> bool {
    r.header.iter().any(|h| h == line)
}

#[test]
fn arp_probes_stop_at_port_security() {
    // Duplicate address detection of web1's own address (no destination needed), and of a
    // neighbour's: dropped by port security, said so, never answered.
    for to in [None, Some("10.0.0.12")] {
        let r = run(&req("web1", to, Probe::Arp(ArpKind::Probe)));
        assert!(
            r.header[2].starts_with("ARP probe from port web1 (VM web1)"),
            "{:?}",
            r.header
        );
        let v = r.verdict_text();
        assert!(
            v.starts_with("dropped: port security (an ARP probe (sender 0.0.0.0)")
                && !v.contains("answered by"),
            "{v}"
        );
    }
}

#[test]
fn arp_replies_and_gratuitous_arp() {
    let r = run(&req("web1", Some("web3"), Probe::Arp(ArpKind::Reply)));
    assert_eq!(
        r.verdict,
        ["delivered to port web3 (VM web3) on this chassis"]
    );
    // A reply claiming another port's address is spoofing.
    let mut spoofed = req("web1", Some("web3"), Probe::Arp(ArpKind::Reply));
    spoofed.src_ip = Some("10.0.0.12".parse().unwrap());
    assert_eq!(
        run(&spoofed).verdict[0],
        "dropped: port security (source 10.0.0.12 is not an address of port web1 (VM web1))"
    );
    let r = run(&req("web1", None, Probe::Arp(ArpKind::Gratuitous)));
    assert!(
        r.header[2].starts_with("gratuitous ARP from port web1"),
        "{:?}",
        r.header
    );
    // The ARP responder answers web1's own announcement back to web1 instead of flooding it
    // (responder.rs answers every request for a port's address, its owner's too): neighbours'
    // caches are not refreshed. The trace says what happens.
    assert_eq!(
        r.verdict,
        [
            "answered by the ARP responder for port web1 (VM web1): 10.0.0.11 is at fa:16:3e:00:00:11"
        ]
    );
    let e = trace::request::build(
        &inventory(),
        &req("web1", Some("web3"), Probe::Arp(ArpKind::Gratuitous)),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "a gratuitous ARP goes to everyone, for the port's own address: give no destination"
    );
    // IPv6: an unsolicited neighbour advertisement to all nodes.
    let mut na = req("web1", None, Probe::Arp(ArpKind::Gratuitous));
    na.src_ip = Some("fd00::11".parse().unwrap());
    let r = run(&na);
    assert!(
        r.header[2].starts_with("unsolicited IPv6 neighbour advertisement from port web1"),
        "{:?}",
        r.header
    );
    assert!(
        r.verdict[0]
            .starts_with("flooded on network web (11111111…) (multicast 33:33:00:00:00:01):"),
        "{:?}",
        r.verdict
    );
}

#[test]
fn dhcp_as_a_client_sends_it() {
    for kind in [DhcpKind::Discover, DhcpKind::Request] {
        let r = run(&req("web1", None, Probe::Dhcp(kind)));
        assert!(
            r.header[2].ends_with("to 255.255.255.255"),
            "{:?}",
            r.header
        );
        assert_eq!(
            r.verdict,
            [
                "DHCP request: sent to the agent of this chassis, which answers as the DHCP \
                 server of network web (11111111…)"
            ]
        );
    }
    // A renewal is unicast to the server, whose address (the gateway: no port has it) the DHCP
    // server's ARP answer gives.
    let r = run(&req("web1", None, Probe::Dhcp(DhcpKind::Renew)));
    assert!(
        header_has(
            &r,
            "  a renewal is unicast to the DHCP server 10.0.0.1 at 02:77:79:76:00:01, as the ARP \
             responder answers for the DHCP server of the network (no port has 10.0.0.1)"
        ),
        "{:?}",
        r.header
    );
    assert!(r.steps.contains("nw_src=10.0.0.11"), "{}", r.steps);
    assert!(
        r.verdict[0].starts_with("DHCP request: sent to the agent"),
        "{:?}",
        r.verdict
    );
    let e = trace::request::build(
        &inventory(),
        &req("web1", Some("10.0.0.1"), Probe::Dhcp(DhcpKind::Discover)),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "a DHCP discover goes to the DHCP server: give no destination"
    );
}

#[test]
fn packets_from_the_tunnel() {
    // web2's packet, sent by c2 with web's VNI, arrives on c1 for web1.
    let mut r = req("web2", Some("web1"), Probe::Tcp(22));
    r.tunnel = Some(FromTunnel::default());
    let rep = run(&r);
    assert!(
        header_has(
            &rep,
            "  arriving over the tunnel from chassis c2 (172.31.0.2) with VNI 1, network web \
             (11111111…)'s"
        ),
        "{:?}",
        rep.header
    );
    assert_eq!(
        rep.header.last().unwrap(),
        "It enters br-int on OpenFlow port 1 (the tunnel port, from chassis c2)."
    );
    assert_eq!(
        rep.verdict,
        ["delivered to port web1 (VM web1) on this chassis"]
    );
    // With db's VNI (by network name), web1's MAC is unknown there: flooded on db, locally.
    r.tunnel = Some(FromTunnel {
        chassis: Some("c3".into()),
        vni: Some("db".into()),
    });
    let rep = run(&r);
    let v = rep.verdict_text();
    assert!(
        v.starts_with("flooded on network db (22222222…) (unknown unicast")
            && v.contains("delivered to port db1 (VM db1) on this chassis")
            && !v.contains("tunnel"),
        "{v}"
    );
    // A VNI no network has.
    r.tunnel = Some(FromTunnel {
        chassis: None,
        vni: Some("77".into()),
    });
    assert_eq!(
        run(&r).verdict[0],
        "dropped at ingress from the tunnel: no network has VNI 77"
    );
    r.tunnel = Some(FromTunnel {
        chassis: Some("c9".into()),
        vni: None,
    });
    let e = trace::request::build(&inventory(), &r).unwrap_err();
    assert_eq!(
        e.to_string(),
        "no chassis is called \"c9\" (registered: c1, c2, c3)"
    );
}

#[test]
fn tunnel_outputs_are_sent_from_the_chassis_address() {
    let r = run(&req("web1", Some("10.0.0.12"), Probe::Echo));
    assert!(
        r.steps.contains("tun_src=172.31.0.1,tun_dst=172.31.0.2"),
        "{}",
        r.steps
    );
    assert!(!r.steps.contains("tun_src=0.0.0.0"), "{}", r.steps);
}

#[test]
fn vlan_tags_and_any_destination_mac() {
    let mut r = req("web1", Some("web3"), Probe::Echo);
    r.vlan = Some(100);
    let rep = run(&r);
    assert!(
        header_has(&rep, "  tagged with VLAN 100 (802.1Q)"),
        "{:?}",
        rep.header
    );
    assert!(rep.steps.contains("vlan(vid=100,pcp=0)"), "{}", rep.steps);
    // web1 is no trunk's parent: its VIF is an access port, a tagged frame goes nowhere.
    assert_eq!(
        rep.verdict,
        [
            "dropped at ingress: no flow of table 0 (ingress, app classifier) admits this packet from port web1 (VM web1)",
            "port web3 (VM web3) did not get it"
        ]
    );
    let mut r = req("web1", Some("web3"), Probe::Echo);
    r.dst_mac = Some("fa:16:3e:00:00:12".parse().unwrap());
    let rep = run(&r);
    assert!(
        header_has(&rep, "  destination MAC fa:16:3e:00:00:12, as given"),
        "{:?}",
        rep.header
    );
    assert_eq!(
        rep.verdict,
        [
            "sent over the tunnel to chassis c2 (172.31.0.2) with VNI 1 → for port web2 (VM web2)",
            "port web3 (VM web3) did not get it",
        ]
    );
}

#[test]
fn multicast_gets_its_group_mac() {
    let rep = run(&req("web1", Some("224.0.0.251"), Probe::Udp(5353)));
    assert!(
        header_has(
            &rep,
            "  224.0.0.251 is a multicast group, whose group MAC is 01:00:5e:00:00:fb"
        ),
        "{:?}",
        rep.header
    );
    assert!(
        rep.verdict[0]
            .starts_with("flooded on network web (11111111…) (multicast 01:00:5e:00:00:fb):"),
        "{:?}",
        rep.verdict
    );
    let rep = run(&req("web1", Some("ff02::1:ff00:12"), Probe::Udp(5353)));
    assert!(
        rep.header.iter().any(|h| h
            .contains("a solicited-node multicast group, whose group MAC is 33:33:ff:00:00:12")),
        "{:?}",
        rep.header
    );
    // A neighbour solicitation for an address no port has: to its solicited-node group, not
    // broadcast.
    let rep = run(&req("web1", Some("fd00::99"), Probe::Arp(ArpKind::Request)));
    assert!(
        rep.verdict[0].starts_with(
            "flooded on network web (11111111…) (solicited-node multicast 33:33:ff:00:00:99):"
        ),
        "{:?}",
        rep.verdict
    );
}

#[test]
fn gateways_and_unanswered_addresses() {
    // No port holds web's gateway: the DHCP server's ARP answer does, so a VM sends there.
    let rep = run(&req("web1", Some("8.8.8.8"), Probe::Echo));
    assert!(
        header_has(
            &rep,
            "  8.8.8.8 is not on network web (11111111…): sent to the gateway 10.0.0.1 at \
             02:77:79:76:00:01, as the ARP responder answers for the DHCP server of the network \
             (no port has 10.0.0.1)"
        ),
        "{:?}",
        rep.header
    );
    // IPv6: nothing answers for the gateway, and it is neighbour discovery that goes unanswered.
    let rep = run(&req("web1", Some("2001:db8::1"), Probe::Echo));
    assert!(
        header_has(
            &rep,
            "  2001:db8::1 is not on network web (11111111…), and a VM's neighbour solicitation \
             for its gateway fd00::1 would go unanswered (no port has it); traced with the \
             broadcast destination MAC"
        ),
        "{:?}",
        rep.header
    );
    let rep = run(&req("web1", Some("fd00::99"), Probe::Echo));
    assert!(
        rep.header.iter().any(|h| h.contains(
            "no port on network web (11111111…) has fd00::99: a VM's neighbour solicitation for \
             it would go unanswered"
        )),
        "{:?}",
        rep.header
    );
    // A source outside every subnet has no gateway at all.
    let mut r = req("web1", Some("8.8.8.8"), Probe::Echo);
    r.src_ip = Some("192.0.2.7".parse().unwrap());
    let rep = run(&r);
    assert!(
        header_has(
            &rep,
            "  8.8.8.8 is not on network web (11111111…), and neither is the source 192.0.2.7: \
             a VM with that address has no gateway; traced with the broadcast destination MAC"
        ),
        "{:?}",
        rep.header
    );
}

#[test]
fn objects_by_the_short_ids_the_tool_prints() {
    let rep = run(&req("a3000000…", Some("a1000000…"), Probe::Echo));
    assert_eq!(
        rep.verdict,
        ["delivered to port web1 (VM web1) on this chassis"]
    );
    let mut r = req("web2", Some("web1"), Probe::Echo);
    r.tunnel = Some(FromTunnel {
        chassis: None,
        vni: Some(format!("{}…", &WEB[..8])),
    });
    assert_eq!(
        run(&r).verdict,
        ["delivered to port web1 (VM web1) on this chassis"]
    );
}
