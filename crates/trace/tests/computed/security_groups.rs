//! Security groups in API terms: the rule (id, group, direction) that admits a packet in each
//! direction and the connection state, a rule with a remote group, a prefix and an address
//! group, no rule, a reply and other states given with `ct_state`, a stateless group, and
//! the bypasses.

use serde_json::json;
use trace::{DhcpKind, Local, Probe, Report, Request, simulate};

use super::{
    Item, chassis, computed, inventory, network, port, request, rule, security_group, subnet,
};

fn address_group(id: &str, addresses: &[&str]) -> Item {
    (
        format!("/r/address_groups/{id}"),
        json!({"id": id, "name": "monitoring", "addresses": addresses}),
    )
}

/// A port in the groups `groups` (instead of [`port`]'s open one).
fn member(id: &str, name: &str, mac: &str, ip: &str, groups: &[&str]) -> Item {
    let (key, mut v) = port(id, name, "net1", mac, ip, "c1");
    v["security_groups"] = json!(groups);
    (key, v)
}

/// On chassis c1, network net1 (10.0.0.0/24): web1 in group web (egress anywhere; HTTP from
/// 10.0.0.0/24), db1 in group db (egress anywhere; PostgreSQL from the members of web; ICMP
/// from address group monitoring, which holds web1's address), dns1 in the stateless group dns
/// (DNS in, UDP out).
fn inventory_sg() -> trace::Inventory {
    let mut items = vec![
        network("net1", "net", 7),
        subnet("sub1", "net1", "10.0.0.0/24", "10.0.0.1"),
        member(
            "p-web1",
            "web1",
            "fa:16:3e:00:00:11",
            "10.0.0.11",
            &["sg-web"],
        ),
        member("p-db1", "db1", "fa:16:3e:00:00:12", "10.0.0.12", &["sg-db"]),
        member(
            "p-dns1",
            "dns1",
            "fa:16:3e:00:00:13",
            "10.0.0.13",
            &["sg-dns"],
        ),
        security_group("sg-web", "web", true),
        security_group("sg-db", "db", true),
        security_group("sg-dns", "dns", false),
        address_group("ag-mon", &["10.0.0.11/32"]),
        rule("web-out", "sg-web", "egress", "IPv4", json!({})),
        rule(
            "web-http",
            "sg-web",
            "ingress",
            "IPv4",
            json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 80,
                   "remote_ip_prefix": "10.0.0.0/24"}),
        ),
        rule("db-out", "sg-db", "egress", "IPv4", json!({})),
        rule(
            "db-pg",
            "sg-db",
            "ingress",
            "IPv4",
            json!({"protocol": "tcp", "port_range_min": 5432, "port_range_max": 5432,
                   "remote_group_id": "sg-web"}),
        ),
        rule(
            "db-icmp",
            "sg-db",
            "ingress",
            "IPv4",
            json!({"protocol": "icmp", "remote_address_group_id": "ag-mon"}),
        ),
        rule(
            "dns-in",
            "sg-dns",
            "ingress",
            "IPv4",
            json!({"protocol": "udp", "port_range_min": 53, "port_range_max": 53}),
        ),
        rule(
            "dns-out",
            "sg-dns",
            "egress",
            "IPv4",
            json!({"protocol": "udp"}),
        ),
    ];
    items.extend(chassis("c1", "172.31.0.1"));
    inventory(items, &[])
}

/// `req` traced on c1, with the connection state `ct` if given.
fn run(mut req: Request, ct: Option<&str>) -> Report {
    let inv = inventory_sg();
    let local = Local::from_bindings(&inv, "c1");
    req.ct_state = ct.map(|s| trace::request::parse_ct_state(s).unwrap());
    let report = simulate(&inv, &local, computed(&inv, &local), &req).unwrap();
    println!("{report}");
    report
}

#[test]
fn the_rule_that_admits_a_new_connection_each_way() {
    let r = run(request("web1", "db1", Probe::Tcp(5432)), None);
    assert_eq!(
        r.security,
        [
            "egress: security group web (sg-web) rule web-out (egress, any) admits it: new \
             connection, committed in port web1's zone",
            "ingress: security group db (sg-db) rule db-pg (ingress, tcp 5432 from the members \
             of security group web (sg-web)) admits it: new connection, committed in port db1's \
             zone",
        ]
    );
    assert_eq!(r.verdict, ["delivered to port db1 on this chassis"]);
    // A prefix, and an address group.
    let r = run(request("db1", "web1", Probe::Tcp(80)), None);
    assert!(r.security[1].starts_with(
        "ingress: security group web (sg-web) rule web-http (ingress, tcp 80 from 10.0.0.0/24) \
         admits it"
    ));
    let r = run(request("web1", "db1", Probe::Echo), None);
    assert!(r.security[1].starts_with(
        "ingress: security group db (sg-db) rule db-icmp (ingress, icmp from address group \
         ag-mon) admits it: new connection"
    ));
}

#[test]
fn no_rule_drops() {
    let r = run(request("web1", "db1", Probe::Tcp(22)), None);
    let why = "ingress: no rule of port db1's groups admits tcp 10.0.0.11 → 10.0.0.12:22: dropped";
    assert_eq!(r.security[1], why);
    assert_eq!(r.verdict, [why, "port db1 did not get it"]);
    // dns1's stateless group lets only UDP out.
    let r = run(request("dns1", "db1", Probe::Echo), None);
    assert_eq!(
        r.verdict[0],
        "egress: no rule of port dns1's groups admits icmp 10.0.0.13 → 10.0.0.12 (type 8): \
         dropped"
    );
}

#[test]
fn a_stateless_group_tracks_nothing() {
    let r = run(request("web1", "dns1", Probe::Udp(53)), None);
    assert_eq!(
        r.security[1],
        "ingress: security group dns (sg-dns) rule dns-in (ingress, udp 53) admits it: a \
         stateless group: not tracked, every packet needs a rule"
    );
    assert_eq!(r.verdict, ["delivered to port dns1 on this chassis"]);
}

#[test]
fn connection_states_given_with_ct_state() {
    let r = run(request("db1", "web1", Probe::Tcp(33000)), Some("est,rpl"));
    assert!(
        r.header
            .iter()
            .any(|h| h == "  conntrack takes it as trk,est,rpl (--ct-state)")
    );
    assert_eq!(
        r.security,
        [
            "egress: a reply of a tracked connection: passes",
            "ingress: a reply of a tracked connection: passes",
        ]
    );
    assert_eq!(r.verdict, ["delivered to port web1 on this chassis"]);
    let r = run(request("web1", "db1", Probe::Tcp(22)), Some("est"));
    assert_eq!(
        r.verdict[0],
        "ingress: an established connection that no rule of port db1's groups admits any more \
         (tcp 10.0.0.11 → 10.0.0.12:22): marked as no longer allowed in conntrack, and dropped"
    );
    let r = run(request("web1", "db1", Probe::Tcp(5432)), Some("inv"));
    assert_eq!(
        r.verdict[0],
        "egress: invalid for conntrack in port web1's zone (tcp 10.0.0.11 → 10.0.0.12:5432): \
         dropped"
    );
}

#[test]
fn dhcp_bypasses_the_groups() {
    let req = Request::new("web1", None, Probe::Dhcp(DhcpKind::Discover));
    let r = run(req, None);
    assert_eq!(r.security, ["egress: bypasses the security groups: DHCP"]);
}
