//! Running helper commands and stopping processes by PID.

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::{Error, Result};

/// Runs `program args...`, returns its stdout; a non-zero exit is an error carrying stderr.
pub(crate) fn run<I, S>(program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut c = Command::new(program);
    c.args(args);
    output(&mut c)
}

/// Runs a prepared command, returns its stdout; a non-zero exit is an error carrying stderr.
pub(crate) fn output(c: &mut Command) -> Result<String> {
    let line = describe(c);
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|source| Error::Spawn {
            cmd: line.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            cmd: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// True if the process exists and is not a zombie (dead daemons wait for PID 1 to reap them).
pub(crate) fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state follows the parenthesised command name, which may itself hold spaces.
        Ok(stat) => match stat.rfind(')') {
            Some(i) => !stat[i + 1..].trim_start().starts_with('Z'),
            None => false,
        },
        Err(_) => false,
    }
}

/// The command line of `pid` with NULs turned into spaces, if the process exists.
pub(crate) fn cmdline(pid: u32) -> Option<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .ok()
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
}

fn signal(pid: u32, sig: libc::c_int) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    if p > 0 {
        // SAFETY: kill(2) has no memory-safety preconditions; p is a positive PID.
        unsafe {
            libc::kill(p, sig);
        }
    }
}

/// Waits until `pid` is dead (or a zombie); true if it died within `timeout`.
pub(crate) fn wait_dead(pid: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
    true
}

/// True if `pid` runs (not a zombie) and its command line contains `marker`: a process of
/// ours, not another that got a recycled PID.
pub fn alive_with_marker(pid: u32, marker: &str) -> bool {
    alive(pid) && cmdline(pid).is_some_and(|c| c.contains(marker))
}

/// Stops `pid` with SIGTERM, then SIGKILL, but only while its command line contains `marker`
/// (guards against a recycled PID). Returns once the process is dead, and reaped if it is
/// our child (see [`become_subreaper`]).
pub(crate) fn kill_pid(pid: u32, marker: &str) {
    if alive_with_marker(pid, marker) {
        signal(pid, libc::SIGTERM);
        if !wait_dead(pid, Duration::from_secs(3))
            && cmdline(pid).is_some_and(|c| c.contains(marker))
        {
            signal(pid, libc::SIGKILL);
            wait_dead(pid, Duration::from_secs(3));
        }
    }
    reap(pid);
}

/// Kills `pid` with SIGKILL at once if its command line contains `marker` (like a crash),
/// waits until it is dead and reaps it if it is our child.
pub fn kill_pid_now(pid: u32, marker: &str) {
    if alive_with_marker(pid, marker) {
        signal(pid, libc::SIGKILL);
        wait_dead(pid, Duration::from_secs(3));
    }
    reap(pid);
}

/// Makes this process the reaper of its orphaned descendants, so daemons started with
/// `--detach` become our children and are reaped at once when stopped, instead of lingering
/// as zombies until PID 1 (slow here) collects them.
pub(crate) fn become_subreaper() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER, 1) takes no pointers and only sets a flag.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong) };
        if r != 0 {
            tracing::debug!(
                "PR_SET_CHILD_SUBREAPER: {}",
                std::io::Error::last_os_error()
            );
        }
    });
}

/// Collects the exit status of `pid` if it is a child of ours that has exited (or does so
/// within a second); returns at once if it is not our child.
fn reap(pid: u32) {
    let Ok(p) = libc::pid_t::try_from(pid) else {
        return;
    };
    for _ in 0..100 {
        let mut status = 0;
        // SAFETY: waitpid(2) writes only to `status`, a valid local.
        let r = unsafe { libc::waitpid(p, &mut status, libc::WNOHANG) };
        if r != 0 {
            // Reaped, or not our child (ECHILD).
            return;
        }
        sleep(Duration::from_millis(10));
    }
}

/// Reads a daemon's pidfile.
pub(crate) fn read_pidfile(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Polls `f` every 10 ms until it returns true or `timeout` passes.
pub(crate) fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        sleep(Duration::from_millis(10));
    }
}

/// A request to the spawner thread: the command, and where its answer goes.
type SpawnRequest = (
    Command,
    std::sync::mpsc::Sender<std::io::Result<std::process::Child>>,
);

/// Starts `cmd` as a child that the kernel kills (SIGKILL) as soon as this process ends, however
/// it ends (a test run killed with SIGKILL included): `PR_SET_PDEATHSIG` in the child.
///
/// The kernel sends that signal when the *thread* that forked the child exits, not the process,
/// so the fork happens on a thread of the test bed's own that lives as long as the process (a
/// test's thread, or a tokio worker, may end while the fixture it made lives on). The signal
/// survives `execve` (`ip netns exec` and `env` exec in place, so it reaches the daemon).
pub fn spawn_tied(cmd: Command) -> std::io::Result<std::process::Child> {
    use std::sync::mpsc;
    static SPAWNER: std::sync::OnceLock<std::sync::Mutex<mpsc::Sender<SpawnRequest>>> =
        std::sync::OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("testbed-spawner".into())
            .spawn(move || {
                // The sender lives in a static: this loop (and the thread) ends only with the
                // process.
                for (mut cmd, answer) in rx {
                    die_with_parent(&mut cmd);
                    let _ = answer.send(cmd.spawn());
                }
            })
            .expect("spawn the test bed's spawner thread");
        std::sync::Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    let sent = spawner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .send((cmd, tx));
    let gone = || std::io::Error::other("the test bed's spawner thread is gone");
    sent.map_err(|_| gone())?;
    rx.recv().map_err(|_| gone())?
}

/// Makes the process `cmd` starts die (SIGKILL) when the thread that starts it ends, however
/// it ends (`PR_SET_PDEATHSIG`, kept across `execve`); a child whose parent died before the
/// hook ran fails to start. Start it from a thread that lives as long as its process (the
/// signal comes when the *thread* that forked the child exits).
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: getpid(2) has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the hook only calls prctl(2), getppid(2) and reads errno, which are
    // async-signal-safe, and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent died between fork and prctl: the signal will never come.
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}
