//! Two projects' networks on the same CIDR over three chassis: local and remote delivery,
//! isolation, spoofing drops, the ARP responder, flooding, and bad input.

use trace::{ArpKind, Local, Probe, simulate};

use super::{chassis, computed, inventory as items_inventory, network, port, request, subnet};

pub(super) const WEB: &str = "11111111-1111-4111-8111-111111111111";
const DB: &str = "22222222-2222-4222-8222-222222222222";

/// web (also IPv6, for web1 and web2): web1, web3 on c1, web2 on c2; db (same CIDR, other project): db1 on c1 with web1's
/// address, db2 on c3 with web2's.
pub(super) fn inventory() -> trace::Inventory {
    let mut items = vec![
        network(WEB, "web", 1),
        subnet("s-web", WEB, "10.0.0.0/24", "10.0.0.1"),
        subnet("s-web6", WEB, "fd00::/64", "fd00::1"),
        network(DB, "db", 2),
        subnet("s-db", DB, "10.0.0.0/24", "10.0.0.1"),
        port(
            "a1000000-0000-4000-8000-000000000001",
            "web1",
            WEB,
            "fa:16:3e:00:00:11",
            "10.0.0.11,fd00::11",
            "c1",
        ),
        port(
            "a2000000-0000-4000-8000-000000000002",
            "web2",
            WEB,
            "fa:16:3e:00:00:12",
            "10.0.0.12,fd00::12",
            "c2",
        ),
        port(
            "a3000000-0000-4000-8000-000000000003",
            "web3",
            WEB,
            "fa:16:3e:00:00:13",
            "10.0.0.13",
            "c1",
        ),
        port(
            "b1000000-0000-4000-8000-000000000001",
            "db1",
            DB,
            "fa:16:3e:00:01:11",
            "10.0.0.11",
            "c1",
        ),
        port(
            "b2000000-0000-4000-8000-000000000002",
            "db2",
            DB,
            "fa:16:3e:00:01:12",
            "10.0.0.12",
            "c3",
        ),
    ];
    items.extend(chassis("c1", "172.31.0.1"));
    items.extend(chassis("c2", "172.31.0.2"));
    items.extend(chassis("c3", "172.31.0.3"));
    items_inventory(
        items,
        &[
            ("a1000000-0000-4000-8000-000000000001", "web1"),
            ("a2000000-0000-4000-8000-000000000002", "web2"),
            ("a3000000-0000-4000-8000-000000000003", "web3"),
            ("b1000000-0000-4000-8000-000000000001", "db1"),
            ("b2000000-0000-4000-8000-000000000002", "db2"),
        ],
    )
}

fn run(
    from: &str,
    to: &str,
    probe: Probe,
    src_ip: Option<&str>,
    src_mac: Option<&str>,
) -> trace::Report {
    let inv = inventory();
    let local = Local::from_bindings(&inv, "c1");
    let mut req = request(from, to, probe);
    req.src_ip = src_ip.map(|s| s.parse().unwrap());
    req.src_mac = src_mac.map(|s| s.parse().unwrap());
    let flows = computed(&inv, &local);
    let report = simulate(&inv, &local, flows, &req).unwrap();
    println!("{report}");
    report
}

#[test]
fn same_network_on_this_chassis_is_delivered() {
    let r = run("web1", "10.0.0.13", Probe::Echo, None, None);
    assert_eq!(
        r.verdict_text(),
        "delivered to port web3 (VM web3) on this chassis"
    );
    // Every step names its owner.
    assert!(
        r.steps
            .contains("owner: port a1000000… (web1) on network web (11111111…)"),
        "{}",
        r.steps
    );
    assert!(
        r.steps
            .contains("owner: port a3000000… (web3) on network web"),
        "{}",
        r.steps
    );
}

#[test]
fn same_network_on_another_chassis_goes_over_the_tunnel() {
    let r = run("web1", "10.0.0.12", Probe::Tcp(80), None, None);
    assert_eq!(
        r.verdict_text(),
        "sent over the tunnel to chassis c2 (172.31.0.2) with VNI 1 → for port web2 (VM web2)"
    );
    // The same address on the other network goes to that network's port, with its VNI.
    let r = run("db1", "10.0.0.12", Probe::Udp(53), None, None);
    assert_eq!(
        r.verdict_text(),
        "sent over the tunnel to chassis c3 (172.31.0.3) with VNI 2 → for port db2 (VM db2)"
    );
}

#[test]
fn networks_are_isolated() {
    // Addressed to db2's MAC from web: unknown on web, flooded within web only.
    let r = run("web1", "db2", Probe::Echo, None, None);
    let v = r.verdict_text();
    assert!(
        v.starts_with("flooded on network web (11111111…) (unknown unicast"),
        "{v}"
    );
    assert!(
        v.contains("delivered to port web3 (VM web3) on this chassis"),
        "{v}"
    );
    assert!(v.contains("to chassis c2 (172.31.0.2) with VNI 1"), "{v}");
    assert!(!v.contains("VNI 2"), "{v}");
    assert!(!v.contains("c3"), "{v}");
    assert!(
        v.ends_with("port db2 (VM db2) did not get it: it is on network db (22222222…), and different networks are isolated (no router joins them)"),
        "{v}"
    );
    // db1 on the same chassis, same address as web1: web1's packets never reach it.
    let r = run("web3", "10.0.0.11", Probe::Echo, None, None);
    assert_eq!(
        r.verdict_text(),
        "delivered to port web1 (VM web1) on this chassis"
    );
}

#[test]
fn spoofed_sources_are_dropped() {
    let r = run("web1", "10.0.0.12", Probe::Echo, Some("10.0.0.99"), None);
    assert!(
        r.verdict[0]
            == "dropped: port security (source 10.0.0.99 is not an address of port web1 (VM web1))",
        "{:?}",
        r.verdict
    );
    assert!(
        r.verdict_text()
            .ends_with("port web2 (VM web2) did not get it")
    );
    // Another port's address is no better.
    let r = run("web1", "10.0.0.12", Probe::Echo, Some("10.0.0.13"), None);
    assert!(r.verdict[0].contains("source 10.0.0.13 is not an address of port web1"));
    let r = run(
        "web1",
        "10.0.0.12",
        Probe::Echo,
        None,
        Some("fa:16:3e:00:00:99"),
    );
    assert_eq!(
        r.verdict[0],
        "dropped: port security (source MAC fa:16:3e:00:00:99 is not the MAC of port web1 (VM web1), fa:16:3e:00:00:11)"
    );
    let r = run(
        "web1",
        "10.0.0.12",
        Probe::Arp(ArpKind::Request),
        Some("10.0.0.12"),
        None,
    );
    assert!(
        r.verdict[0].contains("source 10.0.0.12 is not an address of port web1"),
        "{:?}",
        r.verdict
    );
}

#[test]
fn arp_requests_are_answered_by_the_responder() {
    let r = run(
        "web1",
        "10.0.0.12",
        Probe::Arp(ArpKind::Request),
        None,
        None,
    );
    assert_eq!(
        r.verdict_text(),
        "answered by the ARP responder for port web2 (VM web2): 10.0.0.12 is at fa:16:3e:00:00:12"
    );
    // The same address on the other network answers with that network's port.
    let r = run("db1", "10.0.0.12", Probe::Arp(ArpKind::Request), None, None);
    assert_eq!(
        r.verdict_text(),
        "answered by the ARP responder for port db2 (VM db2): 10.0.0.12 is at fa:16:3e:00:01:12"
    );
}

#[test]
fn unknown_addresses_are_flooded() {
    let r = run("web1", "10.0.0.99", Probe::Echo, None, None);
    assert!(
        r.header
            .iter()
            .any(|h| h.contains("no port on network web (11111111…) has 10.0.0.99"))
    );
    let v = r.verdict_text();
    assert!(
        v.starts_with("flooded on network web (11111111…) (broadcast):"),
        "{v}"
    );
    assert!(
        v.contains("  - delivered to port web3 (VM web3) on this chassis"),
        "{v}"
    );
    assert!(
        v.contains("  - sent over the tunnel to chassis c2 (172.31.0.2) with VNI 1 → for every port of network web (11111111…) there"),
        "{v}"
    );
}

#[test]
fn what_would_happen_on_another_chassis() {
    // web2 is bound to c2; traced on c1 it is assumed plugged in there.
    let inv = inventory();
    let mut local = Local::from_bindings(&inv, "c1");
    assert!(local.assume_vif("a2000000-0000-4000-8000-000000000002"));
    let req = request("web2", "web3", Probe::Echo);
    let r = simulate(&inv, &local, computed(&inv, &local), &req).unwrap();
    assert_eq!(
        r.verdict_text(),
        "delivered to port web3 (VM web3) on this chassis"
    );
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let inv = inventory();
    let local = Local::from_bindings(&inv, "c1");
    let flows = || computed(&inv, &local);
    let req = |from: &str, to: &str| request(from, to, Probe::Echo);
    let e = simulate(&inv, &local, flows(), &req("web9", "10.0.0.12")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("no port or VM is called \"web9\""),
        "{e}"
    );
    let e = simulate(&inv, &local, flows(), &req("web1", "10.0.0.300")).unwrap_err();
    assert_eq!(e.to_string(), "\"10.0.0.300\" is not a valid IP address");
    // web2 has no VIF on c1.
    let e = simulate(&inv, &local, flows(), &req("web2", "10.0.0.11")).unwrap_err();
    assert!(
        e.to_string()
            .contains("has no VIF on chassis c1 (it is bound to chassis c2)"),
        "{e}"
    );
}

#[test]
fn ipv6_unicast_and_the_nd_responder() {
    let r = run("web1", "fd00::12", Probe::Echo, None, None);
    assert_eq!(
        r.verdict_text(),
        "sent over the tunnel to chassis c2 (172.31.0.2) with VNI 1 → for port web2 (VM web2)"
    );
    let r = run("web1", "fd00::12", Probe::Arp(ArpKind::Request), None, None);
    assert!(
        r.header
            .iter()
            .any(|h| h.starts_with("IPv6 neighbour solicitation from port web1"))
    );
    assert_eq!(
        r.verdict_text(),
        "answered by the ND responder for port web2 (VM web2): the agent of this chassis replies \
         that fd00::12 is at fa:16:3e:00:00:12"
    );
    let r = run("web1", "fd00::12", Probe::Echo, Some("fd00::99"), None);
    assert_eq!(
        r.verdict[0],
        "dropped: port security (source fd00::99 is not an address of port web1 (VM web1))"
    );
}
