//! IPv6 to and from the outside end to end, with real packets through the lab: 3 chassis with
//! Open vSwitch and agents (c2 and c3 may host gateways), a physical segment `extnet` with the
//! external host inet (172.24.4.100, 2001:db8:ee::100, which stands for the upstream router too:
//! it is the external IPv6 subnet's gateway and holds 2001:db8:ff::1 as a far destination) on
//! the flat external network `public`. Project alpha's router ra joins network a (10.0.0.0/24,
//! 2001:db8:10::/64) with a1 on c1 and a2 on c2, and has its gateway on public at 172.24.4.2 and
//! 2001:db8:ee::2, through which inet routes to 2001:db8:10::/64.
//!
//! Checked: a1 and a2 reach inet's address on the external subnet and the far one behind it
//! (the default route through the subnet's gateway), and inet sees their own addresses (no NAT);
//! inet reaches both (ping, TCP); the physical switch learned the gateway's MAC on the uplink of
//! one chassis only, the one hosting it; when that chassis' underlay link is cut, IPv6 works
//! again through the other gateway chassis, whose announcements moved the gateway's MAC on the
//! physical switch (the time is printed).
//!
//! Every check runs even when an earlier one failed; the test prints each outcome and fails at the
//! end if any check did. The lab is torn down in any case (dropping it does, also on a panic).

use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, Topology};
use reqwest::Method;
use serde_json::Value;

use crate::outside;
use crate::support;
use outside::{ports_active, reaches_from};
use support::{
    Checks, Servers, agents_in_sync, all, api, lab_options, need, reply_ttl, run, sessions_up,
    tcp_reaches, v6,
};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
const GATEWAYS: [&str; 2] = ["c2", "c3"];
const TCP_PORT: u16 = 7000;
const INET: &str = "2001:db8:ee::100";
const FAR: &str = "2001:db8:ff::1";
const GATEWAY: &str = "2001:db8:ee::2";

fn topology(name: &str) -> Topology {
    let text = format!(
        r#"name = "{name}"
[underlay]
cidr = "172.31.48.0/24"

[[physical]]
name = "extnet"

[[chassis]]
name = "c1"
[[chassis]]
name = "c2"
gateway = true
[[chassis]]
name = "c3"
gateway = true

[[external]]
name = "inet"
physical = "extnet"
ip = "172.24.4.100/24"
ip6 = "{INET}/64"
routes = [{{ destination = "2001:db8:10::/64", nexthop = "{GATEWAY}" }}]

[[network]]
name = "public"
network_type = "flat"
physical_network = "extnet"
external = true
[[network.subnet]]
cidr = "172.24.4.0/24"
gateway = "172.24.4.1"
[[network.subnet]]
cidr = "2001:db8:ee::/64"
gateway = "{INET}"

[[network]]
name = "a"
project = "alpha"
[[network.subnet]]
name = "a-v4"
cidr = "10.0.0.0/24"
gateway = "10.0.0.1"
[[network.subnet]]
name = "a-v6"
cidr = "2001:db8:10::/64"
gateway = "2001:db8:10::1"

[[router]]
name = "ra"
project = "alpha"
interfaces = ["a-v4", "a-v6"]
gateway = "public"
gateway_ips = ["172.24.4.2", "{GATEWAY}"]

[[security_group]]
name = "open"
project = "alpha"
rules = [
  {{ direction = "ingress", ethertype = "IPv6", protocol = "ipv6-icmp" }},
  {{ direction = "ingress", ethertype = "IPv6", protocol = "tcp" }},
]

[[vm]]
name = "a1"
network = "a"
chassis = "c1"
security_groups = ["open"]
[[vm]]
name = "a2"
network = "a"
chassis = "c2"
security_groups = ["open"]
"#
    );
    Topology::parse(&text, Path::new("outside_ipv6.toml")).expect("valid topology")
}

/// The MAC of ra's gateway port.
fn gateway_mac(lab: &Lab) -> Option<String> {
    let router = &lab.state().routers.get("ra")?.id;
    let query = format!("ports?device_owner=network:router_gateway&device_id={router}");
    let (_, body) = api(lab, Method::GET, &query, &Value::Null);
    let ports: Value = serde_json::from_str(&body).ok()?;
    ports["ports"][0]["mac_address"].as_str().map(str::to_owned)
}

/// The chassis whose `br-int` lets IPv6 to the gateway's MAC from the physical network into
/// the router: the one hosting ra's gateway.
fn hosting(lab: &Lab, mac: &str) -> Vec<&'static str> {
    GATEWAYS
        .into_iter()
        .filter(|c| {
            let (_, flows) = run(
                lab,
                c,
                &[
                    "ovs-ofctl",
                    "-O",
                    "OpenFlow13",
                    "dump-flows",
                    "br-int",
                    "table=15,ipv6",
                ],
            );
            flows.lines().any(|f| f.contains(&format!("dl_dst={mac}")))
        })
        .collect()
}

/// The ports of the segment switch on which it learned `mac` (the chassis' uplinks are named
/// after them).
fn learned_on(lab: &Lab, mac: &str) -> Result<Vec<String>, String> {
    let (ok, fdb) = run(lab, "extnet", &["ovs-appctl", "fdb/show", "extnet"]);
    if !ok {
        return Err(format!("fdb/show failed: {fdb}"));
    }
    let (_, ports) = run(lab, "extnet", &["ovs-ofctl", "show", "extnet"]);
    let name_of = |number: &str| {
        ports
            .lines()
            .find_map(|l| {
                let l = l.trim();
                let (n, rest) = l.split_once('(')?;
                (n == number).then(|| rest.split(')').next().unwrap_or("").to_owned())
            })
            .unwrap_or_else(|| number.to_owned())
    };
    Ok(fdb
        .lines()
        .filter(|l| l.contains(mac))
        .filter_map(|l| l.split_whitespace().next().map(name_of))
        .collect())
}

#[test]
fn ipv6_to_and_from_the_outside() {
    let _alone = support::alone();
    let name = format!("o6{}", std::process::id() % 100_000);
    // Dropping the lab tears it down, also when the test panics.
    let lab = Lab::up(&topology(&name), &lab_options()).expect("lab up");
    let mut checks = Checks::new("ipv6 outside");
    // inet holds a far address, reached through the default route.
    let far = format!("{FAR}/128");
    let (ok, out) = run(
        &lab,
        "inet",
        &["ip", "-6", "addr", "add", &far, "dev", "lo"],
    );
    assert!(ok, "adding {far} to inet: {out}");

    checks.run("agents in sync", || agents_in_sync(&lab, &CHASSIS));
    checks.run("every VM's port is ACTIVE", || {
        ports_active(&lab, &["a1", "a2"])
    });
    checks.run(
        "a1 (c1) and a2 (c2) reach inet and the far address behind it",
        || {
            all(["a1", "a2"]
                .into_iter()
                .flat_map(|vm| [INET, FAR].map(|to| reply_ttl(&lab, vm, to).map(drop))))
        },
    );
    let own = "inet sees a1 and a2 by their own addresses (no NAT)";
    checks.run(own, || {
        need("tcpdump")?;
        all(["a1", "a2"].map(|vm| reaches_from(&lab, vm, "inet", INET, &[v6(&lab, vm)])))
    });
    let servers = Servers::start(&lab, &[("a1", TCP_PORT), ("a2", TCP_PORT)]);
    checks.run("inet reaches a1 and a2 (ping, TCP)", || {
        all(["a1", "a2"].into_iter().flat_map(|vm| {
            let ip = v6(&lab, vm);
            [
                reply_ttl(&lab, "inet", &ip).map(drop),
                tcp_reaches(&lab, "inet", &ip, TCP_PORT, vm),
            ]
        }))
    });
    drop(servers);
    let mac = gateway_mac(&lab);
    checks.run(
        "one chassis hosts the gateway, and the switch learned its MAC there only",
        || {
            let mac = mac.as_deref().ok_or("ra has no gateway port")?;
            let hosts = hosting(&lab, mac);
            let learned = learned_on(&lab, mac)?;
            match (hosts.as_slice(), learned.as_slice()) {
                ([host], [port]) if port.contains(host) => Ok(()),
                _ => Err(format!(
                    "hosted on {hosts:?}; the switch learned {mac} on {learned:?}"
                )),
            }
        },
    );
    checks.run(
        "IPv6 works again through the other gateway chassis when its host's underlay is cut",
        || {
            let mac = mac.as_deref().ok_or("ra has no gateway port")?;
            let [host] = hosting(&lab, mac)[..] else {
                return Err("not hosted on exactly one chassis".into());
            };
            sessions_up(&lab, &CHASSIS)?;
            let link = format!("ul-{host}");
            lab.exec(host, &["ip", "link", "set", &link, "down"])
                .map_err(|e| e.to_string())?;
            // Its peers' BFD sessions see its data plane die, and it sees itself cut off: the
            // other gateway chassis takes over, and forwards.
            let other = GATEWAYS.into_iter().find(|c| *c != host).unwrap_or(host);
            let started = Instant::now();
            let moved = loop {
                if hosting(&lab, mac) == [other]
                    && run(&lab, "a1", &["ping", "-c", "1", "-W", "1", INET]).0
                {
                    break Ok(started.elapsed());
                }
                if started.elapsed() > Duration::from_secs(30) {
                    break Err(format!(
                        "{other} did not take over within 30 s (hosted on {:?})",
                        hosting(&lab, mac)
                    ));
                }
                thread::sleep(Duration::from_millis(100));
            };
            if let Ok(took) = moved {
                println!("    IPv6 through {other} after {took:?}");
            }
            // Its announcements moved the gateway's MAC on the physical switch.
            let learned = match learned_on(&lab, mac) {
                Ok(ports) if ports.len() == 1 && ports[0].contains(other) => Ok(()),
                Ok(ports) => Err(format!("the switch has {mac} on {ports:?}, not {other}")),
                Err(e) => Err(e),
            };
            let reply = reply_ttl(&lab, "inet", &v6(&lab, "a1")).map(drop);
            lab.exec(host, &["ip", "link", "set", &link, "up"])
                .map_err(|e| e.to_string())?;
            all([
                moved.map(drop),
                learned,
                reply,
                agents_in_sync(&lab, &CHASSIS),
            ])
        },
    );

    let failed = checks.report();
    lab.down().expect("lab down");
    assert!(failed.is_empty(), "failed checks: {failed:?}");
}
