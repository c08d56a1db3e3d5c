//! Provider networks and the way out, end to end with real packets through the lab: 3 chassis
//! with Open vSwitch and agents (c3 may host gateways), two physical segments — physnet1 and
//! extnet, switches every chassis has an uplink into (its provider bridges `br-physnet1` and
//! `br-extnet`, which the agents patch to `br-int`) — and external hosts on them: h101 in VLAN 101
//! of physnet1, hflat untagged on physnet1, inet untagged on extnet.
//!
//! (a) The VLAN provider network `vlan101` (VLAN 101 on physnet1, IPv4 and IPv6) with v1 on c1 and
//! v2 on c2: they ping each other (IPv4 and IPv6), h101 pings both and v1 pings it, a capture on
//! the switch's port to c1 shows their frames tagged with VLAN 101, and TCP (busybox nc, 200 kB)
//! crosses it both ways. (b) The flat provider network `flat` (untagged on physnet1) with f1 on c1
//! and f2 on c2: the same, with untagged frames. Both networks have the same CIDR, and stay apart.
//! (c) The outside: project alpha's network `inside` behind router r1, whose gateway is on the
//! flat external network `public` (extnet): t2 reaches inet from an address of the router's
//! outside (SNAT: r1's gateway address, or its chassis' SNAT address on public where SNAT is
//! distributed), t1 from its floating IP 172.24.4.50, and inet reaches t1 through it (ping, TCP).
//!
//! Every check runs even when an earlier one failed; the test prints each outcome and fails at the
//! end if any check did. The lab is torn down in any case (dropping it does, also on a panic).
//! `cargo test -p wyvern --test suite provider::`.

use std::path::Path;

use lab::{Lab, Topology};

use crate::outside;
use crate::support;
use outside::{chassis_snat_address, echo_requests, ports_active, reaches_from};
use support::{
    Checks, Outcome, Servers, agents_in_sync, all, in_parallel, lab_options, need, reply_ttl, run,
    silent, tcp_reaches, v6,
};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
/// Port of the TCP servers.
const TCP_PORT: u16 = 7000;
/// t1's floating IP, and inet's address.
const FIP: &str = "172.24.4.50";
const INET: &str = "172.24.4.100";

const TOPOLOGY: &str = r#"
[underlay]
cidr = "172.31.46.0/24"

[[physical]]
name = "physnet1"
[[physical]]
name = "extnet"

[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
[[chassis]]
name = "c3"
gateway = true

[[external]]
name = "h101"
physical = "physnet1"
vlan = 101
ip = "192.168.100.100/24"
[[external]]
name = "hflat"
physical = "physnet1"
ip = "192.168.100.200/24"
[[external]]
name = "inet"
physical = "extnet"
ip = "172.24.4.100/24"

[[network]]
name = "vlan101"
network_type = "vlan"
physical_network = "physnet1"
segmentation_id = 101
[[network.subnet]]
name = "vlan101-v4"
cidr = "192.168.100.0/24"
gateway = "none"
[[network.subnet]]
name = "vlan101-v6"
cidr = "fd00:101::/64"
gateway = "none"

[[network]]
name = "flat"
network_type = "flat"
physical_network = "physnet1"
[[network.subnet]]
cidr = "192.168.100.0/24"
gateway = "none"

[[network]]
name = "public"
network_type = "flat"
physical_network = "extnet"
external = true
[[network.subnet]]
cidr = "172.24.4.0/24"
gateway = "172.24.4.1"

[[network]]
name = "inside"
project = "alpha"
[[network.subnet]]
name = "inside-v4"
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"

[[router]]
name = "r1"
project = "alpha"
interfaces = ["inside-v4"]
gateway = "public"

[[security_group]]
name = "reachable"
rules = [
  { direction = "ingress", protocol = "icmp" },
  { direction = "ingress", ethertype = "IPv6", protocol = "icmpv6" },
  { direction = "ingress", protocol = "tcp" },
]
[[security_group]]
name = "inside-reachable"
project = "alpha"
rules = [
  { direction = "ingress", protocol = "icmp" },
  { direction = "ingress", protocol = "tcp" },
]

[[vm]]
name = "v1"
network = "vlan101"
chassis = "c1"
ip = "192.168.100.11"
security_groups = ["reachable"]
[[vm]]
name = "v2"
network = "vlan101"
chassis = "c2"
ip = "192.168.100.12"
security_groups = ["reachable"]
[[vm]]
name = "f1"
network = "flat"
chassis = "c1"
ip = "192.168.100.21"
security_groups = ["reachable"]
[[vm]]
name = "f2"
network = "flat"
chassis = "c2"
ip = "192.168.100.22"
security_groups = ["reachable"]
[[vm]]
name = "t1"
network = "inside"
chassis = "c1"
ip = "10.0.0.11"
security_groups = ["inside-reachable"]
[[vm]]
name = "t2"
network = "inside"
chassis = "c2"
ip = "10.0.0.12"
security_groups = ["inside-reachable"]

[[floating_ip]]
vm = "t1"
network = "public"
address = "172.24.4.50"
"#;

/// Every pair of `(from, to address)` answers.
fn pings(lab: &Lab, pairs: &[(&str, &str)]) -> Outcome {
    let owned: Vec<(&str, String)> = pairs.iter().map(|(f, t)| (*f, (*t).to_owned())).collect();
    in_parallel(owned, |(from, to)| reply_ttl(lab, from, &to).map(drop))
}

/// `from` (at `from_ip`) pings `to` across chassis; on c1's port of the physnet1 switch its echo
/// requests are tagged with VLAN `vlan`, or untagged if none.
fn on_the_wire(lab: &Lab, from: (&str, &str), to: &str, vlan: Option<u16>) -> Outcome {
    let seen = echo_requests(lab, "physnet1", "c1", from.0, to)?;
    let wrong: Vec<&String> = seen
        .iter()
        .filter(|(source, _)| source == from.1)
        .map(|(_, f)| f)
        .filter(|f| match vlan {
            Some(v) => !f.contains(&format!("vlan {v},")),
            None => f.contains("vlan"),
        })
        .collect();
    if wrong.is_empty() && seen.iter().any(|(source, _)| source == from.1) {
        Ok(())
    } else {
        let want = vlan.map_or("untagged".to_owned(), |v| format!("VLAN {v}"));
        Err(format!("want {want} from {}; saw {seen:?}", from.1))
    }
}

/// Every chassis' provider bridges are patched to br-int (by its agent) and still standalone
/// learning switches with their uplink.
fn provider_bridges(lab: &Lab) -> Outcome {
    let mut wrong = Vec::new();
    for c in CHASSIS {
        let (_, int_ports) = run(lab, c, &["ovs-vsctl", "list-ports", "br-int"]);
        for seg in ["physnet1", "extnet"] {
            let br = format!("br-{seg}");
            let (_, ports) = run(lab, c, &["ovs-vsctl", "list-ports", &br]);
            let (_, mode) = run(lab, c, &["ovs-vsctl", "get-fail-mode", &br]);
            let ok = int_ports.contains(&format!("int-{br}"))
                && ports.contains(&format!("phy-{br}"))
                && ports.contains(&format!("ph-{seg}"))
                && mode.trim() == "standalone";
            if !ok {
                wrong.push(format!(
                    "{c} {br}: ports {:?}, fail mode {:?}, br-int ports {:?}",
                    ports.trim(),
                    mode.trim(),
                    int_ports.trim()
                ));
            }
        }
    }
    if wrong.is_empty() {
        Ok(())
    } else {
        Err(wrong.join("\n    "))
    }
}

#[test]
fn provider_networks_and_the_outside() {
    let _alone = support::alone();
    let name = format!("pv{}", std::process::id() % 100_000);
    let text = format!("name = \"{name}\"\n{TOPOLOGY}");
    let topo = Topology::parse(&text, Path::new("provider.toml")).expect("valid topology");
    // Dropping the lab tears it down, also when the test panics.
    let lab = Lab::up(&topo, &lab_options()).expect("lab up");
    let mut checks = Checks::new("provider");

    checks.run("agents in sync", || agents_in_sync(&lab, &CHASSIS));
    checks.run(
        "provider bridges patched to br-int on every chassis, standalone",
        || provider_bridges(&lab),
    );
    checks.run("every VM's port is ACTIVE", || {
        ports_active(&lab, &["v1", "v2", "f1", "f2", "t1", "t2"])
    });

    // (a) VLAN 101.
    checks.run("vlan101: v1 (c1) and v2 (c2) ping each other", || {
        pings(&lab, &[("v1", "192.168.100.12"), ("v2", "192.168.100.11")])
    });
    checks.run("vlan101: v1 and v2 ping each other over IPv6", || {
        pings(&lab, &[("v1", &v6(&lab, "v2")), ("v2", &v6(&lab, "v1"))])
    });
    checks.run(
        "vlan101: external host h101 (VLAN 101) pings v1 and v2, v1 pings h101",
        || {
            pings(
                &lab,
                &[
                    ("h101", "192.168.100.11"),
                    ("h101", "192.168.100.12"),
                    ("v1", "192.168.100.100"),
                ],
            )
        },
    );
    let wire_a = "vlan101: v1 -> v2 crosses c1's uplink tagged VLAN 101";
    checks.run(wire_a, || {
        need("tcpdump")?;
        on_the_wire(&lab, ("v1", "192.168.100.11"), "192.168.100.12", Some(101))
    });

    // (b) Flat.
    checks.run("flat: f1 (c1) and f2 (c2) ping each other", || {
        pings(&lab, &[("f1", "192.168.100.22"), ("f2", "192.168.100.21")])
    });
    checks.run(
        "flat: external host hflat (untagged) pings f1 and f2, f1 pings hflat",
        || {
            pings(
                &lab,
                &[
                    ("hflat", "192.168.100.21"),
                    ("hflat", "192.168.100.22"),
                    ("f1", "192.168.100.200"),
                ],
            )
        },
    );
    let wire_b = "flat: f1 -> f2 crosses c1's uplink untagged";
    checks.run(wire_b, || {
        need("tcpdump")?;
        on_the_wire(&lab, ("f1", "192.168.100.21"), "192.168.100.22", None)
    });
    checks.run(
        "vlan101 and flat stay apart (same CIDR, other VMs' addresses)",
        || {
            let probes = vec![
                ("h101", "192.168.100.21"),
                ("hflat", "192.168.100.11"),
                ("v1", "192.168.100.22"),
                ("f1", "192.168.100.12"),
            ];
            in_parallel(probes, |(from, to)| silent(&lab, from, to))
        },
    );

    let servers = Servers::start(
        &lab,
        &[
            ("v1", TCP_PORT),
            ("v2", TCP_PORT),
            ("h101", TCP_PORT),
            ("f1", TCP_PORT),
            ("f2", TCP_PORT),
            ("t1", TCP_PORT),
            ("inet", TCP_PORT),
        ],
    );
    checks.run(
        "vlan101: TCP (200 kB) v1 -> v2, h101 -> v1, v2 -> h101",
        || {
            all([
                tcp_reaches(&lab, "v1", "192.168.100.12", TCP_PORT, "v2"),
                tcp_reaches(&lab, "h101", "192.168.100.11", TCP_PORT, "v1"),
                tcp_reaches(&lab, "v2", "192.168.100.100", TCP_PORT, "h101"),
            ])
        },
    );
    checks.run("flat: TCP (200 kB) f2 -> f1, hflat -> f2", || {
        all([
            tcp_reaches(&lab, "f2", "192.168.100.21", TCP_PORT, "f1"),
            tcp_reaches(&lab, "hflat", "192.168.100.22", TCP_PORT, "f2"),
        ])
    });

    // (c) The outside, through r1's gateway on public.
    let snat = "outside: t2 reaches inet from c2's SNAT address on public (distributed SNAT)";
    let from_fip = "outside: t1 reaches inet from its floating IP";
    checks.run(snat, || {
        need("tcpdump")?;
        let c2 =
            chassis_snat_address(&lab, "public", "c2").ok_or("c2 has no SNAT address on public")?;
        reaches_from(&lab, "t2", "inet", INET, &[c2])
    });
    checks.run(from_fip, || {
        need("tcpdump")?;
        reaches_from(&lab, "t1", "inet", INET, &[FIP.to_owned()])
    });
    checks.run("outside: TCP (200 kB) t2 -> inet", || {
        tcp_reaches(&lab, "t2", INET, TCP_PORT, "inet")
    });
    checks.run(
        "outside: inet reaches t1 through its floating IP (ping, TCP 200 kB)",
        || {
            all([
                reply_ttl(&lab, "inet", FIP).map(drop),
                tcp_reaches(&lab, "inet", FIP, TCP_PORT, "t1"),
            ])
        },
    );
    drop(servers);

    let failed = checks.report();
    lab.down().expect("lab down");
    assert!(failed.is_empty(), "failed checks: {failed:?}");
}
