//! What the end-to-end tests through the lab share: checks that all run and report at the end,
//! commands in VMs, pings, TCP servers and clients (busybox nc), the lab's API; and the lock that
//! runs the suite's tests one at a time ([`alone`]).

pub mod kube;
pub mod restarts;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::{Child, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, LabOptions};
use serde_json::Value;

/// One test of the suite at a time: every test takes this lock first and holds it to its end.
/// Each was a test binary of its own, and cargo runs test binaries one after the other, so each
/// had the machine to itself: their timings assume it (a failover within a second, no ping lost,
/// the times they print for the benchmarks, the fuzzer's request budget), and so does `wyvern
/// trace` without `--lab`, which picks the only lab that is up. In one binary the tests run in
/// threads of one process; the lock keeps them apart. A Tokio mutex, which the async tests hold
/// across awaits ([`alone_async`]); a test that panics releases it.
static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits until no other test of the suite runs; the others wait while the guard lives.
pub fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    ALONE.blocking_lock()
}

/// [`alone`] for an async test (a blocking wait must not run on the test's runtime).
pub async fn alone_async() -> tokio::sync::MutexGuard<'static, ()> {
    ALONE.lock().await
}

/// How many bytes the TCP servers send after their name (ping alone hides checksum faults).
pub const TCP_BYTES: usize = 200_000;

/// The lab runs this crate's `wyvern` binary, quietly.
pub fn lab_options() -> LabOptions {
    LabOptions {
        wyvern: env!("CARGO_BIN_EXE_wyvern").into(),
        progress: false,
    }
}

/// The outcome of one check: `Err` says what was wrong.
pub type Outcome = Result<(), String>;

/// Runs checks one after the other, each even when an earlier one failed, and reports them.
pub struct Checks {
    title: &'static str,
    results: Vec<(String, Outcome)>,
}

impl Checks {
    /// No checks yet; `title` names them in the report.
    pub fn new(title: &'static str) -> Checks {
        Checks {
            title,
            results: Vec::new(),
        }
    }

    pub fn run(&mut self, name: &str, check: impl FnOnce() -> Outcome) {
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(check)).unwrap_or_else(|panic| {
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(format!("panicked: {text}"))
        });
        let secs = started.elapsed().as_secs_f64();
        match &outcome {
            Ok(()) => println!("check {name} ... ok ({secs:.1} s)"),
            Err(why) => println!("check {name} ... FAILED ({secs:.1} s)\n    {why}"),
        }
        self.results.push((name.to_owned(), outcome));
    }

    /// Prints every outcome; the names of the failed checks.
    pub fn report(&self) -> Vec<String> {
        println!("\n{} checks:", self.title);
        for (name, outcome) in &self.results {
            match outcome {
                Ok(()) => println!("  ok      {name}"),
                Err(why) => println!("  FAILED  {name}: {why}"),
            }
        }
        let failed: Vec<String> = self
            .results
            .iter()
            .filter(|(_, o)| o.is_err())
            .map(|(n, _)| n.clone())
            .collect();
        println!(
            "{} checks: {} of {} ok",
            self.title,
            self.results.len() - failed.len(),
            self.results.len()
        );
        failed
    }
}

/// `Ok` if every outcome is, else their errors, one a line.
pub fn all(outcomes: impl IntoIterator<Item = Outcome>) -> Outcome {
    let errors: Vec<String> = outcomes.into_iter().filter_map(Result::err).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n    "))
    }
}

/// Runs `check` for every item, each in a thread of its own (pings wait on timeouts).
pub fn in_parallel<T: Send>(items: Vec<T>, check: impl Fn(T) -> Outcome + Sync) -> Outcome {
    let check = &check;
    all(thread::scope(|s| {
        let handles: Vec<_> = items
            .into_iter()
            .map(|i| s.spawn(move || check(i)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("a check thread panicked".into()))
            })
            .collect::<Vec<_>>()
    }))
}

/// Runs `args` in VM `vm`; (success, stdout).
pub fn run(lab: &Lab, vm: &str, args: &[&str]) -> (bool, String) {
    match lab.exec(vm, args) {
        Ok(o) => (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
        ),
        Err(e) => (false, e.to_string()),
    }
}

/// The first IPv6 address of VM `vm`'s port (the lab's view of its fixed IPs).
pub fn v6_of(lab: &Lab, vm: &str) -> Option<String> {
    lab.vm(vm)?
        .addresses
        .iter()
        .find(|a| a.contains(':'))
        .and_then(|a| a.split('/').next())
        .map(str::to_owned)
}

/// Like [`v6_of`], for a VM that must have one.
pub fn v6(lab: &Lab, vm: &str) -> String {
    v6_of(lab, vm).unwrap_or_else(|| panic!("{vm}'s port has no IPv6 address"))
}

/// One ping from `vm` to `ip`: the TTL (hop limit) of the answer, if one came within a second.
fn ping(lab: &Lab, vm: &str, ip: &str) -> Option<u32> {
    let (ok, out) = run(lab, vm, &["ping", "-c", "1", "-W", "1", ip]);
    if !ok {
        return None;
    }
    out.split("ttl=")
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The TTL of `to`'s answer to `from`, within three pings (the first packet to a new peer may
/// be spent on resolution).
pub fn reply_ttl(lab: &Lab, from: &str, to: &str) -> Result<u32, String> {
    (0..3)
        .find_map(|_| ping(lab, from, to))
        .ok_or_else(|| format!("{from} -> {to}: no answer"))
}

/// `from` gets no answer from `to` (two pings).
pub fn silent(lab: &Lab, from: &str, to: &str) -> Outcome {
    let (ok, _) = run(lab, from, &["ping", "-c", "2", "-i", "0.3", "-W", "1", to]);
    if ok {
        Err(format!("{from} -> {to}: answered, but must not"))
    } else {
        Ok(())
    }
}

/// Every agent of `chassis` reports that it is in sync with the server, within 30 s.
pub fn agents_in_sync(lab: &Lab, chassis: &[&str]) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    let behind = || {
        chassis
            .iter()
            .filter(|c| lab.agent_metric(c, "wyvern_agent_in_sync") != Some(1.0))
            .collect::<Vec<_>>()
    };
    while !behind().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    match behind().as_slice() {
        [] => Ok(()),
        late => Err(format!("not in sync after 30 s: {late:?}")),
    }
}

/// `column` of the monitor port on chassis `on` towards chassis `peer` (`ovs-vsctl --bare`,
/// quotes removed).
pub fn monitor(lab: &Lab, on: &str, peer: &str, column: &str) -> String {
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
pub fn forwarding(lab: &Lab, on: &str, peer: &str) -> Option<bool> {
    let status = monitor(lab, on, peer, "bfd_status");
    if status.contains("forwarding=true") {
        Some(true)
    } else if status.contains("forwarding=false") {
        Some(false)
    } else {
        None
    }
}

/// Waits (up to 30 s) until the BFD session of every pair of `chassis` is forwarding on both
/// ends: the steady state a test of a failure starts from.
pub fn sessions_up(lab: &Lab, chassis: &[&str]) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(30);
    let down = || {
        let mut down = Vec::new();
        for on in chassis {
            for peer in chassis.iter().filter(|p| *p != on) {
                if forwarding(lab, on, peer) != Some(true) {
                    down.push(format!("{on} -> {peer}"));
                }
            }
        }
        down
    };
    while !down().is_empty() && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(200));
    }
    match down().as_slice() {
        [] => Ok(()),
        late => Err(format!("BFD sessions not forwarding after 30 s: {late:?}")),
    }
}

/// TCP servers in VMs: each answers every connection with its VM's name and [`TCP_BYTES`]
/// bytes. Dropping the value stops them (tearing the lab down would, too).
pub struct Servers(Vec<Child>);

impl Servers {
    /// Starts a server in each VM on each port of `listeners` (VM, port) and waits until they
    /// listen.
    pub fn start(lab: &Lab, listeners: &[(&str, u16)]) -> Servers {
        let mut servers = Servers(Vec::new());
        for (vm, port) in listeners {
            let reply = format!("echo {vm}; head -c {TCP_BYTES} /dev/zero");
            let mut cmd = lab::exec_command(lab.name(), vm).expect("vm namespace");
            cmd.args([
                "busybox",
                "nc",
                "-ll",
                "-p",
                &port.to_string(),
                "-e",
                "sh",
                "-c",
                &reply,
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
            servers.0.push(cmd.spawn().expect("start busybox nc"));
        }
        for (vm, port) in listeners {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !run(lab, vm, &["ss", "-ltn"])
                .1
                .contains(&format!(":{port} "))
            {
                assert!(
                    Instant::now() < deadline,
                    "{vm}'s TCP server does not listen"
                );
                thread::sleep(Duration::from_millis(50));
            }
        }
        servers
    }
}

impl Drop for Servers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A TCP connection from `from` to `ip`:`port` gets the name of the VM `want` and all its bytes.
pub fn tcp_reaches(lab: &Lab, from: &str, ip: &str, port: u16, want: &str) -> Outcome {
    let port = port.to_string();
    let (_, out) = run(lab, from, &["busybox", "nc", "-w", "5", ip, &port]);
    let name = out.lines().next().unwrap_or("");
    let expected = want.len() + 1 + TCP_BYTES;
    if name == want && out.len() == expected {
        Ok(())
    } else {
        Err(format!(
            "{from} -> {ip}:{port}: got {name:?} and {} bytes, want {want:?} and {expected}",
            out.len()
        ))
    }
}

/// `METHOD /v2.0/<path>` on the lab's server as admin (with `body` as JSON unless it is null);
/// the status and body.
pub fn api(lab: &Lab, method: reqwest::Method, path: &str, body: &Value) -> (u16, String) {
    let url = format!("{}/v2.0/{path}", lab.server_url());
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let mut req = reqwest::Client::new().request(method, &url);
            if !body.is_null() {
                req = req.json(body);
            }
            let r = req.send().await.expect("API request");
            let status = r.status().as_u16();
            (status, r.text().await.unwrap_or_default())
        })
}

/// `Ok` if `program` is on this machine's PATH; else an error that fails the check needing it. A
/// missing tool fails, never skips: a skipped check is a line in captured output nobody reads,
/// and CI installs every tool (scripts/install-deps).
pub fn need(program: &str) -> Outcome {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if found {
        Ok(())
    } else {
        Err(format!(
            "`{program}` is not installed here: scripts/install-deps installs it"
        ))
    }
}
