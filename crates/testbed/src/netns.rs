//! A network namespace that is deleted (with every process inside) when dropped, unless it
//! was detached to outlive this process.

use std::time::Duration;

use crate::cmd::{self, run};
use crate::{Error, Result, names};

/// A network namespace owned by the test bed.
///
/// Dropping it kills every process still inside (by PID), then deletes the namespace, which
/// also removes its links, including the persistent tap devices of the userspace datapath.
#[derive(Debug)]
pub struct Netns {
    name: String,
    keep: bool,
}

impl Netns {
    /// Creates a namespace with a fresh unique name (see [`crate::unique_name`]), loopback up
    /// and IPv6 off (router solicitations and MLD reports are noise for flow-counter checks).
    pub fn create(kind: char) -> Result<Netns> {
        Netns::create_named(&names::unique_name(kind))
    }

    /// Creates a namespace called `name` (at most 64 of `[A-Za-z0-9._-]`, not starting with
    /// a dot), set up like [`Netns::create`]. Fails if it exists already.
    pub fn create_named(name: &str) -> Result<Netns> {
        check_name(name)?;
        run("ip", ["netns", "add", name])?;
        // From here on, Drop removes it again if a later step fails.
        let ns = Netns {
            name: name.to_owned(),
            keep: false,
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        ns.exec(&[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ])?;
        Ok(ns)
    }

    /// Takes charge of the existing namespace `name` (made by an earlier process); dropping
    /// the value deletes it as if it had been created here.
    pub fn adopt(name: &str) -> Result<Netns> {
        check_name(name)?;
        if !Netns::exists(name) {
            return Err(Error::Invalid(format!("no network namespace {name}")));
        }
        Ok(Netns {
            name: name.to_owned(),
            keep: false,
        })
    }

    /// True if a namespace called `name` exists.
    pub fn exists(name: &str) -> bool {
        list().iter().any(|n| n == name)
    }

    /// Leaves the namespace in place when the value is dropped (it outlives this process);
    /// returns its name. [`Netns::adopt`] takes charge of it again.
    pub fn detach(mut self) -> String {
        self.keep = true;
        std::mem::take(&mut self.name)
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

fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "namespace name {name:?} (at most 64 of [A-Za-z0-9._-])"
        )))
    }
}

/// Names of all network namespaces (`ip netns list`); empty if they cannot be listed.
pub fn list() -> Vec<String> {
    run("ip", ["netns", "list"])
        .map(|l| {
            l.lines()
                .filter_map(|x| x.split_whitespace().next())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
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
    for _ in 0..3 {
        if run("ip", ["netns", "del", name]).is_ok() || !Netns::exists(name) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    tracing::warn!(netns = name, "could not delete network namespace");
}

impl Drop for Netns {
    fn drop(&mut self) {
        if !self.keep {
            destroy(&self.name);
        }
    }
}

/// Runs `f` on a thread of its own that entered network namespace `name` (`setns(2)` on
/// `/var/run/netns/NAME`) and ends with `f`: the sockets `f` opens and the processes it starts
/// are in the namespace, without `ip netns exec` (a process, a mount namespace and a `/sys`
/// remount for each).
pub fn within<T: Send>(
    name: &str,
    f: impl FnOnce() -> std::io::Result<T> + Send,
) -> std::io::Result<T> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(format!("/var/run/netns/{name}"))?;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                // SAFETY: setns(2) on a descriptor that stays open for the call; it moves only
                // this thread, which ends when `f` returns.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                f()
            })
            .join()
            .unwrap_or_else(|_| {
                Err(std::io::Error::other(format!(
                    "the thread in {name} panicked"
                )))
            })
    })
}
