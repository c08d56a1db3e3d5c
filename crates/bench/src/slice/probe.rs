//! Probing a path with real packets from a lab host (a VM or an external host): a `ping` every
//! [`PING_INTERVAL`] whose first echo reply after a given moment ends a sample, and single pings
//! that say whether a path is open or cut. The router-interface and floating-IP phases use it.

use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use lab::Lab;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout};

/// `ping -i` of the probing ping (seconds).
const PING_INTERVAL: &str = "0.002";
/// How long the probing ping runs before a sample's call (so that its start is not measured).
const PING_LEAD: Duration = Duration::from_millis(50);

/// A `ping -D` every [`PING_INTERVAL`] from a lab host, killed (and reaped) when dropped.
pub(super) struct Ping {
    child: Child,
    lines: Lines<BufReader<ChildStdout>>,
}

impl Ping {
    /// Starts pinging `ip` from `host` and lets it run for [`PING_LEAD`].
    pub(super) async fn start(lab: &Lab, host: &str, ip: &str) -> anyhow::Result<Ping> {
        let mut cmd = lab::exec_command(lab.name(), host)?;
        // Line-buffered: ping's stdout is a pipe.
        cmd.args(["stdbuf", "-oL", "ping", "-n", "-D", "-i", PING_INTERVAL, ip]);
        let mut child = tokio::process::Command::from(cmd)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting ping")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("ping without stdout"))?;
        tokio::time::sleep(PING_LEAD).await;
        Ok(Ping {
            child,
            lines: BufReader::new(stdout).lines(),
        })
    }

    /// The first echo reply that arrived at or after `since` (its arrival and TTL), waiting at
    /// most `timeout`; the ping is stopped either way.
    pub(super) async fn first_reply(
        mut self,
        since: SystemTime,
        timeout: Duration,
    ) -> anyhow::Result<(SystemTime, Option<u8>)> {
        let lines = &mut self.lines;
        let first = async {
            while let Some(line) = lines.next_line().await? {
                if let Some((at, ttl)) = reply(&line)
                    && at >= since
                {
                    return Ok((at, ttl));
                }
            }
            Err(anyhow!("ping ended without a reply"))
        };
        let r = tokio::time::timeout(timeout, first).await;
        // Our own child, by its handle.
        self.child.start_kill().ok();
        self.child.wait().await.ok();
        r.map_err(|_| anyhow!("no echo reply within {timeout:?}"))?
    }
}

/// An echo reply line of `ping -D` (`[1733480000.123456] 64 bytes from …: icmp_seq=3 ttl=63
/// …`): when it arrived and its TTL.
fn reply(line: &str) -> Option<(SystemTime, Option<u8>)> {
    let (stamp, rest) = line.strip_prefix('[')?.split_once(']')?;
    if !rest.contains("bytes from") {
        return None;
    }
    let at = UNIX_EPOCH + Duration::try_from_secs_f64(stamp.parse().ok()?).ok()?;
    let ttl = rest
        .split_whitespace()
        .find_map(|w| w.strip_prefix("ttl="))
        .and_then(|t| t.parse().ok());
    Some((at, ttl))
}

/// Whether one ping from `host` to `ip` is answered within 200 ms.
pub(super) fn ping_once(lab: &Lab, host: &str, ip: &str) -> anyhow::Result<bool> {
    let out = tokio::task::block_in_place(|| lab.exec(host, &["ping", "-c1", "-W0.2", ip]))?;
    Ok(out.status.success())
}

/// Runs `args` in lab host `host`; an error if it fails.
pub(super) fn run_in(lab: &Lab, host: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::task::block_in_place(|| lab.exec(host, args))?;
    if !out.status.success() {
        bail!(
            "{args:?} in {host}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Makes `host` resend ARP for an unresolved neighbour on `dev` every 10 ms (the kernel allows
/// no less; its default is 1 s), so that a guest's retry does not hide the controller, and
/// forgets what it resolved so far.
pub(super) fn fast_arp(lab: &Lab, host: &str, dev: &str) -> anyhow::Result<()> {
    let sysctl = format!("net.ipv4.neigh.{dev}.retrans_time_ms=10");
    run_in(lab, host, &["sysctl", "-qw", &sysctl])?;
    forget_neighbours(lab, host, dev)
}

/// Flushes `host`'s neighbour cache on `dev`.
pub(super) fn forget_neighbours(lab: &Lab, host: &str, dev: &str) -> anyhow::Result<()> {
    run_in(lab, host, &["ip", "neigh", "flush", "dev", dev])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_replies_of_ping_d() {
        let line = "[1733480000.250000] 64 bytes from 10.100.0.5: icmp_seq=3 ttl=63 time=0.512 ms";
        let (at, ttl) = reply(line).unwrap();
        assert_eq!(at, UNIX_EPOCH + Duration::from_millis(1_733_480_000_250));
        assert_eq!(ttl, Some(63));
        assert!(
            reply("[1733480000.25] From 10.99.0.2 icmp_seq=1 Destination Host Unreachable")
                .is_none()
        );
        assert!(reply("PING 10.100.0.5 (10.100.0.5) 56(84) bytes of data.").is_none());
    }
}
