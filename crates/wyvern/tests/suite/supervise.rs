//! `wyvern supervise` as the lab runs it, with harmless children (`sleep`, `sh`) in a temporary
//! directory: a child killed with SIGKILL or exiting is started again and the status file says
//! how it ended; SIGTERM stops the child and the supervisor (exit 0); SIGKILL of the supervisor
//! takes the child with it; bad arguments, a missing program and an unwritable status file are
//! refused with a message and a non-zero exit, without a panic.

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use lab::supervise::Supervision;

/// A hang guard, not an expectation: how long to wait for what must happen.
const HANG_GUARD: Duration = Duration::from_secs(30);

/// Polls `f` every 10 ms until it gives a value; panics naming `what` after [`HANG_GUARD`].
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let end = Instant::now() + HANG_GUARD;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < end, "no {what} after {HANG_GUARD:?}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// True while `pid` runs (a zombie counts as dead).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s[s.rfind(')')? + 1..].trim_start().starts_with('Z')))
        == Some(false)
}

/// Sends signal `sig` (`KILL`, `TERM`) to `pid`.
fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -s {sig} {pid}");
}

fn wyvern() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wyvern"))
}

/// A supervisor started in a temporary directory, its status file and log there.
struct Supervised {
    child: Child,
    status: PathBuf,
    dir: tempfile::TempDir,
}

impl Supervised {
    fn start(program: &[&str]) -> Supervised {
        let dir = tempfile::tempdir().expect("temporary directory");
        let status = dir.path().join("status.json");
        let log = std::fs::File::create(dir.path().join("log")).expect("log");
        let child = wyvern()
            .args(["supervise", "--status"])
            .arg(&status)
            .arg("--")
            .args(program)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("wyvern supervise");
        Supervised { child, status, dir }
    }

    fn status(&self) -> Option<Supervision> {
        Supervision::load(&self.status)
    }

    /// The running child's PID once the status file names one other than `not`.
    fn child_other_than(&self, not: Option<u32>) -> u32 {
        until("running child", || {
            self.status()?.pid.filter(|p| Some(*p) != not && alive(*p))
        })
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("log")).unwrap_or_default()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_killed_child_is_started_again_and_sigterm_stops_both() {
    let mut s = Supervised::start(&["sleep", "1000"]);
    let first = s.child_other_than(None);
    let st = s.status().expect("status");
    assert_eq!(
        (st.supervisor, st.restarts, &st.last_exit),
        (s.child.id(), 0, &None)
    );
    let cmdline = std::fs::read_to_string(format!("/proc/{first}/cmdline")).unwrap();
    assert_eq!(cmdline, "sleep\u{0}1000\u{0}");

    signal(first, "KILL");
    let second = s.child_other_than(Some(first));
    let st = s.status().expect("status");
    let exit = st.last_exit.expect("the end of the first child");
    assert_eq!(
        (st.restarts, exit.pid, exit.signal, exit.code),
        (1, first, Some(9), None)
    );
    assert!(
        s.log()
            .contains(&format!("sleep (pid {first}) killed by signal 9 (SIGKILL)")),
        "{}",
        s.log()
    );

    // SIGTERM: passed on to the child, whose end the supervisor waits for, then exits 0.
    signal(s.child.id(), "TERM");
    let code = until("supervisor exit", || s.child.try_wait().expect("wait"));
    assert_eq!(code.code(), Some(0), "{}", s.log());
    assert!(
        !alive(second),
        "the child outlived its supervisor's SIGTERM"
    );
    assert_eq!(s.status().expect("status").pid, None);
}

#[test]
fn a_child_that_exits_is_started_again_after_a_backoff() {
    let s = Supervised::start(&["sh", "-c", "exit 3"]);
    let st = until("two restarts", || s.status().filter(|st| st.restarts >= 2));
    let exit = st.last_exit.expect("an end");
    assert_eq!((exit.code, exit.signal), (Some(3), None));
    assert!(
        s.log().contains("exited with code 3") && s.log().contains("starting it again in"),
        "{}",
        s.log()
    );
}

#[test]
fn the_child_dies_with_a_killed_supervisor() {
    let mut s = Supervised::start(&["sleep", "1000"]);
    let child = s.child_other_than(None);
    s.child.kill().expect("SIGKILL the supervisor");
    s.child.wait().expect("reap the supervisor");
    until("the child's death", || (!alive(child)).then_some(()));
}

fn refused(out: &Output, says: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains(says), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_input_is_refused_without_a_panic() {
    let run = |args: &[&str]| wyvern().arg("supervise").args(args).output().unwrap();
    refused(
        &run(&["--backoff-max", "soon", "--", "true"]),
        "\"soon\" is not a number of seconds",
    );
    refused(&run(&[]), "PROGRAM");
    refused(
        &run(&["--", "/nonexistent/program"]),
        "start /nonexistent/program",
    );
    let dir = tempfile::tempdir().unwrap();
    let status = dir.path().join("missing").join("status.json");
    let marker = dir.path().join("started");
    let touch = format!("touch {}", marker.display());
    let out = run(&[
        "--status",
        status.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        &touch,
    ]);
    refused(&out, &status.display().to_string());
    assert!(!marker.exists(), "started a child without a status file");
}
