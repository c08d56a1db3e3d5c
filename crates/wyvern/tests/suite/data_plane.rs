//! Data-plane liveness between chassis (issue 17): BFD on per-peer monitor ports decides whether
//! the other chassis send towards a chassis, not its agent's lease.
//!
//! * c1's agent frozen (SIGSTOP) for 15 s, beyond its 10 s lease: VMs on c2 and c3 ping a VM on
//!   c1 throughout and lose nothing; meanwhile `GET /wyvern/v1/chassis` shows c1 with its agent
//!   down and its data plane up (as its peers' BFD sees it).
//! * c1's underlay link cut (the lab's underlay veth set down inside c1's namespace): within 3 s
//!   c2's and c3's monitor ports towards c1 say `forwarding=false` and their flows towards c1
//!   (those that set c1's address as the tunnel destination) are gone; the link back up: BFD up
//!   again, the flows and the pings return.

use std::thread;
use std::time::{Duration, Instant};

use lab::Lab;
use serde_json::Value;

use crate::support::restarts::{Pinger, in_sync, three_chassis, wait_for};

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

/// `column` of the monitor port on chassis `on` towards chassis `peer` (`ovs-vsctl --bare`,
/// quotes removed).
fn monitor(lab: &Lab, on: &str, peer: &str, column: &str) -> String {
    lab.chassis(on)
        .unwrap()
        .ovs_vsctl(&[
            "--bare",
            &format!("--columns={column}"),
            "find",
            "Interface",
            &format!("external_ids:wyvern-peer={peer}"),
        ])
        .unwrap_or_default()
        .replace('"', "")
}

/// Whether the BFD session of `on`'s monitor port towards `peer` is forwarding.
fn forwarding(lab: &Lab, on: &str, peer: &str) -> Option<bool> {
    let status = monitor(lab, on, peer, "bfd_status");
    if status.contains("forwarding=true") {
        Some(true)
    } else if status.contains("forwarding=false") {
        Some(false)
    } else {
        None
    }
}

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
