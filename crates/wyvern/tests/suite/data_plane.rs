//! Data-plane liveness between chassis (issue 17): BFD on per-peer monitor ports decides whether
//! the other chassis send towards a chassis, not its agent's lease.
//!
//! Three chassis (each has a session with both others):
//! * c1's agent frozen (SIGSTOP) for 15 s, beyond its 10 s lease: VMs on c2 and c3 ping a VM on
//!   c1 throughout and lose nothing; meanwhile `GET /wyvern/v1/chassis` shows c1 with its agent
//!   down and its data plane up (as its peers' BFD sees it).
//! * c1's underlay link cut (the lab's underlay veth set down inside c1's namespace): within 3 s
//!   c2's and c3's monitor ports towards c1 say `forwarding=false` and their flows towards c1
//!   (those that set c1's address as the tunnel destination) are gone; the link back up: BFD up
//!   again, the flows and the pings return.
//!
//! Six chassis (each has sessions with its four neighbours on the ring, not with the fifth):
//!
//! * c1's underlay cut: the one chassis without a session towards c1 learns it from what c1's
//!   neighbours report and withdraws its flows towards c1 within the same 3 s, as do they; the
//!   link back: flows and pings return.

use std::thread;
use std::time::{Duration, Instant};

use lab::Lab;
use serde_json::Value;

use crate::support::restarts::{Pinger, chassis_lab, in_sync, three_chassis, wait_for};
use crate::support::{forwarding, monitor};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
/// From a VM on another chassis to the VM on c1.
const PINGS: [(&str, &str); 2] = [("y2", "10.0.0.11"), ("y3", "10.0.0.11")];
/// The VMs: one on each chassis.
const VMS: [(&str, &str, &str); 3] = [
    ("x1", "c1", "10.0.0.11"),
    ("y2", "c2", "10.0.0.21"),
    ("y3", "c3", "10.0.0.31"),
];
/// The budget from the cut to the peers no longer sending to c1.
const DETECTION: Duration = Duration::from_secs(3);

/// The flows of chassis `on` that send to tunnel address `ip`.
fn flows_towards(lab: &Lab, on: &str, ip: &str) -> usize {
    let out = lab
        .chassis(on)
        .unwrap()
        .ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-int"])
        .unwrap();
    let set = format!("set_field:{ip}->tun_dst");
    out.lines().filter(|l| l.contains(&set)).count()
}

/// `GET /wyvern/v1/chassis`, the entry of chassis `id`.
fn listed(lab: &Lab, id: &str) -> Value {
    let url = format!("{}/wyvern/v1/chassis", lab.server_url());
    let v: Value = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let r = reqwest::get(&url).await.expect("chassis list");
            r.json().await.expect("JSON")
        });
    v["chassis"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["id"] == id)
        .cloned()
        .unwrap_or(Value::Null)
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}

/// c1's data plane as `lab status` shows it, and the whole status as printed.
fn c1_in_lab_status(name: &str) -> (lab::DataPlane, String) {
    let status = lab::status(name).expect("lab status");
    let c1 = status
        .chassis
        .iter()
        .find(|c| c.name == "c1")
        .expect("c1 in lab status")
        .data_plane
        .clone();
    (c1, status.to_string())
}

#[test]
fn a_frozen_agent_keeps_its_chassis_reachable_and_a_cut_underlay_is_detected() {
    let _alone = crate::support::alone();
    let name = format!("dp{}", std::process::id() % 100_000);
    let lab = Lab::up(&three_chassis(&name, &VMS), &crate::support::lab_options()).expect("lab up");
    for c in CHASSIS {
        wait_for(&format!("{c}'s agent in sync"), || in_sync(&lab, c));
    }
    for on in ["c2", "c3"] {
        wait_for(&format!("{on}'s BFD towards c1 up"), || {
            forwarding(&lab, on, "c1") == Some(true)
        });
    }
    let c1_ip = monitor(&lab, "c2", "c1", "options")
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}'))
        .find_map(|kv| kv.strip_prefix("remote_ip=").map(str::to_string))
        .expect("c2's monitor port towards c1 names its address");

    assert!(
        flows_towards(&lab, "c2", &c1_ip) > 0,
        "c2 sends to c1 ({c1_ip}) before the freeze"
    );

    // (a) c1's agent frozen beyond its lease: nothing lost, agent down, data plane up.
    let mut pingers: Vec<Pinger> = PINGS
        .iter()
        .map(|(vm, ip)| Pinger::start(&name, vm, ip))
        .collect();
    for (p, (vm, ip)) in pingers.iter_mut().zip(PINGS) {
        p.more_replies(20, &format!("{vm} -> {ip} before the freeze"));
    }
    let agent = lab.agent_pid("c1").expect("c1's agent");
    signal(agent, "-STOP");
    let frozen = Instant::now();
    wait_for("c1's agent shown down with its data plane up", || {
        let c1 = listed(&lab, "c1");
        c1["agent"] == "down" && c1["data_plane"] == "up"
    });
    assert!(
        flows_towards(&lab, "c2", &c1_ip) > 0,
        "c2 still sends to c1"
    );
    let (c1, _) = c1_in_lab_status(&name);
    assert_eq!(c1.up, ["c2", "c3"], "{c1}");
    let left = Duration::from_secs(15).saturating_sub(frozen.elapsed());
    thread::sleep(left);
    signal(agent, "-CONT");
    wait_for("c1's agent up again", || {
        listed(&lab, "c1")["agent"] == "up"
    });
    for (p, (vm, ip)) in pingers.iter_mut().zip(PINGS) {
        p.more_replies(20, &format!("{vm} -> {ip} after the freeze"));
    }
    for (p, (vm, ip)) in pingers.into_iter().zip(PINGS) {
        let lost = p.stop();
        assert!(lost.is_empty(), "{vm} -> {ip}: lost (icmp_seq) {lost:?}");
    }

    // (b) c1's underlay cut: its peers stop sending to it within the budget.
    let link = "ul-c1";
    let cut = Instant::now();
    lab.exec("c1", &["ip", "link", "set", link, "down"])
        .expect("cut c1's underlay");
    let mut seen = None;
    while cut.elapsed() < Duration::from_secs(30) {
        let gone = ["c2", "c3"].iter().all(|on| {
            forwarding(&lab, on, "c1") == Some(false) && flows_towards(&lab, on, &c1_ip) == 0
        });
        if gone {
            seen = Some(cut.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let seen = seen.expect("c2 and c3 see c1's data plane down and withdraw their flows");
    println!("c2 and c3 stopped sending to c1 {seen:?} after its underlay was cut");
    assert!(seen <= DETECTION, "detected after {seen:?}");
    // c1 stays registered and its agent up (its lease goes through the management network).
    assert_eq!(listed(&lab, "c1")["agent"], "up");
    // `lab status` shows it: c1's data plane down as both peers' BFD sees it.
    let (c1, shown) = c1_in_lab_status(&name);
    assert_eq!(c1.down, ["c2", "c3"], "{c1}");
    assert!(shown.contains("data plane DOWN"), "{shown}");

    lab.exec("c1", &["ip", "link", "set", link, "up"])
        .expect("restore c1's underlay");
    for on in ["c2", "c3"] {
        wait_for(&format!("{on} sends to c1 again"), || {
            forwarding(&lab, on, "c1") == Some(true) && flows_towards(&lab, on, &c1_ip) > 0
        });
    }
    let mut again = Pinger::start(&name, "y2", "10.0.0.11");
    again.more_replies(10, "y2 -> x1 after the link returned");
    again.stop();
    lab.down().expect("lab down");
}

/// The chassis of a lab of `n` (named `c1`..) that have a monitor port towards `peer`.
fn watchers_of(lab: &Lab, n: usize, peer: &str) -> Vec<String> {
    (1..=n)
        .map(|i| format!("c{i}"))
        .filter(|c| c != peer && !monitor(lab, c, peer, "name").trim().is_empty())
        .collect()
}

#[test]
fn a_chassis_without_a_session_follows_what_the_neighbours_report() {
    const N: usize = 6;
    let _alone = crate::support::alone();
    let name = format!("dq{}", std::process::id() % 100_000);
    let ids: Vec<(String, String, String)> = (1..=N)
        .map(|i| {
            (
                format!("v{i}"),
                format!("c{i}"),
                format!("10.0.0.{}", 10 + i),
            )
        })
        .collect();
    let vms: Vec<(&str, &str, &str)> = ids
        .iter()
        .map(|(v, c, ip)| (v.as_str(), c.as_str(), ip.as_str()))
        .collect();
    let lab =
        Lab::up(&chassis_lab(&name, N, &vms), &crate::support::lab_options()).expect("lab up");
    for i in 1..=N {
        let c = format!("c{i}");
        wait_for(&format!("{c}'s agent in sync"), || in_sync(&lab, &c));
    }
    // Four sessions each: c1 has four neighbours, and one chassis has no session with it.
    for i in 1..=N {
        let c = format!("c{i}");
        let peers = (1..=N)
            .map(|j| format!("c{j}"))
            .filter(|p| *p != c && !monitor(&lab, &c, p, "name").trim().is_empty())
            .count();
        assert_eq!(peers, 4, "{c}'s BFD sessions");
    }
    let neighbours = watchers_of(&lab, N, "c1");
    assert_eq!(neighbours.len(), 4, "c1's neighbours: {neighbours:?}");
    let other = (2..=N)
        .map(|i| format!("c{i}"))
        .find(|c| !neighbours.contains(c))
        .expect("a chassis without a session towards c1");
    for on in &neighbours {
        wait_for(&format!("{on}'s BFD towards c1 up"), || {
            forwarding(&lab, on, "c1") == Some(true)
        });
    }
    wait_for("every neighbour's report of c1 up", || {
        listed(&lab, "c1")["data_plane_peers"]["up"] == 4
    });
    // A session that just came up still sends at 1 s until its poll sequence moves it to the
    // configured interval (RFC 5880 6.8.3): a cut then takes 3 s more to see. The steady state
    // is what is measured.
    thread::sleep(Duration::from_secs(3));
    let c1_ip = monitor(&lab, &neighbours[0], "c1", "options")
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | '{' | '}'))
        .find_map(|kv| kv.strip_prefix("remote_ip=").map(str::to_string))
        .expect("the monitor port towards c1 names its address");
    assert!(
        flows_towards(&lab, &other, &c1_ip) > 0,
        "{other} sends to c1 ({c1_ip}) before the cut"
    );
    let other_vm = format!("v{}", &other[1..]);
    let mut ping = Pinger::start(&name, &other_vm, "10.0.0.11");
    ping.more_replies(5, &format!("{other_vm} -> v1 before the cut"));
    drop(ping.stop());

    let cut = Instant::now();
    lab.exec("c1", &["ip", "link", "set", "ul-c1", "down"])
        .expect("cut c1's underlay");
    // When each chassis stopped sending to c1.
    let mut stopped: std::collections::BTreeMap<&str, Duration> = Default::default();
    while cut.elapsed() < Duration::from_secs(30) && stopped.len() < neighbours.len() + 1 {
        for on in neighbours.iter().chain([&other]) {
            if !stopped.contains_key(on.as_str()) && flows_towards(&lab, on, &c1_ip) == 0 {
                stopped.insert(on, cut.elapsed());
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    println!(
        "after c1's underlay was cut, stopped sending to c1 ({other}: no session): {stopped:?}"
    );
    assert_eq!(
        stopped.len(),
        neighbours.len() + 1,
        "every chassis stops sending to c1"
    );
    let seen = stopped.values().max().copied().unwrap_or_default();
    assert!(seen <= DETECTION, "detected after {seen:?}");
    // Every neighbour's report says so soon (the majority was enough to act on).
    wait_for("c1 shown down", || {
        listed(&lab, "c1")["data_plane"] == "down"
    });

    lab.exec("c1", &["ip", "link", "set", "ul-c1", "up"])
        .expect("restore c1's underlay");
    wait_for(&format!("{other} sends to c1 again"), || {
        flows_towards(&lab, &other, &c1_ip) > 0
    });
    let mut again = Pinger::start(&name, &other_vm, "10.0.0.11");
    again.more_replies(10, &format!("{other_vm} -> v1 after the link returned"));
    again.stop();
    lab.down().expect("lab down");
}
