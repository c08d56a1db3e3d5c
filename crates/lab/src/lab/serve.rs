//! The VMs' tiny servers (`serve` in the file): one `python3` process per VM, inside its
//! namespace (`ip netns exec`), running the script `serve.py` that the lab writes into its state
//! directory — so its command line names the state directory and `down` finds it, like every
//! process of the lab. It answers every HTTP request with status 200 and the body `<vm>\n`, and
//! every UDP datagram with `<vm>\n`, on each of the VM's `serve` ports. Its PID is in
//! `serve-<vm>.pid`, its log in `serve-<vm>.log`. `up` starts it once the VM is wired, keeps it
//! while it runs in the VM's namespace with the file's ports, and starts it again otherwise (a
//! VM wired afresh has a new namespace; deleting the old one killed the server).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use testbed::Daemon;

use super::{Lab, io, log_tail};
use crate::topology::{ServeSpec, Topology};
use crate::{Error, Result};

/// The server's script.
const SCRIPT: &str = include_str!("serve.py");
/// How long a server may take to listen on its ports.
const READY: Duration = Duration::from_secs(5);

/// The server's command-line arguments after the script: the VM's name, then `proto:port`s.
fn serve_args(vm: &str, serve: &[ServeSpec]) -> Vec<String> {
    std::iter::once(vm.to_owned())
        .chain(serve.iter().map(ToString::to_string))
        .collect()
}

/// Whether process `pid` is in network namespace `netns`.
fn in_netns(pid: u32, netns: &str) -> bool {
    Command::new("ip")
        .args(["netns", "identify", &pid.to_string()])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .any(|n| n == netns)
        })
}

impl Lab {
    fn serve_pidfile(&self, vm: &str) -> PathBuf {
        self.dir.join(format!("serve-{vm}.pid"))
    }

    /// PID of VM `vm`'s tiny server, if it runs.
    pub fn serve_pid(&self, vm: &str) -> Option<u32> {
        Daemon::running(&self.serve_pidfile(vm), &self.marker())
    }

    /// Runs every VM's tiny servers as the file says (after the VMs are wired), and stops
    /// those the file no longer has.
    pub(super) fn ensure_servers(
        &mut self,
        topo: &Topology,
        changes: &mut Vec<String>,
    ) -> Result<()> {
        let marker = self.marker();
        for vm in self.state.serve.keys().cloned().collect::<Vec<_>>() {
            if !topo.vms.iter().any(|v| v.name == vm && !v.serve.is_empty()) {
                Daemon::stop_pidfile(&self.serve_pidfile(&vm), &marker);
                self.state.serve.remove(&vm);
                self.changed(changes, &format!("vm {vm}"), "servers stopped");
            }
        }
        if topo.vms.iter().all(|v| v.serve.is_empty()) {
            return Ok(());
        }
        let script = self.dir.join("serve.py");
        if std::fs::read_to_string(&script).ok().as_deref() != Some(SCRIPT) {
            std::fs::write(&script, SCRIPT).map_err(io(format!("write {}", script.display())))?;
        }
        for vm in topo.vms.iter().filter(|v| !v.serve.is_empty()) {
            let what = format!("vm {}", vm.name);
            let netns = self
                .state
                .vms
                .get(&vm.name)
                .map(|v| v.netns.clone())
                .ok_or_else(|| Error::NotFound(format!("vm {} was not made", vm.name)))?;
            let pidfile = self.serve_pidfile(&vm.name);
            let listed: Vec<String> = vm.serve.iter().map(ToString::to_string).collect();
            let running = Daemon::find(&pidfile, &marker);
            if let Some(d) = running {
                if self.state.serve.get(&vm.name) == Some(&vm.serve) && in_netns(d.pid(), &netns) {
                    let pid = d.detach();
                    self.say(&what, &format!("serving {} (pid {pid})", listed.join(" ")));
                    continue;
                }
                // Dropping it stops it: other ports, or another namespace.
                drop(d);
            }
            let log = self.dir.join(format!("serve-{}.log", vm.name));
            // Only this start's lines count when waiting for "ready".
            let start = std::fs::metadata(&log).map_or(0, |m| m.len());
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", &netns, "python3", "-u"])
                .arg(&script)
                .args(serve_args(&vm.name, &vm.serve));
            let d = Daemon::spawn(cmd, &pidfile, &log, &marker)?;
            let end = Instant::now() + READY;
            loop {
                let text = std::fs::read(&log).unwrap_or_default();
                let new = String::from_utf8_lossy(text.get(start as usize..).unwrap_or_default())
                    .into_owned();
                if new.lines().any(|l| l.starts_with("ready")) {
                    break;
                }
                if !d.is_alive() || Instant::now() >= end {
                    drop(d);
                    return Err(Error::Start(format!(
                        "vm {}'s server ({}) did not start; {}",
                        vm.name,
                        listed.join(" "),
                        log_tail(&log)
                    )));
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let pid = d.detach();
            self.state.serve.insert(vm.name.clone(), vm.serve.clone());
            self.changed(
                changes,
                &what,
                &format!("serving {} (pid {pid})", listed.join(" ")),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::ServeProtocol;

    #[test]
    fn server_arguments() {
        let serve = [
            ServeSpec {
                protocol: ServeProtocol::Http,
                port: 8080,
            },
            ServeSpec {
                protocol: ServeProtocol::Udp,
                port: 5353,
            },
        ];
        assert_eq!(
            serve_args("web1", &serve),
            ["web1", "http:8080", "udp:5353"]
        );
        assert!(SCRIPT.contains("NAME + \"\\n\""));
    }
}
