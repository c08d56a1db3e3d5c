//! A supervised agent (issue 17): `kill -9` of chassis c1's agent while VMs on the two other
//! chassis ping two VMs on c1. The lab's supervisor starts the agent again (a new PID; the
//! status says one restart, after SIGKILL), the new agent converges without a flow-mod (the
//! flows of c1 are the same ones, none younger), and of 60 s of pings none is lost.

use std::thread;
use std::time::Duration;

use lab::Lab;

use crate::support::restarts::{Pinger, flows_with_age, in_sync, three_chassis, wait_for};

const CHASSIS: [&str; 3] = ["c1", "c2", "c3"];
/// From a VM on another chassis to a VM on c1, whose agent crashes.
const PINGS: [(&str, &str); 2] = [("y2", "10.0.0.11"), ("y3", "10.0.0.12")];
/// Replies each ping must get, at one request every 50 ms: 60 s of pings.
const REPLIES: usize = 1200;
/// Of those, the ones before the crash.
const BEFORE: usize = 20;
/// The VMs: two on c1, one on each other chassis.
const VMS: [(&str, &str, &str); 4] = [
    ("x1", "c1", "10.0.0.11"),
    ("x2", "c1", "10.0.0.12"),
    ("y2", "c2", "10.0.0.21"),
    ("y3", "c3", "10.0.0.31"),
];

#[test]
fn a_killed_agent_is_started_again_without_loss_or_flow_mods() {
    let _alone = crate::support::alone();
    let name = format!("sv{}", std::process::id() % 100_000);
    let mut lab =
        Lab::up(&three_chassis(&name, &VMS), &crate::support::lab_options()).expect("lab up");
    for c in CHASSIS {
        wait_for(&format!("{c}'s agent in sync"), || in_sync(&lab, c));
    }
    let mut pingers: Vec<Pinger> = PINGS
        .iter()
        .map(|(vm, ip)| Pinger::start(&name, vm, ip))
        .collect();
    for (p, (vm, ip)) in pingers.iter_mut().zip(PINGS) {
        p.more_replies(BEFORE, &format!("{vm} -> {ip} before the crash"));
    }
    // The baseline once c1's flows have settled: the same a second later.
    let mut before = flows_with_age(&lab, "c1");
    wait_for("c1's flows to settle", || {
        thread::sleep(Duration::from_secs(1));
        let now = flows_with_age(&lab, "c1");
        let settled = now.keys().eq(before.keys());
        before = now;
        settled
    });

    let crashed = lab.crash_agent("c1").expect("kill -9 c1's agent");
    wait_for("c1's agent started again", || {
        lab.agent_pid("c1").is_some_and(|p| p != crashed)
    });
    let sup = lab.agent_supervision("c1").expect("c1's agent supervised");
    let exit = sup.last_exit.clone().expect("how the agent ended");
    assert_eq!(
        (sup.restarts, exit.pid, exit.signal),
        (1, crashed, Some(9)),
        "{sup:?}"
    );
    let status = lab::status(&name).expect("status").to_string();
    let said = format!("(restarts 1, last: pid {crashed} killed by signal 9 (SIGKILL)");
    assert!(status.contains(&said), "{status}");
    wait_for("c1's restarted agent in sync", || in_sync(&lab, "c1"));

    for (p, (vm, ip)) in pingers.iter_mut().zip(PINGS) {
        p.more_replies(REPLIES - BEFORE, &format!("{vm} -> {ip} after the crash"));
    }
    for (p, (vm, ip)) in pingers.into_iter().zip(PINGS) {
        let lost = p.stop();
        assert!(lost.is_empty(), "{vm} -> {ip}: lost (icmp_seq) {lost:?}");
    }
    assert_eq!(
        lab.agent_metric("c1", "wyvern_agent_flow_mods_sent_total"),
        Some(0.0),
        "the restarted agent changed flows"
    );
    let after = flows_with_age(&lab, "c1");
    assert!(
        after.keys().eq(before.keys()),
        "c1's flows differ after the restart"
    );
    for (flow, age) in &before {
        assert!(after[flow] >= *age, "flow added again (younger): {flow}");
    }
    lab.down().expect("lab down");
}
