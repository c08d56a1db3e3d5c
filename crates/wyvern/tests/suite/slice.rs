//! End to end through the lab: 3 chassis with real Open vSwitch and agents, two projects each with a
//! network on the same CIDR, two VMs per chassis per network. Connectivity within a network,
//! isolation between them, anti-spoofing, moving a VM, an agent killed with -9 while traffic flows
//! (no loss, no flow re-added), and a server restart the agents resume from without a new snapshot.

use std::io::{Read, Write};
use std::path::Path;
use std::thread;
use std::time::Instant;

use lab::{Lab, LabOptions, Topology};

use crate::support::restarts::{HANG_GUARD, Pinger, flows_with_age, wait_for};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];

/// The topology; `moved` puts VM a1 on c2 instead of c1.
fn topology(name: &str, moved: bool) -> Topology {
    let mut text = format!(
        "name = \"{name}\"\n[underlay]\ncidr = \"172.31.44.0/24\"\n\
         [[chassis]]\nname = \"c1\"\n[[chassis]]\nname = \"c2\"\n[[chassis]]\nname = \"c3\"\n\
         [[network]]\nname = \"alpha\"\nproject = \"alpha\"\n[[network.subnet]]\ncidr = \"10.0.0.0/24\"\n\
         [[network]]\nname = \"beta\"\nproject = \"beta\"\n[[network.subnet]]\ncidr = \"10.0.0.0/24\"\n"
    );
    for (net, base) in [("alpha", 10), ("beta", 20)] {
        for (i, c) in CHASSIS.iter().enumerate() {
            for k in 0..2 {
                let n = i * 2 + k + 1;
                let chassis = if moved && net == "alpha" && n == 1 {
                    "c2"
                } else {
                    c
                };
                text.push_str(&format!(
                    "[[vm]]\nname = \"{}{n}\"\nnetwork = \"{net}\"\nchassis = \"{chassis}\"\nip = \"10.0.0.{}\"\n",
                    &net[..1],
                    base + n
                ));
            }
        }
    }
    Topology::parse(&text, Path::new("slice.toml")).expect("valid topology")
}

fn vms(net: &str) -> Vec<(String, String)> {
    let base = if net == "alpha" { 10 } else { 20 };
    (1..=6)
        .map(|n| (format!("{}{n}", &net[..1]), format!("10.0.0.{}", base + n)))
        .collect()
}

fn ping_once(lab: &Lab, vm: &str, ip: &str) -> bool {
    lab.exec(vm, &["ping", "-c", "1", "-W", "1", ip])
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Pings until one answer (the first packets to a new tunnel peer may be consumed by next-hop
/// resolution, and a change takes effect when the agents have applied it): whether one came
/// before [`HANG_GUARD`].
fn reaches(lab: &Lab, vm: &str, ip: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < HANG_GUARD {
        if ping_once(lab, vm, ip) {
            return true;
        }
    }
    false
}

/// A metric of chassis `c`'s agent, if its agent answers.
fn try_metric(lab: &Lab, c: &str, name: &str) -> Option<u64> {
    let url = lab.agent_metrics_url(c)?;
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    let mut stream = std::net::TcpStream::connect(&addr).ok()?;
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    body.lines()
        .find(|l| l.starts_with(name) && !l.starts_with('#'))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn metric(lab: &Lab, c: &str, name: &str) -> u64 {
    try_metric(lab, c, name).unwrap_or_else(|| panic!("no metric {name} from {c}'s agent"))
}

#[test]
fn three_chassis_two_projects() {
    let _alone = crate::support::alone();
    let name = format!("sl{}", std::process::id() % 100_000);
    let opts = LabOptions {
        wyvern: env!("CARGO_BIN_EXE_wyvern").into(),
        progress: false,
    };
    let mut lab = Lab::up(&topology(&name, false), &opts).expect("lab up");
    for c in CHASSIS {
        wait_for("agents in sync", || {
            try_metric(&lab, c, "wyvern_agent_in_sync") == Some(1)
        });
    }

    // Every same-network pair talks.
    for net in ["alpha", "beta"] {
        let vms = vms(net);
        for (a, _) in &vms {
            for (b, ip) in &vms {
                if a != b {
                    assert!(reaches(&lab, a, ip), "{a} cannot reach {b} ({ip}) on {net}");
                }
            }
        }
    }
    // No cross-network pair does (the networks share a CIDR; beta's addresses are .21-.26).
    thread::scope(|s| {
        for (a, _) in vms("alpha") {
            let lab = &lab;
            s.spawn(move || {
                for (b, ip) in vms("beta") {
                    assert!(!ping_once(lab, &a, &ip), "{a} (alpha) reached {b} (beta)");
                }
            });
        }
    });

    // A spoofed source address or MAC from a VM is dropped.
    lab.exec("a1", &["ip", "addr", "add", "10.0.0.99/24", "dev", "eth0"])
        .unwrap();
    assert!(
        !lab.exec(
            "a1",
            &["ping", "-c", "2", "-W", "1", "-I", "10.0.0.99", "10.0.0.13"]
        )
        .unwrap()
        .status
        .success(),
        "spoofed IP got through"
    );
    lab.exec("a1", &["ip", "addr", "del", "10.0.0.99/24", "dev", "eth0"])
        .unwrap();
    let mac = lab.vm("a1").unwrap().mac.clone();
    lab.exec(
        "a1",
        &["ip", "link", "set", "eth0", "address", "fa:16:3e:99:99:99"],
    )
    .unwrap();
    lab.exec("a1", &["ip", "neigh", "flush", "all"]).unwrap();
    assert!(
        !ping_once(&lab, "a1", "10.0.0.13") && !ping_once(&lab, "a1", "10.0.0.12"),
        "spoofed MAC got through"
    );
    lab.exec("a1", &["ip", "link", "set", "eth0", "address", &mac])
        .unwrap();
    assert!(reaches(&lab, "a1", "10.0.0.13"));

    // Moving a VM: its port is unbound on c1 and bound on c2; connectivity comes back.
    lab.converge(&topology(&name, true)).expect("move a1");
    assert_eq!(lab.vm("a1").unwrap().chassis, "c2");
    for ip in ["10.0.0.12", "10.0.0.13", "10.0.0.16"] {
        assert!(reaches(&lab, "a1", ip), "moved a1 cannot reach {ip}");
    }

    // Kill -9 the agent of c1 during a steady ping from a2 (c1) to a3 (c2): nothing is lost, and
    // after the restart no flow was deleted and re-added.
    // The pings span the whole outage, however long each step takes: replies before the kill,
    // while the agent is dead, and after the restarted one is in sync; none may be missing.
    assert!(reaches(&lab, "a2", "10.0.0.13"));
    let before = flows_with_age(&lab, "c1");
    let mut pinger = Pinger::start(&name, "a2", "10.0.0.13");
    pinger.more_replies(10, "pings before the kill");
    lab.kill_agent("c1").unwrap();
    pinger.more_replies(10, "pings while c1's agent is dead");
    lab.restart_agent("c1").unwrap();
    wait_for("c1's agent in sync again", || {
        try_metric(&lab, "c1", "wyvern_agent_in_sync") == Some(1)
    });
    pinger.more_replies(10, "pings after c1's agent is back in sync");
    let lost = pinger.stop();
    assert!(
        lost.is_empty(),
        "pings lost while the agent restarted (icmp_seq): {lost:?}"
    );
    assert_eq!(
        metric(&lab, "c1", "wyvern_agent_flow_mods_sent_total"),
        0,
        "the restarted agent changed flows"
    );
    let after = flows_with_age(&lab, "c1");
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "flows differ after the restart"
    );
    for (flow, age) in &before {
        assert!(
            after[flow] >= *age,
            "flow re-added (younger after the restart): {flow}"
        );
    }

    // A server restart: the agents resume their watch from their revision, without a snapshot.
    let snapshots: Vec<u64> = CHASSIS
        .iter()
        .map(|c| metric(&lab, c, "wyvern_agent_sync_snapshots_total"))
        .collect();
    let resumes: Vec<u64> = CHASSIS
        .iter()
        .map(|c| metric(&lab, c, "wyvern_agent_sync_resumes_total"))
        .collect();
    lab.stop("server-1").unwrap();
    lab.converge(&topology(&name, true)).expect("server back");
    // Every agent resumed its watch on the restarted server (a condition, not a pause).
    for (c, before) in CHASSIS.iter().zip(resumes) {
        wait_for(&format!("{c}'s agent resuming its watch"), || {
            try_metric(&lab, c, "wyvern_agent_sync_resumes_total").is_some_and(|n| n > before)
        });
    }
    // A change after the restart reaches the agents: a new VM on c3 talks to a2 on c1.
    let mut grown = topology(&name, true);
    let extra = Topology::parse("name = \"x\"\n[[chassis]]\nname = \"c3\"\n[[network]]\nname = \"alpha\"\n[[network.subnet]]\ncidr = \"10.0.0.0/24\"\n[[vm]]\nname = \"a7\"\nnetwork = \"alpha\"\nchassis = \"c3\"\nip = \"10.0.0.17\"\n", Path::new("x.toml")).unwrap();
    grown.vms.extend(extra.vms);
    lab.converge(&grown)
        .expect("new VM after the server restart");
    assert!(
        reaches(&lab, "a7", "10.0.0.12"),
        "new VM cannot reach a2 after the server restart"
    );
    for (c, before) in CHASSIS.iter().zip(snapshots) {
        assert_eq!(
            metric(&lab, c, "wyvern_agent_sync_snapshots_total"),
            before,
            "{c} took a fresh snapshot"
        );
    }
    lab.down().expect("lab down");
}
