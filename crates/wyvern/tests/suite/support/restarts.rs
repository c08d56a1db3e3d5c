//! What the tests of agent restarts share: a lab of three (or more) chassis on one network, a steady ping
//! whose lost requests are counted, the flows of a chassis with their age (a flow deleted and
//! added again is younger), and waiting for a condition under a hang guard.

use std::collections::BTreeMap;
use std::thread;
use std::time::{Duration, Instant};

use lab::{Lab, Topology};

/// Lab `name`: chassis `c1`..`c3`, network `net` (10.0.0.0/24), and `vms` on it as
/// (name, chassis, address).
pub fn three_chassis(name: &str, vms: &[(&str, &str, &str)]) -> Topology {
    chassis_lab(name, 3, vms)
}

/// Lab `name`: chassis `c1`..`c<chassis>`, network `net` (10.0.0.0/24), and `vms` on it as
/// (name, chassis, address).
pub fn chassis_lab(name: &str, chassis: usize, vms: &[(&str, &str, &str)]) -> Topology {
    let mut text = format!("name = \"{name}\"\n");
    for c in 1..=chassis {
        text.push_str(&format!("[[chassis]]\nname = \"c{c}\"\n"));
    }
    text.push_str(
        "[[network]]\nname = \"net\"\nproject = \"alpha\"\n[[network.subnet]]\ncidr = \"10.0.0.0/24\"\n",
    );
    for (vm, chassis, ip) in vms {
        text.push_str(&format!(
            "[[vm]]\nname = \"{vm}\"\nnetwork = \"net\"\nchassis = \"{chassis}\"\nip = \"{ip}\"\n"
        ));
    }
    Topology::parse(&text, std::path::Path::new(&format!("{name}.toml"))).expect("valid topology")
}

/// Whether chassis `c`'s agent says it is in sync.
pub fn in_sync(lab: &Lab, c: &str) -> bool {
    lab.agent_metric(c, "wyvern_agent_in_sync") == Some(1.0)
}

/// A hang guard, not a time limit: how long the test waits for something that must happen (an
/// agent in sync, connectivity after a change) before it gives up.
pub const HANG_GUARD: Duration = Duration::from_secs(180);

/// Flows of chassis `c` (without statistics) with their age in seconds.
pub fn flows_with_age(lab: &Lab, c: &str) -> BTreeMap<String, f64> {
    let out = lab
        .chassis(c)
        .unwrap()
        .ovs_ofctl(&["-O", "OpenFlow13", "dump-flows", "br-int"])
        .unwrap();
    out.lines()
        .filter(|l| l.contains("table="))
        .map(|l| {
            let age = l
                .split("duration=")
                .nth(1)
                .and_then(|d| d.split('s').next())
                .and_then(|d| d.parse().ok())
                .unwrap_or(0.0);
            let key: Vec<&str> = l
                .split(", ")
                .filter(|p| {
                    !p.trim_start().starts_with("duration=")
                        && !p.starts_with("n_packets=")
                        && !p.starts_with("n_bytes=")
                })
                .collect();
            (key.join(", ").trim().to_string(), age)
        })
        .collect()
}

/// Waits until `ok` holds; fails only after [`HANG_GUARD`].
pub fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let started = Instant::now();
    while started.elapsed() < HANG_GUARD {
        if ok() {
            return;
        }
        thread::sleep(Duration::from_millis(100));
    }
    panic!("no {what} after {HANG_GUARD:?}");
}

/// How often a [`Pinger`] pings.
pub const PING_INTERVAL: Duration = Duration::from_millis(50);

/// A `ping` running in a VM until stopped, its output read as it comes.
pub struct Pinger {
    child: std::process::Child,
    replies: std::sync::mpsc::Receiver<u64>,
    seen: Vec<u64>,
}

impl Pinger {
    /// Pings `ip` from `vm` every [`PING_INTERVAL`].
    pub fn start(lab: &str, vm: &str, ip: &str) -> Pinger {
        use std::io::BufRead;
        let mut cmd = lab::exec_command(lab, vm).unwrap();
        let interval = format!("{:.3}", PING_INTERVAL.as_secs_f64());
        cmd.args(["ping", "-i", &interval, ip]);
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, replies) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                let seq = line
                    .split_whitespace()
                    .find_map(|w| w.strip_prefix("icmp_seq="))
                    .and_then(|n| n.parse().ok());
                if let Some(seq) = seq
                    && tx.send(seq).is_err()
                {
                    return;
                }
            }
        });
        Pinger {
            child,
            replies,
            seen: Vec::new(),
        }
    }

    /// Waits until `n` more replies came (fails after [`HANG_GUARD`]).
    pub fn more_replies(&mut self, n: usize, what: &str) {
        let want = self.seen.len() + n;
        let started = Instant::now();
        while self.seen.len() < want {
            let left = HANG_GUARD.saturating_sub(started.elapsed());
            match self.replies.recv_timeout(left) {
                Ok(seq) => self.seen.push(seq),
                Err(_) => panic!(
                    "{what}: {} of {n} replies; got {:?}",
                    self.seen.len(),
                    self.seen
                ),
            }
        }
    }

    /// Stops the pings; the requests lost between the first and the last reply (a request in flight
    /// when ping stops is not counted as lost: only gaps between replies are).
    pub fn stop(mut self) -> Vec<u64> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.seen.extend(self.replies.try_iter());
        self.seen.sort_unstable();
        self.seen.dedup();
        let (first, last) = (self.seen[0], self.seen[self.seen.len() - 1]);
        (first..=last)
            .filter(|s| self.seen.binary_search(s).is_err())
            .collect()
    }
}
