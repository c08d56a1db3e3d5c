//! Packet captures in a lab's namespaces: what crossed an interface while something happened
//! (`tcpdump -l -n -e --immediate-mode`, link-level headers included, so VLAN tags show).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::{Error, Result, exec_command};

/// How long tcpdump may take to start listening.
const LISTENING: Duration = Duration::from_secs(5);
/// How long frames still in flight get before the capture stops.
const SETTLE: Duration = Duration::from_millis(300);

/// A running capture; [`Capture::stop`] (or dropping it) kills tcpdump by its PID.
#[derive(Debug)]
pub struct Capture {
    child: Child,
    frames: Option<JoinHandle<String>>,
}

impl Capture {
    /// Starts capturing on `iface` in the namespace of `host` of lab `lab` (a VM, chassis,
    /// external host or physical segment) with the pcap `filter` (e.g. `["vlan", "101"]`), and
    /// waits until tcpdump listens.
    pub fn start(lab: &str, host: &str, iface: &str, filter: &[&str]) -> Result<Capture> {
        let mut cmd = exec_command(lab, host)?;
        cmd.args(["tcpdump", "-l", "-n", "-e", "--immediate-mode", "-i", iface])
            .args(filter)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let what = format!("tcpdump on {iface} in {host}");
        let mut child = cmd.spawn().map_err(|error| Error::Io {
            what: format!("start {what}"),
            error,
        })?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let frames = stdout.map(|mut out| {
            thread::spawn(move || {
                let mut text = String::new();
                // A read error only ends the capture early: what was read is the answer.
                let _ = out.read_to_string(&mut text);
                text
            })
        });
        let (tx, rx) = mpsc::channel();
        if let Some(err) = stderr {
            thread::spawn(move || {
                let mut said = Vec::new();
                for line in BufReader::new(err).lines().map_while(std::io::Result::ok) {
                    let listening = line.starts_with("listening on");
                    said.push(line);
                    if listening {
                        let _ = tx.send(Ok(()));
                    }
                }
                let _ = tx.send(Err(said.join("\n")));
            });
        }
        let mut capture = Capture { child, frames };
        match rx.recv_timeout(LISTENING) {
            Ok(Ok(())) => Ok(capture),
            Ok(Err(said)) => Err(Error::Start(format!("{what} did not start: {said}"))),
            Err(_) => {
                capture.kill();
                Err(Error::Start(format!(
                    "{what} did not listen within {LISTENING:?}"
                )))
            }
        }
    }

    fn kill(&mut self) {
        // It may have ended by itself; either way it is reaped here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Gives frames in flight a moment, stops the capture and returns the frames it printed,
    /// one a line.
    pub fn stop(mut self) -> Vec<String> {
        thread::sleep(SETTLE);
        self.kill();
        let text = self
            .frames
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.kill();
    }
}
