//! Background processes (servers, agents) recorded in PID files, so that they can outlive the
//! process that started them and be found and stopped again later by another one.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::cmd;
use crate::{Error, Result};

/// A background process recorded in a PID file.
///
/// Only a process whose command line contains the daemon's *marker* (for example the path of
/// its state directory) is ever signalled, which guards against recycled PIDs. Dropping the
/// value stops the process (SIGTERM, then SIGKILL) and removes the PID file, unless it was
/// [detached](Daemon::detach).
#[derive(Debug)]
pub struct Daemon {
    pid: u32,
    pidfile: PathBuf,
    marker: String,
    keep: bool,
}

impl Daemon {
    /// Starts `cmd` in a process group of its own (so a terminal's signals for the starting
    /// process do not reach it), stdin from `/dev/null`, stdout and stderr appended to `log`,
    /// and writes its PID to `pidfile`. Its command line must contain `marker`.
    pub fn spawn(mut cmd: Command, pidfile: &Path, log: &Path, marker: &str) -> Result<Daemon> {
        use std::os::unix::process::CommandExt;

        let line = format!("{cmd:?}");
        if !line.contains(marker) {
            return Err(Error::Invalid(format!(
                "command {line} does not contain its marker {marker:?}"
            )));
        }
        let io = |what: String| move |source| Error::Io { what, source };
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("open {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("dup {}", log.display())))?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(|source| Error::Spawn { cmd: line, source })?;
        let d = Daemon {
            pid: child.id(),
            pidfile: pidfile.to_owned(),
            marker: marker.to_owned(),
            keep: false,
        };
        std::fs::write(pidfile, format!("{}\n", d.pid))
            .map_err(io(format!("write {}", pidfile.display())))?;
        // `spawn` returns once the child has let go of this process' memory, which is before
        // its exec has finished: until then its command line reads empty, and the process
        // could not be recognised as this daemon (by `find`, `running`, or when stopping it).
        // A hang guard, not an expectation: exec of a large binary on a loaded machine is slow.
        cmd::wait_until(Duration::from_secs(60), || {
            !cmd::alive(d.pid) || cmd::cmdline(d.pid).is_some_and(|c| c.contains(marker))
        });
        Ok(d)
    }

    /// The daemon recorded in `pidfile`, if that process is alive and its command line
    /// contains `marker`. Dropping the value stops it.
    pub fn find(pidfile: &Path, marker: &str) -> Option<Daemon> {
        let pid = cmd::read_pidfile(pidfile)?;
        cmd::alive_with_marker(pid, marker).then(|| Daemon {
            pid,
            pidfile: pidfile.to_owned(),
            marker: marker.to_owned(),
            keep: false,
        })
    }

    /// PID of the process recorded in `pidfile` if it is alive and ours (see
    /// [`Daemon::find`]); only looks.
    pub fn running(pidfile: &Path, marker: &str) -> Option<u32> {
        Daemon::find(pidfile, marker).map(Daemon::detach)
    }

    /// Stops the process recorded in `pidfile` if it is ours (see [`Daemon::find`]) and
    /// removes the PID file; true if a process was stopped.
    pub fn stop_pidfile(pidfile: &Path, marker: &str) -> bool {
        let found = Daemon::find(pidfile, marker);
        let stopped = found.is_some();
        drop(found);
        remove(pidfile);
        stopped
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// True while the process runs (a zombie counts as dead).
    pub fn is_alive(&self) -> bool {
        cmd::alive(self.pid)
    }

    /// Kills the process with SIGKILL at once (no chance to clean up, like a crash) and
    /// waits until it is dead; the PID file stays.
    pub fn kill(mut self) {
        self.keep = true;
        cmd::kill_pid_now(self.pid, &self.marker);
    }

    /// Leaves the process running when the value is dropped; returns its PID.
    pub fn detach(mut self) -> u32 {
        self.keep = true;
        self.pid
    }
}

fn remove(pidfile: &Path) {
    if let Err(e) = std::fs::remove_file(pidfile)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("cannot remove {}: {e}", pidfile.display());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.keep {
            cmd::kill_pid(self.pid, &self.marker);
            remove(&self.pidfile);
        }
    }
}
