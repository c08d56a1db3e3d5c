//! A test run killed with SIGKILL leaves no etcd behind: the members die with the process that
//! started them (`PR_SET_PDEATHSIG`), checked by PID on a cluster started in a child process
//! (this test binary again, running only [`holds_a_cluster_until_killed`]) that is then killed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use etcd_fixture::EtcdCluster;

/// Set in the child's environment: only there does [`holds_a_cluster_until_killed`] run.
const CHILD: &str = "ETCD_FIXTURE_PARENT_DEATH_CHILD";

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

/// The child's part: starts a cluster on a runtime whose worker threads then end (the members
/// must outlive the thread that started them), prints the members' PIDs and waits to be killed.
#[test]
fn holds_a_cluster_until_killed() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let cluster =
        runtime.block_on(async { tokio::spawn(EtcdCluster::start(3)).await.unwrap().unwrap() });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let pids = cluster.pids();
    assert_eq!(pids.len(), 3);
    assert!(
        pids.iter().all(|p| alive(*p)),
        "a member died with its thread"
    );
    println!("DIR {}", cluster.dir().display());
    println!(
        "PIDS {}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn members_die_with_a_killed_test_process() {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "holds_a_cluster_until_killed", "--nocapture"])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    let mut dir = None;
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(d) = line.strip_prefix("DIR ") {
            dir = Some(std::path::PathBuf::from(d));
        }
        if let Some(rest) = line.strip_prefix("PIDS ") {
            pids = rest.split(' ').map(|p| p.parse::<u32>().unwrap()).collect();
            break;
        }
    }
    assert_eq!(pids.len(), 3, "the child printed no PIDs");
    child.kill().unwrap(); // SIGKILL: no destructor runs.
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pids.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let left: Vec<u32> = pids.iter().copied().filter(|p| alive(*p)).collect();
    // The killed child could not remove its data directory.
    if let Some(d) = dir {
        let _ = std::fs::remove_dir_all(d);
    }
    for p in &left {
        // SAFETY: kill(2) has no memory-safety preconditions; the PID was a member's a moment
        // ago (this only tidies up after a failure).
        unsafe {
            libc::kill(*p as libc::pid_t, libc::SIGKILL);
        }
    }
    assert!(
        left.is_empty(),
        "etcd members outlived their killed test: {left:?}"
    );
}
