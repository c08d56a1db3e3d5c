//! Distributed routing end to end, with real packets through the lab: 3 chassis with Open vSwitch
//! and agents. Project alpha's router r1 joins three networks — `one` (IPv4), `two` (IPv4 and
//! IPv6, configured by the lab) and `three` (IPv4 and IPv6 by SLAAC) — with VMs on different
//! chassis, and has an extra route to a prefix behind VM `gw` (forwarding on, the prefix on a
//! dummy interface). Project beta has the same CIDRs and its own router r2; its `bthree` IPv6
//! subnet is stateless DHCPv6.
//!
//! Checked: every cross-subnet pair pings, IPv4 and IPv6, with a TTL one lower than on-link (63
//! against 64); `tracepath -n` shows the router's hop; every router interface answers from every
//! subnet; TCP crosses the router (busybox nc, 200 kB: ping alone hides checksum faults), also to
//! an address both projects use; beta routes on its own and is isolated from alpha; the extra
//! route carries traffic to the prefix behind gw, and goes when the file drops it; a SLAAC VM's
//! address is its port's fixed IPv6 address, from our router advertisements; a stateless DHCPv6
//! client gets the subnet's DNS servers; removing a router interface through the API cuts exactly
//! that subnet's routed traffic, and `lab up` puts it back (routing again within 20 s: the VMs'
//! neighbour entries for the old interface may have to expire first).
//!
//! Every check runs even when an earlier one failed; the test prints each outcome and fails at the
//! end if any check did. The lab is torn down in any case (dropping it does, also on a panic).

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, Topology};
use reqwest::Method;
use serde_json::json;

use crate::support;
use support::{
    Checks, Outcome, Servers, agents_in_sync, all, api, in_parallel, lab_options, need, reply_ttl,
    run, silent, tcp_reaches, v6, v6_of,
};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];

/// A VM of the test: name, network, chassis, IPv4 address, further TOML lines.
struct Vm {
    name: &'static str,
    net: &'static str,
    chassis: &'static str,
    ip: &'static str,
    extra: &'static str,
}

/// Alpha's VMs. Networks `two` and `three` are dual-stack: s1 configures IPv6 from router
/// advertisements, the others are given their port's IPv6 address by the lab (s2's too, so
/// that routed IPv6 is checked apart from SLAAC).
const ALPHA: [Vm; 7] = [
    Vm {
        name: "a1",
        net: "one",
        chassis: "c1",
        ip: "10.1.0.11",
        extra: "",
    },
    Vm {
        name: "a2",
        net: "one",
        chassis: "c2",
        ip: "10.1.0.12",
        extra: "",
    },
    Vm {
        name: "b1",
        net: "two",
        chassis: "c2",
        ip: "10.2.0.11",
        extra: "",
    },
    Vm {
        name: "b2",
        net: "two",
        chassis: "c3",
        ip: "10.2.0.12",
        extra: "",
    },
    Vm {
        name: "gw",
        net: "two",
        chassis: "c1",
        ip: "10.2.0.20",
        extra: "forwarding = true\nextra_addresses = [\"192.168.50.1/24\"]\n",
    },
    Vm {
        name: "s1",
        net: "three",
        chassis: "c3",
        ip: "10.3.0.11",
        extra: "ipv6 = \"slaac\"\n",
    },
    Vm {
        name: "s2",
        net: "three",
        chassis: "c1",
        ip: "10.3.0.12",
        extra: "",
    },
];

/// Beta's VMs: x1 has a1's address, x3 an address no alpha VM has.
const BETA: [Vm; 2] = [
    Vm {
        name: "x1",
        net: "bone",
        chassis: "c3",
        ip: "10.1.0.11",
        extra: "",
    },
    Vm {
        name: "x3",
        net: "bthree",
        chassis: "c1",
        ip: "10.3.0.21",
        extra: "ipv6 = \"slaac\"\n",
    },
];

/// Router r1's interface addresses (its subnets' gateways).
const R1_V4: [&str; 3] = ["10.1.0.1", "10.2.0.1", "10.3.0.1"];
const R1_V6: [&str; 2] = ["fd00:2::1", "fd00:3::1"];
/// An address in the prefix behind gw (on its dummy interface).
const BEHIND: &str = "192.168.50.1";
/// The DNS server of beta's stateless DHCPv6 subnet.
const DNS6: &str = "fd00:53::53";
/// Port of the VMs' TCP servers.
const TCP_PORT: u16 = 7000;

const NETWORKS: &str = r#"
[[network]]
name = "one"
project = "alpha"
[[network.subnet]]
name = "one-v4"
cidr = "10.1.0.0/24"
gateway = "10.1.0.1"

[[network]]
name = "two"
project = "alpha"
[[network.subnet]]
name = "two-v4"
cidr = "10.2.0.0/24"
gateway = "10.2.0.1"
[[network.subnet]]
name = "two-v6"
cidr = "fd00:2::/64"
gateway = "fd00:2::1"

[[network]]
name = "three"
project = "alpha"
[[network.subnet]]
name = "three-v4"
cidr = "10.3.0.0/24"
gateway = "10.3.0.1"
[[network.subnet]]
name = "three-v6"
cidr = "fd00:3::/64"
gateway = "fd00:3::1"
ipv6_ra_mode = "slaac"
ipv6_address_mode = "slaac"

[[network]]
name = "bone"
project = "beta"
[[network.subnet]]
name = "bone-v4"
cidr = "10.1.0.0/24"
gateway = "10.1.0.1"

[[network]]
name = "btwo"
project = "beta"
[[network.subnet]]
name = "btwo-v4"
cidr = "10.2.0.0/24"
gateway = "10.2.0.1"

[[network]]
name = "bthree"
project = "beta"
[[network.subnet]]
name = "bthree-v4"
cidr = "10.3.0.0/24"
gateway = "10.3.0.1"
[[network.subnet]]
name = "bthree-v6"
cidr = "fd00:3::/64"
gateway = "fd00:3::1"
ipv6_ra_mode = "dhcpv6-stateless"
ipv6_address_mode = "dhcpv6-stateless"
dns_nameservers = ["fd00:53::53"]

[[router]]
name = "r2"
project = "beta"
interfaces = ["bone-v4", "btwo-v4", "bthree-v4", "bthree-v6"]
"#;

/// The topology; `route` gives r1 its extra route to the prefix behind gw.
fn topology(name: &str, route: bool) -> Topology {
    let mut text = format!("name = \"{name}\"\n[underlay]\ncidr = \"172.31.45.0/24\"\n");
    for c in CHASSIS {
        text.push_str(&format!("[[chassis]]\nname = \"{c}\"\n"));
    }
    text.push_str(NETWORKS);
    let routes = if route {
        r#"[{ destination = "192.168.50.0/24", nexthop = "10.2.0.20" }]"#
    } else {
        "[]"
    };
    text.push_str(&format!(
        "[[router]]\nname = \"r1\"\nproject = \"alpha\"\n\
         interfaces = [\"one-v4\", \"two-v4\", \"two-v6\", \"three-v4\", \"three-v6\"]\n\
         routes = {routes}\n"
    ));
    for v in ALPHA.iter().chain(&BETA) {
        text.push_str(&format!(
            "[[vm]]\nname = \"{}\"\nnetwork = \"{}\"\nchassis = \"{}\"\nip = \"{}\"\n{}",
            v.name, v.net, v.chassis, v.ip, v.extra
        ));
    }
    Topology::parse(&text, Path::new("routing.toml")).expect("valid topology")
}

/// `from` reaches `to` and the answer's TTL is `ttl`.
fn answers_with_ttl(lab: &Lab, from: &str, to: &str, ttl: u32) -> Outcome {
    match reply_ttl(lab, from, to)? {
        t if t == ttl => Ok(()),
        t => Err(format!("{from} -> {to}: ttl={t}, want {ttl}")),
    }
}

/// Like [`answers_with_ttl`], trying for up to `wait` (a VM keeps a re-created router
/// interface's old MAC until its neighbour entry expires, 8 to 13 s here, unless the router
/// announces the new one, as the agents do); says how long it took when that was more than a
/// first try.
fn answers_within(lab: &Lab, from: &str, to: &str, ttl: u32, wait: Duration) -> Outcome {
    let started = Instant::now();
    loop {
        let outcome = answers_with_ttl(lab, from, to, ttl);
        let waited = started.elapsed();
        if outcome.is_ok() && waited > Duration::from_secs(3) {
            println!(
                "    ({from} -> {to} answered after {:.1} s)",
                waited.as_secs_f64()
            );
        }
        if outcome.is_ok() || waited > wait {
            return outcome;
        }
    }
}

/// Every pair of `vms` (name, address) on different subnets (the network names in `subnet`)
/// pings with TTL 63; one thread per source.
fn routed_pairs(lab: &Lab, vms: &[(&str, &str, String)]) -> Outcome {
    let sources: Vec<&(&str, &str, String)> = vms.iter().collect();
    in_parallel(sources, |(from, from_net, _)| {
        all(vms
            .iter()
            .filter(|(_, net, _)| net != from_net)
            .map(|(_, _, ip)| answers_with_ttl(lab, from, ip, 63)))
    })
}

/// Runs `tracepath -n` from `from` to `to`: hop 1 must be one of `router`'s addresses and hop 2
/// reach `to`.
fn traces_through(lab: &Lab, from: &str, to: &str, router: &[&str]) -> Outcome {
    let (_, out) = run(
        lab,
        from,
        &["timeout", "30", "tracepath", "-n", "-m", "4", to],
    );
    let addr = |s: &str| s.parse::<IpAddr>().ok();
    let hop = |n: &str| -> Vec<IpAddr> {
        out.lines()
            .filter_map(|l| l.trim_start().strip_prefix(&format!("{n}:")))
            .filter_map(|rest| addr(rest.split_whitespace().next()?))
            .collect()
    };
    let routers: Vec<IpAddr> = router.iter().filter_map(|r| addr(r)).collect();
    let first = hop("1");
    let reached = out.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("2:")
            && l.contains("reached")
            && l.split_whitespace().nth(1).and_then(addr) == addr(to)
    });
    if first.iter().any(|h| routers.contains(h)) && reached {
        Ok(())
    } else {
        Err(format!(
            "{from} -> {to}: want hop 1 one of {router:?}, hop 2 {to} reached; tracepath says:\n{out}"
        ))
    }
}

/// VM `vm`'s global IPv6 addresses on eth0 with their flags (`ip -o` lines).
fn global_v6(lab: &Lab, vm: &str) -> Vec<(IpAddr, String)> {
    let (_, out) = run(
        lab,
        vm,
        &[
            "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global",
        ],
    );
    out.lines()
        .filter_map(|l| {
            let a = l.split("inet6 ").nth(1)?.split('/').next()?.parse().ok()?;
            Some((a, l.to_owned()))
        })
        .collect()
}

/// VM `vm` (with `ipv6 = "slaac"`) configures its port's fixed IPv6 address from router
/// advertisements (within 20 s), with a default route from them.
fn slaac_address(lab: &Lab, vm: &str) -> Outcome {
    let want: IpAddr = v6_of(lab, vm)
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| format!("{vm}'s port has no IPv6 address"))?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let addrs = global_v6(lab, vm);
        let from_ra = addrs
            .iter()
            .any(|(a, l)| *a == want && l.contains("dynamic") && !l.contains("tentative"));
        let route = run(lab, vm, &["ip", "-6", "route", "show", "default"]).1;
        if from_ra && route.contains("proto ra") {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{vm}: want {want} from router advertisements and a default route from them; \
                 eth0 has {:?}, default route {route:?}",
                addrs.iter().map(|(_, l)| l).collect::<Vec<_>>()
            ));
        }
        thread::sleep(Duration::from_millis(250));
    }
}

/// Runs a stateless DHCPv6 client (ISC dhclient, `-6 -S`: Information-request) in VM `vm` for
/// at most 10 s; the DNS servers it was given (`new_dhcp6_name_servers`).
fn dhcpv6_dns_servers(lab: &Lab, vm: &str) -> Result<String, String> {
    let dir = lab.dir().join(format!("dhcp6-{vm}"));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let path = |f: &str| dir.join(f).display().to_string();
    let (script, out) = (path("script"), path("env"));
    std::fs::write(&script, format!("#!/bin/sh\nenv >> {out}\n")).map_err(|e| e.to_string())?;
    std::fs::write(path("conf"), "request dhcp6.name-servers;\n").map_err(|e| e.to_string())?;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let sh = format!(
        "dhclient -6 -S -d -sf {script} -lf {lease} -pf {pid} -cf {conf} eth0 >{log} 2>&1 & p=$!; \
         i=0; while [ $i -lt 100 ] && ! grep -q new_dhcp6_name_servers {out} 2>/dev/null; do \
         sleep 0.1; i=$((i+1)); done; kill $p; wait $p 2>/dev/null; \
         grep new_dhcp6_name_servers {out} || tail -5 {log}",
        lease = path("lease"),
        pid = path("pid"),
        conf = path("conf"),
        log = path("log"),
    );
    let (_, text) = run(lab, vm, &["sh", "-c", &sh]);
    if text.contains("new_dhcp6_name_servers=") {
        Ok(text)
    } else {
        Err(format!(
            "{vm}: no DNS servers from DHCPv6; dhclient says:\n{text}"
        ))
    }
}

/// The API id of the lab's subnet `name`.
fn subnet_id(lab: &Lab, name: &str) -> String {
    lab.state()
        .networks
        .values()
        .flat_map(|n| &n.subnets)
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no subnet {name}"))
        .id
        .clone()
}

#[test]
fn distributed_routing() {
    let _alone = support::alone();
    let name = format!("rt{}", std::process::id() % 100_000);
    // Dropping the lab tears it down, also when the test panics.
    let mut lab = Lab::up(&topology(&name, true), &lab_options()).expect("lab up");
    let mut checks = Checks::new("routing");

    checks.run("agents in sync", || agents_in_sync(&lab, &CHASSIS));
    // The SLAAC VMs solicited when their ports were plugged, maybe before the flows existed:
    // they solicit again now, as VMs booting on a ready network would.
    for vm in ["s1", "x3"] {
        lab.restart_slaac(vm).expect("restart SLAAC");
    }

    checks.run(
        "SLAAC: s1 and x3 get their ports' IPv6 addresses from our RAs",
        || all(["s1", "x3"].map(|vm| slaac_address(&lab, vm))),
    );

    checks.run(
        "on-link pings: ttl 64 (IPv4 a1 -> a2, IPv6 b1 -> b2)",
        || {
            all([
                answers_with_ttl(&lab, "a1", "10.1.0.12", 64),
                answers_with_ttl(&lab, "b1", &v6(&lab, "b2"), 64),
            ])
        },
    );

    let alpha_v4: Vec<(&str, &str, String)> = ALPHA
        .iter()
        .map(|v| (v.name, v.net, v.ip.to_owned()))
        .collect();
    checks.run("every cross-subnet pair pings, IPv4, ttl 63", || {
        routed_pairs(&lab, &alpha_v4)
    });
    checks.run("every cross-subnet pair pings, IPv6, hop limit 63", || {
        let alpha_v6: Vec<(&str, &str, String)> = ALPHA
            .iter()
            .filter(|v| v.net != "one")
            .map(|v| (v.name, v.net, v6(&lab, v.name)))
            .collect();
        routed_pairs(&lab, &alpha_v6)
    });

    checks.run("every router interface answers from every subnet", || {
        let mut probes: Vec<(&str, String)> = Vec::new();
        for from in ["a1", "b1", "s2"] {
            probes.extend(R1_V4.iter().map(|r| (from, (*r).to_owned())));
        }
        for from in ["b1", "s2"] {
            probes.extend(R1_V6.iter().map(|r| (from, (*r).to_owned())));
        }
        in_parallel(probes, |(from, to)| reply_ttl(&lab, from, &to).map(drop))
    });

    checks.run("tracepath -n shows the router hop (IPv4 and IPv6)", || {
        all([
            traces_through(&lab, "a1", "10.3.0.11", &R1_V4),
            traces_through(&lab, "b1", &v6(&lab, "s2"), &R1_V6),
        ])
    });

    let servers = Servers::start(
        &lab,
        &[("a1", TCP_PORT), ("s2", TCP_PORT), ("x1", TCP_PORT)],
    );
    checks.run(
        "TCP across the router (busybox nc, 200 kB; IPv4 and IPv6)",
        || {
            all([
                tcp_reaches(&lab, "b1", "10.1.0.11", TCP_PORT, "a1"),
                tcp_reaches(&lab, "a1", "10.3.0.12", TCP_PORT, "s2"),
                tcp_reaches(&lab, "b2", &v6(&lab, "s2"), TCP_PORT, "s2"),
            ])
        },
    );

    checks.run(
        "beta routes on its own router (x3 -> x1, TCP to its own 10.1.0.11)",
        || {
            all([
                answers_with_ttl(&lab, "x3", "10.1.0.11", 63),
                tcp_reaches(&lab, "x3", "10.1.0.11", TCP_PORT, "x1"),
            ])
        },
    );
    checks.run("beta and alpha are isolated (no ping across)", || {
        let mut probes: Vec<(&str, String)> = ["a1", "b1", "s1"]
            .iter()
            .map(|from| (*from, "10.3.0.21".to_owned()))
            .collect();
        probes.extend(
            ["10.1.0.12", "10.2.0.11", "10.2.0.20", "10.3.0.11"]
                .iter()
                .map(|to| ("x1", (*to).to_owned())),
        );
        probes.extend([
            ("x3", v6(&lab, "b1")),
            ("b1", v6(&lab, "x3")),
            ("s2", v6(&lab, "x3")),
        ]);
        in_parallel(probes, |(from, to)| silent(&lab, from, &to))
    });
    drop(servers);

    checks.run(
        "the extra route reaches the prefix behind gw, until the file drops it",
        || {
            all([
                answers_with_ttl(&lab, "a1", BEHIND, 63),
                answers_with_ttl(&lab, "s1", BEHIND, 63),
            ])?;
            let changes = lab
                .converge(&topology(&name, false))
                .map_err(|e| e.to_string())?;
            if changes != ["router r1: routes set (none)"] {
                return Err(format!("dropping the route changed {changes:?}"));
            }
            thread::sleep(Duration::from_secs(1));
            let gone = silent(&lab, "a1", BEHIND);
            let changes = lab
                .converge(&topology(&name, true))
                .map_err(|e| e.to_string())?;
            if changes != ["router r1: routes set (192.168.50.0/24 via 10.2.0.20)"] {
                return Err(format!("restoring the route changed {changes:?}"));
            }
            all([gone, answers_with_ttl(&lab, "a1", BEHIND, 63)])
        },
    );

    // busybox has no DHCPv6 client (udhcpc6): isc-dhcp-client's dhclient -6 is needed.
    checks.run(
        "stateless DHCPv6 (dhclient -6 -S) gives x3 the subnet's DNS servers",
        || {
            need("dhclient")?;
            let got = dhcpv6_dns_servers(&lab, "x3")?;
            if got.contains(DNS6) {
                Ok(())
            } else {
                Err(format!("want {DNS6}; got {got}"))
            }
        },
    );

    checks.run(
        "removing a router interface cuts exactly that subnet; up restores it",
        || {
            let r1 = lab.state().routers["r1"].id.clone();
            let body = json!({ "subnet_id": subnet_id(&lab, "one-v4") });
            let (status, text) = api(
                &lab,
                Method::PUT,
                &format!("routers/{r1}/remove_router_interface"),
                &body,
            );
            if status != 200 {
                return Err(format!("remove_router_interface: {status} {text}"));
            }
            thread::sleep(Duration::from_secs(1));
            let cut = all([
                silent(&lab, "a1", "10.2.0.11"),
                silent(&lab, "b1", "10.1.0.11"),
                silent(&lab, "s1", "10.1.0.12"),
                silent(&lab, "a1", "10.1.0.1"),
            ]);
            let kept = all([
                answers_with_ttl(&lab, "a1", "10.1.0.12", 64),
                answers_with_ttl(&lab, "b1", "10.3.0.11", 63),
                answers_with_ttl(&lab, "s1", "10.2.0.12", 63),
                answers_with_ttl(&lab, "s2", &v6(&lab, "b2"), 63),
            ]);
            let changes = lab
                .converge(&topology(&name, true))
                .map_err(|e| e.to_string())?;
            let restored = if changes == ["router r1: interface on one-v4 added"] {
                // Announced by the agents: well before the VMs' neighbour entries expire.
                let wait = Duration::from_secs(5);
                all([
                    answers_within(&lab, "a1", "10.2.0.11", 63, wait),
                    answers_within(&lab, "b1", "10.1.0.12", 63, wait),
                ])
            } else {
                Err(format!("up after the removal changed {changes:?}"))
            };
            all([cut, kept, restored])
        },
    );

    let failed = checks.report();
    lab.down().expect("lab down");
    assert!(failed.is_empty(), "failed checks: {failed:?}");
}
