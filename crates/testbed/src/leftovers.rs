//! Finding and removing what test runs left behind (after a crash or SIGKILL).
//!
//! Only things carrying the test bed's name [`PREFIX`](crate::PREFIX) are considered:
//! network namespaces and root-namespace links named `<prefix>*`, directories `/tmp/<prefix>*`
//! and processes whose command line mentions such a directory.
//!
//! The building blocks ([`processes_mentioning`], [`stop_processes_mentioning`],
//! [`destroy_netns`]) also serve fixtures with names of their own (`wyvern lab down`).

use std::fmt;
use std::path::PathBuf;

use crate::cmd::{self, run};
use crate::netns;

/// One leftover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leftover {
    /// A network namespace.
    Netns(String),
    /// A link in the root namespace.
    Link(String),
    /// A run directory (or a file) in `/tmp`.
    Dir(PathBuf),
    /// A process (PID and command line).
    Process(u32, String),
}

impl fmt::Display for Leftover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Leftover::Netns(n) => write!(f, "netns {n}"),
            Leftover::Link(l) => write!(f, "link {l}"),
            Leftover::Dir(d) => write!(f, "dir {}", d.display()),
            Leftover::Process(p, c) => write!(f, "process {p}: {c}"),
        }
    }
}

/// Processes (PID, command line) other than this one whose command line contains `marker`.
pub fn processes_mentioning(marker: &str) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    if marker.is_empty() {
        return out;
    }
    if let Ok(rd) = std::fs::read_dir("/proc") {
        let me = std::process::id();
        for e in rd.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if pid == me || !cmd::alive(pid) {
                continue;
            }
            if let Some(c) = cmd::cmdline(pid)
                && c.contains(marker)
            {
                out.push((pid, c.trim().to_owned()));
            }
        }
    }
    out
}

/// Stops (SIGTERM, then SIGKILL) every process [`processes_mentioning`] `marker` lists, by
/// PID; returns what it stopped.
pub fn stop_processes_mentioning(marker: &str) -> Vec<(u32, String)> {
    let found = processes_mentioning(marker);
    for (pid, _) in &found {
        cmd::kill_pid(*pid, marker);
    }
    found
}

/// Kills every process inside network namespace `name` and deletes it (no error if it does
/// not exist).
pub fn destroy_netns(name: &str) {
    netns::destroy(name);
}

/// Lists everything named with `prefix`.
pub fn find(prefix: &str) -> Vec<Leftover> {
    if prefix.is_empty() {
        return Vec::new();
    }
    let mut out: Vec<Leftover> = processes_mentioning(&format!("/tmp/{prefix}"))
        .into_iter()
        .map(|(p, c)| Leftover::Process(p, c))
        .collect();
    for n in netns::list() {
        if n.starts_with(prefix) {
            out.push(Leftover::Netns(n));
        }
    }
    if let Ok(links) = run("ip", ["-o", "link", "show"]) {
        for l in links.lines() {
            // "<index>: <name>[@peer]: <flags> ..."
            if let Some(name) = l
                .split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n))
                && name.starts_with(prefix)
            {
                out.push(Leftover::Link(name.to_owned()));
            }
        }
    }
    if let Ok(rd) = std::fs::read_dir("/tmp") {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with(prefix) {
                out.push(Leftover::Dir(e.path()));
            }
        }
    }
    out
}

/// Removes everything [`find`] reports for `prefix`; returns what it found.
/// Do not run it while tests of that prefix are running.
pub fn cleanup(prefix: &str) -> Vec<Leftover> {
    let found = find(prefix);
    stop_processes_mentioning(&format!("/tmp/{prefix}"));
    for l in &found {
        match l {
            Leftover::Netns(n) => netns::destroy(n),
            Leftover::Link(n) => {
                if let Err(e) = run("ip", ["link", "del", n]) {
                    tracing::warn!("cannot delete link {n}: {e}");
                }
            }
            Leftover::Dir(d) => {
                // A plain file with the prefix (a log someone wrote there) goes too.
                let removed = if d.is_dir() {
                    std::fs::remove_dir_all(d)
                } else {
                    std::fs::remove_file(d)
                };
                if let Err(e) = removed {
                    tracing::warn!("cannot remove {}: {e}", d.display());
                }
            }
            Leftover::Process(..) => {}
        }
    }
    found
}
