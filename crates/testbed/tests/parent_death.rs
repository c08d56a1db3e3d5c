//! A test run killed with SIGKILL leaves no OVS daemon behind: a chassis' `ovsdb-server` and
//! `ovs-vswitchd` die with the process that started them (`PR_SET_PDEATHSIG`), checked by PID
//! on a chassis started in a child process (this test binary again, running only
//! [`holds_a_chassis_until_killed`]) that is then killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testbed::{Chassis, ChassisOpts};

/// Set in the child's environment: only there does [`holds_a_chassis_until_killed`] run.
const CHILD: &str = "TESTBED_PARENT_DEATH_CHILD";

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The child's part: starts a chassis on a thread that then ends (the daemons must outlive
/// the thread that asked for them), prints the daemons' PIDs and waits to be killed.
#[test]
fn holds_a_chassis_until_killed() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let chassis = std::thread::spawn(|| Chassis::start("pd1", &ChassisOpts::default()).unwrap())
        .join()
        .unwrap();
    chassis.add_bridge("br-int").unwrap();
    println!(
        "PIDS {} {}",
        chassis.ovsdb_pid().unwrap(),
        chassis.vswitchd_pid().unwrap()
    );
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn ovs_daemons_die_with_a_killed_test_process() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holds_a_chassis_until_killed", "--nocapture"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // What a killed run leaves besides processes (namespace, run dir) carries the child's PID.
    let prefix = format!("{}{:x}", testbed::PREFIX, child.id());
    let mut pids = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("PIDS ") {
            pids = rest.split(' ').map(|p| p.parse::<u32>().unwrap()).collect();
            break;
        }
    }
    assert_eq!(pids.len(), 2, "the child printed no PIDs");
    for pid in &pids {
        assert!(alive(*pid), "daemon {pid} not running while its test runs");
    }
    child.kill().unwrap(); // SIGKILL: no destructor runs.
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<String> = pids
        .iter()
        .filter(|p| alive(**p))
        .map(|p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            format!(
                "{p}: {}",
                String::from_utf8_lossy(&cmdline).replace('\0', " ")
            )
        })
        .collect();
    // The namespace and run dir are left for `testbed-cleanup`; this test removes its own.
    testbed::leftovers::cleanup(&prefix);
    assert!(
        left.is_empty(),
        "daemons outlived their killed test: {left:?}"
    );
}
