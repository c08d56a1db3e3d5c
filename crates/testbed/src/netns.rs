//! A network namespace that is deleted (with every process inside) when dropped.

use std::time::Duration;

use crate::cmd::{self, run};
use crate::{Result, names};

/// A network namespace owned by the test bed.
///
/// Dropping it kills every process still inside (by PID), then deletes the namespace, which
/// also removes its links, including the persistent tap devices of the userspace datapath.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace with a fresh unique name (see [`crate::unique_name`]), loopback up
    /// and IPv6 off (router solicitations and MLD reports are noise for flow-counter checks).
    pub fn create(kind: char) -> Result<Netns> {
        let name = names::unique_name(kind);
        run("ip", ["netns", "add", &name])?;
        // From here on, Drop removes it again if a later step fails.
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        Ok(ns)
    }

    /// The namespace's name (`ip netns list`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> args...`.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", all)
    }

    /// Runs a command inside the namespace (`ip netns exec`).
    pub fn exec(&self, args: &[&str]) -> Result<String> {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        run("ip", all)
    }

    /// PIDs of the processes running inside the namespace.
    pub fn pids(&self) -> Vec<u32> {
        pids_in(&self.name)
    }
}

/// PIDs of the processes inside namespace `name` (empty if it does not exist).
pub(crate) fn pids_in(name: &str) -> Vec<u32> {
    run("ip", ["netns", "pids", name])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Kills every process inside namespace `name`, then deletes it. Errors are ignored: this is
/// cleanup, and the leftover check reports whatever survived.
pub(crate) fn destroy(name: &str) {
    for pid in pids_in(name) {
        // Everything inside a namespace of ours is ours: the marker is the empty string.
        cmd::kill_pid(pid, "");
    }
    let gone = || {
        run("ip", ["netns", "list"])
            .map(|l| !l.lines().any(|x| x.split_whitespace().next() == Some(name)))
            .unwrap_or(false)
    };
    for _ in 0..3 {
        if run("ip", ["netns", "del", name]).is_ok() || gone() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(netns = name, "could not delete network namespace");
}

impl Drop for Netns {
    fn drop(&mut self) {
        destroy(&self.name);
    }
}
