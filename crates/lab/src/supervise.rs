//! `wyvern supervise [--status FILE] [--backoff-max SECS] -- PROGRAM ARGS...`: runs a program
//! and starts it again whenever it ends, as a systemd unit with `Restart=always` would — what
//! the lab runs every chassis' agent under (on a real host, `dist/wyvern-agent.service` is the
//! supervisor).
//!
//! * A child that ended (exited, or was killed by a signal) is started again after a backoff:
//!   0.1 s the first time (a crashed agent must be back fast: its chassis' flows stay, but
//!   nothing follows the topology while it is away), doubling with every end in a row up to
//!   `--backoff-max` (default 30 s); a child that ran 60 s counts as healthy, and its end starts
//!   the series again.
//! * Every start and end is recorded in the status file ([`Supervision`], JSON, replaced
//!   atomically: written beside it, then renamed) and told on stderr (the lab's agent log).
//! * SIGTERM or SIGINT is passed on to the child; once the child has ended the supervisor exits
//!   with 0, without a restart. During a backoff it exits at once.
//! * The child dies with the supervisor (SIGKILL, `PR_SET_PDEATHSIG`): `kill -9` of the
//!   supervisor leaves no unsupervised child. The kernel sends that signal when the *thread*
//!   that started the child ends, so [`run`] starts children from the calling thread (a
//!   current-thread runtime): call it from the main thread.
//!
//! A program that cannot be started at all (not found, not executable) or a status file that
//! cannot be written is an error: the supervisor says so and exits non-zero.

use std::ffi::OsString;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::{Error, Result};

/// The first wait before a restart.
const FIRST_WAIT: Duration = Duration::from_millis(100);
/// A child that ran this long was healthy: the wait after its end is [`FIRST_WAIT`] again.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

/// `wyvern supervise` options.
#[derive(Debug, Clone, clap::Args)]
pub struct SuperviseArgs {
    /// Record the child's PID, its restarts and how it last ended in this file (JSON,
    /// replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub status: Option<PathBuf>,
    /// Longest wait before a restart, in seconds (the wait starts at 0.1 s and doubles with
    /// every end in a row; a child that ran 60 s starts the series again).
    #[arg(long, value_name = "SECS", default_value = "30", value_parser = parse_seconds)]
    pub backoff_max: Duration,
    /// The program and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "PROGRAM ARGS")]
    pub program: Vec<OsString>,
}

/// A number of seconds (fractions allowed), zero or more.
fn parse_seconds(s: &str) -> std::result::Result<Duration, String> {
    s.parse::<f64>()
        .ok()
        .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
        .ok_or_else(|| format!("{s:?} is not a number of seconds (zero or more)"))
}

/// How long to wait before each restart: [`FIRST_WAIT`], doubling with every end in a row up
/// to a maximum; a run of [`HEALTHY_RUN`] or more starts the series again.
#[derive(Debug, Clone)]
struct Backoff {
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Backoff {
        Backoff {
            max,
            next: FIRST_WAIT.min(max),
        }
    }

    /// The wait before starting again a child that ended after running for `ran`.
    fn after(&mut self, ran: Duration) -> Duration {
        if ran >= HEALTHY_RUN {
            self.next = FIRST_WAIT.min(self.max);
        }
        let wait = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        wait
    }
}

/// What a supervisor records in its status file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supervision {
    /// The supervisor's PID.
    pub supervisor: u32,
    /// The child's PID while it runs (`None` while the supervisor waits to start it again).
    pub pid: Option<u32>,
    /// How many times the child was started again.
    pub restarts: u64,
    /// How the child last ended, if it did.
    pub last_exit: Option<Exit>,
}

/// How a child ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    /// Its PID.
    pub pid: u32,
    /// When it ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// How long it had run, in milliseconds.
    pub ran_ms: u64,
    /// Its exit code, if it exited.
    pub code: Option<i32>,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

impl Supervision {
    /// The status recorded in `path`, if there is a readable one.
    pub fn load(path: &Path) -> Option<Supervision> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }

    /// Writes the status to `path` atomically (a file beside it, renamed over it).
    fn save(&self, path: &Path) -> Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let text = serde_json::to_vec(self).map_err(|error| Error::State {
            path: path.to_owned(),
            error,
        })?;
        std::fs::write(&tmp, text).map_err(io(format!("write {}", tmp.display())))?;
        std::fs::rename(&tmp, path).map_err(io(format!(
            "rename {} to {}",
            tmp.display(),
            path.display()
        )))
    }
}

impl Exit {
    fn new(pid: u32, status: ExitStatus, ran: Duration) -> Exit {
        Exit {
            pid,
            at_ms: now_ms(),
            ran_ms: u64::try_from(ran.as_millis()).unwrap_or(u64::MAX),
            code: status.code(),
            signal: status.signal(),
        }
    }

    /// How long ago it ended.
    pub fn ago(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.at_ms))
    }
}

/// `exited with code 1`, `killed by signal 9 (SIGKILL)`.
impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.code, self.signal) {
            (Some(code), _) => write!(f, "exited with code {code}"),
            (None, Some(sig)) => {
                let names = [
                    (libc::SIGHUP, "SIGHUP"),
                    (libc::SIGINT, "SIGINT"),
                    (libc::SIGQUIT, "SIGQUIT"),
                    (libc::SIGABRT, "SIGABRT"),
                    (libc::SIGKILL, "SIGKILL"),
                    (libc::SIGSEGV, "SIGSEGV"),
                    (libc::SIGPIPE, "SIGPIPE"),
                    (libc::SIGTERM, "SIGTERM"),
                ];
                write!(f, "killed by signal {sig}")?;
                match names.iter().find(|(n, _)| *n == sig) {
                    Some((_, name)) => write!(f, " ({name})"),
                    None => Ok(()),
                }
            }
            (None, None) => f.write_str("ended"),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |error| Error::Io { what, error }
}

/// Runs `args.program` under supervision until SIGTERM or SIGINT (see the module's
/// documentation). Call it from the main thread.
pub fn run(args: &SuperviseArgs) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(io("start a tokio runtime".into()))?
        .block_on(Supervisor::new(args).run())
}

/// One supervisor's program, status file and what it records.
struct Supervisor<'a> {
    args: &'a SuperviseArgs,
    status: Supervision,
}

impl Supervisor<'_> {
    fn new(args: &SuperviseArgs) -> Supervisor<'_> {
        Supervisor {
            args,
            status: Supervision {
                supervisor: std::process::id(),
                pid: None,
                restarts: 0,
                last_exit: None,
            },
        }
    }

    /// The program's name, for messages.
    fn program(&self) -> String {
        self.args.program[0].to_string_lossy().into_owned()
    }

    fn record(&self) -> Result<()> {
        match &self.args.status {
            Some(path) => self.status.save(path),
            None => Ok(()),
        }
    }

    /// Starts the child from this thread, tied to it (see the module's documentation).
    fn start(&self) -> Result<tokio::process::Child> {
        let mut cmd = std::process::Command::new(&self.args.program[0]);
        cmd.args(&self.args.program[1..]);
        testbed::die_with_parent(&mut cmd);
        tokio::process::Command::from(cmd)
            .spawn()
            .map_err(io(format!("start {}", self.program())))
    }

    async fn run(mut self) -> Result<()> {
        let signals = |kind, name: &str| signal(kind).map_err(io(format!("handle {name}")));
        let mut stop = Stop {
            term: signals(SignalKind::terminate(), "SIGTERM")?,
            int: signals(SignalKind::interrupt(), "SIGINT")?,
        };
        // A status file that cannot be written is found before anything starts.
        self.record()?;
        let mut backoff = Backoff::new(self.args.backoff_max);
        loop {
            let mut child = self.start()?;
            let started = Instant::now();
            let pid = child.id().unwrap_or_default();
            self.status.pid = Some(pid);
            self.record()?;
            let ended = tokio::select! {
                biased;
                sig = stop.next() => {
                    forward(pid, sig);
                    let ended = child.wait().await.map_err(io(format!("wait for {}", self.program())))?;
                    eprintln!("supervise: stopped; {} (pid {pid}) {}", self.program(), Exit::new(pid, ended, started.elapsed()));
                    self.status.pid = None;
                    return self.record();
                }
                ended = child.wait() => ended.map_err(io(format!("wait for {}", self.program())))?,
            };
            let ran = started.elapsed();
            let exit = Exit::new(pid, ended, ran);
            let wait = backoff.after(ran);
            eprintln!(
                "supervise: {} (pid {pid}) {exit} after {ran:.1?}; starting it again in {wait:?}",
                self.program()
            );
            self.status.pid = None;
            self.status.last_exit = Some(exit);
            self.record()?;
            tokio::select! {
                biased;
                _ = stop.next() => return Ok(()),
                () = tokio::time::sleep(wait) => {}
            }
            self.status.restarts += 1;
        }
    }
}

/// Sends `sig` to the child `pid` (not reaped yet, so the PID is still its own).
fn forward(pid: u32, sig: libc::c_int) {
    if let Ok(pid) = libc::pid_t::try_from(pid)
        && pid > 0
    {
        // SAFETY: kill(2) has no memory-safety preconditions; pid is positive (never a group).
        unsafe { libc::kill(pid, sig) };
    }
}

/// The signals that stop a supervisor.
struct Stop {
    term: Signal,
    int: Signal,
}

impl Stop {
    /// The next SIGTERM or SIGINT.
    async fn next(&mut self) -> libc::c_int {
        tokio::select! {
            _ = self.term.recv() => libc::SIGTERM,
            _ = self.int.recv() => libc::SIGINT,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn the_wait_doubles_up_to_the_maximum() {
        let mut b = Backoff::new(Duration::from_secs(1));
        let waits: Vec<Duration> = (0..6).map(|_| b.after(MS)).collect();
        let want = [100, 200, 400, 800, 1000, 1000].map(|ms| ms * MS);
        assert_eq!(waits, want);
    }

    #[test]
    fn a_healthy_run_starts_the_series_again() {
        let mut b = Backoff::new(Duration::from_secs(30));
        for _ in 0..5 {
            b.after(MS);
        }
        assert_eq!(b.after(HEALTHY_RUN - MS), 3200 * MS, "short of healthy");
        assert_eq!(b.after(HEALTHY_RUN), 100 * MS);
        assert_eq!(b.after(MS), 200 * MS);
    }

    #[test]
    fn a_maximum_below_the_first_wait_caps_it() {
        let mut b = Backoff::new(Duration::ZERO);
        assert_eq!(b.after(MS), Duration::ZERO);
        assert_eq!(b.after(HEALTHY_RUN), Duration::ZERO);
        let mut b = Backoff::new(50 * MS);
        assert_eq!([b.after(MS), b.after(MS)], [50 * MS, 50 * MS]);
    }

    #[test]
    fn seconds_parse_and_nonsense_is_refused() {
        assert_eq!(parse_seconds("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_seconds("0.25"), Ok(250 * MS));
        assert_eq!(parse_seconds("0"), Ok(Duration::ZERO));
        for bad in ["-1", "NaN", "inf", "", "10s", "1e400"] {
            let err = parse_seconds(bad).expect_err(bad);
            assert!(err.contains("not a number of seconds"), "{err}");
        }
    }

    #[test]
    fn exits_read_as_code_or_signal() {
        let exit = |code, signal| Exit {
            pid: 7,
            at_ms: 0,
            ran_ms: 0,
            code,
            signal,
        };
        assert_eq!(exit(Some(1), None).to_string(), "exited with code 1");
        assert_eq!(
            exit(None, Some(9)).to_string(),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(exit(None, Some(64)).to_string(), "killed by signal 64");
        let status = ExitStatus::from_raw(libc::SIGKILL);
        let e = Exit::new(7, status, Duration::from_millis(1500));
        assert_eq!((e.code, e.signal, e.ran_ms), (None, Some(9), 1500));
    }

    #[test]
    fn the_status_file_is_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("supervise-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("status.json");
        let mut s = Supervision {
            supervisor: 1,
            pid: Some(2),
            restarts: 0,
            last_exit: None,
        };
        s.save(&path).unwrap();
        assert_eq!(Supervision::load(&path), Some(s.clone()));
        s.restarts = 3;
        s.pid = None;
        s.save(&path).unwrap();
        assert_eq!(Supervision::load(&path), Some(s));
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, ["status.json"], "no temporary file left");
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Supervision::load(&path), None);
    }
}
